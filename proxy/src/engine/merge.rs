//! Running a merge plan: send the pushed-down query to every target shard, build the
//! pipeline of row streams over their answers, and write the merged result.

use super::output::{visible_columns, RowWriter};
use super::pipeline::{AggregateNode, Node};
use super::reader::ShardReader;
use super::values::Key;
use super::{Exec, ExecError};
use crate::backend::relay::RelaySummary;
use crate::error::ProxyError;
use crate::planner::plan::{Primitive, Route};
use crate::wire::consts::*;
use crate::wire::{ColumnDef, Responder};
use futures::future::BoxFuture;

/// A built stream and its columns, or the readers opened before the failure.
type Built = Result<(Node, Vec<ColumnDef>), (Vec<ShardReader>, ProxyError)>;

impl Exec<'_> {
    pub(super) async fn merge(
        &mut self,
        p: &Primitive,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let (hidden, renames) = match p {
            Primitive::Project {
                hidden, renames, ..
            } => (*hidden, renames.clone()),
            _ => (0, Vec::new()),
        };
        let limit = pushed_limit(self, p)?;
        let built = self.build(p, limit).await;
        let (mut node, columns) = match built {
            Ok(x) => x,
            Err((readers, e)) => {
                self.finish_readers(readers).await;
                return Err(e.into());
            }
        };
        let binary = self.params.is_some();
        let visible = visible_columns(&columns, hidden, &renames);
        let mut status = self.status;
        if self.more_results {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        let mut writer = RowWriter::header(out, visible, binary, status);
        let result = loop {
            match node.next_row().await {
                Ok(Some(row)) => {
                    if let Err(e) = writer.row(out, &row).await {
                        break Err(ExecError::ClientGone(e));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(ExecError::Proxy(e)),
            }
        };
        let readers = node.into_readers();
        let warnings: u16 = readers
            .iter()
            .map(|r| r.warnings)
            .fold(0, u16::saturating_add);
        self.finish_readers(readers).await;
        match result {
            Ok(()) => {
                out.end_rows(status, warnings);
                Ok(RelaySummary {
                    rows: writer.rows,
                    status,
                    warnings,
                    ..RelaySummary::default()
                })
            }
            Err(ExecError::Proxy(e)) => {
                // The header (and maybe rows) went out: an error packet ends the result.
                let packet = e.to_packet();
                out.error(&packet);
                Ok(RelaySummary {
                    error: Some(packet),
                    ..RelaySummary::default()
                })
            }
            Err(other) => Err(other),
        }
    }

    /// Drains what the readers did not read and returns their connections.
    pub(super) async fn finish_readers(&mut self, readers: Vec<ShardReader>) {
        let mut helds = Vec::with_capacity(readers.len());
        for mut r in readers {
            r.drain().await;
            helds.push(r.held);
        }
        self.give_back_all(helds).await;
    }

    /// Builds the stream for a plan node. On failure returns the readers opened so far.
    pub(super) fn build<'b>(
        &'b mut self,
        p: &'b Primitive,
        limit: Option<u64>,
    ) -> BoxFuture<'b, Built> {
        Box::pin(async move {
            let keys = |ks: &[crate::planner::plan::SortKey], cols: &[ColumnDef]| -> Vec<Key> {
                ks.iter().map(|k| Key::resolve(k, cols)).collect()
            };
            Ok(match p {
                Primitive::Route(r) => {
                    let (readers, columns) = self.open(r, limit).await?;
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
                    let (readers, columns) = self.open(r, limit).await?;
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
                    let (node, columns) = self.build(input, limit).await?;
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
                    let (node, columns) = self.build(input, limit).await?;
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
                    let (node, columns) = self.build(input, limit).await?;
                    (
                        Node::Sort {
                            input: Box::new(node),
                            keys: keys(k, &columns),
                            sorted: None,
                            limit: self.ctx.config.session.max_merge_rows,
                        },
                        columns,
                    )
                }
                Primitive::Distinct { keys: k, input } => {
                    let (node, columns) = self.build(input, limit).await?;
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
                    let count = self.number(count).map_err(|e| (Vec::new(), e))?;
                    let offset = match offset {
                        Some(o) => self.number(o).map_err(|e| (Vec::new(), e))?,
                        None => 0,
                    };
                    let (node, columns) = self.build(input, limit).await?;
                    (
                        Node::Limit {
                            input: Box::new(node),
                            skip: offset,
                            remaining: count,
                        },
                        columns,
                    )
                }
                Primitive::Project { input, .. } => self.build(input, limit).await?,
                Primitive::Concat(branches) => {
                    let mut nodes = Vec::new();
                    let mut columns = Vec::new();
                    for b in branches {
                        match self.build(b, None).await {
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
                | Primitive::MoveRows(_) => {
                    return Err((
                        Vec::new(),
                        ProxyError::Internal("a write inside a merge".into()),
                    ))
                }
            })
        })
    }

    /// Sends the route's query to each target shard (as text) and reads the heads.
    async fn open(
        &mut self,
        r: &Route,
        limit: Option<u64>,
    ) -> Result<(Vec<ShardReader>, Vec<ColumnDef>), (Vec<ShardReader>, ProxyError)> {
        let ks = match self.keyspace(&r.keyspace) {
            Ok(k) => k.clone(),
            Err(e) => return Err((Vec::new(), e)),
        };
        let targets = match self.targets(r, &ks).await {
            Ok(t) => t,
            Err(e) => return Err((Vec::new(), e)),
        };
        let mut helds = Vec::with_capacity(targets.len());
        let mut failure = None;
        for t in &targets {
            let sql = self.render(&r.query.template, t.shard, t.values.as_deref(), limit);
            match self.conns.take(self.ctx, &r.keyspace, t.shard).await {
                Ok(mut h) => {
                    if let Err(e) = h.conn.send_query(&sql).await {
                        failure.get_or_insert(ProxyError::from_backend(&h.label, e));
                    }
                    helds.push(h);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    break;
                }
            }
        }
        let mut readers = Vec::with_capacity(helds.len());
        for h in helds {
            match ShardReader::start(h).await {
                Ok((reader, _)) => readers.push(reader),
                Err((h, e)) => {
                    failure.get_or_insert(e);
                    self.conns.give_back(h);
                }
            }
        }
        if let Some(e) = failure {
            return Err((readers, e));
        }
        let columns = readers
            .first()
            .map(|r| r.columns.clone())
            .unwrap_or_default();
        if readers.iter().any(|r| r.columns.len() != columns.len()) {
            return Err((
                readers,
                ProxyError::Internal("shards returned different columns".into()),
            ));
        }
        Ok((readers, columns))
    }
}

/// The LIMIT pushed to shards: count + offset of the plan's Limit node, if any.
fn pushed_limit(exec: &Exec<'_>, p: &Primitive) -> Result<Option<u64>, ExecError> {
    match p {
        Primitive::Limit { count, offset, .. } => {
            let c = exec.number(count)?;
            let o = match offset {
                Some(o) => exec.number(o)?,
                None => 0,
            };
            Ok(Some(c.saturating_add(o)))
        }
        Primitive::Project { input, .. }
        | Primitive::Sort { input, .. }
        | Primitive::Filter { input, .. }
        | Primitive::Distinct { input, .. }
        | Primitive::Aggregate { input, .. }
        | Primitive::MergeSort { input, .. } => pushed_limit(exec, input),
        _ => Ok(None),
    }
}
