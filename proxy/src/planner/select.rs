//! SELECT on a sharded keyspace: which shards, and what the proxy must do to merge.
//!
//! * An equality on the sharding column routes to one shard: the statement is sent as
//!   written, whatever its shape.
//! * Otherwise (an IN list, or no usable predicate: every shard) the statement is sent as
//!   written when concatenating the shards' rows is the right answer, and rebuilt for a
//!   merge pipeline when it orders, limits, aggregates, groups or de-duplicates (see
//!   `merge.rs`).

use super::analysis::{has_nonlocal_subquery, Scope};
use super::colocation::{placement, route_predicate, Colocation, Placement, RoutePredicate};
use super::edit::{Edits, TextIndex};
use super::plan::{Primitive, Query, Route, Target};
use super::sqltext::MARKER_PREFIX;
use super::values::{placeholder_offsets, ValueExpr};
use crate::error::ProxyError;
use crate::schema::KeyspaceSchema;
use shardgate_topology::{Keyspace, KeyspaceId};
use sqlparser::ast::{Query as AstQuery, SetExpr, SetOperator, SetQuantifier, Statement};

/// Plans a SELECT (or UNION) whose tables are all in sharded keyspace `ks`.
pub fn plan_select(
    sql: &str,
    stmt: &Statement,
    query: &AstQuery,
    ks: &Keyspace,
    schema: Option<&KeyspaceSchema>,
) -> Result<Primitive, ProxyError> {
    // Each branch of a UNION is checked and routed on its own.
    if let SetExpr::SetOperation {
        op: SetOperator::Union,
        set_quantifier,
        ..
    } = &*query.body
    {
        return plan_union(sql, stmt, query, ks, *set_quantifier, schema);
    }
    let scope = Scope::build(stmt, ks, schema)?;
    let idx = TextIndex::new(sql);
    let placeholders = placeholder_offsets(sql);
    let co = Colocation::learn(stmt, &scope, &idx, &placeholders);
    let route = |target: Target, query: Query| Route {
        keyspace: ks.name.clone(),
        target,
        query,
    };
    let anchor = match placement(&scope, &co)? {
        // Only reference (or pinned) tables: any shard has them.
        Placement::Anywhere => return Ok(pinned_or_any(sql, &scope, ks)),
        Placement::Pinned { pins } => {
            // Every row that matters is on the shard of the pinned values (if they agree:
            // the executor checks): that shard answers the statement as written.
            return Ok(Primitive::Route(route(
                same_shard(pins),
                Query::verbatim(sql),
            )));
        }
        Placement::Together { anchor } => anchor,
    };
    let vindex = anchor
        .and_then(|a| scope.tables[a].table.primary_vindex())
        .map(|cv| cv.vindex.name.clone())
        .unwrap_or_default();
    let SetExpr::Select(select) = &*query.body else {
        return Err(ProxyError::NotSupported(
            "this kind of query on a sharded keyspace".into(),
        ));
    };
    let predicate = anchor.and_then(|anchor| {
        route_predicate(
            select.selection.as_ref(),
            &scope,
            &co,
            anchor,
            &idx,
            &placeholders,
        )
    });
    let (target, in_span) = match predicate {
        Some(RoutePredicate::Equal(value)) => {
            // One shard answers everything exactly as one server would.
            return Ok(Primitive::Route(route(
                Target::Equal { vindex, value },
                Query::verbatim(sql),
            )));
        }
        Some(RoutePredicate::In(values, span)) => (
            Target::In {
                vindex,
                values,
                split: true,
            },
            Some(span),
        ),
        Some(RoutePredicate::Lookup(vindex, value)) => {
            // The lookup names one shard: the statement goes there as written.
            return Ok(Primitive::Route(route(
                Target::Lookup { vindex, value },
                Query::verbatim(sql),
            )));
        }
        None => (Target::Scatter, None),
    };
    if let Some(reason) = has_nonlocal_subquery(stmt) {
        return Err(ProxyError::NotSupported(format!("{reason} across shards")));
    }
    if !windows_stay_on_shards(stmt, &scope, anchor) {
        return Err(ProxyError::NotSupported(
            "window functions whose PARTITION BY is not the sharding column across shards".into(),
        ));
    }
    if super::merge::needs_merge(query, select) {
        return super::merge::plan_merge(
            sql,
            query,
            select,
            route(target, Query::verbatim(sql)),
            in_span,
            &idx,
            &placeholders,
        );
    }
    // Concatenating the shards' rows is the answer.
    let query = match in_span {
        Some(span) => Query::rewritten(&with_in_marker(sql, &idx, span, &placeholders)?),
        None => Query::verbatim(sql),
    };
    Ok(Primitive::Route(route(target, query)))
}

/// The statement with its routing IN list replaced by the `:sg_in` marker (each shard
/// gets only its own values) and placeholders numbered as markers.
pub fn with_in_marker(
    sql: &str,
    idx: &TextIndex<'_>,
    span: sqlparser::tokenizer::Span,
    placeholders: &[usize],
) -> Result<String, ProxyError> {
    let (a, b) = idx
        .expr_range(span)
        .ok_or_else(|| ProxyError::NotSupported("rewriting this IN list".into()))?;
    Ok(format!(
        "{}{MARKER_PREFIX}in{}",
        idx.slice_with_params(0, a, placeholders),
        idx.slice_with_params(b, sql.len(), placeholders)
    ))
}

/// The target of a statement whose tables are pinned to values: one vindex and value is a
/// plain equality route; several must land on one shard, which the executor checks.
pub fn same_shard(mut pins: Vec<(String, ValueExpr)>) -> Target {
    if pins.len() == 1 {
        let (vindex, value) = pins.remove(0);
        return Target::Equal { vindex, value };
    }
    Target::SameShard { pins }
}

/// Statements on reference tables go to any shard; on a pinned table to its shard.
fn pinned_or_any(sql: &str, scope: &Scope, ks: &Keyspace) -> Primitive {
    let pinned = scope
        .tables
        .iter()
        .find_map(|t| t.table.pinned.as_ref().map(KeyspaceId::hex));
    Primitive::Route(Route {
        keyspace: ks.name.clone(),
        target: match pinned {
            Some(hex) => Target::KeyspaceId(hex),
            None => Target::AnyShard,
        },
        query: Query::verbatim(sql),
    })
}

/// UNION ALL: each branch planned alone, results concatenated. UNION (distinct) only when
/// everything is on one shard.
fn plan_union(
    sql: &str,
    _stmt: &Statement,
    query: &AstQuery,
    ks: &Keyspace,
    quantifier: SetQuantifier,
    schema: Option<&KeyspaceSchema>,
) -> Result<Primitive, ProxyError> {
    if query.order_by.is_some() || query.limit_clause.is_some() {
        return Err(ProxyError::NotSupported(
            "ORDER BY or LIMIT on a UNION across shards".into(),
        ));
    }
    if !matches!(quantifier, SetQuantifier::All) {
        return Err(ProxyError::NotSupported(
            "UNION (DISTINCT) across shards; use UNION ALL".into(),
        ));
    }
    let idx = TextIndex::new(sql);
    let mut branches = Vec::new();
    collect_union_branches(&query.body, &mut branches);
    let mut plans = Vec::new();
    for b in branches {
        use sqlparser::ast::Spanned;
        let (a, z) = idx
            .expr_range(b.span())
            .ok_or_else(|| ProxyError::NotSupported("this UNION".into()))?;
        let text = &sql[a..z];
        if text.contains('?') {
            return Err(ProxyError::NotSupported(
                "placeholders in a UNION across shards".into(),
            ));
        }
        let parsed =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, text)
                .map_err(|e| ProxyError::NotSupported(format!("this UNION branch ({e})")))?;
        let [Statement::Query(q)] = parsed.as_slice() else {
            return Err(ProxyError::NotSupported("this UNION branch".into()));
        };
        let branch = plan_select(text, &parsed[0], q, ks, schema)?;
        if let Primitive::Project {
            hidden, renames, ..
        } = &branch
        {
            // Helper columns are removed only at the top of a plan.
            if *hidden > 0 || !renames.is_empty() {
                return Err(ProxyError::NotSupported(
                    "a UNION branch that is merged across shards".into(),
                ));
            }
        }
        plans.push(branch);
    }
    let _ = Edits::new();
    Ok(Primitive::Concat(plans))
}

fn collect_union_branches<'a>(e: &'a SetExpr, out: &mut Vec<&'a SetExpr>) {
    match e {
        SetExpr::SetOperation {
            op: SetOperator::Union,
            left,
            right,
            ..
        } => {
            collect_union_branches(left, out);
            collect_union_branches(right, out);
        }
        SetExpr::Query(q) => match &*q.body {
            inner @ SetExpr::SetOperation { .. } => collect_union_branches(inner, out),
            _ => out.push(e),
        },
        other => out.push(other),
    }
}

/// Whether every window function partitions by the anchor table's sharding column (each
/// partition then lives on one shard, so every shard computes its windows exactly).
fn windows_stay_on_shards(stmt: &Statement, scope: &Scope, anchor: Option<usize>) -> bool {
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(stmt, |e| {
        if let sqlparser::ast::Expr::Function(f) = e {
            if let Some(over) = &f.over {
                let partitioned = match (over, anchor) {
                    (sqlparser::ast::WindowType::WindowSpec(spec), Some(a)) => {
                        let col = scope.tables[a].vindex_column();
                        spec.partition_by.iter().any(|p| {
                            scope
                                .resolve(p)
                                .is_some_and(|(t, c)| t == a && Some(&c) == col.as_ref())
                        })
                    }
                    _ => false,
                };
                ok &= partitioned;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    ok
}
