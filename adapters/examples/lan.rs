//! Find the other nodes of this application on the LAN and ping each one:
//! no address is given anywhere. Run it on two machines of one network (or
//! in two network namespaces joined by a veth pair):
//!
//! `cargo run -p pos-p2p --example lan -- [seconds]`
//!
//! Each node advertises itself over mDNS (`_lan-example._udp.local`),
//! prints every peer it discovers, pings it over a fresh stream (dialing its
//! advertised addresses with its advertised identity pinned), answers the
//! peers' pings, and says goodbye when it stops.

use std::error::Error;
use std::time::Duration;

use pos_p2p::{Metadata, P2P, P2PConfig, P2PEvent, generate_identity, semver::Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(60), |s| s.parse())?;
    let mut metadata = Metadata::new();
    metadata.insert("name", hostname())?;
    metadata.insert("os", std::env::consts::OS)?;
    let config = P2PConfig::new(generate_identity()?, "lan-example", Version::new(1, 0, 0))?
        .metadata(metadata);
    let p2p = P2P::new(config)?;
    println!("I am {} on {:?}", p2p.local_identity(), p2p.listen_addrs());
    if !p2p.is_discovering() {
        return Err("LAN discovery could not start (no multicast interface?)".into());
    }

    // Answer pings.
    let server = p2p.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = server.accept().await {
            tokio::spawn(async move {
                let mut ping = [0u8; 4];
                if stream.read_exact(&mut ping).await.is_ok() {
                    let _ = stream.write_all(b"pong").await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });

    let events = p2p.events();
    let run = async {
        while let Some(event) = events.recv().await {
            match event {
                P2PEvent::PeerDiscovered {
                    peer,
                    addrs,
                    metadata,
                } => {
                    println!("found {peer} ({:?}) at {addrs:?}", metadata.get("name"));
                    let Some(handle) = p2p.peers().get(&peer) else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let started = std::time::Instant::now();
                        let result = async {
                            let mut stream = handle.new_stream().await?;
                            stream.write_all(b"ping").await?;
                            let mut pong = [0u8; 4];
                            stream.read_exact(&mut pong).await?;
                            Ok::<_, Box<dyn Error + Send + Sync>>(())
                        };
                        match result.await {
                            Ok(()) => println!("pinged {peer} in {:?}", started.elapsed()),
                            Err(error) => println!("ping to {peer} failed: {error}"),
                        }
                    });
                }
                P2PEvent::PeerChanged { peer, addrs, .. } => println!("{peer} moved to {addrs:?}"),
                P2PEvent::PeerExpired { peer } => println!("{peer} left"),
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(seconds), run).await;
    p2p.shutdown().await;
    println!("goodbye sent, stopped");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "a device".to_owned())
}
