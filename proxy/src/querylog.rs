//! The query log and query statistics: where each statement went and how long each part
//! took, and per statement shape (digest: literals replaced) how often it ran, failed, and
//! how long it takes.
//!
//! Every statement that runs against shards gets a trace id and one [`Entry`] (while the
//! log or OpenTelemetry export, [`crate::otel`], is on): its digest, plan type, each shard
//! it read with rows and milliseconds, total time, rows, error. The
//! latest `log.query_log_entries` entries are kept in a ring (one small lock per slot, so
//! sessions do not contend), served at `/debug/querylog` (JSON lines) and to the session
//! itself (`SHOW LAST QUERY TRACE`); statements slower than `log.slow_query_ms` are also
//! logged as warnings. Statistics per digest (count, errors, total, max and p99 time, rows,
//! shards) are served at `/debug/queries` and by `SHOW QUERY STATS`.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One shard's part of a statement.
#[derive(Debug, Clone, Serialize)]
pub struct ShardTime {
    /// `keyspace/shard`.
    pub shard: Arc<str>,
    pub rows: u64,
    /// When the shard's part began (its statement sent, or its connection asked for),
    /// in ms after the statement began.
    pub start_ms: f64,
    /// From then until the shard's whole answer was read.
    pub ms: f64,
}

/// One statement in the query log. Built for every statement, so it holds shared text
/// (`Arc<str>`) and numbers only; the trace id is rendered when it is read.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Unix time in ms when it finished.
    pub time_ms: u64,
    #[serde(skip)]
    pub trace: u64,
    pub session: u32,
    pub user: Arc<str>,
    pub keyspace: Arc<str>,
    /// The digest (literals replaced by `?`).
    pub sql: Arc<str>,
    pub plan: &'static str,
    pub shards: Vec<ShardTime>,
    pub ms: f64,
    pub rows: u64,
    /// The MySQL errno when it failed.
    pub error: Option<u16>,
}

/// Upper bounds (ms) of the latency buckets kept per digest (for p99).
const BUCKETS_MS: [f64; 16] = [
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    f64::INFINITY,
];

#[derive(Default)]
struct Stats {
    /// The digest (keeps the text the key points to alive).
    sql: Option<Arc<str>>,
    plan: &'static str,
    count: u64,
    errors: u64,
    total_ms: f64,
    max_ms: f64,
    rows: u64,
    max_shards: usize,
    buckets: [u64; BUCKETS_MS.len()],
}

/// Statistics of one digest, as served.
#[derive(Debug, Clone, Serialize)]
pub struct StatRow {
    pub sql: Arc<str>,
    pub plan: &'static str,
    pub count: u64,
    pub errors: u64,
    pub total_ms: f64,
    pub avg_ms: f64,
    /// The upper bound of the latency bucket holding the 99th percentile.
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rows: u64,
    pub max_shards: usize,
}

impl Entry {
    /// The trace id: this proxy's prefix and the statement's number.
    pub fn trace_id(&self, log: &QueryLog) -> String {
        format!("{}-{:x}", log.trace_prefix, self.trace)
    }

    /// The entry as one JSON object, with its trace id.
    pub fn to_json(&self, log: &QueryLog) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("trace_id".into(), self.trace_id(log).into());
        }
        v
    }
}

/// Digests kept at most (the least run ones go first when full).
const MAX_DIGESTS: usize = 10_000;
const STAT_SHARDS: usize = 16;

/// The log and the statistics of one proxy.
pub struct QueryLog {
    slots: Vec<Mutex<Option<Arc<Entry>>>>,
    next: AtomicU64,
    /// By the address of the digest text: plans are cached, so a statement's digest is
    /// one shared string and hashing its address is enough (rows with the same text from
    /// different plans are added up when read).
    stats: Vec<Mutex<HashMap<usize, Stats>>>,
    slow_ms: u64,
    trace_prefix: String,
    trace_seq: AtomicU64,
    /// Where entries also go when `log.query_log_file` is set (see [`write_file`]).
    file: std::sync::OnceLock<tokio::sync::mpsc::Sender<String>>,
    /// Entries the file writer could not keep up with.
    pub file_dropped: AtomicU64,
}

impl QueryLog {
    /// A log keeping `entries` statements (0: none kept), warning about statements slower
    /// than `slow_ms` (0: never). `trace_prefix` makes trace ids unique across proxies.
    pub fn new(entries: usize, slow_ms: u64, trace_prefix: String) -> QueryLog {
        QueryLog {
            slots: (0..entries).map(|_| Mutex::new(None)).collect(),
            next: AtomicU64::new(0),
            stats: (0..STAT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            slow_ms,
            trace_prefix,
            trace_seq: AtomicU64::new(0),
            file: std::sync::OnceLock::new(),
            file_dropped: AtomicU64::new(0),
        }
    }

    /// Sends every entry from now on to `tx` too (the file writer's channel).
    pub fn attach_file(&self, tx: tokio::sync::mpsc::Sender<String>) {
        let _ = self.file.set(tx);
    }

    /// Whether the ring keeps statements (`log.query_log_entries` > 0). [`QueryLog::record`]
    /// works without: statistics, the slow-query warning and the file still see entries.
    pub fn enabled(&self) -> bool {
        !self.slots.is_empty()
    }

    /// A new trace number (see [`Entry::trace_id`]).
    pub fn next_trace(&self) -> u64 {
        self.trace_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a finished statement.
    pub fn record(&self, e: Entry) -> Arc<Entry> {
        let e = Arc::new(e);
        if self.slow_ms > 0 && e.ms >= self.slow_ms as f64 {
            tracing::warn!(
                target: "shardgate::slow_query",
                entry = %e.to_json(self),
                "slow query ({:.1} ms)", e.ms
            );
        }
        if let Some(tx) = self.file.get() {
            // Never waits: a disk that cannot keep up loses lines, counted.
            if tx.try_send(e.to_json(self).to_string()).is_err() {
                self.file_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !self.slots.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.slots.len();
            *self.slots[i].lock().unwrap() = Some(e.clone());
        }
        let key = Arc::as_ptr(&e.sql) as *const u8 as usize;
        let mut map = self.stats[(key >> 4) % STAT_SHARDS].lock().unwrap();
        if map.len() >= MAX_DIGESTS / STAT_SHARDS && !map.contains_key(&key) {
            if let Some(k) = map.iter().min_by_key(|(_, s)| s.count).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        let s = map.entry(key).or_default();
        if s.sql.is_none() {
            s.sql = Some(e.sql.clone());
        }
        s.plan = e.plan;
        s.count += 1;
        s.errors += e.error.is_some() as u64;
        s.total_ms += e.ms;
        s.max_ms = s.max_ms.max(e.ms);
        s.rows += e.rows;
        s.max_shards = s.max_shards.max(e.shards.len());
        let b = BUCKETS_MS.iter().position(|b| e.ms <= *b).unwrap_or(0);
        s.buckets[b] += 1;
        drop(map);
        e
    }

    /// The latest `n` entries, oldest first.
    pub fn latest(&self, n: usize) -> Vec<Arc<Entry>> {
        let len = self.slots.len();
        if len == 0 {
            return Vec::new();
        }
        let next = self.next.load(Ordering::Relaxed) as usize;
        let count = n.min(len).min(next);
        (next - count..next)
            .filter_map(|i| self.slots[i % len].lock().unwrap().clone())
            .collect()
    }

    /// Statistics per digest, the most total time first.
    pub fn stats(&self) -> Vec<StatRow> {
        let mut merged: HashMap<Arc<str>, Stats> = HashMap::new();
        for m in &self.stats {
            for s in m.lock().unwrap().values() {
                let Some(sql) = &s.sql else { continue };
                let t = merged.entry(sql.clone()).or_default();
                t.plan = s.plan;
                t.count += s.count;
                t.errors += s.errors;
                t.total_ms += s.total_ms;
                t.max_ms = t.max_ms.max(s.max_ms);
                t.rows += s.rows;
                t.max_shards = t.max_shards.max(s.max_shards);
                for (a, b) in t.buckets.iter_mut().zip(&s.buckets) {
                    *a += b;
                }
            }
        }
        let mut rows: Vec<StatRow> = merged
            .into_iter()
            .map(|(sql, s)| StatRow {
                sql,
                plan: s.plan,
                count: s.count,
                errors: s.errors,
                total_ms: s.total_ms,
                avg_ms: s.total_ms / s.count.max(1) as f64,
                p99_ms: p99(&s.buckets, s.count, s.max_ms),
                max_ms: s.max_ms,
                rows: s.rows,
                max_shards: s.max_shards,
            })
            .collect();
        rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        rows
    }
}

/// Appends the lines sent on `rx` to `path` (one JSON entry per line) until the channel
/// closes; runs as its own task, so sessions never wait for the disk.
pub async fn write_file(path: std::path::PathBuf, mut rx: tokio::sync::mpsc::Receiver<String>) {
    use tokio::io::AsyncWriteExt;
    let file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the query log file");
            return;
        }
    };
    let mut out = tokio::io::BufWriter::new(file);
    while let Some(line) = rx.recv().await {
        let mut batch = line;
        batch.push('\n');
        // Take what else is waiting, then write and flush once.
        while let Ok(more) = rx.try_recv() {
            batch.push_str(&more);
            batch.push('\n');
        }
        if out.write_all(batch.as_bytes()).await.is_err() || out.flush().await.is_err() {
            tracing::error!(path = %path.display(), "cannot write the query log file");
            return;
        }
    }
}

/// The upper bound of the bucket holding the 99th percentile (the max for the last one).
fn p99(buckets: &[u64], count: u64, max: f64) -> f64 {
    let want = (count as f64 * 0.99).ceil() as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want.max(1) {
            return BUCKETS_MS[i].min(max);
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sql: &str, ms: f64, error: Option<u16>) -> Entry {
        Entry {
            time_ms: 0,
            trace: 0,
            session: 1,
            user: "u".into(),
            keyspace: "k".into(),
            sql: Arc::from(sql),
            plan: "route",
            shards: vec![ShardTime {
                shard: "k/-80".into(),
                rows: 1,
                start_ms: 0.0,
                ms,
            }],
            ms,
            rows: 1,
            error,
        }
    }

    #[test]
    fn the_ring_keeps_the_latest_and_stats_add_up() {
        let log = QueryLog::new(3, 0, "p".into());
        for i in 0..5 {
            log.record(entry(
                &format!("q{}", i % 2),
                i as f64,
                (i == 4).then_some(1062),
            ));
        }
        let latest: Vec<f64> = log.latest(10).iter().map(|e| e.ms).collect();
        assert_eq!(latest, vec![2.0, 3.0, 4.0]);
        let stats = log.stats();
        let q0 = stats.iter().find(|s| &*s.sql == "q0").unwrap();
        assert_eq!((q0.count, q0.errors, q0.total_ms), (3, 1, 6.0));
        assert_eq!(q0.max_ms, 4.0);
        assert!(q0.p99_ms >= 2.5 && q0.p99_ms <= 4.0, "{}", q0.p99_ms);
        assert_eq!(stats[0].sql.as_ref(), "q0", "most total time first");
        assert_ne!(log.next_trace(), log.next_trace());
    }

    #[test]
    fn p99_of_an_even_spread() {
        let mut b = [0u64; BUCKETS_MS.len()];
        b[2] = 99; // <= 1 ms
        b[8] = 1; // <= 100 ms
        assert_eq!(p99(&b, 100, 80.0), 1.0);
        b[8] = 2;
        assert_eq!(p99(&b, 101, 80.0), 80.0);
    }
}
