//! Local clusters (`shardctl up` / `shardctl down`) and the same machinery for the
//! integration tests: etcd, private MariaDB servers and proxies on 127.0.0.1, with the
//! topology written to etcd and everything recorded in `DIR/cluster.json`.

pub mod certs;
pub mod etcd;
pub mod mariadb;
pub mod process;
pub mod sample;

use anyhow::{bail, Context, Result};
use mariadb::MariaDb;
use mysql_async::prelude::Queryable;
use process::{find_program, free_port, spawn, wait_port};
use serde::{Deserialize, Serialize};
use shardgate_config::{Config, UserConfig};
use shardgate_topology::keyrange::{even_ranges, KeyRange};
use shardgate_topology::store::{Expect, Store, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A proxy process of a local cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyProc {
    pub id: String,
    pub pid: u32,
    /// The process's start time (see `process::start_ticks`).
    #[serde(default)]
    pub started: u64,
    pub mysql: String,
    pub http: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// One shard as recorded in cluster.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardInfo {
    pub keyspace: String,
    pub shard: String,
    pub addr: String,
    pub database: String,
    /// The MariaDB instance (name) holding it.
    pub instance: String,
}

/// Everything about a local cluster (`DIR/cluster.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster: String,
    pub dir: PathBuf,
    pub etcd: etcd::Etcd,
    pub proxies: Vec<ProxyProc>,
    pub mariadb: Vec<MariaDb>,
    pub shards: Vec<ShardInfo>,
}

/// How to start a local cluster.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub cluster: String,
    /// Shards of keyspace `customer`.
    pub shards: usize,
    /// Proxy MySQL port (0: any free port).
    pub port: u16,
    /// Proxy HTTP port (0: any free port).
    pub http_port: u16,
    /// Load the sample tables and rows.
    pub sample_data: bool,
    /// Start a proxy (tests may start their own).
    pub start_proxy: bool,
}

impl ClusterInfo {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    pub fn load(dir: &Path) -> Result<ClusterInfo> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no local cluster in {} (missing {})",
                dir.display(),
                p.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("cannot read {}", p.display()))
    }

    /// Writes cluster.json atomically (readers never see a half-written file).
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.dir);
        let tmp = self
            .dir
            .join(format!(".cluster.json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The topology section a client of this cluster needs.
    pub fn topology_config(&self) -> shardgate_config::TopologyConfig {
        shardgate_config::TopologyConfig {
            cluster: self.cluster.clone(),
            etcd_endpoints: vec![self.etcd.endpoint()],
            ..Default::default()
        }
    }

    pub async fn store(&self) -> Result<Store> {
        Store::connect(&self.topology_config())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn instance(&self, name: &str) -> Option<&MariaDb> {
        self.mariadb.iter().find(|m| m.name == name)
    }

    /// Whether any process of the cluster is running.
    pub fn any_alive(&self) -> bool {
        process::same_process(self.etcd.pid, self.etcd.started)
            || self
                .mariadb
                .iter()
                .any(|m| process::same_process(m.pid, m.started))
            || self
                .proxies
                .iter()
                .any(|p| process::same_process(p.pid, p.started))
    }

    /// Starts one more proxy (tests run two). `port` 0 picks a free one.
    pub async fn start_proxy(&mut self, id: &str, port: u16, http_port: u16) -> Result<ProxyProc> {
        self.start_proxy_env(id, port, http_port, &[]).await
    }

    /// Starts a proxy with extra environment (e.g. `SHARDGATE_PROXY_MAX_ALLOWED_PACKET`).
    pub async fn start_proxy_env(
        &mut self,
        id: &str,
        port: u16,
        http_port: u16,
        env: &[(&str, &str)],
    ) -> Result<ProxyProc> {
        self.start_proxy_with(id, port, http_port, env, |_| {})
            .await
    }

    /// Starts a proxy whose configuration `edit` changes before it is written (users, TLS
    /// settings, ...).
    pub async fn start_proxy_with(
        &mut self,
        id: &str,
        port: u16,
        http_port: u16,
        env: &[(&str, &str)],
        edit: impl FnOnce(&mut Config),
    ) -> Result<ProxyProc> {
        if port != 0 && !process::port_free(port) {
            bail!("port {port} is taken by another program; choose another with --port");
        }
        if http_port != 0 && !process::port_free(http_port) {
            bail!("port {http_port} is taken by another program; choose another with --http-port");
        }
        let mut cfg = Config::default();
        cfg.proxy.id = id.to_string();
        cfg.proxy.shutdown_timeout_ms = 5_000;
        cfg.topology = self.topology_config();
        cfg.topology.lease_ttl_s = 4;
        cfg.topology.cache_file = self
            .dir
            .join(format!("{id}.topology.json"))
            .display()
            .to_string();
        cfg.users.push(UserConfig {
            hosts: vec!["localhost".into()],
            ..UserConfig::new("root", String::new(), String::new())
        });
        // TLS by default, with the cluster's own CA (made on the first start).
        let certs = certs::ensure(&self.dir)?;
        cfg.tls.cert_file = certs.cert.display().to_string();
        cfg.tls.key_file = certs.key.display().to_string();
        edit(&mut cfg);
        // Ports left to us are chosen here, and chosen again when another program takes
        // one first (see `process::PortTaken`).
        let mut tries = 0;
        let p = loop {
            tries += 1;
            let port = if port == 0 { free_port()? } else { port };
            let http_port = if http_port == 0 {
                free_port()?
            } else {
                http_port
            };
            match self.spawn_proxy(id, port, http_port, env, &mut cfg).await {
                Err(e) if tries < 5 && e.downcast_ref::<process::PortTaken>().is_some() => {}
                other => break other?,
            }
        };
        self.proxies.retain(|x| x.id != id);
        self.proxies.push(p.clone());
        self.save()?;
        Ok(p)
    }

    /// Writes `cfg` listening on the given ports and starts the proxy with it.
    async fn spawn_proxy(
        &self,
        id: &str,
        port: u16,
        http_port: u16,
        env: &[(&str, &str)],
        cfg: &mut Config,
    ) -> Result<ProxyProc> {
        cfg.proxy.listen = format!("127.0.0.1:{port}");
        cfg.proxy.http_listen = format!("127.0.0.1:{http_port}");
        let config = self.dir.join(format!("{id}.toml"));
        std::fs::write(&config, cfg.to_toml())?;
        let log = self.dir.join(format!("{id}.log"));
        let bin = find_program("shardgate")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let pid = spawn(&mut cmd, &log)?;
        let mysql = format!("127.0.0.1:{port}");
        wait_port(
            &mysql,
            pid,
            Duration::from_secs(60),
            &format!("proxy {id}"),
            &log,
        )
        .await?;
        Ok(ProxyProc {
            id: id.to_string(),
            pid,
            started: process::start_ticks(pid).unwrap_or(0),
            mysql,
            http: format!("127.0.0.1:{http_port}"),
            config,
            log,
        })
    }

    /// Starts one more private MariaDB (e.g. for a resharding target) and records it.
    pub async fn add_instance(&mut self, name: &str) -> Result<MariaDb> {
        self.add_instance_on(name, None).await
    }

    /// Like [`ClusterInfo::add_instance`], on `preferred` while it is free.
    pub async fn add_instance_on(&mut self, name: &str, preferred: Option<u16>) -> Result<MariaDb> {
        if let Some(m) = self.instance(name) {
            if process::alive(m.pid) {
                return Ok(m.clone());
            }
        }
        tokio::task::spawn_blocking(mariadb::template).await??;
        let datadir = self.dir.join("mysql").join(name);
        let m = process::with_port(preferred, |port| mariadb::start(name, &datadir, port)).await?;
        self.mariadb.retain(|x| x.name != name);
        self.mariadb.push(m.clone());
        self.save()?;
        Ok(m)
    }

    /// Stops everything: proxies, then MariaDB, then etcd.
    pub fn stop_all(&self) {
        for p in &self.proxies {
            process::stop_ours(p.pid, p.started, Duration::from_secs(10));
        }
        for m in &self.mariadb {
            process::stop_ours(m.pid, m.started, Duration::from_secs(30));
        }
        process::stop_ours(self.etcd.pid, self.etcd.started, Duration::from_secs(10));
    }
}

/// Starts a local cluster: etcd, one MariaDB for `commerce` and one per `customer` shard,
/// the topology in etcd, sample data, and (optionally) a proxy.
pub async fn up(opts: &UpOptions) -> Result<ClusterInfo> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let dir = opts
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", opts.dir.display()))?;
    let previous = ClusterInfo::load(&dir).ok();
    if let Some(old) = &previous {
        if old.any_alive() {
            bail!(
                "a cluster is already running in {} (shardctl down --dir {} stops it)",
                dir.display(),
                dir.display()
            );
        }
    }
    if opts.shards == 0 || opts.shards > 64 {
        bail!("--shards must be between 1 and 64");
    }
    for port in [opts.port, opts.http_port] {
        if port != 0 && !process::port_free(port) {
            bail!("port {port} is taken by another program; choose another (--port, --http-port)");
        }
    }
    let previous_proxy = previous
        .as_ref()
        .and_then(|p| p.proxies.iter().find(|x| x.id == "proxy1").cloned());
    let etcd_dir = dir.join("etcd");
    let fresh = !etcd_dir.exists();
    // A cluster directory keeps its ports across down/up (each one that is still free).
    let ports: Vec<(String, u16)> = previous
        .iter()
        .flat_map(|p| p.mariadb.iter().map(|m| (m.name.clone(), m.port)))
        .collect();
    let remembered =
        |name: &str| -> Option<u16> { ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p) };
    let peer = previous.as_ref().map(|p| p.etcd.peer_port);
    let etcd = process::with_port(previous.as_ref().map(|p| p.etcd.client_port), |port| {
        let etcd_dir = &etcd_dir;
        async move { etcd::start(etcd_dir, port, process::reuse_port(peer)?).await }
    })
    .await?;
    let mut info = ClusterInfo {
        cluster: opts.cluster.clone(),
        dir: dir.clone(),
        etcd,
        proxies: Vec::new(),
        mariadb: Vec::new(),
        shards: Vec::new(),
    };
    info.save()?;
    let ranges = even_ranges(opts.shards);
    let mut instances = vec![(
        "commerce".to_string(),
        "commerce".to_string(),
        "-".to_string(),
    )];
    for r in &ranges {
        let shard = r.name();
        instances.push((
            format!("customer{}", shard.replace('-', "_")),
            "customer".into(),
            shard,
        ));
    }
    tokio::task::spawn_blocking(mariadb::template).await??;
    let mut starts = Vec::new();
    for (name, _, _) in &instances {
        let datadir = dir.join("mysql").join(name);
        let preferred = remembered(name);
        let name = name.clone();
        starts.push(tokio::spawn(async move {
            process::with_port(preferred, |port| mariadb::start(&name, &datadir, port)).await
        }));
    }
    for s in starts {
        match s.await? {
            Ok(m) => {
                info.mariadb.push(m);
                info.save()?;
            }
            Err(e) => {
                info.stop_all();
                return Err(e);
            }
        }
    }
    for (name, ks, shard) in &instances {
        let m = info.instance(name).expect("started above");
        info.shards.push(ShardInfo {
            keyspace: ks.clone(),
            shard: shard.clone(),
            addr: m.addr(),
            database: ks.clone(),
            instance: name.clone(),
        });
    }
    // Servers added later (resharding targets) come back too, on new ports.
    if let Some(old) = previous.filter(|_| !fresh) {
        for s in old.shards {
            if info.shards.iter().any(|x| x.instance == s.instance) {
                continue;
            }
            let m = match info
                .add_instance_on(&s.instance, remembered(&s.instance))
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    info.stop_all();
                    return Err(e);
                }
            };
            info.shards.push(ShardInfo {
                addr: m.addr(),
                ..s
            });
        }
    }
    info.save()?;
    let setup = async {
        create_schema(&info, &ranges, opts.sample_data && fresh).await?;
        if fresh {
            write_topology(&info).await?;
        } else {
            update_addresses(&info).await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = setup.await {
        info.stop_all();
        return Err(e);
    }
    if opts.start_proxy {
        let last = previous_proxy.as_ref();
        let (port, http_port) = if opts.port == 0 {
            (
                process::reuse_port(last.and_then(|p| port_of(&p.mysql)))?,
                if opts.http_port == 0 {
                    process::reuse_port(last.and_then(|p| port_of(&p.http)))?
                } else {
                    opts.http_port
                },
            )
        } else {
            (opts.port, opts.http_port)
        };
        if let Err(e) = info.start_proxy("proxy1", port, http_port).await {
            info.stop_all();
            return Err(e);
        }
    }
    Ok(info)
}

async fn create_schema(info: &ClusterInfo, ranges: &[KeyRange], sample: bool) -> Result<()> {
    let rows = sample::customer_rows(ranges);
    for s in &info.shards {
        let m = info.instance(&s.instance).expect("instance");
        let mut conn = mysql_async::Conn::from_url(m.url(""))
            .await
            .with_context(|| format!("cannot connect to {}", m.addr()))?;
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{}`", s.database))
            .await?;
        conn.query_drop(format!("USE `{}`", s.database)).await?;
        if !sample {
            continue;
        }
        let (schema, data): (&[&str], Vec<String>) = if s.keyspace == "commerce" {
            (
                sample::COMMERCE_SCHEMA,
                sample::COMMERCE_DATA
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            )
        } else {
            (
                sample::CUSTOMER_SCHEMA,
                rows.get(&s.shard).cloned().unwrap_or_default(),
            )
        };
        for q in schema.iter().map(|s| s.to_string()).chain(data) {
            conn.query_drop(q).await?;
        }
        conn.disconnect().await?;
    }
    Ok(())
}

/// Writes the keyspace, shard and routing documents.
async fn write_topology(info: &ClusterInfo) -> Result<()> {
    let store = info.store().await?;
    let mut writes = vec![
        put("keyspaces/commerce", sample::COMMERCE_VSCHEMA.to_string()),
        put("keyspaces/customer", sample::CUSTOMER_VSCHEMA.to_string()),
    ];
    let mut serving: Vec<String> = Vec::new();
    for s in &info.shards {
        writes.push(put(
            &format!("keyspaces/{}/shards/{}", s.keyspace, s.shard),
            serde_json::to_string_pretty(&serde_json::json!({
                "primary": s.addr, "database": s.database
            }))?,
        ));
        if s.keyspace == "customer" {
            serving.push(s.shard.clone());
        }
    }
    writes.push(put(
        "keyspaces/commerce/routing",
        serde_json::to_string_pretty(&serde_json::json!({"version": 1, "serving": ["-"]}))?,
    ));
    writes.push(put(
        "keyspaces/customer/routing",
        serde_json::to_string_pretty(&serde_json::json!({"version": 1, "serving": serving}))?,
    ));
    let base = store.load().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    store
        .commit_validated(&base, &writes)
        .await
        .map_err(|e| anyhow::anyhow!("cannot write the topology: {e}"))?;
    Ok(())
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// On a restart a server whose port was taken meanwhile listens on a new one: point the
/// shard documents at the addresses in use.
async fn update_addresses(info: &ClusterInfo) -> Result<()> {
    let store = info.store().await?;
    let base = store.load().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut writes = Vec::new();
    for s in &info.shards {
        let key = format!("keyspaces/{}/shards/{}", s.keyspace, s.shard);
        if let Some(e) = base.get(&key) {
            let mut doc: serde_json::Value = serde_json::from_slice(&e.value)?;
            doc["primary"] = serde_json::Value::String(s.addr.clone());
            writes.push(Write::Put {
                key,
                value: serde_json::to_vec_pretty(&doc)?,
                expect: Expect::Revision(e.mod_revision),
            });
        }
    }
    store
        .commit_validated(&base, &writes)
        .await
        .map_err(|e| anyhow::anyhow!("cannot update shard addresses: {e}"))?;
    Ok(())
}

fn put(key: &str, value: String) -> Write {
    Write::Put {
        key: key.to_string(),
        value: value.into_bytes(),
        expect: Expect::Any,
    }
}

/// The lines `shardctl up` prints.
pub fn connect_help(info: &ClusterInfo) -> String {
    let mut s = String::new();
    if let Some(p) = info.proxies.first() {
        let (host, port) = p.mysql.rsplit_once(':').unwrap_or(("127.0.0.1", "15306"));
        s.push_str(&format!(
            "shardgate is running.\n\n  connect:   mariadb -h {host} -P {port} -u root commerce\n             mysql://root@{} (databases: commerce, customer)\n  with TLS:  mariadb -h {host} -P {port} -u root --ssl --ssl-ca={} --ssl-verify-server-cert commerce\n  status:    http://{}/   metrics: http://{}/metrics\n",
            p.mysql,
            certs::CertFiles::in_dir(&info.dir).ca.display(),
            p.http,
            p.http
        ));
    }
    s.push_str(&format!(
        "  etcd:      {} (cluster {:?}; shardctl --dir {} topo get)\n  shards:\n",
        info.etcd.endpoint(),
        info.cluster,
        info.dir.display()
    ));
    for sh in &info.shards {
        s.push_str(&format!(
            "    {}/{:<6} {} database {}\n",
            sh.keyspace, sh.shard, sh.addr, sh.database
        ));
    }
    s.push_str(&format!(
        "  state:     {}\n  stop:      shardctl down --dir {}\n",
        ClusterInfo::path(&info.dir).display(),
        info.dir.display()
    ));
    s
}
