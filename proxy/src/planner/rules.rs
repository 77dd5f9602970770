//! Routing rules: tables clients name in one keyspace that live in another (after
//! `shardctl movetables` switched them, or before, sending reads of the half-filled
//! target copy back to the source).
//!
//! Rules are applied to the statement text before routing, so everything downstream
//! (routing, gathering, prepared statements) sees only where tables live:
//! - when every table of the statement lives in one keyspace, qualifiers are dropped and
//!   the statement is planned as if the session used that keyspace (`USE commerce;
//!   SELECT * FROM orders` runs as `SELECT * FROM orders` on `customer`);
//! - otherwise each moved table's qualifier is replaced by (or, when the name was
//!   unqualified, prefixed with) the keyspace where it lives, and the statement is planned
//!   as one that spans keyspaces.
//!
//! What cannot be rewritten safely is refused (1235), never sent to the old location:
//! a column named with its keyspace (`commerce.orders.id`), a statement the parser cannot
//! read that mentions a moved table.

use super::edit::{Edits, TextIndex};
use super::tables::{self, TableRef};
use super::PlanContext;
use crate::error::ProxyError;
use sqlparser::ast::{visit_expressions, Expr, Statement};
use std::ops::ControlFlow;

/// A statement rewritten by routing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rerouted {
    pub sql: String,
    /// The keyspace to plan it in, when every table lives in this one.
    pub keyspace: Option<String>,
}

/// The statement with routing rules applied; `None` when no table it names is moved.
pub fn apply(
    sql: &str,
    stmt: &Statement,
    ctx: &PlanContext,
) -> Result<Option<Rerouted>, ProxyError> {
    let snapshot = ctx.snapshot;
    if snapshot.routing_rules.is_empty() || ctx.shard.is_some() {
        return Ok(None);
    }
    let refs = tables::tables(stmt);
    // (table, the keyspace it is named in, where it lives), for tables of keyspaces.
    let mut resolved: Vec<(&TableRef, &str, &str)> = Vec::new();
    for t in &refs {
        let named = match t.keyspace(ctx.keyspace) {
            Ok(Some(named)) => named,
            Ok(None) => continue,
            // No database selected: the statement fails as it would without rules.
            Err(_) => return Ok(None),
        };
        let lives = snapshot.routed(named, &t.name).unwrap_or(named);
        resolved.push((t, named, lives));
    }
    let moved: Vec<&(&TableRef, &str, &str)> = resolved.iter().filter(|(_, n, l)| n != l).collect();
    if moved.is_empty() {
        return Ok(None);
    }
    if let Some(c) = keyspace_qualified_column(stmt, &moved) {
        return Err(ProxyError::NotSupported(format!(
            "the column {c} names the keyspace of a table that a routing rule moved; name the column by its table (or alias) alone"
        )));
    }
    let idx = TextIndex::new(sql);
    let mut edits = Edits::new();
    let mut homes: Vec<&str> = resolved.iter().map(|(_, _, l)| *l).collect();
    homes.sort_unstable();
    homes.dedup();
    let keyspace = match homes.as_slice() {
        [one] => {
            // Planned in that keyspace: qualifiers go (`commerce.orders` -> `orders`).
            for (t, _, _) in &resolved {
                if let (Some(q), Some(n)) = (t.schema_span, t.name_span) {
                    let (Some((a, _)), Some((c, _))) = (idx.range(q), idx.range(n)) else {
                        return Err(unreadable());
                    };
                    edits.replace(a, c, "");
                }
            }
            Some(one.to_string())
        }
        _ => {
            let quoted = |k: &str| format!("`{}`", k.replace('`', "``"));
            for (t, _, lives) in &moved {
                match (t.schema_span, t.name_span) {
                    (Some(q), _) => {
                        let (a, b) = idx.range(q).ok_or_else(unreadable)?;
                        edits.replace(a, b, quoted(lives));
                    }
                    (None, Some(n)) => {
                        let (a, _) = idx.range(n).ok_or_else(unreadable)?;
                        edits.insert(a, format!("{}.", quoted(lives)));
                    }
                    (None, None) => return Err(unreadable()),
                }
            }
            None
        }
    };
    let sql = edits.apply(sql).ok_or_else(unreadable)?;
    Ok(Some(Rerouted { sql, keyspace }))
}

fn unreadable() -> ProxyError {
    ProxyError::NotSupported(
        "a statement naming a table that a routing rule moved, in a form the proxy cannot rewrite"
            .into(),
    )
}

/// A column reference `ks.table.column` whose keyspace and table are a moved table's.
fn keyspace_qualified_column(
    stmt: &Statement,
    moved: &[&(&TableRef, &str, &str)],
) -> Option<String> {
    let mut found = None;
    let _ = visit_expressions(stmt, |e: &Expr| {
        if let Expr::CompoundIdentifier(parts) = e {
            if parts.len() >= 3 {
                let (k, t) = (&parts[parts.len() - 3].value, &parts[parts.len() - 2].value);
                if moved.iter().any(|(r, named, _)| named == k && &r.name == t) {
                    found = Some(
                        parts
                            .iter()
                            .map(|p| p.value.as_str())
                            .collect::<Vec<_>>()
                            .join("."),
                    );
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// For a statement the parser cannot read, planned in keyspace `keyspace`: whether its
/// text may name a table a routing rule moved out of that keyspace (then it is refused
/// rather than sent where the table no longer lives).
pub fn may_name_moved_table(sql: &str, keyspace: &str, ctx: &PlanContext) -> bool {
    let rules = &ctx.snapshot.routing_rules;
    if rules.is_empty() {
        return false;
    }
    let lower = sql.to_ascii_lowercase();
    rules.keys().any(|(k, t)| {
        (k == keyspace || lower.contains(&k.to_ascii_lowercase()))
            && lower.contains(&t.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::super::{plan, Plan, PlanContext, Primitive, QueryPlan, Target};
    use shardgate_topology::Snapshot;

    /// `orders` moved from commerce to customer (sharded by id); `product` stayed.
    fn snapshot() -> Snapshot {
        let entries = [
            (
                "keyspaces/commerce",
                r#"{"tables": {"product": {}, "orders": {}}}"#,
            ),
            (
                "keyspaces/commerce/shards/-",
                r#"{"primary": "127.0.0.1:1", "database": "commerce"}"#,
            ),
            (
                "keyspaces/customer",
                r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}}, "tables": {"orders": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#,
            ),
            (
                "keyspaces/customer/shards/-80",
                r#"{"primary": "127.0.0.1:2", "database": "customer"}"#,
            ),
            (
                "keyspaces/customer/shards/80-",
                r#"{"primary": "127.0.0.1:3", "database": "customer"}"#,
            ),
            (
                "routing_rules",
                r#"{"rules": [{"from_table": "commerce.orders", "to_tables": ["customer.orders"]}]}"#,
            ),
        ];
        Snapshot::build(1, entries.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap()
    }

    fn in_commerce<'a>(s: &'a Snapshot, schema: &'a crate::schema::Schemas) -> PlanContext<'a> {
        PlanContext {
            snapshot: s,
            schema,
            keyspace: Some("commerce"),
            shard: None,
        }
    }

    fn planned(sql: &str, keyspace: Option<&str>) -> QueryPlan {
        let s = snapshot();
        let schema = crate::schema::Schemas::default();
        let ctx = PlanContext {
            snapshot: &s,
            schema: &schema,
            keyspace,
            shard: None,
        };
        match plan(sql, &ctx) {
            Ok(Plan::Query(q)) => q,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn a_moved_table_is_planned_where_it_lives() {
        for (sql, ks) in [
            ("SELECT * FROM orders WHERE id = 5", Some("commerce")),
            ("SELECT * FROM commerce.orders WHERE id = 5", None),
            (
                "SELECT * FROM `commerce`.`orders` WHERE id = 5",
                Some("customer"),
            ),
            (
                "UPDATE commerce.orders SET x = 1 WHERE id = 5",
                Some("commerce"),
            ),
        ] {
            let q = planned(sql, ks);
            let r = match &q.root {
                Primitive::Route(r) => r,
                Primitive::Write(w) => &w.route,
                other => panic!("{sql}: {other:?}"),
            };
            assert_eq!(r.keyspace, "customer", "{sql}");
            assert!(
                matches!(r.target, Target::Equal { .. }),
                "{sql}: {:?}",
                r.target
            );
            let text = q.rerouted.as_deref().unwrap();
            assert!(!text.contains("commerce"), "{sql}: {text}");
            assert!(text.contains("orders"), "{sql}: {text}");
        }
    }

    #[test]
    fn tables_that_stayed_are_untouched() {
        let q = planned("SELECT * FROM product", Some("commerce"));
        assert!(q.rerouted.is_none());
        assert_eq!(&*q.keyspace, "commerce");
    }

    #[test]
    fn a_statement_spanning_both_keyspaces_names_each_table_where_it_lives() {
        let (s, schema) = (snapshot(), crate::schema::Schemas::default());
        let ctx = in_commerce(&s, &schema);
        let stmt = sqlparser::parser::Parser::parse_sql(
            &sqlparser::dialect::MySqlDialect {},
            "SELECT * FROM orders o JOIN product p ON p.id = o.product_id",
        )
        .unwrap()
        .pop()
        .unwrap();
        let r = super::apply(
            "SELECT * FROM orders o JOIN product p ON p.id = o.product_id",
            &stmt,
            &ctx,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.keyspace, None);
        assert_eq!(
            r.sql,
            "SELECT * FROM `customer`.orders o JOIN product p ON p.id = o.product_id"
        );
    }

    #[test]
    fn what_cannot_be_rewritten_is_refused() {
        let (s, schema) = (snapshot(), crate::schema::Schemas::default());
        let ctx = in_commerce(&s, &schema);
        let e = plan(
            "SELECT commerce.orders.id FROM commerce.orders WHERE id = 1",
            &ctx,
        )
        .unwrap_err();
        assert_eq!(e.code().0, 1235, "{e}");
        // Unparseable text mentioning a moved table never reaches the old location.
        let e = plan("FLUSH ORDERS orders WITH SOMETHING", &ctx).unwrap_err();
        assert_eq!(e.code().0, 1235, "{e}");
    }
}
