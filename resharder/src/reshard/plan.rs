//! `shardctl reshard plan` / `movetables plan`: what a workflow would move and cost,
//! before anything changes.
//!
//! Read-only: the checks `start` makes (so every refusal shows up here first, with its
//! reason), each table's rows and bytes on the sources (information_schema), a copy rate
//! measured on a sample (the copy's own read, `LOCK IN SHARE MODE` in primary-key order,
//! and its own write, multi-row REPLACE, into a temporary table on the source server, so
//! the targets need not exist yet), and from those the predicted duration and finish
//! time of the backfill (one stream, as the controller copies), the disk each target needs,
//! and what change capture costs the application's writes.

use super::db::{self, ShardConn, TableMeta};
use super::setup;
use anyhow::Result;
use serde::Serialize;
use shardgate_topology::{KeyRange, Keyspace};
use std::time::Instant;

/// Rows read and written by the sample.
const SAMPLE_ROWS: u64 = 5_000;

/// One table of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub name: String,
    /// `sharded` or `reference` (copied whole to every target).
    pub kind: String,
    pub rows: u64,
    /// Data and index bytes on the sources.
    pub bytes: u64,
}

/// One target shard's share.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub shard: String,
    /// Fraction of the moved key range it receives.
    pub share: f64,
    /// Bytes it needs (its share of the sharded tables, all of the reference tables).
    pub bytes_needed: u64,
}

/// The whole plan (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub keyspace: String,
    /// MoveTables: the keyspace the tables move into (`to` names its shards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_keyspace: Option<String>,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub tables: Vec<TablePlan>,
    /// Why the workflow would be refused (empty: it can start).
    pub refusals: Vec<String>,
    pub rows_total: u64,
    pub bytes_total: u64,
    /// Rows per second of the sample (read + write, one stream).
    pub sample_rows: u64,
    pub rows_per_s: f64,
    pub predicted_seconds: f64,
    /// Unix ms when the copy would finish if started now.
    pub predicted_finish_ms: u64,
    pub targets: Vec<TargetPlan>,
    /// What change capture adds to each write of the application while the workflow runs.
    pub capture_cost: String,
}

/// The fraction of the key space a range covers (by its first 8 bytes).
fn width(r: &KeyRange) -> f64 {
    let pos = |b: &[u8], unbounded: f64| -> f64 {
        if b.is_empty() {
            return unbounded;
        }
        let mut v = [0u8; 8];
        for (i, x) in b.iter().take(8).enumerate() {
            v[i] = *x;
        }
        u64::from_be_bytes(v) as f64 / 2f64.powi(64)
    };
    (pos(r.end(), 1.0) - pos(r.start(), 0.0)).max(0.0)
}

/// Each target's share of the moved range and the bytes it needs.
pub fn target_shares(
    to: &[(String, KeyRange)],
    sharded_bytes: u64,
    reference_bytes: u64,
) -> Vec<TargetPlan> {
    let total: f64 = to
        .iter()
        .map(|(_, r)| width(r))
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    to.iter()
        .map(|(name, r)| {
            let share = width(r) / total;
            TargetPlan {
                shard: name.clone(),
                share,
                bytes_needed: (sharded_bytes as f64 * share) as u64 + reference_bytes,
            }
        })
        .collect()
}

/// The predicted copy time in seconds for `rows` at `rate` rows/s.
pub fn predict_seconds(rows: u64, rate: f64) -> f64 {
    if rows == 0 {
        0.0
    } else if rate <= 0.0 {
        f64::INFINITY
    } else {
        rows as f64 / rate
    }
}

/// Makes the plan for moving `from` to `to` of `ks` (nothing is changed).
pub async fn make(
    ks: &Keyspace,
    from_names: &[String],
    to_names: &[String],
    creds: &db::Credentials,
) -> Result<Plan> {
    let mut refusals = Vec::new();
    // Targets need not be registered yet (`start` registers them): their names are ranges.
    let mut to = Vec::new();
    for name in to_names {
        match ks.shards.get(name) {
            Some(s) => to.push((name.clone(), s.range.clone())),
            None => match KeyRange::parse(name) {
                Ok(r) => to.push((name.clone(), r)),
                Err(e) => refusals.push(format!("target {name}: {e}")),
            },
        }
    }
    let from = if refusals.is_empty() {
        match setup::check_shards(ks, from_names, &to) {
            Ok(v) => v,
            Err(e) => {
                refusals.push(format!("{e:#}"));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let mut plan = empty_plan(&ks.name, from_names.to_vec(), to_names.to_vec(), refusals);
    if from.is_empty() {
        return Ok(plan);
    }
    measure(&mut plan, ks, &from, &to, creds, None).await?;
    Ok(plan)
}

/// Makes the plan for `shardctl movetables plan` (nothing is changed): the tables of
/// `req` from their keyspace into the target keyspace's serving shards.
pub async fn make_move(
    snapshot: &shardgate_topology::Snapshot,
    req: &super::movetables::Request,
    creds: &db::Credentials,
) -> Result<Plan> {
    let mut plan = empty_plan(&req.from_keyspace, Vec::new(), Vec::new(), Vec::new());
    plan.target_keyspace = Some(req.to_keyspace.clone());
    let (from, to) = match super::movetables::check_keyspaces(snapshot, req) {
        Ok(v) => v,
        Err(e) => {
            plan.refusals.push(format!("{e:#}"));
            return Ok(plan);
        }
    };
    plan.from = from.serving.iter().map(|s| s.name.clone()).collect();
    plan.to = to.serving.iter().map(|s| s.name.clone()).collect();
    let ranges: Vec<(String, KeyRange)> = to
        .serving
        .iter()
        .map(|s| (s.name.clone(), s.range.clone()))
        .collect();
    let sources = from.serving.clone();
    measure(&mut plan, from, &sources, &ranges, creds, Some(&req.tables)).await?;
    Ok(plan)
}

fn empty_plan(keyspace: &str, from: Vec<String>, to: Vec<String>, refusals: Vec<String>) -> Plan {
    Plan {
        keyspace: keyspace.to_string(),
        target_keyspace: None,
        from,
        to,
        tables: Vec::new(),
        refusals,
        rows_total: 0,
        bytes_total: 0,
        sample_rows: 0,
        rows_per_s: 0.0,
        predicted_seconds: 0.0,
        predicted_finish_ms: 0,
        targets: Vec::new(),
        capture_cost: "each INSERT, UPDATE or DELETE of a moved table also inserts the changed rows' primary keys into a capture table on the same server, inside the same transaction (an AFTER trigger: one extra small row insert per changed row); reads cost nothing".into(),
    }
}

/// Rows, bytes, refusals, the sampled copy rate and the prediction, for the tables of the
/// `from` shards (only those named in `only`, when given).
async fn measure(
    plan: &mut Plan,
    ks: &Keyspace,
    from: &[shardgate_topology::Shard],
    to: &[(String, KeyRange)],
    creds: &db::Credentials,
    only: Option<&[String]>,
) -> Result<()> {
    let mut sources = Vec::with_capacity(from.len());
    for s in from {
        sources.push(ShardConn::open(s, creds, false).await?);
    }
    let (mut tables, mut problems) = setup::inspect_tables(ks, &mut sources).await?;
    if let Some(only) = only {
        let present = db::tables(&mut sources[0]).await?;
        tables.retain(|t, _| only.contains(t));
        problems.retain(|p| only.iter().any(|t| p.starts_with(&format!("{t}:"))));
        for t in only {
            if !present.contains(t) {
                problems.push(format!("{t}: no such table in keyspace {}", ks.name));
            }
        }
    }
    plan.refusals.extend(problems);
    let (mut sharded_bytes, mut reference_bytes) = (0u64, 0u64);
    let mut largest: Option<(u64, String)> = None;
    for (name, p) in &tables {
        let mut bytes = 0;
        for c in sources.iter_mut() {
            bytes += table_bytes(c, name).await?;
        }
        if p.kind == "reference" {
            reference_bytes = reference_bytes.max(bytes / sources.len().max(1) as u64);
        } else {
            sharded_bytes += bytes;
        }
        if largest.as_ref().is_none_or(|(r, _)| p.rows_estimate > *r) {
            largest = Some((p.rows_estimate, name.clone()));
        }
        plan.rows_total += p.rows_estimate;
        plan.bytes_total += bytes;
        plan.tables.push(TablePlan {
            name: name.clone(),
            kind: p.kind.clone(),
            rows: p.rows_estimate,
            bytes,
        });
    }
    if let Some((_, name)) = largest {
        let meta = db::table_meta(&mut sources[0], &name).await?;
        let (n, seconds) = sample_rate(&mut sources[0], &meta).await?;
        plan.sample_rows = n;
        plan.rows_per_s = if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        };
    }
    plan.predicted_seconds = predict_seconds(plan.rows_total, plan.rows_per_s);
    if plan.predicted_seconds.is_finite() {
        plan.predicted_finish_ms =
            super::workflow::now_ms() + (plan.predicted_seconds * 1000.0) as u64;
    }
    plan.targets = target_shares(to, sharded_bytes, reference_bytes);
    Ok(())
}

/// Data and index bytes of a table on one shard.
async fn table_bytes(c: &mut ShardConn, table: &str) -> Result<u64> {
    let db = c.database.clone();
    let rows = c
        .exec(
            "SELECT COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            vec![db.into(), table.into()],
        )
        .await?;
    Ok(rows.first().map(|r| db::int(r, 0)).unwrap_or(0))
}

/// Reads up to [`SAMPLE_ROWS`] rows the way the copy reads them and writes them the way
/// it writes them, into a temporary table on the same server. Returns (rows, seconds).
async fn sample_rate(c: &mut ShardConn, meta: &TableMeta) -> Result<(u64, f64)> {
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {} LIMIT {SAMPLE_ROWS} LOCK IN SHARE MODE",
        meta.column_list(),
        db::ident(&meta.name),
        meta.pk_list()
    );
    let started = Instant::now();
    c.run("START TRANSACTION").await?;
    let rows = c.exec(&sql, vec![]).await;
    c.run("COMMIT").await?;
    let rows: Vec<Vec<mysql_async::Value>> = rows?.into_iter().map(db::values).collect();
    let read = started.elapsed();
    let scratch = "sg_plan_sample";
    c.run(&format!("DROP TEMPORARY TABLE IF EXISTS {scratch}"))
        .await?;
    c.run(&format!(
        "CREATE TEMPORARY TABLE {scratch} LIKE {}",
        db::ident(&meta.name)
    ))
    .await?;
    let sample = TableMeta {
        name: scratch.to_string(),
        ..meta.clone()
    };
    let written = Instant::now();
    let r = db::replace_rows(c, &sample, &rows).await;
    let write = written.elapsed();
    c.run(&format!("DROP TEMPORARY TABLE IF EXISTS {scratch}"))
        .await?;
    r?;
    Ok((rows.len() as u64, (read + write).as_secs_f64()))
}

/// The plan as text for people.
pub fn render(p: &Plan) -> String {
    let mut s = match &p.target_keyspace {
        Some(t) => format!(
            "plan: move tables {} ({}) -> {t} ({})\n",
            p.keyspace,
            p.from.join(","),
            p.to.join(",")
        ),
        None => format!(
            "plan: {} {} -> {}\n",
            p.keyspace,
            p.from.join(","),
            p.to.join(",")
        ),
    };
    s.push_str(&format!(
        "{:<24} {:>10} {:>14} {:>12}\n",
        "table", "kind", "rows", "bytes"
    ));
    for t in &p.tables {
        s.push_str(&format!(
            "{:<24} {:>10} {:>14} {:>12}\n",
            t.name,
            t.kind,
            t.rows,
            human_bytes(t.bytes)
        ));
    }
    s.push_str(&format!(
        "total: {} rows, {}\n",
        p.rows_total,
        human_bytes(p.bytes_total)
    ));
    s.push_str(&format!(
        "copy rate (sample of {} rows, read + write, one stream): {:.0} rows/s\n",
        p.sample_rows, p.rows_per_s
    ));
    if p.predicted_seconds.is_finite() {
        s.push_str(&format!(
            "predicted backfill: {:.0} s, finishing around {} (unix ms) if started now\n",
            p.predicted_seconds, p.predicted_finish_ms
        ));
    }
    for t in &p.targets {
        s.push_str(&format!(
            "target {}: {:.0}% of the range, needs about {} of disk\n",
            t.shard,
            t.share * 100.0,
            human_bytes(t.bytes_needed)
        ));
    }
    s.push_str(&format!(
        "write-path cost while it runs: {}\n",
        p.capture_cost
    ));
    if p.refusals.is_empty() {
        s.push_str("no refusals: `reshard start` / `run` can go ahead\n");
    } else {
        s.push_str("refused:\n");
        for r in &p.refusals {
            s.push_str(&format!("  {r}\n"));
        }
    }
    s
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_key_ranges() {
        let r = |s: &str| KeyRange::parse(s).unwrap();
        let to = vec![
            ("80-c0".to_string(), r("80-c0")),
            ("c0-".to_string(), r("c0-")),
        ];
        let t = target_shares(&to, 1000, 10);
        assert!((t[0].share - 0.5).abs() < 1e-9);
        assert_eq!(t[0].bytes_needed, 510);
        let merge = target_shares(&[("-".to_string(), KeyRange::full())], 1000, 10);
        assert_eq!(merge[0].bytes_needed, 1010);
        let uneven = target_shares(
            &[("-40".into(), r("-40")), ("40-".into(), r("40-"))],
            400,
            0,
        );
        assert_eq!(uneven[0].bytes_needed, 100);
        assert_eq!(uneven[1].bytes_needed, 300);
    }

    #[test]
    fn predictions() {
        assert_eq!(predict_seconds(0, 0.0), 0.0);
        assert!(predict_seconds(10, 0.0).is_infinite());
        assert_eq!(predict_seconds(50_000, 10_000.0), 5.0);
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
