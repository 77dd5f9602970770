//! `shardctl` and the resharding controller.
//!
//! * [`local`]: local clusters (`shardctl up` / `down`), also used by the integration tests.
//! * [`cli`]: the command-line interface.

pub mod cli;
pub mod local;
