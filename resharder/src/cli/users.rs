//! `shardctl user add | remove | list`: client accounts kept in etcd (`users/<name>`),
//! followed live by every proxy alongside its config file's `[[users]]`.
//!
//! Only hashes are stored (mysql_native_password's double SHA1 and caching_sha2's double
//! SHA256); the password is read from stdin or a prompt, never from the command line.

use super::target::store;
use super::{Cli, Invalid};
use anyhow::Result;
use clap::Subcommand;
use shardgate_config::{Role, UserConfig};
use shardgate_topology::store::{Expect, Write};
use std::io::IsTerminal;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (or replace one with --replace).
    Add {
        name: String,
        /// Read the password from the first line of stdin (else a prompt on a terminal).
        #[arg(long)]
        password_stdin: bool,
        /// reader (SELECT), writer (DML) or admin (everything).
        #[arg(long, default_value = "writer")]
        role: String,
        /// Keyspaces the user may use, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        keyspaces: Vec<String>,
        /// Client addresses allowed: IPs, `localhost`, `%` (any; the default).
        #[arg(long, value_delimiter = ',', default_value = "%")]
        hosts: Vec<String>,
        /// Refuse this user on connections without TLS.
        #[arg(long)]
        require_tls: bool,
        /// Replace the user if it exists.
        #[arg(long)]
        replace: bool,
    },
    /// Remove a user: new logins are refused (open sessions go on, as in MySQL).
    Remove { name: String },
    /// List the users kept in etcd (never their hashes).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: &Cli, command: &UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            role,
            keyspaces,
            hosts,
            require_tls,
            replace,
        } => {
            let role = Role::parse(role).map_err(|e| anyhow::Error::new(Invalid(e)))?;
            let password = read_password(*password_stdin)?;
            let user = UserConfig {
                role,
                keyspaces: keyspaces.clone(),
                hosts: hosts.clone(),
                require_tls: *require_tls,
                ..UserConfig::new(
                    name,
                    shardgate_config::hash_password(&password),
                    shardgate_config::hash_password_sha2(&password),
                )
            };
            user.check()
                .map_err(|e| anyhow::Error::new(Invalid(format!("user {name}: {e}"))))?;
            add(cli, &user, *replace).await
        }
        UserCommand::Remove { name } => remove(cli, name).await,
        UserCommand::List { json } => list(cli, *json).await,
    }
}

fn key(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('/') {
        return Err(anyhow::Error::new(Invalid(format!(
            "{name:?} is not a user name (non-empty, no '/')"
        ))));
    }
    Ok(format!("users/{name}"))
}

/// The password: the first line of stdin, or a prompt (typed twice) on a terminal.
fn read_password(from_stdin: bool) -> Result<String> {
    if !from_stdin && std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            return Err(anyhow::Error::new(Invalid("the passwords differ".into())));
        }
        return Ok(first);
    }
    if !from_stdin {
        return Err(anyhow::Error::new(Invalid(
            "no terminal to ask the password on: pass --password-stdin and write it to stdin"
                .into(),
        )));
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn add(cli: &Cli, user: &UserConfig, replace: bool) -> Result<()> {
    let store = store(cli).await?;
    let base = store.load().await.map_err(anyhow::Error::new)?;
    let key = key(&user.name)?;
    let expect = match base.get(&key) {
        Some(_) if !replace => {
            return Err(anyhow::Error::new(Invalid(format!(
                "user {} exists (--replace replaces it)",
                user.name
            ))))
        }
        Some(e) => Expect::Revision(e.mod_revision),
        None => Expect::Absent,
    };
    let write = Write::Put {
        key,
        value: serde_json::to_vec_pretty(user)?,
        expect,
    };
    let rev = super::topo::commit(&store, &base, vec![write]).await?;
    println!(
        "{} user {} ({} on {}) at revision {rev}",
        if replace { "stored" } else { "added" },
        user.name,
        user.role.name(),
        keyspaces(user)
    );
    Ok(())
}

async fn remove(cli: &Cli, name: &str) -> Result<()> {
    let store = store(cli).await?;
    let base = store.load().await.map_err(anyhow::Error::new)?;
    let key = key(name)?;
    let Some(entry) = base.get(&key) else {
        return Err(anyhow::Error::new(Invalid(format!(
            "no user {name} in etcd (users of config files are removed there)"
        ))));
    };
    let write = Write::Delete {
        key,
        expect: Expect::Revision(entry.mod_revision),
    };
    let rev = super::topo::commit(&store, &base, vec![write]).await?;
    println!("removed user {name} at revision {rev}");
    Ok(())
}

fn keyspaces(u: &UserConfig) -> String {
    if u.all_keyspaces() {
        "all keyspaces".into()
    } else {
        u.keyspaces.join(",")
    }
}

async fn list(cli: &Cli, json: bool) -> Result<()> {
    let store = store(cli).await?;
    let loaded = store.load().await.map_err(anyhow::Error::new)?;
    let users: Vec<UserConfig> = loaded
        .entries
        .iter()
        .filter(|e| e.key.starts_with("users/"))
        .filter_map(|e| serde_json::from_slice(&e.value).ok())
        .collect();
    let plugins = |u: &UserConfig| {
        let mut p = vec!["mysql_native_password"];
        if !u.caching_sha2_hash.is_empty() {
            p.push("caching_sha2_password");
        }
        p
    };
    if json {
        let out: Vec<serde_json::Value> = users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "name": u.name,
                    "role": u.role,
                    "keyspaces": if u.all_keyspaces() { vec!["*".to_string()] } else { u.keyspaces.clone() },
                    "hosts": u.hosts,
                    "require_tls": u.require_tls,
                    "plugins": plugins(u),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if users.is_empty() {
        println!("no users in etcd (config files may have [[users]])");
        return Ok(());
    }
    println!(
        "{:<20} {:<7} {:<24} {:<16} tls",
        "user", "role", "keyspaces", "hosts"
    );
    for u in &users {
        println!(
            "{:<20} {:<7} {:<24} {:<16} {}",
            u.name,
            u.role.name(),
            keyspaces(u),
            u.hosts.join(","),
            if u.require_tls {
                "required"
            } else {
                "optional"
            }
        );
    }
    Ok(())
}
