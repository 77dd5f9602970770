//! The one SQL lexer: every pass over statement text that must know what is code, what is
//! quoted and what is a comment goes through [`scan`].
//!
//! Statement text here is always the lossless view of the client's bytes (see
//! `wire/charset.rs`): bytes of multi-byte characters of other character sets are escape
//! characters, so only real ASCII quotes, backslashes and semicolons are ever seen.
//!
//! Before planning, [`normalize`] makes the text mean what MySQL reads in it:
//! - executable comments (`/*! ... */`, `/*!40101 ... */`, MariaDB's `/*M!100100 ... */`)
//!   whose version the backend meets become plain code (their markers turn into spaces of
//!   the same length), the others plain comments, so `/*!40101 SET GLOBAL x = 1 */` is
//!   classified as the SET it is;
//! - under `NO_BACKSLASH_ESCAPES`, a backslash inside a quoted string is the escape
//!   character standing for byte 0x5C, so neither this lexer nor sqlparser takes it for an
//!   escape (the bytes sent are unchanged).

use crate::wire::charset::escape_char;
use std::borrow::Cow;
use std::ops::ControlFlow;

/// One lexical region of SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Code,
    Quoted,
    Comment,
}

/// Calls `f(byte_index, region)` for every byte of `sql`. Backslash escapes are honoured
/// inside '..' and ".." (the view already neutralised them under NO_BACKSLASH_ESCAPES).
pub fn scan(sql: &[u8], mut f: impl FnMut(usize, Region)) {
    scan_from(sql, 0, |i, r| {
        f(i, r);
        ControlFlow::Continue(())
    });
}

/// Like [`scan`], from byte `from` (which must not be inside a quote or comment), until
/// `f` breaks.
pub fn scan_from(sql: &[u8], from: usize, mut f: impl FnMut(usize, Region) -> ControlFlow<()>) {
    macro_rules! f {
        ($i:expr, $r:expr) => {
            if f($i, $r).is_break() {
                return;
            }
        };
    }
    let mut i = from;
    let n = sql.len();
    while i < n {
        let c = sql[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let q = c;
                f!(i, Region::Quoted);
                i += 1;
                while i < n {
                    let d = sql[i];
                    f!(i, Region::Quoted);
                    if d == b'\\' && q != b'`' && i + 1 < n {
                        f!(i + 1, Region::Quoted);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if d == q {
                        if i < n && sql[i] == q {
                            f!(i, Region::Quoted);
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
            }
            b'#' => {
                while i < n && sql[i] != b'\n' {
                    f!(i, Region::Comment);
                    i += 1;
                }
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql
                    .get(i + 2)
                    .map(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                    .unwrap_or(true) =>
            {
                while i < n && sql[i] != b'\n' {
                    f!(i, Region::Comment);
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') && !is_executable_comment(&sql[i..]) => {
                f!(i, Region::Comment);
                f!(i + 1, Region::Comment);
                i += 2;
                while i < n {
                    f!(i, Region::Comment);
                    if sql[i] == b'*' && sql.get(i + 1) == Some(&b'/') {
                        f!(i + 1, Region::Comment);
                        i += 2;
                        break;
                    }
                    i += 1;
                }
            }
            _ => {
                f!(i, Region::Code);
                i += 1;
            }
        }
    }
}

fn is_executable_comment(b: &[u8]) -> bool {
    b.starts_with(b"/*!") || b.starts_with(b"/*M!")
}

/// How the backend reads text: what [`normalize`] needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The session runs with `NO_BACKSLASH_ESCAPES`.
    pub no_backslash_escapes: bool,
    /// The backend's version as MySQL compares it in executable comments (10.11.6 is
    /// 101106).
    pub server_version: u32,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            no_backslash_escapes: false,
            server_version: DEFAULT_SERVER_VERSION,
        }
    }
}

/// MariaDB 10.11, for when the backends' version is not known yet.
pub const DEFAULT_SERVER_VERSION: u32 = 101100;

/// A version string (`10.11.6-MariaDB-log`, `5.5.5-10.11.6-MariaDB`) as a number.
pub fn version_number(version: &str) -> Option<u32> {
    let v = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    let patch: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (minor < 100 && patch < 100).then_some(major * 10000 + minor * 100 + patch)
}

/// The text as the backend reads it: executable comments unwrapped or made comments,
/// backslashes in strings neutralised under NO_BACKSLASH_ESCAPES. Borrowed when nothing
/// changes (the common case costs one scan for `/*!` and, under NO_BACKSLASH_ESCAPES,
/// one for `\`).
pub fn normalize(sql: &str, opts: ReadOptions) -> Cow<'_, str> {
    let b = sql.as_bytes();
    let has_exec = b.windows(3).any(|w| w == b"/*!" || w == b"/*M");
    let has_backslash = opts.no_backslash_escapes && b.contains(&b'\\');
    if !has_exec && !has_backslash {
        return Cow::Borrowed(sql);
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 8);
    let mut i = 0;
    let n = b.len();
    // Inside an executed version comment: its `*/` closes it.
    let mut in_exec = false;
    while i < n {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let q = c;
                out.push(c);
                i += 1;
                while i < n {
                    let d = b[i];
                    if d == b'\\' && q != b'`' {
                        if opts.no_backslash_escapes {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(
                                escape_char(b'\\').encode_utf8(&mut buf).as_bytes(),
                            );
                            i += 1;
                            continue;
                        }
                        out.push(d);
                        if i + 1 < n {
                            // Copy the escaped character whole (it may be multi-byte).
                            let len = utf8_len(b[i + 1]);
                            let end = (i + 1 + len).min(n);
                            out.extend_from_slice(&b[i + 1..end]);
                            i = end;
                        } else {
                            i += 1;
                        }
                        continue;
                    }
                    out.push(d);
                    i += 1;
                    if d == q {
                        if i < n && b[i] == q {
                            out.push(q);
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
            }
            b'#' => {
                let end = b[i..].iter().position(|&x| x == b'\n').map_or(n, |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2)
                    .map(|x| x.is_ascii_whitespace() || x.is_ascii_control())
                    .unwrap_or(true) =>
            {
                let end = b[i..].iter().position(|&x| x == b'\n').map_or(n, |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if let Some((marker, version, maria)) = executable_marker(&b[i..]) {
                    // MariaDB runs MySQL-only comments of 5.7 and later (50700-99999)
                    // only in its own `/*M!` form.
                    let runs = version.is_none_or(|v| {
                        v <= opts.server_version && (maria || !(50700..=99999).contains(&v))
                    });
                    if runs && !in_exec {
                        out.extend(std::iter::repeat_n(b' ', marker));
                        in_exec = true;
                        i += marker;
                        continue;
                    }
                    // A comment for another version: keep `/*`, blank the marker.
                    out.extend_from_slice(b"/*");
                    out.extend(std::iter::repeat_n(b' ', marker - 2));
                    i += marker;
                } else {
                    out.extend_from_slice(b"/*");
                    i += 2;
                }
                let end = find(&b[i..], b"*/").map_or(n, |p| i + p + 2);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'*' if in_exec && b.get(i + 1) == Some(&b'/') => {
                out.extend_from_slice(b"  ");
                in_exec = false;
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII was replaced by ASCII of the same length, and backslashes by a whole
    // character, so the result is valid UTF-8.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `(length of the marker, version, MariaDB form)` of an executable comment starting
/// `b`: `/*!` or `/*M!`, then a version of five digits (six when a sixth follows), as
/// MariaDB's lexer reads it. Fewer than five digits: no version.
fn executable_marker(b: &[u8]) -> Option<(usize, Option<u32>, bool)> {
    let (start, maria) = if b.starts_with(b"/*!") {
        (3, false)
    } else if b.starts_with(b"/*M!") {
        (4, true)
    } else {
        return None;
    };
    let digits = b[start..]
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits >= 5 {
        let v: u32 = std::str::from_utf8(&b[start..start + digits])
            .ok()?
            .parse()
            .ok()?;
        Some((start + digits, Some(v), maria))
    } else {
        Some((start, None, maria))
    }
}

/// A name shardgate keeps to itself, found in a statement's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// A user variable `@sg_*` (the change-capture bypass lives there).
    UserVariable(String),
    /// The `_shardgate` database (change-capture tables).
    Database,
}

/// The first reserved name the statement's code uses, if any: user variables starting
/// with `sg_` (any case, quoted or not) and the identifier `_shardgate`.
pub fn reserved_name(sql: &str) -> Option<Reserved> {
    let b = sql.as_bytes();
    if !contains_ci(b, b"sg_") && !contains_ci(b, b"_shardgate") {
        return None;
    }
    let mut code = vec![false; b.len()];
    scan(b, |i, r| code[i] = r == Region::Code);
    let mut i = 0;
    while i < b.len() {
        if !code[i] {
            // A backquoted `_shardgate`.
            if b[i] == b'`' && (i == 0 || code[i - 1]) {
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| c == b'`')
                    .map(|p| i + 1 + p);
                if let Some(end) = end {
                    if b[i + 1..end].eq_ignore_ascii_case(b"_shardgate") {
                        return Some(Reserved::Database);
                    }
                }
            }
            i += 1;
            continue;
        }
        if b[i] == b'@' {
            if b.get(i + 1) == Some(&b'@') {
                // A system variable: skip `@@` and its name.
                i += 2;
                continue;
            }
            let name = variable_name(&b[i + 1..]);
            if name.len() >= 3 && name[..3].eq_ignore_ascii_case(b"sg_") {
                return Some(Reserved::UserVariable(
                    String::from_utf8_lossy(&name).into_owned(),
                ));
            }
            i += 1;
            continue;
        }
        if is_ident_byte(b[i]) && (i == 0 || !is_ident_byte(b[i - 1]) || !code[i - 1]) {
            let len = b[i..].iter().take_while(|&&c| is_ident_byte(c)).count();
            if b[i..i + len].eq_ignore_ascii_case(b"_shardgate") {
                return Some(Reserved::Database);
            }
            i += len;
            continue;
        }
        i += 1;
    }
    None
}

/// The name of a user variable after its `@`: bare, or quoted with ` ' or ".
fn variable_name(b: &[u8]) -> Vec<u8> {
    match b.first() {
        Some(&q @ (b'`' | b'\'' | b'"')) => {
            let end = b[1..]
                .iter()
                .position(|&c| c == q)
                .map_or(b.len(), |p| p + 1);
            b[1..end].to_vec()
        }
        _ => b
            .iter()
            .take_while(|&&c| is_ident_byte(c) || c == b'.' || c == b'$')
            .copied()
            .collect(),
    }
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Most nesting a statement may have before the proxy leaves it alone: an estimate of
/// the depth of its expression tree (parentheses, and chains of binary operators, which a
/// parser turns into one nested node per operator). Deeper statements are not parsed:
/// walking and dropping such trees recursively would exhaust the stack.
pub const MAX_NESTING: usize = 4000;

/// An upper bound of the expression depth of a statement: for every point, the operators
/// met so far in the current comma-separated segment at each open parenthesis level,
/// summed over the levels, plus the parenthesis depth. Linear, one scan.
pub fn nesting_depth(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut code = vec![false; b.len()];
    scan(b, |i, r| code[i] = r == Region::Code);
    // Operators counted in the current segment of each open level.
    let mut levels: Vec<usize> = vec![0];
    let mut total = 0usize;
    let mut max = 0usize;
    let mut i = 0;
    while i < b.len() {
        if !code[i] {
            i += 1;
            continue;
        }
        match b[i] {
            b'(' => {
                levels.push(0);
                total += 1;
            }
            b')' if levels.len() > 1 => {
                let seg = levels.pop().unwrap_or(0);
                total = total.saturating_sub(seg + 1);
            }
            b',' | b';' => {
                let seg = levels.last_mut().map(std::mem::take).unwrap_or(0);
                total = total.saturating_sub(seg);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'=' | b'<' | b'>' | b'|' | b'&' | b'^' => {
                if let Some(l) = levels.last_mut() {
                    *l += 1;
                }
                total += 1;
            }
            c if c.is_ascii_alphabetic() => {
                let len = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                let word = &b[i..i + len];
                if word.eq_ignore_ascii_case(b"AND")
                    || word.eq_ignore_ascii_case(b"OR")
                    || word.eq_ignore_ascii_case(b"XOR")
                    || word.eq_ignore_ascii_case(b"NOT")
                    || word.eq_ignore_ascii_case(b"SELECT")
                {
                    if let Some(l) = levels.last_mut() {
                        *l += 1;
                    }
                    total += 1;
                }
                i += len;
                max = max.max(total);
                continue;
            }
            _ => {}
        }
        max = max.max(total);
        i += 1;
    }
    max
}

/// The statement's digest: its text with literals (strings, numbers) replaced by `?`,
/// lists of them shortened to `?, ...`, comments dropped and spaces collapsed; what query
/// statistics and the query log group by. Identifiers (also quoted with backticks) stay.
pub fn digest(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut regions = vec![Region::Code; b.len()];
    scan(b, |i, r| regions[i] = r);
    let mut out = String::with_capacity(sql.len().min(1024));
    let mut i = 0;
    let mut space = false;
    let push = |out: &mut String, piece: &str, space: &mut bool| {
        if *space && !out.is_empty() {
            out.push(' ');
        }
        *space = false;
        out.push_str(piece);
    };
    while i < b.len() {
        let c = b[i];
        match regions[i] {
            Region::Comment => {
                space = true;
                i += 1;
            }
            Region::Quoted => {
                // A quoted run: an identifier in backticks stays, a string literal (with
                // its escapes and doubled quotes) becomes `?`.
                let start = i;
                while i < b.len() && regions[i] == Region::Quoted {
                    i += 1;
                }
                let piece = if c == b'`' {
                    sql.get(start..i).unwrap_or("?")
                } else {
                    "?"
                };
                push(&mut out, piece, &mut space);
            }
            Region::Code if c.is_ascii_whitespace() => {
                space = true;
                i += 1;
            }
            Region::Code if c.is_ascii_digit() && !prev_is_word(&out, space) => {
                while i < b.len()
                    && regions[i] == Region::Code
                    && (b[i].is_ascii_alphanumeric() || b[i] == b'.')
                {
                    i += 1;
                }
                push(&mut out, "?", &mut space);
            }
            Region::Code => {
                let start = i;
                i += 1;
                while i < b.len() && !sql.is_char_boundary(i) {
                    i += 1;
                }
                push(&mut out, &sql[start..i], &mut space);
            }
        }
    }
    shorten_lists(out.trim_end_matches(';').trim_end())
}

/// Whether the digest so far ends inside a word (a digit there is part of a name: `t1`).
fn prev_is_word(out: &str, space: bool) -> bool {
    !space
        && out
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '@')
}

/// `?, ?, ?` (any spacing) becomes `?, ...`, so IN lists and multi-row VALUES of any length
/// share one digest.
fn shorten_lists(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('?') {
        out.push_str(&rest[..at]);
        let mut tail = &rest[at + 1..];
        let mut more = false;
        loop {
            let t = tail.trim_start();
            let Some(after_comma) = t.strip_prefix(',') else {
                break;
            };
            let t2 = after_comma.trim_start();
            let Some(after_q) = t2.strip_prefix('?') else {
                break;
            };
            tail = after_q;
            more = true;
        }
        out.push_str(if more { "?, ..." } else { "?" });
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_group_statements_by_shape() {
        assert_eq!(
            digest("SELECT name FROM t1 WHERE id = 42 AND s = 'it''s'"),
            "SELECT name FROM t1 WHERE id = ? AND s = ?"
        );
        assert_eq!(
            digest("select * from `t 2` where x in (1, 2,3) /* c */ limit 10;"),
            "select * from `t 2` where x in (?, ...) limit ?"
        );
        assert_eq!(
            digest("INSERT INTO t VALUES (1,'a'),(2,'b')"),
            "INSERT INTO t VALUES (?, ...),(?, ...)"
        );
        assert_eq!(digest("SELECT \"x\\\"y\", -1.5e3"), "SELECT ?, -?");
        assert_eq!(digest("SELECT café, 'é' FROM t"), "SELECT café, ? FROM t");
        assert_eq!(digest("SELECT @a1, x2"), "SELECT @a1, x2");
    }

    fn norm(s: &str) -> String {
        normalize(s, ReadOptions::default()).into_owned()
    }

    #[test]
    fn executable_comments_become_code_or_comments() {
        assert_eq!(
            norm("/*!40101 SET NAMES utf8mb4 */"),
            "         SET NAMES utf8mb4   "
        );
        assert_eq!(norm("/*!SET x=1*/;"), "   SET x=1  ;");
        assert_eq!(norm("/*M!100616 SET a=1 */"), "           SET a=1   ");
        // Above the server's version: a plain comment.
        assert_eq!(
            norm("/*M!999999 SET a=1 */ SELECT 1"),
            "/*         SET a=1 */ SELECT 1"
        );
        // A comment for another version stays a comment; one that runs becomes code.
        let comment = |s: &str| {
            let n = norm(s);
            assert_eq!(n.len(), s.len());
            n.starts_with("/*") && !n.contains('!') && n.ends_with("*/")
        };
        let code = |s: &str| norm(s).trim() == "SELECT 1";
        assert!(comment("/*!101200 SELECT 1 */"));
        // MySQL 5.7+ comments are not MariaDB's, unless in its own form.
        assert!(comment("/*!99999 SELECT 1 */"));
        assert!(comment("/*!50700 SELECT 1 */"));
        assert!(code("/*M!99999 SELECT 1 */"));
        assert!(code("/*!50699 SELECT 1 */"));
        // Six digits when a sixth follows; fewer than five: no version at all.
        assert!(code("/*!100000 SELECT 1 */"));
        assert_eq!(norm("/*!12 SELECT 1 */").trim(), "12 SELECT 1");
        // Inside strings, nothing is touched; the length never changes.
        let s = "SELECT '/*!40101 x */', 1 /*!50001 + 2 */";
        assert_eq!(norm(s), "SELECT '/*!40101 x */', 1          + 2   ");
        assert_eq!(norm(s).len(), s.len());
        // A plain comment inside an executable one ends at its own `*/`.
        assert_eq!(
            norm("/*!40101 SET x=1 /* c */ */"),
            "         SET x=1 /* c */   "
        );
        assert!(matches!(
            normalize("SELECT 1", ReadOptions::default()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn backslashes_are_ordinary_under_no_backslash_escapes() {
        let opts = ReadOptions {
            no_backslash_escapes: true,
            ..ReadOptions::default()
        };
        let v = normalize(r"INSERT INTO t VALUES ('a\', 'b')", opts);
        assert!(!v.contains('\\'));
        assert_eq!(
            &*crate::wire::charset::encode(&v),
            br"INSERT INTO t VALUES ('a\', 'b')"
        );
        // Code outside strings keeps its backslashes (MySQL would reject them anyway).
        assert_eq!(normalize(r"SELECT 1", opts), "SELECT 1");
    }

    #[test]
    fn reserved_names_in_code_only() {
        assert_eq!(
            reserved_name("SET @sg_replicating = 1"),
            Some(Reserved::UserVariable("sg_replicating".into()))
        );
        assert!(reserved_name("SELECT @SG_X := 1").is_some());
        assert!(reserved_name("SET @`sg_x` = 1").is_some());
        assert!(reserved_name("SELECT 1 INTO @'sg_x'").is_some());
        assert_eq!(
            reserved_name("SELECT * FROM _shardgate.t"),
            Some(Reserved::Database)
        );
        assert_eq!(
            reserved_name("SHOW TABLES FROM `_ShardGate`"),
            Some(Reserved::Database)
        );
        assert_eq!(reserved_name("SELECT '@sg_x', \"_shardgate\""), None);
        assert_eq!(
            reserved_name("SELECT @@sg_x, @sgx, my_shardgate, x_sg_y"),
            None
        );
        assert_eq!(reserved_name("SELECT 1 -- @sg_x"), None);
    }

    #[test]
    fn nesting_is_bounded_by_a_cheap_estimate() {
        assert!(nesting_depth("SELECT a FROM t WHERE id = 1") < 10);
        let long_in = format!(
            "SELECT * FROM t WHERE id IN ({})",
            vec!["1"; 10_000].join(",")
        );
        assert!(nesting_depth(&long_in) < 10);
        let rows = format!(
            "INSERT INTO t VALUES {}",
            vec!["(1+1, 2)"; 10_000].join(",")
        );
        assert!(nesting_depth(&rows) < 10);
        let chain = format!("SELECT 1{}", " + 1".repeat(10_000));
        assert!(nesting_depth(&chain) > MAX_NESTING);
        let ors = format!("SELECT * FROM t WHERE {}", vec!["a = 1"; 1000].join(" OR "));
        assert!(nesting_depth(&ors) < MAX_NESTING);
        let parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(nesting_depth(&parens) > MAX_NESTING);
    }

    #[test]
    fn versions_parse() {
        assert_eq!(version_number("10.11.6-MariaDB-log"), Some(101106));
        assert_eq!(
            version_number("5.5.5-10.11.14-MariaDB-0+deb12u2"),
            Some(101114)
        );
        assert_eq!(version_number("8.0.36"), Some(80036));
        assert_eq!(version_number("garbage"), None);
    }
}
