//! Failpoints for crash and fault tests: `SG_FAILPOINT=<name>` in the proxy's
//! environment arms one. Unset (always, in production) each check is one comparison
//! against a string read once.

use std::sync::OnceLock;

fn armed() -> &'static str {
    static ARMED: OnceLock<String> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("SG_FAILPOINT").unwrap_or_default())
}

/// Whether failpoint `name` is armed.
pub fn is_armed(name: &str) -> bool {
    let a = armed();
    !a.is_empty() && a == name
}

/// Aborts the process at failpoint `name`, as a crash would.
pub fn crash(name: &str) {
    if is_armed(name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// The statement text that panics the session when `session-panic` is armed.
pub const PANIC_STATEMENT: &str = "SELECT 'shardgate failpoint: panic'";

/// Panics (a stand-in for a bug) when `session-panic` is armed and `sql` asks for it.
pub fn panic_on(sql: &str) {
    if is_armed("session-panic") && sql.trim() == PANIC_STATEMENT {
        panic!("failpoint session-panic");
    }
}
