//! Prepared statements (COM_STMT_PREPARE / EXECUTE / SEND_LONG_DATA / RESET / CLOSE).
//!
//! The client sees proxy-wide statement ids. A statement that routes to shards is
//! prepared on a backend once to learn its parameter and column metadata; each execute
//! then runs on whatever backend connection the plan selects for the bound values, which
//! prepares it lazily (see `backend/stmt.rs`). Statements the session answers itself
//! (BEGIN, COMMIT, SET...) are prepared without a backend.

use super::query::Flow;
use super::Session;
use crate::error::ProxyError;
use crate::planner::sqltext::{split_statements, SqlTemplate};
use crate::planner::{Plan, Primitive, Target};
use crate::wire::params::{execute_statement_id, Execute};
use crate::wire::{ColumnDef, HandlerResult, Responder};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// A statement prepared by the client.
pub struct PreparedStatement {
    pub sql: Arc<str>,
    /// The plan and the (topology revision, schema generation) it was made for
    /// (re-planned when either changes).
    pub plan: Option<((i64, u64), Arc<Plan>)>,
    pub params: u16,
    /// Parameter types from the last execute that sent them.
    pub types: Vec<(u8, bool)>,
    /// Values sent with COM_STMT_SEND_LONG_DATA, by parameter.
    pub long_data: Vec<Option<BytesMut>>,
    /// A long-data value outgrew `max_allowed_packet`: the next execute fails (as in
    /// MySQL, the error waits for the execute, since SEND_LONG_DATA has no answer).
    pub long_data_overflow: Option<u64>,
}

impl PreparedStatement {
    /// Appends to a parameter's long data, keeping it within `max` bytes.
    pub fn append_long_data(&mut self, param: u16, data: &[u8], max: usize) {
        if let Some(slot) = self.long_data.get_mut(param as usize) {
            let have = slot.as_ref().map_or(0, |d| d.len());
            if self.long_data_overflow.is_some() || have + data.len() > max {
                // Drop what came so far: the memory is not held for a doomed execute.
                *slot = None;
                self.long_data_overflow = Some(max as u64);
                return;
            }
            slot.get_or_insert_with(BytesMut::new)
                .extend_from_slice(data);
        }
    }

    pub fn reset(&mut self) {
        for d in &mut self.long_data {
            *d = None;
        }
        self.long_data_overflow = None;
    }
}

/// The keyspace (and target) a plan runs on: its first route's.
fn plan_keyspace(p: &Primitive) -> (String, Option<&Target>) {
    match p {
        Primitive::Route(r) => (r.keyspace.clone(), Some(&r.target)),
        Primitive::Write(w) => (w.route.keyspace.clone(), Some(&w.route.target)),
        Primitive::Insert(i) => (i.keyspace.clone(), None),
        Primitive::InsertSelect(i) => (i.keyspace.clone(), None),
        Primitive::MoveRows(m) => (m.keyspace.clone(), Some(&m.select.target)),
        Primitive::Gather(g) => (g.scratch.clone(), None),
        Primitive::GatherWrite(w) => plan_keyspace(&w.select),
        Primitive::Fallback { first, .. } => plan_keyspace(first),
        Primitive::Concat(v) => v.first().map(plan_keyspace).unwrap_or_default(),
        Primitive::MergeSort { input, .. }
        | Primitive::Aggregate { input, .. }
        | Primitive::Filter { input, .. }
        | Primitive::Sort { input, .. }
        | Primitive::Distinct { input, .. }
        | Primitive::Limit { input, .. }
        | Primitive::Project { input, .. } => plan_keyspace(input),
    }
}

impl Session {
    pub(super) async fn handle_prepare(
        &mut self,
        sql: Bytes,
        out: &mut Responder<'_>,
    ) -> HandlerResult {
        let view = crate::wire::charset::decode(&sql, self.charset);
        let text: Arc<str> = Arc::from(&*view);
        self.entry.begin("Prepare", Some(&text));
        let normalized = crate::planner::lexer::normalize(&text, self.read_options());
        let r = self.prepare_inner(&normalized, out).await;
        self.entry.end();
        if let Err(e) = r {
            self.error(out, &e);
        }
        Ok(())
    }

    async fn prepare_inner(
        &mut self,
        text: &str,
        out: &mut Responder<'_>,
    ) -> Result<(), ProxyError> {
        let stmts = split_statements(text);
        let [one] = stmts.as_slice() else {
            return Err(ProxyError::Syntax(
                "a prepared statement must be exactly one statement".into(),
            ));
        };
        let max = self.ctx.config.session.max_prepared_statements;
        if self.statements.len() as u64 >= max {
            return Err(ProxyError::TooManyPreparedStatements(max));
        }
        let snapshot = self.ctx.snapshot();
        let plan = self.plan_now(one, &snapshot).await?;
        let param_count = SqlTemplate::new(one).param_count() as u16;
        let (params, columns, param_defs) = match &*plan {
            // Statements answered by the session, and INSERT ... SELECT the proxy places
            // (its text spans keyspaces, so no one backend could prepare it): no result
            // columns, parameters untyped.
            Plan::Session(_)
            | Plan::Query(crate::planner::QueryPlan {
                root: Primitive::InsertSelect(_) | Primitive::GatherWrite(_),
                ..
            }) => (
                param_count,
                Vec::new(),
                vec![ColumnDef::text("?"); param_count as usize],
            ),
            Plan::Query(crate::planner::QueryPlan {
                root: Primitive::Gather(g),
                ..
            }) => {
                let st = crate::engine::gather::describe(&mut self.conns, &self.ctx, &snapshot, g)
                    .await?;
                (st.params, st.columns, st.param_defs)
            }
            Plan::Query(q) => {
                let p = &q.root;
                // Prepare the client's text on one shard of the plan's keyspace to learn
                // its parameters and columns; executes route by the bound values.
                let (keyspace, target) = plan_keyspace(p);
                let ks = snapshot
                    .keyspace(&keyspace)
                    .ok_or_else(|| ProxyError::UnknownDatabase(keyspace.clone()))?;
                let shard = match target {
                    Some(Target::Shard(s)) => ks.shards.get(s),
                    _ => ks.serving.first(),
                }
                .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?;
                let held = self.conns.get(&self.ctx, &keyspace, shard).await?;
                let label = held.label.clone();
                let text: Arc<str> = match p {
                    Primitive::Route(r) => r.query.text.clone(),
                    _ => q.rerouted.clone().unwrap_or_else(|| Arc::from(*one)),
                };
                let st = held
                    .conn
                    .prepared(&text)
                    .await
                    .map_err(|e| ProxyError::from_backend(&label, e))?;
                (st.params, st.columns.clone(), st.param_defs.clone())
            }
        };
        let id = self.next_statement_id;
        self.next_statement_id = self.next_statement_id.wrapping_add(1).max(1);
        out.prepare_ok(id, columns.len() as u16, params, 0);
        if params > 0 {
            for p in &param_defs {
                out.build(|b| p.encode(b));
            }
            out.end_columns(self.status_flags());
        }
        if !columns.is_empty() {
            for c in &columns {
                out.build(|b| c.encode(b));
            }
            out.end_columns(self.status_flags());
        }
        self.statements.insert(
            id,
            PreparedStatement {
                sql: Arc::from(*one),
                plan: Some((
                    (snapshot.revision, self.ctx.schema().generation),
                    plan.clone(),
                )),
                params,
                types: Vec::new(),
                long_data: vec![None; params as usize],
                long_data_overflow: None,
            },
        );
        Ok(())
    }

    pub(super) async fn handle_execute(
        &mut self,
        payload: Bytes,
        out: &mut Responder<'_>,
    ) -> HandlerResult {
        let id = match execute_statement_id(&payload) {
            Ok(id) => id,
            Err(_) => {
                self.error(out, &ProxyError::WrongArguments("mysqld_stmt_execute"));
                return Ok(());
            }
        };
        let Some(stmt) = self.statements.get_mut(&id) else {
            self.error(
                out,
                &ProxyError::UnknownStatement {
                    id,
                    command: "mysqld_stmt_execute",
                },
            );
            return Ok(());
        };
        if let Some(max) = stmt.long_data_overflow {
            stmt.reset();
            self.error(out, &ProxyError::LongDataTooLarge(max));
            return Ok(());
        }
        let exec = match Execute::parse(
            &payload,
            stmt.params as usize,
            &mut stmt.types,
            &mut stmt.long_data,
        ) {
            Ok(e) => e,
            Err(_) => {
                self.error(out, &ProxyError::WrongArguments("mysqld_stmt_execute"));
                return Ok(());
            }
        };
        let sql = stmt.sql.clone();
        let snapshot = self.ctx.snapshot();
        let generation = (snapshot.revision, self.ctx.schema().generation);
        let plan = match &stmt.plan {
            Some((made_for, p)) if *made_for == generation => p.clone(),
            _ => {
                let planned = self.plan_now(&sql, &snapshot).await;
                match planned {
                    Ok(p) => {
                        if let Some(s) = self.statements.get_mut(&id) {
                            s.plan = Some((generation, p.clone()));
                        }
                        p
                    }
                    Err(e) => {
                        self.error(out, &e);
                        return Ok(());
                    }
                }
            }
        };
        self.entry.begin("Execute", Some(&sql));
        let r = self
            .run_plan(&plan, &sql, &snapshot, out, false, Some(&exec))
            .await;
        self.entry.end();
        match r {
            Ok(Flow::Continue) | Ok(Flow::Stop) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
