//! TPC-C consistency conditions 1 to 4 (clause 3.3.2), checked with grouped queries so
//! that on a sharded keyspace they also exercise scatter aggregation. Values are read
//! as the text protocol sends them, so decimals compare exactly.

use anyhow::Result;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::BTreeMap;

type Key = (i64, i64);

async fn per_district(conn: &mut Conn, sql: &str) -> Result<BTreeMap<Key, String>> {
    let rows: Vec<(i64, i64, Option<String>)> = conn.query(sql).await?;
    Ok(rows
        .into_iter()
        .map(|(w, d, v)| ((w, d), v.unwrap_or_default()))
        .collect())
}

/// Returns every violated condition (empty when the database is consistent), and the
/// number of districts checked.
pub async fn check(conn: &mut Conn) -> Result<(Vec<String>, usize)> {
    let mut bad = Vec::new();
    // 1: W_YTD = sum(D_YTD).
    let w: Vec<(i64, String)> = conn
        .query("SELECT w_id, w_ytd FROM warehouse ORDER BY w_id")
        .await?;
    let d: BTreeMap<i64, String> = conn
        .query::<(i64, String), _>(
            "SELECT d_w_id, SUM(d_ytd) FROM district GROUP BY d_w_id ORDER BY d_w_id",
        )
        .await?
        .into_iter()
        .collect();
    for (id, ytd) in &w {
        if d.get(id) != Some(ytd) {
            bad.push(format!(
                "1: warehouse {id} w_ytd {ytd} != sum(d_ytd) {:?}",
                d.get(id)
            ));
        }
    }
    // 2: D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID).
    let next = per_district(conn, "SELECT d_w_id, d_id, d_next_o_id - 1 FROM district").await?;
    let max_o = per_district(
        conn,
        "SELECT o_w_id, o_d_id, MAX(o_id) FROM orders GROUP BY o_w_id, o_d_id",
    )
    .await?;
    let no: Vec<(i64, i64, i64, i64, i64)> = conn
        .query(
            "SELECT no_w_id, no_d_id, MAX(no_o_id), MIN(no_o_id), COUNT(*) FROM new_orders \
             GROUP BY no_w_id, no_d_id",
        )
        .await?;
    for (k, n) in &next {
        if max_o.get(k) != Some(n) {
            bad.push(format!(
                "2: district {k:?} d_next_o_id-1 {n} != max(o_id) {:?}",
                max_o.get(k)
            ));
        }
    }
    for (w, d, max, min, count) in &no {
        if next.get(&(*w, *d)) != Some(&max.to_string()) {
            bad.push(format!(
                "2: district {w}/{d} max(no_o_id) {max} != {:?}",
                next.get(&(*w, *d))
            ));
        }
        // 3: max(NO_O_ID) - min(NO_O_ID) + 1 = rows in new_orders.
        if max - min + 1 != *count {
            bad.push(format!(
                "3: district {w}/{d} new_orders {min}..={max} but {count} rows"
            ));
        }
    }
    // 4: sum(O_OL_CNT) = rows in order_line.
    let ol_cnt = per_district(
        conn,
        "SELECT o_w_id, o_d_id, SUM(o_ol_cnt) FROM orders GROUP BY o_w_id, o_d_id",
    )
    .await?;
    let lines = per_district(
        conn,
        "SELECT ol_w_id, ol_d_id, COUNT(*) FROM order_line GROUP BY ol_w_id, ol_d_id",
    )
    .await?;
    if ol_cnt != lines {
        bad.push(format!(
            "4: sum(o_ol_cnt) {ol_cnt:?} != order_line rows {lines:?}"
        ));
    }
    Ok((bad, next.len()))
}
