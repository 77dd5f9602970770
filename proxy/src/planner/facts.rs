//! The [`Facts`] of a statement: what running it means for the session (pinning its
//! connections, being a write, a timeout hint, SQL_CALC_FOUND_ROWS), read once from its
//! code (never from quoted text or comments) when it is planned.

use super::lexer::{scan, Region};
use super::plan::{Facts, Privilege};
use sqlparser::ast::{SetExpr, Statement};

/// The facts of `sql`, parsed as `stmt` (None when sqlparser could not read it: such a
/// statement is pinned and counted as a write, since the proxy cannot tell what it does).
pub fn of(sql: &str, stmt: Option<&Statement>) -> Facts {
    let words = CodeWords::new(sql);
    let first = words.first();
    let is = |w: &str| first.eq_ignore_ascii_case(w);
    let statement_pins = match stmt {
        None => true,
        // A procedure can change session state (variables, temporary tables, locks) the
        // proxy cannot see.
        Some(Statement::Call(_)) => true,
        Some(_) => false,
    };
    let pin = statement_pins
        || words.has("TEMPORARY")
        || words.has("GET_LOCK")
        || (is("LOCK") && (words.has("TABLE") || words.has("TABLES")))
        || is("HANDLER")
        || is("XA")
        || words.has_symbol(":=")
        || words.assigns_into_variable();
    let write = match stmt {
        None => true,
        Some(s) => is_write_statement(s),
    } || ["INSERT", "UPDATE", "DELETE", "REPLACE", "CALL", "LOAD"]
        .iter()
        .any(|w| is(w));
    let ddl = match stmt {
        Some(s) => is_ddl(s),
        None => ["CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"]
            .iter()
            .any(|w| is(w)),
    };
    Facts {
        pin,
        unpin: is("UNLOCK"),
        write,
        timeout_ms: hinted_timeout(sql),
        calc_found_rows: words.has("SQL_CALC_FOUND_ROWS"),
        ddl,
        atomic: false,
        no_tables: reads_no_table(&words, stmt),
        reads_autocommit: !is("SET") && words.has("AUTOCOMMIT"),
        locking: words.has_sequence(&["FOR", "UPDATE"])
            || words.has_sequence(&["FOR", "SHARE"])
            || words.has_sequence(&["LOCK", "IN", "SHARE", "MODE"]),
        privilege: Privilege::Read,
        opaque: stmt.is_none(),
    }
    .with_privilege(&words, stmt)
}

impl Facts {
    fn with_privilege(mut self, words: &CodeWords, stmt: Option<&Statement>) -> Facts {
        let w: Vec<&str> = words.words().collect();
        self.privilege = super::privilege::needed(&w, stmt, &self);
        self
    }
}

/// The words of a statement's code (quoted text and comments left out), for checks on
/// statements sqlparser cannot read.
pub fn code_words(sql: &str) -> Vec<String> {
    CodeWords::new(sql).words().map(str::to_string).collect()
}

/// A query with no FROM (or only `FROM DUAL`): it reads no table.
fn reads_no_table(words: &CodeWords, stmt: Option<&Statement>) -> bool {
    if !matches!(stmt, Some(Statement::Query(_))) {
        return false;
    }
    let w: Vec<&str> = words.words().collect();
    w.iter().enumerate().all(|(i, word)| {
        !word.eq_ignore_ascii_case("FROM")
            || w.get(i + 1).is_some_and(|n| n.eq_ignore_ascii_case("DUAL"))
    })
}

/// Statements that change tables (what schema tracking must read again).
pub(crate) fn is_ddl(s: &Statement) -> bool {
    matches!(
        s,
        Statement::CreateTable(_)
            | Statement::AlterTable(_)
            | Statement::Drop { .. }
            | Statement::CreateIndex(_)
            | Statement::Truncate(_)
            | Statement::CreateView(_)
            | Statement::AlterView { .. }
            | Statement::RenameTable(_)
    )
}

fn is_write_statement(s: &Statement) -> bool {
    match s {
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Call(_)
        | Statement::LoadData { .. } => true,
        Statement::Query(q) => matches!(
            &*q.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        ),
        _ => false,
    }
}

/// The words and symbols of a statement's code (quoted text and comments left out).
struct CodeWords<'a> {
    code: Vec<&'a str>,
}

impl<'a> CodeWords<'a> {
    fn new(sql: &'a str) -> CodeWords<'a> {
        let b = sql.as_bytes();
        let mut mask = vec![false; b.len()];
        scan(b, |i, r| mask[i] = r == Region::Code);
        // Code runs, cut at quoted text and comments; byte boundaries of regions are
        // always character boundaries (regions change only at ASCII bytes).
        let mut code = Vec::new();
        let mut start = None;
        for (i, c) in mask
            .iter()
            .copied()
            .chain(std::iter::once(false))
            .enumerate()
        {
            match (c, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    if let Some(piece) = sql.get(s..i) {
                        code.push(piece);
                    }
                    start = None;
                }
                _ => {}
            }
        }
        CodeWords { code }
    }

    fn words(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.code.iter().flat_map(|piece| {
            piece
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
        })
    }

    fn first(&self) -> &'a str {
        self.words().next().unwrap_or("")
    }

    fn has(&self, word: &str) -> bool {
        self.words().any(|w| w.eq_ignore_ascii_case(word))
    }

    /// The words appear one after the other (`FOR UPDATE`).
    fn has_sequence(&self, seq: &[&str]) -> bool {
        let w: Vec<&str> = self.words().collect();
        w.windows(seq.len())
            .any(|win| win.iter().zip(seq).all(|(a, b)| a.eq_ignore_ascii_case(b)))
    }

    fn has_symbol(&self, sym: &str) -> bool {
        self.code.iter().any(|p| p.contains(sym))
    }

    /// `... INTO @var`: a user variable assigned by a query.
    fn assigns_into_variable(&self) -> bool {
        self.code.iter().any(|p| {
            let upper = p.to_ascii_uppercase();
            upper
                .match_indices("INTO")
                .any(|(i, _)| upper[i + 4..].trim_start().starts_with('@'))
        })
    }
}

/// A `/*+ MAX_EXECUTION_TIME(n) */` optimizer hint, in milliseconds.
pub fn hinted_timeout(sql: &str) -> Option<u64> {
    let upper = sql.to_ascii_uppercase();
    let at = upper.find("MAX_EXECUTION_TIME(")?;
    let hint_start = upper[..at].rfind("/*+")?;
    if upper[hint_start..at].contains("*/") {
        return None;
    }
    let rest = &upper[at + "MAX_EXECUTION_TIME(".len()..];
    rest[..rest.find(')')?].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::parser::Parser;

    fn facts(sql: &str) -> Facts {
        let parsed = Parser::parse_sql(&MySqlDialect {}, sql).ok();
        of(sql, parsed.as_ref().and_then(|v| v.first()))
    }

    #[test]
    fn pins_come_from_code_not_strings() {
        assert!(facts("CREATE TEMPORARY TABLE t (a INT)").pin);
        assert!(facts("SELECT GET_LOCK('x', 1)").pin);
        assert!(facts("LOCK TABLES t WRITE").pin);
        assert!(facts("SELECT @a := 1").pin);
        assert!(facts("SELECT 1 INTO @a").pin);
        assert!(facts("CALL p()").pin);
        assert!(of("BEGIN NOT ATOMIC SET @a = 1; END", None).pin, "unparsed");
        assert!(!facts("SELECT 'TEMPORARY', 'GET_LOCK', ':=' FROM t").pin);
        assert!(!facts("SELECT 1 /* INTO @a */").pin);
        assert!(facts("UNLOCK TABLES").unpin);
    }

    #[test]
    fn writes_and_hints() {
        assert!(facts("INSERT INTO t VALUES (1)").write);
        assert!(facts("  /* c */ update t set a = 1").write);
        assert!(facts("CALL p()").write);
        assert!(!facts("SELECT * FROM t WHERE a = 'DELETE'").write);
        assert!(facts("-- note\nDELETE FROM t").write);
        assert!(facts("REPLACE INTO t VALUES (1)").write);
        assert!(!facts("/* INSERT */ SELECT 1").write);
        assert!(facts("LOAD DATA LOCAL INFILE 'x' INTO TABLE t").write);
        assert_eq!(
            facts("SELECT /*+ MAX_EXECUTION_TIME(50) */ 1").timeout_ms,
            Some(50)
        );
        assert!(facts("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1").calc_found_rows);
        assert!(!facts("SELECT 'SQL_CALC_FOUND_ROWS'").calc_found_rows);
        assert!(facts("ALTER TABLE t ADD COLUMN c INT").ddl);
        assert!(facts("CREATE TABLE t (a INT)").ddl);
        assert!(of("ALTER TABLE t DISABLE KEYS", None).ddl);
        assert!(!facts("SELECT * FROM t").ddl);
    }

    /// A cutover holds what it counts as writes: the shapes a review found uncounted.
    #[test]
    fn writes_in_every_shape_are_writes() {
        use crate::planner::lexer::{normalize, ReadOptions};
        assert!(facts("WITH x AS (SELECT 1 AS a) UPDATE t SET a = 1").write);
        assert!(facts("WITH x AS (SELECT 1 AS a) DELETE FROM t").write);
        assert!(facts("CALL p()").write);
        assert!(facts("LOAD DATA LOCAL INFILE 'f' INTO TABLE t").write);
        let versioned = normalize(
            "/*!40000 INSERT INTO t VALUES (1) */",
            ReadOptions::default(),
        );
        assert!(facts(&versioned).write, "{versioned}");
        let mariadb_only = normalize(
            "/*M!100100 REPLACE INTO t VALUES (1) */",
            ReadOptions::default(),
        );
        assert!(facts(&mariadb_only).write, "{mariadb_only}");
    }

    #[test]
    fn table_less_and_locking_reads() {
        assert!(facts("SELECT 1").no_tables);
        assert!(facts("SELECT @@autocommit, 'FROM t' FROM DUAL").no_tables);
        assert!(!facts("SELECT a FROM t").no_tables);
        assert!(!facts("SELECT (SELECT 1 FROM t)").no_tables);
        assert!(!facts("INSERT INTO t VALUES (1)").no_tables);
        assert!(facts("SELECT a FROM t WHERE id = 1 FOR UPDATE").locking);
        assert!(facts("SELECT a FROM t LOCK IN SHARE MODE").locking);
        assert!(facts("select a from t for share").locking);
        assert!(!facts("SELECT 'FOR UPDATE' FROM t").locking);
    }
}
