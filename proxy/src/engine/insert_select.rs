//! Running an INSERT ... SELECT whose rows the proxy places: the SELECT's rows are read
//! (any plan shape; at most `session.max_merge_rows` of them, since inserting while
//! reading would need a second connection to a shard inside the same transaction), turned
//! into literals, and inserted in batches where they belong.

use super::reader::Row;
use super::values::{kind_of, Kind};
use super::{Exec, ExecError};
use crate::backend::relay::RelaySummary;
use crate::error::ProxyError;
use crate::planner::insert::{InsertPlan, InsertRow, RowKey};
use crate::planner::insert_select::{InsertSelectPlan, RowPlacement};
use crate::planner::plan::{Combine, Primitive};
use crate::planner::values::ValueExpr;
use crate::wire::charset::Charset;
use crate::wire::consts::*;
use crate::wire::packets::OkPacket;
use crate::wire::{ColumnDef, Responder};
use shardgate_topology::SqlValue;
use std::fmt::Write as _;

/// Rows per INSERT statement sent to a shard.
const BATCH: usize = 500;

/// A cell as an SQL literal in the session's character set, and as the value a vindex
/// maps (with whether its bytes are final, as for `X'..'`).
pub fn cell_literal(
    cell: Option<&[u8]>,
    col: &ColumnDef,
    cs: Charset,
    no_backslash_escapes: bool,
) -> (String, SqlValue, bool) {
    let Some(b) = cell else {
        return ("NULL".into(), SqlValue::Null, false);
    };
    let text = || String::from_utf8_lossy(b).into_owned();
    let numeric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
    };
    let stringish = matches!(
        col.column_type,
        MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
    );
    let binary = (stringish && col.charset == CHARSET_BINARY)
        || matches!(col.column_type, MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY);
    let kind = match kind_of(col) {
        Kind::Bytes if binary => Kind::Bytes,
        // Dates, times, JSON and the like: text.
        Kind::Bytes | Kind::Time => Kind::Text,
        k => k,
    };
    match kind {
        Kind::Int if numeric(&text()) => {
            let t = text();
            let v = t
                .parse::<i64>()
                .map(SqlValue::Int)
                .or_else(|_| t.parse::<u64>().map(SqlValue::UInt))
                .unwrap_or_else(|_| SqlValue::Decimal(t.clone()));
            (t, v, false)
        }
        Kind::Decimal if numeric(&text()) => (text(), SqlValue::Decimal(text()), false),
        Kind::Float if numeric(&text()) => {
            let t = text();
            let v = t.parse().map(SqlValue::Float).unwrap_or(SqlValue::Null);
            (t, v, false)
        }
        Kind::Bytes => {
            let mut lit = String::with_capacity(b.len() * 2 + 3);
            lit.push_str("X'");
            for x in b {
                let _ = write!(lit, "{x:02X}");
            }
            lit.push('\'');
            (lit, SqlValue::Bytes(b.to_vec()), true)
        }
        _ => {
            let mut lit = String::with_capacity(b.len() + 2);
            crate::wire::params::quote_bytes(&mut lit, b, cs, no_backslash_escapes);
            (lit, SqlValue::Bytes(b.to_vec()), false)
        }
    }
}

impl Exec<'_> {
    pub(super) async fn insert_select(
        &mut self,
        p: &InsertSelectPlan,
        out: &mut Responder<'_>,
    ) -> Result<RelaySummary, ExecError> {
        let (rows, columns) = self.collect_rows(&p.select).await?;
        let ok = self.insert_rows_of(p, &rows, &columns).await?;
        self.commit_implicit().await?;
        self.respond(out, ok)
    }

    /// Every row of `select` (bounded by `session.max_merge_rows`), with its columns.
    pub(super) async fn collect_rows(
        &mut self,
        select: &Primitive,
    ) -> Result<(Vec<Row>, Vec<ColumnDef>), ProxyError> {
        match select {
            Primitive::Gather(g) => return self.gather_rows(g).await,
            Primitive::Fallback { first, otherwise } => {
                return match Box::pin(self.collect_rows(first)).await {
                    Err(ProxyError::PinsApart { .. }) => {
                        Box::pin(self.collect_rows(otherwise)).await
                    }
                    other => other,
                };
            }
            _ => {}
        }
        let (mut node, columns) = match super::build::build(self, select, None).await {
            Ok(x) => x,
            Err((readers, e)) => {
                self.finish_readers(readers).await;
                return Err(e);
            }
        };
        let limit = self.ctx.config.session.max_merge_rows;
        let mut rows = Vec::new();
        let result = loop {
            match node.next_row().await {
                Ok(Some(r)) if (rows.len() as u64) < limit => rows.push(r),
                Ok(Some(_)) => break Err(ProxyError::MergeTooLarge { limit }),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.finish_readers(node.into_readers()).await;
        result.map(|()| (rows, columns))
    }

    async fn insert_rows_of(
        &mut self,
        p: &InsertSelectPlan,
        rows: &[Row],
        columns: &[ColumnDef],
    ) -> Result<OkPacket, ProxyError> {
        let (cs, nbe) = (self.charset, self.no_backslash_escapes);
        let mut total = OkPacket::default();
        for batch in rows.chunks(BATCH) {
            let rendered: Vec<Vec<(String, SqlValue, bool)>> = batch
                .iter()
                .map(|r| {
                    r.iter()
                        .zip(columns)
                        .map(|(c, d)| cell_literal(c.as_deref(), d, cs, nbe))
                        .collect()
                })
                .collect();
            let ok = match &p.placement {
                RowPlacement::Unsharded | RowPlacement::Everywhere => {
                    let text: Vec<String> = rendered.iter().map(|r| tuple(r, None)).collect();
                    let sql = format!("{}{}{}", p.prefix, text.join(", "), p.suffix);
                    let combine = match p.placement {
                        RowPlacement::Everywhere => Combine::First,
                        _ => Combine::Sum,
                    };
                    self.write_everywhere(&p.keyspace, &sql, combine).await?
                }
                RowPlacement::Sharded {
                    vindex,
                    vindex_column,
                    sequence,
                    lookups,
                } => {
                    let mut plan_rows = Vec::with_capacity(rendered.len());
                    for r in &rendered {
                        let (seq_pos, prepended) = match sequence {
                            Some((_, Some(pos))) => (Some(*pos), false),
                            Some((_, None)) => (None, true),
                            None => (None, false),
                        };
                        // A NULL or 0 in the sequence column asks for the next value.
                        let generated = prepended
                            || seq_pos.is_some_and(|i| {
                                matches!(r[i].1, SqlValue::Null | SqlValue::Int(0))
                            });
                        let text = if prepended {
                            format!("(:sg_seq, {}", &tuple(r, None)[1..])
                        } else if generated {
                            tuple(r, seq_pos)
                        } else {
                            tuple(r, None)
                        };
                        let key = match vindex_column {
                            Some(i) if !(generated && seq_pos == Some(*i)) => {
                                let (lit, value, binary) = &r[*i];
                                if *value == SqlValue::Null {
                                    return Err(ProxyError::WrongValue(format!(
                                        "sharding column of {} cannot be NULL",
                                        p.table
                                    )));
                                }
                                RowKey::Value(ValueExpr::Literal {
                                    value: value.clone(),
                                    text: lit.clone(),
                                    binary: *binary,
                                })
                            }
                            _ => RowKey::Sequence,
                        };
                        let lookup_values = lookups
                            .iter()
                            .map(|(_, pos)| {
                                pos.and_then(|i| {
                                    let (lit, value, binary) = &r[i];
                                    (*value != SqlValue::Null).then(|| ValueExpr::Literal {
                                        value: value.clone(),
                                        text: lit.clone(),
                                        binary: *binary,
                                    })
                                })
                            })
                            .collect();
                        plan_rows.push(InsertRow {
                            text,
                            key,
                            generated,
                            lookup_values,
                        });
                    }
                    let plan = InsertPlan {
                        keyspace: p.keyspace.clone(),
                        table: p.table.clone(),
                        vindex: vindex.clone(),
                        prefix: p.prefix.clone(),
                        rows: plan_rows,
                        suffix: p.suffix.clone(),
                        sequence: sequence.as_ref().map(|(s, _)| s.clone()),
                        lookups: lookups.iter().map(|(n, _)| n.clone()).collect(),
                    };
                    self.insert_rows(&plan).await?.0
                }
            };
            total.affected_rows += ok.affected_rows;
            total.warnings = total.warnings.saturating_add(ok.warnings);
            if total.last_insert_id == 0 {
                total.last_insert_id = ok.last_insert_id;
            }
        }
        if !rows.is_empty() {
            total.info = format!(
                "Records: {}  Duplicates: 0  Warnings: {}",
                rows.len(),
                total.warnings
            );
        }
        Ok(total)
    }
}

/// `(lit, lit, ...)`, with `:sg_seq` in place of column `seq` if given.
fn tuple(r: &[(String, SqlValue, bool)], seq: Option<usize>) -> String {
    let mut s = String::from("(");
    for (i, (lit, _, _)) in r.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if seq == Some(i) {
            s.push_str(":sg_seq");
        } else {
            s.push_str(lit);
        }
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: u8, charset: u16) -> ColumnDef {
        ColumnDef {
            column_type: t,
            charset,
            ..ColumnDef::text("c")
        }
    }

    #[test]
    fn cells_become_literals_that_read_back_exactly() {
        let utf8 = Charset::UTF8MB4;
        let (l, v, _) = cell_literal(Some(b"42"), &col(MYSQL_TYPE_LONGLONG, 63), utf8, false);
        assert_eq!((l.as_str(), v), ("42", SqlValue::Int(42)));
        let (l, _, bin) = cell_literal(Some(b"\x00\xff'"), &col(MYSQL_TYPE_BLOB, 63), utf8, false);
        assert_eq!((l.as_str(), bin), ("X'00FF27'", true));
        let (l, v, bin) = cell_literal(Some(b"it's"), &col(MYSQL_TYPE_VAR_STRING, 45), utf8, false);
        assert_eq!((l.as_str(), bin), ("'it''s'", false));
        assert_eq!(v, SqlValue::Bytes(b"it's".to_vec()));
        let (l, _, _) = cell_literal(Some(b"2024-01-02"), &col(MYSQL_TYPE_DATE, 63), utf8, false);
        assert_eq!(l, "'2024-01-02'");
        let (l, v, _) = cell_literal(None, &col(MYSQL_TYPE_LONG, 63), utf8, false);
        assert_eq!((l.as_str(), v), ("NULL", SqlValue::Null));
        // Never SQL: a "number" that is not one is quoted.
        let (l, _, _) = cell_literal(
            Some(b"1;DROP"),
            &col(MYSQL_TYPE_NEWDECIMAL, 63),
            utf8,
            false,
        );
        assert_eq!(l, "'1;DROP'");
        assert_eq!(
            tuple(
                &[
                    ("1".into(), SqlValue::Int(1), false),
                    ("'a'".into(), SqlValue::Null, false)
                ],
                Some(0)
            ),
            "(:sg_seq, 'a')"
        );
    }
}
