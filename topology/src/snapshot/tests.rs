use super::*;

const COMMERCE: &str =
    r#"{"sharded": false, "tables": {"product": {}, "customer_seq": {"type": "sequence"}}}"#;
const CUSTOMER: &str = r#"{
  "sharded": true,
  "vindexes": {"hash": {"type": "hash"}},
  "tables": {
    "customer": {"column_vindexes": [{"column": "customer_id", "name": "hash"}],
                 "auto_increment": {"column": "customer_id", "sequence": "customer_seq"}},
    "country": {"type": "reference"}
  }
}"#;
const SHARD: &str = r#"{"primary": "127.0.0.1:3306", "database": "customer"}"#;

fn base() -> Vec<(String, String)> {
    vec![
        ("keyspaces/commerce".into(), COMMERCE.into()),
        (
            "keyspaces/commerce/shards/-".into(),
            r#"{"primary": "127.0.0.1:3307", "database": "commerce"}"#.into(),
        ),
        ("keyspaces/customer".into(), CUSTOMER.into()),
        ("keyspaces/customer/shards/-80".into(), SHARD.into()),
        ("keyspaces/customer/shards/80-".into(), SHARD.into()),
    ]
}

fn build(entries: &[(String, String)]) -> Result<Snapshot, TopoProblems> {
    Snapshot::build(7, entries.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
}

fn with(mut entries: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    entries.retain(|(k, _)| k != key);
    entries.push((key.into(), value.into()));
    entries
}

fn problem(entries: &[(String, String)]) -> String {
    build(entries).unwrap_err().to_string()
}

#[test]
fn a_good_topology_resolves() {
    let s = build(&base()).unwrap();
    assert_eq!(s.revision, 7);
    let c = s.keyspace("customer").unwrap();
    assert!(c.sharded);
    assert_eq!(
        c.serving
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["-80", "80-"]
    );
    let t = c.table("customer").unwrap();
    assert_eq!(t.kind, TableKind::Sharded);
    assert_eq!(
        t.auto_increment.as_ref().unwrap().sequence_keyspace,
        "commerce"
    );
    assert_eq!(c.table("country").unwrap().kind, TableKind::Reference);
    let id = t
        .primary_vindex()
        .unwrap()
        .vindex
        .map(&crate::vindex::SqlValue::Int(29999))
        .unwrap()
        .unwrap();
    assert_eq!(c.shard_for(id.as_bytes()).unwrap().name, "80-");
    assert!(s.keyspace("commerce").unwrap().single_shard().is_some());
}

#[test]
fn bad_json_and_unknown_fields_name_the_key() {
    let p = problem(&with(base(), "keyspaces/customer", "{not json"));
    assert!(p.starts_with("keyspaces/customer: invalid document"), "{p}");
    let p = problem(&with(
        base(),
        "keyspaces/customer/shards/-80",
        r#"{"primary": "h:1", "database": "d", "primray": "x"}"#,
    ));
    assert!(
        p.contains("keyspaces/customer/shards/-80") && p.contains("primray"),
        "{p}"
    );
}

#[test]
fn unknown_vindex_types_and_missing_vindexes() {
    let p = problem(&with(
        base(),
        "keyspaces/customer",
        &CUSTOMER.replace(r#""type": "hash""#, r#""type": "hashy""#),
    ));
    assert!(p.contains("unknown vindex type \"hashy\""), "{p}");
    let p = problem(&with(
        base(),
        "keyspaces/customer",
        &CUSTOMER.replace(r#""name": "hash""#, r#""name": "nope""#),
    ));
    assert!(p.contains("names vindex \"nope\""), "{p}");
}

#[test]
fn overlaps_gaps_and_bad_shard_names() {
    let p = problem(&with(base(), "keyspaces/customer/shards/40-", SHARD));
    assert!(
        p.contains("keyspaces/customer/routing") && p.contains("overlap"),
        "{p}"
    );
    let mut gap = base();
    gap.retain(|(k, _)| k != "keyspaces/customer/shards/80-");
    gap.push(("keyspaces/customer/shards/c0-".into(), SHARD.into()));
    let p = problem(&gap);
    assert!(p.contains("gap") && p.contains("80-c0"), "{p}");
    let p = problem(&with(base(), "keyspaces/customer/shards/shard1", SHARD));
    assert!(
        p.contains("keyspaces/customer/shards/shard1") && p.contains("not a key range"),
        "{p}"
    );
}

#[test]
fn routing_must_name_known_shards() {
    let p = problem(&with(
        base(),
        "keyspaces/customer/routing",
        r#"{"version": 2, "serving": ["-80", "80-c0"]}"#,
    ));
    assert!(
        p.contains("serving shard \"80-c0\" has no shard document"),
        "{p}"
    );
    let s = build(&with(
        base(),
        "keyspaces/customer/routing",
        r#"{"version": 2, "serving": ["-80", "80-"]}"#,
    ))
    .unwrap();
    assert_eq!(s.keyspace("customer").unwrap().routing.version, 2);
}

#[test]
fn dual_write_targets_must_cover_sources() {
    let mut e = base();
    e.push((
        "keyspaces/customer/shards/80-c0".into(),
        r#"{"primary": "h:1", "database": "d", "state": "new"}"#.into(),
    ));
    e.push((
        "keyspaces/customer/shards/c0-".into(),
        r#"{"primary": "h:1", "database": "d", "state": "new"}"#.into(),
    ));
    let ok = with(
        e.clone(),
        "keyspaces/customer/routing",
        r#"{"version": 3, "serving": ["-80", "80-"], "dual_write": [{"from": ["80-"], "to": ["80-c0", "c0-"]}]}"#,
    );
    assert!(build(&ok).is_ok(), "{:?}", build(&ok).err());
    let bad = with(
        e,
        "keyspaces/customer/routing",
        r#"{"version": 3, "serving": ["-80", "80-"], "dual_write": [{"from": ["80-"], "to": ["80-c0"]}]}"#,
    );
    assert!(problem(&bad).contains("do not cover"));
}

#[test]
fn unknown_keys_and_orphans_are_rejected() {
    let p = problem(&with(base(), "keyspace/customer", "{}"));
    assert!(p.contains("keyspace/customer: unknown key"), "{p}");
    let p = problem(&with(base(), "keyspaces/ghost/shards/-", SHARD));
    assert!(
        p.contains("keyspaces/ghost") && p.contains("missing"),
        "{p}"
    );
}

#[test]
fn sequences_must_exist_and_live_unsharded() {
    let p = problem(&with(
        base(),
        "keyspaces/customer",
        &CUSTOMER.replace("customer_seq", "other_seq"),
    ));
    assert!(p.contains("other_seq"), "{p}");
    let p = problem(&with(
        base(),
        "keyspaces/customer",
        &CUSTOMER.replace(r#""type": "reference""#, r#""type": "sequence""#),
    ));
    assert!(p.contains("unsharded keyspace"), "{p}");
}

#[test]
fn unsharded_keyspaces_have_one_full_shard() {
    let p = problem(&with(base(), "keyspaces/commerce/shards/-80", SHARD));
    assert!(p.contains("can only have the shard"), "{p}");
}

#[test]
fn routing_rules_send_a_table_to_another_keyspace() {
    let rules =
        r#"{"rules": [{"from_table": "commerce.orders", "to_tables": ["customer.orders"]}]}"#;
    let s = build(&with(base(), "routing_rules", rules)).unwrap();
    assert_eq!(s.routed("commerce", "orders"), Some("customer"));
    assert_eq!(s.routed("commerce", "product"), None);
    assert_eq!(s.routed("customer", "orders"), None);
    // A rule to the same keyspace changes nothing.
    let same =
        r#"{"rules": [{"from_table": "customer.orders", "to_tables": ["customer.orders"]}]}"#;
    let s = build(&with(base(), "routing_rules", same)).unwrap();
    assert!(s.routing_rules.is_empty());
}

#[test]
fn routing_rules_are_checked() {
    let cases = [
        (
            r#"{"rules": [{"from_table": "orders", "to_tables": ["customer.orders"]}]}"#,
            "not keyspace.table",
        ),
        (
            r#"{"rules": [{"from_table": "commerce.orders", "to_tables": []}]}"#,
            "exactly one",
        ),
        (
            r#"{"rules": [{"from_table": "commerce.orders", "to_tables": ["customer.o2"]}]}"#,
            "keeps its name",
        ),
        (
            r#"{"rules": [{"from_table": "commerce.orders", "to_tables": ["ghost.orders"]}]}"#,
            "no keyspace \"ghost\"",
        ),
        (
            r#"{"rules": [{"from_table": "commerce.orders", "to_tables": ["customer.orders"]},
                          {"from_table": "customer.orders", "to_tables": ["commerce.orders"]}]}"#,
            "one hop only",
        ),
        (
            r#"{"rules": [{"from_table": "commerce.orders", "to_tables": ["customer.orders"], "x": 1}]}"#,
            "unknown field",
        ),
    ];
    for (doc, want) in cases {
        let p = problem(&with(base(), "routing_rules", doc));
        assert!(
            p.contains("routing_rules") && p.contains(want),
            "{doc}: {p}"
        );
    }
}

#[test]
fn users_are_read_checked_and_named_by_their_key() {
    let hash = shardgate_config::hash_password("pw");
    let good = format!(
        r#"{{"name": "app", "password_hash": "{hash}", "role": "reader", "keyspaces": ["customer"]}}"#
    );
    let s = build(&with(base(), "users/app", &good)).unwrap();
    let u = &s.users["app"];
    assert_eq!(u.role, shardgate_config::Role::Reader);
    assert!(u.grants_keyspace("customer"));
    assert!(!u.grants_keyspace("commerce"));
    assert_eq!(u.hosts, vec!["%".to_string()]);

    let renamed = good.replace("\"app\"", "\"other\"");
    assert!(problem(&with(base(), "users/app", &renamed)).contains("names user \"other\""));
    let plain = good.replace(&hash, "secret");
    assert!(problem(&with(base(), "users/app", &plain)).contains("password_hash"));
    let role = good.replace("reader", "superuser");
    assert!(problem(&with(base(), "users/app", &role)).contains("users/app"));
}
