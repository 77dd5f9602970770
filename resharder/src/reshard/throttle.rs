//! The copy's throttler: copy as fast as the sources allow, and give way when the
//! application's queries would feel it (in the spirit of Vitess's tablet throttler).
//!
//! Two limits, shared by every copy stream of a workflow:
//! - a rate cap (`--max-rows-per-s`, 0: none), by total rows copied since the start;
//! - the application: each source server is probed every [`PROBE_EVERY`] on a connection
//!   of the throttler's own, for the application's statements and for the latency of a
//!   trivial statement, whose value before the copy started is the baseline. The
//!   application is any connection of the server that is not the controller's (every
//!   connection the controller opens on any server is registered with its server's
//!   address) and that runs a statement now or ran one since the previous probe: its
//!   last statement's id (`QUERY_ID`, a server-wide counter) moved on
//!   ([`application_active`]). Sampling only what runs at the instant of a probe misses
//!   nearly every short statement of an application (the bench's 100 tx/s went unseen).
//!   Until the first comparison (after [`FIRST_PROBE`]) one stream copies.
//!   With no application statement seen for [`QUIET`], every stream runs (`--streams`)
//!   with chunks of about 40 ms. While the application runs, one stream copies, with
//!   chunks of about 5 ms (a row the application wants is share-locked that long at
//!   most), resting after each chunk at least [`FOREGROUND_REST`] times as long as it
//!   took; while the smoothed probe latency stays above [`slow_threshold`] of the
//!   baseline the rest factor doubles (up to [`MAX_REST`]) and fades when the source
//!   recovers. The copy's work takes CPU the application's statements would run on,
//!   which a probe statement barely sees until the server saturates, while the
//!   application's p95 already shows it: hence the fixed minimum rest.

use super::db::ShardConn;
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each source is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The first comparison of two snapshots comes sooner: an idle copy of a few hundred
/// thousand rows lasts about a second, and runs one stream until then.
pub const FIRST_PROBE: Duration = Duration::from_millis(30);

/// With no application statement seen for this long, the copy uses all streams.
pub const QUIET: Duration = Duration::from_secs(2);

/// The largest rest factor: a copy resting longer barely moves (under a steady load the
/// probe can stay slow for the whole copy) while the application gains little more.
pub const MAX_REST: f64 = 8.0;

/// While the application runs, the copying stream rests at least this many times as
/// long as each chunk took (so it copies at most a quarter of the time).
pub const FOREGROUND_REST: f64 = 3.0;

/// Probe latency (µs) above which a source counts as slowed down, given its baseline.
pub fn slow_threshold(baseline_us: u64) -> u64 {
    (baseline_us * 3 / 2).max(baseline_us + 1_000)
}

/// The next rest factor (rest after a chunk = its time x factor), given whether the
/// sources are slow while the application runs.
pub fn next_rest(rest: f64, slow: bool) -> f64 {
    if slow {
        (rest * 2.0).clamp(0.5, MAX_REST)
    } else if rest < 0.25 {
        0.0
    } else {
        rest / 2.0
    }
}

/// The rest factor applied: the adaptive one (see [`next_rest`]), at least
/// [`FOREGROUND_REST`] while the application runs.
pub fn rest_for(rest: f64, foreground: bool) -> f64 {
    if foreground {
        rest.max(FOREGROUND_REST)
    } else {
        rest
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
        Duration::from_millis(5)
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
    /// The controller's connection ids per server address (left out of the foreground).
    own: std::sync::Mutex<BTreeMap<String, Vec<u64>>>,
    /// Times the sources were found slow (for the final report).
    pub slowdowns: AtomicU64,
    /// Probe rounds, and those that found the application (for the final report).
    pub probes: AtomicU64,
    pub application_probes: AtomicU64,
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
            probes: AtomicU64::new(0),
            application_probes: AtomicU64::new(0),
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

    /// Records a connection of the controller (on any server: a target may share a
    /// server with a source), so the probes do not count it as the application's.
    pub fn own_connection(&self, c: &ShardConn) {
        self.own
            .lock()
            .unwrap()
            .entry(c.addr.clone())
            .or_default()
            .push(u64::from(c.conn.id()));
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
        // Each server's connections and their last statement's id.
        let mut seen: Vec<BTreeMap<u64, u64>> = Vec::with_capacity(probes.len());
        for p in probes.iter_mut() {
            let now = processlist(p).await.unwrap_or_default();
            seen.push(now.iter().map(|c| (c.id, c.query_id)).collect());
        }
        let mut wait = FIRST_PROBE;
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(wait).await;
            wait = PROBE_EVERY;
            let mut slow = false;
            let mut active = false;
            for (i, p) in probes.iter_mut().enumerate() {
                let Ok(us) = probe(p).await else {
                    continue;
                };
                smoothed[i] = smoothed[i] * 0.7 + us as f64 * 0.3;
                let own = self
                    .own
                    .lock()
                    .unwrap()
                    .get(&p.addr)
                    .cloned()
                    .unwrap_or_default();
                if let Ok(now) = processlist(p).await {
                    if let Some(c) = application_active(&seen[i], &now, &own) {
                        active = true;
                        tracing::trace!(server = %p.addr, connection = c.id, "the application ran statements");
                    }
                    seen[i] = now.iter().map(|c| (c.id, c.query_id)).collect();
                }
                if smoothed[i] as u64 > slow_threshold(baselines[i]) {
                    slow = true;
                }
            }
            self.probes.fetch_add(1, Ordering::Relaxed);
            if active {
                self.application_probes.fetch_add(1, Ordering::Relaxed);
                foreground_at = Some(Instant::now());
            }
            // With no application statement seen for a while, nobody waits for the
            // source: the copy may use all of it.
            let foreground = foreground_at.is_some_and(|t| t.elapsed() < QUIET);
            self.foreground.store(foreground, Ordering::Relaxed);
            let slow = slow && foreground;
            if slow && !self.slow.swap(true, Ordering::Relaxed) {
                self.slowdowns.fetch_add(1, Ordering::Relaxed);
            }
            if !slow {
                self.slow.store(false, Ordering::Relaxed);
            }
            rest = next_rest(rest, slow);
            self.rest_milli.store(
                (rest_for(rest, foreground) * 1000.0) as u64,
                Ordering::Relaxed,
            );
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

/// A connection of a source server, as the probe saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub id: u64,
    /// The id of its current or last statement (a server-wide counter).
    pub query_id: u64,
    /// It runs a statement now.
    pub running: bool,
}

/// A connection showing that the application used the server since the previous
/// probe: one that is not the controller's (`own`) and runs a statement now, or ran
/// one since `before` (its last statement's id moved on). Connections that appeared
/// since are left out (the controller's are registered only once they are open).
pub fn application_active<'a>(
    before: &BTreeMap<u64, u64>,
    now: &'a [Client],
    own: &[u64],
) -> Option<&'a Client> {
    now.iter()
        .filter(|c| !own.contains(&c.id))
        .find(|c| c.running || before.get(&c.id).is_some_and(|q| *q != c.query_id))
}

/// The server's connections but the probe's own.
async fn processlist(c: &mut ShardConn) -> Result<Vec<Client>> {
    let rows = c
        .exec(
            "SELECT ID, QUERY_ID, COMMAND = 'Query' FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()",
            vec![],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Client {
            id: super::db::int(r, 0),
            query_id: super::db::int(r, 1),
            running: super::db::int(r, 2) == 1,
        })
        .collect())
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
    fn the_application_counts_when_its_connections_ran_statements_since_the_last_probe() {
        let c = |id, query_id, running| Client {
            id,
            query_id,
            running,
        };
        let before: BTreeMap<u64, u64> = [(1, 10), (2, 20), (3, 30)].into_iter().collect();
        // Nothing moved, nothing runs.
        let idle = [c(1, 10, false), c(2, 20, false), c(3, 30, false)];
        assert_eq!(application_active(&before, &idle, &[]), None);
        // An application connection ran a statement in between, though none runs now.
        let ran = [c(1, 10, false), c(2, 25, false), c(3, 30, false)];
        assert_eq!(application_active(&before, &ran, &[]), Some(&ran[1]));
        // ... unless that connection is the controller's.
        assert_eq!(application_active(&before, &ran, &[2]), None);
        // One runs now.
        assert!(application_active(&before, &[c(3, 30, true)], &[]).is_some());
        assert!(application_active(&before, &[c(3, 30, true)], &[3]).is_none());
        // A connection that just appeared (a stream opening its own) does not count.
        assert!(application_active(&before, &[c(9, 99, false)], &[]).is_none());
    }

    #[test]
    fn the_copy_rests_at_least_as_long_as_its_chunks_while_the_application_runs() {
        assert_eq!(rest_for(0.0, true), FOREGROUND_REST);
        assert_eq!(rest_for(MAX_REST, true), MAX_REST);
        assert_eq!(rest_for(0.0, false), 0.0);
        assert_eq!(rest_for(0.5, false), 0.5);
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
