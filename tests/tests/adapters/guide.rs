//! The guide an application developer follows (the one the system this
//! project is modelled on documented its P2P layer with), verbatim: the
//! sender's and the receiver's lines, compiled and run between two nodes.
//! The receiver reads the sender's real application version.

use std::error::Error;
use std::sync::Arc;

use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::semver::Version;
use pos_p2p::{HeaderExt as _, P2P, PeerMetadata, RemoteIdentity, UnicastStream};
use tokio::io::AsyncWriteExt;

use crate::common::config_with;

/// The application's header, as the guide names it.
#[derive(Debug)]
enum Header {
    NameOfYourNewHeaderVariant,
}

impl pos_p2p::Header for Header {
    fn encode(&self, w: &mut Writer) {
        match self {
            Header::NameOfYourNewHeaderVariant => w.tag(0),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag()? {
            0 => Ok(Header::NameOfYourNewHeaderVariant),
            tag => Err(r.unknown_tag("Header", tag)),
        }
    }
}

async fn sender(p2p: Arc<P2P>, identity: RemoteIdentity) -> Result<(), Box<dyn Error>> {
    use pos_p2p::Header as _;
    // in the sender
    let peer = p2p
        .peers()
        .get(&identity)
        .ok_or("Peer not found, has it been discovered?")?
        .clone();
    let mut stream = peer.new_stream().await?;
    stream
        .write_all(&Header::NameOfYourNewHeaderVariant.to_bytes())
        .await?;
    stream.shutdown().await?;
    Ok(())
}

/// The receiver's handler: whether the peer runs version 0.1.0.
async fn receiver(p2p: Arc<P2P>, mut stream: UnicastStream) -> Result<bool, Box<dyn Error>> {
    let header = Header::from_stream(&mut stream).await?;
    match header {
        Header::NameOfYourNewHeaderVariant => {
            // in the receiver
            let peer = p2p.peers().get(&stream.remote_identity()).unwrap();
            let metadata = PeerMetadata::from_hashmap(&peer.metadata()).unwrap();
            // You could use the `semver` crate to compare versions
            let is_running_version_0_1_0 = metadata.version.as_deref() == Some("0.1.0");
            // ... and the typed version for real comparisons.
            let version = metadata.version.ok_or("no version")?;
            assert!(*version.semver() >= Version::new(0, 1, 0));
            Ok(is_running_version_0_1_0)
        }
    }
}

/// `sender` on a node of `version` to a 0.1.0 receiver: what the receiver
/// concluded.
async fn run(n: u8, version: Version) -> bool {
    let listen = "127.0.0.1:0".parse().unwrap();
    let receiving = P2P::new(config_with(n, Version::new(0, 1, 0), listen)).unwrap();
    let sending = P2P::new(config_with(n + 1, version, listen)).unwrap();
    // Neither node's metadata names a version: it comes from the handshake.
    assert!(!sending.metadata().contains_key("version"));
    sending.add_peer(receiving.local_identity(), receiving.listen_addrs()[0]);
    sender(sending.clone(), receiving.local_identity())
        .await
        .expect("sent");
    let stream = tokio::time::timeout(std::time::Duration::from_secs(10), receiving.accept())
        .await
        .expect("in time")
        .expect("a stream");
    let answer = receiver(receiving.clone(), stream).await.expect("received");
    // The handle outlives the snapshot it came from, and `P2P::peer`
    // finds the same peer.
    let peer = sending.peers().get(&receiving.local_identity()).unwrap();
    assert_eq!(peer.identity(), receiving.local_identity());
    let found = sending.peer(&receiving.local_identity()).expect("known");
    assert_eq!(found.identity(), receiving.local_identity());
    assert!(
        sending
            .peer(&pos_p2p::Identity::from_bytes(&[7; 32]).to_remote_identity())
            .is_none()
    );
    sending.shutdown().await;
    receiving.shutdown().await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_compiles_as_written_and_reads_the_peers_real_version() {
    assert!(run(111, Version::new(0, 1, 0)).await);
    assert!(!run(113, Version::new(0, 1, 1)).await);
}
