//! The connection phase: greeting, optional TLS upgrade (SSLRequest), handshake response,
//! and authentication with `mysql_native_password` or `caching_sha2_password`.
//!
//! The greeting offers CLIENT_SSL only when the service has a certificate. The first
//! client packet is read straight from the socket, byte-exact, so that a TLS ClientHello
//! sent right behind the SSLRequest is left for the TLS layer. Refusals follow MySQL's
//! errors: 1043 bad handshake, 3159 insecure transport under `require_secure_transport`,
//! 1045 access denied (also for a `require_tls` user on a plain connection).

use super::auth::{new_scramble, verify_native, NATIVE_PASSWORD};
use super::conn::{Account, ClientInfo, Handler, Service};
use super::consts::*;
use super::handshake::{encode_auth_switch, Greeting, HandshakeResponse};
use super::packet::PacketIo;
use super::packets::{ErrPacket, OkPacket};
use super::responder::Responder;
use super::sha2::{
    verify_password, verify_scramble, CACHING_SHA2_PASSWORD, FAST_AUTH_SUCCESS,
    PERFORM_FULL_AUTHENTICATION, REQUEST_PUBLIC_KEY,
};
use super::stream::NetStream;
use bytes::BufMut;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest handshake response accepted (attributes included).
const MAX_HANDSHAKE_PACKET: usize = 1 << 20;
/// Largest packet accepted later in authentication (passwords, RSA ciphertexts).
const MAX_AUTH_PACKET: usize = 1 << 16;

/// How a login was authenticated: the plugin and the path, as counted in
/// `shardgate_auth_total{plugin,path}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPath {
    pub plugin: &'static str,
    /// `scramble` (native), `fast` (caching_sha2 cache hit), `full_tls` (password over
    /// TLS) or `full_rsa` (password encrypted with the server's RSA key).
    pub path: &'static str,
}

/// Runs the connection phase. `None` when the client was refused (already told why, and
/// the connection shut down) or went away.
pub(super) async fn handshake<S: Service>(
    service: &S,
    tcp: TcpStream,
    connection_id: u32,
    peer: SocketAddr,
) -> Option<(PacketIo<NetStream>, S::Handler, u32)> {
    let scramble = new_scramble();
    let tls = service.tls();
    let offered = SERVER_CAPABILITIES | if tls.is_some() { CLIENT_SSL } else { 0 };
    let greeting = Greeting {
        server_version: service.server_version(),
        connection_id,
        scramble: scramble.to_vec(),
        capabilities: offered,
        charset: CHARSET_UTF8MB4_GENERAL_CI as u8,
        status: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.to_string(),
    };
    let mut first = PacketIo::new(tcp);
    let at = first.begin_packet();
    greeting.encode(first.buf());
    first.finish_packet(at);
    first.flush().await.ok()?;
    let mut tcp = first.into_inner()?;
    let payload = read_first_packet(&mut tcp).await.ok()?;

    let (mut io, payload, secure) = if HandshakeResponse::is_ssl_request(&payload) {
        let Some(acceptor) = tls else {
            let mut io = PacketIo::new(NetStream::Plain(tcp));
            io.set_seq(2);
            refuse(
                &mut io,
                ErrPacket::new(
                    1043,
                    "08S01",
                    "Bad handshake: SSL was not offered (shardgate has no tls.cert_file)",
                ),
            )
            .await;
            return None;
        };
        let stream = match acceptor.accept(tcp).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%peer, error = %e, "TLS handshake with a client failed");
                return None;
            }
        };
        let mut io = PacketIo::new(NetStream::Tls(Box::new(tokio_rustls::TlsStream::Server(
            stream,
        ))));
        io.set_seq(2);
        let payload = io.read_packet(MAX_HANDSHAKE_PACKET).await.ok()?.to_vec();
        (io, payload, true)
    } else {
        let mut io = PacketIo::new(NetStream::Plain(tcp));
        io.set_seq(2);
        (io, payload, false)
    };

    if !secure && service.require_secure_transport() {
        tracing::info!(%peer, "refused a plain connection: require_secure_transport");
        refuse(
            &mut io,
            ErrPacket::new(
                3159,
                "HY000",
                "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
            ),
        )
        .await;
        return None;
    }
    let Ok(response) = HandshakeResponse::decode(&payload) else {
        refuse(&mut io, ErrPacket::new(1043, "08S01", "Bad handshake")).await;
        return None;
    };
    let capabilities = response.capabilities & SERVER_CAPABILITIES;
    let account = service.account(&response.user);
    let outcome = authenticate(
        service,
        &mut io,
        &response,
        capabilities,
        account.as_ref(),
        &scramble,
        secure,
        peer,
    )
    .await?;
    let path = match outcome {
        Ok(path) if account.as_ref().is_some_and(|a| a.require_tls && !secure) => {
            tracing::info!(%peer, user = %response.user, plugin = path.plugin, "access denied: the user requires TLS");
            Err(true)
        }
        other => other,
    };
    let path = match path {
        Ok(p) => p,
        Err(using_password) => {
            service.count_auth_failure();
            let delay = service
                .login_delays()
                .map(|d| d.failed(peer.ip()))
                .unwrap_or_default();
            tracing::info!(%peer, user = %response.user, delay_ms = delay.as_millis() as u64, "access denied");
            if !delay.is_zero() {
                // Repeated failures from this address: answer later (password guessing).
                tokio::time::sleep(delay).await;
            }
            let err = ErrPacket::new(
                1045,
                "28000",
                format!(
                    "Access denied for user '{}'@'{}' (using password: {})",
                    response.user,
                    peer.ip(),
                    if using_password { "YES" } else { "NO" }
                ),
            );
            refuse(&mut io, err).await;
            return None;
        }
    };
    service.count_auth(path.plugin, path.path);
    if let Some(d) = service.login_delays() {
        d.succeeded(peer.ip());
    }
    let tls_info = io.get_ref().tls_info();
    if tls_info.is_some() {
        service.count_tls();
    }
    let info = ClientInfo {
        connection_id,
        user: response.user.clone(),
        database: response.database.clone(),
        capabilities,
        charset: response.charset,
        peer,
        attributes: response.attributes,
        tls: tls_info,
    };
    let handler = match service.start(info) {
        Ok(h) => h,
        Err(e) => {
            refuse(&mut io, e).await;
            return None;
        }
    };
    let mut out = Responder::new(&mut io, capabilities);
    out.ok(&OkPacket {
        status: handler.status(),
        ..OkPacket::default()
    });
    io.flush().await.ok()?;
    Some((io, handler, capabilities))
}

/// Sends `err` and shuts the connection down.
async fn refuse(io: &mut PacketIo<NetStream>, err: ErrPacket) {
    let mut out = Responder::new(io, CLIENT_PROTOCOL_41);
    out.error(&err);
    io.shutdown().await;
}

/// Reads the client's first packet (sequence id 1) without reading past it.
async fn read_first_packet(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if header[3] != 1 || len > MAX_HANDSHAKE_PACKET {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad first client packet",
        ));
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Checks the client's credentials. `None`: the connection failed; `Some(Err(using
/// password))`: access denied.
#[allow(clippy::too_many_arguments)]
async fn authenticate<S: Service>(
    service: &S,
    io: &mut PacketIo<NetStream>,
    response: &HandshakeResponse,
    capabilities: u32,
    account: Option<&Account>,
    scramble: &[u8; 20],
    secure: bool,
    peer: SocketAddr,
) -> Option<Result<AuthPath, bool>> {
    let plugin = response.auth_plugin.as_deref().unwrap_or(NATIVE_PASSWORD);
    let allowed = account.is_some_and(|a| a.allows(peer.ip()));
    let sha2 = account.and_then(|a| a.sha2);
    if let (true, Some(stored)) = (plugin == CACHING_SHA2_PASSWORD && allowed, sha2) {
        return sha2_login(service, io, response, &stored, scramble, secure).await;
    }
    let mut answer = response.auth_response.clone();
    if plugin != NATIVE_PASSWORD && capabilities & CLIENT_PLUGIN_AUTH != 0 {
        // Clients that start with another plugin (MySQL 8's caching_sha2_password for an
        // account without a SHA256 hash) are asked for mysql_native_password instead.
        let at = io.begin_packet();
        encode_auth_switch(io.buf(), NATIVE_PASSWORD, scramble);
        io.finish_packet(at);
        io.flush().await.ok()?;
        answer = io.read_packet(MAX_AUTH_PACKET).await.ok()?.to_vec();
    }
    let ok = allowed && account.is_some_and(|a| verify_native(&a.password, scramble, &answer));
    Some(if ok {
        Ok(AuthPath {
            plugin: NATIVE_PASSWORD,
            path: "scramble",
        })
    } else {
        Err(!answer.is_empty())
    })
}

/// `caching_sha2_password` for an account with a SHA256 hash: the fast path when the user
/// is cached, full authentication otherwise.
async fn sha2_login<S: Service>(
    service: &S,
    io: &mut PacketIo<NetStream>,
    response: &HandshakeResponse,
    stored: &shardgate_config::Sha2Hash,
    scramble: &[u8; 20],
    secure: bool,
) -> Option<Result<AuthPath, bool>> {
    let mut answer = response.auth_response.clone();
    if answer.is_empty() {
        // Clients whose default plugin differs from the greeting's send no scramble answer
        // (libmariadb with --default-auth=caching_sha2_password): ask again, naming the
        // plugin, as MySQL does. An account with this hash always has a password.
        let at = io.begin_packet();
        encode_auth_switch(io.buf(), CACHING_SHA2_PASSWORD, scramble);
        io.finish_packet(at);
        io.flush().await.ok()?;
        answer = io.read_packet(MAX_AUTH_PACKET).await.ok()?.to_vec();
        if answer.is_empty() {
            return Some(Err(false));
        }
    }
    let path = |p: &'static str| AuthPath {
        plugin: CACHING_SHA2_PASSWORD,
        path: p,
    };
    let cache = service.sha2_cache();
    if cache.is_some_and(|c| c.contains(&response.user, stored)) {
        if !verify_scramble(stored, scramble, &answer) {
            return Some(Err(true));
        }
        more_data(io, &[FAST_AUTH_SUCCESS]);
        return Some(Ok(path("fast")));
    }
    more_data(io, &[PERFORM_FULL_AUTHENTICATION]);
    io.flush().await.ok()?;
    let mut packet = io.read_packet(MAX_AUTH_PACKET).await.ok()?;
    let (password, how) = if secure {
        // The password in clear, NUL-terminated (some clients omit the NUL).
        let p = packet.strip_suffix(&[0]).unwrap_or(&packet).to_vec();
        (Some(p), "full_tls")
    } else {
        // A key generated for a user just added (see `Security::want_rsa`) may take a
        // moment more.
        let mut waited = 0;
        while service.rsa_keys().is_none() && service.rsa_pending() && waited < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            waited += 1;
        }
        let Some(keys) = service.rsa_keys() else {
            tracing::warn!(user = %response.user, "caching_sha2_password full authentication on a plain connection, but no RSA key");
            return Some(Err(true));
        };
        if packet[..] == [REQUEST_PUBLIC_KEY] {
            let mut data = Vec::with_capacity(keys.public_pem().len() + 1);
            data.put_u8(1);
            data.extend_from_slice(keys.public_pem().as_bytes());
            let at = io.begin_packet();
            io.buf().extend_from_slice(&data);
            io.finish_packet(at);
            io.flush().await.ok()?;
            packet = io.read_packet(MAX_AUTH_PACKET).await.ok()?;
        }
        // Anything else than a ciphertext (a password sent in clear on a plain
        // connection) does not decrypt and is refused, as MySQL does.
        (keys.decrypt_password(&packet, scramble), "full_rsa")
    };
    match password {
        Some(p) if verify_password(stored, &p) => {
            if let Some(c) = cache {
                c.insert(&response.user, stored);
            }
            Some(Ok(path(how)))
        }
        _ => Some(Err(true)),
    }
}

/// Buffers an AuthMoreData packet (0x01 then `data`).
fn more_data(io: &mut PacketIo<NetStream>, data: &[u8]) {
    let at = io.begin_packet();
    io.buf().put_u8(1);
    io.buf().extend_from_slice(data);
    io.finish_packet(at);
}
