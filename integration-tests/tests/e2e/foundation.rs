//! The foundation: real clients through the proxy on the unsharded keyspace, bad inputs,
//! backend outages, graceful shutdown.

use integration_tests::{errno, rows, url_for, TestCluster};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use shardgate_resharder::local::{mariadb, process};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_works_like_against_mariadb() {
    let c = TestCluster::start(2).await;
    let mut conn = c.conn("commerce").await;

    let r = rows(&mut conn, "SELECT sku, price FROM product ORDER BY sku")
        .await
        .unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0], vec!["SKU-1001", "100"]);

    conn.query_drop(
        "CREATE TABLE item (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) UNIQUE)",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO item (name) VALUES ('a'), ('b')")
        .await
        .unwrap();
    assert_eq!(conn.affected_rows(), 2);
    assert_eq!(conn.last_insert_id(), Some(1));
    conn.query_drop("UPDATE item SET name = 'c' WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(conn.affected_rows(), 1);
    assert!(conn.info().contains("Rows matched: 1"), "{}", conn.info());

    // Prepared statements (binary protocol) with parameters.
    let name: Option<String> = conn
        .exec_first("SELECT name FROM item WHERE id = ?", (2,))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("c"));
    conn.exec_drop("INSERT INTO item (name) VALUES (?)", ("d",))
        .await
        .unwrap();
    assert_eq!(conn.last_insert_id(), Some(3));

    // Backend errors keep their codes.
    let e = conn
        .query_drop("INSERT INTO item (name) VALUES ('a')")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1062), "{e}");
    let e = conn
        .query_drop("SELECT * FROM nosuchtable")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1146), "{e}");
    // ... and the connection stays usable.
    assert_eq!(
        rows(&mut conn, "SELECT COUNT(*) FROM item").await.unwrap()[0][0],
        "3"
    );

    // Transactions: rollback discards, commit keeps (checked on the backend itself).
    let mut direct = c.direct("commerce", "-").await;
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO item (name) VALUES ('rolled-back')")
        .await
        .unwrap();
    conn.query_drop("ROLLBACK").await.unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    conn.query_drop("INSERT INTO item (name) VALUES ('committed')")
        .await
        .unwrap();
    let before: Vec<String> = direct
        .query("SELECT name FROM item WHERE name = 'committed'")
        .await
        .unwrap();
    assert!(before.is_empty(), "uncommitted row visible");
    conn.query_drop("COMMIT").await.unwrap();
    let names: Vec<String> = direct
        .query("SELECT name FROM item ORDER BY id")
        .await
        .unwrap();
    assert_eq!(names, vec!["a", "c", "d", "committed"]);

    // Multi-statements: one result per statement.
    let mut results = conn
        .query_iter("SELECT 1; SELECT 2, 3; UPDATE item SET name = name")
        .await
        .unwrap();
    let first: Vec<u8> = results.collect().await.unwrap();
    let second: Vec<(u8, u8)> = results.collect().await.unwrap();
    drop(results);
    assert_eq!(first, vec![1]);
    assert_eq!(second, vec![(2, 3)]);

    // Keyspaces are databases.
    let dbs: Vec<String> = conn.query("SHOW DATABASES").await.unwrap();
    assert!(
        dbs.contains(&"commerce".to_string()) && dbs.contains(&"customer".to_string()),
        "{dbs:?}"
    );
    let db: Option<String> = conn.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("commerce"));
    let tables: Vec<String> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'commerce' ORDER BY table_name")
        .await
        .unwrap();
    assert!(tables.contains(&"product".to_string()), "{tables:?}");
    // Drivers must never learn the backend's socket (they would bypass the proxy).
    let socket: Option<Option<String>> = conn.query_first("SELECT @@socket").await.unwrap();
    assert_eq!(socket, Some(None));
    conn.query_drop("USE customer").await.unwrap();
    let db: Option<String> = conn.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("customer"));
    let e = conn.query_drop("USE nosuchdb").await.unwrap_err();
    assert_eq!(errno(&e), Some(1049));
    conn.disconnect().await.unwrap();

    // Without a database, unqualified tables are an error; qualified ones work.
    let mut conn = c.conn("").await;
    let e = conn.query_drop("SELECT * FROM product").await.unwrap_err();
    assert_eq!(errno(&e), Some(1046), "{e}");
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM commerce.product")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_and_sysbench_work() {
    let c = TestCluster::start(2).await;
    let (host, port) = c
        .proxy_addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let cli = |sql: &str| {
        let out = std::process::Command::new("mariadb")
            .args([
                "-h", &host, "-P", &port, "-u", "root", "commerce", "-e", sql,
            ])
            .output()
            .expect("mariadb client installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli("SELECT sku FROM product WHERE price > 50 ORDER BY sku");
    assert!(ok, "{err}");
    assert_eq!(out, "sku\nSKU-1001\nSKU-1004\nSKU-1005\n");
    let (ok, out, err) = cli("status");
    assert!(ok, "{err}");
    assert!(
        out.contains("-shardgate")
            && out.contains("Current database:\tcommerce")
            && out.contains("Uptime:"),
        "{out}"
    );
    let (ok, out, err) = cli("SELECT CAST('x' AS INT); SHOW WARNINGS");
    assert!(ok, "{err}");
    assert!(out.contains("Truncated incorrect"), "{out}");
    let (ok, _, err) = cli("SELECT * FROM nosuch");
    assert!(!ok && err.contains("ERROR 1146"), "{err}");

    let sysbench = |cmd: &str, extra: &[&str]| c.sysbench("commerce", cmd, extra);
    let (ok, out) = sysbench("prepare", &[]);
    assert!(ok, "{out}");
    for mode in ["auto", "disable"] {
        let (ok, out) = sysbench(
            "run",
            &["--threads=4", "--time=4", &format!("--db-ps-mode={mode}")],
        );
        integration_tests::check_sysbench_run(ok, &out, mode);
    }
    let (ok, out) = sysbench("cleanup", &[]);
    assert!(ok, "{out}");
    let mut direct = c.direct("commerce", "-").await;
    let left: Vec<String> = direct.query("SHOW TABLES LIKE 'sbtest%'").await.unwrap();
    assert!(left.is_empty(), "cleanup left {left:?}");
}

/// Logs in with the raw protocol (our own client) and returns the connection.
async fn raw_login(addr: &str) -> shardgate_proxy::backend::conn::BackendConn {
    shardgate_proxy::backend::conn::BackendConn::connect(
        &shardgate_proxy::backend::conn::ConnectOptions {
            addr: addr.to_string(),
            user: "root".into(),
            password: String::new(),
            database: "commerce".into(),
            charset: 45,
            extra_capabilities: 0,
            connect_timeout: Duration::from_secs(5),
            tls: None,
        },
    )
    .await
    .expect("raw login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_hurt_nobody() {
    let mut c = TestCluster::start(1).await;
    let addr = c.proxy_addr();

    // Wrong password, unknown user, unknown database.
    let e = Conn::new(
        Opts::from_url(&format!(
            "mysql://root:secret@{addr}/commerce?prefer_socket=false"
        ))
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(errno(&e), Some(1045), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("Access denied for user 'root'") && msg.contains("using password: YES"),
        "{msg}"
    );
    let e = Conn::new(
        Opts::from_url(&format!(
            "mysql://nobody@{addr}/commerce?prefer_socket=false"
        ))
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(errno(&e), Some(1045), "{e}");
    let e = Conn::new(Opts::from_url(&url_for(&addr, "nosuchdb")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1049), "{e}");

    // A client that stays connected through all of this.
    let mut bystander = c.conn("commerce").await;

    // Garbage instead of a handshake response; a truncated packet; a silent client.
    for junk in [
        &b"\x05\x00\x00\x01garbage"[..],
        &b"\xff\xff"[..],
        &b"\x30\x00\x00\x01\x00\x00"[..],
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut greeting = [0u8; 512];
        let _ = s.read(&mut greeting).await.unwrap();
        s.write_all(junk).await.unwrap();
        drop(s);
    }
    // Garbage after a successful login: unknown commands get 1047 and the session lives on.
    let mut raw = raw_login(&addr).await;
    raw.send_command(0x20, b"nonsense").await.unwrap();
    let p = raw.read().await.unwrap();
    let err = shardgate_proxy::wire::ErrPacket::decode(&p).unwrap();
    assert_eq!(err.code, 1047, "{err:?}");
    raw.finish_after_error();
    raw.ping().await.unwrap();
    let r = raw.query("SELECT 41 + 1").await.unwrap();
    assert_eq!(r.scalar().as_deref(), Some("42"));
    // A prepared-statement execute for a statement that does not exist: 1243.
    raw.send_command(0x17, &[99, 0, 0, 0, 0, 1, 0, 0, 0])
        .await
        .unwrap();
    let p = raw.read().await.unwrap();
    assert_eq!(
        shardgate_proxy::wire::ErrPacket::decode(&p).unwrap().code,
        1243
    );
    raw.finish_after_error();
    raw.ping().await.unwrap();

    // Oversized packets: 1153 from a proxy with a 1 MiB limit.
    c.info
        .start_proxy_env(
            "small",
            0,
            0,
            &[("SHARDGATE_PROXY_MAX_ALLOWED_PACKET", "1048576")],
        )
        .await
        .unwrap();
    let small = c
        .info
        .proxies
        .iter()
        .find(|p| p.id == "small")
        .unwrap()
        .mysql
        .clone();
    let mut raw = raw_login(&small).await;
    let big = format!("SELECT '{}'", "x".repeat(2 << 20));
    // The proxy answers as soon as it sees the length, possibly before all is written.
    let _ = raw.send_command(0x03, big.as_bytes()).await;
    let p = raw.read().await.unwrap();
    assert_eq!(
        shardgate_proxy::wire::ErrPacket::decode(&p).unwrap().code,
        1153
    );
    // Just under the limit is fine.
    let mut raw = raw_login(&small).await;
    let ok = format!("SELECT LENGTH('{}')", "x".repeat(1000 * 1000));
    assert_eq!(
        raw.query(&ok).await.unwrap().scalar().as_deref(),
        Some("1000000")
    );

    // Payloads over 16 MiB are split and joined correctly (default 64 MiB limit).
    let mut conn = c.conn("commerce").await;
    let n = 17 * 1024 * 1024 + 3;
    let len: Option<u64> = conn
        .exec_first("SELECT LENGTH(?)", (vec![b'y'; n],))
        .await
        .unwrap();
    assert_eq!(len, Some(n as u64));
    let s: Option<Vec<u8>> = conn
        .query_first(format!("SELECT REPEAT('z', {n})"))
        .await
        .unwrap();
    assert_eq!(s.map(|v| v.len()), Some(n));

    // The bystander never noticed.
    let v: Option<u8> = bystander.query_first("SELECT 7").await.unwrap();
    assert_eq!(v, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_outage_gives_clear_errors_and_recovers() {
    let c = TestCluster::start(1).await;
    let mut conn = c.conn("commerce").await;
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM product")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
    let m = c.info.instance("commerce").unwrap().clone();
    assert!(process::stop(m.pid, Duration::from_secs(30)));

    let e = conn
        .query_drop("SELECT COUNT(*) FROM product")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(errno(&e).is_some(), "expected a MySQL error, got {msg}");
    // A new client gets a clear message naming the shard (mysql_async queries the server
    // while connecting, so the error arrives there).
    let e = Conn::new(Opts::from_url(&c.url("commerce")).unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("commerce/-") && e.to_string().contains(&m.addr()),
        "{e}"
    );

    let restarted = mariadb::start(&m.name, &m.datadir, m.port).await.unwrap();
    // The old session recovers (its dead backend connection was dropped)...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match conn
            .query_first::<u64, _>("SELECT COUNT(*) FROM product")
            .await
        {
            Ok(Some(5)) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "proxy did not recover: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // ... and new ones work.
    let mut fresh = c.conn("commerce").await;
    let n: Option<u64> = fresh
        .query_first("SELECT COUNT(*) FROM product")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
    process::stop(restarted.pid, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_statements_finish() {
    let c = TestCluster::start(1).await;
    let mut busy = c.conn("commerce").await;
    let mut idle = c.conn("commerce").await;
    let pid = c.info.proxies[0].pid;
    let running = tokio::spawn(async move {
        let r: Option<u8> = busy.query_first("SELECT SLEEP(2) + 1").await.unwrap();
        r
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    process::signal(pid, libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once shutdown started.
    assert!(Conn::new(Opts::from_url(&c.url("commerce")).unwrap())
        .await
        .is_err());
    // The running statement completes with its result.
    assert_eq!(running.await.unwrap(), Some(1));
    // Idle sessions are closed.
    assert!(idle.query_drop("SELECT 1").await.is_err());
    let start = Instant::now();
    while process::alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "proxy did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.proxy_log().contains("all client connections closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_commands_behave_like_mariadb() {
    let c = TestCluster::start(1).await;
    let addr = c.proxy_addr();

    // COM_FIELD_LIST (the mariadb CLI's tab completion): column definitions, then EOF.
    let mut raw = raw_login(&addr).await;
    raw.send_command(0x04, b"product\0").await.unwrap();
    let mut names = Vec::new();
    loop {
        let p = raw.read().await.unwrap();
        if p[0] == 0xfe && p.len() < 0xffffff {
            raw.finish(0);
            break;
        }
        names.push(shardgate_proxy::wire::ColumnDef::decode(&p).unwrap().name);
    }
    assert_eq!(names, vec!["sku", "description", "price"]);

    // COM_SET_OPTION: multi-statements off, then on again.
    raw.send_command(0x1b, &[1, 0]).await.unwrap();
    let _ = raw.read().await.unwrap();
    raw.finish(0);
    let e = raw.query("SELECT 1; SELECT 2").await.unwrap_err();
    assert!(e.to_string().contains("syntax"), "{e}");
    raw.send_command(0x1b, &[0, 0]).await.unwrap();
    let _ = raw.read().await.unwrap();
    raw.finish(0);
    raw.send_command(0x03, b"SELECT 1; SELECT 2").await.unwrap();
    let results = raw.collect().await.unwrap();
    assert_eq!(results.len(), 2);

    // COM_STATISTICS answers with a plain string.
    raw.send_command(0x09, &[]).await.unwrap();
    let p = raw.read().await.unwrap();
    raw.finish(0);
    assert!(String::from_utf8_lossy(&p).starts_with("Uptime:"));

    // COM_RESET_CONNECTION (mysql_async's pool sends it when a connection comes back):
    // user variables and session settings are gone afterwards.
    let pool = mysql_async::Pool::new(Opts::from_url(&c.url("commerce")).unwrap());
    {
        let mut conn = pool.get_conn().await.unwrap();
        conn.query_drop("SET @x = 42, SESSION sql_mode = 'ANSI_QUOTES'")
            .await
            .unwrap();
        let x: Option<u8> = conn.query_first("SELECT @x").await.unwrap();
        assert_eq!(x, Some(42));
    }
    let mut conn = pool.get_conn().await.unwrap();
    let x: Option<Option<u8>> = conn.query_first("SELECT @x").await.unwrap();
    assert_eq!(x, Some(None));
    let mode: Option<String> = conn.query_first("SELECT @@sql_mode").await.unwrap();
    assert!(!mode.unwrap_or_default().contains("ANSI_QUOTES"));
    drop(conn);
    pool.disconnect().await.unwrap();

    // A client that goes away in the middle of a result leaves no trace: the next
    // clients get whole, correct answers.
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut raw = raw_login(&addr).await;
        raw.send_command(0x03, b"SELECT REPEAT('x', 1000) FROM information_schema.columns a, information_schema.columns b LIMIT 200000").await.unwrap();
        let _ = raw.read().await.unwrap();
        drop(raw);
        drop(s.write_all(b"").await);
    }
    let mut conn = c.conn("commerce").await;
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM product")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
}
