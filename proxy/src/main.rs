//! `shardgate`: the proxy server binary.

use anyhow::Context as _;
use clap::Parser;
use shardgate_config::Config;
use shardgate_proxy::context::Context;
use shardgate_proxy::security::Security;
use shardgate_proxy::{http, server, topo};
use shardgate_topology::docs::ProxyDoc;
use shardgate_topology::Store;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A sharded MySQL proxy. Settings come from --config, then SHARDGATE_* environment
/// variables, then these flags (see docs/configuration.md).
#[derive(Parser, Debug)]
#[command(name = "shardgate", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "SHARDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// MySQL listen address (proxy.listen).
    #[arg(long)]
    listen: Option<String>,
    /// HTTP listen address for metrics and status (proxy.http_listen); "" disables.
    #[arg(long)]
    http_listen: Option<String>,
    /// etcd endpoints, comma-separated (topology.etcd_endpoints).
    #[arg(long)]
    etcd: Option<String>,
    /// Cluster name (topology.cluster).
    #[arg(long)]
    cluster: Option<String>,
    /// Proxy id in etcd (proxy.id).
    #[arg(long)]
    id: Option<String>,
    /// Log format: text or json (log.format).
    #[arg(long)]
    log_format: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn overrides(a: &Args) -> Vec<(String, String)> {
    let mut o = Vec::new();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            o.push((k.to_string(), v.clone()));
        }
    };
    add("proxy.listen", &a.listen);
    add("proxy.http_listen", &a.http_listen);
    add("topology.etcd_endpoints", &a.etcd);
    add("topology.cluster", &a.cluster);
    add("proxy.id", &a.id);
    add("log.format", &a.log_format);
    o
}

fn init_logging(c: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&c.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if c.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides(&args))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    raise_fd_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.proxy.worker_threads > 0 {
        runtime.worker_threads(config.proxy.worker_threads as usize);
    }
    runtime.enable_all().build()?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.users.is_empty() {
        anyhow::bail!("invalid configuration: no [[users]] configured; nobody could log in");
    }
    init_logging(&config);
    // Certificate, key and RSA key first: a bad file stops the start with its name.
    let security = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Security::load(&config))
            .await?
            .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?
    };
    let security = Arc::new(security);
    let store = Store::connect(&config.topology)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cache = (!config.topology.cache_file.is_empty())
        .then(|| PathBuf::from(&config.topology.cache_file));
    tracing::info!(endpoints = ?store.endpoints(), prefix = store.prefix(), "loading topology");
    let (snapshot, from_etcd) = topo::initial_snapshot(&store, cache.as_deref()).await;
    tracing::info!(
        revision = snapshot.revision,
        keyspaces = snapshot.keyspaces.len(),
        from_etcd,
        "topology loaded"
    );

    let listener = TcpListener::bind(&config.proxy.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.proxy.listen))?;
    let http_listener = if config.proxy.http_listen.is_empty() {
        None
    } else {
        Some(
            TcpListener::bind(&config.proxy.http_listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.proxy.http_listen))?,
        )
    };
    let id = config.proxy_id();
    let mysql_addr = listener.local_addr()?.to_string();
    let http_addr = http_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let backend_tls = if config.backend.tls_ca_file.is_empty() {
        None
    } else {
        Some(
            shardgate_proxy::security::backend_client_config(&config.backend.tls_ca_file)
                .map_err(|e| anyhow::anyhow!("backend.tls_ca_file: {e}"))?,
        )
    };
    let ctx = Context::new(config, snapshot, Some(store.clone()));
    if let Some(tls) = backend_tls {
        tracing::info!("backend connections use TLS, verified against backend.tls_ca_file");
        ctx.backends.set_tls(tls);
    }
    ctx.metrics.topology_revision.set(ctx.snapshot().revision);
    probe_backend_version(&ctx).await;

    let registration = ProxyDoc {
        id: id.clone(),
        mysql_addr: mysql_addr.clone(),
        http_addr: http_addr.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_ms: topo::now_ms(),
        lease_ttl_s: ctx.config.topology.lease_ttl_s,
        ..ProxyDoc::default()
    };
    let follower = topo::Follower::new(ctx.clone(), store, cache, registration);
    tokio::spawn(follower.clone().follow(from_etcd));
    tokio::spawn(follower.clone().keep_registered());
    if let Some(l) = http_listener {
        tokio::spawn(http::run(l, ctx.clone()));
    }
    tokio::spawn(shardgate_proxy::deadlock::run(ctx.clone()));
    if !ctx.config.log.query_log_file.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::channel(10_000);
        ctx.querylog.attach_file(tx);
        tokio::spawn(shardgate_proxy::querylog::write_file(
            std::path::PathBuf::from(&ctx.config.log.query_log_file),
            rx,
        ));
    }
    tokio::spawn(shardgate_proxy::session::twopc::recovery_loop(
        ctx.clone(),
        std::time::Duration::from_secs(ctx.config.session.twopc_recovery_interval_s.max(1)),
    ));
    // Know the tables before the first client asks (bounded: shards may be down; the
    // tracker keeps trying).
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        shardgate_proxy::schema::tracker::refresh(&ctx, None),
    )
    .await;
    tokio::spawn(shardgate_proxy::schema::tracker::run(
        ctx.clone(),
        std::time::Duration::from_secs(ctx.config.session.schema_refresh_s.max(1)),
    ));
    let reaper = ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            reaper.backends.reap();
        }
    });
    tracing::info!(id = %id, mysql = %mysql_addr, http = %http_addr, "shardgate is serving");
    let otel = ctx.otel.as_ref().map(|o| o.provider());
    tokio::spawn(reload_on_sighup(ctx.clone(), security.clone()));
    server::run(listener, ctx, security, shutdown_signal()).await;
    follower.deregister().await;
    if let Some(provider) = otel {
        shardgate_proxy::otel::shutdown(provider, std::time::Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Every client and backend connection is a file descriptor: lift the soft limit to the
/// hard one so thousands of clients fit.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Reloads the client TLS certificate on each SIGHUP (a bad file keeps the old one).
async fn reload_on_sighup(ctx: Arc<Context>, security: Arc<Security>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP: the TLS certificate will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the TLS certificate");
        let s = security.clone();
        let result = tokio::task::spawn_blocking(move || s.reload())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(()) => ctx
                .metrics
                .tls_reloads_total
                .with_label_values(&["ok"])
                .inc(),
            Err(e) => {
                ctx.metrics
                    .tls_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous certificate");
            }
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

/// Connects once to a serving shard to learn the backends' version for the greeting.
async fn probe_backend_version(ctx: &Arc<Context>) {
    let snapshot = ctx.snapshot();
    for ks in snapshot.keyspaces.values() {
        if let Some(shard) = ks.serving.first() {
            let pool = ctx.backends.pool(shard, 45, 0);
            if let Ok(Ok(conn)) =
                tokio::time::timeout(std::time::Duration::from_secs(3), pool.get()).await
            {
                ctx.learn_backend_version(&conn.server_version);
                tracing::info!(version = %conn.server_version, "backend version");
                return;
            }
        }
    }
    tracing::warn!(
        "no backend reachable at start; the greeting uses a default version until one is"
    );
}
