//! Joins and subqueries across shards (issue 11): four tables each sharded by its own key
//! on a 4-shard keyspace, most joins crossing shards, compared with one plain MariaDB
//! holding the same rows. Counts answers that differ (must be 0) and refusals.

use integration_tests::{errno, rows, TestCluster};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

const TABLES: &[&str] = &[
    "CREATE TABLE customers (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(40), city VARCHAR(20), tier INT, KEY (city))",
    "CREATE TABLE products (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(40), category VARCHAR(20), price DECIMAL(10,2))",
    "CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, customer_id BIGINT, status VARCHAR(10), created DATE, note VARCHAR(20))",
    "CREATE TABLE order_lines (id BIGINT NOT NULL PRIMARY KEY, order_id BIGINT NOT NULL, product_id BIGINT, qty INT, price DECIMAL(10,2))",
];

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

/// INSERT statements (no column lists) for the four tables.
fn data() -> Vec<String> {
    let mut r = Lcg(7);
    let cities = ["Paris", "paris", "Berlin", "Oslo", "Rome"];
    let cats = ["tools", "toys", "Tools", "food"];
    let statuses = ["new", "paid", "shipped", "NEW"];
    let mut out = Vec::new();
    let customers: Vec<String> = (1..=60)
        .map(|i| {
            let city = if r.next(9) == 0 {
                "NULL".to_string()
            } else {
                format!("'{}'", cities[r.next(5) as usize])
            };
            format!("({i}, 'cust{:02}', {city}, {})", r.next(40), r.next(4))
        })
        .collect();
    out.push(format!(
        "INSERT INTO customers VALUES {}",
        customers.join(", ")
    ));
    let products: Vec<String> = (1..=30)
        .map(|i| {
            let price = if i % 11 == 0 {
                "NULL".to_string()
            } else {
                format!("{}.{:02}", r.next(90) + 1, r.next(100))
            };
            format!(
                "({i}, 'prod{:02}', '{}', {price})",
                r.next(25),
                cats[r.next(4) as usize]
            )
        })
        .collect();
    out.push(format!(
        "INSERT INTO products VALUES {}",
        products.join(", ")
    ));
    let orders: Vec<String> = (1..=300)
        .map(|i| {
            // Some orders belong to customers that do not exist, some to none.
            let cust = match r.next(20) {
                0 => "NULL".to_string(),
                1 => format!("{}", 100 + r.next(5)),
                _ => format!("{}", 1 + r.next(60)),
            };
            format!(
                "({i}, {cust}, '{}', '2024-0{}-1{}', {})",
                statuses[r.next(4) as usize],
                1 + r.next(9),
                r.next(10),
                if r.next(5) == 0 {
                    "NULL".to_string()
                } else {
                    format!("'n{}'", r.next(7))
                }
            )
        })
        .collect();
    out.push(format!("INSERT INTO orders VALUES {}", orders.join(", ")));
    let lines: Vec<String> = (1..=900)
        .map(|i| {
            let product = if r.next(30) == 0 {
                "NULL".to_string()
            } else {
                format!("{}", 1 + r.next(32))
            };
            format!(
                "({i}, {}, {product}, {}, {}.{:02})",
                1 + r.next(310),
                1 + r.next(5),
                r.next(50),
                r.next(100)
            )
        })
        .collect();
    for chunk in lines.chunks(300) {
        out.push(format!(
            "INSERT INTO order_lines VALUES {}",
            chunk.join(", ")
        ));
    }
    out
}

/// Queries, and whether their row order is fully fixed (else compared as multisets).
const QUERIES: &[(&str, bool)] = &[
    // Inner joins: two, three, four tables; on non-sharding columns; with filters.
    ("SELECT o.id, c.name FROM orders o JOIN customers c ON o.customer_id = c.id WHERE o.id <= 40 ORDER BY o.id", true),
    ("SELECT o.id, c.name, c.city FROM orders o, customers c WHERE o.customer_id = c.id AND c.tier = 2", false),
    ("SELECT c.name, o.id, l.qty FROM customers c JOIN orders o ON o.customer_id = c.id JOIN order_lines l ON l.order_id = o.id WHERE c.id = 7", false),
    ("SELECT c.id, o.id, l.id, p.name FROM customers c JOIN orders o ON o.customer_id = c.id JOIN order_lines l ON l.order_id = o.id JOIN products p ON p.id = l.product_id WHERE c.city = 'Oslo'", false),
    ("SELECT l.id, p.name, p.price * l.qty AS total FROM order_lines l JOIN products p ON p.id = l.product_id WHERE l.id BETWEEN 100 AND 160", false),
    ("SELECT o.id FROM orders o JOIN customers c ON o.customer_id = c.id AND c.city = 'paris'", false),
    ("SELECT o.id, c.id FROM orders o JOIN customers c ON c.tier = o.id % 4 WHERE o.id < 12", false),
    ("SELECT o.id, c.name FROM orders o JOIN customers c USING (id) WHERE o.id < 30", false),
    // Self join and a join on a non-key column.
    ("SELECT a.id, b.id FROM customers a JOIN customers b ON a.city = b.city AND a.id < b.id WHERE a.tier = 1", false),
    ("SELECT c1.name, c2.name FROM customers c1 JOIN customers c2 ON c2.id = c1.tier + 1 WHERE c1.id < 20", false),
    // Outer joins: NULL padding, anti-join, filters on either side.
    ("SELECT c.id, o.id FROM customers c LEFT JOIN orders o ON o.customer_id = c.id WHERE c.id > 50 ORDER BY c.id, o.id", true),
    ("SELECT c.id FROM customers c LEFT JOIN orders o ON o.customer_id = c.id WHERE o.id IS NULL ORDER BY c.id", true),
    ("SELECT c.id, o.status FROM customers c LEFT JOIN orders o ON o.customer_id = c.id AND o.status = 'paid' WHERE c.tier = 3", false),
    ("SELECT o.id, c.name FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.name IS NULL", false),
    ("SELECT o.id, c.city FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.city = 'Rome' OR o.id < 5", false),
    ("SELECT c.id, o.id FROM orders o RIGHT JOIN customers c ON o.customer_id = c.id WHERE c.id BETWEEN 20 AND 30", false),
    ("SELECT o.id, l.id, p.id FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id LEFT JOIN products p ON p.id = l.product_id WHERE o.id BETWEEN 290 AND 300", false),
    // Aggregates, GROUP BY, HAVING, ORDER BY, LIMIT over joins.
    ("SELECT c.city, COUNT(*), SUM(l.qty) FROM customers c JOIN orders o ON o.customer_id = c.id JOIN order_lines l ON l.order_id = o.id GROUP BY c.city", false),
    ("SELECT c.id, COUNT(o.id) n FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id HAVING n > 6 ORDER BY n DESC, c.id", true),
    ("SELECT p.category, SUM(l.qty * l.price), AVG(p.price), COUNT(DISTINCT l.order_id) FROM order_lines l JOIN products p ON p.id = l.product_id GROUP BY p.category", false),
    ("SELECT o.id, SUM(l.qty) s FROM orders o JOIN order_lines l ON l.order_id = o.id GROUP BY o.id ORDER BY s DESC, o.id LIMIT 10", true),
    ("SELECT DISTINCT c.city FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.status = 'new'", false),
    ("SELECT c.name, o.created FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY o.created DESC, o.id LIMIT 5 OFFSET 3", false),
    ("SELECT COUNT(*) FROM orders o JOIN order_lines l ON l.order_id = o.id", true),
    // Subqueries: IN, NOT IN (with NULLs), EXISTS, NOT EXISTS, scalar, correlated.
    ("SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE city = 'Berlin') ORDER BY id", true),
    ("SELECT id FROM customers WHERE id NOT IN (SELECT customer_id FROM orders) ORDER BY id", true),
    ("SELECT id FROM customers WHERE id NOT IN (SELECT customer_id FROM orders WHERE customer_id IS NOT NULL) ORDER BY id", true),
    ("SELECT c.id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.status = 'shipped') ORDER BY c.id", true),
    ("SELECT c.id FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id) ORDER BY c.id", true),
    ("SELECT o.id, (SELECT name FROM customers c WHERE c.id = o.customer_id) FROM orders o WHERE o.id < 25", false),
    ("SELECT c.id, (SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.id) AS n FROM customers c ORDER BY n DESC, c.id LIMIT 8", true),
    ("SELECT id, price FROM products WHERE price > (SELECT AVG(price) FROM products)", false),
    ("SELECT l.id FROM order_lines l WHERE l.qty > (SELECT AVG(l2.qty) FROM order_lines l2 WHERE l2.product_id = l.product_id) AND l.id < 200", false),
    ("SELECT id FROM orders WHERE customer_id = (SELECT MAX(id) FROM customers WHERE tier = 0)", false),
    // Derived tables, CTEs, UNION.
    ("SELECT t.customer_id, t.n, c.name FROM (SELECT customer_id, COUNT(*) n FROM orders GROUP BY customer_id) t JOIN customers c ON c.id = t.customer_id WHERE t.n > 5", false),
    ("WITH big AS (SELECT order_id, SUM(qty) q FROM order_lines GROUP BY order_id HAVING q > 12) SELECT o.id, o.status, big.q FROM big JOIN orders o ON o.id = big.order_id", false),
    ("SELECT id FROM customers WHERE tier = 0 UNION SELECT customer_id FROM orders WHERE status = 'paid' ORDER BY id LIMIT 12", true),
    ("(SELECT id, name FROM customers ORDER BY name DESC, id LIMIT 3) UNION ALL (SELECT id, name FROM products ORDER BY id LIMIT 2)", false),
    // Window functions over sharded rows.
    ("SELECT id, customer_id, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY id) FROM orders WHERE customer_id < 6", false),
    ("SELECT id, SUM(qty) OVER (ORDER BY id) FROM order_lines WHERE id < 40", false),
    // Expressions only the proxy's scratch can evaluate after the join.
    ("SELECT CONCAT(c.name, '/', COALESCE(o.note, '-')), IF(o.status = 'NEW', 1, 0) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id < 30", false),
    ("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.note = CONCAT('n', c.tier)", false),
    ("SELECT o.id, c.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE NOT c.tier = 1 AND NOT (o.status LIKE 'n%') AND o.id < 80", false),
    // More shapes: nested subqueries, derived tables with joins, recursive CTEs, windows
    // over joins, other keyspaces, cross joins, correlated self-references.
    ("SELECT p.category, COUNT(*) FROM products p WHERE p.id IN (SELECT product_id FROM order_lines WHERE qty > 3) GROUP BY p.category", false),
    ("SELECT c.id FROM customers c WHERE c.id IN (SELECT customer_id FROM orders WHERE status = 'paid') AND c.id NOT IN (SELECT customer_id FROM orders WHERE status = 'new' AND customer_id IS NOT NULL) ORDER BY c.id", true),
    ("SELECT o.id FROM orders o WHERE EXISTS (SELECT 1 FROM order_lines l JOIN products p ON p.id = l.product_id WHERE l.order_id = o.id AND p.category = 'toys') ORDER BY o.id", true),
    ("SELECT c.city, AVG(t.total), COUNT(*) FROM customers c JOIN (SELECT o.customer_id, SUM(l.qty * l.price) total FROM orders o JOIN order_lines l ON l.order_id = o.id GROUP BY o.customer_id) t ON t.customer_id = c.id GROUP BY c.city", false),
    ("WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT c.id, c.name FROM customers c JOIN r ON r.n = c.id", false),
    ("SELECT o.id, RANK() OVER (PARTITION BY c.city ORDER BY o.id) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id < 60", false),
    ("SELECT p.sku, p.price FROM commerce.product p WHERE p.price > (SELECT AVG(price) FROM products)", false),
    ("SELECT l.id, p.sku FROM order_lines l JOIN commerce.product p ON p.price = l.qty * 10 WHERE l.id < 300", false),
    ("SELECT c.id, o.id FROM customers c CROSS JOIN orders o WHERE c.id = 3 AND o.id < 4", false),
    ("SELECT a.id FROM orders a WHERE a.created = (SELECT MAX(b.created) FROM orders b WHERE b.customer_id = a.customer_id) ORDER BY a.id", true),
    ("SELECT COUNT(*) FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id WHERE l.id IS NULL", true),
    ("SELECT c.name FROM customers c WHERE c.tier = (SELECT tier FROM customers WHERE id = 5)", false),
    ("SELECT o.status, COUNT(DISTINCT o.customer_id), COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY o.status", false),
    ("SELECT * FROM (SELECT id, customer_id FROM orders ORDER BY id DESC LIMIT 5) t JOIN customers c ON c.id = t.customer_id", false),
    ("SELECT o.id FROM orders o WHERE o.customer_id = ANY (SELECT id FROM customers WHERE tier = 2) ORDER BY o.id", true),
    ("SELECT c.id, (SELECT MAX(l.qty) FROM orders o JOIN order_lines l ON l.order_id = o.id WHERE o.customer_id = c.id) m FROM customers c WHERE c.id < 15", false),
    ("SELECT DISTINCT p.category FROM products p JOIN order_lines l ON l.product_id = p.id JOIN orders o ON o.id = l.order_id WHERE o.customer_id IN (1, 2, 3, 4, 5)", false),
    // Locking read across shards.
    ("SELECT o.id, c.tier FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 17 FOR UPDATE", false),
];

/// Writes whose rows are found through other tables (subqueries, joins, several targets).
const WRITES: &[&str] = &[
    "UPDATE orders SET status = 'vip' WHERE customer_id IN (SELECT id FROM customers WHERE tier = 3)",
    "DELETE FROM order_lines WHERE order_id IN (SELECT id FROM orders WHERE status = 'NEW' AND created < '2024-03-01')",
    "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.note = CONCAT('c', c.tier) WHERE c.city = 'Oslo'",
    "DELETE o FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL AND o.customer_id IS NOT NULL",
    "UPDATE products SET price = price * 2 WHERE id IN (SELECT product_id FROM order_lines WHERE qty = 5)",
    "UPDATE customers c SET tier = (SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.id) WHERE c.id < 10",
    "UPDATE order_lines l JOIN products p ON p.id = l.product_id SET l.price = p.price, p.name = CONCAT(p.name, '*') WHERE l.id < 50",
    "DELETE l, o FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE o.status = 'paid' AND o.id < 60",
    "UPDATE orders SET status = 'late' WHERE customer_id IN (SELECT id FROM customers WHERE city = 'Rome') ORDER BY id LIMIT 5",
    "INSERT INTO orders SELECT o.id + 1000, c.id, 'copy', o.created, c.city FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id < 20",
    "DELETE FROM customers WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id)",
];

fn normalize(rows: Vec<Vec<String>>, ordered: bool) -> Vec<Vec<String>> {
    // Members of one group under utf8mb4_general_ci may be shown either way ('Paris' and
    // 'paris'): compare them folded.
    let mut rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.to_lowercase()).collect())
        .collect();
    if !ordered {
        rows.sort();
    }
    rows
}

async fn load(conn: &mut Conn) {
    for t in TABLES {
        conn.query_drop(*t).await.unwrap();
    }
    for s in data() {
        conn.query_drop(s).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_subqueries_across_shards_equal_a_single_server() {
    let mut c = TestCluster::start(4).await;
    let mut sharded = c.conn("customer").await;
    load(&mut sharded).await;
    let mut reference = c.direct("commerce", "-").await;
    reference
        .query_drop("CREATE DATABASE join_ref")
        .await
        .unwrap();
    reference.query_drop("USE join_ref").await.unwrap();
    load(&mut reference).await;

    let mut wrong = Vec::new();
    let mut refused = Vec::new();
    for (q, ordered) in QUERIES {
        let want = normalize(rows(&mut reference, q).await.unwrap(), *ordered);
        match rows(&mut sharded, q).await {
            Ok(got) => {
                let got = normalize(got, *ordered);
                if got != want {
                    wrong.push(format!(
                        "{q}\n  single server ({} rows): {:?}\n  shardgate ({} rows):     {:?}",
                        want.len(),
                        &want[..want.len().min(6)],
                        got.len(),
                        &got[..got.len().min(6)]
                    ));
                }
            }
            Err(e) if e.downcast_ref().and_then(errno) == Some(1235) => {
                refused.push(format!("{q}: {e}"))
            }
            Err(e) => wrong.push(format!("{q}\n  error: {e}")),
        }
    }
    // Prepared statements (binary protocol) with placeholders in the join.
    let values = |rows: Vec<mysql_async::Row>| -> Vec<Vec<Value>> {
        let mut v: Vec<Vec<Value>> = rows.into_iter().map(|r| r.unwrap()).collect();
        v.sort_by_key(|r| format!("{r:?}"));
        v
    };
    for (q, params) in [
        (
            "SELECT o.id, c.name, o.created FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.city = ? AND o.id > ?",
            vec![Value::from("Oslo"), Value::from(100)],
        ),
        (
            "SELECT c.id, COUNT(*) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.status = ? GROUP BY c.id",
            vec![Value::from("paid")],
        ),
        // Pinned to placeholders: one shard when the values agree, gathered otherwise.
        (
            "SELECT o.id, o.status, c.name FROM orders o, customers c WHERE o.id = ? AND c.id = ?",
            vec![Value::from(5), Value::from(5)],
        ),
        (
            "SELECT o.id, o.status, c.name FROM orders o, customers c WHERE o.id = ? AND c.id = ?",
            vec![Value::from(5), Value::from(6)],
        ),
        (
            "SELECT o.id, o.status, c.name FROM orders o, customers c WHERE o.id = ? AND c.id = ?",
            vec![Value::from(7), Value::from(11)],
        ),
    ] {
        let want = values(reference.exec(q, params.clone()).await.unwrap());
        match sharded.exec(q, params).await.map(values) {
            Ok(got) if got == want => {}
            other => wrong.push(format!("prepared {q}: {other:?} != {want:?}")),
        }
    }
    // Writes that find their rows through other tables, then the same tables.
    for w in WRITES {
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
            (_, Err(e)) if errno(&e) == Some(1235) => refused.push(format!("{w}: {e}")),
            (want, got) => wrong.push(format!(
                "{w}\n  single server: {want:?}\n  shardgate:     {got:?}"
            )),
        }
    }
    for t in ["customers", "products", "orders", "order_lines"] {
        let q = format!("SELECT * FROM {t} ORDER BY id");
        let want = rows(&mut reference, &q).await.unwrap();
        match rows(&mut sharded, &q).await {
            Ok(got) if got == want => {}
            Ok(got) => wrong.push(format!(
                "after the writes, {t}: {} rows here, {} there; first difference: {:?}",
                got.len(),
                want.len(),
                got.iter().zip(&want).find(|(a, b)| a != b)
            )),
            Err(e) => wrong.push(format!("after the writes, {t}: {e}")),
        }
    }
    bounds_are_kept(&mut c).await;
    let total = QUERIES.len() + 5 + WRITES.len();
    eprintln!(
        "joins: {total} statements, {} wrong, {} refused",
        wrong.len(),
        refused.len()
    );
    for r in &refused {
        eprintln!("  refused: {r}");
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        refused.len() * 20 <= total,
        "{} of {total} refused (at most 5%)",
        refused.len()
    );
}

/// A gathered statement that would need more rows or bytes than allowed fails with a
/// clear error, and leaves nothing behind: the next one works.
async fn bounds_are_kept(c: &mut TestCluster) {
    for (id, env, needle) in [
        (
            "bytes",
            ("SHARDGATE_SESSION_MAX_GATHER_BYTES", "5000"),
            "session.max_gather_bytes",
        ),
        (
            "rows",
            ("SHARDGATE_SESSION_MAX_MERGE_ROWS", "200"),
            "session.max_merge_rows",
        ),
    ] {
        c.info.start_proxy_env(id, 0, 0, &[env]).await.unwrap();
        let addr = c
            .info
            .proxies
            .iter()
            .find(|p| p.id == id)
            .unwrap()
            .mysql
            .clone();
        let mut conn = Conn::new(
            mysql_async::Opts::from_url(&integration_tests::url_for(&addr, "customer")).unwrap(),
        )
        .await
        .unwrap();
        // No equality to reduce by: every row of both tables would have to be gathered.
        let e = conn
            .query_drop("SELECT COUNT(*) FROM customers c JOIN orders o ON c.tier > o.id % 2")
            .await
            .unwrap_err();
        assert_eq!(errno(&e), Some(1105), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        let n: Vec<(i64, String)> = conn
            .query("SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id IN (3, 4)")
            .await
            .unwrap();
        assert!(!n.is_empty());
    }
}
