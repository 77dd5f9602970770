//! Atomic commit across shards (`transaction_mode = twopc`), with XA.
//!
//! Each shard's branch runs as `XA START 'gtrid','keyspace/shard'`. At COMMIT:
//! 1. one participant: `XA END` + `XA COMMIT ... ONE PHASE`;
//! 2. several: `XA END` + `XA PREPARE` on each (any failure rolls every branch back);
//! 3. the commit decision is written to etcd (`twopc/<gtrid>`, compare-and-swap) — the
//!    point of no return: once it is there the transaction commits, whatever fails later;
//! 4. `XA COMMIT` on each; the decision is deleted when all are committed.
//!
//! Recovery ([`recover`], at start and periodically) resolves branches a crashed proxy
//! left prepared: with a commit decision they are committed; without one, once their
//! proxy is gone, recovery writes a rollback decision (the same compare-and-swap, so a
//! late commit cannot also win) and rolls them back. Prepared XA branches survive
//! disconnects and server restarts in MariaDB, so nothing is lost in between.

use super::conns::{Held, Transaction};
use crate::context::Context;
use crate::error::ProxyError;
use shardgate_topology::store::{Expect, Write};
use std::collections::BTreeMap;

/// Crash tests: `SG_FAILPOINT=twopc-after-prepare` (or `twopc-after-decision`)
/// makes the proxy abort at that step of a commit, as a crash would.
fn failpoint(name: &str) {
    crate::failpoint::crash(name);
}

/// The etcd key of a commit decision.
pub fn decision_key(gtrid: &str) -> String {
    format!("twopc/{gtrid}")
}

/// A proxy id as it appears in transaction ids: `[A-Za-z0-9_]`, at most 24 characters
/// (an XA gtrid holds at most 64 bytes).
fn sanitize(proxy: &str) -> String {
    proxy
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect()
}

/// Builds a global transaction id: unique per proxy (and its start), session and
/// transaction.
pub fn new_gtrid(proxy: &str, started_ms: u64, session: u32, n: u64) -> String {
    format!("sg-{}-{started_ms}-{session}-{n}", sanitize(proxy))
}

fn xid(t: &Transaction, h: &Held) -> String {
    format!("'{}','{}'", t.xid, h.label)
}

/// Runs `XA <verb> <xid>` on a participant (`verb` may carry a suffix after `{}`).
async fn xa(
    h: &mut Held,
    t: &Transaction,
    verb: &str,
) -> Result<(), crate::backend::conn::BackendError> {
    let sql = match verb.split_once("{}") {
        Some((a, b)) => format!("XA {a}{}{b}", xid(t, h)),
        None => format!("XA {verb} {}", xid(t, h)),
    };
    h.conn.execute(&sql).await.map(|_| ())
}

/// Commits or rolls back a twopc transaction on the participants.
pub async fn finish(
    ctx: &Context,
    held: &mut [Held],
    t: &Transaction,
    commit: bool,
) -> Result<(), ProxyError> {
    let mut parts: Vec<&mut Held> = held.iter_mut().filter(|h| h.in_txn).collect();
    for h in parts.iter_mut() {
        h.in_txn = false;
        h.wrote = false;
    }
    if !commit {
        let mut first = None;
        for h in parts {
            let r = async {
                xa(h, t, "END").await?;
                xa(h, t, "ROLLBACK").await
            }
            .await;
            if let Err(e) = r {
                first.get_or_insert(ProxyError::from_backend(&h.label, e));
                h.conn.mark_broken();
            }
        }
        return first.map_or(Ok(()), Err);
    }
    if parts.len() == 1 {
        let h = &mut parts[0];
        let r = async {
            xa(h, t, "END").await?;
            xa(h, t, "COMMIT {} ONE PHASE").await
        }
        .await;
        return r
            .map(|_| ())
            .map_err(|e| ProxyError::from_backend(&h.label, e));
    }
    // Phase 1: prepare everywhere.
    let mut failure = None;
    let mut prepared = Vec::new();
    for (i, h) in parts.iter_mut().enumerate() {
        let r = async {
            xa(h, t, "END").await?;
            xa(h, t, "PREPARE").await
        }
        .await;
        match r {
            Ok(_) => prepared.push(i),
            Err(e) => {
                failure = Some(ProxyError::from_backend(&h.label, e));
                break;
            }
        }
    }
    failpoint("twopc-after-prepare");
    let decision = match failure {
        None => record_decision(ctx, t, &parts).await,
        Some(e) => Err(e),
    };
    if let Err(e) = decision {
        // No decision recorded: everything rolls back.
        for h in parts.iter_mut() {
            let x = xid(t, h);
            if h.conn.execute(&format!("XA ROLLBACK {x}")).await.is_err() {
                let _ = h.conn.execute(&format!("XA END {x}")).await;
                let _ = h.conn.execute(&format!("XA ROLLBACK {x}")).await;
            }
        }
        return Err(e);
    }
    failpoint("twopc-after-decision");
    // Point of no return: the decision is durable. Commit every branch; one that fails
    // now is committed by recovery later.
    let mut all = true;
    for h in parts.iter_mut() {
        if let Err(e) = xa(h, t, "COMMIT").await {
            tracing::warn!(shard = %h.label, error = %e, xid = %t.xid, "XA COMMIT failed; recovery will finish it");
            h.conn.mark_broken();
            all = false;
        }
    }
    if all {
        if let Some(store) = &ctx.store {
            let _ = store
                .commit(&[Write::Delete {
                    key: decision_key(&t.xid),
                    expect: Expect::Any,
                }])
                .await;
        }
    }
    Ok(())
}

async fn record_decision(
    ctx: &Context,
    t: &Transaction,
    parts: &[&mut Held],
) -> Result<(), ProxyError> {
    let store = ctx.store.as_ref().ok_or_else(|| {
        ProxyError::Internal("twopc needs etcd to record commit decisions".into())
    })?;
    let participants: Vec<serde_json::Value> = parts
        .iter()
        .map(|h| serde_json::json!({"addr": h.key.0, "database": h.key.1, "branch": h.label}))
        .collect();
    let doc = serde_json::json!({
        "decision": "commit",
        "proxy": ctx.config.proxy_id(),
        "participants": participants,
        "at_ms": now_ms(),
    });
    store
        .commit(&[Write::Put {
            key: decision_key(&t.xid),
            value: serde_json::to_vec(&doc).unwrap_or_default(),
            expect: Expect::Absent,
        }])
        .await
        .map(|_| ())
        .map_err(|e| {
            ProxyError::Internal(format!(
                "recording the commit decision failed, transaction rolled back: {e}"
            ))
        })
}

/// A decision as stored in etcd: true to commit.
fn parse_decision(value: &[u8]) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    match v.get("decision")?.as_str()? {
        "commit" => Some(true),
        "rollback" => Some(false),
        _ => None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rollback decisions are kept this long (a late commit attempt must still find them).
const KEEP_ROLLBACK_MS: u64 = 10 * 60 * 1000;

/// Resolves XA branches left prepared by a proxy that crashed between XA PREPARE and
/// XA COMMIT. Returns (committed, rolled back).
///
/// A branch with a commit decision is committed. A branch without one is left alone while
/// its proxy (this incarnation of it, for our own) may still decide; otherwise recovery
/// records a rollback decision with the same compare-and-swap a committing proxy uses, so
/// exactly one of the two wins, and acts on whichever did.
pub async fn recover(ctx: &Context) -> Result<(usize, usize), ProxyError> {
    let Some(store) = &ctx.store else {
        return Ok((0, 0));
    };
    let internal = |e: shardgate_topology::store::StoreError| ProxyError::Internal(e.to_string());
    let loaded = store.load().await.map_err(internal)?;
    let mut decisions: BTreeMap<String, (bool, u64)> = BTreeMap::new();
    let mut live = Vec::new();
    for e in &loaded.entries {
        if let Some(g) = e.key.strip_prefix("twopc/") {
            if let Some(d) = parse_decision(&e.value) {
                let at = serde_json::from_slice::<serde_json::Value>(&e.value)
                    .ok()
                    .and_then(|v| v.get("at_ms").and_then(|a| a.as_u64()))
                    .unwrap_or(0);
                decisions.insert(g.to_string(), (d, at));
            }
        } else if let Some(p) = e.key.strip_prefix("proxies/") {
            live.push(format!("sg-{}-", sanitize(p)));
        }
    }
    let me = format!("sg-{}-", sanitize(&ctx.config.proxy_id()));
    let this_incarnation = format!("{me}{}-", ctx.started_unix_ms);
    let may_still_decide = |gtrid: &str| {
        if gtrid.starts_with(&me) {
            gtrid.starts_with(&this_incarnation)
        } else {
            live.iter().any(|p| gtrid.starts_with(p.as_str()))
        }
    };
    let snapshot = ctx.snapshot();
    let mut servers: Vec<&shardgate_topology::Shard> = Vec::new();
    for shard in snapshot.keyspaces.values().flat_map(|k| k.shards.values()) {
        if !servers.iter().any(|s| s.primary == shard.primary) {
            servers.push(shard);
        }
    }
    let (mut committed, mut rolled_back) = (0, 0);
    let mut pending: Vec<String> = Vec::new();
    for shard in servers {
        let pool = ctx.backends.pool(shard, 45, 0);
        let Ok(mut conn) = pool.get().await else {
            continue;
        };
        let Ok(r) = conn.query("XA RECOVER").await else {
            continue;
        };
        for row in r.rows {
            let cell = |i: usize| {
                row.get(i)
                    .cloned()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            let (Some(gl), Some(data)) = (cell(1), cell(3)) else {
                continue;
            };
            let gl: usize = gl.parse().unwrap_or(0);
            if !data.starts_with("sg-") || data.len() < gl || !data.is_char_boundary(gl) {
                continue;
            }
            let (gtrid, bqual) = data.split_at(gl);
            let decision = match decisions.get(gtrid) {
                Some((d, _)) => *d,
                None if may_still_decide(gtrid) => {
                    pending.push(gtrid.to_string());
                    continue;
                }
                None => {
                    let Some(d) = decide_rollback(store, gtrid).await else {
                        pending.push(gtrid.to_string());
                        continue;
                    };
                    decisions.insert(gtrid.to_string(), (d, now_ms()));
                    d
                }
            };
            let x = format!("'{gtrid}','{bqual}'");
            let sql = if decision { "XA COMMIT" } else { "XA ROLLBACK" };
            match conn.execute(&format!("{sql} {x}")).await {
                Ok(_) if decision => committed += 1,
                Ok(_) => rolled_back += 1,
                Err(e) => {
                    tracing::warn!(xid = %x, error = %e, "resolving an in-doubt XA branch failed");
                    pending.push(gtrid.to_string());
                }
            }
        }
    }
    // Decisions nothing depends on any more can go.
    for (g, (commit, at)) in &decisions {
        let stale = *commit || now_ms().saturating_sub(*at) > KEEP_ROLLBACK_MS;
        if stale && !pending.contains(g) && !may_still_decide(g) {
            let _ = store
                .commit(&[Write::Delete {
                    key: decision_key(g),
                    expect: Expect::Any,
                }])
                .await;
        }
    }
    if committed + rolled_back > 0 {
        tracing::info!(committed, rolled_back, "resolved in-doubt XA transactions");
    }
    Ok((committed, rolled_back))
}

/// Records a rollback decision unless a commit decision got there first; returns the
/// decision that holds (None if etcd could not tell).
async fn decide_rollback(store: &shardgate_topology::Store, gtrid: &str) -> Option<bool> {
    let doc = serde_json::json!({"decision": "rollback", "by": "recovery", "at_ms": now_ms()});
    let put = Write::Put {
        key: decision_key(gtrid),
        value: serde_json::to_vec(&doc).unwrap_or_default(),
        expect: Expect::Absent,
    };
    match store.commit(&[put]).await {
        Ok(_) => Some(false),
        Err(_) => store
            .get(&decision_key(gtrid))
            .await
            .ok()
            .flatten()
            .and_then(|e| parse_decision(&e.value)),
    }
}

/// Runs recovery at start and then periodically.
pub async fn recovery_loop(ctx: std::sync::Arc<Context>, every: std::time::Duration) {
    loop {
        if let Err(e) = recover(&ctx).await {
            tracing::warn!(error = %e, "XA recovery pass failed; will retry");
        }
        tokio::time::sleep(every).await;
    }
}
