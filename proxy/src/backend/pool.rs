//! Per-backend connection pools.
//!
//! A [`Pool`] holds idle connections for one (address, database, credentials, connection
//! options) combination. Every pool of one shard shares a [`ShardLimit`]: a semaphore caps
//! the connections lent out, and a count of open connections (idle ones included) keeps
//! the shard at `pool_size` connections in all: a pool that needs a new connection while
//! the shard is at its limit closes an idle one of a sibling pool first. [`PooledConn`] gives the
//! connection back when dropped, but only if it is clean (no unread response, no open
//! transaction, not broken); anything else is closed, so a client that disconnects
//! mid-query can never leak a half-read connection to the next borrower.
//!
//! Idle connections unused for a while are pinged before they are handed out, and closed
//! after `max_idle`. A pool that was retired (its shard moved or left the topology) closes
//! connections as they come back instead of keeping them.

use super::conn::{BackendConn, BackendError, ConnectOptions};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Tunables shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a borrower waits for a free connection.
    pub acquire_timeout: Duration,
    pub health_check_idle: Duration,
    pub max_idle: Duration,
}

/// Counters a pool exposes on the status page and /metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub borrows: AtomicU64,
    pub discarded: AtomicU64,
}

/// The connection budget of one shard, shared by its pools.
pub struct ShardLimit {
    max: usize,
    permits: Arc<Semaphore>,
    open: AtomicUsize,
    pools: Mutex<Vec<Weak<Pool>>>,
    /// Borrows that had to wait for a connection, their total wait, how long each waited
    /// (counts per [`WAIT_BUCKETS`] bound, not cumulative), and the waits that gave up
    /// (`backend.pool_wait_ms`).
    pub waits: AtomicU64,
    pub wait_us: AtomicU64,
    pub wait_buckets: [AtomicU64; WAIT_BUCKETS.len()],
    pub wait_timeouts: AtomicU64,
}

/// Upper bounds (seconds) of the pool wait histogram.
pub const WAIT_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0];

impl ShardLimit {
    pub fn new(max: usize) -> Arc<ShardLimit> {
        let max = max.max(1);
        Arc::new(ShardLimit {
            max,
            permits: Arc::new(Semaphore::new(max)),
            open: AtomicUsize::new(0),
            pools: Mutex::new(Vec::new()),
            waits: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            wait_buckets: Default::default(),
            wait_timeouts: AtomicU64::new(0),
        })
    }

    /// Connections that can be borrowed right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Open connections to the shard (lent out and idle).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes idle connections of any pool of the shard until a new one fits.
    fn make_room(&self) {
        while self.open() >= self.max {
            let pools: Vec<Arc<Pool>> = self
                .pools
                .lock()
                .unwrap()
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            let victim = pools.iter().find_map(|p| {
                let mut idle = p.idle.lock().unwrap();
                (!idle.is_empty()).then(|| idle.remove(0))
            });
            match victim {
                Some(c) => spawn_quit(c),
                // Nothing idle: the connections over the limit are being returned or
                // closed right now.
                None => return,
            }
        }
    }
}

/// Held by each open connection; gives its place back to the shard when dropped.
pub struct OpenToken(Arc<ShardLimit>);

impl OpenToken {
    fn new(limit: &Arc<ShardLimit>) -> OpenToken {
        limit.open.fetch_add(1, Ordering::Relaxed);
        OpenToken(limit.clone())
    }
}

impl Drop for OpenToken {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections to one backend with one set of options.
pub struct Pool {
    options: ConnectOptions,
    settings: PoolSettings,
    idle: Mutex<Vec<BackendConn>>,
    limit: Arc<ShardLimit>,
    retired: AtomicBool,
    pub stats: PoolStats,
}

impl Pool {
    pub fn new(
        options: ConnectOptions,
        settings: PoolSettings,
        limit: Arc<ShardLimit>,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            options,
            settings,
            idle: Mutex::new(Vec::new()),
            limit,
            retired: AtomicBool::new(false),
            stats: PoolStats::default(),
        });
        let mut siblings = pool.limit.pools.lock().unwrap();
        siblings.retain(|w| w.strong_count() > 0);
        siblings.push(Arc::downgrade(&pool));
        drop(siblings);
        pool
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// A stable hash of the options, stored on each connection.
    pub fn options_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.options.hash(&mut h);
        h.finish()
    }

    /// Connections of the shard currently lent out (by any of its pools).
    pub fn in_use(&self) -> usize {
        self.limit.max - self.limit.permits.available_permits()
    }

    /// Open connections of the shard (by any of its pools).
    pub fn shard_open(&self) -> usize {
        self.limit.open()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    /// Stops keeping connections: idle ones are closed now, borrowed ones when returned.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap());
        for c in idle {
            spawn_quit(c);
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Borrows a connection without session settings.
    pub async fn get(self: &Arc<Self>) -> Result<PooledConn, BackendError> {
        self.get_with(0, &[]).await
    }

    /// Borrows a connection carrying `settings` (whose fingerprint is `signature`):
    /// preferably an idle one that already has them, else an idle one reset and given
    /// them, else a new one. Idle connections that sat unused for a while are pinged
    /// first. The common case (same settings as last time) costs nothing extra.
    pub async fn get_with(
        self: &Arc<Self>,
        signature: u64,
        settings: &[String],
    ) -> Result<PooledConn, BackendError> {
        // Borrowers queue in arrival order (tokio's semaphore is fair).
        let permit = match self.limit.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let started = Instant::now();
                let acquired = tokio::time::timeout(
                    self.settings.acquire_timeout,
                    self.limit.permits.clone().acquire_owned(),
                )
                .await;
                let metrics = &self.limit;
                let waited = started.elapsed();
                metrics.waits.fetch_add(1, Ordering::Relaxed);
                metrics
                    .wait_us
                    .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                if let Some(i) = WAIT_BUCKETS.iter().position(|b| waited.as_secs_f64() <= *b) {
                    metrics.wait_buckets[i].fetch_add(1, Ordering::Relaxed);
                }
                match acquired {
                    Ok(p) => p.expect("pool semaphore is never closed"),
                    Err(_) => {
                        metrics.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(BackendError::PoolTimeout {
                            addr: self.options.addr.clone(),
                            waited_ms: started.elapsed().as_millis() as u64,
                            pool_size: self.limit.max,
                        });
                    }
                }
            }
        };
        self.stats.borrows.fetch_add(1, Ordering::Relaxed);
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap();
                match idle.iter().rposition(|c| c.signature == signature) {
                    Some(i) => Some(idle.remove(i)),
                    None => idle.pop(),
                }
            };
            let Some(mut conn) = candidate else { break };
            let idle_for = conn.last_used.elapsed();
            if idle_for > self.settings.max_idle {
                spawn_quit(conn);
                continue;
            }
            // A connection the server closed while it sat idle (restart, wait_timeout,
            // KILL) shows as readable. Tokio answers from the readiness its reactor already
            // recorded, so for a live connection this costs no system call.
            if conn.closed_by_peer() {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if idle_for > self.settings.health_check_idle && conn.ping().await.is_err() {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if conn.signature != signature {
                if conn.signature != 0 && conn.reset().await.is_err() {
                    self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                conn.signature = 0;
                apply(&mut conn, signature, settings).await?;
            }
            return Ok(PooledConn {
                conn: Some(conn),
                pool: self.clone(),
                _permit: permit,
            });
        }
        let mut conn = self.connect().await?;
        apply(&mut conn, signature, settings).await?;
        Ok(PooledConn {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<BackendConn, BackendError> {
        self.limit.make_room();
        let token = OpenToken::new(&self.limit);
        match BackendConn::connect(&self.options).await {
            Ok(mut c) => {
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                c.options_key = self.options_key();
                c.open_token = Some(token);
                Ok(c)
            }
            Err(e) => {
                self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn put_back(&self, conn: BackendConn) {
        if conn.is_clean() && !self.is_retired() {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() < self.settings.max_size {
                idle.push(conn);
                return;
            }
        }
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        // Dropping the stream closes it; an unclean connection cannot take a COM_QUIT.
        if conn.is_clean() {
            spawn_quit(conn);
        }
    }

    /// Closes idle connections older than `max_idle` (called periodically).
    pub fn reap(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap();
        let max_idle = self.settings.max_idle;
        idle.retain(|c| now.duration_since(c.last_used) <= max_idle);
    }
}

/// A borrowed connection; returns itself to the pool on drop if clean.
pub struct PooledConn {
    conn: Option<BackendConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl PooledConn {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Closes the connection instead of returning it.
    pub fn discard(mut self) {
        if let Some(mut c) = self.conn.take() {
            c.mark_broken();
        }
    }
}

impl std::ops::Deref for PooledConn {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Dropped while a panic unwinds: whatever the connection was doing is unknown.
            if std::thread::panicking() {
                conn.mark_broken();
            }
            self.pool.put_back(conn);
        }
    }
}

/// Runs the session settings on a connection that has none.
async fn apply(
    conn: &mut BackendConn,
    signature: u64,
    settings: &[String],
) -> Result<(), BackendError> {
    for s in settings {
        conn.execute(s).await?;
    }
    conn.signature = signature;
    Ok(())
}

/// Says goodbye to a server in the background; outside a runtime the socket just closes.
fn spawn_quit(conn: BackendConn) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(conn.quit());
    }
}
