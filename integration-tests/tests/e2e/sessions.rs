//! Sessions against real MariaDB and etcd: multiplexing (1,000 clients on a few backend
//! connections), settings following the session across borrowed connections, transaction
//! modes (single, multi, twopc with crash recovery), savepoints, disconnects mid-
//! transaction, KILL, timeouts, SHOW PROCESSLIST / WARNINGS, SQL-level PREPARE,
//! ROW_COUNT() / FOUND_ROWS().

use integration_tests::{connect, errno, rows, status_value, TestCluster};
use mysql_async::prelude::*;
use mysql_async::Conn;
use shardgate_resharder::local::process;
use std::time::{Duration, Instant};

async fn count_direct(c: &TestCluster, shard: &str, sql: &str) -> u64 {
    let mut d = c.direct("customer", shard).await;
    let n: Option<u64> = d.query_first(sql).await.unwrap();
    n.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_a_few_backend_connections() {
    const POOL: u64 = 4;
    const CLIENTS: usize = 1000;
    let mut c = TestCluster::start(2).await;
    let p = c
        .info
        .start_proxy_env(
            "small-pool",
            0,
            0,
            &[("SHARDGATE_BACKEND_POOL_SIZE", &POOL.to_string())],
        )
        .await
        .unwrap();
    let shards = c.shard_names("customer");
    // Baseline per shard server: whatever else is connected (the other proxy, us).
    let mut baselines = Vec::new();
    for s in &shards {
        let mut d = c.direct("customer", s).await;
        d.query_drop("FLUSH STATUS").await.unwrap();
        baselines.push((s.clone(), status_value(&mut d, "Threads_connected").await));
    }

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(connect(&p.mysql, "customer").await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut conn) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Session state that must follow the session to whatever connection it borrows.
            conn.query_drop(format!("SET @client = {i}")).await?;
            if i % 2 == 1 {
                conn.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
                    .await?;
            }
            let id = (i % 20) as i64 + 1;
            for round in 0..3 {
                let r: Option<(i64, String, i64)> = conn
                    .query_first(format!(
                        "SELECT @client, @@sql_mode, customer_id FROM customer WHERE customer_id = {id}"
                    ))
                    .await?;
                let (client, mode, cid) = r.expect("row");
                assert_eq!(client, i as i64, "round {round}");
                assert_eq!(mode == "ANSI_QUOTES", i % 2 == 1, "{mode}");
                assert_eq!(cid, id);
            }
            // Scatter reads take the shards' connections in one order (no deadlock).
            let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM customer").await?;
            assert!(n.unwrap() >= 20);
            // A transaction keeps its connection until COMMIT.
            conn.query_drop("BEGIN").await?;
            conn.query_drop(format!(
                "UPDATE customer SET name = name WHERE customer_id = {id}"
            ))
            .await?;
            let name: Option<String> = conn
                .query_first(format!("SELECT name FROM customer WHERE customer_id = {id}"))
                .await?;
            assert!(name.is_some());
            conn.query_drop("COMMIT").await?;
            Ok::<Conn, mysql_async::Error>(conn)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap().unwrap());
    }
    let elapsed = start.elapsed();
    for (s, base) in &baselines {
        let mut d = c.direct("customer", s).await;
        let max = status_value(&mut d, "Max_used_connections").await;
        assert!(
            max <= base + POOL,
            "shard {s}: {max} connections at most, baseline {base}, pool {POOL}"
        );
    }
    let status = integration_tests::proxy_status(&p.http).await.unwrap();
    let pools = status["pools"].as_array().cloned().unwrap_or_default();
    assert!(!pools.is_empty(), "{status}");
    for pool in pools {
        assert!(pool["shard_open"].as_u64().unwrap() <= POOL, "{pool}");
    }
    eprintln!("{CLIENTS} clients x 5 statements + a transaction in {elapsed:?} on {POOL} connections per shard");

    // COM_RESET_CONNECTION forgets session state but keeps the current database.
    let mut conn = done.pop().unwrap();
    conn.reset().await.unwrap();
    let r = rows(&mut conn, "SELECT @client IS NULL, DATABASE()")
        .await
        .unwrap();
    assert_eq!(r, vec![vec!["1".to_string(), "customer".to_string()]]);
    drop(done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_in_every_mode() {
    let c = TestCluster::start(2).await;
    let shards = c.shard_names("customer");
    let (a, b) = c.ids_on_two_shards(5001);
    let (sa, sb) = (
        integration_tests::hash_shard(a, &shards),
        integration_tests::hash_shard(b, &shards),
    );
    let exists = |id: i64| {
        let shard = integration_tests::hash_shard(id, &shards);
        let c = &c;
        async move {
            count_direct(
                c,
                &shard,
                &format!("SELECT COUNT(*) FROM customer WHERE customer_id = {id}"),
            )
            .await
                == 1
        }
    };
    let mut conn = c.conn("customer").await;
    let insert = |id: i64| format!("INSERT INTO customer (customer_id, name) VALUES ({id}, 'tx')");

    // single: a transaction may not span shards; staying on one is fine.
    conn.query_drop("SET transaction_mode = 'single'")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(insert(a)).await.unwrap();
    let e = conn.query_drop(insert(b)).await.unwrap_err();
    assert_eq!(errno(&e), Some(1105), "{e}");
    assert!(e.to_string().contains("single"), "{e}");
    conn.query_drop("ROLLBACK").await.unwrap();
    assert!(!exists(a).await && !exists(b).await);
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(insert(a)).await.unwrap();
    conn.query_drop(format!(
        "UPDATE customer SET name = 'one' WHERE customer_id = {a}"
    ))
    .await
    .unwrap();
    conn.query_drop("COMMIT").await.unwrap();
    assert!(exists(a).await);
    conn.query_drop(format!("DELETE FROM customer WHERE customer_id = {a}"))
        .await
        .unwrap();

    // Savepoints, including a shard that joins after the savepoint was set.
    conn.query_drop("SET transaction_mode = 'multi'")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(insert(a)).await.unwrap();
    conn.query_drop("SAVEPOINT s1").await.unwrap();
    conn.query_drop(insert(a + 100_000)).await.unwrap_or(());
    conn.query_drop(insert(b)).await.unwrap();
    conn.query_drop("ROLLBACK TO SAVEPOINT s1").await.unwrap();
    let e = conn.query_drop("ROLLBACK TO nosuch").await.unwrap_err();
    assert_eq!(errno(&e), Some(1305), "{e}");
    conn.query_drop("COMMIT").await.unwrap();
    assert!(exists(a).await, "work before the savepoint stays");
    assert!(
        !exists(b).await,
        "a shard that joined after the savepoint is rolled back too"
    );
    assert!(!exists(a + 100_000).await);
    conn.query_drop(format!("DELETE FROM customer WHERE customer_id = {a}"))
        .await
        .unwrap();

    // multi and twopc: both shards commit, or neither.
    for mode in ["multi", "twopc"] {
        conn.query_drop(format!("SET transaction_mode = '{mode}'"))
            .await
            .unwrap();
        conn.query_drop("START TRANSACTION").await.unwrap();
        conn.query_drop(insert(a)).await.unwrap();
        conn.query_drop(insert(b)).await.unwrap();
        conn.query_drop("ROLLBACK").await.unwrap();
        assert!(!exists(a).await && !exists(b).await, "{mode} rollback");
        conn.query_drop("START TRANSACTION").await.unwrap();
        conn.query_drop(insert(a)).await.unwrap();
        conn.query_drop(insert(b)).await.unwrap();
        conn.query_drop("COMMIT").await.unwrap();
        assert!(exists(a).await && exists(b).await, "{mode} commit");
        conn.query_drop(format!(
            "DELETE FROM customer WHERE customer_id IN ({a}, {b})"
        ))
        .await
        .unwrap();
    }
    // twopc leaves nothing behind: no prepared branches, no decisions in etcd.
    for s in [&sa, &sb] {
        let mut d = c.direct("customer", s).await;
        let r = rows(&mut d, "XA RECOVER").await.unwrap();
        assert!(r.is_empty(), "{r:?}");
    }
    let store = c.info.store().await.unwrap();
    let loaded = store.load().await.unwrap();
    assert!(
        !loaded.entries.iter().any(|e| e.key.starts_with("twopc/")),
        "decisions left in etcd"
    );

    // autocommit=0 opens transactions under the session's mode.
    conn.query_drop("SET autocommit = 0").await.unwrap();
    conn.query_drop(insert(a)).await.unwrap();
    conn.query_drop(insert(b)).await.unwrap();
    conn.query_drop("ROLLBACK").await.unwrap();
    assert!(!exists(a).await && !exists(b).await);
    conn.query_drop(insert(a)).await.unwrap();
    conn.query_drop(insert(b)).await.unwrap();
    conn.query_drop("COMMIT").await.unwrap();
    assert!(exists(a).await && exists(b).await);
    conn.query_drop("SET autocommit = 1").await.unwrap();

    // READ ONLY is enforced by the backends.
    conn.query_drop("START TRANSACTION READ ONLY")
        .await
        .unwrap();
    let e = conn
        .query_drop(format!(
            "UPDATE customer SET name = 'x' WHERE customer_id = {a}"
        ))
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1792), "{e}");
    conn.query_drop("ROLLBACK").await.unwrap();

    // A shard connection lost mid-transaction: the transaction can only roll back.
    conn.query_drop(format!(
        "DELETE FROM customer WHERE customer_id IN ({a}, {b})"
    ))
    .await
    .unwrap();
    conn.query_drop("SET transaction_mode = 'multi'")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(insert(a)).await.unwrap();
    conn.query_drop(insert(b)).await.unwrap();
    let mut db = c.direct("customer", &sb).await;
    let victim: Option<u64> = db
        .query_first("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX LIMIT 1")
        .await
        .unwrap();
    db.query_drop(format!("KILL {}", victim.unwrap()))
        .await
        .unwrap();
    let e = conn
        .query_drop(format!(
            "UPDATE customer SET name = 'x' WHERE customer_id = {b}"
        ))
        .await
        .unwrap_err();
    assert!(matches!(errno(&e), Some(2013) | Some(1402)), "{e}");
    let e = conn.query_drop("COMMIT").await.unwrap_err();
    assert_eq!(errno(&e), Some(1402), "{e}");
    assert!(
        !exists(a).await && !exists(b).await,
        "nothing of a doomed transaction commits"
    );

    // A deadlock on one shard rolls back the whole multi-shard transaction, as in MySQL.
    let (a2, _) = c.ids_on_two_shards(a + 1);
    let a2 = if integration_tests::hash_shard(a2, &shards) == sa {
        a2
    } else {
        (a2..)
            .find(|i| integration_tests::hash_shard(*i, &shards) == sa)
            .unwrap()
    };
    conn.query_drop(format!(
        "INSERT INTO customer (customer_id, name) VALUES ({a}, 'd1'), ({a2}, 'd2')"
    ))
    .await
    .unwrap();
    let mut s1 = c.conn("customer").await;
    s1.query_drop("BEGIN").await.unwrap();
    s1.query_drop(format!(
        "UPDATE customer SET name = 's1' WHERE customer_id = {a}"
    ))
    .await
    .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(insert(b)).await.unwrap();
    conn.query_drop(format!(
        "UPDATE customer SET name = 's2' WHERE customer_id = {a2}"
    ))
    .await
    .unwrap();
    let blocked = tokio::spawn(async move {
        let r = s1
            .query_drop(format!(
                "UPDATE customer SET name = 's1' WHERE customer_id = {a2}"
            ))
            .await;
        (s1, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r1 = conn
        .query_drop(format!(
            "UPDATE customer SET name = 's2' WHERE customer_id = {a}"
        ))
        .await;
    let (mut s1, r2) = blocked.await.unwrap();
    let deadlocked = [&r1, &r2]
        .iter()
        .filter(|r| r.as_ref().err().and_then(errno) == Some(1213))
        .count();
    assert_eq!(deadlocked, 1, "{r1:?} {r2:?}");
    if r1.is_err() {
        // Our session was the victim: its insert on the other shard is gone too.
        conn.query_drop("COMMIT").await.unwrap();
        assert!(
            !exists(b).await,
            "the other shard rolled back with the deadlock"
        );
        s1.query_drop("COMMIT").await.unwrap();
    } else {
        s1.query_drop("ROLLBACK").await.unwrap();
        conn.query_drop("COMMIT").await.unwrap();
        assert!(exists(b).await);
    }

    // A bad mode is refused by name.
    let e = conn
        .query_drop("SET transaction_mode = 'sometimes'")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1231), "{e}");

    // A client that disconnects mid-transaction: rolled back, locks released.
    let mut gone = c.conn("customer").await;
    gone.query_drop("BEGIN").await.unwrap();
    gone.query_drop(format!(
        "UPDATE customer SET name = 'lost' WHERE customer_id = {a}"
    ))
    .await
    .unwrap();
    drop(gone);
    let mut other = c.conn("customer").await;
    other
        .query_drop("SET innodb_lock_wait_timeout = 5")
        .await
        .unwrap();
    other
        .query_drop(format!(
            "UPDATE customer SET name = 'kept' WHERE customer_id = {a}"
        ))
        .await
        .unwrap();
    let name: Option<String> = other
        .query_first(format!("SELECT name FROM customer WHERE customer_id = {a}"))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twopc_survives_a_proxy_crash() {
    let mut c = TestCluster::start(2).await;
    let shards = c.shard_names("customer");
    let store = c.info.store().await.unwrap();
    // A proxy that runs recovery every second.
    let recoverer = c
        .info
        .start_proxy_env(
            "recoverer",
            0,
            0,
            &[("SHARDGATE_SESSION_TWOPC_RECOVERY_INTERVAL_S", "1")],
        )
        .await
        .unwrap();
    // Crash after the decision is recorded: recovery must commit both branches.
    // Crash before it: recovery must roll both back.
    for (failpoint, committed) in [
        ("twopc-after-decision", true),
        ("twopc-after-prepare", false),
    ] {
        let p = c
            .info
            .start_proxy_env(
                &format!("crashy-{committed}"),
                0,
                0,
                &[
                    ("SG_FAILPOINT", failpoint),
                    ("SHARDGATE_SESSION_TRANSACTION_MODE", "twopc"),
                ],
            )
            .await
            .unwrap();
        let (a, b) = c.ids_on_two_shards(if committed { 7001 } else { 7101 });
        let mut conn = connect(&p.mysql, "customer").await;
        conn.query_drop("BEGIN").await.unwrap();
        for id in [a, b] {
            conn.query_drop(format!(
                "INSERT INTO customer (customer_id, name) VALUES ({id}, 'xa')"
            ))
            .await
            .unwrap();
        }
        let e = conn.query_drop("COMMIT").await.unwrap_err();
        eprintln!("{failpoint}: the client saw {e}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while process::alive(p.pid) {
            assert!(
                Instant::now() < deadline,
                "the failpoint did not stop the proxy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The branches are prepared and waiting.
        let mut prepared = 0;
        for s in &shards {
            let mut d = c.direct("customer", s).await;
            prepared += rows(&mut d, "XA RECOVER").await.unwrap().len();
        }
        assert_eq!(prepared, 2, "{failpoint}");
        // The recoverer resolves them once the crashed proxy's lease is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut left = 0;
            for s in &shards {
                let mut d = c.direct("customer", s).await;
                left += rows(&mut d, "XA RECOVER").await.unwrap().len();
            }
            if left == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "in-doubt branches not resolved");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut conn = connect(&recoverer.mysql, "customer").await;
        let n: Option<u64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM customer WHERE customer_id IN ({a}, {b})"
            ))
            .await
            .unwrap();
        assert_eq!(n, Some(if committed { 2 } else { 0 }), "{failpoint}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store
        .load()
        .await
        .unwrap()
        .entries
        .iter()
        .any(|e| e.key.starts_with("twopc/") && e.value.windows(6).any(|w| w == b"commit"))
    {
        assert!(
            Instant::now() < deadline,
            "commit decision never cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_timeouts_processlist_warnings_and_sql_prepare() {
    let c = TestCluster::start(2).await;
    let mut victim = c.conn("customer").await;
    let victim_id = victim.id();
    let mut admin = c.conn("customer").await;

    // KILL QUERY stops a scatter query on every shard and leaves the session usable.
    let started = Instant::now();
    let running = tokio::spawn(async move {
        let r = victim
            .query_drop("SELECT COUNT(*), SLEEP(30) FROM customer")
            .await;
        (victim, r)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = rows(&mut admin, "SHOW FULL PROCESSLIST").await.unwrap();
        if list
            .iter()
            .any(|r| r[0] == victim_id.to_string() && r[7].contains("SLEEP(30)"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .query_drop(format!("KILL QUERY {victim_id}"))
        .await
        .unwrap();
    let (mut victim, r) = running.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(errno(&e), Some(1317), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    for s in c.shard_names("customer") {
        let mut d = c.direct("customer", &s).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n: Option<u64> = d
                .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%SLEEP(30)%' AND ID <> CONNECTION_ID()")
                .await
                .unwrap();
            if n == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "backend query on {s} still running"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let one: Option<i64> = victim.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let e = admin.query_drop("KILL 999999").await.unwrap_err();
    assert_eq!(errno(&e), Some(1094), "{e}");

    // Timeouts: SET max_execution_time and the comment hint.
    victim
        .query_drop("SET max_execution_time = 300")
        .await
        .unwrap();
    let t = Instant::now();
    let e = victim.query_drop("SELECT SLEEP(5)").await.unwrap_err();
    assert_eq!(errno(&e), Some(1969), "{e}");
    assert!(t.elapsed() < Duration::from_secs(4));
    victim
        .query_drop("SET max_execution_time = 0")
        .await
        .unwrap();
    let e = victim
        .query_drop(
            "SELECT /*+ MAX_EXECUTION_TIME(200) */ SLEEP(5) FROM customer WHERE customer_id = 1",
        )
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1969), "{e}");
    let ok: Option<i64> = victim.query_first("SELECT SLEEP(0.2)").await.unwrap();
    assert_eq!(ok, Some(0));

    // SHOW WARNINGS reaches the connection the last statement ran on.
    victim
        .query_drop("SELECT CAST('x' AS INT) FROM customer WHERE customer_id = 1")
        .await
        .unwrap();
    let w = rows(&mut victim, "SHOW WARNINGS").await.unwrap();
    assert!(
        w.iter().any(|r| r[2].contains("Truncated incorrect")),
        "{w:?}"
    );
    let e = victim
        .query_drop("UPDATE customer SET customer_id = customer_id + 1 WHERE customer_id = 6")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1235), "{e}");
    let w = rows(&mut victim, "SHOW WARNINGS").await.unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0][0..2], ["Error".to_string(), "1235".to_string()]);

    // ROW_COUNT() and FOUND_ROWS() are the session's, whichever connection answers.
    victim
        .query_drop("UPDATE customer SET name = name WHERE customer_id IN (1, 2, 3)")
        .await
        .unwrap();
    let rc: Option<i64> = victim.query_first("SELECT ROW_COUNT()").await.unwrap();
    assert_eq!(rc, Some(0));
    victim
        .query_drop("UPDATE customer SET name = CONCAT(name, '!') WHERE customer_id IN (1, 2, 3)")
        .await
        .unwrap();
    let rc: Option<i64> = victim.query_first("SELECT ROW_COUNT()").await.unwrap();
    assert_eq!(rc, Some(3));
    let total: Option<u64> = victim
        .query_first("SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    let _ = rows(
        &mut victim,
        "SELECT SQL_CALC_FOUND_ROWS customer_id FROM customer ORDER BY customer_id LIMIT 2",
    )
    .await
    .unwrap();
    let found: Option<u64> = victim.query_first("SELECT FOUND_ROWS()").await.unwrap();
    assert_eq!(found, total);
    let _ = rows(
        &mut victim,
        "SELECT customer_id FROM customer WHERE customer_id IN (1, 2)",
    )
    .await
    .unwrap();
    let found: Option<u64> = victim.query_first("SELECT FOUND_ROWS()").await.unwrap();
    assert_eq!(found, Some(2));

    // SQL-level PREPARE / EXECUTE / DEALLOCATE on the sharded keyspace.
    victim
        .query_drop("PREPARE byid FROM 'SELECT name FROM customer WHERE customer_id = ?'")
        .await
        .unwrap();
    victim.query_drop("SET @id = 2").await.unwrap();
    let n: Option<String> = victim.query_first("EXECUTE byid USING @id").await.unwrap();
    let direct: Option<String> = admin
        .query_first("SELECT name FROM customer WHERE customer_id = 2")
        .await
        .unwrap();
    assert_eq!(n, direct);
    let e = victim.query_drop("EXECUTE byid").await.unwrap_err();
    assert_eq!(errno(&e), Some(1210), "{e}");
    victim.query_drop("DEALLOCATE PREPARE byid").await.unwrap();
    let e = victim
        .query_drop("EXECUTE byid USING @id")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1243), "{e}");

    // Multi-statements across shards: one result per statement.
    let mut r = victim
        .query_iter("SELECT name FROM customer WHERE customer_id = 1; SELECT name FROM customer WHERE customer_id = 2; SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    let mut sets = 0;
    while !r.is_empty() {
        let got: Vec<mysql_async::Row> = r.collect().await.unwrap();
        assert_eq!(got.len(), 1);
        sets += 1;
    }
    drop(r);
    assert_eq!(sets, 3);

    // KILL CONNECTION closes the session between statements.
    admin
        .query_drop(format!("KILL CONNECTION {victim_id}"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(victim.query_drop("SELECT 1").await.is_err());
    let list = rows(&mut admin, "SHOW PROCESSLIST").await.unwrap();
    assert!(
        !list.iter().any(|r| r[0] == victim_id.to_string()),
        "{list:?}"
    );
}
