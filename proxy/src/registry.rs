//! The live sessions of this proxy: connection ids, what each is doing (for SHOW
//! PROCESSLIST and the status page), and kill requests (KILL QUERY / KILL CONNECTION).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
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
