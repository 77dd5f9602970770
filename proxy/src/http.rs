//! The HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/status` (JSON) and `/` (a
//! status page for operators: topology in use, last topology error, pools, sessions).

use crate::context::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves HTTP until the task is dropped.
pub async fn run(listener: TcpListener, ctx: Arc<Context>) {
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status_json))
        .with_state(ctx);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "http server stopped");
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    ctx.metrics
        .fenced
        .set(ctx.fenced.load(std::sync::atomic::Ordering::SeqCst) as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render() + &pool_metrics(&ctx),
    )
}

fn pool_metrics(ctx: &Context) -> String {
    use crate::backend::pool::WAIT_BUCKETS;
    use std::sync::atomic::Ordering;
    let mut s = String::new();
    // Pools are keyed by client options too; the series are per shard server.
    let mut per_shard: std::collections::BTreeMap<(String, String), (usize, usize)> =
        Default::default();
    for (k, p) in ctx.backends.pools() {
        let e = per_shard
            .entry((k.addr.clone(), k.database.clone()))
            .or_default();
        e.0 += p.in_use();
        e.1 += p.idle_count();
    }
    for (name, help, pick) in [
        (
            "backend_connections_in_use",
            "Backend connections lent out, by shard server.",
            (|v: &(usize, usize)| v.0) as fn(&(usize, usize)) -> usize,
        ),
        (
            "backend_connections_idle",
            "Idle pooled backend connections, by shard server.",
            |v: &(usize, usize)| v.1,
        ),
    ] {
        let _ = writeln!(
            s,
            "# HELP shardgate_{name} {help}\n# TYPE shardgate_{name} gauge"
        );
        for ((addr, db), v) in &per_shard {
            let _ = writeln!(
                s,
                "shardgate_{name}{{backend=\"{addr}\",database=\"{db}\"}} {}",
                pick(v)
            );
        }
    }
    let limits = ctx.backends.limits();
    let _ = writeln!(
        s,
        "# HELP shardgate_backend_pool_wait_seconds How long statements waited for a backend connection when every connection of the shard was busy, by shard server.\n# TYPE shardgate_backend_pool_wait_seconds histogram"
    );
    for ((addr, db), l) in &limits {
        let labels = format!("backend=\"{addr}\",database=\"{db}\"");
        let mut cumulative = 0;
        for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
            cumulative += l.wait_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                s,
                "shardgate_backend_pool_wait_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = l.waits.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "shardgate_backend_pool_wait_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "shardgate_backend_pool_wait_seconds_sum{{{labels}}} {}",
            l.wait_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "shardgate_backend_pool_wait_seconds_count{{{labels}}} {count}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP shardgate_backend_pool_wait_timeouts_total Waits for a backend connection that gave up after backend.pool_wait_ms (error 1040), by shard server.\n# TYPE shardgate_backend_pool_wait_timeouts_total counter"
    );
    for ((addr, db), l) in &limits {
        let _ = writeln!(
            s,
            "shardgate_backend_pool_wait_timeouts_total{{backend=\"{addr}\",database=\"{db}\"}} {}",
            l.wait_timeouts.load(Ordering::Relaxed)
        );
    }
    s
}

async fn healthz(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    if ctx.snapshot().keyspaces.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no topology\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

fn status(ctx: &Context) -> serde_json::Value {
    let snap = ctx.snapshot();
    let keyspaces: Vec<serde_json::Value> = snap
        .keyspaces
        .values()
        .map(|k| {
            serde_json::json!({
                "name": k.name,
                "sharded": k.sharded,
                "routing_version": k.routing.version,
                "serving": k.serving.iter().map(|s| serde_json::json!({
                    "shard": s.name, "primary": s.primary, "database": s.database
                })).collect::<Vec<_>>(),
                "tables": k.tables.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "server_version": *ctx.server_version.lock().unwrap(),
        "uptime_s": ctx.started.elapsed().as_secs(),
        "topology_revision": snap.revision,
        "topology_error": *ctx.topology_error.lock().unwrap(),
        "topology_stale": ctx.metrics.topology_stale.get() == 1,
        "sessions": ctx.registry.len(),
        "plan_cache_entries": ctx.plans.len(),
        "keyspaces": keyspaces,
        "proxies": snap.proxies.values().collect::<Vec<_>>(),
        "pools": ctx.backends.pools().iter().map(|(k, p)| serde_json::json!({
            "backend": k.addr, "database": k.database, "in_use": p.in_use(), "idle": p.idle_count(), "shard_open": p.shard_open(),
            "retired": p.is_retired(),
        })).collect::<Vec<_>>(),
    })
}

async fn status_json(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    axum::Json(status(&ctx))
}

async fn page(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let s = status(&ctx);
    let esc = |v: &str| {
        v.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut h = String::from("<!doctype html><html><head><meta charset=utf-8><title>shardgate</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.err{color:#b00}</style></head><body>");
    let _ = write!(
        h,
        "<h1>shardgate</h1><p>version {} &middot; backend {} &middot; up {} s &middot; {} sessions &middot; topology revision {}{}</p>",
        esc(s["version"].as_str().unwrap_or("")),
        esc(s["server_version"].as_str().unwrap_or("")),
        s["uptime_s"],
        s["sessions"],
        s["topology_revision"],
        if s["topology_stale"].as_bool() == Some(true) { " <b class=err>(etcd unreachable: serving the last good topology)</b>" } else { "" },
    );
    if let Some(e) = s["topology_error"].as_str() {
        let _ = write!(
            h,
            "<p class=err><b>Rejected topology change:</b> {}</p>",
            esc(e)
        );
    }
    h.push_str("<h2>Keyspaces</h2><table><tr><th>keyspace</th><th>sharded</th><th>routing version</th><th>serving shards</th></tr>");
    for k in s["keyspaces"].as_array().into_iter().flatten() {
        let shards: Vec<String> = k["serving"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{} ({} / {})",
                    x["shard"].as_str().unwrap_or(""),
                    x["primary"].as_str().unwrap_or(""),
                    x["database"].as_str().unwrap_or("")
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(k["name"].as_str().unwrap_or("")),
            k["sharded"],
            k["routing_version"],
            esc(&shards.join(", "))
        );
    }
    h.push_str("</table><h2>Backend pools</h2><table><tr><th>backend</th><th>database</th><th>in use</th><th>idle</th></tr>");
    for p in s["pools"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p["backend"].as_str().unwrap_or("")),
            esc(p["database"].as_str().unwrap_or("")),
            p["in_use"],
            p["idle"]
        );
    }
    h.push_str("</table><h2>Proxies</h2><table><tr><th>id</th><th>mysql</th><th>applied revision</th></tr>");
    for p in s["proxies"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p["id"].as_str().unwrap_or("")),
            esc(p["mysql_addr"].as_str().unwrap_or("")),
            p["applied_revision"]
        );
    }
    h.push_str("</table><p><a href=/metrics>metrics</a> &middot; <a href=/status>status JSON</a></p></body></html>");
    Html(h)
}
