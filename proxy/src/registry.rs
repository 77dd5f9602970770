//! The live sessions of this proxy: connection ids, what each is doing (for SHOW
//! PROCESSLIST and the status page), and kill requests (KILL QUERY / KILL CONNECTION).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// No kill requested.
pub const KILL_NONE: u8 = 0;
/// KILL QUERY: abort the running statement.
pub const KILL_QUERY: u8 = 1;
/// KILL CONNECTION: abort and close.
pub const KILL_CONNECTION: u8 = 2;

/// What one session is doing, readable by other sessions.
pub struct SessionEntry {
    pub id: u32,
    pub user: String,
    pub peer: SocketAddr,
    pub started: Instant,
    state: Mutex<SessionState>,
    kill: AtomicU8,
    /// Woken when a kill is requested.
    pub killed: Notify,
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
    pub fn begin(&self, command: &'static str, info: Option<&Arc<str>>) {
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

    pub fn request_kill(&self, kind: u8) {
        self.kill.fetch_max(kind, Ordering::SeqCst);
        self.killed.notify_waiters();
        self.killed.notify_one();
    }

    /// The pending kill, if any; a KILL QUERY is consumed by reading it.
    pub fn take_kill(&self) -> u8 {
        let k = self.kill.load(Ordering::SeqCst);
        if k == KILL_QUERY {
            self.kill.store(KILL_NONE, Ordering::SeqCst);
        }
        k
    }

    pub fn kill_pending(&self) -> u8 {
        self.kill.load(Ordering::SeqCst)
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
            kill: AtomicU8::new(KILL_NONE),
            killed: Notify::new(),
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
