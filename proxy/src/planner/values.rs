//! Values the planner can route by: literals written in the statement and `?`
//! placeholders bound at execution.

use super::edit::TextIndex;
use crate::wire::charset::{self, Charset};
use serde::Serialize;
use shardgate_topology::SqlValue;
use sqlparser::ast::{Expr, UnaryOperator, Value};

/// A value known at plan time (a literal) or at execution (a placeholder).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueExpr {
    /// A literal; `text` is exactly how the statement wrote it. A string's `value` holds
    /// the client's bytes; `binary` says they are final (X'..', `_binary'..'`, or text
    /// with an explicit character set, already converted), else they are text in the
    /// session's character set.
    Literal {
        #[serde(skip)]
        value: SqlValue,
        text: String,
        #[serde(skip)]
        binary: bool,
    },
    /// The i-th `?` of the statement.
    Param(usize),
}

impl ValueExpr {
    /// The value, given the bound parameters (as SqlValues) for placeholders.
    pub fn resolve(&self, params: &[SqlValue]) -> Option<SqlValue> {
        match self {
            ValueExpr::Literal { value, .. } => Some(value.clone()),
            ValueExpr::Param(i) => params.get(*i).cloned(),
        }
    }

    /// The value a vindex maps: what the column stores. Text a client wrote in another
    /// character set is converted to UTF-8 (what utf8mb4 columns hold); binary strings
    /// (X'..', `_binary'..'`, BLOB-typed parameters) stay as they are.
    pub fn routing_value(
        &self,
        params: Option<&crate::wire::params::Execute>,
        cs: Charset,
    ) -> Option<SqlValue> {
        let text = |v: SqlValue| match v {
            SqlValue::Bytes(b) if !cs.is_utf8() => SqlValue::Bytes(cs.to_utf8(&b).into_owned()),
            other => other,
        };
        match self {
            ValueExpr::Literal {
                value,
                binary: true,
                ..
            } => Some(value.clone()),
            ValueExpr::Literal { value, .. } => Some(text(value.clone())),
            ValueExpr::Param(i) => {
                let p = params.and_then(|p| p.params.get(*i))?;
                let v = p.to_sql_value();
                Some(if p.is_binary() { v } else { text(v) })
            }
        }
    }
}

pub use super::sqltext::placeholder_offsets;

/// The value of a routing expression: a literal (possibly negated) or a placeholder.
pub fn value_of(expr: &Expr, idx: &TextIndex<'_>, placeholders: &[usize]) -> Option<ValueExpr> {
    match expr {
        Expr::Nested(e) => value_of(e, idx, placeholders),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } => match value_of(inner, idx, placeholders)? {
            ValueExpr::Literal {
                value: SqlValue::Int(i),
                text,
                ..
            } => Some(ValueExpr::Literal {
                value: SqlValue::Int(-i),
                text: format!("-{text}"),
                binary: false,
            }),
            ValueExpr::Literal {
                value: SqlValue::UInt(u),
                text,
                ..
            } if u == 1u64 << 63 => Some(ValueExpr::Literal {
                value: SqlValue::Int(i64::MIN),
                text: format!("-{text}"),
                binary: false,
            }),
            ValueExpr::Literal {
                value: SqlValue::Decimal(d),
                text,
                ..
            } => Some(ValueExpr::Literal {
                value: SqlValue::Decimal(format!("-{d}")),
                text: format!("-{text}"),
                binary: false,
            }),
            _ => None,
        },
        Expr::Value(v) => {
            let text = idx.slice(v.span).map(str::to_string);
            match &v.value {
                Value::Placeholder(p) if p == "?" => {
                    let (start, _) = idx.range(v.span)?;
                    placeholders
                        .iter()
                        .position(|&o| o == start)
                        .map(ValueExpr::Param)
                }
                // A placeholder moved into a part planned on its own (`:sg_p<i>`: the
                // i-th `?` of the whole statement).
                Value::Placeholder(p) if p.starts_with(":sg_p") => {
                    p[5..].parse().ok().map(ValueExpr::Param)
                }
                Value::Number(n, _) => {
                    let value = if let Ok(i) = n.parse::<i64>() {
                        SqlValue::Int(i)
                    } else if let Ok(u) = n.parse::<u64>() {
                        SqlValue::UInt(u)
                    } else if n.contains(['e', 'E']) {
                        SqlValue::Float(n.parse().ok()?)
                    } else {
                        SqlValue::Decimal(n.clone())
                    };
                    Some(ValueExpr::Literal {
                        value,
                        text: text.unwrap_or_else(|| n.clone()),
                        binary: false,
                    })
                }
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    // The view's escapes become the client's bytes again.
                    Some(ValueExpr::Literal {
                        value: SqlValue::Bytes(charset::encode(s).into_owned()),
                        text: text?,
                        binary: false,
                    })
                }
                Value::HexStringLiteral(h) => {
                    let bytes = shardgate_topology::keyrange::unhex(h)?;
                    Some(ValueExpr::Literal {
                        value: SqlValue::Bytes(bytes),
                        text: text?,
                        binary: true,
                    })
                }
                Value::Null => Some(ValueExpr::Literal {
                    value: SqlValue::Null,
                    text: "NULL".into(),
                    binary: false,
                }),
                _ => None,
            }
        }
        Expr::Prefixed { prefix, value } if prefix.value.starts_with('_') => {
            // `_binary'..'`, `_utf8mb4'..'`, `_latin1 X'..'`: bytes in a named character set.
            let Expr::Value(v) = &**value else {
                return None;
            };
            let raw = match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    charset::encode(s).into_owned()
                }
                Value::HexStringLiteral(h) => shardgate_topology::keyrange::unhex(h)?,
                _ => return None,
            };
            let cs = Charset::from_name(&prefix.value[1..])?;
            let (a, _) = idx.range(prefix.span)?;
            let (_, z) = idx.range(v.span)?;
            Some(ValueExpr::Literal {
                value: SqlValue::Bytes(cs.to_utf8(&raw).into_owned()),
                text: idx.text().get(a..z)?.to_string(),
                binary: true,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::parser::Parser;

    fn where_rhs(sql: &str) -> Option<ValueExpr> {
        let stmt = Parser::parse_sql(&MySqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap();
        let sqlparser::ast::Statement::Query(q) = stmt else {
            panic!()
        };
        let sqlparser::ast::SetExpr::Select(s) = *q.body else {
            panic!()
        };
        let Some(Expr::BinaryOp { right, .. }) = s.selection else {
            panic!()
        };
        let idx = TextIndex::new(sql);
        value_of(&right, &idx, &placeholder_offsets(sql))
    }

    #[test]
    fn literals_and_placeholders() {
        assert_eq!(
            where_rhs("select 1 from t where id = 42"),
            Some(ValueExpr::Literal {
                value: SqlValue::Int(42),
                text: "42".into(),
                binary: false,
            })
        );
        assert_eq!(
            where_rhs("select 1 from t where id = -7"),
            Some(ValueExpr::Literal {
                value: SqlValue::Int(-7),
                text: "-7".into(),
                binary: false,
            })
        );
        assert_eq!(
            where_rhs("select '?', ? from t where id = ?"),
            Some(ValueExpr::Param(1))
        );
        assert_eq!(
            where_rhs("select 1 from t where name = 'it''s'"),
            Some(ValueExpr::Literal {
                value: SqlValue::Bytes(b"it's".to_vec()),
                text: "'it''s'".into(),
                binary: false,
            })
        );
        assert_eq!(where_rhs("select 1 from t where id = a + 1"), None);
        // Introduced strings carry final bytes; hex literals are binary.
        assert_eq!(
            where_rhs("select 1 from t where k = _latin1'\u{10FFE9}'"),
            Some(ValueExpr::Literal {
                value: SqlValue::Bytes("é".as_bytes().to_vec()),
                text: "_latin1'\u{10FFE9}'".into(),
                binary: true,
            })
        );
        assert!(matches!(
            where_rhs("select 1 from t where k = X'E9'"),
            Some(ValueExpr::Literal { binary: true, .. })
        ));
        // A string's value is the client's bytes, not the view's escapes.
        assert_eq!(
            where_rhs("select 1 from t where k = '\u{10FFE9}'"),
            Some(ValueExpr::Literal {
                value: SqlValue::Bytes(vec![0xe9]),
                text: "'\u{10FFE9}'".into(),
                binary: false,
            })
        );
    }
}
