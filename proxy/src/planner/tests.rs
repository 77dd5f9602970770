use super::*;
use shardgate_topology::Snapshot;

fn snapshot(commerce_db: &str) -> Snapshot {
    let entries = [
        ("keyspaces/commerce".to_string(), r#"{"tables": {"product": {}}}"#.to_string()),
        (
            "keyspaces/commerce/shards/-".to_string(),
            format!(r#"{{"primary": "127.0.0.1:1", "database": "{commerce_db}"}}"#),
        ),
        (
            "keyspaces/customer".to_string(),
            r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}}, "tables": {"customer": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#.to_string(),
        ),
        ("keyspaces/customer/shards/-80".to_string(), r#"{"primary": "127.0.0.1:2", "database": "customer"}"#.to_string()),
        ("keyspaces/customer/shards/80-".to_string(), r#"{"primary": "127.0.0.1:3", "database": "customer"}"#.to_string()),
    ];
    Snapshot::build(1, entries.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))).unwrap()
}

fn route_of(p: Plan) -> Route {
    match p {
        Plan::Query(QueryPlan {
            root: Primitive::Route(r),
            ..
        }) => r,
        other => panic!("not a route: {other:?}"),
    }
}

fn no_schema() -> &'static crate::schema::Schemas {
    static EMPTY: std::sync::OnceLock<crate::schema::Schemas> = std::sync::OnceLock::new();
    EMPTY.get_or_init(crate::schema::Schemas::default)
}

fn ctx<'a>(s: &'a Snapshot, ks: Option<&'a str>) -> PlanContext<'a> {
    PlanContext {
        snapshot: s,
        schema: no_schema(),
        keyspace: ks,
        shard: None,
    }
}

#[test]
fn session_statements() {
    let s = snapshot("commerce");
    let c = ctx(&s, None);
    assert!(
        matches!(plan("use `commerce`", &c).unwrap(), Plan::Session(SessionOp::Use { keyspace, shard: None }) if keyspace == "commerce")
    );
    assert!(
        matches!(plan("USE customer:-80", &c).unwrap(), Plan::Session(SessionOp::Use { shard: Some(s), .. }) if s == "-80")
    );
    assert_eq!(plan("use nope", &c).unwrap_err().code().0, 1049);
    assert_eq!(plan("use customer:40-", &c).unwrap_err().code().0, 1049);
    assert!(matches!(
        plan("begin", &c).unwrap(),
        Plan::Session(SessionOp::Begin { read_only: false })
    ));
    assert!(matches!(
        plan("START TRANSACTION READ ONLY", &c).unwrap(),
        Plan::Session(SessionOp::Begin { read_only: true })
    ));
    assert!(matches!(
        plan("rollback work", &c).unwrap(),
        Plan::Session(SessionOp::Rollback)
    ));
    assert!(matches!(
        plan("SHOW databases", &c).unwrap(),
        Plan::Session(SessionOp::ShowDatabases)
    ));
    assert!(matches!(
        plan("set autocommit=1", &c).unwrap(),
        Plan::Session(SessionOp::Set(_))
    ));
}

#[test]
fn unsharded_statements_pass_through_verbatim() {
    let s = snapshot("commerce");
    let r = route_of(
        plan(
            "select * from product where name = 'a\\'b'",
            &ctx(&s, Some("commerce")),
        )
        .unwrap(),
    );
    assert_eq!(r.target, Target::Unsharded);
    assert!(r.query.verbatim);
    assert_eq!(
        r.query.template.with_placeholders(),
        "select * from product where name = 'a\\'b'"
    );
    let r = route_of(plan("select * from commerce.product", &ctx(&s, None)).unwrap());
    assert_eq!(r.keyspace, "commerce");
    // Something sqlparser cannot read still reaches an unsharded keyspace.
    let r = route_of(
        plan(
            "select 1 from product lock in share mode",
            &ctx(&s, Some("commerce")),
        )
        .unwrap(),
    );
    assert!(r.query.verbatim);
}

#[test]
fn errors_name_the_problem() {
    let s = snapshot("commerce");
    assert_eq!(
        plan("select * from product", &ctx(&s, None))
            .unwrap_err()
            .code()
            .0,
        1046
    );
    assert_eq!(
        plan("select * from nope.t", &ctx(&s, None))
            .unwrap_err()
            .code()
            .0,
        1146
    );
    // A join across keyspaces is gathered; without the tables' columns it cannot be yet
    // (the session reads the schema and plans again).
    let e = plan(
        "select * from commerce.product join customer.customer",
        &ctx(&s, None),
    )
    .unwrap_err();
    assert!(matches!(e, ProxyError::SchemaUnknown { .. }), "{e:?}");
    let e = plan(
        "select * from product full outer join customer.customer on 1",
        &ctx(&s, Some("commerce")),
    );
    assert_eq!(e.unwrap_err().code().0, 1235);
}

#[test]
fn socket_and_database_are_rewritten() {
    let s = snapshot("commerce");
    let r = route_of(
        plan(
            "SELECT @@max_allowed_packet,@@wait_timeout,@@socket",
            &ctx(&s, None),
        )
        .unwrap(),
    );
    assert_eq!(
        r.query.template.with_placeholders(),
        "SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`"
    );
    assert!(!r.query.verbatim);
    let r = route_of(plan("select DATABASE(), USER() limit 1", &ctx(&s, None)).unwrap());
    assert_eq!(
        r.query.template.with_placeholders(),
        "select NULL AS `DATABASE()`, USER() limit 1"
    );
    // Same names: nothing to rewrite.
    let r = route_of(plan("select DATABASE()", &ctx(&s, Some("commerce"))).unwrap());
    assert!(r.query.verbatim);
}

#[test]
fn keyspace_qualifiers_map_to_backend_databases() {
    let s = snapshot("app_commerce");
    let r = route_of(
        plan(
            "select * from `commerce`.product p, commerce.product q",
            &ctx(&s, Some("commerce")),
        )
        .unwrap(),
    );
    assert_eq!(
        r.query.template.with_placeholders(),
        "select * from :sg_db.product p, :sg_db.product q"
    );
    let r = route_of(plan("select database()", &ctx(&s, Some("commerce"))).unwrap());
    assert_eq!(
        r.query.template.with_placeholders(),
        "select 'commerce' AS `database()`"
    );
}

/// Planning never needs more stack than a Tokio worker has (2 MiB), for any statement the
/// nesting guard lets through: long OR chains, deep parentheses, nested subqueries.
#[test]
fn deep_statements_plan_within_a_worker_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let s = snapshot("commerce");
            let c = ctx(&s, Some("customer"));
            let ors: Vec<String> = (0..1900).map(|i| format!("id = {i}")).collect();
            let chain = format!("SELECT * FROM customer WHERE {}", ors.join(" OR "));
            assert!(lexer::nesting_depth(&chain) <= lexer::MAX_NESTING);
            let _ = plan(&chain, &c);
            let parens = format!("SELECT {}1{} FROM customer", "(".repeat(45), ")".repeat(45));
            let _ = plan(&parens, &c);
            let mut sub = "SELECT id FROM customer".to_string();
            for _ in 0..40 {
                sub = format!("SELECT id FROM customer WHERE id IN ({sub})");
            }
            let _ = plan(&sub, &c);
            let sum = format!("SELECT 1{} FROM customer", " + id".repeat(1900));
            let _ = plan(&sum, &c);
            // Just under the nesting guard.
            let sum = format!(
                "SELECT 1{} FROM customer",
                " + id".repeat(lexer::MAX_NESTING - 50)
            );
            assert!(lexer::nesting_depth(&sum) <= lexer::MAX_NESTING);
            let _ = plan(&sum, &c);
            let c = ctx(&s, Some("commerce"));
            let _ = plan(&chain.replace("customer", "product"), &c);
        })
        .unwrap();
    handle.join().expect("planning overflowed a 2 MiB stack");
}
