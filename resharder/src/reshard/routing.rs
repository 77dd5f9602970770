//! Routing changes a workflow makes, and waiting until every live proxy runs them.

use anyhow::{anyhow, bail, Result};
use shardgate_topology::docs::RoutingDoc;
use shardgate_topology::store::{Expect, Write};
use shardgate_topology::Store;
use std::time::{Duration, Instant};

/// Changes a keyspace's routing document (validated, compare-and-swap, version bumped),
/// together with `extra` writes in the same etcd transaction. Returns the new version and
/// the etcd revision of the write.
pub async fn update(
    store: &Store,
    keyspace: &str,
    extra: Vec<Write>,
    change: impl Fn(&mut RoutingDoc),
) -> Result<(u64, i64)> {
    let key = format!("keyspaces/{keyspace}/routing");
    for _ in 0..5 {
        let base = store.load().await.map_err(anyhow::Error::new)?;
        let entry = base
            .get(&key)
            .ok_or_else(|| anyhow!("keyspace {keyspace} has no routing document ({key})"))?;
        let mut doc: RoutingDoc = serde_json::from_slice(&entry.value)
            .map_err(|e| anyhow!("{key} cannot be read: {e}"))?;
        change(&mut doc);
        doc.version += 1;
        let mut writes = vec![Write::Put {
            key: key.clone(),
            value: serde_json::to_vec_pretty(&doc)?,
            expect: Expect::Revision(entry.mod_revision),
        }];
        writes.extend(extra.iter().cloned());
        match store.commit_validated(&base, &writes).await {
            Ok(rev) => return Ok((doc.version, rev)),
            Err(shardgate_topology::StoreError::Conflict { .. }) => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot change the routing of {keyspace}")))
            }
        }
    }
    bail!("the routing of {keyspace} keeps changing under the controller; retry")
}

/// The keyspace's routing version now.
pub async fn current_version(store: &Store, keyspace: &str) -> Result<u64> {
    let key = format!("keyspaces/{keyspace}/routing");
    let e = store
        .get(&key)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| anyhow!("{key} is missing"))?;
    let doc: RoutingDoc = serde_json::from_slice(&e.value)?;
    Ok(doc.version)
}

/// Waits until every registered proxy reports routing `version` (or newer) for the
/// keyspace. Proxies whose registration disappears (lease expired) no longer count.
/// Fails at `deadline` naming the proxies that did not answer.
pub async fn wait_acks(
    store: &Store,
    keyspace: &str,
    version: u64,
    deadline: Instant,
) -> Result<()> {
    // Proxies seen so far, and when each was last registered with its lease TTL: one that
    // disappears is counted until its TTL has passed (it may not have noticed it lost the
    // lease and fenced itself yet).
    let mut seen: std::collections::BTreeMap<String, (Instant, u64)> = Default::default();
    loop {
        let loaded = store.load().await.map_err(anyhow::Error::new)?;
        let mut behind = Vec::new();
        let mut present = std::collections::BTreeSet::new();
        for e in loaded
            .entries
            .iter()
            .filter(|e| e.key.starts_with("proxies/"))
        {
            let Ok(p) = serde_json::from_slice::<shardgate_topology::docs::ProxyDoc>(&e.value)
            else {
                continue;
            };
            present.insert(p.id.clone());
            seen.insert(p.id.clone(), (Instant::now(), p.lease_ttl_s));
            let v = p.routing_versions.get(keyspace).copied().unwrap_or(0);
            if v < version {
                behind.push(format!("{} (at version {v})", p.id));
            }
        }
        for (id, (last, ttl)) in &seen {
            if !present.contains(id) && last.elapsed() < Duration::from_secs(*ttl) {
                behind.push(format!("{id} (registration lost; waiting out its lease)"));
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "proxies did not apply routing version {version} of {keyspace} in time: {}",
                behind.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}
