//! The backend connections a session holds, its transaction, and the session settings
//! (SET statements) every connection it uses must carry.
//!
//! A connection is borrowed from the shard's pool when a statement first needs that
//! backend; the session's settings are replayed on it before its first use. Inside a
//! transaction each backend joins lazily: the first statement that reaches it starts a
//! transaction there, and COMMIT / ROLLBACK go to every backend that joined.

use crate::backend::pool::PooledConn;
use crate::context::Context;
use crate::error::ProxyError;
use shardgate_topology::Shard;

/// A backend connection held by the session.
pub struct Held {
    /// (address, database) of the shard's backend.
    pub key: (String, String),
    /// `keyspace/shard`, for messages.
    pub label: String,
    pub conn: PooledConn,
    /// Joined the session's explicit transaction.
    pub in_txn: bool,
}

/// An explicit transaction (BEGIN ... COMMIT).
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub read_only: bool,
}

/// The session's backend side.
pub struct Connections {
    held: Vec<Held>,
    /// Client character set (handshake collation id) and mirrored capabilities.
    pub charset: u8,
    pub capabilities: u32,
    /// Statements replayed on every new backend connection (the session's SETs).
    pub settings: Vec<String>,
    pub txn: Option<Transaction>,
    /// Topology revision the held connections were last checked against.
    checked_revision: i64,
}

impl Connections {
    pub fn new(charset: u8, capabilities: u32) -> Connections {
        Connections {
            held: Vec::new(),
            charset,
            capabilities,
            settings: Vec::new(),
            txn: None,
            checked_revision: 0,
        }
    }

    /// The connection to `shard`'s backend, borrowed and prepared if not held yet.
    pub async fn get(
        &mut self,
        ctx: &Context,
        keyspace: &str,
        shard: &Shard,
    ) -> Result<&mut Held, ProxyError> {
        // The hot path (connection already held) allocates nothing.
        let found = self.held.iter().position(|h| {
            h.key.0 == shard.primary && h.key.1 == shard.database && !h.conn.is_broken()
        });
        let pos = match found {
            Some(p) => p,
            None => {
                let key = (shard.primary.clone(), shard.database.clone());
                let label = format!("{keyspace}/{}", shard.name);
                self.held.retain(|h| h.key != key);
                let pool = ctx.backends.pool(shard, self.charset, self.capabilities);
                let mut conn = pool.get().await.map_err(|e| {
                    ctx.metrics.backend_connect_errors_total.inc();
                    ProxyError::from_backend(&label, e)
                })?;
                ctx.learn_backend_version(&conn.server_version);
                for s in &self.settings {
                    conn.execute(s)
                        .await
                        .map_err(|e| ProxyError::from_backend(&label, e))?;
                }
                self.held.push(Held {
                    key,
                    label,
                    conn,
                    in_txn: false,
                });
                self.held.len() - 1
            }
        };
        let h = &mut self.held[pos];
        if let Some(t) = &self.txn {
            if !h.in_txn {
                let begin = if t.read_only {
                    "START TRANSACTION READ ONLY"
                } else {
                    "START TRANSACTION"
                };
                h.conn
                    .execute(begin)
                    .await
                    .map_err(|e| ProxyError::from_backend(&h.label, e))?;
                h.in_txn = true;
            }
        }
        Ok(h)
    }

    /// Takes the connection to `shard` out of the session (to read several shards at once);
    /// [`Connections::give_back`] returns it.
    pub async fn take(
        &mut self,
        ctx: &Context,
        keyspace: &str,
        shard: &Shard,
    ) -> Result<Held, ProxyError> {
        self.get(ctx, keyspace, shard).await?;
        let pos = self
            .held
            .iter()
            .position(|h| h.key.0 == shard.primary && h.key.1 == shard.database)
            .expect("get() just placed it");
        Ok(self.held.swap_remove(pos))
    }

    /// Returns a taken connection; one left broken or with unread results is dropped.
    pub fn give_back(&mut self, h: Held) {
        if !h.conn.is_broken() && !h.conn.is_pending() {
            self.held.push(h);
        }
    }

    /// After a topology change, gives back connections to backends that no longer hold a
    /// shard (a moved or removed shard), unless a transaction still needs them. Their pool
    /// was retired, so they close on return: drained, not cut.
    pub async fn prune(&mut self, snapshot: &shardgate_topology::Snapshot) {
        if snapshot.revision == self.checked_revision {
            return;
        }
        self.checked_revision = snapshot.revision;
        let live = |key: &(String, String)| {
            snapshot
                .keyspaces
                .values()
                .flat_map(|k| k.shards.values())
                .any(|s| s.primary == key.0 && s.database == key.1)
        };
        let mut kept = Vec::with_capacity(self.held.len());
        for mut h in std::mem::take(&mut self.held) {
            if live(&h.key) || h.in_txn || h.conn.in_transaction() {
                kept.push(h);
            } else if h.conn.is_clean() && h.conn.reset().await.is_err() {
                h.conn.mark_broken();
            }
        }
        self.held = kept;
    }

    /// Drops connections that are broken or were left with unread results.
    pub fn drop_unusable(&mut self) {
        self.held
            .retain(|h| !h.conn.is_broken() && !h.conn.is_pending());
    }

    /// Whether any backend has an open transaction (explicit or autocommit=0).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || self.held.iter().any(|h| h.conn.in_transaction())
    }

    /// Applies a SET statement to every held connection and remembers it for new ones.
    pub async fn apply_setting(&mut self, sql: &str) -> Result<(), ProxyError> {
        for h in &mut self.held {
            h.conn
                .execute(sql)
                .await
                .map_err(|e| ProxyError::from_backend(&h.label, e))?;
        }
        self.settings.push(sql.to_string());
        Ok(())
    }

    /// Ends the transaction on every backend that has one, in order. Returns the first
    /// error; backends after a failed COMMIT are rolled back.
    pub async fn finish(&mut self, commit: bool) -> Result<(), ProxyError> {
        self.txn = None;
        let mut first_err = None;
        for h in &mut self.held {
            if !(h.in_txn || h.conn.in_transaction()) {
                continue;
            }
            h.in_txn = false;
            let sql = if commit && first_err.is_none() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            if let Err(e) = h.conn.execute(sql).await {
                if first_err.is_none() {
                    first_err = Some(ProxyError::from_backend(&h.label, e));
                }
            }
        }
        self.drop_unusable();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Rolls back, resets and returns every connection (client gone or
    /// COM_RESET_CONNECTION): nothing the session set (variables, temporary tables,
    /// prepared statements) may reach the next session that borrows the connection.
    pub async fn release_all(&mut self) {
        let _ = self.finish(false).await;
        for mut h in self.held.drain(..) {
            if h.conn.is_clean() && h.conn.reset().await.is_err() {
                h.conn.mark_broken();
            }
        }
    }

    /// Held connections (for KILL and the status page).
    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// The most recently used held connection.
    pub fn last_used(&mut self) -> Option<&mut Held> {
        self.held.iter_mut().max_by_key(|h| h.conn.last_used)
    }
}
