//! Sequences: auto-increment values for sharded tables, from a backing table in an
//! unsharded keyspace (Vitess's format: `id`, `next_id`, `cache`; one row with id 0).
//!
//! Each proxy reserves blocks of `cache` ids at a time in a short transaction of its own
//! (outside any client transaction), so ids are unique across proxies and restarts;
//! ids a proxy reserved but did not hand out before it stopped are skipped, never reused.
//! A block is dropped when the routing rules change: a table MoveTables took into a
//! sharded keyspace and rolled back gets ids from its source's own counter meanwhile,
//! which may reach ids of a block reserved before; the next cutover moves the sequence
//! past them, and a fresh block starts there.

use crate::context::Context;
use crate::error::ProxyError;
use shardgate_topology::Snapshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Block {
    next: u64,
    end: u64,
    /// The routing rules it was reserved under (`Snapshot::routing_rules_epoch`).
    epoch: u64,
}

/// A block per (keyspace, sequence table).
type Blocks = HashMap<(String, String), Arc<tokio::sync::Mutex<Block>>>;

/// The blocks this proxy holds, per sequence.
#[derive(Default)]
pub struct Sequences {
    blocks: Mutex<Blocks>,
}

impl Sequences {
    /// Reserves `n` consecutive ids from sequence `keyspace.table`; returns the first.
    pub async fn reserve(
        &self,
        ctx: &Context,
        snapshot: &Snapshot,
        keyspace: &str,
        table: &str,
        n: u64,
    ) -> Result<u64, ProxyError> {
        let block = self
            .blocks
            .lock()
            .unwrap()
            .entry((keyspace.to_string(), table.to_string()))
            .or_default()
            .clone();
        let mut b = block.lock().await;
        let epoch = snapshot.routing_rules_epoch;
        if b.end.saturating_sub(b.next) < n || b.epoch != epoch {
            let (start, end) = fetch(ctx, snapshot, keyspace, table, n).await?;
            b.next = start;
            b.end = end;
            b.epoch = epoch;
        }
        let first = b.next;
        b.next += n;
        Ok(first)
    }
}

/// Takes a new block from the backing table: at least `n` ids, a multiple of its cache.
async fn fetch(
    ctx: &Context,
    snapshot: &Snapshot,
    keyspace: &str,
    table: &str,
    n: u64,
) -> Result<(u64, u64), ProxyError> {
    let ks = snapshot
        .keyspace(keyspace)
        .ok_or_else(|| ProxyError::UnknownDatabase(keyspace.to_string()))?;
    let shard = ks
        .single_shard()
        .ok_or_else(|| ProxyError::NoServingShards(keyspace.to_string()))?;
    let label = format!("{keyspace}/{}", shard.name);
    let pool = ctx.backends.pool(shard, 45, 0);
    let mut conn = pool
        .get()
        .await
        .map_err(|e| ProxyError::from_backend(&label, e))?;
    let t = format!("`{}`", table.replace('`', "``"));
    let result: Result<(u64, u64), crate::backend::conn::BackendError> = async {
        conn.execute("START TRANSACTION").await?;
        let r = conn
            .query(&format!(
                "SELECT next_id, cache FROM {t} WHERE id = 0 FOR UPDATE"
            ))
            .await?;
        let row = r.rows.first().cloned().unwrap_or_default();
        let num = |i: usize| -> Option<u64> {
            row.get(i)
                .and_then(|c| c.as_ref())
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
        };
        let (Some(next), Some(cache)) = (num(0), num(1)) else {
            conn.execute("ROLLBACK").await?;
            return Ok((0, 0));
        };
        let cache = cache.max(1);
        let take = n.div_ceil(cache) * cache;
        conn.execute(&format!(
            "UPDATE {t} SET next_id = next_id + {take} WHERE id = 0"
        ))
        .await?;
        conn.execute("COMMIT").await?;
        Ok((next, next + take))
    }
    .await;
    match result {
        Ok((0, 0)) => Err(ProxyError::WrongValue(format!(
            "sequence {keyspace}.{table} has no row with id 0 (create it with INSERT INTO {table} VALUES (0, 1, 1000))"
        ))),
        Ok(block) => Ok(block),
        Err(e) => {
            conn.mark_broken();
            Err(ProxyError::from_backend(&label, e))
        }
    }
}
