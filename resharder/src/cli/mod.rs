//! The `shardctl` command line.

mod cluster;
mod explain;
mod movetables;
mod progress;
mod reshard;
mod target;
mod topo;
mod users;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
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
        /// Also delete its data (asks first; --yes does not).
        #[arg(long)]
        purge: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print the hashes of a password for a [[users]] entry (password_hash for
    /// mysql_native_password, caching_sha2_hash for caching_sha2_password), read from a
    /// prompt on a terminal or from the first line of stdin (never argv, which other users
    /// of the machine can see).
    HashPassword,
    /// Print the plan a proxy would make for SQL, offline, from a VSchema file.
    Explain {
        /// The keyspace's VSchema (Vitess JSON).
        #[arg(long)]
        vschema: PathBuf,
        /// The keyspace's name.
        #[arg(long, default_value = "ks")]
        keyspace: String,
        /// Shard names (default -80,80- when sharded, - otherwise).
        #[arg(long, allow_hyphen_values = true, value_delimiter = ',')]
        shards: Vec<String>,
        sql: String,
    },
    /// Read, edit, validate and watch the topology in etcd.
    Topo {
        #[command(subcommand)]
        command: TopoCommand,
    },
    /// Create a keyspace.
    Keyspace {
        #[command(subcommand)]
        command: KeyspaceCommand,
    },
    /// Add shards to a keyspace.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// Apply a keyspace's VSchema (Vitess JSON) from a file.
    Vschema {
        #[command(subcommand)]
        command: VschemaCommand,
    },
    /// Change which shards serve a keyspace.
    Routing {
        #[command(subcommand)]
        command: RoutingCommand,
    },
    /// Client accounts kept in etcd, followed live by every proxy.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// List live proxies and the topology revision each has applied.
    Proxies {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Online resharding: split or merge shards while the application runs.
    Reshard {
        #[command(subcommand)]
        command: reshard::ReshardCommand,
    },
    /// Move tables into another keyspace (e.g. unsharded to sharded) while the
    /// application runs; clients keep naming them where they were (routing rules).
    Movetables {
        #[command(subcommand)]
        command: movetables::MoveTablesCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TopoCommand {
    /// Print one document (pretty JSON), or every key with its document.
    Get { key: Option<String> },
    /// Write a document from a file or - (stdin); validated, compare-and-swap.
    Put {
        key: String,
        file: String,
        /// Fail unless the key's mod_revision is still this (0: must not exist).
        #[arg(long)]
        expect_revision: Option<i64>,
        /// Print the diff and the validation result; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Edit a document in $EDITOR; validated, compare-and-swap.
    Edit {
        key: String,
        /// Print the diff and the validation result; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a document; validated, compare-and-swap.
    Delete {
        key: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Report what a proxy would reject in the topology as it is now.
    Validate {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every change as it happens, and whether the result is valid.
    Watch,
}

#[derive(Subcommand, Debug)]
pub enum KeyspaceCommand {
    /// Create a keyspace (unsharded unless --sharded).
    Create {
        name: String,
        #[arg(long)]
        sharded: bool,
        /// The default vindex type of a sharded keyspace.
        #[arg(long, default_value = "hash")]
        vindex: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ShardCommand {
    /// Add shards: SHARD=HOST:PORT[/DATABASE], e.g. -80=10.0.0.1:3306/customer
    Add {
        keyspace: String,
        #[arg(required = true, allow_hyphen_values = true)]
        shards: Vec<String>,
        /// Also make them serving (when the keyspace has a routing document).
        #[arg(long)]
        serving: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VschemaCommand {
    /// Replace a keyspace's VSchema with the JSON in FILE (or - for stdin).
    Apply { keyspace: String, file: String },
}

#[derive(Subcommand, Debug)]
pub enum RoutingCommand {
    /// Set the serving shards (comma-separated); they must cover the key space exactly.
    Set {
        keyspace: String,
        #[arg(allow_hyphen_values = true, value_delimiter = ',')]
        serving: Vec<String>,
    },
}

/// A request that cannot be carried out as given (invalid topology, bad arguments,
/// refused confirmation): exit code 65. Retryable conflicts (a document changed
/// meanwhile, another controller holds the lock) exit with 75; other errors with 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The exit code for an error (see [`Invalid`]).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use shardgate_topology::StoreError;
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s {
                StoreError::Conflict { .. } | StoreError::Fenced { .. } => 75,
                StoreError::Unavailable(_) => 69,
                StoreError::Invalid(_) | StoreError::Config(_) => 65,
            };
        }
        if cause
            .downcast_ref::<crate::reshard::lock::LockHeld>()
            .is_some()
        {
            return 75;
        }
        if cause.downcast_ref::<Invalid>().is_some() {
            return 65;
        }
    }
    1
}

/// Asks before a destructive step: `--yes` goes ahead; on a terminal the user types
/// `yes`; otherwise the step is refused (exit code 65), so scripts must say `--yes`.
pub fn confirm(yes: bool, what: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        eprint!("{what}? type yes to go on: ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if line.trim() == "yes" {
            return Ok(());
        }
    }
    Err(anyhow::Error::new(Invalid(format!(
        "{what} needs confirmation: add --yes"
    ))))
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Up {
            shards,
            port,
            http_port,
            detach,
        } => cluster::up(&cli, *shards, *port, *http_port, *detach).await,
        Command::Down { purge, yes } => {
            if *purge {
                confirm(*yes, "delete the cluster's data (down --purge)")?;
            }
            cluster::down(&cli, *purge)
        }
        Command::HashPassword => {
            let password = if std::io::stdin().is_terminal() {
                rpassword::prompt_password("password: ")?
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            };
            // Both hashes, ready for a [[users]] entry: the same password logs in with
            // mysql_native_password and caching_sha2_password.
            println!(
                "password_hash = \"{}\"\ncaching_sha2_hash = \"{}\"",
                shardgate_config::hash_password(&password),
                shardgate_config::hash_password_sha2(&password)
            );
            Ok(())
        }
        Command::Explain {
            vschema,
            keyspace,
            shards,
            sql,
        } => explain::explain(vschema, keyspace, shards, sql),
        Command::Topo { command } => match command {
            TopoCommand::Get { key } => topo::get(&cli, key.as_deref()).await,
            TopoCommand::Put {
                key,
                file,
                expect_revision,
                dry_run,
            } => topo::put(&cli, key, file, *expect_revision, *dry_run).await,
            TopoCommand::Edit { key, dry_run } => topo::edit(&cli, key, *dry_run).await,
            TopoCommand::Delete { key, yes } => topo::delete(&cli, key, *yes).await,
            TopoCommand::Validate { json } => topo::validate(&cli, *json).await,
            TopoCommand::Watch => topo::watch(&cli).await,
        },
        Command::Keyspace {
            command:
                KeyspaceCommand::Create {
                    name,
                    sharded,
                    vindex,
                },
        } => topo::keyspace_create(&cli, name, *sharded, vindex).await,
        Command::Shard {
            command:
                ShardCommand::Add {
                    keyspace,
                    shards,
                    serving,
                },
        } => topo::shard_add(&cli, keyspace, shards, *serving).await,
        Command::Vschema {
            command: VschemaCommand::Apply { keyspace, file },
        } => topo::vschema_apply(&cli, keyspace, file).await,
        Command::Routing {
            command: RoutingCommand::Set { keyspace, serving },
        } => topo::routing_set(&cli, keyspace, serving).await,
        Command::Proxies { json } => topo::proxies(&cli, *json).await,
        Command::User { command } => users::run(&cli, command).await,
        Command::Reshard { command } => reshard::run(&cli, command).await,
        Command::Movetables { command } => movetables::run(&cli, command).await,
    }
}
