//! A TPC-C workload, written from the TPC-C specification (revision 5.11): the nine
//! tables, the five transactions with their input rules and mix, and consistency
//! conditions 1 to 4. Cardinalities are scaled down ([`Scale`]) so a run fits a test on a
//! small machine; the shape of every transaction is the specification's.
//!
//! Sharding (for a sharded keyspace): `item` is a reference table, every other table is
//! sharded by its warehouse column ([`vschema`]). New-Order with a remote supply
//! warehouse (1% of items) and remote Payments (15%) make cross-shard transactions.
//!
//! Used by the end-to-end test (`tests/e2e/tpcc.rs`) and by the `tpcc` binary that the
//! benchmark runs.

mod check;
mod load;
mod setup;
mod tx;

pub use check::check;
pub use load::{create_schema, load};
pub use setup::{compare, setup, stock_level_latency, Outcome, Targets};
pub use tx::{run, Report};

/// How big the database is and how long the run lasts.
#[derive(Debug, Clone)]
pub struct Scale {
    pub warehouses: u32,
    /// Items (the specification: 100,000).
    pub items: u32,
    /// Customers per district (3,000).
    pub customers: u32,
    /// Orders loaded per district (3,000); the last 30% are new orders.
    pub orders: u32,
}

impl Scale {
    /// A scale small enough for an end-to-end test.
    pub fn small(warehouses: u32) -> Scale {
        Scale {
            warehouses,
            items: 1000,
            customers: 30,
            orders: 30,
        }
    }
}

/// Districts per warehouse (fixed by the specification).
pub const DISTRICTS: u32 = 10;

/// The VSchema of a sharded TPC-C keyspace.
pub fn vschema() -> serde_json::Value {
    let by = |c: &str| serde_json::json!({"column_vindexes": [{"column": c, "name": "hash"}]});
    serde_json::json!({
        "sharded": true,
        "vindexes": {"hash": {"type": "hash"}},
        "tables": {
            "warehouse": by("w_id"),
            "district": by("d_w_id"),
            "customer": by("c_w_id"),
            "history": by("h_w_id"),
            "new_orders": by("no_w_id"),
            "orders": by("o_w_id"),
            "order_line": by("ol_w_id"),
            "stock": by("s_w_id"),
            "item": {"type": "reference"}
        }
    })
}

/// Random input generation as the specification defines it (clause 2.1.6).
pub struct Rand {
    state: u64,
    /// The run-time constants C for NURand (clause 2.1.6.1).
    c_last: u32,
    c_id: u32,
    ol_i_id: u32,
}

impl Rand {
    pub fn new(seed: u64) -> Rand {
        let mut r = Rand {
            state: seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
            c_last: 0,
            c_id: 0,
            ol_i_id: 0,
        };
        r.c_last = r.int(0, 255);
        r.c_id = r.int(0, 1023);
        r.ol_i_id = r.int(0, 8191);
        r
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Uniform in [lo, hi].
    pub fn int(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % (hi as u64 - lo as u64 + 1)) as u32
    }

    /// NURand(A, x, y) (clause 2.1.6).
    pub fn nurand(&mut self, a: u32, x: u32, y: u32) -> u32 {
        let c = match a {
            255 => self.c_last,
            1023 => self.c_id,
            _ => self.ol_i_id,
        };
        (((self.int(0, a) | self.int(x, y)) + c) % (y - x + 1)) + x
    }

    /// A random string of letters, of length in [lo, hi].
    pub fn alpha(&mut self, lo: u32, hi: u32) -> String {
        let n = self.int(lo, hi);
        (0..n)
            .map(|_| (b'a' + self.int(0, 25) as u8) as char)
            .collect()
    }

    /// A random string of digits of length `n`.
    pub fn digits(&mut self, n: u32) -> String {
        (0..n)
            .map(|_| (b'0' + self.int(0, 9) as u8) as char)
            .collect()
    }

    /// A decimal in [lo, hi] with two decimals, given in hundredths.
    pub fn money(&mut self, lo: u32, hi: u32) -> String {
        let v = self.int(lo, hi);
        format!("{}.{:02}", v / 100, v % 100)
    }
}

/// The customer last name for a number in 0..=999 (clause 4.3.2.3).
pub fn last_name(n: u32) -> String {
    const SYL: [&str; 10] = [
        "BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING",
    ];
    format!(
        "{}{}{}",
        SYL[(n / 100 % 10) as usize],
        SYL[(n / 10 % 10) as usize],
        SYL[(n % 10) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_follow_the_specification() {
        assert_eq!(last_name(371), "PRICALLYOUGHT");
        assert_eq!(last_name(0), "BARBARBAR");
        let mut r = Rand::new(7);
        for _ in 0..1000 {
            let v = r.nurand(1023, 1, 30);
            assert!((1..=30).contains(&v));
            let s = r.alpha(8, 16);
            assert!((8..=16).contains(&s.len()));
            let m: f64 = r.money(100, 500000).parse().unwrap();
            assert!((1.0..=5000.0).contains(&m));
        }
    }
}
