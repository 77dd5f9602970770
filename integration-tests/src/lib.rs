//! The integration-test harness: real etcd, MariaDB and shardgate processes on loopback,
//! started through the same code as `shardctl up` and stopped when the test ends (even
//! when it fails). Set `SHARDGATE_KEEP=1` to keep a failed test's directory and logs.

use anyhow::Result;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shardgate_resharder::local::{self, ClusterInfo, UpOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub mod tpcc;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A cluster for one test.
pub struct TestCluster {
    pub info: ClusterInfo,
    dir: PathBuf,
}

impl TestCluster {
    /// etcd, MariaDB (commerce + `shards` customer shards) with sample data, and a proxy.
    pub async fn start(shards: usize) -> TestCluster {
        Self::start_with(shards, true).await
    }

    /// Like [`TestCluster::start`], without starting a proxy when `proxy` is false.
    pub async fn start_with(shards: usize, proxy: bool) -> TestCluster {
        let dir = std::env::temp_dir().join(format!(
            "sg-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let info = local::up(&UpOptions {
            dir: dir.clone(),
            cluster: "test".into(),
            shards,
            port: 0,
            http_port: 0,
            sample_data: true,
            start_proxy: proxy,
        })
        .await
        .unwrap_or_else(|e| panic!("cannot start the test cluster: {e:#}"));
        TestCluster { info, dir }
    }

    /// The first proxy's MySQL address.
    pub fn proxy_addr(&self) -> String {
        self.info.proxies[0].mysql.clone()
    }

    /// A mysql_async URL for the first proxy.
    pub fn url(&self, db: &str) -> String {
        url_for(&self.proxy_addr(), db)
    }

    /// A connection through the first proxy.
    pub async fn conn(&self, db: &str) -> Conn {
        Conn::new(Opts::from_url(&self.url(db)).unwrap())
            .await
            .unwrap_or_else(|e| panic!("cannot connect through the proxy: {e}"))
    }

    /// A direct connection to the MariaDB holding `keyspace/shard`.
    pub async fn direct(&self, keyspace: &str, shard: &str) -> Conn {
        let s = self
            .info
            .shards
            .iter()
            .find(|s| s.keyspace == keyspace && s.shard == shard)
            .unwrap_or_else(|| panic!("no shard {keyspace}/{shard}"));
        // Tests run in parallel on 2 cores: a connect can time out under a neighbour's load.
        let mut last = None;
        for _ in 0..3 {
            match Conn::new(Opts::from_url(&url_for(&s.addr, &s.database)).unwrap()).await {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        panic!(
            "cannot connect to {keyspace}/{shard} at {}: {last:?}",
            s.addr
        )
    }

    /// Runs `statements` directly on every shard of `keyspace` (behind the proxy's back:
    /// DDL on the shards, as an operator would).
    pub async fn on_every_shard(&self, keyspace: &str, statements: &[&str]) {
        for s in self.shard_names(keyspace) {
            let mut d = self.direct(keyspace, &s).await;
            for sql in statements {
                d.query_drop(*sql)
                    .await
                    .unwrap_or_else(|e| panic!("{keyspace}/{s}: {sql}: {e}"));
            }
        }
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// The proxy log, for assertions and failure messages.
    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(&self.info.proxies[0].log).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Ok(info) = ClusterInfo::load(&self.dir) {
            info.stop_all();
        } else {
            self.info.stop_all();
        }
        let keep = std::env::var_os("SHARDGATE_KEEP").is_some() && std::thread::panicking();
        if !keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("keeping {}", self.dir.display());
        }
    }
}

impl TestCluster {
    /// Runs sysbench `oltp_read_write` (2 tables of 2,000 rows) through the first proxy
    /// against database `db`; returns (success, output).
    pub fn sysbench(&self, db: &str, cmd: &str, extra: &[&str]) -> (bool, String) {
        let (host, port) = self
            .proxy_addr()
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .unwrap();
        let mut args = vec![
            "oltp_read_write".to_string(),
            "--db-driver=mysql".into(),
            format!("--mysql-host={host}"),
            format!("--mysql-port={port}"),
            "--mysql-user=root".into(),
            format!("--mysql-db={db}"),
            "--tables=2".into(),
            "--table-size=2000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(cmd.into());
        let out = std::process::Command::new("sysbench")
            .args(&args)
            .output()
            .expect("sysbench installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

/// Checks a sysbench run: it succeeded, ran transactions, and the only errors it met
/// were the few deadlocks and lock waits MariaDB reports under this contention with or
/// without a proxy (sysbench retries those; anything else fails the run).
pub fn check_sysbench_run(ok: bool, out: &str, mode: &str) -> u64 {
    assert!(ok, "{out}");
    assert!(!out.contains("FATAL"), "{out}");
    let tx: u64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(tx > 10, "too few transactions ({mode}): {out}");
    let ignored: u64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("ignored errors:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    // Two cores run every process of the cluster: under contention a tenth of the
    // transactions can meet a deadlock and be retried.
    assert!(ignored * 10 < tx, "too many deadlocks ({mode}): {out}");
    tx
}

/// The shard (of `shards`) holding `id` under the `hash` vindex.
pub fn hash_shard(id: i64, shards: &[String]) -> String {
    use shardgate_topology::vindex::{SqlValue, Vindex};
    let v = Vindex::from_spec("hash", "hash", &Default::default(), "").unwrap();
    let ksid = v.map(&SqlValue::Int(id)).unwrap().unwrap();
    shards
        .iter()
        .find(|s| {
            shardgate_topology::KeyRange::parse(s)
                .unwrap()
                .contains(ksid.as_bytes())
        })
        .unwrap()
        .clone()
}

impl TestCluster {
    /// The names of `keyspace`'s shards.
    pub fn shard_names(&self, keyspace: &str) -> Vec<String> {
        self.info
            .shards
            .iter()
            .filter(|s| s.keyspace == keyspace)
            .map(|s| s.shard.clone())
            .collect()
    }

    /// A customer id (above `from`) on each of two different shards of `customer`.
    pub fn ids_on_two_shards(&self, from: i64) -> (i64, i64) {
        let shards = self.shard_names("customer");
        let first = hash_shard(from, &shards);
        let other = (from + 1..)
            .find(|i| hash_shard(*i, &shards) != first)
            .unwrap();
        (from, other)
    }
}

/// A raw-protocol client (the proxy's own backend connector) logged in as root with the
/// handshake collation `collation`: the bytes of a query go out exactly as given and the
/// answer comes back undecoded.
pub async fn raw_conn(
    addr: &str,
    db: &str,
    collation: u8,
) -> shardgate_proxy::backend::conn::BackendConn {
    shardgate_proxy::backend::conn::BackendConn::connect(
        &shardgate_proxy::backend::conn::ConnectOptions {
            addr: addr.to_string(),
            user: "root".into(),
            password: String::new(),
            database: db.into(),
            charset: collation,
            extra_capabilities: 0,
            connect_timeout: std::time::Duration::from_secs(5),
            tls: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("raw login to {addr}/{db}: {e}"))
}

/// Sends `sql` byte for byte on a raw connection and reads every result. A server error
/// comes back as its packet; a lost connection panics (tests call this where the proxy
/// must answer).
pub async fn raw_query(
    conn: &mut shardgate_proxy::backend::conn::BackendConn,
    sql: &[u8],
) -> std::result::Result<
    Vec<shardgate_proxy::backend::conn::QueryResult>,
    shardgate_proxy::wire::ErrPacket,
> {
    use shardgate_proxy::backend::conn::BackendError;
    conn.send_command(shardgate_proxy::wire::consts::COM_QUERY, sql)
        .await
        .unwrap_or_else(|e| panic!("sending {:?}: {e}", short_text(sql)));
    match conn.collect().await {
        Ok(r) => Ok(r),
        Err(BackendError::Server(p)) => Err(p),
        Err(e) => panic!("no answer to {:?}: {e}", short_text(sql)),
    }
}

fn short_text(sql: &[u8]) -> String {
    let s = String::from_utf8_lossy(sql);
    s.chars().take(120).collect()
}

/// Runs the `mariadb` command-line client against `addr` (database `db`) with `input` on
/// its standard input; returns (success, stdout, stderr).
pub fn mariadb_cli(addr: &str, db: &str, input: &[u8], args: &[&str]) -> (bool, Vec<u8>, String) {
    use std::io::Write;
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut child = std::process::Command::new("mariadb")
        .args(["-h", host, "-P", port, "-u", "root", "--protocol=tcp"])
        .args(args)
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mariadb client installed");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("mariadb client ran");
    let _ = writer.join();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `mariadb-dump` against `addr` for `db` (and `tables`); returns the dump.
pub fn mariadb_dump(addr: &str, db: &str, tables: &[&str], args: &[&str]) -> Vec<u8> {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let out = std::process::Command::new("mariadb-dump")
        .args(["-h", host, "-P", port, "-u", "root", "--protocol=tcp"])
        .args(args)
        .arg(db)
        .args(tables)
        .output()
        .expect("mariadb-dump installed");
    assert!(
        out.status.success(),
        "mariadb-dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A mysql_async URL (never switching to a Unix socket).
pub fn url_for(addr: &str, db: &str) -> String {
    format!("mysql://root@{addr}/{db}?prefer_socket=false")
}

/// A connection to `addr` (a proxy or a server) using database `db`.
pub async fn connect(addr: &str, db: &str) -> Conn {
    Conn::new(Opts::from_url(&url_for(addr, db)).unwrap())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// A `SHOW GLOBAL STATUS` counter of a server.
pub async fn status_value(conn: &mut Conn, name: &str) -> u64 {
    let r: Option<(String, u64)> = conn
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .unwrap();
    r.unwrap().1
}

/// Runs a query and returns the rows as strings (NULL as "NULL").
pub async fn rows(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<String>>> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => "NULL".to_string(),
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => v.as_sql(true).trim_matches('\'').to_string(),
                })
                .collect()
        })
        .collect())
}

/// The MySQL error code of a mysql_async error, if it is a server error.
pub fn errno(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// A minimal HTTP GET (the proxies' status endpoint): (status code, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// A proxy's /status document.
pub async fn proxy_status(http: &str) -> Result<serde_json::Value> {
    let (code, body) = http_get(http, "/status").await?;
    anyhow::ensure!(code == 200, "status {code}");
    Ok(serde_json::from_str(&body)?)
}

impl TestCluster {
    /// Applies the sample customer VSchema (customer and corder, sharded by customer_id
    /// with `hash`) plus `extra` tables (a JSON object of table name -> spec; vindexes
    /// `hash` and `xx` (xxhash) are declared), and waits for the proxies to follow.
    pub async fn apply_customer_vschema(&self, extra: serde_json::Value) {
        let mut tables = serde_json::json!({
            "customer": {"column_vindexes": [{"column": "customer_id", "name": "hash"}],
                         "auto_increment": {"column": "customer_id", "sequence": "customer_seq"}},
            "corder": {"column_vindexes": [{"column": "customer_id", "name": "hash"}],
                       "auto_increment": {"column": "order_id", "sequence": "corder_seq"}}
        });
        if let (Some(t), Some(e)) = (tables.as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        let vschema = serde_json::json!({
            "sharded": true,
            "vindexes": {"hash": {"type": "hash"}, "xx": {"type": "xxhash"}},
            "tables": tables
        });
        let file = self.dir.join("vschema.json");
        std::fs::write(&file, vschema.to_string()).unwrap();
        let (ok, out) = self.shardctl(&["vschema", "apply", "customer", file.to_str().unwrap()]);
        assert!(ok, "shardctl vschema apply failed:\n{out}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    /// Runs `shardctl` against this cluster; returns (success, stdout + stderr).
    pub fn shardctl(&self, args: &[&str]) -> (bool, String) {
        self.shardctl_env(args, &[])
    }

    /// Runs `shardctl` with `stdin` as its input; returns (exit code, stdout + stderr).
    pub fn shardctl_input(&self, args: &[&str], stdin: &str) -> (i32, String) {
        use std::io::Write as _;
        let bin =
            shardgate_resharder::local::process::find_program("shardctl").expect("shardctl built");
        let mut child = std::process::Command::new(bin)
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run shardctl");
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().expect("shardctl output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Like [`TestCluster::shardctl`], with extra environment variables (for example
    /// `SHARDGATE_CRASH_AT`, which makes the controller die at a step boundary).
    pub fn shardctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let bin =
            shardgate_resharder::local::process::find_program("shardctl").expect("shardctl built");
        let out = std::process::Command::new(bin)
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run shardctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Starts one more MariaDB (recorded in cluster.json so it is stopped with the rest).
    pub async fn extra_mariadb(
        &mut self,
        name: &str,
    ) -> shardgate_resharder::local::mariadb::MariaDb {
        let datadir = self.dir.join("mysql").join(name);
        let m = shardgate_resharder::local::process::with_free_port(|port| {
            shardgate_resharder::local::mariadb::start(name, &datadir, port)
        })
        .await
        .unwrap();
        self.info.mariadb.push(m.clone());
        self.info.save().unwrap();
        m
    }

    /// Waits until every proxy's /status reports `revision` or later; returns how long
    /// each took, measured from `since`.
    pub async fn wait_applied(
        &self,
        revision: i64,
        since: std::time::Instant,
    ) -> Vec<std::time::Duration> {
        let mut out = Vec::new();
        for p in &self.info.proxies {
            loop {
                if let Ok(s) = proxy_status(&p.http).await {
                    if s["topology_revision"].as_i64().unwrap_or(0) >= revision {
                        out.push(since.elapsed());
                        break;
                    }
                }
                assert!(
                    since.elapsed() < std::time::Duration::from_secs(10),
                    "proxy {} did not apply revision {revision}",
                    p.id
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        out
    }
}
