//! A private single-member etcd for local clusters and tests.

use super::process::{find_program, spawn, wait_port};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A running etcd.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Etcd {
    pub client_port: u16,
    pub peer_port: u16,
    pub datadir: PathBuf,
    pub pid: u32,
    /// The process's start time (see `process::start_ticks`).
    #[serde(default)]
    pub started: u64,
}

impl Etcd {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> PathBuf {
        self.datadir.with_extension("log")
    }
}

/// Starts etcd with its data in `datadir` (kept across restarts).
pub async fn start(datadir: &Path, client_port: u16, peer_port: u16) -> Result<Etcd> {
    let etcd =
        find_program("etcd").context("etcd is not installed (apt-get install -y etcd-server)")?;
    std::fs::create_dir_all(datadir.parent().unwrap_or(Path::new("/")))?;
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = datadir.with_extension("log");
    let mut cmd = Command::new(etcd);
    cmd.arg("--name=shardgate")
        .arg(format!("--data-dir={}", datadir.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=shardgate={peer}"))
        .arg("--logger=zap")
        .arg("--log-level=warn")
        .env("ETCD_UNSUPPORTED_ARCH", "")
        .env_remove("ETCDCTL_API");
    let pid = spawn(&mut cmd, &log)?;
    wait_port(
        &format!("127.0.0.1:{client_port}"),
        pid,
        Duration::from_secs(30),
        "etcd",
        &log,
    )
    .await?;
    Ok(Etcd {
        client_port,
        peer_port,
        datadir: datadir.to_path_buf(),
        pid,
        started: super::process::start_ticks(pid).unwrap_or(0),
    })
}
