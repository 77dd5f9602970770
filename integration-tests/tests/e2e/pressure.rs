//! Sessions at scale with real drivers (issue 12): autocommit off without pinning,
//! connecting while a shard's pool is fully pinned, pool exhaustion as a clear error,
//! idle transactions rolled back, and deadlocks across shards (one proxy and two)
//! ended with 1213 like local ones.

use integration_tests::{connect, errno, hash_shard, http_get, rows, status_value, TestCluster};
use mysql_async::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// A counter of the proxy's /metrics (summed over its labels).
async fn metric(http: &str, name: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        / 1024
}

/// 1,000 PyMySQL clients with the driver's defaults (autocommit off), each running
/// SELECTs and staying connected, then one write each in an implicit transaction.
const THOUSAND: &str = r#"
import sys, pymysql
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for i in range(n):
    c = pymysql.connect(host=host, port=port, user="root", database="customer")
    cur = c.cursor()
    cur.execute("SELECT @@autocommit")
    assert cur.fetchone()[0] == 0
    cur.execute("SELECT 1")
    cur.execute("SELECT name FROM customer WHERE customer_id = %s", (i % 20 + 1,))
    cur.fetchall()
    conns.append(c)
print("READY", flush=True)
sys.stdin.readline()
# The first write opens the implicit transaction: it stays until COMMIT / ROLLBACK.
for i, c in enumerate(conns[:50]):
    cur = c.cursor()
    cur.execute("UPDATE customer SET name = name WHERE customer_id = %s", (i % 20 + 1,))
    assert c.get_server_info()
    c.rollback() if i % 2 else c.commit()
for c in conns:
    c.close()
print("DONE", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_with_autocommit_off_share_connections() {
    const CLIENTS: usize = 1000;
    const POOL: u64 = 32;
    let c = TestCluster::start(2).await;
    let p = &c.info.proxies[0];
    let shards = c.shard_names("customer");
    let mut baselines = Vec::new();
    for s in &shards {
        let mut d = c.direct("customer", s).await;
        d.query_drop("FLUSH STATUS").await.unwrap();
        baselines.push((s.clone(), status_value(&mut d, "Threads_connected").await));
    }
    let script = c.dir().join("thousand.py");
    std::fs::write(&script, THOUSAND).unwrap();
    let (host, port) = p.mysql.split_once(':').unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .args([host, port, &CLIENTS.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "the clients did not all connect");
    let rss = rss_mb(p.pid);
    let mut most = 0;
    for (s, base) in &baselines {
        let mut d = c.direct("customer", s).await;
        let max = status_value(&mut d, "Max_used_connections").await;
        assert!(
            max <= base + POOL,
            "shard {s}: {max} connections at most (baseline {base}, pool {POOL})"
        );
        most = most.max(max);
    }
    eprintln!("{CLIENTS} PyMySQL clients (autocommit off) connected: Max_used_connections {most} per shard at most (pool {POOL}, plus this test's own), proxy RSS {rss} MB");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "DONE");
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_off_reads_follow_the_chosen_semantics() {
    let mut c = TestCluster::start(2).await;
    let strict = c
        .info
        .start_proxy_env(
            "strict",
            0,
            0,
            &[("SHARDGATE_SESSION_AUTOCOMMIT_FALSE_IS_TRANSACTION", "true")],
        )
        .await
        .unwrap();
    let default = c.proxy_addr();
    let mut writer = connect(&default, "customer").await;
    for (addr, snapshot) in [(default.clone(), false), (strict.mysql.clone(), true)] {
        let mut r = connect(&addr, "customer").await;
        r.query_drop("SET autocommit = 0").await.unwrap();
        let first = rows(&mut r, "SELECT name FROM customer WHERE customer_id = 3")
            .await
            .unwrap();
        writer
            .query_drop(format!(
                "UPDATE customer SET name = 'changed-{snapshot}' WHERE customer_id = 3"
            ))
            .await
            .unwrap();
        let second = rows(&mut r, "SELECT name FROM customer WHERE customer_id = 3")
            .await
            .unwrap();
        if snapshot {
            // MySQL's behaviour: the first read opened a transaction (one snapshot).
            assert_eq!(first, second, "strict mode reads one snapshot");
        } else {
            // Default: plain reads before the first write open nothing (each is current).
            assert_eq!(second, vec![vec![format!("changed-{snapshot}")]]);
        }
        // A locking read opens the transaction in both modes; ROLLBACK ends it.
        r.query_drop("SELECT name FROM customer WHERE customer_id = 4 FOR UPDATE")
            .await
            .unwrap();
        r.query_drop("UPDATE customer SET name = 'rolled-back' WHERE customer_id = 4")
            .await
            .unwrap();
        r.query_drop("ROLLBACK").await.unwrap();
        let after = rows(
            &mut writer,
            "SELECT name FROM customer WHERE customer_id = 4",
        )
        .await
        .unwrap();
        assert_ne!(after, vec![vec!["rolled-back".to_string()]]);
        assert_eq!(
            rows(&mut r, "SELECT @@session.autocommit AS s")
                .await
                .unwrap(),
            vec![vec!["0".to_string()]]
        );
        // Inside a larger statement the backends would answer 1: refused, not wrong.
        let e = r.query_drop("SELECT @@autocommit, 1").await.unwrap_err();
        assert_eq!(errno(&e), Some(1235), "{e}");
        r.query_drop("SET autocommit = 1").await.unwrap();
        let ac: Option<i64> = r.query_first("SELECT @@autocommit").await.unwrap();
        assert_eq!(ac, Some(1));
    }
}

/// Customer ids of the sample data that live on `shard`.
async fn ids_on(c: &TestCluster, shard: &str, n: usize) -> Vec<i64> {
    let mut d = c.direct("customer", shard).await;
    d.query(format!(
        "SELECT customer_id FROM customer ORDER BY customer_id LIMIT {n}"
    ))
    .await
    .unwrap()
}

const CONNECT_WHILE_PINNED: &str = r#"
import sys, pymysql
host, port = sys.argv[1], int(sys.argv[2])
c = pymysql.connect(host=host, port=port, user="root", database="customer",
                    charset="utf8mb4", sql_mode="STRICT_TRANS_TABLES", init_command="SET time_zone = '+00:00'")
cur = c.cursor()
cur.execute("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")
cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
cur.execute("SELECT 1")
assert cur.fetchone()[0] == 1
cur.execute("SELECT @@autocommit")
assert cur.fetchone()[0] == 0
try:
    cur.execute("SET sql_mode = 'NOT_A_MODE'")
    raise SystemExit("an invalid sql_mode was accepted")
except pymysql.err.MySQLError as e:
    assert e.args[0] == 1231, e
print("OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_with_every_connection_pinned_does_not_stop_new_clients() {
    const POOL: usize = 4;
    let mut c = TestCluster::start(2).await;
    let p = c
        .info
        .start_proxy_env(
            "tiny-pool",
            0,
            0,
            &[
                ("SHARDGATE_BACKEND_POOL_SIZE", &POOL.to_string()),
                ("SHARDGATE_BACKEND_POOL_WAIT_MS", "500"),
            ],
        )
        .await
        .unwrap();
    let shards = c.shard_names("customer");
    let full = &shards[0];
    let ids = ids_on(&c, full, POOL + 1).await;
    assert_eq!(ids.len(), POOL + 1);
    // Each transaction pins one connection of the shard: all of them.
    let mut pinned = Vec::new();
    for id in &ids[..POOL] {
        let mut t = connect(&p.mysql, "customer").await;
        t.query_drop("BEGIN").await.unwrap();
        t.query_drop(format!(
            "UPDATE customer SET name = name WHERE customer_id = {id}"
        ))
        .await
        .unwrap();
        pinned.push(t);
    }
    // A new client connects (PyMySQL: autocommit off, SET NAMES, sql_mode, time_zone,
    // isolation level) and runs SELECT 1 and SELECT @@autocommit.
    let script = c.dir().join("connect_pinned.py");
    std::fs::write(&script, CONNECT_WHILE_PINNED).unwrap();
    let (host, port) = p.mysql.split_once(':').unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([host, port])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fresh = connect(&p.mysql, "customer").await;
    let one: Option<i64> = fresh.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // A statement that needs the full shard waits backend.pool_wait_ms, then gets 1040
    // naming the shard (not a lost connection).
    let started = Instant::now();
    let e = fresh
        .query_drop(format!(
            "SELECT name FROM customer WHERE customer_id = {}",
            ids[POOL]
        ))
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1040), "{e}");
    assert!(e.to_string().contains(full.as_str()), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(metric(&p.http, "shardgate_backend_pool_wait_timeouts_total").await >= 1.0);
    // One transaction ends: the waiting statement gets its connection.
    pinned[0].query_drop("COMMIT").await.unwrap();
    let name: Option<String> = fresh
        .query_first(format!(
            "SELECT name FROM customer WHERE customer_id = {}",
            ids[POOL]
        ))
        .await
        .unwrap();
    assert!(name.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transactions_are_rolled_back_and_closed() {
    let mut c = TestCluster::start(2).await;
    let p = c
        .info
        .start_proxy_env(
            "impatient",
            0,
            0,
            &[("SHARDGATE_SESSION_IDLE_TRANSACTION_TIMEOUT_S", "1")],
        )
        .await
        .unwrap();
    let mut idle = connect(&p.mysql, "customer").await;
    let mut outside = connect(&p.mysql, "customer").await;
    idle.query_drop("BEGIN").await.unwrap();
    idle.query_drop("UPDATE customer SET name = 'left-open' WHERE customer_id = 5")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = idle.query_drop("COMMIT").await.unwrap_err();
    assert_eq!(errno(&e), Some(4031), "{e}");
    assert!(e.to_string().contains("idle"), "{e}");
    // Rolled back: its row lock is gone and its change never happened.
    let mut other = connect(&p.mysql, "customer").await;
    other
        .query_drop("SET SESSION innodb_lock_wait_timeout = 2")
        .await
        .unwrap();
    other
        .query_drop("UPDATE customer SET name = name WHERE customer_id = 5")
        .await
        .unwrap();
    let name: Option<String> = other
        .query_first("SELECT name FROM customer WHERE customer_id = 5")
        .await
        .unwrap();
    assert_ne!(name.as_deref(), Some("left-open"));
    // A session idle outside a transaction stays.
    let one: Option<i64> = outside.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert_eq!(
        metric(&p.http, "shardgate_idle_transactions_killed_total").await,
        1.0
    );
}

/// Two transactions lock a row on each of two shards in opposite orders: one side gets
/// 1213 within 2 s, the other commits, and only the survivor's changes stand.
async fn cross_shard_deadlock(c: &TestCluster, addr1: &str, addr2: &str, tag: &str) {
    let shards = c.shard_names("customer");
    let (a, b) = c.ids_on_two_shards(1);
    assert_ne!(hash_shard(a, &shards), hash_shard(b, &shards));
    let mut s1 = connect(addr1, "customer").await;
    let mut s2 = connect(addr2, "customer").await;
    s1.query_drop("BEGIN").await.unwrap();
    s1.query_drop(format!(
        "UPDATE customer SET name = 's1-{tag}' WHERE customer_id = {a}"
    ))
    .await
    .unwrap();
    s2.query_drop("BEGIN").await.unwrap();
    s2.query_drop(format!(
        "UPDATE customer SET name = 's2-{tag}' WHERE customer_id = {b}"
    ))
    .await
    .unwrap();
    let started = Instant::now();
    // Each side now updates the row the other one holds.
    let update = |mut conn: mysql_async::Conn, who: &'static str, id: i64| {
        let sql = format!("UPDATE customer SET name = '{who}-{tag}' WHERE customer_id = {id}");
        tokio::spawn(async move {
            let r = conn.query_drop(sql).await;
            (r, conn)
        })
    };
    let t1 = update(s1, "s1", b);
    // s2 starts second, so it is the younger wait (not the younger transaction).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t2 = update(s2, "s2", a);
    let (r1, s1) = t1.await.unwrap();
    let (r2, s2) = t2.await.unwrap();
    let elapsed = started.elapsed();
    let (victim, mut survivor, winner) = match (r1, r2) {
        (Ok(()), Err(e)) => (e, s1, "s1"),
        (Err(e), Ok(())) => (e, s2, "s2"),
        (r1, r2) => panic!("exactly one side must fail: {r1:?} / {r2:?}"),
    };
    assert_eq!(errno(&victim), Some(1213), "{victim}");
    assert!(
        elapsed < Duration::from_secs(2),
        "the deadlock took {elapsed:?} to break"
    );
    survivor.query_drop("COMMIT").await.unwrap();
    let mut check = c.conn("customer").await;
    let names = rows(
        &mut check,
        &format!("SELECT name FROM customer WHERE customer_id IN ({a}, {b}) ORDER BY customer_id"),
    )
    .await
    .unwrap();
    let expected = format!("{winner}-{tag}");
    assert!(
        names.iter().all(|r| r[0] == expected),
        "the survivor's changes stand, the victim's are gone: {names:?}"
    );
    eprintln!("{tag}: deadlock across shards broken in {elapsed:?}; {winner} committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlocks_across_shards_end_with_1213() {
    let mut c = TestCluster::start(2).await;
    let one = c.proxy_addr();
    cross_shard_deadlock(&c, &one, &one, "one-proxy").await;
    let second = c.info.start_proxy_env("second", 0, 0, &[]).await.unwrap();
    cross_shard_deadlock(&c, &one, &second.mysql, "two-proxies").await;
    let broken = metric(&c.info.proxies[0].http, "shardgate_deadlocks_broken_total").await
        + metric(&second.http, "shardgate_deadlocks_broken_total").await;
    assert_eq!(broken, 2.0);
}
