//! [`Responder`]: how a handler answers one client command.
//!
//! It writes OK, ERR and result sets the proxy builds itself, and relays result packets
//! from a backend packet by packet without decoding rows. Backends are always spoken to
//! with CLIENT_DEPRECATE_EOF; when the client did not ask for it, the responder inserts the
//! EOF after column definitions and turns the closing OK into an EOF. Sequence ids are the
//! client connection's own, so relayed packets never carry the backend's numbering.

use super::codec::put_lenenc_int;
use super::consts::*;
use super::packet::{PacketError, PacketIo};
use super::packets::{encode_eof, ColumnDef, ErrPacket, OkPacket};
use super::stream::NetStream;
use bytes::{BufMut, BytesMut};

/// Writes the reply to one command on the client connection.
pub struct Responder<'a> {
    io: &'a mut PacketIo<NetStream>,
    capabilities: u32,
    replied: bool,
}

impl<'a> Responder<'a> {
    /// A responder for one command on `io` (the connection loop makes one per command;
    /// public for fuzzing and tests).
    pub fn new(io: &'a mut PacketIo<NetStream>, capabilities: u32) -> Self {
        Responder {
            io,
            capabilities,
            replied: false,
        }
    }

    /// The capabilities negotiated with this client.
    pub fn capabilities(&self) -> u32 {
        self.capabilities
    }

    pub fn deprecate_eof(&self) -> bool {
        self.capabilities & CLIENT_DEPRECATE_EOF != 0
    }

    /// True once anything was written for this command.
    pub fn replied(&self) -> bool {
        self.replied
    }

    fn packet(&mut self, build: impl FnOnce(&mut BytesMut)) {
        self.replied = true;
        let at = self.io.begin_packet();
        build(self.io.buf());
        self.io.finish_packet(at);
    }

    /// Sends an OK packet.
    pub fn ok(&mut self, ok: &OkPacket) {
        self.packet(|b| ok.encode(0x00, b));
    }

    /// Sends an ERR packet.
    pub fn error(&mut self, err: &ErrPacket) {
        self.packet(|b| err.encode(b));
    }

    /// Sends a bare EOF or, with DEPRECATE_EOF, an OK-style terminator (COM_SET_OPTION, ...).
    pub fn eof(&mut self, status: u16, warnings: u16) {
        let deprecate = self.deprecate_eof();
        self.packet(|b| {
            if deprecate {
                OkPacket {
                    status,
                    warnings,
                    ..OkPacket::default()
                }
                .encode(0xfe, b)
            } else {
                encode_eof(b, warnings, status)
            }
        });
    }

    /// Sends a raw payload as is (for COM_STATISTICS' string answer and the like).
    pub fn raw(&mut self, payload: &[u8]) {
        self.replied = true;
        self.io.write_packet(payload);
    }

    // ---- result sets built by the proxy ----

    /// Starts a result set: the column count and definitions (and EOF when needed).
    pub fn columns(&mut self, columns: &[ColumnDef], status: u16) {
        self.packet(|b| put_lenenc_int(b, columns.len() as u64));
        for c in columns {
            self.packet(|b| c.encode(b));
        }
        self.end_columns(status);
    }

    /// One text-protocol row; `None` is SQL NULL.
    pub fn text_row<T: AsRef<[u8]>>(&mut self, values: &[Option<T>]) {
        self.packet(|b| {
            for v in values {
                match v {
                    None => b.put_u8(0xfb),
                    Some(v) => super::codec::put_lenenc_bytes(b, v.as_ref()),
                }
            }
        });
    }

    /// Ends a result set with the given status flags and warning count.
    pub fn end_rows(&mut self, status: u16, warnings: u16) {
        let deprecate = self.deprecate_eof();
        self.packet(|b| {
            if deprecate {
                OkPacket {
                    status,
                    warnings,
                    ..OkPacket::default()
                }
                .encode(0xfe, b)
            } else {
                encode_eof(b, warnings, status)
            }
        });
    }

    /// A whole text result set in one call.
    pub fn result_set<T: AsRef<[u8]>>(
        &mut self,
        columns: &[ColumnDef],
        rows: &[Vec<Option<T>>],
        status: u16,
    ) {
        self.columns(columns, status);
        for r in rows {
            self.text_row(r);
        }
        self.end_rows(status, 0);
    }

    // ---- relaying a backend's packets ----

    /// Relays one packet (column count, column definition or row) unchanged.
    pub fn relay(&mut self, payload: &[u8]) {
        self.replied = true;
        self.io.write_physical(payload);
    }

    /// Writes one packet built by the caller (a re-encoded row, say).
    pub fn build(&mut self, build: impl FnOnce(&mut BytesMut)) {
        self.packet(build);
    }

    /// After the column definitions: an EOF for clients without DEPRECATE_EOF.
    pub fn end_columns(&mut self, status: u16) {
        if !self.deprecate_eof() {
            self.packet(|b| encode_eof(b, 0, status));
        }
    }

    /// Relays a result set's closing OK (0xfe header, from a DEPRECATE_EOF backend),
    /// converting it to an EOF for clients without DEPRECATE_EOF.
    pub fn relay_terminator(&mut self, payload: &[u8]) {
        if self.deprecate_eof() {
            self.relay(payload);
        } else {
            let (status, warnings) = super::packets::status_and_warnings(payload)
                .unwrap_or((SERVER_STATUS_AUTOCOMMIT, 0));
            self.packet(|b| encode_eof(b, warnings, status));
        }
    }

    /// The COM_STMT_PREPARE answer header.
    pub fn prepare_ok(&mut self, statement_id: u32, columns: u16, params: u16, warnings: u16) {
        self.packet(|b| {
            b.put_u8(0);
            b.put_u32_le(statement_id);
            b.put_u16_le(columns);
            b.put_u16_le(params);
            b.put_u8(0);
            b.put_u16_le(warnings);
        });
    }

    /// Sends what is buffered if the buffer is large, so long results stream.
    pub async fn flush_if_full(&mut self) -> Result<(), PacketError> {
        self.io.flush_if_full().await
    }

    /// Sends everything buffered now.
    pub async fn flush(&mut self) -> Result<(), PacketError> {
        self.io.flush().await
    }

    /// From now on what is written goes nowhere (EXPLAIN ANALYZE runs a statement and
    /// answers with its trace instead of its result). What was written before is sent
    /// first. Returns the state [`Responder::stop_discarding`] restores.
    pub async fn start_discarding(&mut self) -> Result<(u8, bool), PacketError> {
        self.io.flush().await?;
        self.io.set_discard(true);
        Ok((self.io.seq(), self.replied))
    }

    /// Ends [`Responder::start_discarding`]: the next packet is numbered and counted as
    /// if nothing had been written since.
    pub fn stop_discarding(&mut self, saved: (u8, bool)) {
        self.io.set_discard(false);
        self.io.set_seq(saved.0);
        self.replied = saved.1;
    }
}
