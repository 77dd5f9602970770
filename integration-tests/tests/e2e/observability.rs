//! What operators see (issue 14): /metrics is valid Prometheus exposition (checked with
//! `promtool check metrics`), every series unique, latency histograms by keyspace and plan
//! type and by shard, errors by errno and origin, process and build metrics; the query log;
//! OpenTelemetry spans sent to a collector (a stand-in OTLP/gRPC server in the test).

use integration_tests::{http_get, TestCluster};
use mysql_async::prelude::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// promtool from Debian's `prometheus` package (scripts/deps.sh installs it).
fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool installed (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_unique_and_tell_where_time_went() {
    let c = TestCluster::start(2).await;
    let p = &c.info.proxies[0];
    let mut conn = c.conn("customer").await;
    // One of each: a single-shard route, a scatter, a merge, an error of each origin.
    conn.query_drop("SELECT name FROM customer WHERE customer_id = 1")
        .await
        .unwrap();
    conn.query_drop("SELECT name FROM customer").await.unwrap();
    conn.query_drop("SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    assert!(conn.query_drop("USE no_such_keyspace").await.is_err());
    assert!(conn
        .query_drop("INSERT INTO customer (customer_id, email) VALUES (1, 'dup')")
        .await
        .is_err());
    let (code, body) = http_get(&p.http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let (ok, out) = promtool_check(&body);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
    // Every series once.
    let mut seen = HashSet::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or(line);
        assert!(seen.insert(series.to_string()), "duplicate series {series}");
    }
    let has = |needle: &str| body.lines().any(|l| l.contains(needle));
    for needle in [
        "shardgate_query_duration_seconds_bucket{keyspace=\"customer\",plan=\"route\"",
        "shardgate_query_duration_seconds_bucket{keyspace=\"customer\",plan=\"scatter\"",
        "shardgate_query_duration_seconds_bucket{keyspace=\"customer\",plan=\"merge\"",
        "shardgate_backend_query_duration_seconds_bucket{keyspace=\"customer\",shard=\"-80\"",
        "shardgate_backend_query_duration_seconds_bucket{keyspace=\"customer\",shard=\"80-\"",
        "shardgate_query_errors_total{code=\"1049\",origin=\"client\"}",
        "shardgate_query_errors_total{code=\"1062\",origin=\"backend\"}",
        "shardgate_backend_pool_wait_seconds_bucket",
        "shardgate_process_resident_memory_bytes",
        "shardgate_process_open_fds",
        "shardgate_build_info{version=",
        "shardgate_fenced 0",
        "shardgate_topology_stale 0",
    ] {
        assert!(has(needle), "no {needle} in\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_is_traced_to_its_shards() {
    let mut c = TestCluster::start(2).await;
    let p = c.info.proxies[0].clone();
    let mut conn = c.conn("customer").await;
    let (a, b) = c.ids_on_two_shards(1);
    for _ in 0..3 {
        conn.query_drop(format!(
            "SELECT name FROM customer WHERE customer_id IN ({a}, {b}) /* hello */"
        ))
        .await
        .unwrap();
    }
    // The session sees where its previous statement went.
    let trace: Vec<(String, String, Option<String>, String)> = conn
        .query_map(
            "SHOW LAST QUERY TRACE",
            |(t, p, s, r, _ms, _e): (
                String,
                String,
                Option<String>,
                String,
                String,
                Option<String>,
            )| (t, p, s, r),
        )
        .await
        .unwrap();
    assert_eq!(trace.len(), 3, "{trace:?}");
    assert_eq!(trace[0].1, "scatter");
    assert_eq!(trace[0].3, "2", "two rows in all: {trace:?}");
    let shards: HashSet<String> = trace[1..].iter().filter_map(|t| t.2.clone()).collect();
    assert_eq!(
        shards,
        HashSet::from(["customer/-80".to_string(), "customer/80-".to_string()])
    );
    let digest = "SELECT name FROM customer WHERE customer_id IN (?, ...)";
    // The query log names both shards, with the digest and the same trace id.
    let (_, log) = http_get(&p.http, "/debug/querylog").await.unwrap();
    let entry: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["trace_id"] == trace[0].0.as_str())
        .unwrap_or_else(|| panic!("no entry {} in\n{log}", trace[0].0));
    assert_eq!(entry["sql"], digest, "{entry}");
    assert_eq!(entry["shards"].as_array().unwrap().len(), 2, "{entry}");
    // Statistics per digest.
    let stats: Vec<(String, String, String)> = conn
        .query_map("SHOW QUERY STATS", |row: mysql_async::Row| {
            (
                row.get::<String, _>(0).unwrap(),
                row.get::<String, _>(1).unwrap(),
                row.get::<String, _>(2).unwrap(),
            )
        })
        .await
        .unwrap();
    let mine = stats
        .iter()
        .find(|s| s.0 == digest)
        .unwrap_or_else(|| panic!("{stats:?}"));
    assert_eq!((mine.1.as_str(), mine.2.as_str()), ("scatter", "3"));
    let (_, json) = http_get(&p.http, "/debug/queries").await.unwrap();
    assert!(json.contains(digest), "{json}");

    // EXPLAIN ANALYZE runs the statement and answers with its trace, rows per shard.
    let analyzed: Vec<(String, Option<String>, Option<String>)> = conn
        .query_map(
            format!(
                "EXPLAIN ANALYZE FORMAT=shardgate SELECT name FROM customer WHERE customer_id IN ({a}, {b})"
            ),
            |row: mysql_async::Row| {
                (
                    row.get::<String, _>(0).unwrap(),
                    row.get::<Option<String>, _>(1).unwrap(),
                    row.get::<Option<String>, _>(2).unwrap(),
                )
            },
        )
        .await
        .unwrap();
    assert_eq!(analyzed[0].0, "statement", "{analyzed:?}");
    assert_eq!(analyzed[0].2.as_deref(), Some("2"), "{analyzed:?}");
    let per_shard: Vec<_> = analyzed.iter().filter(|r| r.0 == "shard").collect();
    assert_eq!(per_shard.len(), 2, "{analyzed:?}");
    assert!(
        per_shard.iter().all(|r| r.2.as_deref() == Some("1")),
        "{analyzed:?}"
    );
    assert!(analyzed.iter().any(|r| r.0 == "plan"), "{analyzed:?}");
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on normally");

    // The status document and page: sessions, per-shard latency, fencing, workflows.
    let status = integration_tests::proxy_status(&p.http).await.unwrap();
    assert_eq!(status["fenced"], false, "{status}");
    assert!(
        !status["sessions"].as_array().unwrap().is_empty(),
        "{status}"
    );
    let customer = status["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "customer")
        .unwrap();
    for s in customer["serving"].as_array().unwrap() {
        assert!(s["statements"].as_u64().unwrap() >= 3, "{s}");
        assert!(s["avg_ms"].as_f64().unwrap() > 0.0, "{s}");
    }
    let (code, page) = http_get(&p.http, "/").await.unwrap();
    assert_eq!(code, 200);
    for heading in ["Sessions", "Shards", "Workflows", "http-equiv=refresh"] {
        assert!(page.contains(heading), "no {heading} on the status page");
    }

    // The query log can also go to a file, one JSON object per line.
    let file = c.dir().join("querylog.jsonl");
    let logged = c
        .info
        .start_proxy_env(
            "logged",
            0,
            0,
            &[("SHARDGATE_LOG_QUERY_LOG_FILE", file.to_str().unwrap())],
        )
        .await
        .unwrap();
    let mut conn = mysql_async::Conn::new(
        mysql_async::Opts::from_url(&integration_tests::url_for(&logged.mysql, "customer"))
            .unwrap(),
    )
    .await
    .unwrap();
    conn.query_drop(format!("SELECT name FROM customer WHERE customer_id = {a}"))
        .await
        .unwrap();
    let mut found = false;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        found = text.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|e| e["sql"] == "SELECT name FROM customer WHERE customer_id = ?")
                .unwrap_or(false)
        });
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "no entry in {}", file.display());
}

/// A stand-in OTLP/gRPC collector: keeps every span it is sent, with its service name.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| value_text(kv.value.as_ref()))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                kept.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Listens on a free loopback port; returns the endpoint and the server task.
    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let task = tokio::spawn(async move {
            server.await.expect("the collector serves");
        });
        (endpoint, task)
    }

    /// The statement span whose `shardgate.trace_id` is `trace_id` and its children,
    /// waiting up to `wait` for them.
    async fn statement(&self, trace_id: &str, wait: Duration) -> Option<(Span, Vec<Span>)> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let kept = self.0.lock().unwrap();
                if let Some((_, stmt)) = kept
                    .iter()
                    .find(|(_, s)| attr(s, "shardgate.trace_id").as_deref() == Some(trace_id))
                {
                    let children: Vec<Span> = kept
                        .iter()
                        .filter(|(_, s)| s.parent_span_id == stmt.span_id)
                        .map(|(_, s)| s.clone())
                        .collect();
                    return Some((stmt.clone(), children));
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value_text(kv.value.as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The trace id `SHOW LAST QUERY TRACE` gives for the session's previous statement.
async fn last_trace_id(conn: &mut mysql_async::Conn) -> String {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW LAST QUERY TRACE").await.unwrap();
    rows[0].get::<String, _>(0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_exported_as_opentelemetry_spans() {
    let collector = Collector::default();
    let (endpoint, server) = collector.start().await;
    let mut c = TestCluster::start_with(2, false).await;
    let p = c
        .info
        .start_proxy_env(
            "traced",
            0,
            0,
            &[
                ("SHARDGATE_TRACING_OTLP_ENDPOINT", &endpoint),
                ("SHARDGATE_TRACING_SERVICE_NAME", "shardgate-e2e"),
                ("SHARDGATE_TRACING_EXPORT_INTERVAL_MS", "100"),
            ],
        )
        .await
        .unwrap();
    let mut conn = integration_tests::connect(&p.mysql, "customer").await;
    let wait = Duration::from_secs(15);

    // A scatter: one statement span, one child per shard, inside it.
    conn.query_drop("SELECT name FROM customer").await.unwrap();
    let scatter_id = last_trace_id(&mut conn).await;
    let (_, log) = http_get(&p.http, "/debug/querylog").await.unwrap();
    assert!(log.contains(&scatter_id), "{scatter_id} not in\n{log}");
    let (stmt, children) = collector
        .statement(&scatter_id, wait)
        .await
        .unwrap_or_else(|| panic!("no span for {scatter_id}; proxy log:\n{}", c.proxy_log()));
    assert_eq!(stmt.name, "scatter");
    assert!(stmt.parent_span_id.is_empty(), "a root span");
    let attrs = |s: &Span, keys: &[&str]| -> Vec<Option<String>> {
        keys.iter().map(|k| attr(s, k)).collect()
    };
    assert_eq!(
        attrs(
            &stmt,
            &[
                "db.system",
                "db.statement",
                "db.name",
                "db.user",
                "shardgate.plan"
            ]
        ),
        [
            "mysql",
            "SELECT name FROM customer",
            "customer",
            "root",
            "scatter"
        ]
        .map(|v| Some(v.to_string()))
        .to_vec(),
        "{stmt:?}"
    );
    assert!(attr(&stmt, "shardgate.rows").is_some(), "{stmt:?}");
    assert!(attr(&stmt, "shardgate.errno").is_none(), "{stmt:?}");
    let mut shards: Vec<String> = children.iter().map(|s| s.name.clone()).collect();
    shards.sort();
    assert_eq!(shards, ["customer/-80", "customer/80-"], "{children:?}");
    for s in &children {
        assert_eq!(s.trace_id, stmt.trace_id);
        assert_eq!(attr(s, "shardgate.shard").as_deref(), Some(s.name.as_str()));
        assert!(
            stmt.start_time_unix_nano <= s.start_time_unix_nano
                && s.start_time_unix_nano <= s.end_time_unix_nano
                && s.end_time_unix_nano <= stmt.end_time_unix_nano,
            "{s:?} outside {stmt:?}"
        );
    }
    assert!(collector
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|(service, _)| service == "shardgate-e2e"));

    // A single-shard route: one child.
    conn.query_drop("SELECT name FROM customer WHERE customer_id = 1")
        .await
        .unwrap();
    let route_id = last_trace_id(&mut conn).await;
    let (stmt, children) = collector.statement(&route_id, wait).await.unwrap();
    assert_eq!(stmt.name, "route");
    assert_eq!(
        attr(&stmt, "db.statement").as_deref(),
        Some("SELECT name FROM customer WHERE customer_id = ?")
    );
    assert_eq!(children.len(), 1, "{children:?}");
    assert!(stmt.start_time_unix_nano <= children[0].start_time_unix_nano);
    assert!(children[0].end_time_unix_nano <= stmt.end_time_unix_nano);

    // A sqlcommenter traceparent: the statement joins the application's trace.
    let (app_trace, app_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    conn.query_drop(format!(
        "SELECT name FROM customer WHERE customer_id = 2 /*traceparent='00-{app_trace}-{app_span}-01'*/"
    ))
    .await
    .unwrap();
    let joined_id = last_trace_id(&mut conn).await;
    let (stmt, _) = collector.statement(&joined_id, wait).await.unwrap();
    assert_eq!(hex(&stmt.trace_id), app_trace);
    assert_eq!(hex(&stmt.parent_span_id), app_span);

    // A failed statement: status error and its MySQL code.
    assert!(conn
        .query_drop("SELECT no_such_column FROM customer WHERE customer_id = 1")
        .await
        .is_err());
    let failed_id = last_trace_id(&mut conn).await;
    let (stmt, _) = collector.statement(&failed_id, wait).await.unwrap();
    assert_eq!(attr(&stmt, "shardgate.errno").as_deref(), Some("1054"));
    assert_eq!(stmt.status.as_ref().map(|s| s.code), Some(2), "{stmt:?}");

    // Spans still queued at shutdown are sent before the proxy exits.
    let lazy = c
        .info
        .start_proxy_env(
            "lazy",
            0,
            0,
            &[
                ("SHARDGATE_TRACING_OTLP_ENDPOINT", &endpoint),
                ("SHARDGATE_TRACING_EXPORT_INTERVAL_MS", "600000"),
            ],
        )
        .await
        .unwrap();
    let mut lazy_conn = integration_tests::connect(&lazy.mysql, "customer").await;
    lazy_conn
        .query_drop("SELECT name FROM customer WHERE customer_id = 3")
        .await
        .unwrap();
    let lazy_id = last_trace_id(&mut lazy_conn).await;
    drop(lazy_conn);
    assert!(collector
        .statement(&lazy_id, Duration::from_millis(500))
        .await
        .is_none());
    let exited = tokio::task::spawn_blocking(move || {
        shardgate_resharder::local::process::stop(lazy.pid, Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(exited, "the proxy exits on SIGTERM");
    assert!(
        collector
            .statement(&lazy_id, Duration::from_secs(2))
            .await
            .is_some(),
        "the queued span was flushed at shutdown"
    );
    server.abort();
}
