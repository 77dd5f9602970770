//! End-to-end tests against real etcd, MariaDB and shardgate processes. One test binary
//! with a module per area; each test starts (and always stops) its own cluster.

mod apps;
mod clients;
mod foundation;
mod hostile;
mod joins;
mod ledger;
mod local_cluster;
mod moves;
mod movetables;
mod observability;
mod pressure;
mod privileges;
mod races;
mod resharding;
mod routing;
mod security;
mod sessions;
mod topology;
mod tpcc;
