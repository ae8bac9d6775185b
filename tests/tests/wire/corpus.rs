//! Replays every file of the fuzz corpora on stable, so CI catches a
//! regression that a fuzzing session once found.

use pos_p2p_tests::{corpus, fuzzing};

fn replay(target: &str, body: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        files.iter().any(|(name, _)| name.starts_with("seed-")),
        "the {target} corpus has no committed seeds"
    );
    for (name, bytes) in &files {
        let result = std::panic::catch_unwind(|| body(bytes));
        assert!(result.is_ok(), "{target} corpus file {name} failed");
    }
}

#[test]
fn frame_header_corpus() {
    replay("frame_header", fuzzing::frame_and_header);
}

#[test]
fn metadata_corpus() {
    replay("metadata", fuzzing::metadata);
}

#[test]
fn node_datagrams_corpus() {
    replay("node_datagrams", fuzzing::node_datagrams);
}

#[test]
fn tunnel_responder_corpus() {
    replay("tunnel_responder", fuzzing::tunnel_responder);
}

#[test]
fn tunnel_transport_corpus() {
    replay("tunnel_transport", fuzzing::tunnel_transport);
}

#[test]
fn mdns_packets_corpus() {
    replay("mdns_packets", fuzzing::mdns_packets);
}
