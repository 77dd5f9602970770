//! The live sessions of this proxy: connection ids, what each is doing (for SHOW
//! PROCESSLIST and the status page), and kill requests (KILL QUERY / KILL CONNECTION).

use crate::backend::pool::Pool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// What one session is doing, readable by other sessions.
pub struct SessionEntry {
    pub id: u32,
    pub user: String,
    pub peer: SocketAddr,
    pub started: Instant,
    state: Mutex<SessionState>,
    /// True while a KILL QUERY (or KILL CONNECTION) is pending for the running statement.
    query_kill: watch::Sender<bool>,
    /// True once KILL CONNECTION was requested.
    conn_kill: watch::Sender<bool>,
    /// The backend connections its open transaction runs on (the deadlock detector's
    /// view; shared with the session's connections).
    pub locks: Arc<TxnLocks>,
    /// Set when the deadlock detector chose this session's transaction as the victim of
    /// a lock-wait cycle: the interrupted statement fails with 1213.
    deadlock: AtomicBool,
}

/// Where a session's open transaction holds locks: each backend connection (its pool and
/// server thread id) it joined, and when it began.
#[derive(Default)]
pub struct TxnLocks {
    inner: Mutex<(u64, Vec<BackendThread>)>,
}

/// A backend connection: its pool (which server) and the server's thread id for it.
pub type BackendThread = (Arc<Pool>, u32);

impl TxnLocks {
    /// A backend connection joined the transaction.
    pub fn joined(&self, pool: &Arc<Pool>, thread: u32) {
        let mut g = self.inner.lock().unwrap();
        if g.1.is_empty() {
            g.0 = crate::topo::now_ms();
        }
        g.1.push((pool.clone(), thread));
    }

    /// The transaction ended (committed, rolled back, or dropped).
    pub fn ended(&self) {
        let mut g = self.inner.lock().unwrap();
        g.1.clear();
    }

    /// When the transaction began (unix ms) and its connections; None outside one.
    pub fn view(&self) -> Option<(u64, Vec<BackendThread>)> {
        let g = self.inner.lock().unwrap();
        (!g.1.is_empty()).then(|| (g.0, g.1.clone()))
    }
}

#[derive(Clone)]
struct SessionState {
    db: Option<String>,
    command: &'static str,
    info: Option<Arc<str>>,
    since: Instant,
}

/// A row of SHOW PROCESSLIST.
#[derive(Debug, Clone)]
pub struct ProcessRow {
    pub id: u32,
    pub user: String,
    pub host: String,
    pub db: Option<String>,
    pub command: &'static str,
    pub time_s: u64,
    pub info: Option<String>,
}

impl SessionEntry {
    pub fn set_db(&self, db: Option<String>) {
        self.state.lock().unwrap().db = db;
    }

    /// Marks the start of a command (`info` is the statement text; shared, not copied).
    /// A KILL QUERY sent while no command ran is forgotten (as in MySQL); one sent from now
    /// on, even before the statement reaches a backend, stops it.
    pub fn begin(&self, command: &'static str, info: Option<&Arc<str>>) {
        if *self.query_kill.borrow() {
            self.query_kill.send_replace(false);
        }
        self.deadlock.store(false, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        s.command = command;
        s.info = info.cloned();
        s.since = Instant::now();
    }

    pub fn end(&self) {
        let mut s = self.state.lock().unwrap();
        s.command = "Sleep";
        s.info = None;
        s.since = Instant::now();
    }

    /// KILL QUERY (and, with `connection`, KILL CONNECTION).
    pub fn request_kill(&self, connection: bool) {
        self.query_kill.send_replace(true);
        if connection {
            self.conn_kill.send_replace(true);
        }
    }

    /// Watches KILL QUERY requests.
    pub fn query_kill(&self) -> watch::Receiver<bool> {
        self.query_kill.subscribe()
    }

    /// Watches KILL CONNECTION requests.
    pub fn conn_kill(&self) -> watch::Receiver<bool> {
        self.conn_kill.subscribe()
    }

    /// Clears a served KILL QUERY.
    pub fn clear_query_kill(&self) {
        self.query_kill.send_replace(false);
    }

    pub fn connection_killed(&self) -> bool {
        *self.conn_kill.borrow()
    }

    /// Rolls back this session's transaction as a deadlock victim: its running statement
    /// is stopped and fails with 1213.
    pub fn deadlock_kill(&self) {
        self.deadlock.store(true, Ordering::SeqCst);
        self.query_kill.send_replace(true);
    }

    /// Whether the statement just stopped was a deadlock victim (and clears it).
    pub fn take_deadlock(&self) -> bool {
        self.deadlock.swap(false, Ordering::SeqCst)
    }

    /// How long the running command has run (None when idle).
    pub fn running_for(&self) -> Option<std::time::Duration> {
        let s = self.state.lock().unwrap();
        (s.command != "Sleep").then(|| s.since.elapsed())
    }

    fn row(&self) -> ProcessRow {
        let s = self.state.lock().unwrap().clone();
        ProcessRow {
            id: self.id,
            user: self.user.clone(),
            host: self.peer.to_string(),
            db: s.db,
            command: s.command,
            time_s: s.since.elapsed().as_secs(),
            info: s.info.map(|i| i.chars().take(200).collect()),
        }
    }
}

/// All sessions, by connection id.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU32,
    sessions: Mutex<HashMap<u32, Arc<SessionEntry>>>,
}

impl Registry {
    /// A fresh connection id (never 0).
    pub fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && !self.sessions.lock().unwrap().contains_key(&id) {
                return id;
            }
        }
    }

    pub fn register(
        &self,
        id: u32,
        user: &str,
        peer: SocketAddr,
        db: Option<String>,
    ) -> Arc<SessionEntry> {
        let e = Arc::new(SessionEntry {
            id,
            user: user.to_string(),
            peer,
            started: Instant::now(),
            state: Mutex::new(SessionState {
                db,
                command: "Sleep",
                info: None,
                since: Instant::now(),
            }),
            query_kill: watch::channel(false).0,
            conn_kill: watch::channel(false).0,
            locks: Arc::default(),
            deadlock: AtomicBool::new(false),
        });
        self.sessions.lock().unwrap().insert(id, e.clone());
        e
    }

    pub fn unregister(&self, id: u32) {
        self.sessions.lock().unwrap().remove(&id);
    }

    pub fn get(&self, id: u32) -> Option<Arc<SessionEntry>> {
        self.sessions.lock().unwrap().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions whose statement inside a transaction has run for at least `min`: those
    /// that may be waiting for a lock (the deadlock detector looks only at them).
    pub fn long_in_transaction(&self, min: std::time::Duration) -> Vec<Arc<SessionEntry>> {
        self.sessions
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.running_for().is_some_and(|d| d >= min) && e.locks.view().is_some())
            .cloned()
            .collect()
    }

    /// Rows for SHOW PROCESSLIST, by id.
    pub fn processlist(&self) -> Vec<ProcessRow> {
        let mut rows: Vec<ProcessRow> = self
            .sessions
            .lock()
            .unwrap()
            .values()
            .map(|e| e.row())
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}
