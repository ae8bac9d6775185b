//! The file transfer's messages from a peer (docs/PROTOCOL.md §11.3):
//! offers and answers decoded and re-encoded, the sender's checks of every
//! want, and the receiver against a sender that corrupts pieces. The body
//! lives in `pos_p2p_tests::fuzzing` so that `cargo test` replays this
//! target's corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pos_p2p_tests::fuzzing::transfer_messages(data);
});
