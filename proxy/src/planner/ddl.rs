//! DDL on a sharded keyspace: sent to every shard. CREATE TABLE for a table the VSchema
//! does not name registers it (sharded by the keyspace's default vindex on the first
//! column of its primary key, with a sequence when that column is AUTO_INCREMENT) unless
//! the keyspace sets `auto_vschema: false`; DROP TABLE removes what CREATE registered.

use super::plan::{Combine, Primitive, Query, Route, Target, WritePlan};
use crate::error::ProxyError;
use serde::Serialize;
use shardgate_topology::{Keyspace, Snapshot};
use sqlparser::ast::{ColumnOption, CreateTable, ObjectType, Statement, TableConstraint};

/// What a DDL statement changes in the VSchema once every shard ran it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum VschemaChange {
    /// Register `table`, sharded by `vindex` on `column`; with `sequence` (keyspace,
    /// table) created and wired when the column is AUTO_INCREMENT.
    Register {
        table: String,
        column: String,
        vindex: String,
        sequence: Option<(String, String)>,
    },
    /// Remove auto-registered tables (and the sequences created with them).
    Unregister { tables: Vec<String> },
}

fn last_ident(name: &sqlparser::ast::ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_default()
}

/// Plans a DDL statement on sharded keyspace `ks`.
pub fn plan_ddl(
    sql: &str,
    stmt: &Statement,
    ks: &Keyspace,
    snapshot: &Snapshot,
) -> Result<Primitive, ProxyError> {
    if let Some(w) = &ks.routing.workflow {
        return Err(ProxyError::Resharding {
            keyspace: ks.name.clone(),
            workflow: w.clone(),
            what: "DDL".into(),
        });
    }
    let vschema = match stmt {
        Statement::CreateTable(ct) => register(ct, ks, snapshot)?,
        Statement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } => {
            let tables: Vec<String> = names
                .iter()
                .map(last_ident)
                .filter(|t| ks.doc.tables.get(t).is_some_and(|d| d.auto_registered))
                .collect();
            (!tables.is_empty()).then_some(VschemaChange::Unregister { tables })
        }
        _ => None,
    };
    Ok(Primitive::Write(WritePlan {
        route: Route {
            keyspace: ks.name.clone(),
            target: Target::Scatter,
            query: Query::verbatim(sql),
        },
        combine: Combine::First,
        vschema,
        lookups: None,
    }))
}

/// DDL the parser cannot read but whose meaning is clear, sent to every shard as written
/// (no VSchema change).
pub fn plan_ddl_text(sql: &str, ks: &Keyspace) -> Result<Primitive, ProxyError> {
    if let Some(w) = &ks.routing.workflow {
        return Err(ProxyError::Resharding {
            keyspace: ks.name.clone(),
            workflow: w.clone(),
            what: "DDL".into(),
        });
    }
    Ok(Primitive::Write(WritePlan {
        route: Route {
            keyspace: ks.name.clone(),
            target: Target::Scatter,
            query: Query::verbatim(sql),
        },
        combine: Combine::First,
        vschema: None,
        lookups: None,
    }))
}

/// The table of `ALTER TABLE t DISABLE KEYS` / `ENABLE KEYS` (unqualified, as dumps
/// write it), which sqlparser does not read.
pub fn keys_toggle(sql: &str) -> Option<String> {
    let code = super::sqltext::strip_comments(sql);
    let words: Vec<&str> = code
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    match words.as_slice() {
        [alter, table, name, toggle, keys]
            if alter.eq_ignore_ascii_case("ALTER")
                && table.eq_ignore_ascii_case("TABLE")
                && (toggle.eq_ignore_ascii_case("DISABLE")
                    || toggle.eq_ignore_ascii_case("ENABLE"))
                && keys.eq_ignore_ascii_case("KEYS") =>
        {
            let bare = name.strip_prefix('`').and_then(|n| n.strip_suffix('`'));
            match bare {
                Some(b) if !b.contains('`') => Some(b.to_string()),
                None if name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$') =>
                {
                    Some(name.to_string())
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn register(
    ct: &CreateTable,
    ks: &Keyspace,
    snapshot: &Snapshot,
) -> Result<Option<VschemaChange>, ProxyError> {
    let table = last_ident(&ct.name);
    if ct.temporary {
        return Err(ProxyError::NotSupported(
            "temporary tables in a sharded keyspace".into(),
        ));
    }
    if ks.table(&table).is_some() {
        return Ok(None);
    }
    if ks.doc.auto_vschema == Some(false) {
        return Err(ProxyError::WrongValue(format!(
            "table {table} is not in the VSchema of keyspace {} (auto_vschema is off): add it with shardctl vschema apply first",
            ks.name
        )));
    }
    let mut pk: Vec<String> = Vec::new();
    let mut auto_increment = Vec::new();
    for c in &ct.columns {
        for o in &c.options {
            match &o.option {
                ColumnOption::PrimaryKey(_) => pk.push(c.name.value.clone()),
                ColumnOption::DialectSpecific(tokens)
                    if tokens
                        .iter()
                        .any(|t| t.to_string().eq_ignore_ascii_case("AUTO_INCREMENT")) =>
                {
                    auto_increment.push(c.name.value.clone())
                }
                _ => {}
            }
        }
    }
    for tc in &ct.constraints {
        if let TableConstraint::PrimaryKey(p) = tc {
            for ic in &p.columns {
                pk.push(ic.column.expr.to_string().trim_matches('`').to_string());
            }
        }
    }
    // A composite key shards by its first column (as Vitess does): rows sharing it, the
    // warehouse of TPC-C's tables say, stay together.
    let Some(column) = pk.first() else {
        return Err(ProxyError::NotSupported(format!(
            "registering table {table} automatically: it needs a primary key to shard by (or add it to the VSchema yourself)"
        )));
    };
    let vindex = match &ks.doc.default_vindex {
        Some(v) => v.clone(),
        None => ks
            .vindexes
            .iter()
            .find(|(_, v)| v.is_functional())
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "hash".to_string()),
    };
    let sequence = if auto_increment
        .iter()
        .any(|a| a.eq_ignore_ascii_case(column))
    {
        let seq_ks = ks
            .doc
            .sequence_keyspace
            .clone()
            .or_else(|| {
                snapshot
                    .keyspaces
                    .values()
                    .find(|k| !k.sharded && !k.serving.is_empty())
                    .map(|k| k.name.clone())
            })
            .ok_or_else(|| {
                ProxyError::WrongValue(format!(
                    "table {table} has an AUTO_INCREMENT sharding column but there is no unsharded keyspace to hold its sequence"
                ))
            })?;
        Some((seq_ks, format!("{table}_seq")))
    } else {
        None
    };
    Ok(Some(VschemaChange::Register {
        table,
        column: column.clone(),
        vindex,
        sequence,
    }))
}
