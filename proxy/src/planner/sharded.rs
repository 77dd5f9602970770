//! Statements on a sharded keyspace: dispatch by statement kind, and UPDATE / DELETE.

use super::analysis::{has_nonlocal_subquery, Scope};
use super::colocation::{placement, route_predicate, Colocation, Placement, RoutePredicate};
use super::edit::TextIndex;
use super::plan::{Combine, Primitive, Query, Route, Target, WritePlan};
use super::values::placeholder_offsets;
use crate::error::ProxyError;
use crate::schema::KeyspaceSchema;
use shardgate_topology::{Keyspace, Snapshot, TableKind};
use sqlparser::ast::{FromTable, Statement, TableFactor};

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

/// Plans a parsed statement whose tables are all in sharded keyspace `ks`.
pub fn plan(
    sql: &str,
    stmt: &Statement,
    ks: &Keyspace,
    snapshot: &Snapshot,
    schema: Option<&KeyspaceSchema>,
) -> Result<Primitive, ProxyError> {
    match stmt {
        Statement::Query(q) => super::select::plan_select(sql, stmt, q, ks, schema),
        Statement::Insert(ins) => {
            let name = ins.table.to_string();
            let tname = name.rsplit('.').next().unwrap_or(&name).trim_matches('`');
            let table = ks.table(tname).ok_or_else(|| ProxyError::UnknownTable {
                keyspace: ks.name.clone(),
                table: tname.to_string(),
            })?;
            match (&table.kind, &table.pinned) {
                (_, Some(id)) => Ok(route_all(
                    ks,
                    Target::KeyspaceId(id.hex()),
                    sql,
                    Combine::Sum,
                )),
                (TableKind::Reference, _) => {
                    Ok(route_all(ks, Target::Scatter, sql, Combine::First))
                }
                _ => Ok(Primitive::Insert(super::insert::plan_insert(
                    sql,
                    ins,
                    ks,
                    table,
                    schema.and_then(|s| s.tables.get(&tname.to_ascii_lowercase()).map(|t| &**t)),
                )?)),
            }
        }
        Statement::Update(_) | Statement::Delete(_) => plan_write(sql, stmt, ks, schema),
        Statement::CreateTable(_)
        | Statement::AlterTable(_)
        | Statement::Drop { .. }
        | Statement::CreateIndex(_)
        | Statement::Truncate(_)
        | Statement::CreateView(_)
        | Statement::AlterView(_)
        | Statement::RenameTable(_) => super::ddl::plan_ddl(sql, stmt, ks, snapshot),
        Statement::ExplainTable { .. }
        | Statement::Explain { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. } => Ok(Primitive::Route(Route {
            keyspace: ks.name.clone(),
            target: Target::AnyShard,
            query: Query::verbatim(sql),
        })),
        other => Err(unsupported(format!(
            "{} on sharded keyspace {}",
            statement_kind(other),
            ks.name
        ))),
    }
}

fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn route_all(ks: &Keyspace, target: Target, sql: &str, combine: Combine) -> Primitive {
    Primitive::Write(WritePlan {
        route: Route {
            keyspace: ks.name.clone(),
            target,
            query: Query::verbatim(sql),
        },
        combine,
        vschema: None,
        lookups: None,
    })
}

/// UPDATE / DELETE: routed by the sharding column like SELECT, else sent to every shard;
/// affected rows are summed (reference tables: every shard, first answer).
fn plan_write(
    sql: &str,
    stmt: &Statement,
    ks: &Keyspace,
    schema: Option<&KeyspaceSchema>,
) -> Result<Primitive, ProxyError> {
    let (selection, order_limit, target_table) = match stmt {
        Statement::Update(u) => {
            if u.from.is_some() {
                return Err(unsupported("UPDATE ... FROM on a sharded keyspace"));
            }
            let name = match &u.table.relation {
                TableFactor::Table { name, .. } => name.to_string(),
                _ => String::new(),
            };
            (
                u.selection.as_ref(),
                !u.order_by.is_empty() || u.limit.is_some(),
                name,
            )
        }
        Statement::Delete(d) => {
            let name = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
                    match t.first().map(|t| &t.relation) {
                        Some(TableFactor::Table { name, .. }) => name.to_string(),
                        _ => String::new(),
                    }
                }
            };
            if !d.tables.is_empty() || d.using.is_some() {
                return Err(unsupported("multi-table DELETE on a sharded keyspace"));
            }
            (
                d.selection.as_ref(),
                !d.order_by.is_empty() || d.limit.is_some(),
                name,
            )
        }
        _ => unreachable!("plan_write handles UPDATE and DELETE"),
    };
    let scope = Scope::build(stmt, ks, schema)?;
    let idx = TextIndex::new(sql);
    let ph = placeholder_offsets(sql);
    let co = Colocation::learn(stmt, &scope, &idx, &ph);
    let placed = placement(&scope, &co)?;
    let anchor = match &placed {
        Placement::Anywhere => None,
        Placement::Together { anchor } => *anchor,
        // The first sharded table is the one written (UPDATE/DELETE name it first).
        Placement::Pinned { .. } => scope.tables.iter().position(|t| t.is_sharded()),
    };
    let tname = target_table
        .rsplit('.')
        .next()
        .unwrap_or(&target_table)
        .trim_matches('`')
        .to_string();
    let target_use = scope.tables.iter().position(|t| t.name == tname);
    // An UPDATE of the sharding column may move rows to another shard.
    let moves = match (stmt, target_use) {
        (Statement::Update(u), Some(t)) if scope.tables[t].is_sharded() => {
            let col = scope.tables[t].vindex_column();
            u.assignments
                .iter()
                .any(|a| Some(super::move_rows::assigned_column(a)) == col)
                .then_some((u, t))
        }
        _ => None,
    };
    let Some(anchor) = anchor else {
        // Reference tables: the same change on every shard.
        let pinned = scope
            .tables
            .iter()
            .find_map(|t| t.table.pinned.as_ref().map(|p| p.hex()));
        return Ok(match pinned {
            Some(id) => route_all(ks, Target::KeyspaceId(id), sql, Combine::Sum),
            None => route_all(ks, Target::Scatter, sql, Combine::First),
        });
    };
    let vindex = scope.tables[anchor]
        .table
        .primary_vindex()
        .map(|cv| cv.vindex.name.clone())
        .unwrap_or_default();
    let predicate = match placed {
        Placement::Pinned { pins } => Some(Err(super::select::same_shard(pins))),
        _ => route_predicate(selection, &scope, &co, anchor, &idx, &ph).map(Ok),
    };
    let (target, query) = match predicate {
        Some(Err(target)) => (target, Query::verbatim(sql)),
        Some(Ok(RoutePredicate::Equal(value))) => {
            (Target::Equal { vindex, value }, Query::verbatim(sql))
        }
        Some(Ok(RoutePredicate::Lookup(vindex, value))) => {
            (Target::Lookup { vindex, value }, Query::verbatim(sql))
        }
        Some(Ok(RoutePredicate::In(values, span))) => {
            if order_limit {
                return Err(unsupported(
                    "ORDER BY or LIMIT in an UPDATE or DELETE across shards",
                ));
            }
            (
                Target::In {
                    vindex,
                    values,
                    split: true,
                },
                Query::rewritten(&super::select::with_in_marker(sql, &idx, span, &ph)?),
            )
        }
        None => {
            if order_limit {
                return Err(unsupported(
                    "ORDER BY or LIMIT in an UPDATE or DELETE across shards",
                ));
            }
            (Target::Scatter, Query::verbatim(sql))
        }
    };
    if !matches!(target, Target::Equal { .. } | Target::SameShard { .. }) {
        if let Some(reason) = has_nonlocal_subquery(stmt) {
            return Err(unsupported(format!("{reason} across shards")));
        }
    }
    if let Some((u, t)) = moves {
        let m = super::move_rows::plan(sql, u, &scope.tables[t], ks, &target, &idx, &ph)?;
        return Ok(Primitive::MoveRows(Box::new(m)));
    }
    let lookups = match target_use {
        Some(t) => lookup_maintenance(sql, stmt, &scope.tables[t], ks, &target, &idx, &ph)?,
        None => None,
    };
    Ok(Primitive::Write(WritePlan {
        route: Route {
            keyspace: ks.name.clone(),
            target,
            query,
        },
        combine: Combine::Sum,
        vschema: None,
        lookups: lookups.map(Box::new),
    }))
}

/// For an UPDATE or DELETE of a table owning lookup vindexes: what to read first and how
/// to keep the lookup tables in step.
fn lookup_maintenance(
    sql: &str,
    stmt: &Statement,
    table: &super::analysis::TableUse,
    ks: &Keyspace,
    target: &Target,
    idx: &TextIndex<'_>,
    ph: &[usize],
) -> Result<Option<super::plan::LookupMaintenance>, ProxyError> {
    let owned: Vec<(String, String)> = table
        .table
        .column_vindexes
        .iter()
        .skip(1)
        .filter(|cv| {
            cv.vindex.lookup().is_some() && cv.vindex.owner.as_deref() == Some(table.name.as_str())
        })
        .filter_map(|cv| {
            cv.columns
                .first()
                .map(|c| (cv.vindex.name.clone(), c.clone()))
        })
        .collect();
    if owned.is_empty() {
        return Ok(None);
    }
    let delete = matches!(stmt, Statement::Delete(_));
    let mut new_values = Vec::new();
    if let Statement::Update(u) = stmt {
        for (_, col) in &owned {
            let assigned = u.assignments.iter().find(|a| {
                let t = a.target.to_string();
                t.rsplit('.')
                    .next()
                    .unwrap_or(&t)
                    .trim_matches('`')
                    .eq_ignore_ascii_case(col)
            });
            new_values.push(match assigned {
                None => None,
                Some(a) => Some(super::values::value_of(&a.value, idx, ph).ok_or_else(|| {
                    unsupported(format!("setting lookup column {col} to an expression (use a literal or a placeholder)"))
                })?),
            });
        }
        if new_values.iter().all(Option::is_none) {
            return Ok(None);
        }
    }
    let primary = table.vindex_column().unwrap_or_default();
    let cols: Vec<String> = std::iter::once(primary)
        .chain(owned.iter().map(|(_, c)| c.clone()))
        .map(|c| format!("`{c}`"))
        .collect();
    let condition = match super::clauses::where_condition(sql) {
        Some((a, b)) => format!(" WHERE {}", idx.slice_with_params(a, b, ph)),
        None => String::new(),
    };
    let select = format!(
        "SELECT {} FROM `{}`{condition} FOR UPDATE",
        cols.join(", "),
        table.name
    );
    let target = match target {
        Target::In { vindex, values, .. } => Target::In {
            vindex: vindex.clone(),
            values: values.clone(),
            split: false,
        },
        other => other.clone(),
    };
    Ok(Some(super::plan::LookupMaintenance {
        owner: table.name.clone(),
        select: Route {
            keyspace: ks.name.clone(),
            target,
            query: Query::rewritten(&select),
        },
        vindexes: owned.into_iter().map(|(v, _)| v).collect(),
        new_values,
        delete,
    }))
}
