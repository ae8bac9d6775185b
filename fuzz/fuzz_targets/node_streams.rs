//! Stream operations with arbitrary headers on a live connection between
//! two nodes, checking the stream error codes end to end. The body lives
//! in `pos_p2p_tests::fuzzing` so that `cargo test` replays this target's
//! corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::node_streams(data);
});
