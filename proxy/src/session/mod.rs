//! One client session: its current keyspace, settings, transaction, prepared statements
//! and backend connections. [`Session`] implements the wire layer's [`Handler`]; each
//! command is handled in the submodule named after it.

mod analyze;
mod buffer;
pub use buffer::InflightWrites;
pub mod conns;
mod grants;
mod interrupt;
mod known_vars;
mod ops;
mod prepared;
mod query;
mod set;
pub mod twopc;

use crate::context::Context;
use crate::error::ProxyError;
use crate::registry::SessionEntry;
use crate::wire::consts::*;
use crate::wire::{ClientInfo, ErrPacket, Handler, HandlerResult, OkPacket, Responder};
use bytes::Bytes;
use conns::{Connections, TxMode};
use prepared::PreparedStatement;
use std::collections::HashMap;
use std::sync::Arc;

/// The state of one client connection.
pub struct Session {
    ctx: Arc<Context>,
    entry: Arc<SessionEntry>,
    info: ClientInfo,
    keyspace: Option<String>,
    /// Set by `USE ks:shard`: every statement goes to this shard.
    shard: Option<String>,
    conns: Connections,
    statements: HashMap<u32, PreparedStatement>,
    next_statement_id: u32,
    autocommit: bool,
    no_backslash_escapes: bool,
    /// The client's character set (`character_set_client`): how its bytes are read.
    charset: crate::wire::charset::Charset,
    multi_statements: bool,
    /// LAST_INSERT_ID() as the client should see it.
    last_insert_id: u64,
    /// ROW_COUNT(): affected rows of the last statement (-1 after a result set).
    row_count: i64,
    /// FOUND_ROWS(): rows the last SELECT returned.
    found_rows: u64,
    /// What a transaction spanning shards may do.
    tx_mode: TxMode,
    transactions: u64,
    /// User variables set with SET (name -> SQL literal).
    user_vars: HashMap<String, String>,
    /// SQL-level prepared statements (name -> text).
    sql_prepared: HashMap<String, String>,
    /// Longest a statement may run (0: no limit).
    timeout_ms: u64,
    /// KILL QUERY requests for this session.
    query_kill: tokio::sync::watch::Receiver<bool>,
    /// The error the proxy itself raised for the last statement (SHOW WARNINGS).
    last_error: std::sync::Mutex<Option<ErrPacket>>,
    /// The running write's registration (cutover drains wait for it).
    write_ticket: Option<buffer::WriteTicket>,
    /// What the running statement did, and the query-log entry of the previous one.
    stmt: query::StatementTrace,
    last_trace: Option<Arc<crate::querylog::Entry>>,
    /// The user name, shared with query-log entries.
    user: Arc<str>,
    /// The user's role and keyspaces, read at login (see `grants.rs`).
    grants: Arc<shardgate_config::UserConfig>,
}

impl Session {
    /// Creates the session after authentication; fails with 1049 for an unknown database.
    pub fn start(ctx: Arc<Context>, info: ClientInfo) -> Result<Session, ErrPacket> {
        // The account was found to authenticate; it may have been removed since.
        let grants = ctx.user(&info.user).ok_or_else(|| {
            ErrPacket::new(
                1045,
                "28000",
                format!(
                    "Access denied for user '{}'@'{}' (the account was just removed)",
                    info.user,
                    grants::host_of(info.peer)
                ),
            )
        })?;
        let (keyspace, shard) = match &info.database {
            Some(db) => {
                let snapshot = ctx.snapshot();
                let (k, s) =
                    crate::planner::use_target(db, &snapshot).map_err(|e| e.to_packet())?;
                grants::check_use(&grants, info.peer, &k, s.is_some())
                    .map_err(|e| e.to_packet())?;
                (Some(k), s)
            }
            None => (None, None),
        };
        let entry = ctx.registry.register(
            info.connection_id,
            &info.user,
            info.peer,
            info.database.clone(),
        );
        let conns = Connections::new(info.charset, info.capabilities, entry.locks.clone());
        let charset = crate::wire::charset::Charset::from_collation(info.charset);
        let multi_statements = info.capabilities & CLIENT_MULTI_STATEMENTS != 0;
        let tx_mode = TxMode::parse(&ctx.config.session.transaction_mode).unwrap_or(TxMode::Multi);
        let timeout_ms = ctx.config.session.query_timeout_ms;
        let query_kill = entry.query_kill();
        let user: Arc<str> = Arc::from(info.user.as_str());
        Ok(Session {
            ctx,
            entry,
            info,
            keyspace,
            shard,
            conns,
            statements: HashMap::new(),
            next_statement_id: 1,
            autocommit: true,
            no_backslash_escapes: false,
            charset,
            multi_statements,
            last_insert_id: 0,
            row_count: -1,
            found_rows: 0,
            tx_mode,
            transactions: 0,
            user_vars: HashMap::new(),
            sql_prepared: HashMap::new(),
            timeout_ms,
            query_kill,
            last_error: Default::default(),
            write_ticket: None,
            stmt: Default::default(),
            last_trace: None,
            user,
            grants,
        })
    }

    /// Server status flags as the client should see them.
    fn status_flags(&self) -> u16 {
        let mut s = 0;
        if self.autocommit {
            s |= SERVER_STATUS_AUTOCOMMIT;
        }
        if self.conns.in_transaction() {
            s |= SERVER_STATUS_IN_TRANS;
        }
        if self.no_backslash_escapes {
            s |= SERVER_STATUS_NO_BACKSLASH_ESCAPES;
        }
        s
    }

    /// An OK for a statement the proxy answered itself.
    fn ok(&self, out: &mut Responder<'_>, more: bool) {
        let mut status = self.status_flags();
        if more {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        out.ok(&OkPacket {
            status,
            ..OkPacket::default()
        });
    }

    fn error(&self, out: &mut Responder<'_>, e: &ProxyError) {
        let p = e.to_packet();
        *self.last_error.lock().unwrap() = Some(p.clone());
        self.ctx
            .metrics
            .query_errors_total
            .with_label_values(&[&p.code.to_string(), e.origin()])
            .inc();
        out.error(&p);
    }

    /// How the backend reads this session's text (for `lexer::normalize`).
    fn read_options(&self) -> crate::planner::lexer::ReadOptions {
        crate::planner::lexer::ReadOptions {
            no_backslash_escapes: self.no_backslash_escapes,
            server_version: self.ctx.backend_version(),
        }
    }

    /// Learns session flags a backend reported in its final status.
    fn observe_status(&mut self, status: u16) {
        self.no_backslash_escapes = status & SERVER_STATUS_NO_BACKSLASH_ESCAPES != 0;
    }
}

impl Handler for Session {
    async fn query(&mut self, sql: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        self.handle_query(sql, out).await
    }

    async fn init_db(&mut self, db: &str, out: &mut Responder<'_>) -> HandlerResult {
        let snapshot = self.ctx.snapshot();
        let target = crate::planner::use_target(db, &snapshot).and_then(|(k, s)| {
            grants::check_use(&self.grants, self.info.peer, &k, s.is_some())?;
            Ok((k, s))
        });
        match target {
            Ok((k, s)) => {
                self.set_keyspace(k, s);
                self.ok(out, false);
            }
            Err(e) => self.error(out, &e),
        }
        Ok(())
    }

    async fn field_list(
        &mut self,
        table: &str,
        wildcard: &str,
        out: &mut Responder<'_>,
    ) -> HandlerResult {
        self.handle_field_list(table, wildcard, out).await
    }

    async fn prepare(&mut self, sql: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        self.handle_prepare(sql, out).await
    }

    async fn execute(&mut self, payload: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        self.handle_execute(payload, out).await
    }

    async fn fetch(&mut self, _payload: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        // Executes never open cursors (results are sent whole), so there is nothing to fetch.
        out.error(&ErrPacket::new(
            1421,
            "HY000",
            "The statement has no open cursor (shardgate sends prepared statement results whole)",
        ));
        Ok(())
    }

    fn send_long_data(&mut self, statement_id: u32, param: u16, data: &[u8]) {
        let max = self.ctx.config.proxy.max_allowed_packet as usize;
        if let Some(s) = self.statements.get_mut(&statement_id) {
            s.append_long_data(param, data, max);
        }
    }

    async fn close_statement(&mut self, statement_id: u32) {
        self.statements.remove(&statement_id);
    }

    async fn reset_statement(
        &mut self,
        statement_id: u32,
        out: &mut Responder<'_>,
    ) -> HandlerResult {
        match self.statements.get_mut(&statement_id) {
            Some(s) => {
                s.reset();
                self.ok(out, false);
            }
            None => self.error(
                out,
                &ProxyError::UnknownStatement {
                    id: statement_id,
                    command: "mysqld_stmt_reset",
                },
            ),
        }
        Ok(())
    }

    async fn reset_connection(&mut self, out: &mut Responder<'_>) -> HandlerResult {
        self.conns.release_all(&self.ctx).await;
        self.conns.clear_settings();
        self.statements.clear();
        self.user_vars.clear();
        self.sql_prepared.clear();
        self.tx_mode =
            TxMode::parse(&self.ctx.config.session.transaction_mode).unwrap_or(TxMode::Multi);
        self.timeout_ms = self.ctx.config.session.query_timeout_ms;
        self.autocommit = true;
        self.no_backslash_escapes = false;
        self.charset = crate::wire::charset::Charset::from_collation(self.info.charset);
        self.last_insert_id = 0;
        self.ok(out, false);
        Ok(())
    }

    fn set_multi_statements(&mut self, on: bool) {
        self.multi_statements = on;
    }

    async fn ping(&mut self, out: &mut Responder<'_>) -> HandlerResult {
        self.ok(out, false);
        Ok(())
    }

    async fn kill(&mut self, id: u32, out: &mut Responder<'_>) -> HandlerResult {
        self.handle_kill(id as u64, true, out).await;
        Ok(())
    }

    fn statistics(&self) -> String {
        let uptime = self.ctx.started.elapsed().as_secs().max(1);
        let questions: u64 =
            self.ctx.metrics.queries_route.get() + self.ctx.metrics.queries_session.get();
        format!(
            "Uptime: {uptime}  Threads: {}  Questions: {questions}  Slow queries: 0  Opens: 0  Open tables: 0  Queries per second avg: {:.3}",
            self.ctx.registry.len(),
            questions as f64 / uptime as f64
        )
    }

    fn status(&self) -> u16 {
        self.status_flags()
    }

    fn close_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.entry.conn_kill())
    }

    fn idle_limit(&self) -> Option<std::time::Duration> {
        let secs = self.ctx.config.session.idle_transaction_timeout_s;
        (secs > 0 && self.conns.in_transaction()).then(|| std::time::Duration::from_secs(secs))
    }

    async fn idle_expired(&mut self) -> ErrPacket {
        let secs = self.ctx.config.session.idle_transaction_timeout_s;
        tracing::warn!(
            session = self.info.connection_id,
            user = %self.info.user,
            idle_s = secs,
            "transaction idle for too long; rolling it back and closing the connection"
        );
        let _ = self.conns.finish(&self.ctx, false).await;
        self.ctx.metrics.idle_transactions_killed_total.inc();
        ProxyError::IdleTransaction { seconds: secs }.to_packet()
    }

    async fn close(&mut self) {
        self.conns.release_all(&self.ctx).await;
        self.ctx.registry.unregister(self.info.connection_id);
    }

    fn abort(&mut self) {
        self.conns.abandon();
        self.statements.clear();
        self.ctx.registry.unregister(self.info.connection_id);
    }
}

impl Drop for Session {
    /// However the session ends (even a task cancelled at shutdown), its slot in the
    /// registry goes.
    fn drop(&mut self) {
        self.ctx.registry.unregister(self.info.connection_id);
    }
}
