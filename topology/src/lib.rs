//! The shardgate cluster model, shared by the proxy and the resharder.
//!
//! * [`keyrange`]: keyspace ids and half-open key ranges (`-80`, `80-c0`, `c0-`).
//! * [`vindex`]: functions from column values to keyspace ids, bit-compatible with Vitess.
//! * [`docs`]: the JSON documents stored in etcd, as operators edit them.
//! * [`snapshot`]: a validated, immutable topology built from all documents at one revision.
//! * [`store`]: the etcd client: load, watch, compare-and-swap writes, leases.

pub mod docs;
pub mod keyrange;
pub mod snapshot;
pub mod store;
pub mod vindex;

pub use keyrange::{KeyRange, KeyspaceId};
pub use snapshot::{Keyspace, Shard, Snapshot, Table, TableKind, TopoProblem, TopoProblems};
pub use store::{Store, StoreError};
pub use vindex::{SqlValue, Vindex};
