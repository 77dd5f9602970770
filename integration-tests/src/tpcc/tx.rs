//! The five TPC-C transactions (clauses 2.4 to 2.8) and the driver that runs them in the
//! specification's mix (45% New-Order, 43% Payment, 4% each Order-Status, Delivery and
//! Stock-Level) on terminals bound to a home warehouse, without keying or think times.
//! Deadlocks and lock wait timeouts are retried (as the specification allows) and
//! counted; any other error is recorded by code.

use super::{last_name, Rand, Scale, DISTRICTS};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, TxOpts, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub seconds: f64,
    pub new_order: u64,
    pub payment: u64,
    pub order_status: u64,
    pub delivery: u64,
    pub stock_level: u64,
    /// New-Orders rolled back on purpose (an unused item, 1%).
    pub rollbacks: u64,
    /// Transactions retried after a deadlock or lock wait timeout.
    pub retries: u64,
    /// Other errors, by MySQL error code (0: not a server error), with one message each.
    pub errors: BTreeMap<u16, (u64, String)>,
    /// New-Order transactions per minute.
    pub tpmc: f64,
}

impl Report {
    pub(super) fn add(&mut self, o: &Report) {
        self.new_order += o.new_order;
        self.payment += o.payment;
        self.order_status += o.order_status;
        self.delivery += o.delivery;
        self.stock_level += o.stock_level;
        self.rollbacks += o.rollbacks;
        self.retries += o.retries;
        for (k, (n, m)) in &o.errors {
            let e = self.errors.entry(*k).or_insert((0, m.clone()));
            e.0 += n;
        }
    }

    /// Errors that are refusals by the proxy (1235 "not supported").
    pub fn refusals(&self) -> u64 {
        self.errors.get(&1235).map(|e| e.0).unwrap_or(0)
    }
}

/// Why a transaction did not commit.
enum Outcome {
    Committed,
    /// The New-Order rollback the specification asks for.
    RolledBack,
    Retry,
    Failed(u16, String),
}

fn classify(e: mysql_async::Error) -> Outcome {
    match &e {
        mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205 => Outcome::Retry,
        mysql_async::Error::Server(s) => Outcome::Failed(s.code, s.message.clone()),
        other => Outcome::Failed(0, other.to_string()),
    }
}

fn int(r: &Row, i: usize) -> i64 {
    match r.as_ref(i) {
        Some(Value::Int(v)) => *v,
        Some(Value::UInt(v)) => *v as i64,
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

fn float(r: &Row, i: usize) -> f64 {
    match r.as_ref(i) {
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0.0),
        Some(Value::Double(v)) => *v,
        Some(Value::Float(v)) => *v as f64,
        Some(Value::Int(v)) => *v as f64,
        _ => 0.0,
    }
}

/// One terminal: a connection bound to a home warehouse and district.
struct Terminal {
    conn: Conn,
    rand: Rand,
    scale: Scale,
    w_id: u32,
    d_id: u32,
}

type TxResult = Result<Outcome, mysql_async::Error>;

impl Terminal {
    /// A customer by last name (60%) or by id (40%): (district, customer id).
    async fn pick_customer(
        tx: &mut mysql_async::Transaction<'_>,
        r: &mut Rand,
        scale: &Scale,
        w: u32,
        d: u32,
    ) -> Result<u32, mysql_async::Error> {
        if r.int(1, 100) <= 60 {
            let name = last_name(r.int(0, scale.customers.min(1000) - 1));
            let ids: Vec<u32> = tx
                .exec(
                    "SELECT c_id FROM customer WHERE c_w_id = ? AND c_d_id = ? AND c_last = ? ORDER BY c_first",
                    (w, d, name),
                )
                .await?;
            // The customer at position ceil(n / 2) in c_first order (clause 2.5.2.2).
            if let Some(id) = ids.get(ids.len().div_ceil(2).saturating_sub(1)) {
                return Ok(*id);
            }
        }
        Ok(r.nurand(1023, 1, scale.customers))
    }

    async fn new_order(&mut self) -> TxResult {
        let (w, d) = (self.w_id, self.rand.int(1, DISTRICTS));
        let c = self.rand.nurand(1023, 1, self.scale.customers);
        let ol_cnt = self.rand.int(5, 15);
        let rollback = self.rand.int(1, 100) == 1;
        let mut items = Vec::with_capacity(ol_cnt as usize);
        let mut all_local = 1;
        for n in 0..ol_cnt {
            let mut i = self.rand.nurand(8191, 1, self.scale.items);
            if rollback && n == ol_cnt - 1 {
                i = self.scale.items + 1;
            }
            let supply = if self.scale.warehouses > 1 && self.rand.int(1, 100) == 1 {
                let mut s = self.rand.int(1, self.scale.warehouses - 1);
                if s >= w {
                    s += 1;
                }
                all_local = 0;
                s
            } else {
                w
            };
            items.push((i, supply, self.rand.int(1, 10)));
        }
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        let row: Option<Row> = tx
            .exec_first(
                "SELECT c_discount, c_last, c_credit, w_tax FROM customer, warehouse WHERE w_id = ? AND c_w_id = w_id AND c_d_id = ? AND c_id = ?",
                (w, d, c),
            )
            .await?;
        let Some(cw) = row else {
            return Ok(Outcome::Failed(0, format!("customer {w}/{d}/{c} missing")));
        };
        let (discount, w_tax) = (float(&cw, 0), float(&cw, 3));
        let dist: Option<Row> = tx
            .exec_first(
                "SELECT d_next_o_id, d_tax FROM district WHERE d_w_id = ? AND d_id = ? FOR UPDATE",
                (w, d),
            )
            .await?;
        let Some(dist) = dist else {
            return Ok(Outcome::Failed(0, format!("district {w}/{d} missing")));
        };
        let (o_id, d_tax) = (int(&dist, 0), float(&dist, 1));
        tx.exec_drop(
            "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = ? AND d_id = ?",
            (w, d),
        )
        .await?;
        tx.exec_drop(
            "INSERT INTO orders (o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_ol_cnt, o_all_local) VALUES (?, ?, ?, ?, NOW(), ?, ?)",
            (o_id, d, w, c, ol_cnt, all_local),
        )
        .await?;
        tx.exec_drop(
            "INSERT INTO new_orders (no_o_id, no_d_id, no_w_id) VALUES (?, ?, ?)",
            (o_id, d, w),
        )
        .await?;
        let mut total = 0.0;
        for (n, (i, supply, qty)) in items.into_iter().enumerate() {
            let item: Option<Row> = tx
                .exec_first(
                    "SELECT i_price, i_name, i_data FROM item WHERE i_id = ?",
                    (i,),
                )
                .await?;
            let Some(item) = item else {
                // The unused item: the transaction is rolled back (clause 2.4.2.3).
                tx.rollback().await?;
                return Ok(Outcome::RolledBack);
            };
            let price = float(&item, 0);
            let dist_col = format!("s_dist_{d:02}");
            let stock: Option<Row> = tx
                .exec_first(
                    format!("SELECT s_quantity, s_data, {dist_col} FROM stock WHERE s_i_id = ? AND s_w_id = ? FOR UPDATE"),
                    (i, supply),
                )
                .await?;
            let Some(stock) = stock else {
                return Ok(Outcome::Failed(0, format!("stock {supply}/{i} missing")));
            };
            let s_qty = int(&stock, 0);
            let new_qty = if s_qty >= qty as i64 + 10 {
                s_qty - qty as i64
            } else {
                s_qty - qty as i64 + 91
            };
            let dist_info: String = stock
                .get::<Option<String>, _>(2)
                .flatten()
                .unwrap_or_default();
            tx.exec_drop(
                "UPDATE stock SET s_quantity = ?, s_ytd = s_ytd + ?, s_order_cnt = s_order_cnt + 1, s_remote_cnt = s_remote_cnt + ? WHERE s_i_id = ? AND s_w_id = ?",
                (new_qty, qty, (supply != w) as i32, i, supply),
            )
            .await?;
            let amount = qty as f64 * price;
            total += amount;
            tx.exec_drop(
                "INSERT INTO order_line (ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_dist_info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (o_id, d, w, n as i64 + 1, i, supply, qty, format!("{amount:.2}"), dist_info),
            )
            .await?;
        }
        let _ = total * (1.0 - discount) * (1.0 + w_tax + d_tax);
        tx.commit().await?;
        Ok(Outcome::Committed)
    }

    async fn payment(&mut self) -> TxResult {
        let (w, d) = (self.w_id, self.rand.int(1, DISTRICTS));
        let (c_w, c_d) = if self.scale.warehouses > 1 && self.rand.int(1, 100) > 85 {
            let mut o = self.rand.int(1, self.scale.warehouses - 1);
            if o >= w {
                o += 1;
            }
            (o, self.rand.int(1, DISTRICTS))
        } else {
            (w, d)
        };
        let amount = self.rand.money(100, 500000);
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        tx.exec_drop(
            "UPDATE warehouse SET w_ytd = w_ytd + ? WHERE w_id = ?",
            (&amount, w),
        )
        .await?;
        let wh: Option<Row> = tx
            .exec_first(
                "SELECT w_street_1, w_street_2, w_city, w_state, w_zip, w_name FROM warehouse WHERE w_id = ?",
                (w,),
            )
            .await?;
        tx.exec_drop(
            "UPDATE district SET d_ytd = d_ytd + ? WHERE d_w_id = ? AND d_id = ?",
            (&amount, w, d),
        )
        .await?;
        let di: Option<Row> = tx
            .exec_first(
                "SELECT d_street_1, d_street_2, d_city, d_state, d_zip, d_name FROM district WHERE d_w_id = ? AND d_id = ?",
                (w, d),
            )
            .await?;
        let c = Self::pick_customer(&mut tx, &mut self.rand, &self.scale, c_w, c_d).await?;
        let cust: Option<Row> = tx
            .exec_first(
                "SELECT c_first, c_middle, c_last, c_street_1, c_street_2, c_city, c_state, c_zip, c_phone, c_credit, c_credit_lim, c_discount, c_balance, c_since FROM customer WHERE c_w_id = ? AND c_d_id = ? AND c_id = ? FOR UPDATE",
                (c_w, c_d, c),
            )
            .await?;
        let (Some(wh), Some(di), Some(cust)) = (wh, di, cust) else {
            return Ok(Outcome::Failed(
                0,
                format!("payment {w}/{d} -> {c_w}/{c_d}/{c}: row missing"),
            ));
        };
        let credit: String = cust
            .get::<Option<String>, _>(9)
            .flatten()
            .unwrap_or_default();
        if credit == "BC" {
            let data: Option<String> = tx
                .exec_first(
                    "SELECT c_data FROM customer WHERE c_w_id = ? AND c_d_id = ? AND c_id = ?",
                    (c_w, c_d, c),
                )
                .await?;
            let mut new = format!(
                "{c} {c_d} {c_w} {d} {w} {amount} | {}",
                data.unwrap_or_default()
            );
            new.truncate(500);
            tx.exec_drop(
                "UPDATE customer SET c_balance = c_balance - ?, c_ytd_payment = c_ytd_payment + ?, c_payment_cnt = c_payment_cnt + 1, c_data = ? WHERE c_w_id = ? AND c_d_id = ? AND c_id = ?",
                (&amount, &amount, new, c_w, c_d, c),
            )
            .await?;
        } else {
            tx.exec_drop(
                "UPDATE customer SET c_balance = c_balance - ?, c_ytd_payment = c_ytd_payment + ?, c_payment_cnt = c_payment_cnt + 1 WHERE c_w_id = ? AND c_d_id = ? AND c_id = ?",
                (&amount, &amount, c_w, c_d, c),
            )
            .await?;
        }
        let w_name: String = wh.get::<Option<String>, _>(5).flatten().unwrap_or_default();
        let d_name: String = di.get::<Option<String>, _>(5).flatten().unwrap_or_default();
        tx.exec_drop(
            "INSERT INTO history (h_c_d_id, h_c_w_id, h_c_id, h_d_id, h_w_id, h_date, h_amount, h_data) VALUES (?, ?, ?, ?, ?, NOW(), ?, ?)",
            (c_d, c_w, c, d, w, &amount, format!("{w_name}    {d_name}")),
        )
        .await?;
        tx.commit().await?;
        Ok(Outcome::Committed)
    }

    async fn order_status(&mut self) -> TxResult {
        let (w, d) = (self.w_id, self.rand.int(1, DISTRICTS));
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        let c = Self::pick_customer(&mut tx, &mut self.rand, &self.scale, w, d).await?;
        let _cust: Option<Row> = tx
            .exec_first(
                "SELECT c_balance, c_first, c_middle, c_last FROM customer WHERE c_w_id = ? AND c_d_id = ? AND c_id = ?",
                (w, d, c),
            )
            .await?;
        let order: Option<Row> = tx
            .exec_first(
                "SELECT o_id, o_carrier_id, o_entry_d FROM orders WHERE o_w_id = ? AND o_d_id = ? AND o_c_id = ? AND o_id = (SELECT MAX(o_id) FROM orders WHERE o_w_id = ? AND o_d_id = ? AND o_c_id = ?)",
                (w, d, c, w, d, c),
            )
            .await?;
        if let Some(o) = order {
            let _lines: Vec<Row> = tx
                .exec(
                    "SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_delivery_d FROM order_line WHERE ol_w_id = ? AND ol_d_id = ? AND ol_o_id = ?",
                    (w, d, int(&o, 0)),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(Outcome::Committed)
    }

    async fn delivery(&mut self) -> TxResult {
        let w = self.w_id;
        let carrier = self.rand.int(1, 10);
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        for d in 1..=DISTRICTS {
            let no: Option<i64> = tx
                .exec_first(
                    "SELECT COALESCE(MIN(no_o_id), 0) FROM new_orders WHERE no_d_id = ? AND no_w_id = ?",
                    (d, w),
                )
                .await?;
            let o = no.unwrap_or(0);
            if o == 0 {
                continue;
            }
            tx.exec_drop(
                "DELETE FROM new_orders WHERE no_o_id = ? AND no_d_id = ? AND no_w_id = ?",
                (o, d, w),
            )
            .await?;
            if tx.affected_rows() == 0 {
                continue;
            }
            let c: Option<i64> = tx
                .exec_first(
                    "SELECT o_c_id FROM orders WHERE o_id = ? AND o_d_id = ? AND o_w_id = ?",
                    (o, d, w),
                )
                .await?;
            tx.exec_drop(
                "UPDATE orders SET o_carrier_id = ? WHERE o_id = ? AND o_d_id = ? AND o_w_id = ?",
                (carrier, o, d, w),
            )
            .await?;
            tx.exec_drop(
                "UPDATE order_line SET ol_delivery_d = NOW() WHERE ol_o_id = ? AND ol_d_id = ? AND ol_w_id = ?",
                (o, d, w),
            )
            .await?;
            let sum: Option<Row> = tx
                .exec_first(
                    "SELECT SUM(ol_amount) FROM order_line WHERE ol_o_id = ? AND ol_d_id = ? AND ol_w_id = ?",
                    (o, d, w),
                )
                .await?;
            let amount = sum.map(|r| float(&r, 0)).unwrap_or(0.0);
            tx.exec_drop(
                "UPDATE customer SET c_balance = c_balance + ?, c_delivery_cnt = c_delivery_cnt + 1 WHERE c_id = ? AND c_d_id = ? AND c_w_id = ?",
                (format!("{amount:.2}"), c.unwrap_or(0), d, w),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Outcome::Committed)
    }

    async fn stock_level(&mut self) -> TxResult {
        let (w, d) = (self.w_id, self.d_id);
        let threshold = self.rand.int(10, 20);
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        let next: Option<i64> = tx
            .exec_first(
                "SELECT d_next_o_id FROM district WHERE d_id = ? AND d_w_id = ?",
                (d, w),
            )
            .await?;
        let next = next.unwrap_or(1);
        let _low: Option<i64> = tx
            .exec_first(
                "SELECT COUNT(DISTINCT (s_i_id)) FROM order_line, stock WHERE ol_w_id = ? AND ol_d_id = ? AND ol_o_id < ? AND ol_o_id >= ? AND s_w_id = ? AND s_i_id = ol_i_id AND s_quantity < ?",
                (w, d, next, next - 20, w, threshold),
            )
            .await?;
        tx.commit().await?;
        Ok(Outcome::Committed)
    }

    /// Runs one transaction of the mix, retrying deadlocks; records the outcome.
    async fn one(&mut self, report: &mut Report) {
        let pick = self.rand.int(1, 100);
        for _attempt in 0..10 {
            let result = match pick {
                1..=45 => self.new_order().await,
                46..=88 => self.payment().await,
                89..=92 => self.order_status().await,
                93..=96 => self.delivery().await,
                _ => self.stock_level().await,
            };
            let outcome = result.unwrap_or_else(classify);
            match outcome {
                Outcome::Committed => {
                    match pick {
                        1..=45 => report.new_order += 1,
                        46..=88 => report.payment += 1,
                        89..=92 => report.order_status += 1,
                        93..=96 => report.delivery += 1,
                        _ => report.stock_level += 1,
                    }
                    return;
                }
                Outcome::RolledBack => {
                    report.rollbacks += 1;
                    return;
                }
                Outcome::Retry => {
                    report.retries += 1;
                    // The failed transaction may still be open on the connection.
                    let _ = self.conn.query_drop("ROLLBACK").await;
                }
                Outcome::Failed(code, msg) => {
                    let _ = self.conn.query_drop("ROLLBACK").await;
                    let e = report.errors.entry(code).or_insert((0, msg));
                    e.0 += 1;
                    return;
                }
            }
        }
    }
}

/// Runs `threads` terminals against `url` for `duration`; returns the combined report.
pub async fn run(url: &str, scale: &Scale, threads: u32, duration: Duration, seed: u64) -> Report {
    let total = Arc::new(Mutex::new(Report::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..threads {
        let url = url.to_string();
        let scale = scale.clone();
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let conn = match Conn::new(Opts::from_url(&url).expect("url")).await {
                Ok(c) => c,
                Err(e) => {
                    let mut r = total.lock().unwrap();
                    r.errors.entry(0).or_insert((0, e.to_string())).0 += 1;
                    return;
                }
            };
            let mut term = Terminal {
                conn,
                rand: Rand::new(seed ^ (t as u64 + 1).wrapping_mul(0x9E3779B97F4A7C15)),
                w_id: t % scale.warehouses + 1,
                d_id: t / scale.warehouses % DISTRICTS + 1,
                scale,
            };
            let _ = term
                .conn
                .query_drop("SET innodb_lock_wait_timeout = 5")
                .await;
            let mut mine = Report::default();
            while started.elapsed() < duration {
                term.one(&mut mine).await;
            }
            total.lock().unwrap().add(&mine);
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            let mut r = total.lock().unwrap();
            r.errors.entry(0).or_insert((0, format!("terminal: {e}"))).0 += 1;
        }
    }
    let mut r = total.lock().unwrap().clone();
    r.seconds = started.elapsed().as_secs_f64();
    r.tpmc = r.new_order as f64 * 60.0 / r.seconds.max(0.001);
    r
}
