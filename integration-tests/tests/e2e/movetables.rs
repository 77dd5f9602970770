//! MoveTables under load (issue 13): a table of the unsharded keyspace `commerce` moves
//! into the sharded keyspace `customer` while writers that say `USE commerce` write and
//! read it through two proxies; the controller is SIGKILLed during the copy and resumed;
//! after cutover the same clients reach the table in `customer`, a rollback sends them
//! back, a second cutover and `complete` drop the source table. Nothing acknowledged is
//! lost, nothing deleted comes back, no read is stale.

use crate::ledger::{check, check_ledger, writer, Ledger, Workload};
use integration_tests::{errno, rows, TestCluster};
use mysql_async::prelude::Queryable;
use shardgate_resharder::local::ClusterInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCOUNTS: Workload = Workload {
    db: "commerce",
    table: "accounts",
};

const WORKFLOW: &str = "commerce2customer";

fn shardctl_ok(c: &TestCluster, args: &[&str]) -> String {
    let (ok, out) = c.shardctl(args);
    assert!(ok, "shardctl {args:?} failed:\n{out}");
    out
}

async fn etcd_json(c: &TestCluster, key: &str) -> serde_json::Value {
    let info = ClusterInfo::load(c.dir()).unwrap();
    let store = info.store().await.unwrap();
    match store.get(key).await.unwrap() {
        Some(e) => serde_json::from_slice(&e.value).unwrap(),
        None => serde_json::Value::Null,
    }
}

/// Whether the commerce shard still has the table.
async fn source_has_table(c: &TestCluster) -> bool {
    let mut d = c.direct("commerce", "-").await;
    let n: Option<u64> = d
        .query_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'accounts'",
        )
        .await
        .unwrap();
    n == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn movetables_under_load_kill_resume_cutover_rollback_complete() {
    let mut c = TestCluster::start(2).await;
    let p2 = c.info.start_proxy("proxy2", 0, 0).await.unwrap();
    let p1 = c.proxy_addr();

    // The table starts in the unsharded keyspace, with enough rows for a copy that can be
    // interrupted (loaded on the shard directly: quicker than through a debug proxy).
    let mut d = c.direct("commerce", "-").await;
    d.query_drop("CREATE TABLE accounts (customer_id BIGINT NOT NULL, email VARCHAR(128), name VARCHAR(128), created_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (customer_id))").await.unwrap();
    for part in (100_000i64..120_000).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = part
            .iter()
            .map(|i| format!("({i}, 'bulk{i}@example.com', 'bulk')"))
            .collect();
        d.query_drop(format!(
            "INSERT INTO accounts (customer_id, email, name) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }

    // A plan first: nothing changes, the table is found with its rows.
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, addr) in [&p1, &p2.mysql, &p1, &p2.mysql].iter().enumerate() {
        writers.push(tokio::spawn(writer(
            addr.to_string(),
            ACCOUNTS,
            1_000_000 * (i as i64 + 1),
            ledger.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Start, and kill the controller during the copy; resume to the end of the copy.
    let bin = shardgate_resharder::local::process::find_program("shardctl").unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("--dir")
        .arg(c.dir())
        .args([
            "movetables",
            "start",
            "--from",
            "commerce",
            "--to",
            "customer",
            "--tables",
            "accounts",
            "--chunk-rows",
            "500",
            "--max-rows-per-s",
            "8000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(c.dir().join("movetables.err")).unwrap())
        .spawn()
        .unwrap();
    let key = format!("workflows/{WORKFLOW}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = etcd_json(&c, &key).await;
        let copied = w["tables"]["accounts"]["rows_copied"].as_u64().unwrap_or(0);
        if w["phase"] == "copying" && copied >= 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "copy never started: {w}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the controller ended before being killed: {w}\n{}",
            std::fs::read_to_string(c.dir().join("movetables.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let killed_at = etcd_json(&c, &key).await;
    assert_eq!(killed_at["phase"], "copying");
    // The table was cut into key ranges copied in parallel, each resumed on its own.
    assert!(
        killed_at["tables"]["accounts"]["splits"]["-"].is_array(),
        "{killed_at}"
    );

    // While the copy runs, the half-filled target is never read: `customer.accounts`
    // is routed to the source.
    let mut probe = c.conn("customer").await;
    let n: Vec<Vec<String>> = rows(
        &mut probe,
        "SELECT COUNT(*) FROM accounts WHERE customer_id BETWEEN 100000 AND 119999",
    )
    .await
    .unwrap();
    assert_eq!(n[0][0], "20000", "customer.accounts read the source");
    // DDL on either keyspace waits for the workflow.
    let e = probe
        .query_drop("ALTER TABLE commerce.accounts ADD COLUMN x INT")
        .await
        .unwrap_err();
    assert!(errno(&e).is_some(), "{e}");

    let out = shardctl_ok(&c, &["movetables", "resume", "--workflow", WORKFLOW]);
    let w = etcd_json(&c, &key).await;
    assert_eq!(w["phase"], "backfilled", "{out}\n{w}");
    shardctl_ok(&c, &["movetables", "verify", "--workflow", WORKFLOW]);
    assert_eq!(etcd_json(&c, &key).await["verify"]["failed"], 0);

    // Cutover: clients saying commerce reach customer.
    shardctl_ok(&c, &["movetables", "cutover", "--workflow", WORKFLOW]);
    let w = etcd_json(&c, &key).await;
    assert_eq!(w["phase"], "cut_over", "{w}");
    let first_pause = w["cutover"]["pause_ms"].as_u64().unwrap();
    let rules = etcd_json(&c, "routing_rules").await;
    assert_eq!(
        rules["rules"][0]["from_table"], "commerce.accounts",
        "{rules}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&c, &ledger, ACCOUNTS).await;
    // The source copy refuses writes that do not come through the routing.
    let e = d
        .query_drop("UPDATE accounts SET name = 'stale' WHERE customer_id = 100000")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1644), "{e}");

    // Rollback: the source serves again, with every write made meanwhile.
    shardctl_ok(&c, &["movetables", "rollback", "--workflow", WORKFLOW]);
    assert_eq!(etcd_json(&c, &key).await["phase"], "backfilled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let _still = ledger.gate.write().await;
        check_ledger(&c, &ledger, ACCOUNTS).await;
    }

    // Cutover again and complete: the source table is dropped, the rule stays.
    shardctl_ok(&c, &["movetables", "cutover", "--workflow", WORKFLOW]);
    let second_pause = etcd_json(&c, &key).await["cutover"]["pause_ms"]
        .as_u64()
        .unwrap();
    shardctl_ok(
        &c,
        &["movetables", "complete", "--workflow", WORKFLOW, "--yes"],
    );
    let status = shardctl_ok(&c, &["movetables", "status", "--workflow", WORKFLOW]);
    assert!(status.contains("phase    complete"), "{status}");
    assert!(!source_has_table(&c).await, "the source copy was dropped");
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    check(&c, &ledger, ACCOUNTS).await;
    // Qualified names reach it too, and DDL works again.
    let mut conn = c.conn("customer").await;
    let via_commerce: Vec<Vec<String>> = rows(&mut conn, "SELECT COUNT(*) FROM commerce.accounts")
        .await
        .unwrap();
    let via_customer: Vec<Vec<String>> = rows(&mut conn, "SELECT COUNT(*) FROM customer.accounts")
        .await
        .unwrap();
    assert_eq!(via_commerce, via_customer);
    conn.query_drop("ALTER TABLE accounts ADD COLUMN note VARCHAR(16)")
        .await
        .unwrap();
    let errors = ledger.errors.lock().unwrap().clone();
    eprintln!(
        "movetables under load: {} acknowledged writes, {} rows tracked, {} client errors, {} stale reads, longest write {} ms; pauses: cutover {first_pause} ms, second cutover {second_pause} ms",
        ledger.writes.load(Ordering::Relaxed),
        ledger.rows.lock().unwrap().len(),
        errors.len(),
        ledger.stale_reads.load(Ordering::Relaxed),
        ledger.max_write_us.load(Ordering::Relaxed) / 1000,
    );
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert_eq!(ledger.stale_reads.load(Ordering::Relaxed), 0);
    assert!(
        ledger.writes.load(Ordering::Relaxed) > 100,
        "the workload ran"
    );
}

/// What a table holds, in id order, read through the proxy with `USE commerce`.
async fn joined(c: &TestCluster) -> Vec<Vec<String>> {
    let mut conn = c.conn("commerce").await;
    rows(
        &mut conn,
        "SELECT w.id, w.owner, p.description FROM wallets w JOIN product p ON p.sku = w.sku WHERE w.id > 5 ORDER BY w.id",
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movetables_plan_join_across_keyspaces_and_abort() {
    let c = TestCluster::start(2).await;
    let mut d = c.direct("commerce", "-").await;
    d.query_drop("CREATE TABLE wallets (id BIGINT NOT NULL PRIMARY KEY, owner VARCHAR(32), sku VARCHAR(128))").await.unwrap();
    d.query_drop("CREATE TABLE nokey (x INT)").await.unwrap();
    let values: Vec<String> = (1..=50)
        .map(|i| format!("({i}, 'owner{i}', 'SKU-100{}')", 1 + i % 5))
        .collect();
    d.query_drop(format!("INSERT INTO wallets VALUES {}", values.join(", ")))
        .await
        .unwrap();
    d.query_drop("ANALYZE TABLE wallets").await.unwrap();

    // The plan names every refusal and changes nothing.
    let (ok, out) = c.shardctl(&[
        "movetables",
        "plan",
        "--from",
        "commerce",
        "--to",
        "customer",
        "--tables",
        "wallets,nokey",
    ]);
    assert!(!ok && out.contains("nokey: no primary key"), "{out}");
    let (ok, out) = c.shardctl(&[
        "movetables",
        "plan",
        "--from",
        "commerce",
        "--to",
        "customer",
        "--tables",
        "wallets",
        "--json",
    ]);
    assert!(ok, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["tables"][0]["name"], "wallets", "{plan}");
    assert_eq!(plan["target_keyspace"], "customer", "{plan}");
    assert_eq!(plan["targets"].as_array().unwrap().len(), 2, "{plan}");
    assert!(plan["rows_per_s"].as_f64().unwrap() > 0.0, "{plan}");
    let (ok, out) = c.shardctl(&[
        "movetables",
        "start",
        "--from",
        "commerce",
        "--to",
        "customer",
        "--tables",
        "nokey",
    ]);
    assert!(!ok && out.contains("no primary key"), "{out}");
    assert_eq!(
        etcd_json(&c, "routing_rules").await,
        serde_json::Value::Null
    );

    // A dry run makes the checks and prints every step, changing nothing.
    let args = [
        "--from",
        "commerce",
        "--to",
        "customer",
        "--tables",
        "wallets",
        "--dry-run",
    ];
    let out = shardctl_ok(&c, &[&["movetables", "start"], &args[..]].concat());
    assert!(
        out.contains("step setup:") && out.contains("step copy:"),
        "{out}"
    );
    assert!(
        !out.contains("step cutover:"),
        "start stops after the copy: {out}"
    );
    assert!(
        out.contains("routing rules customer.t -> commerce.t"),
        "{out}"
    );
    let out = shardctl_ok(&c, &[&["movetables", "run"], &args[..]].concat());
    assert!(
        out.contains("POINT OF NO RETURN") && out.contains("DROP TABLE wallets"),
        "{out}"
    );
    assert_eq!(
        etcd_json(&c, &format!("workflows/{WORKFLOW}")).await,
        serde_json::Value::Null
    );
    assert_eq!(
        etcd_json(&c, "routing_rules").await,
        serde_json::Value::Null
    );

    let before = joined(&c).await;
    assert_eq!(before.len(), 45);
    shardctl_ok(
        &c,
        &[
            "movetables",
            "start",
            "--from",
            "commerce",
            "--to",
            "customer",
            "--tables",
            "wallets",
        ],
    );
    shardctl_ok(&c, &["movetables", "verify", "--workflow", WORKFLOW]);
    shardctl_ok(&c, &["movetables", "cutover", "--workflow", WORKFLOW]);
    // The join now spans keyspaces (wallets sharded in customer, product in commerce)
    // and answers the same.
    assert_eq!(joined(&c).await, before);
    let mut conn = c.conn("customer").await;
    let n = rows(&mut conn, "SELECT COUNT(*), SUM(id) FROM commerce.wallets")
        .await
        .unwrap();
    assert_eq!(n, vec![vec!["50".to_string(), "1275".to_string()]]);
    // Rows really live in customer now, spread over its shards.
    let mut spread = Vec::new();
    for s in c.shard_names("customer") {
        let mut direct = c.direct("customer", &s).await;
        let n: Option<u64> = direct
            .query_first("SELECT COUNT(*) FROM wallets")
            .await
            .unwrap();
        spread.push(n.unwrap());
    }
    assert_eq!(spread.iter().sum::<u64>(), 50, "{spread:?}");
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
    // Columns qualified with the old keyspace are refused, not sent to the old table.
    let e = conn
        .query_drop("SELECT commerce.wallets.id FROM commerce.wallets")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1235), "{e}");

    // Back, then abort: nothing of the workflow remains.
    shardctl_ok(&c, &["movetables", "rollback", "--workflow", WORKFLOW]);
    conn.query_drop("UPDATE commerce.wallets SET owner = 'back' WHERE id = 7")
        .await
        .unwrap();
    shardctl_ok(
        &c,
        &["movetables", "abort", "--workflow", WORKFLOW, "--yes"],
    );
    assert_eq!(
        etcd_json(&c, "routing_rules").await["rules"],
        serde_json::json!([])
    );
    let vschema = etcd_json(&c, "keyspaces/customer").await;
    assert!(vschema["tables"].get("wallets").is_none(), "{vschema}");
    for s in c.shard_names("customer") {
        let mut direct = c.direct("customer", &s).await;
        let n: Option<u64> = direct
            .query_first("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'wallets'")
            .await
            .unwrap();
        assert_eq!(n, Some(0), "shard {s} kept the copy");
    }
    assert!(etcd_json(&c, "keyspaces/commerce/routing").await["workflow"].is_null());
    assert!(etcd_json(&c, "keyspaces/customer/routing").await["workflow"].is_null());
    let owner = rows(&mut conn, "SELECT owner FROM commerce.wallets WHERE id = 7")
        .await
        .unwrap();
    assert_eq!(owner, vec![vec!["back".to_string()]]);
    // DDL on commerce works again.
    conn.query_drop("ALTER TABLE commerce.wallets ADD COLUMN note INT")
        .await
        .unwrap();
}

/// An unsharded keyspace becomes sharded in place: a sharded VSchema over its one shard
/// `-`, then `reshard run` from `-` to `-80,80-` (issue 13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsharded_keyspace_is_resharded_from_its_one_shard() {
    let mut c = TestCluster::start(2).await;
    let m = c.extra_mariadb("legacy").await;
    let mut d = integration_tests::connect(&m.addr(), "").await;
    d.query_drop("CREATE DATABASE legacy").await.unwrap();
    let spec = format!("-={}/legacy", m.addr());
    shardctl_ok(&c, &["keyspace", "create", "legacy"]);
    shardctl_ok(&c, &["shard", "add", "legacy", &spec]);
    shardctl_ok(&c, &["routing", "set", "legacy", "-"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = c.conn("legacy").await;
    conn.query_drop("CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(32))")
        .await
        .unwrap();
    let values: Vec<String> = (1..=3000).map(|i| format!("({i}, 'v{i}')")).collect();
    conn.query_drop(format!("INSERT INTO items VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let file = c.dir().join("legacy.json");
    std::fs::write(
        &file,
        r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}},
            "tables": {"items": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#,
    )
    .unwrap();
    shardctl_ok(&c, &["vschema", "apply", "legacy", file.to_str().unwrap()]);
    let out = shardctl_ok(
        &c,
        &[
            "reshard",
            "run",
            "--keyspace",
            "legacy",
            "--from",
            "-",
            "--to",
            "-80,80-",
            "--dry-run",
        ],
    );
    assert!(out.contains("register target shards -80,80-"), "{out}");
    assert!(out.contains("mark - retired and -80,80- ready"), "{out}");
    assert_eq!(
        etcd_json(&c, "keyspaces/legacy/shards/-80").await,
        serde_json::Value::Null
    );
    let out = shardctl_ok(
        &c,
        &[
            "reshard",
            "run",
            "--keyspace",
            "legacy",
            "--from",
            "-",
            "--to",
            "-80,80-",
        ],
    );
    let w = etcd_json(&c, "workflows/legacy").await;
    assert_eq!(w["phase"], "complete", "{out}\n{w}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = c.conn("legacy").await;
    let n = rows(&mut conn, "SELECT COUNT(*), SUM(id) FROM items")
        .await
        .unwrap();
    assert_eq!(n, vec![vec!["3000".to_string(), "4501500".to_string()]]);
    // Each new shard holds the rows of its range only, and writes go there.
    let shards = ["-80".to_string(), "80-".to_string()];
    let info = ClusterInfo::load(c.dir()).unwrap();
    let mut total = 0;
    for s in &shards {
        let si = info
            .shards
            .iter()
            .find(|x| x.keyspace == "legacy" && &x.shard == s)
            .unwrap_or_else(|| panic!("no local shard legacy/{s}: {:?}", info.shards));
        let mut direct = integration_tests::connect(&si.addr, &si.database).await;
        let ids = rows(&mut direct, "SELECT id FROM items").await.unwrap();
        for r in &ids {
            let id: i64 = r[0].parse().unwrap();
            assert_eq!(&integration_tests::hash_shard(id, &shards), s, "row {id}");
        }
        total += ids.len();
    }
    assert_eq!(total, 3000);
    conn.query_drop("INSERT INTO items VALUES (5000, 'new')")
        .await
        .unwrap();
    let v = rows(&mut conn, "SELECT v FROM items WHERE id = 5000")
        .await
        .unwrap();
    assert_eq!(v, vec![vec!["new".to_string()]]);
}

/// Issue 13: a table whose key is AUTO_INCREMENT keeps numbering its new rows after
/// MoveTables into a sharded keyspace (an INSERT without an id used to be refused there:
/// a sharded table needs a sequence, which the user had to make by hand). `start` makes
/// one in the source keyspace and wires it; each cutover moves it past every id the
/// source used; ids stay unique across a rollback and a second cutover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_increment_table_keeps_numbering_its_rows_across_cutovers() {
    let c = TestCluster::start(2).await;
    let mut d = c.direct("commerce", "-").await;
    d.query_drop(
        "CREATE TABLE tickets (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, title VARCHAR(32))",
    )
    .await
    .unwrap();
    let mut app = c.conn("commerce").await;
    async fn insert(app: &mut mysql_async::Conn, title: &str) -> u64 {
        app.exec_drop("INSERT INTO tickets (title) VALUES (?)", (title,))
            .await
            .unwrap_or_else(|e| panic!("INSERT of {title:?}: {e}"));
        app.last_insert_id().expect("an id")
    }
    let mut last = 0;
    for i in 0..20 {
        last = insert(&mut app, &format!("before {i}")).await;
    }
    let wf = WORKFLOW;
    shardctl_ok(
        &c,
        &[
            "movetables",
            "start",
            "--from",
            "commerce",
            "--to",
            "customer",
            "--tables",
            "tickets",
        ],
    );
    shardctl_ok(&c, &["movetables", "verify", "--workflow", wf]);
    for step in ["cutover", "rollback", "cutover"] {
        shardctl_ok(&c, &["movetables", step, "--workflow", wf]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..3 {
            let id = insert(&mut app, &format!("after {step} {i}")).await;
            assert!(id > last, "after {step}: id {id} not above {last}");
            last = id;
        }
    }
    let mut sharded = c.conn("customer").await;
    let id = {
        sharded
            .query_drop("INSERT INTO tickets (title) VALUES ('through customer')")
            .await
            .unwrap();
        sharded.last_insert_id().unwrap()
    };
    assert!(id > last, "id {id} not above {last}");
    shardctl_ok(&c, &["movetables", "complete", "--workflow", wf, "--yes"]);
    let (rows, ids): (u64, u64) = sharded
        .query_first("SELECT COUNT(*), COUNT(DISTINCT id) FROM tickets")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rows, ids), (30, 30), "every row once, every id once");

    // An aborted move takes its sequence away again.
    d.query_drop("CREATE TABLE notes (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    d.query_drop("INSERT INTO notes (body) VALUES ('a'), ('b')")
        .await
        .unwrap();
    let flags = [
        "--from",
        "commerce",
        "--to",
        "customer",
        "--tables",
        "notes",
        "--workflow",
        "notes",
    ];
    shardctl_ok(&c, &[&["movetables", "start"], &flags[..]].concat());
    let commerce = etcd_json(&c, "keyspaces/commerce").await;
    assert_eq!(
        commerce["tables"]["notes_seq"]["type"], "sequence",
        "{commerce}"
    );
    shardctl_ok(&c, &["movetables", "abort", "--workflow", "notes", "--yes"]);
    let commerce = etcd_json(&c, "keyspaces/commerce").await;
    assert!(commerce["tables"].get("notes_seq").is_none(), "{commerce}");
    let left: Vec<String> = d.query("SHOW TABLES LIKE 'notes_seq'").await.unwrap();
    assert!(left.is_empty(), "the sequence table was dropped");
}
