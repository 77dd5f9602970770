//! Holding writes during a resharding cutover.
//!
//! While a keyspace's routing document carries a `write_buffer`, a write that would reach
//! one of its shards waits here instead of running: the controller is draining the source
//! shards and is about to flip the routing. When the snapshot changes (the flip, or the
//! buffer lifted after a failed cutover) the statement is planned again against the new
//! routing and runs; after `max_wait_ms` it proceeds against whatever routing is current.
//! The client sees latency, never an error.
//!
//! A transaction that already holds one of the buffered shards goes on: holding it would
//! only keep the drain from finishing.

use super::Session;
use crate::planner::{Plan, Primitive};
use shardgate_topology::Snapshot;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a held write looks for the new routing.
const POLL: Duration = Duration::from_millis(2);

/// Whether `sql` changes rows (the statements a cutover must hold).
pub fn is_write(sql: &str) -> bool {
    let b = sql.trim_start().as_bytes();
    let b = skip_comments(b);
    let word: Vec<u8> = b
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(
        word.as_slice(),
        b"INSERT" | b"UPDATE" | b"DELETE" | b"REPLACE"
    )
}

fn skip_comments(mut b: &[u8]) -> &[u8] {
    loop {
        let t = b
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len());
        b = &b[t..];
        if b.starts_with(b"/*") {
            match b.windows(2).position(|w| w == b"*/") {
                Some(end) => b = &b[end + 2..],
                None => return &[],
            }
        } else if b.starts_with(b"-- ") || b.starts_with(b"#") {
            match b.iter().position(|c| *c == b'\n') {
                Some(end) => b = &b[end + 1..],
                None => return &[],
            }
        } else {
            return b;
        }
    }
}

/// The keyspaces a plan's routes go to.
pub fn plan_keyspaces(p: &Primitive, out: &mut Vec<String>) {
    let mut add = |k: &str| {
        if !out.iter().any(|x| x == k) {
            out.push(k.to_string());
        }
    };
    match p {
        Primitive::Route(r) => add(&r.keyspace),
        Primitive::Insert(i) => add(&i.keyspace),
        Primitive::Write(w) => add(&w.route.keyspace),
        Primitive::MergeSort { input, .. }
        | Primitive::Aggregate { input, .. }
        | Primitive::Filter { input, .. }
        | Primitive::Sort { input, .. }
        | Primitive::Distinct { input, .. }
        | Primitive::Limit { input, .. }
        | Primitive::Project { input, .. } => plan_keyspaces(input, out),
        Primitive::Concat(parts) => parts.iter().for_each(|x| plan_keyspaces(x, out)),
    }
}

impl Session {
    /// The longest a write of `plan` must be held under `snapshot`, if it must be.
    fn buffer_wait(&self, p: &Primitive, snapshot: &Snapshot) -> Option<u64> {
        let mut keyspaces = Vec::new();
        plan_keyspaces(p, &mut keyspaces);
        let mut wait = None;
        for name in keyspaces {
            let Some(ks) = snapshot.keyspace(&name) else {
                continue;
            };
            let Some(buf) = &ks.routing.write_buffer else {
                continue;
            };
            let holds_all = buf.shards.iter().all(|s| {
                self.conns
                    .held()
                    .iter()
                    .any(|h| h.in_txn && h.label == format!("{name}/{s}"))
            });
            if !holds_all {
                wait = Some(wait.unwrap_or(0).max(buf.max_wait_ms));
            }
        }
        wait
    }

    /// Holds a write while its keyspace's cutover buffers writes. Returns the plan and
    /// snapshot to run with when the routing changed meanwhile.
    pub(super) async fn hold_for_cutover(
        &mut self,
        plan: &Plan,
        sql: &str,
        snapshot: &Snapshot,
    ) -> Option<Result<(Arc<Plan>, Arc<Snapshot>), crate::error::ProxyError>> {
        let Plan::Query(p) = plan else {
            return None;
        };
        // The common case costs one pass over the keyspaces, no allocation.
        if !snapshot
            .keyspaces
            .values()
            .any(|k| k.routing.write_buffer.is_some())
            || !is_write(sql)
        {
            return None;
        }
        let max_wait = self.buffer_wait(p, snapshot)?;
        self.ctx.metrics.writes_buffered_total.inc();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(max_wait);
        let mut current = self.ctx.snapshot();
        while Instant::now() < deadline {
            if current.revision != snapshot.revision {
                match self.ctx.plan(
                    sql,
                    &current,
                    self.keyspace.as_deref(),
                    self.shard.as_deref(),
                ) {
                    Ok(np) => match &*np {
                        Plan::Query(q) if self.buffer_wait(q, &current).is_some() => {}
                        _ => {
                            self.record_hold(started);
                            return Some(Ok((np, current)));
                        }
                    },
                    Err(e) => return Some(Err(e)),
                }
            }
            tokio::time::sleep(POLL).await;
            current = self.ctx.snapshot();
        }
        // Held long enough: go on against the routing in force now.
        self.record_hold(started);
        let current = self.ctx.snapshot();
        let np = self.ctx.plan(
            sql,
            &current,
            self.keyspace.as_deref(),
            self.shard.as_deref(),
        );
        Some(np.map(|p| (p, current)))
    }

    fn record_hold(&self, started: Instant) {
        let ms = started.elapsed().as_millis() as i64;
        let m = &self.ctx.metrics.write_buffer_max_ms;
        if ms > m.get() {
            m.set(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_write;

    #[test]
    fn writes_are_recognised_after_comments() {
        assert!(is_write("insert into t values (1)"));
        assert!(is_write("  /* hint */ UPDATE t SET a = 1"));
        assert!(is_write("-- note\nDELETE FROM t"));
        assert!(is_write("REPLACE INTO t VALUES (1)"));
        assert!(!is_write("SELECT * FROM t"));
        assert!(!is_write("/* INSERT */ SELECT 1"));
        assert!(!is_write("/* unterminated INSERT"));
    }
}
