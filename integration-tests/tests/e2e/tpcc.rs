//! TPC-C (issue 10): the five transactions at 4 warehouses on 2 shards, on one MariaDB
//! and on the unsharded keyspace in the same run; no refusal, no error other than the
//! deadlock retries the specification allows, consistency conditions 1-4 after the run.

use integration_tests::tpcc::{self, Scale};
use integration_tests::{url_for, TestCluster};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcc_runs_on_a_keyspace_sharded_by_warehouse() {
    let c = TestCluster::start(2).await;
    let scale = Scale::small(4);
    let targets = tpcc::setup(&c.info, c.dir(), &scale, 11).await.unwrap();

    // Each warehouse lives on the shard its id hashes to; item is on every shard.
    let mut warehouses = 0;
    for s in c.info.shards.iter().filter(|s| s.keyspace == "customer") {
        let mut d = Conn::new(Opts::from_url(&url_for(&s.addr, "tpcc")).unwrap())
            .await
            .unwrap();
        let w: Vec<u32> = d.query("SELECT w_id FROM warehouse").await.unwrap();
        let strays: u64 = d
            .query_first(format!(
                "SELECT COUNT(*) FROM stock WHERE s_w_id NOT IN ({})",
                w.iter()
                    .map(u32::to_string)
                    .chain(["0".into()])
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .await
            .unwrap()
            .unwrap();
        let items: u64 = d
            .query_first("SELECT COUNT(*) FROM item")
            .await
            .unwrap()
            .unwrap();
        assert!(!w.is_empty(), "shard {} holds no warehouse", s.shard);
        assert_eq!(strays, 0, "stock rows of another warehouse on {}", s.shard);
        assert_eq!(items, scale.items as u64, "item is a reference table");
        warehouses += w.len();
    }
    assert_eq!(warehouses, 4);

    let outcomes = tpcc::compare(&targets, &scale, 8, 8.0, 1, 5).await.unwrap();
    for o in &outcomes {
        let t = o.total();
        eprintln!(
            "{:10} tpmC {:8.0}  new-order {} payment {} order-status {} delivery {} stock-level {} rollbacks {} retries {} errors {:?}",
            o.name, t.tpmc, t.new_order, t.payment, t.order_status, t.delivery, t.stock_level,
            t.rollbacks, t.retries, t.errors
        );
        assert_eq!(
            t.refusals(),
            0,
            "{}: refused statements: {:?}",
            o.name,
            t.errors
        );
        assert!(t.errors.is_empty(), "{}: errors: {:?}", o.name, t.errors);
        assert!(
            t.new_order > 0 && t.payment > 0,
            "{}: nothing committed",
            o.name
        );
        assert!(
            t.delivery + t.order_status + t.stock_level > 0,
            "{}: mix",
            o.name
        );
        assert_eq!(o.districts, 40, "{}: districts checked", o.name);
        assert!(o.violations.is_empty(), "{}: {:?}", o.name, o.violations);
    }
    let tpmc = |n: &str| outcomes.iter().find(|o| o.name == n).unwrap().tpmc();
    eprintln!(
        "sharded / unsharded tpmC: {:.2}; unsharded / direct: {:.2}",
        tpmc("sharded") / tpmc("unsharded"),
        tpmc("unsharded") / tpmc("direct")
    );
}
