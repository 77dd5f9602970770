//! The `shardctl` command line.

mod cluster;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// shardctl: run local clusters, edit the topology in etcd, and reshard.
#[derive(Parser, Debug)]
#[command(name = "shardctl", version)]
pub struct Cli {
    /// Local cluster directory (finds etcd and the cluster name in DIR/cluster.json).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// etcd endpoints, comma-separated (instead of --dir).
    #[arg(long, global = true, env = "SHARDGATE_ETCD")]
    pub etcd: Option<String>,
    /// Cluster name (with --etcd).
    #[arg(long, global = true, default_value = "local")]
    pub cluster: String,
    /// A shardgate config file to take the [topology] settings from (etcd auth and TLS).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a local cluster: etcd, MariaDB shards and a proxy on 127.0.0.1.
    Up {
        /// Shards of the sample keyspace `customer`.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Proxy MySQL port.
        #[arg(long, default_value_t = 15306)]
        port: u16,
        /// Proxy HTTP port (metrics, status page).
        #[arg(long, default_value_t = 15000)]
        http_port: u16,
        /// Start in the background and return.
        #[arg(long)]
        detach: bool,
    },
    /// Stop a local cluster started with `up`.
    Down {
        /// Also delete its data.
        #[arg(long)]
        purge: bool,
    },
    /// Print the mysql_native_password hash of a password (for [[users]] password_hash).
    HashPassword { password: String },
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Up {
            shards,
            port,
            http_port,
            detach,
        } => cluster::up(&cli, *shards, *port, *http_port, *detach).await,
        Command::Down { purge } => cluster::down(&cli, *purge),
        Command::HashPassword { password } => {
            println!("{}", shardgate_config::hash_password(password));
            Ok(())
        }
    }
}
