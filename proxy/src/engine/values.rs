//! Comparing and combining text-protocol values the way MySQL does, by column type.
//!
//! Numbers compare as numbers (integers exactly, DECIMAL exactly via BigDecimal, FLOAT and
//! DOUBLE as f64); strings compare through their WEIGHT_STRING helper column when the
//! plan has one (the collation's own order), else as bytes; NULL sorts first.

use crate::planner::plan::{ArithOp, Col, CompareOp, Scalar, SortKey};
use crate::wire::consts::*;
use crate::wire::ColumnDef;
use bigdecimal::BigDecimal;
use bytes::Bytes;
use std::cmp::Ordering;
use std::str::FromStr;

/// How values of a column compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Decimal,
    Float,
    Time,
    /// A string in a character set: compared through its WEIGHT_STRING helper.
    Text,
    Bytes,
}

pub fn kind_of(c: &ColumnDef) -> Kind {
    let stringish = matches!(
        c.column_type,
        MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_SET
    );
    if stringish && c.charset != CHARSET_BINARY {
        return Kind::Text;
    }
    match c.column_type {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG
        | MYSQL_TYPE_INT24 | MYSQL_TYPE_YEAR => Kind::Int,
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
        MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => Kind::Float,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::Time,
        _ => Kind::Bytes,
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

/// Seconds (with fraction) of a TIME value like `-838:59:59.000000`.
fn time_value(b: &[u8]) -> f64 {
    let s = text(b);
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut total = 0.0;
    for part in s.split(':') {
        total = total * 60.0 + part.parse::<f64>().unwrap_or(0.0);
    }
    if neg {
        -total
    } else {
        total
    }
}

/// Compares two non-NULL values of a column of `kind`.
pub fn compare_values(kind: Kind, a: &[u8], b: &[u8]) -> Ordering {
    match kind {
        Kind::Int => match (text(a).parse::<i128>(), text(b).parse::<i128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        Kind::Decimal => match (BigDecimal::from_str(text(a)), BigDecimal::from_str(text(b))) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        Kind::Float => {
            let x = text(a).parse::<f64>().unwrap_or(f64::NAN);
            let y = text(b).parse::<f64>().unwrap_or(f64::NAN);
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        Kind::Time => time_value(a)
            .partial_cmp(&time_value(b))
            .unwrap_or(Ordering::Equal),
        Kind::Text | Kind::Bytes => a.cmp(b),
    }
}

/// Compares optional cells (NULL first).
pub fn compare_cells(kind: Kind, a: Option<&Bytes>, b: Option<&Bytes>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare_values(kind, x, y),
    }
}

/// A sort key resolved against the actual row width and column kinds.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub col: usize,
    pub weight: Option<usize>,
    pub desc: bool,
    pub kind: Kind,
}

impl Key {
    pub fn resolve(k: &SortKey, columns: &[ColumnDef]) -> Key {
        let col = k.col.index(columns.len());
        Key {
            col,
            weight: k.weight.map(|w| w.index(columns.len())),
            desc: k.desc,
            kind: columns.get(col).map(kind_of).unwrap_or(Kind::Bytes),
        }
    }

    /// Compares two rows on this key, ascending (ignores `desc`). Strings compare through
    /// their weight (the collation's order); numbers and dates by value.
    pub fn compare(&self, a: &[Option<Bytes>], b: &[Option<Bytes>]) -> Ordering {
        if let (Some(w), Kind::Text) = (self.weight, self.kind) {
            let (wa, wb) = (
                a.get(w).and_then(|c| c.as_ref()),
                b.get(w).and_then(|c| c.as_ref()),
            );
            if wa.is_some() || wb.is_some() {
                // A NULL weight with a non-NULL value cannot happen for strings; NULL values
                // have NULL weights and sort first either way.
                return compare_cells(Kind::Bytes, wa, wb);
            }
        }
        compare_cells(
            self.kind,
            a.get(self.col).and_then(|c| c.as_ref()),
            b.get(self.col).and_then(|c| c.as_ref()),
        )
    }
}

/// Compares rows on several keys, honouring each key's direction.
pub fn compare_rows(keys: &[Key], a: &[Option<Bytes>], b: &[Option<Bytes>]) -> Ordering {
    for k in keys {
        let o = k.compare(a, b);
        let o = if k.desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// An exact number for sums: integers and decimals as BigDecimal, floats as f64.
#[derive(Debug, Clone)]
pub enum Num {
    Exact(BigDecimal),
    Float(f64),
}

impl Num {
    pub fn parse(kind: Kind, b: &[u8]) -> Option<Num> {
        match kind {
            Kind::Float => text(b).parse().ok().map(Num::Float),
            _ => BigDecimal::from_str(text(b)).ok().map(Num::Exact),
        }
    }

    pub fn plus(self, other: Num) -> Num {
        match (self, other) {
            (Num::Exact(a), Num::Exact(b)) => Num::Exact(a + b),
            (Num::Float(a), Num::Float(b)) => Num::Float(a + b),
            (Num::Exact(a), Num::Float(b)) | (Num::Float(b), Num::Exact(a)) => {
                Num::Float(a.to_string().parse::<f64>().unwrap_or(0.0) + b)
            }
        }
    }

    /// Renders with `decimals` digits after the point (exact values), as MySQL prints.
    pub fn render(&self, decimals: u8) -> String {
        match self {
            Num::Exact(d) => {
                if decimals >= 31 {
                    d.normalized().to_string()
                } else {
                    d.with_scale_round(decimals as i64, bigdecimal::RoundingMode::HalfUp)
                        .to_plain_string()
                }
            }
            Num::Float(f) => format_double(*f),
        }
    }
}

/// A double as MariaDB prints it (shortest text that reads back the same value).
pub fn format_double(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        let s = format!("{f}");
        if s.len() > 20 {
            format!("{f:e}")
        } else {
            s
        }
    }
}

/// A value computed by the proxy for HAVING.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Num(f64),
    Str(Vec<u8>),
}

fn cell_value(row: &[Option<Bytes>], col: Col, columns: &[ColumnDef]) -> Value {
    let i = col.index(row.len());
    match row.get(i).and_then(|c| c.as_ref()) {
        None => Value::Null,
        Some(b) => match columns.get(i).map(kind_of) {
            Some(Kind::Int | Kind::Decimal | Kind::Float) => text(b)
                .parse()
                .map(Value::Num)
                .unwrap_or(Value::Str(b.to_vec())),
            _ => Value::Str(b.to_vec()),
        },
    }
}

fn eval(s: &Scalar, row: &[Option<Bytes>], columns: &[ColumnDef]) -> Value {
    match s {
        Scalar::Col(c) => cell_value(row, *c, columns),
        Scalar::Literal(l) => l
            .parse()
            .map(Value::Num)
            .unwrap_or(Value::Str(l.clone().into_bytes())),
        Scalar::Null => Value::Null,
        Scalar::Arith(op, a, b) => match (eval(a, row, columns), eval(b, row, columns)) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (x, y) => {
                let (x, y) = (as_num(&x), as_num(&y));
                match op {
                    ArithOp::Add => Value::Num(x + y),
                    ArithOp::Sub => Value::Num(x - y),
                    ArithOp::Mul => Value::Num(x * y),
                    ArithOp::Div if y == 0.0 => Value::Null,
                    ArithOp::Div => Value::Num(x / y),
                }
            }
        },
        other => match truth(other, row, columns) {
            None => Value::Null,
            Some(true) => Value::Num(1.0),
            Some(false) => Value::Num(0.0),
        },
    }
}

fn as_num(v: &Value) -> f64 {
    match v {
        Value::Num(n) => *n,
        Value::Str(s) => {
            // MySQL reads the leading number of a string.
            let t = text(s).trim();
            let end = t
                .char_indices()
                .take_while(|(i, c)| {
                    c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '-' || *c == '+'))
                })
                .count();
            t[..end].parse().unwrap_or(0.0)
        }
        Value::Null => 0.0,
    }
}

/// Three-valued truth of a condition (None is SQL NULL).
pub fn truth(s: &Scalar, row: &[Option<Bytes>], columns: &[ColumnDef]) -> Option<bool> {
    match s {
        Scalar::And(a, b) => match (truth(a, row, columns), truth(b, row, columns)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Scalar::Or(a, b) => match (truth(a, row, columns), truth(b, row, columns)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Scalar::Not(a) => truth(a, row, columns).map(|t| !t),
        Scalar::IsNull(a, is) => {
            let null = matches!(eval(a, row, columns), Value::Null);
            Some(null == *is)
        }
        Scalar::Compare(op, a, b) => {
            let (x, y) = (eval(a, row, columns), eval(b, row, columns));
            let o = match (&x, &y) {
                (Value::Null, _) | (_, Value::Null) => return None,
                (Value::Str(p), Value::Str(q)) => p.cmp(q),
                _ => as_num(&x)
                    .partial_cmp(&as_num(&y))
                    .unwrap_or(Ordering::Equal),
            };
            Some(match op {
                CompareOp::Eq => o == Ordering::Equal,
                CompareOp::NotEq => o != Ordering::Equal,
                CompareOp::Lt => o == Ordering::Less,
                CompareOp::LtEq => o != Ordering::Greater,
                CompareOp::Gt => o == Ordering::Greater,
                CompareOp::GtEq => o != Ordering::Less,
            })
        }
        other => match eval(other, row, columns) {
            Value::Null => None,
            v => Some(as_num(&v) != 0.0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_numbers() {
        assert_eq!(compare_values(Kind::Int, b"9", b"10"), Ordering::Less);
        assert_eq!(compare_values(Kind::Int, b"-5", b"3"), Ordering::Less);
        assert_eq!(
            compare_values(Kind::Decimal, b"10.50", b"9.9"),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(Kind::Float, b"1e3", b"999.5"),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(Kind::Time, b"-01:00:00", b"00:30:00"),
            Ordering::Less
        );
        assert_eq!(
            compare_cells(Kind::Int, None, Some(&Bytes::from_static(b"1"))),
            Ordering::Less
        );
    }

    #[test]
    fn sums_are_exact_and_rendered_with_the_column_scale() {
        let a = Num::parse(Kind::Decimal, b"0.10").unwrap();
        let b = Num::parse(Kind::Decimal, b"0.20").unwrap();
        assert_eq!(a.plus(b).render(2), "0.30");
        let big = Num::parse(Kind::Int, b"9223372036854775807").unwrap();
        assert_eq!(big.clone().plus(big).render(0), "18446744073709551614");
        assert_eq!(
            Num::Exact(BigDecimal::from_str("2.5").unwrap()).render(0),
            "3"
        );
        assert_eq!(format_double(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_double(3.0), "3");
    }
}
