//! `shardctl topo ...`, `keyspace create`, `shard add`, `vschema apply`, `routing set`,
//! `proxies`: reading and editing the topology in etcd.
//!
//! Every edit is validated as the whole topology it would produce (exactly what a proxy
//! checks) and committed with compare-and-swap against the revisions it read, so a
//! concurrent edit makes it fail instead of being overwritten.

use super::target::store;
use super::Cli;
use anyhow::{bail, Context, Result};
use shardgate_topology::docs::{
    KeyspaceDoc, ProxyDoc, RoutingDoc, ShardDoc, ShardState, VindexDoc,
};
use shardgate_topology::snapshot::KeyPath;
use shardgate_topology::store::{Expect, Loaded, Store, StoreError, Write};
use shardgate_topology::KeyRange;
use std::io::Read;

fn err(e: StoreError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Reads a document from a file or `-` (stdin) and checks it is JSON.
fn read_doc(source: &str) -> Result<Vec<u8>> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?;
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{source} is not valid JSON"))?;
    Ok(serde_json::to_vec_pretty(&v)?)
}

fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The expectation matching what was read.
fn expect_of(base: &Loaded, key: &str) -> Expect {
    match base.get(key) {
        Some(e) => Expect::Revision(e.mod_revision),
        None => Expect::Absent,
    }
}

/// Commits `writes` validated as a whole topology; an invalid result is exit code 65.
pub(super) async fn commit(store: &Store, base: &Loaded, writes: Vec<Write>) -> Result<i64> {
    match store.commit_validated(base, &writes).await {
        Ok(rev) => Ok(rev),
        Err(StoreError::Invalid(problems)) => {
            let mut msg = String::from("refused: the topology would be invalid:");
            for p in problems.0 {
                msg.push_str(&format!("\n  {p}"));
            }
            Err(anyhow::Error::new(super::Invalid(msg)))
        }
        Err(e) => Err(err(e)),
    }
}

/// `--dry-run`: the change as a diff of the document, and whether the topology would be
/// valid after it. Nothing is written; an invalid result is an error (exit code 65).
fn preview(base: &Loaded, key: &str, new: Option<&[u8]>, writes: &[Write]) -> Result<()> {
    let before = base.get(key).map(|e| pretty(&e.value)).unwrap_or_default();
    let after = new.map(pretty).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&before, &after);
    print!(
        "{}",
        diff.unified_diff()
            .header(&format!("{key} (now)"), &format!("{key} (after)"))
    );
    match base.apply(writes).snapshot() {
        Ok(_) => {
            println!("valid: proxies would apply this change (dry run: nothing written)");
            Ok(())
        }
        Err(problems) => {
            let mut msg = String::from("refused: the topology would be invalid:");
            for p in problems.0 {
                msg.push_str(&format!("\n  {p}"));
            }
            Err(anyhow::Error::new(super::Invalid(msg)))
        }
    }
}

pub async fn get(cli: &Cli, key: Option<&str>) -> Result<()> {
    let store = store(cli).await?;
    let loaded = store.load().await.map_err(err)?;
    match key {
        Some(k) => {
            let e = loaded
                .get(k)
                .with_context(|| format!("{}{k} does not exist", store.prefix()))?;
            println!("{}", pretty(&e.value));
            eprintln!(
                "(mod_revision {}, read at revision {})",
                e.mod_revision, loaded.revision
            );
        }
        None => {
            let mut all = serde_json::Map::new();
            for e in &loaded.entries {
                let v = serde_json::from_slice(&e.value).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&e.value).into())
                });
                all.insert(e.key.clone(), v);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::Value::Object(all))?
            );
            eprintln!(
                "({} keys under {}, revision {})",
                loaded.entries.len(),
                store.prefix(),
                loaded.revision
            );
        }
    }
    Ok(())
}

pub async fn put(
    cli: &Cli,
    key: &str,
    source: &str,
    expect_revision: Option<i64>,
    dry_run: bool,
) -> Result<()> {
    KeyPath::parse(key).map_err(|e| super::Invalid(format!("{key}: {e}")))?;
    let value = read_doc(source)?;
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let expect = match expect_revision {
        Some(0) => Expect::Absent,
        Some(r) => Expect::Revision(r),
        None => expect_of(&base, key),
    };
    let writes = vec![Write::Put {
        key: key.into(),
        value: value.clone(),
        expect,
    }];
    if dry_run {
        return preview(&base, key, Some(&value), &writes);
    }
    let rev = commit(&store, &base, writes).await?;
    println!("wrote {}{key} at revision {rev}", store.prefix());
    Ok(())
}

pub async fn delete(cli: &Cli, key: &str, yes: bool) -> Result<()> {
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let expect = expect_of(&base, key);
    if expect == Expect::Absent {
        bail!("{}{key} does not exist", store.prefix());
    }
    super::confirm(yes, &format!("delete {}{key}", store.prefix()))?;
    let rev = commit(
        &store,
        &base,
        vec![Write::Delete {
            key: key.into(),
            expect,
        }],
    )
    .await?;
    println!("deleted {}{key} at revision {rev}", store.prefix());
    Ok(())
}

pub async fn edit(cli: &Cli, key: &str, dry_run: bool) -> Result<()> {
    KeyPath::parse(key).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let before = base
        .get(key)
        .map(|e| pretty(&e.value))
        .unwrap_or_else(|| "{}".into());
    let path = std::env::temp_dir().join(format!(
        "shardctl-{}-{}.json",
        std::process::id(),
        key.replace('/', "_")
    ));
    std::fs::write(&path, format!("{before}\n"))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        bail!(
            "the editor exited with {status}; nothing written (your text is in {})",
            path.display()
        );
    }
    let after = std::fs::read_to_string(&path)?;
    if after.trim() == before.trim() {
        let _ = std::fs::remove_file(&path);
        println!("no change");
        return Ok(());
    }
    let value = read_doc(&path.display().to_string())?;
    let expect = expect_of(&base, key);
    let writes = vec![Write::Put {
        key: key.into(),
        value: value.clone(),
        expect,
    }];
    if dry_run {
        let r = preview(&base, key, Some(&value), &writes);
        println!("(your text is in {})", path.display());
        return r;
    }
    match commit(&store, &base, writes).await {
        Ok(rev) => {
            let _ = std::fs::remove_file(&path);
            println!("wrote {}{key} at revision {rev}", store.prefix());
            Ok(())
        }
        Err(e) => bail!("{e:#}\n(your text is kept in {})", path.display()),
    }
}

pub async fn validate(cli: &Cli, json: bool) -> Result<()> {
    let store = store(cli).await?;
    let loaded = store.load().await.map_err(err)?;
    let result = loaded.snapshot();
    if json {
        let doc = match &result {
            Ok(s) => serde_json::json!({
                "valid": true, "revision": loaded.revision, "keyspaces": s.keyspaces.len(),
                "shards": s.keyspaces.values().map(|k| k.shards.len()).sum::<usize>(),
                "problems": [],
            }),
            Err(problems) => serde_json::json!({
                "valid": false, "revision": loaded.revision,
                "problems": problems.0.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            }),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    match result {
        Ok(s) => {
            if !json {
                println!(
                    "valid: {} keyspaces, {} shards, revision {}",
                    s.keyspaces.len(),
                    s.keyspaces.values().map(|k| k.shards.len()).sum::<usize>(),
                    loaded.revision
                );
            }
            Ok(())
        }
        Err(problems) => {
            if !json {
                for p in &problems.0 {
                    println!("{p}");
                }
            }
            Err(anyhow::Error::new(super::Invalid(format!(
                "{} problem(s): proxies will keep serving their last good topology",
                problems.0.len()
            ))))
        }
    }
}

pub async fn watch(cli: &Cli) -> Result<()> {
    let store = store(cli).await?;
    let loaded = store.load().await.map_err(err)?;
    println!(
        "watching {} from revision {}",
        store.prefix(),
        loaded.revision + 1
    );
    let mut stream = store.watch(loaded.revision + 1).await.map_err(err)?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() {
            bail!(
                "watch canceled: {} (compacted at {})",
                resp.cancel_reason(),
                resp.compact_revision()
            );
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = store.relative_key(kv.key());
            let kind = match ev.event_type() {
                shardgate_topology::store::EventType::Put => "put",
                shardgate_topology::store::EventType::Delete => "delete",
            };
            println!("revision {} {kind} {key}", kv.mod_revision());
        }
        let now = store.load().await.map_err(err)?;
        match now.snapshot() {
            Ok(_) => println!("  topology at revision {} is valid", now.revision),
            Err(p) => println!("  topology at revision {} is INVALID: {p}", now.revision),
        }
    }
    Ok(())
}

pub async fn keyspace_create(cli: &Cli, name: &str, sharded: bool, vindex: &str) -> Result<()> {
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let key = format!("keyspaces/{name}");
    if base.get(&key).is_some() {
        bail!("keyspace {name} already exists");
    }
    let mut doc = KeyspaceDoc {
        sharded,
        ..KeyspaceDoc::default()
    };
    if sharded {
        doc.vindexes.insert(
            vindex.to_string(),
            VindexDoc {
                vindex_type: vindex.to_string(),
                ..VindexDoc::default()
            },
        );
        doc.default_vindex = Some(vindex.to_string());
    }
    let value = serde_json::to_vec_pretty(&doc)?;
    let rev = commit(
        &store,
        &base,
        vec![Write::Put {
            key: key.clone(),
            value,
            expect: Expect::Absent,
        }],
    )
    .await?;
    println!(
        "created keyspace {name} ({}) at revision {rev}",
        if sharded { "sharded" } else { "unsharded" }
    );
    Ok(())
}

/// `SHARD=HOST:PORT[/DATABASE]`.
fn parse_shard_spec(keyspace: &str, spec: &str) -> Result<(String, ShardDoc)> {
    let (shard, rest) = spec.split_once('=').with_context(|| {
        format!("{spec:?}: expected SHARD=HOST:PORT[/DATABASE], e.g. -80=127.0.0.1:3307/customer")
    })?;
    KeyRange::parse(shard).map_err(|e| anyhow::anyhow!(e))?;
    let (primary, database) = match rest.split_once('/') {
        Some((p, d)) => (p.to_string(), d.to_string()),
        None => (rest.to_string(), keyspace.to_string()),
    };
    Ok((
        shard.to_string(),
        ShardDoc {
            primary,
            database,
            state: ShardState::Ready,
        },
    ))
}

pub async fn shard_add(cli: &Cli, keyspace: &str, specs: &[String], serving: bool) -> Result<()> {
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let mut writes = Vec::new();
    let mut names = Vec::new();
    for spec in specs {
        let (shard, doc) = parse_shard_spec(keyspace, spec)?;
        let key = format!("keyspaces/{keyspace}/shards/{shard}");
        if base.get(&key).is_some() {
            bail!("shard {keyspace}/{shard} already exists");
        }
        writes.push(Write::Put {
            key,
            value: serde_json::to_vec_pretty(&doc)?,
            expect: Expect::Absent,
        });
        names.push(shard);
    }
    let rkey = format!("keyspaces/{keyspace}/routing");
    if serving {
        if let Some(e) = base.get(&rkey) {
            let mut routing: RoutingDoc = serde_json::from_slice(&e.value)?;
            routing.serving.extend(names.iter().cloned());
            routing.version += 1;
            writes.push(Write::Put {
                key: rkey,
                value: serde_json::to_vec_pretty(&routing)?,
                expect: Expect::Revision(e.mod_revision),
            });
        }
    }
    let rev = commit(&store, &base, writes).await?;
    println!("added {} to {keyspace} at revision {rev}", names.join(", "));
    Ok(())
}

pub async fn vschema_apply(cli: &Cli, keyspace: &str, source: &str) -> Result<()> {
    let value = read_doc(source)?;
    serde_json::from_slice::<KeyspaceDoc>(&value)
        .with_context(|| format!("{source} is not a VSchema document"))?;
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let key = format!("keyspaces/{keyspace}");
    let expect = expect_of(&base, &key);
    let rev = commit(&store, &base, vec![Write::Put { key, value, expect }]).await?;
    println!("applied the VSchema of {keyspace} at revision {rev}");
    Ok(())
}

pub async fn routing_set(cli: &Cli, keyspace: &str, serving: &[String]) -> Result<()> {
    let store = store(cli).await?;
    let base = store.load().await.map_err(err)?;
    let key = format!("keyspaces/{keyspace}/routing");
    let (mut routing, expect) = match base.get(&key) {
        Some(e) => (
            serde_json::from_slice::<RoutingDoc>(&e.value)?,
            Expect::Revision(e.mod_revision),
        ),
        None => (RoutingDoc::default(), Expect::Absent),
    };
    routing.serving = serving.to_vec();
    routing.version += 1;
    let value = serde_json::to_vec_pretty(&routing)?;
    let rev = commit(&store, &base, vec![Write::Put { key, value, expect }]).await?;
    println!(
        "{keyspace} now serves {} (routing version {}, revision {rev})",
        serving.join(", "),
        routing.version
    );
    Ok(())
}

pub async fn proxies(cli: &Cli, json: bool) -> Result<()> {
    let store = store(cli).await?;
    let loaded = store.load().await.map_err(err)?;
    let topo_rev = loaded
        .entries
        .iter()
        .filter(|e| e.key.starts_with("keyspaces/"))
        .map(|e| e.mod_revision)
        .max()
        .unwrap_or(0);
    let docs: Vec<ProxyDoc> = loaded
        .entries
        .iter()
        .filter(|e| e.key.starts_with("proxies/"))
        .filter_map(|e| serde_json::from_slice(&e.value).ok())
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(());
    }
    if docs.is_empty() {
        println!("no live proxies");
        return Ok(());
    }
    println!(
        "{:<20} {:<22} {:<22} {:>9}  {:<8} routing",
        "id", "mysql", "http", "applied", "state"
    );
    for d in docs {
        let state = if d.topology_error.is_some() {
            "REJECTED"
        } else if d.applied_revision >= topo_rev {
            "current"
        } else {
            "behind"
        };
        let routing: Vec<String> = d
            .routing_versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<20} {:<22} {:<22} {:>9}  {:<8} {}",
            d.id,
            d.mysql_addr,
            d.http_addr,
            d.applied_revision,
            state,
            routing.join(" ")
        );
    }
    Ok(())
}
