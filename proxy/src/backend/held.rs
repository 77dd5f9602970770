//! A backend connection a session holds for a while (a statement, a transaction, or as
//! long as it carries session state), with what the session knows about it. The engine
//! reads answers through it; the session decides when it goes back to its pool.

use super::pool::PooledConn;

/// A backend connection held by the session.
pub struct Held {
    /// (address, database) of the shard's backend.
    pub key: (String, String),
    /// `keyspace/shard`, for messages.
    pub label: std::sync::Arc<str>,
    pub conn: PooledConn,
    /// Joined the session's explicit transaction.
    pub in_txn: bool,
    /// Changed or locked rows in that transaction: only then does the backend list it as
    /// holding locks (which a resharding cutover's drain waits for); a transaction that
    /// only read there is not waited for, so its first write there is held like a new one.
    pub wrote: bool,
    /// Carries session state that cannot move to another connection.
    pub pinned: bool,
    /// Kept until the next statement, which may ask about this one's warnings.
    pub hold: bool,
    /// The statement that used it last.
    pub used: u64,
}

impl Drop for Held {
    /// A connection carrying session state or an open transaction never goes back to the
    /// pool unless it was reset (which clears `pinned`) or finished (`in_txn`); nor does
    /// any connection dropped while a panic unwinds.
    fn drop(&mut self) {
        if self.pinned || self.in_txn || std::thread::panicking() {
            self.conn.mark_broken();
        }
    }
}
