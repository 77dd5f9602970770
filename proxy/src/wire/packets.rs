//! The generic response packets (OK, ERR, EOF) and column definitions: encoding for
//! what the proxy answers itself, decoding for what backends send.
//!
//! Text fields hold the lossless view of their bytes (`charset.rs`): a column name or an
//! error message in the client's character set comes back out byte for byte.

use super::charset::{decode_utf8, encode};
use super::codec::{put_lenenc_bytes, put_lenenc_int, Malformed, Reader};
use super::consts::*;
use bytes::{BufMut, BytesMut};

/// An OK packet (also the result-set terminator when DEPRECATE_EOF is in use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: String,
}

impl OkPacket {
    /// Appends the payload. `header` is 0x00 for a plain OK, 0xfe for a terminator.
    pub fn encode(&self, header: u8, buf: &mut BytesMut) {
        buf.put_u8(header);
        put_lenenc_int(buf, self.affected_rows);
        put_lenenc_int(buf, self.last_insert_id);
        buf.put_u16_le(self.status);
        buf.put_u16_le(self.warnings);
        // The protocol documentation says string<EOF>, but servers (and clients) use a
        // length-encoded string here.
        if !self.info.is_empty() {
            put_lenenc_bytes(buf, &encode(&self.info));
        }
    }

    /// Parses an OK payload (header byte included) from a connection without
    /// CLIENT_SESSION_TRACK, which is how shardgate connects to backends.
    pub fn decode(payload: &[u8]) -> Result<OkPacket, Malformed> {
        let mut r = Reader::new(payload);
        let header = r.u8()?;
        if header != 0x00 && header != 0xfe {
            return Err(Malformed);
        }
        let affected_rows = r.lenenc()?;
        let last_insert_id = r.lenenc()?;
        let status = r.u16()?;
        let warnings = r.u16()?;
        let rest = r.rest();
        let info = match Reader::new(rest).lenenc_bytes() {
            Ok(s) if !rest.is_empty() && rest[0] > 0 => decode_utf8(s).into_owned(),
            _ => decode_utf8(rest).into_owned(),
        };
        Ok(OkPacket {
            affected_rows,
            last_insert_id,
            status,
            warnings,
            info,
        })
    }
}

/// Reads only the status flags and warning count of an OK or EOF payload.
pub fn status_and_warnings(payload: &[u8]) -> Option<(u16, u16)> {
    let mut r = Reader::new(payload);
    match r.u8().ok()? {
        0xfe if payload.len() == 5 => {
            let warnings = r.u16().ok()?;
            let status = r.u16().ok()?;
            Some((status, warnings))
        }
        0x00 | 0xfe => {
            r.lenenc().ok()?;
            r.lenenc().ok()?;
            let status = r.u16().ok()?;
            let warnings = r.u16().ok()?;
            Some((status, warnings))
        }
        _ => None,
    }
}

/// An ERR packet: a MySQL error number, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub state: [u8; 5],
    pub message: String,
}

impl ErrPacket {
    pub fn new(code: u16, state: &str, message: impl Into<String>) -> ErrPacket {
        let mut s = [b'H', b'Y', b'0', b'0', b'0'];
        if state.len() == 5 {
            s.copy_from_slice(state.as_bytes());
        }
        ErrPacket {
            code,
            state: s,
            message: message.into(),
        }
    }

    pub fn state_str(&self) -> &str {
        std::str::from_utf8(&self.state).unwrap_or("HY000")
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(0xff);
        buf.put_u16_le(self.code);
        buf.put_u8(b'#');
        buf.put_slice(&self.state);
        buf.put_slice(&encode(&self.message));
    }

    /// Parses an ERR payload (header byte included).
    pub fn decode(payload: &[u8]) -> Result<ErrPacket, Malformed> {
        let mut r = Reader::new(payload);
        if r.u8()? != 0xff {
            return Err(Malformed);
        }
        let code = r.u16()?;
        let mut state = *b"HY000";
        if r.peek() == Some(b'#') {
            r.skip(1)?;
            state.copy_from_slice(r.take(5)?);
        }
        Ok(ErrPacket {
            code,
            state,
            message: decode_utf8(r.rest()).into_owned(),
        })
    }
}

/// Appends an EOF payload.
pub fn encode_eof(buf: &mut BytesMut, warnings: u16, status: u16) {
    buf.put_u8(0xfe);
    buf.put_u16_le(warnings);
    buf.put_u16_le(status);
}

/// A column definition (Protocol::ColumnDefinition41).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub schema: String,
    pub table: String,
    pub org_table: String,
    pub name: String,
    pub org_name: String,
    pub charset: u16,
    pub length: u32,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

impl ColumnDef {
    /// A column the proxy computes itself (no table), typed as a utf8mb4 string.
    pub fn text(name: &str) -> ColumnDef {
        ColumnDef {
            schema: String::new(),
            table: String::new(),
            org_table: String::new(),
            name: name.to_string(),
            org_name: name.to_string(),
            charset: CHARSET_UTF8MB4_GENERAL_CI,
            length: 256,
            column_type: MYSQL_TYPE_VAR_STRING,
            flags: 0,
            decimals: 0,
        }
    }

    /// A signed 64-bit integer column computed by the proxy.
    pub fn int(name: &str) -> ColumnDef {
        ColumnDef {
            charset: CHARSET_BINARY,
            length: 21,
            column_type: MYSQL_TYPE_LONGLONG,
            flags: NOT_NULL_FLAG | BINARY_FLAG | NUM_FLAG,
            ..ColumnDef::text(name)
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        put_lenenc_bytes(buf, b"def");
        put_lenenc_bytes(buf, &encode(&self.schema));
        put_lenenc_bytes(buf, &encode(&self.table));
        put_lenenc_bytes(buf, &encode(&self.org_table));
        put_lenenc_bytes(buf, &encode(&self.name));
        put_lenenc_bytes(buf, &encode(&self.org_name));
        buf.put_u8(0x0c);
        buf.put_u16_le(self.charset);
        buf.put_u32_le(self.length);
        buf.put_u8(self.column_type);
        buf.put_u16_le(self.flags);
        buf.put_u8(self.decimals);
        buf.put_u16_le(0);
    }

    pub fn decode(payload: &[u8]) -> Result<ColumnDef, Malformed> {
        let mut r = Reader::new(payload);
        let text = |r: &mut Reader| -> Result<String, Malformed> {
            Ok(decode_utf8(r.lenenc_bytes()?).into_owned())
        };
        let _catalog = r.lenenc_bytes()?;
        let schema = text(&mut r)?;
        let table = text(&mut r)?;
        let org_table = text(&mut r)?;
        let name = text(&mut r)?;
        let org_name = text(&mut r)?;
        let _fixed_len = r.lenenc()?;
        let charset = r.u16()?;
        let length = r.u32()?;
        let column_type = r.u8()?;
        let flags = r.u16()?;
        let decimals = r.u8()?;
        Ok(ColumnDef {
            schema,
            table,
            org_table,
            name,
            org_name,
            charset,
            length,
            column_type,
            flags,
            decimals,
        })
    }

    pub fn is_unsigned(&self) -> bool {
        self.flags & UNSIGNED_FLAG != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_and_err_round_trip() {
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 1 << 40,
            status: SERVER_STATUS_AUTOCOMMIT,
            warnings: 2,
            info: "Rows matched: 1".into(),
        };
        let mut b = BytesMut::new();
        ok.encode(0, &mut b);
        assert_eq!(OkPacket::decode(&b).unwrap(), ok);
        assert_eq!(status_and_warnings(&b), Some((SERVER_STATUS_AUTOCOMMIT, 2)));
        let e = ErrPacket::new(1146, "42S02", "Table 'x.y' doesn't exist");
        let mut b = BytesMut::new();
        e.encode(&mut b);
        assert_eq!(ErrPacket::decode(&b).unwrap(), e);
        let mut b = BytesMut::new();
        encode_eof(&mut b, 3, 9);
        assert_eq!(status_and_warnings(&b), Some((9, 3)));
    }

    #[test]
    fn column_definition_round_trips() {
        let c = ColumnDef {
            schema: "commerce".into(),
            table: "p".into(),
            org_table: "product".into(),
            name: "n".into(),
            org_name: "name".into(),
            charset: 45,
            length: 400,
            column_type: MYSQL_TYPE_VAR_STRING,
            flags: 0,
            decimals: 0,
        };
        let mut b = BytesMut::new();
        c.encode(&mut b);
        assert_eq!(ColumnDef::decode(&b).unwrap(), c);
        assert!(ColumnDef::decode(&b[..b.len() - 5]).is_err());
        // A latin1 alias (not UTF-8) comes back byte for byte.
        let mut raw = BytesMut::new();
        put_lenenc_bytes(&mut raw, b"def");
        for f in [&b"db"[..], b"t", b"t", b"caf\xe9", b"c"] {
            put_lenenc_bytes(&mut raw, f);
        }
        raw.extend_from_slice(&[0x0c, 8, 0, 10, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
        let d = ColumnDef::decode(&raw).unwrap();
        let mut again = BytesMut::new();
        d.encode(&mut again);
        assert_eq!(again, raw);
    }
}
