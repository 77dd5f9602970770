//! `shardctl` and the resharding controller.
//!
//! * [`local`]: local clusters (`shardctl up` / `down`), also used by the integration tests.
//! * [`cli`]: the command-line interface.
//! * [`reshard`]: the online resharding controller.

pub mod cli;
pub mod local;
pub mod reshard;
