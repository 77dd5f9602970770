//! What a statement on a sharded keyspace touches: its table occurrences (with their
//! VSchema entry and, from schema tracking, their columns), column resolution, and helpers
//! over the AST. Whether the shards can answer it alone is `colocation.rs`.

use crate::error::ProxyError;
use crate::schema::{KeyspaceSchema, TableSchema};
use shardgate_topology::{Keyspace, Table, TableKind, Vindex};
use sqlparser::ast::{
    visit_expressions, visit_statements, BinaryOperator, Expr, JoinConstraint, JoinOperator,
    ObjectName, Query, SetExpr, Statement, TableFactor,
};
use std::ops::ControlFlow;
use std::sync::Arc;

/// One table occurrence in the statement.
#[derive(Debug, Clone)]
pub struct TableUse {
    /// The name used to qualify its columns (alias, else table name), lower-cased.
    pub qualifier: String,
    pub name: String,
    pub table: Arc<Table>,
    /// Its columns, from schema tracking (None: not read yet).
    pub schema: Option<Arc<TableSchema>>,
    /// Identity of its table factor in the statement (0 for an INSERT target), to find
    /// the query block it belongs to.
    pub factor: usize,
}

impl TableUse {
    pub fn is_sharded(&self) -> bool {
        self.table.kind == TableKind::Sharded && self.table.pinned.is_none()
    }

    /// The primary vindex column (lower-cased) of a sharded table.
    pub fn vindex_column(&self) -> Option<String> {
        self.table
            .primary_vindex()
            .and_then(|cv| cv.columns.first())
            .map(|c| c.to_ascii_lowercase())
    }

    pub fn vindex(&self) -> Option<&Arc<Vindex>> {
        self.table.primary_vindex().map(|cv| &cv.vindex)
    }
}

/// A column reference resolved to a table use.
pub type ColumnRef = (usize, String);

/// The tables of a statement.
pub struct Scope {
    pub tables: Vec<TableUse>,
}

pub(super) fn object_table(name: &ObjectName) -> Option<(Option<String>, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect();
    match parts.as_slice() {
        [t] => Some((None, t.clone())),
        [s, t] => Some((Some(s.clone()), t.clone())),
        _ => None,
    }
}

impl Scope {
    /// Collects every table of `stmt` that belongs to `ks` (the caller has checked that
    /// all tables do). Tables not in the VSchema are an error naming them.
    pub fn build(
        stmt: &Statement,
        ks: &Keyspace,
        schema: Option<&KeyspaceSchema>,
    ) -> Result<Scope, ProxyError> {
        let columns_of =
            |t: &str| schema.and_then(|s| s.tables.get(&t.to_ascii_lowercase()).cloned());
        let mut tables = Vec::new();
        let mut missing = None;
        let mut add = |name: &ObjectName, alias: Option<&str>, factor: usize| {
            let Some((schema, t)) = object_table(name) else {
                return;
            };
            if schema
                .as_deref()
                .is_some_and(super::tables::is_system_schema)
            {
                return;
            }
            match ks.table(&t) {
                Some(table) => tables.push(TableUse {
                    qualifier: alias.unwrap_or(&t).to_ascii_lowercase(),
                    name: t.clone(),
                    table: table.clone(),
                    schema: columns_of(&t),
                    factor,
                }),
                None if t.eq_ignore_ascii_case("dual") => {}
                None => missing = Some(t),
            }
        };
        let _ = visit_table_factors(stmt, &mut |tf| {
            if let TableFactor::Table { name, alias, .. } = tf {
                add(
                    name,
                    alias.as_ref().map(|a| a.name.value.as_str()),
                    factor_id(tf),
                );
            }
        });
        // INSERT/UPDATE/DELETE targets are relations too.
        let _ = sqlparser::ast::visit_relations(stmt, |name| {
            if let Some((_, t)) = object_table(name) {
                if !tables.iter().any(|u: &TableUse| u.name == t) {
                    if let Some(table) = ks.table(&t) {
                        tables.push(TableUse {
                            qualifier: t.to_ascii_lowercase(),
                            name: t.clone(),
                            table: table.clone(),
                            schema: columns_of(&t),
                            factor: 0,
                        });
                    } else if !t.eq_ignore_ascii_case("dual") && !is_cte(stmt, &t) {
                        missing = Some(t.clone());
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
        if let Some(t) = missing {
            if !is_cte(stmt, &t) {
                return Err(ProxyError::UnknownTable {
                    keyspace: ks.name.clone(),
                    table: t,
                });
            }
        }
        Ok(Scope { tables })
    }

    /// Resolves a column of a query block whose FROM holds `block` (indexes of `tables`):
    /// MySQL looks in the block's own tables first, then outward. A name the block's
    /// tables do not have is resolved against the whole statement.
    pub fn resolve_in(&self, e: &Expr, block: &[usize]) -> Option<ColumnRef> {
        match e {
            Expr::Nested(inner) => self.resolve_in(inner, block),
            Expr::Identifier(id) => {
                let name = id.value.to_ascii_lowercase();
                let mut owner = None;
                for &i in block {
                    match &self.tables[i].schema {
                        // Unknown columns: only a lone table can own the name for sure.
                        None if block.len() == 1 && self.tables.len() == 1 => {
                            return Some((i, name))
                        }
                        None => return None,
                        Some(s) if s.has_column(&name) => {
                            if owner.is_some() {
                                return None;
                            }
                            owner = Some(i);
                        }
                        Some(_) => {}
                    }
                }
                match owner {
                    Some(i) => Some((i, name)),
                    None => self.resolve(e),
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let q = parts[parts.len() - 2].value.to_ascii_lowercase();
                let c = parts[parts.len() - 1].value.to_ascii_lowercase();
                let mut found = block.iter().filter(|&&i| self.tables[i].qualifier == q);
                match (found.next(), found.next()) {
                    (Some(&i), None) => Some((i, c)),
                    (Some(_), Some(_)) => None,
                    (None, _) => self.resolve(e),
                }
            }
            _ => None,
        }
    }

    /// Resolves a column expression to (table use, column), if it names one unambiguously.
    pub fn resolve(&self, e: &Expr) -> Option<ColumnRef> {
        match e {
            Expr::Nested(inner) => self.resolve(inner),
            Expr::Identifier(id) => {
                let name = id.value.to_ascii_lowercase();
                if self.tables.len() == 1 {
                    return Some((0, name));
                }
                // Several tables: the one table (of the whole statement) whose schema has
                // the column. With any table's columns unknown, or two tables having it,
                // the reference stays unresolved (no co-location is assumed from it).
                let mut owner = None;
                for (i, t) in self.tables.iter().enumerate() {
                    match &t.schema {
                        None => return None,
                        Some(s) if s.has_column(&name) => {
                            if owner.is_some() {
                                return None;
                            }
                            owner = Some(i);
                        }
                        Some(_) => {}
                    }
                }
                owner.map(|i| (i, name))
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let q = parts[parts.len() - 2].value.to_ascii_lowercase();
                let c = parts[parts.len() - 1].value.to_ascii_lowercase();
                let mut found = self
                    .tables
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.qualifier == q);
                let first = found.next()?;
                if found.next().is_some() {
                    return None;
                }
                Some((first.0, c))
            }
            _ => None,
        }
    }
}

pub(super) fn list_span(list: &[Expr]) -> sqlparser::tokenizer::Span {
    use sqlparser::ast::Spanned;
    sqlparser::tokenizer::Span::union_iter(list.iter().map(|e| e.span()))
}

/// Splits a conjunction into its terms (through parentheses).
pub fn split_and(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other.clone()),
    }
}

pub(super) fn table_qualifier(tf: &TableFactor) -> Option<String> {
    match tf {
        TableFactor::Table { name, alias, .. } => alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .or_else(|| object_table(name).map(|(_, t)| t)),
        TableFactor::Derived { alias, .. } => alias.as_ref().map(|a| a.name.value.clone()),
        _ => None,
    }
}

pub(super) fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// The only projected expression of a subquery like `SELECT col FROM ...`.
pub(super) fn single_column(q: &Query) -> Option<Expr> {
    let SetExpr::Select(s) = &*q.body else {
        return None;
    };
    match s.projection.as_slice() {
        [sqlparser::ast::SelectItem::UnnamedExpr(e)]
        | [sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. }] => Some(e.clone()),
        _ => None,
    }
}

fn is_cte(stmt: &Statement, name: &str) -> bool {
    let mut found = false;
    let _ = visit_statements(stmt, |s| {
        if let Statement::Query(q) = s {
            if let Some(w) = &q.with {
                found |= w
                    .cte_tables
                    .iter()
                    .any(|c| c.alias.name.value.eq_ignore_ascii_case(name));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_expressions(stmt, |e| {
        if let Expr::Subquery(q) = e {
            if let Some(w) = &q.with {
                found |= w
                    .cte_tables
                    .iter()
                    .any(|c| c.alias.name.value.eq_ignore_ascii_case(name));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// The identity of a table factor: its address in the statement's tree (stable while the
/// statement is borrowed; used only to compare, never dereferenced).
pub fn factor_id(tf: &TableFactor) -> usize {
    tf as *const TableFactor as usize
}

/// Calls `f` on every table factor of the statement, in subqueries too.
fn visit_table_factors(stmt: &Statement, f: &mut dyn FnMut(&TableFactor)) -> ControlFlow<()> {
    struct V<'a>(&'a mut dyn FnMut(&TableFactor));
    impl sqlparser::ast::Visitor for V<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
            (self.0)(tf);
            ControlFlow::Continue(())
        }
    }
    sqlparser::ast::Visit::visit(stmt, &mut V(f))
}

/// Calls `f` on every SELECT of the statement, in subqueries too.
pub fn visit_selects(
    stmt: &Statement,
    f: &mut dyn FnMut(&sqlparser::ast::Select),
) -> ControlFlow<()> {
    struct V<'a>(&'a mut dyn FnMut(&sqlparser::ast::Select));
    impl sqlparser::ast::Visitor for V<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            visit_set_expr(&q.body, self.0);
            ControlFlow::Continue(())
        }
    }
    fn visit_set_expr(s: &SetExpr, f: &mut dyn FnMut(&sqlparser::ast::Select)) {
        match s {
            SetExpr::Select(sel) => f(sel),
            SetExpr::SetOperation { left, right, .. } => {
                visit_set_expr(left, f);
                visit_set_expr(right, f);
            }
            _ => {}
        }
    }
    sqlparser::ast::Visit::visit(stmt, &mut V(f))
}

/// Whether an expression contains an aggregate function call.
pub fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            if aggregate_name(&f.name.to_string()).is_some() {
                found = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// The upper-cased aggregate function name, if `name` is one.
pub fn aggregate_name(name: &str) -> Option<String> {
    let u = name.to_ascii_uppercase();
    matches!(
        u.as_str(),
        "COUNT"
            | "SUM"
            | "MIN"
            | "MAX"
            | "AVG"
            | "GROUP_CONCAT"
            | "STD"
            | "STDDEV"
            | "STDDEV_POP"
            | "STDDEV_SAMP"
            | "VARIANCE"
            | "VAR_POP"
            | "VAR_SAMP"
            | "BIT_AND"
            | "BIT_OR"
            | "BIT_XOR"
            | "JSON_ARRAYAGG"
            | "JSON_OBJECTAGG"
    )
    .then_some(u)
}

/// Whether any subquery (in expressions or FROM) aggregates, groups, de-duplicates or
/// limits: such a subquery answered per shard would be wrong for a multi-shard route.
pub fn has_nonlocal_subquery(stmt: &Statement) -> Option<&'static str> {
    let mut reason = None;
    let mut depth_queries = 0;
    struct V<'a> {
        depth: usize,
        reason: &'a mut Option<&'static str>,
    }
    impl sqlparser::ast::Visitor for V<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.depth += 1;
            if self.depth > 1 {
                if q.limit_clause.is_some() {
                    *self.reason = Some("a subquery with LIMIT");
                }
                if let SetExpr::Select(s) = &*q.body {
                    if s.distinct.is_some() {
                        *self.reason = Some("a subquery with DISTINCT");
                    }
                    if !matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(v, _) if v.is_empty())
                    {
                        *self.reason = Some("a subquery with GROUP BY");
                    }
                    if s.having.is_some() {
                        *self.reason = Some("a subquery with HAVING");
                    }
                    for item in &s.projection {
                        let e = match item {
                            sqlparser::ast::SelectItem::UnnamedExpr(e)
                            | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
                            _ => None,
                        };
                        if e.is_some_and(contains_aggregate) {
                            *self.reason = Some("a subquery with aggregates");
                        }
                    }
                } else {
                    *self.reason = Some("a subquery with UNION");
                }
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    // DML statements are not queries themselves: their subqueries start at depth 1.
    if !matches!(stmt, Statement::Query(_)) {
        depth_queries = 1;
    }
    let mut v = V {
        depth: depth_queries,
        reason: &mut reason,
    };
    let _ = sqlparser::ast::Visit::visit(stmt, &mut v);
    reason
}
