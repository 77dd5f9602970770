//! Users with a role on some keyspaces, kept in etcd and followed live (issue 15): the
//! privilege matrix (role x statement kind x keyspace) with MySQL's error numbers, SHOW
//! DATABASES / PROCESSLIST / KILL limited to what the user may see, and `shardctl user
//! add / remove / list` reaching two running proxies.

use integration_tests::TestCluster;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::time::{Duration, Instant};

const PW: &str = "Pr1v-test";

async fn login(addr: &str, user: &str, db: Option<&str>) -> Result<Conn, mysql_async::Error> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let opts = OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().unwrap())
        .prefer_socket(false)
        .user(Some(user.to_string()))
        .pass(Some(PW.to_string()))
        .db_name(db.map(str::to_string));
    Conn::new(opts).await
}

/// The MySQL error number of a failed statement (0 when it succeeded).
fn errno<T>(r: &Result<T, mysql_async::Error>) -> u16 {
    match r {
        Ok(_) => 0,
        Err(mysql_async::Error::Server(e)) => e.code,
        Err(e) => panic!("not a server error: {e}"),
    }
}

fn add_user(c: &TestCluster, name: &str, args: &[&str]) {
    let mut all = vec!["user", "add", name, "--password-stdin"];
    all.extend_from_slice(args);
    let (code, out) = c.shardctl_input(&all, &format!("{PW}\n"));
    assert_eq!(code, 0, "{out}");
}

/// Waits until `user` can log in on `addr`; returns how long that took.
async fn until_login(addr: &str, user: &str) -> Duration {
    let start = Instant::now();
    loop {
        if login(addr, user, None).await.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{user} cannot log in on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_what_it_may_on_the_keyspaces_it_has() {
    let c = TestCluster::start(2).await;
    let addr = c.proxy_addr();
    for (name, role) in [("r", "reader"), ("w", "writer"), ("a", "admin")] {
        add_user(&c, name, &["--role", role, "--keyspaces", "customer"]);
    }
    until_login(&addr, "a").await;

    // (kind, statement, least role, errno when refused): 1142 for a statement on a
    // table, 1227 for an admin command that names none.
    let matrix: &[(&str, &str, &str, u16)] = &[
        ("read", "SELECT COUNT(*) FROM customer", "reader", 0),
        (
            "information_schema",
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'customer'",
            "reader",
            0,
        ),
        ("show", "SHOW TABLES", "reader", 0),
        (
            "locking read",
            "SELECT * FROM customer WHERE customer_id = 1 FOR UPDATE",
            "writer",
            1142,
        ),
        (
            "insert",
            "INSERT INTO customer (customer_id, email) VALUES ({id}, 'p@x')",
            "writer",
            1142,
        ),
        (
            "update",
            "UPDATE customer SET name = 'p' WHERE customer_id = {id}",
            "writer",
            1142,
        ),
        (
            "delete",
            "DELETE FROM customer WHERE customer_id = {id}",
            "writer",
            1142,
        ),
        (
            "create",
            "CREATE TABLE priv_{user} (id BIGINT NOT NULL PRIMARY KEY)",
            "admin",
            1142,
        ),
        ("drop", "DROP TABLE priv_{user}", "admin", 1142),
        (
            "system schema",
            "SELECT COUNT(*) FROM mysql.user",
            "admin",
            1142,
        ),
        ("server command", "SHOW GRANTS", "admin", 1227),
        ("one shard", "USE `customer:-80`", "admin", 1227),
    ];
    let rank = |r: &str| {
        ["reader", "writer", "admin"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    let mut checked = 0;
    for (i, (user, role)) in [("r", "reader"), ("w", "writer"), ("a", "admin")]
        .into_iter()
        .enumerate()
    {
        let mut conn = login(&addr, user, Some("customer")).await.unwrap();
        for (kind, sql, least, refused) in matrix {
            let sql = sql
                .replace("{id}", &(9000 + i).to_string())
                .replace("{user}", user);
            let want = if rank(role) >= rank(least) {
                0
            } else {
                *refused
            };
            let got = errno(&conn.query_drop(&sql).await);
            assert_eq!(got, want, "{role} {kind}: {sql}");
            checked += 1;
            if *kind == "one shard" && got == 0 {
                conn.query_drop("USE customer").await.unwrap();
            }
        }
        // The keyspace axis: commerce is not granted, whatever the role.
        for sql in [
            "SELECT COUNT(*) FROM commerce.product",
            "INSERT INTO commerce.product (sku) VALUES ('priv')",
            "USE commerce",
        ] {
            assert_eq!(errno(&conn.query_drop(sql).await), 1044, "{role}: {sql}");
            checked += 1;
        }
        let dbs: Vec<String> = conn.query("SHOW DATABASES").await.unwrap();
        assert!(dbs.contains(&"customer".to_string()), "{dbs:?}");
        assert!(!dbs.contains(&"commerce".to_string()), "{role}: {dbs:?}");
        assert_eq!(
            errno(&login(&addr, user, Some("commerce")).await),
            1044,
            "{role} connecting to commerce"
        );
    }
    println!("privilege matrix: {checked} cases");
    // A message names the user, like MySQL's.
    let mut r = login(&addr, "r", Some("customer")).await.unwrap();
    let e = r
        .query_drop("DELETE FROM customer WHERE customer_id = 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DELETE command denied to user 'r'@'localhost' for table 'customer'"),
        "{e}"
    );
    // The config file's root (admin on every keyspace) is unchanged.
    let mut root = c.conn("customer").await;
    root.query_drop("SELECT COUNT(*) FROM commerce.product")
        .await
        .unwrap();

    // PROCESSLIST and KILL reach only the user's own sessions, unless admin.
    let mut w = login(&addr, "w", Some("customer")).await.unwrap();
    let w_id = w.id();
    let users = |rows: Vec<mysql_async::Row>| -> Vec<String> {
        rows.into_iter()
            .map(|row| row.get::<String, _>(1).unwrap())
            .collect()
    };
    let seen = users(r.query("SHOW PROCESSLIST").await.unwrap());
    assert!(
        !seen.is_empty() && seen.iter().all(|u| u == "r"),
        "{seen:?}"
    );
    let mut a = login(&addr, "a", Some("customer")).await.unwrap();
    let seen = users(a.query("SHOW PROCESSLIST").await.unwrap());
    for u in ["r", "w", "a", "root"] {
        assert!(seen.iter().any(|x| x == u), "admin sees {u}: {seen:?}");
    }
    assert_eq!(errno(&r.query_drop(format!("KILL {w_id}")).await), 1095);
    w.query_drop("SELECT 1").await.unwrap();
    a.query_drop(format!("KILL {w_id}")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(w.query_drop("SELECT 1").await.is_err(), "killed by admin");
    // One's own session can be killed by oneself.
    let mut r2 = login(&addr, "r", None).await.unwrap();
    let r2_id = r2.id();
    r.query_drop(format!("KILL QUERY {r2_id}")).await.unwrap();
    r2.query_drop("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_with_shardctl_reach_two_proxies_and_removal_refuses_them() {
    let mut c = TestCluster::start(2).await;
    let second = c.info.start_proxy("proxy2", 0, 0).await.unwrap();
    let proxies = [c.proxy_addr(), second.mysql.clone()];
    assert_ne!(errno(&login(&proxies[0], "live", None).await), 0);

    // Bad requests are refused as such (exit code 65) and write nothing.
    let (code, out) = c.shardctl_input(
        &[
            "user",
            "add",
            "live",
            "--password-stdin",
            "--role",
            "superuser",
        ],
        "x\n",
    );
    assert_eq!(code, 65, "{out}");
    let (code, out) = c.shardctl_input(
        &[
            "user",
            "add",
            "live",
            "--password-stdin",
            "--keyspaces",
            "no/such",
        ],
        "x\n",
    );
    assert_eq!(code, 65, "{out}");

    add_user(&c, "live", &["--role", "reader", "--keyspaces", "customer"]);
    let mut took = Vec::new();
    for p in &proxies {
        took.push(until_login(p, "live").await);
    }
    println!("user add -> login: {took:?}");
    // Followed within a second (measured from the command's end; the figure goes to the
    // issue; the bound here only catches a proxy that does not follow at all).
    for t in &took {
        assert!(*t < Duration::from_secs(5), "{took:?}");
    }
    // caching_sha2_password with the RSA exchange (the key is made when a user that
    // needs it first appears), on a plain connection.
    let (host, port) = proxies[1].rsplit_once(':').unwrap();
    let out = std::process::Command::new("mariadb")
        .args(["-h", host, "-P", port, "--protocol=tcp", "-u", "live"])
        .arg(format!("-p{PW}"))
        .args(["--skip-ssl", "--default-auth=caching_sha2_password"])
        .args(["-N", "-e", "SELECT COUNT(*) > 0 FROM customer.customer"])
        .output()
        .expect("mariadb client installed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut live = login(&proxies[1], "live", Some("customer")).await.unwrap();
    live.query_drop("SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    assert_eq!(errno(&live.query_drop("DELETE FROM customer").await), 1142);

    // Listed, without hashes.
    let (ok, out) = c.shardctl(&["user", "list", "--json"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "live", "{out}");
    assert_eq!(list[0]["role"], "reader", "{out}");
    assert!(!out.contains("sha256:") && !out.contains('*'), "{out}");
    // Adding it again is refused; --replace changes its role.
    let (code, out) = c.shardctl_input(
        &["user", "add", "live", "--password-stdin"],
        &format!("{PW}\n"),
    );
    assert_eq!(code, 65, "{out}");
    add_user(&c, "live", &["--role", "writer", "--replace"]);
    let start = Instant::now();
    loop {
        let mut conn = login(&proxies[0], "live", Some("customer")).await.unwrap();
        if conn
            .query_drop("UPDATE customer SET name = name WHERE customer_id = -1")
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "role change not followed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Removed: new logins are refused on both proxies; the open session goes on.
    let (ok, out) = c.shardctl(&["user", "remove", "live"]);
    assert!(ok, "{out}");
    let start = Instant::now();
    for p in &proxies {
        loop {
            match errno(&login(p, "live", None).await) {
                1045 => break,
                0 => {}
                other => panic!("unexpected errno {other}"),
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still accepted on {p}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!("user remove -> refused: {:?}", start.elapsed());
    live.query_drop("SELECT 1").await.unwrap();
    let (ok, out) = c.shardctl(&["user", "remove", "live"]);
    assert!(!ok && out.contains("no user live"), "{out}");
}
