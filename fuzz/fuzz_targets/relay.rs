//! A backend's answer relayed to a client (and read as one shard of a multi-shard result).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardgate_proxy::fuzz::relay(data);
});
