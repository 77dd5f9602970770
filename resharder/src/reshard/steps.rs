//! The workflow's steps behind one trait, with two implementations of each: `run` does
//! it, `describe` says what it would do and check, from the workflow document alone
//! (`--dry-run` prints that, after the request's checks, and changes nothing).
//!
//! The phases a step moves between are the workflow document's ([`Phase`]); the point
//! of no return is `complete` (see [`POINT_OF_NO_RETURN`]): before it, `abort` or
//! `rollback` puts everything back.

use super::workflow::{Phase, WorkflowDoc};
use super::{backfill, cutover, finish, setup, verify, Controller};
use anyhow::Result;
use futures::future::BoxFuture;

/// Where a workflow can no longer be undone: `complete` retires (reshard) or drops
/// (MoveTables) the sources in the same etcd write that ends the workflow.
pub const POINT_OF_NO_RETURN: Phase = Phase::Complete;

/// One step of a workflow.
pub trait Step: Sync {
    /// What the step is called (as in `shardctl reshard <verb>` where it has one).
    fn name(&self) -> &'static str;
    /// The phase it starts from and the phase it leaves the workflow in.
    fn phases(&self) -> (Phase, Phase);
    /// Every action and check it would make, in order (nothing is changed).
    fn describe(&self, doc: &WorkflowDoc) -> Vec<String>;
    /// Does it.
    fn run<'a>(&'a self, c: &'a mut Controller) -> BoxFuture<'a, Result<()>>;
}

struct Setup;
struct Copy;
struct Verify;
struct Cutover;
struct Complete;

/// The step that moves a workflow on from `phase` (`None` once it ended).
pub fn step_for(phase: Phase) -> Option<&'static dyn Step> {
    match phase {
        Phase::Created => Some(&Setup),
        Phase::Copying => Some(&Copy),
        Phase::Backfilled => Some(&Verify),
        Phase::Verified => Some(&Cutover),
        Phase::CutOver => Some(&Complete),
        Phase::Complete | Phase::Aborted => None,
    }
}

/// The steps from the document's phase up to `goal`, each with what it would do.
pub fn dry_run(doc: &WorkflowDoc, goal: Phase) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    let mut phase = doc.phase;
    while phase < goal {
        let Some(step) = step_for(phase) else {
            break;
        };
        out.push((step.name(), step.describe(doc)));
        phase = step.phases().1;
    }
    out
}

fn tables(doc: &WorkflowDoc) -> String {
    doc.tables.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn sides(doc: &WorkflowDoc) -> (String, String) {
    (
        format!("{}/{}", doc.keyspace, doc.from.join(",")),
        format!("{}/{}", doc.target(), doc.to.join(",")),
    )
}

impl Step for Setup {
    fn name(&self) -> &'static str {
        "setup"
    }
    fn phases(&self) -> (Phase, Phase) {
        (Phase::Created, Phase::Copying)
    }
    fn describe(&self, doc: &WorkflowDoc) -> Vec<String> {
        let (from, to) = sides(doc);
        let mut v = vec![
            format!("create tables {} on {to} from SHOW CREATE TABLE on {from} (CREATE TABLE IF NOT EXISTS); refuse if a target table already holds rows", tables(doc)),
            format!("install change capture on {from} and {to}: AFTER INSERT/UPDATE/DELETE triggers per table logging primary keys to _shardgate capture tables"),
        ];
        if doc.moves_tables() {
            v.push(format!(
                "declare in the VSchema of {} the tables it lacks (default vindex on the first primary-key column); routing rules {}.t -> {}.t for each table; workflow {} on both keyspaces' routing (DDL refused)",
                doc.target(), doc.target(), doc.keyspace, doc.name
            ));
        } else {
            v.push(format!(
                "routing of {}: workflow {} (DDL refused), dual_write {} -> {}",
                doc.keyspace,
                doc.name,
                doc.from.join(","),
                doc.to.join(",")
            ));
        }
        v.push(
            "wait until every registered proxy acknowledges the new routing version (30 s)".into(),
        );
        v
    }
    fn run<'a>(&'a self, c: &'a mut Controller) -> BoxFuture<'a, Result<()>> {
        Box::pin(setup::prepare(c))
    }
}

impl Step for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }
    fn phases(&self) -> (Phase, Phase) {
        (Phase::Copying, Phase::Backfilled)
    }
    fn describe(&self, doc: &WorkflowDoc) -> Vec<String> {
        let (from, to) = sides(doc);
        let o = &doc.options;
        let rows: u64 = doc.tables.values().map(|t| t.rows_estimate).sum();
        vec![
            format!("copy ~{rows} rows of {} from {from} to {to}: up to {} streams (per table, source shard, and key range of a big table), chunks from {} rows sized to ~40 ms (one stream of ~10 ms chunks while the application runs on the sources), read LOCK IN SHARE MODE NOWAIT and committed after the targets' REPLACE", tables(doc), o.streams, o.chunk_rows),
            format!(
                "throttle: {}; rest after each chunk while a source's probe latency is 1.5x over its baseline",
                if o.max_rows_per_s > 0 { format!("at most {} rows/s", o.max_rows_per_s) } else { "no rate cap".into() }
            ),
            "apply captured changes every 500 ms; checkpoint each stream's last key in the workflow document every second".into(),
        ]
    }
    fn run<'a>(&'a self, c: &'a mut Controller) -> BoxFuture<'a, Result<()>> {
        Box::pin(backfill::run(c))
    }
}

impl Step for Verify {
    fn name(&self) -> &'static str {
        "verify"
    }
    fn phases(&self) -> (Phase, Phase) {
        (Phase::Backfilled, Phase::Verified)
    }
    fn describe(&self, doc: &WorkflowDoc) -> Vec<String> {
        let (from, to) = sides(doc);
        vec![
            format!("apply the capture backlog; compare {from} with {to} per key-range chunk ({} rows): COUNT(*) and BIT_XOR of row MD5s", (doc.options.chunk_rows * 10).max(1000)),
            "check differing chunks again after the backlog; re-copy those that still differ under lock and compare a last time; fail if any still differs (cutover is then refused)".into(),
        ]
    }
    fn run<'a>(&'a self, c: &'a mut Controller) -> BoxFuture<'a, Result<()>> {
        Box::pin(verify::run(c))
    }
}

impl Step for Cutover {
    fn name(&self) -> &'static str {
        "cutover"
    }
    fn phases(&self) -> (Phase, Phase) {
        (Phase::Verified, Phase::CutOver)
    }
    fn describe(&self, doc: &WorkflowDoc) -> Vec<String> {
        let (from, to) = sides(doc);
        let flip = if doc.moves_tables() {
            format!("routing rules {}.t -> {}.t", doc.keyspace, doc.target())
        } else {
            format!(
                "serving shards of {}: {} instead of {}",
                doc.keyspace,
                doc.to.join(","),
                doc.from.join(",")
            )
        };
        vec![
            "refuse unless the last verify passed; wait until every proxy runs the current routing; apply the backlog while writes flow".into(),
            format!("hold writes to {from} on every proxy (write buffer, at most {} ms; every proxy acknowledges once its older writes finished)", doc.options.buffer_max_ms),
            format!("wait until no transaction is open on {from}; apply the last captured changes; guard {from} against writes (until the flip, then for good)"),
            format!("flip in one etcd write that also lifts the buffer: {flip}; changes now flow back from {to}"),
            "if any step before the flip fails or half the buffer's time passes: lift the buffer on the old routing and retry (3 attempts)".into(),
        ]
    }
    fn run<'a>(&'a self, c: &'a mut Controller) -> BoxFuture<'a, Result<()>> {
        Box::pin(cutover::run(c, 3))
    }
}

impl Step for Complete {
    fn name(&self) -> &'static str {
        "complete"
    }
    fn phases(&self) -> (Phase, Phase) {
        (Phase::CutOver, Phase::Complete)
    }
    fn describe(&self, doc: &WorkflowDoc) -> Vec<String> {
        let (from, _) = sides(doc);
        let mut v = vec!["apply the last changes in both directions".into()];
        if doc.moves_tables() {
            v.push(format!("POINT OF NO RETURN: end the workflow (routing rules keep {}.t -> {}.t), remove change capture, DROP TABLE {} on {from}", doc.keyspace, doc.target(), tables(doc)));
        } else {
            v.push(format!(
                "POINT OF NO RETURN: end the workflow, mark {} retired and {} ready, remove change capture{}",
                doc.from.join(","),
                doc.to.join(","),
                if doc.options.delete_source_rows { ", delete the moved rows from the sources in chunks" } else { "" }
            ));
        }
        v
    }
    fn run<'a>(&'a self, c: &'a mut Controller) -> BoxFuture<'a, Result<()>> {
        Box::pin(finish::complete(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_before_the_end_has_the_step_that_leaves_it() {
        let mut phase = Phase::Created;
        let mut names = Vec::new();
        while let Some(s) = step_for(phase) {
            assert_eq!(s.phases().0, phase);
            names.push(s.name());
            phase = s.phases().1;
        }
        assert_eq!(phase, POINT_OF_NO_RETURN);
        assert_eq!(names, ["setup", "copy", "verify", "cutover", "complete"]);
        assert!(step_for(Phase::Aborted).is_none());
    }
}
