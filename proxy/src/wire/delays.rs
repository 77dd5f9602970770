//! Slowing down repeated failed logins from one address (in the spirit of MySQL's
//! connection_control plugin): the first [`FREE`] failures within [`WINDOW`] are answered
//! at once; each further one only after a delay that doubles per failure, from
//! [`BASE`] up to [`MAX`]. A successful login from the address clears its count. The
//! delay holds only the refused connection's own task; nothing else waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures answered without delay.
pub const FREE: u32 = 3;
/// The first delay.
pub const BASE: Duration = Duration::from_millis(250);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(8);
/// How long failures are remembered after the last one.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered at most (older ones are forgotten first).
const MAX_ADDRESSES: usize = 100_000;

/// The delay before refusing the `failures`-th failed login in a row.
pub fn delay_for(failures: u32) -> Duration {
    if failures <= FREE {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE - 1).min(16);
    (BASE * 2u32.pow(doublings)).min(MAX)
}

/// Failed logins per client address.
#[derive(Default)]
pub struct LoginDelays {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginDelays {
    /// Records a failed login from `ip`; returns how long to wait before answering.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut m = self.failures.lock().unwrap();
        if m.len() >= MAX_ADDRESSES {
            m.retain(|_, (_, at)| at.elapsed() < WINDOW);
            if m.len() >= MAX_ADDRESSES {
                m.clear();
            }
        }
        let now = Instant::now();
        let e = m.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
        delay_for(e.0)
    }

    /// A successful login from `ip` clears its failures.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut m = self.failures.lock().unwrap();
        if !m.is_empty() {
            m.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_cap() {
        let ms = Duration::from_millis;
        let want = [0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(delay_for(i as u32 + 1), ms(*w), "failure {}", i + 1);
        }
        assert_eq!(delay_for(u32::MAX), MAX);
    }

    #[test]
    fn a_success_clears_the_address_and_others_are_unaffected() {
        let d = LoginDelays::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FREE {
            assert_eq!(d.failed(a), Duration::ZERO);
        }
        assert_eq!(d.failed(a), BASE);
        assert_eq!(d.failed(b), Duration::ZERO);
        d.succeeded(a);
        assert_eq!(d.failed(a), Duration::ZERO);
    }
}
