//! The HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/status` (JSON) and `/` (the
//! status page, see `status.rs`), `/debug/querylog` and `/debug/queries` (see
//! `querylog.rs`).

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
        .route("/debug/querylog", get(querylog))
        .route("/debug/queries", get(query_stats))
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

/// The latest statements, one JSON object per line, oldest first.
async fn querylog(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let mut body = String::new();
    for e in ctx.querylog.latest(usize::MAX) {
        body.push_str(&e.to_json(&ctx.querylog).to_string());
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
}

/// Statistics per statement digest, the most total time first.
async fn query_stats(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    axum::Json(ctx.querylog.stats())
}

async fn healthz(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    if ctx.snapshot().keyspaces.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no topology\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn status_json(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    axum::Json(crate::status::status(&ctx))
}

async fn page(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    Html(crate::status::page(&ctx))
}
