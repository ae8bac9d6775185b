//! Arbitrary bytes read by a relay's client connections. The body lives in
//! `pos_p2p_tests::fuzzing` so that `cargo test` replays this target's
//! corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::relay_server(data);
});
