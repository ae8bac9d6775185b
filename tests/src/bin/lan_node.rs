//! A pos-p2p node for the real-socket LAN tests: the integration tests run
//! copies of it in network namespaces, and `.ci/interop-zeroconf` runs it
//! next to python-zeroconf.
//!
//! ```text
//! lan_node discover <app> <seed> <peers> <timeout-secs> <linger-secs> [stay|leave]
//!     find <peers> peers by mDNS alone, ping each over a stream, answer
//!     their pings, then linger and shut down (saying goodbye).
//!     `stay`: then disconnect the peers and ping them again (re-dialed by
//!     their advertised addresses), wait for their records to expire, and
//!     ping them once more over the connection that outlived the records.
//!     `leave`: do not ping; once pinged, wait 2 s and turn discovery off
//!     (a goodbye), staying connected.
//! lan_node advertise <app> <seed> <name> <secs>
//!     advertise with metadata name=<name> for <secs>, then shut down.
//! lan_node quiet <app> <seed> <secs>
//!     run with discovery turned off for <secs>.
//! lan_node sniff <secs>
//!     count packets arriving at the mDNS group for <secs>.
//! lan_node identity <seed>
//!     print the identity that <seed> gives.
//! ```
//!
//! Output lines: `ready <identity> <port>`, `discovered <identity>`,
//! `pinged <identity>`, `repinged <identity>`, `expired <identity>`,
//! `pinged-after-expiry <identity>`, `discovery-off`, `packets <n>`,
//! `verified <n>` (peers proven genuine by a dial, after the pings).

use std::collections::BTreeSet;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pos_p2p::prelude::*;
use pos_p2p::{Identity, Metadata, P2P, P2PConfig, P2PEvent, semver::Version};
use pos_p2p_tests::ExampleHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn node(app: &str, seed: u8, name: &str, discovery: bool) -> Result<Arc<P2P>> {
    let mut metadata = Metadata::new();
    metadata.insert("name", name)?;
    metadata.insert("os", std::env::consts::OS)?;
    let config = P2PConfig::new(
        Identity::from_bytes(&[seed; 32]),
        app,
        Version::new(1, 0, 0),
    )?
    .metadata(metadata)
    .discovery(discovery);
    let p2p = P2P::new(config)?;
    let port = p2p.listen_addrs().first().map_or(0, SocketAddr::port);
    println!("ready {} {port}", p2p.local_identity());
    Ok(p2p)
}

/// Answer every ping with a pong; returns the count of pongs sent.
fn serve(p2p: Arc<P2P>) -> Arc<AtomicUsize> {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = p2p.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut ping = [0u8; 4];
                let header = ExampleHeader::from_stream(&mut stream).await;
                if matches!(header, Ok(ExampleHeader::Ping))
                    && stream.read_exact(&mut ping).await.is_ok()
                    && &ping == b"ping"
                {
                    let _ = stream.write_all(b"pong").await;
                    if stream.shutdown().await.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    served
}

async fn ping(p2p: &P2P, identity: &pos_p2p::RemoteIdentity) -> Result<()> {
    // Dialed (if not connected) by the advertised addresses, pinned to the
    // advertised identity: no address was given.
    let peer = p2p.peers().get(identity).ok_or("peer not in the table")?;
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

async fn discover(
    app: &str,
    seed: u8,
    peers: usize,
    timeout: u64,
    linger: u64,
    role: &str,
) -> Result<()> {
    let p2p = node(app, seed, &format!("node {seed}"), true)?;
    if !p2p.is_discovering() {
        return Err("discovery could not start".into());
    }
    let events = p2p.events();
    let served = serve(p2p.clone());
    let deadline = Instant::now() + Duration::from_secs(timeout);
    // Peers found before the subscription started: events are only "from
    // now on", so look at the table once after subscribing.
    let mut found = already_discovered(&p2p);
    while found.len() < peers {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(P2PEvent::PeerDiscovered {
                peer,
                addrs,
                metadata,
            })) => {
                println!("discovered {peer} {addrs:?} {:?}", metadata.get("name"));
                found.insert(peer);
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("node stopped".into()),
            Err(_) => return Err(format!("found {} of {peers} peers", found.len()).into()),
        }
    }
    // A leaving node only answers: so the staying node's first ping has
    // to dial the advertised addresses (it was never connected before).
    if role != "leave" {
        for identity in &found {
            ping(&p2p, identity).await?;
            println!("pinged {identity}");
        }
        // A dial to advertised addresses that the peer answered proves its
        // announcement genuine.
        let verified = p2p.discovery_stats().map_or(0, |s| s.peers_verified);
        println!("verified {verified}");
    }
    match role {
        "stay" => {
            for identity in &found {
                p2p.disconnect(identity, "testing a re-dial");
                let gone = Instant::now() + Duration::from_secs(5);
                while p2p.peers().get(identity).is_some_and(|p| p.is_connected()) {
                    if Instant::now() > gone {
                        return Err("disconnect did not happen".into());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ping(&p2p, identity).await?;
                println!("repinged {identity}");
            }
            let mut expired = BTreeSet::new();
            while expired.len() < found.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, events.recv()).await {
                    Ok(Some(P2PEvent::PeerExpired { peer })) => {
                        println!("expired {peer}");
                        expired.insert(peer);
                    }
                    Ok(Some(_)) => {}
                    _ => return Err("the peers' records did not expire".into()),
                }
            }
            for identity in &found {
                if p2p.peers().get(identity).is_some_and(|p| p.is_discovered()) {
                    return Err("an expired peer is still discovered".into());
                }
                ping(&p2p, identity).await?;
                println!("pinged-after-expiry {identity}");
            }
        }
        "leave" => {
            while served.load(Ordering::SeqCst) < found.len() {
                if Instant::now() > deadline {
                    return Err("the peers did not ping".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("ponged");
            tokio::time::sleep(Duration::from_secs(2)).await;
            p2p.stop_discovery();
            if p2p.is_discovering() {
                return Err("discovery still on".into());
            }
            println!("discovery-off");
        }
        _ => {}
    }
    tokio::time::sleep(Duration::from_secs(linger)).await;
    p2p.shutdown().await;
    Ok(())
}

/// The peers discovered so far, printed.
fn already_discovered(p2p: &P2P) -> BTreeSet<pos_p2p::RemoteIdentity> {
    let mut found = BTreeSet::new();
    let peers: std::collections::BTreeMap<_, _> = p2p.peers().into_iter().collect();
    for (identity, peer) in peers {
        if peer.is_discovered() {
            println!("discovered {identity} {:?}", peer.addrs());
            found.insert(identity);
        }
    }
    found
}

async fn run_for(p2p: Arc<P2P>, secs: u64) {
    let events = p2p.events();
    already_discovered(&p2p);
    let watch = async {
        while let Some(event) = events.recv().await {
            if let P2PEvent::PeerDiscovered { peer, .. } = event {
                println!("discovered {peer}");
            } else if let P2PEvent::PeerExpired { peer } = event {
                println!("expired {peer}");
            } else if let P2PEvent::PeerChanged { peer, addrs, .. } = event {
                println!("changed {peer} {addrs:?}");
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(secs), watch).await;
    p2p.shutdown().await;
}

fn sniff(secs: u64) -> Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5353)).into())?;
    for iface in if_addrs::get_if_addrs()? {
        if let std::net::IpAddr::V4(ip) = iface.ip()
            && !ip.is_loopback()
        {
            socket.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &ip)?;
        }
    }
    let socket: std::net::UdpSocket = socket.into();
    // Joined: what is sent from now on is counted.
    println!("listening");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut packets = 0u64;
    let mut buf = [0u8; 9000];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        if socket.recv_from(&mut buf).is_ok() {
            packets += 1;
        }
    }
    println!("packets {packets}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}; see the source").into())
    };
    let num = |i: usize| -> Result<u64> { Ok(arg(i)?.parse()?) };
    match arg(0)? {
        "discover" => {
            let seed = u8::try_from(num(2)?)?;
            let role = args.get(6).map_or("", String::as_str);
            discover(
                arg(1)?,
                seed,
                usize::try_from(num(3)?)?,
                num(4)?,
                num(5)?,
                role,
            )
            .await
        }
        "advertise" => {
            let p2p = node(arg(1)?, u8::try_from(num(2)?)?, arg(3)?, true)?;
            run_for(p2p, num(4)?).await;
            Ok(())
        }
        "quiet" => {
            let p2p = node(arg(1)?, u8::try_from(num(2)?)?, "quiet", false)?;
            run_for(p2p, num(3)?).await;
            Ok(())
        }
        "sniff" => sniff(num(1)?),
        "identity" => {
            let seed = u8::try_from(num(1)?)?;
            println!("{}", Identity::from_bytes(&[seed; 32]).to_remote_identity());
            Ok(())
        }
        other => Err(format!("unknown command {other}").into()),
    }
}
