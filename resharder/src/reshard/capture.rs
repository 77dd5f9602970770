//! Change capture: how writes reach the other side while a workflow runs.
//!
//! Every table of every shard in a workflow (sources and targets) gets three `AFTER`
//! triggers that append the primary key of each changed row to a capture table in the
//! `_shardgate` database of the same server, inside the writing transaction. The
//! controller's own connections set `@sg_replicating`, which the triggers skip, so copying
//! never echoes back. Applying the capture reads each logged key's current row on its side
//! and upserts it (or deletes it, when the row is gone) on the shard of the other side that
//! owns it, then removes the applied entries.
//!
//! This is the "dual-write" of docs/resharding.md, done by the database rather than the
//! proxies: no write can slip past it (not even one that bypasses the proxies), a write
//! costs one extra row insert on the same server, and the capture is durable, so a
//! controller killed at any point loses nothing.

use super::db::{ident, values, ShardConn, TableMeta, CAPTURE_DB};
use super::rows::Router;
use anyhow::Result;
use mysql_async::Value;
use std::collections::BTreeMap;

/// Entries applied per batch.
const BATCH: usize = 2000;

pub(super) fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn bounded(name: String, seed: &str) -> String {
    if name.len() <= 64 {
        name
    } else {
        format!("sg_{:016x}", fnv(seed))
    }
}

/// The capture table of `db`.`table` (in `_shardgate`).
pub fn capture_table(db: &str, table: &str) -> String {
    format!(
        "{}.{}",
        ident(CAPTURE_DB),
        ident(&bounded(format!("{db}__{table}"), &format!("{db}.{table}")))
    )
}

pub(super) fn trigger_name(kind: &str, table: &str) -> String {
    bounded(format!("sg_{kind}_{table}"), &format!("{kind}.{table}"))
}

/// Creates the capture table and triggers of a table (idempotent).
pub async fn install(c: &mut ShardConn, meta: &TableMeta) -> Result<()> {
    let cap = capture_table(&c.database, &meta.name);
    c.run(&format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        ident(CAPTURE_DB)
    ))
    .await?;
    let cols: Vec<String> = meta
        .primary_key
        .iter()
        .map(|k| format!("{} {} NULL", ident(&k.name), k.definition))
        .collect();
    c.run(&format!(
        "CREATE TABLE IF NOT EXISTS {cap} (sg_seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, {}) ENGINE=InnoDB",
        cols.join(", ")
    ))
    .await?;
    let names = meta.pk_list();
    let of = |row: &str| -> String {
        meta.primary_key
            .iter()
            .map(|k| format!("{row}.{}", ident(&k.name)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same = meta
        .primary_key
        .iter()
        .map(|k| format!("OLD.{0} <=> NEW.{0}", ident(&k.name)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let log = |row: &str| format!("INSERT INTO {cap} ({names}) VALUES ({})", of(row));
    let bodies = [
        ("ins", "INSERT", format!("{};", log("NEW"))),
        (
            "upd",
            "UPDATE",
            format!(
                "{}; IF NOT ({same}) THEN {}; END IF;",
                log("NEW"),
                log("OLD")
            ),
        ),
        ("del", "DELETE", format!("{};", log("OLD"))),
    ];
    let db = ident(&c.database);
    for (kind, event, body) in bodies {
        let name = ident(&trigger_name(kind, &meta.name));
        super::db::ddl(c, &format!("DROP TRIGGER IF EXISTS {db}.{name}")).await?;
        super::db::ddl(c, &format!(
            "CREATE TRIGGER {db}.{name} AFTER {event} ON {db}.{} FOR EACH ROW BEGIN IF @sg_replicating IS NULL THEN {body} END IF; END",
            ident(&meta.name)
        ))
        .await?;
    }
    super::guard::install(c, &meta.name).await
}

/// Drops a table's triggers and capture table (idempotent).
pub async fn remove(c: &mut ShardConn, table: &str) -> Result<()> {
    let db = ident(&c.database);
    for kind in ["ins", "upd", "del"] {
        super::db::ddl(
            c,
            &format!(
                "DROP TRIGGER IF EXISTS {db}.{}",
                ident(&trigger_name(kind, table))
            ),
        )
        .await?;
    }
    let cap = capture_table(&c.database, table);
    c.run(&format!("DROP TABLE IF EXISTS {cap}")).await?;
    Ok(())
}

/// Entries waiting in a table's capture on one shard.
pub async fn backlog(c: &mut ShardConn, table: &str) -> Result<u64> {
    let cap = capture_table(&c.database, table);
    let rows = c
        .exec(&format!("SELECT COUNT(*) FROM {cap}"), vec![])
        .await?;
    Ok(rows.first().map(|r| super::db::int(r, 0)).unwrap_or(0))
}

/// Applies one batch of `from`'s capture of `meta` to the `to` shards (routed by
/// `router`). Returns the entries applied (0: the capture is empty).
pub async fn apply_batch(
    from: &mut ShardConn,
    to: &mut [ShardConn],
    meta: &TableMeta,
    router: &Router,
) -> Result<usize> {
    let cap = capture_table(&from.database, &meta.name);
    let nk = meta.primary_key.len();
    let join = meta
        .primary_key
        .iter()
        .map(|k| format!("t.{0} = c.{0}", ident(&k.name)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let row_cols = meta
        .columns
        .iter()
        .map(|c| format!("t.{}", ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let key_cols = meta
        .primary_key
        .iter()
        .map(|k| format!("c.{}", ident(&k.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let first_pk = ident(&meta.primary_key[0].name);
    let sql = format!(
        "SELECT c.sg_seq, t.{first_pk} IS NOT NULL, {key_cols}, {row_cols} FROM {cap} c LEFT JOIN {} t ON {join} ORDER BY c.sg_seq LIMIT {BATCH}",
        ident(&meta.name)
    );
    // Appliers of one capture serialize on a named lock of the source server: two
    // controllers (one that lost its etcd lock without knowing yet) never interleave a
    // read of the latest rows with the other's write of older ones.
    // MariaDB limits lock names to 64 characters: the name is hashed on the server.
    let lock = format!("sg_apply/{}/{}", from.database, meta.name);
    let got = from
        .exec(
            "SELECT GET_LOCK(CONCAT('sga/', MD5(?)), 30)",
            vec![Value::from(lock.as_str())],
        )
        .await?;
    if got.first().map(|r| super::db::int(r, 0)) != Some(1) {
        anyhow::bail!("another controller is applying the captured changes of {} (lock {lock}); is a second controller running?", meta.name);
    }
    let applied = apply_locked(from, to, meta, router, &sql, &cap, nk).await;
    let released = from
        .exec(
            "SELECT RELEASE_LOCK(CONCAT('sga/', MD5(?)))",
            vec![Value::from(lock.as_str())],
        )
        .await;
    let n = applied?;
    released?;
    Ok(n)
}

async fn apply_locked(
    from: &mut ShardConn,
    to: &mut [ShardConn],
    meta: &TableMeta,
    router: &Router,
    sql: &str,
    cap: &str,
    nk: usize,
) -> Result<usize> {
    let rows = from.exec(sql, vec![]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut seqs = Vec::with_capacity(rows.len());
    // Latest state per key (one read, so duplicates agree).
    let mut present: BTreeMap<Vec<u8>, Vec<Value>> = BTreeMap::new();
    let mut gone: BTreeMap<Vec<u8>, Vec<Value>> = BTreeMap::new();
    for r in rows {
        let mut v = values(r);
        let seq = v[0].clone();
        let exists = matches!(v[1], Value::Int(1) | Value::UInt(1));
        let key: Vec<Value> = v[2..2 + nk].to_vec();
        let id = key_id(&key);
        let row: Vec<Value> = v.split_off(2 + nk);
        seqs.push(seq);
        if exists {
            gone.remove(&id);
            present.insert(id, row);
        } else {
            present.remove(&id);
            gone.insert(id, key);
        }
    }
    let mut per_shard: Vec<Vec<Vec<Value>>> = vec![Vec::new(); to.len()];
    for row in present.into_values() {
        for i in router.route(&row)? {
            per_shard[i].push(row.clone());
        }
    }
    let gone: Vec<Vec<Value>> = gone.into_values().collect();
    let writes = to.iter_mut().zip(&per_shard).map(|(c, rows)| async {
        super::db::replace_rows(c, meta, rows).await?;
        super::db::delete_keys(c, meta, &gone).await
    });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    let n = seqs.len();
    for part in seqs.chunks(10_000) {
        let sql = format!(
            "DELETE FROM {cap} WHERE sg_seq IN ({})",
            vec!["?"; part.len()].join(", ")
        );
        from.exec(&sql, part.to_vec()).await?;
    }
    Ok(n)
}

/// A comparable identity of a key.
fn key_id(key: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in key {
        let s = v.as_sql(true);
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}
