//! Interrupting a running statement: KILL QUERY / KILL CONNECTION from another session,
//! or the query timeout (`session.query_timeout_ms`, `SET max_execution_time`, or a
//! `/*+ MAX_EXECUTION_TIME(ms) */` hint).
//!
//! The statement's future is dropped; the backend work it started is stopped with
//! `KILL QUERY <thread>` on a side connection to each backend, and connections left with
//! an unread response are read to the end (the server answers 1317 once killed) so they
//! can be reused.

use super::Session;
use crate::backend::pool::Pool;
use crate::engine::route::drain_response;
use std::sync::Arc;
use std::time::Duration;

/// Waits until a KILL QUERY for the running command arrives (or returns at once if it
/// already has: the registry clears stale requests when a command begins, so a KILL QUERY
/// of an idle session does not affect its next statement, as in MySQL). Forever if the
/// registry goes away.
pub(super) async fn killed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        // A kill already requested (after the command began) counts.
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if *rx.borrow_and_update() {
            return;
        }
    }
}

/// Sleeps for `ms` (forever when 0).
pub(super) async fn deadline(ms: u64) {
    if ms == 0 {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl Session {
    /// Stops the backend work of an interrupted statement and makes its connections
    /// usable again.
    pub(super) async fn stop_backend_work(&mut self) {
        let mut victims: Vec<(Arc<Pool>, u32)> = self.conns.taken.drain(..).collect();
        // Connections taken for a multi-shard read were dropped with the statement; if a
        // transaction ran on them its work there is gone, so the rest must not commit.
        let lost_txn_work = !victims.is_empty() && self.conns.in_transaction();
        for h in self.conns.held() {
            if h.conn.is_pending() && !h.conn.is_broken() {
                victims.push((h.conn.pool().clone(), h.conn.thread_id));
            }
        }
        for (pool, thread) in victims {
            match pool.get().await {
                Ok(mut side) => {
                    if let Err(e) = side.execute(&format!("KILL QUERY {thread}")).await {
                        tracing::debug!(thread, error = %e, "KILL QUERY on the backend failed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no side connection to kill a backend query"),
            }
        }
        self.conns.drain_pending().await;
        if lost_txn_work {
            tracing::warn!(
                session = self.info.connection_id,
                "statement interrupted inside a multi-shard transaction; rolling it back"
            );
            let _ = self.conns.finish(&self.ctx, false).await;
        }
        self.entry.clear_query_kill();
    }
}

/// Reads what interrupted statements left unread on a connection.
pub(super) async fn drain(h: &mut super::conns::Held) {
    drain_response(h).await
}
