//! The copy: every table of every source shard, in copy streams that run in parallel
//! (see `stream.rs` for one stream and why it reads under shared locks; `throttle.rs`
//! for how many run), checkpointed in the workflow document. Captured changes are applied
//! while the streams copy, so the backlog stays small. The targets' change capture and
//! guards are installed when the copy is done ([`install_target_capture`]).
//!
//! Work is split into streams once, when the copy starts: one per table and source
//! shard, and a big table's rows on one shard are cut into key ranges (split at primary
//! keys found by offset, recorded in the document as `splits`) so that one large table
//! copies in parallel too. A stream's checkpoint is the last key it copied; a controller
//! that died resumes each stream after its checkpoint (re-copying a chunk is harmless).

use super::db::{self, param, ShardConn};
use super::stream::{self, Progress, StreamSpec};
use super::throttle::Throttle;
use super::workflow::{CopyReport, Phase, TableProgress};
use super::{shards_named, Controller};
use anyhow::{anyhow, Result};
use mysql_async::Value;
use std::time::{Duration, Instant};

/// Rows per key range of a big table (ranges beyond one per stream are not useful).
const RANGE_ROWS: u64 = 10_000;

/// Copies every table, then marks the workflow `Backfilled`.
pub async fn run(c: &mut Controller) -> Result<()> {
    super::require(c, &[Phase::Copying], "backfill")?;
    let started = Instant::now();
    let max = c.wf.doc.options.streams.clamp(1, 64) as usize;
    plan_splits(c, max).await?;
    let mut queue: std::collections::VecDeque<StreamSpec> = streams(c)?.into();
    let total_streams = queue.len();
    let throttle = Throttle::new(c.wf.doc.options.max_rows_per_s, max);
    let mut probes = Vec::new();
    let mut baselines = Vec::new();
    for s in shards_named(&c.keyspace, &c.wf.doc.from)? {
        let mut p = ShardConn::open(&s, &c.creds, false).await?;
        baselines.push(Throttle::baseline(&mut p).await?);
        probes.push(p);
    }
    for conn in c.sources.iter().chain(&c.targets).chain(&probes) {
        throttle.own_connection(conn);
    }
    let watcher = tokio::spawn(throttle.clone().watch(probes, baselines));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let mut running = tokio::task::JoinSet::new();
    let mut slots = vec![false; max];
    // The connections of each slot's last stream, for its next one.
    let mut idle: Vec<Option<stream::StreamConns>> = (0..max).map(|_| None).collect();
    let mut copied_now = 0u64;
    let mut last_apply = Instant::now();
    let outcome: Result<()> = loop {
        while running.len() < max {
            let Some(spec) = queue.pop_front() else {
                break;
            };
            let slot = slots.iter().position(|b| !b).unwrap_or(0);
            slots[slot] = true;
            throttle.enter(slot);
            let reuse = idle[slot].take();
            let fut = stream::copy(
                spec,
                slot,
                c.creds.clone(),
                throttle.clone(),
                tx.clone(),
                reuse,
            );
            running.spawn(async move { (slot, fut.await) });
        }
        if running.is_empty() {
            break Ok(());
        }
        tokio::select! {
            Some(p) = rx.recv() => copied_now += record(c, p),
            joined = running.join_next() => match joined {
                Some(Ok((slot, Ok(conns)))) => {
                    slots[slot] = false;
                    idle[slot] = Some(conns);
                    throttle.leave(slot);
                }
                Some(Ok((_, Err(e)))) => break Err(e),
                Some(Err(e)) => break Err(anyhow!("a copy stream failed: {e}")),
                None => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if let Err(e) = c.checkpoint(false).await {
            break Err(e);
        }
        if last_apply.elapsed() >= Duration::from_millis(500) {
            if let Err(e) = c.catch_up(true, usize::MAX).await {
                break Err(e);
            }
            last_apply = Instant::now();
        }
    };
    running.abort_all();
    throttle.stop();
    let _ = watcher.await;
    // What the streams reported before they ended.
    while let Ok(p) = rx.try_recv() {
        copied_now += record(c, p);
    }
    c.checkpoint(true).await?;
    outcome?;
    let applied = c.catch_up(true, 0).await?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    install_target_capture(c).await?;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let report = CopyReport {
        rows: copied_now,
        seconds: secs,
        streams: total_streams as u64,
        probes: load(&throttle.probes),
        application_probes: load(&throttle.application_probes),
        slowdowns: load(&throttle.slowdowns),
    };
    let message = format!(
        "backfill done: {copied_now} rows in {secs:.1} s ({:.0} rows/s, {total_streams} streams, up to {max} at once; the application seen in {} of {} probes, sources slow {} times), {applied} captured changes applied",
        copied_now as f64 / secs,
        report.application_probes,
        report.probes,
        report.slowdowns,
    );
    c.wf.doc.copy = Some(report);
    c.set_phase(Phase::Backfilled, message).await
}

/// Installs change capture and guards on the targets' tables (idempotent), once their
/// rows are copied: they matter from cutover on (a rollback applies what the targets
/// captured; a side that stops serving raises its guard), while during the copy only the
/// controller writes there, whose writes the triggers skip, so installing them earlier
/// only cost a trigger invocation per copied row.
pub async fn install_target_capture(c: &mut Controller) -> Result<()> {
    for t in 0..c.tables.len() {
        let meta = c.tables[t].clone();
        for tc in c.targets.iter_mut() {
            super::capture::install(tc, &meta).await?;
        }
    }
    Ok(())
}

/// Applies a stream's progress to the workflow document; returns the rows copied.
fn record(c: &mut Controller, p: Progress) -> u64 {
    let Some(t) = c.wf.doc.tables.get_mut(&p.table) else {
        return 0;
    };
    t.rows_copied += p.rows;
    if let Some(k) = p.last_key {
        t.last_key.insert(p.stream.clone(), k);
    }
    if p.done && !t.done.contains(&p.stream) {
        t.done.push(p.stream);
    }
    p.rows
}

/// Cuts each big table's rows on each source shard into key ranges, once: for shards
/// whose copy has not started, split at every `rows / ranges`-th primary key.
async fn plan_splits(c: &mut Controller, max: usize) -> Result<()> {
    let mut changed = false;
    for t in 0..c.tables.len() {
        let meta = c.tables[t].clone();
        for s in 0..c.sources.len() {
            let shard = c.sources[s].shard.clone();
            let p = &c.wf.doc.tables[&meta.name];
            let started = p
                .last_key
                .keys()
                .any(|k| k == &shard || k.starts_with(&format!("{shard}#")))
                || p.done.contains(&shard)
                || p.splits.contains_key(&shard);
            if started {
                continue;
            }
            let rows = db::row_estimate(&mut c.sources[s], &meta.name).await?;
            let ranges = (rows / RANGE_ROWS).clamp(1, max as u64);
            if ranges < 2 {
                continue;
            }
            let mut keys = Vec::new();
            for k in 1..ranges {
                let sql = format!(
                    "SELECT {pk} FROM {} ORDER BY {pk} LIMIT 1 OFFSET {}",
                    db::ident(&meta.name),
                    rows * k / ranges,
                    pk = meta.pk_list()
                );
                let found = c.sources[s].exec(&sql, vec![]).await?;
                let Some(row) = found.into_iter().next() else {
                    break;
                };
                keys.push(
                    db::values(row)
                        .iter()
                        .map(db::key_value)
                        .collect::<Vec<_>>(),
                );
            }
            keys.dedup();
            if !keys.is_empty() {
                let p = c.wf.doc.tables.get_mut(&meta.name).expect("table");
                p.splits.insert(shard, keys);
                changed = true;
            }
        }
    }
    if changed {
        c.checkpoint(true).await?;
    }
    Ok(())
}

/// The streams still to run, their ranges resumed from their checkpoints. Streams of
/// different tables and shards are interleaved, so the first ones to run spread the load.
fn streams(c: &Controller) -> Result<Vec<StreamSpec>> {
    let sources = shards_named(&c.keyspace, &c.wf.doc.from)?;
    let targets = shards_named(&c.target, &c.wf.doc.to)?;
    let mut per_table: Vec<Vec<StreamSpec>> = Vec::new();
    for (t, meta) in c.tables.iter().enumerate() {
        let p = &c.wf.doc.tables[&meta.name];
        let mut specs = Vec::new();
        for source in &sources {
            let splits: Vec<Vec<Value>> = p
                .splits
                .get(&source.name)
                .map(|v| v.iter().map(|k| k.iter().map(param).collect()).collect())
                .unwrap_or_default();
            for k in 0..=splits.len() {
                let id = TableProgress::stream_id(&source.name, k);
                if p.done.contains(&id) {
                    continue;
                }
                let start = if k == 0 {
                    None
                } else {
                    Some(splits[k - 1].clone())
                };
                let after = match p.last_key.get(&id) {
                    Some(key) => Some(key.iter().map(param).collect()),
                    None => start,
                };
                specs.push(StreamSpec {
                    id,
                    meta: meta.clone(),
                    router: c.to_targets[t].clone(),
                    source: source.clone(),
                    targets: targets.clone(),
                    after,
                    up_to: splits.get(k).cloned(),
                    chunk_rows: c.wf.doc.options.chunk_rows,
                });
            }
        }
        per_table.push(specs);
    }
    let mut out = Vec::new();
    let mut iters: Vec<_> = per_table.into_iter().map(|v| v.into_iter()).collect();
    loop {
        let before = out.len();
        for it in iters.iter_mut() {
            out.extend(it.next());
        }
        if out.len() == before {
            return Ok(out);
        }
    }
}
