//! Criterion benchmarks of the sans-IO node, with no sockets: two nodes on
//! the in-memory network moving a stream through QUIC and TLS, and the CPU
//! cost of a whole connection setup (QUIC + TLS + Hello exchange).
//!
//! `cargo bench -p pos-p2p-benches --bench node`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pos_p2p_tests::sim::{Link, Sim, payload};

fn link() -> Link {
    Link {
        latency: Duration::from_micros(50),
        ..Link::lan()
    }
}

fn stream(c: &mut Criterion) {
    const SIZE: usize = 8 << 20;
    let data = payload(1, SIZE);
    let mut group = c.benchmark_group("node");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("stream_8MiB_through_two_cores", |b| {
        b.iter(|| {
            let mut sim = Sim::new(1, link());
            let a = sim.add_node(Sim::config(1));
            let z = sim.add_node(Sim::config(2));
            sim.connect(a, z);
            assert!(sim.run_until_connected(a, z));
            let stream = sim.open_stream(a, z).expect("open");
            sim.write_all(a, stream, &data).expect("write");
            let remote = sim
                .accept_stream(z, Duration::from_secs(10))
                .expect("incoming");
            let got = sim
                .read_to_end(z, remote, Duration::from_secs(60))
                .expect("read");
            assert_eq!(got.len(), SIZE);
            black_box(got);
        })
    });
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("connect_quic_tls_hello", |b| {
        b.iter(|| {
            let mut sim = Sim::new(1, link());
            let a = sim.add_node(Sim::config(1));
            let z = sim.add_node(Sim::config(2));
            sim.connect(a, z);
            assert!(sim.run_until_connected(a, z));
        })
    });
    group.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
