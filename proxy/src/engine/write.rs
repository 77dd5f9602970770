//! Writes on several shards: UPDATE / DELETE / DDL (one statement per shard, answers
//! combined) and INSERT into sharded tables (rows split by shard, ids from sequences).
//!
//! A write that spans shards outside a transaction is not atomic: each shard commits its
//! part. Inside a transaction every shard joins it and COMMIT ends them all (see
//! docs/compatibility.md for what each transaction mode guarantees).

use super::reader::{read_head, Head};
use super::route::drain_response;
use super::{Exec, ExecError, ShardTarget};
use crate::backend::relay::RelaySummary;
use crate::error::ProxyError;
use crate::planner::insert::{InsertPlan, RowKey};
use crate::planner::plan::{Combine, WritePlan};
use crate::planner::sqltext::SqlTemplate;
use crate::session::conns::Held;
use crate::wire::consts::*;
use crate::wire::packets::OkPacket;
use crate::wire::Responder;
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
        let oks = self.run_on(&w.route.keyspace, statements).await?;
        let ok = combine(&oks, w.combine);
        if let (Some(m), Some(rows)) = (&w.lookups, &rows) {
            self.maintain_after(&ks, m, rows).await?;
        }
        if let Some(change) = &w.vschema {
            self.apply_vschema(&ks, change).await?;
        }
        self.respond(out, ok)
    }

    pub(super) async fn insert(
        &mut self,
        plan: &InsertPlan,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
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
            match per_shard.iter_mut().find(|(s, _)| s.name == shard.name) {
                Some((_, rows)) => rows.push(text),
                None => per_shard.push((shard, vec![text])),
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
        let oks = self.run_on(&plan.keyspace, statements).await?;
        let mut ok = combine(&oks, Combine::Sum);
        if let Some(id) = first_id {
            ok.last_insert_id = id;
            self.insert_id = Some(id);
        }
        self.respond(out, ok)
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

    /// Sends one statement per shard (all first, then reads), returns the OKs. The first
    /// error is returned after every shard answered.
    async fn run_on(
        &mut self,
        keyspace: &str,
        statements: Vec<(ShardTarget<'_>, String)>,
    ) -> Result<Vec<OkPacket>, ProxyError> {
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
        let mut oks = Vec::with_capacity(helds.len());
        for h in helds.iter_mut() {
            if !h.conn.is_pending() {
                continue;
            }
            match read_head(h).await {
                Ok(Head::Ok(ok)) => oks.push(ok),
                Ok(Head::Rows(_)) => {
                    drain_rows(h).await;
                    failure.get_or_insert(ProxyError::NotSupported(
                        "a write that returns rows on several shards".into(),
                    ));
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        self.give_back_all(helds).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(oks),
        }
    }

    fn respond(
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

async fn drain_rows(h: &mut Held) {
    // The head was read; skip rows up to the terminator.
    loop {
        match h.conn.read_logical().await {
            Ok(p) if p.first() == Some(&0xfe) && p.len() < MAX_PHYSICAL_PAYLOAD => {
                let (status, _) = crate::wire::packets::status_and_warnings(&p).unwrap_or((0, 0));
                h.conn.finish(status);
                if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    h.conn.mark_pending();
                    drain_response(h).await;
                }
                return;
            }
            Ok(p) if p.first() == Some(&0xff) => {
                h.conn.finish_after_error();
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
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
