//! Values the planner can route by: literals written in the statement and `?`
//! placeholders bound at execution.

use super::edit::TextIndex;
use serde::Serialize;
use shardgate_topology::SqlValue;
use sqlparser::ast::{Expr, UnaryOperator, Value};

/// A value known at plan time (a literal) or at execution (a placeholder).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueExpr {
    /// A literal; `text` is exactly how the statement wrote it.
    Literal {
        #[serde(skip)]
        value: SqlValue,
        text: String,
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

    /// The value, converting only the one bound parameter it needs.
    pub fn resolve_with(&self, params: Option<&crate::wire::params::Execute>) -> Option<SqlValue> {
        match self {
            ValueExpr::Literal { value, .. } => Some(value.clone()),
            ValueExpr::Param(i) => params
                .and_then(|p| p.params.get(*i))
                .map(|p| p.to_sql_value()),
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
            } => Some(ValueExpr::Literal {
                value: SqlValue::Int(-i),
                text: format!("-{text}"),
            }),
            ValueExpr::Literal {
                value: SqlValue::UInt(u),
                text,
            } if u == 1u64 << 63 => Some(ValueExpr::Literal {
                value: SqlValue::Int(i64::MIN),
                text: format!("-{text}"),
            }),
            ValueExpr::Literal {
                value: SqlValue::Decimal(d),
                text,
            } => Some(ValueExpr::Literal {
                value: SqlValue::Decimal(format!("-{d}")),
                text: format!("-{text}"),
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
                    })
                }
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    Some(ValueExpr::Literal {
                        value: SqlValue::Bytes(s.as_bytes().to_vec()),
                        text: text?,
                    })
                }
                Value::HexStringLiteral(h) => {
                    let bytes = shardgate_topology::keyrange::unhex(h)?;
                    Some(ValueExpr::Literal {
                        value: SqlValue::Bytes(bytes),
                        text: text?,
                    })
                }
                Value::Null => Some(ValueExpr::Literal {
                    value: SqlValue::Null,
                    text: "NULL".into(),
                }),
                _ => None,
            }
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
                text: "42".into()
            })
        );
        assert_eq!(
            where_rhs("select 1 from t where id = -7"),
            Some(ValueExpr::Literal {
                value: SqlValue::Int(-7),
                text: "-7".into()
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
                text: "'it''s'".into()
            })
        );
        assert_eq!(where_rhs("select 1 from t where id = a + 1"), None);
    }
}
