//! Running a merge plan: send the pushed-down query to every target shard, build the
//! pipeline of row streams over their answers, and write the merged result.

use super::build::{build, pushed_limit, Opened, Sources};
use super::output::{visible_columns, RowWriter};
use super::reader::ShardReader;
use super::{Exec, ExecError};
use crate::backend::relay::RelaySummary;
use crate::error::ProxyError;
use crate::planner::plan::{Primitive, Route};
use crate::wire::consts::*;
use crate::wire::Responder;
use futures::future::BoxFuture;

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
        let built = build(self, p, limit).await;
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
            helds.extend(r.into_held());
        }
        self.give_back_all(helds).await;
    }

    /// Sends the route's query to each target shard (as text) and reads the heads.
    pub(super) async fn open_route(&mut self, r: &Route, limit: Option<u64>) -> Opened {
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

impl Sources for Exec<'_> {
    fn open<'b>(&'b mut self, r: &'b Route, limit: Option<u64>) -> BoxFuture<'b, Opened> {
        Box::pin(self.open_route(r, limit))
    }

    fn number(&self, v: &crate::planner::values::ValueExpr) -> Result<u64, ProxyError> {
        Exec::number(self, v)
    }

    fn max_merge_rows(&self) -> u64 {
        self.ctx.config.session.max_merge_rows
    }
}
