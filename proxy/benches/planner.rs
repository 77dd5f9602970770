//! Parse + plan cost per statement for the sysbench statements, cold (every call parses and
//! plans) and cached (the plan cache answers), on an unsharded and a 2-shard keyspace.
//!
//!     cargo bench -p shardgate-proxy --bench planner

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shardgate_config::Config;
use shardgate_proxy::context::Context;
use shardgate_proxy::planner::{plan, PlanContext};
use shardgate_topology::Snapshot;
use std::hint::black_box;

const STATEMENTS: &[(&str, &str)] = &[
    ("point_select", "SELECT c FROM sbtest1 WHERE id=?"),
    (
        "simple_range",
        "SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ?",
    ),
    (
        "sum_range",
        "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN ? AND ?",
    ),
    (
        "order_range",
        "SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c",
    ),
    (
        "distinct_range",
        "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c",
    ),
    ("index_update", "UPDATE sbtest1 SET k=k+1 WHERE id=?"),
    ("non_index_update", "UPDATE sbtest1 SET c=? WHERE id=?"),
    ("delete", "DELETE FROM sbtest1 WHERE id=?"),
    (
        "insert",
        "INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)",
    ),
    ("text_point_select", "SELECT c FROM sbtest1 WHERE id=4711"),
];

fn snapshot() -> Snapshot {
    let docs = [
        ("keyspaces/flat", r#"{"tables": {"sbtest1": {}}}"#),
        (
            "keyspaces/flat/shards/-",
            r#"{"primary": "10.0.0.1:3306", "database": "flat"}"#,
        ),
        (
            "keyspaces/sharded",
            r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}},
                "tables": {"sbtest1": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#,
        ),
        (
            "keyspaces/sharded/shards/-80",
            r#"{"primary": "10.0.0.2:3306", "database": "s"}"#,
        ),
        (
            "keyspaces/sharded/shards/80-",
            r#"{"primary": "10.0.0.3:3306", "database": "s"}"#,
        ),
    ];
    Snapshot::build(1, docs.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap()
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
    let ctx = Context::new(Config::default(), snap.clone(), None);
    let schema = shardgate_proxy::schema::Schemas::default();
    for keyspace in ["flat", "sharded"] {
        let mut cold = c.benchmark_group(format!("plan_cold/{keyspace}"));
        for (name, sql) in STATEMENTS {
            let pc = PlanContext {
                snapshot: &snap,
                schema: &schema,
                keyspace: Some(keyspace),
                shard: None,
            };
            cold.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
                b.iter(|| black_box(plan(black_box(sql), &pc).unwrap()))
            });
        }
        cold.finish();
        let mut cached = c.benchmark_group(format!("plan_cached/{keyspace}"));
        for (name, sql) in STATEMENTS {
            cached.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
                b.iter(|| {
                    black_box(
                        ctx.plan(black_box(sql), &snap, Some(keyspace), None)
                            .unwrap(),
                    )
                })
            });
        }
        cached.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
