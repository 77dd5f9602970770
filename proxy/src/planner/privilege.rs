//! The least role a statement needs ([`Privilege`]), found once when it is planned.
//!
//! Roles follow MySQL's privileges in broad strokes: `reader` has SELECT (and what every
//! session needs: SHOW, EXPLAIN, SET of session variables, transactions); `writer` adds
//! INSERT, UPDATE, DELETE, locking reads (MySQL asks UPDATE or DELETE for `FOR UPDATE`),
//! LOAD DATA LOCAL and CALL; `admin` has the rest: DDL, statements about users and servers
//! (GRANT, CREATE USER, FLUSH, ...), files on the server (`INTO OUTFILE`, `LOAD DATA
//! INFILE`) and the system schemas `mysql`, `performance_schema` and `sys` (which hold
//! other users' accounts and SQL). `information_schema` stays readable, as in MySQL,
//! since drivers and ORMs read it.
//!
//! What the proxy answers itself (USE, PROCESSLIST, KILL, SHOW QUERY STATS) is checked by
//! the session, which knows the user.

use super::plan::{Facts, Privilege};
use super::tables::tables;
use sqlparser::ast::Statement;

/// System schemas only admins may read.
const ADMIN_SCHEMAS: &[&str] = &["mysql", "performance_schema", "sys"];

/// SHOW statements about the servers rather than the data.
const ADMIN_SHOWS: &[&str] = &[
    "ENGINE",
    "ENGINES",
    "MASTER",
    "SLAVE",
    "REPLICA",
    "BINLOG",
    "BINARY",
    "RELAYLOG",
    "GRANTS",
    "PRIVILEGES",
    "PLUGINS",
    "PROFILE",
    "PROFILES",
    "USER",
];

/// The least privilege `stmt` (parsed from code words `w`, None if sqlparser could not
/// read it) needs, given the facts already found.
pub fn needed(w: &[&str], stmt: Option<&Statement>, facts: &Facts) -> Privilege {
    let first = w
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let has = |word: &str| w.iter().any(|x| x.eq_ignore_ascii_case(word));
    if facts.ddl || names_admin_schema(w, stmt) {
        return Privilege::Admin;
    }
    match first.as_str() {
        "SELECT" | "WITH" | "VALUES" | "TABLE" | "DESCRIBE" | "DESC" | "EXPLAIN" | "HELP"
        | "DO" | "CHECKSUM" | "HANDLER" => {
            if has("OUTFILE") || has("DUMPFILE") {
                Privilege::Admin
            } else if (facts.write && !facts.opaque) || facts.locking {
                // (An unread statement counts as a write for resharding; one that starts
                // like a read is judged by its words.)
                Privilege::Write
            } else {
                Privilege::Read
            }
        }
        "SHOW" => {
            let second = w.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
            let about_servers = ADMIN_SHOWS.contains(&second.as_str())
                || (second == "CREATE" && w.get(2).is_some_and(|x| x.eq_ignore_ascii_case("USER")));
            if about_servers {
                Privilege::Admin
            } else {
                Privilege::Read
            }
        }
        "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "USE" | "PREPARE"
        | "EXECUTE" | "DEALLOCATE" | "UNLOCK" | "XA" => Privilege::Read,
        "SET" => {
            // Session variables only: SET GLOBAL (refused anyway), SET PASSWORD and roles
            // belong to the servers.
            let server = ["GLOBAL", "PERSIST", "PASSWORD", "ROLE", "DEFAULT"]
                .iter()
                .any(|x| w.get(1).is_some_and(|s| s.eq_ignore_ascii_case(x)));
            if server {
                Privilege::Admin
            } else {
                Privilege::Read
            }
        }
        "LOCK" => {
            if has("WRITE") {
                Privilege::Write
            } else {
                Privilege::Read
            }
        }
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "CALL" => Privilege::Write,
        // LOAD DATA INFILE reads a file on the server; LOCAL sends the client's.
        "LOAD" if has("LOCAL") => Privilege::Write,
        _ => Privilege::Admin,
    }
}

/// Whether the statement names a table of `mysql`, `performance_schema` or `sys` (for a
/// statement sqlparser could not read: whether any of its words is such a schema).
fn names_admin_schema(w: &[&str], stmt: Option<&Statement>) -> bool {
    let admin = |s: &str| ADMIN_SCHEMAS.iter().any(|a| a.eq_ignore_ascii_case(s));
    match stmt {
        Some(s) => tables(s)
            .iter()
            .any(|t| t.schema.as_deref().is_some_and(admin)),
        None => w.iter().any(|x| admin(x)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts;
    use super::*;
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::parser::Parser;

    fn needs(sql: &str) -> Privilege {
        let parsed = Parser::parse_sql(&MySqlDialect {}, sql).ok();
        facts::of(sql, parsed.as_ref().and_then(|v| v.first())).privilege
    }

    #[test]
    fn each_statement_kind_needs_its_role() {
        use Privilege::*;
        let table = [
            ("SELECT * FROM customer WHERE id = 1", Read),
            ("SELECT 1", Read),
            ("WITH c AS (SELECT 1) SELECT * FROM c", Read),
            ("SELECT * FROM information_schema.tables", Read),
            ("SHOW TABLES", Read),
            ("SHOW CREATE TABLE customer", Read),
            ("SHOW VARIABLES LIKE 'x%'", Read),
            ("DESCRIBE customer", Read),
            ("EXPLAIN SELECT * FROM customer", Read),
            ("SET NAMES utf8mb4", Read),
            ("SET autocommit = 0", Read),
            ("SET SESSION sql_mode = ''", Read),
            ("BEGIN", Read),
            ("START TRANSACTION READ ONLY", Read),
            ("COMMIT", Read),
            ("ROLLBACK", Read),
            ("LOCK TABLES customer READ", Read),
            ("UNLOCK TABLES", Read),
            ("SELECT * FROM customer WHERE id = 1 FOR UPDATE", Write),
            ("SELECT * FROM customer LOCK IN SHARE MODE", Write),
            ("INSERT INTO customer VALUES (1)", Write),
            ("REPLACE INTO customer VALUES (1)", Write),
            ("UPDATE customer SET a = 1", Write),
            ("DELETE FROM customer", Write),
            ("WITH x AS (SELECT 1) UPDATE customer SET a = 1", Write),
            ("LOAD DATA LOCAL INFILE 'f' INTO TABLE customer", Write),
            ("CALL p()", Write),
            ("LOCK TABLES customer WRITE", Write),
            ("CREATE TABLE t (a INT)", Admin),
            ("ALTER TABLE customer ADD c INT", Admin),
            ("DROP TABLE customer", Admin),
            ("TRUNCATE TABLE customer", Admin),
            ("RENAME TABLE a TO b", Admin),
            ("CREATE INDEX i ON customer (a)", Admin),
            ("CREATE DATABASE x", Admin),
            ("GRANT ALL ON *.* TO 'x'@'%'", Admin),
            ("REVOKE ALL ON *.* FROM 'x'@'%'", Admin),
            ("CREATE USER 'x'@'%' IDENTIFIED BY 'y'", Admin),
            ("DROP USER 'x'@'%'", Admin),
            ("FLUSH PRIVILEGES", Admin),
            ("SET PASSWORD FOR 'x'@'%' = PASSWORD('y')", Admin),
            ("SET GLOBAL max_connections = 10", Admin),
            ("SHOW GRANTS", Admin),
            ("SHOW ENGINE INNODB STATUS", Admin),
            ("SHOW MASTER STATUS", Admin),
            ("SHOW CREATE USER root", Admin),
            ("SELECT * FROM mysql.user", Admin),
            (
                "SELECT * FROM customer JOIN performance_schema.threads",
                Admin,
            ),
            ("SELECT * FROM sys.processlist", Admin),
            ("SELECT * FROM customer INTO OUTFILE '/tmp/x'", Admin),
            ("LOAD DATA INFILE '/etc/passwd' INTO TABLE customer", Admin),
            ("OPTIMIZE TABLE customer", Admin),
            ("INSTALL SONAME 'x'", Admin),
            ("SHUTDOWN", Admin),
            // Not readable by sqlparser: judged by its words.
            ("SELECT * FROM mysql.user PROCEDURE ANALYSE()", Admin),
            ("SELECT 'mysql' PROCEDURE ANALYSE()", Read),
        ];
        for (sql, want) in table {
            assert_eq!(needs(sql), want, "{sql}");
        }
    }
}
