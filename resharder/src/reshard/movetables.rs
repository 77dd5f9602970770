//! MoveTables: tables move from one keyspace (typically the unsharded one an application
//! starts with) into another (typically sharded), online, with the machinery of a
//! reshard: change capture, chunked copy, verify, a cutover with writes held, rollback.
//!
//! What differs is where clients are sent. Routing rules in etcd (`routing_rules`,
//! followed by every proxy) name each moved table:
//! - from `start` until cutover, `target.t -> source.t`: the half-filled copy is never
//!   read, whatever a client names;
//! - from cutover (and after `complete`), `source.t -> target.t`: clients that still say
//!   `source.t`, or `USE source`, reach the table where it lives;
//! - a rollback turns them back; an abort removes them.
//!
//! Both keyspaces carry the workflow in their routing documents while it runs (DDL on
//! them is refused, proxies count their writes for the drain), and the write buffer of a
//! cutover holds writes to every shard of the side that serves until then.

use super::db::{self, Credentials, ShardConn};
use super::setup;
use super::workflow::{now_ms, Options, Phase, Stored, WorkflowDoc};
use super::{routing, Controller};
use anyhow::{anyhow, bail, Result};
use shardgate_topology::docs::{
    ColumnVindexDoc, KeyspaceDoc, RoutingRuleDoc, RoutingRulesDoc, TableDoc, VindexDoc,
};
use shardgate_topology::store::{Expect, Write};
use shardgate_topology::{Keyspace, Snapshot, Store};
use std::time::{Duration, Instant};

/// What `movetables start` asks for.
pub struct Request {
    pub name: String,
    pub from_keyspace: String,
    pub to_keyspace: String,
    pub tables: Vec<String>,
    pub options: Options,
    pub goal: Phase,
}

/// The refusals of a request that the topology alone decides (no database read).
pub fn check_keyspaces<'a>(
    snapshot: &'a Snapshot,
    req: &Request,
) -> Result<(&'a Keyspace, &'a Keyspace)> {
    let get = |name: &str| {
        snapshot
            .keyspace(name)
            .map(|k| &**k)
            .ok_or_else(|| anyhow!("no keyspace {name:?}"))
    };
    let (from, to) = (get(&req.from_keyspace)?, get(&req.to_keyspace)?);
    if from.name == to.name {
        bail!("--from and --to name the same keyspace; to split shards use `shardctl reshard`");
    }
    for ks in [from, to] {
        if let Some(w) = &ks.routing.workflow {
            bail!(
                "keyspace {} already has workflow {w:?}; finish or abort it first",
                ks.name
            );
        }
        if ks.serving.is_empty() {
            bail!("keyspace {} has no serving shards", ks.name);
        }
    }
    if req.tables.is_empty() {
        bail!("--tables names no table");
    }
    for t in &req.tables {
        if let Some(k) = snapshot.routed(&from.name, t) {
            bail!("table {}.{t} is already routed to keyspace {k}", from.name);
        }
        if let Some(k) = snapshot.routed(&to.name, t) {
            if k != from.name {
                bail!("table {}.{t} is routed to keyspace {k}", to.name);
            }
        }
        if let Some(td) = from.table(t) {
            if !matches!(
                td.kind,
                shardgate_topology::TableKind::Unsharded | shardgate_topology::TableKind::Sharded
            ) {
                bail!(
                    "table {}.{t} is a sequence or reference table; MoveTables moves data tables",
                    from.name
                );
            }
        }
    }
    Ok((from, to))
}

/// Checks a request against the topology and the source tables, and writes the workflow
/// document (phase `Created`).
pub async fn create(store: &Store, req: &Request, creds: &Credentials) -> Result<Stored> {
    let doc = check(store, req, creds).await?;
    setup::write_new(store, &doc).await
}

/// Makes every check of [`create`] and returns the document it would write (for
/// `--dry-run`, which writes nothing).
pub async fn check(store: &Store, req: &Request, creds: &Credentials) -> Result<WorkflowDoc> {
    let snapshot = super::snapshot(store).await?;
    if let Some(old) = snapshot.workflows.get(&req.name) {
        let phase = old.get("phase").and_then(|p| p.as_str()).unwrap_or("");
        if phase != "complete" && phase != "aborted" {
            bail!("a workflow named {:?} exists (phase {phase})", req.name);
        }
    }
    let (from, to) = check_keyspaces(&snapshot, req)?;
    let mut sources = Vec::new();
    for s in &from.serving {
        sources.push(ShardConn::open(s, creds, false).await?);
    }
    let present = db::tables(&mut sources[0]).await?;
    let (all, mut problems) = setup::inspect_tables(from, &mut sources).await?;
    let mut tables = std::collections::BTreeMap::new();
    for t in &req.tables {
        if !present.contains(t) {
            problems.push(format!("{t}: no such table in keyspace {}", from.name));
            continue;
        }
        // A table refused by inspect_tables has its reason among `problems`.
        if let Some(p) = all.get(t) {
            let mut p = p.clone();
            p.kind = target_kind(to, t).into();
            tables.insert(t.clone(), p);
        }
    }
    // Only the requested tables' refusals count.
    problems.retain(|p| req.tables.iter().any(|t| p.starts_with(&format!("{t}:"))));
    if !problems.is_empty() {
        bail!("these tables cannot be moved:\n  {}", problems.join("\n  "));
    }
    Ok(WorkflowDoc::new(
        &req.name,
        &from.name,
        Some(&to.name),
        from.serving.iter().map(|s| s.name.clone()).collect(),
        to.serving.iter().map(|s| s.name.clone()).collect(),
        req.goal,
        req.options.clone(),
        tables,
    ))
}

/// How the table will be distributed in the target keyspace.
fn target_kind(to: &Keyspace, table: &str) -> &'static str {
    match to.table(table).map(|t| &t.kind) {
        Some(shardgate_topology::TableKind::Reference) => "reference",
        _ if to.sharded => "sharded",
        _ => "unsharded",
    }
}

/// The target keyspace's VSchema with every moved table it does not declare yet, sharded
/// by the keyspace's default vindex (else `hash` for integer keys, `xxhash` for others)
/// on the first primary-key column. Returns the document and the tables added.
fn vschema_with_tables(c: &Controller, mut doc: KeyspaceDoc) -> (KeyspaceDoc, Vec<String>) {
    let mut added = Vec::new();
    if !doc.sharded {
        return (doc, added);
    }
    for meta in &c.tables {
        if doc.tables.contains_key(&meta.name) {
            continue;
        }
        let Some(pk) = meta.primary_key.first() else {
            continue;
        };
        let integer = pk.definition.to_ascii_lowercase().contains("int");
        let vindex = match &doc.default_vindex {
            Some(v) => v.clone(),
            None => {
                let kind = if integer { "hash" } else { "xxhash" };
                let existing = doc
                    .vindexes
                    .iter()
                    .find(|(_, v)| v.vindex_type == kind)
                    .map(|(n, _)| n.clone());
                existing.unwrap_or_else(|| {
                    doc.vindexes.insert(
                        kind.to_string(),
                        VindexDoc {
                            vindex_type: kind.into(),
                            ..VindexDoc::default()
                        },
                    );
                    kind.to_string()
                })
            }
        };
        doc.tables.insert(
            meta.name.clone(),
            TableDoc {
                column_vindexes: vec![ColumnVindexDoc {
                    column: pk.name.clone(),
                    name: vindex,
                    ..ColumnVindexDoc::default()
                }],
                ..TableDoc::default()
            },
        );
        added.push(meta.name.clone());
    }
    (doc, added)
}

/// Which way the workflow's tables are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// From the source keyspace (before cutover, after rollback): `target.t -> source.t`.
    Source,
    /// From the target keyspace (after cutover): `source.t -> target.t`.
    Target,
    /// No rule (after an abort: each keyspace's own tables as they are).
    Neither,
}

/// The rules document with the workflow's tables routed as `serve` says, every other
/// rule kept. Pure, so each direction is tested.
pub fn rules_for(
    mut rules: RoutingRulesDoc,
    source: &str,
    target: &str,
    tables: &[String],
    serve: Serve,
) -> RoutingRulesDoc {
    let ours = |name: &str| {
        tables
            .iter()
            .any(|t| name == format!("{source}.{t}") || name == format!("{target}.{t}"))
    };
    rules.rules.retain(|r| !ours(&r.from_table));
    for t in tables {
        let (from, to) = match serve {
            Serve::Source => (target, source),
            Serve::Target => (source, target),
            Serve::Neither => continue,
        };
        rules.rules.push(RoutingRuleDoc {
            from_table: format!("{from}.{t}"),
            to_tables: vec![format!("{to}.{t}")],
        });
    }
    rules
}

/// The etcd write that routes the workflow's tables as `serve` says (compare-and-swap
/// on the rules document).
pub async fn rules_write(store: &Store, doc: &WorkflowDoc, serve: Serve) -> Result<Write> {
    let current = store
        .get("routing_rules")
        .await
        .map_err(anyhow::Error::new)?;
    let (rules, expect) = match &current {
        Some(e) => (
            serde_json::from_slice::<RoutingRulesDoc>(&e.value)
                .map_err(|err| anyhow!("routing_rules cannot be read: {err}"))?,
            Expect::Revision(e.mod_revision),
        ),
        None => (RoutingRulesDoc::default(), Expect::Absent),
    };
    let tables: Vec<String> = doc.tables.keys().cloned().collect();
    let mut rules = rules_for(rules, &doc.keyspace, doc.target(), &tables, serve);
    rules.version += 1;
    Ok(Write::Put {
        key: "routing_rules".into(),
        value: serde_json::to_vec_pretty(&rules)?,
        expect,
    })
}

/// `setup` for MoveTables, after the schema and change capture are on the targets: the
/// target keyspace learns the tables (VSchema) with rules sending them to the source, and
/// both keyspaces carry the workflow; every proxy acknowledges both.
pub async fn announce(c: &mut Controller) -> Result<()> {
    let target = c.wf.doc.target().to_string();
    let name = c.wf.doc.name.clone();
    let ks_key = format!("keyspaces/{target}");
    let entry = c
        .store
        .get(&ks_key)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| anyhow!("{ks_key} is missing"))?;
    let ks_doc: KeyspaceDoc = serde_json::from_slice(&entry.value)?;
    let (mut ks_doc, added) = vschema_with_tables(c, ks_doc);
    // The workflow document records what it added, in the same transaction.
    let mut doc = c.wf.doc.clone();
    for t in &added {
        // A resumed setup finds the tables it added last time already declared.
        if !doc.vschema_added.contains(t) {
            doc.vschema_added.push(t.clone());
        }
    }
    // Tables the source numbered by itself get a sequence there (see `sequence.rs`).
    let mut writes = Vec::new();
    let numbered: Vec<(String, String)> = c
        .tables
        .iter()
        .filter(|m| added.contains(&m.name))
        .filter_map(|m| {
            super::sequence::wanted(m, c.keyspace.sharded).map(|col| (m.name.clone(), col))
        })
        .collect();
    if !numbered.is_empty() {
        let source_key = format!("keyspaces/{}", c.wf.doc.keyspace);
        let source_entry = c
            .store
            .get(&source_key)
            .await
            .map_err(anyhow::Error::new)?
            .ok_or_else(|| anyhow!("{source_key} is missing"))?;
        let mut source_doc: KeyspaceDoc = serde_json::from_slice(&source_entry.value)?;
        for (t, col) in &numbered {
            super::sequence::create(&mut c.sources[0], t).await?;
            super::sequence::wire(&mut source_doc, &c.wf.doc.keyspace, &mut ks_doc, t, col);
            if !doc.sequences_added.contains(t) {
                doc.sequences_added.push(t.clone());
            }
        }
        writes.push(Write::Put {
            key: source_key,
            value: serde_json::to_vec_pretty(&source_doc)?,
            expect: Expect::Revision(source_entry.mod_revision),
        });
    }
    doc.updated_ms = now_ms();
    writes.extend([
        Write::Put {
            key: ks_key,
            value: serde_json::to_vec_pretty(&ks_doc)?,
            expect: Expect::Revision(entry.mod_revision),
        },
        rules_write(&c.store, &doc, Serve::Source).await?,
        Write::Put {
            key: super::workflow::key(&doc.name),
            value: serde_json::to_vec_pretty(&doc)?,
            expect: Expect::Revision(c.wf.revision),
        },
    ]);
    let n = name.clone();
    let (target_version, revision) = routing::update(&c.store, &target, writes, move |r| {
        r.workflow = Some(n.clone())
    })
    .await?;
    c.wf.doc = doc;
    c.wf.revision = revision;
    let source = c.wf.doc.keyspace.clone();
    let (source_version, _) = routing::update(&c.store, &source, vec![], |r| {
        r.workflow = Some(name.clone())
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    routing::wait_acks(&c.store, &target, target_version, deadline).await?;
    routing::wait_acks(&c.store, &source, source_version, deadline).await?;
    Ok(())
}

/// The writes that end a MoveTables in `phase` besides the source keyspace's routing:
/// the rules (kept pointing at the target after `complete`, removed after an abort) and,
/// after an abort, the target VSchema without the tables `start` added.
pub async fn end_writes(c: &Controller, phase: Phase) -> Result<Vec<Write>> {
    let serve = if phase == Phase::Complete {
        Serve::Target
    } else {
        Serve::Neither
    };
    let mut writes = vec![rules_write(&c.store, &c.wf.doc, serve).await?];
    if phase == Phase::Aborted {
        let doc = &c.wf.doc;
        let sequences: Vec<String> = doc
            .sequences_added
            .iter()
            .map(|t| super::sequence::name(t))
            .collect();
        for (ks, tables) in [
            (doc.target(), &doc.vschema_added),
            (&doc.keyspace, &sequences),
        ] {
            writes.extend(without_tables(&c.store, ks, tables).await?);
        }
    }
    Ok(writes)
}

/// The write of keyspace `ks`'s VSchema without `tables` (none when there is nothing to
/// remove or the document is gone).
async fn without_tables(store: &Store, ks: &str, tables: &[String]) -> Result<Option<Write>> {
    if tables.is_empty() {
        return Ok(None);
    }
    let key = format!("keyspaces/{ks}");
    let Some(e) = store.get(&key).await.map_err(anyhow::Error::new)? else {
        return Ok(None);
    };
    let mut doc: KeyspaceDoc = serde_json::from_slice(&e.value)?;
    for t in tables {
        doc.tables.remove(t);
    }
    Ok(Some(Write::Put {
        key,
        value: serde_json::to_vec_pretty(&doc)?,
        expect: Expect::Revision(e.mod_revision),
    }))
}

/// After the end: the target keyspace no longer carries the workflow.
pub async fn release_target(c: &Controller) -> Result<()> {
    let target = c.wf.doc.target().to_string();
    let name = c.wf.doc.name.clone();
    let (version, _) = routing::update(&c.store, &target, vec![], |r| {
        if r.workflow.as_deref() == Some(&name) {
            r.workflow = None;
            r.write_buffer = None;
        }
    })
    .await?;
    routing::wait_acks(
        &c.store,
        &target,
        version,
        Instant::now() + Duration::from_secs(30),
    )
    .await
}

/// `complete` of a MoveTables: the source copies are dropped (their guard made them
/// read-only since the cutover; every proxy reads the target now).
pub async fn drop_source_tables(c: &mut Controller) -> Result<()> {
    let names: Vec<String> = c.tables.iter().map(|t| t.name.clone()).collect();
    for s in c.sources.iter_mut() {
        for t in &names {
            s.run(&format!("DROP TABLE IF EXISTS {}", db::ident(t)))
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &str, to: &str) -> RoutingRuleDoc {
        RoutingRuleDoc {
            from_table: from.into(),
            to_tables: vec![to.into()],
        }
    }

    #[test]
    fn rules_point_each_way_and_keep_the_others() {
        let other = rule("commerce.x", "lookup.x");
        let start = RoutingRulesDoc {
            rules: vec![other.clone()],
            ..RoutingRulesDoc::default()
        };
        let tables = vec!["orders".to_string()];
        let before = rules_for(start, "commerce", "customer", &tables, Serve::Source);
        assert_eq!(
            before.rules,
            vec![other.clone(), rule("customer.orders", "commerce.orders")]
        );
        let after = rules_for(before, "commerce", "customer", &tables, Serve::Target);
        assert_eq!(
            after.rules,
            vec![other.clone(), rule("commerce.orders", "customer.orders")]
        );
        let aborted = rules_for(after, "commerce", "customer", &tables, Serve::Neither);
        assert_eq!(aborted.rules, vec![other]);
    }
}
