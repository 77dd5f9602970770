//! SQL text in a client character set: lossless decoding, normalization, statement splitting and planning on both keyspaces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardgate_proxy::fuzz::sql(data);
});
