//! `tpcc`: the TPC-C workload of `integration_tests::tpcc` against a local cluster
//! started by `shardctl up` (used by `bench/bench.py --suites tpcc`).
//!
//! ```text
//! tpcc --dir DIR [--warehouses 4] [--threads 8] [--seconds 30] [--rounds 3]
//! ```
//!
//! Creates the database directly on the commerce server, as the unsharded keyspace
//! `tpcc_u` and as the keyspace `tpcc` sharded by warehouse over the customer servers,
//! loads the three, runs the mix on each in alternating rounds, checks consistency
//! conditions 1-4, and prints one JSON document with every round's report.

use anyhow::{bail, Context, Result};
use integration_tests::tpcc::{self, Scale};
use shardgate_resharder::local::ClusterInfo;
use std::path::PathBuf;

struct Args {
    dir: PathBuf,
    warehouses: u32,
    threads: u32,
    seconds: f64,
    rounds: u32,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        dir: PathBuf::new(),
        warehouses: 4,
        threads: 8,
        seconds: 30.0,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => a.dir = value.into(),
            "--warehouses" => a.warehouses = value.parse()?,
            "--threads" => a.threads = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--rounds" => a.rounds = value.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.dir.as_os_str().is_empty() {
        bail!("usage: tpcc --dir DIR [--warehouses N] [--threads N] [--seconds S] [--rounds N]");
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse()?;
    let info = ClusterInfo::load(&args.dir)?;
    let scale = Scale {
        items: 10_000,
        customers: 300,
        orders: 300,
        ..Scale::small(args.warehouses)
    };
    let started = std::time::Instant::now();
    let targets = tpcc::setup(&info, &args.dir, &scale, 1).await?;
    eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());
    let outcomes =
        tpcc::compare(&targets, &scale, args.threads, args.seconds, args.rounds, 2).await?;
    let stock_level = tpcc::stock_level_latency(&targets, &scale, 30).await?;
    let doc = serde_json::json!({
        "stock_level": stock_level,
        "warehouses": args.warehouses,
        "threads": args.threads,
        "seconds": args.seconds,
        "targets": outcomes.iter().map(|o| serde_json::json!({
            "name": o.name,
            "tpmc": o.tpmc(),
            "total": o.total(),
            "rounds": o.rounds,
            "violations": o.violations,
            "districts": o.districts,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
