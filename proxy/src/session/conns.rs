//! The backend connections a session holds, its transaction, and its settings.
//!
//! Multiplexing: outside a transaction a statement borrows a connection from the shard's
//! pool and gives it back when it is done ([`Connections::end_statement`]). A connection
//! stays with the session only while it must: a transaction is open on it (explicit, or
//! implicit with autocommit=0), it holds session state the proxy cannot move (temporary
//! tables, GET_LOCK, LOCK TABLES, user-variable assignments inside queries), or the next
//! statement may ask about this one (SHOW WARNINGS after warnings).
//!
//! Settings (the session's SET statements) travel with the session, not the connection:
//! pools hand out connections already carrying the same settings when they have one, and
//! otherwise reset a connection and apply them (see `backend/pool.rs`).
//!
//! Transactions: each backend joins lazily, when a statement first reaches it. The mode
//! decides what spanning shards means: `single` refuses it, `multi` commits the shards one
//! after the other, `twopc` commits atomically (see `twopc.rs`).

pub use crate::backend::held::Held;
use crate::context::Context;
use crate::error::ProxyError;
use shardgate_topology::Shard;
use std::hash::{Hash, Hasher};

/// How a transaction spanning shards behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    Single,
    Multi,
    TwoPc,
}

impl TxMode {
    pub fn parse(s: &str) -> Option<TxMode> {
        match s
            .trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_ascii_lowercase()
            .as_str()
        {
            "single" => Some(TxMode::Single),
            "multi" => Some(TxMode::Multi),
            "twopc" => Some(TxMode::TwoPc),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TxMode::Single => "single",
            TxMode::Multi => "multi",
            TxMode::TwoPc => "twopc",
        }
    }
}

/// An explicit transaction (BEGIN ... COMMIT).
#[derive(Debug, Clone)]
pub struct Transaction {
    pub read_only: bool,
    pub mode: TxMode,
    /// Global transaction id for XA branches (twopc).
    pub xid: String,
    /// Savepoints set so far, oldest first (replayed on shards that join later, so a
    /// ROLLBACK TO undoes their work too).
    pub savepoints: Vec<String>,
}

/// What a statement does to the connections it ran on (from its plan's facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinEffect {
    /// Keep them for the rest of the session.
    pub pin: bool,
    /// UNLOCK TABLES: locks are gone, the connections may go back.
    pub unpin: bool,
}

/// The session's backend side.
pub struct Connections {
    held: Vec<Held>,
    /// Client character set (handshake collation id) and mirrored capabilities.
    pub charset: u8,
    pub capabilities: u32,
    /// Statements every connection the session uses must have run (its SETs), one per
    /// variable, with the variable each sets (a later SET of it replaces the statement).
    pub settings: Vec<String>,
    setting_keys: Vec<String>,
    signature: u64,
    /// `SET TRANSACTION ...` for the next transaction only.
    pub next_txn: Option<String>,
    pub txn: Option<Transaction>,
    /// Topology revision the held connections were last checked against.
    checked_revision: i64,
    /// Counts statements (to know which connections the current one used).
    seq: u64,
    /// The running statement may change or lock rows (set by the session for each
    /// statement): connections it uses in a transaction are marked [`Held::wrote`].
    pub writing: bool,
    /// A shard whose connection failed while in the transaction: the transaction can
    /// only roll back now.
    pub lost: Option<String>,
    /// Pool and backend thread id of connections taken out for a multi-shard read (to
    /// KILL their queries if the statement is interrupted).
    pub taken: Vec<(std::sync::Arc<crate::backend::pool::Pool>, u32)>,
    /// The transaction's connections as the deadlock detector sees them.
    locks: std::sync::Arc<crate::registry::TxnLocks>,
}

fn no_savepoint(name: &str) -> ProxyError {
    ProxyError::Backend(crate::wire::ErrPacket::new(
        1305,
        "42000",
        format!("SAVEPOINT {name} does not exist"),
    ))
}

fn fingerprint(settings: &[String]) -> u64 {
    if settings.is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    settings.hash(&mut h);
    h.finish() | 1
}

impl Connections {
    pub fn new(
        charset: u8,
        capabilities: u32,
        locks: std::sync::Arc<crate::registry::TxnLocks>,
    ) -> Connections {
        Connections {
            locks,
            held: Vec::new(),
            charset,
            capabilities,
            settings: Vec::new(),
            setting_keys: Vec::new(),
            signature: 0,
            next_txn: None,
            txn: None,
            checked_revision: 0,
            seq: 0,
            writing: false,
            lost: None,
            taken: Vec::new(),
        }
    }

    /// The connection to `shard`'s backend, borrowed (and joined to the transaction) if
    /// not held yet.
    pub async fn get(
        &mut self,
        ctx: &Context,
        keyspace: &str,
        shard: &Shard,
    ) -> Result<&mut Held, ProxyError> {
        if let Some(shard) = &self.lost {
            return Err(ProxyError::TransactionLost {
                shard: shard.clone(),
            });
        }
        // The hot path (connection already held) allocates nothing.
        let found = self.held.iter().position(|h| {
            h.key.0 == shard.primary && h.key.1 == shard.database && !h.conn.is_broken()
        });
        let pos = match found {
            Some(p) => p,
            None => {
                let key = (shard.primary.clone(), shard.database.clone());
                let label: std::sync::Arc<str> = format!("{keyspace}/{}", shard.name).into();
                if let Some(t) = &self.txn {
                    if t.mode == TxMode::Single {
                        if let Some(other) = self.held.iter().find(|h| h.in_txn) {
                            return Err(ProxyError::CrossShardTransaction {
                                shards: format!("{} and {label}", other.label),
                            });
                        }
                    }
                }
                self.drop_held(|h| h.key != key);
                let pool = ctx.backends.pool(shard, self.charset, self.capabilities);
                let conn = pool
                    .get_with(self.signature, &self.settings)
                    .await
                    .map_err(|e| {
                        ctx.metrics.backend_connect_errors_total.inc();
                        ProxyError::from_backend(&label, e)
                    })?;
                ctx.learn_backend_version(&conn.server_version);
                self.held.push(Held {
                    key,
                    label,
                    conn,
                    in_txn: false,
                    wrote: false,
                    pinned: false,
                    hold: false,
                    used: self.seq,
                });
                self.held.len() - 1
            }
        };
        let seq = self.seq;
        let h = &mut self.held[pos];
        h.used = seq;
        if let Some(t) = &self.txn {
            if !h.in_txn {
                if let Some(chars) = &self.next_txn {
                    h.conn
                        .execute(chars)
                        .await
                        .map_err(|e| ProxyError::from_backend(&h.label, e))?;
                }
                // A read-only transaction has nothing to commit atomically: no XA.
                let begin = match (t.mode, t.read_only) {
                    (_, true) => "START TRANSACTION READ ONLY".to_string(),
                    (TxMode::TwoPc, false) => format!("XA START '{}','{}'", t.xid, h.label),
                    (_, false) => "START TRANSACTION".to_string(),
                };
                h.conn
                    .execute(&begin)
                    .await
                    .map_err(|e| ProxyError::from_backend(&h.label, e))?;
                for sp in &t.savepoints {
                    h.conn
                        .execute(&format!("SAVEPOINT `{}`", sp.replace('`', "``")))
                        .await
                        .map_err(|e| ProxyError::from_backend(&h.label, e))?;
                }
                h.in_txn = true;
                self.locks.joined(h.conn.pool(), h.conn.thread_id);
            }
            if self.writing {
                h.wrote = true;
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
        let h = self.held.swap_remove(pos);
        self.taken.push((h.conn.pool().clone(), h.conn.thread_id));
        Ok(h)
    }

    /// A connection to `shard` outside the session's transaction (see
    /// [`crate::engine::Shards::scratch`]); tracked as taken, so KILL reaches it.
    pub async fn scratch(
        &mut self,
        ctx: &Context,
        keyspace: &str,
        shard: &Shard,
    ) -> Result<Held, ProxyError> {
        let label: std::sync::Arc<str> = format!("{keyspace}/{}", shard.name).into();
        let pool = ctx.backends.pool(shard, self.charset, self.capabilities);
        let conn = pool
            .get_with(self.signature, &self.settings)
            .await
            .map_err(|e| {
                ctx.metrics.backend_connect_errors_total.inc();
                ProxyError::from_backend(&label, e)
            })?;
        self.taken.push((conn.pool().clone(), conn.thread_id));
        Ok(Held {
            key: (shard.primary.clone(), shard.database.clone()),
            label,
            conn,
            in_txn: false,
            wrote: false,
            pinned: false,
            hold: false,
            used: self.seq,
        })
    }

    /// Returns a scratch connection to its pool.
    pub fn release(&mut self, h: Held) {
        let id = h.conn.thread_id;
        self.taken.retain(|(_, t)| *t != id);
        drop(h);
    }

    /// Returns a taken connection; one left broken or with unread results is dropped.
    pub fn give_back(&mut self, h: Held) {
        let id = h.conn.thread_id;
        self.taken.retain(|(_, t)| *t != id);
        self.held.push(h);
        self.drop_unusable();
    }

    /// Marks the start of a statement. Connections kept only for the previous statement's
    /// warnings go back unless `keep_hold` (this statement asks about them).
    pub fn begin_statement(&mut self, keep_hold: bool) {
        self.seq += 1;
        self.writing = false;
        self.taken.clear();
        if !keep_hold {
            for h in &mut self.held {
                h.hold = false;
            }
            self.release_unneeded();
        }
    }

    /// After a statement: pins what it pinned, keeps its connection if it left warnings,
    /// and gives back every connection the session does not need to keep.
    pub fn end_statement(&mut self, effect: PinEffect, warnings: bool) {
        let seq = self.seq;
        for h in &mut self.held {
            if effect.unpin {
                h.pinned = false;
            }
            if h.used == seq {
                h.pinned |= effect.pin;
                h.hold = warnings;
            }
        }
        self.release_unneeded();
    }

    fn release_unneeded(&mut self) {
        self.held.retain(|h| {
            h.in_txn || h.pinned || h.hold || h.conn.in_transaction() || h.conn.is_broken()
        });
        self.drop_unusable();
    }

    /// Drops the held connections `keep` rejects; losing one that is in the transaction
    /// dooms the transaction.
    fn drop_held(&mut self, mut keep: impl FnMut(&Held) -> bool) {
        let mut lost = None;
        self.held.retain(|h| {
            let k = keep(h);
            if !k && h.in_txn {
                lost.get_or_insert_with(|| h.label.to_string());
            }
            k
        });
        if self.txn.is_some() && self.lost.is_none() {
            self.lost = lost;
        }
    }

    /// The connection kept for the previous statement's warnings, if any.
    pub fn warnings_conn(&mut self) -> Option<&mut Held> {
        self.held.iter_mut().find(|h| h.hold)
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
            } else if h.conn.is_clean() && h.conn.reset().await.is_ok() {
                h.pinned = false;
            }
        }
        self.held = kept;
    }

    /// Reads to the end what an interrupted statement left unread (after its backend
    /// query was killed), so the connections can be reused.
    pub async fn drain_pending(&mut self) {
        for h in &mut self.held {
            if h.conn.is_pending() && !h.conn.is_broken() {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    super::interrupt::drain(h),
                )
                .await;
                if h.conn.is_pending() {
                    h.conn.mark_broken();
                }
            }
        }
        self.drop_unusable();
    }

    /// Drops connections that are broken or were left with unread results.
    pub fn drop_unusable(&mut self) {
        self.drop_held(|h| !h.conn.is_broken() && !h.conn.is_pending());
    }

    /// Whether any backend has an open transaction (explicit or autocommit=0).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || self.held.iter().any(|h| h.conn.in_transaction())
    }

    /// Applies a SET statement (for variable `key`) to every held connection and
    /// remembers it for the ones the session borrows later.
    pub async fn apply_setting(&mut self, key: &str, sql: &str) -> Result<(), ProxyError> {
        for h in &mut self.held {
            h.conn
                .execute(sql)
                .await
                .map_err(|e| ProxyError::from_backend(&h.label, e))?;
        }
        if let Some(i) = self.setting_keys.iter().position(|k| k == key) {
            self.settings.remove(i);
            self.setting_keys.remove(i);
        }
        self.settings.push(sql.to_string());
        self.setting_keys.push(key.to_string());
        self.signature = fingerprint(&self.settings);
        for h in &mut self.held {
            h.conn.signature = self.signature;
        }
        Ok(())
    }

    /// Forgets every setting (COM_RESET_CONNECTION).
    pub fn clear_settings(&mut self) {
        self.settings.clear();
        self.setting_keys.clear();
        self.signature = 0;
        self.next_txn = None;
    }

    /// Connections the current statement used.
    pub fn used_now(&mut self) -> impl Iterator<Item = &mut Held> {
        let seq = self.seq;
        self.held.iter_mut().filter(move |h| h.used == seq)
    }

    /// Any held connection (SET checks its statement on one).
    pub fn any_held(&mut self) -> Option<&mut Held> {
        self.held.first_mut()
    }

    /// Ends the transaction on every backend that has one (multi, single), in order.
    /// Returns the first error; backends after a failed COMMIT are rolled back.
    pub async fn finish(&mut self, ctx: &Context, commit: bool) -> Result<(), ProxyError> {
        if let Some(shard) = self.lost.take() {
            // A participant is gone: nothing may commit.
            let _ = Box::pin(self.finish(ctx, false)).await;
            return if commit {
                Err(ProxyError::TransactionLost { shard })
            } else {
                Ok(())
            };
        }
        let txn = self.txn.take();
        self.locks.ended();
        self.next_txn = None;
        if let Some(t) = &txn {
            if t.mode == TxMode::TwoPc && !t.read_only {
                let result = super::twopc::finish(ctx, &mut self.held, t, commit).await;
                self.drop_unusable();
                return result;
            }
        }
        let mut first_err = None;
        for h in &mut self.held {
            if !(h.in_txn || h.conn.in_transaction()) {
                continue;
            }
            h.in_txn = false;
            h.wrote = false;
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

    /// SAVEPOINT / ROLLBACK TO / RELEASE SAVEPOINT on every shard of the transaction.
    pub async fn savepoint(
        &mut self,
        name: &str,
        action: crate::planner::plan::SavepointAction,
    ) -> Result<(), ProxyError> {
        use crate::planner::plan::SavepointAction;
        let Some(t) = &mut self.txn else {
            return match action {
                // Outside a transaction a savepoint is set and forgotten at once.
                SavepointAction::Set => Ok(()),
                _ => Err(no_savepoint(name)),
            };
        };
        let pos = t
            .savepoints
            .iter()
            .position(|s| s.eq_ignore_ascii_case(name));
        let quoted = format!("`{}`", name.replace('`', "``"));
        let sql = match action {
            SavepointAction::Set => {
                if let Some(p) = pos {
                    t.savepoints.remove(p);
                }
                t.savepoints.push(name.to_string());
                format!("SAVEPOINT {quoted}")
            }
            SavepointAction::RollbackTo => {
                let p = pos.ok_or_else(|| no_savepoint(name))?;
                t.savepoints.truncate(p + 1);
                format!("ROLLBACK TO SAVEPOINT {quoted}")
            }
            SavepointAction::Release => {
                let p = pos.ok_or_else(|| no_savepoint(name))?;
                t.savepoints.truncate(p);
                format!("RELEASE SAVEPOINT {quoted}")
            }
        };
        for h in self.held.iter_mut().filter(|h| h.in_txn) {
            h.conn
                .execute(&sql)
                .await
                .map_err(|e| ProxyError::from_backend(&h.label, e))?;
        }
        Ok(())
    }

    /// Rolls back and returns every connection (client gone or COM_RESET_CONNECTION).
    /// Connections that carried state beyond the settings are reset first.
    pub async fn release_all(&mut self, ctx: &Context) {
        let _ = self.finish(ctx, false).await;
        for mut h in self.held.drain(..) {
            if h.pinned && h.conn.is_clean() && h.conn.reset().await.is_ok() {
                h.pinned = false;
            }
        }
    }

    /// Drops every connection without reuse: they are closed, not returned to a pool
    /// (after a panic the session's idea of their state cannot be trusted).
    pub fn abandon(&mut self) {
        for h in &mut self.held {
            h.conn.mark_broken();
        }
        self.held.clear();
        self.taken.clear();
        self.txn = None;
        self.locks.ended();
    }

    /// Held connections (for KILL and the status page).
    pub fn held(&self) -> &[Held] {
        &self.held
    }
}

impl crate::engine::Shards for Connections {
    fn get<'a>(
        &'a mut self,
        ctx: &'a Context,
        keyspace: &'a str,
        shard: &'a Shard,
    ) -> futures::future::BoxFuture<'a, Result<&'a mut Held, ProxyError>> {
        Box::pin(Connections::get(self, ctx, keyspace, shard))
    }

    fn take<'a>(
        &'a mut self,
        ctx: &'a Context,
        keyspace: &'a str,
        shard: &'a Shard,
    ) -> futures::future::BoxFuture<'a, Result<Held, ProxyError>> {
        Box::pin(Connections::take(self, ctx, keyspace, shard))
    }

    fn give_back(&mut self, held: Held) {
        Connections::give_back(self, held)
    }

    fn scratch<'a>(
        &'a mut self,
        ctx: &'a Context,
        keyspace: &'a str,
        shard: &'a Shard,
    ) -> futures::future::BoxFuture<'a, Result<Held, ProxyError>> {
        Box::pin(Connections::scratch(self, ctx, keyspace, shard))
    }

    fn release(&mut self, held: Held) {
        Connections::release(self, held)
    }

    fn in_transaction(&self) -> bool {
        Connections::in_transaction(self)
    }

    fn finish<'a>(
        &'a mut self,
        ctx: &'a Context,
        commit: bool,
    ) -> futures::future::BoxFuture<'a, Result<(), ProxyError>> {
        Box::pin(Connections::finish(self, ctx, commit))
    }

    fn drop_unusable(&mut self) {
        Connections::drop_unusable(self)
    }

    fn holds(&self, shard: &Shard) -> bool {
        self.held
            .iter()
            .any(|h| h.key.0 == shard.primary && h.key.1 == shard.database)
    }
}
