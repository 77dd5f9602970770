//! What a statement on a sharded keyspace touches, and whether each shard can answer it
//! alone.
//!
//! A statement can be pushed down to shards whole when every sharded table in it is tied
//! to the others by equality on their primary vindex columns (directly, through ON / USING
//! / WHERE equalities, or `col IN (SELECT col ...)`), all with the same vindex: rows that
//! meet then always live on the same shard. Reference tables are on every shard and tie
//! to anything. Anything else would need a cross-shard join and is refused with 1235.

use super::edit::TextIndex;
use super::values::{value_of, ValueExpr};
use crate::error::ProxyError;
use shardgate_topology::{Keyspace, Table, TableKind, Vindex};
use sqlparser::ast::{
    visit_expressions, visit_statements, BinaryOperator, Expr, InTarget, JoinConstraint,
    JoinOperator, ObjectName, Query, SetExpr, Statement, TableFactor,
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

/// The tables of a statement and the equalities between their columns.
pub struct Scope {
    pub tables: Vec<TableUse>,
    /// Union-find over column references.
    parent: Vec<usize>,
    columns: Vec<ColumnRef>,
}

fn object_table(name: &ObjectName) -> Option<(Option<String>, String)> {
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
    pub fn build(stmt: &Statement, ks: &Keyspace) -> Result<Scope, ProxyError> {
        let mut tables = Vec::new();
        let mut missing = None;
        let mut add = |name: &ObjectName, alias: Option<&str>| {
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
                }),
                None if t.eq_ignore_ascii_case("dual") => {}
                None => missing = Some(t),
            }
        };
        let _ = visit_table_factors(stmt, &mut |tf| {
            if let TableFactor::Table { name, alias, .. } = tf {
                add(name, alias.as_ref().map(|a| a.name.value.as_str()));
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
        Ok(Scope {
            tables,
            parent: Vec::new(),
            columns: Vec::new(),
        })
    }

    /// Resolves a column expression to (table use, column), if it names one unambiguously.
    pub fn resolve(&self, e: &Expr) -> Option<ColumnRef> {
        match e {
            Expr::Nested(inner) => self.resolve(inner),
            Expr::Identifier(id) => {
                if self.tables.len() == 1 {
                    Some((0, id.value.to_ascii_lowercase()))
                } else {
                    None
                }
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

    fn node(&mut self, c: ColumnRef) -> usize {
        if let Some(i) = self.columns.iter().position(|x| *x == c) {
            return i;
        }
        self.columns.push(c);
        self.parent.push(self.parent.len());
        self.parent.len() - 1
    }

    fn find(&mut self, i: usize) -> usize {
        let mut i = i;
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: ColumnRef, b: ColumnRef) {
        let (x, y) = (self.node(a), self.node(b));
        let (rx, ry) = (self.find(x), self.find(y));
        self.parent[rx] = ry;
    }

    /// Whether two column references are known equal.
    pub fn same(&mut self, a: &ColumnRef, b: &ColumnRef) -> bool {
        if a == b {
            return true;
        }
        let (Some(x), Some(y)) = (
            self.columns.iter().position(|c| c == a),
            self.columns.iter().position(|c| c == b),
        ) else {
            return false;
        };
        self.find(x) == self.find(y)
    }

    /// Records every equality that ties rows together: conjuncts of WHERE and ON clauses
    /// at any level, USING columns, and `col IN (SELECT col ...)`.
    pub fn learn_equalities(&mut self, stmt: &Statement) {
        let mut pairs: Vec<(ColumnRef, ColumnRef)> = Vec::new();
        let mut conjuncts: Vec<Expr> = Vec::new();
        // UPDATE and DELETE have their WHERE outside any query.
        match stmt {
            Statement::Update(u) => {
                if let Some(w) = &u.selection {
                    split_and(w, &mut conjuncts);
                }
            }
            Statement::Delete(d) => {
                if let Some(w) = &d.selection {
                    split_and(w, &mut conjuncts);
                }
            }
            _ => {}
        }
        let _ = visit_selects(stmt, &mut |s: &sqlparser::ast::Select| {
            if let Some(w) = &s.selection {
                split_and(w, &mut conjuncts);
            }
            for twj in &s.from {
                let mut left = table_qualifier(&twj.relation);
                for j in &twj.joins {
                    let right = table_qualifier(&j.relation);
                    if let Some(c) = join_constraint(&j.join_operator) {
                        match c {
                            JoinConstraint::On(e) => split_and(e, &mut conjuncts),
                            JoinConstraint::Using(cols) => {
                                for col in cols {
                                    if let (Some(l), Some(r), Some((None, name))) =
                                        (&left, &right, object_table(col))
                                    {
                                        conjuncts.push(Expr::BinaryOp {
                                            left: Box::new(Expr::CompoundIdentifier(vec![
                                                l.as_str().into(),
                                                name.as_str().into(),
                                            ])),
                                            op: BinaryOperator::Eq,
                                            right: Box::new(Expr::CompoundIdentifier(vec![
                                                r.as_str().into(),
                                                name.as_str().into(),
                                            ])),
                                        });
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    left = right.or(left);
                }
            }
        });
        for c in &conjuncts {
            match c {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => {
                    if let (Some(a), Some(b)) = (self.resolve(left), self.resolve(right)) {
                        pairs.push((a, b));
                    }
                }
                Expr::In {
                    expr,
                    target: InTarget::Subquery(subquery),
                    negated: false,
                    ..
                } => {
                    if let (Some(a), Some(inner)) = (self.resolve(expr), single_column(subquery)) {
                        if let Some(b) = self.resolve(&inner) {
                            pairs.push((a, b));
                        }
                    }
                }
                _ => {}
            }
        }
        for (a, b) in pairs {
            self.union(a, b);
        }
    }

    /// Checks that every sharded table is tied to the first one through its vindex column
    /// with the same vindex. Returns the index of the first sharded table (the anchor).
    pub fn check_colocated(&mut self) -> Result<Option<usize>, ProxyError> {
        let sharded: Vec<usize> = (0..self.tables.len())
            .filter(|&i| self.tables[i].is_sharded())
            .collect();
        let Some(&anchor) = sharded.first() else {
            return Ok(None);
        };
        let anchor_col = (
            anchor,
            self.tables[anchor].vindex_column().unwrap_or_default(),
        );
        let anchor_vindex = self.tables[anchor].vindex().cloned();
        for &i in &sharded[1..] {
            let t = self.tables[i].clone();
            let col = (i, t.vindex_column().unwrap_or_default());
            let same_vindex = match (t.vindex(), &anchor_vindex) {
                (Some(a), Some(b)) => a.kind == b.kind,
                _ => false,
            };
            if !same_vindex || !self.same(&anchor_col, &col) {
                return Err(ProxyError::NotSupported(format!(
                    "cross-shard join or subquery: table {} is not joined to {} on their sharding columns ({}.{} = {}.{})",
                    t.name,
                    self.tables[anchor].name,
                    self.tables[anchor].qualifier,
                    anchor_col.1,
                    t.qualifier,
                    col.1
                )));
            }
        }
        Ok(Some(anchor))
    }
}

/// A routing predicate found in the WHERE clause.
#[derive(Debug, Clone)]
pub enum RoutePredicate {
    Equal(ValueExpr),
    In(Vec<ValueExpr>, sqlparser::tokenizer::Span),
    /// Equality on a column with a lookup vindex (name) of a co-located table.
    Lookup(String, ValueExpr),
}

/// The best routing predicate of the top-level WHERE conjuncts on any column equal to the
/// anchor table's vindex column: an equality beats an IN list.
pub fn route_predicate(
    selection: Option<&Expr>,
    scope: &mut Scope,
    anchor: usize,
    idx: &TextIndex<'_>,
    placeholders: &[usize],
) -> Option<RoutePredicate> {
    let selection = selection?;
    let mut conj = Vec::new();
    split_and(selection, &mut conj);
    let anchor_col = (anchor, scope.tables[anchor].vindex_column()?);
    let mut best: Option<RoutePredicate> = None;
    for c in &conj {
        match c {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                for (col, val) in [(left, right), (right, left)] {
                    if let Some(r) = scope.resolve(col) {
                        if scope.same(&anchor_col, &r) {
                            if let Some(v) = value_of(val, idx, placeholders) {
                                return Some(RoutePredicate::Equal(v));
                            }
                        }
                    }
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                ..
            } => {
                if let Some(r) = scope.resolve(expr) {
                    if scope.same(&anchor_col, &r) && best.is_none() {
                        let values: Option<Vec<ValueExpr>> = list
                            .iter()
                            .map(|e| value_of(e, idx, placeholders))
                            .collect();
                        if let Some(values) = values {
                            let span = list_span(list);
                            best = Some(RoutePredicate::In(values, span));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if best.is_none() {
        best = lookup_predicate(&conj, scope, idx, placeholders);
    }
    best
}

/// An equality on a column with a lookup vindex (used when the sharding column has none).
fn lookup_predicate(
    conj: &[Expr],
    scope: &Scope,
    idx: &TextIndex<'_>,
    placeholders: &[usize],
) -> Option<RoutePredicate> {
    for c in conj {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            continue;
        };
        for (col, val) in [(left, right), (right, left)] {
            let Some((t, name)) = scope.resolve(col) else {
                continue;
            };
            let table = &scope.tables[t];
            if !table.is_sharded() {
                continue;
            }
            for cv in table.table.column_vindexes.iter().skip(1) {
                let on_col = cv.columns.len() == 1 && cv.columns[0].eq_ignore_ascii_case(&name);
                let usable = cv.vindex.lookup().is_some_and(|l| !l.write_only);
                if on_col && usable {
                    if let Some(v) = value_of(val, idx, placeholders) {
                        return Some(RoutePredicate::Lookup(cv.vindex.name.clone(), v));
                    }
                }
            }
        }
    }
    None
}

fn list_span(list: &[Expr]) -> sqlparser::tokenizer::Span {
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

fn table_qualifier(tf: &TableFactor) -> Option<String> {
    match tf {
        TableFactor::Table { name, alias, .. } => alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .or_else(|| object_table(name).map(|(_, t)| t)),
        TableFactor::Derived { alias, .. } => alias.as_ref().map(|a| a.name.value.clone()),
        _ => None,
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
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
fn single_column(q: &Query) -> Option<Expr> {
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
