//! Server-side prepared statements on backend connections.
//!
//! A client's statement may run on any backend connection (multiplexing), so each
//! connection keeps its own map from statement text to the id the server gave it, and
//! prepares lazily the first time a text runs there. The map is bounded: past
//! [`MAX_STATEMENTS`] the connection closes all of its statements and starts over.

use super::conn::{BackendConn, BackendError};
use crate::wire::consts::*;
use crate::wire::packets::{ColumnDef, ErrPacket};
use std::sync::Arc;

/// Most statements kept prepared on one backend connection.
pub const MAX_STATEMENTS: usize = 256;

/// A statement as prepared on one backend connection.
#[derive(Debug, Clone)]
pub struct BackendStatement {
    pub id: u32,
    pub params: u16,
    pub param_defs: Vec<ColumnDef>,
    pub columns: Vec<ColumnDef>,
}

impl BackendConn {
    /// The backend statement id for `sql`, preparing it on this connection if needed.
    pub async fn prepared_id(&mut self, sql: &Arc<str>) -> Result<u32, BackendError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.id);
        }
        Ok(self.prepared(sql).await?.id)
    }

    /// The backend statement for `sql` with its metadata, preparing it if needed.
    pub async fn prepared(&mut self, sql: &Arc<str>) -> Result<BackendStatement, BackendError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        if self.statements.len() >= MAX_STATEMENTS {
            let ids: Vec<u32> = self.statements.drain().map(|(_, s)| s.id).collect();
            for id in ids {
                self.send_command(COM_STMT_CLOSE, &id.to_le_bytes()).await?;
                // COM_STMT_CLOSE has no response.
                self.finish(self.status());
            }
        }
        self.send_command(COM_STMT_PREPARE, &crate::wire::charset::encode(sql))
            .await?;
        let first = self.read().await?;
        match first.first() {
            Some(0x00) if first.len() >= 12 => {
                let mut r = crate::wire::codec::Reader::new(&first[1..]);
                let id = r.u32()?;
                let ncols = r.u16()?;
                let nparams = r.u16()?;
                let mut param_defs = Vec::with_capacity(nparams as usize);
                for _ in 0..nparams {
                    param_defs.push(ColumnDef::decode(&self.read().await?)?);
                }
                let mut columns = Vec::with_capacity(ncols as usize);
                for _ in 0..ncols {
                    columns.push(ColumnDef::decode(&self.read().await?)?);
                }
                let status = self.status();
                self.finish(status);
                let st = BackendStatement {
                    id,
                    params: nparams,
                    param_defs,
                    columns,
                };
                self.statements.insert(sql.clone(), st.clone());
                Ok(st)
            }
            Some(0xff) => {
                self.finish_after_error();
                Err(BackendError::Server(ErrPacket::decode(&first)?))
            }
            _ => {
                self.mark_broken();
                Err(BackendError::Protocol)
            }
        }
    }

    /// Closes the backend statement for `sql`, if this connection has one.
    pub async fn unprepare(&mut self, sql: &Arc<str>) -> Result<(), BackendError> {
        if let Some(st) = self.statements.remove(sql) {
            self.send_command(COM_STMT_CLOSE, &st.id.to_le_bytes())
                .await?;
            self.finish(self.status());
        }
        Ok(())
    }

    /// Forgets every prepared statement (after COM_RESET_CONNECTION, which drops them).
    pub fn forget_statements(&mut self) {
        self.statements.clear();
    }
}
