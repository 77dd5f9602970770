//! Cutting a SELECT's text into its clauses lexically: the select items, FROM, WHERE,
//! GROUP BY terms, HAVING, ORDER BY terms, LIMIT, and what follows (FOR UPDATE, ...).
//!
//! Rewrites for merges move these pieces around. sqlparser's spans are not reliable for
//! where an expression ends (`a IS NULL` may span only `a`), so clause boundaries come
//! from the text itself: keywords and commas at parenthesis depth 0, outside quotes and
//! comments.

use super::sqltext::code_mask;

/// Byte ranges of a SELECT's parts (`[start, end)`, trimmed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectClauses {
    pub items: Vec<(usize, usize)>,
    /// From the FROM keyword to the end of the FROM clause.
    pub from: Option<(usize, usize)>,
    /// The WHERE condition (without the keyword).
    pub where_: Option<(usize, usize)>,
    pub group: Vec<(usize, usize)>,
    pub having: Option<(usize, usize)>,
    pub order: Vec<(usize, usize)>,
    pub limit: Option<(usize, usize)>,
    /// FOR UPDATE, LOCK IN SHARE MODE, INTO ...
    pub tail: Option<(usize, usize)>,
}

/// A word at depth 0: (start, end, upper-cased).
fn words(sql: &str, mask: &[bool], from: usize, to: usize) -> Vec<(usize, usize, String, i32)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut i = from;
    while i < to {
        if !mask[i] {
            i += 1;
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while i < to
                    && mask[i]
                    && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                let before_ok = s == 0
                    || !(b[s - 1].is_ascii_alphanumeric()
                        || b[s - 1] == b'_'
                        || b[s - 1] == b'.'
                        || b[s - 1] == b'@');
                if before_ok {
                    out.push((s, i, sql[s..i].to_ascii_uppercase(), depth));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Top-level commas in `[from, to)`, as the pieces between them (trimmed).
pub fn split_commas(sql: &str, from: usize, to: usize) -> Vec<(usize, usize)> {
    let mask = code_mask(sql);
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = from;
    for i in from..to {
        if !mask[i] {
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                out.push(trim(sql, start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(trim(sql, start, to));
    out
}

fn trim(sql: &str, a: usize, b: usize) -> (usize, usize) {
    let s = &sql[a..b];
    let lead = s.len() - s.trim_start().len();
    let tail = s.len() - s.trim_end().len();
    (a + lead, (b - tail).max(a + lead))
}

const SELECT_MODIFIERS: &[&str] = &[
    "ALL",
    "DISTINCT",
    "DISTINCTROW",
    "HIGH_PRIORITY",
    "STRAIGHT_JOIN",
    "SQL_SMALL_RESULT",
    "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT",
    "SQL_NO_CACHE",
    "SQL_CACHE",
];

/// Splits the SELECT whose text is `sql[start..end]` (a single SELECT, no UNION).
pub fn split_select(sql: &str, start: usize, end: usize) -> Option<SelectClauses> {
    let mask = code_mask(sql);
    let ws = words(sql, &mask, start, end);
    let top: Vec<&(usize, usize, String, i32)> = ws.iter().filter(|w| w.3 == 0).collect();
    let first = top.first()?;
    if first.2 != "SELECT" {
        return None;
    }
    let mut items_start = first.1;
    for w in top.iter().skip(1) {
        if SELECT_MODIFIERS.contains(&w.2.as_str()) {
            items_start = w.1;
        } else {
            break;
        }
    }
    // Clause starts: (keyword start, content start, name).
    let mut marks: Vec<(usize, usize, &str)> = Vec::new();
    let next_is = |i: usize, kw: &str| top.get(i + 1).map(|w| w.2 == kw).unwrap_or(false);
    for (i, w) in top.iter().enumerate() {
        if w.0 < items_start {
            continue;
        }
        let name = match w.2.as_str() {
            "FROM" => "from",
            "WHERE" => "where",
            "GROUP" if next_is(i, "BY") => "group",
            "HAVING" => "having",
            "ORDER" if next_is(i, "BY") => "order",
            "LIMIT" => "limit",
            "FOR" | "LOCK" | "INTO" | "WINDOW" | "PROCEDURE" => "tail",
            "UNION" | "EXCEPT" | "INTERSECT" => return None,
            _ => continue,
        };
        if marks.iter().any(|m| m.2 == name) {
            continue;
        }
        let content = if matches!(name, "group" | "order") {
            top[i + 1].1
        } else {
            w.1
        };
        marks.push((w.0, content, name));
    }
    let mut c = SelectClauses::default();
    let bound = |k: usize| -> usize { marks.get(k + 1).map(|m| m.0).unwrap_or(end) };
    let items_end = marks.first().map(|m| m.0).unwrap_or(end);
    c.items = split_commas(sql, items_start, items_end);
    for (k, m) in marks.iter().enumerate() {
        let (a, b) = trim(sql, m.1, bound(k));
        match m.2 {
            "from" => c.from = Some(trim(sql, m.0, bound(k))),
            "where" => c.where_ = Some((a, b)),
            "group" => c.group = split_commas(sql, a, b),
            "having" => c.having = Some((a, b)),
            "order" => c.order = split_commas(sql, a, b),
            "limit" => c.limit = Some((a, b)),
            _ => c.tail = Some(trim(sql, m.0, bound(k))),
        }
    }
    Some(c)
}

/// The condition of an UPDATE or DELETE's top-level WHERE clause (up to ORDER BY / LIMIT).
pub fn where_condition(sql: &str) -> Option<(usize, usize)> {
    let mask = code_mask(sql);
    let ws = words(sql, &mask, 0, sql.len());
    let top: Vec<&(usize, usize, String, i32)> = ws.iter().filter(|w| w.3 == 0).collect();
    let start = top.iter().position(|w| w.2 == "WHERE")?;
    let end = top[start + 1..]
        .iter()
        .enumerate()
        .find(|(k, w)| {
            (w.2 == "ORDER" && top.get(start + 2 + k).is_some_and(|n| n.2 == "BY"))
                || w.2 == "LIMIT"
        })
        .map(|(_, w)| w.0)
        .unwrap_or(sql.len());
    let (a, b) = trim(sql, top[start].1, end);
    Some((a, b.max(a)))
}

/// Splits `sql` at top-level `UNION [ALL]` keywords into branch ranges.
pub fn split_union(sql: &str) -> Vec<(usize, usize)> {
    let mask = code_mask(sql);
    let ws = words(sql, &mask, 0, sql.len());
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < ws.len() {
        let w = &ws[i];
        if w.3 == 0 && w.2 == "UNION" {
            out.push(trim(sql, start, w.0));
            let mut after = w.1;
            if let Some(n) = ws.get(i + 1) {
                if n.2 == "ALL" || n.2 == "DISTINCT" {
                    after = n.1;
                    i += 1;
                }
            }
            start = after;
        }
        i += 1;
    }
    out.push(trim(sql, start, sql.len()));
    out
}

/// An ORDER BY term without its trailing ASC / DESC.
pub fn strip_direction(sql: &str, (a, b): (usize, usize)) -> (usize, usize) {
    let t = &sql[a..b];
    let upper = t.to_ascii_uppercase();
    for suffix in [" DESC", " ASC"] {
        if upper.ends_with(suffix) {
            return trim(sql, a, b - suffix.len() + 1);
        }
    }
    (a, b)
}

/// The text inside the first top-level parentheses of `[a, b)` (a function call's
/// arguments), without a leading DISTINCT / ALL.
pub fn call_arguments(sql: &str, (a, b): (usize, usize)) -> Option<(usize, usize)> {
    let mask = code_mask(sql);
    let bytes = sql.as_bytes();
    let open = (a..b).find(|&i| mask[i] && bytes[i] == b'(')?;
    let mut depth = 0;
    for i in open..b {
        if !mask[i] {
            continue;
        }
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    let (s, e) = trim(sql, open + 1, i);
                    let inner = &sql[s..e];
                    for kw in ["DISTINCT ", "ALL "] {
                        let head = inner.get(..kw.len());
                        if inner.len() > kw.len()
                            && head.is_some_and(|h| h.eq_ignore_ascii_case(kw))
                        {
                            return Some(trim(sql, s + kw.len(), e));
                        }
                    }
                    return Some((s, e));
                }
            }
            _ => {}
        }
    }
    None
}

/// A select item's expression without its alias (`expr [AS] alias`).
pub fn strip_alias(sql: &str, (a, b): (usize, usize), alias: &str) -> (usize, usize) {
    let t = &sql[a..b];
    let quoted = format!("`{alias}`");
    let cut = if t.ends_with(&quoted) {
        b - quoted.len()
    } else if t.to_lowercase().ends_with(&alias.to_lowercase()) {
        b - alias.len()
    } else {
        return (a, b);
    };
    let (a2, mut e) = trim(sql, a, cut);
    let head = &sql[a2..e];
    if head.to_ascii_uppercase().ends_with(" AS") {
        e -= 3;
    }
    trim(sql, a2, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str, r: &[(usize, usize)]) -> Vec<String> {
        r.iter().map(|(a, b)| sql[*a..*b].to_string()).collect()
    }

    #[test]
    fn clauses_end_where_the_text_says() {
        let sql = "SELECT DISTINCT a, f(b, c) AS x, 'from' FROM t JOIN u ON (t.i = u.i) WHERE price IS NULL OR qty IS NULL GROUP BY a, x HAVING count(*) > 1 ORDER BY a DESC, 2 LIMIT 3, 4 FOR UPDATE";
        let c = split_select(sql, 0, sql.len()).unwrap();
        assert_eq!(texts(sql, &c.items), vec!["a", "f(b, c) AS x", "'from'"]);
        assert_eq!(
            &sql[c.from.unwrap().0..c.from.unwrap().1],
            "FROM t JOIN u ON (t.i = u.i)"
        );
        assert_eq!(
            &sql[c.where_.unwrap().0..c.where_.unwrap().1],
            "price IS NULL OR qty IS NULL"
        );
        assert_eq!(texts(sql, &c.group), vec!["a", "x"]);
        assert_eq!(
            &sql[c.having.unwrap().0..c.having.unwrap().1],
            "count(*) > 1"
        );
        assert_eq!(texts(sql, &c.order), vec!["a DESC", "2"]);
        assert_eq!(&sql[c.limit.unwrap().0..c.limit.unwrap().1], "3, 4");
        assert_eq!(&sql[c.tail.unwrap().0..c.tail.unwrap().1], "FOR UPDATE");
        let (a, b) = strip_direction(sql, c.order[0]);
        assert_eq!(&sql[a..b], "a");
        let (a, b) = strip_alias(sql, c.items[1], "x");
        assert_eq!(&sql[a..b], "f(b, c)");
    }

    #[test]
    fn subqueries_do_not_end_clauses() {
        let sql = "select a from t where b in (select c from u where d = 1 order by c limit 1) order by a";
        let c = split_select(sql, 0, sql.len()).unwrap();
        assert_eq!(
            &sql[c.where_.unwrap().0..c.where_.unwrap().1],
            "b in (select c from u where d = 1 order by c limit 1)"
        );
        assert_eq!(texts(sql, &c.order), vec!["a"]);
    }

    #[test]
    fn unions_and_arguments() {
        let sql = "select a from t union all select b from u UNION select c from v";
        assert_eq!(
            texts(sql, &split_union(sql)),
            vec!["select a from t", "select b from u", "select c from v"]
        );
        let s = "COUNT(DISTINCT lower(x))";
        let (a, b) = call_arguments(s, (0, s.len())).unwrap();
        assert_eq!(&s[a..b], "lower(x)");
    }
}
