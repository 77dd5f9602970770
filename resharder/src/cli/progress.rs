//! Live progress of a workflow while `shardctl reshard start | run | resume` drives it:
//! per-table bars with rate and ETA on a terminal (indicatif, on stderr), JSON lines on
//! stdout with `--json`, and a plain line every 10 s otherwise, so a long copy is never
//! silent. Progress is read from the workflow document in etcd (the controller
//! checkpoints it every second), so what is shown is what `status` would show.

use crate::reshard::workflow::{self, WorkflowDoc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shardgate_topology::Store;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A running progress display; [`Progress::finish`] stops it.
pub struct Progress {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts showing the progress of workflow `name`.
pub fn spawn(store: Store, name: String, json: bool) -> Progress {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(show(store, name, json, rx));
    Progress { stop, task }
}

impl Progress {
    /// Draws the last state and stops.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// One line of `--json` output.
fn json_line(doc: &WorkflowDoc) -> serde_json::Value {
    let tables: serde_json::Map<String, serde_json::Value> = doc
        .tables
        .iter()
        .map(|(t, p)| {
            (
                t.clone(),
                serde_json::json!({"rows_copied": p.rows_copied, "rows_estimate": p.rows_estimate}),
            )
        })
        .collect();
    serde_json::json!({
        "workflow": doc.name,
        "phase": doc.phase,
        "tables": tables,
        "message": doc.message,
    })
}

/// A one-line summary (for logs and pipes).
fn plain_line(doc: &WorkflowDoc, rate: f64) -> String {
    let copied: u64 = doc.tables.values().map(|p| p.rows_copied).sum();
    let total: u64 = doc
        .tables
        .values()
        .map(|p| p.rows_estimate.max(p.rows_copied))
        .sum();
    let pct = if total > 0 {
        copied as f64 * 100.0 / total as f64
    } else {
        100.0
    };
    format!(
        "{}: {}: {copied}/{total} rows copied ({pct:.0}%), {rate:.0} rows/s - {}",
        doc.name, doc.phase, doc.message
    )
}

async fn show(store: Store, name: String, json: bool, mut stop: watch::Receiver<bool>) {
    let tty = !json && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if tty {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>16} [{bar:30}] {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut last_json = String::new();
    let mut last_plain: Option<(Instant, u64)> = None;
    let mut last_message = String::new();
    loop {
        let stopping = tokio::select! {
            _ = stop.changed() => true,
            _ = tokio::time::sleep(Duration::from_millis(500)) => false,
        };
        if let Ok(wf) = workflow::load(&store, &name).await {
            let doc = wf.doc;
            if tty {
                for (t, p) in &doc.tables {
                    let bar = bars.entry(t.clone()).or_insert_with(|| {
                        multi.add(
                            ProgressBar::new(p.rows_estimate)
                                .with_style(style.clone())
                                .with_prefix(t.clone()),
                        )
                    });
                    bar.set_length(p.rows_estimate.max(p.rows_copied));
                    bar.set_position(p.rows_copied);
                    bar.set_message(doc.phase.to_string());
                }
                if doc.message != last_message {
                    let _ = multi.println(&doc.message);
                }
            } else if json {
                let line = json_line(&doc).to_string();
                if line != last_json {
                    println!("{line}");
                    last_json = line;
                }
            } else {
                let copied: u64 = doc.tables.values().map(|p| p.rows_copied).sum();
                let due = last_plain.is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(10));
                if due || doc.message != last_message || stopping {
                    let rate = last_plain.map_or(0.0, |(at, n)| {
                        copied.saturating_sub(n) as f64 / at.elapsed().as_secs_f64().max(0.001)
                    });
                    eprintln!("{}", plain_line(&doc, rate));
                    last_plain = Some((Instant::now(), copied));
                }
            }
            last_message = doc.message;
        }
        if stopping {
            break;
        }
    }
    for b in bars.values() {
        b.finish();
    }
}
