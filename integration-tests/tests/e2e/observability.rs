//! What operators see (issue 14): /metrics is valid Prometheus exposition (checked with
//! `promtool check metrics`), every series unique, latency histograms by keyspace and plan
//! type and by shard, errors by errno and origin, process and build metrics.

use integration_tests::{http_get, TestCluster};
use mysql_async::prelude::*;
use std::collections::HashSet;
use std::io::Write;

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
