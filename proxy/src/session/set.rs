//! SET: how each assignment changes the session.
//!
//! Settings travel with the session, not with a backend connection (multiplexing): each
//! variable's assignment is kept as one `SET` statement with a literal value, replayed on
//! every connection the session borrows (`conns.rs`, `backend/pool.rs`). A value that is an
//! expression (`CONCAT(@@sql_mode, ...)`, a subquery, another variable) is evaluated once
//! on a backend and kept as the literal it produced, so replaying it never compounds.
//!
//! Some variables belong to the proxy and never reach a backend: `transaction_mode`
//! (single | multi | twopc) and `max_execution_time` (milliseconds; MariaDB has no such
//! variable). Global variables are refused: a proxy must not reconfigure its servers.

use super::conns::TxMode;
use super::Session;
use crate::error::ProxyError;
use crate::planner::set::Assignment;
use crate::wire::charset::Charset;
use crate::wire::consts::*;
use crate::wire::Responder;

impl Session {
    pub(super) async fn set(
        &mut self,
        assignments: &[Assignment],
        out: &mut Responder<'_>,
        more: bool,
    ) -> Result<(), ProxyError> {
        for a in assignments {
            if let Assignment::Global { name, .. } = a {
                return Err(ProxyError::AccessDenied(format!(
                    "shardgate does not change global variables of its backends (SET GLOBAL {name}); set them on each server"
                )));
            }
        }
        for a in assignments {
            self.assign(a).await?;
        }
        self.ok(out, more);
        Ok(())
    }

    async fn assign(&mut self, a: &Assignment) -> Result<(), ProxyError> {
        match a {
            Assignment::Global { .. } => Ok(()),
            Assignment::Session { name, value } if name == "transaction_mode" => {
                self.tx_mode = TxMode::parse(value).ok_or_else(|| bad_value(name, value))?;
                Ok(())
            }
            Assignment::Session { name, value } if name == "max_execution_time" => {
                self.timeout_ms = match unquote(value).to_ascii_lowercase().as_str() {
                    "default" => self.ctx.config.session.query_timeout_ms,
                    v => v.parse().map_err(|_| bad_value(name, value))?,
                };
                Ok(())
            }
            Assignment::Session { name, value } => {
                let literal = if is_literal(value) {
                    value.clone()
                } else {
                    self.evaluate_variable(name, value).await?
                };
                if name == "character_set_client" {
                    self.charset = Charset::from_name(unquote(&literal))
                        .ok_or_else(|| bad_value(name, value))?;
                }
                if name == "sql_mode" {
                    self.no_backslash_escapes = unquote(&literal)
                        .to_ascii_uppercase()
                        .contains("NO_BACKSLASH_ESCAPES");
                }
                if name == "autocommit" {
                    // The proxy's own: backends keep autocommit on and the proxy opens
                    // the transaction itself (see `query.rs`), so connections of sessions
                    // with autocommit off can still be shared between statements.
                    let v = unquote(&literal).to_ascii_lowercase();
                    let on = match v.as_str() {
                        "1" | "on" | "true" | "default" => true,
                        "0" | "off" | "false" => false,
                        _ => return Err(bad_value(name, value)),
                    };
                    if on && !self.autocommit && self.conns.in_transaction() {
                        // Turning autocommit on commits the open transaction.
                        self.conns.finish(&self.ctx, true).await?;
                    }
                    self.autocommit = on;
                    return Ok(());
                }
                let sql = format!("SET SESSION {name} = {literal}");
                if !super::known_vars::variable_ok(name, &literal) {
                    self.check_on_backend(&sql).await?;
                }
                self.conns.apply_setting(name, &sql).await
            }
            Assignment::Names { charset, collation } => {
                let sql = match collation {
                    Some(c) => format!("SET NAMES {charset} COLLATE {c}"),
                    None => format!("SET NAMES {charset}"),
                };
                if !super::known_vars::names_ok(charset, collation.as_deref()) {
                    self.check_on_backend(&sql).await?;
                }
                self.conns.apply_setting("names", &sql).await?;
                self.charset = if charset.eq_ignore_ascii_case("default") {
                    Charset::from_collation(self.info.charset)
                } else {
                    Charset::from_name(charset).unwrap_or(self.charset)
                };
                Ok(())
            }
            Assignment::User { name, value } => {
                let literal = if is_user_literal(value) {
                    value.clone()
                } else {
                    self.evaluate_expression(value).await?
                };
                let key = name.to_ascii_lowercase();
                let sql = format!("SET @`{}` = {literal}", name.replace('`', "``"));
                self.check_on_backend(&sql).await?;
                self.conns.apply_setting(&format!("@{key}"), &sql).await?;
                self.user_vars.insert(key, literal);
                Ok(())
            }
            Assignment::Transaction {
                session: true,
                text,
            } => {
                let sql = format!("SET SESSION TRANSACTION {text}");
                if !super::known_vars::transaction_ok(text) {
                    self.check_on_backend(&sql).await?;
                }
                self.conns.apply_setting("transaction", &sql).await
            }
            Assignment::Transaction {
                session: false,
                text,
            } => {
                if self.conns.txn.is_some() {
                    return Err(ProxyError::Backend(crate::wire::ErrPacket::new(
                        1568,
                        "25001",
                        "Transaction characteristics can't be changed while a transaction is in progress",
                    )));
                }
                let sql = format!("SET TRANSACTION {text}");
                if !super::known_vars::transaction_ok(text) {
                    self.check_on_backend(&sql).await?;
                }
                self.conns.next_txn = Some(sql);
                Ok(())
            }
        }
    }

    /// Runs a SET on one backend so a bad name or value gets the server's own error.
    /// Settings are applied to every held connection by `apply_setting`; this makes sure
    /// at least one checks it even when the session holds none.
    async fn check_on_backend(&mut self, sql: &str) -> Result<(), ProxyError> {
        if !self.conns.held().is_empty() {
            return Ok(());
        }
        self.ensure_default_connection().await?;
        match self.conns.any_held() {
            Some(h) => h
                .conn
                .execute(sql)
                .await
                .map(|_| ())
                .map_err(|e| ProxyError::from_backend(&h.label, e)),
            None => Ok(()),
        }
    }

    /// Sets a session variable to an expression on one backend and reads back the literal.
    async fn evaluate_variable(&mut self, name: &str, value: &str) -> Result<String, ProxyError> {
        self.ensure_default_connection().await?;
        let Some(h) = self.conns.any_held() else {
            return Err(ProxyError::NoServingShards("(none)".into()));
        };
        let label = h.label.clone();
        let r = async {
            h.conn
                .execute(&format!("SET SESSION {name} = {value}"))
                .await?;
            h.conn.query(&format!("SELECT @@SESSION.{name}")).await
        }
        .await
        .map_err(|e| ProxyError::from_backend(&label, e))?;
        Ok(literal_of(&r))
    }

    /// Evaluates an expression on one backend and returns it as a literal.
    async fn evaluate_expression(&mut self, value: &str) -> Result<String, ProxyError> {
        self.ensure_default_connection().await?;
        let Some(h) = self.conns.any_held() else {
            return Err(ProxyError::NoServingShards("(none)".into()));
        };
        let label = h.label.clone();
        let r = h
            .conn
            .query(&format!("SELECT {value}"))
            .await
            .map_err(|e| ProxyError::from_backend(&label, e))?;
        Ok(literal_of(&r))
    }
}

fn bad_value(name: &str, value: &str) -> ProxyError {
    ProxyError::WrongVariableValue {
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches(|c| c == '\'' || c == '"')
}

/// A value that can be replayed as it is: a number, a quoted string, or a bare word
/// (`ON`, `DEFAULT`, `READ-COMMITTED`...).
fn is_literal(v: &str) -> bool {
    is_user_literal(v)
        || v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// A literal a user variable can hold as written: a number, a quoted string, or NULL.
fn is_user_literal(v: &str) -> bool {
    let v = v.trim();
    if v.eq_ignore_ascii_case("NULL") {
        return true;
    }
    if v.parse::<f64>().is_ok()
        && !v.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return true;
    }
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'\'' || b[0] == b'"') && b[b.len() - 1] == b[0] {
        // One quoted string, not several ('a' 'b') or an expression ('a' + 'b').
        return crate::planner::prepared_sql::unquote_literal(v)
            .map(|s| quoted_len(&s, b[0]) == b.len())
            .unwrap_or(false);
    }
    false
}

/// Length of `s` quoted with `q` the way `quote` writes it, for the round-trip check.
fn quoted_len(s: &str, q: u8) -> usize {
    2 + s
        .bytes()
        .map(|c| {
            if c == q || c == b'\\' || c == b'\n' || c == b'\t' || c == b'\r' || c == 0 {
                2
            } else {
                1
            }
        })
        .sum::<usize>()
}

/// The first value of a result as an SQL literal: numbers bare, text quoted, NULL.
fn literal_of(r: &crate::backend::conn::QueryResult) -> String {
    let cell = r
        .rows
        .first()
        .and_then(|row| row.first())
        .cloned()
        .flatten();
    let Some(bytes) = cell else {
        return "NULL".into();
    };
    let numeric = matches!(
        r.columns.first().map(|c| c.column_type),
        Some(
            MYSQL_TYPE_DECIMAL
                | MYSQL_TYPE_TINY
                | MYSQL_TYPE_SHORT
                | MYSQL_TYPE_LONG
                | MYSQL_TYPE_FLOAT
                | MYSQL_TYPE_DOUBLE
                | MYSQL_TYPE_LONGLONG
                | MYSQL_TYPE_INT24
                | MYSQL_TYPE_NEWDECIMAL
        )
    );
    let charset = r.columns.first().map_or(0, |c| c.charset);
    if numeric && bytes.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        quote(&bytes, charset)
    }
}

/// A value as a literal that reads back byte for byte whatever the session's sql_mode
/// (backslashes or not) and character set: plain `'...'` for printable ASCII without
/// quotes or backslashes, else a hex string with the column's character set as its
/// introducer, so it keeps its collation as text.
fn quote(bytes: &[u8], collation: u16) -> String {
    let plain = bytes
        .iter()
        .all(|&b| (b.is_ascii_graphic() || b == b' ') && b != b'\'' && b != b'\\');
    if plain {
        return format!("'{}'", String::from_utf8_lossy(bytes));
    }
    let mut out = String::with_capacity(bytes.len() * 2 + 16);
    if collation != crate::wire::consts::CHARSET_BINARY {
        let cs = u8::try_from(collation).map_or(Charset::UTF8MB4, Charset::from_collation);
        out.push('_');
        out.push_str(cs.name);
        out.push(' ');
    }
    out.push_str("X'");
    for b in bytes {
        out.push_str(&format!("{b:02X}"));
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_recognised() {
        for v in ["1", "-2.5", "'abc'", "\"x\"", "NULL", "'it''s'"] {
            assert!(is_user_literal(v), "{v}");
        }
        for v in ["1+1", "'a' 'b'", "CONCAT('a')", "@x", "NOW()", "abc"] {
            assert!(!is_user_literal(v), "{v}");
        }
        assert!(is_literal("ON"));
        assert!(is_literal("READ-COMMITTED"));
        assert!(!is_literal("(SELECT CONCAT(@@sql_mode, ',X'))"));
        assert_eq!(quote(b"plain text", 45), "'plain text'");
        // Quotes and backslashes never reach the statement as such.
        assert_eq!(
            quote(b"x\\' OR 1=1 -- ", 45),
            "_utf8mb4 X'785C27204F5220313D31202D2D20'"
        );
        assert_eq!(quote(b"\xe9", 8), "_latin1 X'E9'");
        assert_eq!(quote(b"\xff\x00", 63), "X'FF00'");
    }
}
