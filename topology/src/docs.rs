//! The JSON documents stored in etcd, exactly as operators read and write them.
//!
//! Keyspace documents follow Vitess's VSchema JSON (`sharded`, `vindexes`, `tables`), plus
//! a few shardgate fields documented in docs/topology.md. Every struct rejects unknown
//! fields, so a typo is reported instead of silently ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `keyspaces/<ks>`: the keyspace's VSchema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceDoc {
    #[serde(default)]
    pub sharded: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vindexes: BTreeMap<String, VindexDoc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableDoc>,
    /// Vitess: keep this keyspace's tables out of unqualified global routing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_explicit_routing: bool,
    /// Vitess field, accepted for compatibility and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_key_mode: Option<String>,
    /// shardgate: CREATE TABLE on this (sharded) keyspace registers unknown tables in the
    /// VSchema automatically, sharded on their primary key by `default_vindex`.
    /// Default true; set false to require explicit VSchema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_vschema: Option<bool>,
    /// shardgate: the vindex used for auto-registered tables (created as `hash` if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_vindex: Option<String>,
    /// shardgate: the unsharded keyspace where sequences for auto-registered tables live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_keyspace: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A vindex declaration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VindexDoc {
    #[serde(rename = "type")]
    pub vindex_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// A table declaration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDoc {
    /// "" (a normal table), "reference" or "sequence".
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub table_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_vindexes: Vec<ColumnVindexDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_increment: Option<AutoIncrementDoc>,
    /// Vitess's column list; accepted (names and types are informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_list_authoritative: Option<bool>,
    /// Hex keyspace id the whole table lives at (Vitess pinned tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Reference tables: the `ks.table` they copy (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// shardgate: set when the table was registered by CREATE TABLE (DROP TABLE removes it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_registered: bool,
}

/// One vindex applied to a table's column(s). The first one is the primary vindex.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnVindexDoc {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub column: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    pub name: String,
}

impl ColumnVindexDoc {
    /// The column(s) this vindex reads.
    pub fn column_names(&self) -> Vec<String> {
        if !self.column.is_empty() {
            vec![self.column.clone()]
        } else {
            self.columns.clone()
        }
    }
}

/// The statements that create a sequence's backing table `table` (Vitess's format: one
/// row with id 0 holding the next id and the block size) on its unsharded keyspace's
/// shard, idempotently. Both the proxy (CREATE TABLE of an AUTO_INCREMENT table) and the
/// resharding controller (MoveTables) make sequences.
pub fn sequence_table_sql(table: &str) -> [String; 2] {
    let t = format!("`{}`", table.replace('`', "``"));
    [
        format!("CREATE TABLE IF NOT EXISTS {t} (id INT NOT NULL, next_id BIGINT, cache BIGINT, PRIMARY KEY (id)) COMMENT 'vitess_sequence'"),
        format!("INSERT IGNORE INTO {t} VALUES (0, 1, 1000)"),
    ]
}

/// `auto_increment`: which column gets ids from which sequence (`seq` or `ks.seq`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoIncrementDoc {
    pub column: String,
    pub sequence: String,
}

/// Life-cycle state of a shard's backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// A normal shard; it serves when the routing document lists it.
    #[default]
    Ready,
    /// Created for a resharding workflow; not serving yet.
    New,
    /// Taken out of service after resharding; kept until deleted.
    Retired,
}

/// `keyspaces/<ks>/shards/<shard>`: where one shard lives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardDoc {
    /// `host:port` of the primary MySQL/MariaDB server.
    pub primary: String,
    /// Database (schema) on that server holding this shard's tables.
    pub database: String,
    #[serde(default)]
    pub state: ShardState,
}

/// `keyspaces/<ks>/routing`: which shards serve now, and resharding rules in effect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingDoc {
    /// Bumped on every change; proxies report the version they applied.
    #[serde(default)]
    pub version: u64,
    /// Shards serving reads and writes; their key ranges must cover the keyspace exactly.
    pub serving: Vec<String>,
    /// Writes to rows in `from` shards' ranges are also applied to the `to` shard owning
    /// the row (resharding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dual_write: Vec<DualWriteDoc>,
    /// While set, writes touching these shards wait (cutover), up to `max_wait_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_buffer: Option<WriteBufferDoc>,
    /// The resharding workflow holding this keyspace (DDL is refused while set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

/// A dual-write rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DualWriteDoc {
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// A cutover write buffer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBufferDoc {
    /// Shards whose writes are held.
    pub shards: Vec<String>,
    /// Longest a write is held before it proceeds against the current routing.
    pub max_wait_ms: u64,
    /// When the buffer stops counting (unix ms; 0: never), so one left behind by a
    /// controller that died mid-cutover does not delay writes forever.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expires_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `proxies/<id>`: a live proxy's registration (lease-backed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyDoc {
    pub id: String,
    pub mysql_addr: String,
    pub http_addr: String,
    pub version: String,
    /// etcd revision of the topology snapshot in use.
    pub applied_revision: i64,
    /// Routing version per keyspace in use.
    #[serde(default)]
    pub routing_versions: BTreeMap<String, u64>,
    /// Unix time in milliseconds when the proxy started.
    pub started_ms: u64,
    /// TTL of the registration's lease: a controller waits this long after a registration
    /// disappears before it stops counting that proxy (it may not have noticed yet).
    #[serde(default)]
    pub lease_ttl_s: u64,
    /// The last topology error, if the newest etcd contents were rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_error: Option<String>,
}

/// `routing_rules`: tables that clients name in one keyspace but that live in another
/// (Vitess's routing rules, as MoveTables writes them). Each rule sends every statement
/// naming `from_table` (`ks.table`, or `table` while the session uses `ks`) to the one
/// `ks2.table` in `to_tables`; the table keeps its name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRulesDoc {
    #[serde(default)]
    pub rules: Vec<RoutingRuleDoc>,
    /// Counts the controller's writes of the rules: a MoveTables cutover, rollback and
    /// second cutover leave the same rules as the first, and proxies must still tell the
    /// periods apart (they drop the sequence ids they reserved in an earlier one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

/// One routing rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRuleDoc {
    /// `keyspace.table` as clients name it.
    pub from_table: String,
    /// Exactly one `keyspace.table` (same table name) where it lives.
    pub to_tables: Vec<String>,
}
