//! The flood tool: a victim node, an honest peer and an attacker, each run
//! in a network namespace of its own by the flood suite
//! (`tests/tests/flood.rs`), as a hostile device on the same LAN would
//! attack.
//!
//! ```text
//! flood victim <seed> <listen-addr>
//!     a node (app "flood", discovery on) that answers pings; prints
//!     `ready <identity> <addr>`, then `stats ...` every 500 ms and
//!     `discovered <identity> <ms>` as peers are found; runs until killed.
//! flood honest <victim-identity> <victim-addr> <secs>
//!     pings the victim every 10 ms (a stream per ping, 1 s to answer) and,
//!     every 250 ms, dials it from a fresh identity (2 s to connect; a dial
//!     does not wait for the one before it, so a run of <secs> makes
//!     4 × <secs> of them);
//!     prints `result pings=<n> pings_ok=<n> new=<n> new_ok=<n>`.
//! flood lan-peer <seed> <secs>
//!     a discoverable node of app "flood", for the discovery scenarios.
//! flood attack <scenario> <victim-identity> <victim-addr> <secs>
//!     attacks for <secs>; prints `result sent=<n> answers=<n>` (what was
//!     sent: datagrams, connections, streams or packets, by scenario).
//! ```
//!
//! Scenarios: `none`, `udp-garbage`, `quic-initials`,
//! `version-negotiation`, `short-headers`, `client-hellos`,
//! `client-hellos-fast`, `tls-no-hello`, `idle-identities`, `churn`,
//! `stream-wedge`, `header-bodies`, `header-prefixes`, `slow-headers`,
//! `mdns-queries`, `mdns-forgery`.

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pos_p2p::prelude::*;
use pos_p2p::{Identity, Metadata, P2P, P2PConfig, P2PEvent, RemoteIdentity, semver::Version};
use pos_p2p_protocol::discovery::{Discovery, DiscoveryConfig};
use pos_p2p_tests::ExampleHeader;
use pos_p2p_tests::sim::payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const APP: &str = "flood";

fn identity(seed: u64) -> Identity {
    let mut bytes = [0x5e; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    Identity::from_bytes(&bytes)
}

fn config(seed: u64, listen: SocketAddr, discovery: bool) -> Result<P2PConfig> {
    let mut metadata = Metadata::new();
    metadata.insert("name", format!("flood {seed}"))?;
    Ok(P2PConfig::new(identity(seed), APP, Version::new(1, 0, 0))?
        .listen([listen])
        .metadata(metadata)
        .discovery(discovery))
}

/// Any port on any address of `like`'s family.
fn any_port(like: SocketAddr) -> SocketAddr {
    if like.is_ipv6() {
        SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0)
    } else {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ----- the victim -----

async fn victim(seed: u64, listen: SocketAddr) -> Result<()> {
    let p2p = P2P::new(config(seed, listen, true)?)?;
    println!("ready {} {}", p2p.local_identity(), p2p.listen_addrs()[0]);
    let start = Instant::now();
    let events = p2p.events();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let P2PEvent::PeerDiscovered { peer, .. } = event {
                println!("discovered {peer} {}", start.elapsed().as_millis());
            }
        }
    });
    let serving = p2p.clone();
    tokio::spawn(async move {
        while let Some(stream) = serving.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = p2p.stats();
        let discovery = p2p.discovery_stats().unwrap_or_default();
        println!(
            "stats rss_kib={} peers={} connected={} deferred={} refused={} retries={} \
             evicted_handshakes={} evicted_connections={} dropped_early={} headers_refused={} \
             mdns_rate_limited={} mdns_refused={}",
            rss_kib(),
            p2p.peers().len(),
            p2p.peers().values().filter(|p| p.is_connected()).count(),
            stats.incoming_deferred,
            stats.incoming_refused,
            stats.retries_sent,
            stats.handshakes_evicted + stats.handshakes_timed_out,
            stats.connections_evicted,
            stats.dropped_early,
            stats.headers_too_large + stats.headers_malformed + stats.headers_timed_out,
            discovery.rate_limited,
            discovery.peers_refused,
        );
    }
}

async fn answer(mut stream: pos_p2p::UnicastStream) {
    match ExampleHeader::from_tokio_stream(&mut stream).await {
        Ok(ExampleHeader::Ping) => {
            let mut ping = [0u8; 4];
            if stream.read_exact(&mut ping).await.is_ok() {
                let _ = stream.write_all(b"pong").await;
                let _ = stream.shutdown().await;
            }
        }
        // Read whatever else comes, like a real operation would.
        Ok(_) => {
            let mut sink = [0u8; 4096];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
        Err(_) => {}
    }
}

// ----- the honest peer -----

async fn ping(peer: &pos_p2p::Peer) -> Result<()> {
    let mut stream = peer.new_stream().await?;
    stream.write_all(&ExampleHeader::Ping.to_bytes()).await?;
    stream.write_all(b"ping").await?;
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await?;
    if &pong != b"pong" {
        return Err("bad pong".into());
    }
    Ok(())
}

async fn honest(victim: RemoteIdentity, addr: SocketAddr, secs: u64) -> Result<()> {
    let p2p = P2P::new(config(1, any_port(addr), false)?)?;
    let peer = p2p.add_peer(victim, addr);
    tokio::time::timeout(Duration::from_secs(5), p2p.connect(addr, Some(victim))).await??;
    let end = Instant::now() + Duration::from_secs(secs);
    let pings = Arc::new(AtomicU64::new(0));
    let pings_ok = Arc::new(AtomicU64::new(0));
    let pinger = {
        let (pings, pings_ok) = (pings.clone(), pings_ok.clone());
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while Instant::now() < end {
                tick.tick().await;
                pings.fetch_add(1, Ordering::Relaxed);
                let peer = peer.clone();
                let pings_ok = pings_ok.clone();
                // Each ping on a task of its own: a slow answer does not
                // stop the next ping from going out.
                tokio::spawn(async move {
                    let answered = tokio::time::timeout(Duration::from_secs(1), ping(&peer)).await;
                    if matches!(answered, Ok(Ok(()))) {
                        pings_ok.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        })
    };
    // A newcomer every 250 ms, each on a task of its own: a slow one does
    // not delay the next, so every run has the same number of samples
    // (16 in the 4 s short form) whatever the victim's load.
    let new_ok = Arc::new(AtomicU64::new(0));
    let mut newcomers = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seed = 1_000_000u64;
    while Instant::now() < end {
        tick.tick().await;
        seed += 1;
        let newcomer = P2P::new(config(seed, any_port(addr), false)?)?;
        let new_ok = new_ok.clone();
        newcomers.push(tokio::spawn(async move {
            let connected =
                tokio::time::timeout(Duration::from_secs(2), newcomer.connect(addr, Some(victim)))
                    .await;
            if matches!(connected, Ok(Ok(_))) {
                new_ok.fetch_add(1, Ordering::Relaxed);
            }
            newcomer.shutdown().await;
        }));
    }
    let new = newcomers.len();
    for newcomer in newcomers {
        newcomer.await?;
    }
    let new_ok = new_ok.load(Ordering::Relaxed);
    pinger.await?;
    // Pings still in flight get their second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    println!(
        "result pings={} pings_ok={} new={new} new_ok={new_ok}",
        pings.load(Ordering::Relaxed),
        pings_ok.load(Ordering::Relaxed),
    );
    p2p.shutdown().await;
    Ok(())
}

async fn lan_peer(seed: u64, secs: u64) -> Result<()> {
    let p2p = P2P::new(config(seed, "0.0.0.0:0".parse()?, true)?)?;
    println!("ready {} {}", p2p.local_identity(), p2p.listen_addrs()[0]);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    p2p.shutdown().await;
    Ok(())
}

// ----- the attacker -----

/// Raw datagrams at the highest rate one thread reaches.
fn udp_flood(to: SocketAddr, secs: u64, make: impl Fn(u64) -> Vec<u8>) -> Result<(u64, u64)> {
    let socket = UdpSocket::bind(any_port(to))?;
    socket.set_nonblocking(true)?;
    let datagrams: Vec<Vec<u8>> = (0..256).map(&make).collect();
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut sent, mut answers) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        for _ in 0..256 {
            if socket.send_to(&datagrams[sent as usize % 256], to).is_ok() {
                sent += 1;
            }
        }
        while socket.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    Ok((sent, answers))
}

fn initial(seed: u64, version: u32) -> Vec<u8> {
    let mut data = payload(seed, 1200);
    data[0] = 0xc0 | (data[0] & 0x0f);
    data[1..5].copy_from_slice(&version.to_be_bytes());
    data[5] = 8;
    data[14] = 8;
    data[23] = 0;
    data[24] = 0x44;
    data[25] = 0x4c;
    data
}

/// QUIC clients on one socket, driven by hand: `hello_only` sends each
/// connection's first flight and nothing more (a handshake that never
/// completes); otherwise connections complete TLS (with a made-up identity)
/// and then say nothing: no Hello, ever. `rate` new connections a second.
fn quic_clients(to: SocketAddr, secs: u64, rate: u64, hello_only: bool) -> Result<(u64, u64)> {
    use quinn_proto::{ClientConfig, Endpoint, EndpointConfig};
    let socket = UdpSocket::bind(any_port(to))?;
    socket.set_nonblocking(true)?;
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
    let mut conns = std::collections::BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let mut next = Instant::now();
    let (mut started, mut answers, mut seed) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    let mut recv = [0u8; 65536];
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next {
            next += interval;
            seed += 1;
            let tls = quinn_proto::crypto::rustls::QuicClientConfig::try_from(
                pos_p2p_tests::raw::tls_client(seed),
            )?;
            let config = ClientConfig::new(Arc::new(tls));
            let (handle, conn) = endpoint.connect(now, config, to, "pos-p2p")?;
            started += 1;
            conns.insert(handle, conn);
        }
        while let Ok((len, from)) = socket.recv_from(&mut recv) {
            answers += 1;
            if hello_only {
                continue;
            }
            let data = bytes::BytesMut::from(&recv[..len]);
            if let Some(quinn_proto::DatagramEvent::ConnectionEvent(handle, event)) =
                endpoint.handle(now, from, None, None, data, &mut buf)
                && let Some(conn) = conns.get_mut(&handle)
            {
                conn.handle_event(event);
            }
        }
        for conn in conns.values_mut() {
            conn.handle_timeout(now);
            while conn.poll().is_some() {}
            // Streams the victim opens (its control stream) are never read.
            buf.clear();
            while let Some(transmit) = conn.poll_transmit(now, 1, &mut buf) {
                let _ = socket.send_to(&buf[..transmit.size], transmit.destination);
                buf.clear();
            }
        }
        if hello_only {
            // First flights only: forget each connection once it sent one.
            conns.clear();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok((started, answers))
}

/// `count` pos-p2p nodes with made-up identities, connected to the victim
/// and idle.
async fn idle_identities(
    victim: RemoteIdentity,
    addr: SocketAddr,
    secs: u64,
) -> Result<(u64, u64)> {
    let mut nodes = Vec::new();
    let mut connected = 0u64;
    let end = Instant::now() + Duration::from_secs(secs);
    for seed in 0..300u64 {
        if Instant::now() > end {
            break;
        }
        let node = P2P::new(config(2_000_000 + seed, any_port(addr), false)?)?;
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), node.connect(addr, Some(victim))).await
        {
            connected += 1;
        }
        nodes.push(node);
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    Ok((nodes.len() as u64, connected))
}

/// Fresh identities connecting and leaving as fast as they can.
async fn churn(victim: RemoteIdentity, addr: SocketAddr, secs: u64) -> Result<(u64, u64)> {
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut started, mut connected, mut seed) = (0u64, 0u64, 3_000_000u64);
    while Instant::now() < end {
        seed += 1;
        started += 1;
        let node = P2P::new(config(seed, any_port(addr), false)?)?;
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), node.connect(addr, Some(victim))).await
        {
            connected += 1;
        }
        node.shutdown().await;
    }
    Ok((started, connected))
}

/// One authenticated peer abusing streams.
async fn streams(
    scenario: &str,
    victim: RemoteIdentity,
    addr: SocketAddr,
    secs: u64,
) -> Result<(u64, u64)> {
    let end = Instant::now() + Duration::from_secs(secs);
    let p2p = P2P::new(config(4_000_000, any_port(addr), false)?)?;
    let peer = p2p.add_peer(victim, addr);
    p2p.connect(addr, Some(victim)).await?;
    let (mut opened, mut refused) = (0u64, 0u64);
    let mut held = Vec::new();
    match scenario {
        // An operation the victim does not know, while still writing: each
        // is refused, and dropped by the attacker.
        "stream-wedge" => {
            let chunk = vec![1u8; 16 * 1024];
            let unknown = [1u8, 0x7f];
            while Instant::now() < end {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(1), peer.new_stream()).await
                else {
                    continue;
                };
                opened += 1;
                let _ = stream.write_all(&unknown).await;
                for _ in 0..64 {
                    if stream.write_all(&chunk).await.is_err() {
                        refused += 1;
                        break;
                    }
                }
            }
        }
        // The largest header announced, all but its last byte sent, never
        // finished.
        "header-bodies" => {
            let mut frame = vec![0x80, 0x80, 0x04];
            frame.extend(std::iter::repeat_n(9u8, 64 * 1024 - 1));
            while Instant::now() < end && opened < 1024 {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(1), peer.new_stream()).await
                else {
                    continue;
                };
                opened += 1;
                let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&frame))
                    .await;
                held.push(stream);
            }
        }
        // Three-byte length prefixes, nothing more.
        "header-prefixes" => {
            while Instant::now() < end && opened < 1024 {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(1), peer.new_stream()).await
                else {
                    continue;
                };
                opened += 1;
                let _ = stream.write_all(&[0x80, 0x80, 0x04]).await;
                held.push(stream);
            }
        }
        // Headers that trickle in, a byte a second.
        "slow-headers" => {
            while Instant::now() < end && opened < 1024 {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_millis(100), peer.new_stream()).await
                else {
                    break;
                };
                opened += 1;
                let _ = stream.write_all(&[100]).await;
                held.push(stream);
            }
            while Instant::now() < end {
                for stream in &mut held {
                    if stream.write_all(&[1]).await.is_err() {
                        refused += 1;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        other => return Err(format!("unknown stream scenario {other}").into()),
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    drop(held);
    p2p.shutdown().await;
    Ok((opened, refused))
}

/// An mDNS socket on port 5353 of the attacker's namespace, sending on the
/// interface of address `own`.
fn mdns_socket(own: std::net::IpAddr) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let std::net::IpAddr::V4(own) = own else {
        return Err("the mDNS scenarios run over IPv4".into());
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5353)).into())?;
    socket.set_multicast_loop_v4(false)?;
    socket.set_multicast_if_v4(&own)?;
    Ok(socket.into())
}

fn mdns_queries(own: std::net::IpAddr, secs: u64) -> Result<(u64, u64)> {
    let socket = mdns_socket(own)?;
    let mut packet = simple_dns::Packet::new_query(0);
    packet.questions.push(simple_dns::Question::new(
        simple_dns::Name::new_unchecked("_flood._udp.local"),
        simple_dns::QTYPE::TYPE(simple_dns::TYPE::PTR),
        simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
        false,
    ));
    let query = packet.build_bytes_vec()?;
    let group = SocketAddr::from((pos_p2p_protocol::discovery::MDNS_IPV4, 5353));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        for _ in 0..64 {
            if socket.send_to(&query, group).is_ok() {
                sent += 1;
            }
        }
    }
    Ok((sent, 0))
}

/// 300 made-up instances announced from the attacker's address, again
/// every second.
fn mdns_forgery(own: std::net::IpAddr, secs: u64) -> Result<(u64, u64)> {
    let socket = mdns_socket(own)?;
    let now = Instant::now();
    let announcements: Vec<Vec<u8>> = (0..300u64)
        .filter_map(|n| {
            let forged = identity(5_000_000 + n).to_remote_identity();
            let mut discovery = Discovery::new(DiscoveryConfig::new(forged, APP, [7; 32]), now);
            discovery.set_addrs(now, vec![SocketAddr::new(own, 4433)]);
            discovery.poll_transmit().map(|t| t.payload)
        })
        .collect();
    let group = SocketAddr::from((pos_p2p_protocol::discovery::MDNS_IPV4, 5353));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        for packet in &announcements {
            if socket.send_to(packet, group).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok((sent, 0))
}

/// Run a blocking attack loop off the runtime's workers.
async fn blocking(f: Box<dyn FnOnce() -> Result<(u64, u64)> + Send>) -> Result<(u64, u64)> {
    tokio::task::spawn_blocking(f).await?
}

async fn attack(scenario: &str, victim: RemoteIdentity, addr: SocketAddr, secs: u64) -> Result<()> {
    let (sent, answers) = match scenario {
        "none" => {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            (0, 0)
        }
        "udp-garbage" => {
            blocking(Box::new(move || {
                udp_flood(addr, secs, |s| payload(s, 64 + (s as usize * 37) % 1100))
            }))
            .await?
        }
        "quic-initials" => {
            blocking(Box::new(move || udp_flood(addr, secs, |s| initial(s, 1)))).await?
        }
        "version-negotiation" => {
            blocking(Box::new(move || {
                udp_flood(addr, secs, |s| initial(s, 0x0a0a_0a0a))
            }))
            .await?
        }
        "short-headers" => {
            blocking(Box::new(move || {
                udp_flood(addr, secs, |s| {
                    let mut data = payload(s, 1200);
                    data[0] = 0x40 | (data[0] & 0x3f);
                    data
                })
            }))
            .await?
        }
        "client-hellos" => blocking(Box::new(move || quic_clients(addr, secs, 30, true))).await?,
        "client-hellos-fast" => {
            blocking(Box::new(move || quic_clients(addr, secs, 1000, true))).await?
        }
        "tls-no-hello" => blocking(Box::new(move || quic_clients(addr, secs, 30, false))).await?,
        "idle-identities" => idle_identities(victim, addr, secs).await?,
        "churn" => churn(victim, addr, secs).await?,
        "stream-wedge" | "header-bodies" | "header-prefixes" | "slow-headers" => {
            streams(scenario, victim, addr, secs).await?
        }
        "mdns-queries" => {
            let own = own_address(addr)?;
            blocking(Box::new(move || mdns_queries(own, secs))).await?
        }
        "mdns-forgery" => {
            let own = own_address(addr)?;
            blocking(Box::new(move || mdns_forgery(own, secs))).await?
        }
        other => return Err(format!("unknown scenario {other}").into()),
    };
    println!("result sent={sent} answers={answers}");
    Ok(())
}

/// The address this namespace reaches `to` from.
fn own_address(to: SocketAddr) -> Result<std::net::IpAddr> {
    let socket = UdpSocket::bind(any_port(to))?;
    socket.connect(to)?;
    Ok(socket.local_addr()?.ip())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}; see the source").into())
    };
    let num = |i: usize| -> Result<u64> { Ok(arg(i)?.parse()?) };
    match arg(0)? {
        "victim" => victim(num(1)?, arg(2)?.parse()?).await,
        "honest" => honest(arg(1)?.parse()?, arg(2)?.parse()?, num(3)?).await,
        "lan-peer" => lan_peer(num(1)?, num(2)?).await,
        "attack" => attack(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?, num(4)?).await,
        other => Err(format!("unknown command {other}").into()),
    }
}
