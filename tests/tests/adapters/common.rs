//! Helpers shared by the real-socket tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::{Identity, Metadata, P2P, P2PConfig, RuntimeKind, UnicastStream};

/// The tests' application header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TestHeader {
    /// Answer `pong`.
    Ping,
    /// Echo everything back, then finish.
    Echo,
    /// Read everything and answer with its length and checksum.
    Sink,
}

impl Header for TestHeader {
    fn encode(&self, w: &mut Writer) {
        w.tag(match self {
            TestHeader::Ping => 0,
            TestHeader::Echo => 1,
            TestHeader::Sink => 2,
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.tag()? {
            0 => TestHeader::Ping,
            1 => TestHeader::Echo,
            2 => TestHeader::Sink,
            tag => return Err(r.unknown_tag("TestHeader", tag)),
        })
    }
}

/// A config for node `n` on IPv4 loopback.
pub(crate) fn config(n: u8) -> P2PConfig {
    config_with(n, Version::new(1, 0, 0), "127.0.0.1:0".parse().unwrap())
}

pub(crate) fn config_with(n: u8, version: Version, listen: SocketAddr) -> P2PConfig {
    let mut metadata = Metadata::new();
    metadata.insert("name", format!("node {n}")).unwrap();
    P2PConfig::new(Identity::from_bytes(&[n; 32]), "it", version)
        .unwrap()
        .listen([listen])
        .metadata(metadata)
        // Traffic stays on loopback: no multicast from these tests.
        .discovery(false)
}

pub(crate) fn start(n: u8, runtime: RuntimeKind) -> Arc<P2P> {
    P2P::with_runtime(config(n), runtime).expect("node starts")
}

/// FNV-1a, enough to catch corruption in transfer tests.
pub(crate) fn checksum(data: &[u8], mut hash: u64) -> u64 {
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Serve incoming streams of `p2p` until it shuts down, on whatever
/// executor polls the returned future.
pub(crate) async fn serve(p2p: Arc<P2P>) {
    while let Some(stream) = p2p.accept().await {
        handle(stream).await;
    }
}

/// Handle one incoming stream (sequentially: fine for tests that use one
/// stream at a time; concurrent tests spawn per stream).
pub(crate) async fn handle(mut stream: UnicastStream) {
    let header = match TestHeader::from_stream(&mut stream).await {
        Ok(header) => header,
        Err(_) => return,
    };
    match header {
        TestHeader::Ping => {
            let _ = stream.write_all(b"pong").await;
            let _ = stream.close().await;
        }
        TestHeader::Echo => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = stream.close().await;
        }
        TestHeader::Sink => {
            let mut buf = vec![0u8; 256 * 1024];
            let (mut len, mut hash) = (0u64, FNV_START);
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        len += n as u64;
                        hash = checksum(&buf[..n], hash);
                    }
                    Err(_) => return,
                }
            }
            let mut reply = len.to_be_bytes().to_vec();
            reply.extend_from_slice(&hash.to_be_bytes());
            let _ = stream.write_all(&reply).await;
            let _ = stream.close().await;
        }
    }
}

/// Ping `to` from `from` through `Peer::new_stream`, with futures' traits.
pub(crate) async fn ping(from: &P2P, to: &P2P) -> Result<(), String> {
    let peer = from
        .peers()
        .get(&to.local_identity())
        .ok_or("peer not known")?;
    let mut stream = peer.new_stream().await.map_err(|e| e.to_string())?;
    stream
        .write_all(&TestHeader::Ping.to_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.close().await.map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    if reply == b"pong" {
        Ok(())
    } else {
        Err(format!("bad reply {reply:?}"))
    }
}

/// Connect `a` to `b` by address and check both see each other with metadata.
pub(crate) async fn connect_and_check(a: &P2P, b: &P2P) {
    let id = a
        .connect(b.listen_addrs()[0], Some(b.local_identity()))
        .await
        .expect("connects");
    assert_eq!(id, b.local_identity());
    let peer = a.peers().get(&b.local_identity()).expect("a knows b");
    assert!(peer.is_connected());
    assert_eq!(peer.version(), Some(Version::new(1, 0, 0)));
    // b's metadata follows its Hello once a has proven who it is: within a
    // round trip.
    let mut name = None;
    for _ in 0..200 {
        name = peer.metadata().get("name").cloned();
        if name.is_some() {
            break;
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    assert!(
        name.as_deref().is_some_and(|n| n.starts_with("node ")),
        "{name:?}"
    );
    // b sees a once its side of the handshake is done.
    for _ in 0..200 {
        if b.peers()
            .get(&a.local_identity())
            .is_some_and(|p| p.is_connected())
        {
            let meta = b.peers()[&a.local_identity()].metadata();
            assert!(meta.contains_key("name"));
            return;
        }
        // async-io's timer: this runs under tokio, async-std and smol, and
        // must not block the executor's thread.
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    panic!("b never saw a connected");
}
