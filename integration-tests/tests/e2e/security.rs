//! TLS and authentication with real clients: the `mariadb` client over TLS (verifying the
//! local CA) and with caching_sha2_password's RSA exchange, PyMySQL over TLS and with
//! mysql_native_password, mysql-connector-python with caching_sha2_password over TLS and
//! plain (full authentication, then the fast path, counted in
//! `shardgate_auth_total{plugin,path}`), node's mysql2 over TLS,
//! `require_secure_transport`, per-user `require_tls`, and the certificate reloaded on
//! SIGHUP.

use integration_tests::{http_get, TestCluster};
use shardgate_config::{hash_password, hash_password_sha2, UserConfig};
use shardgate_resharder::local::{certs, ProxyProc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "Secr3t-pw";

fn user(name: &str, require_tls: bool) -> UserConfig {
    UserConfig {
        name: name.into(),
        password_hash: hash_password(PASSWORD),
        caching_sha2_hash: hash_password_sha2(PASSWORD),
        require_tls,
        ..UserConfig::new(name, String::new(), String::new())
    }
}

/// Starts a proxy with the test users (`app`, `rsa`, `coldpy`, and `tlsonly` which requires
/// TLS), TLS from the cluster's CA, and `require_secure_transport` as asked.
async fn start_proxy(c: &mut TestCluster, id: &str, secure_only: bool) -> ProxyProc {
    c.info
        .start_proxy_with(id, 0, 0, &[], |cfg| {
            for name in ["app", "rsa", "coldpy"] {
                cfg.users.push(user(name, false));
            }
            cfg.users.push(user("tlsonly", true));
            cfg.tls.require_secure_transport = secure_only;
        })
        .await
        .unwrap()
}

fn split(addr: &str) -> (String, String) {
    let (h, p) = addr.rsplit_once(':').unwrap();
    (h.to_string(), p.to_string())
}

/// Runs the `mariadb` client; returns (success, stdout, stderr).
fn mariadb(
    addr: &str,
    user: &str,
    password: &str,
    args: &[&str],
    sql: &str,
) -> (bool, String, String) {
    let (host, port) = split(addr);
    let mut cmd = Command::new("mariadb");
    cmd.args(["-h", &host, "-P", &port, "--protocol=tcp", "-u", user]);
    if !password.is_empty() {
        cmd.arg(format!("-p{password}"));
    }
    let out = cmd
        .args(args)
        .args(["-e", sql])
        .output()
        .expect("mariadb client installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a Python script with arguments; returns stdout, panicking with its output on failure.
fn python(dir: &Path, name: &str, script: &str, args: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `shardgate_auth_total{plugin,path}` from a proxy's /metrics.
async fn auth_count(http: &str, plugin: &str, path: &str) -> u64 {
    let (_, body) = http_get(http, "/metrics").await.unwrap();
    let want = format!("shardgate_auth_total{{path=\"{path}\",plugin=\"{plugin}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

const PYMYSQL_TLS: &str = r#"
import sys, ssl, pymysql
host, port, ca, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
conn = pymysql.connect(host=host, port=port, user=user, password=pw, database="customer",
                       ssl={"ca": ca})
assert isinstance(conn._sock, ssl.SSLSocket), type(conn._sock)
version = conn._sock.version()
assert version in ("TLSv1.2", "TLSv1.3"), version
cur = conn.cursor()
cur.execute("SHOW STATUS LIKE 'Ssl_version'")
row = cur.fetchone()
assert row == ("Ssl_version", version), row
cur.execute("SELECT name FROM customer WHERE customer_id = 1")
assert cur.fetchone()[0]
conn.close()
# The same user with mysql_native_password (PyMySQL's plugin here) on a plain connection.
conn = pymysql.connect(host=host, port=port, user=user, password=pw, database="customer",
                       ssl_disabled=True)
assert not isinstance(conn._sock, ssl.SSLSocket)
cur = conn.cursor()
cur.execute("SHOW STATUS LIKE 'Ssl%'")
assert dict(cur.fetchall()) == {"Ssl_cipher": "", "Ssl_version": ""}
conn.close()
print("pymysql", version)
"#;

const CONNECTOR: &str = r#"
import sys, mysql.connector
host, port, ca, user, pw, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
args = dict(host=host, port=port, user=user, password=pw, database="customer",
            auth_plugin="caching_sha2_password", use_pure=True)
if mode == "tls":
    args.update(ssl_ca=ca, ssl_verify_cert=True)
else:
    args.update(ssl_disabled=True)
try:
    conn = mysql.connector.connect(**args)
except mysql.connector.Error as e:
    print("refused", e.errno)
    sys.exit(0)
cur = conn.cursor()
cur.execute("SHOW STATUS LIKE 'Ssl_version'")
version = cur.fetchone()[1]
assert (version != "") == (mode == "tls"), (mode, version)
cur.execute("SELECT COUNT(*) FROM customer")
assert cur.fetchone()[0] > 0
conn.close()
print("ok", version or "plain")
"#;

const MYSQL2: &str = r#"
const mysql = require('mysql2/promise');
const fs = require('fs');
const [host, port, ca, user, pw] = process.argv.slice(2);
(async () => {
  const conn = await mysql.createConnection({host, port: Number(port), user, password: pw,
    database: 'customer', ssl: {ca: fs.readFileSync(ca), rejectUnauthorized: true}});
  const protocol = conn.connection.stream.getProtocol();
  const [rows] = await conn.query("SHOW STATUS LIKE 'Ssl_version'");
  if (rows[0].Value !== protocol) throw new Error(`Ssl_version ${rows[0].Value} vs ${protocol}`);
  const [c] = await conn.query('SELECT COUNT(*) AS n FROM customer');
  if (!(c[0].n > 0)) throw new Error('no rows');
  await conn.end();
  console.log('mysql2', protocol);
})().catch(e => { console.error(e); process.exit(1); });
"#;

/// Where node finds mysql2: the directory scripts/deps.sh installs it in, or a fresh
/// `npm install` in `dir`. None (with the reason) when neither works.
fn mysql2_dir(dir: &Path) -> Result<std::path::PathBuf, String> {
    let fixed = Path::new("/opt/shardgate-node");
    if fixed.join("node_modules/mysql2/package.json").exists() {
        return Ok(fixed.to_path_buf());
    }
    let local = dir.join("node");
    std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "mysql2"])
        .current_dir(&local)
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    if out.status.success() {
        Ok(local)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_caching_sha2_with_real_clients() {
    let mut c = TestCluster::start_with(1, false).await;
    let p = start_proxy(&mut c, "sec", false).await;
    let ca = certs::CertFiles::in_dir(c.dir()).ca.display().to_string();
    let (host, port) = split(&p.mysql);
    let dir = c.dir().clone();

    // mariadb over TLS, verifying the certificate against the cluster's CA; the client's
    // own status and the proxy's Ssl_version agree.
    let (ok, out, err) = mariadb(
        &p.mysql,
        "app",
        PASSWORD,
        &[
            "--ssl",
            &format!("--ssl-ca={ca}"),
            "--ssl-verify-server-cert",
        ],
        "SHOW STATUS LIKE 'Ssl_version'; \\s",
    );
    assert!(ok, "{err}");
    assert!(out.contains("Ssl_version\tTLSv1.3"), "{out}");
    assert!(out.contains("Cipher in use is"), "{out}");

    // PyMySQL: TLS 1.2+ with the CA, and mysql_native_password for the same user.
    let out = python(
        &dir,
        "pymysql_tls.py",
        PYMYSQL_TLS,
        &[&host, &port, &ca, "app", PASSWORD],
    );
    assert!(out.contains("pymysql TLSv1."), "{out}");
    assert!(auth_count(&p.http, "mysql_native_password", "scramble").await >= 2);

    // mysql-connector-python with caching_sha2_password over TLS: full authentication
    // (password over TLS), then the fast path.
    for round in 0..2 {
        let out = python(
            &dir,
            "connector.py",
            CONNECTOR,
            &[&host, &port, &ca, "app", PASSWORD, "tls"],
        );
        assert!(out.starts_with("ok TLSv1."), "round {round}: {out}");
    }
    assert_eq!(
        auth_count(&p.http, "caching_sha2_password", "full_tls").await,
        1
    );
    assert_eq!(
        auth_count(&p.http, "caching_sha2_password", "fast").await,
        1
    );
    // ... and without TLS: the user is cached, so both logins take the fast path.
    for round in 0..2 {
        let out = python(
            &dir,
            "connector.py",
            CONNECTOR,
            &[&host, &port, &ca, "app", PASSWORD, "plain"],
        );
        assert!(out.starts_with("ok plain"), "round {round}: {out}");
    }
    assert_eq!(
        auth_count(&p.http, "caching_sha2_password", "fast").await,
        3
    );
    // The pure-Python connector cannot do the RSA exchange: on a plain connection it
    // sends the password in clear for a full authentication, which is refused (as
    // MySQL refuses it).
    let out = python(
        &dir,
        "connector.py",
        CONNECTOR,
        &[&host, &port, &ca, "coldpy", PASSWORD, "plain"],
    );
    assert_eq!(out.trim(), "refused 1045", "{out}");

    // caching_sha2_password's RSA exchange on a plain connection (the mariadb client asks
    // for the public key), then the fast path, still without TLS.
    for round in 0..2 {
        let (ok, out, err) = mariadb(
            &p.mysql,
            "rsa",
            PASSWORD,
            &["--skip-ssl", "--default-auth=caching_sha2_password"],
            "SHOW STATUS LIKE 'Ssl_version'; SELECT CURRENT_USER()",
        );
        assert!(ok, "round {round}: {err}");
        assert!(out.contains("Ssl_version\t\n"), "{out}");
    }
    assert_eq!(
        auth_count(&p.http, "caching_sha2_password", "full_rsa").await,
        1
    );
    assert_eq!(
        auth_count(&p.http, "caching_sha2_password", "fast").await,
        4
    );
    // A wrong password is refused on every path.
    for args in [
        &["--ssl"][..],
        &["--skip-ssl", "--default-auth=caching_sha2_password"],
    ] {
        let (ok, _, err) = mariadb(&p.mysql, "rsa", "nope", args, "SELECT 1");
        assert!(!ok && err.contains("ERROR 1045"), "{args:?}: {err}");
    }

    // node's mysql2 over TLS, verifying the CA.
    match mysql2_dir(&dir) {
        Ok(node_dir) => {
            let script = node_dir.join(format!("tls-check-{}.js", std::process::id()));
            std::fs::write(&script, MYSQL2).unwrap();
            let out = Command::new("node")
                .arg(&script)
                .args([&host, &port, &ca, "app", PASSWORD])
                .output()
                .expect("node installed");
            let _ = std::fs::remove_file(&script);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("mysql2 TLSv1."),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(why) => eprintln!("SKIPPED the mysql2 check: npm could not install mysql2: {why}"),
    }
    let (_, metrics) = http_get(&p.http, "/metrics").await.unwrap();
    assert!(
        metrics.contains("shardgate_tls_connections_total"),
        "{metrics}"
    );
}

const FINGERPRINT: &str = r#"
import sys, ssl, hashlib, pymysql
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = pymysql.connect(host=host, port=port, user="root", ssl={"ca": ca})
print(hashlib.sha256(conn._sock.getpeercert(binary_form=True)).hexdigest())
conn.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_transport_require_tls_and_certificate_reload() {
    let mut c = TestCluster::start_with(1, false).await;
    let strict = start_proxy(&mut c, "strict", true).await;
    let p = start_proxy(&mut c, "sec", false).await;
    let files = certs::CertFiles::in_dir(c.dir());
    let ca = files.ca.display().to_string();
    let tls = ["--ssl".to_string(), format!("--ssl-ca={ca}")];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    // require_secure_transport: plain logins refused with 3159, TLS ones served.
    let (ok, _, err) = mariadb(&strict.mysql, "app", PASSWORD, &["--skip-ssl"], "SELECT 1");
    assert!(!ok && err.contains("ERROR 3159"), "{err}");
    assert!(err.contains("require_secure_transport=ON"), "{err}");
    let (ok, out, err) = mariadb(
        &strict.mysql,
        "app",
        PASSWORD,
        &tls,
        "SHOW STATUS LIKE 'Ssl_version'",
    );
    assert!(ok && out.contains("TLSv1."), "{err}");

    // require_tls: that user is refused on a plain connection (1045), served over TLS.
    let (ok, _, err) = mariadb(&p.mysql, "tlsonly", PASSWORD, &["--skip-ssl"], "SELECT 1");
    assert!(!ok && err.contains("ERROR 1045"), "{err}");
    let (ok, _, err) = mariadb(&p.mysql, "tlsonly", PASSWORD, &tls, "SELECT 1");
    assert!(ok, "{err}");
    let (ok, _, err) = mariadb(&p.mysql, "app", PASSWORD, &["--skip-ssl"], "SELECT 1");
    assert!(ok, "other users may still use plain connections: {err}");

    // SIGHUP reloads the certificate: new connections get the new one.
    let (host, port) = split(&p.mysql);
    let dir = c.dir().clone();
    let first = python(&dir, "fp.py", FINGERPRINT, &[&host, &port, &ca]);
    let (new_ca, new_cert, new_key) = certs::generate(&["127.0.0.1", "localhost"]).unwrap();
    let new_ca_file = dir.join("new-ca.pem");
    std::fs::write(&new_ca_file, &new_ca).unwrap();
    std::fs::write(&files.cert, format!("{new_cert}{new_ca}")).unwrap();
    std::fs::write(&files.key, &new_key).unwrap();
    let new_ca_file = new_ca_file.display().to_string();
    let hup = |pid: u32| unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(hup(p.pid), 0);
    let mut second = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = Command::new("python3")
            .arg(dir.join("fp.py"))
            .args([&host, &port, &new_ca_file])
            .output()
            .unwrap();
        if out.status.success() {
            second = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
    }
    assert!(!second.is_empty(), "the new certificate was never served");
    assert_ne!(first, second);
    // A broken file: the reload fails, is logged, and the certificate in use stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    assert_eq!(hup(p.pid), 0);
    let log = &p.log;
    let mut logged = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("TLS certificate reload failed")
        {
            logged = true;
            break;
        }
    }
    assert!(logged, "the failed reload is logged");
    let third = python(&dir, "fp.py", FINGERPRINT, &[&host, &port, &new_ca_file]);
    assert_eq!(second, third);
    let (_, metrics) = http_get(&p.http, "/metrics").await.unwrap();
    assert!(
        metrics.contains("shardgate_tls_reloads_total{result=\"ok\"} 1")
            && metrics.contains("shardgate_tls_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_use_tls_verified_against_the_ca() {
    use shardgate_proxy::backend::conn::{BackendConn, BackendTls, ConnectOptions};
    use shardgate_resharder::local::{mariadb, process};
    let mut c = TestCluster::start_with(1, false).await;
    let files = certs::ensure(c.dir()).unwrap();
    // The commerce server again on the same port and data, now offering TLS with the
    // cluster's certificate (made for 127.0.0.1).
    let old = c.info.instance("commerce").unwrap().clone();
    assert!(process::stop_ours(
        old.pid,
        old.started,
        Duration::from_secs(30)
    ));
    let args = [
        format!("--ssl-cert={}", files.cert.display()),
        format!("--ssl-key={}", files.key.display()),
    ];
    let m = mariadb::start_with("commerce", &old.datadir, old.port, &args)
        .await
        .unwrap();
    c.info.mariadb.retain(|x| x.name != "commerce");
    c.info.mariadb.push(m.clone());
    c.info.save().unwrap();

    let ca = files.ca.display().to_string();
    let config = shardgate_proxy::security::backend_client_config(&ca).unwrap();
    let options = |addr: &str, tls: Option<BackendTls>| ConnectOptions {
        addr: addr.to_string(),
        user: "root".into(),
        password: String::new(),
        database: "commerce".into(),
        charset: 45,
        extra_capabilities: 0,
        connect_timeout: Duration::from_secs(5),
        tls,
    };
    // The connector itself: verified TLS works; a certificate from another CA and a
    // server without TLS are refused.
    let mut conn = BackendConn::connect(&options(&m.addr(), Some(BackendTls(config.clone()))))
        .await
        .unwrap();
    let answer = integration_tests::raw_query(
        &mut conn,
        b"SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'",
    )
    .await
    .unwrap();
    let version = answer[0].scalar().unwrap_or_default();
    assert!(version.starts_with("TLSv1."), "{version:?}");
    let (other_ca, _, _) = certs::generate(&["127.0.0.1"]).unwrap();
    let other = c.dir().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let wrong =
        shardgate_proxy::security::backend_client_config(&other.display().to_string()).unwrap();
    let e = BackendConn::connect(&options(&m.addr(), Some(BackendTls(wrong))))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("TLS handshake failed"), "{e}");
    let plain = c.info.instance(&c.info.shards[1].instance).unwrap().addr();
    let e = BackendConn::connect(&options(&plain, Some(BackendTls(config))))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("TLS"), "{e}");

    // Through a proxy with backend.tls_ca_file: the backend connection reports TLS.
    let p = c
        .info
        .start_proxy_with("tlsback", 0, 0, &[], |cfg| {
            cfg.backend.tls_ca_file = ca.clone();
        })
        .await
        .unwrap();
    let (ok, out, err) = mariadb(
        &p.mysql,
        "root",
        "",
        &[],
        "USE commerce; SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'",
    );
    assert!(ok, "{err}");
    assert!(out.contains("TLSv1."), "{out}");
}

/// Repeated failed logins from one address are answered later and later (password
/// guessing slowed down); a correct login still gets in and clears the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_slowed_down() {
    let c = TestCluster::start(1).await;
    let bad = format!("mysql://root:wrong@{}/customer", c.proxy_addr());
    let mut took = Vec::new();
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let Err(e) = mysql_async::Conn::new(mysql_async::Opts::from_url(&bad).unwrap()).await
        else {
            panic!("a wrong password was accepted");
        };
        assert_eq!(integration_tests::errno(&e), Some(1045), "{e}");
        took.push(t0.elapsed());
    }
    // Failures 4 and 5 wait at least 250 and 500 ms before their refusal.
    assert!(took[3] >= Duration::from_millis(250), "{took:?}");
    assert!(took[4] >= Duration::from_millis(500), "{took:?}");
    let mut ok = c.conn("customer").await;
    let one: Option<u8> = mysql_async::prelude::Queryable::query_first(&mut ok, "SELECT 1")
        .await
        .unwrap();
    assert_eq!(one, Some(1));
}
