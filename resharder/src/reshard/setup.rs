//! Starting a workflow: the checks, the workflow document, the target schema, change
//! capture, and the routing announcement every proxy must acknowledge.

use super::db::{self, Credentials, ShardConn};
use super::workflow::{now_ms, Options, Phase, Stored, TableProgress, WorkflowDoc};
use super::{capture, routing, shards_named, Controller};
use anyhow::{anyhow, bail, Result};
use shardgate_topology::keyrange::check_partition;
use shardgate_topology::snapshot::union_range;
use shardgate_topology::store::{Expect, Write};
use shardgate_topology::{KeyRange, Store, TableKind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What `reshard start` asks for.
pub struct Request {
    pub name: String,
    pub keyspace: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub options: Options,
    pub goal: Phase,
}

/// Checks a request against the topology and the source schema, and writes the workflow
/// document (phase `Created`). Every refusal names what is wrong.
pub async fn create(store: &Store, req: &Request, creds: &Credentials) -> Result<Stored> {
    let doc = check(store, req, creds).await?;
    write_new(store, &doc).await
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
    let ks = snapshot
        .keyspace(&req.keyspace)
        .ok_or_else(|| anyhow!("no keyspace {:?}", req.keyspace))?;
    let to: Vec<(String, KeyRange)> = shards_named(ks, &req.to)?
        .into_iter()
        .map(|s| (s.name, s.range))
        .collect();
    let from = check_shards(ks, &req.from, &to)?;
    let mut sources = Vec::with_capacity(from.len());
    for s in &from {
        sources.push(ShardConn::open(s, creds, false).await?);
    }
    let (tables, problems) = inspect_tables(ks, &mut sources).await?;
    if !problems.is_empty() {
        bail!(
            "these tables cannot be resharded:\n  {}",
            problems.join("\n  ")
        );
    }
    if tables.is_empty() {
        bail!("the source shards hold no tables");
    }
    Ok(WorkflowDoc::new(
        &req.name,
        &req.keyspace,
        None,
        req.from.clone(),
        req.to.clone(),
        req.goal,
        req.options.clone(),
        tables,
    ))
}

/// Writes a new workflow document (replacing one that ended under the same name).
pub async fn write_new(store: &Store, doc: &WorkflowDoc) -> Result<Stored> {
    let key = super::workflow::key(&doc.name);
    let existing = store.get(&key).await.map_err(anyhow::Error::new)?;
    let expect = match &existing {
        Some(e) => Expect::Revision(e.mod_revision),
        None => Expect::Absent,
    };
    let rev = store
        .commit(&[Write::Put {
            key,
            value: serde_json::to_vec_pretty(doc)?,
            expect,
        }])
        .await
        .map_err(anyhow::Error::new)?;
    Ok(Stored {
        doc: doc.clone(),
        revision: rev,
    })
}

/// The request's source and target shards, checked against the topology: a sharded
/// keyspace without a workflow, serving sources forming one contiguous range, new targets
/// partitioning it.
pub fn check_shards(
    ks: &shardgate_topology::Keyspace,
    from_names: &[String],
    to: &[(String, KeyRange)],
) -> Result<Vec<shardgate_topology::Shard>> {
    let to_names: Vec<String> = to.iter().map(|(n, _)| n.clone()).collect();
    if !ks.sharded {
        bail!(
            "keyspace {} is unsharded; only sharded keyspaces can be resharded",
            ks.name
        );
    }
    if let Some(w) = &ks.routing.workflow {
        bail!(
            "keyspace {} already has workflow {w:?}; finish or abort it first",
            ks.name
        );
    }
    if from_names.is_empty() || to_names.is_empty() {
        bail!("--from and --to each need at least one shard");
    }
    let from = shards_named(ks, from_names)?;
    for s in &from {
        if !ks.routing.serving.contains(&s.name) {
            bail!("source shard {} is not serving", s.name);
        }
    }
    for name in &to_names {
        if ks.routing.serving.contains(name) {
            bail!("target shard {name} is already serving");
        }
        if from_names.contains(name) {
            bail!("shard {name} is both a source and a target");
        }
    }
    let from_ranges: Vec<KeyRange> = from.iter().map(|s| s.range.clone()).collect();
    let to_ranges: Vec<KeyRange> = to.iter().map(|(_, r)| r.clone()).collect();
    let whole = union_range(&from_ranges).ok_or_else(|| {
        anyhow!(
            "the source shards {:?} are not one contiguous range",
            from_names
        )
    })?;
    check_partition(&whole, &to_ranges).map_err(|e| {
        anyhow!(
            "the target shards {:?} do not partition the source range {}: {e}",
            to_names,
            whole.name()
        )
    })?;
    Ok(from)
}

/// The tables of the sources (as the first has them) with their row estimates, and what
/// refuses each table that cannot be moved (not in the VSchema, no primary key, foreign
/// keys, triggers of the application).
pub async fn inspect_tables(
    ks: &shardgate_topology::Keyspace,
    sources: &mut [ShardConn],
) -> Result<(BTreeMap<String, TableProgress>, Vec<String>)> {
    let mut tables = BTreeMap::new();
    let mut problems = Vec::new();
    for t in db::tables(&mut sources[0]).await? {
        let meta = db::table_meta(&mut sources[0], &t).await?;
        let kind = match ks.table(&t).map(|x| &x.kind) {
            Some(TableKind::Sharded) => "sharded",
            Some(TableKind::Reference) => "reference",
            Some(TableKind::Unsharded) | None if !ks.sharded => "unsharded",
            _ => {
                problems.push(format!("{t}: not in the keyspace's VSchema"));
                continue;
            }
        };
        if meta.primary_key.is_empty() {
            problems.push(format!("{t}: no primary key"));
            continue;
        }
        problems.extend(db::unsupported_links(&mut sources[0], &t).await?);
        let mut estimate = 0;
        for c in sources.iter_mut() {
            estimate += db::row_estimate(c, &t).await?;
        }
        tables.insert(
            t.clone(),
            TableProgress {
                kind: kind.into(),
                primary_key: meta.primary_key.iter().map(|c| c.name.clone()).collect(),
                rows_estimate: estimate,
                ..TableProgress::default()
            },
        );
    }
    Ok((tables, problems))
}

/// Copies the schema, installs change capture on the sources, and announces the workflow
/// to every proxy (dual-write in the routing document), waiting for each to acknowledge.
pub async fn prepare(c: &mut Controller) -> Result<()> {
    super::require(c, &[Phase::Created], "setup")?;
    for t in 0..c.tables.len() {
        let name = c.tables[t].name.clone();
        let rows = c.sources[0]
            .exec(&format!("SHOW CREATE TABLE {}", db::ident(&name)), vec![])
            .await?;
        let ddl = rows
            .first()
            .map(|r| db::text(r, 1))
            .ok_or_else(|| anyhow!("SHOW CREATE TABLE {name} returned nothing"))?;
        let ddl = ddl.replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1);
        for tc in c.targets.iter_mut() {
            tc.run(&ddl).await?;
            let any = tc
                .exec(
                    &format!("SELECT 1 FROM {} LIMIT 1", db::ident(&name)),
                    vec![],
                )
                .await?;
            if !any.is_empty() {
                bail!(
                    "target shard {} already holds rows in table {name}; a target must start empty (abort this workflow, empty it, and start again)",
                    tc.shard
                );
            }
        }
    }
    // The targets get theirs when the copy is done (`backfill::run`): until cutover only
    // the controller writes there, and its writes skip the triggers, which would still
    // cost an invocation per copied row.
    for t in 0..c.tables.len() {
        let meta = c.tables[t].clone();
        for sc in c.sources.iter_mut() {
            capture::install(sc, &meta).await?;
        }
    }
    if c.wf.doc.moves_tables() {
        super::movetables::announce(c).await?;
        c.wf.doc.copy_started_ms = now_ms();
        c.set_phase(
            Phase::Copying,
            "change capture on; the tables' routing rules and the workflow acknowledged by every proxy",
        )
        .await?;
        return c.reconnect().await;
    }
    let (name, from, to) = (
        c.wf.doc.name.clone(),
        c.wf.doc.from.clone(),
        c.wf.doc.to.clone(),
    );
    let (version, _) = routing::update(&c.store, &c.wf.doc.keyspace, vec![], |r| {
        r.workflow = Some(name.clone());
        r.dual_write = vec![shardgate_topology::docs::DualWriteDoc {
            from: from.clone(),
            to: to.clone(),
        }];
    })
    .await?;
    routing::wait_acks(
        &c.store,
        &c.wf.doc.keyspace,
        version,
        Instant::now() + Duration::from_secs(30),
    )
    .await?;
    c.wf.doc.copy_started_ms = now_ms();
    c.set_phase(
        Phase::Copying,
        format!("change capture on; routing version {version} acknowledged by every proxy"),
    )
    .await
}
