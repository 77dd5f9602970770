//! Online resharding under load: a split of `80-` with the controller SIGKILLed during
//! the backfill and resumed, then a merge back with a rollback after cutover, while a
//! workload writes through two proxies and checks that it reads its own writes.

use crate::ledger::{check, writer, Ledger, Workload};
use integration_tests::{hash_shard, url_for, TestCluster};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shardgate_resharder::local::ClusterInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CUSTOMERS: Workload = Workload {
    db: "customer",
    table: "customer",
};

fn shardctl_ok(c: &TestCluster, args: &[&str]) -> String {
    let (ok, out) = c.shardctl(args);
    assert!(ok, "shardctl {args:?} failed:\n{out}");
    out
}

async fn workflow_doc(c: &TestCluster) -> serde_json::Value {
    let info = ClusterInfo::load(c.dir()).unwrap();
    let store = info.store().await.unwrap();
    match store.get("workflows/customer").await.unwrap() {
        Some(e) => serde_json::from_slice(&e.value).unwrap(),
        None => serde_json::Value::Null,
    }
}

/// Loads `n` customers whose ids hash to `80-` (from 100,000 on) directly on that shard
/// (quicker than through a debug-build proxy); returns their ids.
async fn load_on_80(c: &TestCluster, n: usize) -> Vec<i64> {
    let mut conn = c.direct("customer", "80-").await;
    let shards = c.shard_names("customer");
    let ids: Vec<i64> = (100_000..)
        .filter(|i| hash_shard(*i, &shards) == "80-")
        .take(n)
        .collect();
    for part in ids.chunks(1000) {
        let values: Vec<String> = part
            .iter()
            .map(|i| format!("({i}, 'bulk{i}@example.com', 'bulk')"))
            .collect();
        conn.query_drop(format!(
            "INSERT INTO customer (customer_id, email, name) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resharding_under_load_split_kill_resume_merge_rollback() {
    let mut c = TestCluster::start(2).await;
    let p2 = c.info.start_proxy("proxy2", 0, 0).await.unwrap();
    let p1 = c.proxy_addr();

    // Enough rows on 80- for a backfill that can be interrupted (loaded on the shard
    // directly: quicker than through a debug-build proxy).
    load_on_80(&c, 20_000).await;

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, addr) in [&p1, &p2.mysql, &p1, &p2.mysql].iter().enumerate() {
        writers.push(tokio::spawn(writer(
            addr.to_string(),
            CUSTOMERS,
            1_000_000 * (i as i64 + 1),
            ledger.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Split 80- in two with `run`; kill the controller during the backfill; resume.
    let bin = shardgate_resharder::local::process::find_program("shardctl").unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("--dir")
        .arg(c.dir())
        .args([
            "reshard",
            "run",
            "--keyspace",
            "customer",
            "--from",
            "80-",
            "--to",
            "80-c0,c0-",
            "--chunk-rows",
            "500",
            "--max-rows-per-s",
            "8000",
            "--delete-source-rows",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = workflow_doc(&c).await;
        let copied: u64 = w["tables"]
            .as_object()
            .map(|t| {
                t.values()
                    .map(|x| x["rows_copied"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if w["phase"] == "copying" && copied >= 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "backfill never started: {w}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the controller ended before being killed: {w}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let killed_at = workflow_doc(&c).await;
    assert_eq!(
        killed_at["phase"], "copying",
        "killed mid-backfill: {killed_at}"
    );
    let out = shardctl_ok(&c, &["reshard", "resume", "--keyspace", "customer"]);
    let w = workflow_doc(&c).await;
    assert_eq!(w["phase"], "complete", "{out}\n{w}");
    let split_pause = w["cutover"]["pause_ms"].as_u64().unwrap();
    eprintln!(
        "split: {out}\nverify: {}\ncutover: {}",
        w["verify"], w["cutover"]
    );
    assert_eq!(w["verify"]["failed"], 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&c, &ledger, CUSTOMERS).await;

    // Merge back into 80- (emptied by --delete-source-rows), roll back after cutover,
    // cut over again and complete.
    shardctl_ok(
        &c,
        &[
            "reshard",
            "start",
            "--keyspace",
            "customer",
            "--from",
            "80-c0,c0-",
            "--to",
            "80-",
        ],
    );
    shardctl_ok(&c, &["reshard", "verify", "--keyspace", "customer"]);
    shardctl_ok(&c, &["reshard", "cutover", "--keyspace", "customer"]);
    let w = workflow_doc(&c).await;
    assert_eq!(w["phase"], "cut_over", "{w}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&c, &ledger, CUSTOMERS).await;
    shardctl_ok(&c, &["reshard", "rollback", "--keyspace", "customer"]);
    let w = workflow_doc(&c).await;
    assert_eq!(w["phase"], "backfilled", "{w}");
    let rollback_pause = w["cutover"]["pause_ms"].as_u64().unwrap();
    eprintln!("rollback: {}", w["cutover"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&c, &ledger, CUSTOMERS).await;
    shardctl_ok(&c, &["reshard", "cutover", "--keyspace", "customer"]);
    let merged = workflow_doc(&c).await;
    eprintln!("merge: {}", merged["cutover"]);
    let merge_pause = merged["cutover"]["pause_ms"].as_u64().unwrap();
    shardctl_ok(&c, &["reshard", "complete", "--keyspace", "customer"]);
    let status = shardctl_ok(&c, &["reshard", "status", "--keyspace", "customer"]);
    assert!(status.contains("phase    complete"), "{status}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    check(&c, &ledger, CUSTOMERS).await;
    let errors = ledger.errors.lock().unwrap().clone();
    eprintln!(
        "resharding under load: {} acknowledged writes, {} rows tracked, {} client errors, {} stale reads, longest write {} ms; pauses: split {split_pause} ms, rollback {rollback_pause} ms, merge {merge_pause} ms",
        ledger.writes.load(Ordering::Relaxed),
        ledger.rows.lock().unwrap().len(),
        errors.len(),
        ledger.stale_reads.load(Ordering::Relaxed),
        ledger.max_write_us.load(Ordering::Relaxed) / 1000,
    );
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert_eq!(
        ledger.stale_reads.load(Ordering::Relaxed),
        0,
        "reads saw stale data"
    );
    assert!(
        ledger.writes.load(Ordering::Relaxed) > 100,
        "the workload ran"
    );
}

/// Resumes a stopped process when dropped (so a failing test never leaves etcd frozen).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// A proxy that cannot reach etcd holds writes to a keyspace under a workflow and then
/// fails them with a clear error; reads and other keyspaces go on; once etcd answers
/// again, the proxy registers anew and writes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cut_off_from_etcd_fences_writes_under_resharding() {
    let c = TestCluster::start(2).await;
    let store = c.info.store().await.unwrap();
    let base = store.load().await.unwrap();
    let entry = base.get("keyspaces/customer/routing").unwrap().clone();
    let mut routing: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    routing["workflow"] = serde_json::json!("fence-test");
    routing["version"] = serde_json::json!(routing["version"].as_u64().unwrap() + 1);
    let rev = store
        .commit_validated(
            &base,
            &[shardgate_topology::store::Write::Put {
                key: "keyspaces/customer/routing".into(),
                value: serde_json::to_vec(&routing).unwrap(),
                expect: shardgate_topology::store::Expect::Revision(entry.mod_revision),
            }],
        )
        .await
        .unwrap();
    c.wait_applied(rev, Instant::now()).await;
    let mut conn = c.conn("customer").await;
    conn.query_drop(
        "INSERT INTO customer (customer_id, email, name) VALUES (777001, 'a', 'before')",
    )
    .await
    .unwrap();

    // Freeze etcd: keep-alives time out, the registration lease lapses.
    unsafe { libc::kill(c.info.etcd.pid as i32, libc::SIGSTOP) };
    let resume = Resume(c.info.etcd.pid);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let t0 = Instant::now();
    let e = conn
        .query_drop("UPDATE customer SET name = 'fenced' WHERE customer_id = 777001")
        .await
        .unwrap_err();
    assert_eq!(integration_tests::errno(&e), Some(1105), "{e}");
    assert!(e.to_string().contains("lost its etcd registration"), "{e}");
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "the write waited before failing"
    );
    let name: Option<String> = conn
        .query_first("SELECT name FROM customer WHERE customer_id = 777001")
        .await
        .unwrap();
    assert_eq!(
        name.as_deref(),
        Some("before"),
        "reads go on; the write did not happen"
    );
    let mut commerce = c.conn("commerce").await;
    commerce
        .query_drop("UPDATE product SET price = price WHERE sku = 'none'")
        .await
        .expect("keyspaces not under resharding keep taking writes");

    // etcd back: the proxy registers again, reloads, and writes go through.
    drop(resume);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match conn
            .query_drop("UPDATE customer SET name = 'after' WHERE customer_id = 777001")
            .await
        {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "writes still fenced: {e}"),
        }
    }
    let name: Option<String> = conn
        .query_first("SELECT name FROM customer WHERE customer_id = 777001")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("after"));
}

/// Issue 9: string primary keys holding quotes and backslashes go through a merge's
/// verify (whose chunk boundaries from several sources are ordered on a source) as
/// parameters, never as SQL text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_verifies_string_keys_with_quotes_and_backslashes() {
    let c = TestCluster::start(2).await;
    c.on_every_shard(
        "customer",
        &["CREATE TABLE skeys (k VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL PRIMARY KEY, v INT)"],
    )
    .await;
    c.apply_customer_vschema(serde_json::json!({
        "skeys": {"column_vindexes": [{"column": "k", "name": "xx"}]}
    }))
    .await;

    // Every key holds a backslash before a quote, whichever becomes a chunk boundary.
    let shapes = ["x\\'", "\\'", "a\\'b", "\" OR 1=1 -- \\'", "\\\\'", "é\\'"];
    let keys: Vec<String> = (0..2400)
        .map(|i| format!("{}{i:05}", shapes[i % shapes.len()]))
        .collect();
    let mut conn = c.conn("customer").await;
    for chunk in keys.chunks(200) {
        let sql = format!(
            "INSERT INTO skeys (k, v) VALUES {}",
            vec!["(?, ?)"; chunk.len()].join(", ")
        );
        let params: Vec<mysql_async::Value> = chunk
            .iter()
            .enumerate()
            .flat_map(|(i, k)| [k.clone().into(), (i as i64).into()])
            .collect();
        conn.exec_drop(sql, params).await.unwrap();
    }
    shardctl_ok(
        &c,
        &[
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
        ],
    );
    let w = workflow_doc(&c).await;
    assert_eq!(w["phase"], "complete", "{w}");
    assert_eq!(w["verify"]["failed"], 0, "{w}");
    let info = ClusterInfo::load(c.dir()).unwrap();
    let merged = info
        .shards
        .iter()
        .find(|s| s.keyspace == "customer" && s.shard == "-")
        .expect("the merged shard is in cluster.json");
    let mut target = Conn::new(Opts::from_url(&url_for(&merged.addr, &merged.database)).unwrap())
        .await
        .unwrap();
    let mut stored: Vec<String> = target.query("SELECT k FROM skeys").await.unwrap();
    let mut want = keys.clone();
    stored.sort();
    want.sort();
    assert_eq!(stored, want, "every key reached the merged shard unchanged");
}

/// Issue 13: the copy's throttler sees an application whose statements are short and
/// sparse (it used to sample the statements running at the instant of each probe, and
/// missed a 100 tx/s load entirely), and sees none when only the controller works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_sees_a_sparse_application_and_nothing_without_one() {
    let c = TestCluster::start(2).await;
    let ids = load_on_80(&c, 8_000).await;
    // About two seconds of copy, so the throttler probes the source about 20 times.
    let start = [
        "reshard",
        "start",
        "--keyspace",
        "customer",
        "--from",
        "80-",
        "--to",
        "80-c0,c0-",
        "--max-rows-per-s",
        "4000",
    ];
    let seen = |w: &serde_json::Value| {
        let copy = &w["copy"];
        (
            copy["probes"].as_u64().unwrap_or(0),
            copy["application_probes"].as_u64().unwrap_or(u64::MAX),
        )
    };

    // Nothing but the controller on the source.
    shardctl_ok(&c, &start);
    let w = workflow_doc(&c).await;
    let (probes, app) = seen(&w);
    assert!(probes >= 5, "the throttler barely probed: {w}");
    assert_eq!(
        app, 0,
        "the controller's own work was taken for the application: {w}"
    );
    shardctl_ok(&c, &["reshard", "abort", "--keyspace", "customer", "--yes"]);

    // An application: one point select through the proxy every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let app = {
        let stop = stop.clone();
        let mut conn = c.conn("customer").await;
        let id = ids[7];
        tokio::spawn(async move {
            let mut ran = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: Option<String> = conn
                    .query_first(format!(
                        "SELECT name FROM customer WHERE customer_id = {id}"
                    ))
                    .await
                    .unwrap();
                ran += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ran
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    shardctl_ok(&c, &start);
    stop.store(true, Ordering::Relaxed);
    assert!(app.await.unwrap() > 20);
    let w = workflow_doc(&c).await;
    let (probes, app) = seen(&w);
    assert!(probes >= 5, "the throttler barely probed: {w}");
    assert!(
        app * 2 >= probes,
        "the application ran all along, the throttler saw it in {app} of {probes} probes: {w}"
    );
    assert_eq!(w["phase"], "backfilled", "{w}");
}

/// Issue 13: installing change capture (triggers: DDL) at `start` fails none of the
/// application's transactions. A transaction that read a table and then writes it while
/// the DDL waits to upgrade its metadata lock closed a cycle, which MariaDB broke by
/// failing the transaction with 1213 (the bench's sysbench saw 3-5 per start).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starting_a_workflow_fails_no_transaction_of_the_application() {
    let c = TestCluster::start(2).await;
    let shards = c.shard_names("customer");
    let ids: Vec<i64> = (200_000..)
        .filter(|i| hash_shard(*i, &shards) == "80-")
        .take(8)
        .collect();
    let mut conn = c.conn("customer").await;
    for id in &ids {
        conn.query_drop(format!(
            "INSERT INTO customer (customer_id, email, name) VALUES ({id}, 'c{id}@example.com', 'n')"
        ))
        .await
        .unwrap();
    }
    // Transactions that read a row, think, then write it: the pattern that loses the
    // metadata-lock cycle against waiting DDL.
    let stop = Arc::new(AtomicBool::new(false));
    let mut apps = Vec::new();
    for &id in &ids {
        let stop = stop.clone();
        let mut conn = c.conn("customer").await;
        apps.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r: Result<(), mysql_async::Error> = async {
                    conn.query_drop("BEGIN").await?;
                    let _: Option<String> = conn
                        .query_first(format!(
                            "SELECT name FROM customer WHERE customer_id = {id}"
                        ))
                        .await?;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    conn.query_drop(format!(
                        "UPDATE customer SET name = CONCAT('n', {done}) WHERE customer_id = {id}"
                    ))
                    .await?;
                    conn.query_drop("COMMIT").await
                }
                .await;
                match r {
                    Ok(()) => done += 1,
                    Err(e) => {
                        failed.push(e.to_string());
                        let _ = conn.query_drop("ROLLBACK").await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            (done, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    shardctl_ok(
        &c,
        &[
            "reshard",
            "start",
            "--keyspace",
            "customer",
            "--from",
            "80-",
            "--to",
            "80-c0,c0-",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for a in apps {
        let (done, failed) = a.await.unwrap();
        assert!(
            failed.is_empty(),
            "transactions failed during start: {failed:?}"
        );
        total += done;
    }
    assert!(
        total > 50,
        "the application barely ran ({total} transactions)"
    );
    let w = workflow_doc(&c).await;
    assert_eq!(w["phase"], "backfilled", "{w}");
}
