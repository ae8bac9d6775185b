//! Arbitrary frames a malicious relay sends a node, after a real TLS
//! handshake. The body lives in `pos_p2p_tests::fuzzing` so that
//! `cargo test` replays this target's corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::relay_client(data);
});
