//! Routes whose answer is the shards' rows as they come: relayed packet by packet, never
//! decoded. One shard: its whole response. Several: the first shard's column definitions,
//! then every shard's rows in turn, then one terminator.

use super::{Exec, ExecError};
use crate::backend::held::Held;
use crate::backend::relay::{
    relay_response, relay_rows_only, RelayError, RelayOptions, RelaySummary,
};
use crate::error::ProxyError;
use crate::planner::plan::Route;
use crate::querylog::ShardTime;
use crate::wire::codec::Reader;
use crate::wire::consts::*;
use crate::wire::packets::{ErrPacket, OkPacket};
use crate::wire::Responder;

impl Exec<'_> {
    pub(super) async fn route(
        &mut self,
        r: &Route,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let snapshot = self.snapshot;
        let ks = self.keyspace(&r.keyspace)?.clone();
        let targets = self.targets(r, &ks).await?;
        if targets.len() == 1 {
            let t = &targets[0];
            let sql = (!r.query.verbatim || self.params.is_none())
                .then(|| self.render(&r.query.template, t.shard, t.values.as_deref(), None));
            let _ = snapshot;
            let started = std::time::Instant::now();
            let held = self.conns.get(self.ctx, &r.keyspace, t.shard).await?;
            let sent = match (self.params, sql) {
                (Some(params), None) => match held.conn.prepared_id(&r.query.text).await {
                    Ok(id) => held.conn.send_execute(id, params).await,
                    Err(e) => Err(e),
                },
                (_, Some(sql)) => held.conn.send_query(&sql).await,
                (None, None) => unreachable!("text is rendered without parameters"),
            };
            if let Err(e) = sent {
                return Err(ProxyError::from_backend(&held.label, e).into());
            }
            let opts = RelayOptions {
                more_results: self.more_results,
            };
            return match relay_response(&mut held.conn, out, opts).await {
                Ok(s) => {
                    let took = started.elapsed();
                    observe_shard(self.ctx, &r.keyspace, &t.shard.name, took);
                    if self.ctx.traces_wanted() {
                        self.trace.push(ShardTime {
                            shard: held.label.clone(),
                            rows: s.rows,
                            start_ms: self.offset_ms(started),
                            ms: took.as_secs_f64() * 1000.0,
                        });
                    }
                    Ok(s)
                }
                Err(RelayError::Backend(_)) => {
                    self.conns.drop_unusable();
                    Err(ExecError::Reported)
                }
                Err(RelayError::Client(e)) => Err(ExecError::ClientGone(e)),
            };
        }
        // Several shards: send everything first, so they work in parallel.
        let started = std::time::Instant::now();
        let mut helds: Vec<Held> = Vec::with_capacity(targets.len());
        let mut failure = None;
        for t in &targets {
            match self.conns.take(self.ctx, &r.keyspace, t.shard).await {
                Ok(mut h) => {
                    let sent = match self.params {
                        Some(params) if r.query.verbatim => {
                            match h.conn.prepared_id(&r.query.text).await {
                                Ok(id) => h.conn.send_execute(id, params).await,
                                Err(e) => Err(e),
                            }
                        }
                        _ => {
                            let sql =
                                self.render(&r.query.template, t.shard, t.values.as_deref(), None);
                            h.conn.send_query(&sql).await
                        }
                    };
                    if let Err(e) = sent {
                        failure.get_or_insert(ProxyError::from_backend(&h.label, e));
                    }
                    helds.push(h);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            self.give_back_all(helds).await;
            return Err(e.into());
        }
        let result = self.concat(&mut helds, out, started).await;
        self.give_back_all(helds).await;
        result
    }

    /// Relays several shards' result sets as one.
    async fn concat(
        &mut self,
        helds: &mut [Held],
        out: &mut Responder<'_>,
        started: std::time::Instant,
    ) -> Result<RelaySummary, ExecError> {
        let mut summary = RelaySummary::default();
        let mut header_sent = false;
        let mut columns = 0u64;
        let mut failed: Option<ErrPacket> = None;
        for h in helds.iter_mut() {
            if failed.is_some() {
                drain_response(h).await;
                continue;
            }
            let first = match h.conn.read().await {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(ProxyError::from_backend(&h.label, e).to_packet());
                    continue;
                }
            };
            match first.first() {
                Some(0xff) => {
                    h.conn.finish_after_error();
                    failed = Some(
                        ErrPacket::decode(&first)
                            .unwrap_or_else(|_| ErrPacket::new(1105, "HY000", "error")),
                    );
                    continue;
                }
                Some(0x00) => {
                    // A statement without rows (cannot happen for the SELECTs routed here).
                    let ok = OkPacket::decode(&first).unwrap_or_default();
                    h.conn.finish(ok.status);
                    continue;
                }
                _ => {}
            }
            let n = Reader::new(&first).lenenc().unwrap_or(0);
            for _ in 0..n {
                match h.conn.read().await {
                    Ok(p) => {
                        if !header_sent {
                            if columns == 0 {
                                out.relay(&first);
                            }
                            out.relay(&p);
                        }
                        columns += 1;
                    }
                    Err(e) => {
                        failed = Some(ProxyError::from_backend(&h.label, e).to_packet());
                        break;
                    }
                }
            }
            if failed.is_some() {
                continue;
            }
            if !header_sent {
                out.end_columns(self.status);
                header_sent = true;
            }
            match relay_rows_only(&mut h.conn, out).await {
                Ok(r) => {
                    let took = started.elapsed();
                    let (keyspace, shard) = h.label.split_once('/').unwrap_or((&h.label, ""));
                    observe_shard(self.ctx, keyspace, shard, took);
                    if self.ctx.traces_wanted() {
                        self.trace.push(ShardTime {
                            shard: h.label.clone(),
                            rows: r.rows,
                            start_ms: self.offset_ms(started),
                            ms: took.as_secs_f64() * 1000.0,
                        });
                    }
                    summary.rows += r.rows;
                    summary.warnings = summary.warnings.saturating_add(r.warnings);
                    if let Some(e) = r.error {
                        failed = Some(e);
                    }
                }
                Err(RelayError::Client(e)) => return Err(ExecError::ClientGone(e)),
                Err(RelayError::Backend(e)) => {
                    failed = Some(ProxyError::from_backend(&h.label, e).to_packet())
                }
            }
        }
        let mut status = self.status;
        if self.more_results {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        match failed {
            Some(e) => {
                out.error(&e);
                summary.error = Some(e);
                Ok(summary)
            }
            None => {
                if !header_sent {
                    // No shard had a result set: an OK, as a single server would send.
                    out.ok(&OkPacket {
                        status,
                        ..OkPacket::default()
                    });
                } else {
                    out.end_rows(status, summary.warnings);
                }
                summary.status = status;
                Ok(summary)
            }
        }
    }

    /// Milliseconds from the statement's start to `at` (where a shard's part began).
    fn offset_ms(&self, at: std::time::Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }

    /// Returns taken connections; ones with unread results are read to the end first.
    pub(super) async fn give_back_all(&mut self, helds: Vec<Held>) {
        for mut h in helds {
            if h.conn.is_pending() && !h.conn.is_broken() {
                drain_response(&mut h).await;
            }
            self.conns.give_back(h);
        }
    }
}

/// Reads a response to its end and discards it.
pub async fn drain_response(h: &mut Held) {
    while h.conn.is_pending() && !h.conn.is_broken() {
        let p = match h.conn.read().await {
            Ok(p) => p,
            Err(_) => return,
        };
        if p.first() == Some(&0xff) {
            h.conn.finish_after_error();
        } else if skip_result(h, p).await.is_err() {
            h.conn.mark_broken();
        }
    }
}

/// Skips one result (its head already read as `first`), up to its terminator.
async fn skip_result(h: &mut Held, first: bytes::Bytes) -> Result<(), ()> {
    if first.first() == Some(&0x00) {
        if let Ok(ok) = OkPacket::decode(&first) {
            h.conn.finish(ok.status);
            if ok.status & SERVER_MORE_RESULTS_EXISTS != 0 {
                h.conn.mark_pending();
            }
            return Ok(());
        }
    }
    let n = Reader::new(&first).lenenc().map_err(|_| ())?;
    for _ in 0..n {
        h.conn.read().await.map_err(|_| ())?;
    }
    loop {
        let p = h.conn.read_logical().await.map_err(|_| ())?;
        match p.first() {
            Some(0xfe) if p.len() < MAX_PHYSICAL_PAYLOAD => {
                let (status, _) = crate::wire::packets::status_and_warnings(&p).unwrap_or((0, 0));
                h.conn.finish(status);
                if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    h.conn.mark_pending();
                }
                return Ok(());
            }
            Some(0xff) => {
                h.conn.finish_after_error();
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Records how long a shard took (statement sent to answer read).
fn observe_shard(
    ctx: &crate::context::Context,
    keyspace: &str,
    shard: &str,
    took: std::time::Duration,
) {
    ctx.metrics
        .backend_query_duration_seconds
        .with_label_values(&[keyspace, shard])
        .observe(took.as_secs_f64());
}
