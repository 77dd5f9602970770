//! The TPC-C tables (clause 1.3) and their initial population (clause 4.3.3), scaled.
//! Rows go in through multi-row INSERTs without column lists, as a loader would write.

use super::{last_name, Rand, Scale, DISTRICTS};
use anyhow::Result;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// The tables. The warehouse column leads every primary key (it is the sharding column);
/// history, which has no key in the specification, gets a surrogate one.
pub const TABLES: &[&str] = &[
    "CREATE TABLE warehouse (w_id INT NOT NULL, w_name VARCHAR(10), w_street_1 VARCHAR(20), \
     w_street_2 VARCHAR(20), w_city VARCHAR(20), w_state CHAR(2), w_zip CHAR(9), \
     w_tax DECIMAL(4,4), w_ytd DECIMAL(12,2), PRIMARY KEY (w_id))",
    "CREATE TABLE district (d_w_id INT NOT NULL, d_id INT NOT NULL, d_name VARCHAR(10), \
     d_street_1 VARCHAR(20), d_street_2 VARCHAR(20), d_city VARCHAR(20), d_state CHAR(2), \
     d_zip CHAR(9), d_tax DECIMAL(4,4), d_ytd DECIMAL(12,2), d_next_o_id INT, \
     PRIMARY KEY (d_w_id, d_id))",
    "CREATE TABLE customer (c_w_id INT NOT NULL, c_d_id INT NOT NULL, c_id INT NOT NULL, \
     c_first VARCHAR(16), c_middle CHAR(2), c_last VARCHAR(16), c_street_1 VARCHAR(20), \
     c_street_2 VARCHAR(20), c_city VARCHAR(20), c_state CHAR(2), c_zip CHAR(9), \
     c_phone CHAR(16), c_since DATETIME, c_credit CHAR(2), c_credit_lim DECIMAL(12,2), \
     c_discount DECIMAL(4,4), c_balance DECIMAL(12,2), c_ytd_payment DECIMAL(12,2), \
     c_payment_cnt INT, c_delivery_cnt INT, c_data VARCHAR(500), \
     PRIMARY KEY (c_w_id, c_d_id, c_id), KEY c_name (c_w_id, c_d_id, c_last, c_first))",
    "CREATE TABLE history (h_w_id INT NOT NULL, h_pk BIGINT NOT NULL AUTO_INCREMENT, \
     h_c_id INT, h_c_d_id INT, h_c_w_id INT, h_d_id INT, h_date DATETIME, \
     h_amount DECIMAL(6,2), h_data VARCHAR(24), PRIMARY KEY (h_w_id, h_pk), KEY (h_pk))",
    "CREATE TABLE new_orders (no_w_id INT NOT NULL, no_d_id INT NOT NULL, \
     no_o_id INT NOT NULL, PRIMARY KEY (no_w_id, no_d_id, no_o_id))",
    "CREATE TABLE orders (o_w_id INT NOT NULL, o_d_id INT NOT NULL, o_id INT NOT NULL, \
     o_c_id INT, o_entry_d DATETIME, o_carrier_id INT, o_ol_cnt INT, o_all_local INT, \
     PRIMARY KEY (o_w_id, o_d_id, o_id), KEY o_cust (o_w_id, o_d_id, o_c_id, o_id))",
    "CREATE TABLE order_line (ol_w_id INT NOT NULL, ol_d_id INT NOT NULL, \
     ol_o_id INT NOT NULL, ol_number INT NOT NULL, ol_i_id INT, ol_supply_w_id INT, \
     ol_delivery_d DATETIME, ol_quantity INT, ol_amount DECIMAL(6,2), ol_dist_info CHAR(24), \
     PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number))",
    "CREATE TABLE item (i_id INT NOT NULL, i_im_id INT, i_name VARCHAR(24), \
     i_price DECIMAL(5,2), i_data VARCHAR(50), PRIMARY KEY (i_id))",
    "CREATE TABLE stock (s_w_id INT NOT NULL, s_i_id INT NOT NULL, s_quantity INT, \
     s_dist_01 CHAR(24), s_dist_02 CHAR(24), s_dist_03 CHAR(24), s_dist_04 CHAR(24), \
     s_dist_05 CHAR(24), s_dist_06 CHAR(24), s_dist_07 CHAR(24), s_dist_08 CHAR(24), \
     s_dist_09 CHAR(24), s_dist_10 CHAR(24), s_ytd INT, s_order_cnt INT, s_remote_cnt INT, \
     s_data VARCHAR(50), PRIMARY KEY (s_w_id, s_i_id))",
];

/// Creates the tables (dropping old ones).
pub async fn create_schema(conn: &mut Conn) -> Result<()> {
    for t in [
        "stock",
        "item",
        "order_line",
        "orders",
        "new_orders",
        "history",
        "customer",
        "district",
        "warehouse",
    ] {
        conn.query_drop(format!("DROP TABLE IF EXISTS {t}")).await?;
    }
    for ddl in TABLES {
        conn.query_drop(*ddl).await?;
    }
    Ok(())
}

/// Collects rows and sends them as multi-row INSERTs.
struct Batch<'a> {
    conn: &'a mut Conn,
    table: &'static str,
    rows: Vec<String>,
}

impl<'a> Batch<'a> {
    fn new(conn: &'a mut Conn, table: &'static str) -> Self {
        Batch {
            conn,
            table,
            rows: Vec::new(),
        }
    }

    async fn push(&mut self, row: String) -> Result<()> {
        self.rows.push(row);
        if self.rows.len() >= 400 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.rows.is_empty() {
            let sql = format!("INSERT INTO {} VALUES {}", self.table, self.rows.join(","));
            self.conn.query_drop(sql).await?;
            self.rows.clear();
        }
        Ok(())
    }
}

fn q(s: &str) -> String {
    format!("'{s}'")
}

fn data(r: &mut Rand) -> String {
    let mut s = r.alpha(26, 50);
    if r.int(1, 10) == 1 {
        let at = r.int(0, s.len() as u32 - 8) as usize;
        s.replace_range(at..at + 8, "ORIGINAL");
    }
    s
}

fn address(r: &mut Rand) -> String {
    format!(
        "{}, {}, {}, {}, {}",
        q(&r.alpha(10, 20)),
        q(&r.alpha(10, 20)),
        q(&r.alpha(10, 20)),
        q(&r.alpha(2, 2)),
        q(&format!("{}11111", r.digits(4)))
    )
}

/// Populates every table (clause 4.3.3.1, scaled).
pub async fn load(conn: &mut Conn, scale: &Scale, seed: u64) -> Result<()> {
    let mut r = Rand::new(seed);
    let mut b = Batch::new(conn, "item");
    for i in 1..=scale.items {
        let row = format!(
            "({i}, {}, {}, {}, {})",
            r.int(1, 10000),
            q(&r.alpha(14, 24)),
            r.money(100, 10000),
            q(&data(&mut r))
        );
        b.push(row).await?;
    }
    b.flush().await?;
    for w in 1..=scale.warehouses {
        let row = format!(
            "({w}, {}, {}, {}, 300000.00)",
            q(&r.alpha(6, 10)),
            address(&mut r),
            r.int(0, 2000) as f64 / 10000.0
        );
        conn.query_drop(format!("INSERT INTO warehouse VALUES {row}"))
            .await?;
        load_warehouse(conn, scale, w, &mut r).await?;
    }
    Ok(())
}

async fn load_warehouse(conn: &mut Conn, scale: &Scale, w: u32, r: &mut Rand) -> Result<()> {
    let mut b = Batch::new(conn, "stock");
    for i in 1..=scale.items {
        let dists: Vec<String> = (0..10).map(|_| q(&r.alpha(24, 24))).collect();
        let row = format!(
            "({w}, {i}, {}, {}, 0, 0, 0, {})",
            r.int(10, 100),
            dists.join(", "),
            q(&data(r))
        );
        b.push(row).await?;
    }
    b.flush().await?;
    let first_new = scale.orders - scale.orders * 3 / 10 + 1;
    for d in 1..=DISTRICTS {
        let row = format!(
            "({w}, {d}, {}, {}, {}, 30000.00, {})",
            q(&r.alpha(6, 10)),
            address(r),
            r.int(0, 2000) as f64 / 10000.0,
            scale.orders + 1
        );
        conn.query_drop(format!("INSERT INTO district VALUES {row}"))
            .await?;
        let mut c = Batch::new(conn, "customer");
        for id in 1..=scale.customers {
            let last = last_name(if id <= 1000 {
                id - 1
            } else {
                r.nurand(255, 0, 999)
            });
            let credit = if r.int(1, 10) == 1 { "BC" } else { "GC" };
            let row = format!(
                "({w}, {d}, {id}, {}, 'OE', {}, {}, {}, NOW(), '{credit}', 50000.00, {}, -10.00, 10.00, 1, 0, {})",
                q(&r.alpha(8, 16)),
                q(&last),
                address(r),
                q(&r.digits(16)),
                r.int(0, 5000) as f64 / 10000.0,
                q(&r.alpha(300, 500))
            );
            c.push(row).await?;
        }
        c.flush().await?;
        let mut h = Batch::new(conn, "history");
        for id in 1..=scale.customers {
            h.push(format!(
                "({w}, NULL, {id}, {d}, {w}, {d}, NOW(), 10.00, {})",
                q(&r.alpha(12, 24))
            ))
            .await?;
        }
        h.flush().await?;
        // Orders for a random permutation of the customers.
        let mut perm: Vec<u32> = (1..=scale.customers).collect();
        for i in (1..perm.len()).rev() {
            let j = r.int(0, i as u32) as usize;
            perm.swap(i, j);
        }
        let mut orders = Vec::new();
        let mut lines = Vec::new();
        let mut news = Vec::new();
        for o in 1..=scale.orders {
            let c_id = perm[((o - 1) % scale.customers) as usize];
            let ol_cnt = r.int(5, 15);
            let delivered = o < first_new;
            let carrier = if delivered {
                r.int(1, 10).to_string()
            } else {
                "NULL".into()
            };
            orders.push(format!(
                "({w}, {d}, {o}, {c_id}, NOW(), {carrier}, {ol_cnt}, 1)"
            ));
            for n in 1..=ol_cnt {
                let (when, amount) = if delivered {
                    ("NOW()".to_string(), "0.00".to_string())
                } else {
                    ("NULL".to_string(), r.money(1, 999999))
                };
                lines.push(format!(
                    "({w}, {d}, {o}, {n}, {}, {w}, {when}, 5, {amount}, {})",
                    r.int(1, scale.items),
                    q(&r.alpha(24, 24))
                ));
            }
            if !delivered {
                news.push(format!("({w}, {d}, {o})"));
            }
        }
        for (table, rows) in [
            ("orders", orders),
            ("order_line", lines),
            ("new_orders", news),
        ] {
            for chunk in rows.chunks(400) {
                conn.query_drop(format!("INSERT INTO {table} VALUES {}", chunk.join(",")))
                    .await?;
            }
        }
    }
    Ok(())
}
