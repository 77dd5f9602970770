//! The error catalogue: every error the proxy itself reports to a client, with its MySQL
//! errno, SQLSTATE and message. Backend errors keep their own codes ([`ProxyError::Backend`]).
//!
//! Codes are MySQL/MariaDB's where one fits, so clients and ORMs react as they would to
//! the server; messages say what shardgate did and what to do about it.

use crate::backend::conn::BackendError;
use crate::wire::ErrPacket;

/// Errors reported to clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("Unknown database '{0}'")]
    UnknownDatabase(String),
    #[error("No database selected")]
    NoDatabaseSelected,
    #[error("Table '{keyspace}.{table}' doesn't exist")]
    UnknownTable { keyspace: String, table: String },
    #[error("This version of shardgate doesn't yet support '{0}'")]
    NotSupported(String),
    #[error("You have an error in your SQL syntax; {0}")]
    Syntax(String),
    /// An error packet from a backend, passed through unchanged.
    #[error("{}", .0.message)]
    Backend(ErrPacket),
    #[error("shard {shard} is unavailable: {reason}")]
    ShardUnavailable { shard: String, reason: String },
    #[error("keyspace '{0}' has no serving shards")]
    NoServingShards(String),
    #[error("shardgate: {0}")]
    Internal(String),
    #[error("Too many connections")]
    TooManyConnections,
    #[error("Unknown prepared statement handler ({id}) given to {command}")]
    UnknownStatement { id: u32, command: &'static str },
    #[error("Incorrect arguments to {0}")]
    WrongArguments(&'static str),
    #[error("Query execution was interrupted (max_statement_time exceeded)")]
    QueryTimeout,
    #[error("Query execution was interrupted")]
    Interrupted,
    #[error("shardgate: the result of this multi-shard query needs more than {limit} rows in memory (session.max_merge_rows); add a LIMIT or a narrower WHERE")]
    MergeTooLarge { limit: u64 },
    #[error("This version of shardgate doesn't yet support 'a statement whose tables' rows are on shards {first} and {second} (its pinned values differ); joins across shards'")]
    PinsApart { first: String, second: String },
    #[error("Too many connections: every connection of shardgate to shard {shard} is busy (backend.pool_size = {pool_size}); waited {waited_ms} ms (backend.pool_wait_ms)")]
    PoolExhausted {
        shard: String,
        waited_ms: u64,
        pool_size: usize,
    },
    #[error("Deadlock found when trying to get lock; try restarting transaction (shardgate: a lock-wait cycle across shards; this transaction was the youngest in it and was rolled back)")]
    DeadlockAcrossShards,
    #[error("shardgate: the transaction was idle for more than {seconds} s (session.idle_transaction_timeout_s); it was rolled back and the connection closed")]
    IdleTransaction { seconds: u64 },
    #[error("shardgate: this statement needs more than {limit} bytes of rows gathered from the shards (session.max_gather_bytes); add a narrower WHERE")]
    GatherTooLarge { limit: u64 },
    #[error("shardgate: transaction would span shards {shards} but transaction_mode is 'single'; use SET transaction_mode = 'multi' or 'twopc'")]
    CrossShardTransaction { shards: String },
    #[error("shardgate: ON DUPLICATE KEY UPDATE of the sharding column {column} of table {table} would move the row to another shard; use an UPDATE (which moves rows)")]
    ShardKeyChange { table: String, column: String },
    #[error("shardgate: {0}")]
    Unsupported(String),
    #[error("shardgate: {0}")]
    WrongValue(String),
    #[error("shardgate: keyspace {keyspace} is being resharded (workflow {workflow}); {what} is refused until it completes")]
    Resharding {
        keyspace: String,
        workflow: String,
        what: String,
    },
    #[error("shardgate: this proxy lost its etcd registration; writes to keyspace {0} wait for the topology while it is being resharded (retry)")]
    Fenced(String),
    #[error("Access denied; {0}")]
    AccessDenied(String),
    /// A keyspace the user's grants do not include (MySQL's ER_DBACCESS_DENIED_ERROR).
    #[error("Access denied for user '{user}'@'{host}' to database '{database}'")]
    DatabaseDenied {
        user: String,
        host: String,
        database: String,
    },
    /// A statement the user's role may not run on a table (ER_TABLEACCESS_DENIED_ERROR).
    #[error("{command} command denied to user '{user}'@'{host}' for table '{table}'")]
    TableDenied {
        command: String,
        user: String,
        host: String,
        table: String,
    },
    /// KILL of another user's session by a non-admin (ER_KILL_DENIED_ERROR).
    #[error("You are not owner of thread {0}")]
    KillDenied(u64),
    #[error("Duplicate entry '{value}' for key '{key}'")]
    DuplicateKey { value: String, key: String },
    #[error("Unknown system variable '{0}'")]
    UnknownVariable(String),
    #[error("Variable '{name}' can't be set to the value of '{value}'")]
    WrongVariableValue { name: String, value: String },
    #[error("Unknown thread id: {0}")]
    UnknownThread(u64),
    #[error("XA_RBROLLBACK: Transaction branch was rolled back: {shard} failed mid-transaction, so the whole transaction was rolled back")]
    TransactionLost { shard: String },
    #[error("{}", reserved_message(.0))]
    Reserved(crate::planner::lexer::Reserved),
    #[error("Can't create more than max_prepared_stmt_count statements (current value: {0}) (shardgate: session.max_prepared_statements)")]
    TooManyPreparedStatements(u64),
    #[error("Parameter of prepared statement which is set through mysql_send_long_data() is longer than 'max_allowed_packet' bytes ({0})")]
    LongDataTooLarge(u64),
    #[error("shardgate internal error: the proxy hit a bug while running this session's command; the session is closed (other sessions are not affected)")]
    Panicked,
    #[error("Column count doesn't match value count at row {0}")]
    ValueCount(usize),
    /// Planning needs a table's columns and schema tracking has not read them: the session
    /// reads the keyspace again and plans once more (the client never sees this error
    /// unless the table still is not there).
    #[error("Table '{keyspace}.{table}' doesn't exist (shardgate has not seen its columns)")]
    SchemaUnknown { keyspace: String, table: String },
}

fn reserved_message(r: &crate::planner::lexer::Reserved) -> String {
    use crate::planner::lexer::Reserved;
    match r {
        Reserved::UserVariable(v) => format!(
            "Access denied; user variable @{v} is reserved by shardgate (names starting with sg_ belong to its change capture)"
        ),
        Reserved::Database => "Access denied for user to database '_shardgate' (reserved by shardgate for change capture)".into(),
    }
}

impl ProxyError {
    /// Who the error comes from, for metrics: `backend` (a MySQL server's own error),
    /// `client` (the statement or value the client sent is wrong), or `proxy` (the proxy
    /// could not or would not run it: limits, shards unavailable, not supported).
    pub fn origin(&self) -> &'static str {
        match self {
            ProxyError::Backend(_) | ProxyError::DuplicateKey { .. } => "backend",
            ProxyError::UnknownDatabase(_)
            | ProxyError::NoDatabaseSelected
            | ProxyError::UnknownTable { .. }
            | ProxyError::Syntax(_)
            | ProxyError::UnknownStatement { .. }
            | ProxyError::WrongArguments(_)
            | ProxyError::WrongValue(_)
            | ProxyError::AccessDenied(_)
            | ProxyError::DatabaseDenied { .. }
            | ProxyError::TableDenied { .. }
            | ProxyError::KillDenied(_)
            | ProxyError::UnknownVariable(_)
            | ProxyError::WrongVariableValue { .. }
            | ProxyError::UnknownThread(_)
            | ProxyError::Reserved(_)
            | ProxyError::ValueCount(_)
            | ProxyError::SchemaUnknown { .. }
            | ProxyError::ShardKeyChange { .. }
            | ProxyError::Interrupted => "client",
            _ => "proxy",
        }
    }

    /// (errno, SQLSTATE) of this error.
    pub fn code(&self) -> (u16, &'static str) {
        match self {
            ProxyError::UnknownDatabase(_) => (1049, "42000"),
            ProxyError::NoDatabaseSelected => (1046, "3D000"),
            ProxyError::UnknownTable { .. } => (1146, "42S02"),
            ProxyError::NotSupported(_) => (1235, "42000"),
            ProxyError::Syntax(_) => (1064, "42000"),
            ProxyError::Backend(e) => (e.code, "HY000"),
            ProxyError::ShardUnavailable { .. } => (2013, "HY000"),
            ProxyError::NoServingShards(_) => (1105, "HY000"),
            ProxyError::Internal(_) => (1105, "HY000"),
            ProxyError::TooManyConnections => (1040, "08004"),
            ProxyError::UnknownStatement { .. } => (1243, "HY000"),
            ProxyError::WrongArguments(_) => (1210, "HY000"),
            ProxyError::QueryTimeout => (1969, "70100"),
            ProxyError::Interrupted => (1317, "70100"),
            ProxyError::MergeTooLarge { .. } => (1105, "HY000"),
            ProxyError::GatherTooLarge { .. } => (1105, "HY000"),
            ProxyError::PinsApart { .. } => (1235, "42000"),
            ProxyError::PoolExhausted { .. } => (1040, "08004"),
            ProxyError::IdleTransaction { .. } => (4031, "HY000"),
            ProxyError::DeadlockAcrossShards => (1213, "40001"),
            ProxyError::CrossShardTransaction { .. } => (1105, "HY000"),
            ProxyError::ShardKeyChange { .. } => (1235, "42000"),
            ProxyError::Unsupported(_) => (1235, "42000"),
            ProxyError::WrongValue(_) => (1105, "HY000"),
            ProxyError::Resharding { .. } => (1105, "HY000"),
            ProxyError::Fenced(_) => (1105, "HY000"),
            ProxyError::AccessDenied(_) => (1227, "42000"),
            ProxyError::DatabaseDenied { .. } => (1044, "42000"),
            ProxyError::TableDenied { .. } => (1142, "42000"),
            ProxyError::KillDenied(_) => (1095, "HY000"),
            ProxyError::DuplicateKey { .. } => (1062, "23000"),
            ProxyError::UnknownVariable(_) => (1193, "HY000"),
            ProxyError::WrongVariableValue { .. } => (1231, "42000"),
            ProxyError::UnknownThread(_) => (1094, "HY000"),
            ProxyError::TransactionLost { .. } => (1402, "XA100"),
            ProxyError::Reserved(crate::planner::lexer::Reserved::UserVariable(_)) => {
                (1227, "42000")
            }
            ProxyError::Reserved(crate::planner::lexer::Reserved::Database) => (1044, "42000"),
            ProxyError::TooManyPreparedStatements(_) => (1461, "42000"),
            ProxyError::LongDataTooLarge(_) => (1153, "HY000"),
            ProxyError::Panicked => (1105, "HY000"),
            ProxyError::ValueCount(_) => (1136, "21S01"),
            ProxyError::SchemaUnknown { .. } => (1146, "42S02"),
        }
    }

    /// The packet sent to the client.
    pub fn to_packet(&self) -> ErrPacket {
        if let ProxyError::Backend(e) = self {
            return e.clone();
        }
        let (code, state) = self.code();
        ErrPacket::new(code, state, self.to_string())
    }

    /// Wraps a backend failure on `shard` (a server error passes through as is).
    pub fn from_backend(shard: &str, e: BackendError) -> ProxyError {
        match e {
            BackendError::Server(p) => ProxyError::Backend(p),
            BackendError::PoolTimeout {
                waited_ms,
                pool_size,
                ..
            } => ProxyError::PoolExhausted {
                shard: shard.to_string(),
                waited_ms,
                pool_size,
            },
            other => ProxyError::ShardUnavailable {
                shard: shard.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_follow_mysql() {
        let p = ProxyError::UnknownDatabase("nope".into()).to_packet();
        assert_eq!((p.code, p.state_str()), (1049, "42000"));
        assert_eq!(p.message, "Unknown database 'nope'");
        let p = ProxyError::NotSupported("cross-shard join".into()).to_packet();
        assert_eq!(p.code, 1235);
        let backend = ErrPacket::new(1062, "23000", "Duplicate entry '1' for key 'PRIMARY'");
        assert_eq!(ProxyError::Backend(backend.clone()).to_packet(), backend);
    }
}
