//! The copy's throttler: copy as fast as the sources allow, and give way when the
//! application's queries would feel it (in the spirit of Vitess's tablet throttler).
//!
//! Two limits, shared by every copy stream of a workflow:
//! - a rate cap (`--max-rows-per-s`, 0: none), by total rows copied since the start;
//! - the health of each source server, probed every [`PROBE_EVERY`] with a trivial query
//!   on a connection of its own. Its latency with nothing copying yet is the baseline;
//!   while the application is running statements there (its threads in the processlist,
//!   the controller's own connections left out) and the smoothed probe latency stays above
//!   [`slow_threshold`] of the baseline, the streams allowed to run are halved, down to one,
//!   which then also rests after each chunk (as long as the chunk took, times a factor
//!   that doubles while the source stays slow, up to 8); when it is healthy again the rest
//!   shrinks and one more stream is allowed each second. A server queueing the copy's work
//!   delays the probe as it delays the application's statements, so the application keeps
//!   most of its latency; with no application running the copy goes at full speed.

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
/// sources are slow with a single stream left.
pub fn next_rest(rest: f64, slow_at_one: bool) -> f64 {
    if slow_at_one {
        (rest * 2.0).clamp(0.5, 8.0)
    } else if rest < 0.25 {
        0.0
    } else {
        rest / 2.0
    }
}

/// The next number of streams allowed, given whether the sources are slow now and for
/// how long they have been healthy. Pure, so the policy is tested on its own.
pub fn next_allowed(allowed: usize, max: usize, slow: bool, healthy_for: Duration) -> usize {
    if slow {
        (allowed / 2).max(1)
    } else if healthy_for >= Duration::from_secs(1) {
        (allowed + 1).min(max)
    } else {
        allowed
    }
}

/// Shared state of one workflow's copy.
pub struct Throttle {
    max_rows_per_s: u64,
    max_streams: usize,
    started: Instant,
    copied: AtomicU64,
    allowed: AtomicUsize,
    slow: AtomicBool,
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
            allowed: AtomicUsize::new(max_streams.max(1)),
            slow: AtomicBool::new(false),
            rest_milli: AtomicU64::new(0),
            own: Default::default(),
            slowdowns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    /// Waits until stream `index` may copy its next chunk.
    pub async fn before_chunk(&self, index: usize) {
        loop {
            if index < self.allowed.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed) {
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
        let mut healthy_since = Instant::now();
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
            let slow = slow && foreground;
            if slow {
                if !self.slow.swap(true, Ordering::Relaxed) {
                    self.slowdowns.fetch_add(1, Ordering::Relaxed);
                }
                healthy_since = Instant::now();
            } else {
                self.slow.store(false, Ordering::Relaxed);
            }
            let now = self.allowed.load(Ordering::Relaxed);
            rest = next_rest(rest, slow && now <= 1);
            self.rest_milli
                .store((rest * 1000.0) as u64, Ordering::Relaxed);
            let next = next_allowed(now, self.max_streams, slow, healthy_since.elapsed());
            if next != now {
                tracing::debug!(streams = next, slow, rest, "copy throttle");
                self.allowed.store(next, Ordering::Relaxed);
                if !slow {
                    healthy_since = Instant::now();
                }
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
    fn streams_halve_when_slow_and_come_back_one_a_second() {
        let s = Duration::from_secs;
        let cases = [
            (4, 4, true, s(0), 2),
            (2, 4, true, s(5), 1),
            (1, 4, true, s(5), 1),
            (1, 4, false, s(0), 1),
            (1, 4, false, s(1), 2),
            (4, 4, false, s(9), 4),
        ];
        for (now, max, slow, healthy, want) in cases {
            assert_eq!(
                next_allowed(now, max, slow, healthy),
                want,
                "{now} {slow} {healthy:?}"
            );
        }
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
