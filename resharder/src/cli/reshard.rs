//! `shardctl reshard`: start, watch and steer resharding workflows.

use super::{target, Cli};
use crate::local::{ClusterInfo, ShardInfo};
use crate::reshard::db::{Credentials, ShardConn};
use crate::reshard::setup::{self, Request};
use crate::reshard::workflow::{self, now_ms, Options, Phase, WorkflowDoc};
use crate::reshard::{cutover, finish, plan, verify, Controller};
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use shardgate_topology::docs::{ShardDoc, ShardState};
use shardgate_topology::store::{Expect, Write};
use shardgate_topology::{KeyRange, Store};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ReshardCommand {
    /// Before anything changes: rows and bytes to move, refusals and why, the copy rate
    /// measured on a sample, predicted duration and finish, disk needed per target.
    Plan {
        #[arg(long)]
        keyspace: String,
        /// Source shards, comma-separated.
        #[arg(
            long,
            required = true,
            allow_hyphen_values = true,
            value_delimiter = ','
        )]
        from: Vec<String>,
        /// Target shards, comma-separated (need not exist yet).
        #[arg(
            long,
            required = true,
            allow_hyphen_values = true,
            value_delimiter = ','
        )]
        to: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a workflow: schema copy, change capture, backfill (then stop at Backfilled).
    Start(StartArgs),
    /// Every step in order: start, backfill, verify, cutover, complete.
    Run(StartArgs),
    /// Show a workflow's phase, copy progress, rate, verify and cutover results.
    Status {
        #[command(flatten)]
        wf: WorkflowArg,
        /// Refresh every second until the workflow finishes.
        #[arg(long)]
        watch: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare sources and targets chunk by chunk; re-copy what differs.
    Verify(WorkflowArg),
    /// Move serving to the targets (writes held briefly).
    Cutover(WorkflowArg),
    /// After cutover: move serving back to the sources.
    Rollback(WorkflowArg),
    /// After cutover: end the workflow and retire the sources.
    Complete {
        #[command(flatten)]
        wf: WorkflowArg,
        /// Also delete the moved rows from the sources (throttled chunks; asks first).
        #[arg(long)]
        delete_source_rows: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Before cutover: stop the workflow and drop the targets' copies.
    Abort {
        #[command(flatten)]
        wf: WorkflowArg,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Continue a workflow whose controller stopped (or was killed).
    Resume(WorkflowArg),
    /// List workflows.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct WorkflowArg {
    /// The keyspace (its workflow has the keyspace's name unless --workflow says otherwise).
    #[arg(long)]
    pub keyspace: Option<String>,
    /// The workflow name.
    #[arg(long)]
    pub workflow: Option<String>,
}

impl WorkflowArg {
    fn name(&self) -> Result<String> {
        self.workflow
            .clone()
            .or_else(|| self.keyspace.clone())
            .ok_or_else(|| anyhow!("name the workflow: --keyspace KS or --workflow NAME"))
    }
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[arg(long)]
    pub keyspace: String,
    /// Source shards, comma-separated (e.g. 80-).
    #[arg(
        long,
        required = true,
        allow_hyphen_values = true,
        value_delimiter = ','
    )]
    pub from: Vec<String>,
    /// Target shards, comma-separated (e.g. 80-c0,c0-).
    #[arg(
        long,
        required = true,
        allow_hyphen_values = true,
        value_delimiter = ','
    )]
    pub to: Vec<String>,
    /// Backend of a target shard not registered yet: SHARD=HOST:PORT[/DATABASE]. Under a
    /// local cluster, targets without one get new local MariaDB instances.
    #[arg(long = "target", allow_hyphen_values = true)]
    pub targets: Vec<String>,
    /// Workflow name (default: the keyspace).
    #[arg(long)]
    pub workflow: Option<String>,
    #[command(flatten)]
    pub copy: CopyArgs,
    /// At complete, delete the moved rows from the sources.
    #[arg(long)]
    pub delete_source_rows: bool,
}

/// How a workflow copies and cuts over (`start` and `run` of reshard and movetables).
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Rows per copy chunk.
    #[arg(long, default_value_t = 1000)]
    pub chunk_rows: u64,
    /// Copy rate limit in rows/s (0: none; the copy still backs off under load).
    #[arg(long, default_value_t = 0)]
    pub max_rows_per_s: u64,
    /// Longest writes are held at cutover, in ms.
    #[arg(long, default_value_t = 3000)]
    pub buffer_max_ms: u64,
    /// Copy streams at most (tables, source shards and key ranges of big tables copy
    /// in parallel; fewer run while the sources slow down).
    #[arg(long, default_value_t = 4)]
    pub streams: u32,
    /// Progress as JSON lines on stdout (instead of bars on a terminal).
    #[arg(long)]
    pub json: bool,
    /// Make every check, print every step and what it would do, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl CopyArgs {
    /// The workflow's options.
    pub fn options(&self, delete_source_rows: bool) -> Options {
        Options {
            chunk_rows: self.chunk_rows.max(1),
            max_rows_per_s: self.max_rows_per_s,
            buffer_max_ms: self.buffer_max_ms,
            delete_source_rows,
            streams: self.streams.max(1),
        }
    }
}

/// Backend credentials: --config's [backend] user/password, else SHARDGATE_BACKEND_USER /
/// SHARDGATE_BACKEND_PASSWORD, else root with an empty password (local clusters).
pub(super) fn credentials(cli: &Cli) -> Result<Credentials> {
    if let Some(path) = &cli.config {
        let cfg = shardgate_config::Config::load(Some(path), std::env::vars(), &[])
            .map_err(anyhow::Error::new)?;
        return Ok(Credentials {
            user: cfg.backend.user,
            password: cfg.backend.password,
        });
    }
    Ok(Credentials {
        user: std::env::var("SHARDGATE_BACKEND_USER").unwrap_or_else(|_| "root".into()),
        password: std::env::var("SHARDGATE_BACKEND_PASSWORD").unwrap_or_default(),
    })
}

pub async fn run(cli: &Cli, cmd: &ReshardCommand) -> Result<()> {
    let store = target::store(cli).await?;
    let creds = credentials(cli)?;
    match cmd {
        ReshardCommand::Plan {
            keyspace,
            from,
            to,
            json,
        } => {
            let snapshot = crate::reshard::snapshot(&store).await?;
            let ks = snapshot
                .keyspace(keyspace)
                .ok_or_else(|| anyhow!("no keyspace {keyspace:?}"))?;
            let p = plan::make(ks, from, to, &creds).await?;
            print_plan(&p, *json)
        }
        ReshardCommand::Start(a) => start(cli, &store, &creds, a, Phase::Backfilled).await,
        ReshardCommand::Run(a) => start(cli, &store, &creds, a, Phase::Complete).await,
        ReshardCommand::Status { wf, watch, json } => {
            status(&store, &creds, &wf.name()?, *watch, *json).await
        }
        ReshardCommand::List { json } => list(&store, *json).await,
        ReshardCommand::Verify(wf) => step(&store, &creds, wf, |c| Box::pin(verify::run(c))).await,
        ReshardCommand::Cutover(wf) => {
            step(&store, &creds, wf, |c| Box::pin(cutover::run(c, 3))).await
        }
        ReshardCommand::Rollback(wf) => {
            step(&store, &creds, wf, |c| Box::pin(cutover::rollback(c))).await
        }
        ReshardCommand::Complete {
            wf,
            delete_source_rows,
            yes,
        } => {
            let delete = *delete_source_rows;
            if delete {
                super::confirm(*yes, "delete the moved rows from the source shards")?;
            }
            step(&store, &creds, wf, move |c| {
                if delete {
                    c.wf.doc.options.delete_source_rows = true;
                }
                Box::pin(finish::complete(c))
            })
            .await
        }
        ReshardCommand::Abort { wf, yes } => {
            super::confirm(*yes, "abort the workflow and drop the targets' copies")?;
            step(&store, &creds, wf, |c| Box::pin(finish::abort(c))).await
        }
        ReshardCommand::Resume(wf) => {
            let progress = super::progress::spawn(store.clone(), wf.name()?, false);
            let r = step(&store, &creds, wf, |c| {
                let goal = c.wf.doc.goal;
                Box::pin(c.drive(goal))
            })
            .await;
            progress.finish().await;
            r
        }
    }
}

/// Prints a plan; an error (exit code 1) when the workflow would be refused.
pub(super) fn print_plan(p: &plan::Plan, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(p)?);
    } else {
        print!("{}", plan::render(p));
    }
    if !p.refusals.is_empty() {
        anyhow::bail!(
            "the workflow would be refused ({} reasons above)",
            p.refusals.len()
        );
    }
    Ok(())
}

pub(super) type StepFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// Opens the workflow (taking its lock), runs one step, prints where it stands.
pub(super) async fn step(
    store: &Store,
    creds: &Credentials,
    wf: &WorkflowArg,
    f: impl for<'a> FnOnce(&'a mut Controller) -> StepFuture<'a>,
) -> Result<()> {
    let name = wf.name()?;
    let mut c = Controller::open(store, &name, creds).await?;
    let r = f(&mut c).await;
    println!(
        "{}: {} - {}",
        c.wf.doc.name, c.wf.doc.phase, c.wf.doc.message
    );
    c.close().await;
    r
}

async fn start(
    cli: &Cli,
    store: &Store,
    creds: &Credentials,
    a: &StartArgs,
    goal: Phase,
) -> Result<()> {
    let name = a.workflow.clone().unwrap_or_else(|| a.keyspace.clone());
    if a.copy.dry_run {
        return dry_run(store, creds, a, &name, goal).await;
    }
    register_targets(cli, store, a).await?;
    let req = Request {
        name: name.clone(),
        keyspace: a.keyspace.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        options: a.copy.options(a.delete_source_rows),
        goal,
    };
    setup::create(store, &req, creds).await?;
    println!(
        "workflow {name}: {} -> {}",
        a.from.join(","),
        a.to.join(",")
    );
    let mut c = Controller::open(store, &name, creds).await?;
    let progress = super::progress::spawn(store.clone(), name.clone(), a.copy.json);
    let r = c.drive(goal).await;
    progress.finish().await;
    println!(
        "{}: {} - {}",
        c.wf.doc.name, c.wf.doc.phase, c.wf.doc.message
    );
    c.close().await;
    r
}

/// `start --dry-run` / `run --dry-run`: the plan's checks (targets need not be registered
/// yet), then every step with what it would do.
async fn dry_run(
    store: &Store,
    creds: &Credentials,
    a: &StartArgs,
    name: &str,
    goal: Phase,
) -> Result<()> {
    let snapshot = crate::reshard::snapshot(store).await?;
    let ks = snapshot
        .keyspace(&a.keyspace)
        .ok_or_else(|| anyhow!("no keyspace {:?}", a.keyspace))?;
    let p = plan::make(ks, &a.from, &a.to, creds).await?;
    let unregistered: Vec<&String> =
        a.to.iter()
            .filter(|t| !ks.shards.contains_key(*t))
            .collect();
    let tables = p
        .tables
        .iter()
        .map(|t| {
            let progress = workflow::TableProgress {
                kind: t.kind.clone(),
                rows_estimate: t.rows,
                ..Default::default()
            };
            (t.name.clone(), progress)
        })
        .collect();
    let doc = WorkflowDoc::new(
        name,
        &a.keyspace,
        None,
        a.from.clone(),
        a.to.clone(),
        goal,
        a.copy.options(a.delete_source_rows),
        tables,
    );
    let mut before = Vec::new();
    if !unregistered.is_empty() {
        before.push(format!(
            "register target shards {} (state new): from --target, else new local MariaDB instances",
            unregistered.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
        ));
    }
    print_dry_run(name, Some(&doc), goal, &p.refusals, &before)
}

/// Prints a dry run: the refusals (an error when there are any), else each step of
/// `doc` (a refused dry run has none).
pub(super) fn print_dry_run(
    name: &str,
    doc: Option<&WorkflowDoc>,
    goal: Phase,
    refusals: &[String],
    before: &[String],
) -> Result<()> {
    println!("dry run of workflow {name} (nothing is changed)");
    let Some(doc) = doc.filter(|_| refusals.is_empty()) else {
        for r in refusals {
            println!("  refused: {r}");
        }
        return Err(anyhow::Error::new(super::Invalid(format!(
            "the workflow would be refused ({} reasons above)",
            refusals.len()
        ))));
    };
    println!("checks passed: shards, tables (primary keys, VSchema, foreign keys, triggers)");
    for b in before {
        println!("  {b}");
    }
    for (step, lines) in crate::reshard::steps::dry_run(doc, goal) {
        println!("step {step}:");
        for l in lines {
            println!("  - {l}");
        }
    }
    Ok(())
}

/// Makes sure every target shard has a shard document (state `new`): from --target, or a
/// new local MariaDB under a local cluster.
async fn register_targets(cli: &Cli, store: &Store, a: &StartArgs) -> Result<()> {
    let loaded = store.load().await.map_err(anyhow::Error::new)?;
    let mut writes = Vec::new();
    let mut local: Option<ClusterInfo> = None;
    for shard in &a.to {
        KeyRange::parse(shard).map_err(|e| anyhow!("target shard {shard:?}: {e}"))?;
        let key = format!("keyspaces/{}/shards/{shard}", a.keyspace);
        if loaded.get(&key).is_some() {
            continue;
        }
        let given = a.targets.iter().find_map(|t| {
            t.split_once('=')
                .filter(|(s, _)| s == shard)
                .map(|(_, b)| b.to_string())
        });
        let (primary, database) = match given {
            Some(b) => match b.split_once('/') {
                Some((addr, db)) => (addr.to_string(), db.to_string()),
                None => (b, a.keyspace.clone()),
            },
            None => {
                if local.is_none() {
                    let dir = cli.dir.clone().unwrap_or_else(|| PathBuf::from(".cluster"));
                    local = Some(ClusterInfo::load(&dir).map_err(|_| {
                        anyhow!("target shard {shard} has no backend: pass --target {shard}=HOST:PORT[/DATABASE]")
                    })?);
                }
                let info = local.as_mut().expect("loaded");
                let instance = format!("{}{}", a.keyspace, shard.replace('-', "_"));
                eprintln!("starting a local MariaDB for target shard {shard} ...");
                let m = info.add_instance(&instance).await?;
                info.shards
                    .retain(|s| !(s.keyspace == a.keyspace && s.shard == *shard));
                info.shards.push(ShardInfo {
                    keyspace: a.keyspace.clone(),
                    shard: shard.clone(),
                    addr: m.addr(),
                    database: a.keyspace.clone(),
                    instance,
                });
                info.save()?;
                (m.addr(), a.keyspace.clone())
            }
        };
        writes.push(Write::Put {
            key,
            value: serde_json::to_vec_pretty(&ShardDoc {
                primary,
                database,
                state: ShardState::New,
            })?,
            expect: Expect::Absent,
        });
    }
    if !writes.is_empty() {
        store
            .commit_validated(&loaded, &writes)
            .await
            .map_err(|e| anyhow!("cannot register the target shards: {e}"))?;
    }
    Ok(())
}

pub(super) async fn list(store: &Store, json: bool) -> Result<()> {
    let all = workflow::list(store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no workflows");
    }
    for w in all {
        let (from, to) = if w.moves_tables() {
            (w.keyspace.clone(), w.target().to_string())
        } else {
            (w.from.join(","), w.to.join(","))
        };
        println!(
            "{:<16} {:<12} {from} -> {to}  {}  {}",
            w.name, w.keyspace, w.phase, w.message
        );
    }
    Ok(())
}

/// Captured changes not yet applied, per side (None when the shards cannot be reached).
async fn backlogs(store: &Store, creds: &Credentials, doc: &WorkflowDoc) -> Option<(u64, u64)> {
    if doc.phase.finished() || doc.phase == Phase::Created {
        return None;
    }
    let snapshot = store.load().await.ok()?.snapshot().ok()?;
    let mut out = (0, 0);
    for (names, slot, ks) in [
        (&doc.from, 0, &doc.keyspace),
        (&doc.to, 1, &doc.target().to_string()),
    ] {
        let ks = snapshot.keyspace(ks)?;
        for n in names {
            let shard = ks.shards.get(n)?;
            let mut c = ShardConn::open(shard, creds, false).await.ok()?;
            for t in doc.tables.keys() {
                let b = match crate::reshard::capture::backlog(&mut c, t).await {
                    Ok(b) => b,
                    // The targets' capture is installed when the copy is done.
                    Err(_) if slot == 1 && doc.phase == Phase::Copying => 0,
                    Err(_) => return None,
                };
                if slot == 0 {
                    out.0 += b;
                } else {
                    out.1 += b;
                }
            }
        }
    }
    Some(out)
}

fn render(doc: &WorkflowDoc, backlog: Option<(u64, u64)>) -> String {
    let moving = if doc.moves_tables() {
        format!("movetables {} -> {}", doc.keyspace, doc.target())
    } else {
        format!(
            "keyspace {}  {} -> {}",
            doc.keyspace,
            doc.from.join(","),
            doc.to.join(",")
        )
    };
    let mut s = format!(
        "workflow {}  {moving}\nphase    {}\nlast     {}\n",
        doc.name, doc.phase, doc.message
    );
    let copied: u64 = doc.tables.values().map(|t| t.rows_copied).sum();
    let estimate: u64 = doc.tables.values().map(|t| t.rows_estimate).sum();
    let secs = (now_ms().saturating_sub(doc.copy_started_ms)) as f64 / 1000.0;
    for (name, t) in &doc.tables {
        let pct = if t.rows_estimate > 0 {
            (t.rows_copied as f64 * 100.0 / t.rows_estimate as f64).min(100.0)
        } else {
            100.0
        };
        let done = t.copied(&doc.from);
        s.push_str(&format!(
            "  {name:<20} {:>10} / ~{:<10} rows  {:>5.1}%  {}\n",
            t.rows_copied,
            t.rows_estimate,
            if done { 100.0 } else { pct },
            if done { "copied" } else { "copying" }
        ));
    }
    if doc.phase == Phase::Copying && doc.copy_started_ms > 0 && secs > 0.0 {
        let rate = copied as f64 / secs;
        let left = estimate.saturating_sub(copied) as f64;
        s.push_str(&format!(
            "rate     {rate:.0} rows/s  ETA {:.0} s\n",
            if rate > 0.0 { left / rate } else { 0.0 }
        ));
    }
    if let Some((f, b)) = backlog {
        s.push_str(&format!(
            "capture  {f} changes waiting on the sources, {b} on the targets\n"
        ));
    }
    if let Some(v) = &doc.verify {
        s.push_str(&format!(
            "verify   {} rows in {} chunks: {} differed at first, {} re-copied, {} still differ ({:.1} s)\n",
            v.rows, v.chunks, v.mismatched, v.recopied, v.failed, v.seconds
        ));
    }
    if let Some(c) = &doc.cutover {
        s.push_str(&format!(
            "cutover  writes held {} ms at most ({} failed attempts)\n",
            c.pause_ms, c.failed_attempts
        ));
    }
    s
}

pub(super) async fn status(
    store: &Store,
    creds: &Credentials,
    name: &str,
    watch: bool,
    json: bool,
) -> Result<()> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    loop {
        let doc = workflow::load(store, name).await?.doc;
        let backlog = backlogs(store, creds, &doc).await;
        if json {
            let mut v = serde_json::to_value(&doc)?;
            if let Some((f, b)) = backlog {
                v["capture_backlog"] = serde_json::json!({"sources": f, "targets": b});
            }
            println!("{}", serde_json::to_string(&v)?);
        } else {
            if watch && tty {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&doc, backlog));
            if watch && tty {
                print!("{}", progress_bar(&doc));
            }
        }
        if !watch || doc.phase.finished() || (doc.phase >= doc.goal) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One overall copy bar for terminals.
fn progress_bar(doc: &WorkflowDoc) -> String {
    let copied: u64 = doc.tables.values().map(|t| t.rows_copied).sum();
    let estimate: u64 = doc
        .tables
        .values()
        .map(|t| t.rows_estimate)
        .sum::<u64>()
        .max(1);
    let frac = if doc.phase > Phase::Copying {
        1.0
    } else {
        (copied as f64 / estimate as f64).min(1.0)
    };
    let width = 40;
    let filled = (frac * width as f64) as usize;
    format!(
        "[{}{}] {:.0}%\n",
        "#".repeat(filled),
        "-".repeat(width - filled),
        frac * 100.0
    )
}
