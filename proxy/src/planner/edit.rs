//! Rewriting statements by editing their original text.
//!
//! sqlparser's Display output is not a faithful MySQL rendering (it drops backslash
//! escapes, for one), so shardgate never re-prints a parsed statement. Rewrites are edits
//! of byte ranges of the client's text, located through the AST nodes' spans; everything
//! not edited reaches the backend exactly as the client wrote it.

use super::lexer::{scan_from, Region};
use sqlparser::tokenizer::{Location, Span};
use std::ops::ControlFlow;

/// Maps sqlparser locations (1-based line and character column) to byte offsets, in
/// constant time per lookup (bulk INSERTs have thousands of locations on one line).
pub struct TextIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// For text that is not pure ASCII: the byte offset of every character (and the end),
    /// and the character index where each line starts.
    chars: Option<(Vec<usize>, Vec<usize>)>,
}

impl<'a> TextIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        let chars = (!text.is_ascii()).then(|| {
            let mut byte_of: Vec<usize> = Vec::with_capacity(text.len() + 1);
            let mut line_chars = vec![0];
            for (ci, (b, c)) in text.char_indices().enumerate() {
                byte_of.push(b);
                if c == '\n' {
                    line_chars.push(ci + 1);
                }
            }
            byte_of.push(text.len());
            (byte_of, line_chars)
        });
        TextIndex {
            text,
            line_starts,
            chars,
        }
    }

    /// Byte offset of a location, if it is inside the text.
    pub fn offset(&self, loc: Location) -> Option<usize> {
        if loc.line == 0 || loc.column == 0 {
            return None;
        }
        let line = loc.line as usize - 1;
        let start = *self.line_starts.get(line)?;
        let line_end = self
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.text.len());
        let col = loc.column as usize - 1;
        match &self.chars {
            None => (start + col <= line_end).then_some(start + col),
            Some((byte_of, line_chars)) => {
                let first = *line_chars.get(line)?;
                let next = line_chars
                    .get(line + 1)
                    .copied()
                    .unwrap_or(byte_of.len() - 1);
                (first + col <= next).then(|| byte_of[first + col])
            }
        }
    }

    /// Byte range of a span (end exclusive), if the span is known.
    pub fn range(&self, span: Span) -> Option<(usize, usize)> {
        let a = self.offset(span.start)?;
        let b = self.offset(span.end)?;
        (a <= b).then_some((a, b))
    }

    /// Byte range of an expression's span, widened so parentheses balance: sqlparser's
    /// spans of composite nodes stop at their last child and miss closing parentheses.
    pub fn expr_range(&self, span: Span) -> Option<(usize, usize)> {
        let (a, b) = self.range(span)?;
        let bytes = self.text.as_bytes();
        let mut depth = 0i32;
        let mut closed = None;
        scan_from(bytes, a, |i, region| {
            if i >= b && depth <= 0 {
                return ControlFlow::Break(());
            }
            if region == Region::Code {
                match bytes[i] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 && i >= b {
                            closed = Some(i + 1);
                            return ControlFlow::Break(());
                        }
                    }
                    _ => {}
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(end) = closed {
            return Some((a, end));
        }
        if depth != 0 {
            return None;
        }
        // A function's span may stop at its name (`COUNT` of `COUNT(*)`): take the call.
        let end = b.max(a);
        let last = self.text[..end].chars().next_back();
        let rest = &self.text[end..];
        let gap = rest.len() - rest.trim_start().len();
        if end > a
            && last.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '`')
            && rest[gap..].starts_with('(')
        {
            return self.closing_paren(end + gap).map(|close| (a, close));
        }
        Some((a, end))
    }

    /// Byte range of an expression's text, checked: the text must parse back to the same
    /// expression (sqlparser's spans of some nodes leave out a leading keyword, e.g. `NOT`
    /// of `NOT EXISTS`; moving such a piece elsewhere would change its meaning).
    pub fn checked_expr_range(&self, e: &sqlparser::ast::Expr) -> Option<(usize, usize)> {
        use sqlparser::ast::Spanned;
        let (mut a, mut b) = self.expr_range(e.span())?;
        let same = |a: usize, b: usize| {
            sqlparser::parser::Parser::new(&sqlparser::dialect::MySqlDialect {})
                .try_with_sql(&self.text[a..b])
                .ok()
                .and_then(|mut p| p.parse_expr().ok())
                .is_some_and(|parsed| parsed == *e)
        };
        // A subquery's span leaves out its parentheses: widen to them.
        for _ in 0..3 {
            if same(a, b) {
                return Some((a, b));
            }
            let before = self.text[..a].trim_end();
            let after = self.text[b..].trim_start();
            if !(before.ends_with('(') && after.starts_with(')')) {
                return None;
            }
            a = before.len() - 1;
            b = self.text.len() - after.len() + 1;
        }
        None
    }

    /// The end (exclusive) of the parenthesised code opening at `open`.
    fn closing_paren(&self, open: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let mut depth = 0i32;
        let mut close = None;
        scan_from(bytes, open, |i, region| {
            if region == Region::Code {
                match bytes[i] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(i + 1);
                            return ControlFlow::Break(());
                        }
                    }
                    _ => {}
                }
            }
            ControlFlow::Continue(())
        });
        close
    }

    /// Byte range of a function call from its name's span: the name and its argument list.
    pub fn call_range(&self, name_span: Span) -> Option<(usize, usize)> {
        let (a, b) = self.range(name_span)?;
        let rest = &self.text[b..];
        let skip = rest.len() - rest.trim_start().len();
        if !rest.trim_start().starts_with('(') {
            return Some((a, b));
        }
        let open = b + skip;
        let end = self.expr_range(Span::new(
            self.location_of(open)?,
            self.location_of(open + 1)?,
        ))?;
        Some((a, end.1))
    }

    /// The location of a byte offset (inverse of [`TextIndex::offset`]).
    pub fn location_of(&self, offset: usize) -> Option<Location> {
        if offset > self.text.len() {
            return None;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l - 1,
        };
        let start = self.line_starts[line];
        let col = self.text.get(start..offset)?.chars().count();
        Some(Location::new(line as u64 + 1, col as u64 + 1))
    }

    /// Start of keyword `kw` (case-insensitive) ending right before `pos`, skipping
    /// whitespace and comments between them.
    pub fn keyword_before(&self, pos: usize, kw: &str) -> Option<usize> {
        let head = super::sqltext::strip_comments(&self.text[..pos]);
        let trimmed = head.trim_end();
        let start = trimmed.len().checked_sub(kw.len())?;
        let word = trimmed.get(start..)?;
        let boundary = start == 0
            || !trimmed.as_bytes()[start - 1].is_ascii_alphanumeric()
                && trimmed.as_bytes()[start - 1] != b'_';
        (word.eq_ignore_ascii_case(kw) && boundary).then_some(start)
    }

    /// The text of `[start, end)` with every `?` placeholder in it replaced by the marker
    /// `:sg_p<i>` (i = its index in the whole statement), so the piece can be moved into a
    /// rebuilt statement and still render the right parameter.
    pub fn slice_with_params(&self, start: usize, end: usize, placeholders: &[usize]) -> String {
        let mut out = String::with_capacity(end - start + 8);
        let mut pos = start;
        for (i, &p) in placeholders.iter().enumerate() {
            if p >= start && p < end {
                out.push_str(&self.text[pos..p]);
                out.push_str(&format!("{}p{i}", super::sqltext::MARKER_PREFIX));
                pos = p + 1;
            }
        }
        out.push_str(&self.text[pos..end]);
        out
    }

    /// The original text of a span.
    pub fn slice(&self, span: Span) -> Option<&'a str> {
        self.range(span).map(|(a, b)| &self.text[a..b])
    }

    pub fn text(&self) -> &'a str {
        self.text
    }
}

/// A set of non-overlapping replacements of byte ranges.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    edits: Vec<(usize, usize, String)>,
}

impl Edits {
    pub fn new() -> Self {
        Edits::default()
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Replaces `[start, end)` with `text`. Insertions use `start == end`.
    pub fn replace(&mut self, start: usize, end: usize, text: impl Into<String>) {
        self.edits.push((start, end, text.into()));
    }

    pub fn insert(&mut self, at: usize, text: impl Into<String>) {
        self.replace(at, at, text);
    }

    /// Applies the edits; `None` if two of them overlap (the caller then refuses the
    /// rewrite rather than guessing).
    pub fn apply(mut self, text: &str) -> Option<String> {
        self.edits.sort_by_key(|e| (e.0, e.1));
        let mut out = String::with_capacity(text.len() + 64);
        let mut pos = 0;
        for (a, b, t) in &self.edits {
            if *a < pos || *b > text.len() {
                return None;
            }
            out.push_str(&text[pos..*a]);
            out.push_str(t);
            pos = *b;
        }
        out.push_str(&text[pos..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::Spanned;
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::parser::Parser;

    /// The straightforward (linear per lookup) mapping the index must agree with.
    fn slow_offset(text: &str, line: usize, col: usize) -> Option<usize> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let start = *starts.get(line - 1)?;
        let end = starts.get(line).copied().unwrap_or(text.len());
        let l = &text[start..end];
        if col - 1 == l.chars().count() {
            return Some(end);
        }
        l.char_indices().nth(col - 1).map(|(b, _)| start + b)
    }

    #[test]
    fn offsets_agree_with_a_character_walk() {
        for text in [
            "SELECT 1,\n  2",
            "SELECT 'é', 'ü'\nFROM t\n",
            "x",
            "a\n\nb€c",
        ] {
            let idx = TextIndex::new(text);
            for line in 1..5u64 {
                for col in 1..20u64 {
                    assert_eq!(
                        idx.offset(Location::new(line, col)),
                        slow_offset(text, line as usize, col as usize),
                        "{text:?} {line}:{col}"
                    );
                }
            }
        }
    }

    #[test]
    fn spans_map_to_the_original_text() {
        let sql = "SELECT 'é', x\n  FROM t WHERE id IN (1, 2)";
        let stmt = &Parser::parse_sql(&MySqlDialect {}, sql).unwrap()[0];
        let idx = TextIndex::new(sql);
        let sqlparser::ast::Statement::Query(q) = stmt else {
            panic!()
        };
        let sqlparser::ast::SetExpr::Select(s) = &*q.body else {
            panic!()
        };
        let w = s.selection.as_ref().unwrap();
        let (a, b) = idx.expr_range(w.span()).unwrap();
        assert_eq!(&sql[a..b], "id IN (1, 2)");
        assert_eq!(idx.slice(s.projection[1].span()), Some("x"));
        let mut e = Edits::new();
        e.replace(a, b, "id IN (2)");
        assert_eq!(
            e.apply(sql).unwrap(),
            "SELECT 'é', x\n  FROM t WHERE id IN (2)"
        );
    }

    #[test]
    fn overlapping_edits_are_refused() {
        let mut e = Edits::new();
        e.replace(0, 5, "a");
        e.replace(3, 6, "b");
        assert!(e.apply("0123456789").is_none());
    }
}
