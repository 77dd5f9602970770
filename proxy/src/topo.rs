//! Following the topology in etcd.
//!
//! At start the proxy loads every key of its cluster (retrying with backoff while etcd is
//! unreachable, serving the snapshot cached on local disk meanwhile if there is one). It
//! then watches the prefix from the revision it loaded. Any change triggers a fresh read
//! of the whole prefix, which is validated as one snapshot and swapped in atomically; an
//! invalid topology is logged, counted and shown on the status page, and the last good
//! snapshot keeps serving. A watch that fails (etcd down, history compacted) is re-created
//! from a fresh read once etcd answers again.
//!
//! The proxy also keeps a lease-backed registration under `proxies/<id>` with the revision
//! and routing versions it has applied, rewritten after every swap.

use crate::context::Context;
use shardgate_topology::docs::ProxyDoc;
use shardgate_topology::store::{Entry, Loaded, Store};
use shardgate_topology::Snapshot;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads the topology for startup: from etcd, or (while etcd is unreachable) from the
/// local cache. Retries until one works.
pub async fn initial_snapshot(store: &Store, cache: Option<&Path>) -> (Snapshot, bool) {
    let mut delay = Duration::from_millis(200);
    let mut warned_cache = false;
    loop {
        match store.load().await {
            Ok(loaded) => match loaded.snapshot() {
                Ok(s) => {
                    if let Some(c) = cache {
                        write_cache(c, &loaded);
                    }
                    return (s, true);
                }
                Err(problems) => {
                    tracing::error!(%problems, "the topology in etcd is invalid; waiting for a valid one");
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, endpoints = ?store.endpoints(), retry_in_ms = delay.as_millis() as u64, "cannot read the topology from etcd");
            }
        }
        if let Some(c) = cache {
            if let Some(s) = read_cache(c) {
                if !warned_cache {
                    tracing::warn!(cache = %c.display(), revision = s.revision, "serving the cached topology until etcd answers");
                }
                return (s, false);
            } else if !warned_cache {
                warned_cache = true;
                tracing::warn!(cache = %c.display(), "no usable cached topology");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn write_cache(path: &Path, loaded: &Loaded) {
    let doc: Vec<serde_json::Value> = loaded
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "key": e.key,
                "value": String::from_utf8_lossy(&e.value),
                "mod_revision": e.mod_revision,
            })
        })
        .collect();
    let body = serde_json::json!({"revision": loaded.revision, "entries": doc});
    let tmp = path.with_extension("tmp");
    let ok = std::fs::write(&tmp, body.to_string()).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::warn!(cache = %path.display(), error = %e, "cannot write the topology cache");
    }
}

fn read_cache(path: &Path) -> Option<Snapshot> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let revision = v.get("revision")?.as_i64()?;
    let entries: Vec<Entry> = v
        .get("entries")?
        .as_array()?
        .iter()
        .filter_map(|e| {
            Some(Entry {
                key: e.get("key")?.as_str()?.to_string(),
                value: e.get("value")?.as_str()?.as_bytes().to_vec(),
                mod_revision: e.get("mod_revision")?.as_i64()?,
            })
        })
        .collect();
    Loaded { revision, entries }.snapshot().ok()
}

/// Keeps `ctx.topology` current and the registration alive. Runs until the task is dropped.
pub struct Follower {
    pub ctx: Arc<Context>,
    pub store: Store,
    pub cache: Option<PathBuf>,
    pub registration: ProxyDoc,
    /// The registration lease is alive (false while etcd is unreachable).
    pub lease_ok: Arc<AtomicBool>,
    lease: AtomicI64,
}

impl Follower {
    pub fn new(
        ctx: Arc<Context>,
        store: Store,
        cache: Option<PathBuf>,
        registration: ProxyDoc,
    ) -> Arc<Follower> {
        Arc::new(Follower {
            ctx,
            store,
            cache,
            registration,
            lease_ok: Arc::new(AtomicBool::new(false)),
            lease: AtomicI64::new(0),
        })
    }

    /// Watches etcd and applies changes, forever.
    pub async fn follow(self: Arc<Self>, mut synced: bool) {
        let mut delay = Duration::from_millis(200);
        loop {
            if !synced {
                match self.reload().await {
                    Ok(()) => {}
                    Err(e) => {
                        self.ctx.metrics.topology_stale.set(1);
                        self.ctx.metrics.topology_etcd_errors_total.inc();
                        tracing::warn!(error = %e, "etcd unreachable; serving the last good topology");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            delay = Duration::from_millis(200);
            self.ctx.metrics.topology_stale.set(0);
            let from = self.ctx.snapshot().revision + 1;
            let mut stream = match self.store.watch(from).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch etcd");
                    synced = false;
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            tracing::warn!(
                                compact_revision = resp.compact_revision(),
                                reason = resp.cancel_reason(),
                                "etcd watch canceled; reloading the whole topology"
                            );
                            break;
                        }
                        // Lock-wait records (deadlock detection) change nothing here.
                        let only_waits = resp.events().iter().all(|e| {
                            e.kv().is_some_and(|kv| {
                                self.store.relative_key(kv.key()).starts_with("waits/")
                            })
                        });
                        if only_waits {
                            continue;
                        }
                        if let Err(e) = self.reload().await {
                            tracing::warn!(error = %e, "reload after a change failed");
                            break;
                        }
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!("etcd watch stream ended; reconnecting");
                        break;
                    }
                }
            }
            synced = false;
        }
    }

    /// Reads everything, validates, swaps in if valid and new.
    async fn reload(&self) -> Result<(), shardgate_topology::StoreError> {
        let loaded = self.store.load().await?;
        let current = self.ctx.snapshot();
        match loaded.snapshot() {
            Ok(snapshot) => {
                *self.ctx.topology_error.lock().unwrap() = None;
                let announced = crate::schema::tracker::announced(
                    &current.schema_versions,
                    &snapshot.schema_versions,
                );
                if !same_keyspaces(&snapshot, &current) {
                    self.apply(snapshot, &loaded).await;
                    // New keyspaces, shards or tables in the VSchema: read every schema.
                    self.ctx.request_schema_refresh(&[]);
                } else {
                    // Only registrations, workflow progress, schema counters or users changed:
                    // nothing routes differently, so keep the revision (and every cached
                    // plan; a schema change invalidates plans through its generation).
                    let mut s = (*current).clone();
                    s.proxies = snapshot.proxies.clone();
                    s.workflows = snapshot.workflows.clone();
                    s.schema_versions = snapshot.schema_versions.clone();
                    s.users = snapshot.users.clone();
                    self.ctx.topology.store(Arc::new(s));
                    if !announced.is_empty() {
                        self.ctx.request_schema_refresh(&announced);
                    }
                }
            }
            Err(problems) => {
                self.ctx.metrics.topology_rejected_total.inc();
                let msg = problems.to_string();
                let mut last = self.ctx.topology_error.lock().unwrap();
                if last.as_deref() != Some(&msg) {
                    tracing::error!(revision = loaded.revision, problems = %msg, "rejected topology change; still serving revision {}", current.revision);
                }
                *last = Some(msg);
            }
        }
        Ok(())
    }

    async fn apply(&self, snapshot: Snapshot, loaded: &Loaded) {
        let revision = snapshot.revision;
        let snapshot = Arc::new(snapshot);
        self.ctx.topology.store(snapshot.clone());
        self.ctx.backends.retire_missing(&snapshot);
        self.ctx.metrics.topology_revision.set(revision);
        self.ctx.metrics.topology_updates_total.inc();
        tracing::info!(revision, "applied topology");
        if let Some(c) = &self.cache {
            write_cache(c, loaded);
        }
        if snapshot
            .keyspaces
            .values()
            .any(|k| k.routing.write_buffer.is_some())
        {
            // A cutover's buffer: writes planned against the old routing finish first
            // (bounded: one stuck behind a held write's lock is seen by the controller's
            // drain check anyway).
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while self.ctx.inflight_writes.any_before(revision)
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        self.publish().await;
    }

    /// Writes the registration with the applied revision (attached to the lease).
    pub async fn publish(&self) {
        let lease = self.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let snapshot = self.ctx.snapshot();
        let mut doc = self.registration.clone();
        doc.applied_revision = snapshot.revision;
        doc.routing_versions = snapshot.routing_versions();
        doc.topology_error = self.ctx.topology_error.lock().unwrap().clone();
        let key = format!("proxies/{}", doc.id);
        let value = serde_json::to_vec(&doc).unwrap_or_default();
        match tokio::time::timeout(
            Duration::from_secs(3),
            self.store.put_leased(&key, value, lease),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot publish the proxy registration"),
            Err(_) => tracing::warn!("etcd did not answer the registration write in time"),
        }
    }

    /// Keeps the registration lease alive, re-registering after it is lost.
    ///
    /// Fencing: when etcd says the lease expired, or no keep-alive has succeeded for half
    /// the TTL (etcd unreachable or partitioned: a controller may stop counting this proxy
    /// soon), writes to keyspaces under a resharding workflow are held until the proxy is
    /// registered again with a freshly loaded topology. Every etcd call here is bounded by
    /// a timeout, so a hung connection counts as a failure.
    pub async fn keep_registered(self: Arc<Self>) {
        let ttl = self.ctx.config.topology.lease_ttl_s as i64;
        let beat = Duration::from_millis((ttl as u64 * 1000) / 3);
        let half_ttl = Duration::from_millis(ttl as u64 * 500);
        let mut last_ok = std::time::Instant::now();
        loop {
            let lease = self.lease.load(Ordering::SeqCst);
            let answer = if lease == 0 {
                None
            } else {
                tokio::time::timeout(beat, self.store.keep_alive_once(lease))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            };
            let alive = matches!(answer, Some(t) if t > 0);
            if alive {
                last_ok = std::time::Instant::now();
                if self.ctx.fenced.load(Ordering::SeqCst) {
                    if let Ok(Ok(())) = tokio::time::timeout(beat * 2, self.reload()).await {
                        self.ctx.fenced.store(false, Ordering::SeqCst);
                        tracing::info!("topology reloaded; writes unfenced");
                        self.publish().await;
                    }
                }
            } else {
                if self.lease_ok.swap(false, Ordering::SeqCst) {
                    tracing::warn!("lost the etcd registration lease");
                }
                let expired = answer == Some(0);
                if lease != 0
                    && (expired || last_ok.elapsed() >= half_ttl)
                    && !self.ctx.fenced.swap(true, Ordering::SeqCst)
                {
                    tracing::warn!(
                        "fencing writes to keyspaces under resharding until registered again"
                    );
                }
                match tokio::time::timeout(beat, self.store.grant_lease(ttl)).await {
                    Ok(Ok(id)) => {
                        self.lease.store(id, Ordering::SeqCst);
                        last_ok = std::time::Instant::now();
                        if let Ok(Ok(())) = tokio::time::timeout(beat * 2, self.reload()).await {
                            if self.ctx.fenced.swap(false, Ordering::SeqCst) {
                                tracing::info!(
                                    "registered again with a fresh topology; writes unfenced"
                                );
                            }
                        }
                        self.publish().await;
                        self.lease_ok.store(true, Ordering::SeqCst);
                        tracing::info!(lease = id, "registered in etcd");
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "cannot register in etcd yet");
                    }
                    Err(_) => {
                        tracing::debug!("etcd did not answer the lease request in time");
                    }
                }
            }
            tokio::time::sleep(beat).await;
        }
    }

    /// Removes the registration (clean shutdown).
    pub async fn deregister(&self) {
        let lease = self.lease.swap(0, Ordering::SeqCst);
        if lease != 0 {
            let _ = self.store.revoke_lease(lease).await;
        }
    }
}

/// Whether nothing that routes statements differs (keyspaces, shards, routing, routing
/// rules): then only registrations, progress, counters or users changed.
fn same_keyspaces(a: &Snapshot, b: &Snapshot) -> bool {
    // Routing rules change where statements go: a rules-only edit is a routing change.
    a.routing_rules == b.routing_rules
        && a.keyspaces.len() == b.keyspaces.len()
        && a.keyspaces.iter().all(|(k, v)| {
            b.keyspaces
                .get(k)
                .map(|w| w.doc == v.doc && w.shards == v.shards && w.routing == v.routing)
                == Some(true)
        })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
