//! Whether the shards can answer a statement alone, and which shards.
//!
//! Rows that a statement combines live on one shard when their tables' sharding columns are
//! tied together (the same vindex, joined on those columns through ON / USING / WHERE
//! equalities or `col IN (SELECT col ...)`), or when each table's sharding column is pinned
//! to a value (a literal or a placeholder, directly or through equalities: `c_w_id = w_id
//! AND w_id = ?`) and all those values map to one shard.
//!
//! Two kinds of facts, with different rules:
//! - *Ties* (column = column) are collected from every WHERE and ON clause at any depth:
//!   they only matter for rows that actually meet, so wherever they stand they say those
//!   rows share a shard.
//! - *Pins* (column = value) must restrict every row of the table that matters. They are
//!   taken only from the top-level conjuncts of the WHERE and inner-join ON clauses of the
//!   query block whose FROM holds the table, and spread only through ties of that same
//!   block. A value in an outer join's ON clause, or in a correlated subquery about an
//!   outer table, does not restrict the rows it seems to (`a LEFT JOIN b ON a.k = b.k AND
//!   b.k = 5` returns every row of `a`).
//!
//! With placeholders the planner cannot know whether values land on one shard: it records
//! the pins and the executor decides per execution (`Target::SameShard`).

use super::analysis::{
    factor_id, join_constraint, list_span, object_table, single_column, split_and, table_qualifier,
    visit_selects, ColumnRef, Scope,
};
use super::edit::TextIndex;
use super::values::{value_of, ValueExpr};
use crate::error::ProxyError;
use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, InTarget, JoinConstraint, JoinOperator, Select, Statement,
    TableFactor, TableWithJoins,
};

/// A node of the union-find: a column of a table use, or a value.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Column(ColumnRef),
    Value(ValueExpr),
}

/// The equalities a statement's conjuncts state between columns and values.
#[derive(Debug, Default)]
pub struct Equalities {
    nodes: Vec<Node>,
    parent: Vec<usize>,
}

impl Equalities {
    /// Records the equalities of `conjuncts` of a block whose FROM holds `block`: column =
    /// column always; column = value only when `pins` is set and the column is one of the
    /// block's own tables.
    fn learn(
        &mut self,
        conjuncts: &[Expr],
        scope: &Scope,
        block: &[usize],
        values: (&TextIndex<'_>, &[usize]),
        pins: bool,
    ) {
        let (idx, ph) = values;
        for c in conjuncts {
            match c {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => {
                    let side = |e: &Expr| {
                        scope
                            .resolve_in(e, block)
                            .map(Node::Column)
                            .or_else(|| value_of(e, idx, ph).map(Node::Value))
                    };
                    match (side(left), side(right)) {
                        (Some(a @ Node::Column(_)), Some(b @ Node::Column(_))) => self.union(a, b),
                        (Some(Node::Column(c)), Some(v @ Node::Value(_)))
                        | (Some(v @ Node::Value(_)), Some(Node::Column(c)))
                            if pins && block.contains(&c.0) =>
                        {
                            self.union(Node::Column(c), v);
                        }
                        _ => {}
                    }
                }
                Expr::In {
                    expr,
                    target: InTarget::Subquery(subquery),
                    negated: false,
                    ..
                } => {
                    if let (Some(a), Some(inner)) =
                        (scope.resolve_in(expr, block), single_column(subquery))
                    {
                        if let Some(b) = scope.resolve(&inner) {
                            self.union(Node::Column(a), Node::Column(b));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn node(&mut self, n: Node) -> usize {
        if let Some(i) = self.nodes.iter().position(|x| *x == n) {
            return i;
        }
        self.nodes.push(n);
        self.parent.push(self.parent.len());
        self.parent.len() - 1
    }

    fn find(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: Node, b: Node) {
        let (x, y) = (self.node(a), self.node(b));
        let (rx, ry) = (self.find(x), self.find(y));
        self.parent[rx] = ry;
    }

    fn class_of(&self, c: &ColumnRef) -> Option<usize> {
        let i = self
            .nodes
            .iter()
            .position(|n| matches!(n, Node::Column(x) if x == c))?;
        Some(self.find(i))
    }

    /// Whether two column references are known equal.
    pub fn same(&self, a: &ColumnRef, b: &ColumnRef) -> bool {
        a == b || matches!((self.class_of(a), self.class_of(b)), (Some(x), Some(y)) if x == y)
    }

    /// A value the column is known to equal (a placeholder is preferred: it tells the
    /// executor the value of every execution). None when it is tied to no value.
    pub fn value_of(&self, c: &ColumnRef) -> Option<&ValueExpr> {
        let class = self.class_of(c)?;
        let mut found = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Node::Value(v) = n {
                if self.find(i) == class {
                    if matches!(v, ValueExpr::Param(_)) {
                        return Some(v);
                    }
                    found.get_or_insert(v);
                }
            }
        }
        found
    }
}

/// One query block: the tables of its FROM, and the equalities restricting them.
#[derive(Debug, Default)]
pub struct Block {
    /// Indexes of `Scope::tables`.
    pub tables: Vec<usize>,
    pub eq: Equalities,
}

/// What a statement's equalities say: ties over the whole statement, pins per block.
#[derive(Debug, Default)]
pub struct Colocation {
    pub ties: Equalities,
    pub blocks: Vec<Block>,
}

impl Colocation {
    /// Collects ties and pins of `stmt`, whose tables are `scope`.
    pub fn learn(stmt: &Statement, scope: &Scope, idx: &TextIndex<'_>, ph: &[usize]) -> Self {
        let mut out = Colocation::default();
        let mut block = |factors: Vec<usize>, restricting: Vec<Expr>, other: Vec<Expr>| {
            let tables: Vec<usize> = (0..scope.tables.len())
                .filter(|&i| factors.contains(&scope.tables[i].factor))
                .collect();
            let mut eq = Equalities::default();
            eq.learn(&restricting, scope, &tables, (idx, ph), true);
            out.ties
                .learn(&restricting, scope, &tables, (idx, ph), false);
            out.ties.learn(&other, scope, &tables, (idx, ph), false);
            out.blocks.push(Block { tables, eq });
        };
        // UPDATE and DELETE: their own block, outside any SELECT.
        match stmt {
            Statement::Update(u) => {
                let mut factors = Vec::new();
                let (mut r, mut o) = (Vec::new(), Vec::new());
                from_block(std::slice::from_ref(&u.table), &mut factors, &mut r, &mut o);
                if let Some(w) = &u.selection {
                    split_and(w, &mut r);
                }
                block(factors, r, o);
            }
            Statement::Delete(d) => {
                let tables = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                let mut factors = Vec::new();
                let (mut r, mut o) = (Vec::new(), Vec::new());
                from_block(tables, &mut factors, &mut r, &mut o);
                if let Some(w) = &d.selection {
                    split_and(w, &mut r);
                }
                block(factors, r, o);
            }
            _ => {}
        }
        let _ = visit_selects(stmt, &mut |s: &Select| {
            let mut factors = Vec::new();
            let (mut r, mut o) = (Vec::new(), Vec::new());
            from_block(&s.from, &mut factors, &mut r, &mut o);
            if let Some(w) = &s.selection {
                split_and(w, &mut r);
            }
            block(factors, r, o);
        });
        out
    }

    /// The block whose FROM holds table `t`.
    fn block_of(&self, t: usize) -> Option<&Block> {
        self.blocks.iter().find(|b| b.tables.contains(&t))
    }

    /// The tables of the outermost block (the one producing the statement's rows: the
    /// first SELECT, or the UPDATE or DELETE itself).
    pub fn main_tables(&self) -> &[usize] {
        self.blocks
            .first()
            .map(|b| b.tables.as_slice())
            .unwrap_or(&[])
    }

    /// A value every row of table `t` that matters has in column `col`.
    pub fn pin(&self, t: usize, col: &str) -> Option<&ValueExpr> {
        self.block_of(t)?.eq.value_of(&(t, col.to_string()))
    }

    /// Whether two columns of tables in `t`'s block are equal for every row that matters.
    fn same_in_block(&self, t: usize, a: &ColumnRef, b: &ColumnRef) -> bool {
        self.block_of(t).is_some_and(|blk| blk.eq.same(a, b))
    }
}

/// The table factors of a FROM list (through nested joins, not into derived tables) and
/// its join conditions: inner joins' ON conjuncts restrict, outer joins' only tie.
fn from_block(
    from: &[TableWithJoins],
    factors: &mut Vec<usize>,
    restricting: &mut Vec<Expr>,
    other: &mut Vec<Expr>,
) {
    fn factor(tf: &TableFactor, factors: &mut Vec<usize>, other: &mut Vec<Expr>) {
        match tf {
            TableFactor::Table { .. } => factors.push(factor_id(tf)),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                // A nested join's own conditions restrict only inside it (it may be the
                // outer side of a join): they are kept as ties.
                let mut inner = Vec::new();
                from_block(
                    std::slice::from_ref(table_with_joins),
                    factors,
                    &mut inner,
                    other,
                );
                other.extend(inner);
            }
            _ => {}
        }
    }
    for twj in from {
        factor(&twj.relation, factors, other);
        let mut left = table_qualifier(&twj.relation);
        for j in &twj.joins {
            factor(&j.relation, factors, other);
            let right = table_qualifier(&j.relation);
            let inner = matches!(
                j.join_operator,
                JoinOperator::Join(_)
                    | JoinOperator::Inner(_)
                    | JoinOperator::StraightJoin(_)
                    | JoinOperator::CrossJoin(_)
            );
            let sink: &mut Vec<Expr> = if inner {
                &mut *restricting
            } else {
                &mut *other
            };
            match join_constraint(&j.join_operator) {
                Some(JoinConstraint::On(e)) => split_and(e, sink),
                Some(JoinConstraint::Using(cols)) => {
                    for col in cols {
                        if let (Some(l), Some(r), Some((None, name))) =
                            (&left, &right, object_table(col))
                        {
                            sink.push(Expr::BinaryOp {
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
            left = right.or(left);
        }
    }
}

/// Where a statement's rows are.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// No sharded table: reference tables (on every shard) or none.
    Anywhere,
    /// Every sharded table is tied to the others on their sharding columns with the same
    /// vindex: each shard holds whole groups of matching rows. `anchor` is a table of the
    /// outermost block whose restrictions route the statement (None when that block has
    /// no sharded table: every shard).
    Together { anchor: Option<usize> },
    /// Each group of tied tables is pinned to a value: the statement needs one shard if
    /// all `(vindex, value)` pins land on the same one.
    Pinned { pins: Vec<(String, ValueExpr)> },
}

/// Where `scope`'s sharded tables' rows are; an error (1235) when they can be on several
/// shards and are neither tied together nor all pinned.
pub fn placement(scope: &Scope, co: &Colocation) -> Result<Placement, ProxyError> {
    let sharded: Vec<usize> = (0..scope.tables.len())
        .filter(|&i| scope.tables[i].is_sharded())
        .collect();
    let Some(&anchor) = sharded.first() else {
        return Ok(Placement::Anywhere);
    };
    let col = |i: usize| (i, scope.tables[i].vindex_column().unwrap_or_default());
    let kind = |i: usize| scope.tables[i].vindex().map(|v| v.kind.clone());
    let together = sharded[1..].iter().all(|&i| {
        kind(i).is_some() && kind(i) == kind(anchor) && co.ties.same(&col(anchor), &col(i))
    });
    if together {
        // Routing may only follow a table whose rows make the statement's rows: one of the
        // outermost block, preferably one pinned to a value.
        let main: Vec<usize> = co
            .main_tables()
            .iter()
            .copied()
            .filter(|&i| scope.tables[i].is_sharded())
            .collect();
        let anchor = main
            .iter()
            .copied()
            .find(|&i| co.pin(i, &col(i).1).is_some())
            .or_else(|| main.first().copied());
        return Ok(Placement::Together { anchor });
    }
    let mut pins: Vec<(String, ValueExpr)> = Vec::new();
    for &i in &sharded {
        let t = &scope.tables[i];
        let (Some(v), Some(vx)) = (co.pin(i, &col(i).1), t.vindex()) else {
            let other = if i == anchor { sharded[1] } else { i };
            let (a, o) = (&scope.tables[anchor], &scope.tables[other]);
            return Err(ProxyError::NotSupported(format!(
                "cross-shard join or subquery: table {} is not joined to {} on their sharding columns ({}.{} = {}.{}) and they are not both pinned to values",
                o.name,
                a.name,
                a.qualifier,
                col(anchor).1,
                o.qualifier,
                col(other).1
            )));
        };
        let pin = (vx.name.clone(), v.clone());
        if !pins.contains(&pin) {
            pins.push(pin);
        }
    }
    Ok(Placement::Pinned { pins })
}

/// A routing predicate found in the WHERE clause.
#[derive(Debug, Clone)]
pub enum RoutePredicate {
    Equal(ValueExpr),
    In(Vec<ValueExpr>, sqlparser::tokenizer::Span),
    /// Equality on a column with a lookup vindex (name) of a co-located table.
    Lookup(String, ValueExpr),
}

/// How the anchor's sharding column is restricted: a value it is pinned to (through any
/// chain of equalities of its block) beats an IN list of the top-level WHERE, which beats
/// an equality on a lookup vindex column.
pub fn route_predicate(
    selection: Option<&Expr>,
    scope: &Scope,
    co: &Colocation,
    anchor: usize,
    idx: &TextIndex<'_>,
    placeholders: &[usize],
) -> Option<RoutePredicate> {
    let anchor_col = (anchor, scope.tables[anchor].vindex_column()?);
    if let Some(v) = co.pin(anchor, &anchor_col.1) {
        return Some(RoutePredicate::Equal(v.clone()));
    }
    let selection = selection?;
    let mut conj = Vec::new();
    split_and(selection, &mut conj);
    for c in &conj {
        if let Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } = c
        {
            if let Some(r) = scope.resolve(expr) {
                if co.same_in_block(anchor, &anchor_col, &r) {
                    let values: Option<Vec<ValueExpr>> = list
                        .iter()
                        .map(|e| value_of(e, idx, placeholders))
                        .collect();
                    if let Some(values) = values {
                        return Some(RoutePredicate::In(values, list_span(list)));
                    }
                }
            }
        }
    }
    lookup_predicate(&conj, scope, idx, placeholders)
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
