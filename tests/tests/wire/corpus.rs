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
fn stun_corpus() {
    replay("stun", fuzzing::stun);
}

#[test]
fn the_stun_seeds_are_the_committed_corpus() {
    let files = pos_p2p_tests::corpus("stun");
    for (name, bytes) in fuzzing::stun_seeds() {
        assert!(
            files.iter().any(|(n, b)| n == name && *b == bytes),
            "fuzz/corpus/stun/{name} is missing or stale"
        );
    }
}

#[test]
fn direct_corpus() {
    replay("direct", fuzzing::direct);
}

#[test]
fn the_direct_seeds_are_the_committed_corpus() {
    let files = pos_p2p_tests::corpus("direct");
    for (name, bytes) in fuzzing::direct_seeds() {
        assert!(
            files.iter().any(|(n, b)| n == name && *b == bytes),
            "fuzz/corpus/direct/{name} is missing or stale"
        );
    }
}

#[test]
fn transfer_corpus() {
    replay("transfer", fuzzing::transfer);
}

#[test]
fn the_transfer_seeds_are_the_committed_corpus() {
    let files = pos_p2p_tests::corpus("transfer");
    for (name, bytes) in fuzzing::transfer_seeds() {
        assert!(
            files.iter().any(|(n, b)| n == name && *b == bytes),
            "fuzz/corpus/transfer/{name} is missing or stale"
        );
    }
}

#[test]
fn transfer_messages_corpus() {
    replay("transfer_messages", fuzzing::transfer_messages);
}

#[test]
fn the_transfer_messages_seeds_are_the_committed_corpus() {
    let files = pos_p2p_tests::corpus("transfer_messages");
    for (name, bytes) in fuzzing::transfer_messages_seeds() {
        assert!(
            files.iter().any(|(n, b)| n == name && *b == bytes),
            "fuzz/corpus/transfer_messages/{name} is missing or stale"
        );
    }
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
fn node_streams_corpus() {
    replay("node_streams", fuzzing::node_streams);
}

#[test]
fn the_stream_seeds_reach_each_stream_error_code() {
    use pos_p2p_protocol::node::{ReadOutcome, stream_code};
    let seeds = fuzzing::node_stream_seeds();
    let outcome = |name: &str| {
        let (_, seed) = seeds.iter().find(|(n, _)| *n == name).expect("seed");
        fuzzing::run_node_streams(seed)
    };
    assert_eq!(outcome("seed-good"), vec![Ok(ReadOutcome::Finished)]);
    assert_eq!(
        outcome("seed-unknown-operation"),
        vec![Ok(ReadOutcome::Reset(stream_code::UNKNOWN_OPERATION))]
    );
    assert_eq!(
        outcome("seed-malformed"),
        vec![Ok(ReadOutcome::Reset(stream_code::MALFORMED_HEADER))]
    );
    assert_eq!(
        outcome("seed-header-never-ends"),
        vec![Ok(ReadOutcome::Reset(stream_code::HEADER_TIMEOUT))]
    );
    let mixed = outcome("seed-mixed");
    assert!(mixed.len() >= 3, "{mixed:?}");
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
fn relay_server_corpus() {
    replay("relay_server", fuzzing::relay_server);
}

#[test]
fn relay_client_corpus() {
    replay("relay_client", fuzzing::relay_client);
}

#[test]
fn the_relay_client_seeds_end_as_they_should() {
    use pos_p2p_protocol::relay::RelayError;
    // Run each seed's frames and see how the client stands: the good ones
    // keep it, the others end it with the error they should.
    for (name, expected) in [
        ("seed-good", None),
        ("seed-good-in-pieces", None),
        ("seed-close", Some("Closed")),
        ("seed-node-only", Some("Protocol")),
        ("seed-too-long", Some("Protocol")),
    ] {
        let seeds = fuzzing::relay_client_seeds();
        let (_, seed) = seeds.iter().find(|(n, _)| *n == name).expect("seed");
        let error: Option<RelayError> = fuzzing::run_relay_client(seed);
        let kind = error.as_ref().map(|e| format!("{e:?}"));
        assert_eq!(
            kind.as_deref().map(|k| k.split('(').next().unwrap_or(k)),
            expected,
            "{name}: {error:?}"
        );
    }
}

#[test]
fn mdns_packets_corpus() {
    replay("mdns_packets", fuzzing::mdns_packets);
}

#[test]
fn the_recorded_session_seed_replays_to_a_connected_peer_and_its_streams() {
    use pos_p2p_protocol::node::{DisconnectReason, Event};
    let seeds = fuzzing::node_datagram_seeds();
    let (_, session) = &seeds[1];
    let events = fuzzing::run_node_datagrams(session);
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, Event::Connected(_))), 1, "{events:?}");
    assert_eq!(count(|e| matches!(e, Event::IncomingStream { .. })), 3);
    assert_eq!(count(|e| matches!(e, Event::MetadataUpdated { .. })), 1);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: DisconnectReason::ClosedByPeer { .. },
            ..
        }
    )));
}

#[test]
fn the_committed_node_seeds_are_current() {
    // Deterministic crypto makes a recording the same bytes every time:
    // a seed that no longer matches was made by older code, and would not
    // reach the connected state. Regenerate with
    // `cargo run -p pos-p2p-tests --example make_seeds`.
    let committed = pos_p2p_tests::corpus("node_datagrams");
    for (name, bytes) in fuzzing::node_datagram_seeds() {
        let file = committed.iter().find(|(n, _)| n == name);
        assert!(
            file.is_some_and(|(_, b)| *b == bytes),
            "fuzz/corpus/node_datagrams/{name} is stale: run the make_seeds example"
        );
    }
}

proptest::proptest! {
    /// A short fuzzing run on stable: the `transfer_messages` seeds with
    /// bytes changed, cut or added, so every side of the target sees
    /// nearby hostile input in every `cargo test`.
    #[test]
    fn transfer_messages_survive_mutated_seeds(
        seed in 0usize..5,
        changes in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..6),
        cut in proptest::prelude::any::<usize>(),
        extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
    ) {
        let seeds = fuzzing::transfer_messages_seeds();
        let mut bytes = seeds[seed % seeds.len()].1.clone();
        for (at, value) in changes {
            // The first byte picks the side: keep it.
            if bytes.len() > 1 {
                let at = 1 + at % (bytes.len() - 1);
                bytes[at] = value;
            }
        }
        bytes.truncate(1 + cut % bytes.len());
        bytes.extend_from_slice(&extra);
        fuzzing::transfer_messages(&bytes);
    }
}
