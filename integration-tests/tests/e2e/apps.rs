//! Real applications on the sharded keyspace (issue 10): schema tracking across proxies
//! and DDL run directly on shards, the writes tools send (no column list, dumps with
//! locks and DISABLE KEYS, INSERT ... SELECT, RETURNING), and Python drivers and ORMs.

use integration_tests::{errno, mariadb_cli, mariadb_dump, url_for, TestCluster};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::time::{Duration, Instant};

async fn conn_to(addr: &str, db: &str) -> Conn {
    Conn::new(Opts::from_url(&url_for(addr, db)).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_tracking_follows_ddl_through_any_proxy_and_on_the_shards() {
    let mut c = TestCluster::start(2).await;
    c.info
        .start_proxy_env(
            "second",
            0,
            0,
            &[("SHARDGATE_SESSION_SCHEMA_REFRESH_S", "1")],
        )
        .await
        .unwrap();
    let second = c
        .info
        .proxies
        .iter()
        .find(|p| p.id == "second")
        .unwrap()
        .mysql
        .clone();
    let mut a = c.conn("customer").await;
    let mut b = conn_to(&second, "customer").await;

    // DDL through one proxy; the other knows the columns at once.
    a.query_drop("CREATE TABLE gadget (g_id BIGINT NOT NULL, kind VARCHAR(8), PRIMARY KEY (g_id))")
        .await
        .unwrap();
    let t0 = Instant::now();
    loop {
        match b
            .query_drop("INSERT INTO gadget VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .await
        {
            Ok(()) => break,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(3), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.affected_rows(), 3);
    a.query_drop("ALTER TABLE gadget ADD COLUMN weight INT DEFAULT 7")
        .await
        .unwrap();
    // The old column count is refused by the proxy that ran the DDL at once...
    let e = a
        .query_drop("INSERT INTO gadget VALUES (4, 'd')")
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(1136), "{e}");
    a.query_drop("INSERT INTO gadget VALUES (4, 'd', 40)")
        .await
        .unwrap();
    // ... and by the other one as soon as the change is announced.
    let t0 = Instant::now();
    loop {
        match b.query_drop("INSERT INTO gadget VALUES (5, 'e', 50)").await {
            Ok(()) => break,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(3), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // DDL run directly on every shard is noticed by the periodic refresh.
    for s in c.shard_names("customer") {
        let mut d = c.direct("customer", &s).await;
        d.query_drop("ALTER TABLE gadget ADD COLUMN color VARCHAR(8)")
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    loop {
        match b
            .query_drop("INSERT INTO gadget VALUES (6, 'f', 60, 'red')")
            .await
        {
            Ok(()) => break,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(5), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: Vec<(i64, String, i64, Option<String>)> = b
        .query("SELECT g_id, kind, weight, color FROM gadget ORDER BY g_id")
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0], (1, "a".into(), 7, None));
    assert_eq!(rows[5], (6, "f".into(), 60, Some("red".into())));
    // Each row lives on the shard of its key.
    let shards = c.shard_names("customer");
    for (id, ..) in &rows {
        let home = integration_tests::hash_shard(*id, &shards);
        let mut d = c.direct("customer", &home).await;
        let n: Option<i64> = d
            .exec_first("SELECT COUNT(*) FROM gadget WHERE g_id = ?", (*id,))
            .await
            .unwrap();
        assert_eq!(n, Some(1), "row {id} on {home}");
    }
    // A table created straight on the shards and added to the VSchema: the first INSERT
    // without a column list reads its columns on the spot.
    for s in c.shard_names("customer") {
        let mut d = c.direct("customer", &s).await;
        d.query_drop("CREATE TABLE widget (w_id BIGINT PRIMARY KEY, label VARCHAR(8))")
            .await
            .unwrap();
    }
    c.apply_customer_vschema(serde_json::json!({
        "gadget": {"column_vindexes": [{"column": "g_id", "name": "hash"}]},
        "widget": {"column_vindexes": [{"column": "w_id", "name": "hash"}]}
    }))
    .await;
    a.query_drop("INSERT INTO widget VALUES (1, 'x'), (2, 'y')")
        .await
        .unwrap();
    assert_eq!(a.affected_rows(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_dump_of_a_sharded_keyspace_restores_exactly() {
    let c = TestCluster::start(2).await;
    let addr = c.proxy_addr();
    let mut conn = c.conn("customer").await;
    conn.query_drop(
        "CREATE TABLE doc (owner BIGINT NOT NULL, n INT NOT NULL, body LONGBLOB, note TEXT, \
         PRIMARY KEY (owner, n))",
    )
    .await
    .unwrap();
    for owner in 1..30i64 {
        for n in 0..3i32 {
            let body: Option<Vec<u8>> = if n == 2 {
                None
            } else {
                Some(
                    (0..(owner as usize * 37 + n as usize))
                        .map(|i| (i * 7 + owner as usize) as u8)
                        .collect(),
                )
            };
            conn.exec_drop(
                "INSERT INTO doc (owner, n, body, note) VALUES (?, ?, ?, ?)",
                (
                    owner,
                    n,
                    body,
                    if n == 1 {
                        None
                    } else {
                        Some(format!("é {owner}'\\{n}"))
                    },
                ),
            )
            .await
            .unwrap();
        }
    }
    let sums = "SELECT owner, n, MD5(body), MD5(note) FROM doc ORDER BY owner, n";
    type Sum = (i64, i32, Option<String>, Option<String>);
    let before: Vec<Sum> = conn.query(sums).await.unwrap();
    assert_eq!(before.len(), 87);
    // The dump tool's defaults: LOCK TABLES, DISABLE KEYS, extended INSERTs without a
    // column list, raw bytes in string literals, executable comments.
    let dump = mariadb_dump(&addr, "customer", &["doc", "customer", "corder"], &[]);
    let text = String::from_utf8_lossy(&dump);
    assert!(text.contains("LOCK TABLES `doc` WRITE"), "{text}");
    assert!(text.contains("ALTER TABLE `doc` DISABLE KEYS"));
    assert!(text.contains("INSERT INTO `doc` VALUES"));
    let customers: Vec<(i64, String)> = conn
        .query("SELECT customer_id, name FROM customer ORDER BY customer_id")
        .await
        .unwrap();
    for t in ["doc", "corder", "customer"] {
        conn.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    }
    let (ok, _, err) = mariadb_cli(&addr, "customer", &dump, &[]);
    assert!(ok, "restore failed: {err}");
    let mut conn = c.conn("customer").await;
    let after: Vec<Sum> = conn.query(sums).await.unwrap();
    assert_eq!(after, before, "restored rows differ");
    let again: Vec<(i64, String)> = conn
        .query("SELECT customer_id, name FROM customer ORDER BY customer_id")
        .await
        .unwrap();
    assert_eq!(again, customers);
    // Every row is on the shard its key maps to.
    let shards = c.shard_names("customer");
    let mut placed = 0;
    for s in &shards {
        let mut d = c.direct("customer", s).await;
        let owners: Vec<i64> = d.query("SELECT owner FROM doc").await.unwrap();
        for o in owners {
            assert_eq!(&integration_tests::hash_shard(o, &shards), s);
            placed += 1;
        }
    }
    assert_eq!(placed, 87);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_and_returning_across_shards() {
    let c = TestCluster::start(2).await;
    let mut conn = c.conn("customer").await;
    conn.query_drop("CREATE TABLE src (id BIGINT PRIMARY KEY, grp INT, v VARCHAR(16))")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE dst (id BIGINT PRIMARY KEY, grp INT, v VARCHAR(16))")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE bygrp (grp BIGINT NOT NULL, id BIGINT NOT NULL, v VARCHAR(16), PRIMARY KEY (grp, id))")
        .await
        .unwrap();
    let values: Vec<String> = (1..=200)
        .map(|i| format!("({i}, {}, 'v{i}')", i % 7))
        .collect();
    conn.query_drop(format!("INSERT INTO src VALUES {}", values.join(", ")))
        .await
        .unwrap();
    // Co-located (same key, same vindex): each shard copies its own rows.
    conn.query_drop("INSERT INTO dst SELECT * FROM src WHERE id <= 100")
        .await
        .unwrap();
    assert_eq!(conn.affected_rows(), 100);
    // Re-sharded by another column: the proxy places every row.
    conn.query_drop("INSERT INTO bygrp (grp, id, v) SELECT grp, id, v FROM src")
        .await
        .unwrap();
    assert_eq!(conn.affected_rows(), 200);
    let shards = c.shard_names("customer");
    let mut total = 0;
    for s in &shards {
        let mut d = c.direct("customer", s).await;
        let grps: Vec<i64> = d.query("SELECT grp FROM bygrp").await.unwrap();
        for g in &grps {
            assert_eq!(&integration_tests::hash_shard(*g, &shards), s);
        }
        total += grps.len();
    }
    assert_eq!(total, 200);
    // From the unsharded keyspace into the sharded one, with a placeholder.
    let n: u64 = {
        conn.exec_drop(
            "INSERT INTO dst (id, grp, v) SELECT 1000 + price, 1, sku FROM commerce.product WHERE price > ?",
            (25,),
        )
        .await
        .unwrap();
        conn.affected_rows()
    };
    assert_eq!(n, 4);
    let copied: Vec<String> = conn
        .query("SELECT v FROM dst WHERE id > 1000 ORDER BY v")
        .await
        .unwrap();
    assert_eq!(copied, vec!["SKU-1001", "SKU-1002", "SKU-1004", "SKU-1005"]);

    // INSERT ... RETURNING on several shards: every row, in the order of the VALUES.
    let ids: Vec<i64> = (500..520).collect();
    let values: Vec<String> = ids.iter().map(|i| format!("({i}, 9, 'r{i}')")).collect();
    let back: Vec<(i64, String)> = conn
        .query(format!(
            "INSERT INTO dst VALUES {} RETURNING id, v",
            values.join(", ")
        ))
        .await
        .unwrap();
    assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    assert_eq!(back[3].1, "r503");
    // Prepared (binary protocol) too.
    let back: Vec<(i64,)> = conn
        .exec(
            "INSERT INTO dst (id, grp, v) VALUES (?, 1, 'a'), (?, 1, 'b'), (?, 1, 'c') RETURNING id",
            (703, 701, 702),
        )
        .await
        .unwrap();
    assert_eq!(back, vec![(703,), (701,), (702,)]);
    // DELETE ... RETURNING across shards: every deleted row.
    let mut gone: Vec<i64> = conn
        .query("DELETE FROM dst WHERE grp = 9 RETURNING id")
        .await
        .unwrap();
    gone.sort();
    assert_eq!(gone, ids);
}

/// Runs a Python script (PyMySQL, SQLAlchemy) against the proxy; panics with its output
/// unless it exits 0.
fn python(script: &str, addr: &str) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("SG_HOST", host)
        .env("SG_PORT", port)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_and_sqlalchemy_on_the_sharded_keyspace() {
    let c = TestCluster::start(2).await;
    python(PYMYSQL, &c.proxy_addr());
    python(SQLALCHEMY, &c.proxy_addr());
}

const PYMYSQL: &str = r#"
import os, pymysql
c = pymysql.connect(host=os.environ['SG_HOST'], port=int(os.environ['SG_PORT']), user='root', database='customer')
cur = c.cursor()
cur.execute("CREATE TABLE note (note_id BIGINT PRIMARY KEY, author VARCHAR(32), body TEXT)")
rows = [(i, 'author %d' % (i % 5), "it's row %d \\ é" % i) for i in range(1, 301)]
# executemany without a column list (PyMySQL folds it into multi-row INSERTs).
cur.executemany("INSERT INTO note VALUES (%s, %s, %s)", rows)
assert cur.rowcount == 300, cur.rowcount
c.commit()
cur.execute("SELECT COUNT(*), SUM(note_id) FROM note")
assert cur.fetchone() == (300, sum(range(1, 301)))
cur.execute("SELECT body FROM note WHERE note_id = 42")
assert cur.fetchone()[0] == "it's row 42 \\ é"
print("pymysql: executemany of 300 rows without a column list")
"#;

const SQLALCHEMY: &str = r#"
import os, subprocess, sys
try:
    import sqlalchemy
except ImportError:
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet', 'sqlalchemy>=2'])
    import sqlalchemy
from sqlalchemy import create_engine, String, ForeignKey, select, BigInteger, Sequence
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, Session

class Base(DeclarativeBase):
    pass

class Author(Base):
    __tablename__ = 'author'
    author_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(40))
    books: Mapped[list['Book']] = relationship(back_populates='author', primaryjoin='Author.author_id == foreign(Book.author_id)')

class Book(Base):
    __tablename__ = 'book'
    author_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    book_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(80))
    author: Mapped[Author] = relationship(back_populates='books', primaryjoin='Author.author_id == foreign(Book.author_id)')

url = 'mariadb+pymysql://root@%s:%s/customer' % (os.environ['SG_HOST'], os.environ['SG_PORT'])
engine = create_engine(url)
Base.metadata.create_all(engine)
steps = []
with Session(engine) as s:
    authors = [Author(author_id=i, name='author %d' % i) for i in range(1, 41)]
    s.add_all(authors)
    s.commit()
    steps.append('add_all')
with Session(engine) as s:
    # Bulk insert with RETURNING (insertmanyvalues): rows come back in order.
    res = s.execute(sqlalchemy.insert(Book).returning(Book.book_id, Book.author_id, sort_by_parameter_order=True),
                    [dict(author_id=a, book_id=a * 100 + k, title='t%d-%d' % (a, k)) for a in range(1, 41) for k in range(3)])
    got = [(r.book_id, r.author_id) for r in res]
    assert got == [(a * 100 + k, a) for a in range(1, 41) for k in range(3)], got[:5]
    s.commit()
    steps.append('bulk insert returning')
with Session(engine) as s:
    a = s.get(Author, 7)
    assert sorted(b.title for b in a.books) == ['t7-0', 't7-1', 't7-2']
    steps.append('relationship load')
    a.name = 'renamed'
    s.commit()
    steps.append('update')
with Session(engine) as s:
    a = s.get(Author, 7)
    assert a.name == 'renamed'
    a.name = 'not kept'
    s.rollback()
    assert s.get(Author, 7).name == 'renamed'
    steps.append('rollback')
with Session(engine) as s:
    for b in s.scalars(select(Book).where(Book.author_id == 9)):
        s.delete(b)
    s.delete(s.get(Author, 9))
    s.commit()
    assert s.get(Author, 9) is None
    assert s.scalars(select(Book).where(Book.author_id == 9)).all() == []
    steps.append('delete')
with Session(engine) as s:
    n = s.scalar(select(sqlalchemy.func.count()).select_from(Book))
    assert n == 117, n
    steps.append('count')
print('sqlalchemy %s: %d of %d steps: %s' % (sqlalchemy.__version__, len(steps), 7, ', '.join(steps)))
assert len(steps) == 7
"#;
