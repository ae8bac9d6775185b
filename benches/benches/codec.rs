//! Criterion benchmarks of the wire toolkit's hot paths: encoding stream
//! headers and decoding a stream of frames incrementally.
//!
//! `cargo bench -p pos-p2p-benches --bench codec`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pos_p2p_protocol::Metadata;
use pos_p2p_protocol::codec::{FrameDecoder, Header};
use pos_p2p_tests::ExampleHeader;

fn headers() -> Vec<(&'static str, ExampleHeader)> {
    vec![
        ("ping", ExampleHeader::Ping),
        (
            "file",
            ExampleHeader::File {
                id: [7; 16],
                range: 4096..1_048_576,
            },
        ),
        (
            "sync",
            ExampleHeader::Sync {
                library: [9; 16],
                ops: (0..32).map(|i| i * 1_000_003).collect(),
                note: Some("nightly sync".into()),
            },
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_encode");
    for (name, header) in headers() {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| b.iter(|| black_box(&header).to_bytes()));
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    // 1,000 frames of mixed headers, delivered in 1,500-byte chunks (one
    // datagram's worth) as a QUIC stream would hand them over.
    let frames: Vec<_> = headers().into_iter().map(|(_, h)| h.to_bytes()).collect();
    let mut stream = Vec::new();
    for i in 0..1_000 {
        stream.extend_from_slice(&frames[i % frames.len()]);
    }
    let mut group = c.benchmark_group("frame_decode");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("1000_frames_bytes", |b| {
        b.iter(|| decode_all(&stream, 1500))
    });
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("1000_frames_count", |b| {
        b.iter(|| decode_all(&stream, 1500))
    });
    group.bench_function("1000_frames_and_headers", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new();
            let mut count = 0;
            for chunk in stream.chunks(1500) {
                let mut input = chunk;
                while !input.is_empty() {
                    let decoded = decoder.decode(input).expect("valid stream");
                    input = &input[decoded.consumed..];
                    if let Some(frame) = decoded.frame {
                        black_box(ExampleHeader::from_frame_body(&frame).expect("valid header"));
                        count += 1;
                    }
                }
            }
            assert_eq!(count, 1_000);
        })
    });
    group.finish();

    let mut metadata = Metadata::new();
    for (k, v) in [
        ("name", "Oscar's laptop"),
        ("os", "linux"),
        ("device_model", "X1"),
        ("version", "1.2.3"),
    ] {
        metadata.insert(k, v).expect("valid metadata");
    }
    let bytes = metadata.to_bytes();
    let mut group = c.benchmark_group("metadata");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_4_entries", |b| {
        b.iter(|| Metadata::from_bytes(black_box(&bytes)).expect("valid"))
    });
    group.finish();
}

fn decode_all(stream: &[u8], chunk: usize) -> usize {
    let mut decoder = FrameDecoder::new();
    let mut count = 0;
    for chunk in stream.chunks(chunk) {
        let mut input = chunk;
        while !input.is_empty() {
            let decoded = decoder.decode(input).expect("valid stream");
            input = &input[decoded.consumed..];
            count += usize::from(decoded.frame.is_some());
        }
    }
    assert_eq!(count, 1_000);
    count
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
