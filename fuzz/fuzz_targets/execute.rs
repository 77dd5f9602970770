//! COM_STMT_EXECUTE parameters: parsing, rendering each value as a literal in several character sets, re-encoding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardgate_proxy::fuzz::execute(data);
});
