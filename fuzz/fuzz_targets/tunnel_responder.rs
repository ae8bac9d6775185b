//! Arbitrary bytes into a Tunnel responder's handshake. The body lives in
//! `pos_p2p_tests::fuzzing` so that `cargo test` replays the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::tunnel_responder(data);
});
