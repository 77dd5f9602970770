//! Finding the tables a statement reads or writes and the keyspaces they belong to.
//!
//! Clients see keyspaces as databases: `ks.table` names a keyspace's table, an unqualified
//! name means the session's current keyspace, and the MySQL system schemas
//! (information_schema, mysql, performance_schema, sys) are answered by a backend.

use crate::error::ProxyError;
use sqlparser::ast::{visit_relations, ObjectName, Spanned, Statement};
use sqlparser::tokenizer::Span;
use std::collections::HashSet;
use std::ops::ControlFlow;

/// Schemas every MySQL server has; queries on them go to a backend of the session's keyspace.
pub const SYSTEM_SCHEMAS: &[&str] = &["information_schema", "mysql", "performance_schema", "sys"];

pub fn is_system_schema(s: &str) -> bool {
    SYSTEM_SCHEMAS.iter().any(|x| x.eq_ignore_ascii_case(s))
}

/// A table named in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// The qualifier as written, if any.
    pub schema: Option<String>,
    pub name: String,
    /// Span of the qualifier (for rewriting it to a backend database name).
    pub schema_span: Option<Span>,
    /// Span of the table name (where routing rules insert a qualifier).
    pub name_span: Option<Span>,
}

impl TableRef {
    /// The keyspace this table belongs to (`None` for system schemas).
    pub fn keyspace<'a>(&'a self, current: Option<&'a str>) -> Result<Option<&'a str>, ProxyError> {
        match &self.schema {
            Some(s) if is_system_schema(s) => Ok(None),
            Some(s) => Ok(Some(s.as_str())),
            None => current.map(Some).ok_or(ProxyError::NoDatabaseSelected),
        }
    }
}

/// Every table the statement names, excluding CTE names.
pub fn tables(stmt: &Statement) -> Vec<TableRef> {
    let ctes = cte_names(stmt);
    let mut out = Vec::new();
    // DDL names that are not visited as relations.
    let mut extra: Vec<&ObjectName> = Vec::new();
    match stmt {
        Statement::Drop { names, .. } => extra.extend(names.iter()),
        Statement::CreateIndex(ci) => extra.push(&ci.table_name),
        Statement::AlterTable(at) => extra.push(&at.name),
        Statement::CreateTable(ct) => extra.push(&ct.name),
        Statement::RenameTable(rs) => {
            extra.extend(rs.iter().flat_map(|r| [&r.old_name, &r.new_name]))
        }
        _ => {}
    }
    for name in extra {
        add_name(name, &ctes, &mut out);
    }
    let _ = visit_relations(stmt, |name: &ObjectName| {
        add_name(name, &ctes, &mut out);
        ControlFlow::<()>::Continue(())
    });
    let mut unique: Vec<TableRef> = Vec::with_capacity(out.len());
    for t in out {
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    unique
}

fn add_name(name: &ObjectName, ctes: &HashSet<String>, out: &mut Vec<TableRef>) {
    {
        let parts: Vec<(String, Span)> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| (i.value.clone(), i.span)))
            .collect();
        match parts.as_slice() {
            [(t, _)] if ctes.contains(&t.to_ascii_lowercase()) => {}
            [(t, span)] => out.push(TableRef {
                schema: None,
                name: t.clone(),
                schema_span: None,
                name_span: Some(*span),
            }),
            [(s, span), (t, tspan)] => out.push(TableRef {
                schema: Some(s.clone()),
                name: t.clone(),
                schema_span: Some(*span),
                name_span: Some(*tspan),
            }),
            _ => out.push(TableRef {
                schema: None,
                name: name.to_string(),
                schema_span: Some(name.span()),
                name_span: None,
            }),
        }
    }
}

fn cte_names(stmt: &Statement) -> HashSet<String> {
    let mut out = HashSet::new();
    let _ = sqlparser::ast::visit_statements(stmt, |s| {
        if let Statement::Query(q) = s {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    out.insert(c.alias.name.value.to_ascii_lowercase());
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    // Nested WITH clauses inside subqueries.
    let _ = sqlparser::ast::visit_expressions(stmt, |e| {
        if let sqlparser::ast::Expr::Subquery(q) = e {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    out.insert(c.alias.name.value.to_ascii_lowercase());
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    out
}
