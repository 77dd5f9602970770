//! Statements the shards cannot answer alone (joins and subqueries across shards or
//! keyspaces, window functions over sharded rows, ORDER BY / LIMIT on a UNION): the proxy
//! *gathers* the rows that can matter into temporary tables on one backend connection (the
//! scratch) and runs the statement there, as written.
//!
//! Which rows matter is decided per table occurrence ([`filters`]): conjuncts that read only
//! that occurrence go into its fetch, and equalities with occurrences fetched before it
//! turn into `col IN (values)` (the nested-loop join step of Vitess, batched; routed by
//! vindex when `col` is the sharding column). Whatever survives is a superset of the rows
//! any result row is built from, so the answer is MySQL's own: MariaDB evaluates every
//! expression, collation, NULL rule, aggregate and window function on the scratch. The
//! temporary tables have the real column types (from schema tracking) and the tables'
//! names, so they shadow the base tables and the statement runs unchanged.
//!
//! Memory: rows stream from the shards to the scratch in batches; at most
//! `session.max_merge_rows` rows and `session.max_gather_bytes` bytes are gathered per
//! statement (error 1105 beyond).

pub mod blocks;
pub mod filters;
pub mod write;

use super::edit::TextIndex;
use super::plan::{Primitive, Query, Route, Target};
use super::values::placeholder_offsets;
use super::PlanContext;
use crate::error::ProxyError;
use blocks::Analysis;
use filters::Reducer;
use serde::Serialize;
use shardgate_topology::TableKind;
use sqlparser::ast::{BinaryOperator, Expr, Statement};

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A statement answered on a scratch connection after gathering rows there.
#[derive(Debug, Clone, Serialize)]
pub struct GatherPlan {
    /// The keyspace whose backend runs the statement (its tables in place stay there).
    pub scratch: String,
    /// The temporary tables, one per table read from elsewhere.
    pub tables: Vec<Shipment>,
    /// The reads that fill them, in order.
    pub fetches: Vec<Fetch>,
    /// The statement as the scratch runs it (keyspace qualifiers become its database).
    pub query: Query,
}

/// One temporary table.
#[derive(Debug, Clone, Serialize)]
pub struct Shipment {
    pub keyspace: String,
    pub table: String,
    #[serde(skip)]
    pub create: String,
    /// Its columns, in the order fetches return them.
    #[serde(skip)]
    pub columns: Vec<String>,
}

/// One read of one table occurrence's rows.
#[derive(Debug, Clone, Serialize)]
pub struct Fetch {
    /// The temporary table the rows go to.
    pub table: usize,
    /// The occurrence, as the statement names it.
    pub name: String,
    /// The read without a reduction (also used when the values are too many).
    pub route: Route,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce: Option<Reduction>,
    /// Positions of columns whose values later fetches reduce by.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<usize>,
}

/// `col IN (values of an earlier fetch's column)`.
#[derive(Debug, Clone, Serialize)]
pub struct Reduction {
    /// The column, as `qualifier.column`.
    pub column: String,
    /// The earlier fetch and the position of its column.
    pub from: usize,
    pub from_column: usize,
    /// The sharding column's vindex when `column` is it: the values route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vindex: Option<String>,
    /// The read with `column IN (:sg_in)`.
    pub query: Query,
}

/// Plans a SELECT the shards cannot answer alone. Errors other than "not supported"
/// (unknown tables, schema not read yet) are real.
pub fn plan(sql: &str, stmt: &Statement, ctx: &PlanContext) -> Result<Primitive, ProxyError> {
    let Statement::Query(q) = stmt else {
        return Err(unsupported("this statement across shards"));
    };
    if q.fetch.is_some() || q.for_clause.is_some() {
        return Err(unsupported("FETCH or FOR clauses across shards"));
    }
    let lock = lock_suffix(q)?;
    let mut into = false;
    let _ = super::analysis::visit_selects(stmt, &mut |s| into |= s.into.is_some());
    if into {
        return Err(unsupported("SELECT ... INTO across shards"));
    }
    let idx = TextIndex::new(sql);
    let ph = placeholder_offsets(sql);
    let a = Analysis::build(stmt, &idx, ctx.snapshot, ctx.schema, ctx.keyspace)?;
    if a.occurrences.is_empty() {
        return Err(unsupported("this statement across shards"));
    }
    let scratch = scratch_keyspace(&a, ctx)?;
    let in_place = |o: usize| {
        let occ = &a.occurrences[o];
        occ.keyspace == scratch.name
            && (!scratch.sharded || occ.vschema.kind == TableKind::Reference)
    };
    // One temporary table per shipped table; names must not collide in the scratch.
    let mut tables: Vec<Shipment> = Vec::new();
    let mut table_of = vec![usize::MAX; a.occurrences.len()];
    for (o, occ) in a.occurrences.iter().enumerate() {
        if in_place(o) {
            continue;
        }
        let same = |t: &Shipment| t.table.eq_ignore_ascii_case(&occ.table);
        match tables.iter().position(same) {
            Some(i) if tables[i].keyspace == occ.keyspace => table_of[o] = i,
            Some(_) => {
                return Err(unsupported(format!(
                    "tables named {} in two keyspaces in one statement",
                    occ.table
                )))
            }
            None => {
                table_of[o] = tables.len();
                tables.push(Shipment {
                    keyspace: occ.keyspace.clone(),
                    table: occ.table.clone(),
                    create: String::new(),
                    columns: occ.schema.columns.iter().map(|c| c.name.clone()).collect(),
                });
            }
        }
    }
    for (o, occ) in a.occurrences.iter().enumerate() {
        if in_place(o)
            && tables
                .iter()
                .any(|t| t.table.eq_ignore_ascii_case(&occ.table))
        {
            return Err(unsupported(format!(
                "table {} of keyspace {} and a table of the same name elsewhere in one statement",
                occ.table, occ.keyspace
            )));
        }
    }
    let reducers: Vec<Reducer> = a
        .reducers()
        .into_iter()
        .filter(|r| !in_place(r.target) && !in_place(r.source))
        .collect();
    let order = fetch_order(&a, &reducers, &table_of);
    let mut fetches: Vec<Fetch> = Vec::new();
    let mut fetch_of = vec![usize::MAX; a.occurrences.len()];
    for &o in &order {
        let occ = &a.occurrences[o];
        let pushed: Vec<String> = a
            .pushable(o)
            .into_iter()
            .filter_map(|e| idx.checked_expr_range(e))
            .map(|(s, e)| format!("({})", idx.slice_with_params(s, e, &ph)))
            .collect();
        // Pushed conjuncts name the occurrence's qualifier; a plain read uses the table's
        // name, so two occurrences read the same way share one fetch.
        let alias = if pushed.is_empty() {
            &occ.table
        } else {
            &occ.qualifier
        };
        let columns: Vec<String> = occ
            .schema
            .columns
            .iter()
            .map(|c| format!("{}.{}", quote(alias), quote(&c.name)))
            .collect();
        let condition = if pushed.is_empty() {
            "1".to_string()
        } else {
            pushed.join(" AND ")
        };
        let head = format!(
            "SELECT {} FROM {} AS {} WHERE {condition}",
            columns.join(", "),
            quote(&occ.table),
            quote(alias)
        );
        let route = fetch_route(&head, &lock, occ, ctx)?;
        // The best reduction from an occurrence fetched before: on the sharding column
        // first (the values route), else any.
        let vcol = occ.vindex_column();
        let reduce = reducers
            .iter()
            .filter(|r| r.target == o && fetch_of[r.source] != usize::MAX)
            .min_by_key(|r| (Some(&r.column) != vcol.as_ref()) as u8)
            .map(|r| {
                let from = fetch_of[r.source];
                let src = &a.occurrences[r.source];
                let from_column = src
                    .schema
                    .column(&r.source_column)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let column = format!("{}.{}", quote(alias), quote(&r.column));
                Reduction {
                    query: Query::rewritten(&format!("{head} AND {column} IN (:sg_in){lock}")),
                    column,
                    from,
                    from_column,
                    vindex: (Some(&r.column) == vcol.as_ref())
                        .then(|| occ.vschema.primary_vindex().map(|v| v.vindex.name.clone()))
                        .flatten(),
                }
            });
        // The same table read the same way for another occurrence: read it once.
        if reduce.is_none() {
            let same = fetches.iter().position(|f| {
                f.table == table_of[o]
                    && f.reduce.is_none()
                    && f.route.target == route.target
                    && f.route.query.text == route.query.text
            });
            if let Some(i) = same {
                fetch_of[o] = i;
                continue;
            }
        }
        if let Some(r) = &reduce {
            let keep = &mut fetches[r.from].keep;
            if !keep.contains(&r.from_column) {
                keep.push(r.from_column);
            }
        }
        fetch_of[o] = fetches.len();
        fetches.push(Fetch {
            table: table_of[o],
            name: occ.qualifier.clone(),
            route,
            reduce,
            keep: Vec::new(),
        });
    }
    for (i, t) in tables.iter_mut().enumerate() {
        let occs: Vec<usize> = (0..a.occurrences.len())
            .filter(|&o| table_of[o] == i)
            .collect();
        if occs.len() > 1 && a.occurrences[occs[0]].schema.primary_key.is_empty() {
            // Rows read for two occurrences could not be told apart from duplicates.
            return Err(unsupported(format!(
                "table {} without a primary key named twice in a statement across shards",
                t.table
            )));
        }
        t.create = create_table(&a, &occs, &reducers);
    }
    let text = super::scratch_text(sql, stmt, ctx);
    Ok(Primitive::Gather(Box::new(GatherPlan {
        scratch: scratch.name.clone(),
        tables,
        fetches,
        query: Query::rewritten(&text),
    })))
}

/// `FOR UPDATE` / `LOCK IN SHARE MODE` of the statement, for every fetch.
fn lock_suffix(q: &sqlparser::ast::Query) -> Result<String, ProxyError> {
    use sqlparser::ast::LockType;
    match q.locks.as_slice() {
        [] => Ok(String::new()),
        [l] if l.of.is_none() && l.nonblock.is_none() => Ok(match l.lock_type {
            LockType::Update => " FOR UPDATE".into(),
            LockType::Share => " LOCK IN SHARE MODE".into(),
        }),
        _ => Err(unsupported("this locking clause across shards")),
    }
}

/// The keyspace whose backend runs the statement: an unsharded one when the statement has
/// one (its tables stay in place), else the first table's.
fn scratch_keyspace<'a>(
    a: &Analysis,
    ctx: &'a PlanContext,
) -> Result<&'a std::sync::Arc<shardgate_topology::Keyspace>, ProxyError> {
    let keyspace = |name: &str| {
        ctx.snapshot
            .keyspace(name)
            .ok_or_else(|| ProxyError::UnknownDatabase(name.to_string()))
    };
    for occ in &a.occurrences {
        let ks = keyspace(&occ.keyspace)?;
        if !ks.sharded {
            return Ok(ks);
        }
    }
    keyspace(&a.occurrences[0].keyspace)
}

/// The order of fetches: occurrences pinned to one shard first, then ones an earlier
/// fetch can reduce (on their sharding column first), then the rest as written.
fn fetch_order(a: &Analysis, reducers: &[Reducer], table_of: &[usize]) -> Vec<usize> {
    let shipped: Vec<usize> = (0..a.occurrences.len())
        .filter(|&o| table_of[o] != usize::MAX)
        .collect();
    let pinned = |o: usize| {
        let Some(vcol) = a.occurrences[o].vindex_column() else {
            // Unsharded and reference tables are read from one shard anyway.
            return true;
        };
        a.pushable(o).iter().any(|e| match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => [left, right].iter().any(|side| {
                a.resolve(side, a.occurrences[o].block)
                    .is_some_and(|(i, c)| i == o && c == vcol)
            }),
            _ => false,
        })
    };
    let mut order: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = shipped.clone();
    left.sort_by_key(|&o| !pinned(o) as u8);
    while !left.is_empty() {
        let score = |o: usize| -> u8 {
            let reducible: Vec<&Reducer> = reducers
                .iter()
                .filter(|r| r.target == o && order.contains(&r.source))
                .collect();
            let vcol = a.occurrences[o].vindex_column();
            if pinned(o) {
                0
            } else if reducible.iter().any(|r| Some(&r.column) == vcol.as_ref()) {
                1
            } else if !reducible.is_empty() {
                2
            } else {
                3
            }
        };
        let best = left
            .iter()
            .enumerate()
            .min_by_key(|(i, &o)| (score(o), *i))
            .map(|(i, _)| i)
            .expect("not empty");
        order.push(left.remove(best));
    }
    order
}

/// Plans the fetch's read in its own keyspace, for its routing (a pinned sharding column
/// goes to one shard, a reference table to any).
fn fetch_route(
    head: &str,
    lock: &str,
    occ: &blocks::Occurrence,
    ctx: &PlanContext,
) -> Result<Route, ProxyError> {
    let text = format!("{head}{lock}");
    // The sharded planner alone (no gathering: a one-table read never needs it).
    let target = ctx
        .snapshot
        .keyspace(&occ.keyspace)
        .filter(|ks| ks.sharded && occ.vschema.kind == TableKind::Sharded)
        .and_then(|ks| {
            let stmt =
                sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, &text)
                    .ok()?
                    .pop()?;
            let schema = ctx.schema.keyspaces.get(&ks.name).map(|k| &**k);
            match super::sharded::plan(&text, &stmt, ks, ctx.snapshot, schema) {
                Ok(Primitive::Route(r)) => Some(r.target),
                _ => None,
            }
        });
    let target = target.unwrap_or(match occ.vschema.kind {
        TableKind::Reference => Target::AnyShard,
        _ if occ.vindex_column().is_none() => Target::Unsharded,
        _ => Target::Scatter,
    });
    Ok(Route {
        keyspace: occ.keyspace.clone(),
        target,
        query: Query::rewritten(&text),
    })
}

/// `CREATE TEMPORARY TABLE` for a shipped table: the real column types and collations,
/// every column nullable except the primary key's, the primary key (rows read twice
/// through two occurrences are kept once), and an index on every column a join compares.
fn create_table(a: &Analysis, occs: &[usize], reducers: &[Reducer]) -> String {
    let occ = &a.occurrences[occs[0]];
    let s = &occ.schema;
    let pk: Vec<String> = s
        .primary_key
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut parts: Vec<String> = s
        .columns
        .iter()
        .map(|c| {
            let mut d = format!("{} {}", quote(&c.name), c.column_type);
            if let (Some(cs), Some(co)) = (&c.charset, &c.collation) {
                d.push_str(&format!(" CHARACTER SET {cs} COLLATE {co}"));
            }
            if pk.contains(&c.name.to_ascii_lowercase()) {
                d.push_str(" NOT NULL");
            } else {
                d.push_str(" NULL");
            }
            d
        })
        .collect();
    if !pk.is_empty() {
        let cols: Vec<String> = s.primary_key.iter().map(|c| quote(c)).collect();
        parts.push(format!("PRIMARY KEY ({})", cols.join(", ")));
    }
    let mut keyed: Vec<String> = Vec::new();
    for r in reducers {
        for (o, c) in [(r.target, &r.column), (r.source, &r.source_column)] {
            if occs.contains(&o) && !keyed.contains(c) && pk.first() != Some(c) {
                keyed.push(c.clone());
            }
        }
    }
    for c in keyed {
        let indexable = s.column(&c).is_some_and(|(_, col)| {
            !matches!(
                col.data_type.as_str(),
                "text"
                    | "tinytext"
                    | "mediumtext"
                    | "longtext"
                    | "blob"
                    | "tinyblob"
                    | "mediumblob"
                    | "longblob"
                    | "json"
                    | "geometry"
            )
        });
        if indexable {
            parts.push(format!("KEY ({})", quote(&c)));
        }
    }
    format!(
        "CREATE TEMPORARY TABLE {} ({})",
        quote(&occ.table),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::{golden, plan as plan_sql, Plan, PlanContext};
    use super::*;

    fn gathered(sql: &str) -> GatherPlan {
        let snap = golden::snapshot();
        let schema = golden::schema();
        let ctx = PlanContext {
            snapshot: &snap,
            schema: &schema,
            keyspace: Some("customer"),
            shard: None,
        };
        match plan_sql(sql, &ctx) {
            Ok(Plan::Query(q)) => match q.root {
                Primitive::Gather(g) => *g,
                other => panic!("{sql}: {other:?}"),
            },
            other => panic!("{sql}: {other:?}"),
        }
    }

    /// (fetch name, pushed WHERE text, reduced by `from` fetch's name) per fetch.
    fn shape(g: &GatherPlan) -> Vec<(String, String, Option<String>)> {
        g.fetches
            .iter()
            .map(|f| {
                let text = f.route.query.text.to_string();
                let cond = text.split(" WHERE ").nth(1).unwrap_or("").to_string();
                let from = f.reduce.as_ref().map(|r| g.fetches[r.from].name.clone());
                (f.name.clone(), cond, from)
            })
            .collect()
    }

    #[test]
    fn an_outer_join_reduces_only_its_padded_side() {
        let g = gathered(
            "select * from customer c left join corder o on o.sku = c.name and o.price > 5 where c.country = 'x'",
        );
        assert_eq!(
            shape(&g),
            [
                ("c".into(), "(c.country = 'x')".into(), None),
                ("o".into(), "(o.price > 5)".into(), Some("c".into())),
            ]
        );
        // A WHERE condition on the padded side that is not null-rejecting stays on the
        // scratch; one that is may be pushed.
        let g = gathered(
            "select * from customer c left join corder o on o.sku = c.name where o.price is null or c.country = 'y'",
        );
        assert!(
            shape(&g).iter().all(|(_, cond, _)| cond == "1"),
            "{:?}",
            shape(&g)
        );
        let g = gathered(
            "select * from customer c left join corder o on o.sku = c.name where o.price = 3",
        );
        assert!(shape(&g)
            .iter()
            .any(|(n, cond, _)| n == "o" && cond.starts_with("(o.price = 3)")));
    }

    #[test]
    fn a_correlated_subquery_is_reduced_by_its_outer_rows_not_the_other_way() {
        let g = gathered(
            "select c.name from customer c where c.customer_id < 9 and not exists (select 1 from corder o where o.sku = c.name)",
        );
        let s = shape(&g);
        assert_eq!(s[0].0, "c");
        assert_eq!(s[0].2, None);
        assert_eq!(s[1], ("o".into(), "1".into(), Some("c".into())));
        assert!(g.fetches[1]
            .reduce
            .as_ref()
            .unwrap()
            .query
            .text
            .contains("IN (:sg_in)"));
    }

    #[test]
    fn a_pinned_occurrence_is_read_first_and_routes_the_next_by_vindex() {
        let g = gathered(
            "select * from corder o join customer c on c.customer_id = o.price where o.customer_id = 5",
        );
        assert_eq!(g.fetches[0].name, "o");
        assert!(matches!(g.fetches[0].route.target, Target::Equal { .. }));
        let r = g.fetches[1].reduce.as_ref().expect("reduced");
        assert_eq!(
            r.vindex.as_deref(),
            Some("hash"),
            "c.customer_id is its sharding column"
        );
        // The query runs on the scratch as written.
        assert_eq!(
            g.query.text.as_ref(),
            "select * from corder o join customer c on c.customer_id = o.price where o.customer_id = 5"
        );
    }

    #[test]
    fn tables_of_another_keyspace_are_shipped_and_qualifiers_point_at_the_scratch() {
        let g = gathered("select * from corder o join commerce.product p on p.sku = o.sku");
        // The unsharded keyspace runs it: its table stays, the sharded one is shipped.
        assert_eq!(g.scratch, "commerce");
        assert_eq!(g.tables.len(), 1);
        assert_eq!(g.tables[0].table, "corder");
        assert!(g.query.text.contains(":sg_db.product"), "{}", g.query.text);
        assert!(g.tables[0]
            .create
            .starts_with("CREATE TEMPORARY TABLE `corder`"));
        assert!(g.tables[0].create.contains("PRIMARY KEY (`order_id`)"));
    }
}
