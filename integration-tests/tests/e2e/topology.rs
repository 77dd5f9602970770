//! The topology in etcd: live changes, validation, outages, registrations.

use integration_tests::{proxy_status, rows, TestCluster};
use mysql_async::prelude::*;
use shardgate_resharder::local::{etcd, process};
use shardgate_topology::store::{Expect, StoreError, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Queries through the proxy in a loop until stopped; returns (queries, errors).
fn keep_querying(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        let mut n = 0;
        let mut errors = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match conn
                .query_first::<u64, _>("SELECT COUNT(*) FROM product")
                .await
            {
                Ok(Some(_)) => n += 1,
                other => errors.push(format!("{other:?}")),
            }
        }
        (n, errors)
    })
}

fn put(key: &str, value: serde_json::Value) -> Write {
    Write::Put {
        key: key.into(),
        value: serde_json::to_vec(&value).unwrap(),
        expect: Expect::Any,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_reach_every_proxy_within_a_second() {
    let mut c = TestCluster::start(2).await;
    c.info.start_proxy("proxy2", 0, 0).await.unwrap();
    let store = c.info.store().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let client = keep_querying(c.url("commerce"), stop.clone());
    let mut held = c.conn("commerce").await;
    let mut latencies = Vec::new();

    // 1. A new keyspace on a new server.
    let m = c.extra_mariadb("extra").await;
    let mut direct = mysql_async::Conn::from_url(m.url("")).await.unwrap();
    direct.query_drop("CREATE DATABASE extra_db").await.unwrap();
    direct
        .query_drop("CREATE TABLE extra_db.t (id INT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
    direct
        .query_drop("INSERT INTO extra_db.t VALUES (1, 'one')")
        .await
        .unwrap();
    let base = store.load().await.unwrap();
    let t0 = Instant::now();
    let rev = store
        .commit_validated(
            &base,
            &[
                put("keyspaces/extra", serde_json::json!({"sharded": false})),
                put(
                    "keyspaces/extra/shards/-",
                    serde_json::json!({"primary": m.addr(), "database": "extra_db"}),
                ),
            ],
        )
        .await
        .unwrap();
    latencies.extend(c.wait_applied(rev, t0).await);
    for p in &c.info.proxies {
        let mut conn = mysql_async::Conn::from_url(integration_tests::url_for(&p.mysql, "extra"))
            .await
            .unwrap();
        assert_eq!(
            rows(&mut conn, "SELECT v FROM t").await.unwrap(),
            vec![vec!["one"]]
        );
    }

    // 2. A shard moves to another server: new statements go there; the held session too.
    let m2 = c.extra_mariadb("extra2").await;
    let mut direct2 = mysql_async::Conn::from_url(m2.url("")).await.unwrap();
    direct2
        .query_drop("CREATE DATABASE extra_db")
        .await
        .unwrap();
    direct2
        .query_drop("CREATE TABLE extra_db.t (id INT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
    direct2
        .query_drop("INSERT INTO extra_db.t VALUES (1, 'moved')")
        .await
        .unwrap();
    let base = store.load().await.unwrap();
    let t0 = Instant::now();
    let rev = store
        .commit_validated(
            &base,
            &[put(
                "keyspaces/extra/shards/-",
                serde_json::json!({"primary": m2.addr(), "database": "extra_db"}),
            )],
        )
        .await
        .unwrap();
    latencies.extend(c.wait_applied(rev, t0).await);
    held.query_drop("USE extra").await.unwrap();
    assert_eq!(
        rows(&mut held, "SELECT v FROM t").await.unwrap(),
        vec![vec!["moved"]]
    );

    // 3. A new table in a sharded keyspace's VSchema.
    let base = store.load().await.unwrap();
    let mut vschema: serde_json::Value =
        serde_json::from_slice(&base.get("keyspaces/customer").unwrap().value).unwrap();
    vschema["tables"]["visit"] =
        serde_json::json!({"column_vindexes": [{"column": "customer_id", "name": "hash"}]});
    let t0 = Instant::now();
    let rev = store
        .commit_validated(&base, &[put("keyspaces/customer", vschema)])
        .await
        .unwrap();
    latencies.extend(c.wait_applied(rev, t0).await);
    for p in &c.info.proxies {
        let s = proxy_status(&p.http).await.unwrap();
        let tables = s["keyspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "customer")
            .unwrap()["tables"]
            .clone();
        assert!(
            tables.as_array().unwrap().iter().any(|t| t == "visit"),
            "{tables}"
        );
    }

    stop.store(true, Ordering::SeqCst);
    let (n, errors) = client.await.unwrap();
    assert!(n > 10, "the client barely ran ({n} queries)");
    assert!(
        errors.is_empty(),
        "client errors during changes: {errors:?}"
    );
    let max = latencies.iter().max().unwrap();
    eprintln!(
        "etcd write -> applied, per proxy and change (ms): {:?}; max {} ms; {n} client queries, 0 errors",
        latencies.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        max.as_millis()
    );
    assert!(
        *max < Duration::from_secs(1),
        "a change took {max:?} to apply"
    );

    // Both proxies report what they applied in their registrations.
    let (ok, out) = c.shardctl(&["proxies"]);
    assert!(ok, "{out}");
    assert!(out.contains("proxy1") && out.contains("proxy2"), "{out}");
    assert_eq!(out.matches("current").count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_are_refused_or_ignored_and_edits_are_compare_and_swap() {
    let c = TestCluster::start(2).await;
    let store = c.info.store().await.unwrap();
    let dir = c.dir().clone();
    let file = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };

    // A shard that is not serving may overlap serving ones (resharding targets do).
    let f = file("s40.json", r#"{"primary": "127.0.0.1:1", "database": "d"}"#);
    let (ok, out) = c.shardctl(&["topo", "put", "keyspaces/customer/shards/40-", &f]);
    assert!(ok, "{out}");

    // Each kind of problem, through shardctl: refused with the key and the problem named.
    let cases = [
        ("keyspaces/customer", "{not json", "not valid JSON"),
        (
            "keyspaces/customer",
            r#"{"sharded": true, "shards": 2}"#,
            "unknown field `shards`",
        ),
        (
            "keyspaces/customer",
            r#"{"sharded": true, "vindexes": {"v": {"type": "md5ish"}}}"#,
            "unknown vindex type \"md5ish\"",
        ),
        (
            "keyspaces/customer",
            r#"{"sharded": true, "tables": {"t": {"column_vindexes": [{"column": "id", "name": "nope"}]}}}"#,
            "names vindex \"nope\"",
        ),
        (
            "keyspaces/customer/routing",
            r#"{"version": 9, "serving": ["-80", "40-"]}"#,
            "overlap",
        ),
        (
            "keyspaces/customer/shards/x1",
            r#"{"primary": "127.0.0.1:1", "database": "d"}"#,
            "not a key range",
        ),
        (
            "keyspaces/customer/routing",
            r#"{"version": 9, "serving": ["-80"]}"#,
            "gap",
        ),
        (
            "keyspaces/customer/routing",
            r#"{"version": 9, "serving": ["-80", "80-c0"]}"#,
            "no shard document",
        ),
    ];
    for (i, (key, body, want)) in cases.iter().enumerate() {
        let f = file(&format!("case{i}.json"), body);
        let (ok, out) = c.shardctl(&["topo", "put", key, &f]);
        assert!(!ok, "{key} {body} was accepted: {out}");
        assert!(
            out.contains(want),
            "{key} {body}: expected {want:?} in: {out}"
        );
    }

    // A stale read loses: compare-and-swap.
    let base = store.load().await.unwrap();
    let entry = base.get("keyspaces/commerce").unwrap().clone();
    store
        .commit(&[Write::Put {
            key: "keyspaces/commerce".into(),
            value: entry.value.clone(),
            expect: Expect::Revision(entry.mod_revision),
        }])
        .await
        .unwrap();
    let again = store
        .commit(&[Write::Put {
            key: "keyspaces/commerce".into(),
            value: entry.value.clone(),
            expect: Expect::Revision(entry.mod_revision),
        }])
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let f = file("commerce.json", std::str::from_utf8(&entry.value).unwrap());
    let stale = entry.mod_revision.to_string();
    let (ok, out) = c.shardctl(&[
        "topo",
        "put",
        "keyspaces/commerce",
        &f,
        "--expect-revision",
        &stale,
    ]);
    assert!(!ok && out.contains("changed by someone else"), "{out}");
    let (ok, out) = c.shardctl(&["topo", "put", "keyspaces/commerce", &f]);
    assert!(ok, "{out}");

    // An invalid document written behind shardctl's back (etcdctl): the proxy keeps the last
    // good topology, says why, and `topo validate` reports the same problem.
    let mut conn = c.conn("commerce").await;
    store
        .commit(&[put(
            "keyspaces/customer/routing",
            serde_json::json!({"version": 5, "serving": ["-80"]}),
        )])
        .await
        .unwrap();
    let http = c.info.proxies[0].http.clone();
    let t0 = Instant::now();
    let status = loop {
        let s = proxy_status(&http).await.unwrap();
        if s["topology_error"].is_string() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the proxy did not notice the bad document"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status["topology_error"]
            .as_str()
            .unwrap()
            .contains("keyspaces/customer/routing"),
        "{status}"
    );
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM product")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
    let served = status["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "customer")
        .unwrap()["serving"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(served, 2, "the bad routing replaced the good one");
    let (code, metrics) = integration_tests::http_get(&http, "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shardgate_topology_rejected_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let (ok, out) = c.shardctl(&["topo", "validate"]);
    assert!(
        !ok && out.contains("keyspaces/customer/routing") && out.contains("gap"),
        "{out}"
    );
    // Fixed again: applied, error cleared.
    store
        .commit(&[put(
            "keyspaces/customer/routing",
            serde_json::json!({"version": 6, "serving": ["-80", "80-"]}),
        )])
        .await
        .unwrap();
    let t0 = Instant::now();
    loop {
        let s = proxy_status(&http).await.unwrap();
        if s["topology_error"].is_null() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outages_and_compaction() {
    let mut c = TestCluster::start(1).await;
    let http = c.info.proxies[0].http.clone();
    let queries = Arc::new(AtomicU64::new(0));
    let mut conn = c.conn("commerce").await;

    // etcd stops: the proxy serves on and says it is stale.
    let e = c.info.etcd.clone();
    assert!(process::stop(e.pid, Duration::from_secs(10)));
    for _ in 0..20 {
        let n: Option<u64> = conn
            .query_first("SELECT COUNT(*) FROM product")
            .await
            .unwrap();
        assert_eq!(n, Some(5));
        queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    while proxy_status(&http).await.unwrap()["topology_stale"] != true {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "stale never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // etcd returns; changes and a compaction happen before the proxy reconnects.
    let restarted = etcd::start(&e.datadir, e.client_port, e.peer_port)
        .await
        .unwrap();
    c.info.etcd = restarted;
    c.info.save().unwrap();
    let store = c.info.store().await.unwrap();
    let mut rev = 0;
    for i in 0..5 {
        let base = store.load().await.unwrap();
        let mut doc: serde_json::Value =
            serde_json::from_slice(&base.get("keyspaces/commerce/routing").unwrap().value).unwrap();
        doc["version"] = serde_json::json!(100 + i);
        rev = store
            .commit(&[put("keyspaces/commerce/routing", doc)])
            .await
            .unwrap();
    }
    store.compact(rev).await.unwrap();
    let t0 = Instant::now();
    c.wait_applied(rev, t0).await;
    let s = proxy_status(&http).await.unwrap();
    let v = s["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "commerce")
        .unwrap()["routing_version"]
        .clone();
    assert_eq!(v, serde_json::json!(104));
    assert_eq!(s["topology_stale"], false);

    // The proxy restarts while etcd is down: it serves from its cache file.
    let proxy = c.info.proxies[0].clone();
    drop(conn);
    assert!(process::stop(proxy.pid, Duration::from_secs(10)));
    let e = c.info.etcd.clone();
    assert!(process::stop(e.pid, Duration::from_secs(10)));
    let port: u16 = proxy.mysql.rsplit(':').next().unwrap().parse().unwrap();
    let hport: u16 = proxy.http.rsplit(':').next().unwrap().parse().unwrap();
    c.info.start_proxy("proxy1", port, hport).await.unwrap();
    let mut conn = c.conn("commerce").await;
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM product")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
    let dbs: Vec<String> = conn.query("SHOW DATABASES").await.unwrap();
    assert!(dbs.contains(&"customer".to_string()));
    assert!(
        c.proxy_log().contains("serving the cached topology"),
        "{}",
        c.proxy_log()
    );
    // ... and catches up once etcd is back.
    c.info.etcd = etcd::start(&e.datadir, e.client_port, e.peer_port)
        .await
        .unwrap();
    c.info.save().unwrap();
    let t0 = Instant::now();
    while proxy_status(&http).await.unwrap()["topology_stale"] != false {
        assert!(t0.elapsed() < Duration::from_secs(15), "never resynced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_loses_its_registration_with_its_lease() {
    let mut c = TestCluster::start(1).await;
    let p2 = c.info.start_proxy("doomed", 0, 0).await.unwrap();
    let store = c.info.store().await.unwrap();
    let t0 = Instant::now();
    while store.get("proxies/doomed").await.unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process::signal(p2.pid, libc::SIGKILL);
    let t0 = Instant::now();
    while store.get("proxies/doomed").await.unwrap().is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "registration outlived the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "registration of a killed proxy gone after {:?} (lease TTL 4 s)",
        t0.elapsed()
    );
    assert!(store.get("proxies/proxy1").await.unwrap().is_some());
}
