//! Sequences for the tables MoveTables takes into a sharded keyspace.
//!
//! A table whose key the server numbers (`AUTO_INCREMENT`) keeps doing so only where it
//! lives in one database: in a sharded keyspace new ids come from a sequence (a table of
//! an unsharded keyspace, Vitess's format, which every proxy reserves blocks of ids from).
//! So when `start` declares a moved table in a sharded target (a table the target's
//! VSchema did not name), and its vindex column is `AUTO_INCREMENT` on an unsharded
//! source, it also makes a sequence `<table>_seq` in the source keyspace (which stays
//! unsharded and keeps it after `complete`) and wires it to the table.
//!
//! Until the cutover clients reach the source, whose server numbers new rows. Each
//! forward cutover, with writes held and the source guarded, moves the sequence past
//! every id the source used ([`advance`]). A rollback needs nothing here: the rows made
//! on the targets meanwhile are written back with their ids, which moves the source's
//! own counter past them; the proxies drop the blocks of ids they reserved once the
//! routing rules change, so a second cutover never hands out an id the source used
//! after the rollback.

use super::db::{ident, ShardConn, TableMeta};
use anyhow::Result;
use mysql_async::Value;
use shardgate_topology::docs::{AutoIncrementDoc, KeyspaceDoc, TableDoc};

/// The sequence table of moved table `table` (within MariaDB's 64-character limit).
pub fn name(table: &str) -> String {
    let n = format!("{table}_seq");
    if n.len() <= 64 {
        n
    } else {
        format!("sg_seq_{:016x}", super::capture::fnv(table))
    }
}

/// The column a moved table numbers by itself and that shards it in the target, if a
/// sequence should take over: `AUTO_INCREMENT`, the first primary-key column (the one
/// MoveTables shards a table it declares by), and a source that can hold the sequence.
pub fn wanted(meta: &TableMeta, source_sharded: bool) -> Option<String> {
    let pk = meta.primary_key.first()?;
    (pk.auto_increment && !source_sharded).then(|| pk.name.clone())
}

/// Declares `<table>_seq` in the source's VSchema and wires it to `table` in the
/// target's. Pure, so the edit is tested on its own.
pub fn wire(
    source: &mut KeyspaceDoc,
    source_name: &str,
    target: &mut KeyspaceDoc,
    table: &str,
    column: &str,
) {
    let seq = name(table);
    source.tables.insert(
        seq.clone(),
        TableDoc {
            table_type: "sequence".into(),
            ..TableDoc::default()
        },
    );
    if let Some(t) = target.tables.get_mut(table) {
        t.auto_increment = Some(AutoIncrementDoc {
            column: column.to_string(),
            sequence: format!("{source_name}.{seq}"),
        });
    }
}

/// Creates the sequence's backing table on the source's (one) shard (idempotent).
pub async fn create(src: &mut ShardConn, table: &str) -> Result<()> {
    for sql in shardgate_topology::docs::sequence_table_sql(&name(table)) {
        src.run(&sql).await?;
    }
    Ok(())
}

/// Moves the sequence of `meta` past every id the source used: its counter and its
/// largest key. Run with writes held and the source guarded, before the flip.
pub async fn advance(src: &mut ShardConn, meta: &TableMeta, column: &str) -> Result<()> {
    let rows = src
        .exec(
            &format!(
                "SELECT GREATEST(COALESCE(MAX({c}), 0) + 1, COALESCE((SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?), 1)) FROM {t}",
                c = ident(column),
                t = ident(&meta.name)
            ),
            vec![Value::from(meta.name.as_str())],
        )
        .await?;
    let next = rows.first().map(|r| super::db::int(r, 0)).unwrap_or(1);
    src.exec(
        &format!(
            "UPDATE {} SET next_id = GREATEST(next_id, ?) WHERE id = 0",
            ident(&name(&meta.name))
        ),
        vec![Value::from(next)],
    )
    .await?;
    Ok(())
}

/// Drops the sequence tables an aborted workflow made.
pub async fn drop(src: &mut ShardConn, tables: &[String]) -> Result<()> {
    for t in tables {
        src.run(&format!("DROP TABLE IF EXISTS {}", ident(&name(t))))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reshard::db::Column;

    fn meta(auto: bool) -> TableMeta {
        let id = Column {
            name: "id".into(),
            definition: "bigint(20)".into(),
            auto_increment: auto,
        };
        TableMeta {
            name: "tickets".into(),
            columns: vec![id.clone()],
            primary_key: vec![id],
            unique_secondary: false,
        }
    }

    #[test]
    fn only_a_numbered_key_of_an_unsharded_source_gets_a_sequence() {
        assert_eq!(wanted(&meta(true), false).as_deref(), Some("id"));
        assert_eq!(wanted(&meta(false), false), None);
        assert_eq!(wanted(&meta(true), true), None);
    }

    #[test]
    fn the_sequence_is_declared_in_the_source_and_wired_in_the_target() {
        let mut source = KeyspaceDoc::default();
        let mut target = KeyspaceDoc::default();
        target.tables.insert("tickets".into(), TableDoc::default());
        wire(&mut source, "commerce", &mut target, "tickets", "id");
        assert_eq!(source.tables["tickets_seq"].table_type, "sequence");
        let ai = target.tables["tickets"].auto_increment.as_ref().unwrap();
        assert_eq!(
            (ai.column.as_str(), ai.sequence.as_str()),
            ("id", "commerce.tickets_seq")
        );
        assert!(name(&"x".repeat(64)).len() <= 64);
    }
}
