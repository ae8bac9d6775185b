//! Writes seed inputs for the `node_datagrams` fuzz target: real handshake
//! datagrams captured on the in-memory network, framed as the target's
//! opcodes. Run once when the handshake changes:
//!
//! `cargo run -p pos-p2p-tests --example make_node_seeds`

use std::time::Duration;

use pos_p2p_tests::sim::{Link, Sim};

fn main() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_datagrams");
    std::fs::create_dir_all(&dir).expect("corpus dir");

    // Capture what node 2 (dialing node 1, the fuzzed node) sends.
    let mut sim = Sim::new(1, Link::lan());
    let fuzzed = sim.add_node(Sim::config(1));
    let dialer = sim.add_node(Sim::config(2));
    sim.connect(dialer, fuzzed);
    let mut from_dialer = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..4 {
        let now = sim.now;
        while let Some(t) = sim.nodes[dialer].node.poll_transmit(now, 1, &mut buf) {
            from_dialer.push(buf[..t.size].to_vec());
            let addr = sim.nodes[dialer].addr;
            sim.nodes[fuzzed].node.handle_datagram(
                now,
                addr,
                None,
                None,
                bytes::BytesMut::from(&buf[..t.size]),
            );
        }
        while let Some(t) = sim.nodes[fuzzed].node.poll_transmit(now, 1, &mut buf) {
            let addr = sim.nodes[fuzzed].addr;
            sim.nodes[dialer].node.handle_datagram(
                now,
                addr,
                None,
                None,
                bytes::BytesMut::from(&buf[..t.size]),
            );
        }
        sim.now += Duration::from_millis(1);
    }

    let frame = |datagrams: &[Vec<u8>]| {
        let mut out = Vec::new();
        for d in datagrams {
            out.push(0u8); // datagram from peer 0 (127.0.1.2, the dialer's address)
            out.extend_from_slice(&(d.len() as u16).to_be_bytes());
            out.extend_from_slice(d);
            out.extend_from_slice(&[2, 1]); // 10 ms pass
        }
        out
    };
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-initial", frame(&from_dialer[..1])),
        ("seed-handshake", frame(&from_dialer)),
        ("seed-dial-and-wait", vec![3, 2, 255, 2, 255, 2, 255]),
        ("seed-garbage", vec![0, 0, 8, 0xc0, 0, 0, 0, 1, 8, 1, 2]),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
        println!("{name}: {} bytes", bytes.len());
    }
    println!("captured {} datagrams from the dialer", from_dialer.len());
}
