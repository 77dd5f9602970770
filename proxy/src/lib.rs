//! shardgate: a sharded MySQL proxy.
//!
//! Modules follow the life of a query: [`wire`] decodes the client's commands,
//! [`session`] keeps per-connection state, [`planner`] turns a statement into a plan (pure,
//! cached), [`engine`] executes plans against shards through [`backend`] pools, and
//! [`server`] accepts connections. [`topo`] keeps the topology snapshot current and
//! [`http`] serves metrics and the status page.

pub mod backend;
pub mod context;
pub mod deadlock;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod planner;
pub mod querylog;
pub mod registry;
pub mod schema;
pub mod security;
pub mod server;
pub mod session;
pub mod status;
pub mod topo;
pub mod wire;
