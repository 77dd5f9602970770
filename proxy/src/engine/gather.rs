//! Running a gathered statement (see [`crate::planner::gather`]): create the temporary
//! tables on a scratch connection, fill them fetch by fetch (each fetch's rows streamed
//! from the shards in batches; values later fetches reduce by are kept), run the statement
//! there and answer with its rows, then drop the tables. The scratch connection carries
//! the session's settings but not its transaction: it only computes over rows the
//! session's own connections read.

use super::insert_select::cell_literal;
use super::output::RowWriter;
use super::reader::ShardReader;
use super::{Exec, ExecError};
use crate::backend::held::Held;
use crate::backend::relay::RelaySummary;
use crate::error::ProxyError;
use crate::planner::gather::{Fetch, GatherPlan};
use crate::planner::plan::{Query, Route, Target};
use crate::planner::sqltext::SqlTemplate;
use crate::planner::values::ValueExpr;
use crate::wire::consts::*;
use crate::wire::{ColumnDef, Responder};
use shardgate_topology::{Keyspace, Shard};
use std::collections::HashSet;
use std::sync::Arc;

/// Rows per INSERT into a temporary table (and at most this many bytes of values).
const BATCH_ROWS: usize = 500;
const BATCH_BYTES: usize = 1 << 20;
/// Values per IN list.
const IN_CHUNK: usize = 1000;

/// Distinct values of the kept columns of each fetch, as literals.
type Kept = Vec<Vec<(usize, Vec<ValueExpr>)>>;

/// What gathering has cost so far.
#[derive(Default)]
struct Budget {
    rows: u64,
    bytes: u64,
}

impl Exec<'_> {
    pub(super) async fn gather(
        &mut self,
        g: &GatherPlan,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let (ks, shard) = self.scratch_shard(&g.scratch)?;
        let mut scratch = self.conns.scratch(self.ctx, &ks.name, &shard).await?;
        let filled = self.fill(g, &mut scratch).await;
        let result = match filled {
            Ok(()) => self.answer(g, scratch, &shard, out).await,
            Err(e) => Err((scratch, ExecError::Proxy(e))),
        };
        match result {
            Ok((scratch, summary)) => {
                self.drop_tables(g, scratch).await;
                Ok(summary)
            }
            Err((scratch, e)) => {
                self.drop_tables(g, scratch).await;
                Err(e)
            }
        }
    }

    /// Every row of a gathered SELECT (for INSERT ... SELECT), at most
    /// `session.max_merge_rows`.
    pub(super) async fn gather_rows(
        &mut self,
        g: &GatherPlan,
    ) -> Result<(Vec<super::reader::Row>, Vec<ColumnDef>), ProxyError> {
        let (ks, shard) = self.scratch_shard(&g.scratch)?;
        let mut scratch = self.conns.scratch(self.ctx, &ks.name, &shard).await?;
        if let Err(e) = self.fill(g, &mut scratch).await {
            self.drop_tables(g, scratch).await;
            return Err(e);
        }
        let sql = self.render(&SqlTemplate::new(&g.query.text), &shard, None, None);
        if let Err(e) = scratch.conn.send_query(&sql).await {
            let e = ProxyError::from_backend(&scratch.label, e);
            self.drop_tables(g, scratch).await;
            return Err(e);
        }
        let mut reader = match ShardReader::start(scratch).await {
            Ok((reader, _)) => reader,
            Err((held, e)) => {
                self.drop_tables(g, held).await;
                return Err(e);
            }
        };
        let limit = self.ctx.config.session.max_merge_rows;
        let mut rows = Vec::new();
        let result = loop {
            match reader.next().await {
                Ok(Some(r)) if (rows.len() as u64) < limit => rows.push(r),
                Ok(Some(_)) => break Err(ProxyError::MergeTooLarge { limit }),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        reader.drain().await;
        let columns = reader.columns.clone();
        let held = reader.into_held().expect("a shard reader");
        self.drop_tables(g, held).await;
        result.map(|()| (rows, columns))
    }

    /// The scratch's keyspace and shard (sharded keyspaces spread the work over their
    /// serving shards).
    fn scratch_shard(&self, name: &str) -> Result<(Arc<Keyspace>, Shard), ProxyError> {
        let ks = self.keyspace(name)?.clone();
        let none = || ProxyError::NoServingShards(ks.name.clone());
        let shard = if ks.sharded {
            let n = ks.serving.len().max(1);
            let pick = rand_index() % n;
            ks.serving.get(pick).ok_or_else(none)?.clone()
        } else {
            ks.single_shard().ok_or_else(none)?.clone()
        };
        Ok((ks, shard))
    }

    /// Creates the temporary tables and runs every fetch into them.
    async fn fill(&mut self, g: &GatherPlan, scratch: &mut Held) -> Result<(), ProxyError> {
        for t in &g.tables {
            run(scratch, &t.create).await?;
        }
        self.ctx.metrics.gathered_total.inc();
        let mut kept: Kept = vec![Vec::new(); g.fetches.len()];
        let mut budget = Budget::default();
        for (i, f) in g.fetches.iter().enumerate() {
            let routes = self.fetch_routes(f, &kept)?;
            let mut found: Vec<(usize, HashSet<String>, Vec<ValueExpr>)> = f
                .keep
                .iter()
                .map(|&c| (c, HashSet::new(), Vec::new()))
                .collect();
            for route in routes {
                self.ship(g, f, &route, scratch, &mut found, &mut budget)
                    .await?;
            }
            kept[i] = found.into_iter().map(|(c, _, v)| (c, v)).collect();
        }
        self.ctx.metrics.gathered_rows_total.inc_by(budget.rows);
        self.ctx.metrics.gathered_bytes_total.inc_by(budget.bytes);
        Ok(())
    }

    /// The reads of one fetch: one route, or one per chunk of its IN list (none when an
    /// earlier fetch found no value, since no row could then match).
    fn fetch_routes(&self, f: &Fetch, kept: &Kept) -> Result<Vec<Route>, ProxyError> {
        let Some(r) = &f.reduce else {
            return Ok(vec![f.route.clone()]);
        };
        let values: &[ValueExpr] = kept[r.from]
            .iter()
            .find(|(c, _)| *c == r.from_column)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[]);
        if values.len() as u64 > self.ctx.config.session.gather_max_in_values {
            return Ok(vec![f.route.clone()]);
        }
        let mut out = Vec::new();
        for chunk in values.chunks(IN_CHUNK) {
            let route = match &r.vindex {
                // The values route: each shard gets its own.
                Some(vindex) => Route {
                    keyspace: f.route.keyspace.clone(),
                    target: Target::In {
                        vindex: vindex.clone(),
                        values: chunk.to_vec(),
                        split: true,
                    },
                    query: r.query.clone(),
                },
                None => {
                    let list: Vec<&str> = chunk
                        .iter()
                        .map(|v| match v {
                            ValueExpr::Literal { text, .. } => text.as_str(),
                            ValueExpr::Param(_) => "NULL",
                        })
                        .collect();
                    let text = r.query.text.replace(":sg_in", &list.join(", "));
                    Route {
                        keyspace: f.route.keyspace.clone(),
                        target: f.route.target.clone(),
                        query: Query::rewritten(&text),
                    }
                }
            };
            out.push(route);
        }
        Ok(out)
    }

    /// Reads one route's rows into the fetch's temporary table.
    async fn ship(
        &mut self,
        g: &GatherPlan,
        f: &Fetch,
        route: &Route,
        scratch: &mut Held,
        found: &mut [(usize, HashSet<String>, Vec<ValueExpr>)],
        budget: &mut Budget,
    ) -> Result<(), ProxyError> {
        let (readers, columns) = match self.open_route(route, None).await {
            Ok(x) => x,
            Err((readers, e)) => {
                self.finish_readers(readers).await;
                return Err(e);
            }
        };
        let result = self
            .ship_rows(g, f, readers, &columns, scratch, found, budget)
            .await;
        match result {
            Ok(readers) => {
                self.finish_readers(readers).await;
                Ok(())
            }
            Err((readers, e)) => {
                self.finish_readers(readers).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn ship_rows(
        &mut self,
        g: &GatherPlan,
        f: &Fetch,
        mut readers: Vec<ShardReader>,
        columns: &[ColumnDef],
        scratch: &mut Held,
        found: &mut [(usize, HashSet<String>, Vec<ValueExpr>)],
        budget: &mut Budget,
    ) -> Result<Vec<ShardReader>, (Vec<ShardReader>, ProxyError)> {
        let table = &g.tables[f.table];
        let head = format!(
            "INSERT IGNORE INTO `{}` ({}) VALUES ",
            table.table.replace('`', "``"),
            table
                .columns
                .iter()
                .map(|c| format!("`{}`", c.replace('`', "``")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let max_rows = self.ctx.config.session.max_merge_rows;
        let max_bytes = self.ctx.config.session.max_gather_bytes;
        let mut batch = String::new();
        let mut in_batch = 0;
        for r in 0..readers.len() {
            loop {
                let row = match readers[r].next().await {
                    Ok(Some(row)) => row,
                    Ok(None) => break,
                    Err(e) => return Err((readers, e)),
                };
                budget.rows += 1;
                if budget.rows > max_rows {
                    return Err((readers, ProxyError::MergeTooLarge { limit: max_rows }));
                }
                let mut tuple = String::from("(");
                for (c, cell) in row.iter().enumerate() {
                    let (lit, value, binary) = cell_literal(
                        cell.as_deref(),
                        &columns[c],
                        self.charset,
                        self.no_backslash_escapes,
                    );
                    if let Some((_, seen, values)) = found.iter_mut().find(|k| k.0 == c) {
                        if cell.is_some() && seen.insert(lit.clone()) {
                            values.push(ValueExpr::Literal {
                                value,
                                text: lit.clone(),
                                binary,
                            });
                        }
                    }
                    if c > 0 {
                        tuple.push_str(", ");
                    }
                    tuple.push_str(&lit);
                }
                tuple.push(')');
                budget.bytes += tuple.len() as u64;
                if budget.bytes > max_bytes {
                    return Err((readers, ProxyError::GatherTooLarge { limit: max_bytes }));
                }
                if in_batch > 0 {
                    batch.push_str(", ");
                }
                batch.push_str(&tuple);
                in_batch += 1;
                if in_batch >= BATCH_ROWS || batch.len() >= BATCH_BYTES {
                    if let Err(e) = run(scratch, &format!("{head}{batch}")).await {
                        return Err((readers, e));
                    }
                    batch.clear();
                    in_batch = 0;
                }
            }
        }
        if in_batch > 0 {
            if let Err(e) = run(scratch, &format!("{head}{batch}")).await {
                return Err((readers, e));
            }
        }
        Ok(readers)
    }

    /// Runs the statement on the scratch and writes its rows to the client.
    async fn answer(
        &mut self,
        g: &GatherPlan,
        mut scratch: Held,
        shard: &Shard,
        out: &mut Responder<'_>,
    ) -> Result<(Held, RelaySummary), (Held, ExecError)> {
        let sql = self.render(&SqlTemplate::new(&g.query.text), shard, None, None);
        if let Err(e) = scratch.conn.send_query(&sql).await {
            let e = ProxyError::from_backend(&scratch.label, e);
            return Err((scratch, e.into()));
        }
        let (mut reader, ok) = match ShardReader::start(scratch).await {
            Ok(x) => x,
            Err((held, e)) => return Err((held, e.into())),
        };
        let mut status = self.status;
        if self.more_results {
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        if self.conns.in_transaction() {
            status |= SERVER_STATUS_IN_TRANS;
        }
        if let Some(mut ok) = ok {
            // A statement without rows (cannot happen for a SELECT, but answer it as is).
            ok.status = status;
            out.ok(&ok);
            let held = reader.into_held().expect("a shard reader");
            return Ok((
                held,
                RelaySummary {
                    status,
                    ok: Some(ok),
                    ..RelaySummary::default()
                },
            ));
        }
        let binary = self.params.is_some();
        let mut writer = RowWriter::header(out, reader.columns.clone(), binary, status);
        let result = loop {
            match reader.next().await {
                Ok(Some(row)) => {
                    if let Err(e) = writer.row(out, &row).await {
                        break Err(ExecError::ClientGone(e));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(ExecError::Proxy(e)),
            }
        };
        reader.drain().await;
        let warnings = reader.warnings;
        let held = reader.into_held().expect("a shard reader");
        match result {
            Ok(()) => {
                out.end_rows(status, warnings);
                Ok((
                    held,
                    RelaySummary {
                        rows: writer.rows,
                        status,
                        warnings,
                        ..RelaySummary::default()
                    },
                ))
            }
            Err(ExecError::Proxy(e)) => {
                let packet = e.to_packet();
                out.error(&packet);
                Ok((
                    held,
                    RelaySummary {
                        error: Some(packet),
                        ..RelaySummary::default()
                    },
                ))
            }
            Err(other) => Err((held, other)),
        }
    }

    /// Drops the temporary tables; a connection that cannot is not reused.
    async fn drop_tables(&mut self, g: &GatherPlan, mut scratch: Held) {
        if !scratch.conn.is_broken() && scratch.conn.is_pending() {
            scratch.conn.mark_broken();
        }
        if !scratch.conn.is_broken() && !g.tables.is_empty() {
            let names: Vec<String> = g
                .tables
                .iter()
                .map(|t| format!("`{}`", t.table.replace('`', "``")))
                .collect();
            let sql = format!("DROP TEMPORARY TABLE IF EXISTS {}", names.join(", "));
            if scratch.conn.execute(&sql).await.is_err() {
                scratch.conn.mark_broken();
            }
        }
        self.conns.release(scratch);
    }
}

/// Runs a statement on the scratch.
async fn run(scratch: &mut Held, sql: &str) -> Result<(), ProxyError> {
    scratch
        .conn
        .execute(sql)
        .await
        .map(|_| ())
        .map_err(|e| ProxyError::from_backend(&scratch.label, e))
}

/// A cheap pseudo-random index (which shard of a sharded keyspace is the scratch).
fn rand_index() -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as usize
}

/// Parameters and result columns of a gathered statement, for COM_STMT_PREPARE: its
/// temporary tables are created empty on a scratch connection and the statement prepared
/// there (then closed and the tables dropped).
pub async fn describe(
    conns: &mut dyn super::Shards,
    ctx: &crate::context::Context,
    snapshot: &shardgate_topology::Snapshot,
    g: &GatherPlan,
) -> Result<crate::backend::stmt::BackendStatement, ProxyError> {
    let ks = snapshot
        .keyspace(&g.scratch)
        .ok_or_else(|| ProxyError::UnknownDatabase(g.scratch.clone()))?;
    let shard = if ks.sharded {
        ks.serving.first()
    } else {
        ks.single_shard()
    }
    .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?
    .clone();
    let mut scratch = conns.scratch(ctx, &ks.name, &shard).await?;
    let db = format!("`{}`", shard.database.replace('`', "``"));
    let text: Arc<str> = Arc::from(SqlTemplate::new(&g.query.text).render(
        |_, o| o.push('?'),
        |m, o| match m {
            "db" => o.push_str(&db),
            _ => o.push_str("NULL"),
        },
    ));
    let mut result = Ok(None);
    for t in &g.tables {
        if let Err(e) = run(&mut scratch, &t.create).await {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = scratch
            .conn
            .prepared(&text)
            .await
            .map(Some)
            .map_err(|e| ProxyError::from_backend(&scratch.label, e));
        if scratch.conn.unprepare(&text).await.is_err() {
            scratch.conn.mark_broken();
        }
    }
    if !scratch.conn.is_broken() && !g.tables.is_empty() {
        let names: Vec<String> = g
            .tables
            .iter()
            .map(|t| format!("`{}`", t.table.replace('`', "``")))
            .collect();
        let sql = format!("DROP TEMPORARY TABLE IF EXISTS {}", names.join(", "));
        if scratch.conn.execute(&sql).await.is_err() {
            scratch.conn.mark_broken();
        }
    }
    conns.release(scratch);
    result.map(|s| s.expect("prepared"))
}
