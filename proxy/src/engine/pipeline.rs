//! The merge pipeline: a pull-based tree of row streams built from a plan's merge
//! primitives. Streaming where the shape allows (merge sort, sorted aggregation, distinct,
//! limit hold a row per shard or per group); `Sort` buffers, bounded by
//! `session.max_merge_rows`.

use super::reader::{Row, ShardReader};
use super::values::{compare_rows, kind_of, truth, Key, Kind, Num};
use crate::error::ProxyError;
use crate::planner::plan::{Aggregate, Scalar};
use crate::wire::ColumnDef;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::cmp::Ordering;
use std::collections::VecDeque;

/// A stream of rows.
pub enum Node {
    /// Shards' rows one shard after the other.
    Concat {
        readers: Vec<ShardReader>,
        current: usize,
    },
    /// Shards' sorted rows merged into one sorted stream.
    MergeSort {
        readers: Vec<ShardReader>,
        heads: Vec<Option<Row>>,
        keys: Vec<Key>,
        primed: bool,
    },
    Aggregate(Box<AggregateNode>),
    Filter {
        input: Box<Node>,
        predicate: Scalar,
        columns: Vec<ColumnDef>,
    },
    Sort {
        input: Box<Node>,
        keys: Vec<Key>,
        sorted: Option<VecDeque<Row>>,
        limit: u64,
    },
    Distinct {
        input: Box<Node>,
        keys: Vec<Key>,
        last: Option<Row>,
    },
    Limit {
        input: Box<Node>,
        skip: u64,
        remaining: u64,
    },
    /// UNION ALL branches one after the other.
    Union {
        branches: Vec<Node>,
        current: usize,
    },
}

impl Node {
    /// The next row, or `None` when the stream is over.
    pub fn next_row(&mut self) -> BoxFuture<'_, Result<Option<Row>, ProxyError>> {
        Box::pin(async move {
            match self {
                Node::Concat { readers, current } => {
                    while *current < readers.len() {
                        if let Some(r) = readers[*current].next().await? {
                            return Ok(Some(r));
                        }
                        *current += 1;
                    }
                    Ok(None)
                }
                Node::MergeSort {
                    readers,
                    heads,
                    keys,
                    primed,
                } => {
                    if !*primed {
                        for r in readers.iter_mut() {
                            heads.push(r.next().await?);
                        }
                        *primed = true;
                    }
                    let mut best: Option<usize> = None;
                    for (i, h) in heads.iter().enumerate() {
                        let Some(row) = h else { continue };
                        best = match best {
                            None => Some(i),
                            Some(b) => {
                                let cur = heads[b].as_ref().expect("best has a row");
                                if compare_rows(keys, row, cur) == Ordering::Less {
                                    Some(i)
                                } else {
                                    Some(b)
                                }
                            }
                        };
                    }
                    let Some(b) = best else { return Ok(None) };
                    let next = readers[b].next().await?;
                    Ok(std::mem::replace(&mut heads[b], next))
                }
                Node::Aggregate(a) => a.next_group().await,
                Node::Filter {
                    input,
                    predicate,
                    columns,
                } => loop {
                    let Some(row) = input.next_row().await? else {
                        return Ok(None);
                    };
                    if truth(predicate, &row, columns) == Some(true) {
                        return Ok(Some(row));
                    }
                },
                Node::Sort {
                    input,
                    keys,
                    sorted,
                    limit,
                } => {
                    if sorted.is_none() {
                        let mut all = Vec::new();
                        while let Some(r) = input.next_row().await? {
                            all.push(r);
                            if all.len() as u64 > *limit {
                                return Err(ProxyError::MergeTooLarge { limit: *limit });
                            }
                        }
                        all.sort_by(|a, b| compare_rows(keys, a, b));
                        *sorted = Some(all.into());
                    }
                    Ok(sorted.as_mut().and_then(|s| s.pop_front()))
                }
                Node::Distinct { input, keys, last } => loop {
                    let Some(row) = input.next_row().await? else {
                        return Ok(None);
                    };
                    let dup = last
                        .as_ref()
                        .is_some_and(|l| compare_rows(keys, l, &row) == Ordering::Equal);
                    if !dup {
                        *last = Some(row.clone());
                        return Ok(Some(row));
                    }
                },
                Node::Limit {
                    input,
                    skip,
                    remaining,
                } => {
                    while *skip > 0 {
                        if input.next_row().await?.is_none() {
                            return Ok(None);
                        }
                        *skip -= 1;
                    }
                    if *remaining == 0 {
                        return Ok(None);
                    }
                    *remaining -= 1;
                    input.next_row().await
                }
                Node::Union { branches, current } => {
                    while *current < branches.len() {
                        if let Some(r) = branches[*current].next_row().await? {
                            return Ok(Some(r));
                        }
                        *current += 1;
                    }
                    Ok(None)
                }
            }
        })
    }

    /// Every shard reader under this node (to drain and return their connections).
    pub fn into_readers(self) -> Vec<ShardReader> {
        match self {
            Node::Concat { readers, .. } | Node::MergeSort { readers, .. } => readers,
            Node::Aggregate(a) => a.input.into_readers(),
            Node::Filter { input, .. }
            | Node::Sort { input, .. }
            | Node::Distinct { input, .. }
            | Node::Limit { input, .. } => input.into_readers(),
            Node::Union { branches, .. } => {
                branches.into_iter().flat_map(Node::into_readers).collect()
            }
        }
    }
}

/// Combining sorted partial aggregates group by group.
pub struct AggregateNode {
    pub input: Node,
    pub group: Vec<Key>,
    pub aggregates: Vec<Aggregate>,
    pub columns: Vec<ColumnDef>,
    pending: Option<Row>,
    done: bool,
    emitted: bool,
}

/// The running value of one aggregate in the current group.
enum Acc {
    Count(i128),
    Sum(Option<Num>),
    Extreme(Option<Row>),
    Avg(Option<Num>, i128),
    Distinct {
        last: Option<Row>,
        count: i128,
        sum: Option<Num>,
    },
}

impl AggregateNode {
    pub fn new(
        input: Node,
        group: Vec<Key>,
        aggregates: Vec<Aggregate>,
        columns: Vec<ColumnDef>,
    ) -> Self {
        AggregateNode {
            input,
            group,
            aggregates,
            columns,
            pending: None,
            done: false,
            emitted: false,
        }
    }

    fn col(&self, c: crate::planner::plan::Col) -> usize {
        c.index(self.columns.len())
    }

    fn kind(&self, i: usize) -> Kind {
        self.columns.get(i).map(kind_of).unwrap_or(Kind::Bytes)
    }

    fn start(&self) -> Vec<Acc> {
        self.aggregates
            .iter()
            .map(|a| match a {
                Aggregate::Count(_) => Acc::Count(0),
                Aggregate::Sum(_) => Acc::Sum(None),
                Aggregate::Min { .. } | Aggregate::Max { .. } => Acc::Extreme(None),
                Aggregate::Avg { .. } => Acc::Avg(None, 0),
                Aggregate::CountDistinct { .. } | Aggregate::SumDistinct { .. } => Acc::Distinct {
                    last: None,
                    count: 0,
                    sum: None,
                },
            })
            .collect()
    }

    fn add(&self, accs: &mut [Acc], row: &Row) {
        for (a, acc) in self.aggregates.iter().zip(accs.iter_mut()) {
            match (a, acc) {
                (Aggregate::Count(c), Acc::Count(n)) => {
                    let i = self.col(*c);
                    *n += cell_int(row, i);
                }
                (Aggregate::Sum(c), Acc::Sum(s)) => {
                    let i = self.col(*c);
                    add_num(s, self.kind(i), row, i);
                }
                (Aggregate::Min { col, weight }, Acc::Extreme(best))
                | (Aggregate::Max { col, weight }, Acc::Extreme(best)) => {
                    let i = self.col(*col);
                    if row.get(i).is_none_or(|c| c.is_none()) {
                        continue;
                    }
                    let key = Key {
                        col: i,
                        weight: weight.map(|w| self.col(w)),
                        desc: false,
                        kind: self.kind(i),
                    };
                    let want = if matches!(a, Aggregate::Min { .. }) {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                    let replace = match best {
                        None => true,
                        Some(b) => key.compare(row, b) == want,
                    };
                    if replace {
                        *best = Some(row.clone());
                    }
                }
                (Aggregate::Avg { sum, count }, Acc::Avg(s, n)) => {
                    let i = self.col(*sum);
                    add_num(s, self.kind(i), row, i);
                    *n += cell_int(row, self.col(*count));
                }
                (Aggregate::CountDistinct { col, weight }, Acc::Distinct { last, count, sum })
                | (Aggregate::SumDistinct { col, weight }, Acc::Distinct { last, count, sum }) => {
                    let i = self.col(*col);
                    if row.get(i).is_none_or(|c| c.is_none()) {
                        continue;
                    }
                    let key = Key {
                        col: i,
                        weight: weight.map(|w| self.col(w)),
                        desc: false,
                        kind: self.kind(i),
                    };
                    let new = last
                        .as_ref()
                        .is_none_or(|l| key.compare(l, row) != Ordering::Equal);
                    if new {
                        *count += 1;
                        add_num(sum, self.kind(i), row, i);
                        *last = Some(row.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// The group's output row: its first row with every aggregate column replaced.
    fn finish(&self, first: Option<Row>, accs: Vec<Acc>) -> Row {
        let mut row = first.unwrap_or_else(|| vec![None; self.columns.len()]);
        for (a, acc) in self.aggregates.iter().zip(accs) {
            let (target, value): (usize, Option<Bytes>) = match (a, acc) {
                (Aggregate::Count(c), Acc::Count(n)) => {
                    (self.col(*c), Some(Bytes::from(n.to_string())))
                }
                (Aggregate::Sum(c), Acc::Sum(s)) => {
                    let i = self.col(*c);
                    let d = self.columns.get(i).map(|c| c.decimals).unwrap_or(0);
                    (i, s.map(|s| Bytes::from(s.render(d))))
                }
                (Aggregate::Min { col, weight }, Acc::Extreme(best))
                | (Aggregate::Max { col, weight }, Acc::Extreme(best)) => {
                    let i = self.col(*col);
                    if let Some(w) = weight {
                        let wi = self.col(*w);
                        if wi < row.len() {
                            row[wi] = best.as_ref().and_then(|b| b.get(wi).cloned().flatten());
                        }
                    }
                    (i, best.and_then(|b| b.get(i).cloned().flatten()))
                }
                (Aggregate::Avg { sum, .. }, Acc::Avg(s, n)) => {
                    let i = self.col(*sum);
                    let d = self.columns.get(i).map(|c| c.decimals).unwrap_or(0);
                    let v = match (s, n) {
                        (Some(_), 0) | (None, _) => None,
                        (Some(Num::Float(f)), n) => Some(Num::Float(f / n as f64).render(31)),
                        (Some(Num::Exact(x)), n) => Some(
                            Num::Exact(x / bigdecimal::BigDecimal::from(n as i64))
                                .render((d + 4).min(30)),
                        ),
                    };
                    (i, v.map(Bytes::from))
                }
                (Aggregate::CountDistinct { col, .. }, Acc::Distinct { count, .. }) => {
                    (self.col(*col), Some(Bytes::from(count.to_string())))
                }
                (Aggregate::SumDistinct { col, .. }, Acc::Distinct { sum, .. }) => {
                    let i = self.col(*col);
                    let d = self.columns.get(i).map(|c| c.decimals).unwrap_or(0);
                    (i, sum.map(|s| Bytes::from(s.render(d))))
                }
                _ => continue,
            };
            if target < row.len() {
                row[target] = value;
            }
        }
        row
    }

    async fn next_group(&mut self) -> Result<Option<Row>, ProxyError> {
        if self.done {
            return Ok(None);
        }
        let first = match self.pending.take() {
            Some(r) => Some(r),
            None => self.input.next_row().await?,
        };
        let Some(first) = first else {
            self.done = true;
            // A global aggregate over no rows still answers one row (COUNT = 0, SUM NULL).
            if self.group.is_empty() && !self.emitted {
                self.emitted = true;
                return Ok(Some(self.finish(None, self.start())));
            }
            return Ok(None);
        };
        let mut accs = self.start();
        self.add(&mut accs, &first);
        loop {
            match self.input.next_row().await? {
                None => {
                    self.done = true;
                    break;
                }
                Some(r) => {
                    if compare_rows(&self.group, &first, &r) == Ordering::Equal {
                        self.add(&mut accs, &r);
                    } else {
                        self.pending = Some(r);
                        break;
                    }
                }
            }
        }
        self.emitted = true;
        Ok(Some(self.finish(Some(first), accs)))
    }
}

fn cell_int(row: &Row, i: usize) -> i128 {
    row.get(i)
        .and_then(|c| c.as_ref())
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse::<i128>().ok())
        .unwrap_or(0)
}

fn add_num(acc: &mut Option<Num>, kind: Kind, row: &Row, i: usize) {
    if let Some(n) = row
        .get(i)
        .and_then(|c| c.as_ref())
        .and_then(|b| Num::parse(kind, b))
    {
        *acc = Some(match acc.take() {
            None => n,
            Some(a) => a.plus(n),
        });
    }
}
