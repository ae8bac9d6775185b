//! Arbitrary datagrams as STUN messages (docs/PROTOCOL.md §10.6): a node
//! reading a probe's answer, a relay answering a request. The body lives
//! in `pos_p2p_tests::fuzzing` so that `cargo test` replays this target's
//! corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::stun(data);
});
