//! Holding writes during a resharding cutover.
//!
//! While a keyspace's routing document carries a `write_buffer`, a write that would reach
//! one of its shards waits here instead of running: the controller is draining the source
//! shards and is about to flip the routing. When the snapshot changes (the flip, or the
//! buffer lifted after a failed cutover) the statement is planned again against the new
//! routing and runs; after `max_wait_ms` it proceeds against whatever routing is current.
//! The client sees latency, never an error.
//!
//! A transaction that already wrote (or lock-read) on one of the buffered shards goes on
//! (to any of them): holding it would only keep the drain from finishing. One that only
//! read there is not waited for by the drain (it holds no lock), so its first write there
//! is held like any new one and runs on the new routing after the flip.
//!
//! Writes on keyspaces under a workflow register while they run ([`InflightWrites`]); a
//! proxy acknowledges a write buffer only once every write planned against the older
//! routing has finished, so none can reach a source after the controller's drain check.
//!
//! Fencing: while the proxy's etcd registration is lost, a controller may already have
//! stopped counting it, so writes to keyspaces under a workflow wait until it is registered
//! again with a freshly loaded topology, and fail with a clear error after 5 s.

use super::Session;
use crate::planner::{Plan, Primitive};
use shardgate_topology::Snapshot;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a held write looks for the new routing.
const POLL: Duration = Duration::from_millis(2);

/// Longest a write waits while the proxy is fenced (registration lost) before it fails.
const FENCE_WAIT_MS: u64 = 5000;

/// Write statements running now, by the snapshot revision they were planned against.
#[derive(Default)]
pub struct InflightWrites {
    counts: Mutex<BTreeMap<i64, usize>>,
}

/// A running write's registration; dropping it ends the registration.
pub struct WriteTicket {
    owner: Arc<InflightWrites>,
    revision: i64,
}

impl InflightWrites {
    pub fn enter(self: &Arc<Self>, revision: i64) -> WriteTicket {
        *self.counts.lock().unwrap().entry(revision).or_default() += 1;
        WriteTicket {
            owner: self.clone(),
            revision,
        }
    }

    /// Whether a write planned against a revision older than `revision` still runs.
    pub fn any_before(&self, revision: i64) -> bool {
        self.counts
            .lock()
            .unwrap()
            .range(..revision)
            .next()
            .is_some()
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        let mut m = self.owner.counts.lock().unwrap();
        if let Some(n) = m.get_mut(&self.revision) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.revision);
            }
        }
    }
}

impl Session {
    /// The longest a write of `plan` must be held under `snapshot`, if it must be.
    fn buffer_wait(&self, p: &Primitive, snapshot: &Snapshot) -> Option<u64> {
        let keyspaces = p.keyspaces();
        let mut wait = None;
        let fenced = self.ctx.fenced.load(std::sync::atomic::Ordering::SeqCst);
        for name in keyspaces {
            let Some(ks) = snapshot.keyspace(&name) else {
                continue;
            };
            if fenced && ks.routing.workflow.is_some() {
                wait = Some(wait.unwrap_or(0).max(FENCE_WAIT_MS));
            }
            let Some(buf) = &ks.routing.write_buffer else {
                continue;
            };
            if buf.expires_ms != 0 && crate::topo::now_ms() > buf.expires_ms {
                // Left behind by a controller that died mid-cutover.
                continue;
            }
            // A transaction that already wrote on any buffered shard must finish (the
            // drain waits for it), so its writes go on, to whichever of those shards they
            // reach. One that only read there is not waited for: its writes are held.
            let in_open_txn = buf.shards.iter().any(|s| {
                self.conns.held().iter().any(|h| {
                    h.in_txn
                        && h.wrote
                        && h.label
                            .strip_prefix(name.as_str())
                            .and_then(|r| r.strip_prefix('/'))
                            == Some(s.as_str())
                })
            });
            if !in_open_txn {
                wait = Some(wait.unwrap_or(0).max(buf.max_wait_ms));
            }
        }
        wait
    }

    /// Holds a write while its keyspace's cutover buffers writes. Returns the plan and
    /// snapshot to run with when the routing changed meanwhile. A write on a keyspace under
    /// a workflow runs registered with the snapshot revision it was planned against (see
    /// [`InflightWrites`]), so a cutover's acknowledgement waits for it.
    pub(super) async fn hold_for_cutover(
        &mut self,
        plan: &Plan,
        sql: &str,
        snapshot: &Snapshot,
    ) -> Option<Result<(Arc<Plan>, Arc<Snapshot>), crate::error::ProxyError>> {
        let Plan::Query(q) = plan else {
            return None;
        };
        // The common case costs one pass over the keyspaces, no allocation.
        if !q.facts.write
            || !snapshot
                .keyspaces
                .values()
                .any(|k| k.routing.workflow.is_some())
        {
            return None;
        }
        let mut replanned: Option<(Arc<Plan>, Arc<Snapshot>)> = None;
        let mut held_since: Option<Instant> = None;
        loop {
            let revision = replanned
                .as_ref()
                .map(|(_, s)| s.revision)
                .unwrap_or(snapshot.revision);
            let ticket = self.ctx.inflight_writes.enter(revision);
            let now = self.ctx.snapshot();
            if now.revision != revision {
                drop(ticket);
                match self
                    .ctx
                    .plan(sql, &now, self.keyspace.as_deref(), self.shard.as_deref())
                {
                    Ok(p) => replanned = Some((p, now)),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let wait = {
                let (p, s): (&Plan, &Snapshot) = match &replanned {
                    Some((p, s)) => (p, s),
                    None => (plan, snapshot),
                };
                match p {
                    Plan::Query(q) => self.buffer_wait(&q.root, s),
                    Plan::Session(_) => None,
                }
            };
            let expired = match (held_since, wait) {
                (Some(t), Some(ms)) => t.elapsed() >= Duration::from_millis(ms),
                _ => false,
            };
            if expired && self.ctx.fenced.load(std::sync::atomic::Ordering::SeqCst) {
                let ks = {
                    let k = match replanned.as_ref().map(|(p, _)| &**p).unwrap_or(plan) {
                        Plan::Query(q) => q.root.keyspaces(),
                        Plan::Session(_) => Vec::new(),
                    };
                    k.join(", ")
                };
                return Some(Err(crate::error::ProxyError::Fenced(ks)));
            }
            if wait.is_none() || expired {
                self.write_ticket = Some(ticket);
                if let Some(t) = held_since {
                    self.record_hold(t);
                }
                return replanned.map(Ok);
            }
            drop(ticket);
            if held_since.is_none() {
                held_since = Some(Instant::now());
                self.ctx.metrics.writes_buffered_total.inc();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn record_hold(&self, started: Instant) {
        let held = started.elapsed().as_secs_f64();
        let m = &self.ctx.metrics.write_buffer_max_seconds;
        if held > m.get() {
            m.set(held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InflightWrites;
    use std::sync::Arc;

    #[test]
    fn inflight_writes_count_by_revision() {
        let w = Arc::new(InflightWrites::default());
        let a = w.enter(5);
        let b = w.enter(7);
        assert!(w.any_before(6));
        assert!(!w.any_before(5));
        drop(a);
        assert!(!w.any_before(7));
        assert!(w.any_before(8));
        drop(b);
        assert!(!w.any_before(i64::MAX));
    }
}
