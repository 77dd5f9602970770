//! Guards: the side of a workflow that does not serve refuses writes that do not come
//! from a controller, so a proxy with a stale routing (cut off from etcd, a held write
//! released late, a transaction that was already open there) gets an error instead of
//! writing where nobody reads.
//!
//! Every table of both sides gets `BEFORE INSERT/UPDATE/DELETE` triggers at setup, when
//! installing triggers is expected. Whether a guard is up is data, not DDL: a row of
//! `_shardgate.sg_guards` holding the time (unix ms) until which writes are refused.
//! Raising or lowering a guard at cutover is an `UPDATE` of that row, which takes no
//! table lock: DDL there would wait for the application's open transactions while every
//! new statement on the table queued behind it (a cutover stalled that way under load).
//!
//! The triggers read the row with a shared lock, which reads the latest committed value
//! (a plain read would see the transaction's snapshot, possibly from before the guard
//! went up) and which the controller must wait for: raising a guard waits until no write
//! that checked the old value is still open ([`set_all`]); a cutover that cannot raise
//! its guards in time gives up and is retried.

use super::capture::{fnv, trigger_name};
use super::db::{ident, ShardConn, CAPTURE_DB};
use anyhow::Result;
use mysql_async::Value;
use std::time::{Duration, Instant};

/// Whether the tables of a side that does not serve refuse writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Writes are accepted (the side serves, or no cutover happened yet).
    Off,
    /// Writes from anyone but the controller fail until this time (unix ms): set before
    /// a flip, so a controller that dies before the flip blocks nothing for long.
    Until(u64),
    /// Writes from anyone but the controller fail: the side no longer serves.
    On,
}

impl Guard {
    /// The row's value.
    fn until_ms(self) -> i64 {
        match self {
            Guard::Off => 0,
            Guard::Until(ms) => ms.min(i64::MAX as u64) as i64,
            Guard::On => i64::MAX,
        }
    }
}

fn table() -> String {
    format!("{}.`sg_guards`", ident(CAPTURE_DB))
}

/// The guard row of `db`.`table` (a hash: names need no quoting in the triggers).
fn id(db: &str, table: &str) -> String {
    format!("{:016x}", fnv(&format!("{db}.{table}")))
}

/// Creates the guard row (down) and the guard triggers of a table (idempotent).
pub async fn install(c: &mut ShardConn, table_name: &str) -> Result<()> {
    c.run(&format!(
        "CREATE TABLE IF NOT EXISTS {} (id CHAR(16) NOT NULL PRIMARY KEY, until_ms BIGINT NOT NULL) ENGINE=InnoDB",
        table()
    ))
    .await?;
    let gid = id(&c.database, table_name);
    c.exec(
        &format!("INSERT IGNORE INTO {} VALUES (?, 0)", table()),
        vec![Value::from(gid.as_str())],
    )
    .await?;
    let db = ident(&c.database);
    for (kind, event) in [("gi", "INSERT"), ("gu", "UPDATE"), ("gd", "DELETE")] {
        let name = ident(&trigger_name(kind, table_name));
        super::db::ddl(c, &format!("DROP TRIGGER IF EXISTS {db}.{name}")).await?;
        super::db::ddl(
            c,
            &format!(
                "CREATE TRIGGER {db}.{name} BEFORE {event} ON {db}.{} FOR EACH ROW BEGIN DECLARE sg_until BIGINT DEFAULT 0; IF @sg_replicating IS NULL THEN SELECT until_ms INTO sg_until FROM {} WHERE id = '{gid}' LOCK IN SHARE MODE; IF sg_until > UNIX_TIMESTAMP(NOW(3)) * 1000 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'shardgate: this shard no longer serves the table (resharding cutover); retry'; END IF; END IF; END",
                ident(table_name),
                table()
            ),
        )
        .await?;
    }
    Ok(())
}

/// Raises or lowers the guards of several tables of one shard together. First every
/// guard row is locked (`FOR UPDATE NOWAIT`, retried every few ms for at most
/// `patience`): the lock is granted only once no transaction that wrote one of those
/// tables (each such write read its guard row under a shared lock) is still open, and
/// taking them all at once, never waiting while holding some, means the application never
/// meets one raised guard while it still writes behind another one (nor deadlocks with
/// the controller). This is the cutover's exact drain: the processlist's view of open
/// transactions (`INNODB_TRX`) is a cache up to 100 ms old. Then the rows are set in the
/// same transaction.
pub async fn set_all(
    c: &mut ShardConn,
    tables: &[String],
    mode: Guard,
    patience: Duration,
) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let ids: Vec<Value> = tables
        .iter()
        .map(|t| Value::from(id(&c.database, t).as_str()))
        .collect();
    let marks = vec!["?"; ids.len()].join(", ");
    let started = Instant::now();
    let mut backoff = Duration::from_millis(1);
    loop {
        c.run("BEGIN").await?;
        let locked = c
            .exec(
                &format!(
                    "SELECT id FROM {} WHERE id IN ({marks}) FOR UPDATE NOWAIT",
                    table()
                ),
                ids.clone(),
            )
            .await;
        match locked {
            Ok(rows) if rows.len() == ids.len() => {
                let set = c
                    .exec(
                        &format!("UPDATE {} SET until_ms = ? WHERE id IN ({marks})", table()),
                        std::iter::once(Value::from(mode.until_ms()))
                            .chain(ids.iter().cloned())
                            .collect(),
                    )
                    .await;
                if let Err(e) = set {
                    let _ = c.run("ROLLBACK").await;
                    return Err(e);
                }
                return c.run("COMMIT").await;
            }
            Ok(_) => {
                // A guard row is missing (a workflow set up by an older controller).
                c.run("ROLLBACK").await?;
                for t in tables {
                    install(c, t).await?;
                }
            }
            Err(e) if super::db::lock_busy(&e) && started.elapsed() < patience => {
                let _ = c.run("ROLLBACK").await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                let _ = c.run("ROLLBACK").await;
                return Err(e);
            }
        }
    }
}

/// Drops a table's guard triggers and row (a serving side after the workflow ended).
pub async fn remove(c: &mut ShardConn, table_name: &str) -> Result<()> {
    let db = ident(&c.database);
    for kind in ["gi", "gu", "gd"] {
        super::db::ddl(
            c,
            &format!(
                "DROP TRIGGER IF EXISTS {db}.{}",
                ident(&trigger_name(kind, table_name))
            ),
        )
        .await?;
    }
    let exists = c
        .exec(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'sg_guards'",
            vec![Value::from(CAPTURE_DB)],
        )
        .await?;
    if exists.first().map(|r| super::db::int(r, 0)).unwrap_or(0) > 0 {
        c.exec(
            &format!("DELETE FROM {} WHERE id = ?", table()),
            vec![Value::from(id(&c.database, table_name).as_str())],
        )
        .await?;
    }
    Ok(())
}
