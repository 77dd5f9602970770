//! Planner golden tests: every case of `testdata/plans.json` is planned and its plan (as
//! `EXPLAIN FORMAT=shardgate` prints it) compared with `testdata/plans.expected.json`.
//! Run with `SHARDGATE_BLESS=1` to rewrite the expected file after an intended change.

use super::{plan, PlanContext};
use shardgate_topology::Snapshot;

fn snapshot() -> Snapshot {
    let docs = [
        (
            "keyspaces/commerce",
            r#"{"tables": {"product": {}, "customer_seq": {"type": "sequence"}}}"#,
        ),
        (
            "keyspaces/commerce/shards/-",
            r#"{"primary": "10.0.0.1:3306", "database": "commerce"}"#,
        ),
        (
            "keyspaces/customer",
            r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}},
                "tables": {
                  "customer": {"column_vindexes": [{"column": "customer_id", "name": "hash"}],
                               "auto_increment": {"column": "customer_id", "sequence": "customer_seq"}},
                  "corder": {"column_vindexes": [{"column": "customer_id", "name": "hash"}]},
                  "country": {"type": "reference"}},
                "sequence_keyspace": "commerce"}"#,
        ),
        (
            "keyspaces/customer/shards/-80",
            r#"{"primary": "10.0.0.2:3306", "database": "customer"}"#,
        ),
        (
            "keyspaces/customer/shards/80-",
            r#"{"primary": "10.0.0.3:3306", "database": "customer"}"#,
        ),
    ];
    Snapshot::build(1, docs.iter().map(|(k, v)| (*k, v.as_bytes()))).expect("valid test topology")
}

#[test]
fn plans_match_the_golden_file() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/plans.json")).unwrap())
            .unwrap();
    let snap = snapshot();
    let mut actual = Vec::new();
    for c in &cases {
        let ctx = PlanContext {
            snapshot: &snap,
            keyspace: c["keyspace"].as_str(),
            shard: c["shard"].as_str(),
        };
        let q = c["query"].as_str().unwrap();
        let result = match plan(q, &ctx) {
            Ok(p) => serde_json::to_value(&p).unwrap(),
            Err(e) => serde_json::json!({"error": e.to_string(), "code": e.code().0}),
        };
        actual.push(serde_json::json!({"query": q, "plan": result}));
    }
    let path = format!("{dir}/plans.expected.json");
    let rendered = serde_json::to_string_pretty(&actual).unwrap() + "\n";
    if std::env::var_os("SHARDGATE_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .expect("run with SHARDGATE_BLESS=1 to create the expected file");
    let expected: Vec<serde_json::Value> = serde_json::from_str(&expected).unwrap();
    assert_eq!(
        expected.len(),
        actual.len(),
        "case count changed; rerun with SHARDGATE_BLESS=1"
    );
    for (e, a) in expected.iter().zip(&actual) {
        assert_eq!(
            e,
            a,
            "plan changed for {}\nexpected: {}\nactual:   {}",
            a["query"],
            serde_json::to_string_pretty(&e["plan"]).unwrap(),
            serde_json::to_string_pretty(&a["plan"]).unwrap()
        );
    }
}
