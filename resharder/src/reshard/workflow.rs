//! The workflow document (`workflows/<name>` in etcd): everything a controller needs to
//! resume a resharding after a crash, and everything `shardctl reshard status` shows.

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use shardgate_topology::store::{Expect, Store, Write};
use std::collections::BTreeMap;

/// Where a workflow is. Phases only move forward, except `rollback` (CutOver -> Backfilled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Target schema and change capture being set up.
    Created,
    /// Change capture on, dual-write announced; rows being copied.
    Copying,
    /// Every row copied; changes keep flowing to the targets.
    Backfilled,
    /// Checksums matched.
    Verified,
    /// The targets serve; changes flow back to the sources (rollback possible).
    CutOver,
    /// The sources are retired.
    Complete,
    /// Stopped before cutover; the sources serve as before.
    Aborted,
}

/// Phases are written as in the workflow document (`cut_over`), everywhere.
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

impl Phase {
    pub fn finished(self) -> bool {
        matches!(self, Phase::Complete | Phase::Aborted)
    }
}

/// Tunables, fixed at `start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// Rows per backfill / verify chunk.
    pub chunk_rows: u64,
    /// Backfill rate limit in rows per second (0: none; the copy still backs off when the
    /// source slows down).
    pub max_rows_per_s: u64,
    /// Longest a proxy holds writes during cutover.
    pub buffer_max_ms: u64,
    /// Delete moved rows from the sources at `complete`.
    pub delete_source_rows: bool,
    /// Copy streams at most (tables, source shards and key ranges of big tables are
    /// copied in parallel; the throttler runs fewer while the sources slow down).
    #[serde(default = "default_streams")]
    pub streams: u32,
}

fn default_streams() -> u32 {
    4
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_rows: 1000,
            max_rows_per_s: 0,
            buffer_max_ms: 3000,
            delete_source_rows: false,
            streams: default_streams(),
        }
    }
}

/// A primary-key value in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    Int(i64),
    Uint(u64),
    Float(f64),
    /// Bytes, hex-encoded.
    Hex(String),
}

/// One table's copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableProgress {
    /// `sharded` (rows split by the primary vindex) or `reference` (copied whole).
    pub kind: String,
    pub primary_key: Vec<String>,
    /// Source rows when the copy started (from the table statistics).
    pub rows_estimate: u64,
    pub rows_copied: u64,
    /// The last primary key copied, per copy stream (see [`TableProgress::stream_id`]).
    #[serde(default)]
    pub last_key: BTreeMap<String, Vec<KeyValue>>,
    /// Copy streams whose rows are all copied.
    #[serde(default)]
    pub done: Vec<String>,
    /// Per source shard, the primary keys splitting its rows into key ranges copied in
    /// parallel (decided once, when the copy starts; absent: one range).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, Vec<Vec<KeyValue>>>,
}

impl TableProgress {
    /// The stream copying range `k` of source shard `shard`: the shard's name for its
    /// first (or only) range, `shard#k` for the others.
    pub fn stream_id(shard: &str, k: usize) -> String {
        if k == 0 {
            shard.to_string()
        } else {
            format!("{shard}#{k}")
        }
    }

    /// Whether every row of the table is copied, from `sources` shards.
    pub fn copied(&self, sources: &[String]) -> bool {
        sources.iter().all(|s| {
            let ranges = self.splits.get(s).map_or(1, |v| v.len() + 1);
            (0..ranges).all(|k| self.done.contains(&Self::stream_id(s, k)))
        })
    }
}

/// What the last copy did (the controller that ran it to its end), and what its
/// throttler saw of the application on the sources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CopyReport {
    pub rows: u64,
    pub seconds: f64,
    /// Copy streams (tables x source shards x key ranges).
    pub streams: u64,
    /// Probe rounds of the sources, and those that found the application's statements.
    pub probes: u64,
    pub application_probes: u64,
    /// Times the sources were found slowed down while the application ran.
    pub slowdowns: u64,
}

/// The result of `verify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub chunks: u64,
    pub rows: u64,
    /// Chunks whose checksums differed at first (changes in flight, usually).
    pub mismatched: u64,
    /// Chunks re-copied under lock because they still differed.
    pub recopied: u64,
    /// Chunks that still differ after re-copying (0 for a successful verify).
    pub failed: u64,
    pub seconds: f64,
    pub finished_ms: u64,
}

/// What the last cutover (or rollback) measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CutoverReport {
    /// From the write buffer turned on to every proxy on the new routing.
    pub pause_ms: u64,
    /// Attempts that gave up and restored the routing.
    pub failed_attempts: u64,
    /// Why the last failed attempt gave up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    pub finished_ms: u64,
}

/// `workflows/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowDoc {
    pub name: String,
    /// The keyspace rows move within (reshard) or out of (movetables).
    pub keyspace: String,
    /// MoveTables: the keyspace the tables move into (`to` names its shards). `None` for
    /// a reshard, whose `from` and `to` are shards of `keyspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_keyspace: Option<String>,
    /// MoveTables: the tables `start` added to the target keyspace's VSchema (an abort
    /// removes them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vschema_added: Vec<String>,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub phase: Phase,
    /// Where the command that started it was heading: `backfilled` (start) or `complete`
    /// (run). `resume` goes on to it.
    pub goal: Phase,
    pub options: Options,
    pub tables: BTreeMap<String, TableProgress>,
    #[serde(default)]
    pub verify: Option<VerifyReport>,
    #[serde(default)]
    pub cutover: Option<CutoverReport>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Backfill start, for rates.
    #[serde(default)]
    pub copy_started_ms: u64,
    /// MoveTables: tables whose sequence `start` made in the source keyspace (see
    /// `sequence.rs`; dropped again by an abort).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences_added: Vec<String>,
    /// The last copy's figures (absent until a copy ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyReport>,
    /// The last thing that happened.
    pub message: String,
    /// After `complete` or `abort`: change capture (and an abort's target copies) removed.
    /// A controller that died between the end and the cleanup leaves this false, and
    /// `resume` finishes the cleanup.
    #[serde(default)]
    pub leftovers_removed: bool,
}

impl WorkflowDoc {
    /// A new workflow in phase `Created`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        keyspace: &str,
        target_keyspace: Option<&str>,
        from: Vec<String>,
        to: Vec<String>,
        goal: Phase,
        options: Options,
        tables: BTreeMap<String, TableProgress>,
    ) -> WorkflowDoc {
        let now = now_ms();
        WorkflowDoc {
            name: name.to_string(),
            keyspace: keyspace.to_string(),
            target_keyspace: target_keyspace.map(str::to_string),
            vschema_added: Vec::new(),
            from,
            to,
            phase: Phase::Created,
            goal,
            options,
            tables,
            verify: None,
            cutover: None,
            created_ms: now,
            updated_ms: now,
            copy_started_ms: 0,
            copy: None,
            sequences_added: Vec::new(),
            message: "created".into(),
            leftovers_removed: false,
        }
    }

    /// The keyspace of the `to` shards.
    pub fn target(&self) -> &str {
        self.target_keyspace.as_deref().unwrap_or(&self.keyspace)
    }

    /// Whether tables move between keyspaces (MoveTables) rather than key ranges
    /// between shards of one keyspace.
    pub fn moves_tables(&self) -> bool {
        self.target_keyspace.is_some()
    }

    /// The keyspaces of the side that serves before (`forward`) or after the switch:
    /// (old side's keyspace, new side's keyspace).
    pub fn sides(&self, forward: bool) -> (&str, &str) {
        if forward {
            (&self.keyspace, self.target())
        } else {
            (self.target(), &self.keyspace)
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn key(name: &str) -> String {
    format!("workflows/{name}")
}

/// A workflow as read, with the revision to compare-and-swap against.
pub struct Stored {
    pub doc: WorkflowDoc,
    pub revision: i64,
}

/// Reads a workflow.
pub async fn load(store: &Store, name: &str) -> Result<Stored> {
    let e = store
        .get(&key(name))
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| anyhow!("no workflow {name:?} (shardctl reshard list shows them)"))?;
    let doc = serde_json::from_slice(&e.value)
        .map_err(|err| anyhow!("workflow {name:?} cannot be read: {err}"))?;
    Ok(Stored {
        doc,
        revision: e.mod_revision,
    })
}

/// Every workflow of the cluster.
pub async fn list(store: &Store) -> Result<Vec<WorkflowDoc>> {
    let loaded = store.load().await.map_err(anyhow::Error::new)?;
    Ok(loaded
        .entries
        .iter()
        .filter(|e| e.key.starts_with("workflows/") && e.key.matches('/').count() == 1)
        .filter_map(|e| serde_json::from_slice(&e.value).ok())
        .collect())
}

impl Stored {
    /// Writes the document back (compare-and-swap: only the lock holder writes it).
    pub async fn save(&mut self, store: &Store) -> Result<()> {
        self.doc.updated_ms = now_ms();
        let w = Write::Put {
            key: key(&self.doc.name),
            value: serde_json::to_vec_pretty(&self.doc)?,
            expect: Expect::Revision(self.revision),
        };
        match store.commit(&[w]).await {
            Ok(rev) => {
                self.revision = rev;
                Ok(())
            }
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("cannot save workflow {}", self.doc.name)))
            }
        }
    }

    /// Records what happened and saves.
    pub async fn note(&mut self, store: &Store, message: impl Into<String>) -> Result<()> {
        let m = message.into();
        tracing::info!(workflow = %self.doc.name, "{m}");
        self.doc.message = m;
        self.save(store).await
    }
}
