//! Writes on several shards: UPDATE / DELETE / DDL (one statement per shard, answers
//! combined) and INSERT into sharded tables (rows split by shard, ids from sequences).
//!
//! A write that spans shards outside a transaction is not atomic: each shard commits its
//! part. Inside a transaction every shard joins it and COMMIT ends them all (see
//! docs/compatibility.md for what each transaction mode guarantees).

use super::output::RowWriter;
use super::reader::{Row, ShardReader};
use super::{Exec, ExecError, ShardTarget};
use crate::backend::held::Held;
use crate::backend::relay::RelaySummary;
use crate::error::ProxyError;
use crate::planner::insert::{InsertPlan, RowKey};
use crate::planner::plan::{Combine, WritePlan};
use crate::planner::sqltext::SqlTemplate;
use crate::wire::consts::*;
use crate::wire::packets::OkPacket;
use crate::wire::{ColumnDef, Responder};
use shardgate_topology::SqlValue;

impl Exec<'_> {
    pub(super) async fn write(
        &mut self,
        w: &WritePlan,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let ks = self.keyspace(&w.route.keyspace)?.clone();
        let rows = match &w.lookups {
            Some(m) => {
                let rows = self.rows_for_lookups(&ks, m).await?;
                self.maintain_before(&ks, &m.owner, m, &rows).await?;
                Some(rows)
            }
            None => None,
        };
        let targets = self.targets(&w.route, &ks).await?;
        let statements: Vec<(ShardTarget<'_>, String)> = targets
            .into_iter()
            .map(|t| {
                let sql = self.render(&w.route.query.template, t.shard, t.values.as_deref(), None);
                (t, sql)
            })
            .collect();
        let answers = self.run_on(&w.route.keyspace, statements).await?;
        let oks: Vec<OkPacket> = answers.iter().map(|a| a.ok.clone()).collect();
        let ok = combine(&oks, w.combine);
        if let (Some(m), Some(rows)) = (&w.lookups, &rows) {
            self.maintain_after(&ks, m, rows).await?;
        }
        if let Some(change) = &w.vschema {
            self.apply_vschema(&ks, change).await?;
        }
        // DELETE ... RETURNING on several shards: every shard's rows, one after the other.
        let returned = returned_rows(answers, None);
        self.respond_with(out, ok, returned).await
    }

    pub(super) async fn insert(
        &mut self,
        plan: &InsertPlan,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let (ok, returned) = self.insert_rows(plan).await?;
        self.respond_with(out, ok, returned).await
    }

    /// One statement on every serving shard (`Combine::First`: a reference table), or on
    /// the only shard of an unsharded keyspace.
    pub(super) async fn write_everywhere(
        &mut self,
        keyspace: &str,
        sql: &str,
        combine: Combine,
    ) -> Result<OkPacket, ProxyError> {
        let ks = self.keyspace(keyspace)?.clone();
        let statements: Vec<(ShardTarget<'_>, String)> = ks
            .serving
            .iter()
            .map(|shard| {
                (
                    ShardTarget {
                        shard,
                        values: None,
                    },
                    sql.to_string(),
                )
            })
            .collect();
        let answers = self.run_on(keyspace, statements).await?;
        if answers.iter().any(|a| a.rows.is_some()) {
            return Err(ProxyError::NotSupported(
                "RETURNING in an INSERT ... SELECT the proxy places".into(),
            ));
        }
        let oks: Vec<OkPacket> = answers.into_iter().map(|a| a.ok).collect();
        Ok(self::combine(&oks, combine))
    }

    /// Inserts a sharded table's rows (each on its shard, ids from the sequence, lookup
    /// mappings first) and returns the combined answer, with the rows a RETURNING clause
    /// gave back in the order of the VALUES list.
    pub(super) async fn insert_rows(
        &mut self,
        plan: &InsertPlan,
    ) -> Result<(OkPacket, Option<Returned>), ProxyError> {
        let ks = self.keyspace(&plan.keyspace)?.clone();
        let vindex = ks
            .vindexes
            .get(&plan.vindex)
            .cloned()
            .ok_or_else(|| ProxyError::Internal(format!("vindex {} vanished", plan.vindex)))?;
        let generated = plan.rows.iter().filter(|r| r.generated).count() as u64;
        let first_id = match (&plan.sequence, generated) {
            (Some((sk, st)), n) if n > 0 => Some(
                self.ctx
                    .sequences
                    .reserve(self.ctx, self.snapshot, sk, st, n)
                    .await?,
            ),
            _ => None,
        };
        let mut next_id = first_id.unwrap_or(0);
        // Group rows per shard, keeping their order.
        let mut per_shard: Vec<(&shardgate_topology::Shard, Vec<String>)> = Vec::new();
        let mut ksids = Vec::with_capacity(plan.rows.len());
        // Where each row of the VALUES list went: (statement, position in it).
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(plan.rows.len());
        for row in &plan.rows {
            let id = if row.generated {
                let id = next_id;
                next_id += 1;
                Some(id)
            } else {
                None
            };
            let value = match &row.key {
                RowKey::Value(v) => self.routing_value(v)?,
                RowKey::Sequence => SqlValue::UInt(id.unwrap_or(0)),
            };
            let ksid = vindex
                .map(&value)
                .map_err(ProxyError::Internal)?
                .ok_or_else(|| {
                    ProxyError::WrongValue(format!(
                    "cannot place a row of {}: the {} vindex cannot map its sharding value {:?}",
                    plan.table, vindex.name, value
                ))
                })?;
            let shard = ks
                .shard_for(ksid.as_bytes())
                .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?;
            ksids.push(ksid);
            let text = self.render_row(&row.text, shard, id);
            match per_shard.iter().position(|(s, _)| s.name == shard.name) {
                Some(i) => {
                    order.push((i, per_shard[i].1.len()));
                    per_shard[i].1.push(text);
                }
                None => {
                    order.push((per_shard.len(), 0));
                    per_shard.push((shard, vec![text]));
                }
            }
        }
        for (i, vindex) in plan.lookups.iter().enumerate() {
            let mappings: Vec<(
                crate::planner::values::ValueExpr,
                shardgate_topology::KeyspaceId,
            )> = plan
                .rows
                .iter()
                .zip(&ksids)
                .filter_map(|(row, id)| {
                    row.lookup_values
                        .get(i)
                        .cloned()
                        .flatten()
                        .map(|v| (v, id.clone()))
                })
                .collect();
            self.create_mappings(&ks, &plan.table, vindex, &mappings)
                .await?;
        }
        let prefix = SqlTemplate::new(&plan.prefix);
        let suffix = SqlTemplate::new(&plan.suffix);
        let statements: Vec<(ShardTarget<'_>, String)> = per_shard
            .into_iter()
            .map(|(shard, rows)| {
                let sql = format!(
                    "{}{}{}",
                    self.render(&prefix, shard, None, None),
                    rows.join(", "),
                    self.render(&suffix, shard, None, None)
                );
                (
                    ShardTarget {
                        shard,
                        values: None,
                    },
                    sql,
                )
            })
            .collect();
        let answers = self.run_on(&plan.keyspace, statements).await?;
        let oks: Vec<OkPacket> = answers.iter().map(|a| a.ok.clone()).collect();
        let mut ok = combine(&oks, Combine::Sum);
        if let Some(id) = first_id {
            ok.last_insert_id = id;
            if self.insert_id.is_none() {
                self.insert_id = Some(id);
            }
        }
        Ok((ok, returned_rows(answers, Some(&order))))
    }

    fn render_row(&self, text: &str, shard: &shardgate_topology::Shard, id: Option<u64>) -> String {
        let t = SqlTemplate::new(text);
        if !text.contains(":sg_seq") {
            return self.render(&t, shard, None, None);
        }
        // `:sg_seq` is the only marker the generic renderer does not know.
        let rendered = self.render(&t, shard, None, None);
        rendered.replace(":sg_seq", &id.unwrap_or(0).to_string())
    }

    /// Sends one statement per shard (all first, then reads), returns each shard's answer
    /// in statement order. The first error is returned after every shard answered.
    async fn run_on(
        &mut self,
        keyspace: &str,
        statements: Vec<(ShardTarget<'_>, String)>,
    ) -> Result<Vec<Answer>, ProxyError> {
        let mut helds: Vec<Held> = Vec::with_capacity(statements.len());
        let mut failure = None;
        for (t, sql) in &statements {
            match self.conns.take(self.ctx, keyspace, t.shard).await {
                Ok(mut h) => {
                    if let Err(e) = h.conn.send_query(sql).await {
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
        let limit = self.ctx.config.session.max_merge_rows;
        let mut answers = Vec::with_capacity(helds.len());
        let mut readers = Vec::new();
        for h in helds {
            if !h.conn.is_pending() {
                self.conns.give_back(h);
                continue;
            }
            match ShardReader::start(h).await {
                Ok((reader, Some(ok))) => {
                    answers.push(Answer { ok, rows: None });
                    readers.push(reader);
                }
                Ok((mut reader, None)) => {
                    // RETURNING: the rows this shard wrote.
                    let mut rows = Vec::new();
                    loop {
                        match reader.next().await {
                            Ok(Some(r)) if (rows.len() as u64) < limit => rows.push(r),
                            Ok(Some(_)) => {
                                failure.get_or_insert(ProxyError::MergeTooLarge { limit });
                                break;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure.get_or_insert(e);
                                break;
                            }
                        }
                    }
                    let ok = OkPacket {
                        affected_rows: rows.len() as u64,
                        status: reader.status,
                        warnings: reader.warnings,
                        ..OkPacket::default()
                    };
                    answers.push(Answer {
                        ok,
                        rows: Some((reader.columns.clone(), rows)),
                    });
                    readers.push(reader);
                }
                Err((h, e)) => {
                    failure.get_or_insert(e);
                    self.conns.give_back(h);
                }
            }
        }
        self.finish_readers(readers).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(answers),
        }
    }

    /// Answers with `ok`, or with the rows a RETURNING clause gave back.
    async fn respond_with(
        &mut self,
        out: &mut Responder<'_>,
        ok: OkPacket,
        returned: Option<Returned>,
    ) -> Result<RelaySummary, ExecError> {
        let Some((columns, rows)) = returned else {
            return self.respond(out, ok);
        };
        let mut status = self.status;
        if self.conns.in_transaction() {
            status |= SERVER_STATUS_IN_TRANS;
        }
        if self.more_results {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        let mut writer = RowWriter::header(out, columns, self.params.is_some(), status);
        for r in &rows {
            writer.row(out, r).await.map_err(ExecError::ClientGone)?;
        }
        out.end_rows(status, ok.warnings);
        Ok(RelaySummary {
            rows: writer.rows,
            status,
            warnings: ok.warnings,
            ..RelaySummary::default()
        })
    }

    pub(super) fn respond(
        &mut self,
        out: &mut Responder<'_>,
        mut ok: OkPacket,
    ) -> Result<RelaySummary, ExecError> {
        ok.status = self.status | (ok.status & SERVER_STATUS_IN_TRANS);
        if self.conns.in_transaction() {
            ok.status |= SERVER_STATUS_IN_TRANS;
        }
        if self.more_results {
            ok.status |= SERVER_MORE_RESULTS_EXISTS;
        }
        out.ok(&ok);
        Ok(RelaySummary {
            status: ok.status,
            warnings: ok.warnings,
            ok: Some(ok),
            ..RelaySummary::default()
        })
    }
}

/// One shard's answer to a write: its OK, and the rows of a RETURNING clause.
pub(super) struct Answer {
    ok: OkPacket,
    rows: Option<(Vec<ColumnDef>, Vec<Row>)>,
}

/// Rows a RETURNING clause gave back, with their columns.
pub(super) type Returned = (Vec<ColumnDef>, Vec<Row>);

/// The rows of every answer: in the order of `order` ((answer, position) of each VALUES
/// row, for INSERT) when every row came back, else answer after answer.
fn returned_rows(answers: Vec<Answer>, order: Option<&[(usize, usize)]>) -> Option<Returned> {
    let columns = answers
        .iter()
        .find_map(|a| a.rows.as_ref().map(|r| r.0.clone()))?;
    let per: Vec<Vec<Row>> = answers
        .into_iter()
        .map(|a| a.rows.map(|r| r.1).unwrap_or_default())
        .collect();
    let complete = order.is_some_and(|o| {
        o.iter()
            .all(|&(i, k)| per.get(i).is_some_and(|rows| k < rows.len()))
            && o.len() == per.iter().map(Vec::len).sum::<usize>()
    });
    let rows = match order {
        Some(o) if complete => o.iter().map(|&(i, k)| per[i][k].clone()).collect(),
        _ => per.into_iter().flatten().collect(),
    };
    Some((columns, rows))
}

/// Combines per-shard OKs: sums (rows live on one shard each) or the first (every shard
/// has a copy). Info strings like "Rows matched: 3  Changed: 2  Warnings: 0" are summed
/// field by field when all shards use the same fields.
pub fn combine(oks: &[OkPacket], how: Combine) -> OkPacket {
    let Some(first) = oks.first() else {
        return OkPacket::default();
    };
    if how == Combine::First {
        return first.clone();
    }
    let mut out = OkPacket {
        affected_rows: oks.iter().map(|o| o.affected_rows).sum(),
        last_insert_id: oks.iter().map(|o| o.last_insert_id).max().unwrap_or(0),
        status: first.status,
        warnings: oks.iter().map(|o| o.warnings).fold(0, u16::saturating_add),
        info: first.info.clone(),
    };
    let parsed: Vec<Vec<(String, u64)>> = oks.iter().map(|o| info_fields(&o.info)).collect();
    if !parsed[0].is_empty()
        && parsed.iter().all(|p| {
            p.len() == parsed[0].len() && p.iter().zip(&parsed[0]).all(|(a, b)| a.0 == b.0)
        })
    {
        let sums: Vec<String> = parsed[0]
            .iter()
            .enumerate()
            .map(|(i, (label, _))| {
                format!("{label}: {}", parsed.iter().map(|p| p[i].1).sum::<u64>())
            })
            .collect();
        out.info = sums.join("  ");
    }
    out
}

fn info_fields(info: &str) -> Vec<(String, u64)> {
    info.split("  ")
        .filter_map(|part| {
            let (k, v) = part.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oks_sum_field_by_field() {
        let a = OkPacket {
            affected_rows: 2,
            info: "Rows matched: 3  Changed: 2  Warnings: 0".into(),
            ..OkPacket::default()
        };
        let b = OkPacket {
            affected_rows: 1,
            info: "Rows matched: 1  Changed: 1  Warnings: 1".into(),
            ..OkPacket::default()
        };
        let c = combine(&[a.clone(), b], Combine::Sum);
        assert_eq!(c.affected_rows, 3);
        assert_eq!(c.info, "Rows matched: 4  Changed: 3  Warnings: 1");
        assert_eq!(
            combine(&[a.clone(), a.clone()], Combine::First).affected_rows,
            2
        );
    }
}
