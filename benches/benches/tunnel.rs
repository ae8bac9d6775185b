//! Criterion benchmarks of the Tunnel in memory: sealing and opening
//! full-size messages (both directions), beside the raw AEAD of the same
//! cipher (ring's AES-256-GCM) to show what the tunnel adds; and whole
//! handshakes per second.
//!
//! `cargo bench -p pos-p2p-benches --bench tunnel`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pos_p2p_protocol::tunnel::{
    LibraryId, LibraryKeys, MAX_PLAINTEXT_LEN, NodePair, TunnelTransport, sealed_len,
};
use pos_p2p_protocol::{Identity, RemoteIdentity};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// A member's keys as an application holds them: made once, not per
/// handshake (deriving an ed25519 public key is a scalar multiplication).
struct Keys(Identity);

impl LibraryKeys for Keys {
    fn local_instance(&self, _: &LibraryId) -> Option<Identity> {
        Some(self.0.clone())
    }

    fn is_member(&self, _: &LibraryId, _: &RemoteIdentity) -> bool {
        true
    }
}

fn nodes() -> NodePair {
    NodePair {
        initiator: Identity::from_bytes(&[0xa1; 32]).to_remote_identity(),
        responder: Identity::from_bytes(&[0xb2; 32]).to_remote_identity(),
    }
}

fn handshake(keys: &[Keys; 2], seed: u8) -> (TunnelTransport, TunnelTransport) {
    let pair = pos_p2p_tests::tunnel_pair(
        nodes(),
        LibraryId::from_bytes([1; 16]),
        &keys[0],
        &keys[1],
        [[seed; 32], [seed.wrapping_add(1); 32]],
    );
    (pair.initiator, pair.responder)
}

fn throughput(c: &mut Criterion) {
    let keys = [1, 2].map(|n| Keys(Identity::from_bytes(&[n; 32])));
    let data = vec![0x5au8; MAX_PLAINTEXT_LEN];
    let mut group = c.benchmark_group("tunnel");
    group.throughput(Throughput::Bytes(MAX_PLAINTEXT_LEN as u64));

    let (mut a, mut b) = handshake(&keys, 1);
    let mut frame = vec![0u8; sealed_len(MAX_PLAINTEXT_LEN)];
    let mut plain = vec![0u8; MAX_PLAINTEXT_LEN];
    group.bench_function("seal_and_open_64KiB_a_to_b", |bench| {
        bench.iter(|| {
            let n = a.seal(black_box(&data), &mut frame).expect("seal");
            b.open(&frame[2..n], &mut plain).expect("open")
        })
    });
    group.bench_function("seal_and_open_64KiB_b_to_a", |bench| {
        bench.iter(|| {
            let n = b.seal(black_box(&data), &mut frame).expect("seal");
            a.open(&frame[2..n], &mut plain).expect("open")
        })
    });

    // The same cipher, raw: seal and open in place with ring.
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("key"));
    let mut counter = 0u64;
    let mut buf = data.clone();
    group.bench_function("raw_aes_256_gcm_seal_and_open_64KiB", |bench| {
        bench.iter(|| {
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            buf.truncate(MAX_PLAINTEXT_LEN);
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buf,
            )
            .expect("seal");
            let opened = key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
                .expect("open")
                .len();
            black_box(opened)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("tunnel_handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("both_sides_one_thread", |bench| {
        let mut seed = 0u8;
        bench.iter(|| {
            seed = seed.wrapping_add(2);
            black_box(handshake(&keys, seed))
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
