//! The query blocks of a statement, the table occurrences in each block's FROM (with
//! whether an outer join can NULL-pad them), and the conjuncts of each block's WHERE and
//! ON clauses, with columns resolved as MySQL resolves them (own block first, then
//! outward). This is what decides which rows of a table can be left on the shards.

use crate::error::ProxyError;
use crate::planner::analysis::{object_table, split_and, visit_selects};
use crate::planner::edit::TextIndex;
use crate::planner::tables::is_system_schema;
use crate::schema::{Schemas, TableSchema};
use shardgate_topology::{Snapshot, Table};
use sqlparser::ast::{
    Expr, Ident, JoinConstraint, JoinOperator, ObjectName, Spanned, Statement, TableFactor,
    TableWithJoins,
};
use std::collections::HashSet;
use std::sync::Arc;

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

/// One table named in one FROM clause.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub keyspace: String,
    /// The table's name as the VSchema has it.
    pub table: String,
    /// The name its columns are qualified with (alias, else the table name), as written.
    pub qualifier: String,
    pub block: usize,
    /// On the NULL-padded side of an outer join of its block.
    pub nullable: bool,
    pub vschema: Arc<Table>,
    pub schema: Arc<TableSchema>,
}

impl Occurrence {
    /// The primary vindex column (lower case) of a sharded table.
    pub fn vindex_column(&self) -> Option<String> {
        if self.vschema.kind != shardgate_topology::TableKind::Sharded {
            return None;
        }
        self.vschema
            .primary_vindex()
            .and_then(|cv| cv.columns.first())
            .map(|c| c.to_ascii_lowercase())
    }
}

/// Where a conjunct stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    /// A top-level conjunct of the block's WHERE.
    Where,
    /// A conjunct of an inner join's ON (or USING).
    InnerOn,
    /// A conjunct of an outer join's ON: `padded` are the occurrences it may NULL-pad.
    OuterOn { padded: Vec<usize> },
}

#[derive(Debug, Clone)]
pub struct Conjunct {
    pub expr: Expr,
    pub block: usize,
    pub place: Place,
}

/// One SELECT.
#[derive(Debug, Clone)]
pub struct Block {
    pub parent: Option<usize>,
    /// Names of derived tables and CTE references in its FROM: their columns are not
    /// known here, so unqualified names in this block are not resolved.
    pub opaque: Vec<String>,
}

/// Everything the gather planner knows about a statement's tables.
#[derive(Debug)]
pub struct Analysis {
    pub blocks: Vec<Block>,
    pub occurrences: Vec<Occurrence>,
    pub conjuncts: Vec<Conjunct>,
}

/// A column resolved to an occurrence: (occurrence, lower-cased column).
pub type Column = (usize, String);

impl Analysis {
    pub fn build(
        stmt: &Statement,
        idx: &TextIndex<'_>,
        snapshot: &Snapshot,
        schemas: &Schemas,
        current: Option<&str>,
    ) -> Result<Analysis, ProxyError> {
        let ctes = cte_names(stmt);
        let lookup = Lookup {
            snapshot,
            schemas,
            current,
            ctes: &ctes,
        };
        let mut a = Analysis {
            blocks: Vec::new(),
            occurrences: Vec::new(),
            conjuncts: Vec::new(),
        };
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut failure: Option<ProxyError> = None;
        let _ = visit_selects(stmt, &mut |sel| {
            if failure.is_some() {
                return;
            }
            let Some(r) = idx.range(sel.span()) else {
                failure = Some(unsupported("a statement whose text the proxy cannot map"));
                return;
            };
            let b = a.blocks.len();
            ranges.push(r);
            a.blocks.push(Block {
                parent: None,
                opaque: Vec::new(),
            });
            for twj in &sel.from {
                if let Err(e) = a.walk_joins(twj, b, false, &lookup) {
                    failure = Some(e);
                    return;
                }
            }
            if let Some(w) = &sel.selection {
                let mut terms = Vec::new();
                split_and(w, &mut terms);
                for expr in terms {
                    a.conjuncts.push(Conjunct {
                        expr,
                        block: b,
                        place: Place::Where,
                    });
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        for (i, r) in ranges.iter().enumerate() {
            // The smallest other block whose text holds this one encloses it.
            a.blocks[i].parent = ranges
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && o.0 <= r.0 && r.1 <= o.1 && (o.1 - o.0) > (r.1 - r.0))
                .min_by_key(|(_, o)| o.1 - o.0)
                .map(|(j, _)| j);
        }
        Ok(a)
    }

    /// Adds the occurrences of `twj` (NULL-padded when `padded`) and its ON conjuncts;
    /// returns the occurrences it added.
    fn walk_joins(
        &mut self,
        twj: &TableWithJoins,
        block: usize,
        padded: bool,
        lookup: &Lookup<'_>,
    ) -> Result<Vec<usize>, ProxyError> {
        for j in &twj.joins {
            if !matches!(
                j.join_operator,
                JoinOperator::Join(_)
                    | JoinOperator::Inner(_)
                    | JoinOperator::CrossJoin(_)
                    | JoinOperator::StraightJoin(_)
                    | JoinOperator::Left(_)
                    | JoinOperator::LeftOuter(_)
                    | JoinOperator::Right(_)
                    | JoinOperator::RightOuter(_)
            ) {
                return Err(unsupported("this kind of join across shards"));
            }
        }
        let mut left = self.walk_factor(&twj.relation, block, padded, lookup)?;
        for j in &twj.joins {
            let (constraint, outer) = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::StraightJoin(c) => (c, None),
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, Some(true)),
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (c, Some(false)),
                _ => return Err(unsupported("this kind of join across shards")),
            };
            let right_padded = padded || outer == Some(true);
            let right = self.walk_factor(&j.relation, block, right_padded, lookup)?;
            if outer == Some(false) {
                for &o in &left {
                    self.occurrences[o].nullable = true;
                }
            }
            let place = match outer {
                None => Place::InnerOn,
                Some(true) => Place::OuterOn {
                    padded: right.clone(),
                },
                Some(false) => Place::OuterOn {
                    padded: left.clone(),
                },
            };
            match constraint {
                JoinConstraint::On(e) => {
                    let mut terms = Vec::new();
                    split_and(e, &mut terms);
                    for expr in terms {
                        self.conjuncts.push(Conjunct {
                            expr,
                            block,
                            place: place.clone(),
                        });
                    }
                }
                JoinConstraint::Using(cols) | JoinConstraint::UsingAlias(cols, _) => {
                    for c in cols {
                        let Some(name) = c.0.last().and_then(|p| p.as_ident()) else {
                            continue;
                        };
                        let holder = |set: &[usize]| -> Option<usize> {
                            let mut it = set
                                .iter()
                                .filter(|&&o| self.occurrences[o].schema.has_column(&name.value));
                            match (it.next(), it.next()) {
                                (Some(&o), None) => Some(o),
                                _ => None,
                            }
                        };
                        if let (Some(l), Some(r)) = (holder(&left), holder(&right)) {
                            let col = |o: usize| {
                                Expr::CompoundIdentifier(vec![
                                    Ident::new(self.occurrences[o].qualifier.clone()),
                                    name.clone(),
                                ])
                            };
                            self.conjuncts.push(Conjunct {
                                expr: Expr::BinaryOp {
                                    left: Box::new(col(l)),
                                    op: sqlparser::ast::BinaryOperator::Eq,
                                    right: Box::new(col(r)),
                                },
                                block,
                                place: place.clone(),
                            });
                        }
                    }
                }
                JoinConstraint::Natural | JoinConstraint::None => {}
            }
            left.extend(right);
        }
        Ok(left)
    }

    fn walk_factor(
        &mut self,
        tf: &TableFactor,
        block: usize,
        padded: bool,
        lookup: &Lookup<'_>,
    ) -> Result<Vec<usize>, ProxyError> {
        match tf {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if args.is_some() {
                    return Err(unsupported("table functions across shards"));
                }
                let alias = alias.as_ref().map(|a| a.name.value.clone());
                match lookup.table(name)? {
                    Found::Base(keyspace, table, vschema, schema) => {
                        self.occurrences.push(Occurrence {
                            keyspace,
                            qualifier: alias.unwrap_or_else(|| table.clone()),
                            table,
                            block,
                            nullable: padded,
                            vschema,
                            schema,
                        });
                        Ok(vec![self.occurrences.len() - 1])
                    }
                    Found::Cte(n) => {
                        self.blocks[block].opaque.push(alias.unwrap_or(n));
                        Ok(Vec::new())
                    }
                    Found::Dual => Ok(Vec::new()),
                }
            }
            TableFactor::Derived { alias, .. } => {
                let name = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_default();
                self.blocks[block].opaque.push(name);
                Ok(Vec::new())
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.walk_joins(table_with_joins, block, padded, lookup),
            _ => Err(unsupported("this kind of table reference across shards")),
        }
    }

    /// Resolves a column reference of block `block`: its own occurrences first, then
    /// outward. None when it names something else (a derived table's column, an alias) or
    /// is ambiguous.
    pub fn resolve(&self, e: &Expr, block: usize) -> Option<Column> {
        match e {
            Expr::Nested(inner) => self.resolve(inner, block),
            Expr::Identifier(id) => {
                let name = id.value.to_ascii_lowercase();
                let mut b = Some(block);
                while let Some(cur) = b {
                    if !self.blocks[cur].opaque.is_empty() {
                        return None;
                    }
                    let mut owners = self
                        .occurrences
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.block == cur && o.schema.has_column(&name));
                    match (owners.next(), owners.next()) {
                        (Some((i, _)), None) => return Some((i, name)),
                        (Some(_), Some(_)) => return None,
                        (None, _) => b = self.blocks[cur].parent,
                    }
                }
                None
            }
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let q = parts[0].value.to_ascii_lowercase();
                let name = parts[1].value.to_ascii_lowercase();
                let mut b = Some(block);
                while let Some(cur) = b {
                    if self.blocks[cur]
                        .opaque
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(&q))
                    {
                        return None;
                    }
                    let mut owners =
                        self.occurrences.iter().enumerate().filter(|(_, o)| {
                            o.block == cur && o.qualifier.eq_ignore_ascii_case(&q)
                        });
                    match (owners.next(), owners.next()) {
                        (Some((i, o)), None) => {
                            return o.schema.has_column(&name).then_some((i, name))
                        }
                        (Some(_), Some(_)) => return None,
                        (None, _) => b = self.blocks[cur].parent,
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Whether `outer` is `block` or encloses it.
    pub fn encloses(&self, outer: usize, block: usize) -> bool {
        let mut b = Some(block);
        while let Some(cur) = b {
            if cur == outer {
                return true;
            }
            b = self.blocks[cur].parent;
        }
        false
    }
}

/// What a FROM name refers to.
enum Found {
    Base(String, String, Arc<Table>, Arc<TableSchema>),
    Cte(String),
    Dual,
}

struct Lookup<'a> {
    snapshot: &'a Snapshot,
    schemas: &'a Schemas,
    current: Option<&'a str>,
    ctes: &'a HashSet<String>,
}

impl Lookup<'_> {
    fn table(&self, name: &ObjectName) -> Result<Found, ProxyError> {
        let (schema, table) =
            object_table(name).ok_or_else(|| unsupported("a table name with three parts"))?;
        if schema.is_none() && self.ctes.contains(&table.to_ascii_lowercase()) {
            return Ok(Found::Cte(table));
        }
        if schema.is_none() && table.eq_ignore_ascii_case("dual") {
            return Ok(Found::Dual);
        }
        if schema.as_deref().is_some_and(is_system_schema) {
            return Err(unsupported(
                "system schema tables in a statement across shards",
            ));
        }
        let ks_name = match &schema {
            Some(s) => s.as_str(),
            None => self.current.ok_or(ProxyError::NoDatabaseSelected)?,
        };
        let ks = self
            .snapshot
            .keyspace(ks_name)
            .ok_or_else(|| ProxyError::UnknownDatabase(ks_name.to_string()))?;
        let vschema = ks
            .table(&table)
            .cloned()
            .ok_or_else(|| ProxyError::UnknownTable {
                keyspace: ks.name.clone(),
                table: table.clone(),
            })?;
        let columns = self
            .schemas
            .table(&ks.name, &table)
            .cloned()
            .ok_or_else(|| ProxyError::SchemaUnknown {
                keyspace: ks.name.clone(),
                table: table.clone(),
            })?;
        Ok(Found::Base(
            ks.name.clone(),
            columns.name.clone(),
            vschema,
            columns,
        ))
    }
}

fn cte_names(stmt: &Statement) -> HashSet<String> {
    let mut out = HashSet::new();
    let _ = sqlparser::ast::visit_statements(stmt, |s| {
        if let Statement::Query(q) = s {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    out.insert(c.alias.name.value.to_ascii_lowercase());
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    let _ = sqlparser::ast::visit_expressions(stmt, |e| {
        if let Expr::Subquery(q) = e {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    out.insert(c.alias.name.value.to_ascii_lowercase());
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}
