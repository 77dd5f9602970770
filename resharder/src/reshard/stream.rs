//! One copy stream: a key range of one table on one source shard, copied chunk by chunk
//! to the targets on connections of its own, so several streams (other tables, other
//! source shards, other ranges of a big table) copy at once.
//!
//! Each chunk is read in primary-key order under shared locks (`LOCK IN SHARE MODE
//! NOWAIT`, retried while a row is locked: the copy never waits holding locks, so it
//! cannot deadlock with the application), routed, written to every target at once
//! (multi-row statements), and only then committed on the source: a change to a copied
//! row commits after its chunk reached the target, so that change's capture entry is
//! applied after the copy and the newer value wins. Chunks are sized by time (see
//! [`next_chunk`], and the throttler's target): big enough that per-statement costs
//! vanish, short enough that the application waits little for a locked row.

use super::db::{self, Credentials, ShardConn, TableMeta};
use super::rows::Router;
use super::throttle::Throttle;
use super::workflow::KeyValue;
use anyhow::Result;
use mysql_async::Value;
use shardgate_topology::Shard;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one stream copies.
pub struct StreamSpec {
    /// The stream's id in the checkpoint (`TableProgress::stream_id`).
    pub id: String,
    pub meta: TableMeta,
    pub router: Router,
    pub source: Shard,
    pub targets: Vec<Shard>,
    /// Copy keys after this one (the range's start, or the last checkpoint).
    pub after: Option<Vec<Value>>,
    /// Up to this key (inclusive; `None`: to the end).
    pub up_to: Option<Vec<Value>>,
    /// The first chunk's rows.
    pub chunk_rows: u64,
}

/// A chunk copied, reported to the coordinator, which checkpoints it.
#[derive(Debug)]
pub struct Progress {
    pub table: String,
    pub stream: String,
    pub rows: u64,
    pub last_key: Option<Vec<KeyValue>>,
    pub done: bool,
}

/// The next chunk's rows after one of `rows` took `took`: doubled while well under
/// `target`, halved while well over, within `[min, max]`.
pub fn next_chunk(rows: u64, took: Duration, target: Duration, min: u64, max: u64) -> u64 {
    let next = if took < target / 2 {
        rows.saturating_mul(2)
    } else if took > target * 2 {
        rows / 2
    } else {
        rows
    };
    next.clamp(min.max(1), max.max(min.max(1)))
}

/// Copies the stream's range. `index` is its slot among the running streams (the
/// throttler lets the first `allowed` run).
pub async fn copy(
    spec: StreamSpec,
    index: usize,
    creds: Credentials,
    throttle: Arc<Throttle>,
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
) -> Result<()> {
    let mut src = ShardConn::open(&spec.source, &creds, false).await?;
    throttle.own_connection(&src.shard, src.conn.id());
    let mut targets = Vec::with_capacity(spec.targets.len());
    for t in &spec.targets {
        targets.push(ShardConn::open(t, &creds, false).await?);
    }
    let meta = &spec.meta;
    let pk_idx = meta.pk_indexes();
    let (min, max) = (spec.chunk_rows.clamp(1, 100), spec.chunk_rows.max(1) * 20);
    let mut chunk = spec.chunk_rows.max(1);
    let mut after = spec.after.clone();
    loop {
        throttle.before_chunk(index).await;
        let (cond, params) = db::key_range(meta, &after, &spec.up_to);
        let sql = format!(
            "SELECT {} FROM {} WHERE {cond} ORDER BY {} LIMIT {chunk} LOCK IN SHARE MODE NOWAIT",
            meta.column_list(),
            db::ident(&meta.name),
            meta.pk_list()
        );
        let t0 = Instant::now();
        let rows = db::locked_read(std::slice::from_mut(&mut src), &sql, params).await?;
        let rows: Vec<Vec<Value>> = rows.into_iter().map(db::values).collect();
        let n = rows.len() as u64;
        let last: Option<Vec<Value>> = rows
            .last()
            .map(|r| pk_idx.iter().map(|i| r[*i].clone()).collect());
        let mut per: Vec<Vec<Vec<Value>>> = vec![Vec::new(); targets.len()];
        for r in rows {
            let to = spec.router.route(&r)?;
            if let [only] = to.as_slice() {
                per[*only].push(r);
            } else {
                for i in to {
                    per[i].push(r.clone());
                }
            }
        }
        let writes = targets
            .iter_mut()
            .zip(&per)
            .map(|(tc, rows)| db::replace_rows(tc, meta, rows));
        let written: Result<Vec<()>> = futures::future::join_all(writes)
            .await
            .into_iter()
            .collect();
        if let Err(e) = written {
            let _ = src.run("ROLLBACK").await;
            return Err(e);
        }
        src.run("COMMIT").await?;
        let took = t0.elapsed();
        let done = n < chunk;
        let _ = progress.send(Progress {
            table: meta.name.clone(),
            stream: spec.id.clone(),
            rows: n,
            last_key: last.as_ref().map(|k| k.iter().map(db::key_value).collect()),
            done,
        });
        if last.is_some() {
            after = last;
        }
        throttle.after_chunk(n, took).await;
        if done {
            return Ok(());
        }
        chunk = next_chunk(chunk, took, throttle.chunk_target(), min, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_while_quick_and_shrink_while_slow() {
        let ms = Duration::from_millis;
        let t = ms(40);
        assert_eq!(next_chunk(1000, ms(5), t, 100, 20_000), 2000);
        assert_eq!(next_chunk(1000, ms(40), t, 100, 20_000), 1000);
        assert_eq!(next_chunk(1000, ms(200), t, 100, 20_000), 500);
        assert_eq!(next_chunk(16_000, ms(1), t, 100, 20_000), 20_000);
        assert_eq!(next_chunk(150, ms(900), t, 100, 20_000), 100);
        assert_eq!(next_chunk(1000, ms(40), ms(10), 100, 20_000), 500);
    }
}
