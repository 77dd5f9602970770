//! Verify: every table compared chunk by chunk, sources against targets, by row count and
//! an order-independent checksum (BIT_XOR of a 64-bit slice of each row's MD5). Chunks
//! that differ are checked again after the capture backlog is applied (changes in flight),
//! and if they still differ, re-copied under lock (source rows locked in share mode, the
//! targets' rows in that key range replaced) and checked a last time.

use super::db::{self, ident, TableMeta};
use super::workflow::{now_ms, Phase, VerifyReport};
use super::Controller;
use anyhow::{bail, Result};
use mysql_async::Value;
use std::time::Instant;

/// (rows, checksum) of a key range.
type Sum = (u64, u64);

fn checksum_sql(meta: &TableMeta, range: &str) -> String {
    let mut parts: Vec<String> = meta.columns.iter().map(|c| ident(&c.name)).collect();
    parts.extend(
        meta.columns
            .iter()
            .map(|c| format!("ISNULL({})", ident(&c.name))),
    );
    format!(
        "SELECT COUNT(*), COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS('#', {})), 16), 16, 10) AS UNSIGNED)), 0) FROM {} WHERE {range}",
        parts.join(", "),
        ident(&meta.name)
    )
}

async fn sums(
    c: &mut Controller,
    t: usize,
    lo: &Option<Vec<Value>>,
    hi: &Option<Vec<Value>>,
) -> Result<(Sum, Sum)> {
    let meta = c.tables[t].clone();
    let (cond, params) = db::key_range(&meta, lo, hi);
    let sql = checksum_sql(&meta, &cond);
    let mut src = (0, 0);
    for s in c.sources.iter_mut() {
        let r = s.exec(&sql, params.clone()).await?;
        if let Some(r) = r.first() {
            src.0 += db::int(r, 0);
            src.1 ^= db::int(r, 1);
        }
    }
    let reference = c.wf.doc.tables[&meta.name].kind == "reference";
    let mut dst = (0, 0);
    for (i, tc) in c.targets.iter_mut().enumerate() {
        let r = tc.exec(&sql, params.clone()).await?;
        if let Some(r) = r.first() {
            // Reference tables are whole on each target: compare the first copy.
            if reference && i > 0 {
                continue;
            }
            dst.0 += db::int(r, 0);
            dst.1 ^= db::int(r, 1);
        }
    }
    Ok((src, dst))
}

/// Re-copies the key range `(lo, hi]` of table `t` with the source rows locked.
async fn recopy(
    c: &mut Controller,
    t: usize,
    lo: &Option<Vec<Value>>,
    hi: &Option<Vec<Value>>,
) -> Result<()> {
    let meta = c.tables[t].clone();
    let (cond, params) = db::key_range(&meta, lo, hi);
    let select = format!(
        "SELECT {} FROM {} WHERE {cond} LOCK IN SHARE MODE NOWAIT",
        meta.column_list(),
        ident(&meta.name)
    );
    let rows: Vec<Vec<Value>> = db::locked_read(&mut c.sources, &select, params.clone())
        .await?
        .into_iter()
        .map(db::values)
        .collect();
    let mut per: Vec<Vec<Vec<Value>>> = vec![Vec::new(); c.targets.len()];
    for r in &rows {
        for i in c.to_targets[t].route(r)? {
            per[i].push(r.clone());
        }
    }
    let delete = format!("DELETE FROM {} WHERE {cond}", ident(&meta.name));
    for (i, tc) in c.targets.iter_mut().enumerate() {
        tc.run("BEGIN").await?;
        tc.exec(&delete, params.clone()).await?;
        db::replace_rows(tc, &meta, &per[i]).await?;
        tc.run("COMMIT").await?;
    }
    for s in c.sources.iter_mut() {
        s.run("COMMIT").await?;
    }
    Ok(())
}

/// The chunk boundaries of a table: every `chunk`-th primary key over all sources.
async fn boundaries(c: &mut Controller, t: usize, chunk: u64) -> Result<Vec<Vec<Value>>> {
    let meta = c.tables[t].clone();
    let pk = meta.pk_list();
    let mut keys: Vec<Vec<Value>> = Vec::new();
    for s in c.sources.iter_mut() {
        let mut last: Option<Vec<Value>> = None;
        loop {
            let (cond, params) = db::key_range(&meta, &last, &None);
            let sql = format!(
                "SELECT {pk} FROM {} WHERE {cond} ORDER BY {pk} LIMIT 1 OFFSET {}",
                ident(&meta.name),
                chunk - 1
            );
            let r = s.exec(&sql, params).await?;
            match r.into_iter().next() {
                Some(row) => {
                    let k = db::values(row);
                    keys.push(k.clone());
                    last = Some(k);
                }
                None => break,
            }
        }
    }
    // Boundaries of several sources interleave; order them as the table's own key orders
    // them (its types and collations): in a temporary table of the key's columns, filled
    // with parameters, never with values spliced into SQL text.
    if c.sources.len() > 1 && !keys.is_empty() {
        let cols: Vec<String> = meta
            .primary_key
            .iter()
            .map(|k| format!("{} {}", ident(&k.name), k.definition))
            .collect();
        let s0 = &mut c.sources[0];
        s0.run("DROP TEMPORARY TABLE IF EXISTS `_sg_bounds`")
            .await?;
        s0.run(&format!(
            "CREATE TEMPORARY TABLE `_sg_bounds` ({})",
            cols.join(", ")
        ))
        .await?;
        let row = format!("({})", vec!["?"; meta.primary_key.len()].join(", "));
        for part in keys.chunks(1000) {
            let sql = format!(
                "INSERT INTO `_sg_bounds` VALUES {}",
                vec![row.as_str(); part.len()].join(", ")
            );
            s0.exec(&sql, part.concat()).await?;
        }
        let r = s0
            .exec(&format!("SELECT * FROM `_sg_bounds` ORDER BY {pk}"), vec![])
            .await?;
        s0.run("DROP TEMPORARY TABLE `_sg_bounds`").await?;
        keys = r.into_iter().map(db::values).collect();
    }
    Ok(keys)
}

/// Compares every table; re-copies what differs. Marks the workflow `Verified` when
/// everything matches.
pub async fn run(c: &mut Controller) -> Result<()> {
    super::require(c, &[Phase::Backfilled, Phase::Verified], "verify")?;
    let started = Instant::now();
    c.catch_up(true, 0).await?;
    let mut report = VerifyReport::default();
    let chunk = (c.wf.doc.options.chunk_rows * 10).max(1000);
    for t in 0..c.tables.len() {
        let bounds = boundaries(c, t, chunk).await?;
        let mut lo: Option<Vec<Value>> = None;
        for i in 0..=bounds.len() {
            let hi = bounds.get(i).cloned();
            report.chunks += 1;
            let (s, d) = sums(c, t, &lo, &hi).await?;
            report.rows += s.0;
            if s != d {
                report.mismatched += 1;
                c.catch_up(true, 0).await?;
                let (s, d) = sums(c, t, &lo, &hi).await?;
                if s != d {
                    report.recopied += 1;
                    recopy(c, t, &lo, &hi).await?;
                    // Writes keep landing; a few tries tell churn from a real difference.
                    let mut same = false;
                    for _ in 0..5 {
                        c.catch_up(true, 0).await?;
                        let (s, d) = sums(c, t, &lo, &hi).await?;
                        if s == d {
                            same = true;
                            break;
                        }
                    }
                    if !same {
                        report.failed += 1;
                    }
                }
            }
            lo = hi;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.finished_ms = now_ms();
    let failed = report.failed;
    let msg = format!(
        "verify: {} rows in {} chunks, {} differed at first, {} re-copied, {} still differ ({:.1} s)",
        report.rows, report.chunks, report.mismatched, report.recopied, report.failed, report.seconds
    );
    c.wf.doc.verify = Some(report);
    if failed > 0 {
        c.note(msg.clone()).await?;
        bail!("{msg}");
    }
    c.set_phase(Phase::Verified, msg).await
}
