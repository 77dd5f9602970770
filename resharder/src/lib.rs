//! shardctl library.
