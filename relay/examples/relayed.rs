//! Two devices that only know each other's identity and a relay: a relay
//! runs in this process (as `pos-p2p-relay` would on a server), device A
//! is reachable through it, device B reaches A there and measures round
//! trips over the relayed path; then the two go direct (hole punching, here
//! on loopback) and B measures again.
//!
//! ```text
//! cargo run -p pos-p2p-relay --example relayed
//! ```

use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::{P2P, P2PConfig, P2PEvent, PathKind, Peer, RelayStatus, generate_identity};
use pos_p2p_protocol::relay::RelayConfig;
use pos_p2p_relay::Relay;

/// The example's one operation: answer "pong".
#[derive(Debug)]
struct Ping;

impl Header for Ping {
    fn encode(&self, w: &mut Writer) {
        w.tag(0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag()? {
            0 => Ok(Ping),
            tag => Err(r.unknown_tag("Ping", tag)),
        }
    }
}

/// Five round trips to `peer`, then the path they took.
async fn ping(peer: &Peer, when: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("{when}:");
    for i in 0..5 {
        let started = Instant::now();
        let mut stream = peer.open(&Ping).await?;
        stream.close().await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        assert_eq!(reply, b"pong");
        println!("  ping {i}: {:?}", started.elapsed());
    }
    let stats = peer.stats().ok_or("A disconnected")?;
    let path = match stats.path {
        PathKind::Relayed(_) => "through the relay".to_owned(),
        PathKind::Direct(addr) => format!("directly at {addr}"),
        _ => "by another path".to_owned(),
    };
    println!("  B reaches A {path}, round trip {:?}", stats.rtt);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The relay: on a server this is `pos-p2p-relay --listen 0.0.0.0:3340`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let relay = Relay::serve(listener, &generate_identity()?, RelayConfig::default())?;
    println!("relay {}", relay.relay_addr());

    let config = |name: &str| -> Result<P2PConfig, Box<dyn std::error::Error>> {
        Ok(
            P2PConfig::new(generate_identity()?, name, Version::new(1, 0, 0))?
                .listen(["127.0.0.1:0".parse()?])
                .discovery(false),
        )
    };
    // Device A uses the relay.
    let a = P2P::new(config("relayed")?.relay(relay.relay_addr()))?;
    let server = a.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = server.accept().await {
            if Ping::from_stream(&mut stream).await.is_ok() {
                let _ = stream.write_all(b"pong").await;
                let _ = stream.close().await;
            }
        }
    });
    while !a
        .relays()
        .iter()
        .any(|(_, s)| matches!(s, RelayStatus::Connected { .. }))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("A {} is reachable through the relay", a.local_identity());

    // Device B knows A's identity and relay, nothing else.
    let b = P2P::new(config("relayed")?)?;
    let events = b.events();
    let peer = b.add_peer_via_relay(a.local_identity(), relay.relay_addr())?;
    ping(&peer, "first contact").await?;
    // Meanwhile the two told each other their addresses over the relayed
    // connection and dialed them: a direct connection takes over.
    let direct = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if let P2PEvent::PathChanged {
                path: PathKind::Direct(addr),
                ..
            } = event
            {
                return Some(addr);
            }
        }
        None
    })
    .await;
    match direct {
        Ok(Some(addr)) => println!("B went direct to A at {addr}"),
        _ => println!("B stays relayed (no direct path)"),
    }
    ping(&peer, "afterwards").await?;
    let forwarded = relay.stats();
    println!(
        "the relay forwarded {} datagrams ({} bytes) it could not read",
        forwarded.forwarded, forwarded.forwarded_bytes
    );
    a.shutdown().await;
    b.shutdown().await;
    relay.shutdown().await;
    Ok(())
}
