//! Running an UPDATE or DELETE planned as "find the rows, then change each on its shard"
//! (see [`crate::planner::gather::write`]): the SELECT's rows (bounded by
//! `session.max_merge_rows`) are grouped by target table and shard; each group is changed
//! by primary key, in batches. Runs inside a transaction (the client's, or one the
//! session opened for the statement and committed here before the answer).

use super::insert_select::cell_literal;
use super::reader::Row;
use super::write::combine;
use super::Exec;
use crate::error::ProxyError;
use crate::planner::gather::write::{Change, GatherWrite, WriteTarget};
use crate::planner::plan::Combine;
use crate::planner::sqltext::SqlTemplate;
use crate::wire::packets::OkPacket;
use crate::wire::ColumnDef;
use shardgate_topology::{Shard, SqlValue};
use std::collections::HashSet;

/// Keys per UPDATE / DELETE statement.
const BATCH: usize = 500;

impl Exec<'_> {
    /// Finds the rows and changes them; returns the combined answer.
    pub(super) async fn gather_write(&mut self, w: &GatherWrite) -> Result<OkPacket, ProxyError> {
        let (rows, columns) = self.collect_rows(&w.select).await?;
        let mut oks = Vec::new();
        for t in &w.targets {
            if let Err(e) = self.change_target(t, &rows, &columns, &mut oks).await {
                return Err(self.abandon_statement(e, !oks.is_empty()).await);
            }
        }
        let ok = combine(&oks, Combine::Sum);
        let info = if w.delete || oks.is_empty() {
            if w.delete {
                String::new()
            } else {
                "Rows matched: 0  Changed: 0  Warnings: 0".into()
            }
        } else {
            ok.info.clone()
        };
        Ok(OkPacket {
            affected_rows: ok.affected_rows,
            warnings: ok.warnings,
            info,
            ..OkPacket::default()
        })
    }

    async fn change_target(
        &mut self,
        t: &WriteTarget,
        rows: &[Row],
        columns: &[ColumnDef],
        oks: &mut Vec<OkPacket>,
    ) -> Result<(), ProxyError> {
        let ks = self.keyspace(&t.keyspace)?.clone();
        let (charset, nbe) = (self.charset, self.no_backslash_escapes);
        let lit = |row: &Row, i: usize| {
            cell_literal(
                row.get(i).and_then(|c| c.as_deref()),
                &columns[i],
                charset,
                nbe,
            )
        };
        // Each target row once (a join may match it several times), with its shard.
        let mut seen = HashSet::new();
        let mut groups: Vec<(Shard, Vec<(String, &Row)>)> = Vec::new();
        for row in rows {
            let key: Vec<String> = (0..t.key.len()).map(|k| lit(row, t.key_at + k).0).collect();
            if key.iter().any(|k| k == "NULL") || !seen.insert(key.clone()) {
                // NULL keys: the target side of an outer join that found no row.
                continue;
            }
            let shard = match &t.vindex {
                Some((vindex, at)) => {
                    let (_, value, _) = lit(row, *at);
                    let vx = ks
                        .vindexes
                        .get(vindex)
                        .ok_or_else(|| ProxyError::Internal(format!("vindex {vindex} vanished")))?;
                    let id = match value {
                        SqlValue::Null => None,
                        v => vx.map(&v).map_err(ProxyError::Internal)?,
                    };
                    let Some(id) = id else { continue };
                    ks.shard_for(id.as_bytes())
                        .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?
                        .clone()
                }
                None => ks
                    .single_shard()
                    .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?
                    .clone(),
            };
            let key = format!("({})", key.join(", "));
            match groups.iter_mut().find(|g| g.0.name == shard.name) {
                Some(g) => g.1.push((key, row)),
                None => groups.push((shard, vec![(key, row)])),
            }
        }
        let table = format!("`{}`", t.table.replace('`', "``"));
        let key_cols: Vec<String> = t
            .key
            .iter()
            .map(|c| format!("`{}`", c.replace('`', "``")))
            .collect();
        let key_cols = key_cols.join(", ");
        for (shard, members) in &groups {
            match &t.change {
                Change::Delete | Change::Text(_) => {
                    for chunk in members.chunks(BATCH) {
                        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
                        let head = match &t.change {
                            Change::Text(text) => {
                                self.render(&SqlTemplate::new(text), shard, None, None)
                            }
                            _ => format!("DELETE FROM {table}"),
                        };
                        let sql = format!("{head} WHERE ({key_cols}) IN ({})", keys.join(", "));
                        oks.push(self.exec_on(&ks, shard, &sql).await?);
                    }
                }
                Change::Values(values) => {
                    for (key, row) in members {
                        let set: Vec<String> = values
                            .iter()
                            .map(|(c, at)| {
                                format!("`{}` = {}", c.replace('`', "``"), lit(row, *at).0)
                            })
                            .collect();
                        let sql = format!(
                            "UPDATE {table} SET {} WHERE ({key_cols}) = {key}",
                            set.join(", ")
                        );
                        oks.push(self.exec_on(&ks, shard, &sql).await?);
                    }
                }
            }
        }
        if matches!(t.change, Change::Delete) {
            // Deleted rows' lookup mappings go too.
            for (vindex, at) in &t.lookups {
                let values: Vec<String> = groups
                    .iter()
                    .flat_map(|(_, m)| m.iter())
                    .map(|(_, row)| lit(row, *at).0)
                    .filter(|v| v != "NULL")
                    .collect();
                self.delete_mappings(&ks, vindex, &values).await?;
            }
        }
        Ok(())
    }
}
