//! Backend connections: the client side of the MySQL protocol ([`conn`]), pools per
//! backend ([`pool`]), relaying responses to the client ([`relay`]), and the registry of
//! pools the proxy keeps for the shards in the topology ([`Backends`]).

pub mod conn;
pub mod held;
pub mod pool;
pub mod relay;
pub mod stmt;

use conn::ConnectOptions;
use pool::{Pool, PoolSettings};
use shardgate_config::BackendConfig;
use shardgate_topology::{Shard, Snapshot};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Identity of a pool: one backend address and database with one connection setup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: String,
    pub database: String,
    pub charset: u8,
    pub capabilities: u32,
}

/// Every backend pool of the proxy.
pub struct Backends {
    config: BackendConfig,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Connection budgets, by (address, database).
    limits: Mutex<HashMap<(String, String), Arc<pool::ShardLimit>>>,
    version: Mutex<Option<String>>,
    /// TLS to backends (`backend.tls_ca_file`), set once at start before any pool exists.
    tls: std::sync::OnceLock<conn::BackendTls>,
}

impl Backends {
    pub fn new(config: BackendConfig) -> Backends {
        Backends {
            config,
            pools: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            version: Mutex::new(None),
            tls: std::sync::OnceLock::new(),
        }
    }

    /// Makes every backend connection opened from now on use TLS with `config`.
    pub fn set_tls(&self, config: Arc<rustls::ClientConfig>) {
        let _ = self.tls.set(conn::BackendTls(config));
    }

    /// The pool for `shard` with the client's character set and mirrored capabilities.
    /// Every shard's connection budget, by (address, database).
    pub fn limits(&self) -> Vec<((String, String), Arc<pool::ShardLimit>)> {
        let limits = self.limits.lock().unwrap();
        let mut v: Vec<_> = limits.iter().map(|(k, l)| (k.clone(), l.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Whether a statement could borrow a connection to `shard` without waiting.
    pub fn has_free_connection(&self, shard: &Shard) -> bool {
        let limits = self.limits.lock().unwrap();
        // A scan of the few shard servers, without building a key.
        limits
            .iter()
            .find(|((addr, db), _)| *addr == shard.primary && *db == shard.database)
            .is_none_or(|(_, l)| l.available() > 0)
    }

    pub fn pool(&self, shard: &Shard, charset: u8, capabilities: u32) -> Arc<Pool> {
        let key = PoolKey {
            addr: shard.primary.clone(),
            database: shard.database.clone(),
            charset,
            capabilities: capabilities & conn::MIRRORED_CAPABILITIES,
        };
        let mut pools = self.pools.lock().unwrap();
        if let Some(p) = pools.get(&key) {
            return p.clone();
        }
        let options = ConnectOptions {
            addr: key.addr.clone(),
            user: self.config.user.clone(),
            password: self.config.password.clone(),
            database: key.database.clone(),
            charset,
            extra_capabilities: key.capabilities,
            connect_timeout: Duration::from_millis(self.config.connect_timeout_ms),
            tls: self.tls.get().cloned(),
        };
        let limit = self
            .limits
            .lock()
            .unwrap()
            .entry((key.addr.clone(), key.database.clone()))
            .or_insert_with(|| pool::ShardLimit::new(self.config.pool_size as usize))
            .clone();
        let pool = Pool::new(
            options,
            PoolSettings {
                max_size: self.config.pool_size as usize,
                acquire_timeout: Duration::from_millis(self.config.pool_wait_ms.max(1)),
                health_check_idle: Duration::from_millis(self.config.health_check_idle_ms),
                max_idle: Duration::from_millis(self.config.max_idle_ms),
            },
            limit,
        );
        pools.insert(key, pool.clone());
        pool
    }

    /// Retires pools whose backend (address, database) is no longer a shard in `snapshot`:
    /// idle connections close now, borrowed ones when their borrower is done with them.
    pub fn retire_missing(&self, snapshot: &Snapshot) {
        let live: HashSet<(String, String)> = snapshot
            .keyspaces
            .values()
            .flat_map(|k| k.shards.values())
            .map(|s| (s.primary.clone(), s.database.clone()))
            .collect();
        self.limits.lock().unwrap().retain(|k, _| live.contains(k));
        let mut pools = self.pools.lock().unwrap();
        pools.retain(|k, p| {
            let keep = live.contains(&(k.addr.clone(), k.database.clone()));
            if !keep {
                tracing::info!(addr = %k.addr, database = %k.database, "draining pool of a shard that left the topology");
                p.retire();
            }
            keep
        });
    }

    /// All pools, for metrics and the status page.
    pub fn pools(&self) -> Vec<(PoolKey, Arc<Pool>)> {
        self.pools
            .lock()
            .unwrap()
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect()
    }

    /// Closes connections idle for too long (called periodically).
    pub fn reap(&self) {
        for (_, p) in self.pools() {
            p.reap();
        }
    }

    /// The backends' version string, once one connection succeeded.
    pub fn server_version(&self) -> Option<String> {
        self.version.lock().unwrap().clone()
    }

    pub fn set_server_version(&self, v: &str) {
        let mut g = self.version.lock().unwrap();
        if g.is_none() {
            *g = Some(v.to_string());
        }
    }

    pub fn config(&self) -> &BackendConfig {
        &self.config
    }
}
