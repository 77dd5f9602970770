//! shardgate proxy library.
pub mod backend;
pub mod wire;
