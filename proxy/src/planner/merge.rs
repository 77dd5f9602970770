//! Multi-shard SELECTs that need the proxy's help: ORDER BY, LIMIT / OFFSET, aggregates,
//! GROUP BY, HAVING, DISTINCT, COUNT(DISTINCT).
//!
//! The statement is rebuilt from pieces of its own text: the select list (AVG(x) becomes
//! SUM(x) plus a helper COUNT(x); COUNT(DISTINCT x) becomes x, grouped), helper columns
//! appended at the end (WEIGHT_STRING of string sort keys, so the proxy compares strings
//! exactly as the column's collation does; ORDER BY expressions that are not selected;
//! aggregates only HAVING uses), the original FROM ... WHERE text, and a regenerated
//! GROUP BY / ORDER BY / LIMIT (LIMIT count+offset; none when aggregating). HAVING is
//! evaluated by the proxy, never per shard. Above the route the plan merges: merge sort,
//! aggregate, filter, sort, distinct, limit, and a projection that drops the helpers.

use super::analysis::{aggregate_name, contains_aggregate};
use super::clauses::{call_arguments, split_select, strip_alias, strip_direction, SelectClauses};
use super::edit::TextIndex;
use super::plan::{
    Aggregate, ArithOp, Col, CompareOp, Primitive, Query, Rename, Route, Scalar, SortKey,
};
use super::sqltext::MARKER_PREFIX;
use super::values::{value_of, ValueExpr};
use crate::error::ProxyError;
use shardgate_topology::SqlValue;
use sqlparser::ast::{
    BinaryOperator, Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    LimitClause, OrderByKind, OrderBySort, Query as AstQuery, Select, SelectItem, Spanned,
    UnaryOperator, Value,
};

/// Whether a multi-shard SELECT needs more than concatenating the shards' rows.
pub fn needs_merge(query: &AstQuery, select: &Select) -> bool {
    query.order_by.is_some()
        || query.limit_clause.is_some()
        || matches!(select.distinct, Some(Distinct::Distinct))
        || !group_exprs(select).is_empty()
        || select.having.is_some()
        || select
            .projection
            .iter()
            .any(|i| item_expr(i).is_some_and(contains_aggregate))
}

fn group_exprs(select: &Select) -> &[Expr] {
    match &select.group_by {
        GroupByExpr::Expressions(v, _) => v,
        GroupByExpr::All(_) => &[],
    }
}

fn item_expr(i: &SelectItem) -> Option<&Expr> {
    match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// What one select-list item is.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Wildcard,
    Plain,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    SumDistinct,
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    /// Text sent to the shards for this item.
    pushed: String,
    /// The expression's text (no alias), normalized for matching.
    norm: Option<String>,
    /// The expression's text as written (with parameters as markers).
    expr_text: String,
    alias: Option<String>,
    /// The column name the client expects.
    name: String,
    /// For aggregates over one argument: the argument's text.
    arg: Option<String>,
}

/// A column before helper columns are counted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pending {
    Item(usize),
    Hidden(usize),
}

struct Builder<'a> {
    idx: &'a TextIndex<'a>,
    placeholders: &'a [usize],
    items: Vec<Item>,
    hidden: Vec<String>,
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '`')
        .flat_map(char::to_lowercase)
        .collect()
}

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

impl<'a> Builder<'a> {
    fn text(&self, e: &impl Spanned) -> Result<String, ProxyError> {
        let (a, b) = self
            .idx
            .expr_range(e.span())
            .ok_or_else(|| unsupported("rewriting this query for a merge across shards"))?;
        Ok(self.idx.slice_with_params(a, b, self.placeholders))
    }

    fn add_hidden(&mut self, text: String) -> usize {
        if let Some(j) = self.hidden.iter().position(|h| *h == text) {
            return j;
        }
        self.hidden.push(text);
        self.hidden.len() - 1
    }

    fn col(&self, p: Pending) -> Result<Col, ProxyError> {
        match p {
            Pending::Hidden(j) => Ok(Col::End(self.hidden.len() - 1 - j)),
            Pending::Item(i) => {
                if self.items[..i].iter().any(|it| it.kind == Kind::Wildcard) {
                    Ok(Col::End(self.hidden.len() + (self.items.len() - 1 - i)))
                } else {
                    Ok(Col::Start(i))
                }
            }
        }
    }

    fn range_text(&self, (a, b): (usize, usize)) -> String {
        self.idx.slice_with_params(a, b, self.placeholders)
    }

    fn item(&mut self, si: &SelectItem, range: (usize, usize)) -> Result<Item, ProxyError> {
        let full = self.range_text(range);
        let Some(e) = item_expr(si) else {
            return Ok(Item {
                kind: Kind::Wildcard,
                pushed: full.clone(),
                norm: None,
                expr_text: full.clone(),
                alias: None,
                name: full,
                arg: None,
            });
        };
        let alias = match si {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            _ => None,
        };
        let expr_range = match &alias {
            Some(a) => strip_alias(self.idx.text(), range, a),
            None => range,
        };
        let expr_text = self.range_text(expr_range);
        let name = alias
            .clone()
            .unwrap_or_else(|| self.idx.text()[expr_range.0..expr_range.1].to_string());
        let mut item = Item {
            kind: Kind::Plain,
            pushed: full,
            norm: Some(norm(&expr_text)),
            expr_text: expr_text.clone(),
            alias,
            name,
            arg: None,
        };
        if let Expr::Function(f) = e {
            if let Some(agg) = aggregate_name(&f.name.to_string()) {
                if f.over.is_some() {
                    return Err(unsupported("window functions across shards"));
                }
                let FunctionArguments::List(list) = &f.args else {
                    return Err(unsupported(format!(
                        "{agg} without arguments across shards"
                    )));
                };
                let distinct = matches!(
                    list.duplicate_treatment,
                    Some(sqlparser::ast::DuplicateTreatment::Distinct)
                );
                let arg = match list.args.as_slice() {
                    [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => None,
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(_))] => Some(
                        call_arguments(self.idx.text(), expr_range)
                            .map(|r| self.range_text(r))
                            .ok_or_else(|| unsupported("rewriting this aggregate across shards"))?,
                    ),
                    _ => {
                        return Err(unsupported(format!(
                            "{agg} with several arguments across shards"
                        )))
                    }
                };
                item.kind = match (agg.as_str(), distinct) {
                    ("COUNT", false) => Kind::Count,
                    ("COUNT", true) => Kind::CountDistinct,
                    ("SUM", false) => Kind::Sum,
                    ("SUM", true) => Kind::SumDistinct,
                    ("MIN", _) => Kind::Min,
                    ("MAX", _) => Kind::Max,
                    ("AVG", false) => Kind::Avg,
                    (other, _) => {
                        return Err(unsupported(format!(
                            "{other}{} across shards",
                            if distinct { "(DISTINCT ...)" } else { "" }
                        )))
                    }
                };
                if matches!(item.kind, Kind::CountDistinct | Kind::SumDistinct) && arg.is_none() {
                    return Err(unsupported("COUNT(DISTINCT *)"));
                }
                match item.kind {
                    Kind::Avg => item.pushed = format!("SUM({})", arg.clone().unwrap_or_default()),
                    Kind::CountDistinct | Kind::SumDistinct => {
                        item.pushed = arg.clone().unwrap_or_default()
                    }
                    _ => {}
                }
                item.arg = arg;
                return Ok(item);
            }
        }
        if contains_aggregate(e) {
            return Err(unsupported(format!(
                "an expression over aggregates across shards ({})",
                item.name
            )));
        }
        Ok(item)
    }

    /// Finds (or adds as a helper) the column an ORDER BY / GROUP BY / HAVING term names.
    /// `range` is the term's text cut lexically from the statement, when known.
    fn resolve_text(
        &mut self,
        e: &Expr,
        allow_position: bool,
        range: Option<(usize, usize)>,
    ) -> Result<Pending, ProxyError> {
        if allow_position {
            if let Expr::Value(v) = e {
                if let Value::Number(n, _) = &v.value {
                    let p: usize = n.parse().map_err(|_| {
                        unsupported(format!("position {n} in ORDER BY or GROUP BY"))
                    })?;
                    if p == 0 || p > self.items.len() || self.items[p - 1].kind == Kind::Wildcard {
                        return Err(ProxyError::Syntax(format!("unknown column position {p}")));
                    }
                    return Ok(Pending::Item(p - 1));
                }
            }
        }
        if let Expr::Identifier(id) = e {
            if let Some(p) = self.items.iter().position(|i| {
                i.alias
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&id.value))
            }) {
                return Ok(Pending::Item(p));
            }
        }
        let text = match range {
            Some(r) => self.range_text(r),
            None => self.text(e)?,
        };
        let n = norm(&text);
        if let Some(p) = self
            .items
            .iter()
            .position(|i| i.norm.as_deref() == Some(&n))
        {
            return Ok(Pending::Item(p));
        }
        Ok(Pending::Hidden(self.add_hidden(text)))
    }

    /// A sort key on `p`, comparing strings through a WEIGHT_STRING helper column.
    fn key(
        &mut self,
        p: Pending,
        desc: bool,
    ) -> Result<(Pending, Option<Pending>, bool), ProxyError> {
        let weight_of = match p {
            Pending::Item(i) => match self.items[i].kind {
                Kind::Plain => Some(self.items[i].expr_text.clone()),
                Kind::Min | Kind::Max => Some(self.items[i].expr_text.clone()),
                Kind::CountDistinct | Kind::SumDistinct => self.items[i].arg.clone(),
                _ => None,
            },
            Pending::Hidden(j) => Some(self.hidden[j].clone()),
        };
        let weight = weight_of
            .filter(|t| t.parse::<f64>().is_err())
            .map(|t| Pending::Hidden(self.add_hidden(format!("WEIGHT_STRING(RTRIM({t}))"))));
        Ok((p, weight, desc))
    }
}

fn finish_keys(
    b: &Builder<'_>,
    keys: &[(Pending, Option<Pending>, bool)],
) -> Result<Vec<SortKey>, ProxyError> {
    keys.iter()
        .map(|(p, w, d)| {
            Ok(SortKey {
                col: b.col(*p)?,
                weight: w.map(|w| b.col(w)).transpose()?,
                desc: *d,
            })
        })
        .collect()
}

/// Builds the merge pipeline over `route` (whose query is replaced by the rebuilt one).
pub fn plan_merge(
    sql: &str,
    query: &AstQuery,
    select: &Select,
    mut route: Route,
    in_span: Option<sqlparser::tokenizer::Span>,
    idx: &TextIndex<'_>,
    placeholders: &[usize],
) -> Result<Primitive, ProxyError> {
    if query.with.is_some() {
        return Err(unsupported(
            "WITH with ORDER BY, LIMIT or aggregates across shards",
        ));
    }
    if !query.locks.is_empty() || select.into.is_some() || query.fetch.is_some() {
        return Err(unsupported(
            "FOR UPDATE, INTO or FETCH with ORDER BY, LIMIT or aggregates across shards",
        ));
    }
    if select.from.is_empty() {
        return Err(unsupported("this query across shards"));
    }
    let clauses = split_select(sql, 0, sql.len())
        .ok_or_else(|| unsupported("rewriting this query for a merge across shards"))?;
    if clauses.items.len() != select.projection.len() || clauses.tail.is_some() {
        return Err(unsupported(
            "rewriting this query for a merge across shards",
        ));
    }
    let mut b = Builder {
        idx,
        placeholders,
        items: Vec::new(),
        hidden: Vec::new(),
    };
    for (si, range) in select.projection.iter().zip(&clauses.items) {
        let item = b.item(si, *range)?;
        b.items.push(item);
    }
    let has_wildcard = b.items.iter().any(|i| i.kind == Kind::Wildcard);
    let has_agg = b
        .items
        .iter()
        .any(|i| !matches!(i.kind, Kind::Plain | Kind::Wildcard));
    let groups = group_exprs(select);
    let aggregating = has_agg || !groups.is_empty() || select.having.is_some();
    let distinct = matches!(select.distinct, Some(Distinct::Distinct));
    if aggregating && has_wildcard {
        return Err(unsupported(
            "SELECT * with GROUP BY or aggregates across shards",
        ));
    }
    if distinct && (aggregating || has_wildcard) {
        return Err(unsupported(
            "DISTINCT with *, GROUP BY or aggregates across shards",
        ));
    }
    let distinct_args: Vec<String> = b
        .items
        .iter()
        .filter(|i| matches!(i.kind, Kind::CountDistinct | Kind::SumDistinct))
        .filter_map(|i| i.arg.clone())
        .collect();
    if distinct_args
        .iter()
        .any(|a| norm(a) != norm(&distinct_args[0]))
    {
        return Err(unsupported(
            "aggregates over DISTINCT of different expressions across shards",
        ));
    }

    // ORDER BY terms and LIMIT.
    let order_terms: Vec<(&Expr, bool)> = match &query.order_by {
        Some(ob) => match &ob.kind {
            OrderByKind::Expressions(v) => v
                .iter()
                .map(|o| {
                    let desc = matches!(o.options.sort, Some(OrderBySort::Desc));
                    (&o.expr, desc)
                })
                .collect(),
            OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL")),
        },
        None => Vec::new(),
    };
    let limit = limit_of(query, idx, placeholders)?;
    if clauses.group.len() != group_exprs(select).len() || clauses.order.len() != order_terms.len()
    {
        return Err(unsupported(
            "rewriting this query for a merge across shards",
        ));
    }
    let order_ranges: Vec<(usize, usize)> = clauses
        .order
        .iter()
        .map(|r| strip_direction(sql, *r))
        .collect();

    let mut aggregates: Vec<(Aggregate, ())> = Vec::new();
    let _ = &mut aggregates;
    let mut plan_aggs: Vec<AggPending> = Vec::new();
    let mut renames: Vec<(Pending, String, Option<String>)> = Vec::new();
    let mut merge_keys;
    let mut group_keys = Vec::new();
    let mut order_keys = Vec::new();
    let mut distinct_keys = Vec::new();
    let mut having = None;
    let mut pushed_group: Vec<String> = Vec::new();
    let mut pushed_order: Vec<String> = Vec::new();
    let mut push_limit = false;

    if aggregating {
        for (g, range) in groups.iter().zip(&clauses.group) {
            let p = b.resolve_text(g, true, Some(*range))?;
            let k = b.key(p, false)?;
            group_keys.push(k);
            pushed_group.push(b.range_text(*range));
        }
        merge_keys = group_keys.clone();
        if let Some(arg) = distinct_args.first() {
            let p = b
                .items
                .iter()
                .position(|i| matches!(i.kind, Kind::CountDistinct | Kind::SumDistinct))
                .map(Pending::Item)
                .expect("a distinct aggregate exists");
            let k = b.key(p, false)?;
            merge_keys.push(k);
            pushed_group.push(arg.clone());
        }
        pushed_order = pushed_group.clone();
        for i in 0..b.items.len() {
            let p = Pending::Item(i);
            let it = &b.items[i];
            let (name, kind) = (it.name.clone(), it.kind.clone());
            match kind {
                Kind::Count => plan_aggs.push(AggPending::Count(p)),
                Kind::Sum => plan_aggs.push(AggPending::Sum(p)),
                Kind::Min | Kind::Max => {
                    let (_, w, _) = b.key(p, false)?;
                    plan_aggs.push(if kind == Kind::Min {
                        AggPending::Min(p, w)
                    } else {
                        AggPending::Max(p, w)
                    });
                }
                Kind::Avg => {
                    let arg = b.items[i].arg.clone().unwrap_or_default();
                    let c = Pending::Hidden(b.add_hidden(format!("COUNT({arg})")));
                    plan_aggs.push(AggPending::Avg(p, c));
                    renames.push((p, name, Some("avg".into())));
                }
                Kind::CountDistinct | Kind::SumDistinct => {
                    let (_, w, _) = b.key(p, false)?;
                    plan_aggs.push(if kind == Kind::CountDistinct {
                        AggPending::CountDistinct(p, w)
                    } else {
                        AggPending::SumDistinct(p, w)
                    });
                    let retype = (kind == Kind::CountDistinct).then(|| "count".to_string());
                    renames.push((p, name, retype));
                }
                Kind::Plain | Kind::Wildcard => {}
            }
        }
        if let Some(h) = &select.having {
            having = Some(scalar(h, &mut b, &mut plan_aggs, 0)?);
        }
        for ((e, desc), range) in order_terms.iter().zip(&order_ranges) {
            let p = resolve_after_aggregation(e, &mut b, &mut plan_aggs, Some(*range))?;
            order_keys.push(b.key(p, *desc)?);
        }
    } else {
        for ((e, desc), range) in order_terms.iter().zip(&order_ranges) {
            let p = b.resolve_text(e, true, Some(*range))?;
            order_keys.push(b.key(p, *desc)?);
        }
        if distinct {
            for i in 0..b.items.len() {
                let k = b.key(Pending::Item(i), false)?;
                distinct_keys.push(k);
                pushed_order.push(b.items[i].expr_text.clone());
            }
            merge_keys = distinct_keys.clone();
        } else {
            for ((_, desc), range) in order_terms.iter().zip(&order_ranges) {
                let t = b.range_text(*range);
                pushed_order.push(if *desc { format!("{t} DESC") } else { t });
            }
            merge_keys = order_keys.clone();
            push_limit = limit.is_some();
        }
    }

    // The statement the shards run.
    let mut text = String::from("SELECT ");
    if distinct {
        text.push_str("DISTINCT ");
    }
    let mut cols: Vec<String> = b.items.iter().map(|i| i.pushed.clone()).collect();
    cols.extend(b.hidden.iter().cloned());
    text.push_str(&cols.join(", "));
    text.push(' ');
    text.push_str(&from_where(&clauses, idx, placeholders, in_span)?);
    if !pushed_group.is_empty() {
        text.push_str(" GROUP BY ");
        text.push_str(&pushed_group.join(", "));
    }
    if !pushed_order.is_empty() {
        text.push_str(" ORDER BY ");
        text.push_str(&pushed_order.join(", "));
    }
    if push_limit {
        text.push_str(&format!(" LIMIT {MARKER_PREFIX}limit"));
    }
    let in_text = in_span
        .and_then(|sp| idx.range(sp))
        .map(|(a, z)| sql[a..z].to_string())
        .unwrap_or_default();
    check_rebuilt(&text, select, &in_text)?;
    route.query = Query::rewritten(&text);

    // The pipeline above it.
    let mut node = Primitive::Route(route);
    if !merge_keys.is_empty() {
        node = Primitive::MergeSort {
            keys: finish_keys(&b, &merge_keys)?,
            input: Box::new(node),
        };
    }
    if aggregating {
        node = Primitive::Aggregate {
            group: finish_keys(&b, &group_keys)?,
            aggregates: plan_aggs
                .iter()
                .map(|a| a.finish(&b))
                .collect::<Result<_, _>>()?,
            input: Box::new(node),
        };
        if let Some(h) = having {
            node = Primitive::Filter {
                predicate: finish_scalar(h, &b)?,
                input: Box::new(node),
            };
        }
        let sorted_by_groups = order_keys.is_empty()
            || (order_keys.len() <= group_keys.len()
                && order_keys
                    .iter()
                    .zip(&group_keys)
                    .all(|(o, g)| o.0 == g.0 && !o.2));
        if !sorted_by_groups {
            node = Primitive::Sort {
                keys: finish_keys(&b, &order_keys)?,
                input: Box::new(node),
            };
        }
    } else if distinct {
        node = Primitive::Distinct {
            keys: finish_keys(&b, &distinct_keys)?,
            input: Box::new(node),
        };
        if !order_keys.is_empty() {
            node = Primitive::Sort {
                keys: finish_keys(&b, &order_keys)?,
                input: Box::new(node),
            };
        }
    }
    if let Some((count, offset)) = limit {
        node = Primitive::Limit {
            count,
            offset,
            input: Box::new(node),
        };
    }
    let renames = renames
        .into_iter()
        .map(|(p, name, retype)| {
            Ok(Rename {
                col: b.col(p)?,
                name,
                retype,
            })
        })
        .collect::<Result<Vec<_>, ProxyError>>()?;
    Ok(Primitive::Project {
        hidden: b.hidden.len(),
        renames,
        input: Box::new(node),
    })
}

/// An aggregate before helper columns are counted.
enum AggPending {
    Count(Pending),
    Sum(Pending),
    Min(Pending, Option<Pending>),
    Max(Pending, Option<Pending>),
    Avg(Pending, Pending),
    CountDistinct(Pending, Option<Pending>),
    SumDistinct(Pending, Option<Pending>),
}

impl AggPending {
    fn finish(&self, b: &Builder<'_>) -> Result<Aggregate, ProxyError> {
        let w = |w: &Option<Pending>| w.map(|w| b.col(w)).transpose();
        Ok(match self {
            AggPending::Count(p) => Aggregate::Count(b.col(*p)?),
            AggPending::Sum(p) => Aggregate::Sum(b.col(*p)?),
            AggPending::Min(p, wt) => Aggregate::Min {
                col: b.col(*p)?,
                weight: w(wt)?,
            },
            AggPending::Max(p, wt) => Aggregate::Max {
                col: b.col(*p)?,
                weight: w(wt)?,
            },
            AggPending::Avg(s, c) => Aggregate::Avg {
                sum: b.col(*s)?,
                count: b.col(*c)?,
            },
            AggPending::CountDistinct(p, wt) => Aggregate::CountDistinct {
                col: b.col(*p)?,
                weight: w(wt)?,
            },
            AggPending::SumDistinct(p, wt) => Aggregate::SumDistinct {
                col: b.col(*p)?,
                weight: w(wt)?,
            },
        })
    }
}

/// After aggregation, a term must be a selected item, a group key, or an aggregate
/// (added as a helper column combined like the others).
fn resolve_after_aggregation(
    e: &Expr,
    b: &mut Builder<'_>,
    aggs: &mut Vec<AggPending>,
    range: Option<(usize, usize)>,
) -> Result<Pending, ProxyError> {
    let p = b.resolve_text(e, true, range)?;
    if let Pending::Hidden(j) = p {
        if let Expr::Function(f) = e {
            let name = aggregate_name(&f.name.to_string()).unwrap_or_default();
            let distinct =
                matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment.is_some());
            if distinct || f.over.is_some() {
                return Err(unsupported(format!(
                    "{name}(DISTINCT ...) in ORDER BY or HAVING across shards"
                )));
            }
            let col = Pending::Hidden(j);
            match name.as_str() {
                "COUNT" => aggs.push(AggPending::Count(col)),
                "SUM" => aggs.push(AggPending::Sum(col)),
                "MIN" | "MAX" => {
                    let text = b.hidden[j].clone();
                    let w = Some(Pending::Hidden(
                        b.add_hidden(format!("WEIGHT_STRING(RTRIM({text}))")),
                    ));
                    aggs.push(if name == "MIN" {
                        AggPending::Min(col, w)
                    } else {
                        AggPending::Max(col, w)
                    });
                }
                other => {
                    return Err(unsupported(format!(
                        "{other} in ORDER BY or HAVING across shards"
                    )))
                }
            }
            return Ok(p);
        }
        // A grouped expression that is not selected is fine; anything else is not.
        return Err(unsupported(format!(
            "ORDER BY or HAVING on {} (not selected, grouped or aggregated) across shards",
            b.hidden[j]
        )));
    }
    Ok(p)
}

/// A HAVING condition the proxy evaluates.
enum ScalarPending {
    Col(Pending),
    Literal(String),
    Null,
    Not(Box<ScalarPending>),
    And(Box<ScalarPending>, Box<ScalarPending>),
    Or(Box<ScalarPending>, Box<ScalarPending>),
    Compare(CompareOp, Box<ScalarPending>, Box<ScalarPending>),
    IsNull(Box<ScalarPending>, bool),
    Arith(ArithOp, Box<ScalarPending>, Box<ScalarPending>),
}

/// How deep a HAVING expression the proxy evaluates (it is walked recursively at every
/// row, on an ordinary stack).
const MAX_SCALAR_DEPTH: usize = 64;

fn scalar(
    e: &Expr,
    b: &mut Builder<'_>,
    aggs: &mut Vec<AggPending>,
    depth: usize,
) -> Result<ScalarPending, ProxyError> {
    if depth > MAX_SCALAR_DEPTH {
        return Err(unsupported(format!(
            "a HAVING expression nested deeper than {MAX_SCALAR_DEPTH} levels across shards"
        )));
    }
    let d = depth + 1;
    let bx = |s| Box::new(s);
    Ok(match e {
        Expr::Nested(inner) => scalar(inner, b, aggs, d)?,
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => ScalarPending::Not(bx(scalar(expr, b, aggs, d)?)),
        Expr::IsNull(x) => ScalarPending::IsNull(bx(scalar(x, b, aggs, d)?), true),
        Expr::IsNotNull(x) => ScalarPending::IsNull(bx(scalar(x, b, aggs, d)?), false),
        Expr::BinaryOp { left, op, right } => {
            let l = bx(scalar(left, b, aggs, d)?);
            let r = bx(scalar(right, b, aggs, d)?);
            match op {
                BinaryOperator::And => ScalarPending::And(l, r),
                BinaryOperator::Or => ScalarPending::Or(l, r),
                BinaryOperator::Eq => ScalarPending::Compare(CompareOp::Eq, l, r),
                BinaryOperator::NotEq => ScalarPending::Compare(CompareOp::NotEq, l, r),
                BinaryOperator::Lt => ScalarPending::Compare(CompareOp::Lt, l, r),
                BinaryOperator::LtEq => ScalarPending::Compare(CompareOp::LtEq, l, r),
                BinaryOperator::Gt => ScalarPending::Compare(CompareOp::Gt, l, r),
                BinaryOperator::GtEq => ScalarPending::Compare(CompareOp::GtEq, l, r),
                BinaryOperator::Plus => ScalarPending::Arith(ArithOp::Add, l, r),
                BinaryOperator::Minus => ScalarPending::Arith(ArithOp::Sub, l, r),
                BinaryOperator::Multiply => ScalarPending::Arith(ArithOp::Mul, l, r),
                BinaryOperator::Divide => ScalarPending::Arith(ArithOp::Div, l, r),
                other => {
                    return Err(unsupported(format!(
                        "operator {other} in HAVING across shards"
                    )))
                }
            }
        }
        Expr::Value(v) => match &v.value {
            Value::Null => ScalarPending::Null,
            Value::Number(n, _) => ScalarPending::Literal(n.clone()),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                ScalarPending::Literal(s.clone())
            }
            _ => return Err(unsupported("this literal in HAVING across shards")),
        },
        other => ScalarPending::Col(resolve_after_aggregation(other, b, aggs, None)?),
    })
}

fn finish_scalar(s: ScalarPending, b: &Builder<'_>) -> Result<Scalar, ProxyError> {
    let f = |x: Box<ScalarPending>| finish_scalar(*x, b).map(Box::new);
    Ok(match s {
        ScalarPending::Col(p) => Scalar::Col(b.col(p)?),
        ScalarPending::Literal(l) => Scalar::Literal(l),
        ScalarPending::Null => Scalar::Null,
        ScalarPending::Not(x) => Scalar::Not(f(x)?),
        ScalarPending::And(l, r) => Scalar::And(f(l)?, f(r)?),
        ScalarPending::Or(l, r) => Scalar::Or(f(l)?, f(r)?),
        ScalarPending::Compare(op, l, r) => Scalar::Compare(op, f(l)?, f(r)?),
        ScalarPending::IsNull(x, is) => Scalar::IsNull(f(x)?, is),
        ScalarPending::Arith(op, l, r) => Scalar::Arith(op, f(l)?, f(r)?),
    })
}

/// LIMIT count [OFFSET offset] as values.
fn limit_of(
    query: &AstQuery,
    idx: &TextIndex<'_>,
    placeholders: &[usize],
) -> Result<Option<(ValueExpr, Option<ValueExpr>)>, ProxyError> {
    let (count, offset) = match &query.limit_clause {
        None => return Ok(None),
        Some(LimitClause::LimitOffset {
            limit: None,
            offset: None,
            ..
        }) => return Ok(None),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(unsupported("LIMIT BY"));
            }
            (limit.as_ref(), offset.as_ref().map(|o| &o.value))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (Some(limit), Some(offset)),
    };
    let val = |e: &Expr| -> Result<ValueExpr, ProxyError> {
        match value_of(e, idx, placeholders) {
            Some(v @ ValueExpr::Param(_)) => Ok(v),
            Some(
                v @ ValueExpr::Literal {
                    value: SqlValue::Int(_) | SqlValue::UInt(_),
                    ..
                },
            ) => Ok(v),
            _ => Err(ProxyError::Syntax("LIMIT and OFFSET take integers".into())),
        }
    };
    let Some(count) = count else {
        return Err(unsupported("OFFSET without LIMIT across shards"));
    };
    Ok(Some((val(count)?, offset.map(val).transpose()?)))
}

/// The statement's `FROM ... WHERE ...` text, with the routing IN list as a marker.
fn from_where(
    clauses: &SelectClauses,
    idx: &TextIndex<'_>,
    placeholders: &[usize],
    in_span: Option<sqlparser::tokenizer::Span>,
) -> Result<String, ProxyError> {
    let (start, from_end) = clauses
        .from
        .ok_or_else(|| unsupported("rewriting this query for a merge across shards"))?;
    let end = clauses.where_.map(|w| w.1).unwrap_or(from_end);
    match in_span.and_then(|s| idx.range(s)) {
        Some((a, z)) if a >= start && z <= end => Ok(format!(
            "{}{MARKER_PREFIX}in{}",
            idx.slice_with_params(start, a, placeholders),
            idx.slice_with_params(z, end, placeholders)
        )),
        _ => Ok(idx.slice_with_params(start, end, placeholders)),
    }
}

/// The rebuilt statement must parse, and its FROM and WHERE must be exactly the
/// original's (markers stand in for what they replace) — a safety net against any
/// mistake in cutting the text.
fn check_rebuilt(text: &str, original: &Select, in_text: &str) -> Result<(), ProxyError> {
    let probe = super::sqltext::SqlTemplate::new(text).render(
        |_, o| o.push('?'),
        |m, o| match m {
            "in" => o.push_str(in_text),
            m if m.starts_with('p') => o.push('?'),
            _ => o.push('1'),
        },
    );
    let fail = |why: &str| {
        tracing::warn!(%text, why, "rebuilt statement refused");
        unsupported("rewriting this query for a merge across shards")
    };
    let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, &probe)
        .map_err(|_| fail("does not parse"))?;
    let Some(sqlparser::ast::Statement::Query(q)) = parsed.first() else {
        return Err(fail("not a query"));
    };
    let sqlparser::ast::SetExpr::Select(s) = &*q.body else {
        return Err(fail("not a select"));
    };
    let shown =
        |v: &[sqlparser::ast::TableWithJoins]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    if shown(&s.from) != shown(&original.from)
        || s.selection.as_ref().map(|e| e.to_string())
            != original.selection.as_ref().map(|e| e.to_string())
    {
        return Err(fail("FROM or WHERE changed"));
    }
    Ok(())
}
