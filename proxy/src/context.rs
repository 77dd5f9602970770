//! [`Context`]: what every session of one proxy shares (configuration, the current
//! topology snapshot, backend pools, the plan cache, metrics, the session registry).

use crate::backend::Backends;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::planner::{self, Plan, PlanContext};
use crate::registry::Registry;
use crate::schema::Schemas;
use arc_swap::ArcSwap;
use shardgate_config::Config;
use shardgate_topology::Snapshot;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// State shared by all sessions.
pub struct Context {
    pub config: Config,
    pub topology: ArcSwap<Snapshot>,
    pub backends: Backends,
    pub plans: PlanCache,
    pub metrics: Metrics,
    pub registry: Registry,
    pub started: Instant,
    /// Wall-clock start in milliseconds since the epoch (makes XA transaction ids unique
    /// across restarts).
    pub started_unix_ms: u64,
    /// Version string sent to clients.
    pub server_version: Mutex<String>,
    /// The backends' version as a number (10.11.6 is 101106), for executable comments.
    backend_version: std::sync::atomic::AtomicU32,
    /// The last topology problem seen (shown on the status page), if any.
    pub topology_error: Mutex<Option<String>>,
    /// Sequence blocks this proxy holds.
    pub sequences: crate::engine::sequence::Sequences,
    /// The etcd store, for VSchema changes made by DDL (None in unit tests).
    pub store: Option<shardgate_topology::Store>,
    /// The query log and statistics per statement digest.
    pub querylog: crate::querylog::QueryLog,
    /// OpenTelemetry export, when `tracing.otlp_endpoint` is set.
    pub otel: Option<crate::otel::Otel>,
    /// The query log or export is on: statements collect their shard times and get an
    /// entry (see [`Context::traces_wanted`]).
    traces: bool,
    /// Writes running on keyspaces under a resharding workflow, by the revision they were
    /// planned against (a cutover is acknowledged once the older ones are done).
    pub inflight_writes: Arc<crate::session::InflightWrites>,
    /// Set while the proxy's etcd registration is lost (until it is back and the topology
    /// reloaded): writes to keyspaces under a resharding workflow wait.
    pub fenced: std::sync::atomic::AtomicBool,
    /// What the shards' tables look like (see `schema/`).
    schema: ArcSwap<Schemas>,
    /// Keyspaces whose schema should be read again soon (empty: all), and its wake-up.
    schema_wanted: Mutex<Option<Vec<String>>>,
    schema_wake: tokio::sync::Notify,
}

impl Context {
    pub fn new(
        config: Config,
        snapshot: Snapshot,
        store: Option<shardgate_topology::Store>,
    ) -> Arc<Context> {
        let plan_cache_size = config.session.plan_cache_size as usize;
        let version = if config.proxy.server_version.is_empty() {
            "5.5.5-10.11.0-MariaDB-shardgate".to_string()
        } else {
            config.proxy.server_version.clone()
        };
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let querylog = crate::querylog::QueryLog::new(
            config.log.query_log_entries.min(1_000_000) as usize,
            config.log.slow_query_ms,
            format!("{started_unix_ms:x}"),
        );
        let otel = crate::otel::Otel::new(&config.tracing).unwrap_or_else(|e| {
            tracing::error!(error = %e, "OpenTelemetry export is off");
            None
        });
        Arc::new(Context {
            traces: querylog.enabled() || otel.is_some(),
            querylog,
            otel,
            backends: Backends::new(config.backend.clone()),
            config,
            topology: ArcSwap::from_pointee(snapshot),
            plans: PlanCache::new(plan_cache_size),
            metrics: Metrics::new(),
            registry: Registry::default(),
            started: Instant::now(),
            started_unix_ms,
            server_version: Mutex::new(version),
            backend_version: std::sync::atomic::AtomicU32::new(
                crate::planner::lexer::DEFAULT_SERVER_VERSION,
            ),
            topology_error: Mutex::new(None),
            sequences: Default::default(),
            store,
            inflight_writes: Default::default(),
            fenced: Default::default(),
            schema: ArcSwap::from_pointee(Schemas::default()),
            schema_wanted: Mutex::new(None),
            schema_wake: tokio::sync::Notify::new(),
        })
    }

    /// Whether statements are traced (query log or OpenTelemetry export on): the one check
    /// on the request path when both are off.
    pub fn traces_wanted(&self) -> bool {
        self.traces
    }

    /// The account named `name`: the config file's `[[users]]` first, then the users kept
    /// in etcd (`shardctl user add`), as the current topology has them.
    pub fn user(&self, name: &str) -> Option<Arc<shardgate_config::UserConfig>> {
        if let Some(u) = self.config.users.iter().find(|u| u.name == name) {
            return Some(Arc::new(u.clone()));
        }
        self.snapshot().users.get(name).cloned()
    }

    /// The current topology snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.topology.load_full()
    }

    /// The current schema snapshot.
    pub fn schema(&self) -> Arc<Schemas> {
        self.schema.load_full()
    }

    /// Swaps a new schema snapshot in (the schema tracker's job).
    pub fn set_schema(&self, s: Schemas) {
        self.schema.store(Arc::new(s));
    }

    /// Asks the schema tracker to read `keyspaces` again soon (all of them when empty).
    pub fn request_schema_refresh(&self, keyspaces: &[String]) {
        let mut w = self.schema_wanted.lock().unwrap();
        match (&mut *w, keyspaces.is_empty()) {
            (_, true) => *w = Some(Vec::new()),
            (Some(v), false) if !v.is_empty() => {
                for k in keyspaces {
                    if !v.contains(k) {
                        v.push(k.clone());
                    }
                }
            }
            (Some(_), false) => {}
            (None, false) => *w = Some(keyspaces.to_vec()),
        }
        drop(w);
        self.schema_wake.notify_one();
    }

    /// Waits for a schema refresh request; returns the keyspaces wanted (empty: all).
    pub async fn schema_requests(&self) -> Option<Vec<String>> {
        loop {
            if let Some(w) = self.schema_wanted.lock().unwrap().take() {
                return Some(w);
            }
            self.schema_wake.notified().await;
        }
    }

    /// The backends' version as MySQL compares it in `/*!NNNNN ... */` comments.
    pub fn backend_version(&self) -> u32 {
        self.backend_version.load(Ordering::Relaxed)
    }

    /// Learns the backends' version from a connection, for the greeting.
    pub fn learn_backend_version(&self, v: &str) {
        if let Some(n) = crate::planner::lexer::version_number(v) {
            if self.backend_version.load(Ordering::Relaxed) != n {
                self.backend_version.store(n, Ordering::Relaxed);
            }
        }
        if self.config.proxy.server_version.is_empty() && self.backends.server_version().is_none() {
            self.backends.set_server_version(v);
            *self.server_version.lock().unwrap() = format!("{v}-shardgate");
        }
    }

    /// Plans `sql`, from the cache when possible.
    pub fn plan(
        &self,
        sql: &str,
        snapshot: &Snapshot,
        keyspace: Option<&str>,
        shard: Option<&str>,
    ) -> Result<Arc<Plan>, ProxyError> {
        let schema = self.schema();
        let key = PlanKey {
            sql,
            keyspace,
            shard,
            revision: snapshot.revision,
            schema: schema.generation,
        };
        if let Some(p) = self.plans.get(&key) {
            self.metrics.plan_cache_hits.inc();
            return Ok(p);
        }
        self.metrics.plan_cache_misses.inc();
        let mut plan = planner::plan(
            sql,
            &PlanContext {
                snapshot,
                schema: &schema,
                keyspace,
                shard,
            },
        )?;
        if let Plan::Query(q) = &mut plan {
            q.digest = Arc::from(planner::lexer::digest(sql));
        }
        let p = Arc::new(plan);
        // Huge statements (bulk INSERTs) are rarely repeated and would make the cache hold
        // megabytes of text and plans: plan them each time.
        if sql.len() <= MAX_CACHED_SQL {
            self.plans.put(&key, p.clone());
        }
        Ok(p)
    }
}

/// Statements longer than this are planned every time instead of cached.
const MAX_CACHED_SQL: usize = 16 * 1024;

/// Cache key of a plan: the text, what the session targets, and the topology revision.
/// Borrowed, so a lookup allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanKey<'a> {
    pub sql: &'a str,
    pub keyspace: Option<&'a str>,
    pub shard: Option<&'a str>,
    pub revision: i64,
    /// The schema generation the plan was made with.
    pub schema: u64,
}

impl PlanKey<'_> {
    fn hash64(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// An owned [`PlanKey`].
struct StoredKey {
    sql: Box<str>,
    keyspace: Option<Box<str>>,
    shard: Option<Box<str>>,
    revision: i64,
    schema: u64,
}

impl StoredKey {
    fn matches(&self, k: &PlanKey<'_>) -> bool {
        &*self.sql == k.sql
            && self.keyspace.as_deref() == k.keyspace
            && self.shard.as_deref() == k.shard
            && self.revision == k.revision
            && self.schema == k.schema
    }
}

/// A cached plan with its key and when it was last used.
type CachedPlan = (StoredKey, Arc<Plan>, u64);

/// A bounded map of plans. When full, the least recently used eighth is evicted.
pub struct PlanCache {
    capacity: usize,
    tick: AtomicU64,
    map: Mutex<HashMap<u64, Vec<CachedPlan>>>,
}

impl PlanCache {
    pub fn new(capacity: usize) -> PlanCache {
        PlanCache {
            capacity: capacity.max(16),
            tick: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &PlanKey<'_>) -> Option<Arc<Plan>> {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        let h = key.hash64();
        let mut m = self.map.lock().unwrap();
        let bucket = m.get_mut(&h)?;
        bucket
            .iter_mut()
            .find(|(k, _, _)| k.matches(key))
            .map(|(_, p, used)| {
                *used = t;
                p.clone()
            })
    }

    pub fn put(&self, key: &PlanKey<'_>, plan: Arc<Plan>) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        let h = key.hash64();
        let mut m = self.map.lock().unwrap();
        if m.len() >= self.capacity {
            let mut ticks: Vec<u64> = m.values().flat_map(|b| b.iter().map(|e| e.2)).collect();
            ticks.sort_unstable();
            let cutoff = ticks[ticks.len() / 8];
            for b in m.values_mut() {
                b.retain(|e| e.2 > cutoff);
            }
            m.retain(|_, b| !b.is_empty());
        }
        let stored = StoredKey {
            sql: key.sql.into(),
            keyspace: key.keyspace.map(Into::into),
            shard: key.shard.map(Into::into),
            revision: key.revision,
            schema: key.schema,
        };
        let bucket = m.entry(h).or_default();
        bucket.retain(|(k, _, _)| !k.matches(key));
        bucket.push((stored, plan, t));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
