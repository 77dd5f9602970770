//! Everything a client sends on a new connection: handshake response, then commands, served by the proxy's connection loop.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardgate_proxy::fuzz::client(data);
});
