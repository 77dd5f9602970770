//! `EXPLAIN ANALYZE FORMAT=shardgate <stmt>`: runs the statement, discards its answer, and
//! answers with where it went instead: one row for the statement (plan type, rows, time,
//! error, trace id), one per shard it read (rows and milliseconds from sending to reading
//! its whole answer), then the plan, one line per row.

use super::ops::explain_text;
use super::query::Flow;
use super::Session;
use crate::error::ProxyError;
use crate::wire::{ColumnDef, PacketError, Responder};

impl Session {
    pub(super) async fn explain_analyze(
        &mut self,
        statement: &str,
        out: &mut Responder<'_>,
        more: bool,
    ) -> Result<Result<(), ProxyError>, PacketError> {
        let snapshot = self.ctx.snapshot();
        let plan = match self.plan_now(statement, &snapshot).await {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        self.last_trace = None;
        let saved = out.start_discarding().await?;
        let ran = Box::pin(self.run_plan(&plan, statement, &snapshot, out, false, None)).await;
        out.stop_discarding(saved);
        match ran {
            Ok(Flow::Continue) | Ok(Flow::Stop) => {}
            Err(e) => return Err(e),
        }
        let cols = ["step", "shard", "rows", "ms", "detail"].map(ColumnDef::text);
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        match &self.last_trace {
            Some(t) => {
                let trace_id = t.trace_id(&self.ctx.querylog);
                let detail = match t.error {
                    Some(code) => format!("{} (trace {trace_id}), error {code}", t.plan),
                    None => format!("{} (trace {trace_id})", t.plan),
                };
                rows.push(vec![
                    Some("statement".into()),
                    None,
                    Some(t.rows.to_string()),
                    Some(format!("{:.3}", t.ms)),
                    Some(detail),
                ]);
                for s in &t.shards {
                    rows.push(vec![
                        Some("shard".into()),
                        Some(s.shard.to_string()),
                        Some(s.rows.to_string()),
                        Some(format!("{:.3}", s.ms)),
                        None,
                    ]);
                }
            }
            None => rows.push(vec![
                Some("statement".into()),
                None,
                None,
                None,
                Some("answered by the session (no shard)".into()),
            ]),
        }
        for line in explain_text(&plan).lines() {
            rows.push(vec![
                Some("plan".into()),
                None,
                None,
                None,
                Some(line.to_string()),
            ]);
        }
        self.rows(out, &cols, &rows, more);
        Ok(Ok(()))
    }
}
