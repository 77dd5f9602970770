//! Executing plans against shards.
//!
//! [`Exec`] runs one [`Primitive`] for one statement: it resolves the route's shards in
//! the current snapshot, takes the session's connections to them, renders the query
//! (markers and, for text protocol, parameters) and relays or merges the answers.

use crate::backend::relay::{relay_response, RelayError, RelayOptions, RelaySummary};
use crate::context::Context;
use crate::error::ProxyError;
use crate::planner::sqltext::SqlTemplate;
use crate::planner::{Primitive, Route, Target};
use crate::session::conns::Connections;
use crate::wire::consts::COM_QUERY;
use crate::wire::params::Execute;
use crate::wire::{PacketError, Responder};
use shardgate_topology::{Shard, Snapshot};

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

/// Everything one statement's execution needs.
pub struct Exec<'a> {
    pub ctx: &'a Context,
    pub snapshot: &'a Snapshot,
    pub conns: &'a mut Connections,
    /// Bound parameters of a prepared statement (binary protocol), if any.
    pub params: Option<&'a Execute>,
    /// Another statement's result follows this one (multi-statements).
    pub more_results: bool,
    /// The session runs with NO_BACKSLASH_ESCAPES (affects literal quoting).
    pub no_backslash_escapes: bool,
}

impl Exec<'_> {
    /// Runs a primitive, writing its result to `out`.
    pub async fn run(
        &mut self,
        p: &Primitive,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        match p {
            Primitive::Route(r) => self.route(r, out).await,
        }
    }

    fn shards_of<'s>(
        &self,
        r: &Route,
        snapshot: &'s Snapshot,
    ) -> Result<Vec<&'s Shard>, ProxyError> {
        let ks = snapshot
            .keyspace(&r.keyspace)
            .ok_or_else(|| ProxyError::UnknownDatabase(r.keyspace.clone()))?;
        let none = || ProxyError::NoServingShards(r.keyspace.clone());
        Ok(match &r.target {
            Target::Unsharded => vec![ks.single_shard().ok_or_else(none)?],
            Target::AnyShard => vec![ks.serving.first().ok_or_else(none)?],
            Target::Shard(name) => vec![ks
                .shards
                .get(name)
                .ok_or_else(|| ProxyError::UnknownDatabase(format!("{}:{}", r.keyspace, name)))?],
            Target::Scatter => ks.serving.iter().collect(),
        })
    }

    async fn route(
        &mut self,
        r: &Route,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let snapshot = self.snapshot;
        let shards = self.shards_of(r, snapshot)?;
        let [shard] = shards.as_slice() else {
            return Err(ProxyError::NotSupported("multi-shard routes".into()).into());
        };
        let binary = self.params.is_some();
        let held = self.conns.get(self.ctx, &r.keyspace, shard).await?;
        if binary && !r.query.verbatim {
            return Err(ProxyError::NotSupported(
                "this statement as a server-side prepared statement (it needs rewriting); use a client-side prepared statement".into(),
            )
            .into());
        }
        let sent = if let Some(params) = self.params {
            match held.conn.prepared_id(&r.query.text).await {
                Ok(id) => held.conn.send_execute(id, params).await,
                Err(e) => Err(e),
            }
        } else {
            let sql = render(
                &r.query.template,
                &shard.database,
                None,
                self.no_backslash_escapes,
            );
            held.conn.send_command(COM_QUERY, sql.as_bytes()).await
        };
        if let Err(e) = sent {
            return Err(ProxyError::from_backend(&held.label, e).into());
        }
        let opts = RelayOptions {
            more_results: self.more_results,
        };
        match relay_response(&mut held.conn, out, opts).await {
            Ok(s) => Ok(s),
            Err(RelayError::Backend(_)) => {
                self.conns.drop_unusable();
                Err(ExecError::Reported)
            }
            Err(RelayError::Client(e)) => Err(ExecError::ClientGone(e)),
        }
    }
}

/// Renders a query for one shard: `:sg_db` becomes the shard's database, `?` the
/// parameter literals (text protocol).
pub fn render(
    template: &SqlTemplate,
    database: &str,
    params: Option<&Execute>,
    no_backslash_escapes: bool,
) -> String {
    template.render(
        |i, out| match params.and_then(|p| p.params.get(i)) {
            Some(p) => p.write_literal(out, no_backslash_escapes),
            None => out.push('?'),
        },
        |m, out| {
            if m == "db" {
                out.push('`');
                out.push_str(&database.replace('`', "``"));
                out.push('`');
            }
        },
    )
}
