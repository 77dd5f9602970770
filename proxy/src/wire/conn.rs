//! One client connection: the handshake, authentication, then the command loop that
//! decodes each command and hands it to a [`Handler`].
//!
//! Nothing here knows about keyspaces or routing. A malformed packet closes only this
//! connection; a command the proxy does not implement gets error 1047 and the connection
//! stays usable.

use super::codec::Reader;
use super::consts::*;
use super::login::handshake;
use super::packet::{PacketError, PacketIo};
use super::packets::{ErrPacket, OkPacket};
use super::responder::Responder;
use super::sha2::{RsaKeys, Sha2Cache};
use super::stream::{NetStream, TlsInfo};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use shardgate_config::{PasswordHash, Sha2Hash};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What the client told us in the handshake, after authentication succeeded.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub connection_id: u32,
    pub user: String,
    pub database: Option<String>,
    pub capabilities: u32,
    pub charset: u8,
    pub peer: SocketAddr,
    pub attributes: Vec<(String, String)>,
    /// What TLS negotiated, or `None` on a plain connection.
    pub tls: Option<TlsInfo>,
}

/// A stored account, as the service looks it up for authentication.
#[derive(Debug, Clone)]
pub struct Account {
    /// The `mysql_native_password` hash.
    pub password: PasswordHash,
    /// The `caching_sha2_password` hash (None: such clients are switched to native).
    pub sha2: Option<Sha2Hash>,
    pub hosts: Vec<String>,
    /// Refuse this account on plain connections.
    pub require_tls: bool,
}

impl Account {
    /// Whether a client at `ip` may use this account: `%` is anyone, `localhost` is
    /// loopback, anything else must equal the address.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.hosts.iter().any(|h| {
            h == "%"
                || (h == "localhost" && ip.is_loopback())
                || h.parse::<std::net::IpAddr>()
                    .map(|a| a == ip)
                    .unwrap_or(false)
        })
    }
}

/// Connection-wide settings and the factory of per-connection handlers.
pub trait Service: Send + Sync + 'static {
    type Handler: Handler;
    /// The version string in the greeting.
    fn server_version(&self) -> String;
    /// Largest packet accepted from clients.
    fn max_allowed_packet(&self) -> usize;
    fn handshake_timeout(&self) -> Duration;
    /// Longest a write to the client may block before the connection is cut.
    fn write_timeout(&self) -> Option<Duration> {
        None
    }
    /// Counts a handler that panicked (the connection was closed).
    fn count_panic(&self) {}
    /// Looks up an account by user name.
    fn account(&self, user: &str) -> Option<Account>;
    /// The TLS acceptor for a new connection (None: CLIENT_SSL is not offered).
    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        None
    }
    /// Refuse logins on plain connections with error 3159.
    fn require_secure_transport(&self) -> bool {
        false
    }
    /// The RSA key pair for `caching_sha2_password` on plain connections.
    fn rsa_keys(&self) -> Option<&RsaKeys> {
        None
    }
    /// Whether an RSA key pair is being generated (login waits for it a little).
    fn rsa_pending(&self) -> bool {
        false
    }
    /// Users that completed a `caching_sha2_password` full authentication (None: the fast
    /// path is never taken).
    fn sha2_cache(&self) -> Option<&Sha2Cache> {
        None
    }
    /// Counts a successful login by plugin and path (see [`super::login::AuthPath`]).
    fn count_auth(&self, _plugin: &'static str, _path: &'static str) {}
    /// Counts a refused login (access denied).
    fn count_auth_failure(&self) {}
    /// Failed logins per address, to slow down password guessing (None: never slowed).
    fn login_delays(&self) -> Option<&super::delays::LoginDelays> {
        None
    }
    /// Counts a login over TLS.
    fn count_tls(&self) {}
    /// Creates the session after authentication; an error (unknown database, ...) is sent
    /// to the client and the connection closed.
    fn start(&self, info: ClientInfo) -> Result<Self::Handler, ErrPacket>;
}

/// Outcome of a handler call: `Err` means the client connection is unusable (I/O failed).
pub type HandlerResult = Result<(), PacketError>;

/// Handles the commands of one authenticated client. Each method must answer through
/// `out` (exactly one response, which may be several result sets for multi-statements).
pub trait Handler: Send + 'static {
    fn query(
        &mut self,
        sql: Bytes,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    fn init_db(
        &mut self,
        db: &str,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    fn field_list(
        &mut self,
        table: &str,
        wildcard: &str,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    fn prepare(
        &mut self,
        sql: Bytes,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    /// COM_STMT_EXECUTE: `payload` is the whole command after the command byte.
    fn execute(
        &mut self,
        payload: Bytes,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    /// COM_STMT_FETCH (cursor reads).
    fn fetch(
        &mut self,
        payload: Bytes,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    /// COM_STMT_SEND_LONG_DATA: no response is sent.
    fn send_long_data(&mut self, statement_id: u32, param: u16, data: &[u8]);
    /// COM_STMT_CLOSE: no response is sent.
    fn close_statement(&mut self, statement_id: u32) -> impl Future<Output = ()> + Send;
    fn reset_statement(
        &mut self,
        statement_id: u32,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    fn reset_connection(
        &mut self,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    /// COM_SET_OPTION: multi-statements turned on or off.
    fn set_multi_statements(&mut self, on: bool);
    fn ping(&mut self, out: &mut Responder<'_>) -> impl Future<Output = HandlerResult> + Send;
    fn kill(
        &mut self,
        id: u32,
        out: &mut Responder<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;
    /// The COM_STATISTICS answer.
    fn statistics(&self) -> String;
    /// Server status flags for packets the connection writes itself.
    fn status(&self) -> u16;
    /// The connection is over (COM_QUIT, disconnect, shutdown): release everything.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// A command panicked: the handler's state cannot be trusted. Release what it holds
    /// without reusing any of it (backend connections closed, not pooled).
    fn abort(&mut self);
    /// Turns true when the connection must close between commands (KILL CONNECTION).
    fn close_signal(&self) -> Option<watch::Receiver<bool>> {
        None
    }
    /// How long the client may stay silent between commands (None: forever). Sessions
    /// idle inside a transaction are limited, so they cannot hold locks and backend
    /// connections forever.
    fn idle_limit(&self) -> Option<Duration> {
        None
    }
    /// The client stayed silent past [`Handler::idle_limit`]: undo what is open. The
    /// error returned is sent to the client before the connection closes.
    fn idle_expired(&mut self) -> impl Future<Output = ErrPacket> + Send {
        async {
            ErrPacket::new(
                4031,
                "HY000",
                "The client was disconnected by the server because of inactivity",
            )
        }
    }
}

/// Serves one client until it quits, fails, or `shutdown` turns true between commands.
pub async fn serve<S: Service>(
    service: &S,
    stream: TcpStream,
    connection_id: u32,
    shutdown: watch::Receiver<bool>,
) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(
        service.handshake_timeout(),
        AssertUnwindSafe(handshake(service, stream, connection_id, peer)).catch_unwind(),
    )
    .await;
    let (mut io, mut handler, mut capabilities) = match handshake {
        Ok(Ok(Some((io, h, caps)))) => (io, h, Caps(caps)),
        Ok(Err(_)) => {
            tracing::error!(%peer, "the handshake panicked; closing the connection");
            service.count_panic();
            return;
        }
        Ok(Ok(None)) => return,
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    let max = service.max_allowed_packet();
    io.set_write_timeout(service.write_timeout());
    let mut panicked = false;
    // One future for the whole connection: re-arming a watch per command costs more than
    // the command itself on the fast path.
    let killed = handler.close_signal();
    let stop = async move {
        match killed {
            Some(k) => {
                tokio::select! {
                    _ = wait_shutdown(shutdown) => {}
                    _ = wait_shutdown(k) => {}
                }
            }
            None => wait_shutdown(shutdown).await,
        }
    };
    tokio::pin!(stop);
    loop {
        io.set_seq(0);
        let idle = handler.idle_limit();
        let packet = tokio::select! {
            biased;
            _ = &mut stop => {
                break;
            }
            p = io.read_packet(max) => p,
            _ = idle_timer(idle) => {
                let err = handler.idle_expired().await;
                // Numbered as the answer to the client's next command (which it reads
                // after sending one), so drivers report this error, not a protocol one.
                io.set_seq(1);
                Responder::new(&mut io, capabilities.0).error(&err);
                let _ = io.flush().await;
                break;
            }
        };
        let packet = match packet {
            Ok(p) => p,
            Err(PacketError::TooLarge { size, max }) => {
                tracing::info!(%peer, size, max, "client packet over max_allowed_packet");
                let mut out = Responder::new(&mut io, capabilities.0);
                out.error(&ErrPacket::new(
                    1153,
                    "08S01",
                    "Got a packet bigger than 'max_allowed_packet' bytes",
                ));
                // Let the client read the error: closing with its packet still unread
                // would reset the connection and lose the message.
                let _ = io.flush().await;
                io.drain(Duration::from_secs(2), 1 << 30).await;
                break;
            }
            Err(PacketError::OutOfOrder { .. }) => {
                let mut out = Responder::new(&mut io, capabilities.0);
                out.error(&ErrPacket::new(1156, "08S01", "Got packets out of order"));
                break;
            }
            Err(_) => break,
        };
        // A bug in one command must not take the proxy (or other sessions) down: the
        // panic is caught here, this connection is closed and its state dropped unused.
        let outcome = AssertUnwindSafe(dispatch(&mut handler, &mut io, &mut capabilities, packet))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => break,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%peer, connection_id, panic = %what, "a command panicked; closing the connection");
                service.count_panic();
                panicked = true;
                let mut out = Responder::new(&mut io, capabilities.0);
                out.error(&ErrPacket::new(
                    1105,
                    "HY000",
                    "shardgate internal error: the proxy hit a bug while running this command; the connection is closed (other sessions are not affected)",
                ));
                break;
            }
        }
        if io.flush().await.is_err() {
            break;
        }
    }
    if panicked {
        handler.abort();
    } else {
        handler.close().await;
    }
    io.shutdown().await;
}

/// The capabilities negotiated at handshake, tracked because COM_SET_OPTION changes them.
struct Caps(u32);

/// Sleeps for `limit` (forever when None).
async fn idle_timer(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn wait_shutdown(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // The server dropped the sender: never shut down on its account.
            std::future::pending::<()>().await;
        }
    }
}

/// Handles one command. `Ok(false)` ends the connection.
async fn dispatch<H: Handler>(
    handler: &mut H,
    io: &mut PacketIo<NetStream>,
    caps: &mut Caps,
    packet: Bytes,
) -> Result<bool, PacketError> {
    let Some(&command) = packet.first() else {
        return Ok(false);
    };
    let body = packet.slice(1..);
    let mut out = Responder::new(io, caps.0);
    let malformed = |out: &mut Responder<'_>| {
        out.error(&ErrPacket::new(1047, "08S01", "Malformed command packet"));
    };
    match command {
        COM_QUIT => return Ok(false),
        COM_QUERY => handler.query(body, &mut out).await?,
        COM_INIT_DB => {
            let db = String::from_utf8_lossy(&body).into_owned();
            handler.init_db(&db, &mut out).await?
        }
        COM_FIELD_LIST => {
            let mut r = Reader::new(&body);
            let table = String::from_utf8_lossy(r.nul_bytes_or_rest()).into_owned();
            let wildcard = String::from_utf8_lossy(r.rest()).into_owned();
            handler.field_list(&table, &wildcard, &mut out).await?
        }
        COM_PING => handler.ping(&mut out).await?,
        COM_STATISTICS => {
            let s = handler.statistics();
            out.raw(s.as_bytes());
        }
        COM_STMT_PREPARE => handler.prepare(body, &mut out).await?,
        COM_STMT_EXECUTE => handler.execute(body, &mut out).await?,
        COM_STMT_FETCH => handler.fetch(body, &mut out).await?,
        COM_STMT_SEND_LONG_DATA => {
            let mut r = Reader::new(&body);
            if let (Ok(id), Ok(param)) = (r.u32(), r.u16()) {
                handler.send_long_data(id, param, r.rest());
            }
            return Ok(true);
        }
        COM_STMT_CLOSE => {
            if let Ok(id) = Reader::new(&body).u32() {
                handler.close_statement(id).await;
            }
            return Ok(true);
        }
        COM_STMT_RESET => match Reader::new(&body).u32() {
            Ok(id) => handler.reset_statement(id, &mut out).await?,
            Err(_) => malformed(&mut out),
        },
        COM_RESET_CONNECTION => handler.reset_connection(&mut out).await?,
        COM_SET_OPTION => match Reader::new(&body).u16() {
            Ok(option @ (0 | 1)) => {
                let on = option == 0;
                if on {
                    caps.0 |= CLIENT_MULTI_STATEMENTS;
                } else {
                    caps.0 &= !CLIENT_MULTI_STATEMENTS;
                }
                handler.set_multi_statements(on);
                let status = handler.status();
                out.eof(status, 0);
            }
            Ok(_) => out.error(&ErrPacket::new(
                1047,
                "08S01",
                "Unknown COM_SET_OPTION value",
            )),
            Err(_) => malformed(&mut out),
        },
        COM_PROCESS_KILL => match Reader::new(&body).u32() {
            Ok(id) => handler.kill(id, &mut out).await?,
            Err(_) => malformed(&mut out),
        },
        _ => {
            out.error(&ErrPacket::new(
                1047,
                "08S01",
                format!("Unknown command (0x{command:02x}) for shardgate"),
            ));
        }
    }
    if !out.replied() {
        let mut out = Responder::new(io, caps.0);
        out.error(&ErrPacket::new(
            1105,
            "HY000",
            "shardgate internal error: no response was produced",
        ));
    }
    Ok(true)
}

/// The payload of a bare OK, for callers that need one without a responder.
pub fn ok_payload(status: u16) -> BytesMut {
    let mut b = BytesMut::new();
    OkPacket {
        status,
        ..OkPacket::default()
    }
    .encode(0, &mut b);
    b
}
