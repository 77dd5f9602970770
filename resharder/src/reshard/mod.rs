//! Online resharding: the controller behind `shardctl reshard`.
//!
//! A workflow moves the rows of a keyspace's `from` shards onto `to` shards covering the
//! same key range, while the application keeps reading and writing:
//!
//! 1. [`setup`]: check the request, copy the schema to the targets, install change capture
//!    ([`capture`]) on both sides, announce the workflow in the routing document and wait
//!    until every proxy runs it (DDL on the keyspace is refused from then on).
//! 2. [`backfill`]: copy rows in primary-key chunks under shared locks, throttled,
//!    checkpointed in the workflow document; captured changes are applied as it goes.
//! 3. [`verify`]: chunked checksums of sources against targets; chunks that differ are
//!    re-copied under lock and checked again.
//! 4. [`cutover`]: proxies hold writes to the sources, in-flight transactions drain, the
//!    last captured changes are applied, routing flips to the targets, proxies confirm and
//!    release the held writes. Changes now flow back to the sources, so `rollback` can
//!    flip back the same way.
//! 5. [`finish`]: `complete` retires the sources (optionally deleting their rows);
//!    `abort` (before cutover) removes everything the workflow added.
//!
//! Everything needed to go on lives in etcd (`workflows/<name>`) and in the capture
//! tables, so a controller killed at any point is replaced by `shardctl reshard resume`.

pub mod backfill;
pub mod capture;
pub mod cutover;
pub mod db;
pub mod finish;
pub mod guard;
pub mod lock;
pub mod movetables;
pub mod plan;
pub mod routing;
pub mod rows;
pub mod sequence;
pub mod setup;
pub mod steps;
pub mod stream;
pub mod throttle;
pub mod verify;
pub mod workflow;

use anyhow::{anyhow, bail, Result};
use db::{Credentials, ShardConn, TableMeta};
use rows::Router;
use shardgate_topology::{Keyspace, Shard, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workflow::{Phase, Stored};

/// A workflow being driven: its document, its lock, and connections to every shard.
pub struct Controller {
    pub store: Store,
    pub wf: Stored,
    pub creds: Credentials,
    /// The keyspace of the `from` shards.
    pub keyspace: Arc<Keyspace>,
    /// The keyspace of the `to` shards (the same one for a reshard).
    pub target: Arc<Keyspace>,
    pub sources: Vec<ShardConn>,
    pub targets: Vec<ShardConn>,
    pub tables: Vec<TableMeta>,
    /// Per table: rows of the sources routed among the targets, and back.
    pub to_targets: Vec<Router>,
    pub to_sources: Vec<Router>,
    lock: Option<lock::Lock>,
    last_save: Instant,
}

/// The validated topology as etcd holds it now.
pub async fn snapshot(store: &Store) -> Result<shardgate_topology::Snapshot> {
    store
        .load()
        .await
        .map_err(anyhow::Error::new)?
        .snapshot()
        .map_err(|e| anyhow!("the topology is invalid: {e}"))
}

/// The shards named `names` of a keyspace.
pub fn shards_named(ks: &Keyspace, names: &[String]) -> Result<Vec<Shard>> {
    names
        .iter()
        .map(|n| {
            ks.shards
                .get(n)
                .cloned()
                .ok_or_else(|| anyhow!("keyspace {} has no shard {n}", ks.name))
        })
        .collect()
}

impl Controller {
    /// Takes the workflow's lock and connects to its shards.
    pub async fn open(store: &Store, name: &str, creds: &Credentials) -> Result<Controller> {
        let lock = lock::Lock::take(store, name).await?;
        // Every etcd write of this controller checks that the lock is still its own.
        let store = &store.fenced(&lock::key(name), lock.token);
        let wf = workflow::load(store, name).await?;
        let snapshot = snapshot(store).await?;
        let keyspace = snapshot
            .keyspace(&wf.doc.keyspace)
            .cloned()
            .ok_or_else(|| anyhow!("keyspace {} is gone", wf.doc.keyspace))?;
        let target = snapshot
            .keyspace(wf.doc.target())
            .cloned()
            .ok_or_else(|| anyhow!("keyspace {} is gone", wf.doc.target()))?;
        let mut c = Controller {
            store: store.clone(),
            wf,
            creds: creds.clone(),
            keyspace,
            target,
            sources: Vec::new(),
            targets: Vec::new(),
            tables: Vec::new(),
            to_targets: Vec::new(),
            to_sources: Vec::new(),
            lock: Some(lock),
            last_save: Instant::now(),
        };
        c.lift_leftover_buffer().await?;
        c.connect().await?;
        Ok(c)
    }

    /// A write buffer still set when a controller takes the lock was left by one that died
    /// mid-cutover (a cutover only runs under the lock): lift it, so writes stop waiting.
    async fn lift_leftover_buffer(&mut self) -> Result<()> {
        let mut sides = vec![self.keyspace.clone()];
        if self.wf.doc.moves_tables() {
            sides.push(self.target.clone());
        }
        for ks in sides {
            if ks.routing.write_buffer.is_none()
                || ks.routing.workflow.as_deref() != Some(&self.wf.doc.name)
            {
                continue;
            }
            tracing::warn!(keyspace = %ks.name, "lifting a write buffer left by a previous controller");
            routing::update(&self.store, &ks.name, Vec::new(), |r| r.write_buffer = None).await?;
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<()> {
        let from = shards_named(&self.keyspace, &self.wf.doc.from)?;
        let to = shards_named(&self.target, &self.wf.doc.to)?;
        self.sources.clear();
        self.targets.clear();
        for s in &from {
            self.sources
                .push(ShardConn::open(s, &self.creds, false).await?);
        }
        for s in &to {
            self.targets
                .push(ShardConn::open(s, &self.creds, true).await?);
        }
        self.tables.clear();
        self.to_targets.clear();
        self.to_sources.clear();
        let names: Vec<String> = self.wf.doc.tables.keys().cloned().collect();
        // A MoveTables' target keyspace declares the tables only once setup announced
        // them; setup needs no routing and connects again after (see `reconnect`).
        let routable = !(self.wf.doc.moves_tables() && self.wf.doc.phase == Phase::Created);
        for t in names {
            let meta = db::table_meta(&mut self.sources[0], &t).await?;
            if routable {
                self.to_targets.push(Router::new(&self.target, &meta, &to)?);
                self.to_sources
                    .push(Router::new(&self.keyspace, &meta, &from)?);
            }
            self.tables.push(meta);
        }
        Ok(())
    }

    /// Reads both keyspaces again and reconnects (after setup changed the target's VSchema).
    pub async fn reconnect(&mut self) -> Result<()> {
        let snapshot = snapshot(&self.store).await?;
        let get = |name: &str| {
            snapshot
                .keyspace(name)
                .cloned()
                .ok_or_else(|| anyhow!("keyspace {name} is gone"))
        };
        self.keyspace = get(&self.wf.doc.keyspace)?;
        self.target = get(self.wf.doc.target())?;
        self.connect().await
    }

    /// Saves the workflow document at most once a second (checkpoints).
    pub async fn checkpoint(&mut self, force: bool) -> Result<()> {
        if force || self.last_save.elapsed() >= Duration::from_secs(1) {
            self.wf.save(&self.store).await?;
            self.last_save = Instant::now();
        }
        Ok(())
    }

    pub async fn note(&mut self, message: impl Into<String>) -> Result<()> {
        self.wf.note(&self.store, message).await?;
        self.last_save = Instant::now();
        Ok(())
    }

    pub async fn set_phase(&mut self, phase: Phase, message: impl Into<String>) -> Result<()> {
        self.wf.doc.phase = phase;
        self.note(message).await
    }

    /// Applies captured changes in one direction until a pass applies at most `until`
    /// entries. Returns the entries applied.
    pub async fn catch_up(&mut self, forward: bool, until: usize) -> Result<usize> {
        let mut total = 0;
        loop {
            let mut pass = 0;
            for t in 0..self.tables.len() {
                let (from, to, router) = if forward {
                    (&mut self.sources, &mut self.targets, &self.to_targets[t])
                } else {
                    (&mut self.targets, &mut self.sources, &self.to_sources[t])
                };
                for f in from.iter_mut() {
                    loop {
                        let n = capture::apply_batch(f, to, &self.tables[t], router).await?;
                        pass += n;
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
            total += pass;
            if pass <= until {
                return Ok(total);
            }
        }
    }

    /// Entries waiting in the capture of the sources (forward) or targets.
    pub async fn backlog(&mut self, forward: bool) -> Result<u64> {
        let mut n = 0;
        let side = if forward {
            &mut self.sources
        } else {
            &mut self.targets
        };
        for c in side.iter_mut() {
            for t in &self.tables {
                n += capture::backlog(c, &t.name).await?;
            }
        }
        Ok(n)
    }

    /// Releases the lock.
    pub async fn close(mut self) {
        if let Some(l) = self.lock.take() {
            l.release().await;
        }
    }

    /// Runs the workflow's remaining steps up to `goal`. While etcd is unreachable the
    /// workflow pauses (the step is retried from its last checkpoint once etcd answers).
    pub async fn drive(&mut self, goal: Phase) -> Result<()> {
        let mut paused: Option<Instant> = None;
        loop {
            let phase = self.wf.doc.phase;
            if phase.finished() && !self.wf.doc.leftovers_removed {
                // A controller died between the end and the cleanup.
                finish::remove_leftovers(self).await?;
            }
            if phase >= goal || phase.finished() {
                return Ok(());
            }
            let Some(step) = steps::step_for(phase) else {
                return Ok(());
            };
            let r = step.run(self).await;
            match r {
                Ok(()) => paused = None,
                Err(e) if etcd_unreachable(&e) => {
                    let since = *paused.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(600) {
                        return Err(e.context("etcd unreachable for 10 minutes"));
                    }
                    tracing::warn!(error = %format!("{e:#}"), "etcd unreachable; workflow paused, retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    // Pick up where the document says (the step's last checkpoint).
                    if let Ok(w) = workflow::load(&self.store, &self.wf.doc.name).await {
                        self.wf = w;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A step boundary where tests make the controller die as if SIGKILLed: the process
/// aborts when `SHARDGATE_CRASH_AT` names this point (never set in production).
pub fn crash_point(name: &str) {
    if std::env::var("SHARDGATE_CRASH_AT").as_deref() == Ok(name) {
        tracing::error!(point = name, "SHARDGATE_CRASH_AT: dying here");
        std::process::abort();
    }
}

/// A step boundary where tests make the controller pause: `SHARDGATE_PAUSE_AT=name:ms`
/// sleeps that long there (never set in production).
pub async fn pause_point(name: &str) {
    let Ok(v) = std::env::var("SHARDGATE_PAUSE_AT") else {
        return;
    };
    if let Some((point, ms)) = v.split_once(':') {
        if point == name {
            let ms: u64 = ms.parse().unwrap_or(0);
            tracing::warn!(point = name, ms, "SHARDGATE_PAUSE_AT: pausing here");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// Whether an error comes from etcd being unreachable (the workflow can wait for it).
fn etcd_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<shardgate_topology::StoreError>(),
            Some(shardgate_topology::StoreError::Unavailable(_))
        )
    })
}

/// Refuses a step that the workflow's phase does not allow.
pub fn require(c: &Controller, allowed: &[Phase], what: &str) -> Result<()> {
    if allowed.contains(&c.wf.doc.phase) {
        Ok(())
    } else {
        bail!(
            "workflow {} is in phase {}; {what} needs phase {}",
            c.wf.doc.name,
            c.wf.doc.phase,
            allowed
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    }
}
