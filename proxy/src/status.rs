//! The status document (`/status`) and the status page (`/`) built from it: topology and
//! fencing state, keyspaces, resharding workflows with their progress, sessions with what
//! each runs now, per-shard health and latency, pools, and the other proxies. The page
//! refreshes itself every 5 seconds.

use crate::context::Context;
use std::fmt::Write as _;

/// Latency of one shard from the backend histogram: (statements, average ms, p99 ms as
/// the upper bound of its bucket).
fn shard_latency(ctx: &Context, keyspace: &str, shard: &str) -> (u64, f64, f64) {
    let h = ctx
        .metrics
        .backend_query_duration_seconds
        .with_label_values(&[keyspace, shard]);
    let m = prometheus::core::Metric::metric(&h);
    let hist = m.get_histogram();
    let count = hist.get_sample_count();
    if count == 0 {
        return (0, 0.0, 0.0);
    }
    let avg = hist.get_sample_sum() / count as f64 * 1000.0;
    let want = (count as f64 * 0.99).ceil() as u64;
    let p99 = hist
        .get_bucket()
        .iter()
        .find(|b| b.cumulative_count() >= want)
        .map_or(f64::INFINITY, |b| b.upper_bound() * 1000.0);
    (count, avg, p99)
}

/// The status document.
pub fn status(ctx: &Context) -> serde_json::Value {
    let snap = ctx.snapshot();
    let limits = ctx.backends.limits();
    let keyspaces: Vec<serde_json::Value> = snap
        .keyspaces
        .values()
        .map(|k| {
            serde_json::json!({
                "name": k.name,
                "sharded": k.sharded,
                "routing_version": k.routing.version,
                "workflow": k.routing.workflow,
                "write_buffer": k.routing.write_buffer.is_some(),
                "serving": k.serving.iter().map(|s| {
                    let (count, avg_ms, p99_ms) = shard_latency(ctx, &k.name, &s.name);
                    let limit = limits.iter().find(|((a, d), _)| *a == s.primary && *d == s.database);
                    serde_json::json!({
                        "shard": s.name, "primary": s.primary, "database": s.database,
                        "statements": count, "avg_ms": avg_ms,
                        "p99_ms": if p99_ms.is_finite() { serde_json::json!(p99_ms) } else { serde_json::json!(null) },
                        "open_connections": limit.map(|(_, l)| l.open()),
                        "pool_wait_timeouts": limit.map(|(_, l)| l.wait_timeouts.load(std::sync::atomic::Ordering::Relaxed)),
                    })
                }).collect::<Vec<_>>(),
                "tables": k.tables.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    let workflows: Vec<serde_json::Value> = snap
        .workflows
        .values()
        .map(|w| {
            let (copied, total) = w["tables"]
                .as_object()
                .map(|t| {
                    t.values().fold((0u64, 0u64), |(c, n), p| {
                        let copied = p["rows_copied"].as_u64().unwrap_or(0);
                        (
                            c + copied,
                            n + p["rows_estimate"].as_u64().unwrap_or(0).max(copied),
                        )
                    })
                })
                .unwrap_or((0, 0));
            serde_json::json!({
                "name": w["name"], "keyspace": w["keyspace"], "phase": w["phase"],
                "from": w["from"], "to": w["to"], "message": w["message"],
                "rows_copied": copied, "rows_estimate": total,
            })
        })
        .collect();
    let sessions: Vec<serde_json::Value> = ctx
        .registry
        .processlist()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "user": r.user, "host": r.host, "keyspace": r.db,
                "state": r.command, "time_s": r.time_s, "statement": r.info,
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
        "fenced": ctx.fenced.load(std::sync::atomic::Ordering::SeqCst),
        "session_count": sessions.len(),
        "sessions": sessions,
        "plan_cache_entries": ctx.plans.len(),
        "keyspaces": keyspaces,
        "workflows": workflows,
        "proxies": snap.proxies.values().collect::<Vec<_>>(),
        "pools": ctx.backends.pools().iter().map(|(k, p)| serde_json::json!({
            "backend": k.addr, "database": k.database, "in_use": p.in_use(), "idle": p.idle_count(), "shard_open": p.shard_open(),
            "retired": p.is_retired(),
        })).collect::<Vec<_>>(),
    })
}

fn esc(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => esc(s),
        serde_json::Value::Null => String::new(),
        other => esc(&other.to_string()),
    }
}

/// A table of `rows` under `heading`, with the given columns.
fn table(h: &mut String, heading: &str, columns: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(h, "<h2>{heading}</h2><table><tr>");
    for c in columns {
        let _ = write!(h, "<th>{c}</th>");
    }
    h.push_str("</tr>");
    for r in rows {
        h.push_str("<tr>");
        for cell in r {
            let _ = write!(h, "<td>{cell}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// The status page (HTML).
pub fn page(ctx: &Context) -> String {
    let s = status(ctx);
    let mut h = String::from("<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5><title>shardgate</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.err{color:#b00}</style></head><body>");
    let _ = write!(
        h,
        "<h1>shardgate</h1><p>version {} &middot; backend {} &middot; up {} s &middot; {} sessions &middot; topology revision {}{}{}</p>",
        text(&s["version"]),
        text(&s["server_version"]),
        s["uptime_s"],
        s["session_count"],
        s["topology_revision"],
        if s["topology_stale"].as_bool() == Some(true) { " <b class=err>(etcd unreachable: serving the last good topology)</b>" } else { "" },
        if s["fenced"].as_bool() == Some(true) { " <b class=err>(fenced: registration lost, writes under workflows held)</b>" } else { "" },
    );
    if let Some(e) = s["topology_error"].as_str() {
        let _ = write!(
            h,
            "<p class=err><b>Rejected topology change:</b> {}</p>",
            esc(e)
        );
    }
    let mut shard_rows = Vec::new();
    let mut ks_rows = Vec::new();
    for k in s["keyspaces"].as_array().into_iter().flatten() {
        ks_rows.push(vec![
            text(&k["name"]),
            text(&k["sharded"]),
            text(&k["routing_version"]),
            text(&k["workflow"]),
            if k["write_buffer"].as_bool() == Some(true) {
                "<b>holding writes</b>".into()
            } else {
                String::new()
            },
        ]);
        for x in k["serving"].as_array().into_iter().flatten() {
            shard_rows.push(vec![
                format!("{}/{}", text(&k["name"]), text(&x["shard"])),
                format!("{} / {}", text(&x["primary"]), text(&x["database"])),
                text(&x["statements"]),
                format!("{:.2}", x["avg_ms"].as_f64().unwrap_or(0.0)),
                x["p99_ms"]
                    .as_f64()
                    .map(|v| format!("&le; {v:.1}"))
                    .unwrap_or_default(),
                text(&x["open_connections"]),
                text(&x["pool_wait_timeouts"]),
            ]);
        }
    }
    table(
        &mut h,
        "Keyspaces",
        &[
            "keyspace",
            "sharded",
            "routing version",
            "workflow",
            "cutover",
        ],
        ks_rows,
    );
    table(
        &mut h,
        "Shards",
        &[
            "shard",
            "primary / database",
            "statements",
            "avg ms",
            "p99 ms",
            "open connections",
            "pool wait timeouts",
        ],
        shard_rows,
    );
    let wf_rows = s["workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let (c, t) = (
                w["rows_copied"].as_u64().unwrap_or(0),
                w["rows_estimate"].as_u64().unwrap_or(0),
            );
            vec![
                text(&w["name"]),
                text(&w["keyspace"]),
                format!("{} &rarr; {}", text(&w["from"]), text(&w["to"])),
                text(&w["phase"]),
                format!(
                    "{c} / {t} rows ({:.0}%)",
                    if t > 0 {
                        c as f64 * 100.0 / t as f64
                    } else {
                        100.0
                    }
                ),
                text(&w["message"]),
            ]
        })
        .collect();
    table(
        &mut h,
        "Workflows",
        &[
            "workflow",
            "keyspace",
            "shards",
            "phase",
            "copied",
            "last event",
        ],
        wf_rows,
    );
    let session_rows = s["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            vec![
                text(&x["id"]),
                text(&x["user"]),
                text(&x["host"]),
                text(&x["keyspace"]),
                text(&x["state"]),
                text(&x["time_s"]),
                text(&x["statement"]),
            ]
        })
        .collect();
    table(
        &mut h,
        "Sessions",
        &[
            "id",
            "user",
            "host",
            "keyspace",
            "state",
            "time s",
            "statement",
        ],
        session_rows,
    );
    let pool_rows = s["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                text(&p["backend"]),
                text(&p["database"]),
                text(&p["in_use"]),
                text(&p["idle"]),
            ]
        })
        .collect();
    table(
        &mut h,
        "Backend pools",
        &["backend", "database", "in use", "idle"],
        pool_rows,
    );
    let proxy_rows = s["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                text(&p["id"]),
                text(&p["mysql_addr"]),
                text(&p["applied_revision"]),
            ]
        })
        .collect();
    table(
        &mut h,
        "Proxies",
        &["id", "mysql", "applied revision"],
        proxy_rows,
    );
    h.push_str("<p><a href=/metrics>metrics</a> &middot; <a href=/status>status JSON</a> &middot; <a href=/debug/queries>query statistics</a> &middot; <a href=/debug/querylog>query log</a></p></body></html>");
    h
}
