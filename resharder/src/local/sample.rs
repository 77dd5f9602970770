//! The sample layout of a local cluster: keyspace `commerce` (unsharded: products and the
//! sequences) and keyspace `customer` (sharded by `customer_id` with the `hash` vindex:
//! customers and their orders), with a few rows each.

use shardgate_topology::keyrange::KeyRange;
use shardgate_topology::vindex::{SqlValue, Vindex};
use std::collections::BTreeMap;

pub const COMMERCE_VSCHEMA: &str = r#"{
  "sharded": false,
  "tables": {
    "product": {},
    "customer_seq": {"type": "sequence"},
    "corder_seq": {"type": "sequence"}
  }
}"#;

pub const CUSTOMER_VSCHEMA: &str = r#"{
  "sharded": true,
  "vindexes": {
    "hash": {"type": "hash"}
  },
  "tables": {
    "customer": {
      "column_vindexes": [{"column": "customer_id", "name": "hash"}],
      "auto_increment": {"column": "customer_id", "sequence": "customer_seq"}
    },
    "corder": {
      "column_vindexes": [{"column": "customer_id", "name": "hash"}],
      "auto_increment": {"column": "order_id", "sequence": "corder_seq"}
    }
  },
  "default_vindex": "hash",
  "sequence_keyspace": "commerce"
}"#;

pub const COMMERCE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS product (sku VARCHAR(128) NOT NULL PRIMARY KEY, description VARCHAR(128), price BIGINT)",
    "CREATE TABLE IF NOT EXISTS customer_seq (id INT NOT NULL, next_id BIGINT, cache BIGINT, PRIMARY KEY (id)) COMMENT 'vitess_sequence'",
    "CREATE TABLE IF NOT EXISTS corder_seq (id INT NOT NULL, next_id BIGINT, cache BIGINT, PRIMARY KEY (id)) COMMENT 'vitess_sequence'",
];

pub const COMMERCE_DATA: &[&str] = &[
    "INSERT IGNORE INTO product VALUES ('SKU-1001', 'Monitor', 100), ('SKU-1002', 'Keyboard', 30), ('SKU-1003', 'Mouse', 20), ('SKU-1004', 'Laptop', 900), ('SKU-1005', 'Headset', 60)",
    // Ids up to 1000 are used by the sample rows.
    "INSERT IGNORE INTO customer_seq VALUES (0, 1001, 100)",
    "INSERT IGNORE INTO corder_seq VALUES (0, 1001, 100)",
];

pub const CUSTOMER_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS customer (customer_id BIGINT NOT NULL, email VARCHAR(128), name VARCHAR(128), created_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (customer_id))",
    "CREATE TABLE IF NOT EXISTS corder (order_id BIGINT NOT NULL, customer_id BIGINT NOT NULL, sku VARCHAR(128), price BIGINT, PRIMARY KEY (order_id), KEY (customer_id))",
];

const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "ursula", "victor", "walter",
];

/// INSERT statements for the sample customers and orders, per shard name.
pub fn customer_rows(shards: &[KeyRange]) -> BTreeMap<String, Vec<String>> {
    let hash = Vindex::from_spec("hash", "hash", &BTreeMap::new(), "").expect("hash vindex");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, name) in NAMES.iter().enumerate() {
        let id = i as i64 + 1;
        let ksid = hash
            .map(&SqlValue::Int(id))
            .ok()
            .flatten()
            .expect("integers always hash");
        let shard = shards
            .iter()
            .find(|r| r.contains(ksid.as_bytes()))
            .expect("shards cover the key space");
        let list = out.entry(shard.name()).or_default();
        list.push(format!(
            "INSERT IGNORE INTO customer (customer_id, email, name) VALUES ({id}, '{name}@example.com', '{}')",
            capitalize(name)
        ));
        for k in 0..(id % 3 + 1) {
            let order = id * 10 + k;
            let sku = 1001 + (order % 5);
            let price = [100, 30, 20, 900, 60][(order % 5) as usize];
            list.push(format!(
                "INSERT IGNORE INTO corder (order_id, customer_id, sku, price) VALUES ({order}, {id}, 'SKU-{sku}', {price})"
            ));
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
