//! Typed configuration of every shardgate binary.
//!
//! Settings come from three layers, each overriding the one before:
//! 1. a TOML file (`--config PATH`); unknown keys are rejected;
//! 2. environment variables named `SHARDGATE_<SECTION>_<KEY>` (for example
//!    `SHARDGATE_PROXY_LISTEN` or `SHARDGATE_BACKEND_PASSWORD`);
//! 3. command-line flags, which the binaries pass in as `section.key = value` overrides.
//!
//! Every layer is merged into one TOML table first and deserialized once, so a value set by
//! an environment variable is checked exactly like the same value written in the file.
//! [`Config::validate`] then checks what types alone cannot (addresses, ranges, hashes).

mod password;
mod users;

pub use password::{hash_password, hash_password_sha2, PasswordHash, Sha2Hash};
pub use users::{Role, UserConfig};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Everything that can go wrong while loading configuration. Each message names the setting.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("unknown setting {name} (known settings: see docs/configuration.md)")]
    UnknownSetting { name: String },
    #[error("setting {name}: cannot use {value:?}: {expected}")]
    BadOverride {
        name: String,
        value: String,
        expected: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration of a shardgate proxy (and of `shardctl`, which reads the
/// `topology` section to find etcd).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub topology: TopologyConfig,
    pub backend: BackendConfig,
    pub session: SessionConfig,
    pub log: LogConfig,
    /// OpenTelemetry trace export (off unless `otlp_endpoint` is set).
    pub tracing: TracingConfig,
    /// TLS for clients (offered only when a certificate is configured).
    pub tls: TlsConfig,
    /// Users that may connect to the proxy.
    pub users: Vec<UserConfig>,
}

/// The client-facing server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Identity of this proxy in etcd registrations. Empty: `<hostname>-<listen port>`.
    pub id: String,
    /// MySQL protocol listen address.
    pub listen: String,
    /// HTTP address for /metrics, /healthz and the status page. Empty disables it.
    pub http_listen: String,
    /// Version string sent to clients. Empty: the backends' version plus `-shardgate`.
    pub server_version: String,
    /// Largest client packet accepted, in bytes (error 1153 above it).
    pub max_allowed_packet: u64,
    /// Most client connections served at once; more are refused with error 1040.
    pub max_connections: u32,
    /// On SIGTERM, how long running statements may take before connections are cut.
    pub shutdown_timeout_ms: u64,
    /// How long a client may take to finish the handshake.
    pub handshake_timeout_ms: u64,
    /// How long writing to a client may block (it stopped reading its results) before the
    /// connection is cut, like MySQL's `net_write_timeout`. 0 means never.
    pub write_timeout_ms: u64,
    /// Threads serving clients; 0 means one per CPU core.
    pub worker_threads: u32,
}

/// Where the topology lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Cluster name: topology keys live under `/shardgate/<cluster>/`.
    pub cluster: String,
    /// etcd endpoints, e.g. `http://127.0.0.1:2379`.
    pub etcd_endpoints: Vec<String>,
    pub etcd_username: String,
    pub etcd_password: String,
    /// PEM CA bundle for TLS to etcd (enables TLS when set).
    pub etcd_ca_file: String,
    /// Client certificate and key for mutual TLS to etcd.
    pub etcd_cert_file: String,
    pub etcd_key_file: String,
    /// Timeout of one etcd request.
    pub etcd_timeout_ms: u64,
    /// TTL of the proxy's registration lease, in seconds.
    pub lease_ttl_s: u64,
    /// Where the last good topology snapshot is cached on local disk. Empty disables it.
    pub cache_file: String,
}

/// How the proxy connects to the MySQL/MariaDB servers behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub user: String,
    pub password: String,
    /// Most connections per shard (per settings pool group).
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
    /// Idle connections unused for longer than this are pinged before they are handed out.
    pub health_check_idle_ms: u64,
    /// Idle connections unused for longer than this are closed.
    pub max_idle_ms: u64,
    /// How long a statement waits (in arrival order) for a connection when every
    /// connection of the shard is busy; then it fails with 1040 naming the shard.
    pub pool_wait_ms: u64,
    /// PEM CA bundle: when set, every backend connection is upgraded to TLS and the
    /// server's certificate must chain to one of these CAs and name the backend's host.
    pub tls_ca_file: String,
}

/// TLS for client connections (see docs/security.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain served to clients (leaf first). Empty: TLS is not offered.
    pub cert_file: String,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Refuse logins over plain TCP (error 3159), like MySQL's `require_secure_transport`.
    pub require_secure_transport: bool,
    /// PEM RSA private key for `caching_sha2_password`'s public-key exchange on plain
    /// connections. Empty: a 2048-bit key is generated at start (its fingerprint is logged).
    pub rsa_key_file: String,
}

/// Defaults for client sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// `single`, `multi` or `twopc`: what a transaction spanning shards may do.
    pub transaction_mode: String,
    /// Longest a statement may run; 0 means no limit.
    pub query_timeout_ms: u64,
    /// Most rows a multi-shard merge may hold in memory at once.
    pub max_merge_rows: u64,
    /// Most bytes of rows a statement the shards cannot answer alone may gather on its
    /// scratch connection (joins and subqueries across shards).
    pub max_gather_bytes: u64,
    /// A gathered join reads a table by the values an earlier read found (an IN list,
    /// routed by vindex) when there are at most this many; beyond, it reads the table
    /// whole (with its own conditions) and the scratch joins them.
    pub gather_max_in_values: u64,
    /// Distinct statements whose plans are cached.
    pub plan_cache_size: u64,
    /// Seconds between passes that resolve in-doubt two-phase commits left by crashed
    /// proxies (one pass also runs at start).
    pub twopc_recovery_interval_s: u64,
    /// Most prepared statements one session may hold open (error 1461 beyond), like
    /// MySQL's `max_prepared_stmt_count` but per session.
    pub max_prepared_statements: u64,
    /// Seconds between re-reads of every keyspace's schema (to notice DDL run directly on
    /// a shard; DDL through any proxy is noticed at once).
    pub schema_refresh_s: u64,
    /// With autocommit off, MySQL's exact behaviour: the first statement that reads a
    /// table opens the transaction. Off (the default, like ProxySQL's): it opens at the
    /// first write or locking read, so plain reads before it keep multiplexing.
    pub autocommit_false_is_transaction: bool,
    /// A session idle inside a transaction for longer than this is rolled back and closed
    /// (0: never).
    pub idle_transaction_timeout_s: u64,
    /// A statement in a transaction that has waited this long is checked for a lock-wait
    /// cycle across shards (0: never).
    pub deadlock_check_ms: u64,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `shardgate=debug`; `RUST_LOG` overrides it.
    pub filter: String,
    /// Statements kept in the query log (`/debug/querylog`, `SHOW LAST QUERY TRACE`).
    pub query_log_entries: u64,
    /// Statements slower than this (ms) are logged as warnings with their trace (0: never).
    pub slow_query_ms: u64,
    /// Also append every query-log entry to this file, one JSON object per line ("": no).
    pub query_log_file: String,
}

/// OpenTelemetry trace export: one span per statement that runs against shards and one
/// child span per shard it touched, sent over OTLP/gRPC in batches by a background thread.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Empty: no export at all.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of statements exported, 0 to 1 (picked evenly by trace number). A statement
    /// that carries a `traceparent` comment follows that trace's sampled flag instead.
    pub sample_ratio: f64,
    /// Longest a finished span waits before its batch is sent (ms).
    pub export_interval_ms: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            id: String::new(),
            listen: "127.0.0.1:15306".into(),
            http_listen: "127.0.0.1:15000".into(),
            server_version: String::new(),
            max_allowed_packet: 64 << 20,
            max_connections: 10_000,
            shutdown_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            write_timeout_ms: 60_000,
            worker_threads: 0,
        }
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            cluster: "local".into(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_username: String::new(),
            etcd_password: String::new(),
            etcd_ca_file: String::new(),
            etcd_cert_file: String::new(),
            etcd_key_file: String::new(),
            etcd_timeout_ms: 5_000,
            lease_ttl_s: 10,
            cache_file: String::new(),
        }
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            user: "root".into(),
            password: String::new(),
            pool_size: 32,
            connect_timeout_ms: 5_000,
            health_check_idle_ms: 30_000,
            max_idle_ms: 600_000,
            pool_wait_ms: 5_000,
            tls_ca_file: String::new(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            transaction_mode: "multi".into(),
            query_timeout_ms: 0,
            max_merge_rows: 1_000_000,
            max_gather_bytes: 256 << 20,
            gather_max_in_values: 5000,
            plan_cache_size: 10_000,
            twopc_recovery_interval_s: 30,
            max_prepared_statements: 1024,
            schema_refresh_s: 60,
            autocommit_false_is_transaction: false,
            idle_transaction_timeout_s: 300,
            deadlock_check_ms: 200,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
            query_log_entries: 1000,
            slow_query_ms: 1000,
            query_log_file: String::new(),
        }
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            service_name: "shardgate".into(),
            sample_ratio: 1.0,
            export_interval_ms: 5_000,
        }
    }
}

/// Environment variables that belong to the binaries rather than to a setting.
const RESERVED_ENV: &[&str] = &["SHARDGATE_CONFIG", "SHARDGATE_BIN_DIR", "SHARDGATE_KEEP"];

impl Config {
    /// Loads the file (if any), applies `SHARDGATE_*` variables from `env`, then `overrides`
    /// (`("proxy.listen", "0.0.0.0:3306")`), and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let known = known_settings();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SHARDGATE_") else {
                continue;
            };
            if RESERVED_ENV.contains(&name.as_str()) {
                continue;
            }
            let key = rest.to_ascii_lowercase();
            let Some((dotted, template)) = known
                .iter()
                .find(|(dotted, _)| dotted.replace('.', "_") == key)
            else {
                return Err(ConfigError::UnknownSetting { name });
            };
            set_path(&mut table, dotted, coerce(&name, &value, template)?);
        }
        for (dotted, value) in overrides {
            let Some((_, template)) = known.iter().find(|(d, _)| d == dotted) else {
                return Err(ConfigError::UnknownSetting {
                    name: dotted.clone(),
                });
            };
            set_path(&mut table, dotted, coerce(dotted, value, template)?);
        }
        let source = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(defaults)".to_string());
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: source,
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document and validates it (no environment, no overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "(inline)".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Renders the configuration as TOML (used by `shardctl up` to write the proxy's file).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration always serializes")
    }

    /// Checks what the types cannot: addresses parse, enumerations are known, hashes are
    /// well-formed, limits are sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.proxy.listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "proxy.listen = {:?} is not an IP:port address",
                self.proxy.listen
            ));
        }
        if !self.proxy.http_listen.is_empty()
            && self.proxy.http_listen.parse::<SocketAddr>().is_err()
        {
            return bad(format!(
                "proxy.http_listen = {:?} is not an IP:port address (or empty to disable)",
                self.proxy.http_listen
            ));
        }
        if !(1024..=(1 << 30)).contains(&self.proxy.max_allowed_packet) {
            return bad(format!(
                "proxy.max_allowed_packet = {} must be between 1024 and 1073741824",
                self.proxy.max_allowed_packet
            ));
        }
        if self.proxy.max_connections == 0 {
            return bad("proxy.max_connections must be at least 1".into());
        }
        if self.topology.cluster.is_empty()
            || !self
                .topology
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(format!(
                "topology.cluster = {:?} must be non-empty letters, digits, '_' or '-'",
                self.topology.cluster
            ));
        }
        if self.topology.etcd_endpoints.is_empty() {
            return bad("topology.etcd_endpoints must name at least one endpoint".into());
        }
        if self.topology.lease_ttl_s < 2 {
            return bad("topology.lease_ttl_s must be at least 2 seconds".into());
        }
        if self.topology.etcd_cert_file.is_empty() != self.topology.etcd_key_file.is_empty() {
            return bad("topology.etcd_cert_file and topology.etcd_key_file go together".into());
        }
        if self.backend.pool_size == 0 {
            return bad("backend.pool_size must be at least 1".into());
        }
        if !["single", "multi", "twopc"].contains(&self.session.transaction_mode.as_str()) {
            return bad(format!(
                "session.transaction_mode = {:?}: expected single, multi or twopc",
                self.session.transaction_mode
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return bad(format!(
                "log.format = {:?}: expected text or json",
                self.log.format
            ));
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return bad(format!(
                "tracing.sample_ratio = {} must be between 0 and 1",
                self.tracing.sample_ratio
            ));
        }
        if !self.tracing.otlp_endpoint.is_empty() && !is_http_url(&self.tracing.otlp_endpoint) {
            return bad(format!(
                "tracing.otlp_endpoint = {:?} is not an http:// or https:// URL with a host (or empty to disable)",
                self.tracing.otlp_endpoint
            ));
        }
        if self.tracing.service_name.is_empty() {
            return bad("tracing.service_name is empty".into());
        }
        if self.tracing.export_interval_ms == 0 {
            return bad("tracing.export_interval_ms must be at least 1".into());
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            return bad("tls.cert_file and tls.key_file go together".into());
        }
        let tls_offered = !self.tls.cert_file.is_empty();
        if self.tls.require_secure_transport && !tls_offered {
            return bad(
                "tls.require_secure_transport = true needs tls.cert_file and tls.key_file (nobody could log in)"
                    .into(),
            );
        }
        for (i, user) in self.users.iter().enumerate() {
            if let Err(e) = user.check() {
                return bad(format!("users[{i}] ({}): {e}", user.name));
            }
            if user.require_tls && !tls_offered {
                return bad(format!(
                    "users[{i}] ({}): require_tls needs tls.cert_file and tls.key_file",
                    user.name
                ));
            }
        }
        Ok(())
    }

    /// The proxy id: the configured one, or `<hostname>-<port>`.
    pub fn proxy_id(&self) -> String {
        if !self.proxy.id.is_empty() {
            return self.proxy.id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "proxy".into());
        let port = self
            .proxy
            .listen
            .rsplit(':')
            .next()
            .unwrap_or("0")
            .to_string();
        format!("{host}-{port}")
    }
}

/// Whether `s` is `http://` or `https://`, a host (name, IPv4, or `[IPv6]`), an optional
/// port, and an optional path: what an OTLP/gRPC endpoint looks like.
fn is_http_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let plain_host = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h.parse::<std::net::Ipv6Addr>().is_ok(), p),
            None => return false,
        },
        None => match authority.find(':') {
            Some(i) => (plain_host(&authority[..i]), &authority[i..]),
            None => (plain_host(authority), ""),
        },
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// Every settable leaf path (`proxy.listen`, ...) with its default value as a type template.
fn known_settings() -> Vec<(String, toml::Value)> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut out = Vec::new();
    if let toml::Value::Table(sections) = defaults {
        for (section, value) in sections {
            if let toml::Value::Table(keys) = value {
                for (key, template) in keys {
                    out.push((format!("{section}.{key}"), template));
                }
            }
        }
    }
    out
}

/// Turns the text of an environment variable or flag into a value of the template's type.
fn coerce(name: &str, value: &str, template: &toml::Value) -> Result<toml::Value, ConfigError> {
    let fail = |expected: &str| ConfigError::BadOverride {
        name: name.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    };
    Ok(match template {
        toml::Value::String(_) => toml::Value::String(value.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| fail("expected a whole number"))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            value
                .trim()
                .parse::<f64>()
                .map_err(|_| fail("expected a number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match value.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(fail("expected true or false")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            value
                .split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => return Err(fail("this setting can only be set in the config file")),
    })
}

fn set_path(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let (section, key) = dotted.split_once('.').expect("settings are section.key");
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    } else {
        *entry = toml::Value::Table(toml::Table::from_iter([(key.to_string(), value)]));
    }
}

#[cfg(test)]
mod tests;
