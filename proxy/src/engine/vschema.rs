//! The VSchema changes DDL makes: registering tables that CREATE TABLE adds to a sharded
//! keyspace (and their sequences), unregistering what DROP TABLE removes. Written to etcd
//! with compare-and-swap; the statement returns once this proxy applied the change.

use super::Exec;
use crate::error::ProxyError;
use crate::planner::ddl::VschemaChange;
use shardgate_topology::docs::KeyspaceDoc;
use shardgate_topology::store::{Expect, StoreError, Write};
use shardgate_topology::Keyspace;
use std::time::{Duration, Instant};

impl Exec<'_> {
    pub(super) async fn apply_vschema(
        &mut self,
        ks: &Keyspace,
        change: &VschemaChange,
    ) -> Result<(), ProxyError> {
        if let VschemaChange::Register {
            sequence: Some((seq_ks, seq_table)),
            ..
        } = change
        {
            self.create_sequence_table(seq_ks, seq_table).await?;
        }
        let store = self.ctx.store.as_ref().ok_or_else(|| {
            ProxyError::Internal(
                "no topology store: cannot register the table in the VSchema".into(),
            )
        })?;
        let mut attempts = 0;
        let revision = loop {
            attempts += 1;
            let base = store
                .load()
                .await
                .map_err(|e| ProxyError::Internal(e.to_string()))?;
            let writes = vschema_writes(&base, ks, change)?;
            if writes.is_empty() {
                return Ok(());
            }
            match store.commit_validated(&base, &writes).await {
                Ok(rev) => break rev,
                Err(StoreError::Conflict { .. }) if attempts < 5 => continue,
                Err(e) => return Err(ProxyError::Internal(format!("updating the VSchema: {e}"))),
            }
        };
        // Return once this proxy plans with the new VSchema.
        let start = Instant::now();
        while self.ctx.snapshot().revision < revision && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn create_sequence_table(
        &mut self,
        keyspace: &str,
        table: &str,
    ) -> Result<(), ProxyError> {
        let ks = self.keyspace(keyspace)?.clone();
        let shard = ks
            .single_shard()
            .ok_or_else(|| ProxyError::NoServingShards(keyspace.to_string()))?;
        let label = format!("{keyspace}/{}", shard.name);
        let mut conn = self
            .ctx
            .backends
            .pool(shard, 45, 0)
            .get()
            .await
            .map_err(|e| ProxyError::from_backend(&label, e))?;
        for sql in shardgate_topology::docs::sequence_table_sql(table) {
            conn.execute(&sql)
                .await
                .map_err(|e| ProxyError::from_backend(&label, e))?;
        }
        Ok(())
    }
}

fn doc_of(
    base: &shardgate_topology::store::Loaded,
    keyspace: &str,
) -> Result<(KeyspaceDoc, i64), ProxyError> {
    let key = format!("keyspaces/{keyspace}");
    let e = base
        .get(&key)
        .ok_or_else(|| ProxyError::UnknownDatabase(keyspace.to_string()))?;
    let doc = serde_json::from_slice(&e.value)
        .map_err(|e| ProxyError::Internal(format!("{key}: {e}")))?;
    Ok((doc, e.mod_revision))
}

fn put(keyspace: &str, doc: &KeyspaceDoc, rev: i64) -> Write {
    Write::Put {
        key: format!("keyspaces/{keyspace}"),
        value: serde_json::to_vec_pretty(doc).unwrap_or_default(),
        expect: Expect::Revision(rev),
    }
}

/// The etcd writes that make `change` (empty when it is already in place).
fn vschema_writes(
    base: &shardgate_topology::store::Loaded,
    ks: &Keyspace,
    change: &VschemaChange,
) -> Result<Vec<Write>, ProxyError> {
    use shardgate_topology::docs::{AutoIncrementDoc, ColumnVindexDoc, TableDoc, VindexDoc};
    let (mut doc, rev) = doc_of(base, &ks.name)?;
    let mut writes = Vec::new();
    match change {
        VschemaChange::Register {
            table,
            column,
            vindex,
            sequence,
        } => {
            if doc.tables.contains_key(table) {
                return Ok(writes);
            }
            if !doc.vindexes.contains_key(vindex) {
                doc.vindexes.insert(
                    vindex.clone(),
                    VindexDoc {
                        vindex_type: vindex.clone(),
                        ..VindexDoc::default()
                    },
                );
            }
            doc.tables.insert(
                table.clone(),
                TableDoc {
                    column_vindexes: vec![ColumnVindexDoc {
                        column: column.clone(),
                        name: vindex.clone(),
                        ..ColumnVindexDoc::default()
                    }],
                    auto_increment: sequence.as_ref().map(|(sk, st)| AutoIncrementDoc {
                        column: column.clone(),
                        sequence: format!("{sk}.{st}"),
                    }),
                    auto_registered: true,
                    ..TableDoc::default()
                },
            );
            if let Some((sk, st)) = sequence {
                let (mut sdoc, srev) = doc_of(base, sk)?;
                sdoc.tables.insert(
                    st.clone(),
                    TableDoc {
                        table_type: "sequence".into(),
                        auto_registered: true,
                        ..TableDoc::default()
                    },
                );
                writes.push(put(sk, &sdoc, srev));
            }
            writes.push(put(&ks.name, &doc, rev));
        }
        VschemaChange::Unregister { tables } => {
            let mut sequences = Vec::new();
            for t in tables {
                if let Some(td) = doc.tables.remove(t) {
                    if let Some(ai) = td.auto_increment {
                        sequences.push(ai.sequence);
                    }
                }
            }
            writes.push(put(&ks.name, &doc, rev));
            for seq in sequences {
                if let Some((sk, st)) = seq.split_once('.') {
                    if let Ok((mut sdoc, srev)) = doc_of(base, sk) {
                        if sdoc.tables.get(st).is_some_and(|t| t.auto_registered) {
                            sdoc.tables.remove(st);
                            writes.push(put(sk, &sdoc, srev));
                        }
                    }
                }
            }
        }
    }
    Ok(writes)
}
