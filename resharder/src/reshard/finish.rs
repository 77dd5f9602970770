//! Ending a workflow: `complete` (after cutover) retires the sources (a reshard's source
//! shards; a MoveTables' source tables are dropped), `abort` (before cutover) puts
//! everything back as it was.

use super::db::{self, ident};
use super::workflow::{now_ms, Phase};
use super::{capture, guard, movetables, routing, Controller};
use anyhow::{anyhow, Result};
use shardgate_topology::docs::{ShardDoc, ShardState};
use shardgate_topology::store::{Expect, Write};
use std::time::{Duration, Instant};

/// Writes setting the state of the named shards.
async fn shard_states(c: &Controller, names: &[String], state: ShardState) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    for n in names {
        let key = format!("keyspaces/{}/shards/{n}", c.wf.doc.keyspace);
        let e = c
            .store
            .get(&key)
            .await
            .map_err(anyhow::Error::new)?
            .ok_or_else(|| anyhow!("{key} is missing"))?;
        let mut doc: ShardDoc = serde_json::from_slice(&e.value)?;
        doc.state = state;
        writes.push(Write::Put {
            key,
            value: serde_json::to_vec_pretty(&doc)?,
            expect: Expect::Revision(e.mod_revision),
        });
    }
    Ok(writes)
}

/// Ends the workflow in `phase`: routing without dual-write or workflow, the workflow
/// document and `extra` written in the same etcd transaction, acknowledged by proxies.
async fn end(c: &mut Controller, phase: Phase, message: String, extra: Vec<Write>) -> Result<()> {
    let mut doc = c.wf.doc.clone();
    doc.phase = phase;
    doc.message = message.clone();
    doc.updated_ms = now_ms();
    let mut writes = extra;
    writes.push(Write::Put {
        key: super::workflow::key(&doc.name),
        value: serde_json::to_vec_pretty(&doc)?,
        expect: Expect::Revision(c.wf.revision),
    });
    let (version, revision) = routing::update(&c.store, &doc.keyspace, writes, |r| {
        r.dual_write.clear();
        r.workflow = None;
        r.write_buffer = None;
    })
    .await?;
    c.wf.doc = doc;
    c.wf.revision = revision;
    tracing::info!("{message}");
    routing::wait_acks(
        &c.store,
        &c.wf.doc.keyspace,
        version,
        Instant::now() + Duration::from_secs(30),
    )
    .await
}

/// Removes change capture from both sides, and the guards of the side that serves from
/// now on (or whose copies go); a reshard's retired sources keep theirs raised.
async fn remove_capture(c: &mut Controller) -> Result<()> {
    let names: Vec<String> = c.tables.iter().map(|t| t.name.clone()).collect();
    for s in c.sources.iter_mut().chain(c.targets.iter_mut()) {
        for t in &names {
            capture::remove(s, t).await?;
        }
    }
    let retired_sources = c.wf.doc.phase == Phase::Complete && !c.wf.doc.moves_tables();
    for s in c.targets.iter_mut() {
        for t in &names {
            guard::remove(s, t).await?;
        }
    }
    for s in c.sources.iter_mut() {
        if retired_sources {
            guard::set_all(s, &names, guard::Guard::On, Duration::from_secs(30)).await?;
            continue;
        }
        for t in &names {
            guard::remove(s, t).await?;
        }
    }
    Ok(())
}

/// `complete`: the targets keep serving, the sources are retired (their rows deleted in
/// throttled chunks when the workflow asked for it).
pub async fn complete(c: &mut Controller) -> Result<()> {
    super::require(c, &[Phase::CutOver], "complete")?;
    // Bring the sources up to date one last time (a later manual fallback finds them
    // current), and carry over anything a slow proxy wrote to them.
    c.catch_up(true, 0).await?;
    c.catch_up(false, 0).await?;
    if c.wf.doc.moves_tables() {
        let extra = movetables::end_writes(c, Phase::Complete).await?;
        let tables: Vec<String> = c.wf.doc.tables.keys().cloned().collect();
        let message = format!(
            "complete: {} live in {}; routing rules keep sending {} to them",
            tables.join(","),
            c.wf.doc.target(),
            c.wf.doc.keyspace
        );
        end(c, Phase::Complete, message, extra).await?;
        super::crash_point("after-complete");
        remove_leftovers(c).await?;
        return c
            .note(format!(
                "complete: {} moved to {}; the source copies dropped",
                tables.join(","),
                c.wf.doc.target()
            ))
            .await;
    }
    let mut extra = shard_states(c, &c.wf.doc.from.clone(), ShardState::Retired).await?;
    extra.extend(shard_states(c, &c.wf.doc.to.clone(), ShardState::Ready).await?);
    end(
        c,
        Phase::Complete,
        format!(
            "complete: {} serve; {} retired",
            c.wf.doc.to.join(","),
            c.wf.doc.from.join(",")
        ),
        extra,
    )
    .await?;
    super::crash_point("after-complete");
    remove_leftovers(c).await?;
    if c.wf.doc.options.delete_source_rows {
        let deleted = delete_source_rows(c).await?;
        c.note(format!(
            "complete: {} serve; {} retired; {deleted} rows deleted from the sources",
            c.wf.doc.to.join(","),
            c.wf.doc.from.join(",")
        ))
        .await?;
    }
    Ok(())
}

/// Deletes every row of the workflow's tables from the (retired) sources, a chunk at a
/// time, pausing between chunks as long as each took.
async fn delete_source_rows(c: &mut Controller) -> Result<u64> {
    let chunk = c.wf.doc.options.chunk_rows.max(1);
    let mut total = 0;
    for t in c.tables.clone() {
        let sql = format!(
            "DELETE FROM {} ORDER BY {} LIMIT {chunk}",
            ident(&t.name),
            t.pk_list()
        );
        for s in c.sources.iter_mut() {
            loop {
                let t0 = Instant::now();
                s.run(&sql).await?;
                let n = s.conn.affected_rows();
                total += n;
                if n < chunk {
                    break;
                }
                tokio::time::sleep(t0.elapsed()).await;
            }
        }
    }
    Ok(total)
}

/// `abort`: before cutover, stops the workflow; the sources keep serving as they always
/// did, the targets' copies are dropped.
pub async fn abort(c: &mut Controller) -> Result<()> {
    super::require(
        c,
        &[
            Phase::Created,
            Phase::Copying,
            Phase::Backfilled,
            Phase::Verified,
        ],
        "abort",
    )?;
    let extra = if c.wf.doc.moves_tables() {
        movetables::end_writes(c, Phase::Aborted).await?
    } else {
        vec![]
    };
    end(
        c,
        Phase::Aborted,
        "aborted; the sources serve as before".into(),
        extra,
    )
    .await?;
    super::crash_point("after-abort");
    remove_leftovers(c).await?;
    c.note("aborted; change capture removed and the targets' copies dropped")
        .await
}

/// After the workflow ended (complete or abort): removes the change capture on both sides
/// and, after an abort, the targets' copies; then records that it is done. Idempotent, so
/// `resume` finishes it after a controller died between the end and the cleanup.
pub async fn remove_leftovers(c: &mut Controller) -> Result<()> {
    if c.wf.doc.moves_tables() {
        movetables::release_target(c).await?;
        if c.wf.doc.phase == Phase::Complete {
            // Dropped while still guarded; their capture and guard rows go next.
            movetables::drop_source_tables(c).await?;
        }
    }
    remove_capture(c).await?;
    if c.wf.doc.phase == Phase::Aborted {
        let made = c.wf.doc.sequences_added.clone();
        if let Some(src) = c.sources.first_mut() {
            super::sequence::drop(src, &made).await?;
        }
        let names: Vec<String> = c.tables.iter().map(|t| t.name.clone()).collect();
        for tc in c.targets.iter_mut() {
            for t in &names {
                tc.run(&format!("DROP TABLE IF EXISTS {}", db::ident(t)))
                    .await?;
            }
        }
    }
    c.wf.doc.leftovers_removed = true;
    c.checkpoint(true).await
}
