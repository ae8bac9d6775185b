//! What one hostile datagram costs a node (the flood findings' case E):
//! `Node::handle_datagram` plus draining what it wants to send, for each
//! kind of garbage an attacker on the link can send, each from one source
//! address and from ever new ones. No sockets; one thread.
//!
//! `cargo bench -p pos-p2p-benches --bench garbage`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pos_p2p_protocol::node::Node;
use pos_p2p_tests::sim::{Sim, payload};

/// Random bytes with the QUIC fixed bit set, short header.
fn short_header(len: usize, seed: u64) -> Vec<u8> {
    let mut data = payload(seed, len);
    data[0] = 0x40 | (data[0] & 0x3f);
    data
}

/// A 1,200-byte long-header Initial of QUIC v1 with a random body: the
/// node must derive Initial keys and try to decrypt it.
fn initial(seed: u64) -> Vec<u8> {
    let mut data = payload(seed, 1200);
    data[0] = 0xc0 | (data[0] & 0x0f);
    data[1..5].copy_from_slice(&1u32.to_be_bytes());
    data[5] = 8; // DCID length
    data[14] = 8; // SCID length
    data[23] = 0; // token length
    data[24] = 0x44; // length, two-byte varint: 1,100
    data[25] = 0x4c;
    data
}

/// A 1,200-byte long header of an unknown QUIC version: asks for version
/// negotiation.
fn unknown_version(seed: u64) -> Vec<u8> {
    let mut data = initial(seed);
    data[1..5].copy_from_slice(&0x0a0a_0a0a_u32.to_be_bytes());
    data
}

/// Makes the `n`th datagram of a kind.
type Maker = fn(u64) -> Vec<u8>;

fn node() -> Node {
    Node::new(Sim::config(1), Instant::now()).expect("node")
}

fn garbage(c: &mut Criterion) {
    let kinds: [(&str, Maker); 4] = [
        ("random_64_bytes", |s| payload(s, 64)),
        ("short_header_unknown_connection_1200_bytes", |s| {
            short_header(1200, s)
        }),
        ("initial_v1_random_body_1200_bytes", initial),
        ("unknown_version_1200_bytes", unknown_version),
    ];
    let mut group = c.benchmark_group("garbage_datagram");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, make) in kinds {
        let datagrams: Vec<Vec<u8>> = (0..256).map(make).collect();
        for (sources, label) in [(1u32, "one_source"), (u32::MAX, "new_sources")] {
            let mut node = node();
            let start = Instant::now();
            let mut i = 0u64;
            let mut buf = Vec::new();
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter_batched(
                    || {
                        i += 1;
                        let ip = (i as u32 % sources).to_be_bytes();
                        let from = SocketAddr::from(([10, ip[1], ip[2], ip[3]], 4433));
                        let data = BytesMut::from(&datagrams[i as usize % datagrams.len()][..]);
                        // Time moves 1 µs per datagram: a million a second.
                        (start + Duration::from_micros(i), from, data)
                    },
                    |(now, from, data)| {
                        node.handle_datagram(now, from, None, None, data);
                        while let Some(t) = node.poll_transmit(now, 1, &mut buf) {
                            let _sent = black_box(t);
                        }
                        while let Some(e) = node.poll_event() {
                            black_box(e);
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
            black_box(node.stats());
        }
    }
    group.finish();
}

criterion_group!(benches, garbage);
criterion_main!(benches);
