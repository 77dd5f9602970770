//! One controller per workflow: a lease-backed lock key (`workflows/<name>/lock`),
//! created only if absent (one etcd transaction, so two controllers starting at once
//! cannot both believe they hold it). Its create revision is a fencing token: the
//! controller's store is fenced by it ([`Store::fenced`]), so every workflow or routing
//! write also checks that the lock is still this controller's. A controller that lost
//! its lease (killed, frozen, cut off from etcd) can write nothing more to etcd, and the
//! capture appliers serialize on a named lock in the databases (see `capture.rs`).
//!
//! A controller killed with SIGKILL stops renewing the lease; it expires within its TTL
//! and `resume` takes over.

use anyhow::{bail, Result};
use shardgate_topology::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lease TTL in seconds.
const TTL: i64 = 5;

/// The key of a workflow's lock.
pub fn key(workflow: &str) -> String {
    format!("workflows/{workflow}/lock")
}

/// Held while the value lives; dropping it releases the lock.
pub struct Lock {
    store: Store,
    lease: i64,
    /// The lock's create revision (the fencing token).
    pub token: i64,
    lost: Arc<AtomicBool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Takes the lock, waiting out a dead holder's lease.
    pub async fn take(store: &Store, workflow: &str) -> Result<Lock> {
        let key = key(workflow);
        let deadline = Instant::now() + Duration::from_secs(TTL as u64 + 3);
        let holder = format!(
            "pid {} on {}",
            std::process::id(),
            std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
        );
        let mut told = false;
        // One lease for every attempt: it only becomes the lock's once the key is created.
        let lease = store.grant_lease(TTL).await.map_err(anyhow::Error::new)?;
        let token = loop {
            match store
                .create_leased(&key, holder.clone().into_bytes(), lease)
                .await
                .map_err(anyhow::Error::new)?
            {
                Ok(token) => break token,
                Err(current) => {
                    let other = String::from_utf8_lossy(&current).into_owned();
                    if Instant::now() >= deadline {
                        let _ = store.revoke_lease(lease).await;
                        bail!(LockHeld {
                            workflow: workflow.to_string(),
                            holder: other,
                        });
                    }
                    if !told {
                        tracing::info!(holder = %other, "waiting for the previous controller's lock to expire");
                        told = true;
                    }
                    // Keep our lease alive while we wait (its TTL may be shorter than the
                    // wait for the previous holder's).
                    let _ = store.keep_alive_once(lease).await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        let s = store.clone();
        let flag = lost.clone();
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                if let Ok(0) = s.keep_alive_once(lease).await {
                    tracing::error!(
                        "the workflow lock's lease expired; this controller stops writing"
                    );
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
        Ok(Lock {
            store: store.clone(),
            lease,
            token,
            lost,
            keeper,
        })
    }

    /// Whether the lease was seen to expire (every etcd write fails from then on anyway).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
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

/// Another controller drives the workflow.
#[derive(Debug, thiserror::Error)]
#[error("workflow {workflow} is being driven by another controller ({holder}); stop it first")]
pub struct LockHeld {
    pub workflow: String,
    pub holder: String,
}
