//! Writing a merged result to the client: the visible columns (helper columns dropped,
//! rewritten aggregates renamed and retyped), then rows in the client's protocol.

use crate::planner::plan::Rename;
use crate::wire::consts::*;
use crate::wire::rows::{put_binary_row, put_text_row};
use crate::wire::{ColumnDef, PacketError, Responder};
use bytes::Bytes;

/// The columns the client sees.
pub fn visible_columns(columns: &[ColumnDef], hidden: usize, renames: &[Rename]) -> Vec<ColumnDef> {
    let width = columns.len();
    let mut out: Vec<ColumnDef> = columns[..width.saturating_sub(hidden)].to_vec();
    for r in renames {
        let i = r.col.index(width);
        let Some(c) = out.get_mut(i) else { continue };
        c.name = r.name.clone();
        c.org_name.clear();
        c.table.clear();
        c.org_table.clear();
        match r.retype.as_deref() {
            Some("count") => {
                c.column_type = MYSQL_TYPE_LONGLONG;
                c.charset = CHARSET_BINARY;
                c.length = 21;
                c.decimals = 0;
                c.flags = NOT_NULL_FLAG | BINARY_FLAG | NUM_FLAG;
            }
            Some("avg") => {
                if matches!(c.column_type, MYSQL_TYPE_DOUBLE | MYSQL_TYPE_FLOAT) {
                    c.column_type = MYSQL_TYPE_DOUBLE;
                    c.decimals = 31;
                } else {
                    c.column_type = MYSQL_TYPE_NEWDECIMAL;
                    c.decimals = (c.decimals + 4).min(30);
                    c.length += 4;
                }
                c.flags &= !NOT_NULL_FLAG;
            }
            _ => {}
        }
    }
    out
}

/// Writes rows of a result set whose header was sent.
pub struct RowWriter {
    pub columns: Vec<ColumnDef>,
    pub binary: bool,
    pub rows: u64,
}

impl RowWriter {
    pub fn header(
        out: &mut Responder<'_>,
        columns: Vec<ColumnDef>,
        binary: bool,
        status: u16,
    ) -> RowWriter {
        out.columns(&columns, status);
        RowWriter {
            columns,
            binary,
            rows: 0,
        }
    }

    pub async fn row(
        &mut self,
        out: &mut Responder<'_>,
        cells: &[Option<Bytes>],
    ) -> Result<(), PacketError> {
        let n = self.columns.len().min(cells.len());
        let cells = &cells[..n];
        if self.binary {
            let cols = &self.columns;
            out.build(|b| put_binary_row(b, cols, cells));
        } else {
            out.build(|b| put_text_row(b, cells));
        }
        self.rows += 1;
        out.flush_if_full().await
    }
}
