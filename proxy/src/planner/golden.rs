//! Planner golden tests: every case of `testdata/plans.json` is planned and its plan (as
//! `EXPLAIN FORMAT=shardgate` prints it) compared with `testdata/plans.expected.json`.
//! Run with `SHARDGATE_BLESS=1` to rewrite the expected file after an intended change.

use super::{plan, PlanContext};
use shardgate_topology::Snapshot;

pub(crate) fn snapshot() -> Snapshot {
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
        (
            "keyspaces/tpcc",
            r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}},
                "tables": {
                  "warehouse": {"column_vindexes": [{"column": "w_id", "name": "hash"}]},
                  "district": {"column_vindexes": [{"column": "d_w_id", "name": "hash"}]},
                  "customer": {"column_vindexes": [{"column": "c_w_id", "name": "hash"}]},
                  "history": {"column_vindexes": [{"column": "h_w_id", "name": "hash"}]},
                  "orders": {"column_vindexes": [{"column": "o_w_id", "name": "hash"}]},
                  "new_orders": {"column_vindexes": [{"column": "no_w_id", "name": "hash"}]},
                  "order_line": {"column_vindexes": [{"column": "ol_w_id", "name": "hash"}]},
                  "stock": {"column_vindexes": [{"column": "s_w_id", "name": "hash"}]},
                  "item": {"type": "reference"}}}"#,
        ),
        (
            "keyspaces/tpcc/shards/-80",
            r#"{"primary": "10.0.0.4:3306", "database": "tpcc"}"#,
        ),
        (
            "keyspaces/tpcc/shards/80-",
            r#"{"primary": "10.0.0.5:3306", "database": "tpcc"}"#,
        ),
    ];
    Snapshot::build(1, docs.iter().map(|(k, v)| (*k, v.as_bytes()))).expect("valid test topology")
}

/// The columns schema tracking would read for the golden keyspaces.
pub(crate) fn schema() -> crate::schema::Schemas {
    crate::schema::for_tests(&[
        (
            "commerce",
            "product",
            &["sku", "description", "price"],
            &["sku"],
        ),
        (
            "customer",
            "customer",
            &["customer_id", "email", "name", "created_at", "country"],
            &["customer_id"],
        ),
        (
            "customer",
            "corder",
            &["order_id", "customer_id", "sku", "price"],
            &["order_id"],
        ),
        ("customer", "country", &["code", "name"], &["code"]),
        (
            "tpcc",
            "warehouse",
            &[
                "w_id",
                "w_name",
                "w_street_1",
                "w_street_2",
                "w_city",
                "w_state",
                "w_zip",
                "w_tax",
                "w_ytd",
            ],
            &["w_id"],
        ),
        (
            "tpcc",
            "district",
            &[
                "d_id",
                "d_w_id",
                "d_name",
                "d_street_1",
                "d_street_2",
                "d_city",
                "d_state",
                "d_zip",
                "d_tax",
                "d_ytd",
                "d_next_o_id",
            ],
            &["d_w_id", "d_id"],
        ),
        (
            "tpcc",
            "customer",
            &[
                "c_id",
                "c_d_id",
                "c_w_id",
                "c_first",
                "c_middle",
                "c_last",
                "c_street_1",
                "c_street_2",
                "c_city",
                "c_state",
                "c_zip",
                "c_phone",
                "c_since",
                "c_credit",
                "c_credit_lim",
                "c_discount",
                "c_balance",
                "c_ytd_payment",
                "c_payment_cnt",
                "c_delivery_cnt",
                "c_data",
            ],
            &["c_w_id", "c_d_id", "c_id"],
        ),
        (
            "tpcc",
            "history",
            &[
                "h_c_id", "h_c_d_id", "h_c_w_id", "h_d_id", "h_w_id", "h_date", "h_amount",
                "h_data",
            ],
            &[],
        ),
        (
            "tpcc",
            "new_orders",
            &["no_o_id", "no_d_id", "no_w_id"],
            &["no_w_id", "no_d_id", "no_o_id"],
        ),
        (
            "tpcc",
            "orders",
            &[
                "o_id",
                "o_d_id",
                "o_w_id",
                "o_c_id",
                "o_entry_d",
                "o_carrier_id",
                "o_ol_cnt",
                "o_all_local",
            ],
            &["o_w_id", "o_d_id", "o_id"],
        ),
        (
            "tpcc",
            "order_line",
            &[
                "ol_o_id",
                "ol_d_id",
                "ol_w_id",
                "ol_number",
                "ol_i_id",
                "ol_supply_w_id",
                "ol_delivery_d",
                "ol_quantity",
                "ol_amount",
                "ol_dist_info",
            ],
            &["ol_w_id", "ol_d_id", "ol_o_id", "ol_number"],
        ),
        (
            "tpcc",
            "item",
            &["i_id", "i_im_id", "i_name", "i_price", "i_data"],
            &["i_id"],
        ),
        (
            "tpcc",
            "stock",
            &[
                "s_i_id",
                "s_w_id",
                "s_quantity",
                "s_dist_01",
                "s_dist_02",
                "s_dist_03",
                "s_dist_04",
                "s_dist_05",
                "s_dist_06",
                "s_dist_07",
                "s_dist_08",
                "s_dist_09",
                "s_dist_10",
                "s_ytd",
                "s_order_cnt",
                "s_remote_cnt",
                "s_data",
            ],
            &["s_w_id", "s_i_id"],
        ),
    ])
}

#[test]
fn plans_match_the_golden_file() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/plans.json")).unwrap())
            .unwrap();
    let snap = snapshot();
    let schema = schema();
    let mut actual = Vec::new();
    for c in &cases {
        let ctx = PlanContext {
            snapshot: &snap,
            schema: &schema,
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
