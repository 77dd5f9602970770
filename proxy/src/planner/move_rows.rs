//! An UPDATE that changes a sharded table's sharding column: the rows it matches may have
//! to move to another shard (Vitess does the same: delete on the old shard, insert on the
//! new one).
//!
//! The new value must be a literal or a placeholder, so every matched row goes to one
//! known shard. At execution ([`crate::engine`]) the proxy reads the matched rows with
//! their primary keys under `FOR UPDATE`, copies the rows that live elsewhere to the new
//! shard as they are, runs the UPDATE as written on the new shard for every matched key
//! (so MySQL itself computes the new row: assignment order, `ON UPDATE` columns,
//! generated columns, triggers, the affected-row count), deletes the old copies, and
//! repoints owned lookup vindexes. All of it runs in one transaction (the session's, or
//! one opened for the statement and committed before the answer), atomic under `twopc`.

use super::analysis::TableUse;
use super::edit::TextIndex;
use super::plan::{Route, Target};
use super::values::{value_of, ValueExpr};
use crate::error::ProxyError;
use serde::Serialize;
use shardgate_topology::Keyspace;
use sqlparser::ast::{Spanned, TableFactor, Update};

/// Moving the rows an UPDATE of the sharding column matches.
#[derive(Debug, Clone, Serialize)]
pub struct MovePlan {
    pub keyspace: String,
    pub table: String,
    /// Reads the matched rows, locking them: the primary key, then every stored column.
    pub select: Route,
    /// The primary key columns (the first columns `select` returns).
    pub key: Vec<String>,
    /// The stored (not generated) columns, in table order (after the key in `select`).
    pub stored: Vec<String>,
    /// The primary vindex, and the sharding column's new value.
    pub vindex: String,
    pub new_value: ValueExpr,
    /// `UPDATE <table> SET <assignments as written>`; ` WHERE (<key>) IN (...)` is added
    /// per execution.
    pub update: String,
    /// Owned lookup vindexes: (vindex, position of its column in `stored`, the new value
    /// when the UPDATE assigns one).
    pub lookups: Vec<(String, usize, Option<ValueExpr>)>,
}

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The last part of an assignment target (`t.col` -> `col`).
pub fn assigned_column(a: &sqlparser::ast::Assignment) -> String {
    let t = a.target.to_string();
    t.rsplit('.')
        .next()
        .unwrap_or(&t)
        .trim_matches('`')
        .to_ascii_lowercase()
}

/// Plans the move for `u`, which assigns `table`'s sharding column; `target` is where the
/// UPDATE's WHERE clause routes.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    sql: &str,
    u: &Update,
    table: &TableUse,
    ks: &Keyspace,
    target: &Target,
    idx: &TextIndex<'_>,
    ph: &[usize],
) -> Result<MovePlan, ProxyError> {
    let column = table.vindex_column().unwrap_or_default();
    let vindex = table
        .vindex()
        .map(|v| v.name.clone())
        .ok_or_else(|| ProxyError::Internal(format!("{} has no primary vindex", table.name)))?;
    let schema = table
        .schema
        .as_ref()
        .ok_or_else(|| ProxyError::SchemaUnknown {
            keyspace: ks.name.clone(),
            table: table.name.clone(),
        })?;
    if !u.table.joins.is_empty() {
        return Err(unsupported(format!(
            "changing the sharding column {column} in a multi-table UPDATE"
        )));
    }
    // The SET clause runs on the new shard: a subquery there would read that shard's rows.
    let subquery = u.assignments.iter().any(|a| {
        sqlparser::ast::visit_expressions(&a.value, |e| match e {
            sqlparser::ast::Expr::Subquery(_)
            | sqlparser::ast::Expr::Exists { .. }
            | sqlparser::ast::Expr::In {
                target: sqlparser::ast::InTarget::Subquery(_),
                ..
            } => std::ops::ControlFlow::Break(()),
            _ => std::ops::ControlFlow::Continue(()),
        })
        .is_break()
    });
    if subquery {
        return Err(unsupported(format!(
            "a subquery in the SET clause of an UPDATE that changes sharding column {column}"
        )));
    }
    if schema.primary_key.is_empty() {
        return Err(unsupported(format!(
            "changing the sharding column {column} of {}, which has no primary key (the proxy finds moved rows by it)",
            table.name
        )));
    }
    let assigned = u
        .assignments
        .iter()
        .filter(|a| assigned_column(a) == column)
        .collect::<Vec<_>>();
    let [assignment] = assigned.as_slice() else {
        return Err(unsupported(format!(
            "assigning sharding column {column} more than once"
        )));
    };
    let new_value = value_of(&assignment.value, idx, ph).ok_or_else(|| {
        unsupported(format!(
            "setting sharding column {column} of {} to an expression (use a literal or a placeholder: the proxy must know the row's new shard)",
            table.name
        ))
    })?;
    let stored: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !c.generated)
        .map(|c| c.name.clone())
        .collect();
    let mut lookups = Vec::new();
    for cv in table.table.column_vindexes.iter().skip(1) {
        let owned =
            cv.vindex.lookup().is_some() && cv.vindex.owner.as_deref() == Some(table.name.as_str());
        let Some(col) = cv.columns.first().filter(|_| owned) else {
            continue;
        };
        let pos = stored
            .iter()
            .position(|s| s.eq_ignore_ascii_case(col))
            .ok_or_else(|| ProxyError::SchemaUnknown {
                keyspace: ks.name.clone(),
                table: table.name.clone(),
            })?;
        let new = match u
            .assignments
            .iter()
            .find(|a| assigned_column(a).eq_ignore_ascii_case(col))
        {
            None => None,
            Some(a) => Some(value_of(&a.value, idx, ph).ok_or_else(|| {
                unsupported(format!(
                    "setting lookup column {col} to an expression (use a literal or a placeholder)"
                ))
            })?),
        };
        lookups.push((cv.vindex.name.clone(), pos, new));
    }

    let fail = || unsupported("this UPDATE's text (the proxy could not find its clauses)");
    let (set_start, _) = idx
        .range(u.assignments.first().ok_or_else(fail)?.span())
        .ok_or_else(fail)?;
    let (_, set_end) = idx
        .checked_expr_range(&u.assignments.last().ok_or_else(fail)?.value)
        .ok_or_else(fail)?;
    let alias = match &u.table.relation {
        TableFactor::Table { alias: Some(a), .. } => format!(" AS {}", quote(&a.name.value)),
        _ => String::new(),
    };
    let from = format!("{}{alias}", quote(&table.name));
    let update = format!(
        "UPDATE {from} SET {}",
        idx.slice_with_params(set_start, set_end, ph)
    );
    let (condition, tail) = match super::clauses::where_condition(sql) {
        Some((a, b)) => (
            format!(" WHERE {}", idx.slice_with_params(a, b, ph)),
            idx.slice_with_params(b, sql.len(), ph),
        ),
        None => (String::new(), String::new()),
    };
    let columns: Vec<String> = schema
        .primary_key
        .iter()
        .chain(&stored)
        .map(|c| quote(c))
        .collect();
    let select = format!(
        "SELECT {} FROM {from}{condition}{tail} FOR UPDATE",
        columns.join(", ")
    );
    let target = match target {
        Target::In { vindex, values, .. } => Target::In {
            vindex: vindex.clone(),
            values: values.clone(),
            split: false,
        },
        other => other.clone(),
    };
    Ok(MovePlan {
        keyspace: ks.name.clone(),
        table: table.name.clone(),
        select: Route {
            keyspace: ks.name.clone(),
            target,
            query: super::plan::Query::rewritten(&select),
        },
        key: schema.primary_key.clone(),
        stored,
        vindex,
        new_value,
        update,
        lookups,
    })
}
