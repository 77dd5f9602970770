//! Backend connections.
pub mod conn;
pub mod pool;
pub mod relay;
