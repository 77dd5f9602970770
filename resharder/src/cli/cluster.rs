//! `shardctl up` and `shardctl down`.

use super::Cli;
use crate::local::{self, ClusterInfo, UpOptions};
use anyhow::{Context, Result};
use std::path::PathBuf;

fn dir_of(cli: &Cli) -> PathBuf {
    cli.dir.clone().unwrap_or_else(|| PathBuf::from(".cluster"))
}

pub async fn up(cli: &Cli, shards: usize, port: u16, http_port: u16, detach: bool) -> Result<()> {
    let dir = dir_of(cli);
    eprintln!("starting a local cluster in {} ...", dir.display());
    let info = local::up(&UpOptions {
        dir,
        cluster: cli.cluster.clone(),
        shards,
        port,
        http_port,
        sample_data: true,
        start_proxy: true,
    })
    .await?;
    println!("{}", local::connect_help(&info));
    if detach {
        return Ok(());
    }
    println!("Running in the foreground; press Ctrl-C to stop everything.");
    wait_for_signal().await;
    eprintln!("stopping ...");
    let info = ClusterInfo::load(&info.dir).unwrap_or(info);
    info.stop_all();
    eprintln!("stopped.");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub fn down(cli: &Cli, purge: bool) -> Result<()> {
    let dir = dir_of(cli);
    let info = ClusterInfo::load(&dir)?;
    info.stop_all();
    println!("stopped the cluster in {}", dir.display());
    if purge {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot delete {}", dir.display()))?;
        println!("deleted {}", dir.display());
    }
    Ok(())
}
