//! Running an UPDATE that changes the sharding column (see [`crate::planner::move_rows`]):
//! read the matched rows under `FOR UPDATE`, copy the ones on other shards to the new
//! shard, run the UPDATE as written there for every matched key, delete the old copies,
//! repoint owned lookup vindexes. It always runs inside a transaction: the session's, or
//! one the session opened for this statement, committed here before the answer.
//!
//! Inside the client's transaction a failure after a shard changed cannot be undone for
//! the statement alone, so the whole transaction is rolled back and the error says so
//! (Vitess does the same for a multi-shard statement that fails part-way).

use super::insert_select::cell_literal;
use super::write::combine;
use super::Exec;
use crate::backend::conn::QueryResult;
use crate::error::ProxyError;
use crate::planner::move_rows::MovePlan;
use crate::planner::plan::Combine;
use crate::planner::sqltext::SqlTemplate;
use crate::planner::values::ValueExpr;
use crate::wire::packets::OkPacket;
use shardgate_topology::{Keyspace, KeyspaceId, Shard, SqlValue};

/// Rows per INSERT, and keys per UPDATE / DELETE.
const BATCH: usize = 500;

/// One matched row: its shard, its key as `(k1, k2)`, its stored columns as literals,
/// and its current keyspace id.
struct Matched {
    shard: String,
    key: String,
    values: Vec<String>,
    ksid: Option<KeyspaceId>,
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl Exec<'_> {
    /// Moves the rows; returns the UPDATE's answer (rows matched and changed).
    pub(super) async fn move_rows(&mut self, m: &MovePlan) -> Result<OkPacket, ProxyError> {
        let mut changed_any = false;
        let result = self.move_rows_steps(m, &mut changed_any).await;
        match result {
            Err(e) => Err(self.abandon_statement(e, changed_any).await),
            ok => ok,
        }
    }

    /// A statement that changes several shards in steps failed. If a step had already
    /// changed rows inside the client's transaction, that part cannot be undone for the
    /// statement alone: the whole transaction is rolled back and the error says so (as
    /// Vitess does). A transaction of the statement's own is rolled back by the session.
    pub(super) async fn abandon_statement(&mut self, e: ProxyError, changed: bool) -> ProxyError {
        if !changed || self.implicit_txn {
            return e;
        }
        let _ = self.conns.finish(self.ctx, false).await;
        let mut p = e.to_packet();
        p.message.push_str(
            " (shardgate: the statement had changed rows on some shards, so the whole transaction was rolled back)",
        );
        ProxyError::Backend(p)
    }

    async fn move_rows_steps(
        &mut self,
        m: &MovePlan,
        changed_any: &mut bool,
    ) -> Result<OkPacket, ProxyError> {
        let ks = self.keyspace(&m.keyspace)?.clone();
        let vindex = ks
            .vindexes
            .get(&m.vindex)
            .cloned()
            .ok_or_else(|| ProxyError::Internal(format!("vindex {} vanished", m.vindex)))?;
        let value = self.routing_value(&m.new_value)?;
        if value == SqlValue::Null {
            return Err(ProxyError::WrongValue(format!(
                "sharding column of {} cannot be NULL",
                m.table
            )));
        }
        let new_ksid = vindex
            .map(&value)
            .map_err(ProxyError::Internal)?
            .ok_or_else(|| {
                ProxyError::WrongValue(format!(
                    "the {} vindex cannot map the new sharding value {value:?}",
                    vindex.name
                ))
            })?;
        let dest = ks
            .shard_for(new_ksid.as_bytes())
            .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?
            .clone();

        let rows = self.matched_rows(m, &ks).await?;
        if rows.is_empty() {
            return Ok(OkPacket {
                info: "Rows matched: 0  Changed: 0  Warnings: 0".into(),
                ..OkPacket::default()
            });
        }
        // A unique lookup column set to one value on several rows.
        if let Some((vindex, _, Some(v))) = m.lookups.iter().find(|l| l.2.is_some()) {
            if rows.len() > 1 {
                return Err(ProxyError::DuplicateKey {
                    value: self.literal(v),
                    key: vindex.clone(),
                });
            }
        }
        let table = quote(&m.table);
        let key_cols = m
            .key
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let moving: Vec<&Matched> = rows.iter().filter(|r| r.shard != dest.name).collect();
        // 1. Copies of the rows that live elsewhere, as they are, on the new shard.
        let stored = m.stored.iter().map(|c| quote(c)).collect::<Vec<_>>();
        for chunk in moving.chunks(BATCH) {
            let values: Vec<String> = chunk
                .iter()
                .map(|r| format!("({})", r.values.join(", ")))
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES {}",
                stored.join(", "),
                values.join(", ")
            );
            *changed_any = true;
            self.exec_on(&ks, &dest, &sql).await?;
        }
        // 2. The UPDATE as written, on the new shard, for every matched key.
        let update = self.render(&SqlTemplate::new(&m.update), &dest, None, None);
        let mut oks = Vec::new();
        for chunk in rows.chunks(BATCH) {
            let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
            let sql = format!("{update} WHERE ({key_cols}) IN ({})", keys.join(", "));
            *changed_any = true;
            oks.push(self.exec_on(&ks, &dest, &sql).await?);
        }
        // 3. The old copies.
        let mut sources: Vec<&str> = moving.iter().map(|r| r.shard.as_str()).collect();
        sources.dedup();
        sources.sort_unstable();
        sources.dedup();
        for source in sources {
            let shard = ks
                .shards
                .get(source)
                .cloned()
                .ok_or_else(|| ProxyError::Internal(format!("shard {source} vanished")))?;
            let keys: Vec<&str> = moving
                .iter()
                .filter(|r| r.shard == source)
                .map(|r| r.key.as_str())
                .collect();
            for chunk in keys.chunks(BATCH) {
                let sql = format!(
                    "DELETE FROM {table} WHERE ({key_cols}) IN ({})",
                    chunk.join(", ")
                );
                self.exec_on(&ks, &shard, &sql).await?;
            }
        }
        // 4. Owned lookup vindexes point at the new keyspace id, with the new values.
        self.repoint_lookups(m, &ks, &rows, &new_ksid).await?;
        let ok = combine(&oks, Combine::Sum);
        Ok(OkPacket {
            affected_rows: ok.affected_rows,
            warnings: ok.warnings,
            info: ok.info,
            ..OkPacket::default()
        })
    }

    /// The rows the UPDATE matches, read under `FOR UPDATE` (bounded by
    /// `session.max_merge_rows`).
    async fn matched_rows(
        &mut self,
        m: &MovePlan,
        ks: &Keyspace,
    ) -> Result<Vec<Matched>, ProxyError> {
        let primary = ks
            .vindexes
            .get(&m.vindex)
            .cloned()
            .ok_or_else(|| ProxyError::Internal(format!("vindex {} vanished", m.vindex)))?;
        let sharding = ks
            .tables
            .get(&m.table)
            .and_then(|t| t.primary_vindex())
            .and_then(|cv| cv.columns.first())
            .and_then(|c| m.stored.iter().position(|s| s.eq_ignore_ascii_case(c)))
            .ok_or_else(|| ProxyError::Internal(format!("{} lost its vindex", m.table)))?;
        let limit = self.ctx.config.session.max_merge_rows;
        let targets = self.targets(&m.select, ks).await?;
        let mut out = Vec::new();
        for t in targets {
            let sql = self.render(&m.select.query.template, t.shard, t.values.as_deref(), None);
            let r = self.query_on(ks, t.shard, &sql).await?;
            let key_len = m.key.len();
            for row in &r.rows {
                if out.len() as u64 >= limit {
                    return Err(ProxyError::MergeTooLarge { limit });
                }
                let lit = |i: usize| {
                    cell_literal(
                        row.get(i).and_then(|c| c.as_deref()),
                        &r.columns[i],
                        self.charset,
                        self.no_backslash_escapes,
                    )
                };
                let key: Vec<String> = (0..key_len).map(|i| lit(i).0).collect();
                let values: Vec<String> = (key_len..r.columns.len()).map(|i| lit(i).0).collect();
                let (_, sharding_value, _) = lit(key_len + sharding);
                let ksid = match sharding_value {
                    SqlValue::Null => None,
                    v => primary.map(&v).map_err(ProxyError::Internal)?,
                };
                out.push(Matched {
                    shard: t.shard.name.clone(),
                    key: format!("({})", key.join(", ")),
                    values,
                    ksid,
                });
            }
        }
        Ok(out)
    }

    /// Moved rows' lookup mappings point at the new keyspace id; assigned lookup columns
    /// map their new value.
    async fn repoint_lookups(
        &mut self,
        m: &MovePlan,
        ks: &Keyspace,
        rows: &[Matched],
        new_ksid: &KeyspaceId,
    ) -> Result<(), ProxyError> {
        for (vindex, pos, new) in &m.lookups {
            let mut stale = Vec::new();
            let mut fresh = Vec::new();
            for r in rows {
                let Some(old) = r.values.get(*pos) else {
                    continue;
                };
                let new_value = match new {
                    Some(v) => v.clone(),
                    None if old == "NULL" => continue,
                    None => ValueExpr::Literal {
                        value: SqlValue::Null,
                        text: old.clone(),
                        binary: false,
                    },
                };
                let same_value = new.is_none() || self.literal(&new_value) == *old;
                if same_value && r.ksid.as_ref() == Some(new_ksid) {
                    continue;
                }
                if old != "NULL" {
                    stale.push(old.clone());
                }
                fresh.push((new_value, new_ksid.clone()));
            }
            self.delete_mappings(ks, vindex, &stale).await?;
            self.create_mappings(ks, &m.table, vindex, &fresh).await?;
        }
        Ok(())
    }

    async fn query_on(
        &mut self,
        ks: &Keyspace,
        shard: &Shard,
        sql: &str,
    ) -> Result<QueryResult, ProxyError> {
        let held = self.conns.get(self.ctx, &ks.name, shard).await?;
        let label = held.label.clone();
        held.conn
            .query(sql)
            .await
            .map_err(|e| ProxyError::from_backend(&label, e))
    }

    pub(super) async fn exec_on(
        &mut self,
        ks: &Keyspace,
        shard: &Shard,
        sql: &str,
    ) -> Result<OkPacket, ProxyError> {
        Ok(self.query_on(ks, shard, sql).await?.ok)
    }
}
