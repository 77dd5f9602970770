//! SET statements, parsed by hand: the session must know exactly what each assignment
//! changes (to re-apply it on pooled backend connections), and drivers send forms a
//! general SQL parser does not accept (sqlx: `SET sql_mode=(...),time_zone='+00:00',NAMES
//! utf8mb4 COLLATE utf8mb4_unicode_ci`). Values are kept as their original text.

use super::sqltext::code_mask;
use serde::Serialize;

/// One assignment of a SET statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// `NAMES cs [COLLATE c]`, `CHARACTER SET cs`, `CHARSET cs`.
    Names {
        charset: String,
        collation: Option<String>,
    },
    /// A session system variable; `value` is the expression's text.
    Session { name: String, value: String },
    /// A global system variable (refused: a proxy must not change its backends globally).
    Global { name: String, value: String },
    /// A user variable `@name`.
    User { name: String, value: String },
    /// `[SESSION] TRANSACTION ...`; `session` is false when it only affects the next
    /// transaction.
    Transaction { session: bool, text: String },
}

/// Parses the statement after its leading `SET`. `Err` carries a syntax message.
pub fn parse_set(sql: &str) -> Result<Vec<Assignment>, String> {
    let code = super::sqltext::strip_comments(sql);
    let trimmed = code.trim();
    let rest = strip_word(trimmed, "SET").ok_or("expected SET")?;
    let mut out = Vec::new();
    for piece in split_top_level(rest) {
        let piece = piece.trim();
        if piece.is_empty() {
            return Err("empty assignment in SET".into());
        }
        out.push(parse_assignment(piece)?);
    }
    if out.is_empty() {
        return Err("SET without assignments".into());
    }
    Ok(out)
}

fn parse_assignment(p: &str) -> Result<Assignment, String> {
    if let Some(r) = strip_word(p, "NAMES") {
        let mut words = r.split_whitespace();
        let charset = unquote(words.next().ok_or("SET NAMES needs a character set")?);
        let collation = match (words.next(), words.next()) {
            (Some(c), Some(coll)) if c.eq_ignore_ascii_case("COLLATE") => Some(unquote(coll)),
            (None, None) => None,
            _ => return Err(format!("cannot parse SET NAMES {r}")),
        };
        return Ok(Assignment::Names { charset, collation });
    }
    if let Some(r) = strip_word(p, "CHARSET")
        .or_else(|| strip_word(p, "CHARACTER").and_then(|r| strip_word(r, "SET")))
    {
        return Ok(Assignment::Names {
            charset: unquote(r.trim()),
            collation: None,
        });
    }
    if let Some(r) = strip_word(p, "TRANSACTION") {
        return Ok(Assignment::Transaction {
            session: false,
            text: r.trim().to_string(),
        });
    }
    for (scope, global) in [("SESSION", false), ("LOCAL", false), ("GLOBAL", true)] {
        if let Some(r) = strip_word(p, scope) {
            if let Some(t) = strip_word(r, "TRANSACTION") {
                return Ok(if global {
                    Assignment::Global {
                        name: "transaction".into(),
                        value: t.trim().to_string(),
                    }
                } else {
                    Assignment::Transaction {
                        session: true,
                        text: t.trim().to_string(),
                    }
                });
            }
            let (name, value) = name_value(r)?;
            return Ok(if global {
                Assignment::Global { name, value }
            } else {
                Assignment::Session { name, value }
            });
        }
    }
    let (name, value) = name_value(p)?;
    if let Some(user) = name.strip_prefix('@').filter(|n| !n.starts_with('@')) {
        return Ok(Assignment::User {
            name: user.to_string(),
            value,
        });
    }
    let lower = name.to_ascii_lowercase();
    if let Some(g) = lower.strip_prefix("@@global.") {
        return Ok(Assignment::Global {
            name: g.to_string(),
            value,
        });
    }
    for prefix in ["@@session.", "@@local.", "@@"] {
        if let Some(s) = lower.strip_prefix(prefix) {
            return Ok(Assignment::Session {
                name: s.to_string(),
                value,
            });
        }
    }
    Ok(Assignment::Session { name: lower, value })
}

/// Splits `name = value` (or `:=`). Names keep `@`/`@@` prefixes; backquotes are removed.
fn name_value(p: &str) -> Result<(String, String), String> {
    let bytes = p.as_bytes();
    let mask = code_mask(p);
    for i in (0..bytes.len()).filter(|&i| mask[i]) {
        let c = bytes[i];
        if c == b'=' || (c == b':' && bytes.get(i + 1) == Some(&b'=')) {
            let name: String = p[..i].trim().replace('`', "");
            let skip = if c == b':' { 2 } else { 1 };
            let value = p[i + skip..].trim().to_string();
            if name.is_empty() || value.is_empty() {
                break;
            }
            let lname = if name.starts_with('@') {
                name
            } else {
                name.to_ascii_lowercase()
            };
            return Ok((lname, value));
        }
    }
    Err(format!("cannot parse assignment {p:?}"))
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.trim_matches(|c| c == '\'' || c == '"' || c == '`')
        .to_string()
}

/// `s` without a leading keyword `w` (case-insensitive, whole word), or None.
fn strip_word<'a>(s: &'a str, w: &str) -> Option<&'a str> {
    let s = s.trim_start();
    if s.len() >= w.len()
        && s.is_char_boundary(w.len())
        && s[..w.len()].eq_ignore_ascii_case(w)
        && s[w.len()..]
            .chars()
            .next()
            .map(|c| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(true)
    {
        Some(&s[w.len()..])
    } else {
        None
    }
}

/// Splits at commas outside parentheses, quotes and comments.
fn split_top_level(s: &str) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mask = code_mask(s);
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for i in (0..bytes.len()).filter(|&i| mask[i]) {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `SELECT @@autocommit [[AS] alias]` (or `@@session.autocommit`, `@@local.autocommit`):
/// the column name MariaDB would give it, or None for any other statement.
pub fn autocommit_query(sql: &str) -> Option<String> {
    let code = super::sqltext::strip_comments(sql);
    let code = code.trim().trim_end_matches(';').trim_end();
    let mut words = code.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("SELECT") {
        return None;
    }
    let var = words.next()?;
    let lower = var.to_ascii_lowercase();
    if !matches!(
        lower.as_str(),
        "@@autocommit" | "@@session.autocommit" | "@@local.autocommit"
    ) {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    let alias = match rest.as_slice() {
        [] => return Some(var.to_string()),
        [as_, a] if as_.eq_ignore_ascii_case("AS") => *a,
        [a] => *a,
        _ => return None,
    };
    let b = alias.as_bytes();
    let quoted = b.len() >= 2
        && matches!(b[0], b'`' | b'\'' | b'"')
        && b[b.len() - 1] == b[0]
        && !alias[1..alias.len() - 1].contains(b[0] as char);
    if quoted {
        return Some(alias[1..alias.len() - 1].to_string());
    }
    let plain = alias
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$');
    (plain && !alias.eq_ignore_ascii_case("FROM")).then(|| alias.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocommit_queries() {
        assert_eq!(
            autocommit_query("SELECT @@autocommit").as_deref(),
            Some("@@autocommit")
        );
        assert_eq!(
            autocommit_query("select @@SESSION.autocommit;").as_deref(),
            Some("@@SESSION.autocommit")
        );
        assert_eq!(
            autocommit_query("SELECT @@autocommit AS ac").as_deref(),
            Some("ac")
        );
        assert_eq!(
            autocommit_query("SELECT @@autocommit `a c`").as_deref(),
            None
        );
        assert_eq!(
            autocommit_query("SELECT @@autocommit `ac`").as_deref(),
            Some("ac")
        );
        assert_eq!(autocommit_query("SELECT @@autocommit, 1"), None);
        assert_eq!(autocommit_query("SELECT @@autocommit FROM t"), None);
        assert_eq!(autocommit_query("SELECT @@autocommit + 1"), None);
        assert_eq!(autocommit_query("SELECT @@global.autocommit"), None);
    }
    use Assignment::*;

    #[test]
    fn driver_set_statements() {
        let sqlx = "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION')),time_zone='+00:00',NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;";
        let a = parse_set(sqlx.trim_end_matches(';')).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            a[0],
            Session {
                name: "sql_mode".into(),
                value: "(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION'))"
                    .into()
            }
        );
        assert_eq!(
            a[1],
            Session {
                name: "time_zone".into(),
                value: "'+00:00'".into()
            }
        );
        assert_eq!(
            a[2],
            Names {
                charset: "utf8mb4".into(),
                collation: Some("utf8mb4_unicode_ci".into())
            }
        );
        assert_eq!(
            parse_set("SET AUTOCOMMIT = 0").unwrap(),
            vec![Session {
                name: "autocommit".into(),
                value: "0".into()
            }]
        );
        assert_eq!(
            parse_set("set @@session.autocommit=1, @x := 5, @@GLOBAL.max_connections=3").unwrap(),
            vec![
                Session {
                    name: "autocommit".into(),
                    value: "1".into()
                },
                User {
                    name: "x".into(),
                    value: "5".into()
                },
                Global {
                    name: "max_connections".into(),
                    value: "3".into()
                }
            ]
        );
        assert_eq!(
            parse_set("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").unwrap(),
            vec![Transaction {
                session: true,
                text: "ISOLATION LEVEL READ COMMITTED".into()
            }]
        );
        assert_eq!(
            parse_set("SET character set 'latin1'").unwrap(),
            vec![Names {
                charset: "latin1".into(),
                collation: None
            }]
        );
        assert!(parse_set("SET").is_err());
        assert!(parse_set("SET x").is_err());
    }
}
