//! Statements the session answers itself: USE, SHOW DATABASES / KEYSPACES / SHARDS,
//! BEGIN / COMMIT / ROLLBACK, EXPLAIN FORMAT=shardgate, KILL, SHOW WARNINGS, SHOW
//! PROCESSLIST, SQL-level PREPARE / EXECUTE / DEALLOCATE. SET is in `set.rs`.

use super::query::Flow;
use super::Session;
use crate::backend::relay::{relay_response, RelayError, RelayOptions};
use crate::error::ProxyError;
use crate::planner::plan::PrepareSource;
use crate::planner::prepared_sql::unquote_literal;
use crate::planner::{Plan, SessionOp};
use crate::wire::consts::*;
use crate::wire::{ColumnDef, OkPacket, PacketError, Responder};

impl Session {
    pub(super) async fn session_op(
        &mut self,
        op: &SessionOp,
        sql: &str,
        out: &mut Responder<'_>,
        more: bool,
    ) -> Result<Flow, PacketError> {
        self.ctx.metrics.queries_session.inc();
        let result: Result<(), ProxyError> = match op {
            SessionOp::Use { keyspace, shard } => {
                self.set_keyspace(keyspace.clone(), shard.clone());
                self.ok(out, more);
                Ok(())
            }
            SessionOp::ShowDatabases | SessionOp::ShowKeyspaces => {
                let snapshot = self.ctx.snapshot();
                let mut rows: Vec<Vec<Option<String>>> = Vec::new();
                if matches!(op, SessionOp::ShowDatabases) {
                    rows.push(vec![Some("information_schema".into())]);
                }
                for k in snapshot.keyspaces.keys() {
                    if self.sees_keyspace(k) {
                        rows.push(vec![Some(k.clone())]);
                    }
                }
                self.rows(out, &[ColumnDef::text("Database")], &rows, more);
                Ok(())
            }
            SessionOp::ShowSslStatus { pattern } => {
                let tls = self.info.tls.as_ref();
                let all = [
                    (
                        "Ssl_cipher",
                        tls.map(|t| t.cipher.clone()).unwrap_or_default(),
                    ),
                    (
                        "Ssl_version",
                        tls.map(|t| t.version.clone()).unwrap_or_default(),
                    ),
                ];
                let rows: Vec<Vec<Option<String>>> = all
                    .into_iter()
                    .filter(|(name, _)| like_match(pattern, name))
                    .map(|(name, value)| vec![Some(name.to_string()), Some(value)])
                    .collect();
                let cols = [ColumnDef::text("Variable_name"), ColumnDef::text("Value")];
                self.rows(out, &cols, &rows, more);
                Ok(())
            }
            SessionOp::ShowShards => {
                let snapshot = self.ctx.snapshot();
                let mut rows = Vec::new();
                for k in snapshot.keyspaces.values() {
                    for s in k.shards.values() {
                        let serving = k.serving.iter().any(|x| x.name == s.name);
                        rows.push(vec![
                            Some(format!("{}/{}", k.name, s.name)),
                            Some(if serving { "yes" } else { "no" }.to_string()),
                            Some(s.primary.clone()),
                            Some(s.database.clone()),
                        ]);
                    }
                }
                let cols = [
                    ColumnDef::text("Shards"),
                    ColumnDef::text("Serving"),
                    ColumnDef::text("Primary"),
                    ColumnDef::text("Database"),
                ];
                self.rows(out, &cols, &rows, more);
                Ok(())
            }
            SessionOp::Begin { read_only } => {
                let r = if self.conns.in_transaction() {
                    // MySQL commits an open transaction when a new one begins.
                    self.conns.finish(&self.ctx, true).await
                } else {
                    Ok(())
                };
                r.map(|()| {
                    self.begin_transaction(*read_only);
                    self.ok(out, more);
                })
            }
            SessionOp::Commit | SessionOp::Rollback => {
                let commit = matches!(op, SessionOp::Commit);
                self.conns
                    .finish(&self.ctx, commit)
                    .await
                    .map(|()| self.ok(out, more))
            }
            SessionOp::Set(assignments) => self.set(assignments, out, more).await,
            SessionOp::ShowWarnings => self.show_warnings(sql, out, more).await,
            SessionOp::Kill { id, query_only } => {
                self.handle_kill(*id, !*query_only, out).await;
                Ok(())
            }
            SessionOp::ShowProcesslist { full } => {
                self.show_processlist(*full, out, more);
                Ok(())
            }
            SessionOp::SqlPrepare { name, source } => {
                self.sql_prepare(name, source, out, more).await
            }
            SessionOp::SqlExecute { .. } => Err(ProxyError::Internal(
                "EXECUTE is run by the statement loop".into(),
            )),
            SessionOp::SqlDeallocate { name } => match self.sql_prepared.remove(name) {
                Some(_) => {
                    self.ok(out, more);
                    Ok(())
                }
                None => Err(unknown_prepared(name, "DEALLOCATE PREPARE")),
            },
            SessionOp::ShowQueryStats => {
                let cols = [
                    "digest",
                    "plan",
                    "count",
                    "errors",
                    "total_ms",
                    "avg_ms",
                    "p99_ms",
                    "max_ms",
                    "rows",
                    "max_shards",
                ]
                .map(ColumnDef::text);
                let rows: Vec<Vec<Option<String>>> = self
                    .ctx
                    .querylog
                    .stats()
                    .into_iter()
                    .map(|s| {
                        vec![
                            Some(s.sql.to_string()),
                            Some(s.plan.to_string()),
                            Some(s.count.to_string()),
                            Some(s.errors.to_string()),
                            Some(format!("{:.3}", s.total_ms)),
                            Some(format!("{:.3}", s.avg_ms)),
                            Some(format!("{:.3}", s.p99_ms)),
                            Some(format!("{:.3}", s.max_ms)),
                            Some(s.rows.to_string()),
                            Some(s.max_shards.to_string()),
                        ]
                    })
                    .collect();
                self.rows(out, &cols, &rows, more);
                Ok(())
            }
            SessionOp::ShowLastTrace => {
                let cols =
                    ["trace_id", "plan", "shard", "rows", "ms", "error"].map(ColumnDef::text);
                let mut rows = Vec::new();
                if let Some(e) = &self.last_trace {
                    let err = e.error.map(|c| c.to_string());
                    let trace_id = e.trace_id(&self.ctx.querylog);
                    rows.push(vec![
                        Some(trace_id.clone()),
                        Some(e.plan.to_string()),
                        None,
                        Some(e.rows.to_string()),
                        Some(format!("{:.3}", e.ms)),
                        err.clone(),
                    ]);
                    for s in &e.shards {
                        rows.push(vec![
                            Some(trace_id.clone()),
                            Some(e.plan.to_string()),
                            Some(s.shard.to_string()),
                            Some(s.rows.to_string()),
                            Some(format!("{:.3}", s.ms)),
                            None,
                        ]);
                    }
                }
                self.rows(out, &cols, &rows, more);
                Ok(())
            }
            SessionOp::SelectAutocommit { column } => {
                let mut col = ColumnDef::int(column);
                col.length = 1;
                let value = if self.autocommit { "1" } else { "0" };
                self.rows(out, &[col], &[vec![Some(value.to_string())]], more);
                Ok(())
            }
            SessionOp::Savepoint { name, action } => {
                if !self.autocommit && self.conns.txn.is_none() {
                    self.begin_transaction(false);
                }
                self.conns
                    .savepoint(name, *action)
                    .await
                    .map(|()| self.ok(out, more))
            }
            SessionOp::ExplainAnalyze { statement } => {
                self.explain_analyze(statement, out, more).await?
            }
            SessionOp::Explain(plan) => {
                let text = explain_text(plan);
                let rows: Vec<Vec<Option<String>>> =
                    text.lines().map(|l| vec![Some(l.to_string())]).collect();
                self.rows(out, &[ColumnDef::text("plan")], &rows, more);
                Ok(())
            }
        };
        match result {
            Ok(()) => Ok(Flow::Continue),
            Err(e) => {
                self.error(out, &e);
                Ok(Flow::Stop)
            }
        }
    }

    pub(super) fn rows(
        &self,
        out: &mut Responder<'_>,
        cols: &[ColumnDef],
        rows: &[Vec<Option<String>>],
        more: bool,
    ) {
        let mut status = self.status_flags();
        if more {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        // Cells are views (statement texts, names): the client gets its own bytes back.
        let encoded: Vec<Vec<Option<std::borrow::Cow<'_, [u8]>>>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| c.as_deref().map(crate::wire::charset::encode))
                    .collect()
            })
            .collect();
        out.result_set(cols, &encoded, status);
    }

    /// Takes a connection to the session's default shard if it holds none.
    pub(super) async fn ensure_default_connection(&mut self) -> Result<(), ProxyError> {
        if !self.conns.held().is_empty() {
            return Ok(());
        }
        let snapshot = self.ctx.snapshot();
        let ks = match &self.keyspace {
            Some(k) => snapshot.keyspace(k).cloned(),
            None => snapshot
                .keyspaces
                .values()
                .find(|k| !k.sharded && !k.serving.is_empty())
                .or_else(|| snapshot.keyspaces.values().find(|k| !k.serving.is_empty()))
                .cloned(),
        };
        let Some(ks) = ks else {
            return Err(ProxyError::NoServingShards("(none)".into()));
        };
        // A shard whose connections are all pinned must not stall a SET check.
        let shard = match &self.shard {
            Some(s) => ks.shards.get(s),
            None => ks
                .serving
                .iter()
                .find(|s| self.ctx.backends.has_free_connection(s))
                .or_else(|| ks.serving.first()),
        }
        .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?;
        self.conns.get(&self.ctx, &ks.name, shard).await.map(|_| ())
    }

    /// KILL [CONNECTION|QUERY] id with the proxy's connection ids.
    pub(super) async fn handle_kill(&mut self, id: u64, connection: bool, out: &mut Responder<'_>) {
        let Some(target) = u32::try_from(id)
            .ok()
            .and_then(|i| self.ctx.registry.get(i))
        else {
            self.error(out, &ProxyError::UnknownThread(id));
            return;
        };
        if !self.may_kill(&target.user) {
            self.error(out, &ProxyError::KillDenied(id));
            return;
        }
        target.request_kill(connection);
        self.ok(out, false);
    }

    /// Opens a transaction (BEGIN, or the first statement with autocommit=0).
    pub(super) fn begin_transaction(&mut self, read_only: bool) {
        self.transactions += 1;
        let xid = super::twopc::new_gtrid(
            &self.ctx.config.proxy_id(),
            self.ctx.started_unix_ms,
            self.info.connection_id,
            self.transactions,
        );
        self.conns.txn = Some(super::conns::Transaction {
            read_only,
            mode: self.tx_mode,
            xid,
            savepoints: Vec::new(),
        });
    }

    /// SHOW WARNINGS / ERRORS / COUNT(*): asked of the connection the previous statement
    /// ran on; an error the proxy raised itself is answered by the proxy.
    async fn show_warnings(
        &mut self,
        sql: &str,
        out: &mut Responder<'_>,
        more: bool,
    ) -> Result<(), ProxyError> {
        if let Some(h) = self.conns.warnings_conn() {
            h.conn
                .send_query(sql)
                .await
                .map_err(|e| ProxyError::from_backend(&h.label, e))?;
            let opts = RelayOptions { more_results: more };
            return match relay_response(&mut h.conn, out, opts).await {
                Ok(_) => Ok(()),
                Err(RelayError::Client(_)) | Err(RelayError::Backend(_)) => {
                    self.conns.drop_unusable();
                    Ok(())
                }
            };
        }
        let last = self.last_error.lock().unwrap().clone();
        let upper = sql.to_ascii_uppercase();
        let errors_only = upper.contains("ERRORS");
        if upper.contains("COUNT") {
            let n = last.is_some() as u8;
            let name = if errors_only {
                "@@session.error_count"
            } else {
                "@@session.warning_count"
            };
            self.rows(
                out,
                &[ColumnDef::text(name)],
                &[vec![Some(n.to_string())]],
                more,
            );
            return Ok(());
        }
        let rows: Vec<Vec<Option<String>>> = last
            .map(|e| {
                vec![vec![
                    Some("Error".to_string()),
                    Some(e.code.to_string()),
                    Some(e.message),
                ]]
            })
            .unwrap_or_default();
        let cols = [
            ColumnDef::text("Level"),
            ColumnDef::text("Code"),
            ColumnDef::text("Message"),
        ];
        self.rows(out, &cols, &rows, more);
        Ok(())
    }

    /// SHOW [FULL] PROCESSLIST: this proxy's sessions.
    fn show_processlist(&self, full: bool, out: &mut Responder<'_>, more: bool) {
        let cols = [
            "Id", "User", "Host", "db", "Command", "Time", "State", "Info", "Progress",
        ]
        .map(ColumnDef::text);
        let rows: Vec<Vec<Option<String>>> = self
            .ctx
            .registry
            .processlist()
            .into_iter()
            .filter(|r| self.sees_session(&r.user))
            .map(|r| {
                let info = r.info.map(|i| {
                    if full {
                        i
                    } else {
                        i.chars().take(100).collect()
                    }
                });
                vec![
                    Some(r.id.to_string()),
                    Some(r.user),
                    Some(r.host),
                    r.db,
                    Some(r.command.to_string()),
                    Some(r.time_s.to_string()),
                    Some(
                        if r.command == "Sleep" {
                            ""
                        } else {
                            "executing"
                        }
                        .to_string(),
                    ),
                    info,
                    Some("0.000".to_string()),
                ]
            })
            .collect();
        self.rows(out, &cols, &rows, more);
    }

    /// PREPARE name FROM ...: checked by planning it, kept by the session.
    async fn sql_prepare(
        &mut self,
        name: &str,
        source: &PrepareSource,
        out: &mut Responder<'_>,
        more: bool,
    ) -> Result<(), ProxyError> {
        let text = match source {
            PrepareSource::Text(t) => t.clone(),
            PrepareSource::Variable(v) => self
                .user_vars
                .get(&v.to_ascii_lowercase())
                .and_then(|lit| unquote_literal(lit))
                .ok_or_else(|| {
                    ProxyError::Syntax(format!("user variable @{v} does not hold statement text"))
                })?,
        };
        let first = crate::planner::sqltext::leading_words(&text, 1);
        if matches!(
            first.first().map(String::as_str),
            Some("PREPARE" | "EXECUTE" | "DEALLOCATE")
        ) {
            return Err(ProxyError::Unsupported(
                "This command is not supported in the prepared statement protocol yet".into(),
            ));
        }
        let snapshot = self.ctx.snapshot();
        self.plan_now(&text, &snapshot).await?;
        self.sql_prepared.insert(name.to_string(), text);
        let mut status = self.status_flags();
        if more {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        out.ok(&OkPacket {
            status,
            info: "Statement prepared".into(),
            ..OkPacket::default()
        });
        Ok(())
    }

    /// EXECUTE name [USING @a, ...]: the text with the variables' values in place of its
    /// placeholders.
    pub(super) fn sql_execute_text(
        &self,
        name: &str,
        using: &[String],
    ) -> Result<String, ProxyError> {
        let text = self
            .sql_prepared
            .get(name)
            .ok_or_else(|| unknown_prepared(name, "EXECUTE"))?;
        let offsets = crate::planner::sqltext::placeholder_offsets(text);
        if offsets.len() != using.len() {
            return Err(ProxyError::WrongArguments("EXECUTE"));
        }
        let mut sql = String::with_capacity(text.len() + 16 * using.len());
        let mut at = 0;
        for (off, var) in offsets.iter().zip(using) {
            sql.push_str(&text[at..*off]);
            match self.user_vars.get(&var.to_ascii_lowercase()) {
                Some(lit) => sql.push_str(lit),
                None => sql.push_str("NULL"),
            }
            at = off + 1;
        }
        sql.push_str(&text[at..]);
        Ok(sql)
    }
}

fn unknown_prepared(name: &str, command: &str) -> ProxyError {
    ProxyError::Backend(crate::wire::ErrPacket::new(
        1243,
        "HY000",
        format!("Unknown prepared statement handler ({name}) given to {command}"),
    ))
}

/// The plan as indented JSON lines.
pub fn explain_text(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("(cannot render plan: {e})"))
}

/// SQL LIKE, case-insensitive (ASCII): `%` any run, `_` one character, `\\` escapes.
fn like_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Positions in the text reachable after each pattern element.
    let mut reach = vec![false; t.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        match p[i] {
            '%' => {
                let mut on = false;
                for j in 0..=t.len() {
                    on |= reach[j];
                    next[j] = on;
                }
            }
            c => {
                let (c, any) = match c {
                    '\\' if i + 1 < p.len() => {
                        i += 1;
                        (p[i], false)
                    }
                    '_' => (c, true),
                    c => (c, false),
                };
                for j in 0..t.len() {
                    if reach[j] && (any || t[j].eq_ignore_ascii_case(&c)) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        reach = next;
        i += 1;
    }
    reach[t.len()]
}

#[cfg(test)]
mod like_tests {
    use super::like_match;

    #[test]
    fn like_patterns() {
        assert!(like_match("Ssl%", "Ssl_version"));
        assert!(like_match("ssl_version", "Ssl_version"));
        assert!(like_match("%cipher", "Ssl_cipher"));
        assert!(!like_match("Ssl\\_v%", "SslXversion"));
        assert!(like_match("Ssl\\_v%", "Ssl_version"));
        assert!(!like_match("ssl", "Ssl_version"));
        assert!(like_match("%", ""));
        assert!(like_match("\\", "\\"));
    }
}
