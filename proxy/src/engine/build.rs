//! Building the merge pipeline ([`Node`] tree) from a plan's merge primitives, over row
//! sources that are shards (the [`Exec`](super::Exec) of a statement) or rows in memory
//! (the tests below run planner output on hand-made shard answers).

use super::pipeline::{AggregateNode, Node};
use super::reader::ShardReader;
use super::values::Key;
use crate::error::ProxyError;
use crate::planner::plan::{Primitive, Route};
use crate::planner::values::ValueExpr;
use crate::wire::ColumnDef;
use futures::future::BoxFuture;

/// A built stream and its columns, or the readers opened before the failure.
pub type Built = Result<(Node, Vec<ColumnDef>), (Vec<ShardReader>, ProxyError)>;

/// Readers opened for a route, with their columns; or those opened before a failure.
pub type Opened = Result<(Vec<ShardReader>, Vec<ColumnDef>), (Vec<ShardReader>, ProxyError)>;

/// Where a merge's routes get their rows.
pub trait Sources: Send {
    /// Sends the route's query (with `limit` pushed down) and reads each shard's head.
    fn open<'b>(&'b mut self, r: &'b Route, limit: Option<u64>) -> BoxFuture<'b, Opened>;
    /// A LIMIT / OFFSET value (a literal or a bound placeholder).
    fn number(&self, v: &ValueExpr) -> Result<u64, ProxyError>;
    /// Most rows a buffering node may hold (`session.max_merge_rows`).
    fn max_merge_rows(&self) -> u64;
}

/// Builds the stream for a plan node. On failure returns the readers opened so far.
pub fn build<'b>(
    src: &'b mut dyn Sources,
    p: &'b Primitive,
    limit: Option<u64>,
) -> BoxFuture<'b, Built> {
    Box::pin(async move {
        let keys = |ks: &[crate::planner::plan::SortKey], cols: &[ColumnDef]| -> Vec<Key> {
            ks.iter().map(|k| Key::resolve(k, cols)).collect()
        };
        Ok(match p {
            Primitive::Route(r) => {
                let (readers, columns) = src.open(r, limit).await?;
                (
                    Node::Concat {
                        readers,
                        current: 0,
                    },
                    columns,
                )
            }
            Primitive::MergeSort { keys: k, input } => {
                let Primitive::Route(r) = &**input else {
                    return Err((
                        Vec::new(),
                        ProxyError::Internal("merge sort over a non-route".into()),
                    ));
                };
                let (readers, columns) = src.open(r, limit).await?;
                (
                    Node::MergeSort {
                        heads: Vec::with_capacity(readers.len()),
                        readers,
                        keys: keys(k, &columns),
                        primed: false,
                    },
                    columns,
                )
            }
            Primitive::Aggregate {
                group,
                aggregates,
                input,
            } => {
                let (node, columns) = build(src, input, limit).await?;
                let group = keys(group, &columns);
                (
                    Node::Aggregate(Box::new(AggregateNode::new(
                        node,
                        group,
                        aggregates.clone(),
                        columns.clone(),
                    ))),
                    columns,
                )
            }
            Primitive::Filter { predicate, input } => {
                let (node, columns) = build(src, input, limit).await?;
                (
                    Node::Filter {
                        input: Box::new(node),
                        predicate: predicate.clone(),
                        columns: columns.clone(),
                    },
                    columns,
                )
            }
            Primitive::Sort { keys: k, input } => {
                let (node, columns) = build(src, input, limit).await?;
                (
                    Node::Sort {
                        input: Box::new(node),
                        keys: keys(k, &columns),
                        sorted: None,
                        limit: src.max_merge_rows(),
                    },
                    columns,
                )
            }
            Primitive::Distinct { keys: k, input } => {
                let (node, columns) = build(src, input, limit).await?;
                (
                    Node::Distinct {
                        input: Box::new(node),
                        keys: keys(k, &columns),
                        last: None,
                    },
                    columns,
                )
            }
            Primitive::Limit {
                count,
                offset,
                input,
            } => {
                let count = src.number(count).map_err(|e| (Vec::new(), e))?;
                let offset = match offset {
                    Some(o) => src.number(o).map_err(|e| (Vec::new(), e))?,
                    None => 0,
                };
                let (node, columns) = build(src, input, limit).await?;
                (
                    Node::Limit {
                        input: Box::new(node),
                        skip: offset,
                        remaining: count,
                    },
                    columns,
                )
            }
            Primitive::Project { input, .. } => build(src, input, limit).await?,
            Primitive::Concat(branches) => {
                let mut nodes = Vec::new();
                let mut columns = Vec::new();
                for b in branches {
                    match build(src, b, None).await {
                        Ok((n, c)) => {
                            if columns.is_empty() {
                                columns = c;
                            } else if c.len() != columns.len() {
                                let mut readers: Vec<ShardReader> =
                                    nodes.into_iter().flat_map(Node::into_readers).collect();
                                readers.extend(n.into_readers());
                                return Err((
                                    readers,
                                    ProxyError::Backend(crate::wire::ErrPacket::new(
                                        1222,
                                        "21000",
                                        "The used SELECT statements have a different number of columns",
                                    )),
                                ));
                            }
                            nodes.push(n);
                        }
                        Err((mut readers, e)) => {
                            for n in nodes {
                                readers.extend(n.into_readers());
                            }
                            return Err((readers, e));
                        }
                    }
                }
                (
                    Node::Union {
                        branches: nodes,
                        current: 0,
                    },
                    columns,
                )
            }
            Primitive::Insert(_)
            | Primitive::Write(_)
            | Primitive::InsertSelect(_)
            | Primitive::MoveRows(_)
            | Primitive::Gather(_)
            | Primitive::GatherWrite(_)
            | Primitive::Fallback { .. } => {
                return Err((
                    Vec::new(),
                    ProxyError::Internal("a write inside a merge".into()),
                ))
            }
        })
    })
}

/// The LIMIT pushed to shards: count + offset of the plan's Limit node, if any.
pub fn pushed_limit(src: &dyn Sources, p: &Primitive) -> Result<Option<u64>, ProxyError> {
    match p {
        Primitive::Limit { count, offset, .. } => {
            let c = src.number(count)?;
            let o = match offset {
                Some(o) => src.number(o)?,
                None => 0,
            };
            Ok(Some(c.saturating_add(o)))
        }
        Primitive::Project { input, .. }
        | Primitive::Sort { input, .. }
        | Primitive::Filter { input, .. }
        | Primitive::Distinct { input, .. }
        | Primitive::Aggregate { input, .. }
        | Primitive::MergeSort { input, .. } => pushed_limit(src, input),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reader::Row;
    use crate::planner::{golden, plan, Plan, PlanContext};
    use bytes::Bytes;
    use std::collections::VecDeque;

    /// What each route was asked: the query and the pushed-down limit.
    type Asked = Vec<(String, Option<u64>)>;
    /// One route's answer: columns, and each shard's rows.
    type Answer = (Vec<ColumnDef>, Vec<Vec<Row>>);

    /// Shard answers handed out in the order routes are opened; records what was asked.
    struct Memory {
        answers: VecDeque<Answer>,
        asked: Asked,
    }

    impl Sources for Memory {
        fn open<'b>(&'b mut self, r: &'b Route, limit: Option<u64>) -> BoxFuture<'b, Opened> {
            self.asked.push((r.query.text.to_string(), limit));
            let (columns, shards) = self.answers.pop_front().expect("an answer per route");
            let readers = shards
                .into_iter()
                .map(|rows| ShardReader::from_rows(columns.clone(), rows))
                .collect();
            Box::pin(async move { Ok((readers, columns)) })
        }

        fn number(&self, v: &ValueExpr) -> Result<u64, ProxyError> {
            match v {
                ValueExpr::Literal { text, .. } => Ok(text.parse().unwrap()),
                ValueExpr::Param(_) => panic!("no parameters here"),
            }
        }

        fn max_merge_rows(&self) -> u64 {
            1000
        }
    }

    fn root(sql: &str) -> Primitive {
        let snap = golden::snapshot();
        let schema = golden::schema();
        let ctx = PlanContext {
            snapshot: &snap,
            schema: &schema,
            keyspace: Some("customer"),
            shard: None,
        };
        match plan(sql, &ctx).unwrap() {
            Plan::Query(q) => q.root,
            other => panic!("{other:?}"),
        }
    }

    fn col(name: &str, numeric: bool) -> ColumnDef {
        if numeric {
            ColumnDef::int(name)
        } else {
            ColumnDef::text(name)
        }
    }

    fn row(cells: &[&str]) -> Row {
        cells
            .iter()
            .map(|c| (*c != "NULL").then(|| Bytes::copy_from_slice(c.as_bytes())))
            .collect()
    }

    /// Plans `sql`, runs its merge over the given shard answers, returns the visible rows
    /// and what each route was asked.
    fn run(sql: &str, answers: Vec<Answer>) -> (Vec<Vec<String>>, Asked) {
        let p = root(sql);
        let hidden = match &p {
            Primitive::Project { hidden, .. } => *hidden,
            _ => 0,
        };
        let mut mem = Memory {
            answers: answers.into(),
            asked: Vec::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let limit = pushed_limit(&mem, &p).unwrap();
        let rows = rt.block_on(async {
            let (mut node, columns) = match build(&mut mem, &p, limit).await {
                Ok(x) => x,
                Err((_, e)) => panic!("{e}"),
            };
            let visible = columns.len() - hidden;
            let mut out = Vec::new();
            while let Some(r) = node.next_row().await.unwrap() {
                out.push(
                    r[..visible]
                        .iter()
                        .map(|c| match c {
                            Some(b) => String::from_utf8_lossy(b).into_owned(),
                            None => "NULL".into(),
                        })
                        .collect(),
                );
            }
            out
        });
        (rows, mem.asked)
    }

    /// A text cell and its weight (a case-insensitive collation: upper case).
    fn w(v: &str) -> [String; 2] {
        [v.to_string(), v.to_uppercase()]
    }

    fn rows_of(cells: &[Vec<String>]) -> Vec<Row> {
        cells
            .iter()
            .map(|r| row(&r.iter().map(String::as_str).collect::<Vec<_>>()))
            .collect()
    }

    #[test]
    fn merge_sort_with_a_pushed_limit_keeps_the_collation_order() {
        let cols = vec![
            col("customer_id", true),
            col("name", false),
            col("w", false),
        ];
        let shard = |v: &[(&str, &str)]| -> Vec<Row> {
            rows_of(
                &v.iter()
                    .map(|(id, n)| [vec![id.to_string()], w(n).to_vec()].concat())
                    .collect::<Vec<_>>(),
            )
        };
        let (rows, asked) = run(
            "select customer_id, name from customer order by name limit 2 offset 1",
            vec![(
                cols,
                vec![
                    shard(&[("4", "Bob"), ("9", "dave"), ("2", "Erin")]),
                    shard(&[("7", "alice"), ("1", "carol"), ("3", "Zoe")]),
                ],
            )],
        );
        // Bob sorts before carol under the collation (not by bytes: 'B' < 'c' anyway,
        // but 'Erin' < 'dave' by bytes and after it by weight).
        assert_eq!(rows, [["4", "Bob"], ["1", "carol"]]);
        assert_eq!(
            asked,
            [(
                "SELECT customer_id, name, WEIGHT_STRING(RTRIM(name)) from customer ORDER BY name LIMIT :sg_limit".to_string(),
                Some(3)
            )]
        );
    }

    #[test]
    fn partial_aggregates_combine_per_group() {
        let cols = [
            "sku",
            "count(*)",
            "sum(price)",
            "min(price)",
            "max(price)",
            "w",
            "wmin",
            "wmax",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| col(n, (1..=4).contains(&i)))
        .collect();
        let r = |sku: &str, n: &str, sum: &str, min: &str, max: &str| -> Vec<String> {
            let weight = |v: &str| {
                if v == "NULL" {
                    "NULL".into()
                } else {
                    format!("{v:0>4}")
                }
            };
            vec![
                sku.into(),
                n.into(),
                sum.into(),
                min.into(),
                max.into(),
                sku.to_uppercase(),
                weight(min),
                weight(max),
            ]
        };
        let (rows, asked) = run(
            "select sku, count(*), sum(price), min(price), max(price) from corder group by sku order by sku",
            vec![(
                cols,
                vec![
                    rows_of(&[r("a", "2", "30", "10", "20"), r("c", "1", "5", "5", "5")]),
                    rows_of(&[r("A", "1", "7", "7", "7"), r("b", "3", "NULL", "NULL", "NULL")]),
                ],
            )],
        );
        // 'a' and 'A' are one group under the collation.
        assert_eq!(
            rows,
            [
                ["a", "3", "37", "7", "20"],
                ["b", "3", "NULL", "NULL", "NULL"],
                ["c", "1", "5", "5", "5"]
            ]
        );
        assert!(
            asked[0].0.contains("GROUP BY sku ORDER BY sku"),
            "{asked:?}"
        );
    }

    #[test]
    fn having_and_order_by_an_aggregate_run_after_combining() {
        // HAVING c > 2 holds only once the shards' counts are added up.
        let r = |sku: &str, c: &str| vec![sku.to_string(), c.to_string(), sku.to_uppercase()];
        let (rows, asked) = run(
            "select sku, count(*) c from corder group by sku having c > 2 order by c desc, sku",
            vec![(
                vec![col("sku", false), col("c", true), col("w", false)],
                vec![
                    rows_of(&[r("a", "2"), r("b", "1"), r("d", "3")]),
                    rows_of(&[r("a", "2"), r("b", "1"), r("c", "9")]),
                ],
            )],
        );
        assert_eq!(rows, [["c", "9"], ["a", "4"], ["d", "3"]]);
        assert!(
            !asked[0].0.to_ascii_uppercase().contains("HAVING"),
            "{asked:?}"
        );
    }

    #[test]
    fn distinct_across_shards_drops_duplicates() {
        let (rows, _) = run(
            "select distinct sku from corder order by sku",
            vec![(
                vec![col("sku", false), col("w", false)],
                vec![
                    rows_of(&[w("a").to_vec(), w("b").to_vec(), w("d").to_vec()]),
                    rows_of(&[w("B").to_vec(), w("c").to_vec(), w("d").to_vec()]),
                ],
            )],
        );
        assert_eq!(rows, [["a"], ["b"], ["c"], ["d"]]);
    }

    #[test]
    fn union_all_concatenates_branches() {
        let cols = vec![col("order_id", true)];
        let (rows, asked) = run(
            "select order_id from corder where order_id < 3 union all select customer_id from customer where customer_id > 8",
            vec![
                (cols.clone(), vec![vec![row(&["1"])], vec![row(&["2"])]]),
                (cols, vec![vec![row(&["9"])], vec![]]),
            ],
        );
        assert_eq!(rows, [["1"], ["2"], ["9"]]);
        assert_eq!(asked.len(), 2);
    }
}
