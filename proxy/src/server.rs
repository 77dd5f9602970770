//! The MySQL listener: accepts clients, enforces the connection limit, and shuts down
//! gracefully (stop accepting, let running statements finish within the deadline, close).

use crate::context::Context;
use crate::security::Security;
use crate::session::Session;
use crate::wire::sha2::{RsaKeys, Sha2Cache};
use crate::wire::{self, Account, ClientInfo, ErrPacket, PacketIo, Service};
use shardgate_config::{PasswordHash, Sha2Hash};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The wire-layer service backed by a proxy [`Context`].
pub struct ProxyService {
    pub ctx: Arc<Context>,
    /// TLS and `caching_sha2_password` state.
    pub security: Arc<Security>,
}

impl Service for ProxyService {
    type Handler = Session;

    fn server_version(&self) -> String {
        self.ctx.server_version.lock().unwrap().clone()
    }

    fn max_allowed_packet(&self) -> usize {
        self.ctx.config.proxy.max_allowed_packet as usize
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.ctx.config.proxy.handshake_timeout_ms)
    }

    fn write_timeout(&self) -> Option<Duration> {
        let ms = self.ctx.config.proxy.write_timeout_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    fn count_panic(&self) {
        self.ctx.metrics.session_panics_total.inc();
    }

    fn account(&self, user: &str) -> Option<Account> {
        let u = self.ctx.user(user)?;
        let sha2 = Sha2Hash::parse(&u.caching_sha2_hash).ok().flatten();
        if sha2.is_some() {
            // Users added in etcd may be the first to need the RSA key.
            self.security.want_rsa();
        }
        Some(Account {
            // Validated at load: a hash that does not parse cannot be here. Should one
            // ever, it must lock the account, not open it.
            password: PasswordHash::parse(&u.password_hash)
                .unwrap_or(PasswordHash::DoubleSha1([0; 20])),
            sha2,
            hosts: u.hosts.clone(),
            require_tls: u.require_tls,
        })
    }

    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.security.acceptor()
    }

    fn require_secure_transport(&self) -> bool {
        self.security.require_secure_transport
    }

    fn rsa_keys(&self) -> Option<&RsaKeys> {
        self.security.rsa()
    }

    fn rsa_pending(&self) -> bool {
        self.security.rsa_pending()
    }

    fn sha2_cache(&self) -> Option<&Sha2Cache> {
        Some(&self.security.sha2_cache)
    }

    fn count_auth(&self, plugin: &'static str, path: &'static str) {
        self.ctx
            .metrics
            .auth_total
            .with_label_values(&[plugin, path])
            .inc();
    }

    fn count_tls(&self) {
        self.ctx.metrics.tls_connections_total.inc();
    }

    fn count_auth_failure(&self) {
        self.ctx.metrics.auth_failures_total.inc();
    }

    fn login_delays(&self) -> Option<&crate::wire::delays::LoginDelays> {
        Some(&self.security.login_delays)
    }

    fn start(&self, info: ClientInfo) -> Result<Session, ErrPacket> {
        Session::start(self.ctx.clone(), info)
    }
}

/// One accepted client connection, counted until its task ends however it ends.
struct LiveConnection {
    live: Arc<std::sync::atomic::AtomicUsize>,
    ctx: Arc<Context>,
}

impl LiveConnection {
    fn new(live: &Arc<std::sync::atomic::AtomicUsize>, ctx: &Arc<Context>) -> LiveConnection {
        live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctx.metrics.connections_current.inc();
        LiveConnection {
            live: live.clone(),
            ctx: ctx.clone(),
        }
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.ctx.metrics.connections_current.dec();
    }
}

/// Serves clients on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<Context>,
    security: Arc<Security>,
    shutdown: impl Future<Output = ()>,
) {
    let service = Arc::new(ProxyService {
        ctx: ctx.clone(),
        security,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let max = ctx.config.proxy.max_connections as usize;
    // Every accepted connection counts, from accept to close, the handshake included (a
    // crowd of clients that never log in must not exhaust memory or file descriptors).
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if live.load(std::sync::atomic::Ordering::SeqCst) >= max {
            ctx.metrics.connections_refused.inc();
            tracing::warn!(%peer, max, "refusing connection: proxy.max_connections reached");
            tasks.spawn(async move {
                let mut io = PacketIo::new(stream);
                io.write_packet(&{
                    let mut b = bytes::BytesMut::new();
                    ErrPacket::new(1040, "08004", "Too many connections").encode(&mut b);
                    b
                });
                io.shutdown().await;
            });
            continue;
        }
        let id = ctx.registry.next_id();
        let service = service.clone();
        let rx = stop_rx.clone();
        ctx.metrics.connections_total.inc();
        let guard = LiveConnection::new(&live, &ctx);
        tasks.spawn(async move {
            let _guard = guard;
            wire::serve(&*service, stream, id, rx).await;
        });
    }
    drop(listener);
    let deadline = Duration::from_millis(ctx.config.proxy.shutdown_timeout_ms);
    tracing::info!(
        sessions = tasks.len(),
        deadline_ms = deadline.as_millis() as u64,
        "shutting down: no new connections; waiting for running statements"
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "shutdown deadline passed; closing remaining connections"
        );
        tasks.shutdown().await;
    }
    tracing::info!("all client connections closed");
}
