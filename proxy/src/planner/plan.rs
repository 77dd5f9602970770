//! Plans: what executing a statement means, as a tree of enums whose variants carry
//! exactly the data they need. Plans are immutable, cached, and serializable (that is what
//! `EXPLAIN FORMAT=shardgate` prints and what the golden tests compare).

use super::sqltext::SqlTemplate;
use serde::Serialize;
use std::sync::Arc;

/// The plan of one statement.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Answered by the session itself, perhaps with help from backends.
    Session(SessionOp),
    /// Runs against shards.
    Query(Primitive),
}

/// Statements about the session rather than the data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOp {
    /// `USE ks` or `USE ks:shard` (operators target one shard directly).
    Use {
        keyspace: String,
        shard: Option<String>,
    },
    /// `SHOW DATABASES`: the keyspaces.
    ShowDatabases,
    /// `SHOW KEYSPACES` / `SHOW VITESS_KEYSPACES`.
    ShowKeyspaces,
    /// `SHOW SHARDS` / `SHOW VITESS_SHARDS`.
    ShowShards,
    /// BEGIN / START TRANSACTION.
    Begin {
        read_only: bool,
    },
    Commit,
    Rollback,
    /// SET statements: applied to the session and to every backend connection it uses.
    Set(Vec<super::set::Assignment>),
    /// `EXPLAIN FORMAT=shardgate <stmt>`.
    Explain(Box<Plan>),
}

/// A node of an executable plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Primitive {
    /// Sends a query to the shards `target` selects and relays (or concatenates) results.
    Route(Route),
}

/// Which shards a route goes to.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The only shard of an unsharded keyspace.
    Unsharded,
    /// Any one serving shard (reference tables, statements without tables).
    AnyShard,
    /// A shard named by the session (`USE ks:-80`).
    Shard(String),
    /// Every serving shard.
    Scatter,
}

/// A query sent to shards.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub keyspace: String,
    pub target: Target,
    pub query: Query,
}

/// The text sent to a shard.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    /// The statement, cut at `?` placeholders and markers.
    pub template: Arc<SqlTemplate>,
    /// The statement text with `?` placeholders (what a backend prepares).
    #[serde(skip)]
    pub text: Arc<str>,
    /// True when the text is exactly the client's: a prepared statement can then run as a
    /// backend prepared statement and its binary rows relay as they are.
    pub verbatim: bool,
}

impl Query {
    pub fn verbatim(sql: &str) -> Query {
        Query {
            template: Arc::new(SqlTemplate::new(sql)),
            text: Arc::from(sql),
            verbatim: true,
        }
    }

    pub fn rewritten(sql: &str) -> Query {
        Query {
            template: Arc::new(SqlTemplate::new(sql)),
            text: Arc::from(sql),
            verbatim: false,
        }
    }
}
