//! The copy: each source table read in primary-key order, one chunk at a time under
//! shared locks (a row cannot change between being read and being written to its
//! target), throttled, and checkpointed in the workflow document. Captured changes are
//! applied between chunks, so the backlog stays small.
//!
//! Why chunks are read with `LOCK IN SHARE MODE`: a change to a copied row commits only
//! after its chunk has reached the target, so the change's capture entry is applied after
//! the copy and the newer value wins. The read uses `NOWAIT` and is retried when a row is
//! locked, so the copy never waits while holding locks and cannot deadlock with the
//! application.

use super::db::{self, param};
use super::workflow::Phase;
use super::Controller;
use anyhow::Result;
use mysql_async::Value;
use std::time::{Duration, Instant};

/// Copies every table, then marks the workflow `Backfilled`.
pub async fn run(c: &mut Controller) -> Result<()> {
    super::require(c, &[Phase::Copying], "backfill")?;
    let started = Instant::now();
    let mut copied_now = 0u64;
    let mut last_apply = Instant::now();
    let mut baseline: Option<Duration> = None;
    for t in 0..c.tables.len() {
        let meta = c.tables[t].clone();
        let chunk = c.wf.doc.options.chunk_rows.max(1);
        let select = format!(
            "SELECT {} FROM {} {{where}} ORDER BY {} LIMIT {chunk} LOCK IN SHARE MODE NOWAIT",
            meta.column_list(),
            db::ident(&meta.name),
            meta.pk_list()
        );
        let pk_idx = meta.pk_indexes();
        for s in 0..c.sources.len() {
            let shard = c.sources[s].shard.clone();
            if c.wf.doc.tables[&meta.name].done.contains(&shard) {
                continue;
            }
            loop {
                let last: Option<Vec<Value>> = c.wf.doc.tables[&meta.name]
                    .last_key
                    .get(&shard)
                    .map(|k| k.iter().map(param).collect());
                let (sql, params) = match &last {
                    Some(k) => (
                        select.replace("{where}", &format!("WHERE {}", meta.after_key(""))),
                        meta.after_key_params(k),
                    ),
                    None => (select.replace("{where}", ""), vec![]),
                };
                let t0 = Instant::now();
                let rows =
                    db::locked_read(std::slice::from_mut(&mut c.sources[s]), &sql, params).await?;
                let read = t0.elapsed();
                let rows: Vec<Vec<Value>> = rows.into_iter().map(db::values).collect();
                let n = rows.len() as u64;
                let mut per: Vec<Vec<Vec<Value>>> = vec![Vec::new(); c.targets.len()];
                for r in &rows {
                    for i in c.to_targets[t].route(r)? {
                        per[i].push(r.clone());
                    }
                }
                // Every target at once (they are separate servers).
                let writes = c
                    .targets
                    .iter_mut()
                    .zip(&per)
                    .map(|(tc, rows)| db::replace_rows(tc, &meta, rows));
                let result: Result<Vec<()>> = futures::future::join_all(writes)
                    .await
                    .into_iter()
                    .collect();
                if let Err(e) = result {
                    let _ = c.sources[s].run("ROLLBACK").await;
                    return Err(e);
                }
                c.sources[s].run("COMMIT").await?;
                let progress = c.wf.doc.tables.get_mut(&meta.name).expect("table");
                progress.rows_copied += n;
                copied_now += n;
                if let Some(r) = rows.last() {
                    progress.last_key.insert(
                        shard.clone(),
                        pk_idx.iter().map(|i| db::key_value(&r[*i])).collect(),
                    );
                }
                if n < chunk {
                    progress.done.push(shard.clone());
                }
                c.checkpoint(false).await?;
                if last_apply.elapsed() >= Duration::from_millis(500) {
                    c.catch_up(true, usize::MAX).await?;
                    last_apply = Instant::now();
                }
                throttle(
                    c.wf.doc.options.max_rows_per_s,
                    copied_now,
                    started,
                    read,
                    &mut baseline,
                )
                .await;
                if n < chunk {
                    break;
                }
            }
        }
    }
    c.checkpoint(true).await?;
    let applied = c.catch_up(true, 0).await?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    c.set_phase(
        Phase::Backfilled,
        format!(
            "backfill done: {copied_now} rows in {secs:.1} s ({:.0} rows/s), {applied} captured changes applied",
            copied_now as f64 / secs
        ),
    )
    .await
}

/// Keeps the copy under the configured rate, and backs off while the source answers
/// chunk reads much slower than it did at first (foreground load rising).
async fn throttle(
    max_rows_per_s: u64,
    copied: u64,
    started: Instant,
    read: Duration,
    baseline: &mut Option<Duration>,
) {
    if max_rows_per_s > 0 {
        let due = Duration::from_secs_f64(copied as f64 / max_rows_per_s as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let base = *baseline.get_or_insert(read);
    if read < base {
        *baseline = Some(read);
    } else if read > base * 4 && read > Duration::from_millis(20) {
        // The source is struggling: give it as long as the slow read took.
        tokio::time::sleep(read.min(Duration::from_secs(1))).await;
    }
}
