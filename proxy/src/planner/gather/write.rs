//! UPDATE and DELETE whose rows the shards cannot find alone (a subquery or join across
//! shards, several tables): a SELECT finds the target rows (their primary keys, their
//! sharding values, and for an UPDATE whose values come from other tables, the new
//! values), planned like any SELECT (routed, merged or gathered) and locking what it reads
//! (`FOR UPDATE`); then each target row is changed on its own shard, by primary key. The
//! statement is atomic (a transaction of its own outside the client's).
//!
//! When an UPDATE's assignments read only the target table, its SET clause runs as
//! written (`... WHERE (pk) IN (...)`), so MySQL applies it with its own rules; otherwise
//! the SELECT computes each value and the rows are updated one by one with literals. A
//! single-table UPDATE whose computed value reads a column assigned before it in the same
//! SET is refused (MySQL would see the new value; the SELECT sees the old one).

use super::super::edit::TextIndex;
use super::super::plan::Primitive;
use super::super::values::placeholder_offsets;
use super::super::PlanContext;
use super::blocks::Analysis;
use crate::error::ProxyError;
use serde::Serialize;
use shardgate_topology::TableKind;
use sqlparser::ast::{
    Assignment, AssignmentTarget, Expr, FromTable, Spanned, Statement, TableWithJoins,
};

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// An UPDATE or DELETE run as "find the rows, then change each on its shard".
#[derive(Debug, Clone, Serialize)]
pub struct GatherWrite {
    /// Finds the target rows.
    pub select: Box<Primitive>,
    pub targets: Vec<WriteTarget>,
    pub delete: bool,
}

/// One table the statement changes.
#[derive(Debug, Clone, Serialize)]
pub struct WriteTarget {
    pub keyspace: String,
    pub table: String,
    /// Primary key columns; the SELECT returns them from column `key_at` on.
    pub key: Vec<String>,
    pub key_at: usize,
    /// The primary vindex and the SELECT column of the sharding value (None: unsharded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vindex: Option<(String, usize)>,
    /// How the rows change.
    pub change: Change,
    /// Owned lookup vindexes and the SELECT column of their value (DELETE keeps them in
    /// step).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<(String, usize)>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Delete,
    /// `UPDATE <table> [AS alias] SET <as written>`, applied `WHERE (pk) IN (...)`.
    Text(String),
    /// Column = the SELECT's column at that position, row by row.
    Values(Vec<(String, usize)>),
}

/// Plans an UPDATE or DELETE that the routed write planner refused.
pub fn plan(sql: &str, stmt: &Statement, ctx: &PlanContext) -> Result<Primitive, ProxyError> {
    let idx = TextIndex::new(sql);
    let ph = placeholder_offsets(sql);
    let fail = || unsupported("this write's text (the proxy could not find its clauses)");
    let slice = |x: &Expr| -> Result<String, ProxyError> {
        let (s, e) = idx.checked_expr_range(x).ok_or_else(fail)?;
        Ok(idx.slice_with_params(s, e, &ph))
    };
    let range_of = |list: &[TableWithJoins]| -> Result<String, ProxyError> {
        let first = list.first().ok_or_else(fail)?;
        let last = list.last().ok_or_else(fail)?;
        let (s, _) = idx.range(first.span()).ok_or_else(fail)?;
        let (_, e) = idx.expr_range(last.span()).ok_or_else(fail)?;
        Ok(idx.slice_with_params(s, e, &ph))
    };
    // (FROM text, target names, assignments, WHERE, ORDER BY / LIMIT allowed)
    let (from, names, assignments, selection, single): (
        String,
        Vec<String>,
        &[Assignment],
        Option<&Expr>,
        bool,
    ) = match stmt {
        Statement::Update(u) => {
            if u.from.is_some() || u.returning.is_some() {
                return Err(unsupported("UPDATE ... FROM or RETURNING across shards"));
            }
            let single = u.table.joins.is_empty();
            let names = if single {
                vec![super::super::analysis::table_qualifier(&u.table.relation).ok_or_else(fail)?]
            } else {
                Vec::new()
            };
            (
                range_of(std::slice::from_ref(&u.table))?,
                names,
                &u.assignments,
                u.selection.as_ref(),
                single,
            )
        }
        Statement::Delete(d) => {
            if d.returning.is_some() {
                return Err(unsupported("DELETE ... RETURNING across shards"));
            }
            let from_list = match &d.from {
                FromTable::WithFromKeyword(l) | FromTable::WithoutKeyword(l) => l,
            };
            let (from, names, single) = match (&d.using, d.tables.is_empty()) {
                (Some(using), _) => (
                    range_of(using)?,
                    from_list
                        .iter()
                        .filter_map(|t| super::super::analysis::table_qualifier(&t.relation))
                        .collect(),
                    false,
                ),
                (None, false) => (
                    range_of(from_list)?,
                    d.tables
                        .iter()
                        .filter_map(|n| n.0.last().and_then(|p| p.as_ident()))
                        .map(|i| i.value.clone())
                        .collect(),
                    false,
                ),
                (None, true) => {
                    let first = from_list.first().ok_or_else(fail)?;
                    let single = from_list.len() == 1 && first.joins.is_empty();
                    let name = super::super::analysis::table_qualifier(&first.relation)
                        .ok_or_else(fail)?;
                    (range_of(from_list)?, vec![name], single)
                }
            };
            (from, names, &[][..], d.selection.as_ref(), single)
        }
        _ => return Err(unsupported("this write across shards")),
    };
    let delete = matches!(stmt, Statement::Delete(_));
    let where_text = match (selection, super::super::clauses::where_condition(sql)) {
        (Some(_), Some((s, e))) => format!(" WHERE {}", idx.slice_with_params(s, e, &ph)),
        (None, _) => String::new(),
        (Some(_), None) => return Err(fail()),
    };
    // The tables and columns, as a SELECT over the same FROM and WHERE sees them.
    let probe = format!("SELECT 1 FROM {from}{where_text}");
    let probe_stmt = parse_one(&probe)?;
    let a = Analysis::build(
        &probe_stmt,
        &TextIndex::new(&probe),
        ctx.snapshot,
        ctx.schema,
        ctx.keyspace,
    )?;
    let top = 0;
    // Multi-table UPDATE: every assignment belongs to the table its column resolves to.
    let names: Vec<String> = if single || delete {
        names
    } else {
        let mut out: Vec<String> = Vec::new();
        for x in assignments {
            let q = owner(&a, x, top).ok_or_else(|| {
                unsupported("an assignment whose table the proxy cannot tell, across shards")
            })?;
            if !out.contains(&q) {
                out.push(q);
            }
        }
        out
    };
    // ORDER BY / LIMIT (single-table only, as in MySQL) keep their meaning in the SELECT.
    let tail = match super::super::clauses::where_condition(sql) {
        Some((_, b)) if single => idx.slice_with_params(b, sql.len(), &ph),
        _ => String::new(),
    };
    let mut columns: Vec<String> = Vec::new();
    let mut targets = Vec::new();
    for name in &names {
        let (o, occ) = a
            .occurrences
            .iter()
            .enumerate()
            .find(|(_, o)| o.block == top && o.qualifier.eq_ignore_ascii_case(name))
            .ok_or_else(|| unsupported(format!("the target {name} of this write")))?;
        if occ.vschema.kind == TableKind::Reference {
            return Err(unsupported("writing a reference table through a join"));
        }
        if occ.schema.primary_key.is_empty() {
            return Err(unsupported(format!(
                "changing rows of {} (no primary key) through a query across shards",
                occ.table
            )));
        }
        let q = quote(&occ.qualifier);
        let key_at = columns.len();
        for k in &occ.schema.primary_key {
            columns.push(format!("{q}.{}", quote(k)));
        }
        let vcol = occ.vindex_column();
        let vindex = match &vcol {
            Some(c) => {
                columns.push(format!("{q}.{}", quote(c)));
                let v = occ
                    .vschema
                    .primary_vindex()
                    .map(|cv| cv.vindex.name.clone())
                    .ok_or_else(fail)?;
                Some((v, columns.len() - 1))
            }
            None => None,
        };
        let mut lookups = Vec::new();
        for cv in occ.vschema.column_vindexes.iter().skip(1) {
            let owned = cv.vindex.lookup().is_some()
                && cv.vindex.owner.as_deref() == Some(occ.table.as_str());
            if let (true, Some(c)) = (owned, cv.columns.first()) {
                if !delete {
                    let assigned = assignments
                        .iter()
                        .any(|x| target_column(x).eq_ignore_ascii_case(c));
                    if assigned {
                        return Err(unsupported(format!(
                            "setting lookup column {c} through a query across shards"
                        )));
                    }
                }
                columns.push(format!("{q}.{}", quote(c)));
                lookups.push((cv.vindex.name.clone(), columns.len() - 1));
            }
        }
        let mine: Vec<&Assignment> = assignments
            .iter()
            .filter(|x| single || owner(&a, x, top).as_deref() == Some(name.as_str()))
            .collect();
        if mine.iter().any(|x| Some(target_column(x)) == vcol) {
            return Err(unsupported(
                "changing the sharding column through a query across shards",
            ));
        }
        let change = if delete {
            Change::Delete
        } else if single && mine.iter().all(|x| reads_only(&a, &x.value, o)) {
            let (s, _) = idx.range(mine[0].span()).ok_or_else(fail)?;
            let last = mine.last().ok_or_else(fail)?;
            let (_, e) = idx.checked_expr_range(&last.value).ok_or_else(fail)?;
            let alias = if occ.qualifier != occ.table {
                format!(" AS {q}")
            } else {
                String::new()
            };
            Change::Text(format!(
                "UPDATE {}{alias} SET {}",
                quote(&occ.table),
                idx.slice_with_params(s, e, &ph)
            ))
        } else {
            let mut values = Vec::new();
            let mut assigned: Vec<String> = Vec::new();
            for x in &mine {
                if single && reads_any(&a, &x.value, o, &assigned) {
                    return Err(unsupported(
                        "an UPDATE value that reads a column set earlier in the same SET, with a query across shards",
                    ));
                }
                columns.push(format!("({})", slice(&x.value)?));
                values.push((target_column(x), columns.len() - 1));
                assigned.push(target_column(x));
            }
            Change::Values(values)
        };
        targets.push(WriteTarget {
            keyspace: occ.keyspace.clone(),
            table: occ.table.clone(),
            key: occ.schema.primary_key.clone(),
            key_at,
            vindex,
            change,
            lookups,
        });
    }
    if targets.is_empty() {
        return Err(unsupported("this write across shards"));
    }
    let text = format!(
        "SELECT {} FROM {from}{where_text}{tail} FOR UPDATE",
        columns.join(", ")
    );
    let select_stmt = parse_one(&text)?;
    let mut select = super::super::route_statement(&text, &select_stmt, ctx)?;
    select.mark_rewritten();
    Ok(Primitive::GatherWrite(Box::new(GatherWrite {
        select: Box::new(select),
        targets,
        delete,
    })))
}

/// The column an assignment sets (lower case).
fn target_column(a: &Assignment) -> String {
    match &a.target {
        AssignmentTarget::ColumnName(n) => {
            n.0.last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default()
        }
        AssignmentTarget::Tuple(_) => String::new(),
    }
}

/// The qualifier of the occurrence an assignment's column belongs to.
fn owner(a: &Analysis, x: &Assignment, block: usize) -> Option<String> {
    let AssignmentTarget::ColumnName(n) = &x.target else {
        return None;
    };
    let parts: Vec<sqlparser::ast::Ident> =
        n.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
    let e = match parts.as_slice() {
        [c] => Expr::Identifier(c.clone()),
        [q, c] => Expr::CompoundIdentifier(vec![q.clone(), c.clone()]),
        _ => return None,
    };
    a.resolve(&e, block)
        .map(|(o, _)| a.occurrences[o].qualifier.clone())
}

fn parse_one(text: &str) -> Result<Statement, ProxyError> {
    let mut parsed =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, text)
            .map_err(|e| unsupported(format!("this write across shards ({e})")))?;
    match (parsed.pop(), parsed.is_empty()) {
        (Some(s), true) => Ok(s),
        _ => Err(unsupported("this write across shards")),
    }
}

/// Whether `e` reads only occurrence `o`'s columns, literals and placeholders.
fn reads_only(a: &Analysis, e: &Expr, o: usize) -> bool {
    let block = a.occurrences[o].block;
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        match x {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                ok &= a.resolve(x, block).is_some_and(|(i, _)| i == o);
            }
            Expr::Subquery(_) | Expr::Exists { .. } => ok = false,
            Expr::In {
                target: sqlparser::ast::InTarget::Subquery(_),
                ..
            } => ok = false,
            _ => {}
        }
        if ok {
            std::ops::ControlFlow::Continue(())
        } else {
            std::ops::ControlFlow::Break(())
        }
    });
    ok
}

/// Whether `e` reads one of `columns` of occurrence `o`.
fn reads_any(a: &Analysis, e: &Expr, o: usize, columns: &[String]) -> bool {
    let block = a.occurrences[o].block;
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        if let Expr::Identifier(_) | Expr::CompoundIdentifier(_) = x {
            if let Some((i, c)) = a.resolve(x, block) {
                found |= i == o && columns.contains(&c);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::super::super::{golden, plan as plan_sql, Plan, PlanContext};
    use super::*;

    fn planned(sql: &str) -> Result<Primitive, ProxyError> {
        let snap = golden::snapshot();
        let schema = golden::schema();
        let ctx = PlanContext {
            snapshot: &snap,
            schema: &schema,
            keyspace: Some("customer"),
            shard: None,
        };
        match plan_sql(sql, &ctx)? {
            Plan::Query(q) => Ok(q.root),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_through_other_tables_find_rows_then_change_them_by_key() {
        for sql in [
            "DELETE FROM customer WHERE NOT EXISTS (SELECT 1 FROM corder o WHERE o.sku = customer.name)",
            "UPDATE corder o JOIN customer c ON c.name = o.sku SET o.price = c.customer_id WHERE c.country = 'x'",
            "DELETE o FROM corder o JOIN customer c ON c.name = o.sku",
            "UPDATE customer c SET country = (SELECT COUNT(*) FROM corder o WHERE o.sku = c.name) WHERE c.customer_id < 10",
        ] {
            match planned(sql) {
                Ok(Primitive::GatherWrite(_)) => {}
                other => {
                    let snap = golden::snapshot();
                    let schema = golden::schema();
                    let ctx = PlanContext {
                        snapshot: &snap,
                        schema: &schema,
                        keyspace: Some("customer"),
                        shard: None,
                    };
                    let stmt = parse_one(sql).unwrap();
                    panic!("{sql}: {other:?}; directly: {:?}", plan(sql, &stmt, &ctx).err());
                }
            }
        }
    }
}
