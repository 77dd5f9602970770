//! Reading one keyspace's schema from a shard's `information_schema`: two queries on a
//! pooled connection to the shard's database (columns in table order; index columns in key
//! order).

use super::{ColumnSchema, KeyspaceSchema, TableSchema};
use crate::backend::conn::{BackendConn, BackendError, QueryResult};
use std::collections::HashMap;
use std::sync::Arc;

const COLUMNS: &str = "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_DEFAULT, IS_NULLABLE, DATA_TYPE, \
     COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, EXTRA \
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
     ORDER BY TABLE_NAME, ORDINAL_POSITION";

const KEYS: &str = "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME \
     FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
     ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX";

/// Reads the schema of the database `conn` is connected to.
pub async fn read(conn: &mut BackendConn) -> Result<KeyspaceSchema, BackendError> {
    let columns = conn.query(COLUMNS).await?;
    let keys = conn.query(KEYS).await?;
    Ok(build(&columns, &keys))
}

fn text(row: &[Option<bytes::Bytes>], i: usize) -> Option<String> {
    row.get(i)
        .cloned()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The schema from the two result sets.
pub fn build(columns: &QueryResult, keys: &QueryResult) -> KeyspaceSchema {
    let mut tables: HashMap<String, TableSchema> = HashMap::new();
    for row in &columns.rows {
        let (Some(table), Some(name)) = (text(row, 0), text(row, 1)) else {
            continue;
        };
        let extra = text(row, 8).unwrap_or_default().to_ascii_lowercase();
        let t = tables
            .entry(table.to_ascii_lowercase())
            .or_insert_with(|| TableSchema {
                name: table.clone(),
                ..TableSchema::default()
            });
        t.columns.push(ColumnSchema {
            name,
            default: text(row, 2),
            nullable: text(row, 3).as_deref() == Some("YES"),
            data_type: text(row, 4).unwrap_or_default().to_ascii_lowercase(),
            column_type: text(row, 5).unwrap_or_default(),
            charset: text(row, 6),
            collation: text(row, 7),
            generated: extra.contains("generated"),
            auto_increment: extra.contains("auto_increment"),
        });
    }
    // (table, index) -> (unique, columns); rows come in key order.
    let mut indexes: Vec<(String, String, bool, Vec<String>)> = Vec::new();
    for row in &keys.rows {
        let (Some(table), Some(index), Some(col)) = (text(row, 0), text(row, 1), text(row, 3))
        else {
            continue;
        };
        let unique = text(row, 2).as_deref() == Some("0");
        let t = table.to_ascii_lowercase();
        match indexes.last_mut() {
            Some((lt, li, _, cols)) if *lt == t && *li == index => cols.push(col),
            _ => indexes.push((t, index, unique, vec![col])),
        }
    }
    for (table, index, unique, cols) in indexes {
        let Some(t) = tables.get_mut(&table) else {
            continue;
        };
        if index == "PRIMARY" {
            t.primary_key = cols;
        } else if unique {
            t.unique_keys.push(cols);
        }
    }
    KeyspaceSchema {
        tables: tables.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn row(cells: &[Option<&str>]) -> Vec<Option<Bytes>> {
        cells
            .iter()
            .map(|c| c.map(|s| Bytes::copy_from_slice(s.as_bytes())))
            .collect()
    }

    #[test]
    fn columns_and_keys_become_tables() {
        let columns = QueryResult {
            rows: vec![
                row(&[
                    Some("Orders"),
                    Some("o_w_id"),
                    None,
                    Some("NO"),
                    Some("INT"),
                    Some("int(11)"),
                    None,
                    None,
                    Some(""),
                ]),
                row(&[
                    Some("Orders"),
                    Some("o_id"),
                    None,
                    Some("NO"),
                    Some("int"),
                    Some("int(11)"),
                    None,
                    None,
                    Some("auto_increment"),
                ]),
                row(&[
                    Some("Orders"),
                    Some("total"),
                    Some("0"),
                    Some("YES"),
                    Some("decimal"),
                    Some("decimal(6,2)"),
                    None,
                    None,
                    Some(""),
                ]),
                row(&[
                    Some("Orders"),
                    Some("twice"),
                    None,
                    Some("YES"),
                    Some("decimal"),
                    Some("decimal(7,2)"),
                    None,
                    None,
                    Some("VIRTUAL GENERATED"),
                ]),
            ],
            ..QueryResult::default()
        };
        let keys = QueryResult {
            rows: vec![
                row(&[Some("Orders"), Some("PRIMARY"), Some("0"), Some("o_w_id")]),
                row(&[Some("Orders"), Some("PRIMARY"), Some("0"), Some("o_id")]),
                row(&[Some("Orders"), Some("u_total"), Some("0"), Some("total")]),
                row(&[Some("Orders"), Some("k_id"), Some("1"), Some("o_id")]),
            ],
            ..QueryResult::default()
        };
        let ks = build(&columns, &keys);
        let t = &ks.tables["orders"];
        assert_eq!(t.name, "Orders");
        assert_eq!(t.columns.len(), 4);
        assert_eq!(t.primary_key, vec!["o_w_id", "o_id"]);
        assert_eq!(t.unique_keys, vec![vec!["total".to_string()]]);
        assert!(t.columns[1].auto_increment && !t.columns[1].nullable);
        assert!(t.columns[3].generated);
        assert_eq!(t.columns[2].default.as_deref(), Some("0"));
        assert_eq!(t.columns[0].data_type, "int");
    }
}
