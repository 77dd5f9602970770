//! Which shard a row belongs to: the keyspace's primary vindex applied to the row, or
//! every shard for reference tables (and the one shard of an unsharded keyspace).

use super::db::{sql_value, TableMeta};
use anyhow::{anyhow, bail, Result};
use mysql_async::Value;
use shardgate_topology::{Keyspace, Shard, TableKind};
use std::sync::Arc;

/// Routes rows of one table among a set of shards.
#[derive(Clone)]
pub struct Router {
    table: String,
    /// Column position of the primary vindex column, `None` for reference tables.
    column: Option<usize>,
    vindex: Option<Arc<shardgate_topology::vindex::Vindex>>,
    shards: Vec<Shard>,
}

impl Router {
    pub fn new(ks: &Keyspace, meta: &TableMeta, shards: &[Shard]) -> Result<Router> {
        let whole = || Router {
            table: meta.name.clone(),
            column: None,
            vindex: None,
            shards: shards.to_vec(),
        };
        if !ks.sharded {
            // An unsharded keyspace's one shard holds every row (MoveTables' source, or
            // its target on a rollback).
            return Ok(whole());
        }
        let table = ks.table(&meta.name).ok_or_else(|| {
            anyhow!(
                "table {} is not in the VSchema of keyspace {}",
                meta.name,
                ks.name
            )
        })?;
        match table.kind {
            TableKind::Reference => Ok(whole()),
            TableKind::Sharded => {
                let cv = table
                    .primary_vindex()
                    .ok_or_else(|| anyhow!("table {} has no primary vindex", meta.name))?;
                if !cv.vindex.is_functional() {
                    bail!(
                        "table {}: its primary vindex {} needs a lookup; resharding supports functional primary vindexes",
                        meta.name,
                        cv.vindex.name
                    );
                }
                let col = cv.columns.first().cloned().unwrap_or_default();
                let column = meta.column_index(&col).ok_or_else(|| {
                    anyhow!("table {}: sharding column {col} not found", meta.name)
                })?;
                Ok(Router {
                    table: meta.name.clone(),
                    column: Some(column),
                    vindex: Some(cv.vindex.clone()),
                    shards: shards.to_vec(),
                })
            }
            _ => bail!(
                "table {} cannot be resharded (sequence or unsharded table)",
                meta.name
            ),
        }
    }

    /// The shards (indexes into the router's list) a row goes to.
    pub fn route(&self, row: &[Value]) -> Result<Vec<usize>> {
        let (Some(col), Some(vindex)) = (self.column, &self.vindex) else {
            return Ok((0..self.shards.len()).collect());
        };
        let v = sql_value(&row[col]);
        let id = vindex.map(&v).map_err(|e| anyhow!(e))?.ok_or_else(|| {
            anyhow!(
                "table {}: a row's sharding value {v:?} maps to no keyspace id",
                self.table
            )
        })?;
        match self
            .shards
            .iter()
            .position(|s| s.range.contains(id.as_bytes()))
        {
            Some(i) => Ok(vec![i]),
            None => bail!(
                "table {}: the row with sharding value {v:?} (keyspace id {}) belongs to none of the shards it is copied to; it sits on a shard that does not own it (loaded behind the proxy?)",
                self.table,
                id.hex()
            ),
        }
    }
}
