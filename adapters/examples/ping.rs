//! The ping operation from the application developer's view in DESIGN.md,
//! run between two nodes on loopback: node A pings node B ten times over
//! fresh streams and prints each round trip.
//!
//! `cargo run -p pos-p2p --example ping`

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use pos_p2p::prelude::*;
use pos_p2p::{P2P, P2PConfig, RemoteIdentity, UnicastStream, generate_identity, semver::Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The application's stream header: one variant per operation, each with
/// its tag (the wire format: never reuse one).
#[derive(Debug, PartialEq, Header)]
pub(crate) enum AppHeader {
    /// A ping; the receiver answers `pong` and closes.
    #[header(tag = 0)]
    Ping,
}

mod operations {
    pub(crate) mod ping {
        use super::super::*;

        /// Send a ping to a remote peer. The P2P system finds the peer and
        /// connects.
        pub(crate) async fn ping(
            p2p: Arc<P2P>,
            identity: RemoteIdentity,
        ) -> Result<(), Box<dyn Error>> {
            let peer = p2p
                .peers()
                .get(&identity)
                .ok_or("Peer not found, has it been discovered?")?
                .clone();
            let mut stream = peer.new_stream().await?;
            stream.write_all(&AppHeader::Ping.to_bytes()).await?;
            stream.shutdown().await?;
            let mut pong = Vec::new();
            stream.read_to_end(&mut pong).await?;
            if pong != b"pong" {
                return Err(format!("unexpected reply {pong:?}").into());
            }
            Ok(())
        }

        /// Answer a ping.
        pub(crate) async fn receiver(mut stream: UnicastStream) -> Result<(), Box<dyn Error>> {
            stream.write_all(b"pong").await?;
            stream.shutdown().await?;
            Ok(())
        }
    }
}

/// The incoming handler: dispatch each stream on its header.
async fn handle_incoming(p2p: Arc<P2P>) {
    while let Some(mut stream) = p2p.accept().await {
        tokio::spawn(async move {
            let result = match AppHeader::from_stream(&mut stream).await {
                Ok(AppHeader::Ping) => operations::ping::receiver(stream).await,
                Err(error) => Err(error.into()),
            };
            if let Err(error) = result {
                eprintln!("incoming stream failed: {error}");
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let loopback = || ["127.0.0.1:0".parse().expect("address")];
    let a = P2P::new(
        P2PConfig::new(generate_identity()?, "ping-example", Version::new(1, 0, 0))?
            .listen(loopback())
            // Both nodes are in this process: they are told each other's
            // address, so no multicast is needed.
            .discovery(false),
    )?;
    let b = P2P::new(
        P2PConfig::new(generate_identity()?, "ping-example", Version::new(1, 0, 0))?
            .listen(loopback())
            // Both nodes are in this process: they are told each other's
            // address, so no multicast is needed.
            .discovery(false),
    )?;
    println!("node A {} on {:?}", a.local_identity(), a.listen_addrs());
    println!("node B {} on {:?}", b.local_identity(), b.listen_addrs());
    tokio::spawn(handle_incoming(b.clone()));

    // Both nodes run in this process on loopback, so A is told B's address
    // and identity (on a LAN, discovery finds them: see examples/lan.rs).
    a.add_peer(b.local_identity(), b.listen_addrs()[0]);

    for i in 1..=10 {
        let started = Instant::now();
        operations::ping::ping(a.clone(), b.local_identity()).await?;
        let what = if i == 1 { " (includes connecting)" } else { "" };
        println!("ping {i}: round trip {:?}{what}", started.elapsed());
    }
    let peer = a.peers().get(&b.local_identity()).ok_or("peer")?;
    println!(
        "B as A sees it: connected={} version={:?} metadata={:?}",
        peer.is_connected(),
        peer.version().map(|v| v.to_string()),
        peer.metadata()
    );
    a.shutdown().await;
    b.shutdown().await;
    println!("both nodes shut down");
    Ok(())
}
