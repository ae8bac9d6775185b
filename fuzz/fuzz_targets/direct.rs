//! Arbitrary datagrams as direct-path packets (docs/PROTOCOL.md §10.9):
//! the pings and pongs relayed peers send each other's addresses. The
//! body lives in `pos_p2p_tests::fuzzing` so that `cargo test` replays
//! this target's corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::direct(data);
});
