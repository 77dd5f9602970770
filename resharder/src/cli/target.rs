//! Finding the cluster a command talks to: `--config FILE` (its [topology] section, for
//! etcd auth and TLS), `--etcd ENDPOINTS` with `--cluster NAME`, or `--dir DIR` of a local
//! cluster (default `.cluster` when it exists).

use super::Cli;
use crate::local::ClusterInfo;
use anyhow::{bail, Result};
use shardgate_config::{Config, TopologyConfig};
use shardgate_topology::Store;
use std::path::PathBuf;

/// The topology settings the command line points at.
pub fn topology_config(cli: &Cli) -> Result<TopologyConfig> {
    let mut cfg = if let Some(path) = &cli.config {
        Config::load(Some(path), std::env::vars(), &[])
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .topology
    } else if cli.etcd.is_none() {
        let dir = cli.dir.clone().unwrap_or_else(|| PathBuf::from(".cluster"));
        match ClusterInfo::load(&dir) {
            Ok(info) => info.topology_config(),
            Err(_) => bail!(
                "no cluster given: pass --dir DIR (a local cluster), --etcd ENDPOINTS [--cluster NAME] or --config FILE"
            ),
        }
    } else {
        TopologyConfig::default()
    };
    if let Some(e) = &cli.etcd {
        cfg.etcd_endpoints = e.split(',').map(|s| s.trim().to_string()).collect();
        cfg.cluster = cli.cluster.clone();
    }
    Ok(cfg)
}

/// A store for the cluster the command line points at.
pub async fn store(cli: &Cli) -> Result<Store> {
    let cfg = topology_config(cli)?;
    Store::connect(&cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
