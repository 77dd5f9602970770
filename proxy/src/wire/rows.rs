//! Row encodings: text-protocol rows (length-encoded cells) and binary-protocol rows
//! (for prepared statements), built from text cells the proxy merged itself.

use super::codec::put_lenenc_bytes;
use super::consts::*;
use super::packets::ColumnDef;
use bytes::{BufMut, Bytes, BytesMut};

/// Appends a text-protocol row.
pub fn put_text_row(b: &mut BytesMut, cells: &[Option<Bytes>]) {
    for c in cells {
        match c {
            None => b.put_u8(0xfb),
            Some(v) => put_lenenc_bytes(b, v),
        }
    }
}

/// Appends a binary-protocol row for `columns` from text cells.
pub fn put_binary_row(b: &mut BytesMut, columns: &[ColumnDef], cells: &[Option<Bytes>]) {
    b.put_u8(0x00);
    let n = columns.len().min(cells.len());
    let bitmap_len = (n + 7 + 2) / 8;
    let at = b.len();
    b.put_bytes(0, bitmap_len);
    for (i, (col, cell)) in columns.iter().zip(cells).enumerate() {
        let Some(v) = cell else {
            let bit = i + 2;
            b[at + bit / 8] |= 1 << (bit % 8);
            continue;
        };
        put_binary_value(b, col, v);
    }
}

fn text(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap_or("0")
}

fn put_binary_value(b: &mut BytesMut, col: &ColumnDef, v: &[u8]) {
    let unsigned = col.is_unsigned();
    let int = |s: &str| -> i128 { s.trim().parse::<i128>().unwrap_or(0) };
    match col.column_type {
        MYSQL_TYPE_TINY => b.put_u8(int(text(v)) as u8),
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => b.put_u16_le(int(text(v)) as u16),
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 => b.put_u32_le(int(text(v)) as u32),
        MYSQL_TYPE_LONGLONG => {
            let n = int(text(v));
            if unsigned {
                b.put_u64_le(n as u64)
            } else {
                b.put_i64_le(n as i64)
            }
        }
        MYSQL_TYPE_FLOAT => b.put_f32_le(text(v).parse().unwrap_or(0.0)),
        MYSQL_TYPE_DOUBLE => b.put_f64_le(text(v).parse().unwrap_or(0.0)),
        MYSQL_TYPE_DATE
        | MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_NEWDATE
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2 => put_datetime(b, text(v)),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => put_time(b, text(v)),
        _ => put_lenenc_bytes(b, v),
    }
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` as the binary DATETIME structure.
fn put_datetime(b: &mut BytesMut, s: &str) {
    let nums: Vec<u32> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| nums.get(i).copied().unwrap_or(0);
    let micros = s
        .split_once('.')
        .map(|(_, f)| {
            let digits: String = f.chars().take(6).collect();
            format!("{digits:0<6}").parse::<u32>().unwrap_or(0)
        })
        .unwrap_or(0);
    let (y, mo, d, h, mi, se) = (g(0), g(1), g(2), g(3), g(4), g(5));
    if micros != 0 {
        b.put_u8(11);
    } else if h != 0 || mi != 0 || se != 0 {
        b.put_u8(7);
    } else if y != 0 || mo != 0 || d != 0 {
        b.put_u8(4);
    } else {
        b.put_u8(0);
        return;
    }
    b.put_u16_le(y as u16);
    b.put_u8(mo as u8);
    b.put_u8(d as u8);
    if h != 0 || mi != 0 || se != 0 || micros != 0 {
        b.put_u8(h as u8);
        b.put_u8(mi as u8);
        b.put_u8(se as u8);
    }
    if micros != 0 {
        b.put_u32_le(micros);
    }
}

/// `[-]HHH:MM:SS[.ffffff]` as the binary TIME structure.
fn put_time(b: &mut BytesMut, s: &str) {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let parts: Vec<u32> = hms.split(':').map(|p| p.parse().unwrap_or(0)).collect();
    let g = |i: usize| parts.get(i).copied().unwrap_or(0);
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(6).collect();
        format!("{digits:0<6}").parse::<u32>().unwrap_or(0)
    };
    let (hours, m, sec) = (g(0), g(1), g(2));
    if hours == 0 && m == 0 && sec == 0 && micros == 0 {
        b.put_u8(0);
        return;
    }
    b.put_u8(if micros != 0 { 12 } else { 8 });
    b.put_u8(neg as u8);
    b.put_u32_le(hours / 24);
    b.put_u8((hours % 24) as u8);
    b.put_u8(m as u8);
    b.put_u8(sec as u8);
    if micros != 0 {
        b.put_u32_le(micros);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::params::temporal_text;

    fn col(t: u8) -> ColumnDef {
        ColumnDef {
            column_type: t,
            ..ColumnDef::text("c")
        }
    }

    #[test]
    fn binary_rows_carry_nulls_and_types() {
        let cols = vec![
            col(MYSQL_TYPE_LONGLONG),
            col(MYSQL_TYPE_VAR_STRING),
            col(MYSQL_TYPE_DOUBLE),
        ];
        let mut b = BytesMut::new();
        put_binary_row(
            &mut b,
            &cols,
            &[
                Some(Bytes::from_static(b"-5")),
                None,
                Some(Bytes::from_static(b"1.5")),
            ],
        );
        assert_eq!(b[0], 0);
        assert_eq!(
            b[1], 0b0000_1000,
            "second column is NULL (bit 3 with the offset of 2)"
        );
        assert_eq!(&b[2..10], &(-5i64).to_le_bytes());
        assert_eq!(&b[10..18], &1.5f64.to_le_bytes());
    }

    #[test]
    fn temporal_values_round_trip_through_the_binary_form() {
        for (t, s) in [
            (MYSQL_TYPE_DATETIME, "2024-03-09 10:11:12"),
            (MYSQL_TYPE_DATETIME, "2024-03-09 10:11:12.000500"),
            (MYSQL_TYPE_DATE, "2024-03-09"),
            (MYSQL_TYPE_TIME, "-25:01:02"),
        ] {
            let mut b = BytesMut::new();
            put_binary_value(&mut b, &col(t), s.as_bytes());
            assert_eq!(temporal_text(t, &b), s, "{s}");
        }
    }
}
