//! Lexical helpers over raw SQL text that do not need a full parse: splitting a
//! multi-statement query, finding the leading keyword, and turning statement text into a
//! [`SqlTemplate`] whose `?` placeholders and shardgate markers can be filled in cheaply.
//!
//! Everything here reads the text through the one lexer (`lexer.rs`), so a `;` or `?`
//! inside quotes or comments is never mistaken for syntax.

use super::lexer::{scan, Region};
use std::fmt::Write as _;

/// Splits a multi-statement query at top-level semicolons. Returns the trimmed, non-empty
/// statements. A stored-program definition (CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT) keeps
/// everything after it as one statement, since its body contains semicolons.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut cuts = Vec::new();
    scan(bytes, |i, r| {
        if r == Region::Code && bytes[i] == b';' {
            cuts.push(i);
        }
    });
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        if cut < start {
            continue;
        }
        let piece = &sql[start..cut];
        if is_stored_program(piece) {
            let rest = sql[start..].trim();
            let rest = rest.strip_suffix(';').unwrap_or(rest).trim();
            if !rest.is_empty() {
                out.push(rest);
            }
            return out;
        }
        if !strip_comments(piece).trim().is_empty() {
            out.push(piece.trim());
        }
        start = cut + 1;
    }
    out
}

fn is_stored_program(stmt: &str) -> bool {
    let words = leading_words(stmt, 4);
    // MariaDB's anonymous compound statement.
    if words.len() >= 3 && words[0] == "BEGIN" && words[1] == "NOT" && words[2] == "ATOMIC" {
        return true;
    }
    if words.first().map(String::as_str) != Some("CREATE") {
        return false;
    }
    words
        .iter()
        .skip(1)
        .any(|w| matches!(w.as_str(), "PROCEDURE" | "FUNCTION" | "TRIGGER" | "EVENT"))
}

/// The text with comments removed (quoted text kept).
pub fn strip_comments(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut keep = vec![true; bytes.len()];
    scan(bytes, |i, r| keep[i] = r != Region::Comment);
    let kept: Vec<u8> = bytes
        .iter()
        .zip(keep)
        .map(|(b, k)| if k { *b } else { b' ' })
        .collect();
    String::from_utf8(kept).unwrap_or_default()
}

/// The first `n` words of code (comments skipped), upper-cased.
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let code = strip_comments(sql);
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@'))
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

/// For each byte: whether it is code (not inside quotes or comments).
pub fn code_mask(sql: &str) -> Vec<bool> {
    let bytes = sql.as_bytes();
    let mut mask = vec![false; bytes.len()];
    scan(bytes, |i, r| mask[i] = r == Region::Code);
    mask
}

/// Byte offsets of the `?` placeholders outside quotes and comments, in order: the i-th
/// offset is parameter i of a prepared statement.
pub fn placeholder_offsets(sql: &str) -> Vec<usize> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    scan(bytes, |i, r| {
        if r == Region::Code && bytes[i] == b'?' {
            out.push(i);
        }
    });
    out
}

/// A statement's text cut at its `?` placeholders and shardgate markers, so rendering
/// with values is a concatenation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTemplate {
    pieces: Vec<Piece>,
    params: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// The i-th `?` of the statement.
    Param(usize),
    /// A named marker (`:sg_name`) the planner put in rewritten text.
    Marker(String),
}

impl serde::Serialize for SqlTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.with_placeholders())
    }
}

/// The prefix of markers the planner writes into rewritten statements.
pub const MARKER_PREFIX: &str = ":sg_";

impl SqlTemplate {
    /// Scans statement text for `?` placeholders and `:sg_*` markers outside quotes/comments.
    pub fn new(sql: &str) -> SqlTemplate {
        let bytes = sql.as_bytes();
        let mut code = vec![false; bytes.len()];
        scan(bytes, |i, r| code[i] = r == Region::Code);
        let mut pieces = Vec::new();
        let mut params = 0;
        let mut text_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if code[i] && bytes[i] == b'?' {
                if text_start < i {
                    pieces.push(Piece::Text(sql[text_start..i].to_string()));
                }
                pieces.push(Piece::Param(params));
                params += 1;
                i += 1;
                text_start = i;
                continue;
            }
            // Byte comparisons only: `i` may be inside a multi-byte character.
            if code[i] && bytes[i..].starts_with(MARKER_PREFIX.as_bytes()) {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p)
                    .unwrap_or(sql.len());
                if text_start < i {
                    pieces.push(Piece::Text(sql[text_start..i].to_string()));
                }
                pieces.push(Piece::Marker(sql[i + MARKER_PREFIX.len()..end].to_string()));
                i = end;
                text_start = i;
                continue;
            }
            i += 1;
        }
        if text_start < sql.len() {
            pieces.push(Piece::Text(sql[text_start..].to_string()));
        }
        SqlTemplate { pieces, params }
    }

    /// Number of `?` placeholders.
    pub fn param_count(&self) -> usize {
        self.params
    }

    /// True when the text has no placeholders or markers (it can be sent as is).
    pub fn is_plain(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    /// Renders with `param(i)` for each placeholder and `marker(name)` for each marker.
    pub fn render(
        &self,
        mut param: impl FnMut(usize, &mut String),
        mut marker: impl FnMut(&str, &mut String),
    ) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Param(i) => param(*i, &mut out),
                Piece::Marker(m) => marker(m, &mut out),
            }
        }
        out
    }

    /// The text with placeholders left as `?` (what a backend prepares).
    pub fn with_placeholders(&self) -> String {
        self.render(
            |_, o| o.push('?'),
            |m, o| {
                let _ = write!(o, "{MARKER_PREFIX}{m}");
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let s =
            split_statements("select 1; select ';' ; /* ; */ select \"a;b\" -- ;\n; select `x;y`;");
        assert_eq!(
            s,
            vec![
                "select 1",
                "select ';'",
                "/* ; */ select \"a;b\" -- ;",
                "select `x;y`"
            ]
        );
        assert_eq!(
            split_statements("select 'it''s;' ; select 'a\\';b'"),
            vec!["select 'it''s;'", "select 'a\\';b'"]
        );
        assert_eq!(split_statements("  ;; "), Vec::<&str>::new());
        assert_eq!(split_statements("-- only a comment"), Vec::<&str>::new());
    }

    #[test]
    fn stored_programs_are_not_split() {
        let sql = "BEGIN NOT ATOMIC SET @a = 1; SELECT @a; END";
        assert_eq!(split_statements(sql), vec![sql]);
        let sql = "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END";
        assert_eq!(split_statements(sql), vec![sql]);
        let s = split_statements(
            "select 0; create definer=x function f() returns int begin return 1; end",
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn templates_find_placeholders_outside_strings() {
        let t = SqlTemplate::new("SELECT '?', c FROM t WHERE id = ? AND x = :sg_in -- ?\n AND y=?");
        assert_eq!(t.param_count(), 2);
        let r = t.render(
            |i, o| o.push_str(&format!("<{i}>")),
            |m, o| o.push_str(&format!("[{m}]")),
        );
        assert_eq!(
            r,
            "SELECT '?', c FROM t WHERE id = <0> AND x = [in] -- ?\n AND y=<1>"
        );
        assert!(SqlTemplate::new("select 1").is_plain());
        assert_eq!(
            t.with_placeholders(),
            "SELECT '?', c FROM t WHERE id = ? AND x = :sg_in -- ?\n AND y=?"
        );
    }

    #[test]
    fn leading_words_skip_comments() {
        assert_eq!(
            leading_words("/* hi */ select -- x\n 1", 2),
            vec!["SELECT", "1"]
        );
        assert_eq!(
            leading_words("  SET @@session.x=1", 2),
            vec!["SET", "@@SESSION"]
        );
    }

    #[test]
    fn non_ascii_text_never_splits_a_character() {
        for sql in [
            "SELECT 1 AS café",
            "SELECT ‘x’ ?",
            "é:sg_db ü",
            "\u{10FF41}?:sg_x€",
        ] {
            let t = SqlTemplate::new(sql);
            assert_eq!(t.with_placeholders(), sql);
            let _ = split_statements(sql);
            let _ = leading_words(sql, 3);
        }
    }
}
