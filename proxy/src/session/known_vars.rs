//! Settings the proxy can check itself, so that the statements drivers send when they
//! connect (`SET NAMES`, `SET autocommit`, `SET sql_mode`, `SET time_zone`, isolation
//! levels, timeouts) never wait for a backend connection.
//!
//! A value accepted here is one MariaDB 10.11 accepts too; the setting is then applied
//! lazily, on the next connection the session borrows. Anything not recognised here is
//! still checked on a backend, so an invalid value gets the server's own error.

/// Character sets MariaDB 10.11 knows (the ones drivers send).
const CHARSETS: &[&str] = &[
    "utf8mb4", "utf8", "utf8mb3", "latin1", "binary", "ascii", "gbk", "big5", "sjis", "cp932",
    "euckr", "ujis", "latin2", "cp1250", "cp1251", "cp1256", "greek", "hebrew", "koi8r",
];

/// Common collations (what drivers and ORMs ask for at connect).
const COLLATIONS: &[&str] = &[
    "utf8mb4_general_ci",
    "utf8mb4_unicode_ci",
    "utf8mb4_unicode_520_ci",
    "utf8mb4_bin",
    "utf8_general_ci",
    "utf8_unicode_ci",
    "utf8_bin",
    "utf8mb3_general_ci",
    "utf8mb3_unicode_ci",
    "utf8mb3_bin",
    "latin1_swedish_ci",
    "latin1_general_ci",
    "latin1_bin",
    "binary",
    "ascii_general_ci",
    "ascii_bin",
];

/// The sql_mode words of MariaDB 10.11.
const SQL_MODES: &[&str] = &[
    "REAL_AS_FLOAT",
    "PIPES_AS_CONCAT",
    "ANSI_QUOTES",
    "IGNORE_SPACE",
    "IGNORE_BAD_TABLE_OPTIONS",
    "ONLY_FULL_GROUP_BY",
    "NO_UNSIGNED_SUBTRACTION",
    "NO_DIR_IN_CREATE",
    "POSTGRESQL",
    "ORACLE",
    "MSSQL",
    "DB2",
    "MAXDB",
    "NO_KEY_OPTIONS",
    "NO_TABLE_OPTIONS",
    "NO_FIELD_OPTIONS",
    "MYSQL323",
    "MYSQL40",
    "ANSI",
    "NO_AUTO_VALUE_ON_ZERO",
    "NO_BACKSLASH_ESCAPES",
    "STRICT_TRANS_TABLES",
    "STRICT_ALL_TABLES",
    "NO_ZERO_IN_DATE",
    "NO_ZERO_DATE",
    "ALLOW_INVALID_DATES",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "TRADITIONAL",
    "NO_AUTO_CREATE_USER",
    "HIGH_NOT_PRECEDENCE",
    "NO_ENGINE_SUBSTITUTION",
    "PAD_CHAR_TO_FULL_LENGTH",
    "EMPTY_STRING_IS_NULL",
    "SIMULTANEOUS_ASSIGNMENT",
    "TIME_ROUND_FRACTIONAL",
];

const ISOLATION: &[&str] = &[
    "READ-UNCOMMITTED",
    "READ-COMMITTED",
    "REPEATABLE-READ",
    "SERIALIZABLE",
];

/// Boolean session variables.
const SWITCHES: &[&str] = &[
    "foreign_key_checks",
    "unique_checks",
    "sql_safe_updates",
    "sql_auto_is_null",
    "sql_notes",
    "sql_warnings",
    "sql_quote_show_create",
    "sql_big_selects",
    "tx_read_only",
    "transaction_read_only",
];

/// Integer session variables with the range MariaDB accepts without adjusting.
const NUMBERS: &[(&str, u64, u64)] = &[
    ("wait_timeout", 1, 31_536_000),
    ("interactive_timeout", 1, 31_536_000),
    ("net_read_timeout", 1, 31_536_000),
    ("net_write_timeout", 1, 31_536_000),
    ("lock_wait_timeout", 1, 31_536_000),
    ("innodb_lock_wait_timeout", 0, 1_073_741_824),
    ("group_concat_max_len", 4, u32::MAX as u64),
    ("sql_select_limit", 0, u64::MAX),
    ("max_join_size", 1, u64::MAX),
    ("auto_increment_increment", 1, 65_535),
    ("auto_increment_offset", 1, 65_535),
    ("div_precision_increment", 0, 38),
];

fn unquote(s: &str) -> &str {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'\'' || b[0] == b'"') && b[b.len() - 1] == b[0] {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Whether `SET SESSION name = literal` is certainly accepted by MariaDB.
pub fn variable_ok(name: &str, literal: &str) -> bool {
    let v = unquote(literal);
    if v.contains(['\'', '"', '\\']) {
        return false;
    }
    let upper = v.to_ascii_uppercase();
    match name {
        "character_set_client" | "character_set_connection" | "character_set_results" => {
            charset_ok(v) || (name == "character_set_results" && upper == "NULL")
        }
        "collation_connection" => collation_ok(v),
        "sql_mode" => {
            v.is_empty()
                || upper
                    .split(',')
                    .all(|m| SQL_MODES.contains(&m.trim()) && !m.trim().is_empty())
        }
        "time_zone" => upper == "SYSTEM" || offset_ok(v),
        "tx_isolation" | "transaction_isolation" => ISOLATION.contains(&upper.as_str()),
        _ if SWITCHES.contains(&name) => {
            matches!(upper.as_str(), "0" | "1" | "ON" | "OFF" | "TRUE" | "FALSE")
        }
        _ => NUMBERS.iter().any(|(n, lo, hi)| {
            *n == name && v.parse::<u64>().is_ok_and(|x| (*lo..=*hi).contains(&x))
        }),
    }
}

/// `SET NAMES charset [COLLATE collation]`.
pub fn names_ok(charset: &str, collation: Option<&str>) -> bool {
    let cs = unquote(charset);
    (cs.eq_ignore_ascii_case("default") && collation.is_none())
        || (charset_ok(cs)
            && collation.is_none_or(|c| {
                let c = unquote(c).to_ascii_lowercase();
                collation_ok(&c) && c.starts_with(&cs.to_ascii_lowercase())
            }))
}

/// `SET [SESSION] TRANSACTION ...` with an isolation level and/or access mode.
pub fn transaction_ok(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> = upper.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let mut i = 0;
    let mut any = false;
    while i < words.len() {
        let step = match &words[i..] {
            ["ISOLATION", "LEVEL", "READ", "UNCOMMITTED" | "COMMITTED", ..] => 4,
            ["ISOLATION", "LEVEL", "REPEATABLE", "READ", ..] => 4,
            ["ISOLATION", "LEVEL", "SERIALIZABLE", ..] => 3,
            ["READ", "ONLY" | "WRITE", ..] => 2,
            _ => return false,
        };
        i += step;
        any = true;
    }
    any
}

fn charset_ok(v: &str) -> bool {
    CHARSETS.iter().any(|c| c.eq_ignore_ascii_case(v))
}

fn collation_ok(v: &str) -> bool {
    COLLATIONS.iter().any(|c| c.eq_ignore_ascii_case(v))
}

/// A time zone offset `+HH:MM` / `-HH:MM` within MariaDB's range (-12:59 .. +13:00).
fn offset_ok(v: &str) -> bool {
    let (sign, rest) = match v.as_bytes().first() {
        Some(b'+') => (1, &v[1..]),
        Some(b'-') => (-1, &v[1..]),
        _ => return false,
    };
    let Some((h, m)) = rest.split_once(':') else {
        return false;
    };
    let (Ok(h), Ok(m)) = (h.parse::<i32>(), m.parse::<i32>()) else {
        return false;
    };
    if !(0..60).contains(&m) || h < 0 {
        return false;
    }
    let minutes = sign * (h * 60 + m);
    (-(12 * 60 + 59)..=13 * 60).contains(&minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_drivers_send_is_checked_locally() {
        assert!(names_ok("utf8mb4", None));
        assert!(names_ok("'utf8mb4'", Some("'utf8mb4_unicode_ci'")));
        assert!(names_ok("DEFAULT", None));
        assert!(
            !names_ok("utf8mb4", Some("latin1_bin")),
            "collation of another set"
        );
        assert!(!names_ok("klingon", None));
        assert!(variable_ok(
            "sql_mode",
            "'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'"
        ));
        assert!(variable_ok("sql_mode", "''"));
        assert!(!variable_ok("sql_mode", "'STRICT_TRANS_TABLES,BOGUS'"));
        assert!(variable_ok("time_zone", "'+00:00'"));
        assert!(variable_ok("time_zone", "'-05:30'"));
        assert!(variable_ok("time_zone", "'SYSTEM'"));
        assert!(!variable_ok("time_zone", "'+25:00'"));
        assert!(
            !variable_ok("time_zone", "'Europe/Paris'"),
            "needs the server's tables"
        );
        assert!(variable_ok("transaction_isolation", "'READ-COMMITTED'"));
        assert!(!variable_ok("transaction_isolation", "'READ COMMITTED'"));
        assert!(variable_ok("wait_timeout", "28800"));
        assert!(
            !variable_ok("wait_timeout", "0"),
            "MariaDB adjusts it with a warning"
        );
        assert!(variable_ok("foreign_key_checks", "OFF"));
        assert!(!variable_ok("unknown_variable", "1"));
        assert!(!variable_ok("character_set_client", "'x\\'"));
        assert!(transaction_ok("ISOLATION LEVEL READ COMMITTED"));
        assert!(transaction_ok("READ ONLY, ISOLATION LEVEL SERIALIZABLE"));
        assert!(!transaction_ok("ISOLATION LEVEL CHAOS"));
        assert!(!transaction_ok(""));
    }
}
