//! SQL-level prepared statements: `PREPARE name FROM 'text' | @var`, `EXECUTE name
//! [USING @a, ...]`, `DEALLOCATE PREPARE name`. They are kept by the session (so they work
//! with multiplexing and on sharded keyspaces): EXECUTE substitutes the user variables'
//! values for the placeholders and runs the text like any other statement.

use super::plan::{Plan, PrepareSource, SessionOp};
use crate::error::ProxyError;

fn syntax(m: &str) -> ProxyError {
    ProxyError::Syntax(m.to_string())
}

/// Reads a quoted string literal at the start of `s`, unescaping it.
pub fn unquote_literal(s: &str) -> Option<String> {
    let mut chars = s.trim().chars();
    let q = chars.next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let mut out = String::new();
    let mut it = chars.peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                other => out.push(other),
            }
        } else if c == q {
            if it.peek() == Some(&q) {
                out.push(q);
                it.next();
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

pub fn plan_prepare(sql: &str) -> Result<Plan, ProxyError> {
    let code = sql.trim();
    let rest = code
        .get(7..)
        .ok_or_else(|| syntax("PREPARE name FROM ..."))?
        .trim_start();
    let (name, rest) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| syntax("PREPARE name FROM ..."))?;
    let rest = rest.trim_start();
    let src = match (rest.get(..4), rest.get(4..)) {
        (Some(kw), Some(src)) if kw.eq_ignore_ascii_case("FROM") => src,
        _ => return Err(syntax("PREPARE name FROM 'statement'")),
    };
    let src = src.trim().trim_end_matches(';').trim();
    let source = if let Some(var) = src.strip_prefix('@') {
        PrepareSource::Variable(var.trim_matches('`').to_string())
    } else {
        PrepareSource::Text(
            unquote_literal(src)
                .ok_or_else(|| syntax("PREPARE ... FROM takes a string or a user variable"))?,
        )
    };
    Ok(Plan::Session(SessionOp::SqlPrepare {
        name: name.trim_matches('`').to_ascii_lowercase(),
        source,
    }))
}

pub fn plan_execute(sql: &str) -> Result<Plan, ProxyError> {
    let code = sql.trim().trim_end_matches(';');
    let rest = code.get(7..).ok_or_else(|| syntax("EXECUTE name"))?.trim();
    let (name, using) = match rest.split_once(char::is_whitespace) {
        Some((n, u)) => (n, u.trim()),
        None => (rest, ""),
    };
    let mut vars = Vec::new();
    if !using.is_empty() {
        let list = using
            .get(5..)
            .filter(|_| using[..5].eq_ignore_ascii_case("USING"))
            .ok_or_else(|| syntax("EXECUTE name USING @var, ..."))?;
        for v in list.split(',') {
            let v = v.trim();
            let var = v
                .strip_prefix('@')
                .ok_or_else(|| syntax("EXECUTE ... USING takes user variables"))?;
            vars.push(var.trim_matches('`').to_string());
        }
    }
    Ok(Plan::Session(SessionOp::SqlExecute {
        name: name.trim_matches('`').to_ascii_lowercase(),
        using: vars,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prepare_and_execute() {
        match plan_prepare("PREPARE s1 FROM 'SELECT ? + ?, ''x'''").unwrap() {
            Plan::Session(SessionOp::SqlPrepare {
                name,
                source: PrepareSource::Text(t),
            }) => {
                assert_eq!(name, "s1");
                assert_eq!(t, "SELECT ? + ?, 'x'");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan_prepare("prepare s2 from @q").unwrap(),
            Plan::Session(SessionOp::SqlPrepare { source: PrepareSource::Variable(v), .. }) if v == "q"
        ));
        match plan_execute("EXECUTE s1 USING @a, @b").unwrap() {
            Plan::Session(SessionOp::SqlExecute { name, using }) => {
                assert_eq!(name, "s1");
                assert_eq!(using, vec!["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(plan_prepare("PREPARE s1 'x'").is_err());
    }
}
