//! INSERT ... SELECT.
//!
//! When the target is sharded and every row the SELECT produces provably belongs to the
//! shard that produces it (the value for the target's sharding column is the source
//! table's own sharding column, with the same kind of vindex) the whole statement goes to
//! the SELECT's shards as written: one statement per shard, as on one server. Otherwise
//! the proxy runs the SELECT (any shape the planner answers, in any keyspace), holds its
//! rows (bounded by `session.max_merge_rows`) and inserts them where they belong, in
//! batches, through the ordinary INSERT machinery (sequences, lookup vindexes, reference
//! tables everywhere), under the session's transaction.

use super::analysis::Scope;
use super::colocation::Colocation;
use super::edit::TextIndex;
use super::insert::insert_columns;
use super::plan::{Combine, Primitive, Query, Route, Target, WritePlan};
use super::values::placeholder_offsets;
use super::PlanContext;
use crate::error::ProxyError;
use crate::schema::TableSchema;
use serde::Serialize;
use shardgate_topology::{Keyspace, TableKind};
use sqlparser::ast::{Insert, OnInsert, SelectItem, SetExpr, Spanned, Statement};

/// Where the rows of a streamed INSERT ... SELECT go.
#[derive(Debug, Clone, Serialize)]
pub struct InsertSelectPlan {
    pub keyspace: String,
    pub table: String,
    /// `INSERT [IGNORE] INTO t (columns) VALUES ` (the auto-increment column first when
    /// the statement does not list it and a sequence fills it).
    pub prefix: String,
    /// ` ON DUPLICATE KEY UPDATE ...`, if any.
    pub suffix: String,
    pub placement: RowPlacement,
    /// The rows to insert.
    pub select: Box<Primitive>,
}

/// How each row finds its shard.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowPlacement {
    /// The only shard of an unsharded keyspace.
    Unsharded,
    /// A reference table: every row on every shard.
    Everywhere,
    /// A sharded table: by the value at `vindex_column` of each row (None: the sequence
    /// column, added first, whose values come from `sequence`).
    Sharded {
        vindex: String,
        vindex_column: Option<usize>,
        /// The sequence of the auto-increment column: (keyspace, table), with the column's
        /// position among the SELECT's columns (None: not selected, prepended).
        sequence: Option<((String, String), Option<usize>)>,
        /// Lookup vindexes the table owns, with their column's position.
        lookups: Vec<(String, Option<usize>)>,
    },
}

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

/// Plans an INSERT whose rows come from a query, into table `table_name` of keyspace `ks`.
pub fn plan(
    sql: &str,
    ins: &Insert,
    ks: &Keyspace,
    table_name: &str,
    ctx: &PlanContext,
) -> Result<Primitive, ProxyError> {
    let Some(source) = &ins.source else {
        return Err(unsupported("INSERT without VALUES"));
    };
    if ins.returning.is_some() {
        return Err(unsupported(
            "RETURNING in INSERT ... SELECT on a sharded keyspace",
        ));
    }
    if let Some(w) = &ks.routing.workflow {
        return Err(ProxyError::Resharding {
            keyspace: ks.name.clone(),
            workflow: w.clone(),
            what: "INSERT ... SELECT".into(),
        });
    }
    let table = ks
        .table(table_name)
        .ok_or_else(|| ProxyError::UnknownTable {
            keyspace: ks.name.clone(),
            table: table_name.to_string(),
        })?;
    let schema: Option<&TableSchema> = ctx.schema.table(&ks.name, table_name).map(|t| &**t);
    let columns = insert_columns(ins, ks, table, schema)?;
    let idx = TextIndex::new(sql);
    let ph = placeholder_offsets(sql);
    let fail = || unsupported("rewriting this INSERT ... SELECT");
    let (src_a, src_z) = idx.expr_range(source.span()).ok_or_else(fail)?;
    // The SELECT as a statement of its own, its placeholders numbered as in the whole.
    let select_sql = idx.slice_with_params(src_a, src_z, &ph);
    let select_stmt = match sqlparser::parser::Parser::parse_sql(
        &sqlparser::dialect::MySqlDialect {},
        &select_sql,
    ) {
        Ok(mut v) if v.len() == 1 => v.pop().expect("one statement"),
        _ => {
            return Err(unsupported(
                "this INSERT ... SELECT (its SELECT cannot be read alone)",
            ))
        }
    };
    let mut select = super::route_statement(&select_sql, &select_stmt, ctx)?;
    select.mark_rewritten();
    if let Some(p) = pushdown(
        sql,
        (&select_sql, &select_stmt),
        &select,
        ks,
        table,
        &columns,
        ctx,
    ) {
        return Ok(p);
    }
    let (ignore, on) = (ins.ignore, &ins.on);
    let suffix = match on {
        Some(OnInsert::DuplicateKeyUpdate(_)) => idx.slice_with_params(src_z, sql.len(), &ph),
        Some(_) => return Err(unsupported("ON CONFLICT")),
        None => String::new(),
    };
    let verb = if ins.replace_into {
        "REPLACE"
    } else {
        "INSERT"
    };
    let ignore = if ignore { " IGNORE" } else { "" };
    let quoted = |c: &str| format!("`{}`", c.replace('`', "``"));
    let mut list: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
    let placement = if !ks.sharded {
        RowPlacement::Unsharded
    } else if table.kind == TableKind::Reference {
        RowPlacement::Everywhere
    } else {
        let cv = table
            .primary_vindex()
            .ok_or_else(|| unsupported(format!("table {} has no primary vindex", table.name)))?;
        let vcol = cv
            .columns
            .first()
            .map(|c| c.to_ascii_lowercase())
            .unwrap_or_default();
        let auto = table.auto_increment.as_ref();
        let auto_col = auto.map(|a| a.column.to_ascii_lowercase());
        let auto_pos = auto_col
            .as_ref()
            .and_then(|a| columns.iter().position(|c| c == a));
        let prepended = auto.is_some() && auto_pos.is_none();
        if prepended {
            list.insert(
                0,
                quoted(&auto.map(|a| a.column.clone()).unwrap_or_default()),
            );
        }
        let vindex_column = columns.iter().position(|c| *c == vcol);
        if vindex_column.is_none() && auto_col.as_deref() != Some(vcol.as_str()) {
            return Err(ProxyError::WrongValue(format!(
                "INSERT into {} must give a value for its sharding column {vcol}",
                table.name
            )));
        }
        let lookups = table
            .column_vindexes
            .iter()
            .skip(1)
            .filter(|cv| {
                cv.vindex.lookup().is_some()
                    && cv.vindex.owner.as_deref() == Some(table.name.as_str())
            })
            .map(|cv| {
                let col = cv
                    .columns
                    .first()
                    .map(|c| c.to_ascii_lowercase())
                    .unwrap_or_default();
                (
                    cv.vindex.name.clone(),
                    columns.iter().position(|c| *c == col),
                )
            })
            .collect();
        RowPlacement::Sharded {
            vindex: cv.vindex.name.clone(),
            vindex_column,
            sequence: auto.map(|a| {
                (
                    (a.sequence_keyspace.clone(), a.sequence_table.clone()),
                    auto_pos,
                )
            }),
            lookups,
        }
    };
    // The bare name: each statement runs on a connection to the shard's database.
    let target = quoted(&table.name);
    Ok(Primitive::InsertSelect(Box::new(InsertSelectPlan {
        keyspace: ks.name.clone(),
        table: table.name.clone(),
        prefix: format!("{verb}{ignore} INTO {target} ({}) VALUES ", list.join(", ")),
        suffix,
        placement,
        select: Box::new(select),
    })))
}

/// The whole statement on the SELECT's shards, when each row stays on its shard: the
/// SELECT is one route sent as written, and the value for the target's sharding column is
/// a source table's own sharding column with the same kind of vindex.
fn pushdown(
    sql: &str,
    (select_sql, select_stmt): (&str, &Statement),
    select: &Primitive,
    ks: &Keyspace,
    table: &shardgate_topology::Table,
    columns: &[String],
    ctx: &PlanContext,
) -> Option<Primitive> {
    let Primitive::Route(r) = select else {
        return None;
    };
    if r.keyspace != ks.name || !ks.sharded || table.kind != TableKind::Sharded {
        return None;
    }
    // Sequences and lookup vindexes need the rows in the proxy.
    let owns_lookups = table.column_vindexes.iter().any(|cv| {
        cv.vindex.lookup().is_some() && cv.vindex.owner.as_deref() == Some(table.name.as_str())
    });
    if owns_lookups || table.auto_increment.is_some() {
        return None;
    }
    if !matches!(
        r.target,
        Target::Equal { .. } | Target::SameShard { .. } | Target::Scatter
    ) {
        return None;
    }
    let cv = table.primary_vindex()?;
    let vcol = cv.columns.first()?.to_ascii_lowercase();
    let vpos = columns.iter().position(|c| *c == vcol)?;
    let Statement::Query(q) = select_stmt else {
        return None;
    };
    let SetExpr::Select(s) = &*q.body else {
        return None;
    };
    if q.limit_clause.is_some() || s.distinct.is_some() {
        return None;
    }
    let schema = ctx.schema.keyspaces.get(&ks.name).map(|k| &**k);
    let scope = Scope::build(select_stmt, ks, schema).ok()?;
    let main: Vec<usize> = {
        let idx = TextIndex::new(select_sql);
        let co = Colocation::learn(select_stmt, &scope, &idx, &[]);
        co.main_tables().to_vec()
    };
    let source = match s.projection.get(vpos)? {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            scope.resolve_in(e, &main)?
        }
        SelectItem::Wildcard(_) if s.projection.len() == 1 && main.len() == 1 => {
            let t = &scope.tables[main[0]];
            (
                main[0],
                t.schema
                    .as_ref()?
                    .columns
                    .get(vpos)?
                    .name
                    .to_ascii_lowercase(),
            )
        }
        _ => return None,
    };
    let src = &scope.tables[source.0];
    let same_kind = src.vindex().map(|v| &v.kind) == Some(&cv.vindex.kind);
    if !src.is_sharded() || !same_kind || src.vindex_column().as_deref() != Some(&source.1) {
        return None;
    }
    Some(Primitive::Write(WritePlan {
        route: Route {
            keyspace: ks.name.clone(),
            target: r.target.clone(),
            query: Query::verbatim(sql),
        },
        combine: Combine::Sum,
        vschema: None,
        lookups: None,
    }))
}
