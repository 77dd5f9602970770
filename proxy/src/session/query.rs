//! COM_QUERY: split a multi-statement text, plan each statement (from the cache), and run
//! it, one result per statement; the first error ends the batch, as in MySQL.

use super::Session;
use crate::backend::relay::relay_field_list;
use crate::engine::{Exec, ExecError};
use crate::error::ProxyError;
use crate::planner::sqltext::split_statements;
use crate::planner::Plan;
use crate::wire::consts::COM_FIELD_LIST;
use crate::wire::params::Execute;
use crate::wire::{HandlerResult, PacketError, Responder};
use bytes::Bytes;

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
        let text: std::sync::Arc<str> = String::from_utf8_lossy(&sql).into();
        self.entry.begin("Query", Some(&text));
        let statements = split_statements(&text);
        let result = if statements.is_empty() {
            out.error(&crate::wire::ErrPacket::new(
                1065,
                "42000",
                "Query was empty",
            ));
            Ok(())
        } else if statements.len() > 1 && !self.multi_statements {
            self.error(
                out,
                &ProxyError::Syntax(
                    "several statements in one query need CLIENT_MULTI_STATEMENTS".into(),
                ),
            );
            Ok(())
        } else {
            let n = statements.len();
            let mut r = Ok(());
            for (i, stmt) in statements.iter().enumerate() {
                match self.run_statement(stmt, out, i + 1 < n, None).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break,
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
                if out.flush_if_full().await.is_err() {
                    r = Err(PacketError::Closed);
                    break;
                }
            }
            r
        };
        self.entry.end();
        result
    }

    /// Plans and runs one statement. `params` are a prepared statement's bound values.
    pub(super) async fn run_statement(
        &mut self,
        sql: &str,
        out: &mut Responder<'_>,
        more: bool,
        params: Option<&Execute>,
    ) -> Result<Flow, PacketError> {
        let snapshot = self.ctx.snapshot();
        let plan = match self.ctx.plan(
            sql,
            &snapshot,
            self.keyspace.as_deref(),
            self.shard.as_deref(),
        ) {
            Ok(p) => p,
            Err(e) => {
                self.error(out, &e);
                return Ok(Flow::Stop);
            }
        };
        self.run_plan(&plan, sql, &snapshot, out, more, params)
            .await
    }

    /// Runs a planned statement.
    pub(super) async fn run_plan(
        &mut self,
        plan: &Plan,
        sql: &str,
        snapshot: &shardgate_topology::Snapshot,
        out: &mut Responder<'_>,
        more: bool,
        params: Option<&Execute>,
    ) -> Result<Flow, PacketError> {
        self.conns.prune(snapshot).await;
        match plan {
            Plan::Session(op) => self.session_op(op, sql, out, more).await,
            Plan::Query(p) => {
                self.ctx.metrics.queries_route.inc();
                let status_flags = self.status_flags();
                let mut exec = Exec {
                    ctx: &self.ctx,
                    snapshot,
                    conns: &mut self.conns,
                    params,
                    more_results: more,
                    no_backslash_escapes: self.no_backslash_escapes,
                    status: status_flags,
                    insert_id: None,
                    last_insert_id: self.last_insert_id,
                };
                match exec.run(p, out).await {
                    Ok(summary) => {
                        if let Some(ok) = &summary.ok {
                            if ok.last_insert_id != 0 {
                                self.last_insert_id = ok.last_insert_id;
                            }
                        }
                        if summary.error.is_some() {
                            self.ctx
                                .metrics
                                .query_errors_total
                                .with_label_values(&["backend"])
                                .inc();
                            return Ok(Flow::Stop);
                        }
                        self.observe_status(summary.status);
                        Ok(Flow::Continue)
                    }
                    Err(ExecError::Proxy(e)) => {
                        self.error(out, &e);
                        Ok(Flow::Stop)
                    }
                    Err(ExecError::Reported) => Ok(Flow::Stop),
                    Err(ExecError::ClientGone(e)) => {
                        self.conns.drop_unusable();
                        Err(e)
                    }
                }
            }
        }
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
