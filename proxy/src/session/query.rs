//! COM_QUERY: split a multi-statement text, plan each statement (from the cache), and run
//! it, one result per statement; the first error ends the batch, as in MySQL.

use super::conns::PinEffect;
use super::{interrupt, Session};
use crate::backend::relay::relay_field_list;
use crate::engine::{Exec, ExecError};
use crate::error::ProxyError;
use crate::planner::sqltext::split_statements;
use crate::planner::{Plan, SessionOp};
use crate::wire::consts::COM_FIELD_LIST;
use crate::wire::params::Execute;
use crate::wire::{HandlerResult, PacketError, Responder};
use bytes::Bytes;

/// What a statement's facts mean for its connections.
fn pin_effect(f: &crate::planner::Facts) -> PinEffect {
    PinEffect {
        pin: f.pin,
        unpin: f.unpin,
    }
}

/// MySQL's "Deadlock found when trying to get lock; try restarting transaction".
const ER_LOCK_DEADLOCK: u16 = 1213;

/// What the running statement did, for the query log.
#[derive(Default)]
pub(super) struct StatementTrace {
    /// When it began (set by `run_plan`).
    pub started: Option<std::time::Instant>,
    pub shards: Vec<crate::querylog::ShardTime>,
    pub rows: u64,
    pub error: Option<u16>,
}

/// Whether a batch goes on after a statement.
pub(super) enum Flow {
    Continue,
    Stop,
}

impl Session {
    pub(super) async fn handle_query(
        &mut self,
        sql: Bytes,
        out: &mut Responder<'_>,
    ) -> HandlerResult {
        let view = crate::wire::charset::decode(&sql, self.charset);
        let text: std::sync::Arc<str> = std::sync::Arc::from(&*view);
        self.entry.begin("Query", Some(&text));
        let result = self.run_batch(&sql, out).await;
        self.entry.end();
        result
    }

    /// Runs the statements of one COM_QUERY in order; the first error ends the batch.
    ///
    /// The client's bytes are read as a lossless view in its character set, then as the
    /// backend reads them (executable comments, NO_BACKSLASH_ESCAPES). When a statement
    /// changes the character set or sql_mode, the rest of the batch is read again with the
    /// new ones, as MySQL reads each statement after running the one before.
    async fn run_batch(&mut self, raw: &[u8], out: &mut Responder<'_>) -> HandlerResult {
        let mut raw_from = 0usize;
        let mut first = true;
        'read: loop {
            let (cs, opts) = (self.charset, self.read_options());
            let view = crate::wire::charset::decode(&raw[raw_from..], cs);
            let normalized = crate::planner::lexer::normalize(&view, opts);
            let statements = split_statements(&normalized);
            if first {
                first = false;
                if statements.is_empty() {
                    // Only comments: MariaDB answers OK; nothing at all is an error.
                    if normalized
                        .trim_matches(|c: char| c.is_whitespace() || c == ';')
                        .is_empty()
                    {
                        out.error(&crate::wire::ErrPacket::new(
                            1065,
                            "42000",
                            "Query was empty",
                        ));
                    } else {
                        self.ok(out, false);
                    }
                    return Ok(());
                }
                if statements.len() > 1 && !self.multi_statements {
                    self.error(
                        out,
                        &ProxyError::Syntax(
                            "several statements in one query need CLIENT_MULTI_STATEMENTS".into(),
                        ),
                    );
                    return Ok(());
                }
            }
            let n = statements.len();
            for (i, stmt) in statements.iter().enumerate() {
                match self.run_statement(stmt, out, i + 1 < n, None).await? {
                    Flow::Continue => {}
                    Flow::Stop => return Ok(()),
                }
                if out.flush_if_full().await.is_err() {
                    return Err(PacketError::Closed);
                }
                let changed = self.charset != cs || self.read_options() != opts;
                // Offsets of the view and its normalized form agree unless backslashes
                // were replaced; only then can the rest be found again in the raw bytes.
                if i + 1 < n && changed && normalized.len() == view.len() {
                    let end = stmt.as_ptr() as usize - normalized.as_ptr() as usize + stmt.len();
                    if let Some(done) = view.get(..end) {
                        raw_from += crate::wire::charset::encode(done).len();
                        continue 'read;
                    }
                }
            }
            return Ok(());
        }
    }

    /// Plans and runs one statement. `params` are a prepared statement's bound values.
    pub(super) async fn run_statement(
        &mut self,
        sql: &str,
        out: &mut Responder<'_>,
        more: bool,
        params: Option<&Execute>,
    ) -> Result<Flow, PacketError> {
        crate::failpoint::panic_on(sql);
        let snapshot = self.ctx.snapshot();
        let plan = match self.plan_now(sql, &snapshot).await {
            Ok(p) => p,
            Err(e) => {
                // The statement ran nowhere: warnings of the previous one are gone too.
                self.conns.begin_statement(false);
                self.error(out, &e);
                return Ok(Flow::Stop);
            }
        };
        self.run_plan(&plan, sql, &snapshot, out, more, params)
            .await
    }

    /// Runs a planned statement: borrows (and afterwards gives back) the connections it
    /// needs, stops it on KILL QUERY or the query timeout, and keeps ROW_COUNT(),
    /// FOUND_ROWS() and LAST_INSERT_ID() up to date.
    pub(super) async fn run_plan(
        &mut self,
        plan: &Plan,
        sql: &str,
        snapshot: &shardgate_topology::Snapshot,
        out: &mut Responder<'_>,
        more: bool,
        params: Option<&Execute>,
    ) -> Result<Flow, PacketError> {
        let started = std::time::Instant::now();
        self.stmt = StatementTrace {
            started: Some(started),
            ..StatementTrace::default()
        };
        let r = self
            .run_plan_held(plan, sql, snapshot, out, more, params)
            .await;
        self.write_ticket = None;
        let took = started.elapsed();
        let (keyspace, kind) = match plan {
            Plan::Query(q) => (&*q.keyspace, q.kind),
            Plan::Session(_) => (self.keyspace.as_deref().unwrap_or(""), "session"),
        };
        self.ctx
            .metrics
            .query_duration_seconds
            .with_label_values(&[keyspace, kind])
            .observe(took.as_secs_f64());
        if let (Plan::Query(q), true) = (plan, self.ctx.traces_wanted()) {
            let stmt = std::mem::take(&mut self.stmt);
            let entry = crate::querylog::Entry {
                time_ms: crate::topo::now_ms(),
                trace: self.ctx.querylog.next_trace(),
                session: self.info.connection_id,
                user: self.user.clone(),
                keyspace: q.keyspace.clone(),
                sql: q.digest.clone(),
                plan: q.kind,
                shards: stmt.shards,
                ms: took.as_secs_f64() * 1000.0,
                rows: stmt.rows,
                error: stmt.error,
            };
            let entry = self.ctx.querylog.record(entry);
            if let Some(otel) = &self.ctx.otel {
                otel.export(&entry, &self.ctx.querylog, sql);
            }
            self.last_trace = Some(entry);
        }
        r
    }

    async fn run_plan_held(
        &mut self,
        plan: &Plan,
        sql: &str,
        snapshot: &shardgate_topology::Snapshot,
        out: &mut Responder<'_>,
        more: bool,
        params: Option<&Execute>,
    ) -> Result<Flow, PacketError> {
        let held;
        let (plan, snapshot) = match self.hold_for_cutover(plan, sql, snapshot).await {
            None => (plan, snapshot),
            Some(Ok((p, s))) => {
                held = (p, s);
                (&*held.0, &*held.1)
            }
            Some(Err(e)) => {
                self.conns.begin_statement(false);
                self.error(out, &e);
                return Ok(Flow::Stop);
            }
        };
        self.conns.prune(snapshot).await;
        let p = match plan {
            Plan::Session(SessionOp::SqlExecute { name, using }) => {
                let text = match self.sql_execute_text(name, using) {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(out, &e);
                        return Ok(Flow::Stop);
                    }
                };
                return Box::pin(self.run_statement(&text, out, more, None)).await;
            }
            Plan::Session(op) => {
                let asks_warnings = matches!(op, SessionOp::ShowWarnings);
                self.conns.begin_statement(asks_warnings);
                let flow = self.session_op(op, sql, out, more).await;
                self.conns.end_statement(PinEffect::default(), false);
                return flow;
            }
            Plan::Query(p) => p,
        };
        let facts = p.facts;
        let p = &p.root;
        if facts.reads_autocommit && !self.autocommit {
            // The backends run with autocommit on: they would answer 1.
            self.conns.begin_statement(false);
            self.error(
                out,
                &ProxyError::NotSupported(
                    "@@autocommit inside a larger statement while autocommit is off (shardgate answers SELECT @@autocommit alone)".into(),
                ),
            );
            return Ok(Flow::Stop);
        }
        self.conns.begin_statement(false);
        self.conns.writing = facts.write || facts.locking;
        if !self.autocommit && self.conns.txn.is_none() && self.opens_implicit_transaction(&facts) {
            // autocommit=0: from here the statements run in a transaction until
            // COMMIT/ROLLBACK, under the session's transaction mode like an explicit one.
            self.begin_transaction(false);
        }
        // A statement that must be atomic across shards, outside a transaction, gets one
        // of its own (the engine commits it before answering).
        let implicit_txn = facts.atomic && self.conns.txn.is_none();
        if implicit_txn {
            self.begin_transaction(false);
        }
        self.ctx.metrics.queries_route.inc();
        *self.last_error.lock().unwrap() = None;
        let timeout = facts.timeout_ms.unwrap_or(self.timeout_ms);
        let status_flags = self.status_flags();
        let mut exec = Exec {
            ctx: &self.ctx,
            trace: Vec::new(),
            started: self.stmt.started.unwrap_or_else(std::time::Instant::now),
            snapshot,
            conns: &mut self.conns,
            params,
            more_results: more,
            no_backslash_escapes: self.no_backslash_escapes,
            charset: self.charset,
            status: status_flags,
            insert_id: None,
            last_insert_id: self.last_insert_id,
            row_count: self.row_count,
            found_rows: self.found_rows,
            implicit_txn,
        };
        let kill = &mut self.query_kill;
        let outcome = tokio::select! {
            biased;
            r = exec.run(p, out) => Ok(r),
            _ = interrupt::killed(kill) => Err(ProxyError::Interrupted),
            _ = interrupt::deadline(timeout) => Err(ProxyError::QueryTimeout),
        };
        self.stmt.shards = std::mem::take(&mut exec.trace);
        self.stmt.error = match &outcome {
            Ok(Ok(summary)) => summary.error.as_ref().map(|e| e.code),
            Ok(Err(ExecError::Proxy(e))) => Some(e.code().0),
            Ok(Err(_)) => Some(2013),
            Err(e) => Some(e.code().0),
        };
        if let Ok(Ok(summary)) = &outcome {
            self.stmt.rows = match &summary.ok {
                Some(ok) if summary.rows == 0 => ok.affected_rows,
                _ => summary.rows,
            };
        }
        let result = match outcome {
            Ok(r) => r,
            Err(stopped) => {
                let deadlock = self.entry.take_deadlock();
                let stopped = if deadlock {
                    ProxyError::DeadlockAcrossShards
                } else {
                    stopped
                };
                self.stop_backend_work().await;
                if (implicit_txn || deadlock) && self.conns.in_transaction() {
                    // A deadlock victim's whole transaction goes, as in MySQL.
                    let _ = self.conns.finish(&self.ctx, false).await;
                }
                self.row_count = -1;
                self.conns.end_statement(PinEffect::default(), false);
                self.error(out, &stopped);
                return Ok(Flow::Stop);
            }
        };
        if implicit_txn && self.conns.txn.is_some() {
            // It failed before its commit: nothing of it stays.
            let _ = self.conns.finish(&self.ctx, false).await;
        }
        let flow = match result {
            Ok(summary) => {
                if let Some(ok) = &summary.ok {
                    if ok.last_insert_id != 0 {
                        self.last_insert_id = ok.last_insert_id;
                    }
                }
                let warnings = summary.warnings > 0 || summary.error.is_some();
                if let Some(err) = &summary.error {
                    self.after_backend_error(err.code).await;
                    self.ctx
                        .metrics
                        .query_errors_total
                        .with_label_values(&[&err.code.to_string(), "backend"])
                        .inc();
                    self.row_count = -1;
                    self.conns.end_statement(pin_effect(&facts), warnings);
                    return Ok(Flow::Stop);
                }
                match &summary.ok {
                    Some(ok) if summary.rows == 0 => self.row_count = ok.affected_rows as i64,
                    _ => {
                        self.row_count = -1;
                        self.found_rows = summary.rows;
                    }
                }
                if facts.calc_found_rows {
                    self.found_rows = self.calc_found_rows().await.unwrap_or(summary.rows);
                }
                self.observe_status(summary.status);
                self.conns.end_statement(pin_effect(&facts), warnings);
                if facts.ddl {
                    // The client's next statement may need the new columns.
                    for ks in p.keyspaces() {
                        crate::schema::tracker::after_ddl(&self.ctx, &ks).await;
                    }
                }
                Flow::Continue
            }
            Err(ExecError::Proxy(e)) => {
                if let ProxyError::Backend(p) = &e {
                    self.after_backend_error(p.code).await;
                }
                self.conns.end_statement(PinEffect::default(), false);
                self.error(out, &e);
                Flow::Stop
            }
            Err(ExecError::Reported) => {
                self.conns.end_statement(PinEffect::default(), false);
                Flow::Stop
            }
            Err(ExecError::ClientGone(e)) => {
                self.conns.drop_unusable();
                return Err(e);
            }
        };
        Ok(flow)
    }

    /// Plans `sql` for this session, and checks the user may run it (`grants.rs`). When
    /// planning needs columns schema tracking has not read (a table created a moment ago,
    /// maybe through another proxy), the keyspace is read again and the statement planned
    /// once more.
    pub(super) async fn plan_now(
        &self,
        sql: &str,
        snapshot: &shardgate_topology::Snapshot,
    ) -> Result<std::sync::Arc<Plan>, ProxyError> {
        let plan = || {
            self.ctx.plan(
                sql,
                snapshot,
                self.keyspace.as_deref(),
                self.shard.as_deref(),
            )
        };
        let planned = match plan() {
            Err(ProxyError::SchemaUnknown { keyspace, .. }) => {
                crate::schema::tracker::refresh(&self.ctx, Some(&[keyspace])).await;
                plan()
            }
            other => other,
        }?;
        self.authorize(&planned, sql)?;
        Ok(planned)
    }

    /// Under autocommit=0, whether this statement opens the implicit transaction: never
    /// one that reads no table; by default the first write or locking read (plain reads
    /// before it keep multiplexing, as with ProxySQL); with
    /// `session.autocommit_false_is_transaction` any statement that reads a table, as MySQL.
    fn opens_implicit_transaction(&self, f: &crate::planner::Facts) -> bool {
        !f.no_tables
            && (f.write || f.locking || self.ctx.config.session.autocommit_false_is_transaction)
    }

    /// A deadlock rolled the shard's part of the transaction back; as in MySQL the whole
    /// transaction is gone, so the other shards roll back too.
    async fn after_backend_error(&mut self, code: u16) {
        if code == ER_LOCK_DEADLOCK && self.conns.txn.is_some() {
            let _ = self.conns.finish(&self.ctx, false).await;
        }
    }

    /// FOUND_ROWS() after a `SELECT SQL_CALC_FOUND_ROWS`: the sum of what each shard the
    /// statement ran on counted (each counted its own rows without the LIMIT).
    async fn calc_found_rows(&mut self) -> Option<u64> {
        let mut total = 0u64;
        let mut any = false;
        for h in self.conns.used_now() {
            let n: u64 = h
                .conn
                .query("SELECT FOUND_ROWS()")
                .await
                .ok()?
                .scalar()?
                .parse()
                .ok()?;
            total += n;
            any = true;
        }
        any.then_some(total)
    }

    pub(super) fn set_keyspace(&mut self, keyspace: String, shard: Option<String>) {
        let db = match &shard {
            Some(s) => format!("{keyspace}:{s}"),
            None => keyspace.clone(),
        };
        self.entry.set_db(Some(db));
        self.keyspace = Some(keyspace);
        self.shard = shard;
    }

    /// COM_FIELD_LIST: the columns of a table, from one shard of the current keyspace.
    pub(super) async fn handle_field_list(
        &mut self,
        table: &str,
        wildcard: &str,
        out: &mut Responder<'_>,
    ) -> HandlerResult {
        let snapshot = self.ctx.snapshot();
        let Some(ks_name) = self.keyspace.clone() else {
            self.error(out, &ProxyError::NoDatabaseSelected);
            return Ok(());
        };
        let Some(ks) = snapshot.keyspace(&ks_name) else {
            self.error(out, &ProxyError::UnknownDatabase(ks_name));
            return Ok(());
        };
        let shard = match &self.shard {
            Some(s) => ks.shards.get(s),
            None => ks.serving.first(),
        };
        let Some(shard) = shard else {
            self.error(out, &ProxyError::NoServingShards(ks_name));
            return Ok(());
        };
        let held = match self.conns.get(&self.ctx, &ks_name, shard).await {
            Ok(h) => h,
            Err(e) => {
                self.error(out, &e);
                return Ok(());
            }
        };
        let mut body = table.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(wildcard.as_bytes());
        if let Err(e) = held.conn.send_command(COM_FIELD_LIST, &body).await {
            let label = held.label.clone();
            self.error(out, &ProxyError::from_backend(&label, e));
            return Ok(());
        }
        match relay_field_list(&mut held.conn, out).await {
            Ok(()) => Ok(()),
            Err(crate::backend::relay::RelayError::Client(e)) => Err(e),
            Err(_) => {
                self.conns.drop_unusable();
                Ok(())
            }
        }
    }
}
