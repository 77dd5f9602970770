//! Client accounts: how a user proves who they are (password hashes only, never the
//! password) and what they may do (a [`Role`] on some keyspaces).
//!
//! The same document describes a user in the config file (`[[users]]`) and in etcd
//! (`users/<name>`, written by `shardctl user add`), so both are checked by
//! [`UserConfig::check`].

use crate::{PasswordHash, Sha2Hash};
use serde::{Deserialize, Serialize};

/// One client account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The MySQL `*`-prefixed double-SHA1 hash (`shardctl hash-password`), or "" for no password.
    #[serde(default)]
    pub password_hash: String,
    /// `sha256:` and the hex of SHA256(SHA256(password)) (`shardctl hash-password`): lets
    /// the user log in with `caching_sha2_password`. Empty: such clients are switched to
    /// `mysql_native_password`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caching_sha2_hash: String,
    /// Refuse this user on a plain (non-TLS) connection, like MySQL's `REQUIRE SSL`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// Client addresses allowed: IPs, `localhost` (loopback), or `%` (any).
    #[serde(default = "any_host")]
    pub hosts: Vec<String>,
    /// What the user may run (default `admin`, everything, as before roles existed).
    #[serde(default)]
    pub role: Role,
    /// The keyspaces the user may use; empty (or `*`) means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyspaces: Vec<String>,
}

fn any_host() -> Vec<String> {
    vec!["%".to_string()]
}

/// What a user may run, each role including the one before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: SELECT, SHOW, EXPLAIN, SET of session variables, transactions.
    Reader,
    /// Reads and data changes (INSERT, UPDATE, DELETE, REPLACE, LOAD DATA LOCAL, CALL).
    Writer,
    /// Everything: DDL, `USE ks:shard`, statements that name no table (GRANT, FLUSH,
    /// SET GLOBAL, ...), the system schemas, every session in PROCESSLIST and KILL.
    #[default]
    Admin,
}

impl Role {
    /// The role's name as written in configuration (`reader`, `writer`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Parses `reader`, `writer` or `admin`.
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {text:?} (expected reader, writer or admin)"
            )),
        }
    }
}

impl UserConfig {
    /// A user with a password hash (native and caching_sha2), any host.
    pub fn new(name: &str, password_hash: String, caching_sha2_hash: String) -> UserConfig {
        UserConfig {
            name: name.to_string(),
            password_hash,
            caching_sha2_hash,
            require_tls: false,
            hosts: any_host(),
            role: Role::default(),
            keyspaces: Vec::new(),
        }
    }

    /// What types alone cannot check: a name, hashes that parse, hosts, keyspace names.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name is empty".into());
        }
        if self.name.len() > 80 || self.name.chars().any(|c| c.is_control()) {
            return Err("name must be at most 80 printable characters".into());
        }
        PasswordHash::parse(&self.password_hash).map_err(|e| format!("password_hash {e}"))?;
        Sha2Hash::parse(&self.caching_sha2_hash).map_err(|e| format!("caching_sha2_hash {e}"))?;
        if !self.caching_sha2_hash.is_empty() && self.password_hash.is_empty() {
            // An empty password_hash means "no password" for mysql_native_password:
            // with a caching_sha2 hash set, that would open the account to anyone.
            return Err("caching_sha2_hash is set but password_hash is empty; set both (shardctl hash-password prints both)".into());
        }
        if self.hosts.is_empty() {
            return Err("hosts is empty".into());
        }
        for ks in &self.keyspaces {
            let valid = ks == "*"
                || (!ks.is_empty()
                    && ks
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            if !valid {
                return Err(format!("keyspaces: {ks:?} is not a keyspace name"));
            }
        }
        Ok(())
    }

    /// Whether the user may use keyspace `ks`.
    pub fn grants_keyspace(&self, ks: &str) -> bool {
        self.keyspaces.is_empty() || self.keyspaces.iter().any(|k| k == "*" || k == ks)
    }

    /// Whether the user may use every keyspace.
    pub fn all_keyspaces(&self) -> bool {
        self.keyspaces.is_empty() || self.keyspaces.iter().any(|k| k == "*")
    }
}
