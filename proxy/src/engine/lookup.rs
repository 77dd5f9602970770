//! Lookup vindexes (`lookup_unique`): a backing table in an unsharded keyspace maps a
//! column value to the keyspace id of the row holding it.
//!
//! Reads by the looked-up column query the table first. Writes to the owner table keep it
//! in step, ordered so a failure part-way leaves at worst an orphan mapping (pointing at a
//! row that does not exist), never a missing one: mappings are created before the row and
//! removed after it. An INSERT whose mapping already exists checks the row it points at:
//! if that row is gone the mapping was an orphan and is taken over, otherwise it is a real
//! duplicate (error 1062). The lookup statements run on the session's connection, so
//! inside a transaction they commit or roll back with it.

use super::Exec;
use crate::backend::conn::{BackendError, QueryResult};
use crate::error::ProxyError;
use crate::planner::plan::LookupMaintenance;
use crate::planner::values::ValueExpr;
use shardgate_topology::keyrange::hex;
use shardgate_topology::vindex::LookupSpec;
use shardgate_topology::{Keyspace, KeyspaceId, SqlValue};

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A row an UPDATE or DELETE touches, as lookup maintenance needs it: the sharding value
/// (as its column stores it) and each lookup column's value as a literal.
pub(super) type LookupRow = (Option<SqlValue>, Vec<Option<String>>);

impl Exec<'_> {
    /// The lookup vindex `name` of `ks`, and the keyspace holding its table.
    fn lookup_spec(
        &self,
        ks: &Keyspace,
        name: &str,
    ) -> Result<(LookupSpec, String, String), ProxyError> {
        let vx = ks
            .vindexes
            .get(name)
            .ok_or_else(|| ProxyError::Internal(format!("vindex {name} vanished")))?;
        let spec = vx
            .lookup()
            .cloned()
            .ok_or_else(|| ProxyError::Internal(format!("vindex {name} is not a lookup")))?;
        let (lks, table) = match spec.table.split_once('.') {
            Some((k, t)) => (k.to_string(), t.to_string()),
            None => (ks.name.clone(), spec.table.clone()),
        };
        Ok((spec, lks, table))
    }

    /// Runs a statement on the lookup table's keyspace (unsharded).
    async fn lookup_sql(
        &mut self,
        keyspace: &str,
        sql: &str,
    ) -> Result<Result<QueryResult, BackendError>, ProxyError> {
        let ks = self.keyspace(keyspace)?.clone();
        if ks.sharded {
            return Err(ProxyError::NotSupported(format!(
                "a lookup table in sharded keyspace {keyspace} (put it in an unsharded keyspace)"
            )));
        }
        let shard = ks
            .single_shard()
            .ok_or_else(|| ProxyError::NoServingShards(keyspace.to_string()))?;
        let held = self.conns.get(self.ctx, keyspace, shard).await?;
        Ok(held.conn.query(sql).await)
    }

    pub(super) fn literal(&self, v: &ValueExpr) -> String {
        match v {
            ValueExpr::Literal { text, .. } => text.clone(),
            ValueExpr::Param(i) => {
                let mut s = String::new();
                match self.params.and_then(|p| p.params.get(*i)) {
                    Some(p) => p.write_literal(&mut s, self.charset, self.no_backslash_escapes),
                    None => s.push_str("NULL"),
                }
                s
            }
        }
    }

    /// The keyspace id the lookup maps `value` to, if it has a mapping.
    pub(super) async fn lookup_ksid(
        &mut self,
        ks: &Keyspace,
        vindex: &str,
        value: &ValueExpr,
    ) -> Result<Option<KeyspaceId>, ProxyError> {
        let (spec, lks, table) = self.lookup_spec(ks, vindex)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = {}",
            quote_ident(&spec.to),
            quote_ident(&table),
            quote_ident(&spec.from),
            self.literal(value)
        );
        let r = self
            .lookup_sql(&lks, &sql)
            .await?
            .map_err(|e| ProxyError::from_backend(&lks, e))?;
        Ok(r.rows
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .map(|b| KeyspaceId(b.to_vec())))
    }

    /// Creates the mappings of inserted rows (before the rows themselves).
    pub(super) async fn create_mappings(
        &mut self,
        ks: &Keyspace,
        owner: &str,
        vindex: &str,
        mappings: &[(ValueExpr, KeyspaceId)],
    ) -> Result<(), ProxyError> {
        let (spec, lks, table) = self.lookup_spec(ks, vindex)?;
        for (value, ksid) in mappings {
            let v = self.literal(value);
            let insert = format!(
                "INSERT INTO {} ({}, {}) VALUES ({v}, X'{}')",
                quote_ident(&table),
                quote_ident(&spec.from),
                quote_ident(&spec.to),
                hex(ksid.as_bytes())
            );
            match self.lookup_sql(&lks, &insert).await? {
                Ok(_) => {}
                Err(BackendError::Server(e)) if e.code == 1062 => {
                    // A mapping exists: a real duplicate, or an orphan left by a failure.
                    let existing = self.lookup_ksid(ks, vindex, value).await?;
                    let owner_col = ks
                        .tables
                        .get(owner)
                        .and_then(|t| t.column_vindexes.iter().find(|cv| cv.vindex.name == vindex))
                        .and_then(|cv| cv.columns.first().cloned())
                        .unwrap_or_default();
                    if let Some(old) = existing {
                        if self.row_exists(ks, owner, &owner_col, &v, &old).await? {
                            return Err(ProxyError::DuplicateKey {
                                value: v.trim_matches('\'').to_string(),
                                key: owner_col,
                            });
                        }
                    }
                    let update = format!(
                        "UPDATE {} SET {} = X'{}' WHERE {} = {v}",
                        quote_ident(&table),
                        quote_ident(&spec.to),
                        hex(ksid.as_bytes()),
                        quote_ident(&spec.from)
                    );
                    self.lookup_sql(&lks, &update)
                        .await?
                        .map_err(|e| ProxyError::from_backend(&lks, e))?;
                }
                Err(e) => return Err(ProxyError::from_backend(&lks, e)),
            }
        }
        Ok(())
    }

    /// Whether the owner row with `col = literal` exists on the shard of `ksid`.
    async fn row_exists(
        &mut self,
        ks: &Keyspace,
        owner: &str,
        col: &str,
        literal: &str,
        ksid: &KeyspaceId,
    ) -> Result<bool, ProxyError> {
        let Some(shard) = ks.shard_for(ksid.as_bytes()) else {
            return Ok(false);
        };
        let sql = format!(
            "SELECT 1 FROM {} WHERE {} = {literal} LIMIT 1",
            quote_ident(owner),
            quote_ident(col)
        );
        let held = self.conns.get(self.ctx, &ks.name, shard).await?;
        let label = held.label.clone();
        let r = held
            .conn
            .query(&sql)
            .await
            .map_err(|e| ProxyError::from_backend(&label, e))?;
        Ok(!r.rows.is_empty())
    }

    /// Deletes mappings of `values` (after their rows are gone or changed).
    pub(super) async fn delete_mappings(
        &mut self,
        ks: &Keyspace,
        vindex: &str,
        values: &[String],
    ) -> Result<(), ProxyError> {
        if values.is_empty() {
            return Ok(());
        }
        let (spec, lks, table) = self.lookup_spec(ks, vindex)?;
        let sql = format!(
            "DELETE FROM {} WHERE {} IN ({})",
            quote_ident(&table),
            quote_ident(&spec.from),
            values.join(", ")
        );
        self.lookup_sql(&lks, &sql)
            .await?
            .map_err(|e| ProxyError::from_backend(&lks, e))?;
        Ok(())
    }

    /// Reads the rows a write will touch: (sharding value as its column stores it, lookup
    /// values as literals).
    pub(super) async fn rows_for_lookups(
        &mut self,
        ks: &Keyspace,
        m: &LookupMaintenance,
    ) -> Result<Vec<LookupRow>, ProxyError> {
        let targets = self.targets(&m.select, ks).await?;
        let mut out = Vec::new();
        for t in targets {
            let sql = self.render(&m.select.query.template, t.shard, t.values.as_deref(), None);
            let held = self.conns.get(self.ctx, &ks.name, t.shard).await?;
            let label = held.label.clone();
            let r = held
                .conn
                .query(&sql)
                .await
                .map_err(|e| ProxyError::from_backend(&label, e))?;
            for row in r.rows {
                let mut cells = row.into_iter();
                // Results come in the session's character set; the vindex hashes what
                // the column stores.
                let key = cells
                    .next()
                    .flatten()
                    .map(|b| SqlValue::Bytes(self.charset.to_utf8(&b).into_owned()));
                let literals = cells.map(|c| {
                    c.map(|b| {
                        let mut s = String::new();
                        crate::wire::params::quote_bytes(
                            &mut s,
                            &b,
                            self.charset,
                            self.no_backslash_escapes,
                        );
                        s
                    })
                });
                out.push((key, literals.collect()));
            }
        }
        Ok(out)
    }

    /// Before an UPDATE: mappings for the new values. After: old mappings removed.
    pub(super) async fn maintain_before(
        &mut self,
        ks: &Keyspace,
        owner: &str,
        m: &LookupMaintenance,
        rows: &[LookupRow],
    ) -> Result<(), ProxyError> {
        if m.delete {
            return Ok(());
        }
        let primary = ks
            .tables
            .get(owner)
            .and_then(|t| t.primary_vindex().map(|cv| cv.vindex.clone()))
            .ok_or_else(|| ProxyError::Internal(format!("{owner} has no primary vindex")))?;
        for (i, vindex) in m.vindexes.iter().enumerate() {
            let Some(Some(new)) = m.new_values.get(i) else {
                continue;
            };
            let mut mappings = Vec::new();
            for (key, _) in rows {
                let Some(v) = key else { continue };
                if let Some(id) = primary.map(v).map_err(ProxyError::Internal)? {
                    mappings.push((new.clone(), id));
                }
            }
            if mappings.len() > 1 {
                return Err(ProxyError::DuplicateKey {
                    value: self.literal(new),
                    key: vindex.clone(),
                });
            }
            self.create_mappings(ks, owner, vindex, &mappings).await?;
        }
        Ok(())
    }

    pub(super) async fn maintain_after(
        &mut self,
        ks: &Keyspace,
        m: &LookupMaintenance,
        rows: &[LookupRow],
    ) -> Result<(), ProxyError> {
        for (i, vindex) in m.vindexes.iter().enumerate() {
            let changed = m.delete || matches!(m.new_values.get(i), Some(Some(_)));
            if !changed {
                continue;
            }
            let new = m
                .new_values
                .get(i)
                .cloned()
                .flatten()
                .map(|v| self.literal(&v));
            let old: Vec<String> = rows
                .iter()
                .filter_map(|(_, vals)| vals.get(i).cloned().flatten())
                .filter(|v| Some(v) != new.as_ref())
                .collect();
            self.delete_mappings(ks, vindex, &old).await?;
        }
        Ok(())
    }
}
