//! Resharding controller races and crash leftovers (issue 13): the workflow lock is
//! create-if-absent and fences a holder that lost it; a controller that dies after
//! setting the write buffer or between the end of a workflow and its cleanup leaves
//! nothing that `resume` does not finish.

use integration_tests::{connect, TestCluster};
use mysql_async::prelude::*;
use shardgate_resharder::local::ClusterInfo;
use shardgate_resharder::reshard::lock::{self, Lock, LockHeld};
use shardgate_topology::store::{Expect, Write};
use shardgate_topology::StoreError;

fn put(key: &str) -> Write {
    Write::Put {
        key: key.into(),
        value: b"{}".to_vec(),
        expect: Expect::Any,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_lock_is_exclusive_and_fences_a_lost_holder() {
    let c = TestCluster::start_with(1, false).await;
    let store = c.info.store().await.unwrap();
    // Two controllers start at once: exactly one gets the lock.
    let (a, b) = tokio::join!(Lock::take(&store, "race"), Lock::take(&store, "race"));
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(e)) | (Err(e), Ok(w)) => (w, e),
        (Ok(_), Ok(_)) => panic!("two controllers hold the lock of one workflow"),
        (Err(a), Err(b)) => panic!("nobody got the lock: {a:#} / {b:#}"),
    };
    assert!(loser.downcast_ref::<LockHeld>().is_some(), "{loser:#}");
    let fenced = store.fenced(&lock::key("race"), winner.token);
    fenced.commit(&[put("fence-test/1")]).await.unwrap();
    // The lock is lost (its lease expired) and another controller takes it: the first
    // one's writes are refused, the new holder's go through.
    store.delete(&lock::key("race")).await.unwrap();
    let second = Lock::take(&store, "race").await.unwrap();
    assert_ne!(second.token, winner.token);
    match fenced.commit(&[put("fence-test/2")]).await {
        Err(StoreError::Fenced { key }) => assert_eq!(key, lock::key("race")),
        other => panic!("a fenced write went through: {other:?}"),
    }
    assert!(store.get("fence-test/2").await.unwrap().is_none());
    store
        .fenced(&lock::key("race"), second.token)
        .commit(&[put("fence-test/3")])
        .await
        .unwrap();
    second.release().await;
}

/// Change-capture triggers (AFTER; the guards of retired tables are BEFORE triggers) on
/// the customer keyspace's shards.
async fn triggers(c: &TestCluster) -> u64 {
    let info = ClusterInfo::load(c.dir()).unwrap();
    let mut n = 0;
    for s in info.shards.iter().filter(|s| s.keyspace == "customer") {
        let mut d = connect(&s.addr, &s.database).await;
        let k: Option<u64> = d
            .query_first(
                "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() AND ACTION_TIMING = 'AFTER'",
            )
            .await
            .unwrap();
        n += k.unwrap_or(0);
    }
    n
}

async fn workflow(c: &TestCluster) -> serde_json::Value {
    let store = c.info.store().await.unwrap();
    let e = store.get("workflows/customer").await.unwrap().unwrap();
    serde_json::from_slice(&e.value).unwrap()
}

async fn routing(c: &TestCluster) -> serde_json::Value {
    let store = c.info.store().await.unwrap();
    let e = store
        .get("keyspaces/customer/routing")
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&e.value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_dying_at_a_step_boundary_leaves_nothing_stuck() {
    let c = TestCluster::start(2).await;
    let mut app = c.conn("customer").await;
    let before: Option<u64> = app
        .query_first("SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    let run = [
        "reshard",
        "run",
        "--keyspace",
        "customer",
        "--from",
        "-80,80-",
        "--to",
        "-",
        "--chunk-rows",
        "100",
    ];
    // Dies with the proxies holding writes: the buffer it leaves expires by itself.
    let (ok, out) = c.shardctl_env(&run, &[("SHARDGATE_CRASH_AT", "buffer-set")]);
    assert!(!ok, "the controller was to die at buffer-set:\n{out}");
    let r = routing(&c).await;
    let buffer = &r["write_buffer"];
    let max_wait = buffer["max_wait_ms"].as_u64().expect("a buffer was left");
    let expires = buffer["expires_ms"].as_u64().unwrap();
    let now = shardgate_resharder::reshard::workflow::now_ms();
    assert!(
        expires > now && expires <= now + 4 * max_wait,
        "{buffer} (now {now})"
    );
    // resume lifts the leftover buffer, cuts over, and this time dies between the end of
    // the workflow and the removal of change capture.
    let resume = ["reshard", "resume", "--keyspace", "customer"];
    let (ok, out) = c.shardctl_env(&resume, &[("SHARDGATE_CRASH_AT", "after-complete")]);
    assert!(!ok, "the controller was to die after complete:\n{out}");
    let w = workflow(&c).await;
    assert_eq!(w["phase"], "complete", "{w}");
    assert_eq!(w["leftovers_removed"], false, "{w}");
    assert!(triggers(&c).await > 0, "capture triggers were left behind");
    assert!(routing(&c).await["write_buffer"].is_null());
    // resume finishes the cleanup.
    let (ok, out) = c.shardctl(&resume);
    assert!(ok, "{out}");
    let w = workflow(&c).await;
    assert_eq!(w["leftovers_removed"], true, "{w}");
    assert_eq!(triggers(&c).await, 0, "capture triggers remain");
    let after: Option<u64> = app
        .query_first("SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    assert_eq!(before, after);
    // A retired source refuses writes that do not come from a controller (what a proxy
    // with a stale routing would send): an error, not a write nobody reads.
    let mut stale = c.direct("customer", "-80").await;
    let e = stale
        .query_drop("UPDATE customer SET name = 'stale' WHERE customer_id > 0")
        .await
        .unwrap_err();
    assert_eq!(integration_tests::errno(&e), Some(1644), "{e}");
    assert!(e.to_string().contains("no longer serves"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_with_colliding_unique_values_stops_instead_of_overwriting() {
    let c = TestCluster::start(2).await;
    c.on_every_shard(
        "customer",
        &[
            "CREATE TABLE ukeys (id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(64) NOT NULL, UNIQUE KEY (email))",
        ],
    )
    .await;
    c.apply_customer_vschema(serde_json::json!({
        "ukeys": {"column_vindexes": [{"column": "id", "name": "hash"}]},
        "note": {"column_vindexes": [{"column": "customer_id", "name": "hash"}]}
    }))
    .await;
    // A foreign key (cascades bypass the capture triggers) and an application trigger are
    // refused up front, naming each.
    c.on_every_shard(
        "customer",
        &[
            "CREATE TABLE note (id BIGINT NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, FOREIGN KEY (customer_id) REFERENCES customer (customer_id) ON DELETE CASCADE)",
            "CREATE TRIGGER audit_ukeys BEFORE INSERT ON ukeys FOR EACH ROW SET NEW.email = LOWER(NEW.email)",
        ],
    )
    .await;
    let (ok, out) = c.shardctl(&[
        "reshard",
        "start",
        "--keyspace",
        "customer",
        "--from",
        "-80,80-",
        "--to",
        "-",
    ]);
    assert!(!ok, "a table with a foreign key was accepted:\n{out}");
    assert!(out.contains("foreign key"), "{out}");
    assert!(out.contains("trigger audit_ukeys"), "{out}");
    c.on_every_shard("customer", &["DROP TABLE note", "DROP TRIGGER audit_ukeys"])
        .await;
    // Unique per shard, not across them: a merge cannot keep both.
    let (a, b) = c.ids_on_two_shards(1);
    let mut app = c.conn("customer").await;
    for id in [a, b] {
        app.query_drop(format!(
            "INSERT INTO ukeys (id, email) VALUES ({id}, 'same@example.com')"
        ))
        .await
        .unwrap();
    }
    let (ok, out) = c.shardctl(&[
        "reshard",
        "run",
        "--keyspace",
        "customer",
        "--from",
        "-80,80-",
        "--to",
        "-",
    ]);
    assert!(!ok, "the merge went through:\n{out}");
    assert!(
        out.contains("hold the same value of a unique key"),
        "not the collision error:\n{out}"
    );
    let w = workflow(&c).await;
    assert_ne!(w["phase"], "cut_over", "{w}");
    // The sources still serve both rows.
    let n: Option<u64> = app
        .query_first("SELECT COUNT(*) FROM ukeys WHERE email = 'same@example.com'")
        .await
        .unwrap();
    assert_eq!(n, Some(2));
    let (ok, out) = c.shardctl(&["reshard", "abort", "--keyspace", "customer", "--yes"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_shows_costs_and_refusals_before_anything_changes() {
    let c = TestCluster::start(2).await;
    let plan = |c: &TestCluster| {
        let (ok, out) = c.shardctl(&[
            "reshard",
            "plan",
            "--keyspace",
            "customer",
            "--from",
            "80-",
            "--to",
            "80-c0,c0-",
            "--json",
        ]);
        let json = &out[out.find('{').unwrap()..=out.rfind('}').unwrap()];
        (
            ok,
            serde_json::from_str::<serde_json::Value>(json).unwrap(),
            out.clone(),
        )
    };
    let (ok, p, out) = plan(&c);
    assert!(ok, "{out}");
    assert!(p["refusals"].as_array().unwrap().is_empty(), "{p}");
    let names: Vec<&str> = p["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"customer") && names.contains(&"corder"),
        "{p}"
    );
    assert!(p["bytes_total"].as_u64().unwrap() > 0, "{p}");
    assert!(p["sample_rows"].as_u64().unwrap() > 0, "{p}");
    assert!(p["rows_per_s"].as_f64().unwrap() > 0.0, "{p}");
    let targets = p["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert!(
        (targets[0]["share"].as_f64().unwrap() - 0.5).abs() < 1e-6,
        "{p}"
    );
    // Nothing changed: no workflow, no new shard.
    let store = c.info.store().await.unwrap();
    assert!(store.get("workflows/customer").await.unwrap().is_none());
    assert!(store
        .get("keyspaces/customer/shards/80-c0")
        .await
        .unwrap()
        .is_none());
    // A table the copy cannot handle is named with its reason, and the command fails.
    c.on_every_shard("customer", &["CREATE TABLE nopk (a INT)"])
        .await;
    let (ok, p, _) = plan(&c);
    assert!(!ok);
    let refusals = p["refusals"].to_string();
    assert!(refusals.contains("nopk"), "{refusals}");
}

/// A customer on `80-` (the first id from `from` that hashes there) written through the
/// proxy, then `80-` split (writes held up to 8 s at cutover) and verified. Returns the id
/// and the connection that wrote it.
async fn split_verified_with_a_row(c: &TestCluster, from: i64) -> (i64, mysql_async::Conn) {
    let shards = c.shard_names("customer");
    let on_80 = (from..)
        .find(|i| integration_tests::hash_shard(*i, &shards) == "80-")
        .unwrap();
    let mut app = c.conn("customer").await;
    app.query_drop(format!(
        "INSERT INTO customer (customer_id, email, name) VALUES ({on_80}, 'x@example.com', 'before')"
    ))
    .await
    .unwrap();
    let split = [
        "--keyspace",
        "customer",
        "--from",
        "80-",
        "--to",
        "80-c0,c0-",
        "--buffer-max-ms",
        "8000",
    ];
    let (ok, out) = c.shardctl(&[&["reshard", "start"], &split[..]].concat());
    assert!(ok, "{out}");
    let (ok, out) = c.shardctl(&["reshard", "verify", "--keyspace", "customer"]);
    assert!(ok, "{out}");
    (on_80, app)
}

/// Starts `reshard cutover` pausing at `point` (`SHARDGATE_PAUSE_AT`), and returns once
/// the proxies are asked to hold writes.
async fn cutover_pausing_at(c: &TestCluster, point: &str) -> tokio::process::Child {
    let bin = shardgate_resharder::local::process::find_program("shardctl").unwrap();
    let cutover = tokio::process::Command::new(bin)
        .arg("--dir")
        .arg(c.dir())
        .args(["reshard", "cutover", "--keyspace", "customer"])
        .env("SHARDGATE_PAUSE_AT", point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while routing(c).await["write_buffer"].is_null() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "no buffer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cutover
}

/// A transaction that starts reading the source between the drain and the flip (a
/// read-then-write transaction, as sysbench's) must not stall the cutover or the
/// application: guarding the old side takes no table lock (it was DDL, which waited
/// forever for the open transaction while queueing every statement on the table behind
/// it). The open transaction's write after the flip lands where the row lives now, or is
/// refused; it is never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_opened_during_cutover_does_not_stall_it() {
    let c = TestCluster::start(2).await;
    let (on_80, mut app) = split_verified_with_a_row(&c, 50_000).await;
    // The controller pauses after the drain; a transaction opens on the source then.
    let mut cutover = cutover_pausing_at(&c, "after-drain:1500").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut txn = c.conn("customer").await;
    txn.query_drop("BEGIN").await.unwrap();
    let name: Option<String> = txn
        .query_first(format!(
            "SELECT name FROM customer WHERE customer_id = {on_80}"
        ))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("before"));
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), cutover.wait()).await;
    let status = done
        .expect("the cutover stalled behind an open transaction")
        .unwrap();
    assert!(status.success(), "cutover failed");
    assert_eq!(workflow(&c).await["phase"], "cut_over");
    // The transaction that read the old side writes where the row lives now (planned
    // on the new routing), or is refused; never lost on the old side.
    let late = txn
        .query_drop(format!(
            "UPDATE customer SET name = 'late' WHERE customer_id = {on_80}"
        ))
        .await;
    match late {
        Ok(()) => {
            txn.query_drop("COMMIT").await.unwrap();
            let name: Option<String> = app
                .query_first(format!(
                    "SELECT name FROM customer WHERE customer_id = {on_80}"
                ))
                .await
                .unwrap();
            assert_eq!(
                name.as_deref(),
                Some("late"),
                "an acknowledged write was lost"
            );
        }
        Err(e) => {
            assert_eq!(integration_tests::errno(&e), Some(1644), "{e}");
            txn.query_drop("ROLLBACK").await.unwrap();
        }
    }
    // Everyone else goes on, on the new shards.
    app.query_drop(format!(
        "UPDATE customer SET name = 'after' WHERE customer_id = {on_80}"
    ))
    .await
    .unwrap();
    let name: Option<String> = app
        .query_first(format!(
            "SELECT name FROM customer WHERE customer_id = {on_80}"
        ))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("after"));
}

/// A transaction that only read the old side when the cutover began: the drain waited
/// for it (its attempt failed when the budget ran out), while the proxy let its write
/// through to the old side as "an open transaction's"; when the drain missed it
/// (`INNODB_TRX` is a cache up to 100 ms old) that write met the raised guard (1644:
/// sysbench failed on it at a bench's cutover). Now the drain waits only for transactions
/// holding locks, raising the guards waits exactly for those, and the proxies hold the
/// first write of a transaction that only read there: it lands where the row lives after
/// the flip, and the first attempt succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_a_transaction_that_only_read_the_old_side_waits_for_the_flip() {
    let c = TestCluster::start(2).await;
    let (on_80, mut app) = split_verified_with_a_row(&c, 60_000).await;
    // The transaction reads the old side before the cutover begins.
    let mut txn = c.conn("customer").await;
    txn.query_drop("BEGIN").await.unwrap();
    // Prepared statements, as sysbench's.
    let name: Option<String> = txn
        .exec_first("SELECT name FROM customer WHERE customer_id = ?", (on_80,))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("before"));
    // The controller pauses with the old side guarded, before the flip.
    let cutover = cutover_pausing_at(&c, "after-guard:1500").await;
    // Past the drain (it does not see the read-only transaction) and into the pause.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let write = tokio::spawn(async move {
        txn.exec_drop(
            "UPDATE customer SET name = ? WHERE customer_id = ?",
            ("late", on_80),
        )
        .await?;
        txn.query_drop("COMMIT").await
    });
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        cutover.wait_with_output(),
    )
    .await
    .expect("the cutover stalled")
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cutover failed: {log}");
    let w = workflow(&c).await;
    assert_eq!(w["phase"], "cut_over");
    // The reading transaction holds no lock: the drain does not wait for it.
    assert_eq!(w["cutover"]["failed_attempts"], 0, "{log}");
    write
        .await
        .unwrap()
        .expect("the write was refused instead of waiting for the flip");
    let name: Option<String> = app
        .query_first(format!(
            "SELECT name FROM customer WHERE customer_id = {on_80}"
        ))
        .await
        .unwrap();
    assert_eq!(
        name.as_deref(),
        Some("late"),
        "an acknowledged write was lost"
    );
}
