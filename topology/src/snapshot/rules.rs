//! Routing rules (`routing_rules`): checked into a map from the (keyspace, table) clients
//! name to the keyspace where the table lives.

use super::{valid_name, TopoProblem};
use crate::docs::{KeyspaceDoc, RoutingRulesDoc};
use std::collections::BTreeMap;

/// The routing rules, checked: `ks.table` to one `ks2.table` of the same name in another
/// existing keyspace, one hop only (a rule's target is not itself rerouted).
pub(super) fn check(
    doc: &RoutingRulesDoc,
    keyspaces: &BTreeMap<String, KeyspaceDoc>,
    problems: &mut Vec<TopoProblem>,
) -> BTreeMap<(String, String), String> {
    let mut fail = |problem: String| {
        problems.push(TopoProblem {
            key: "routing_rules".into(),
            problem,
        })
    };
    let split = |s: &str| -> Option<(String, String)> {
        let (k, t) = s.split_once('.')?;
        (valid_name(k) && !t.is_empty() && !t.contains('.')).then(|| (k.to_string(), t.to_string()))
    };
    let mut out = BTreeMap::new();
    for r in &doc.rules {
        let Some((from_ks, table)) = split(&r.from_table) else {
            fail(format!(
                "from_table {:?} is not keyspace.table",
                r.from_table
            ));
            continue;
        };
        let [to] = r.to_tables.as_slice() else {
            fail(format!(
                "rule for {}: to_tables must name exactly one keyspace.table",
                r.from_table
            ));
            continue;
        };
        let Some((to_ks, to_table)) = split(to) else {
            fail(format!("to_tables entry {to:?} is not keyspace.table"));
            continue;
        };
        if to_table != table {
            fail(format!(
                "rule for {}: the table keeps its name ({to} renames it)",
                r.from_table
            ));
            continue;
        }
        for ks in [&from_ks, &to_ks] {
            if !keyspaces.contains_key(ks) {
                fail(format!("rule for {}: no keyspace {ks:?}", r.from_table));
            }
        }
        if from_ks == to_ks {
            // A rule to where the table is named anyway changes nothing.
            continue;
        }
        if out.insert((from_ks, table), to_ks).is_some() {
            fail(format!("two rules for {}", r.from_table));
        }
    }
    let chained: Vec<String> = out
        .iter()
        .filter(|((_, t), to)| out.contains_key(&((*to).clone(), t.clone())))
        .map(|((k, t), to)| format!("{k}.{t} -> {to}.{t}"))
        .collect();
    for c in chained {
        fail(format!(
            "rule {c} points at a table that is itself rerouted (one hop only)"
        ));
    }
    out
}
