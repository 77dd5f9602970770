//! Executing plans against shards.
//!
//! [`Exec`] runs one [`Primitive`] for one statement: it resolves the route's shards in
//! the current snapshot (vindexes map routing values to keyspace ids), takes the session's
//! connections to them, renders the query for each shard and relays (`route.rs`), merges
//! (`merge.rs` over `pipeline.rs`) or combines write results (`write.rs`).

pub mod build;
pub mod gather;
mod gather_write;
mod insert_select;
mod lookup;
mod merge;
mod move_rows;
pub mod output;
pub mod pipeline;
pub mod reader;
pub mod route;
pub mod sequence;
pub mod values;
mod vschema;
mod write;

use crate::backend::held::Held;
use crate::backend::relay::RelaySummary;
use crate::context::Context;
use crate::error::ProxyError;
use crate::planner::plan::{Primitive, Route, Target};
use crate::planner::sqltext::SqlTemplate;
use crate::planner::values::ValueExpr;
use crate::wire::params::Execute;
use crate::wire::{PacketError, Responder};
use futures::future::BoxFuture;
use shardgate_topology::{Keyspace, Shard, Snapshot, SqlValue};
use std::fmt::Write as _;

/// Why executing a statement stopped.
#[derive(Debug)]
pub enum ExecError {
    /// Nothing was sent for this statement yet; the caller reports the error.
    Proxy(ProxyError),
    /// An error was already sent to the client (a backend error or a failure mid-result).
    Reported,
    /// The client connection failed.
    ClientGone(PacketError),
}

impl From<ProxyError> for ExecError {
    fn from(e: ProxyError) -> Self {
        ExecError::Proxy(e)
    }
}

/// How the engine reaches shards: the one door to backend connections (the session's
/// `Connections` implements it). The engine never calls back into the session; it asks
/// for a shard's connection, uses it, and gives it back.
pub trait Shards: Send {
    /// The connection to `shard` this statement uses (joining the session's transaction
    /// when there is one), kept by the session.
    fn get<'a>(
        &'a mut self,
        ctx: &'a Context,
        keyspace: &'a str,
        shard: &'a Shard,
    ) -> BoxFuture<'a, Result<&'a mut Held, ProxyError>>;
    /// Like [`Shards::get`], handing the connection over (several shards read at once);
    /// it comes back through [`Shards::give_back`].
    fn take<'a>(
        &'a mut self,
        ctx: &'a Context,
        keyspace: &'a str,
        shard: &'a Shard,
    ) -> BoxFuture<'a, Result<Held, ProxyError>>;
    fn give_back(&mut self, held: Held);
    /// A connection to `shard` with the session's settings that does not join its
    /// transaction, for work that reads nothing of the session's data (the scratch
    /// tables of a gathered query). It goes back with [`Shards::release`].
    fn scratch<'a>(
        &'a mut self,
        ctx: &'a Context,
        keyspace: &'a str,
        shard: &'a Shard,
    ) -> BoxFuture<'a, Result<Held, ProxyError>>;
    /// Returns a scratch connection to its pool (or drops it when it is broken).
    fn release(&mut self, held: Held);
    /// Whether a transaction is open (explicit, implicit, or one the statement opened).
    fn in_transaction(&self) -> bool;
    /// Commits (`commit`) or rolls back the open transaction on every shard.
    fn finish<'a>(
        &'a mut self,
        ctx: &'a Context,
        commit: bool,
    ) -> BoxFuture<'a, Result<(), ProxyError>>;
    /// Drops connections left unusable (broken, or mid-response after an error).
    fn drop_unusable(&mut self);
    /// Whether the session holds a connection to `shard` now.
    fn holds(&self, shard: &Shard) -> bool;
}

/// Everything one statement's execution needs.
pub struct Exec<'a> {
    pub ctx: &'a Context,
    /// Each shard the statement read, with rows and time (for the query log and
    /// OpenTelemetry export; collected only when [`Context::traces_wanted`]).
    pub trace: Vec<crate::querylog::ShardTime>,
    /// When the statement began (shard times are placed from it).
    pub started: std::time::Instant,
    pub snapshot: &'a Snapshot,
    pub conns: &'a mut dyn Shards,
    /// Bound parameters of a prepared statement (binary protocol), if any.
    pub params: Option<&'a Execute>,
    /// Another statement's result follows this one (multi-statements).
    pub more_results: bool,
    /// The session runs with NO_BACKSLASH_ESCAPES (affects literal quoting).
    pub no_backslash_escapes: bool,
    /// The client's character set: parameters are text in it, and string routing values
    /// are converted from it to what the columns store.
    pub charset: crate::wire::charset::Charset,
    /// The session's status flags, for results the proxy builds.
    pub status: u16,
    /// LAST_INSERT_ID set by this statement (sequences).
    pub insert_id: Option<u64>,
    /// The session's LAST_INSERT_ID() before this statement.
    pub last_insert_id: u64,
    /// The session's ROW_COUNT() and FOUND_ROWS() before this statement.
    pub row_count: i64,
    pub found_rows: u64,
    /// The session opened a transaction for this statement alone ([`Facts::atomic`]
    /// outside a transaction): it is committed before the answer.
    ///
    /// [`Facts::atomic`]: crate::planner::plan::Facts::atomic
    pub implicit_txn: bool,
}

/// A shard a route goes to, with the routing values that belong to it (IN splitting).
pub struct ShardTarget<'s> {
    pub shard: &'s Shard,
    pub values: Option<Vec<&'s ValueExpr>>,
}

impl Exec<'_> {
    /// Runs a primitive, writing its result to `out`.
    pub async fn run(
        &mut self,
        p: &Primitive,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        match p {
            Primitive::Route(r) if self.params.is_none() || r.query.verbatim => {
                self.route(r, out).await
            }
            Primitive::Write(w) => self.write(w, out).await,
            Primitive::Insert(i) => self.insert(i, out).await,
            Primitive::InsertSelect(i) => self.insert_select(i, out).await,
            Primitive::Gather(g) => self.gather(g, out).await,
            Primitive::Fallback { first, otherwise } => {
                // `first` is one shard's statement if the bound values land on one shard;
                // it fails before sending anything when they do not.
                match Box::pin(self.run(first, out)).await {
                    Err(ExecError::Proxy(ProxyError::PinsApart { .. })) => {
                        Box::pin(self.run(otherwise, out)).await
                    }
                    other => other,
                }
            }
            Primitive::GatherWrite(w) => {
                let ok = self.gather_write(w).await?;
                self.commit_implicit().await?;
                self.respond(out, ok)
            }
            Primitive::MoveRows(m) => {
                let ok = self.move_rows(m).await?;
                self.commit_implicit().await?;
                self.respond(out, ok)
            }
            other => self.merge(other, out).await,
        }
    }

    /// Commits the transaction the session opened for this statement alone (an atomic
    /// statement outside a transaction), before the client hears it succeeded.
    pub(super) async fn commit_implicit(&mut self) -> Result<(), ProxyError> {
        if self.implicit_txn {
            self.implicit_txn = false;
            self.conns.finish(self.ctx, true).await?;
        }
        Ok(())
    }

    /// The value a vindex maps for `v` (see [`ValueExpr::routing_value`]).
    pub fn routing_value(&self, v: &ValueExpr) -> Result<SqlValue, ProxyError> {
        v.routing_value(self.params, self.charset)
            .ok_or(ProxyError::WrongArguments("mysqld_stmt_execute"))
    }

    fn keyspace(&self, name: &str) -> Result<&std::sync::Arc<Keyspace>, ProxyError> {
        self.snapshot
            .keyspace(name)
            .ok_or_else(|| ProxyError::UnknownDatabase(name.to_string()))
    }

    /// The shards `r` goes to, querying a lookup vindex first when it routes by one.
    pub async fn targets<'s>(
        &mut self,
        r: &'s Route,
        ks: &'s Keyspace,
    ) -> Result<Vec<ShardTarget<'s>>, ProxyError> {
        if let Target::Lookup { vindex, value } = &r.target {
            let shard = match self.lookup_ksid(ks, vindex, value).await? {
                Some(id) => ks.shard_for(id.as_bytes()),
                // No mapping: no row has this value; any shard answers (with nothing).
                None => ks.serving.first(),
            }
            .ok_or_else(|| ProxyError::NoServingShards(ks.name.clone()))?;
            return Ok(vec![ShardTarget {
                shard,
                values: None,
            }]);
        }
        self.resolve(r, ks)
    }

    /// The shard for a statement that reads no table: one the session already holds,
    /// else one whose pool has a free connection (a shard whose connections are all
    /// pinned by transactions must not stall `SELECT 1`), else the first.
    fn any_shard<'s>(&self, ks: &'s Keyspace) -> Option<&'s Shard> {
        ks.serving
            .iter()
            .find(|s| self.conns.holds(s))
            .or_else(|| {
                ks.serving
                    .iter()
                    .find(|s| self.ctx.backends.has_free_connection(s))
            })
            .or_else(|| ks.serving.first())
    }

    /// The shards `r` goes to in the current snapshot.
    pub fn resolve<'s>(
        &self,
        r: &'s Route,
        ks: &'s Keyspace,
    ) -> Result<Vec<ShardTarget<'s>>, ProxyError> {
        let none = || ProxyError::NoServingShards(ks.name.clone());
        let all = || -> Vec<ShardTarget<'s>> {
            ks.serving
                .iter()
                .map(|s| ShardTarget {
                    shard: s,
                    values: None,
                })
                .collect()
        };
        let one = |s: &'s Shard| {
            vec![ShardTarget {
                shard: s,
                values: None,
            }]
        };
        let vindex_of = |name: &str| {
            ks.vindexes.get(name).cloned().ok_or_else(|| {
                ProxyError::Internal(format!("vindex {name} vanished from {}", ks.name))
            })
        };
        Ok(match &r.target {
            Target::Unsharded => one(ks.single_shard().ok_or_else(none)?),
            Target::AnyShard => one(self.any_shard(ks).ok_or_else(none)?),
            Target::Shard(name) => one(ks
                .shards
                .get(name)
                .ok_or_else(|| ProxyError::UnknownDatabase(format!("{}:{name}", ks.name)))?),
            Target::Scatter => all(),
            Target::Nowhere => Vec::new(),
            Target::Lookup { .. } => all(),
            Target::KeyspaceId(hex) => {
                let id = shardgate_topology::KeyspaceId::from_hex(hex)
                    .unwrap_or(shardgate_topology::KeyspaceId(Vec::new()));
                one(ks.shard_for(id.as_bytes()).ok_or_else(none)?)
            }
            Target::Equal { vindex, value } => {
                let v = self.routing_value(value)?;
                match vindex_of(vindex)?.map(&v).map_err(ProxyError::Internal)? {
                    Some(id) => one(ks.shard_for(id.as_bytes()).ok_or_else(none)?),
                    // A value the vindex cannot map (MySQL may still convert it): ask all.
                    None => all(),
                }
            }
            Target::SameShard { pins } => {
                let mut home: Option<&'s Shard> = None;
                for (vindex, value) in pins {
                    let v = self.routing_value(value)?;
                    // A value no vindex can map matches no row: it constrains nothing.
                    let Some(id) = vindex_of(vindex)?.map(&v).map_err(ProxyError::Internal)? else {
                        continue;
                    };
                    let shard = ks.shard_for(id.as_bytes()).ok_or_else(none)?;
                    match home {
                        Some(h) if h.name != shard.name => {
                            return Err(ProxyError::PinsApart {
                                first: h.name.clone(),
                                second: shard.name.clone(),
                            })
                        }
                        _ => home = Some(shard),
                    }
                }
                one(home.or_else(|| ks.serving.first()).ok_or_else(none)?)
            }
            Target::In {
                vindex,
                values,
                split,
            } => {
                let vx = vindex_of(vindex)?;
                let mut groups: Vec<ShardTarget<'s>> = Vec::new();
                for ve in values {
                    let v = self.routing_value(ve)?;
                    let Some(id) = vx.map(&v).map_err(ProxyError::Internal)? else {
                        return Ok(all_with(ks, values));
                    };
                    let shard = ks.shard_for(id.as_bytes()).ok_or_else(none)?;
                    match groups.iter_mut().find(|g| g.shard.name == shard.name) {
                        Some(g) => g.values.get_or_insert_with(Vec::new).push(ve),
                        None => groups.push(ShardTarget {
                            shard,
                            values: Some(vec![ve]),
                        }),
                    }
                }
                if !*split {
                    for g in &mut groups {
                        g.values = Some(values.iter().collect());
                    }
                }
                groups
            }
        })
    }

    /// Renders a query for one shard (text protocol): markers become the shard's database,
    /// its IN values, the pushed LIMIT; placeholders become literals.
    pub fn render(
        &self,
        q: &SqlTemplate,
        shard: &Shard,
        values: Option<&[&ValueExpr]>,
        limit: Option<u64>,
    ) -> String {
        let nbe = self.no_backslash_escapes;
        let cs = self.charset;
        let params = self.params;
        let param = |i: usize, out: &mut String| match params.and_then(|p| p.params.get(i)) {
            Some(p) => p.write_literal(out, cs, nbe),
            None => out.push('?'),
        };
        q.render(
            |i, out| param(i, out),
            |m, out| match m {
                "db" => {
                    out.push('`');
                    out.push_str(&shard.database.replace('`', "``"));
                    out.push('`');
                }
                "in" => {
                    for (k, v) in values.unwrap_or(&[]).iter().enumerate() {
                        if k > 0 {
                            out.push_str(", ");
                        }
                        match v {
                            ValueExpr::Literal { text, .. } => out.push_str(text),
                            ValueExpr::Param(i) => param(*i, out),
                        }
                    }
                }
                "limit" => {
                    let _ = write!(out, "{}", limit.unwrap_or(u64::MAX));
                }
                "lastid" => {
                    let _ = write!(out, "{}", self.last_insert_id);
                }
                "rowcount" => {
                    let _ = write!(out, "{}", self.row_count);
                }
                "foundrows" => {
                    let _ = write!(out, "{}", self.found_rows);
                }
                m if m.starts_with('p') => match m[1..].parse::<usize>() {
                    Ok(i) => param(i, out),
                    Err(_) => out.push_str(m),
                },
                other => {
                    out.push_str(crate::planner::sqltext::MARKER_PREFIX);
                    out.push_str(other);
                }
            },
        )
    }

    /// Value of a LIMIT/OFFSET expression.
    fn number(&self, v: &ValueExpr) -> Result<u64, ProxyError> {
        match v.routing_value(self.params, self.charset) {
            Some(SqlValue::Int(i)) if i >= 0 => Ok(i as u64),
            Some(SqlValue::UInt(u)) => Ok(u),
            Some(SqlValue::Bytes(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ProxyError::Syntax("LIMIT takes a non-negative integer".into())),
            _ => Err(ProxyError::Syntax(
                "LIMIT takes a non-negative integer".into(),
            )),
        }
    }
}

fn all_with<'s>(ks: &'s Keyspace, values: &'s [ValueExpr]) -> Vec<ShardTarget<'s>> {
    ks.serving
        .iter()
        .map(|s| ShardTarget {
            shard: s,
            values: Some(values.iter().collect()),
        })
        .collect()
}
