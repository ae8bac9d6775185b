//! The sans-IO Tunnel over the sans-IO node on the in-memory network:
//! handshake, then 64 MiB each way, all in virtual time.

use std::time::Duration;

use pos_p2p_protocol::Identity;
use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::{ReadOutcome, StreamId};
use pos_p2p_protocol::tunnel::{
    FrameReader, LibraryId, LibraryKeys, MAX_PLAINTEXT_LEN, NodePair, TunnelHandshake, sealed_len,
};
use pos_p2p_tests::sim::{Link, Sim};

struct Keys {
    me: Identity,
    members: Vec<RemoteIdentity>,
}

const LIBRARY: LibraryId = LibraryId::from_bytes([0x33; 16]);

impl LibraryKeys for Keys {
    fn local_instance(&self, library: &LibraryId) -> Option<Identity> {
        (*library == LIBRARY).then(|| self.me.clone())
    }

    fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool {
        *library == LIBRARY && self.members.contains(instance)
    }
}

/// Write all of `data` to a stream, stepping the network while blocked.
fn write(sim: &mut Sim, node: usize, stream: StreamId, mut data: &[u8]) {
    while !data.is_empty() {
        match sim.nodes[node].node.write(stream, data) {
            Ok(n) => data = &data[n..],
            Err(_) => assert!(sim.step(), "network stalled"),
        }
    }
}

/// Whatever has arrived on a stream (possibly nothing).
fn read(sim: &mut Sim, node: usize, stream: StreamId) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(ReadOutcome::Data(bytes)) = sim.nodes[node].node.read(stream, usize::MAX) {
        out.extend_from_slice(&bytes);
    }
    out
}

#[test]
fn sixty_four_mib_each_way_through_a_tunnel_on_the_in_memory_network() {
    let mut sim = Sim::new(40, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let members = vec![
        Identity::from_bytes(&[11; 32]).to_remote_identity(),
        Identity::from_bytes(&[12; 32]).to_remote_identity(),
    ];
    let ka = Keys {
        me: Identity::from_bytes(&[11; 32]),
        members: members.clone(),
    };
    let kb = Keys {
        me: Identity::from_bytes(&[12; 32]),
        members,
    };
    let nodes = NodePair {
        initiator: sim.id(a),
        responder: sim.id(b),
    };

    let sa = sim.open_stream(a, b).unwrap();
    let mut ha = TunnelHandshake::initiator(nodes, LIBRARY, &ka, [1; 32]).unwrap();
    let mut hb = TunnelHandshake::responder(nodes, [2; 32]);
    let mut out = Vec::new();
    ha.take_output(&mut out);
    write(&mut sim, a, sa, &out);
    let sb = sim.accept_stream(b, Duration::from_secs(5)).unwrap();
    let (mut pending_a, mut pending_b) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        if ha.is_done() && hb.is_done() {
            break;
        }
        sim.step();
        pending_b.extend(read(&mut sim, b, sb));
        let used = hb.handle_input(&pending_b, &kb).unwrap();
        pending_b.drain(..used);
        out.clear();
        hb.take_output(&mut out);
        write(&mut sim, b, sb, &out);
        pending_a.extend(read(&mut sim, a, sa));
        let used = ha.handle_input(&pending_a, &ka).unwrap();
        pending_a.drain(..used);
        out.clear();
        ha.take_output(&mut out);
        write(&mut sim, a, sa, &out);
    }
    let (mut ta, info) = ha.into_transport().unwrap();
    let (mut tb, _) = hb.into_transport().unwrap();
    assert_eq!(
        info.remote_instance,
        Identity::from_bytes(&[12; 32]).to_remote_identity()
    );

    // 64 MiB each way, interleaved, with integrity checks. Writes never
    // block the test: what flow control refuses waits in `outbox` while the
    // network runs and both sides read.
    const LEN: usize = 64 << 20;
    let mut frame = vec![0u8; sealed_len(MAX_PLAINTEXT_LEN)];
    let mut plain = vec![0u8; MAX_PLAINTEXT_LEN];
    let (mut ra, mut rb) = (FrameReader::new(), FrameReader::new());
    let (mut outbox_a, mut outbox_b) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut sent, mut got_a, mut got_b) = (0usize, 0usize, 0usize);
    let (mut hash_sent, mut hash_got_a, mut hash_got_b) = (0u64, 0u64, 0u64);
    let chunk: Vec<u8> = (0..MAX_PLAINTEXT_LEN).map(|i| (i * 31) as u8).collect();
    let mix = |h: u64, data: &[u8]| data.iter().fold(h, |h, &b| h.rotate_left(5) ^ u64::from(b));
    let deadline = sim.now + Duration::from_secs(600);
    while got_a < LEN || got_b < LEN {
        assert!(sim.now < deadline, "transfer stalled at {got_a}/{got_b}");
        // Seal more while the outboxes are short.
        while sent < LEN && outbox_a.len() < (1 << 20) && outbox_b.len() < (1 << 20) {
            let n = MAX_PLAINTEXT_LEN.min(LEN - sent);
            let piece = &chunk[..n];
            hash_sent = mix(hash_sent, piece);
            let m = ta.seal(piece, &mut frame).unwrap();
            outbox_a.extend_from_slice(&frame[..m]);
            let m = tb.seal(piece, &mut frame).unwrap();
            outbox_b.extend_from_slice(&frame[..m]);
            sent += n;
        }
        for (node, stream, outbox) in [(a, sa, &mut outbox_a), (b, sb, &mut outbox_b)] {
            if let Ok(n) = sim.nodes[node].node.write(stream, outbox) {
                outbox.drain(..n);
            }
        }
        sim.step();
        for (node, stream, reader, transport, got, hash) in [
            (b, sb, &mut rb, &mut tb, &mut got_b, &mut hash_got_b),
            (a, sa, &mut ra, &mut ta, &mut got_a, &mut hash_got_a),
        ] {
            let bytes = read(&mut sim, node, stream);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (used, done) = reader.push(rest);
                rest = &rest[used..];
                if done {
                    let n = transport.open(reader.frame(), &mut plain).unwrap();
                    *hash = mix(*hash, &plain[..n]);
                    *got += n;
                    reader.clear();
                }
            }
        }
    }
    assert_eq!((got_a, got_b), (LEN, LEN));
    assert_eq!(hash_got_b, hash_sent, "a to b intact");
    assert_eq!(hash_got_a, hash_sent, "b to a intact");
}
