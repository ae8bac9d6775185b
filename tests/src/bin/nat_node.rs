//! The programs of the real-NAT test (`tests/tests/nat.rs`), each run in a
//! network namespace behind nftables masquerading:
//!
//! ```text
//! nat_node relay <listen>
//!     run a relay (TCP, and UDP address probes) at <listen>, its rate
//!     limit lifted; prints `relay <IDENTITY@ADDR>`; runs until killed.
//! nat_node serve <seed> <relay>
//!     a node that uses <relay>; prints `ready <identity>`, then counts the
//!     bytes of every stream it is sent and answers with the count;
//!     prints `direct <peer-addr>` when a peer goes direct.
//! nat_node reach <seed> <relay> <peer> <mib>
//!     a node that reaches <peer> knowing only its identity and relay:
//!     sends <mib> MiB on one stream opened over the relayed connection,
//!     prints `direct <addr> <ms>` when the peer goes direct (ms since it
//!     first asked for the peer), `first <bytes> <relayed-datagrams>` when
//!     the first stream's count comes back, then sends <mib> MiB more on a
//!     new stream and prints `second <bytes> <relayed-datagrams>`.
//! nat_node bench <rounds>
//!     the benchmark of the time from first dial to a direct path: builds
//!     the real-NAT lab (`pos_p2p_tests::netns::NatLab`; needs root and
//!     nft) <rounds> times, runs `relay`, `serve` and `reach` in it, and
//!     prints the times `reach` reported, and their median.
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::{Identity, P2P, P2PConfig, P2PEvent, PathKind, Peer, RelayAddr, RemoteIdentity};
use pos_p2p_protocol::relay::RelayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Send everything, get its length back.
#[derive(Debug)]
struct Sink;

impl Header for Sink {
    fn encode(&self, w: &mut Writer) {
        w.tag(1);
    }

    fn decode(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        match r.tag()? {
            1 => Ok(Sink),
            tag => Err(r.unknown_tag("Sink", tag)),
        }
    }
}

fn node(seed: u8, relay: RelayAddr) -> Result<Arc<P2P>> {
    let config = P2PConfig::new(
        Identity::from_bytes(&[seed; 32]),
        "nat-test",
        pos_p2p::semver::Version::new(1, 0, 0),
    )?
    .listen(["0.0.0.0:0".parse()?])
    .discovery(false)
    .relay(relay);
    Ok(P2P::new(config)?)
}

/// Print `direct <addr> <ms>` for every peer that goes direct.
fn watch(p2p: &P2P, since: Instant) {
    let events = p2p.events();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                P2PEvent::PathChanged {
                    path: PathKind::Direct(addr),
                    ..
                } => println!("direct {addr} {}", since.elapsed().as_millis()),
                P2PEvent::AddressDiscovered { addr, .. } => println!("discovered {addr}"),
                _ => {}
            }
        }
    });
}

async fn relay(listen: &str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut config = RelayConfig::default();
    config.bytes_per_second = 1 << 30;
    config.burst = 64 << 20;
    let relay = pos_p2p_relay::Relay::serve(listener, &Identity::from_bytes(&[0xee; 32]), config)?;
    println!("relay {}", relay.relay_addr());
    std::future::pending::<()>().await;
    Ok(())
}

async fn serve(seed: u8, relay: RelayAddr) -> Result<()> {
    let p2p = node(seed, relay)?;
    println!("ready {}", p2p.local_identity());
    watch(&p2p, Instant::now());
    while let Some(mut stream) = p2p.accept().await {
        tokio::spawn(async move {
            if Sink::from_stream(&mut stream).await.is_err() {
                return;
            }
            let mut buf = vec![0; 64 << 10];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = stream.write_all(&total.to_be_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
    Ok(())
}

/// Send `mib` MiB on a new stream to `peer` (dialing it if need be);
/// returns the count it answers.
async fn send(peer: &Peer, mib: usize) -> Result<u64> {
    let mut stream = peer.open(&Sink).await?;
    let chunk = vec![0x5a; 1 << 20];
    for _ in 0..mib {
        stream.write_all(&chunk).await?;
    }
    stream.shutdown().await?;
    let mut reply = [0; 8];
    stream.read_exact(&mut reply).await?;
    Ok(u64::from_be_bytes(reply))
}

async fn reach(seed: u8, relay: RelayAddr, peer: RemoteIdentity, mib: usize) -> Result<()> {
    let p2p = node(seed, relay.clone())?;
    let since = Instant::now();
    watch(&p2p, since);
    let handle = p2p.add_peer_via_relay(peer, relay)?;
    // The first stream: opened over the relayed connection at once (the
    // dial goes through the relay), it keeps going through the switch.
    let first = send(&handle, mib).await?;
    println!("first {first} {}", p2p.stats().relayed_sent);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(handle.stats().map(|s| s.path), Some(PathKind::Direct(_))) {
        if Instant::now() > deadline {
            println!("stats {:?}", p2p.stats());
            return Err("never went direct".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = send(&handle, mib).await?;
    println!("second {second} {}", p2p.stats().relayed_sent);
    p2p.shutdown().await;
    Ok(())
}

/// Time from first dial to a direct path, through two real NATs.
fn bench(rounds: usize) -> Result<()> {
    use pos_p2p_tests::netns::NatLab;
    let me = std::env::current_exe()?;
    let me = me.to_str().ok_or("path")?;
    let mut times = Vec::new();
    for round in 0..rounds {
        let lab = NatLab::new("the time-to-direct benchmark").ok_or("no lab here")?;
        let listen = format!("{}:3340", NatLab::RELAY_IP);
        let wait = Duration::from_secs(30);
        let mut relay = lab.spawn(&lab.relay, me, &["relay", &listen]);
        let relay_addr = relay.wait_line("relay ", wait).ok_or("relay")?;
        let relay_addr = relay_addr.trim_start_matches("relay ");
        let mut a = lab.spawn(&lab.homes[0], me, &["serve", "1", relay_addr]);
        let identity = a.wait_line("ready ", wait).ok_or("serve")?;
        let identity = identity.trim_start_matches("ready ");
        let mut b = lab.spawn(
            &lab.homes[1],
            me,
            &["reach", "2", relay_addr, identity, "1"],
        );
        let direct = b.wait_line("direct ", wait).ok_or("never direct")?;
        let ms: u64 = direct.split_whitespace().nth(2).ok_or("ms")?.parse()?;
        println!("round {round}: direct after {ms} ms");
        times.push(ms);
        let _ = b.finish(Duration::from_secs(10));
        let _ = a.finish(Duration::ZERO);
        let _ = relay.finish(Duration::ZERO);
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).ok_or("no rounds")?;
    println!(
        "time from first dial to a direct path: median {median} ms, min {} ms, max {} ms ({rounds} rounds)",
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    let result = match arg(0)? {
        "relay" => relay(arg(1)?).await,
        "bench" => bench(arg(1)?.parse()?),
        "serve" => serve(arg(1)?.parse()?, arg(2)?.parse()?).await,
        "reach" => {
            reach(
                arg(1)?.parse()?,
                arg(2)?.parse()?,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
            )
            .await
        }
        other => Err(format!("unknown command {other}").into()),
    };
    if let Err(error) = &result {
        println!("error {error}");
    }
    result
}
