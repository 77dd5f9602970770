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
//! vanish, short enough that the application waits little for a locked row. While the
//! application does not run, a stream reads its next chunk (on a second source
//! connection) while it writes the current one.

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

/// A chunk read under shared locks, on the source connection whose open transaction
/// holds them.
struct Chunk {
    rows: Vec<Vec<Value>>,
    /// The chunk's size limit (fewer rows: the range is done).
    limit: u64,
    started: Instant,
}

/// Reads the chunk after `after` (at most `limit` rows) on `src`, leaving its transaction
/// open with the rows share-locked.
async fn read_chunk(
    src: &mut ShardConn,
    spec: &StreamSpec,
    after: &Option<Vec<Value>>,
    limit: u64,
) -> Result<Chunk> {
    let meta = &spec.meta;
    let (cond, params) = db::key_range(meta, after, &spec.up_to);
    let sql = format!(
        "SELECT {} FROM {} WHERE {cond} ORDER BY {} LIMIT {limit} LOCK IN SHARE MODE NOWAIT",
        meta.column_list(),
        db::ident(&meta.name),
        meta.pk_list()
    );
    let started = Instant::now();
    let rows = db::locked_read(std::slice::from_mut(src), &sql, params).await?;
    Ok(Chunk {
        rows: rows.into_iter().map(db::values).collect(),
        limit,
        started,
    })
}

/// Writes a chunk's rows to the targets owning them (all targets at once).
async fn write_chunk(
    targets: &mut [ShardConn],
    spec: &StreamSpec,
    rows: Vec<Vec<Value>>,
) -> Result<()> {
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
        .map(|(tc, rows)| db::replace_rows(tc, &spec.meta, rows));
    futures::future::join_all(writes)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// A stream's connections (two on its source, one per target) and its last chunk size,
/// handed to the next stream of the same slot: a copy of many small ranges would
/// otherwise spend much of its time connecting, and growing chunks again from the start.
pub struct StreamConns {
    holding: ShardConn,
    reading: ShardConn,
    targets: Vec<ShardConn>,
    size: u64,
}

impl StreamConns {
    /// Opens a stream's connections (registered with the throttler as the controller's).
    async fn open(spec: &StreamSpec, creds: &Credentials, throttle: &Throttle) -> Result<Self> {
        let holding = ShardConn::open(&spec.source, creds, false).await?;
        throttle.own_connection(&holding);
        let reading = ShardConn::open(&spec.source, creds, false).await?;
        throttle.own_connection(&reading);
        let mut targets = Vec::with_capacity(spec.targets.len());
        for t in &spec.targets {
            let tc = ShardConn::open(t, creds, false).await?;
            throttle.own_connection(&tc);
            targets.push(tc);
        }
        Ok(StreamConns {
            holding,
            reading,
            targets,
            size: spec.chunk_rows.max(1),
        })
    }

    /// Whether these connections serve `spec` (same source and target shards).
    fn serve(&self, spec: &StreamSpec) -> bool {
        self.holding.shard == spec.source.name
            && self.targets.len() == spec.targets.len()
            && self
                .targets
                .iter()
                .zip(&spec.targets)
                .all(|(c, t)| c.shard == t.name)
    }
}

/// Copies the stream's range (see [`copy_range`]), on `reuse`'s connections when they
/// serve it; returns the connections for the next stream when the copy succeeded.
pub async fn copy(
    spec: StreamSpec,
    index: usize,
    creds: Credentials,
    throttle: Arc<Throttle>,
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
    reuse: Option<StreamConns>,
) -> Result<StreamConns> {
    let mut conns = match reuse.filter(|c| c.serve(&spec)) {
        Some(c) => c,
        None => StreamConns::open(&spec, &creds, &throttle).await?,
    };
    copy_range(&spec, index, &throttle, &progress, &mut conns).await?;
    Ok(conns)
}

/// Copies the stream's range. `index` is its slot among the running streams (the
/// throttler lets the first `allowed` run).
///
/// Chunk after chunk: read under shared locks on one source connection, written to the
/// targets, committed on the source. While the application does not run, the next
/// chunk is read on a second source connection while the current one is written
/// (the throttler's [`Throttle::overlap`]); each chunk still commits on the source only
/// after its own rows reached the targets, so the locking argument holds chunk by chunk.
async fn copy_range(
    spec: &StreamSpec,
    index: usize,
    throttle: &Throttle,
    progress: &tokio::sync::mpsc::UnboundedSender<Progress>,
    conns: &mut StreamConns,
) -> Result<()> {
    let StreamConns {
        holding,
        reading,
        targets,
        size,
    } = conns;
    let meta = &spec.meta;
    let pk_idx = meta.pk_indexes();
    let (min, max) = (spec.chunk_rows.clamp(1, 100), spec.chunk_rows.max(1) * 20);
    throttle.before_chunk(index).await;
    // `holding` holds the locks of `chunk`, the chunk being written.
    let mut chunk = read_chunk(holding, spec, &spec.after, *size).await?;
    loop {
        let n = chunk.rows.len() as u64;
        let done = n < chunk.limit;
        let last: Option<Vec<Value>> = chunk
            .rows
            .last()
            .map(|r| pk_idx.iter().map(|i| r[*i].clone()).collect());
        let after = last.clone().or_else(|| spec.after.clone());
        let rows = std::mem::take(&mut chunk.rows);
        let write = async {
            let r = write_chunk(targets, spec, rows).await;
            match r {
                Ok(()) => holding.run("COMMIT").await,
                Err(e) => {
                    let _ = holding.run("ROLLBACK").await;
                    Err(e)
                }
            }
        };
        let overlap = !done && throttle.overlap();
        let read_ahead = async {
            if overlap {
                throttle.before_chunk(index).await;
                Some(read_chunk(reading, spec, &after, *size).await)
            } else {
                None
            }
        };
        let (written, ahead) = futures::future::join(write, read_ahead).await;
        if let Err(e) = written {
            let _ = reading.run("ROLLBACK").await;
            return Err(e);
        }
        let took = chunk.started.elapsed();
        let _ = progress.send(Progress {
            table: meta.name.clone(),
            stream: spec.id.clone(),
            rows: n,
            last_key: last.as_ref().map(|k| k.iter().map(db::key_value).collect()),
            done,
        });
        throttle.after_chunk(n, took).await;
        if done {
            return Ok(());
        }
        *size = next_chunk(*size, took, throttle.chunk_target(), min, max);
        chunk = match ahead {
            Some(next) => next?,
            None => {
                throttle.before_chunk(index).await;
                read_chunk(reading, spec, &after, *size).await?
            }
        };
        std::mem::swap(holding, reading);
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
