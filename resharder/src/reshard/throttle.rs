//! The copy's throttler: copy as fast as the sources allow, and give way when the
//! application's queries would feel it (in the spirit of Vitess's tablet throttler).
//!
//! Two limits, shared by every copy stream of a workflow:
//! - a rate cap (`--max-rows-per-s`, 0: none), by total rows copied since the start;
//! - the application: each source server is probed every [`PROBE_EVERY`] on a connection
//!   of the throttler's own, for the application's statements running there (its threads
//!   in the processlist, the controller's own connections left out) and for the latency of
//!   a trivial statement, whose value before the copy started is the baseline.
//!   With no application statement seen for two seconds, every stream runs (`--streams`)
//!   with chunks of about 40 ms. While the application runs, one stream copies, with chunks
//!   of about 10 ms (a row the application wants is share-locked that long at most), and
//!   while the smoothed probe latency stays above [`slow_threshold`] of the baseline it
//!   rests after each chunk, as long as the chunk took times a factor that doubles while
//!   the source stays slow (up to 8) and fades when it recovers. A server queueing the
//!   copy's work delays the probe as it delays the application's statements, so the
//!   application keeps most of its latency.

use super::db::ShardConn;
use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each source is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Probe latency (µs) above which a source counts as slowed down, given its baseline.
pub fn slow_threshold(baseline_us: u64) -> u64 {
    (baseline_us * 3 / 2).max(baseline_us + 1_000)
}

/// The next rest factor (rest after a chunk = its time x factor), given whether the
/// sources are slow while the application runs.
pub fn next_rest(rest: f64, slow: bool) -> f64 {
    if slow {
        (rest * 2.0).clamp(0.5, 8.0)
    } else if rest < 0.25 {
        0.0
    } else {
        rest / 2.0
    }
}

/// Streams allowed to run: all of them while nothing else runs on the sources, one while
/// the application does.
pub fn streams_for(max: usize, foreground: bool) -> usize {
    if foreground {
        1
    } else {
        max.max(1)
    }
}

/// Running streams in slots below `index`, given the occupied slots' bits: the streams
/// that go first when fewer may run than are running. Counting them (rather than
/// comparing the slot with the number allowed) lets a stream in a high slot run once
/// the streams below it ended, when the queue is empty and no new stream takes their
/// slot.
pub fn streams_ahead(occupied: u64, index: usize) -> usize {
    let below = if index >= 64 {
        u64::MAX
    } else {
        (1u64 << index) - 1
    };
    (occupied & below).count_ones() as usize
}

/// How long a chunk should take (see `stream::next_chunk`).
pub fn chunk_target(foreground: bool) -> Duration {
    if foreground {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(40)
    }
}

/// Shared state of one workflow's copy.
pub struct Throttle {
    max_rows_per_s: u64,
    max_streams: usize,
    started: Instant,
    copied: AtomicU64,
    allowed: AtomicUsize,
    /// The slots of the running streams (bit `i`: slot `i`).
    occupied: AtomicU64,
    slow: AtomicBool,
    /// The application runs statements on a source.
    foreground: AtomicBool,
    /// The rest factor, in thousandths (see [`next_rest`]).
    rest_milli: AtomicU64,
    /// The controller's connection ids per source server (left out of the foreground).
    own: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u32>>>,
    /// Times the sources were found slow (for the final report).
    pub slowdowns: AtomicU64,
    stop: AtomicBool,
}

impl Throttle {
    pub fn new(max_rows_per_s: u64, max_streams: usize) -> Arc<Throttle> {
        Arc::new(Throttle {
            max_rows_per_s,
            max_streams: max_streams.max(1),
            started: Instant::now(),
            copied: AtomicU64::new(0),
            // One until the first probe says whether the application runs.
            allowed: AtomicUsize::new(1),
            occupied: AtomicU64::new(0),
            slow: AtomicBool::new(false),
            foreground: AtomicBool::new(true),
            rest_milli: AtomicU64::new(0),
            own: Default::default(),
            slowdowns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    /// A stream starts running in `slot` (below 64).
    pub fn enter(&self, slot: usize) {
        self.occupied.fetch_or(1 << slot, Ordering::Relaxed);
    }

    /// The stream in `slot` ended.
    pub fn leave(&self, slot: usize) {
        self.occupied.fetch_and(!(1 << slot), Ordering::Relaxed);
    }

    /// Waits until stream `index` (its slot) may copy its next chunk: while fewer
    /// running streams sit in lower slots than are allowed.
    pub async fn before_chunk(&self, index: usize) {
        loop {
            let ahead = streams_ahead(self.occupied.load(Ordering::Relaxed), index);
            if ahead < self.allowed.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.max_rows_per_s > 0 {
            let copied = self.copied.load(Ordering::Relaxed);
            let due = Duration::from_secs_f64(copied as f64 / self.max_rows_per_s as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Records a copied chunk, and rests while the throttle says so.
    pub async fn after_chunk(&self, rows: u64, took: Duration) {
        self.copied.fetch_add(rows, Ordering::Relaxed);
        let rest = self.rest_milli.load(Ordering::Relaxed);
        if rest > 0 {
            let pause = took.mul_f64(rest as f64 / 1000.0);
            tokio::time::sleep(pause.min(Duration::from_secs(2))).await;
        }
    }

    /// Records a connection of the controller on a source server (`shard` name), so the
    /// probe does not count it as the application's.
    pub fn own_connection(&self, shard: &str, id: u32) {
        self.own
            .lock()
            .unwrap()
            .entry(shard.to_string())
            .or_default()
            .push(id);
    }

    /// How long a chunk should take now.
    pub fn chunk_target(&self) -> Duration {
        chunk_target(self.foreground.load(Ordering::Relaxed))
    }

    /// Whether a stream may read its next chunk while it writes the current one (two
    /// chunks' rows share-locked at once): only while the application does not run.
    pub fn overlap(&self) -> bool {
        !self.foreground.load(Ordering::Relaxed)
    }

    /// Streams allowed now (for progress reports).
    pub fn allowed(&self) -> usize {
        self.allowed.load(Ordering::Relaxed)
    }

    /// Ends the probing.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Probes the sources until [`Throttle::stop`]: the baseline first (before any stream
    /// runs, see [`Throttle::baseline`]), then every [`PROBE_EVERY`].
    pub async fn watch(self: Arc<Self>, mut probes: Vec<ShardConn>, baselines: Vec<u64>) {
        let mut smoothed: Vec<f64> = baselines.iter().map(|b| *b as f64).collect();
        let mut foreground_at: Option<Instant> = None;
        let mut rest = 0.0;
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(PROBE_EVERY).await;
            let mut slow = false;
            for (i, p) in probes.iter_mut().enumerate() {
                let Ok(us) = probe(p).await else {
                    continue;
                };
                smoothed[i] = smoothed[i] * 0.7 + us as f64 * 0.3;
                let own = self
                    .own
                    .lock()
                    .unwrap()
                    .get(&p.shard)
                    .cloned()
                    .unwrap_or_default();
                if foreground_running(p, &own).await.unwrap_or(0) > 0 {
                    foreground_at = Some(Instant::now());
                }
                if smoothed[i] as u64 > slow_threshold(baselines[i]) {
                    slow = true;
                }
            }
            // With no application statement seen for two seconds, nobody waits for the
            // source: the copy may use all of it.
            let foreground = foreground_at.is_some_and(|t| t.elapsed() < Duration::from_secs(2));
            self.foreground.store(foreground, Ordering::Relaxed);
            let slow = slow && foreground;
            if slow && !self.slow.swap(true, Ordering::Relaxed) {
                self.slowdowns.fetch_add(1, Ordering::Relaxed);
            }
            if !slow {
                self.slow.store(false, Ordering::Relaxed);
            }
            rest = next_rest(rest, slow);
            self.rest_milli
                .store((rest * 1000.0) as u64, Ordering::Relaxed);
            let next = streams_for(self.max_streams, foreground);
            if next != self.allowed.swap(next, Ordering::Relaxed) {
                tracing::debug!(streams = next, slow, rest, "copy throttle");
            }
        }
    }

    /// A source's probe latency with nothing copying: the median of a few probes (µs).
    pub async fn baseline(c: &mut ShardConn) -> Result<u64> {
        let mut v = Vec::new();
        for _ in 0..7 {
            v.push(probe(c).await?);
        }
        v.sort_unstable();
        Ok(v[v.len() / 2].max(50))
    }
}

/// Statements of the application running on the server now (the controller's
/// connections `own` and the probe's left out).
async fn foreground_running(c: &mut ShardConn, own: &[u32]) -> Result<u64> {
    let mut sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND ID <> CONNECTION_ID()".to_string();
    for id in own {
        sql.push_str(&format!(" AND ID <> {id}"));
    }
    let r = c.exec(&sql, vec![]).await?;
    Ok(r.first().map(|r| super::db::int(r, 0)).unwrap_or(0))
}

/// One probe: a trivial statement's round trip, in µs.
async fn probe(c: &mut ShardConn) -> Result<u64> {
    let t0 = Instant::now();
    c.run("DO 0").await?;
    Ok(t0.elapsed().as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_with_short_chunks_while_the_application_runs() {
        assert_eq!(streams_for(4, true), 1);
        assert_eq!(streams_for(4, false), 4);
        assert_eq!(streams_for(0, false), 1);
        assert!(chunk_target(true) < chunk_target(false));
    }

    #[test]
    fn a_stream_in_a_high_slot_runs_once_the_streams_below_it_ended() {
        // Slots 0-3 running, one allowed: only slot 0 copies.
        assert_eq!(streams_ahead(0b1111, 0), 0);
        assert_eq!(streams_ahead(0b1111, 3), 3);
        // Slots 0-2 ended with nothing left to start: slot 3 goes first now.
        assert_eq!(streams_ahead(0b1000, 3), 0);
        assert_eq!(streams_ahead(0b1010, 3), 1);
        assert_eq!(streams_ahead(u64::MAX, 63), 63);
    }

    #[test]
    fn a_slow_source_is_well_above_its_baseline() {
        assert_eq!(slow_threshold(200), 1_200);
        assert_eq!(slow_threshold(5_000), 7_500);
    }

    #[test]
    fn the_rest_doubles_while_slow_at_one_stream_and_fades_after() {
        let mut r = 0.0;
        for want in [0.5, 1.0, 2.0, 4.0, 8.0, 8.0] {
            r = next_rest(r, true);
            assert_eq!(r, want);
        }
        for want in [4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0] {
            r = next_rest(r, false);
            assert_eq!(r, want);
        }
    }
}
