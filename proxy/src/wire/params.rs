//! COM_STMT_EXECUTE: parsing the parameters a client binds, and building the command for
//! a backend.
//!
//! Clients may send parameter types only on the first execute of a statement (sysbench
//! and Connector/C do): the statement keeps the last types it saw and they are reused when
//! an execute comes without them. Every execute the proxy sends to a backend carries the
//! types, because the backend connection may never have seen the client's first execute.

use super::charset::{self, Charset};
use super::codec::{put_lenenc_bytes, Malformed, Reader};
use super::consts::*;
use bytes::{BufMut, Bytes, BytesMut};
use shardgate_topology::SqlValue;
use std::fmt::Write as _;

/// One bound parameter: its type and raw binary-protocol value (None for NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub column_type: u8,
    pub unsigned: bool,
    pub value: Option<Bytes>,
}

/// A parsed COM_STMT_EXECUTE.
#[derive(Debug, Clone, PartialEq)]
pub struct Execute {
    pub statement_id: u32,
    pub flags: u8,
    pub params: Vec<Param>,
}

/// Reads the statement id of an execute payload (to find the statement first).
pub fn execute_statement_id(payload: &[u8]) -> Result<u32, Malformed> {
    Reader::new(payload).u32()
}

impl Execute {
    /// Parses an execute payload (after the command byte) for a statement with
    /// `param_count` parameters. `types` holds the types from an earlier execute and is
    /// updated when this one binds new ones. `long_data` holds SEND_LONG_DATA values.
    pub fn parse(
        payload: &Bytes,
        param_count: usize,
        types: &mut Vec<(u8, bool)>,
        long_data: &mut [Option<BytesMut>],
    ) -> Result<Execute, Malformed> {
        let mut r = Reader::new(payload);
        let statement_id = r.u32()?;
        let flags = r.u8()?;
        let _iterations = r.u32()?;
        let mut params = Vec::with_capacity(param_count);
        if param_count > 0 {
            let null_bitmap = r.take(param_count.div_ceil(8))?;
            let new_bound = r.u8()?;
            if new_bound == 1 {
                types.clear();
                for _ in 0..param_count {
                    let t = r.u8()?;
                    let f = r.u8()?;
                    types.push((t, f & 0x80 != 0));
                }
            }
            if types.len() != param_count {
                return Err(Malformed);
            }
            for i in 0..param_count {
                let (t, unsigned) = types[i];
                let is_null = null_bitmap[i / 8] & (1 << (i % 8)) != 0;
                let long = long_data.get_mut(i).and_then(|d| d.take());
                let from_long_data = long.is_some();
                let value = if let Some(data) = long {
                    Some(data.freeze())
                } else if is_null || t == MYSQL_TYPE_NULL {
                    None
                } else {
                    let v = read_binary_value(&mut r, t)?;
                    // A view into the packet, not a copy.
                    let start = v.as_ptr() as usize - payload.as_ptr() as usize;
                    Some(payload.slice(start..start + v.len()))
                };
                let column_type = if value.is_some() && t == MYSQL_TYPE_NULL {
                    MYSQL_TYPE_BLOB
                } else if from_long_data && (is_fixed_width(t) || is_temporal(t)) {
                    // Long data is a string whatever type the parameter was declared
                    // with (MySQL converts it as one); re-encoding it as the declared
                    // fixed-width type would misframe the packet.
                    MYSQL_TYPE_VAR_STRING
                } else {
                    t
                };
                params.push(Param {
                    column_type,
                    unsigned,
                    value,
                });
            }
        }
        Ok(Execute {
            statement_id,
            flags,
            params,
        })
    }

    /// The execute payload (command byte included) for a backend statement id.
    pub fn encode(&self, backend_id: u32) -> BytesMut {
        let mut b = BytesMut::with_capacity(16 + self.params.len() * 10);
        self.encode_into(backend_id, &mut b);
        b
    }

    /// Appends the execute payload (command byte included) to `b`.
    pub fn encode_into(&self, backend_id: u32, b: &mut BytesMut) {
        b.put_u8(COM_STMT_EXECUTE);
        b.put_u32_le(backend_id);
        b.put_u8(0); // no cursor: results are read fully
        b.put_u32_le(1);
        if !self.params.is_empty() {
            for chunk in self.params.chunks(8) {
                let mut byte = 0u8;
                for (i, p) in chunk.iter().enumerate() {
                    if p.value.is_none() {
                        byte |= 1 << i;
                    }
                }
                b.put_u8(byte);
            }
            b.put_u8(1);
            for p in &self.params {
                b.put_u8(p.column_type);
                b.put_u8(if p.unsigned { 0x80 } else { 0 });
            }
            for p in &self.params {
                if let Some(v) = &p.value {
                    if is_fixed_width(p.column_type) || is_temporal(p.column_type) {
                        b.put_slice(v);
                    } else {
                        put_lenenc_bytes(b, v);
                    }
                }
            }
        }
    }
}

/// Types whose binary value has a fixed width (no length prefix).
fn is_fixed_width(t: u8) -> bool {
    matches!(
        t,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_YEAR
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_DOUBLE
    )
}

/// Reads one binary-protocol value of type `t`, returning its bytes. Variable-length
/// values are returned without their length prefix; temporal values with theirs.
fn read_binary_value<'a>(r: &mut Reader<'a>, t: u8) -> Result<&'a [u8], Malformed> {
    match t {
        MYSQL_TYPE_TINY => r.take(1),
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => r.take(2),
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 | MYSQL_TYPE_FLOAT => r.take(4),
        MYSQL_TYPE_LONGLONG | MYSQL_TYPE_DOUBLE => r.take(8),
        MYSQL_TYPE_DATE
        | MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_TIME
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_TIME2 => {
            let start = r.rest();
            let n = r.u8()? as usize;
            r.skip(n)?;
            Ok(&start[..n + 1])
        }
        _ => r.lenenc_bytes(),
    }
}

impl Param {
    /// The value as a vindex sees it.
    pub fn to_sql_value(&self) -> SqlValue {
        let Some(v) = &self.value else {
            return SqlValue::Null;
        };
        let le = |n: usize| -> u64 {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&v[..n]);
            u64::from_le_bytes(a)
        };
        match self.column_type {
            MYSQL_TYPE_TINY if v.len() == 1 => {
                if self.unsigned {
                    SqlValue::UInt(v[0] as u64)
                } else {
                    SqlValue::Int(v[0] as i8 as i64)
                }
            }
            MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR if v.len() == 2 => {
                let n = le(2) as u16;
                if self.unsigned {
                    SqlValue::UInt(n as u64)
                } else {
                    SqlValue::Int(n as i16 as i64)
                }
            }
            MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 if v.len() == 4 => {
                let n = le(4) as u32;
                if self.unsigned {
                    SqlValue::UInt(n as u64)
                } else {
                    SqlValue::Int(n as i32 as i64)
                }
            }
            MYSQL_TYPE_LONGLONG if v.len() == 8 => {
                let n = le(8);
                if self.unsigned {
                    SqlValue::UInt(n)
                } else {
                    SqlValue::Int(n as i64)
                }
            }
            MYSQL_TYPE_FLOAT if v.len() == 4 => {
                SqlValue::Float(f32::from_le_bytes([v[0], v[1], v[2], v[3]]) as f64)
            }
            MYSQL_TYPE_DOUBLE if v.len() == 8 => SqlValue::Float(f64::from_bits(le(8))),
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => {
                SqlValue::Decimal(String::from_utf8_lossy(v).into_owned())
            }
            _ if is_temporal(self.column_type) => {
                SqlValue::Bytes(temporal_text(self.column_type, v).into_bytes())
            }
            _ => SqlValue::Bytes(v.to_vec()),
        }
    }

    /// A BLOB-typed parameter: MySQL takes its value as a binary string (other string
    /// types are text in the client's character set).
    pub fn is_binary(&self) -> bool {
        matches!(
            self.column_type,
            MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB
        )
    }

    /// The value as an SQL literal, for statements sent as text, in the lossless view of
    /// the client's character set `cs`. `no_backslash_escapes` follows the session's
    /// sql_mode so quoting is read back exactly. BLOB parameters become hex strings
    /// (binary, as MySQL takes them); a DECIMAL that is not a number is sent as a string.
    pub fn write_literal(&self, out: &mut String, cs: Charset, no_backslash_escapes: bool) {
        if self.is_binary() {
            if let Some(v) = &self.value {
                out.push_str("X'");
                for x in v.iter() {
                    let _ = write!(out, "{x:02X}");
                }
                out.push('\'');
                return;
            }
        }
        match self.to_sql_value() {
            SqlValue::Null => out.push_str("NULL"),
            SqlValue::Int(i) => {
                let _ = write!(out, "{i}");
            }
            SqlValue::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            SqlValue::Float(f) => {
                if f.is_finite() {
                    let _ = write!(out, "{f:e}");
                } else {
                    out.push_str("NULL");
                }
            }
            SqlValue::Decimal(d) if is_decimal_text(&d) => out.push_str(&d),
            SqlValue::Decimal(d) => quote_bytes(out, d.as_bytes(), cs, no_backslash_escapes),
            SqlValue::Bytes(b) => quote_bytes(out, &b, cs, no_backslash_escapes),
        }
    }
}

fn is_temporal(t: u8) -> bool {
    matches!(
        t,
        MYSQL_TYPE_DATE
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_TIME2
    )
}

/// A binary DATE/DATETIME/TIMESTAMP/TIME value (with its length byte) as text.
pub fn temporal_text(t: u8, v: &[u8]) -> String {
    let n = v.first().copied().unwrap_or(0) as usize;
    let d = &v[1.min(v.len())..];
    let get = |i: usize| d.get(i).copied().unwrap_or(0) as u32;
    let get32 = |i: usize| {
        u32::from_le_bytes([
            d.get(i).copied().unwrap_or(0),
            d.get(i + 1).copied().unwrap_or(0),
            d.get(i + 2).copied().unwrap_or(0),
            d.get(i + 3).copied().unwrap_or(0),
        ])
    };
    if matches!(t, MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2) {
        if n == 0 {
            return "00:00:00".into();
        }
        let neg = get(0) == 1;
        let days = get32(1);
        // Client values: days up to 2^32 must not overflow the hour count.
        let (h, m, s) = (get(5) as u64 + days as u64 * 24, get(6), get(7));
        let mut out = format!("{}{:02}:{:02}:{:02}", if neg { "-" } else { "" }, h, m, s);
        if n >= 12 {
            let _ = write!(out, ".{:06}", get32(8));
        }
        return out;
    }
    if n == 0 {
        return "0000-00-00 00:00:00".into();
    }
    let year = get(0) | (get(1) << 8);
    let mut out = format!("{:04}-{:02}-{:02}", year, get(2), get(3));
    if t != MYSQL_TYPE_DATE && n >= 7 {
        let _ = write!(out, " {:02}:{:02}:{:02}", get(4), get(5), get(6));
        if n >= 11 {
            let _ = write!(out, ".{:06}", get32(7));
        }
    } else if t != MYSQL_TYPE_DATE {
        out.push_str(" 00:00:00");
    }
    out
}

/// A number as MySQL writes a DECIMAL: sign, digits, point, exponent; nothing else.
fn is_decimal_text(d: &str) -> bool {
    let b = d.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac;
    }
    if int + frac == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Writes `b` (text in the client's character set `cs`) as a quoted string literal that
/// reads back byte for byte: the bytes go out as they came (through the lossless view),
/// with quotes, and under backslash escapes backslashes and NULs, escaped wherever they
/// are characters of their own (never inside a multi-byte character).
pub fn quote_bytes(out: &mut String, b: &[u8], cs: Charset, no_backslash_escapes: bool) {
    let view = charset::decode(b, cs);
    out.reserve(view.len() + 2);
    out.push('\'');
    for c in view.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if !no_backslash_escapes => out.push_str("\\\\"),
            '\0' if !no_backslash_escapes => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(types: &[(u8, &[u8])], send_types: bool, nulls: u8) -> Vec<u8> {
        let mut b = vec![7, 0, 0, 0, 0, 1, 0, 0, 0];
        b.push(nulls);
        b.push(send_types as u8);
        if send_types {
            for (t, _) in types {
                b.push(*t);
                b.push(0);
            }
        }
        for (i, (_, v)) in types.iter().enumerate() {
            if nulls & (1 << i) == 0 {
                b.extend_from_slice(v);
            }
        }
        b
    }

    #[test]
    fn parses_values_and_remembers_types() {
        let p = payload(
            &[
                (MYSQL_TYPE_LONGLONG, &5000u64.to_le_bytes()),
                (MYSQL_TYPE_VAR_STRING, b"\x03abc"),
            ],
            true,
            0,
        );
        let mut types = Vec::new();
        let mut long = vec![None, None];
        let e = Execute::parse(&Bytes::from(p), 2, &mut types, &mut long).unwrap();
        assert_eq!(e.statement_id, 7);
        assert_eq!(e.params[0].to_sql_value(), SqlValue::Int(5000));
        assert_eq!(e.params[1].to_sql_value(), SqlValue::Bytes(b"abc".to_vec()));
        // A later execute without types reuses them.
        let p2 = payload(&[(0, &9u64.to_le_bytes()), (0, b"\x01z")], false, 0);
        let e2 = Execute::parse(&Bytes::from(p2), 2, &mut types, &mut long).unwrap();
        assert_eq!(e2.params[0].to_sql_value(), SqlValue::Int(9));
        // Re-encoding always carries types and round-trips.
        let enc = e2.encode(99);
        let e3 = Execute::parse(&enc.freeze().slice(1..), 2, &mut Vec::new(), &mut long).unwrap();
        assert_eq!(e3.statement_id, 99);
        assert_eq!(e3.params, e2.params);
    }

    #[test]
    fn nulls_and_missing_types() {
        let p = payload(&[(MYSQL_TYPE_LONG, &[1, 0, 0, 0])], true, 1);
        let e = Execute::parse(&Bytes::from(p), 1, &mut Vec::new(), &mut [None]).unwrap();
        assert_eq!(e.params[0].value, None);
        let p = payload(&[(0, &[1, 0, 0, 0])], false, 0);
        assert!(Execute::parse(&Bytes::from(p), 1, &mut Vec::new(), &mut [None]).is_err());
        assert!(Execute::parse(
            &Bytes::from_static(&[1, 2]),
            1,
            &mut Vec::new(),
            &mut [None]
        )
        .is_err());
    }

    #[test]
    fn literals_quote_safely() {
        let utf8 = Charset::UTF8MB4;
        let mut s = String::new();
        quote_bytes(&mut s, b"it's a \\ test", utf8, false);
        assert_eq!(s, "'it''s a \\\\ test'");
        let mut s = String::new();
        quote_bytes(&mut s, b"a\\b", utf8, true);
        assert_eq!(s, "'a\\b'");
        // Bytes that are not UTF-8 go out as they came.
        let mut s = String::new();
        quote_bytes(&mut s, &[0xff, 0x00], utf8, false);
        assert_eq!(&*charset::encode(&s), b"'\xff\\0'");
        // A GBK character whose second byte is 0x5C is one character, not a backslash.
        let gbk = Charset::from_name("gbk").unwrap();
        let mut s = String::new();
        quote_bytes(&mut s, b"\x81\x5c'", gbk, false);
        assert_eq!(&*charset::encode(&s), b"'\x81\x5c'''");
        // DECIMAL parameters are numbers or strings, never SQL.
        for (text, lit) in [
            ("1.50", "1.50"),
            ("-2e3", "-2e3"),
            ("1;DROP", "'1;DROP'"),
            ("", "''"),
        ] {
            let p = Param {
                column_type: MYSQL_TYPE_NEWDECIMAL,
                unsigned: false,
                value: Some(Bytes::copy_from_slice(text.as_bytes())),
            };
            let mut s = String::new();
            p.write_literal(&mut s, utf8, false);
            assert_eq!(s, lit);
        }
        let p = Param {
            column_type: MYSQL_TYPE_BLOB,
            unsigned: false,
            value: Some(Bytes::from_static(b"\x00'")),
        };
        let mut s = String::new();
        p.write_literal(&mut s, utf8, false);
        assert_eq!(s, "X'0027'");
        let p = Param {
            column_type: MYSQL_TYPE_DATETIME,
            unsigned: false,
            value: Some(Bytes::from_static(&[7, 0xe8, 0x07, 3, 9, 10, 11, 12])),
        };
        let mut s = String::new();
        p.write_literal(&mut s, Charset::UTF8MB4, false);
        assert_eq!(s, "'2024-03-09 10:11:12'");
    }
}
