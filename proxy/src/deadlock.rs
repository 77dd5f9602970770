//! Deadlocks across shards, ended like local ones.
//!
//! One MariaDB server breaks a lock-wait cycle at once (error 1213). A cycle that spans
//! shards (a transaction waits on shard A for one that waits on shard B for the first)
//! is invisible to each server: both would wait for `innodb_lock_wait_timeout`. This
//! detector closes that gap:
//!
//! 1. Every `session.deadlock_check_ms / 2` it looks, in memory, for sessions whose
//!    statement inside a transaction has run longer than `deadlock_check_ms`. None: it
//!    does nothing else (no query, no etcd traffic).
//! 2. For those, it asks each shard server they use who waits for whom
//!    (`information_schema.INNODB_LOCK_WAITS` joined to `INNODB_TRX`, by server thread id).
//! 3. Each waiting transaction becomes a [`WaitRecord`]: the connections it holds and
//!    the connections it waits for, as `address#thread`. Records are published in etcd
//!    under `waits/<proxy>/<session>` (leased, a few seconds) so that a cycle through
//!    sessions of several proxies is seen by each of them.
//! 4. In the graph of all records (an edge when one waits for a connection another
//!    holds), every cycle loses its youngest transaction (latest start, then the larger
//!    id): the same choice on every proxy, so exactly one member is rolled back, by the
//!    proxy that owns it, with 1213 / SQLSTATE 40001 as MySQL does.

use crate::backend::pool::Pool;
use crate::context::Context;
use crate::registry::{BackendThread, SessionEntry};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A transaction waiting for a lock, as proxies publish it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitRecord {
    /// `<proxy>/<session id>`.
    pub id: String,
    /// When the transaction began (unix ms): the youngest of a cycle is rolled back.
    pub started_ms: u64,
    /// Its backend connections, `address#thread`.
    pub holds: Vec<String>,
    /// The connections it waits for, `address#thread`.
    pub waits_for: Vec<String>,
    /// When the record was made (unix ms); stale ones are ignored.
    pub at_ms: u64,
}

/// Records older than this are ignored (their proxy stopped refreshing them).
const FRESH_MS: u64 = 3_000;
/// At most this many records are considered (a bound on the graph's cost).
const MAX_RECORDS: usize = 512;

/// The ids of the transactions to roll back: the youngest member of each cycle.
pub fn victims(records: &[WaitRecord]) -> Vec<String> {
    let records = &records[..records.len().min(MAX_RECORDS)];
    let n = records.len();
    let mut holder: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        for h in &r.holds {
            holder.entry(h.as_str()).or_default().push(i);
        }
    }
    let edges: Vec<Vec<usize>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut out: Vec<usize> = r
                .waits_for
                .iter()
                .flat_map(|w| holder.get(w.as_str()).into_iter().flatten().copied())
                .filter(|&j| j != i)
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect();
    // reach[i][j]: j can be reached from i.
    let reach: Vec<Vec<bool>> = (0..n)
        .map(|start| {
            let mut seen = vec![false; n];
            let mut stack = edges[start].clone();
            while let Some(j) = stack.pop() {
                if !seen[j] {
                    seen[j] = true;
                    stack.extend(edges[j].iter().copied());
                }
            }
            seen
        })
        .collect();
    let age = |i: usize| (records[i].started_ms, records[i].id.as_str());
    (0..n)
        .filter(|&i| reach[i][i])
        .filter(|&i| {
            // No younger member in its cycle (same strongly connected component).
            (0..n).all(|j| j == i || !(reach[i][j] && reach[j][i]) || age(j) < age(i))
        })
        .map(|i| records[i].id.clone())
        .collect()
}

/// Runs the detector forever (returns at once when `session.deadlock_check_ms` is 0).
pub async fn run(ctx: Arc<Context>) {
    let check = ctx.config.session.deadlock_check_ms;
    if check == 0 {
        return;
    }
    let threshold = Duration::from_millis(check);
    let period = Duration::from_millis((check / 2).max(20));
    let proxy = ctx.config.proxy_id().replace('/', "_");
    let mut detector = Detector {
        ctx,
        proxy,
        published: HashSet::new(),
        lease: None,
    };
    loop {
        tokio::time::sleep(period).await;
        detector.tick(threshold).await;
    }
}

struct Detector {
    ctx: Arc<Context>,
    proxy: String,
    /// Keys this proxy has in etcd now.
    published: HashSet<String>,
    lease: Option<(i64, Instant)>,
}

impl Detector {
    async fn tick(&mut self, threshold: Duration) {
        let waiters = self.ctx.registry.long_in_transaction(threshold);
        if waiters.is_empty() {
            if !self.published.is_empty() {
                self.publish(&[]).await;
            }
            return;
        }
        let local = self.local_records(&waiters).await;
        let mut all = local.clone();
        if self.ctx.store.is_some() {
            self.publish(&local).await;
            let now = crate::topo::now_ms();
            for r in self.remote_records().await {
                let mine = r.id.split('/').next() == Some(self.proxy.as_str());
                if !mine && now.saturating_sub(r.at_ms) <= FRESH_MS {
                    all.push(r);
                }
            }
        }
        for id in victims(&all) {
            let Some(session) = id
                .strip_prefix(self.proxy.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(e) = waiters.iter().find(|e| e.id == session) {
                tracing::warn!(
                    session = e.id,
                    "lock-wait cycle across shards; rolling back the youngest transaction (1213)"
                );
                self.ctx.metrics.deadlocks_broken_total.inc();
                e.deadlock_kill();
            }
        }
    }

    /// The waiting transactions of this proxy, with what each waits for on its shards.
    async fn local_records(&self, waiters: &[Arc<SessionEntry>]) -> Vec<WaitRecord> {
        let views: Vec<(u32, u64, Vec<BackendThread>)> = waiters
            .iter()
            .filter_map(|e| e.locks.view().map(|(s, c)| (e.id, s, c)))
            .collect();
        let mut servers: HashMap<String, Arc<Pool>> = HashMap::new();
        for (_, _, conns) in &views {
            for (pool, _) in conns {
                servers
                    .entry(pool.options().addr.clone())
                    .or_insert_with(|| pool.clone());
            }
        }
        let mut waits: HashMap<(String, u32), Vec<u32>> = HashMap::new();
        for (addr, pool) in servers {
            for (waiting, blocking) in lock_waits(&pool).await {
                waits
                    .entry((addr.clone(), waiting))
                    .or_default()
                    .push(blocking);
            }
        }
        let now = crate::topo::now_ms();
        views
            .into_iter()
            .filter_map(|(id, started_ms, conns)| {
                let mut holds = Vec::new();
                let mut waits_for = Vec::new();
                for (pool, thread) in conns {
                    let addr = &pool.options().addr;
                    holds.push(format!("{addr}#{thread}"));
                    for b in waits.get(&(addr.clone(), thread)).into_iter().flatten() {
                        waits_for.push(format!("{addr}#{b}"));
                    }
                }
                (!waits_for.is_empty()).then(|| WaitRecord {
                    id: format!("{}/{id}", self.proxy),
                    started_ms,
                    holds,
                    waits_for,
                    at_ms: now,
                })
            })
            .collect()
    }

    /// Replaces this proxy's records in etcd with `records`.
    async fn publish(&mut self, records: &[WaitRecord]) {
        let Some(store) = &self.ctx.store else {
            return;
        };
        let keys: HashSet<String> = records.iter().map(|r| format!("waits/{}", r.id)).collect();
        for old in self.published.difference(&keys) {
            let _ = store.delete(old).await;
        }
        self.published.retain(|k| keys.contains(k));
        if records.is_empty() {
            return;
        }
        let lease = match self.lease {
            Some((l, at)) if at.elapsed() < Duration::from_secs(2) => l,
            _ => match store.grant_lease(5).await {
                Ok(l) => {
                    self.lease = Some((l, Instant::now()));
                    l
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no etcd lease for lock-wait records");
                    return;
                }
            },
        };
        for r in records {
            let key = format!("waits/{}", r.id);
            let value = serde_json::to_vec(r).unwrap_or_default();
            if store.put_leased(&key, value, lease).await.is_ok() {
                self.published.insert(key);
            }
        }
    }

    async fn remote_records(&self) -> Vec<WaitRecord> {
        let Some(store) = &self.ctx.store else {
            return Vec::new();
        };
        match store.list("waits/").await {
            Ok(entries) => entries
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.value).ok())
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read lock-wait records");
                Vec::new()
            }
        }
    }
}

/// (waiting thread, blocking thread) pairs of one server's InnoDB lock waits.
async fn lock_waits(pool: &Arc<Pool>) -> Vec<(u32, u32)> {
    const SQL: &str = "SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id \
        FROM information_schema.INNODB_LOCK_WAITS w \
        JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
        JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id";
    let work = async {
        let mut conn = pool.get().await.ok()?;
        conn.query(SQL).await.ok()
    };
    let Ok(Some(result)) = tokio::time::timeout(Duration::from_millis(500), work).await else {
        tracing::debug!(server = %pool.options().addr, "cannot read lock waits");
        return Vec::new();
    };
    let num = |c: &Option<bytes::Bytes>| -> Option<u32> {
        std::str::from_utf8(c.as_deref()?).ok()?.parse().ok()
    };
    result
        .rows
        .iter()
        .filter_map(|row| Some((num(row.first()?)?, num(row.get(1)?)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, started: u64, holds: &[&str], waits: &[&str]) -> WaitRecord {
        WaitRecord {
            id: id.into(),
            started_ms: started,
            holds: holds.iter().map(|s| s.to_string()).collect(),
            waits_for: waits.iter().map(|s| s.to_string()).collect(),
            at_ms: 0,
        }
    }

    #[test]
    fn the_youngest_of_a_cycle_is_the_victim() {
        // a holds s1#10 and s2#20, waits on s2 for b's #21; b waits on s1 for a's #10.
        let a = rec("p1/1", 100, &["s1#10", "s2#20"], &["s2#21"]);
        let b = rec("p2/7", 200, &["s1#11", "s2#21"], &["s1#10"]);
        assert_eq!(victims(&[a.clone(), b.clone()]), vec!["p2/7".to_string()]);
        // A chain without a cycle: nobody.
        let c = rec("p1/2", 300, &["s3#1"], &["s1#10"]);
        assert!(victims(&[a.clone(), c.clone()]).is_empty());
        // A third transaction waiting on the cycle is not part of it.
        let v = victims(&[a.clone(), b.clone(), c]);
        assert_eq!(v, vec!["p2/7".to_string()]);
        // Two separate cycles: one victim each; same start time: the larger id.
        let x = rec("p3/1", 50, &["s9#1"], &["s9#2"]);
        let y = rec("p3/2", 50, &["s9#2"], &["s9#1"]);
        let mut v = victims(&[a, b, x, y]);
        v.sort();
        assert_eq!(v, vec!["p2/7".to_string(), "p3/2".to_string()]);
    }

    #[test]
    fn three_way_cycles_and_self_waits() {
        let a = rec("a", 1, &["s#1"], &["s#2"]);
        let b = rec("b", 3, &["s#2"], &["s#3"]);
        let c = rec("c", 2, &["s#3"], &["s#1"]);
        assert_eq!(victims(&[a.clone(), b, c]), vec!["b".to_string()]);
        // Waiting for a connection of its own (a lock the server resolves) is no cycle.
        let selfish = rec("d", 1, &["s#9"], &["s#9"]);
        assert!(victims(&[selfish]).is_empty());
    }
}
