//! Statements the session answers itself: USE, SHOW DATABASES / KEYSPACES / SHARDS,
//! BEGIN / COMMIT / ROLLBACK, SET, EXPLAIN FORMAT=shardgate, KILL.

use super::query::Flow;
use super::Session;
use crate::error::ProxyError;
use crate::planner::set::Assignment;
use crate::planner::{Plan, SessionOp};
use crate::registry::{KILL_CONNECTION, KILL_QUERY};
use crate::wire::consts::*;
use crate::wire::{ColumnDef, PacketError, Responder};

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
                    rows.push(vec![Some(k.clone())]);
                }
                self.rows(out, &[ColumnDef::text("Database")], &rows, more);
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
                    self.conns.finish(true).await
                } else {
                    Ok(())
                };
                r.map(|()| {
                    self.conns.txn = Some(super::conns::Transaction {
                        read_only: *read_only,
                    });
                    self.ok(out, more);
                })
            }
            SessionOp::Commit | SessionOp::Rollback => {
                let commit = matches!(op, SessionOp::Commit);
                self.conns.finish(commit).await.map(|()| self.ok(out, more))
            }
            SessionOp::Set(assignments) => self.set(assignments, sql, out, more).await,
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

    fn rows(
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
        out.result_set(cols, rows, status);
    }

    /// SET: global variables are refused; everything else is applied to the backends the
    /// session holds (checking it there) and remembered for the ones it takes later.
    async fn set(
        &mut self,
        assignments: &[Assignment],
        sql: &str,
        out: &mut Responder<'_>,
        more: bool,
    ) -> Result<(), ProxyError> {
        for a in assignments {
            if let Assignment::Global { name, .. } = a {
                return Err(ProxyError::AccessDenied(format!(
                    "shardgate does not change global variables of its backends (SET GLOBAL {name}); set them on each server"
                )));
            }
        }
        // Make sure at least one backend checks the statement.
        self.ensure_default_connection().await?;
        let text = sql.trim().to_string();
        self.conns.apply_setting(&text).await?;
        for a in assignments {
            if let Assignment::Session { name, value } = a {
                if name == "autocommit" {
                    let v = value.trim().trim_matches('\'').to_ascii_lowercase();
                    self.autocommit = matches!(v.as_str(), "1" | "on" | "true");
                }
            }
        }
        self.ok(out, more);
        Ok(())
    }

    /// Takes a connection to the session's default shard if it holds none.
    async fn ensure_default_connection(&mut self) -> Result<(), ProxyError> {
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
        let shard = match &self.shard {
            Some(s) => ks.shards.get(s),
            None => ks.serving.first(),
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
        target.request_kill(if connection {
            KILL_CONNECTION
        } else {
            KILL_QUERY
        });
        self.ok(out, false);
    }
}

/// The plan as indented JSON lines.
pub fn explain_text(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("(cannot render plan: {e})"))
}
