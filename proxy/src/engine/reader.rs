//! Reading one shard's text result set row by row, for merges.
//!
//! Cells stay slices of the packet they arrived in (`Bytes`), so a row costs one
//! allocation for its cell list and no copies.

use crate::backend::conn::BackendError;
use crate::backend::held::Held;
use crate::error::ProxyError;
use crate::wire::codec::Reader;
use crate::wire::consts::MAX_PHYSICAL_PAYLOAD;
use crate::wire::packets::{status_and_warnings, ColumnDef, ErrPacket, OkPacket};
use bytes::Bytes;
use std::collections::VecDeque;

/// A row in text-protocol form: one optional cell per column (`None` is NULL).
pub type Row = Vec<Option<Bytes>>;

/// What a shard said before its rows.
pub enum Head {
    /// A result set with these columns follows.
    Rows(Vec<ColumnDef>),
    /// The statement returned no result set.
    Ok(OkPacket),
}

/// Where a reader's rows come from. (A reader lives as long as one statement and there
/// are a handful of them, so the size of the variants does not matter.)
#[allow(clippy::large_enum_variant)]
enum Source {
    /// A shard's answer on the connection.
    Shard(Held),
    /// Rows already in memory (unit tests of the merge primitives).
    Memory(VecDeque<Row>),
}

/// One shard's answer, being read.
pub struct ShardReader {
    source: Source,
    pub columns: Vec<ColumnDef>,
    done: bool,
    pub status: u16,
    pub warnings: u16,
    pub rows_read: u64,
}

fn backend(label: &str, e: BackendError) -> ProxyError {
    ProxyError::from_backend(label, e)
}

impl ShardReader {
    /// Reads the response head of the command just sent on `held`.
    pub async fn start(
        mut held: Held,
    ) -> Result<(ShardReader, Option<OkPacket>), (Held, ProxyError)> {
        let head = match read_head(&mut held).await {
            Ok(h) => h,
            Err(e) => return Err((held, e)),
        };
        let (columns, ok, done) = match head {
            Head::Rows(c) => (c, None, false),
            Head::Ok(ok) => (Vec::new(), Some(ok), true),
        };
        let status = held.conn.status();
        Ok((
            ShardReader {
                source: Source::Shard(held),
                columns,
                done,
                status,
                warnings: ok.as_ref().map(|o| o.warnings).unwrap_or(0),
                rows_read: 0,
            },
            ok,
        ))
    }

    /// A reader over rows in memory, as if a shard had answered them.
    pub fn from_rows(columns: Vec<ColumnDef>, rows: Vec<Row>) -> ShardReader {
        ShardReader {
            source: Source::Memory(rows.into()),
            columns,
            done: false,
            status: 0,
            warnings: 0,
            rows_read: 0,
        }
    }

    /// The connection the rows came from (None for rows in memory).
    pub fn into_held(self) -> Option<Held> {
        match self.source {
            Source::Shard(h) => Some(h),
            Source::Memory(_) => None,
        }
    }

    /// The next row, or `None` at the end of the result.
    pub async fn next(&mut self) -> Result<Option<Row>, ProxyError> {
        if self.done {
            return Ok(None);
        }
        let held = match &mut self.source {
            Source::Shard(h) => h,
            Source::Memory(rows) => {
                let row = rows.pop_front();
                self.done = row.is_none();
                self.rows_read += row.is_some() as u64;
                return Ok(row);
            }
        };
        let p = held
            .conn
            .read_logical()
            .await
            .map_err(|e| backend(&held.label, e))?;
        match p.first() {
            Some(0xfe) if p.len() < MAX_PHYSICAL_PAYLOAD => {
                let (status, warnings) = status_and_warnings(&p).unwrap_or((0, 0));
                held.conn.finish(status);
                self.status = status;
                self.warnings = warnings;
                self.done = true;
                if status & crate::wire::consts::SERVER_MORE_RESULTS_EXISTS != 0 {
                    held.conn.mark_broken();
                    return Err(ProxyError::NotSupported(
                        "several result sets from one statement across shards".into(),
                    ));
                }
                Ok(None)
            }
            Some(0xff) => {
                held.conn.finish_after_error();
                self.done = true;
                let e = ErrPacket::decode(&p)
                    .unwrap_or_else(|_| ErrPacket::new(1105, "HY000", "error"));
                Err(ProxyError::Backend(e))
            }
            _ => {
                let n = self.columns.len();
                let mut row = Vec::with_capacity(n);
                let mut r = Reader::new(&p);
                for _ in 0..n {
                    let cell = r.lenenc_bytes_opt().map_err(|_| {
                        held.conn.mark_broken();
                        ProxyError::Internal(format!("malformed row from {}", held.label))
                    })?;
                    row.push(cell.map(|c| {
                        let start = c.as_ptr() as usize - p.as_ptr() as usize;
                        p.slice(start..start + c.len())
                    }));
                }
                self.rows_read += 1;
                Ok(Some(row))
            }
        }
    }

    /// Reads and discards the rest of the result (so the connection can be reused).
    pub async fn drain(&mut self) {
        while !self.done {
            if self.next().await.is_err() {
                break;
            }
        }
    }
}

/// Reads a response head: OK, ERR, or column count and definitions.
pub async fn read_head(held: &mut Held) -> Result<Head, ProxyError> {
    let label = held.label.clone();
    let first = held.conn.read().await.map_err(|e| backend(&label, e))?;
    match first.first() {
        Some(0x00) => {
            let ok = OkPacket::decode(&first)
                .map_err(|_| ProxyError::Internal("malformed OK".into()))?;
            held.conn.finish(ok.status);
            if ok.status & crate::wire::consts::SERVER_MORE_RESULTS_EXISTS != 0 {
                held.conn.mark_broken();
                return Err(ProxyError::NotSupported(
                    "several result sets from one statement across shards".into(),
                ));
            }
            Ok(Head::Ok(ok))
        }
        Some(0xff) => {
            held.conn.finish_after_error();
            let e = ErrPacket::decode(&first)
                .unwrap_or_else(|_| ErrPacket::new(1105, "HY000", "error"));
            Err(ProxyError::Backend(e))
        }
        _ => {
            let n = Reader::new(&first)
                .lenenc()
                .map_err(|_| ProxyError::Internal("malformed column count".into()))?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let p = held.conn.read().await.map_err(|e| backend(&label, e))?;
                columns.push(
                    ColumnDef::decode(&p)
                        .map_err(|_| ProxyError::Internal("malformed column".into()))?,
                );
            }
            Ok(Head::Rows(columns))
        }
    }
}
