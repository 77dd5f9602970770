//! `shardctl explain --vschema FILE SQL`: the plan a proxy would make for a statement,
//! offline (like Vitess's vtexplain): no etcd, no MariaDB. The keyspace is built from the
//! VSchema file with shards `--shards` (default `-80,80-` when sharded, `-` otherwise).
//! Without a schema, statements that need the tables' columns (INSERT without a column
//! list, `SELECT *` across shards) are reported as needing them.

use anyhow::{Context as _, Result};
use shardgate_proxy::planner::{self, PlanContext};
use shardgate_proxy::schema::Schemas;
use shardgate_topology::Snapshot;
use std::path::Path;

/// Prints the plan of `sql` against a keyspace made from `vschema`.
pub fn explain(vschema: &Path, keyspace: &str, shards: &[String], sql: &str) -> Result<()> {
    let doc = std::fs::read_to_string(vschema)
        .with_context(|| format!("cannot read {}", vschema.display()))?;
    let parsed: serde_json::Value = serde_json::from_str(&doc)
        .map_err(|e| super::Invalid(format!("{}: not JSON: {e}", vschema.display())))?;
    let sharded = parsed["sharded"].as_bool().unwrap_or(false);
    let shards: Vec<String> = if !shards.is_empty() {
        shards.to_vec()
    } else if sharded {
        vec!["-80".into(), "80-".into()]
    } else {
        vec!["-".into()]
    };
    let mut entries = vec![(format!("keyspaces/{keyspace}"), doc.clone())];
    for s in &shards {
        entries.push((
            format!("keyspaces/{keyspace}/shards/{s}"),
            format!(r#"{{"primary": "127.0.0.1:0", "database": "{keyspace}"}}"#),
        ));
    }
    let snapshot = Snapshot::build(1, entries.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
        .map_err(|e| super::Invalid(format!("the VSchema is invalid: {e}")))?;
    let schema = Schemas::default();
    let plan = planner::plan(
        sql,
        &PlanContext {
            snapshot: &snapshot,
            schema: &schema,
            keyspace: Some(keyspace),
            shard: None,
        },
    )
    .map_err(|e| super::Invalid(format!("{e}")))?;
    println!("{}", serde_json::to_string_pretty(&plan)?);
    Ok(())
}
