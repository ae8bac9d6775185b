//! Peer input to the file transfer's building blocks (docs/PROTOCOL.md
//! §11): paths checked as a receiver checks them, outboards and groups
//! verified against a claimed hash. The body lives in
//! `pos_p2p_tests::fuzzing` so that `cargo test` replays this target's
//! corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::transfer(data);
});
