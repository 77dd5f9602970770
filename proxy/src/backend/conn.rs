//! One connection from the proxy to a MySQL/MariaDB server: the client side of the
//! handshake, sending commands, and reading the response packets one by one.
//!
//! Backends are always spoken to with CLIENT_DEPRECATE_EOF and without session tracking,
//! so every response has one shape the relay understands (see `relay.rs`). A connection
//! remembers whether a response is still unread ([`BackendConn::is_clean`]); a connection
//! with unread packets or an open transaction is never returned to a pool.

use crate::wire::auth::{native_answer, NATIVE_PASSWORD};
use crate::wire::codec::{Malformed, Reader};
use crate::wire::consts::*;
use crate::wire::handshake::{decode_auth_switch, Greeting, HandshakeResponse};
use crate::wire::packets::{ColumnDef, ErrPacket, OkPacket};
use crate::wire::{NetStream, PacketError, PacketIo};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// TLS to backends: the rustls client configuration built from `backend.tls_ca_file`
/// (compared by identity, so options stay usable as a map key).
#[derive(Clone)]
pub struct BackendTls(pub Arc<rustls::ClientConfig>);

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BackendTls {}

impl std::hash::Hash for BackendTls {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendTls")
    }
}

/// Capabilities every backend connection uses.
pub const BACKEND_CAPABILITIES: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_DEPRECATE_EOF;

/// Client capabilities that change what a server does and so are mirrored on the backend.
pub const MIRRORED_CAPABILITIES: u32 = CLIENT_FOUND_ROWS | CLIENT_IGNORE_SPACE | CLIENT_INTERACTIVE;

/// Why talking to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to backend {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("backend {addr} refused the login: {message}")]
    Auth { addr: String, message: String },
    #[error("lost connection to backend: {0}")]
    Io(#[from] PacketError),
    #[error("backend sent a malformed packet")]
    Protocol,
    /// The server answered with an error packet.
    #[error("{}", .0.message)]
    Server(ErrPacket),
    #[error("timed out waiting for a backend connection to {addr}")]
    PoolTimeout {
        addr: String,
        waited_ms: u64,
        pool_size: usize,
    },
}

impl From<Malformed> for BackendError {
    fn from(_: Malformed) -> Self {
        BackendError::Protocol
    }
}

/// How to reach and log in to one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    pub addr: String,
    pub user: String,
    pub password: String,
    pub database: String,
    /// Collation id sent in the handshake (sets the connection character set).
    pub charset: u8,
    /// Client capabilities to mirror (a subset of [`MIRRORED_CAPABILITIES`]).
    pub extra_capabilities: u32,
    pub connect_timeout: Duration,
    /// Upgrade to TLS and verify the server's certificate (None: plain TCP).
    pub tls: Option<BackendTls>,
}

/// A live backend connection.
pub struct BackendConn {
    io: PacketIo<NetStream>,
    /// The server's connection (thread) id, for KILL.
    pub thread_id: u32,
    pub server_version: String,
    status: u16,
    /// A command was sent and its response is not fully read.
    pending: bool,
    broken: bool,
    pub last_used: Instant,
    pub options_key: u64,
    /// Fingerprint of the session settings applied to this connection (0: none).
    pub signature: u64,
    /// Statements prepared on this connection, by text (see `stmt.rs`).
    pub(crate) statements:
        std::collections::HashMap<std::sync::Arc<str>, super::stmt::BackendStatement>,
    /// Counts this connection against its shard's limit while it exists (see `pool.rs`).
    pub(crate) open_token: Option<super::pool::OpenToken>,
}

impl BackendConn {
    /// Connects and logs in.
    pub async fn connect(opts: &ConnectOptions) -> Result<BackendConn, BackendError> {
        let fail = |reason: String| BackendError::Connect {
            addr: opts.addr.clone(),
            reason,
        };
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&opts.addr))
            .await
            .map_err(|_| fail("connect timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).ok();
        let io = PacketIo::new(NetStream::Plain(stream));
        tokio::time::timeout(opts.connect_timeout, Self::login(io, opts))
            .await
            .map_err(|_| fail("login timed out".into()))?
    }

    async fn login(
        mut io: PacketIo<NetStream>,
        opts: &ConnectOptions,
    ) -> Result<BackendConn, BackendError> {
        let first = io.read_packet(1 << 20).await?;
        if first.first() == Some(&0xff) {
            let e = ErrPacket::decode(&first)?;
            return Err(BackendError::Connect {
                addr: opts.addr.clone(),
                reason: e.message,
            });
        }
        let greeting = Greeting::decode(&first)?;
        let caps = BACKEND_CAPABILITIES
            | (opts.extra_capabilities & MIRRORED_CAPABILITIES)
            | if opts.database.is_empty() {
                0
            } else {
                CLIENT_CONNECT_WITH_DB
            };
        let mut caps = caps & (greeting.capabilities | CLIENT_CONNECT_WITH_DB);
        if let Some(tls) = &opts.tls {
            caps |= CLIENT_SSL;
            io = Self::upgrade(io, opts, tls, &greeting, caps).await?;
        }
        let mut plugin = greeting.auth_plugin.clone();
        if plugin.is_empty() {
            plugin = NATIVE_PASSWORD.into();
        }
        let answer = if plugin == NATIVE_PASSWORD {
            native_answer(opts.password.as_bytes(), &greeting.scramble)
        } else {
            Vec::new()
        };
        let response = HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 30,
            charset: opts.charset,
            user: opts.user.clone(),
            auth_response: answer,
            database: (!opts.database.is_empty()).then(|| opts.database.clone()),
            auth_plugin: Some(plugin),
            attributes: Vec::new(),
        };
        let at = io.begin_packet();
        response.encode(io.buf());
        io.finish_packet(at);
        io.flush().await?;
        loop {
            let p = io.read_packet(1 << 20).await?;
            match p.first() {
                Some(0x00) => break,
                Some(0xff) => {
                    let e = ErrPacket::decode(&p)?;
                    return Err(BackendError::Auth {
                        addr: opts.addr.clone(),
                        message: e.message,
                    });
                }
                Some(0xfe) => {
                    let (plugin, scramble) = decode_auth_switch(&p)?;
                    if plugin != NATIVE_PASSWORD {
                        return Err(BackendError::Auth {
                            addr: opts.addr.clone(),
                            message: format!(
                                "the server asks for auth plugin {plugin}; shardgate logs in to backends with mysql_native_password"
                            ),
                        });
                    }
                    let answer = native_answer(opts.password.as_bytes(), &scramble);
                    io.write_packet(&answer);
                    io.flush().await?;
                }
                _ => return Err(BackendError::Protocol),
            }
        }
        Ok(BackendConn {
            io,
            thread_id: greeting.connection_id,
            server_version: greeting.server_version,
            status: greeting.status,
            pending: false,
            broken: false,
            last_used: Instant::now(),
            options_key: 0,
            signature: 0,
            statements: Default::default(),
            open_token: None,
        })
    }

    /// Sends an SSLRequest and runs the TLS handshake, verifying the server's certificate
    /// against the configured CAs and the address's host name or IP.
    async fn upgrade(
        mut io: PacketIo<NetStream>,
        opts: &ConnectOptions,
        tls: &BackendTls,
        greeting: &Greeting,
        caps: u32,
    ) -> Result<PacketIo<NetStream>, BackendError> {
        let fail = |reason: String| BackendError::Connect {
            addr: opts.addr.clone(),
            reason,
        };
        if greeting.capabilities & CLIENT_SSL == 0 {
            return Err(fail(
                "backend.tls_ca_file is set but the server does not offer TLS".into(),
            ));
        }
        let host = opts
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&opts.addr)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| fail(format!("{host:?} is not a TLS server name: {e}")))?;
        let at = io.begin_packet();
        let b = io.buf();
        b.put_u32_le(caps);
        b.put_u32_le(1 << 30);
        b.put_u8(opts.charset);
        b.put_slice(&[0u8; 23]);
        io.finish_packet(at);
        io.flush().await?;
        let seq = io.seq();
        let Some(NetStream::Plain(tcp)) = io.into_inner() else {
            return Err(BackendError::Protocol);
        };
        let connector = tokio_rustls::TlsConnector::from(tls.0.clone());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
        let mut io = PacketIo::new(NetStream::Tls(Box::new(tokio_rustls::TlsStream::Client(
            stream,
        ))));
        io.set_seq(seq);
        Ok(io)
    }

    /// A connection over `stream` that is already past its handshake, waiting for the
    /// response to a command just sent. For fuzzing and tests of the relay, which read
    /// whatever the peer writes as a backend's answer.
    #[doc(hidden)]
    pub fn from_stream(stream: TcpStream) -> BackendConn {
        BackendConn {
            io: PacketIo::new(NetStream::Plain(stream)),
            thread_id: 0,
            server_version: String::new(),
            status: 0,
            pending: true,
            broken: false,
            last_used: Instant::now(),
            options_key: 0,
            signature: 0,
            statements: Default::default(),
            open_token: None,
        }
    }

    /// Whether the server has closed this idle connection (or sent something unasked):
    /// one non-blocking read, no round trip.
    pub fn closed_by_peer(&self) -> bool {
        if self.io.has_buffered_packet() {
            return true;
        }
        let mut probe = [0u8; 1];
        match self.io.get_ref().tcp().try_read(&mut probe) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// True when no response is outstanding, the connection works, and no transaction is open.
    pub fn is_clean(&self) -> bool {
        !self.pending && !self.broken && self.status & SERVER_STATUS_IN_TRANS == 0
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// True while a response is still being read.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// The status flags of the last OK/EOF the server sent.
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn in_transaction(&self) -> bool {
        self.status & SERVER_STATUS_IN_TRANS != 0
    }

    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// The current command's response continues (another result follows).
    pub fn mark_pending(&mut self) {
        self.pending = true;
    }

    /// Sends a command packet (sequence id 0).
    pub async fn send_command(&mut self, command: u8, body: &[u8]) -> Result<(), BackendError> {
        if self.pending {
            // A previous response was abandoned half-read; this connection is unusable.
            self.broken = true;
            return Err(BackendError::Protocol);
        }
        self.io.set_seq(0);
        let at = self.io.begin_packet();
        {
            let b = self.io.buf();
            b.extend_from_slice(&[command]);
            b.extend_from_slice(body);
        }
        self.io.finish_packet(at);
        self.pending = true;
        self.last_used = Instant::now();
        if let Err(e) = self.io.flush().await {
            self.broken = true;
            return Err(e.into());
        }
        Ok(())
    }

    /// Sends COM_STMT_EXECUTE for backend statement `id`, built in place.
    pub async fn send_execute(
        &mut self,
        id: u32,
        exec: &crate::wire::params::Execute,
    ) -> Result<(), BackendError> {
        if self.pending {
            self.broken = true;
            return Err(BackendError::Protocol);
        }
        self.io.set_seq(0);
        let at = self.io.begin_packet();
        exec.encode_into(id, self.io.buf());
        self.io.finish_packet(at);
        self.pending = true;
        self.last_used = Instant::now();
        if let Err(e) = self.io.flush().await {
            self.broken = true;
            return Err(e.into());
        }
        Ok(())
    }

    /// Sends a command whose packet is already built (`payload` includes the command byte).
    pub async fn send_raw_command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        let (cmd, body) = payload.split_first().ok_or(BackendError::Protocol)?;
        self.send_command(*cmd, body).await
    }

    /// Reads the next physical packet of the current response.
    pub async fn read(&mut self) -> Result<Bytes, BackendError> {
        match self.io.read_physical().await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.broken = true;
                Err(e.into())
            }
        }
    }

    /// Marks the response complete, recording the server status it ended with.
    pub fn finish(&mut self, status: u16) {
        self.status = status;
        self.pending = false;
        self.last_used = Instant::now();
    }

    /// Marks the response complete after an error packet (status unchanged).
    pub fn finish_after_error(&mut self) {
        self.pending = false;
        self.last_used = Instant::now();
    }

    /// Sends COM_QUERY with the exact bytes of a text view (see `wire::charset`): the
    /// client's own bytes where they came from the client, UTF-8 for what the proxy wrote.
    pub async fn send_query(&mut self, view: &str) -> Result<(), BackendError> {
        let bytes = crate::wire::charset::encode(view);
        self.send_command(COM_QUERY, &bytes).await
    }

    /// Runs a statement and collects its whole answer. For the proxy's own small queries
    /// (session setup, metadata, sequences); client results are relayed instead.
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, BackendError> {
        self.send_query(sql).await?;
        let mut results = self.collect().await?;
        // Multi-statement setup queries: the last result is the interesting one.
        Ok(results.pop().unwrap_or_default())
    }

    /// Runs a statement that returns no rows (or whose rows are ignored).
    pub async fn execute(&mut self, sql: &str) -> Result<OkPacket, BackendError> {
        Ok(self.query(sql).await?.ok)
    }

    /// Reads every result of the current response. An error packet becomes `Server(..)`.
    pub async fn collect(&mut self) -> Result<Vec<QueryResult>, BackendError> {
        let mut out = Vec::new();
        loop {
            let first = self.read().await?;
            match first.first() {
                Some(0x00) => {
                    let ok = OkPacket::decode(&first)?;
                    let more = ok.status & SERVER_MORE_RESULTS_EXISTS != 0;
                    self.finish(ok.status);
                    out.push(QueryResult {
                        ok,
                        ..QueryResult::default()
                    });
                    if more {
                        self.pending = true;
                        continue;
                    }
                    return Ok(out);
                }
                Some(0xff) => {
                    self.finish_after_error();
                    return Err(BackendError::Server(ErrPacket::decode(&first)?));
                }
                _ => {}
            }
            let n = Reader::new(&first).lenenc()? as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                columns.push(ColumnDef::decode(&self.read().await?)?);
            }
            let mut rows = Vec::new();
            loop {
                let p = self.read_logical().await?;
                match p.first() {
                    Some(0xfe) if p.len() < MAX_PHYSICAL_PAYLOAD => {
                        let ok = OkPacket::decode(&p)?;
                        let more = ok.status & SERVER_MORE_RESULTS_EXISTS != 0;
                        self.finish(ok.status);
                        out.push(QueryResult { columns, rows, ok });
                        if more {
                            self.pending = true;
                        }
                        break;
                    }
                    Some(0xff) => {
                        self.finish_after_error();
                        return Err(BackendError::Server(ErrPacket::decode(&p)?));
                    }
                    _ => {
                        let mut r = Reader::new(&p);
                        let mut row = Vec::with_capacity(n);
                        for _ in 0..n {
                            row.push(r.lenenc_bytes_opt()?.map(Bytes::copy_from_slice));
                        }
                        rows.push(row);
                    }
                }
            }
            if !self.pending {
                return Ok(out);
            }
        }
    }

    /// Reads one logical packet (joining 16 MiB continuations).
    pub async fn read_logical(&mut self) -> Result<Bytes, BackendError> {
        let first = self.read().await?;
        if first.len() < MAX_PHYSICAL_PAYLOAD {
            return Ok(first);
        }
        let mut joined = BytesMut::from(&first[..]);
        loop {
            let next = self.read().await?;
            joined.extend_from_slice(&next);
            if next.len() < MAX_PHYSICAL_PAYLOAD {
                return Ok(joined.freeze());
            }
        }
    }

    /// COM_PING round trip.
    pub async fn ping(&mut self) -> Result<(), BackendError> {
        self.send_command(COM_PING, &[]).await?;
        let p = self.read().await?;
        match p.first() {
            Some(0x00) => {
                let ok = OkPacket::decode(&p)?;
                self.finish(ok.status);
                Ok(())
            }
            Some(0xff) => {
                self.finish_after_error();
                Err(BackendError::Server(ErrPacket::decode(&p)?))
            }
            _ => {
                self.broken = true;
                Err(BackendError::Protocol)
            }
        }
    }

    /// COM_RESET_CONNECTION: rolls back, drops temporary tables, user variables, session
    /// settings and prepared statements, so the connection can serve another session.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        self.send_command(COM_RESET_CONNECTION, &[]).await?;
        let p = self.read().await?;
        self.statements.clear();
        self.signature = 0;
        match p.first() {
            Some(0x00) => {
                let ok = OkPacket::decode(&p)?;
                self.finish(ok.status);
                Ok(())
            }
            Some(0xff) => {
                self.finish_after_error();
                self.broken = true;
                Err(BackendError::Server(ErrPacket::decode(&p)?))
            }
            _ => {
                self.broken = true;
                Err(BackendError::Protocol)
            }
        }
    }

    /// Sends COM_QUIT and closes (best effort).
    pub async fn quit(mut self) {
        if !self.pending && !self.broken {
            let _ = self.send_command(COM_QUIT, &[]).await;
        }
        self.io.shutdown().await;
    }
}

/// A fully read result: column definitions, text rows, and the closing OK.
#[derive(Debug, Default, Clone)]
pub struct QueryResult {
    pub columns: Vec<ColumnDef>,
    pub rows: Vec<Vec<Option<Bytes>>>,
    pub ok: OkPacket,
}

impl QueryResult {
    /// The first column of the first row as text, if any.
    pub fn scalar(&self) -> Option<String> {
        self.rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}
