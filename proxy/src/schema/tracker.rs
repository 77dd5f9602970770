//! Keeping [`Schemas`] current: reading keyspaces again when something may have changed,
//! swapping a new snapshot in only when something did.

use super::{load, KeyspaceSchema};
use crate::context::Context;
use shardgate_topology::store::{Expect, Write};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Why a keyspace could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the schema of keyspace {keyspace}: {reason}")]
pub struct SchemaError {
    pub keyspace: String,
    pub reason: String,
}

/// Reads one keyspace's schema from its first serving shard.
async fn read_keyspace(ctx: &Context, keyspace: &str) -> Result<KeyspaceSchema, SchemaError> {
    let fail = |reason: String| SchemaError {
        keyspace: keyspace.to_string(),
        reason,
    };
    let snapshot = ctx.snapshot();
    let ks = snapshot
        .keyspace(keyspace)
        .ok_or_else(|| fail("no such keyspace".into()))?;
    let shard = ks
        .serving
        .first()
        .ok_or_else(|| fail("no serving shard".into()))?;
    let pool = ctx.backends.pool(shard, 45, 0);
    let mut conn = pool.get().await.map_err(|e| fail(e.to_string()))?;
    load::read(&mut conn).await.map_err(|e| fail(e.to_string()))
}

/// Re-reads `keyspaces` (every keyspace of the topology when None) and swaps a new
/// snapshot in when anything differs. Keyspaces that left the topology are dropped.
/// Returns whether the schema changed.
pub async fn refresh(ctx: &Context, keyspaces: Option<&[String]>) -> bool {
    let snapshot = ctx.snapshot();
    let names: Vec<String> = match keyspaces {
        Some(k) => k.to_vec(),
        None => snapshot.keyspaces.keys().cloned().collect(),
    };
    let mut read: HashMap<String, KeyspaceSchema> = HashMap::new();
    for name in &names {
        match read_keyspace(ctx, name).await {
            Ok(s) => {
                read.insert(name.clone(), s);
            }
            Err(e) => {
                ctx.metrics.schema_errors_total.inc();
                tracing::warn!(error = %e, "schema tracking: keeping what was known");
            }
        }
    }
    let current = ctx.schema();
    let mut next = (*current).clone();
    let mut changed = false;
    for (name, ks) in read {
        if next.keyspaces.get(&name).map(|k| **k != ks) != Some(false) {
            next.keyspaces.insert(name, Arc::new(ks));
            changed = true;
        }
    }
    let before = next.keyspaces.len();
    next.keyspaces
        .retain(|k, _| snapshot.keyspaces.contains_key(k));
    changed |= next.keyspaces.len() != before;
    if changed {
        next.generation = current.generation + 1;
        ctx.set_schema(next);
        ctx.metrics.schema_refreshes_total.inc();
    }
    changed
}

/// After DDL this proxy ran on `keyspace`: re-read it now (the client's next statement
/// may need the new columns), then bump the keyspace's counter in etcd so every other
/// proxy re-reads it too.
pub async fn after_ddl(ctx: &Context, keyspace: &str) {
    refresh(ctx, Some(&[keyspace.to_string()])).await;
    let Some(store) = &ctx.store else {
        return;
    };
    let key = format!("schema/{keyspace}");
    for _ in 0..5 {
        let current = match store.get(&key).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, keyspace, "cannot announce a schema change");
                return;
            }
        };
        let (version, expect) = match &current {
            Some(e) => (
                serde_json::from_slice::<serde_json::Value>(&e.value)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|n| n.as_u64()))
                    .unwrap_or(0),
                Expect::Revision(e.mod_revision),
            ),
            None => (0, Expect::Absent),
        };
        let doc = serde_json::json!({
            "version": version + 1,
            "changed_by": ctx.config.proxy_id(),
            "at_ms": crate::topo::now_ms(),
        });
        let write = Write::Put {
            key: key.clone(),
            value: doc.to_string().into_bytes(),
            expect,
        };
        match store.commit(&[write]).await {
            Ok(_) => return,
            // Another proxy announced a change at the same time: that will do, but try
            // again so this one is counted too.
            Err(shardgate_topology::StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, keyspace, "cannot announce a schema change");
                return;
            }
        }
    }
}

/// The keyspaces whose schema counter differs between two topology snapshots.
pub fn announced(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Reads every keyspace at start, then again every `interval` (to notice DDL run
/// directly on a shard) and whenever asked (`Context::request_schema_refresh`).
pub async fn run(ctx: Arc<Context>, interval: Duration) {
    refresh(&ctx, None).await;
    loop {
        let requested = tokio::select! {
            r = ctx.schema_requests() => r,
            _ = tokio::time::sleep(interval) => None,
        };
        match requested {
            Some(k) if !k.is_empty() => {
                refresh(&ctx, Some(&k)).await;
            }
            _ => {
                refresh(&ctx, None).await;
            }
        }
    }
}
