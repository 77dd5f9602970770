//! Protocol packet decoders: handshake response and greeting, OK, ERR, EOF, column definitions, auth switch.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardgate_proxy::fuzz::packets(data);
});
