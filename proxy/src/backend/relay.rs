//! Relaying a backend's response to the client packet by packet, without decoding rows.
//!
//! The relay walks the response's shape (OK | ERR | column count, column definitions,
//! rows, terminator; repeated while SERVER_MORE_RESULTS_EXISTS is set) by looking only at
//! each packet's first byte and length. Rows of 16 MiB or more arrive as several physical
//! packets and are passed through as they come.

use super::conn::{BackendConn, BackendError};
use crate::wire::codec::Reader;
use crate::wire::consts::*;
use crate::wire::packets::{status_and_warnings, ErrPacket, OkPacket};
use crate::wire::{PacketError, Responder};
use bytes::BytesMut;

/// What the client was told, for the session's bookkeeping (LAST_INSERT_ID, ROW_COUNT...).
#[derive(Debug, Default, Clone)]
pub struct RelaySummary {
    /// The last OK packet (for statements without rows), if any.
    pub ok: Option<OkPacket>,
    /// The error the response ended with, if any.
    pub error: Option<ErrPacket>,
    /// Rows relayed, over all result sets.
    pub rows: u64,
    /// Status flags the response ended with.
    pub status: u16,
    pub warnings: u16,
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The backend failed; the client has been sent an error packet.
    #[error("backend failed during the response: {0}")]
    Backend(BackendError),
    /// The client went away; the backend connection has unread packets.
    #[error("client connection failed: {0}")]
    Client(PacketError),
}

/// Options that adjust a relayed response.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayOptions {
    /// Set SERVER_MORE_RESULTS_EXISTS on the final packet (another statement's result follows).
    pub more_results: bool,
}

/// Relays the response to a COM_QUERY or COM_STMT_EXECUTE that was just sent on `conn`.
pub async fn relay_response(
    conn: &mut BackendConn,
    out: &mut Responder<'_>,
    opts: RelayOptions,
) -> Result<RelaySummary, RelayError> {
    let mut summary = RelaySummary::default();
    loop {
        let first = read(conn, out).await?;
        match first.first() {
            Some(0x00) => {
                let ok = OkPacket::decode(&first).map_err(|_| protocol(conn, out))?;
                let more = ok.status & SERVER_MORE_RESULTS_EXISTS != 0;
                conn.finish(ok.status);
                summary.status = ok.status;
                summary.warnings = ok.warnings;
                if !more && opts.more_results {
                    let mut patched = ok.clone();
                    patched.status |= SERVER_MORE_RESULTS_EXISTS;
                    out.ok(&patched);
                } else {
                    out.relay(&first);
                }
                summary.ok = Some(ok);
                if !more {
                    return Ok(summary);
                }
                conn_continue(conn);
            }
            Some(0xff) => {
                conn.finish_after_error();
                out.relay(&first);
                summary.error = ErrPacket::decode(&first).ok();
                return Ok(summary);
            }
            Some(0xfb) | None => return Err(protocol(conn, out)),
            Some(_) => {
                let n = Reader::new(&first)
                    .lenenc()
                    .map_err(|_| protocol(conn, out))?;
                out.relay(&first);
                for _ in 0..n {
                    let c = read(conn, out).await?;
                    out.relay(&c);
                }
                out.end_columns(conn.status());
                let more = relay_rows(conn, out, &mut summary, opts).await?;
                if !more {
                    return Ok(summary);
                }
                conn_continue(conn);
            }
        }
        flush(out, conn).await?;
    }
}

/// Relays rows up to and including the terminator. Returns whether more results follow.
async fn relay_rows(
    conn: &mut BackendConn,
    out: &mut Responder<'_>,
    summary: &mut RelaySummary,
    opts: RelayOptions,
) -> Result<bool, RelayError> {
    let mut continuation = false;
    loop {
        let p = read(conn, out).await?;
        let long = p.len() == MAX_PHYSICAL_PAYLOAD;
        if continuation {
            out.relay(&p);
            continuation = long;
            continue;
        }
        match p.first() {
            Some(0xfe) if !long => {
                let (status, warnings) =
                    status_and_warnings(&p).ok_or_else(|| protocol(conn, out))?;
                let more = status & SERVER_MORE_RESULTS_EXISTS != 0;
                conn.finish(status);
                summary.status = status;
                summary.warnings = warnings;
                if !more && opts.more_results {
                    let mut patched = OkPacket::decode(&p).map_err(|_| protocol(conn, out))?;
                    patched.status |= SERVER_MORE_RESULTS_EXISTS;
                    let mut b = BytesMut::new();
                    patched.encode(0xfe, &mut b);
                    out.relay_terminator(&b);
                } else {
                    out.relay_terminator(&p);
                }
                return Ok(more);
            }
            Some(0xff) if !long => {
                conn.finish_after_error();
                out.relay(&p);
                summary.error = ErrPacket::decode(&p).ok();
                return Ok(false);
            }
            _ => {
                summary.rows += 1;
                out.relay(&p);
                continuation = long;
                if out.flush_if_full().await.is_err() {
                    return Err(RelayError::Client(PacketError::Closed));
                }
            }
        }
    }
}

/// Relays the rows of a result set whose head (column count and definitions) was read,
/// up to but not including its terminator, which is consumed. An error in place of a row
/// is returned in the summary, not relayed. For concatenating several shards' rows.
pub async fn relay_rows_only(
    conn: &mut BackendConn,
    out: &mut Responder<'_>,
) -> Result<RelaySummary, RelayError> {
    let mut summary = RelaySummary::default();
    let mut continuation = false;
    loop {
        let p = conn.read().await.map_err(RelayError::Backend)?;
        let long = p.len() == MAX_PHYSICAL_PAYLOAD;
        if continuation {
            out.relay(&p);
            continuation = long;
            continue;
        }
        match p.first() {
            Some(0xfe) if !long => {
                let (status, warnings) =
                    status_and_warnings(&p).ok_or(RelayError::Backend(BackendError::Protocol))?;
                conn.finish(status);
                summary.status = status;
                summary.warnings = warnings;
                return Ok(summary);
            }
            Some(0xff) if !long => {
                conn.finish_after_error();
                summary.error = ErrPacket::decode(&p).ok();
                return Ok(summary);
            }
            _ => {
                summary.rows += 1;
                out.relay(&p);
                continuation = long;
                out.flush_if_full().await.map_err(RelayError::Client)?;
            }
        }
    }
}

/// Relays a COM_STMT_PREPARE answer, replacing the backend's statement id with `client_id`.
/// Returns (columns, params) counts, or the server's error (already relayed).
pub async fn relay_prepare(
    conn: &mut BackendConn,
    out: &mut Responder<'_>,
    client_id: u32,
) -> Result<Result<(u32, u16, u16), ErrPacket>, RelayError> {
    let first = read(conn, out).await?;
    match first.first() {
        Some(0x00) if first.len() >= 12 => {
            let mut r = Reader::new(&first[1..]);
            let backend_id = r.u32().unwrap_or(0);
            let columns = r.u16().unwrap_or(0);
            let params = r.u16().unwrap_or(0);
            let mut patched = BytesMut::from(&first[..]);
            patched[1..5].copy_from_slice(&client_id.to_le_bytes());
            out.relay(&patched);
            for _ in 0..params {
                let p = read(conn, out).await?;
                out.relay(&p);
            }
            if params > 0 {
                out.end_columns(conn.status());
            }
            for _ in 0..columns {
                let p = read(conn, out).await?;
                out.relay(&p);
            }
            if columns > 0 {
                out.end_columns(conn.status());
            }
            let status = conn.status();
            conn.finish(status);
            Ok(Ok((backend_id, columns, params)))
        }
        Some(0xff) => {
            conn.finish_after_error();
            out.relay(&first);
            Ok(Err(ErrPacket::decode(&first).unwrap_or_else(|_| {
                ErrPacket::new(1105, "HY000", "prepare failed")
            })))
        }
        _ => Err(protocol(conn, out)),
    }
}

/// Relays a COM_FIELD_LIST answer (column definitions, then EOF/OK, or an error).
pub async fn relay_field_list(
    conn: &mut BackendConn,
    out: &mut Responder<'_>,
) -> Result<(), RelayError> {
    loop {
        let p = read(conn, out).await?;
        match p.first() {
            Some(0xfe) if p.len() < MAX_PHYSICAL_PAYLOAD => {
                let (status, warnings) = status_and_warnings(&p).unwrap_or((conn.status(), 0));
                conn.finish(status);
                out.eof(status, warnings);
                return Ok(());
            }
            Some(0xff) => {
                conn.finish_after_error();
                out.relay(&p);
                return Ok(());
            }
            _ => out.relay(&p),
        }
    }
}

fn conn_continue(conn: &mut BackendConn) {
    // The server goes on with the next result of the same command.
    conn.mark_pending();
}

async fn read(conn: &mut BackendConn, out: &mut Responder<'_>) -> Result<bytes::Bytes, RelayError> {
    match conn.read().await {
        Ok(p) => Ok(p),
        Err(e) => {
            out.error(&ErrPacket::new(
                2013,
                "HY000",
                format!("Lost connection to backend during query: {e}"),
            ));
            Err(RelayError::Backend(e))
        }
    }
}

async fn flush(out: &mut Responder<'_>, conn: &mut BackendConn) -> Result<(), RelayError> {
    let _ = conn;
    out.flush_if_full().await.map_err(RelayError::Client)
}

fn protocol(conn: &mut BackendConn, out: &mut Responder<'_>) -> RelayError {
    conn.mark_broken();
    out.error(&ErrPacket::new(
        2027,
        "HY000",
        "Malformed packet from backend",
    ));
    RelayError::Backend(BackendError::Protocol)
}
