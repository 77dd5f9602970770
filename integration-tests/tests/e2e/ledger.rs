//! The ledgered write workload of the resharding and MoveTables acceptance tests: writers
//! through proxies remember every acknowledged write, read each back on their own
//! connection, and a check compares the ledger with what the cluster holds.

use integration_tests::{hash_shard, rows, url_for, TestCluster};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shardgate_resharder::local::ClusterInfo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the workload writes: the database clients use and the table they name (columns
/// customer_id, email, name, created_at; the rows live sharded by customer_id in keyspace
/// `customer`).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub db: &'static str,
    pub table: &'static str,
}

/// What the workload knows: every acknowledged write's outcome per id.
#[derive(Default)]
pub struct Ledger {
    /// id -> Some(name) when the row exists, None when deleted.
    pub rows: Mutex<BTreeMap<i64, Option<String>>>,
    pub writes: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    pub stale_reads: AtomicU64,
    /// Longest a single write statement (or transaction) took, in microseconds.
    pub max_write_us: AtomicU64,
    /// Writers hold it (shared) per operation; a check holds it alone, so it sees a still
    /// workload.
    pub gate: tokio::sync::RwLock<()>,
}

/// A row's new state: (id, name or None when deleted).
type Change = (i64, Option<String>);

async fn connect(addr: &str, db: &str) -> Conn {
    let mut c = Conn::new(Opts::from_url(&url_for(addr, db)).unwrap())
        .await
        .unwrap();
    c.query_drop("SET transaction_mode = 'multi'")
        .await
        .unwrap();
    c
}

/// One writer: its own ids (`base + n`), a mix of inserts, updates with NOW(), deletes and
/// two-statement transactions, each checked by reading it back on the same connection.
pub async fn writer(
    addr: String,
    w: Workload,
    base: i64,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let t = w.table;
    let mut c = connect(&addr, w.db).await;
    let mut next = 0i64;
    let mut live: Vec<i64> = Vec::new();
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let guard = ledger.gate.read().await;
        let t0 = Instant::now();
        let (result, changed): (Result<(), mysql_async::Error>, Vec<Change>) = match step % 5 {
            0 if live.len() > 2 => {
                let id = live.remove((step as usize * 7) % live.len());
                (
                    c.query_drop(format!("DELETE FROM {t} WHERE customer_id = {id}"))
                        .await,
                    vec![(id, None)],
                )
            }
            1 | 3 if !live.is_empty() => {
                let id = live[(step as usize * 13) % live.len()];
                let name = format!("u{step}");
                (
                        c.query_drop(format!(
                            "UPDATE {t} SET name = '{name}', created_at = NOW() WHERE customer_id = {id}"
                        ))
                        .await,
                        vec![(id, Some(name))],
                    )
            }
            2 if live.len() > 1 => {
                let a = live[(step as usize * 3) % live.len()];
                let b = live[(step as usize * 5 + 1) % live.len()];
                let (na, nb) = (format!("ta{step}"), format!("tb{step}"));
                let r = c
                        .query_drop(format!(
                            "BEGIN; UPDATE {t} SET name = '{na}' WHERE customer_id = {a}; UPDATE {t} SET name = '{nb}' WHERE customer_id = {b}; COMMIT"
                        ))
                        .await;
                let changes = if a == b {
                    vec![(b, Some(nb))]
                } else {
                    vec![(a, Some(na)), (b, Some(nb))]
                };
                (r, changes)
            }
            _ => {
                next += 1;
                let id = base + next;
                live.push(id);
                let name = format!("i{step}");
                (
                        c.query_drop(format!(
                            "INSERT INTO {t} (customer_id, email, name) VALUES ({id}, 'w{id}@example.com', '{name}')"
                        ))
                        .await,
                        vec![(id, Some(name))],
                    )
            }
        };
        let took = t0.elapsed().as_micros() as u64;
        ledger.max_write_us.fetch_max(took, Ordering::Relaxed);
        if let Err(e) = result {
            ledger.errors.lock().unwrap().push(format!("{e}"));
            // The outcome is unknown: keep checking the row's last acknowledged value
            // out of the ledger.
            for (id, _) in changed {
                ledger.rows.lock().unwrap().remove(&id);
                live.retain(|x| *x != id);
            }
            continue;
        }
        ledger.writes.fetch_add(1, Ordering::Relaxed);
        for (id, v) in changed {
            let got: Option<String> = c
                .query_first(format!("SELECT name FROM {t} WHERE customer_id = {id}"))
                .await
                .unwrap_or_else(|e| {
                    ledger.errors.lock().unwrap().push(format!("read: {e}"));
                    None
                });
            if got != v {
                ledger.stale_reads.fetch_add(1, Ordering::Relaxed);
            }
            ledger.rows.lock().unwrap().insert(id, v);
        }
        drop(guard);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Every acknowledged write is there with its last value, no deleted row is back, and
/// every row sits in exactly the serving shard whose range holds it.
pub async fn check(c: &TestCluster, ledger: &Ledger, w: Workload) {
    let _still = ledger.gate.write().await;
    check_ledger(c, ledger, w).await;
    check_placement(c, w).await;
}

/// Every acknowledged write reads back through the proxy with its last value, and no
/// deleted row is back (the caller holds the ledger's gate).
pub async fn check_ledger(c: &TestCluster, ledger: &Ledger, w: Workload) {
    let t = w.table;
    let mut conn = c.conn(w.db).await;
    let expected = ledger.rows.lock().unwrap().clone();
    let mut wrong = Vec::new();
    for (id, v) in &expected {
        let got: Option<String> = conn
            .query_first(format!("SELECT name FROM {t} WHERE customer_id = {id}"))
            .await
            .unwrap();
        if &got != v {
            wrong.push(format!("{id}: expected {v:?}, found {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// Every row sits in the serving shard of `customer` whose range holds it, and the proxy
/// counts as many rows as the shards hold.
pub async fn check_placement(c: &TestCluster, w: Workload) {
    let t = w.table;
    let mut conn = c.conn(w.db).await;
    let info = ClusterInfo::load(c.dir()).unwrap();
    let store = info.store().await.unwrap();
    let routing = store
        .get("keyspaces/customer/routing")
        .await
        .unwrap()
        .unwrap();
    let routing: serde_json::Value = serde_json::from_slice(&routing.value).unwrap();
    let serving: Vec<String> = routing["serving"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let mut total = 0;
    for shard in &serving {
        let s = info
            .shards
            .iter()
            .find(|s| s.keyspace == "customer" && &s.shard == shard)
            .unwrap();
        let mut d = Conn::new(Opts::from_url(&url_for(&s.addr, &s.database)).unwrap())
            .await
            .unwrap();
        let ids = rows(&mut d, &format!("SELECT customer_id FROM {t}"))
            .await
            .unwrap();
        for r in &ids {
            let id: i64 = r[0].parse().unwrap();
            assert_eq!(
                &hash_shard(id, &serving),
                shard,
                "row {id} sits in shard {shard}, outside its range"
            );
        }
        total += ids.len();
    }
    let through: Vec<Vec<String>> = rows(&mut conn, &format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap();
    assert_eq!(
        through[0][0],
        total.to_string(),
        "each row in exactly one shard"
    );
}
