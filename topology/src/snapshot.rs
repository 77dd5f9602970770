//! A validated, immutable picture of the whole topology at one etcd revision.
//!
//! [`Snapshot::build`] takes every key under the cluster prefix and either returns a
//! snapshot in which every reference resolves and every keyspace's serving shards cover
//! its key space exactly, or the complete list of problems, each naming its key. Proxies
//! only ever swap in a snapshot that built cleanly.

use crate::docs::*;
use crate::keyrange::{check_partition, KeyRange, KeyspaceId};
use crate::vindex::Vindex;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One problem found while validating, tied to the etcd key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopoProblem {
    /// Key relative to the cluster prefix, e.g. `keyspaces/customer/routing`.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for TopoProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// All problems of a rejected topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopoProblems(pub Vec<TopoProblem>);

impl fmt::Display for TopoProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopoProblems {}

/// A shard as the proxy uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub name: String,
    pub range: KeyRange,
    pub primary: String,
    pub database: String,
    pub state: ShardState,
}

/// How a table is distributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// Rows spread by the primary vindex.
    Sharded,
    /// A full copy on every shard: reads go to one, writes to all.
    Reference,
    /// A sequence backing table (unsharded keyspaces).
    Sequence,
    /// A table of an unsharded keyspace.
    Unsharded,
}

/// A column (or columns) with the vindex that maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnVindex {
    pub columns: Vec<String>,
    pub vindex: Arc<Vindex>,
}

/// A table's routing facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub kind: TableKind,
    /// The first is the primary vindex (decides the shard); the rest are secondary.
    pub column_vindexes: Vec<ColumnVindex>,
    /// (column, sequence keyspace, sequence table).
    pub auto_increment: Option<AutoIncrement>,
    /// Pinned tables live at one keyspace id.
    pub pinned: Option<KeyspaceId>,
}

/// Where an auto-increment column's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoIncrement {
    pub column: String,
    pub sequence_keyspace: String,
    pub sequence_table: String,
}

impl Table {
    pub fn primary_vindex(&self) -> Option<&ColumnVindex> {
        self.column_vindexes.first()
    }
}

/// A keyspace: its VSchema, shards and routing, resolved.
#[derive(Debug, Clone)]
pub struct Keyspace {
    pub name: String,
    pub doc: KeyspaceDoc,
    pub sharded: bool,
    pub vindexes: BTreeMap<String, Arc<Vindex>>,
    pub tables: BTreeMap<String, Arc<Table>>,
    pub shards: BTreeMap<String, Shard>,
    pub routing: RoutingDoc,
    /// The serving shards, ordered by key range.
    pub serving: Vec<Shard>,
}

impl Keyspace {
    /// The serving shard whose range holds `id`.
    pub fn shard_for(&self, id: &[u8]) -> Option<&Shard> {
        self.serving.iter().find(|s| s.range.contains(id))
    }

    /// Looks a table up by name (MySQL table names are case-sensitive on Linux).
    pub fn table(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    /// The only serving shard of an unsharded keyspace.
    pub fn single_shard(&self) -> Option<&Shard> {
        if self.serving.len() == 1 {
            self.serving.first()
        } else {
            None
        }
    }
}

/// The validated topology.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The etcd revision this snapshot was read at.
    pub revision: i64,
    pub keyspaces: BTreeMap<String, Arc<Keyspace>>,
    pub proxies: BTreeMap<String, ProxyDoc>,
    pub workflows: BTreeMap<String, serde_json::Value>,
    /// Schema change counters by keyspace (`schema/<ks>`): a proxy that ran DDL bumps its
    /// keyspace's counter so every proxy re-reads that keyspace's schema.
    pub schema_versions: BTreeMap<String, u64>,
    /// Routing rules (`routing_rules`): (keyspace, table) as clients name it, to the
    /// keyspace where the table lives now.
    pub routing_rules: BTreeMap<(String, String), String>,
    /// A fingerprint of the routing rules and their `version` (see
    /// `RoutingRulesDoc::version`), 0 without a rules document: it changes with every
    /// write of the rules, so proxies can tell one routing period from another.
    pub routing_rules_epoch: u64,
    /// Client accounts kept in etcd (`users/<name>`), by name.
    pub users: BTreeMap<String, Arc<shardgate_config::UserConfig>>,
}

/// Where a key points, parsed from its path under the cluster prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPath {
    Keyspace(String),
    Shard(String, String),
    Routing(String),
    Proxy(String),
    Workflow(String),
    /// The lease-backed lock a resharding controller holds while it drives a workflow.
    WorkflowLock(String),
    /// A two-phase-commit decision (written by proxies; not part of the routing model).
    TwoPc(String),
    /// A keyspace's schema change counter (written by proxies after DDL).
    Schema(String),
    /// A transaction waiting for a lock (`waits/<proxy>/<session>`, leased, written by
    /// proxies for cross-shard deadlock detection; not part of the routing model).
    LockWait(String, String),
    /// Routing rules: tables clients name in one keyspace that live in another.
    RoutingRules,
    /// A client account (`users/<name>`, written by `shardctl user add`): hashes, role,
    /// keyspaces.
    User(String),
}

/// A valid keyspace, table or workflow name: letters, digits, `_` and `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl KeyPath {
    pub fn parse(key: &str) -> Result<KeyPath, String> {
        let parts: Vec<&str> = key.split('/').collect();
        let name = |s: &str| -> Result<String, String> {
            if valid_name(s) || s.contains('-') && KeyRange::parse(s).is_ok() {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "{s:?} is not a valid name (letters, digits, '_', '-')"
                ))
            }
        };
        match parts.as_slice() {
            ["routing_rules"] => Ok(KeyPath::RoutingRules),
            ["keyspaces", ks] => Ok(KeyPath::Keyspace(name(ks)?)),
            ["keyspaces", ks, "routing"] => Ok(KeyPath::Routing(name(ks)?)),
            ["keyspaces", ks, "shards", shard] => Ok(KeyPath::Shard(name(ks)?, shard.to_string())),
            ["proxies", id] => Ok(KeyPath::Proxy(id.to_string())),
            ["workflows", w] => Ok(KeyPath::Workflow(name(w)?)),
            ["workflows", w, "lock"] => Ok(KeyPath::WorkflowLock(name(w)?)),
            ["twopc", g] => Ok(KeyPath::TwoPc(g.to_string())),
            ["schema", ks] => Ok(KeyPath::Schema(name(ks)?)),
            ["waits", proxy, session] => Ok(KeyPath::LockWait(proxy.to_string(), session.to_string())),
            ["users", user] if !user.is_empty() => Ok(KeyPath::User(user.to_string())),
            _ => Err("unknown key (expected keyspaces/<ks>, keyspaces/<ks>/shards/<shard>, keyspaces/<ks>/routing, proxies/<id>, workflows/<name>, schema/<ks>, users/<name> or routing_rules)".to_string()),
        }
    }

    /// The key relative to the cluster prefix.
    pub fn key(&self) -> String {
        match self {
            KeyPath::Keyspace(k) => format!("keyspaces/{k}"),
            KeyPath::Shard(k, s) => format!("keyspaces/{k}/shards/{s}"),
            KeyPath::Routing(k) => format!("keyspaces/{k}/routing"),
            KeyPath::Proxy(p) => format!("proxies/{p}"),
            KeyPath::Workflow(w) => format!("workflows/{w}"),
            KeyPath::WorkflowLock(w) => format!("workflows/{w}/lock"),
            KeyPath::TwoPc(g) => format!("twopc/{g}"),
            KeyPath::Schema(k) => format!("schema/{k}"),
            KeyPath::LockWait(p, s) => format!("waits/{p}/{s}"),
            KeyPath::RoutingRules => "routing_rules".to_string(),
            KeyPath::User(u) => format!("users/{u}"),
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
    problems: &mut Vec<TopoProblem>,
) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(TopoProblem {
                key: key.to_string(),
                problem: format!("invalid document: {e}"),
            });
            None
        }
    }
}

impl Snapshot {
    /// Validates every entry (key relative to the prefix, raw value) as one topology.
    pub fn build<'a>(
        revision: i64,
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Snapshot, TopoProblems> {
        let mut problems = Vec::new();
        let mut ks_docs: BTreeMap<String, KeyspaceDoc> = BTreeMap::new();
        let mut shard_docs: BTreeMap<String, BTreeMap<String, ShardDoc>> = BTreeMap::new();
        let mut routing_docs: BTreeMap<String, RoutingDoc> = BTreeMap::new();
        let mut rules_doc: Option<RoutingRulesDoc> = None;
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for (key, value) in entries {
            let path = match KeyPath::parse(key) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(TopoProblem {
                        key: key.to_string(),
                        problem: e,
                    });
                    continue;
                }
            };
            match path {
                KeyPath::Keyspace(ks) => {
                    if let Some(d) = parse_json(key, value, &mut problems) {
                        ks_docs.insert(ks, d);
                    }
                }
                KeyPath::Shard(ks, shard) => {
                    if let Some(d) = parse_json(key, value, &mut problems) {
                        shard_docs.entry(ks).or_default().insert(shard, d);
                    }
                }
                KeyPath::Routing(ks) => {
                    if let Some(d) = parse_json(key, value, &mut problems) {
                        routing_docs.insert(ks, d);
                    }
                }
                KeyPath::Proxy(id) => {
                    // Registrations are written by proxies; a bad one is not fatal.
                    if let Ok(d) = serde_json::from_slice::<ProxyDoc>(value) {
                        snapshot.proxies.insert(id, d);
                    }
                }
                KeyPath::Workflow(w) => {
                    if let Some(d) = parse_json(key, value, &mut problems) {
                        snapshot.workflows.insert(w, d);
                    }
                }
                KeyPath::Schema(ks) => {
                    // Written by proxies; a bad one is not fatal.
                    let version = serde_json::from_slice::<serde_json::Value>(value)
                        .ok()
                        .and_then(|v| v.get("version").and_then(|n| n.as_u64()))
                        .unwrap_or(0);
                    snapshot.schema_versions.insert(ks, version);
                }
                KeyPath::RoutingRules => rules_doc = parse_json(key, value, &mut problems),
                KeyPath::User(name) => {
                    let Some(u) =
                        parse_json::<shardgate_config::UserConfig>(key, value, &mut problems)
                    else {
                        continue;
                    };
                    let problem = if u.name != name {
                        Some(format!(
                            "the document names user {:?}, the key {name:?}",
                            u.name
                        ))
                    } else {
                        u.check().err()
                    };
                    match problem {
                        Some(problem) => problems.push(TopoProblem {
                            key: key.to_string(),
                            problem,
                        }),
                        None => {
                            snapshot.users.insert(name, Arc::new(u));
                        }
                    }
                }
                KeyPath::TwoPc(_) | KeyPath::WorkflowLock(_) | KeyPath::LockWait(..) => {}
            }
        }
        for ks in shard_docs.keys().chain(routing_docs.keys()) {
            if !ks_docs.contains_key(ks) {
                problems.push(TopoProblem {
                    key: format!("keyspaces/{ks}"),
                    problem:
                        "shards or routing exist for this keyspace but its document is missing"
                            .into(),
                });
            }
        }
        let sequences = sequence_tables(&ks_docs);
        for (name, doc) in &ks_docs {
            let shards = shard_docs.remove(name).unwrap_or_default();
            let routing = routing_docs.remove(name);
            if let Some(ks) = build_keyspace(name, doc, shards, routing, &sequences, &mut problems)
            {
                snapshot.keyspaces.insert(name.clone(), Arc::new(ks));
            }
        }
        if let Some(doc) = &rules_doc {
            snapshot.routing_rules = rules::check(doc, &ks_docs, &mut problems);
            snapshot.routing_rules_epoch = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                snapshot.routing_rules.hash(&mut h);
                doc.version.hash(&mut h);
                h.finish() | 1
            };
        }
        if problems.is_empty() {
            Ok(snapshot)
        } else {
            Err(TopoProblems(problems))
        }
    }

    pub fn keyspace(&self, name: &str) -> Option<&Arc<Keyspace>> {
        self.keyspaces.get(name)
    }

    /// Where table `table`, named in keyspace `keyspace`, lives when a routing rule moved
    /// it (`None`: where it is named).
    pub fn routed(&self, keyspace: &str, table: &str) -> Option<&str> {
        if self.routing_rules.is_empty() {
            return None;
        }
        self.routing_rules
            .get(&(keyspace.to_string(), table.to_string()))
            .map(String::as_str)
    }

    /// Routing versions of every keyspace (what a proxy reports as applied).
    pub fn routing_versions(&self) -> BTreeMap<String, u64> {
        self.keyspaces
            .iter()
            .map(|(k, v)| (k.clone(), v.routing.version))
            .collect()
    }
}

/// (keyspace, table) of every sequence table, for resolving `auto_increment`.
fn sequence_tables(docs: &BTreeMap<String, KeyspaceDoc>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (ks, d) in docs {
        for (t, td) in &d.tables {
            if td.table_type == "sequence" {
                out.push((ks.clone(), t.clone()));
            }
        }
    }
    out
}

fn build_keyspace(
    name: &str,
    doc: &KeyspaceDoc,
    shard_docs: BTreeMap<String, ShardDoc>,
    routing: Option<RoutingDoc>,
    sequences: &[(String, String)],
    problems: &mut Vec<TopoProblem>,
) -> Option<Keyspace> {
    let before = problems.len();
    let ks_key = format!("keyspaces/{name}");
    let mut fail = |key: &str, problem: String| {
        problems.push(TopoProblem {
            key: key.to_string(),
            problem,
        })
    };

    // Vindexes.
    let mut vindexes = BTreeMap::new();
    for (vname, v) in &doc.vindexes {
        if !doc.sharded {
            fail(
                &ks_key,
                format!("vindex {vname:?} declared in an unsharded keyspace"),
            );
            continue;
        }
        match Vindex::from_spec(vname, &v.vindex_type, &v.params, &v.owner) {
            Ok(vx) => {
                vindexes.insert(vname.clone(), Arc::new(vx));
            }
            Err(e) => fail(&ks_key, e),
        }
    }
    if let Some(dv) = &doc.default_vindex {
        if !doc.vindexes.contains_key(dv) {
            fail(
                &ks_key,
                format!("default_vindex {dv:?} is not declared in vindexes"),
            );
        }
    }

    // Tables.
    let mut tables = BTreeMap::new();
    for (tname, t) in &doc.tables {
        let kind = match (t.table_type.as_str(), doc.sharded) {
            ("", true) => TableKind::Sharded,
            ("", false) => TableKind::Unsharded,
            ("reference", _) => TableKind::Reference,
            ("sequence", false) => TableKind::Sequence,
            ("sequence", true) => {
                fail(
                    &ks_key,
                    format!("table {tname:?}: sequence tables must be in an unsharded keyspace"),
                );
                continue;
            }
            (other, _) => {
                fail(&ks_key, format!("table {tname:?}: unknown table type {other:?} (expected \"\", \"reference\" or \"sequence\")"));
                continue;
            }
        };
        let mut cvs = Vec::new();
        for cv in &t.column_vindexes {
            if !cv.column.is_empty() && !cv.columns.is_empty() {
                fail(
                    &ks_key,
                    format!("table {tname:?}: column and columns are mutually exclusive"),
                );
                continue;
            }
            let cols = cv.column_names();
            if cols.is_empty() {
                fail(
                    &ks_key,
                    format!("table {tname:?}: a column vindex needs column or columns"),
                );
                continue;
            }
            match vindexes.get(&cv.name) {
                Some(v) => cvs.push(ColumnVindex {
                    columns: cols,
                    vindex: Arc::clone(v),
                }),
                None => {
                    if doc.vindexes.contains_key(&cv.name) {
                        continue; // the vindex itself was already reported
                    }
                    fail(
                        &ks_key,
                        format!(
                            "table {tname:?} names vindex {:?}, which is not declared in vindexes",
                            cv.name
                        ),
                    );
                }
            }
        }
        if kind == TableKind::Sharded && t.pinned.is_none() {
            match cvs.first() {
                None if t.column_vindexes.is_empty() => {
                    fail(&ks_key, format!("table {tname:?} has no column_vindexes (a sharded table needs a primary vindex)"));
                }
                Some(p) if !p.vindex.is_functional() => {
                    fail(&ks_key, format!("table {tname:?}: the primary vindex {:?} must be computable from the column (not a lookup)", p.vindex.name));
                }
                Some(p) if p.columns.len() != 1 => {
                    fail(
                        &ks_key,
                        format!(
                            "table {tname:?}: the primary vindex must be on exactly one column"
                        ),
                    );
                }
                _ => {}
            }
        }
        if !doc.sharded && !t.column_vindexes.is_empty() {
            fail(
                &ks_key,
                format!("table {tname:?}: column_vindexes in an unsharded keyspace"),
            );
        }
        let pinned = match &t.pinned {
            Some(h) => match KeyspaceId::from_hex(h) {
                Some(id) => Some(id),
                None => {
                    fail(&ks_key, format!("table {tname:?}: pinned {h:?} is not hex"));
                    None
                }
            },
            None => None,
        };
        let auto_increment = match &t.auto_increment {
            None => None,
            Some(ai) => {
                let found: Vec<&(String, String)> = match ai.sequence.split_once('.') {
                    Some((k, s)) => sequences
                        .iter()
                        .filter(|(sk, st)| sk == k && st == s)
                        .collect(),
                    None => sequences
                        .iter()
                        .filter(|(_, st)| st == &ai.sequence)
                        .collect(),
                };
                match found.as_slice() {
                    [(k, s)] => Some(AutoIncrement {
                        column: ai.column.clone(),
                        sequence_keyspace: k.clone(),
                        sequence_table: s.clone(),
                    }),
                    [] => {
                        fail(&ks_key, format!("table {tname:?}: auto_increment sequence {:?} is not a sequence table of any unsharded keyspace", ai.sequence));
                        None
                    }
                    _ => {
                        fail(&ks_key, format!("table {tname:?}: auto_increment sequence {:?} is ambiguous; qualify it as keyspace.table", ai.sequence));
                        None
                    }
                }
            }
        };
        tables.insert(
            tname.clone(),
            Arc::new(Table {
                name: tname.clone(),
                kind,
                column_vindexes: cvs,
                auto_increment,
                pinned,
            }),
        );
    }

    // Shards.
    let mut shards = BTreeMap::new();
    for (sname, sd) in shard_docs {
        let key = format!("keyspaces/{name}/shards/{sname}");
        let range = match KeyRange::parse(&sname) {
            Ok(r) => r,
            Err(e) => {
                fail(&key, e);
                continue;
            }
        };
        if sd.primary.is_empty() || !sd.primary.contains(':') {
            fail(&key, format!("primary {:?} must be host:port", sd.primary));
        }
        if sd.database.is_empty() {
            fail(&key, "database must not be empty".into());
        }
        if !doc.sharded && !range.is_full() {
            fail(
                &key,
                format!("unsharded keyspace {name:?} can only have the shard \"-\" (or \"0\")"),
            );
        }
        shards.insert(
            sname.clone(),
            Shard {
                name: sname,
                range,
                primary: sd.primary,
                database: sd.database,
                state: sd.state,
            },
        );
    }

    // Routing.
    let routing_key = format!("keyspaces/{name}/routing");
    let routing = routing.unwrap_or_else(|| RoutingDoc {
        version: 0,
        serving: shards
            .values()
            .filter(|s| s.state == ShardState::Ready)
            .map(|s| s.name.clone())
            .collect(),
        ..RoutingDoc::default()
    });
    let mut serving = Vec::new();
    for s in &routing.serving {
        match shards.get(s) {
            Some(sh) => serving.push(sh.clone()),
            None => fail(
                &routing_key,
                format!("serving shard {s:?} has no shard document"),
            ),
        }
    }
    if !serving.is_empty() && serving.len() == routing.serving.len() {
        let ranges: Vec<KeyRange> = serving.iter().map(|s| s.range.clone()).collect();
        if let Err(e) = check_partition(&KeyRange::full(), &ranges) {
            fail(&routing_key, format!("serving shards: {e}"));
        }
    }
    for dw in &routing.dual_write {
        let mut from = Vec::new();
        let mut to = Vec::new();
        for (list, out) in [(&dw.from, &mut from), (&dw.to, &mut to)] {
            for s in list.iter() {
                match shards.get(s) {
                    Some(sh) => out.push(sh.range.clone()),
                    None => fail(
                        &routing_key,
                        format!("dual_write names unknown shard {s:?}"),
                    ),
                }
            }
        }
        if from.len() == dw.from.len() && to.len() == dw.to.len() && !from.is_empty() {
            if let Some(whole) = union_range(&from) {
                if let Err(e) = check_partition(&whole, &to) {
                    fail(
                        &routing_key,
                        format!("dual_write targets do not cover the sources exactly: {e}"),
                    );
                }
            } else {
                fail(
                    &routing_key,
                    "dual_write sources are not one contiguous range".into(),
                );
            }
        }
    }
    if let Some(wb) = &routing.write_buffer {
        for s in &wb.shards {
            if !shards.contains_key(s) {
                fail(
                    &routing_key,
                    format!("write_buffer names unknown shard {s:?}"),
                );
            }
        }
    }
    serving.sort_by(|a, b| crate::keyrange::compare_ids(a.range.start(), b.range.start()));
    if problems.len() != before {
        return None;
    }
    Some(Keyspace {
        name: name.to_string(),
        doc: doc.clone(),
        sharded: doc.sharded,
        vindexes,
        tables,
        shards,
        routing,
        serving,
    })
}

/// The single range covered by contiguous `ranges`, if they are contiguous.
pub fn union_range(ranges: &[KeyRange]) -> Option<KeyRange> {
    let mut sorted: Vec<&KeyRange> = ranges.iter().collect();
    sorted.sort_by(|a, b| crate::keyrange::compare_ids(a.start(), b.start()));
    let first = sorted.first()?;
    let last = sorted.last()?;
    let whole = KeyRange::new(first.start().to_vec(), last.end().to_vec())?;
    check_partition(&whole, ranges).ok()?;
    Some(whole)
}

mod rules;
#[cfg(test)]
mod tests;
