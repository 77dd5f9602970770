//! The etcd store: the one place that talks to etcd.
//!
//! Every key lives under `/shardgate/<cluster>/`; callers use keys relative to that prefix.
//! Writes are compare-and-swap: a put says what it expects the key's `mod_revision` to be
//! (or that it must not exist), and a concurrent edit makes it fail with
//! [`StoreError::Conflict`] instead of being overwritten. [`Store::commit_validated`] also
//! re-validates the whole topology as it will be after the write, and refuses the write if
//! any keyspace document changed since it was read.

use crate::snapshot::{Snapshot, TopoProblems};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, WatchOptions, WatchStream,
};
pub use etcd_client::{EventType, WatchStream as EtcdWatchStream};
use shardgate_config::TopologyConfig;
use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    #[error("{key} was changed by someone else since it was read (expected revision {expected}); read it again and retry")]
    Conflict { key: String, expected: i64 },
    #[error("the topology would be invalid: {0}")]
    Invalid(TopoProblems),
    #[error("{0}")]
    Config(String),
    #[error("the lock {key} is no longer held by this process (it expired or another process took it); nothing was written")]
    Fenced { key: String },
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// One key and its value, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the cluster prefix.
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// What a write expects of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Overwrite whatever is there (only for keys owned by one writer, e.g. registrations).
    Any,
    /// The key must not exist.
    Absent,
    /// The key's `mod_revision` must still be this.
    Revision(i64),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } => key,
        }
    }
}

/// The topology as read: all entries and the revision they were read at.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub revision: i64,
    pub entries: Vec<Entry>,
}

impl Loaded {
    /// Validates the entries as a snapshot.
    pub fn snapshot(&self) -> Result<Snapshot, TopoProblems> {
        Snapshot::build(
            self.revision,
            self.entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_slice())),
        )
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The entries as they would be after `writes`.
    pub fn apply(&self, writes: &[Write]) -> Loaded {
        let mut entries = self.entries.clone();
        for w in writes {
            entries.retain(|e| e.key != w.key());
            if let Write::Put { key, value, .. } = w {
                entries.push(Entry {
                    key: key.clone(),
                    value: value.clone(),
                    mod_revision: 0,
                });
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Loaded {
            revision: self.revision,
            entries,
        }
    }
}

/// A handle on the cluster's topology in etcd. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    endpoints: Vec<String>,
    /// A lock this store's writes are fenced by: (key relative to the prefix, the lock's
    /// create revision). Every commit also requires that the lock still exists with that
    /// create revision, so a holder that lost its lock can write nothing more.
    fence: Option<(String, i64)>,
}

/// The key prefix of a cluster.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("/shardgate/{cluster}/")
}

impl Store {
    /// Prepares a client for the configured endpoints (etcd may still be down: requests
    /// fail with [`StoreError::Unavailable`] until it is up).
    pub async fn connect(cfg: &TopologyConfig) -> Result<Store, StoreError> {
        let timeout = Duration::from_millis(cfg.etcd_timeout_ms.max(100));
        let mut opts = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout);
        if !cfg.etcd_username.is_empty() {
            opts = opts.with_user(cfg.etcd_username.clone(), cfg.etcd_password.clone());
        }
        let tls = !cfg.etcd_ca_file.is_empty() || !cfg.etcd_cert_file.is_empty();
        if tls {
            let mut t = TlsOptions::new();
            if !cfg.etcd_ca_file.is_empty() {
                let pem = std::fs::read(&cfg.etcd_ca_file).map_err(|e| {
                    StoreError::Config(format!("topology.etcd_ca_file {}: {e}", cfg.etcd_ca_file))
                })?;
                t = t.ca_certificate(Certificate::from_pem(pem));
            }
            if !cfg.etcd_cert_file.is_empty() {
                let read = |p: &str, what: &str| {
                    std::fs::read(p)
                        .map_err(|e| StoreError::Config(format!("topology.{what} {p}: {e}")))
                };
                let cert = read(&cfg.etcd_cert_file, "etcd_cert_file")?;
                let key = read(&cfg.etcd_key_file, "etcd_key_file")?;
                t = t.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(t);
        }
        let endpoints: Vec<String> = cfg
            .etcd_endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if tls {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let client = tokio::time::timeout(timeout * 2, Client::connect(&endpoints, Some(opts)))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("connecting to {} timed out", endpoints.join(",")))
            })??;
        Ok(Store {
            client,
            prefix: cluster_prefix(&cfg.cluster),
            endpoints,
            fence: None,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn relative(&self, key: &[u8]) -> String {
        let k = String::from_utf8_lossy(key);
        k.strip_prefix(self.prefix.as_str())
            .unwrap_or(&k)
            .to_string()
    }

    /// Reads every key of the cluster.
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let entries = self.entries(&resp);
        Ok(Loaded { revision, entries })
    }

    fn entries(&self, resp: &etcd_client::GetResponse) -> Vec<Entry> {
        resp.kvs()
            .iter()
            .map(|kv| Entry {
                key: self.relative(kv.key()),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
            })
            .collect()
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv.get(self.full(key), None).await?;
        Ok(resp.kvs().first().map(|kv| Entry {
            key: key.to_string(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }))
    }

    /// Applies `writes` atomically if every expectation holds. Returns the new revision.
    pub async fn commit(&self, writes: &[Write]) -> Result<i64, StoreError> {
        self.commit_guarded(writes, None).await
    }

    async fn commit_guarded(
        &self,
        writes: &[Write],
        unchanged_since: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for w in writes {
            let full = self.full(w.key());
            let expect = match w {
                Write::Put { expect, .. } | Write::Delete { expect, .. } => *expect,
            };
            match expect {
                Expect::Any => {}
                Expect::Absent => {
                    compares.push(Compare::create_revision(full.clone(), CompareOp::Equal, 0))
                }
                Expect::Revision(r) => {
                    compares.push(Compare::mod_revision(full.clone(), CompareOp::Equal, r))
                }
            }
            ops.push(match w {
                Write::Put { value, .. } => TxnOp::put(full, value.clone(), None),
                Write::Delete { .. } => TxnOp::delete(full, None),
            });
        }
        if let Some((key, token)) = &self.fence {
            compares.push(Compare::create_revision(
                self.full(key),
                CompareOp::Equal,
                *token,
            ));
        }
        if let Some(rev) = unchanged_since {
            compares.push(
                Compare::mod_revision(self.full("keyspaces/"), CompareOp::Less, rev + 1)
                    .with_prefix(),
            );
        }
        let mut kv = self.client.kv_client();
        let resp = kv.txn(Txn::new().when(compares).and_then(ops)).await?;
        if !resp.succeeded() {
            if let Some((key, token)) = &self.fence {
                let held = kv.get(self.full(key), None).await?;
                if held.kvs().first().map(|k| k.create_revision()) != Some(*token) {
                    return Err(StoreError::Fenced { key: key.clone() });
                }
            }
            let key = writes
                .iter()
                .map(|w| w.key().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let expected = writes
                .iter()
                .find_map(|w| match w {
                    Write::Put {
                        expect: Expect::Revision(r),
                        ..
                    }
                    | Write::Delete {
                        expect: Expect::Revision(r),
                        ..
                    } => Some(*r),
                    _ => None,
                })
                .or(unchanged_since)
                .unwrap_or(0);
            return Err(StoreError::Conflict { key, expected });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Validates the topology as it would be after `writes` (against `base`, which the
    /// caller read), then commits only if no keyspace key changed since `base` was read.
    pub async fn commit_validated(
        &self,
        base: &Loaded,
        writes: &[Write],
    ) -> Result<i64, StoreError> {
        base.apply(writes).snapshot().map_err(StoreError::Invalid)?;
        self.commit_guarded(writes, Some(base.revision)).await
    }

    /// Watches every key of the cluster from `revision` (inclusive).
    pub async fn watch(&self, revision: i64) -> Result<WatchStream, StoreError> {
        let mut w = self.client.watch_client();
        Ok(w.watch(
            self.prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision)
                    .with_progress_notify(),
            ),
        )
        .await?)
    }

    /// Reads the keys under `prefix` (relative to the cluster prefix).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(self.full(prefix), Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(self.entries(&resp))
    }

    /// Deletes one key (relative to the cluster prefix), whatever it holds.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        kv.delete(self.full(key), None).await?;
        Ok(())
    }

    /// Creates `key` attached to `lease` if it does not exist: `Ok(token)`, its create
    /// revision (a fencing token: it changes whenever the key is created anew), or
    /// `Err(value)` with the current value when the key exists.
    pub async fn create_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Result<i64, Vec<u8>>, StoreError> {
        let full = self.full(key);
        let mut kv = self.client.kv_client();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                full.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                full.clone(),
                value,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(full, None)]);
        let resp = kv.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|k| k.value().to_vec()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Err(current))
    }

    /// This store with its writes fenced by the lock `key` created at `token` (see
    /// [`Store::create_leased`]): once the lock is gone or re-created, every commit fails
    /// with [`StoreError::Fenced`].
    pub fn fenced(&self, key: &str, token: i64) -> Store {
        Store {
            fence: Some((key.to_string(), token)),
            ..self.clone()
        }
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64, StoreError> {
        let mut l = self.client.lease_client();
        Ok(l.grant(ttl, None).await?.id())
    }

    /// Sends one keep-alive for `lease`; returns the remaining TTL (0: the lease is gone).
    pub async fn keep_alive_once(&self, lease: i64) -> Result<i64, StoreError> {
        let mut l = self.client.lease_client();
        let (mut keeper, mut stream) = l.keep_alive(lease).await?;
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(r) => Ok(r.ttl()),
            None => Err(StoreError::Unavailable(
                "lease keep-alive stream closed".into(),
            )),
        }
    }

    /// Revokes a lease (its keys disappear).
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        let mut l = self.client.lease_client();
        l.revoke(lease).await?;
        Ok(())
    }

    /// Puts a key attached to a lease (registrations).
    pub async fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .put(
                self.full(key),
                value,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Compacts history up to `revision` (tests and maintenance).
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        kv.compact(revision, None).await?;
        Ok(())
    }

    /// Turns a watched key into its relative form.
    pub fn relative_key(&self, key: &[u8]) -> String {
        self.relative(key)
    }
}
