//! Cutover and rollback: moving the serving role between the two sides of a workflow
//! with writes held for a moment and nothing lost.
//!
//! 1. Wait until every registered proxy runs the current routing (a dead proxy's lease is
//!    waited out here, before any write is held), and apply the capture backlog while
//!    writes still flow, until it is small.
//! 2. Turn on the proxies' write buffer for the old side's shards; every live proxy must
//!    acknowledge it (a dead proxy drops out when its lease expires).
//! 3. Wait until no transaction holding locks is open on the old side (in-flight writes
//!    finish; one that only read is not waited for: the proxies hold its writes).
//! 4. Raise the old side's guards, which waits exactly for the transactions that wrote
//!    there (`INNODB_TRX`, step 3, is a cache up to 100 ms old); apply the last captured
//!    changes: the new side now equals the old.
//! 5. Flip the routing (the new side serves, changes flow back) and lift the buffer in
//!    one etcd write; held writes run against the new side as each proxy applies it.
//!    For a reshard the flip changes the keyspace's serving shards; for MoveTables it
//!    turns the tables' routing rules (the buffer and the flip live in the routing of
//!    the keyspace that served until then).
//!
//! If any step before the flip fails or the time budget (half the buffer's limit) runs
//! out, the buffer is lifted with the old routing: held writes proceed against the old
//! side, and the client sees latency, never an error.

use super::db::ShardConn;
use super::guard::{self, Guard};
use super::movetables::{self, Serve};
use super::routing;
use super::workflow::{now_ms, CutoverReport, Phase, VerifyReport};
use super::Controller;
use anyhow::{anyhow, bail, Result};
use shardgate_topology::docs::{DualWriteDoc, WriteBufferDoc};
use shardgate_topology::store::{Expect, Write};
use std::time::{Duration, Instant};

/// Transactions holding locks on a shard's database (they wrote, or read with locks),
/// other than the controller's.
async fn open_transactions(c: &mut ShardConn) -> Result<u64> {
    let r = c
        .exec(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX t LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE t.trx_mysql_thread_id <> CONNECTION_ID() AND t.trx_lock_structs > 0 AND (p.DB = DATABASE() OR p.ID IS NULL)",
            vec![],
        )
        .await?;
    Ok(r.first().map(|r| super::db::int(r, 0)).unwrap_or(0))
}

/// Whether a cutover may start (a go/no-go decision, from the workflow document alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutoverGate {
    Go,
    /// No verify has passed since the copy: checksums must match first.
    NotVerified,
    /// The last verify found chunks that still differ.
    VerifyFailed {
        still_differ: u64,
    },
    /// Before the copy ended, or after the cutover / the end.
    WrongPhase(Phase),
}

/// The gate: verified (or back from a rollback after a verify that passed).
pub fn cutover_gate(phase: Phase, verify: Option<&VerifyReport>) -> CutoverGate {
    match (phase, verify) {
        (Phase::Verified, _) => CutoverGate::Go,
        (Phase::Backfilled, Some(v)) if v.failed > 0 => CutoverGate::VerifyFailed {
            still_differ: v.failed,
        },
        (Phase::Backfilled, Some(_)) => CutoverGate::Go,
        (Phase::Backfilled, None) => CutoverGate::NotVerified,
        (p, _) => CutoverGate::WrongPhase(p),
    }
}

/// `cutover`: the targets take over. Tries up to `attempts` times.
pub async fn run(c: &mut Controller, attempts: u32) -> Result<()> {
    match cutover_gate(c.wf.doc.phase, c.wf.doc.verify.as_ref()) {
        CutoverGate::Go => {}
        CutoverGate::NotVerified => bail!(
            "workflow {} has not been verified; run `shardctl reshard verify` first",
            c.wf.doc.name
        ),
        CutoverGate::VerifyFailed { still_differ } => bail!(
            "workflow {}: the last verify found {still_differ} chunks that still differ; cutover refused (run verify again)",
            c.wf.doc.name
        ),
        CutoverGate::WrongPhase(_) => {
            super::require(c, &[Phase::Backfilled, Phase::Verified], "cutover")?
        }
    }
    switch(c, true, attempts).await
}

/// `rollback`: the sources take over again (after cutover, before complete).
pub async fn rollback(c: &mut Controller) -> Result<()> {
    super::require(c, &[Phase::CutOver], "rollback")?;
    switch(c, false, 3).await
}

async fn switch(c: &mut Controller, forward: bool, attempts: u32) -> Result<()> {
    let what = if forward { "cutover" } else { "rollback" };
    let mut failures = 0;
    let mut last_failure = None;
    loop {
        match attempt(c, forward).await {
            Ok(pause) => {
                c.wf.doc.cutover = Some(CutoverReport {
                    pause_ms: pause.as_millis() as u64,
                    failed_attempts: failures,
                    last_failure,
                    finished_ms: now_ms(),
                });
                c.wf.doc.phase = if forward {
                    Phase::CutOver
                } else {
                    Phase::Backfilled
                };
                let msg = format!(
                    "{what} done: writes held {} ms at most{}",
                    pause.as_millis(),
                    if failures > 0 {
                        format!(" ({failures} earlier attempts gave up and restored routing)")
                    } else {
                        String::new()
                    }
                );
                return c.note(msg).await;
            }
            Err(e) => {
                failures += 1;
                last_failure = Some(format!("{e:#}"));
                let msg = format!("{what} attempt {failures} gave up, routing restored: {e:#}");
                tracing::warn!("{msg}");
                c.note(msg).await?;
                if failures >= attempts as u64 {
                    bail!("{what} failed {failures} times; the old side still serves: {e:#}");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// One try. Returns how long writes were held.
async fn attempt(c: &mut Controller, forward: bool) -> Result<Duration> {
    // The keyspace of the side serving until now: its routing holds the write buffer and
    // carries the flip (for a reshard both sides are shards of one keyspace).
    let ks = c.wf.doc.sides(forward).0.to_string();
    let (old, new) = if forward {
        (c.wf.doc.from.clone(), c.wf.doc.to.clone())
    } else {
        (c.wf.doc.to.clone(), c.wf.doc.from.clone())
    };
    let max_wait = c.wf.doc.options.buffer_max_ms.max(200);
    // 1. Every proxy on the current routing (a dead one's lease waited out) and a small
    //    backlog, while writes flow.
    let current = routing::current_version(&c.store, &ks).await?;
    routing::wait_acks(
        &c.store,
        &ks,
        current,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    c.catch_up(forward, 200).await?;
    // 2. Hold writes.
    let started = Instant::now();
    let budget = started + Duration::from_millis(max_wait / 2);
    let expires_ms = now_ms() + max_wait * 4;
    let (buffer_version, _) = routing::update(&c.store, &ks, vec![], |r| {
        r.write_buffer = Some(WriteBufferDoc {
            shards: old.clone(),
            max_wait_ms: max_wait,
            // Lifted well before this; the expiry only matters if this controller dies.
            expires_ms,
        });
    })
    .await?;
    super::crash_point("buffer-set");
    let held = async {
        routing::wait_acks(&c.store, &ks, buffer_version, budget).await?;
        // 3. Drain.
        loop {
            let mut open = 0;
            let side = if forward {
                &mut c.sources
            } else {
                &mut c.targets
            };
            for s in side.iter_mut() {
                open += open_transactions(s).await?;
            }
            if open == 0 {
                break;
            }
            if Instant::now() >= budget {
                bail!("{open} transactions still open on the old side");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        super::pause_point("after-drain").await;
        // 4. The old side refuses writes from anyone but the controller (for a while: if
        //    this controller dies before the flip, the guard lapses by itself). Raising
        //    it waits until every transaction that wrote there ended (the exact drain,
        //    see `guard::set_all`); then the last changes, and the new side accepts
        //    writes.
        let patience = budget.saturating_duration_since(Instant::now());
        set_guards(c, forward, Guard::Until(expires_ms), patience).await?;
        c.catch_up(forward, 0).await?;
        if forward {
            advance_sequences(c).await?;
        }
        set_guards(c, !forward, Guard::Off, patience).await?;
        super::pause_point("after-guard").await;
        if Instant::now() >= budget {
            bail!("out of time before the flip");
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = held {
        restore(c, &ks, forward).await?;
        return Err(e);
    }
    // 5. Flip and release.
    let mut doc = c.wf.doc.clone();
    doc.phase = if forward {
        Phase::CutOver
    } else {
        Phase::Backfilled
    };
    doc.updated_ms = now_ms();
    let wf_write = Write::Put {
        key: super::workflow::key(&doc.name),
        value: serde_json::to_vec_pretty(&doc)?,
        expect: Expect::Revision(c.wf.revision),
    };
    let (old2, new2) = (old.clone(), new.clone());
    let moves_tables = c.wf.doc.moves_tables();
    let mut flip_writes = vec![wf_write];
    if moves_tables {
        // MoveTables: the routing rules send the tables to the new side.
        let serve = if forward {
            Serve::Target
        } else {
            Serve::Source
        };
        match movetables::rules_write(&c.store, &c.wf.doc, serve).await {
            Ok(w) => flip_writes.push(w),
            Err(e) => {
                restore(c, &ks, forward).await?;
                return Err(e);
            }
        }
    }
    let flip = routing::update(&c.store, &ks, flip_writes, move |r| {
        r.write_buffer = None;
        if moves_tables {
            return;
        }
        let mut serving: Vec<String> = r
            .serving
            .iter()
            .filter(|s| !old2.contains(s))
            .cloned()
            .collect();
        serving.extend(new2.iter().cloned());
        r.serving = serving;
        r.dual_write = vec![DualWriteDoc {
            from: new2.clone(),
            to: old2.clone(),
        }];
        r.write_buffer = None;
    })
    .await;
    let (flip_version, revision) = match flip {
        Ok(v) => v,
        Err(e) => {
            restore(c, &ks, forward).await?;
            return Err(anyhow!("cannot flip the routing: {e:#}"));
        }
    };
    super::crash_point("after-flip");
    c.wf.doc = doc;
    c.wf.revision = revision;
    // The old side no longer serves: from now on its guard holds for good. (Until it is
    // raised for good, the guard set before the flip holds until it expires.)
    if let Err(e) = set_guards(c, forward, Guard::On, Duration::from_secs(10)).await {
        tracing::warn!(
            "{e:#} (the old side stays guarded until {expires_ms}; complete raises it for good)"
        );
    }
    let acked = routing::wait_acks(
        &c.store,
        &ks,
        flip_version,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    let pause = started.elapsed();
    if let Err(e) = acked {
        tracing::warn!("{e:#} (their held writes go to the old side and are carried over)");
    }
    // Writes a slow proxy let through to the old side are carried over.
    c.catch_up(forward, 0).await?;
    Ok(pause)
}

/// MoveTables: the sequences `start` made move past every id the source used (it is
/// guarded and drained here, so none is added until the flip).
async fn advance_sequences(c: &mut Controller) -> Result<()> {
    for t in c.wf.doc.sequences_added.clone() {
        let Some(meta) = c.tables.iter().find(|m| m.name == t).cloned() else {
            continue;
        };
        let Some(column) = meta.primary_key.first().map(|k| k.name.clone()) else {
            continue;
        };
        if let Some(src) = c.sources.first_mut() {
            super::sequence::advance(src, &meta, &column).await?;
        }
    }
    Ok(())
}

/// After a failed attempt: the side that serves accepts writes again, the other stays
/// guarded, and the write buffer is lifted, leaving the routing as it was.
async fn restore(c: &mut Controller, ks: &str, forward: bool) -> Result<()> {
    // The serving side must accept writes before held writes are let go.
    let lowered = set_guards(c, forward, Guard::Off, Duration::from_secs(10)).await;
    let raised = set_guards(c, !forward, Guard::On, Duration::from_secs(10)).await;
    routing::update(&c.store, ks, vec![], |r| r.write_buffer = None).await?;
    lowered?;
    raised
}

/// Sets the guard of every table on one side (`sources`: true for the sources), the
/// shards in parallel.
pub(super) async fn set_guards(
    c: &mut Controller,
    sources: bool,
    mode: Guard,
    patience: Duration,
) -> Result<()> {
    let names: Vec<String> = c.tables.iter().map(|t| t.name.clone()).collect();
    let side = if sources {
        &mut c.sources
    } else {
        &mut c.targets
    };
    let work = side
        .iter_mut()
        .map(|s| guard::set_all(s, &names, mode, patience));
    for r in futures::future::join_all(work).await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failed: u64) -> VerifyReport {
        VerifyReport {
            failed,
            ..VerifyReport::default()
        }
    }

    #[test]
    fn cutover_needs_a_verify_that_passed() {
        let cases: &[(Phase, Option<VerifyReport>, CutoverGate)] = &[
            (Phase::Verified, Some(report(0)), CutoverGate::Go),
            (Phase::Backfilled, None, CutoverGate::NotVerified),
            (
                Phase::Backfilled,
                Some(report(2)),
                CutoverGate::VerifyFailed { still_differ: 2 },
            ),
            // Back from a rollback: the verify before the first cutover passed.
            (Phase::Backfilled, Some(report(0)), CutoverGate::Go),
            (
                Phase::Copying,
                None,
                CutoverGate::WrongPhase(Phase::Copying),
            ),
            (
                Phase::CutOver,
                Some(report(0)),
                CutoverGate::WrongPhase(Phase::CutOver),
            ),
        ];
        for (phase, verify, want) in cases {
            assert_eq!(&cutover_gate(*phase, verify.as_ref()), want, "{phase:?}");
        }
    }
}
