//! The relay's figures (issue 12): relayed against direct on this machine
//! (bulk throughput, request/response latency), the relay's forwarding
//! capacity on one core, and its memory per idle client.
//!
//! ```text
//! cargo run --release -p pos-p2p-benches --bin relay
//! cargo run -p pos-p2p-benches --bin relay -- --smoke   # CI: tiny, correctness only
//! cargo run --release -p pos-p2p-benches --features iroh --bin relay   # with iroh's relay
//! ```
//!
//! With the `iroh` feature, iroh's relay (`iroh-relay` in development
//! mode, two iroh endpoints with no IP transport) runs the same bulk and
//! request/response measurements in the same rounds: the anchor.
//!
//! Direct and relayed alternate, round by round (D R D R ...), on fresh
//! node pairs, and the medians are reported: a figure that changed with run
//! order would show as a wide min–max.

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::{Identity, P2P, P2PConfig, PathKind, Peer, RelayStatus};
use pos_p2p_protocol::relay::{RelayClient, RelayClientEvent, RelayConfig, RelayEndpoint};
use pos_p2p_relay::Relay;

#[cfg(feature = "iroh")]
mod iroh_side;

/// Counts live heap bytes, for the memory figure.
#[global_allocator]
static ALLOC: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

fn live() -> isize {
    ALLOC.allocated() as isize
}

#[derive(Debug, Parser)]
struct Args {
    /// Tiny sizes, one round: checks the scenarios work; numbers mean
    /// nothing.
    #[arg(long)]
    smoke: bool,
    /// Rounds per scenario.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bulk transfer size in MiB.
    #[arg(long, default_value_t = 256)]
    bulk_mib: usize,
    /// Sequential requests per latency sample.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Datagrams through the relay's state machine for the capacity figure.
    #[arg(long, default_value_t = 200_000)]
    datagrams: usize,
    /// Idle clients for the memory figure.
    #[arg(long, default_value_t = 1000)]
    idle_clients: usize,
}

/// `Sink`: count what arrives, answer the count; `Ping`: answer `pong`.
#[derive(Debug, Clone, Copy)]
enum Op {
    Sink,
    Ping,
}

impl Header for Op {
    fn encode(&self, w: &mut Writer) {
        w.tag(match self {
            Op::Sink => 1,
            Op::Ping => 2,
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag()? {
            1 => Ok(Op::Sink),
            2 => Ok(Op::Ping),
            tag => Err(r.unknown_tag("Op", tag)),
        }
    }
}

async fn serve(p2p: Arc<P2P>) {
    while let Some(mut stream) = p2p.accept().await {
        tokio::spawn(async move {
            match Op::from_stream(&mut stream).await {
                Ok(Op::Sink) => {
                    let mut buf = vec![0; 256 << 10];
                    let mut total = 0u64;
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = stream.write_all(&total.to_be_bytes()).await;
                }
                Ok(Op::Ping) => {
                    let _ = stream.write_all(b"pong").await;
                }
                Err(_) => return,
            }
            let _ = stream.close().await;
        });
    }
}

fn config(seed: u8) -> P2PConfig {
    P2PConfig::new(
        Identity::from_bytes(&[seed; 32]),
        "relay-bench",
        Version::new(1, 0, 0),
    )
    .expect("config")
    .listen(["127.0.0.1:0".parse().expect("addr")])
    .discovery(false)
    // The relayed figures are the relay's: the pair must not go direct.
    .hole_punching(false)
}

/// A fresh pair: the server `a` and the client's handle on it, reached
/// directly or through `relay`.
async fn pair(relayed: Option<&Relay>, seed: u8) -> (Arc<P2P>, Arc<P2P>, Peer) {
    let a = P2P::new(config(seed)).expect("a");
    let b = P2P::new(config(seed.wrapping_add(1))).expect("b");
    tokio::spawn(serve(a.clone()));
    let peer = match relayed {
        Some(relay) => {
            a.add_relay(relay.relay_addr()).expect("relay");
            while !a
                .relays()
                .iter()
                .any(|(_, s)| matches!(s, RelayStatus::Connected { .. }))
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            b.add_peer_via_relay(a.local_identity(), relay.relay_addr())
                .expect("relayed peer")
        }
        None => b.add_peer(a.local_identity(), a.listen_addrs()[0]),
    };
    // Connected before anything is timed.
    ping(&peer).await;
    let path = peer.stats().expect("connected").path;
    assert_eq!(
        matches!(path, PathKind::Relayed(_)),
        relayed.is_some(),
        "{path:?}"
    );
    (a, b, peer)
}

async fn ping(peer: &Peer) {
    let mut stream = peer.open(&Op::Ping).await.expect("stream");
    stream.close().await.expect("close");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("reply");
    assert_eq!(reply, b"pong");
}

async fn bulk(peer: &Peer, bytes: usize) -> Duration {
    let chunk = vec![0x5a; 1 << 20];
    let started = Instant::now();
    let mut stream = peer.open(&Op::Sink).await.expect("stream");
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        stream.write_all(&chunk[..n]).await.expect("write");
        sent += n;
    }
    stream.close().await.expect("close");
    let mut reply = [0; 8];
    stream.read_exact(&mut reply).await.expect("count");
    assert_eq!(
        u64::from_be_bytes(reply),
        bytes as u64,
        "every byte arrived"
    );
    started.elapsed()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let args = Args::parse();
    let (rounds, bulk_mib, requests, datagrams, idle) = if args.smoke {
        (1, 2, 20, 2_000, 20)
    } else {
        (
            args.rounds,
            args.bulk_mib,
            args.requests,
            args.datagrams,
            args.idle_clients,
        )
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // Limits out of the way: the figure is the path's, not the rate
        // limit's.
        let mut relay_config = RelayConfig::default();
        relay_config.bytes_per_second = u32::MAX;
        relay_config.burst = u32::MAX;
        relay_config.queue_bytes = 4 << 20;
        let relay =
            Relay::serve(listener, &Identity::from_bytes(&[0xee; 32]), relay_config).expect("relay");
        let mut throughput = [Vec::new(), Vec::new()];
        let mut latency = [Vec::new(), Vec::new()];
        let mut p99 = [Vec::new(), Vec::new()];
        #[cfg(feature = "iroh")]
        let iroh_relay = iroh_side::IrohRelay::start().await.expect("iroh relay");
        #[cfg(feature = "iroh")]
        let mut iroh = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // iroh's relay first in every round, then direct and relayed.
            #[cfg(feature = "iroh")]
            {
                let pair = iroh_side::Pair::start(&iroh_relay).await.expect("iroh pair");
                assert!(pair.relayed_only(), "iroh goes through its relay");
                let took = pair.bulk(bulk_mib << 20).await.expect("iroh bulk");
                iroh.0.push((bulk_mib << 20) as f64 / took.as_secs_f64() / 1e6);
                let mut rtts = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let started = Instant::now();
                    pair.request().await.expect("iroh request");
                    rtts.push(started.elapsed().as_secs_f64() * 1e6);
                }
                rtts.sort_by(f64::total_cmp);
                iroh.1.push(rtts[rtts.len() / 2]);
                iroh.2.push(rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)]);
                pair.shutdown().await;
            }
            for (i, relayed) in [None, Some(&relay)].into_iter().enumerate() {
                let (a, b, peer) = pair(relayed, 10 + 4 * round as u8 + 2 * i as u8).await;
                let took = bulk(&peer, bulk_mib << 20).await;
                throughput[i].push((bulk_mib << 20) as f64 / took.as_secs_f64() / 1e6);
                if std::env::var_os("RELAY_BENCH_DEBUG").is_some() {
                    eprintln!("{i}: {:?} {:?} {:?}", peer.stats(), b.stats(), a.stats());
                }
                let mut rtts = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let started = Instant::now();
                    ping(&peer).await;
                    rtts.push(started.elapsed().as_secs_f64() * 1e6);
                }
                rtts.sort_by(f64::total_cmp);
                latency[i].push(rtts[rtts.len() / 2]);
                p99[i].push(rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)]);
                a.shutdown().await;
                b.shutdown().await;
            }
        }
        println!("| scenario | direct | relayed | relayed / direct |");
        println!("| --- | --- | --- | --- |");
        let row = |name: &str, unit: &str, v: &[Vec<f64>; 2]| {
            let (d, dmin, dmax) = median(v[0].clone());
            let (r, rmin, rmax) = median(v[1].clone());
            println!(
                "| {name} | {d:.1} {unit} ({dmin:.1}–{dmax:.1}) | {r:.1} {unit} ({rmin:.1}–{rmax:.1}) | {:.2}× |",
                r / d
            );
        };
        row(&format!("bulk {bulk_mib} MiB, MB/s"), "", &throughput);
        row("request/response, median µs", "", &latency);
        row("request/response, p99 µs", "", &p99);
        relay.shutdown().await;
        #[cfg(feature = "iroh")]
        {
            println!();
            println!("| scenario | pos-p2p relayed | iroh relayed (dev mode) | pos-p2p / iroh |");
            println!("| --- | --- | --- | --- |");
            let row = |name: &str, pos: &[f64], iroh: &[f64]| {
                let (p, pmin, pmax) = median(pos.to_vec());
                let (i, imin, imax) = median(iroh.to_vec());
                println!(
                    "| {name} | {p:.1} ({pmin:.1}–{pmax:.1}) | {i:.1} ({imin:.1}–{imax:.1}) | {:.2}× |",
                    p / i
                );
            };
            row(&format!("bulk {bulk_mib} MiB, MB/s"), &throughput[1], &iroh.0);
            row("request/response, median µs", &latency[1], &iroh.1);
            row("request/response, p99 µs", &p99[1], &iroh.2);
            iroh_relay.shutdown().await;
        }
    });
    capacity(datagrams);
    memory(idle);
}

/// Connect a client with identity `seed` from `from` to an in-memory
/// relay endpoint, through the handshake.
fn connect(
    relay: &mut RelayEndpoint,
    now: Instant,
    seed: [u8; 32],
    from: std::net::SocketAddr,
    max_queued: usize,
) -> (RelayClient, pos_p2p_protocol::relay::ConnId) {
    let relay_id = Identity::from_bytes(&[0xee; 32]).to_remote_identity();
    let node = Identity::from_bytes(&seed);
    let link = pos_p2p_tests::relay_link::connect(relay, now, &node, relay_id, from, max_queued);
    assert!(link.client.is_connected(), "{:?}", link.error);
    (link.client, link.conn)
}

/// Datagrams a second the relay's whole logic (TLS both ways, frames,
/// forwarding) handles on one core, timed on the relay's calls only.
fn capacity(datagrams: usize) {
    let now = Instant::now();
    let mut config = RelayConfig::default();
    config.bytes_per_second = u32::MAX;
    config.burst = u32::MAX;
    config.queue_bytes = 8 << 20;
    let mut relay = RelayEndpoint::new(&Identity::from_bytes(&[0xee; 32]), config).expect("relay");
    let addr = |n: u8| std::net::SocketAddr::from(([10, 0, 0, n], 4000));
    let (mut a, ca) = connect(&mut relay, now, [1; 32], addr(1), 8 << 20);
    let (mut b, cb) = connect(&mut relay, now, [2; 32], addr(2), 8 << 20);
    let to = Identity::from_bytes(&[2; 32]).to_remote_identity();
    let datagram = Bytes::from(vec![0x5a; 1200]);
    let mut relay_time = Duration::ZERO;
    let mut received = 0;
    let batch = 64;
    let mut up = Vec::new();
    let mut down = Vec::new();
    for _ in 0..datagrams.div_ceil(batch) {
        for _ in 0..batch {
            assert!(a.send_datagram(to, datagram.clone()));
        }
        up.clear();
        a.poll_write(&mut up);
        let started = Instant::now();
        relay.handle_bytes(now, ca, &up);
        down.clear();
        while let Some(c) = relay.poll_ready() {
            if c == cb {
                relay.poll_write(c, &mut down);
            } else {
                relay.poll_write(c, &mut Vec::new());
            }
        }
        relay_time += started.elapsed();
        b.handle_bytes(&down).expect("b reads");
        while let Some(event) = b.poll_event() {
            if matches!(event, RelayClientEvent::Datagram { .. }) {
                received += 1;
            }
        }
    }
    let sent = datagrams.div_ceil(batch) * batch;
    assert_eq!(received, sent, "every datagram was forwarded");
    let per_second = sent as f64 / relay_time.as_secs_f64();
    println!(
        "\nforwarding capacity (one core, 1,200-byte datagrams, TLS in and out): {:.0} datagrams/s, {:.0} MB/s of datagrams",
        per_second,
        per_second * 1200.0 / 1e6
    );
    let _ = cb;
}

/// Heap the relay holds per connected, idle client.
fn memory(clients: usize) {
    let now = Instant::now();
    let before = live();
    let mut relay = RelayEndpoint::new(&Identity::from_bytes(&[0xee; 32]), RelayConfig::default())
        .expect("relay");
    let empty = live();
    let mut links = Vec::with_capacity(clients);
    for i in 0..clients {
        // Distinct identities: a seed derived from the client's number.
        let mut seed = [7; 32];
        seed[..4].copy_from_slice(&(i as u32).to_be_bytes());
        let from = std::net::SocketAddr::from(([10, 0, 0, 1], 4000 + i as u16));
        links.push(connect(&mut relay, now, seed, from, 64 << 10).0);
    }
    assert_eq!(relay.stats().clients, clients);
    // What is left once the clients' side is gone is the relay's.
    drop(links);
    let full = live();
    println!(
        "relay memory: {} KiB empty, {:.1} KiB per connected idle client ({} clients)",
        (empty - before) / 1024,
        (full - empty) as f64 / clients as f64 / 1024.0,
        clients
    );
    drop(relay);
}
