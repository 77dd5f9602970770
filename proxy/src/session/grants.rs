//! What the session's user may do: a [`Role`] on some keyspaces (issue 15), checked once
//! per statement after planning, from facts the planner found (the statement's
//! [`Privilege`] and the keyspaces it needs), so the check reads no SQL on the hot path.
//!
//! Errors are MySQL's: 1044 for a keyspace not granted (also when connecting with a
//! database), 1142 for a statement on a table the role may not run, 1227 for admin-only
//! statements that name no table, 1095 for KILL of another user's session.
//!
//! A user's grants are read at login: a change (`shardctl user add` again, or a config
//! reload) applies to new connections, like MySQL's database-level privileges.

use super::Session;
use crate::error::ProxyError;
use crate::planner::plan::Privilege;
use crate::planner::{Plan, SessionOp};
use shardgate_config::{Role, UserConfig};
use std::collections::HashSet;

/// Whether `role` may run what needs `need`.
pub fn allows(role: Role, need: Privilege) -> bool {
    match need {
        Privilege::Read => true,
        Privilege::Write => role >= Role::Writer,
        Privilege::Admin => role == Role::Admin,
    }
}

/// The client host as MySQL names it in errors (`localhost` for loopback).
pub fn host_of(peer: std::net::SocketAddr) -> String {
    if peer.ip().is_loopback() {
        "localhost".into()
    } else {
        peer.ip().to_string()
    }
}

/// 1044 for `user` on `database`.
pub fn database_denied(
    user: &UserConfig,
    peer: std::net::SocketAddr,
    database: &str,
) -> ProxyError {
    ProxyError::DatabaseDenied {
        user: user.name.clone(),
        host: host_of(peer),
        database: database.to_string(),
    }
}

/// `USE ks` (or `USE ks:shard` when `one_shard`), or connecting with that database.
pub fn check_use(
    user: &UserConfig,
    peer: std::net::SocketAddr,
    keyspace: &str,
    one_shard: bool,
) -> Result<(), ProxyError> {
    if !user.grants_keyspace(keyspace) {
        return Err(database_denied(user, peer, keyspace));
    }
    if one_shard && user.role != Role::Admin {
        return Err(admin_only(user, "USE of one shard"));
    }
    Ok(())
}

fn admin_only(user: &UserConfig, what: &str) -> ProxyError {
    ProxyError::AccessDenied(format!(
        "you need (at least one of) the shardgate admin role for this operation ({what}; user '{}' has role {})",
        user.name,
        user.role.name()
    ))
}

impl Session {
    /// Whether the user may run `plan` (planned from `sql`).
    pub(super) fn authorize(&self, plan: &Plan, sql: &str) -> Result<(), ProxyError> {
        let g = &*self.grants;
        if g.role == Role::Admin && g.all_keyspaces() {
            return Ok(());
        }
        match plan {
            Plan::Session(op) => self.authorize_op(op, sql),
            Plan::Query(q) => {
                // The keyspace first: a statement on a keyspace not granted is 1044 for
                // every role (the rule; MySQL itself would say 1142 for DML).
                if !g.all_keyspaces() {
                    if let Some(ks) = q.grant_keyspaces.iter().find(|k| !g.grants_keyspace(k)) {
                        return Err(self.database_denied(ks));
                    }
                    if q.facts.opaque {
                        self.authorize_words(sql)?;
                    }
                }
                if !allows(g.role, q.facts.privilege) {
                    return Err(self.statement_denied(q.facts.ddl, q.facts.privilege, sql));
                }
                Ok(())
            }
        }
    }

    /// Statements the session answers itself.
    fn authorize_op(&self, op: &SessionOp, sql: &str) -> Result<(), ProxyError> {
        let g = &*self.grants;
        match op {
            SessionOp::Use { keyspace, shard } => {
                check_use(g, self.info.peer, keyspace, shard.is_some())
            }
            SessionOp::Explain(inner) => self.authorize(inner, sql),
            SessionOp::ShowQueryStats if g.role != Role::Admin => {
                Err(self.admin_only("SHOW QUERY STATS (every user's statements)"))
            }
            // KILL and PROCESSLIST are limited to the user's own sessions where they run;
            // EXPLAIN ANALYZE and EXECUTE check the statement they run.
            _ => Ok(()),
        }
    }

    /// A statement sqlparser could not read, by a user limited to some keyspaces: none of
    /// its words may name another keyspace or the database of one of its shards.
    fn authorize_words(&self, sql: &str) -> Result<(), ProxyError> {
        let snapshot = self.ctx.snapshot();
        let g = &*self.grants;
        let mut allowed: HashSet<String> = HashSet::new();
        let mut denied: Vec<(String, String)> = Vec::new();
        for (name, ks) in &snapshot.keyspaces {
            let dbs = ks.shards.values().map(|s| s.database.to_ascii_lowercase());
            if g.grants_keyspace(name) {
                allowed.insert(name.to_ascii_lowercase());
                allowed.extend(dbs);
            } else {
                denied.push((name.to_ascii_lowercase(), name.clone()));
                denied.extend(dbs.map(|d| (d, name.clone())));
            }
        }
        for w in crate::planner::facts::code_words(sql) {
            let w = w.to_ascii_lowercase();
            if allowed.contains(&w) {
                continue;
            }
            if let Some((_, ks)) = denied.iter().find(|(d, _)| *d == w) {
                return Err(self.database_denied(ks));
            }
        }
        Ok(())
    }

    /// KILL of session `owner`'s statement or connection.
    pub(super) fn may_kill(&self, owner: &str) -> bool {
        self.grants.role == Role::Admin || owner == self.grants.name
    }

    /// Whether PROCESSLIST shows a session of `owner`.
    pub(super) fn sees_session(&self, owner: &str) -> bool {
        self.may_kill(owner)
    }

    /// Whether SHOW DATABASES lists keyspace `ks`.
    pub(super) fn sees_keyspace(&self, ks: &str) -> bool {
        self.grants.grants_keyspace(ks)
    }

    fn database_denied(&self, database: &str) -> ProxyError {
        database_denied(&self.grants, self.info.peer, database)
    }

    fn admin_only(&self, what: &str) -> ProxyError {
        admin_only(&self.grants, what)
    }

    /// 1142 naming the statement's command and first table, or 1227 when it names none.
    fn statement_denied(&self, ddl: bool, need: Privilege, sql: &str) -> ProxyError {
        let words = crate::planner::facts::code_words(sql);
        let command = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        let table = first_table(sql);
        let names_table = ddl
            || matches!(
                command.as_str(),
                "SELECT" | "WITH" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" | "LOCK"
            );
        match table {
            Some(table) if names_table => ProxyError::TableDenied {
                command,
                user: self.grants.name.clone(),
                host: host_of(self.info.peer),
                table,
            },
            _ => self.admin_only(&format!(
                "{command} needs the {} role",
                match need {
                    Privilege::Admin => "admin",
                    _ => "writer",
                }
            )),
        }
    }
}

/// The first table `sql` names (errors only: parses again).
fn first_table(sql: &str) -> Option<String> {
    use sqlparser::dialect::MySqlDialect;
    let parsed = sqlparser::parser::Parser::parse_sql(&MySqlDialect {}, sql).ok()?;
    crate::planner::tables::tables(parsed.first()?)
        .into_iter()
        .next()
        .map(|t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_one_before() {
        use Privilege::*;
        let expect = [
            (Role::Reader, [true, false, false]),
            (Role::Writer, [true, true, false]),
            (Role::Admin, [true, true, true]),
        ];
        for (role, want) in expect {
            for (need, w) in [Read, Write, Admin].into_iter().zip(want) {
                assert_eq!(allows(role, need), w, "{role:?} {need:?}");
            }
        }
    }
}
