//! Real clients on the sharded keyspace: the `mariadb` command-line client, sysbench
//! (both prepared-statement modes, ids from the sequence), PyMySQL, sqlx and mysql_async
//! with every binary-protocol parameter type.

use integration_tests::{check_sysbench_run, rows, TestCluster};
use mysql_async::prelude::*;
use mysql_async::Value;

fn host_port(c: &TestCluster) -> (String, String) {
    c.proxy_addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_and_sysbench_on_the_sharded_keyspace() {
    let c = TestCluster::start(2).await;
    let (host, port) = host_port(&c);
    let cli = |sql: &str| {
        let out = std::process::Command::new("mariadb")
            .args([
                "-h", &host, "-P", &port, "-u", "root", "customer", "-e", sql,
            ])
            .output()
            .expect("mariadb client installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli("status");
    assert!(ok, "{err}");
    assert!(out.contains("Current database:\tcustomer"), "{out}");
    assert!(out.contains("-shardgate"), "{out}");
    let (ok, out, err) =
        cli("SELECT CAST(name AS INT) FROM customer WHERE customer_id = 1; SHOW WARNINGS");
    assert!(ok, "{err}");
    assert!(out.contains("Truncated incorrect INTEGER value"), "{out}");
    let (ok, out, err) = cli("SELECT COUNT(*) FROM customer; SHOW COUNT(*) WARNINGS");
    assert!(ok, "{err}");
    assert!(out.contains("@@session.warning_count\n0"), "{out}");
    let (ok, _, err) =
        cli("UPDATE customer SET customer_id = customer_id + 1 WHERE customer_id = 6");
    assert!(!ok && err.contains("ERROR 1235"), "{err}");

    let (ok, out) = c.sysbench("customer", "prepare", &[]);
    assert!(ok, "{out}");
    // The tables were registered in the VSchema with a sequence for their ids, and the
    // rows spread over both shards.
    let mut conn = c.conn("customer").await;
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM sbtest1")
        .await
        .unwrap();
    assert_eq!(n, Some(2000));
    for s in c.shard_names("customer") {
        let mut d = c.direct("customer", &s).await;
        let n: Option<u64> = d.query_first("SELECT COUNT(*) FROM sbtest1").await.unwrap();
        assert!(n.unwrap() > 500, "shard {s} holds {n:?} of 2000 rows");
    }
    for mode in ["auto", "disable"] {
        let (ok, out) = c.sysbench(
            "customer",
            "run",
            &["--threads=4", "--time=4", &format!("--db-ps-mode={mode}")],
        );
        let tx = check_sysbench_run(ok, &out, mode);
        eprintln!("sysbench oltp_read_write on 2 shards, ps-mode {mode}: {tx} transactions");
    }
    let (ok, out) = c.sysbench("customer", "cleanup", &[]);
    assert!(ok, "{out}");
    for s in c.shard_names("customer") {
        let mut d = c.direct("customer", &s).await;
        let left: Vec<String> = d.query("SHOW TABLES LIKE 'sbtest%'").await.unwrap();
        assert!(left.is_empty(), "cleanup left {left:?} on {s}");
    }
}

const PYMYSQL_SCRIPT: &str = r#"
import sys, pymysql
host, port = sys.argv[1], int(sys.argv[2])
conn = pymysql.connect(host=host, port=port, user="root", database="customer")
cur = conn.cursor()
# PyMySQL runs with autocommit off: everything below is in transactions.
cur.execute("SELECT @@autocommit")
assert cur.fetchone()[0] == 0
cur.execute("INSERT INTO customer (email, name) VALUES (%s, %s)", ("py@x", "py'thon"))
new_id = cur.lastrowid
assert new_id > 1000, new_id
cur.executemany("INSERT INTO corder (customer_id, sku, price) VALUES (%s, %s, %s)",
                [(new_id, "SKU-1", 10), (new_id, "SKU-2", 20)])
conn.commit()
cur.execute("SELECT name FROM customer WHERE customer_id = %s", (new_id,))
assert cur.fetchone()[0] == "py'thon"
cur.execute("SELECT SUM(price) FROM corder WHERE customer_id = %s", (new_id,))
assert int(cur.fetchone()[0]) == 30
cur.execute("UPDATE customer SET name = 'gone' WHERE customer_id = %s", (new_id,))
conn.rollback()
cur.execute("SELECT name FROM customer WHERE customer_id = %s", (new_id,))
assert cur.fetchone()[0] == "py'thon"
cur.execute("SELECT customer_id FROM customer ORDER BY customer_id DESC LIMIT 3")
ids = [r[0] for r in cur.fetchall()]
assert ids == sorted(ids, reverse=True) and ids[0] == new_id, ids
cur.execute("SELECT CAST('x' AS INT) FROM customer WHERE customer_id = 1")
cur.execute("SHOW WARNINGS")
assert any("Truncated" in r[2] for r in cur.fetchall())
try:
    cur.execute("SELECT * FROM nosuch")
    raise SystemExit("expected an error")
except pymysql.err.ProgrammingError as e:
    assert e.args[0] == 1146, e
conn.ping()
conn.close()
print("pymysql ok", new_id)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_sqlx_and_mysql_async_work() {
    let c = TestCluster::start(2).await;
    let (host, port) = host_port(&c);

    // PyMySQL (pure Python, text protocol, autocommit off by default).
    let script = c.dir().join("pymysql_check.py");
    std::fs::write(&script, PYMYSQL_SCRIPT).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([&host, &port])
        .output()
        .expect("python3 installed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // sqlx: its connect-time SET, prepared statements for every query, transactions.
    use sqlx::{Connection, Row};
    let url = format!("mysql://root@{host}:{port}/customer");
    let mut sx = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT name, customer_id FROM customer WHERE customer_id = ?")
        .bind(3i64)
        .fetch_one(&mut sx)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(1), 3);
    let mut tx = sx.begin().await.unwrap();
    let done = sqlx::query("INSERT INTO customer (email, name) VALUES (?, ?)")
        .bind("sqlx@x")
        .bind("sqlx")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = done.last_insert_id();
    assert!(id > 1000, "{id}");
    tx.commit().await.unwrap();
    let name: String = sqlx::query_scalar("SELECT name FROM customer WHERE customer_id = ?")
        .bind(id as i64)
        .fetch_one(&mut sx)
        .await
        .unwrap();
    assert_eq!(name, "sqlx");
    let all: Vec<i64> = sqlx::query_scalar("SELECT customer_id FROM customer ORDER BY customer_id")
        .fetch_all(&mut sx)
        .await
        .unwrap();
    assert!(all.windows(2).all(|w| w[0] < w[1]) && all.contains(&(id as i64)));
    let pipes: String = sqlx::query_scalar("SELECT 'a' || 'b'")
        .fetch_one(&mut sx)
        .await
        .unwrap();
    assert_eq!(pipes, "ab", "sqlx's PIPES_AS_CONCAT follows the session");
    sx.close().await.unwrap();

    // mysql_async: every parameter type through the binary protocol, routed by value.
    let mut conn = c.conn("customer").await;
    conn.query_drop(
        "CREATE TABLE typed (id BIGINT NOT NULL PRIMARY KEY, i INT, u BIGINT UNSIGNED, f FLOAT, d DOUBLE, \
         dec1 DECIMAL(12,3), s VARCHAR(40), b VARBINARY(40), t TEXT, dt DATETIME(6), da DATE, tm TIME(3), n INT NULL)",
    )
    .await
    .unwrap();
    let stmt = "INSERT INTO typed (id, i, u, f, d, dec1, s, b, t, dt, da, tm, n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let long_text = "x".repeat(3000);
    for id in 1..=6i64 {
        let params: Vec<Value> = vec![
            Value::Int(id),
            Value::Int(-7 * id),
            Value::UInt(u64::MAX - id as u64),
            Value::Float(1.5),
            Value::Double(2.25 * id as f64),
            Value::Bytes(format!("{id}.125").into_bytes()),
            Value::Bytes(format!("name ' {id}").into_bytes()),
            Value::Bytes(vec![0, 1, 2, 255, id as u8]),
            Value::Bytes(long_text.clone().into_bytes()),
            Value::Date(2024, 2, 29, 13, 14, 15, 123456),
            Value::Date(2001, 12, 31, 0, 0, 0, 0),
            Value::Time(true, 0, 1, 2, 3, 4000),
            Value::NULL,
        ];
        conn.exec_drop(stmt, params).await.unwrap();
    }
    let r = rows(
        &mut conn,
        "SELECT id, i, u, f, d, dec1, s, HEX(b), LENGTH(t), dt, da, tm, n FROM typed WHERE id = 4",
    )
    .await
    .unwrap();
    assert_eq!(
        r[0],
        vec![
            "4",
            "-28",
            &(u64::MAX - 4).to_string(),
            "1.5",
            "9",
            "4.125",
            "name ' 4",
            "000102FF04",
            "3000",
            "2024-02-29 13:14:15.123456",
            "2001-12-31",
            "-01:02:03.004",
            "NULL"
        ]
    );
    // Binary-protocol results, routed by the bound value, for each row's own shard.
    for id in 1..=6i64 {
        let got: Option<(i64, String, Option<i64>)> = conn
            .exec_first("SELECT id, s, n FROM typed WHERE id = ?", (id,))
            .await
            .unwrap();
        assert_eq!(got, Some((id, format!("name ' {id}"), None)));
    }
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM typed WHERE id IN (?, ?, ?)",
            (1, 3, 5),
        )
        .await
        .unwrap();
    assert_eq!(n, Some(3));
}
