//! Puts the TPC-C database in a local cluster three ways (directly on one MariaDB, in an
//! unsharded keyspace, in a keyspace sharded by warehouse over the cluster's customer
//! servers), loads it, and runs the same workload on each in alternating rounds so the
//! figures compare within one run.

use super::{check, create_schema, load, run, vschema, Report, Scale};
use crate::url_for;
use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shardgate_resharder::local::ClusterInfo;
use std::path::Path;
use std::time::{Duration, Instant};

/// The three places the workload runs, as mysql_async URLs.
#[derive(Debug, Clone)]
pub struct Targets {
    /// One MariaDB, no proxy.
    pub direct: String,
    /// The unsharded keyspace `tpcc_u` through the proxy (same server as `direct`).
    pub unsharded: String,
    /// The keyspace `tpcc`, sharded by warehouse, through the proxy.
    pub sharded: String,
}

impl Targets {
    /// (name, url) in a fixed order.
    pub fn all(&self) -> [(&'static str, &str); 3] {
        [
            ("direct", &self.direct),
            ("unsharded", &self.unsharded),
            ("sharded", &self.sharded),
        ]
    }
}

fn shardctl(dir: &Path, args: &[&str]) -> Result<()> {
    let bin = shardgate_resharder::local::process::find_program("shardctl")
        .context("shardctl is not built")?;
    let out = std::process::Command::new(bin)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "shardctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn connect(url: &str) -> Result<Conn> {
    Ok(Conn::new(Opts::from_url(url)?).await?)
}

/// Connects through the proxy once it serves `db` (the topology change has arrived).
async fn when_served(url: &str) -> Result<Conn> {
    let started = Instant::now();
    loop {
        let err = match connect(url).await {
            Ok(mut c) => match c.query_drop("SELECT 1").await {
                Ok(()) => return Ok(c),
                Err(e) => anyhow::Error::from(e),
            },
            Err(e) => e,
        };
        if started.elapsed() > Duration::from_secs(10) {
            return Err(err.context(format!("the proxy does not serve {url}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the databases and keyspaces, and loads all three targets.
pub async fn setup(info: &ClusterInfo, dir: &Path, scale: &Scale, seed: u64) -> Result<Targets> {
    let commerce = info
        .shards
        .iter()
        .find(|s| s.keyspace == "commerce")
        .context("no commerce server")?;
    let customer: Vec<_> = info
        .shards
        .iter()
        .filter(|s| s.keyspace == "customer")
        .collect();
    let mut c = connect(&url_for(&commerce.addr, "")).await?;
    for db in ["tpcc_direct", "tpcc_u"] {
        c.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
            .await?;
        c.query_drop(format!("CREATE DATABASE {db}")).await?;
    }
    let mut shards = Vec::new();
    for s in &customer {
        let mut c = connect(&url_for(&s.addr, "")).await?;
        c.query_drop("DROP DATABASE IF EXISTS tpcc").await?;
        c.query_drop("CREATE DATABASE tpcc").await?;
        shards.push(format!("{}={}/tpcc", s.shard, s.addr));
    }
    shardctl(dir, &["keyspace", "create", "tpcc_u"])?;
    let unsharded_shard = format!("-={}/tpcc_u", commerce.addr);
    shardctl(
        dir,
        &[
            "shard",
            "add",
            "--serving",
            "tpcc_u",
            "--",
            &unsharded_shard,
        ],
    )?;
    shardctl(dir, &["keyspace", "create", "tpcc", "--sharded"])?;
    let mut add = vec!["shard", "add", "--serving", "tpcc", "--"];
    add.extend(shards.iter().map(String::as_str));
    shardctl(dir, &add)?;
    let file = dir.join("tpcc-vschema.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&vschema())?)?;
    shardctl(dir, &["vschema", "apply", "tpcc", &file.to_string_lossy()])?;

    let proxy = &info.proxies.first().context("no proxy")?.mysql;
    let targets = Targets {
        direct: url_for(&commerce.addr, "tpcc_direct"),
        unsharded: url_for(proxy, "tpcc_u"),
        sharded: url_for(proxy, "tpcc"),
    };
    for (name, url) in targets.all() {
        let mut c = when_served(url).await?;
        create_schema(&mut c)
            .await
            .with_context(|| format!("creating the tables ({name})"))?;
        load(&mut c, scale, seed)
            .await
            .with_context(|| format!("loading ({name})"))?;
    }
    Ok(targets)
}

/// What one target did over all rounds, and whether its database is consistent after.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub name: String,
    /// One report per round.
    pub rounds: Vec<Report>,
    /// Violated consistency conditions (empty: all hold).
    pub violations: Vec<String>,
    /// Districts the check covered.
    pub districts: usize,
}

impl Outcome {
    /// The median tpmC of the rounds.
    pub fn tpmc(&self) -> f64 {
        let mut v: Vec<f64> = self.rounds.iter().map(|r| r.tpmc).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// All rounds added up.
    pub fn total(&self) -> Report {
        let mut t = Report::default();
        for r in &self.rounds {
            t.add(r);
            t.seconds += r.seconds;
        }
        t.tpmc = t.new_order as f64 * 60.0 / t.seconds.max(0.001);
        t
    }
}

/// Runs the workload on every target for `rounds` rounds (alternating the order), then
/// checks each database.
pub async fn compare(
    targets: &Targets,
    scale: &Scale,
    threads: u32,
    seconds: f64,
    rounds: u32,
    seed: u64,
) -> Result<Vec<Outcome>> {
    let mut out: Vec<Outcome> = targets
        .all()
        .iter()
        .map(|(name, _)| Outcome {
            name: name.to_string(),
            rounds: Vec::new(),
            violations: Vec::new(),
            districts: 0,
        })
        .collect();
    let all = targets.all();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..all.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let seed = seed ^ (round as u64) << 32;
            let report = run(
                all[i].1,
                scale,
                threads,
                Duration::from_secs_f64(seconds),
                seed,
            )
            .await;
            out[i].rounds.push(report);
        }
    }
    for (i, (_, url)) in all.iter().enumerate() {
        let mut c = connect(url).await?;
        let (violations, districts) = check(&mut c).await?;
        out[i].violations = violations;
        out[i].districts = districts;
    }
    Ok(out)
}

/// Median milliseconds of TPC-C's stock-level query on one MariaDB and through the proxy
/// (sharded keyspace), for warehouse 1 with its own stock (one shard) and with warehouse
/// 2's stock (rows on another shard: the join is gathered), and how many times each ran.
pub async fn stock_level_latency(
    targets: &Targets,
    scale: &Scale,
    reps: usize,
) -> Result<serde_json::Value> {
    let mut direct = connect(&targets.direct).await?;
    let mut sharded = connect(&targets.sharded).await?;
    // A warehouse whose rows live on the other shard of a 2-shard keyspace (hash vindex):
    // joining warehouse 1's order lines with its stock crosses shards.
    let vindex = shardgate_topology::vindex::Vindex::from_spec(
        "hash",
        "hash",
        &std::collections::BTreeMap::new(),
        "",
    )
    .map_err(anyhow::Error::msg)?;
    let half = |w: u32| -> Result<bool> {
        let id = vindex
            .map(&shardgate_topology::SqlValue::Int(w as i64))
            .map_err(anyhow::Error::msg)?
            .context("hash maps every integer")?;
        Ok(id.as_bytes()[0] < 0x80)
    };
    let home = half(1)?;
    let mut remote = 1;
    for w in 2..=scale.warehouses {
        if half(w)? != home {
            remote = w;
            break;
        }
    }
    let mut sql = Vec::new();
    for conn in [&mut direct, &mut sharded] {
        let next: u32 = conn
            .query_first("SELECT d_next_o_id FROM district WHERE d_w_id = 1 AND d_id = 1")
            .await?
            .unwrap_or(scale.orders + 1);
        sql.push(move |stock_w: u32| {
            format!(
                "SELECT COUNT(DISTINCT (s_i_id)) FROM order_line, stock WHERE ol_w_id = 1 AND ol_d_id = 1 \
                 AND ol_o_id < {next} AND ol_o_id >= {} AND s_w_id = {stock_w} AND s_i_id = ol_i_id \
                 AND s_quantity < 15",
                next.saturating_sub(20)
            )
        });
    }
    let mut out = serde_json::Map::new();
    for (label, stock_w) in [("same_warehouse", 1), ("remote_warehouse", remote)] {
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for r in 0..reps {
            for i in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
                let conn = if i == 0 { &mut direct } else { &mut sharded };
                let q = sql[i](stock_w);
                let t = Instant::now();
                let n: Option<u64> = conn.query_first(&q).await?;
                times[i].push(t.elapsed().as_secs_f64() * 1000.0);
                let _ = n;
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (d, s) = (med(&mut times[0]), med(&mut times[1]));
        out.insert(
            label.into(),
            serde_json::json!({"direct_ms": d, "shardgate_ms": s, "reps": reps}),
        );
    }
    Ok(serde_json::Value::Object(out))
}
