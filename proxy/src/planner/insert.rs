//! INSERT / REPLACE into a sharded table: each row goes to the shard its sharding column
//! maps to. Rows are cut from the statement's own text; the engine reassembles one
//! statement per shard (`prefix` + that shard's rows + `suffix`). An auto-increment column
//! backed by a sequence gets its values from the sequence (the `:sg_seq` marker).

use super::edit::TextIndex;
use super::values::{placeholder_offsets, value_of, ValueExpr};
use crate::error::ProxyError;
use crate::schema::TableSchema;
use serde::Serialize;
use shardgate_topology::{Keyspace, SqlValue, Table};
use sqlparser::ast::{Insert, OnInsert, SetExpr, Spanned};

/// How the engine runs an INSERT on a sharded table.
#[derive(Debug, Clone, Serialize)]
pub struct InsertPlan {
    pub keyspace: String,
    pub table: String,
    /// The primary vindex of the table.
    pub vindex: String,
    /// `INSERT INTO t (cols) VALUES ` (placeholders as markers).
    pub prefix: String,
    pub rows: Vec<InsertRow>,
    /// ` ON DUPLICATE KEY UPDATE ...`, if any.
    pub suffix: String,
    /// The sequence feeding the auto-increment column: (keyspace, table).
    pub sequence: Option<(String, String)>,
    /// Lookup vindexes this table owns: each row's value gets a mapping row first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<String>,
}

/// One row: its text and where its sharding value comes from.
#[derive(Debug, Clone, Serialize)]
pub struct InsertRow {
    /// `(v1, v2, ...)`, with `:sg_seq` where the sequence value goes.
    pub text: String,
    pub key: RowKey,
    /// This row takes a value from the sequence.
    pub generated: bool,
    /// The row's value for each owned lookup vindex (None: not given, NULL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lookup_values: Vec<Option<ValueExpr>>,
}

/// Where a row's sharding value comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKey {
    Value(ValueExpr),
    /// The sharding column is the auto-increment column and the sequence fills it.
    Sequence,
}

/// The columns an INSERT gives values for, lower-cased: its list, or (without one) every
/// column of the table in order, from schema tracking.
pub fn insert_columns(
    ins: &Insert,
    ks: &Keyspace,
    table: &Table,
    schema: Option<&TableSchema>,
) -> Result<Vec<String>, ProxyError> {
    if !ins.columns.is_empty() {
        return Ok(ins
            .columns
            .iter()
            .map(|c| c.to_string().trim_matches('`').to_ascii_lowercase())
            .collect());
    }
    let schema = schema.ok_or_else(|| ProxyError::SchemaUnknown {
        keyspace: ks.name.clone(),
        table: table.name.clone(),
    })?;
    Ok(schema
        .columns
        .iter()
        .map(|c| c.name.to_ascii_lowercase())
        .collect())
}

fn unsupported(what: impl Into<String>) -> ProxyError {
    ProxyError::NotSupported(what.into())
}

/// Plans an INSERT into `table` of sharded keyspace `ks`.
pub fn plan_insert(
    sql: &str,
    ins: &Insert,
    ks: &Keyspace,
    table: &Table,
    schema: Option<&TableSchema>,
) -> Result<InsertPlan, ProxyError> {
    let idx = TextIndex::new(sql);
    let ph = placeholder_offsets(sql);
    if !ins.assignments.is_empty() {
        return Err(unsupported(
            "INSERT ... SET on a sharded table; use INSERT ... (columns) VALUES",
        ));
    }
    let Some(source) = &ins.source else {
        return Err(unsupported("INSERT without VALUES on a sharded table"));
    };
    let SetExpr::Values(values) = &*source.body else {
        return Err(unsupported("INSERT ... SELECT on a sharded table"));
    };
    // Without a column list the values follow the table's columns (schema tracking), and
    // the list is written out in what shards receive: should the schema be stale, the
    // backend then refuses the statement instead of storing values in other columns.
    let implicit = ins.columns.is_empty();
    let columns = insert_columns(ins, ks, table, schema)?;
    let vindex_col = table
        .primary_vindex()
        .and_then(|cv| cv.columns.first())
        .map(|c| c.to_ascii_lowercase())
        .ok_or_else(|| unsupported(format!("table {} has no primary vindex", table.name)))?;
    let vindex = table
        .primary_vindex()
        .map(|cv| cv.vindex.name.clone())
        .unwrap_or_default();
    let auto = table.auto_increment.as_ref();
    let auto_col = auto.map(|a| a.column.to_ascii_lowercase());
    let vindex_pos = columns.iter().position(|c| *c == vindex_col);
    let auto_pos = auto_col
        .as_ref()
        .and_then(|a| columns.iter().position(|c| c == a));
    if vindex_pos.is_none() && auto_col.as_deref() != Some(vindex_col.as_str()) {
        return Err(ProxyError::WrongValue(format!(
            "INSERT into {} must give a value for its sharding column {vindex_col}",
            table.name
        )));
    }
    if let Some(OnInsert::DuplicateKeyUpdate(assignments)) = &ins.on {
        for a in assignments {
            if a.target
                .to_string()
                .trim_matches('`')
                .eq_ignore_ascii_case(&vindex_col)
            {
                return Err(ProxyError::ShardKeyChange {
                    table: table.name.clone(),
                    column: vindex_col.clone(),
                });
            }
        }
    } else if ins.on.is_some() {
        return Err(unsupported("ON CONFLICT"));
    }
    let fail = || unsupported("rewriting this INSERT for its shards");
    let first = values.rows.first().ok_or_else(fail)?;
    let last = values.rows.last().ok_or_else(fail)?;
    let (rows_start, _) = idx.range(first.opening_token.0.span).ok_or_else(fail)?;
    let (_, rows_end) = idx.range(last.closing_token.0.span).ok_or_else(fail)?;
    let mut prefix = idx.slice_with_params(0, rows_start, &ph);
    if implicit {
        let (_, name_end) = idx.range(ins.table.span()).ok_or_else(fail)?;
        let list: Vec<String> = schema
            .map(|s| {
                s.columns
                    .iter()
                    .map(|c| format!("`{}`", c.name.replace('`', "``")))
                    .collect()
            })
            .unwrap_or_default();
        prefix = format!(
            "{} ({}){}",
            idx.slice_with_params(0, name_end, &ph),
            list.join(", "),
            idx.slice_with_params(name_end, rows_start, &ph)
        );
    } else if auto.is_some() && auto_pos.is_none() {
        // The auto-increment column is not listed: add it first.
        let (cols_start, _) = idx.range(ins.columns[0].span()).ok_or_else(fail)?;
        let col = auto_col.clone().unwrap_or_default();
        prefix = format!(
            "{}`{col}`, {}",
            idx.slice_with_params(0, cols_start, &ph),
            idx.slice_with_params(cols_start, rows_start, &ph)
        );
    }
    let suffix = idx.slice_with_params(rows_end, sql.len(), &ph);
    let owned: Vec<(String, Option<usize>)> = table
        .column_vindexes
        .iter()
        .skip(1)
        .filter(|cv| {
            cv.vindex.lookup().is_some() && cv.vindex.owner.as_deref() == Some(table.name.as_str())
        })
        .map(|cv| {
            let col = cv
                .columns
                .first()
                .map(|c| c.to_ascii_lowercase())
                .unwrap_or_default();
            (
                cv.vindex.name.clone(),
                columns.iter().position(|c| *c == col),
            )
        })
        .collect();
    let mut rows = Vec::with_capacity(values.rows.len());
    for (n, row) in values.rows.iter().enumerate() {
        if row.content.len() != columns.len() {
            return Err(ProxyError::ValueCount(n + 1));
        }
        let (a, _) = idx.range(row.opening_token.0.span).ok_or_else(fail)?;
        let (_, z) = idx.range(row.closing_token.0.span).ok_or_else(fail)?;
        let mut generated = false;
        let mut text = idx.slice_with_params(a, z, &ph);
        match auto_pos {
            None if auto.is_some() => {
                generated = true;
                text = format!("(:sg_seq, {}", &text[1..]);
            }
            Some(p) => {
                let e = &row.content[p];
                let empty = matches!(
                    value_of(e, &idx, &ph),
                    Some(ValueExpr::Literal {
                        value: SqlValue::Null,
                        ..
                    })
                ) || matches!(
                    value_of(e, &idx, &ph),
                    Some(ValueExpr::Literal {
                        value: SqlValue::Int(0),
                        ..
                    })
                );
                if empty {
                    generated = true;
                    let (ea, ez) = idx.expr_range(e.span()).ok_or_else(fail)?;
                    text = format!(
                        "{}:sg_seq{}",
                        idx.slice_with_params(a, ea, &ph),
                        idx.slice_with_params(ez, z, &ph)
                    );
                }
            }
            None => {}
        }
        let key = match vindex_pos {
            Some(p) if !(generated && auto_pos == Some(p)) => {
                let v = value_of(&row.content[p], &idx, &ph).ok_or_else(|| {
                    ProxyError::WrongValue(format!(
                        "the value of sharding column {vindex_col} must be a literal or a placeholder"
                    ))
                })?;
                if matches!(
                    v,
                    ValueExpr::Literal {
                        value: SqlValue::Null,
                        ..
                    }
                ) {
                    return Err(ProxyError::WrongValue(format!(
                        "sharding column {vindex_col} of {} cannot be NULL",
                        table.name
                    )));
                }
                RowKey::Value(v)
            }
            _ => RowKey::Sequence,
        };
        let mut lookup_values = Vec::with_capacity(owned.len());
        for (name, pos) in &owned {
            lookup_values.push(match pos {
                None => None,
                Some(p) => match value_of(&row.content[*p], &idx, &ph) {
                    Some(ValueExpr::Literal {
                        value: SqlValue::Null,
                        ..
                    }) => None,
                    Some(v) => Some(v),
                    None => {
                        return Err(ProxyError::WrongValue(format!(
                            "the value for lookup vindex {name} must be a literal or a placeholder"
                        )))
                    }
                },
            });
        }
        rows.push(InsertRow {
            text,
            key,
            generated,
            lookup_values,
        });
    }
    Ok(InsertPlan {
        keyspace: ks.name.clone(),
        table: table.name.clone(),
        vindex,
        prefix,
        rows,
        suffix,
        sequence: auto.map(|a| (a.sequence_keyspace.clone(), a.sequence_table.clone())),
        lookups: owned.into_iter().map(|(n, _)| n).collect(),
    })
}
