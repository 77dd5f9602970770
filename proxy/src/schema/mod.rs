//! Schema tracking: every proxy knows each table's columns (name, order, type, nullability,
//! default, generated, auto-increment), primary key and unique keys, in every keyspace.
//!
//! Where it lives: in the shards themselves. A proxy reads `information_schema` from one
//! serving shard per keyspace (`load.rs`) at start, after every topology change, after DDL
//! it runs, when etcd's per-keyspace change counter (`schema/<keyspace>`) moves (the proxy
//! that ran the DDL bumps it, so every proxy re-reads within a watch round trip), and every
//! `session.schema_refresh_s` (DDL run directly on a shard is noticed then). The planner
//! reads an immutable [`Schemas`] snapshot; every change bumps its generation, which is
//! part of the plan cache key, so no plan outlives the schema it was made for.
//!
//! What it powers: INSERT without a column list (the planner writes the list out, so a
//! stale schema can only make the statement fail, never put a value in the wrong column),
//! column resolution for co-location (`c_w_id = w_id` across two tables), `SELECT *`
//! expansion where the planner needs the columns, and auto-registration of tables.

pub mod load;
pub mod tracker;

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The schema of every keyspace, as one immutable snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Schemas {
    /// Bumped on every change (part of the plan cache key).
    pub generation: u64,
    pub keyspaces: HashMap<String, Arc<KeyspaceSchema>>,
}

impl Schemas {
    /// The schema of `table` in `keyspace` (names compared case-insensitively).
    pub fn table(&self, keyspace: &str, table: &str) -> Option<&Arc<TableSchema>> {
        self.keyspaces
            .get(keyspace)?
            .tables
            .get(&table.to_ascii_lowercase())
    }

    /// Whether `keyspace` has been read at all (an unknown table in a read keyspace is a
    /// real unknown table; in an unread one, the schema is simply not there yet).
    pub fn knows(&self, keyspace: &str) -> bool {
        self.keyspaces.contains_key(keyspace)
    }
}

/// The tables of one keyspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyspaceSchema {
    /// By lower-cased table name.
    pub tables: HashMap<String, Arc<TableSchema>>,
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableSchema {
    pub name: String,
    /// In table order.
    pub columns: Vec<ColumnSchema>,
    /// Column names of the primary key, in key order (empty: none).
    pub primary_key: Vec<String>,
    /// Unique keys other than the primary key, each as its column names.
    pub unique_keys: Vec<Vec<String>>,
}

impl TableSchema {
    /// Position and schema of a column (case-insensitive).
    pub fn column(&self, name: &str) -> Option<(usize, &ColumnSchema)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.column(name).is_some()
    }
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ColumnSchema {
    pub name: String,
    /// `int`, `varchar`, `decimal`... (lower case).
    pub data_type: String,
    /// The full type: `varchar(32)`, `int(10) unsigned`...
    pub column_type: String,
    pub nullable: bool,
    /// The default as information_schema shows it (None: no default).
    pub default: Option<String>,
    /// A generated (virtual or stored) column: values cannot be written.
    pub generated: bool,
    pub auto_increment: bool,
    pub charset: Option<String>,
    pub collation: Option<String>,
}

/// A schema from `(keyspace, table, columns, primary key)` lists (every column a
/// nullable `int`): for tests and fuzzing, where no shard can be read.
#[doc(hidden)]
pub fn for_tests(spec: &[(&str, &str, &[&str], &[&str])]) -> Schemas {
    let mut out = Schemas {
        generation: 1,
        ..Schemas::default()
    };
    for (ks, table, columns, pk) in spec {
        let entry = out.keyspaces.entry(ks.to_string()).or_default();
        let ks = Arc::make_mut(entry);
        ks.tables.insert(
            table.to_ascii_lowercase(),
            Arc::new(TableSchema {
                name: table.to_string(),
                columns: columns
                    .iter()
                    .map(|c| ColumnSchema {
                        name: c.to_string(),
                        data_type: "int".into(),
                        column_type: "int(11)".into(),
                        nullable: true,
                        ..ColumnSchema::default()
                    })
                    .collect(),
                primary_key: pk.iter().map(|c| c.to_string()).collect(),
                unique_keys: Vec::new(),
            }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        let t = TableSchema {
            name: "Customer".into(),
            columns: vec![
                ColumnSchema {
                    name: "c_id".into(),
                    ..Default::default()
                },
                ColumnSchema {
                    name: "C_W_ID".into(),
                    ..Default::default()
                },
            ],
            primary_key: vec!["c_w_id".into(), "c_id".into()],
            unique_keys: vec![],
        };
        assert_eq!(t.column("c_w_id").map(|c| c.0), Some(1));
        let mut ks = KeyspaceSchema::default();
        ks.tables.insert("customer".into(), Arc::new(t));
        let mut s = Schemas::default();
        s.keyspaces.insert("tpcc".into(), Arc::new(ks));
        assert!(s.table("tpcc", "CUSTOMER").is_some());
        assert!(s.table("tpcc", "nope").is_none());
        assert!(s.knows("tpcc") && !s.knows("other"));
    }
}
