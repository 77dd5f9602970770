//! Talking to shard databases: controller connections, table metadata, and the SQL that
//! moves rows (chunked reads, REPLACE and DELETE by primary key) with typed parameters,
//! so every value travels exactly (binary protocol, `NAMES binary`, UTC time zone).

use super::workflow::KeyValue;
use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Row, Value};
use shardgate_topology::vindex::SqlValue;
use shardgate_topology::Shard;

/// Database credentials for shard backends.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// The database holding change-capture tables on every server.
pub const CAPTURE_DB: &str = "_shardgate";

/// Statements every controller connection runs first. `@sg_replicating` keeps the
/// controller's own writes out of the change capture.
const INIT: &[&str] = &[
    "SET NAMES binary",
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION foreign_key_checks = 0",
    "SET @sg_replicating = 1",
];

/// A connection to one shard's database.
pub struct ShardConn {
    pub shard: String,
    pub database: String,
    /// The server's `host:port` (shards of one server share it).
    pub addr: String,
    pub conn: Conn,
}

impl ShardConn {
    /// Connects to a shard's database (`create`: creating the database if missing).
    pub async fn open(shard: &Shard, creds: &Credentials, create: bool) -> Result<ShardConn> {
        let (host, port) = shard.primary.rsplit_once(':').ok_or_else(|| {
            anyhow!(
                "shard {} address {:?} is not host:port",
                shard.name,
                shard.primary
            )
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow!("shard {} port {port:?} is not a number", shard.name))?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(host.to_string())
            .tcp_port(port)
            .prefer_socket(false)
            .user(Some(creds.user.clone()))
            .pass(Some(creds.password.clone()))
            .init(INIT.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let conn = Conn::new(opts).await.with_context(|| {
            format!(
                "cannot connect to shard {} at {}",
                shard.name, shard.primary
            )
        })?;
        let mut c = ShardConn {
            shard: shard.name.clone(),
            database: shard.database.clone(),
            addr: shard.primary.clone(),
            conn,
        };
        if create {
            c.run(&format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                ident(&shard.database)
            ))
            .await?;
        }
        c.run(&format!("USE {}", ident(&shard.database))).await?;
        Ok(c)
    }

    pub async fn exec(&mut self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let p = if params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(params)
        };
        self.conn
            .exec(sql, p)
            .await
            .with_context(|| format!("shard {}: {}", self.shard, short(sql)))
    }

    pub async fn run(&mut self, sql: &str) -> Result<()> {
        self.conn
            .query_drop(sql)
            .await
            .with_context(|| format!("shard {}: {}", self.shard, short(sql)))
    }
}

fn short(sql: &str) -> String {
    if sql.len() > 160 {
        format!(
            "{}...",
            &sql[..sql
                .char_indices()
                .nth(160)
                .map(|c| c.0)
                .unwrap_or(sql.len())]
        )
    } else {
        sql.to_string()
    }
}

/// Whether an error is a lock conflict (`NOWAIT` refused, lock wait timeout, deadlock):
/// the statement can simply be tried again.
pub fn lock_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<mysql_async::Error>(),
            Some(mysql_async::Error::Server(s)) if s.code == 1205 || s.code == 1213
        )
    })
}

/// Runs a locking read (a `NOWAIT` statement) in a new transaction on each of `conns`,
/// leaving the transactions open, and returns all rows. It never waits for a lock while
/// holding its own: on a conflict it lets go of everything and tries again, so the copy
/// can never deadlock with the application (which, at worst, waits for one chunk).
pub async fn locked_read(
    conns: &mut [ShardConn],
    sql: &str,
    params: Vec<Value>,
) -> Result<Vec<Row>> {
    let mut backoff = std::time::Duration::from_millis(1);
    let mut tries = 0u32;
    'attempt: loop {
        let mut rows = Vec::new();
        for i in 0..conns.len() {
            conns[i].run("BEGIN").await?;
            match conns[i].exec(sql, params.clone()).await {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    for c in conns.iter_mut().take(i + 1) {
                        let _ = c.run("ROLLBACK").await;
                    }
                    tries += 1;
                    if !lock_busy(&e) || tries > 10_000 {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(50));
                    continue 'attempt;
                }
            }
        }
        return Ok(rows);
    }
}

/// Runs DDL on a table the application may be using without stalling it or failing its
/// transactions. DDL waits for the table's metadata lock, and while it waits every new
/// statement on the table queues behind it; worse, a transaction that read the table and
/// then writes it while the DDL waits to upgrade its lock closes a cycle, which the
/// server breaks by failing the transaction (1213: the DDL weighs more). So the DDL first
/// never waits (`lock_wait_timeout = 0`: it takes the lock when no transaction holds the
/// table, or fails at once), tried again every few milliseconds for [`DDL_NOWAIT_FOR`];
/// only a table that was never free in that time gets tries that wait up to a second,
/// each, up to a minute in all.
pub async fn ddl(c: &mut ShardConn, sql: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let mut tries = 0u64;
    loop {
        let nowait = started.elapsed() < DDL_NOWAIT_FOR;
        let timeout = if nowait { 0 } else { 1 };
        let r = c
            .run(&format!(
                "SET STATEMENT lock_wait_timeout = {timeout} FOR {sql}"
            ))
            .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e)
                if server_code(&e) == Some(1205)
                    && started.elapsed() < std::time::Duration::from_secs(60) =>
            {
                tries += 1;
                if nowait {
                    // 2-9 ms, varying so the tries do not keep step with the application.
                    let ms = 2 + (tries * 7 + started.elapsed().subsec_micros() as u64) % 8;
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                } else {
                    tracing::info!(shard = %c.shard, "DDL waiting for the application's transactions: {}", short(sql));
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long [`ddl`] tries without waiting before it waits for the table.
pub const DDL_NOWAIT_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The MySQL error code of a failed statement, if it came from the server.
pub fn server_code(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<mysql_async::Error>() {
            Some(mysql_async::Error::Server(s)) => Some(s.code),
            _ => None,
        })
}

/// Quotes an identifier.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A column as copied.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The full type (`varchar(32)`), with character set and collation for text.
    pub definition: String,
    /// The server numbers new rows in it (`AUTO_INCREMENT`).
    pub auto_increment: bool,
}

/// What the controller knows about a table.
#[derive(Debug, Clone)]
pub struct TableMeta {
    pub name: String,
    /// Stored columns (generated columns are recomputed by the target).
    pub columns: Vec<Column>,
    pub primary_key: Vec<Column>,
    /// The table has a unique key besides the primary key: rows are written with a
    /// delete by primary key and a plain INSERT, never REPLACE (which would silently
    /// delete another row holding the same unique value).
    pub unique_secondary: bool,
}

impl TableMeta {
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn pk_list(&self) -> String {
        self.primary_key
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Positions of the primary key columns in [`TableMeta::columns`].
    pub fn pk_indexes(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .filter_map(|c| self.column_index(&c.name))
            .collect()
    }

    /// `WHERE` text for "primary key after the given one" (expanded, so indexes are used).
    pub fn after_key(&self, prefix: &str) -> String {
        let cols: Vec<String> = self
            .primary_key
            .iter()
            .map(|c| format!("{prefix}{}", ident(&c.name)))
            .collect();
        let mut ors = Vec::new();
        for i in 0..cols.len() {
            let mut ands: Vec<String> = cols[..i].iter().map(|c| format!("{c} = ?")).collect();
            ands.push(format!("{} > ?", cols[i]));
            ors.push(format!("({})", ands.join(" AND ")));
        }
        format!("({})", ors.join(" OR "))
    }

    /// The parameters for [`TableMeta::after_key`].
    pub fn after_key_params(&self, key: &[Value]) -> Vec<Value> {
        let mut out = Vec::new();
        for i in 0..key.len() {
            out.extend(key[..=i].iter().cloned());
        }
        out
    }

    /// `WHERE` text for "primary key at most the given one".
    pub fn up_to_key(&self) -> String {
        let cols: Vec<String> = self.primary_key.iter().map(|c| ident(&c.name)).collect();
        let mut ors = Vec::new();
        for i in 0..cols.len() {
            let mut ands: Vec<String> = cols[..i].iter().map(|c| format!("{c} = ?")).collect();
            let op = if i + 1 == cols.len() { "<=" } else { "<" };
            ands.push(format!("{} {op} ?", cols[i]));
            ors.push(format!("({})", ands.join(" AND ")));
        }
        format!("({})", ors.join(" OR "))
    }

    /// `(pk) = (?, ?)` for one key.
    /// The primary-key values of a full row (columns in `columns` order).
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.primary_key
            .iter()
            .map(|k| {
                self.column_index(&k.name)
                    .and_then(|i| row.get(i).cloned())
                    .unwrap_or(Value::NULL)
            })
            .collect()
    }

    pub fn key_equals(&self, prefix: &str) -> String {
        self.primary_key
            .iter()
            .map(|c| format!("{prefix}{} = ?", ident(&c.name)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// The key range `(lo, hi]` (either side open) as SQL and parameters.
pub fn key_range(
    meta: &TableMeta,
    lo: &Option<Vec<Value>>,
    hi: &Option<Vec<Value>>,
) -> (String, Vec<Value>) {
    let mut conds = vec!["1".to_string()];
    let mut params = Vec::new();
    if let Some(lo) = lo {
        conds.push(meta.after_key(""));
        params.extend(meta.after_key_params(lo));
    }
    if let Some(hi) = hi {
        conds.push(meta.up_to_key());
        params.extend(meta.after_key_params(hi));
    }
    (conds.join(" AND "), params)
}

/// The base tables of a shard database.
pub async fn tables(c: &mut ShardConn) -> Result<Vec<String>> {
    let db = c.database.clone();
    let rows = c
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            vec![db.into()],
        )
        .await?;
    Ok(rows.into_iter().map(|r| text(&r, 0)).collect())
}

/// A table's stored columns and primary key.
pub async fn table_meta(c: &mut ShardConn, table: &str) -> Result<TableMeta> {
    let db = c.database.clone();
    let rows = c
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            vec![db.clone().into(), table.into()],
        )
        .await?;
    let mut columns = Vec::new();
    for r in &rows {
        let extra = text(r, 4).to_ascii_uppercase();
        if extra.contains("GENERATED")
            || extra.contains("VIRTUAL")
            || extra.contains("PERSISTENT")
            || extra.contains("STORED")
        {
            continue;
        }
        let mut definition = text(r, 1);
        let cs = text(r, 2);
        let coll = text(r, 3);
        if !cs.is_empty() {
            definition.push_str(&format!(" CHARACTER SET {cs}"));
        }
        if !coll.is_empty() {
            definition.push_str(&format!(" COLLATE {coll}"));
        }
        columns.push(Column {
            name: text(r, 0),
            definition,
            auto_increment: extra.contains("AUTO_INCREMENT"),
        });
    }
    let pk_rows = c
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            vec![db.into(), table.into()],
        )
        .await?;
    let mut primary_key = Vec::new();
    for r in &pk_rows {
        let name = text(r, 0);
        if let Some(col) = columns.iter().find(|c| c.name == name) {
            primary_key.push(col.clone());
        }
    }
    let unique = c
        .exec(
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME <> 'PRIMARY' AND NON_UNIQUE = 0",
            vec![c.database.clone().into(), table.into()],
        )
        .await?;
    Ok(TableMeta {
        name: table.to_string(),
        columns,
        primary_key,
        unique_secondary: unique.first().map(|r| int(r, 0)).unwrap_or(0) > 0,
    })
}

/// The estimated row count of a table.
pub async fn row_estimate(c: &mut ShardConn, table: &str) -> Result<u64> {
    let db = c.database.clone();
    let rows = c
        .exec(
            "SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            vec![db.into(), table.into()],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.as_ref(0).cloned())
        .map(|v| match v {
            Value::Int(i) => i.max(0) as u64,
            Value::UInt(u) => u,
            Value::Bytes(b) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
            _ => 0,
        })
        .unwrap_or(0))
}

/// Column `i` of a row as text.
pub fn text(r: &Row, i: usize) -> String {
    match r.as_ref(i) {
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::NULL) | None => String::new(),
        Some(v) => v.as_sql(true).trim_matches('\'').to_string(),
    }
}

/// A column value as an integer.
pub fn int(r: &Row, i: usize) -> u64 {
    match r.as_ref(i) {
        Some(Value::Int(v)) => (*v).max(0) as u64,
        Some(Value::UInt(v)) => *v,
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

/// A row's values.
pub fn values(r: Row) -> Vec<Value> {
    r.unwrap()
}

/// A value as a vindex reads it.
pub fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::NULL => SqlValue::Null,
        Value::Int(i) => SqlValue::Int(*i),
        Value::UInt(u) => SqlValue::UInt(*u),
        Value::Float(f) => SqlValue::Float(*f as f64),
        Value::Double(f) => SqlValue::Float(*f),
        Value::Bytes(b) => SqlValue::Bytes(b.clone()),
        other => SqlValue::Bytes(other.as_sql(true).trim_matches('\'').as_bytes().to_vec()),
    }
}

/// A key value for a checkpoint.
pub fn key_value(v: &Value) -> KeyValue {
    match v {
        Value::Int(i) => KeyValue::Int(*i),
        Value::UInt(u) => KeyValue::Uint(*u),
        Value::Float(f) => KeyValue::Float(*f as f64),
        Value::Double(f) => KeyValue::Float(*f),
        Value::Bytes(b) => KeyValue::Hex(shardgate_topology::keyrange::hex(b)),
        other => KeyValue::Hex(shardgate_topology::keyrange::hex(
            other.as_sql(true).trim_matches('\'').as_bytes(),
        )),
    }
}

/// A checkpointed key value back as a parameter.
pub fn param(k: &KeyValue) -> Value {
    match k {
        KeyValue::Int(i) => Value::Int(*i),
        KeyValue::Uint(u) => Value::UInt(*u),
        KeyValue::Float(f) => Value::Double(*f),
        KeyValue::Hex(h) => {
            Value::Bytes(shardgate_topology::keyrange::unhex(h).unwrap_or_default())
        }
    }
}

/// Most placeholders one statement may carry.
const MAX_PARAMS: usize = 60_000;

/// Rows per multi-row write statement. Every full batch has the same text, so each
/// connection prepares it once and reuses it (only a chunk's last, shorter batch is
/// prepared anew): preparing a statement of thousands of placeholders costs the server
/// about as much as running it.
const BATCH_ROWS: usize = 250;

/// Rows per write statement for a table of `ncols` columns (see [`BATCH_ROWS`]).
pub fn batch_rows(ncols: usize) -> usize {
    (MAX_PARAMS / ncols.max(1)).clamp(1, BATCH_ROWS)
}

/// REPLACEs `rows` (values in `meta.columns` order) into the table, in statements of
/// [`batch_rows`] rows.
pub async fn replace_rows(c: &mut ShardConn, meta: &TableMeta, rows: &[Vec<Value>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ncols = meta.columns.len().max(1);
    let per = batch_rows(ncols);
    let one = format!("({})", vec!["?"; ncols].join(", "));
    for part in rows.chunks(per) {
        let values = vec![one.as_str(); part.len()].join(", ");
        let params: Vec<Value> = part.iter().flat_map(|r| r.iter().cloned()).collect();
        if !meta.unique_secondary {
            // Only the primary key can conflict: REPLACE is exactly "this row, now".
            let sql = format!(
                "REPLACE INTO {} ({}) VALUES {values}",
                ident(&meta.name),
                meta.column_list()
            );
            c.exec(&sql, params).await?;
            continue;
        }
        let keys: Vec<Vec<Value>> = part.iter().map(|r| meta.key_of(r)).collect();
        delete_keys(c, meta, &keys).await?;
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {values}",
            ident(&meta.name),
            meta.column_list()
        );
        if let Err(e) = c.exec(&sql, params).await {
            let duplicate = e.chain().any(|cause| {
                matches!(cause.downcast_ref::<mysql_async::Error>(),
                    Some(mysql_async::Error::Server(s)) if s.code == 1062)
            });
            if duplicate {
                return Err(anyhow::Error::new(UniqueCollision {
                    table: meta.name.clone(),
                    shard: c.shard.clone(),
                    detail: format!("{e:#}"),
                }));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Rows of different sources hold the same value of a unique secondary key: the target
/// cannot hold both, and overwriting one would lose it. The workflow stops.
#[derive(Debug, thiserror::Error)]
#[error("table {table}: rows from different source shards hold the same value of a unique key, which target shard {shard} cannot hold both of; nothing was overwritten and the workflow stops (make the values unique, or do not merge these shards): {detail}")]
pub struct UniqueCollision {
    pub table: String,
    pub shard: String,
    pub detail: String,
}

/// What about `table` change capture cannot follow, as refusals: foreign keys (a cascade
/// changes rows without firing triggers, so the targets would miss it) and triggers of
/// the application (they would not be copied, and capture installs its own).
pub async fn unsupported_links(c: &mut ShardConn, table: &str) -> Result<Vec<String>> {
    let db = c.database.clone();
    let mut problems = Vec::new();
    let fks = c
        .exec(
            "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND (TABLE_NAME = ? OR REFERENCED_TABLE_NAME = ?)",
            vec![db.clone().into(), table.into(), table.into()],
        )
        .await?;
    for r in &fks {
        problems.push(format!(
            "{table}: foreign key {} ({} references {}); cascades do not fire the change capture's triggers, so drop the foreign key first",
            text(r, 0),
            text(r, 1),
            text(r, 2)
        ));
    }
    let triggers = c
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?",
            vec![db.into(), table.into()],
        )
        .await?;
    for r in &triggers {
        problems.push(format!(
            "{table}: trigger {} of the application (it would not be copied with the rows, and change capture needs the table's triggers); drop it first",
            text(r, 0)
        ));
    }
    Ok(problems)
}

/// Deletes the rows with the given primary keys.
pub async fn delete_keys(c: &mut ShardConn, meta: &TableMeta, keys: &[Vec<Value>]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let nk = meta.primary_key.len().max(1);
    let per = (MAX_PARAMS / nk).max(1);
    let one = format!("({})", meta.key_equals(""));
    for part in keys.chunks(per) {
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            ident(&meta.name),
            vec![one.as_str(); part.len()].join(" OR ")
        );
        let params: Vec<Value> = part.iter().flat_map(|r| r.iter().cloned()).collect();
        c.exec(&sql, params).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pk: &[&str]) -> TableMeta {
        let col = |n: &str| Column {
            name: n.to_string(),
            definition: "int".into(),
            auto_increment: false,
        };
        TableMeta {
            name: "t".into(),
            columns: vec![col("a"), col("b"), col("c")],
            primary_key: pk.iter().map(|n| col(n)).collect(),
            unique_secondary: false,
        }
    }

    #[test]
    fn key_ranges_expand_composite_keys() {
        let m = meta(&["a", "b"]);
        assert_eq!(m.after_key(""), "((`a` > ?) OR (`a` = ? AND `b` > ?))");
        assert_eq!(m.up_to_key(), "((`a` < ?) OR (`a` = ? AND `b` <= ?))");
        let p = m.after_key_params(&[Value::Int(1), Value::Int(2)]);
        assert_eq!(p, vec![Value::Int(1), Value::Int(1), Value::Int(2)]);
        assert_eq!(m.key_equals("t."), "t.`a` = ? AND t.`b` = ?");
        assert_eq!(m.pk_indexes(), vec![0, 1]);
        assert_eq!(meta(&["a"]).after_key(""), "((`a` > ?))");
    }

    #[test]
    fn write_batches_have_one_size_within_the_placeholder_limit() {
        assert_eq!(batch_rows(4), BATCH_ROWS);
        assert_eq!(batch_rows(0), BATCH_ROWS);
        assert_eq!(batch_rows(1_000), 60);
        assert_eq!(batch_rows(100_000), 1);
        assert!(batch_rows(300) * 300 <= MAX_PARAMS);
    }

    #[test]
    fn checkpoint_values_round_trip() {
        for v in [
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Bytes(b"k\x00\xff".to_vec()),
        ] {
            assert_eq!(param(&key_value(&v)), v);
        }
    }
}
