//! Changing a row's sharding column moves the row (issue 10): delete on the old shard,
//! insert on the new one, owned lookup vindexes repointed, all in one transaction.

use integration_tests::{errno, hash_shard, TestCluster};
use mysql_async::prelude::*;
use mysql_async::Conn;
use shardgate_topology::vindex::{SqlValue, Vindex};
use std::collections::BTreeMap;

/// Which shards hold customer `id` (read directly).
async fn holders(c: &TestCluster, table: &str, col: &str, id: i64) -> Vec<String> {
    let mut out = Vec::new();
    for s in c.shard_names("customer") {
        let mut d = c.direct("customer", &s).await;
        let n: Option<u64> = d
            .query_first(format!("SELECT COUNT(*) FROM {table} WHERE {col} = {id}"))
            .await
            .unwrap();
        if n.unwrap_or(0) > 0 {
            out.push(s);
        }
    }
    out
}

async fn mapping(commerce: &mut Conn, email: &str) -> Option<Vec<u8>> {
    commerce
        .exec_first(
            "SELECT keyspace_id FROM customer_email_idx WHERE email = ?",
            (email,),
        )
        .await
        .unwrap()
}

fn ksid(id: i64) -> Vec<u8> {
    let v = Vindex::from_spec("hash", "hash", &BTreeMap::new(), "").unwrap();
    v.map(&SqlValue::Int(id)).unwrap().unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_the_sharding_column_moves_the_row() {
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
            "customer": {"column_vindexes": [{"column": "customer_id", "name": "hash"}, {"column": "email", "name": "email_lookup"}]},
            "corder": {"column_vindexes": [{"column": "customer_id", "name": "hash"}]}
        }
    });
    let file = c.dir().join("vschema.json");
    std::fs::write(&file, vschema.to_string()).unwrap();
    let (ok, out) = c.shardctl(&["vschema", "apply", "customer", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let shards = c.shard_names("customer");
    let (a, b) = c.ids_on_two_shards(7001);
    let mut conn = c.conn("customer").await;
    conn.query_drop(format!(
        "INSERT INTO customer (customer_id, email, name) VALUES ({a}, 'mover@x', 'Mover')"
    ))
    .await
    .unwrap();
    assert_eq!(
        holders(&c, "customer", "customer_id", a).await,
        [hash_shard(a, &shards)]
    );

    // Autocommit: the row moves with the other assignments applied by MySQL.
    conn.query_drop(format!(
        "UPDATE customer SET name = CONCAT(name, '!'), customer_id = {b} WHERE customer_id = {a}"
    ))
    .await
    .unwrap();
    assert_eq!(conn.affected_rows(), 1);
    assert_eq!(
        holders(&c, "customer", "customer_id", a).await,
        Vec::<String>::new()
    );
    assert_eq!(
        holders(&c, "customer", "customer_id", b).await,
        [hash_shard(b, &shards)]
    );
    let row: Option<(i64, String, String)> = conn
        .query_first("SELECT customer_id, email, name FROM customer WHERE email = 'mover@x'")
        .await
        .unwrap();
    assert_eq!(row, Some((b, "mover@x".into(), "Mover!".into())));
    assert_eq!(mapping(&mut commerce, "mover@x").await, Some(ksid(b)));

    // Prepared, with placeholders, back again; the lookup column changes too.
    conn.exec_drop(
        "UPDATE customer SET customer_id = ?, email = ? WHERE customer_id = ?",
        (a, "moved@x", b),
    )
    .await
    .unwrap();
    assert_eq!(conn.affected_rows(), 1);
    assert_eq!(
        holders(&c, "customer", "customer_id", a).await,
        [hash_shard(a, &shards)]
    );
    assert_eq!(mapping(&mut commerce, "mover@x").await, None);
    assert_eq!(mapping(&mut commerce, "moved@x").await, Some(ksid(a)));

    // Inside a transaction: ROLLBACK undoes the move on both shards.
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(format!(
        "UPDATE customer SET customer_id = {b} WHERE customer_id = {a}"
    ))
    .await
    .unwrap();
    conn.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(
        holders(&c, "customer", "customer_id", a).await,
        [hash_shard(a, &shards)]
    );
    assert_eq!(
        holders(&c, "customer", "customer_id", b).await,
        Vec::<String>::new()
    );
    assert_eq!(mapping(&mut commerce, "moved@x").await, Some(ksid(a)));

    // A move onto an existing key fails as a whole: nothing copied, nothing deleted.
    conn.query_drop(format!(
        "INSERT INTO customer (customer_id, email, name) VALUES ({b}, 'other@x', 'Other')"
    ))
    .await
    .unwrap();
    let e = conn
        .query_drop(format!(
            "UPDATE customer SET customer_id = {b} WHERE customer_id = {a}"
        ))
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1062), "{e}");
    assert_eq!(
        holders(&c, "customer", "customer_id", a).await,
        [hash_shard(a, &shards)]
    );
    let names: Vec<String> = conn
        .query(format!(
            "SELECT name FROM customer WHERE customer_id IN ({a}, {b}) ORDER BY name"
        ))
        .await
        .unwrap();
    assert_eq!(names, ["Mover!", "Other"]);

    // Under twopc, and several rows at once (orders of one customer to another).
    conn.query_drop("SET transaction_mode = 'twopc'")
        .await
        .unwrap();
    let (x, y) = c.ids_on_two_shards(8001);
    let orders: Vec<String> = (0..5)
        .map(|i| format!("({}, {x}, 'SKU-{i}', {i})", 9000 + i))
        .collect();
    conn.query_drop(format!(
        "INSERT INTO corder (order_id, customer_id, sku, price) VALUES {}",
        orders.join(", ")
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "UPDATE corder SET customer_id = {y}, price = price + 1 WHERE customer_id = {x} AND price >= 1"
    ))
    .await
    .unwrap();
    assert_eq!(conn.affected_rows(), 4);
    let info = conn.info().to_string();
    assert!(info.contains("Rows matched: 4"), "{info}");
    let moved: Vec<(i64, i64)> = conn
        .query(format!(
            "SELECT order_id, price FROM corder WHERE customer_id = {y} ORDER BY order_id"
        ))
        .await
        .unwrap();
    assert_eq!(moved, [(9001, 2), (9002, 3), (9003, 4), (9004, 5)]);
    assert_eq!(
        holders(&c, "corder", "customer_id", y).await,
        [hash_shard(y, &shards)]
    );
    let left: Vec<i64> = conn
        .query(format!(
            "SELECT order_id FROM corder WHERE customer_id = {x}"
        ))
        .await
        .unwrap();
    assert_eq!(left, [9000]);

    // What cannot be known before reading: a clear refusal.
    let e = conn
        .query_drop("UPDATE customer SET customer_id = customer_id + 1 WHERE customer_id = 1")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1235), "{e}");
}
