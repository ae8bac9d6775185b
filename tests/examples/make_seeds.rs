//! Writes seed inputs for the fuzz targets that need real protocol bytes:
//! `node_datagrams` (whole dialer sessions recorded with deterministic
//! crypto, framed as the target's opcodes), `tunnel_responder` (an
//! initiator's side of a tunnel handshake) and `tunnel_transport` (sealed
//! messages), `node_streams` (stream operations), `relay_server`
//! (relay frames from three clients) and `relay_client` (frames a relay
//! sends a node). Run it when the handshakes change (a test says so):
//!
//! `cargo run -p pos-p2p-tests --example make_seeds`

use std::time::Duration;

fn main() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_datagrams");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::node_datagram_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
        println!("{name}: {} bytes", bytes.len());
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_streams");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::node_stream_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/relay_server");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::relay_server_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/relay_client");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::relay_client_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/direct");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::direct_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/transfer");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::transfer_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/transfer_messages");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in pos_p2p_tests::fuzzing::transfer_messages_seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
    tunnel_seeds();
    mdns_seeds();
}

/// What a discovery peer sends: its announcement, a browse query and its
/// goodbye, whole and framed as `mdns_packets` reads them.
fn mdns_seeds() {
    use pos_p2p_protocol::discovery::Discovery;
    use pos_p2p_tests::lan::Lan;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mdns_packets");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let start = std::time::Instant::now();
    let mut config = Lan::config(2);
    config.service = pos_p2p_protocol::discovery::service_type("fuzz");
    let mut peer = Discovery::new(config, start);
    peer.set_addrs(start, vec!["192.0.2.2:4433".parse().expect("address")]);
    let announcement = peer.poll_transmit().expect("announcement").payload;
    peer.handle_timeout(start + Duration::from_millis(200));
    let query = peer.poll_transmit().expect("query").payload;
    peer.shutdown();
    let goodbye = peer.poll_transmit().expect("goodbye").payload;
    let frame = |packets: &[(&[u8], u8)]| {
        let mut out = Vec::new();
        for (packet, flags) in packets {
            out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            out.push(*flags);
            out.extend_from_slice(packet);
        }
        out
    };
    let seeds = [
        ("seed-announcement", announcement.clone()),
        ("seed-query", query.clone()),
        (
            "seed-lifecycle",
            frame(&[(&announcement, 2), (&query, 1), (&query, 4), (&goodbye, 40)]),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
    }
}

/// The initiator's bytes of the fuzz targets' own handshake, and messages
/// sealed after it, as `tunnel_responder` and `tunnel_transport` expect.
fn tunnel_seeds() {
    use pos_p2p_protocol::tunnel::sealed_len;
    use pos_p2p_tests::fuzzing::{FUZZ_LIBRARY, TunnelKeys, fuzz_nodes};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let pair = pos_p2p_tests::tunnel_pair(
        fuzz_nodes(),
        FUZZ_LIBRARY,
        &TunnelKeys::instance(1),
        &TunnelKeys::instance(2),
        [[5; 32], [6; 32]],
    );
    let (all_to_r, mut tx) = (pair.initiator_bytes, pair.initiator);
    let dir = root.join("tunnel_responder");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, chunk) in [
        ("seed-whole", 63u8),
        ("seed-bytewise", 0),
        ("seed-hello-only", 63),
    ] {
        let mut seed = vec![chunk];
        if name == "seed-hello-only" {
            seed.extend_from_slice(&all_to_r[..21]);
        } else {
            seed.extend_from_slice(&all_to_r);
        }
        std::fs::write(dir.join(name), &seed).expect("write");
    }
    let dir = root.join("tunnel_transport");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut stream = Vec::new();
    let mut frame = vec![0u8; sealed_len(300)];
    for len in [1usize, 16, 300] {
        let n = tx.seal(&vec![0x5a; len], &mut frame).expect("seal");
        stream.extend_from_slice(&frame[..n]);
    }
    std::fs::write(dir.join("seed-messages"), &stream).expect("write");
    // The same messages, the end, and a frame after the end.
    let n = tx.seal_end(&mut frame).expect("end");
    stream.extend_from_slice(&frame[..n]);
    std::fs::write(dir.join("seed-end"), &stream).expect("write");
    stream.extend_from_slice(&frame[..n]);
    std::fs::write(dir.join("seed-after-end"), &stream).expect("write");
    std::fs::write(dir.join("seed-reject"), [0u8, 2, 2, 5]).expect("write");
    std::fs::write(dir.join("seed-short"), [0u8, 3, 1, 2, 3]).expect("write");
    println!("wrote tunnel seeds");
}
