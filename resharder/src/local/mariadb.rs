//! Private MariaDB servers for local clusters and tests: a data directory initialised
//! once with `mariadb-install-db` and copied for each instance, started as `mariadbd` on a
//! loopback port with small buffers, reachable as root (empty password) from 127.0.0.1.

use super::process::{find_program, spawn, tail, wait_port};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A running (or stopped) private MariaDB.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MariaDb {
    pub name: String,
    pub port: u16,
    pub datadir: PathBuf,
    pub pid: u32,
    /// The process's start time (see `process::start_ticks`).
    #[serde(default)]
    pub started: u64,
}

impl MariaDb {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> PathBuf {
        self.datadir.join("error.log")
    }

    /// An URL for mysql_async.
    pub fn url(&self, db: &str) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/{}?prefer_socket=false",
            self.port, db
        )
    }
}

/// SQL run once when the template is created: root may log in over TCP from loopback.
const BOOTSTRAP_SQL: &str = "REPLACE INTO mysql.global_priv (Host, User, Priv) VALUES \
('127.0.0.1', 'root', '{\"access\":18446744073709551615,\"plugin\":\"mysql_native_password\",\"authentication_string\":\"\"}'), \
('::1', 'root', '{\"access\":18446744073709551615,\"plugin\":\"mysql_native_password\",\"authentication_string\":\"\"}');\n";

static TEMPLATE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
static STAGING_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The initialised data directory every instance starts from (created on first use).
pub fn template() -> Result<PathBuf> {
    let _guard = TEMPLATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let base = std::env::var("SHARDGATE_MARIADB_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("shardgate-mariadb-template"));
    let ready = base.join("mysql");
    if ready.is_dir() {
        return Ok(base);
    }
    let install = find_program("mariadb-install-db")
        .or_else(|_| find_program("mysql_install_db"))
        .context("MariaDB is not installed (apt-get install -y mariadb-server)")?;
    let seq = STAGING_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let staging = PathBuf::from(format!(
        "{}.tmp{}-{seq}",
        base.display(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let extra = staging.with_extension("sql");
    std::fs::write(&extra, BOOTSTRAP_SQL)?;
    let out = Command::new(&install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", staging.display()))
        .arg("--user=root")
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg(format!("--extra-file={}", extra.display()))
        .output()
        .context("cannot run mariadb-install-db")?;
    let _ = std::fs::remove_file(&extra);
    if !out.status.success() {
        bail!(
            "mariadb-install-db failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Another process may have won the race; either template is fine.
    if std::fs::rename(&staging, &base).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    if !ready.is_dir() {
        bail!("the MariaDB template at {} is incomplete", base.display());
    }
    Ok(base)
}

/// Creates `datadir` from the template (unless it exists) and starts mariadbd on `port`.
pub async fn start(name: &str, datadir: &Path, port: u16) -> Result<MariaDb> {
    start_with(name, datadir, port, &[]).await
}

/// Like [`start`], with more mariadbd options (e.g. `--ssl-cert=...`).
pub async fn start_with(
    name: &str,
    datadir: &Path,
    port: u16,
    extra_args: &[String],
) -> Result<MariaDb> {
    if !datadir.join("mysql").is_dir() {
        let t = template()?;
        std::fs::create_dir_all(datadir.parent().unwrap_or(Path::new("/")))?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(&t)
            .arg(datadir)
            .status()
            .context("cannot copy the MariaDB template")?;
        if !status.success() {
            bail!(
                "copying the MariaDB template to {} failed",
                datadir.display()
            );
        }
    }
    let mariadbd = find_program("mariadbd")
        .or_else(|_| find_program("mysqld"))
        .context("MariaDB is not installed (apt-get install -y mariadb-server)")?;
    let log = datadir.join("error.log");
    let mut cmd = Command::new(mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!(
            "--socket={}",
            datadir.join("mysqld.sock").display()
        ))
        .arg(format!(
            "--pid-file={}",
            datadir.join("mysqld.pid").display()
        ))
        .arg(format!("--log-error={}", log.display()))
        .arg("--user=root")
        .arg("--skip-name-resolve")
        .arg("--innodb-buffer-pool-size=64M")
        .arg("--innodb-log-file-size=48M")
        .arg("--innodb-flush-log-at-trx-commit=2")
        .arg("--innodb-doublewrite=0")
        .arg("--performance-schema=OFF")
        .arg("--skip-log-bin")
        .arg("--max-connections=2000")
        .arg("--max-allowed-packet=1G")
        .arg("--thread-cache-size=64")
        .arg("--character-set-server=utf8mb4")
        .arg("--collation-server=utf8mb4_general_ci")
        .args(extra_args);
    let pid = spawn(&mut cmd, &datadir.join("stdout.log"))?;
    let db = MariaDb {
        name: name.to_string(),
        port,
        datadir: datadir.to_path_buf(),
        pid,
        started: super::process::start_ticks(pid).unwrap_or(0),
    };
    wait_port(
        &db.addr(),
        pid,
        Duration::from_secs(60),
        &format!("MariaDB {name}"),
        &log,
    )
    .await
    .map_err(|e| {
        if e.is::<super::process::PortTaken>() {
            e
        } else {
            anyhow::anyhow!("{e}\n{}", tail(&log, 20))
        }
    })?;
    wait_login(&db).await?;
    Ok(db)
}

/// Waits until root can log in (the port opens slightly before auth works).
async fn wait_login(db: &MariaDb) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        match mysql_async::Conn::from_url(db.url("")).await {
            Ok(c) => {
                let _ = c.disconnect().await;
                return Ok(());
            }
            Err(e) => {
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("cannot log in to MariaDB {} as root: {e}", db.name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
