//! Sharded routing against real MariaDB: placement, point queries, the differential test
//! (a 4-shard keyspace against one plain database holding the same rows), sequences, DDL,
//! metadata and refusals.

use integration_tests::{errno, hash_shard, rows, TestCluster};
use mysql_async::prelude::*;
use mysql_async::Conn;
use shardgate_topology::vindex::{SqlValue, Vindex};
use std::collections::BTreeMap;

async fn com_select(conn: &mut Conn) -> u64 {
    let r: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Com_select'")
        .await
        .unwrap();
    r.unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_on_their_shard_and_point_queries_touch_one_shard() {
    let c = TestCluster::start(4).await;
    let shards: Vec<String> = c
        .info
        .shards
        .iter()
        .filter(|s| s.keyspace == "customer")
        .map(|s| s.shard.clone())
        .collect();
    assert_eq!(shards.len(), 4);
    let mut conn = c.conn("customer").await;
    let values: Vec<String> = (100..140)
        .map(|i| format!("({i}, 'u{i}@x', 'U{i}')"))
        .collect();
    conn.query_drop(format!(
        "INSERT INTO customer (customer_id, email, name) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    assert_eq!(conn.affected_rows(), 40);
    // Each row is on exactly the shard whose key range holds hash(customer_id).
    let mut total = 0;
    for s in &shards {
        let mut d = c.direct("customer", s).await;
        let ids: Vec<i64> = d
            .query("SELECT customer_id FROM customer WHERE customer_id >= 100")
            .await
            .unwrap();
        for id in &ids {
            assert_eq!(&hash_shard(*id, &shards), s, "row {id} on the wrong shard");
        }
        total += ids.len();
    }
    assert_eq!(total, 40);

    // A point query reaches one shard only.
    let mut directs = Vec::new();
    for s in &shards {
        directs.push(c.direct("customer", s).await);
    }
    let mut before = Vec::new();
    for d in directs.iter_mut() {
        before.push(com_select(d).await);
    }
    let name: Option<String> = conn
        .query_first("SELECT name FROM customer WHERE customer_id = 117")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("U117"));
    let mut touched = Vec::new();
    for (i, d) in directs.iter_mut().enumerate() {
        if com_select(d).await > before[i] {
            touched.push(shards[i].clone());
        }
    }
    assert_eq!(touched, vec![hash_shard(117, &shards)]);
    // ... and a prepared point query too.
    let name: Option<String> = conn
        .exec_first("SELECT name FROM customer WHERE customer_id = ?", (121,))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("U121"));

    // USE customer:<shard> targets one shard directly.
    let target = hash_shard(117, &shards);
    conn.query_drop(format!("USE `customer:{target}`"))
        .await
        .unwrap();
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM customer WHERE customer_id = 117")
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    let other = shards.iter().find(|s| **s != target).unwrap();
    conn.query_drop(format!("USE `customer:{other}`"))
        .await
        .unwrap();
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM customer WHERE customer_id = 117")
        .await
        .unwrap();
    assert_eq!(n, Some(0));
}

/// A deterministic pseudo-random sequence.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const ITEM_TABLE: &str = "CREATE TABLE item (id BIGINT NOT NULL PRIMARY KEY, category VARCHAR(20), name VARCHAR(40), price DECIMAL(10,2), qty INT, score DOUBLE, created DATETIME, flag TINYINT)";

fn item_rows() -> Vec<String> {
    let cats = [
        "Apple", "apple", "BANANA", "banana", "Cherry", "cherry ", "date", "Éclair", "eclair",
    ];
    let mut r = Lcg(42);
    (1..=600)
        .map(|id| {
            let cat = if r.next(10) == 0 {
                "NULL".to_string()
            } else {
                format!("'{}'", cats[r.next(cats.len() as u64) as usize])
            };
            let price = if r.next(8) == 0 {
                "NULL".into()
            } else {
                format!("{}.{:02}", r.next(500), r.next(100))
            };
            let qty = if r.next(7) == 0 {
                "NULL".into()
            } else {
                format!("{}", r.next(50) as i64 - 10)
            };
            let score = if r.next(9) == 0 {
                "NULL".into()
            } else {
                format!("{}.5e0", r.next(1000))
            };
            format!(
                "({id}, {cat}, 'name{:03}', {price}, {qty}, {score}, '2024-0{}-1{} 1{}:00:00', {})",
                r.next(200),
                1 + r.next(9),
                r.next(10),
                r.next(10),
                r.next(2)
            )
        })
        .collect()
}

/// Queries and whether their row order is fully fixed (else compared as multisets).
/// Group keys on the case-insensitive `category` column are compared lower-cased: a single
/// server may show any member of a group.
const DIFF_QUERIES: &[(&str, bool)] = &[
    ("SELECT id, name FROM item WHERE id = 42", true),
    ("SELECT id FROM item WHERE id IN (3, 77, 512, 600, 9999) ORDER BY id", true),
    ("SELECT id, price FROM item WHERE price > 250 ORDER BY price DESC, id", true),
    ("SELECT id, qty FROM item ORDER BY qty, id", true),
    ("SELECT id, qty FROM item ORDER BY qty DESC, id DESC LIMIT 17", true),
    ("SELECT id FROM item ORDER BY id LIMIT 10 OFFSET 250", true),
    ("SELECT id FROM item ORDER BY id LIMIT 595, 10", true),
    ("SELECT id, score FROM item ORDER BY score, id LIMIT 30", true),
    ("SELECT id, created FROM item ORDER BY created DESC, id LIMIT 25", true),
    ("SELECT lower(category) FROM item ORDER BY category", true),
    ("SELECT name, id FROM item ORDER BY name, id LIMIT 40", true),
    ("SELECT COUNT(*) FROM item", true),
    ("SELECT COUNT(*), COUNT(qty), SUM(qty), MIN(qty), MAX(qty) FROM item", true),
    ("SELECT SUM(price), AVG(price), AVG(qty), MIN(price), MAX(price) FROM item", true),
    ("SELECT COUNT(*), SUM(qty), AVG(price), MIN(name), MAX(score) FROM item WHERE id < 0", true),
    ("SELECT MIN(category), MAX(category) FROM item", true),
    ("SELECT lower(category), COUNT(*), SUM(price) FROM item GROUP BY category", false),
    ("SELECT lower(category) c, COUNT(*) n, AVG(qty) FROM item GROUP BY category HAVING n > 60 ORDER BY n DESC", true),
    ("SELECT flag, COUNT(*), MIN(created), MAX(created) FROM item GROUP BY flag ORDER BY flag", true),
    ("SELECT qty, COUNT(*) FROM item GROUP BY qty HAVING COUNT(*) > 10 ORDER BY qty", true),
    ("SELECT COUNT(DISTINCT qty) FROM item", true),
    ("SELECT COUNT(DISTINCT category) FROM item", true),
    ("SELECT flag, COUNT(DISTINCT qty), COUNT(*) FROM item GROUP BY flag ORDER BY flag", true),
    ("SELECT DISTINCT qty FROM item ORDER BY qty", true),
    ("SELECT DISTINCT lower(category) FROM item", false),
    ("SELECT DISTINCT flag FROM item ORDER BY flag DESC LIMIT 1", true),
    ("SELECT id FROM item WHERE category = 'apple' AND qty > 20", false),
    ("SELECT id FROM item WHERE category IS NULL", false),
    ("SELECT id, name FROM item WHERE name LIKE 'name01%' ORDER BY id", true),
    ("SELECT qty, SUM(price) FROM item WHERE id IN (1,2,3,4,5,6,7,8,9,10,11,12) GROUP BY qty ORDER BY qty", true),
    ("SELECT id FROM item WHERE id BETWEEN 100 AND 140 ORDER BY id", true),
    ("SELECT id FROM item WHERE id < 5 UNION ALL SELECT id FROM item WHERE id > 596", false),
    ("SELECT COUNT(*) FROM item WHERE price IS NULL OR qty IS NULL", true),
    ("SELECT flag, SUM(qty) s FROM item GROUP BY flag HAVING s IS NOT NULL ORDER BY s", true),
];

fn normalize(rows: Vec<Vec<String>>, ordered: bool) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            // Members of one group under utf8mb4_general_ci (case, accents, trailing spaces)
            // may be shown either way: compare them folded.
            r.into_iter()
                .map(|v| v.trim_end().to_lowercase().replace('é', "e"))
                .collect()
        })
        .collect();
    if !ordered {
        rows.sort();
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_answers_equal_a_single_server() {
    let c = TestCluster::start(4).await;
    let mut sharded = c.conn("customer").await;
    sharded.query_drop(ITEM_TABLE).await.unwrap();
    let mut reference = c.direct("commerce", "-").await;
    reference
        .query_drop("CREATE DATABASE diff_ref")
        .await
        .unwrap();
    reference.query_drop("USE diff_ref").await.unwrap();
    reference.query_drop(ITEM_TABLE).await.unwrap();
    let rows_sql = item_rows();
    for chunk in rows_sql.chunks(100) {
        // No column list: schema tracking knows where the sharding column is.
        let sql = format!("INSERT INTO item VALUES {}", chunk.join(", "));
        sharded.query_drop(&sql).await.unwrap();
        assert_eq!(sharded.affected_rows(), chunk.len() as u64);
        reference.query_drop(&sql).await.unwrap();
    }
    let mut failures = Vec::new();
    for (q, ordered) in DIFF_QUERIES {
        let want = normalize(rows(&mut reference, q).await.unwrap(), *ordered);
        let got = match rows(&mut sharded, q).await {
            Ok(r) => normalize(r, *ordered),
            Err(e) => {
                failures.push(format!("{q}\n  error through shardgate: {e}"));
                continue;
            }
        };
        if got != want {
            failures.push(format!(
                "{q}\n  single server: {:?}\n  shardgate:     {:?}",
                &want[..want.len().min(8)],
                &got[..got.len().min(8)]
            ));
        }
    }
    // Prepared statements (binary protocol) through merges too.
    let values = |rows: Vec<mysql_async::Row>| -> Vec<Vec<mysql_async::Value>> {
        rows.into_iter().map(|r| r.unwrap()).collect()
    };
    for (q, params) in [
        (
            "SELECT qty, COUNT(*), SUM(price), AVG(price) FROM item WHERE id > ? GROUP BY qty ORDER BY qty",
            vec![mysql_async::Value::Int(300)],
        ),
        (
            "SELECT id, created, score, price FROM item WHERE id IN (?, ?, ?) ORDER BY id",
            vec![5.into(), 250.into(), 599.into()],
        ),
        ("SELECT MIN(created), MAX(score), COUNT(*) FROM item WHERE qty < ?", vec![3.into()]),
    ] {
        let want = values(reference.exec(q, params.clone()).await.unwrap());
        let got = values(sharded.exec(q, params).await.unwrap());
        if got != want {
            failures.push(format!("prepared {q}: {got:?} != {want:?}"));
        }
    }
    rerouted_answers(&c, &mut reference, &mut sharded, &mut failures).await;
    // Writes (moving rows between shards, rows the proxy places, upserts): the same
    // affected-row counts, then the same table.
    for w in DIFF_WRITES {
        let want = reference
            .query_drop(*w)
            .await
            .map(|()| reference.affected_rows());
        let got = sharded
            .query_drop(*w)
            .await
            .map(|()| sharded.affected_rows());
        match (want, got) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(a), Err(b)) if errno(&a) == errno(&b) => {}
            (want, got) => failures.push(format!(
                "{w}\n  single server: {want:?}\n  shardgate:     {got:?}"
            )),
        }
    }
    for q in [
        "SELECT * FROM item ORDER BY id",
        "SELECT COUNT(*), SUM(price), SUM(qty) FROM item",
    ] {
        let want = rows(&mut reference, q).await.unwrap();
        match rows(&mut sharded, q).await {
            Ok(got) if got == want => {}
            other => failures.push(format!("after the writes, {q}: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} statements differ:\n{}",
        failures.len(),
        DIFF_QUERIES.len() + DIFF_WRITES.len() + 5,
        failures.join("\n")
    );
}

/// Joins of a moved table with one that stayed (MoveTables' routing rules).
const REROUTED_JOINS: &[(&str, bool)] = &[
    ("SELECT i.id, p.sku FROM item i JOIN product p ON p.price = i.qty ORDER BY i.id, p.sku", true),
    ("SELECT p.sku, COUNT(*), SUM(i.price) FROM product p LEFT JOIN item i ON i.qty = p.price GROUP BY p.sku ORDER BY p.sku", true),
    ("SELECT id FROM item WHERE qty IN (SELECT price FROM product) ORDER BY id", true),
];

/// The differential queries again with `item` moved by a routing rule: named in
/// `commerce` (where it does not live) through `USE commerce` and as `commerce.item`, and
/// joined with commerce's own `product`; each answer must equal the single server's.
async fn rerouted_answers(
    c: &TestCluster,
    reference: &mut mysql_async::Conn,
    sharded: &mut mysql_async::Conn,
    failures: &mut Vec<String>,
) {
    reference
        .query_drop("CREATE TABLE product AS SELECT * FROM commerce.product")
        .await
        .unwrap();
    let (code, out) = c.shardctl_input(
        &["topo", "put", "routing_rules", "-"],
        r#"{"rules": [{"from_table": "commerce.item", "to_tables": ["customer.item"]}]}"#,
    );
    assert_eq!(code, 0, "{out}");
    let mut moved = c.conn("commerce").await;
    let start = std::time::Instant::now();
    while rows(&mut moved, "SELECT COUNT(*) FROM item").await.is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "rule not followed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // (how, through shardgate, on the single server, ordered)
    let mut cases: Vec<(&str, String, &str, bool)> = Vec::new();
    for (q, o) in DIFF_QUERIES.iter().chain(REROUTED_JOINS) {
        cases.push(("USE commerce", q.to_string(), q, *o));
    }
    for (q, o) in DIFF_QUERIES {
        let qualified = q.replace("FROM item", "FROM commerce.item");
        cases.push(("commerce.item from customer", qualified, q, *o));
    }
    for (how, q, reference_sql, ordered) in cases {
        let want = normalize(rows(reference, reference_sql).await.unwrap(), ordered);
        let conn = if how == "USE commerce" {
            &mut moved
        } else {
            &mut *sharded
        };
        match rows(conn, &q).await {
            Ok(r) if normalize(r.clone(), ordered) == want => {}
            other => failures.push(format!(
                "rerouted ({how}) {q}\n  single server: {:?}\n  shardgate:     {:?}",
                &want[..want.len().min(8)],
                other.map(|r| r.into_iter().take(8).collect::<Vec<_>>())
            )),
        }
    }
    let (ok, out) = c.shardctl(&["topo", "delete", "routing_rules", "--yes"]);
    assert!(ok, "{out}");
}

/// Writes applied to both sides of the differential test.
const DIFF_WRITES: &[&str] = &[
    "UPDATE item SET id = 1007, qty = qty + 1 WHERE id = 7",
    "UPDATE item SET qty = 5, id = 1008, name = CONCAT(name, qty) WHERE id = 8",
    "UPDATE item SET id = 1009 WHERE id = 9999",
    "UPDATE item SET id = 1010, price = NULL WHERE id = 10 ORDER BY id LIMIT 1",
    "UPDATE item SET id = 11 WHERE id = 11",
    "UPDATE item SET id = 12 WHERE id = 13",
    "UPDATE item SET price = price + 1 WHERE qty > 30",
    "INSERT INTO item SELECT id + 5000, category, name, price, qty, score, created, flag FROM item WHERE id < 40",
    "INSERT INTO item (id, name) SELECT id + 6000, name FROM item WHERE id BETWEEN 40 AND 45",
    "DELETE FROM item WHERE id > 5000 AND qty < 0",
    "REPLACE INTO item VALUES (3, 'x', 'y', 1.00, 1, 1.5, '2024-01-01 00:00:00', 1)",
    "INSERT INTO item VALUES (42, 'x', 'y', 1.00, 1, 1.5, '2024-01-01 00:00:00', 1) ON DUPLICATE KEY UPDATE qty = qty + 100",
    "INSERT IGNORE INTO item VALUES (43, 'x', 'y', 1.00, 1, 1.5, '2024-01-01 00:00:00', 1)",
    "INSERT INTO item VALUES (44, 'x', 'y', 1.00, 1, 1.5, '2024-01-01 00:00:00', 1)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_ddl_metadata_and_refusals() {
    let c = TestCluster::start(2).await;
    let mut conn = c.conn("customer").await;

    // Sequences: ids for rows that give none; LAST_INSERT_ID and the OK packet agree.
    conn.query_drop("INSERT INTO customer (email, name) VALUES ('s1@x', 'S1'), ('s2@x', 'S2')")
        .await
        .unwrap();
    let first = conn.last_insert_id().unwrap();
    assert!(
        first >= 1001,
        "sequence starts after the sample ids: {first}"
    );
    let lid: Option<u64> = conn.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    assert_eq!(lid, Some(first));
    let ids: Vec<u64> = conn
        .query("SELECT customer_id FROM customer WHERE email LIKE 's_@x' ORDER BY customer_id")
        .await
        .unwrap();
    assert_eq!(ids, vec![first, first + 1]);
    conn.exec_drop(
        "INSERT INTO corder (customer_id, sku, price) VALUES (?, ?, ?)",
        (first, "SKU-1001", 5),
    )
    .await
    .unwrap();
    let order_id = conn.last_insert_id().unwrap();
    let got: Option<u64> = conn
        .query_first(format!(
            "SELECT customer_id FROM corder WHERE order_id = {order_id}"
        ))
        .await
        .unwrap();
    assert_eq!(got, Some(first));

    // CREATE TABLE registers the table (sharded by its key, with a sequence); DROP removes it.
    conn.query_drop(
        "CREATE TABLE visit (visit_id BIGINT AUTO_INCREMENT PRIMARY KEY, page VARCHAR(20))",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO visit (page) VALUES ('a'), ('b'), ('c'), ('d')")
        .await
        .unwrap();
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(DISTINCT visit_id) FROM visit")
        .await
        .unwrap();
    assert_eq!(n, Some(4));
    let (ok, out) = c.shardctl(&["topo", "get", "keyspaces/customer"]);
    assert!(
        ok && out.contains("\"visit\"") && out.contains("commerce.visit_seq"),
        "{out}"
    );
    for s in ["-80", "80-"] {
        let mut d = c.direct("customer", s).await;
        let t: Vec<String> = d.query("SHOW TABLES LIKE 'visit'").await.unwrap();
        assert_eq!(t, vec!["visit"], "DDL did not reach {s}");
    }
    conn.query_drop("DROP TABLE visit").await.unwrap();
    let (_, out) = c.shardctl(&["topo", "get", "keyspaces/customer"]);
    assert!(!out.contains("\"visit\""), "{out}");
    let e = conn.query_drop("SELECT * FROM visit").await.unwrap_err();
    assert_eq!(errno(&e), Some(1146));

    // Metadata.
    let tables: Vec<String> = conn.query("SHOW TABLES").await.unwrap();
    assert!(
        tables.contains(&"customer".to_string()) && tables.contains(&"corder".to_string()),
        "{tables:?}"
    );
    let create: Option<(String, String)> = conn
        .query_first("SHOW CREATE TABLE customer")
        .await
        .unwrap();
    assert!(create.unwrap().1.contains("CREATE TABLE `customer`"));
    let cols: Vec<(String, String, String, String, Option<String>, String)> =
        conn.query("DESCRIBE corder").await.unwrap();
    assert_eq!(cols.len(), 4);
    let cols: Vec<String> = conn
        .query("SELECT column_name FROM information_schema.columns WHERE table_schema = 'customer' AND table_name = 'customer' ORDER BY ordinal_position")
        .await
        .unwrap();
    assert_eq!(cols, vec!["customer_id", "email", "name", "created_at"]);
    let shards: Vec<(String, String, String, String)> = conn.query("SHOW SHARDS").await.unwrap();
    assert!(shards.iter().any(|s| s.0 == "customer/-80"), "{shards:?}");
    let ks: Vec<String> = conn.query("SHOW KEYSPACES").await.unwrap();
    assert_eq!(ks, vec!["commerce", "customer"]);
    let plan: Vec<String> = conn
        .query("EXPLAIN FORMAT=shardgate SELECT COUNT(*) FROM customer")
        .await
        .unwrap();
    assert!(plan.join("\n").contains("aggregate"), "{plan:?}");

    // Refusals name what is not supported (1235), and change nothing.
    for q in [
        "SELECT name INTO @n FROM customer c JOIN corder o ON c.name = o.sku LIMIT 1",
        "UPDATE customer SET customer_id = customer_id + 1 WHERE customer_id = 6",
        "INSERT INTO customer SET customer_id = 5000, name = 'a'",
    ] {
        let e = conn.query_drop(q).await.unwrap_err();
        assert_eq!(errno(&e), Some(1235), "{q}: {e}");
    }
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM customer WHERE customer_id = 7")
        .await
        .unwrap();
    assert_eq!(n, Some(1));

    // Writes: summed affected rows across shards.
    conn.query_drop("UPDATE customer SET name = UPPER(name) WHERE customer_id <= 20")
        .await
        .unwrap();
    assert_eq!(conn.affected_rows(), 20);
    assert!(
        conn.info().starts_with("Rows matched: 20"),
        "{}",
        conn.info()
    );
    conn.query_drop("DELETE FROM corder WHERE customer_id IN (1, 2, 3)")
        .await
        .unwrap();
    let left: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM corder WHERE customer_id IN (1, 2, 3)")
        .await
        .unwrap();
    assert_eq!(left, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_vindexes_route_and_stay_in_step() {
    let c = TestCluster::start(2).await;
    let mut commerce = c.direct("commerce", "-").await;
    commerce
        .query_drop("CREATE TABLE customer_email_idx (email VARCHAR(128) NOT NULL PRIMARY KEY, keyspace_id VARBINARY(16))")
        .await
        .unwrap();
    let vschema = serde_json::json!({
        "sharded": true,
        "vindexes": {
            "hash": {"type": "hash"},
            "email_lookup": {"type": "lookup_unique", "owner": "customer",
                             "params": {"table": "commerce.customer_email_idx", "from": "email", "to": "keyspace_id"}}
        },
        "tables": {
            "customer": {"column_vindexes": [{"column": "customer_id", "name": "hash"}, {"column": "email", "name": "email_lookup"}],
                         "auto_increment": {"column": "customer_id", "sequence": "customer_seq"}},
            "corder": {"column_vindexes": [{"column": "customer_id", "name": "hash"}],
                       "auto_increment": {"column": "order_id", "sequence": "corder_seq"}}
        }
    });
    let file = c.dir().join("vschema.json");
    std::fs::write(&file, vschema.to_string()).unwrap();
    let (ok, out) = c.shardctl(&["vschema", "apply", "customer", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let mut conn = c.conn("customer").await;
    let shards = vec!["-80".to_string(), "80-".to_string()];
    conn.query_drop("INSERT INTO customer (customer_id, email, name) VALUES (501, 'l1@x', 'L1'), (502, 'l2@x', 'L2')")
        .await
        .unwrap();
    let mappings: Vec<(String, Vec<u8>)> = commerce
        .query("SELECT email, keyspace_id FROM customer_email_idx ORDER BY email")
        .await
        .unwrap();
    assert_eq!(mappings.len(), 2);
    let v = Vindex::from_spec("hash", "hash", &BTreeMap::new(), "").unwrap();
    assert_eq!(
        mappings[0].1,
        v.map(&SqlValue::Int(501)).unwrap().unwrap().0
    );

    // A query by email reaches only the shard of the row.
    let mut directs = Vec::new();
    for s in &shards {
        directs.push(c.direct("customer", s).await);
    }
    let mut before = Vec::new();
    for d in directs.iter_mut() {
        before.push(com_select(d).await);
    }
    let name: Option<String> = conn
        .query_first("SELECT name FROM customer WHERE email = 'l2@x'")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("L2"));
    let mut touched = Vec::new();
    for (i, d) in directs.iter_mut().enumerate() {
        if com_select(d).await > before[i] {
            touched.push(shards[i].clone());
        }
    }
    assert_eq!(touched, vec![hash_shard(502, &shards)]);

    // Duplicates are refused; the first row is untouched.
    let e = conn
        .query_drop("INSERT INTO customer (customer_id, email, name) VALUES (503, 'l1@x', 'dup')")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1062), "{e}");
    // UPDATE moves the mapping; DELETE removes it.
    conn.query_drop("UPDATE customer SET email = 'l1-new@x' WHERE customer_id = 501")
        .await
        .unwrap();
    let emails: Vec<String> = commerce
        .query("SELECT email FROM customer_email_idx ORDER BY email")
        .await
        .unwrap();
    assert_eq!(emails, vec!["l1-new@x", "l2@x"]);
    let name: Option<String> = conn
        .query_first("SELECT name FROM customer WHERE email = 'l1-new@x'")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("L1"));
    conn.query_drop("DELETE FROM customer WHERE customer_id = 502")
        .await
        .unwrap();
    let emails: Vec<String> = commerce
        .query("SELECT email FROM customer_email_idx ORDER BY email")
        .await
        .unwrap();
    assert_eq!(emails, vec!["l1-new@x"]);
    // An orphan mapping (its row never made it) is taken over by the next insert.
    commerce
        .query_drop("INSERT INTO customer_email_idx VALUES ('orphan@x', X'0102030405060708')")
        .await
        .unwrap();
    conn.query_drop(
        "INSERT INTO customer (customer_id, email, name) VALUES (504, 'orphan@x', 'O')",
    )
    .await
    .unwrap();
    let name: Option<String> = conn
        .query_first("SELECT name FROM customer WHERE email = 'orphan@x'")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("O"));
}
