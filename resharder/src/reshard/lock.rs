//! One controller per workflow: a lease-backed lock key (`workflows/<name>/lock`). A
//! controller killed with SIGKILL stops renewing it; the lease expires within its TTL and
//! `resume` takes over.

use anyhow::{anyhow, bail, Result};
use shardgate_topology::Store;
use std::time::{Duration, Instant};

/// Lease TTL in seconds.
const TTL: i64 = 5;

/// Held while the value lives; dropping it releases the lock.
pub struct Lock {
    store: Store,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Takes the lock, waiting out a dead holder's lease.
    pub async fn take(store: &Store, workflow: &str) -> Result<Lock> {
        let key = format!("workflows/{workflow}/lock");
        let deadline = Instant::now() + Duration::from_secs(TTL as u64 + 3);
        let mut told = false;
        loop {
            let held = store.get(&key).await.map_err(|e| anyhow!("{e}"))?;
            match held {
                None => break,
                Some(e) if Instant::now() >= deadline => bail!(
                    "workflow {workflow} is being driven by another controller ({}); stop it first",
                    String::from_utf8_lossy(&e.value)
                ),
                Some(e) => {
                    if !told {
                        eprintln!(
                            "waiting for the previous controller's lock to expire ({})",
                            String::from_utf8_lossy(&e.value)
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        let lease = store.grant_lease(TTL).await.map_err(|e| anyhow!("{e}"))?;
        let holder = format!(
            "pid {} on {}",
            std::process::id(),
            std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
        );
        store
            .put_leased(&key, holder.into_bytes(), lease)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let s = store.clone();
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                if let Ok(0) = s.keep_alive_once(lease).await {
                    tracing::error!("the workflow lock's lease expired");
                    return;
                }
            }
        });
        Ok(Lock {
            store: store.clone(),
            lease,
            keeper,
        })
    }

    /// Releases the lock now.
    pub async fn release(self) {
        self.keeper.abort();
        let _ = self.store.revoke_lease(self.lease).await;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
