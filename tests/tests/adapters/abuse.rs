//! The async API under abuse and at its limits, over real sockets: streams
//! refused by the receiving application, a peer that makes up identities,
//! and a sender waiting for stream credit.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::{Identity, P2P, P2PConfig, StreamError, StreamRejection, StreamReset};

use crate::common::{TestHeader, config, handle};

/// An operation the receiving (older) application does not know.
#[derive(Debug)]
struct NewerHeader;

impl Header for NewerHeader {
    fn encode(&self, w: &mut Writer) {
        w.tag(9);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag()? {
            9 => Ok(NewerHeader),
            tag => Err(r.unknown_tag("NewerHeader", tag)),
        }
    }
}

/// The rejection a failed stream operation carries, if any.
fn rejection(error: &io::Error) -> Option<StreamRejection> {
    let inner = error.get_ref()?;
    if let Some(reset) = inner.downcast_ref::<StreamReset>() {
        return Some(reset.rejection());
    }
    inner.downcast_ref::<StreamError>()?.rejection()
}

async fn serve(p2p: Arc<P2P>) {
    while let Some(stream) = p2p.accept().await {
        tokio::spawn(handle(stream));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_for_an_unknown_operation_give_their_slot_back() {
    // The receiver allows 16 streams at once; 200 streams name an
    // operation it does not know while their sender is still writing.
    let mut limits = pos_p2p::Limits::default();
    limits.max_streams_per_connection = 16;
    let server = P2P::new(config(60).limits(limits)).unwrap();
    let client = P2P::new(config(61)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let chunk = vec![5u8; 64 * 1024];
    for i in 0..200 {
        let mut stream = tokio::time::timeout(Duration::from_secs(5), peer.new_stream())
            .await
            .unwrap_or_else(|_| panic!("stream {i}: no stream slot came back"))
            .unwrap();
        stream.write_all(&NewerHeader.to_bytes()).await.unwrap();
        // Keep writing until the refusal arrives; the sender sees why.
        let error = loop {
            if let Err(error) = stream.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(
            rejection(&error),
            Some(StreamRejection::UnknownOperation),
            "stream {i}: {error}"
        );
        let mut reply = Vec::new();
        let read = stream.read_to_end(&mut reply).await.unwrap_err();
        assert_eq!(rejection(&read), Some(StreamRejection::UnknownOperation));
    }
    // The connection still serves the operations both sides know.
    crate::common::ping(&client, &server).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_header_is_refused_with_its_reason() {
    let server = P2P::new(config(62)).unwrap();
    let client = P2P::new(config(63)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.unwrap();
    // A Ping header with a byte too many in its frame.
    stream.write_all(&[2, 0, 0]).await.unwrap();
    // The refusal may already be back: then finishing fails with it too.
    if let Err(error) = stream.close().await {
        assert_eq!(rejection(&error), Some(StreamRejection::MalformedHeader));
    }
    let mut reply = Vec::new();
    let error = stream.read_to_end(&mut reply).await.unwrap_err();
    assert_eq!(rejection(&error), Some(StreamRejection::MalformedHeader));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_makes_up_identities_cannot_grow_the_peer_table() {
    let mut victim_config = config(64);
    victim_config.node.limits.max_remembered_peers = 8;
    let victim = P2P::new(victim_config).unwrap();
    let addr = victim.listen_addrs()[0];
    for n in 0..40u8 {
        let mut seed = [0xa5; 32];
        seed[0] = n;
        let config = P2PConfig::new(Identity::from_bytes(&seed), "it", "1.0.0".parse().unwrap())
            .unwrap()
            .listen(["127.0.0.1:0".parse().unwrap()])
            .discovery(false);
        let stranger = P2P::new(config).unwrap();
        stranger.connect(addr, None).await.unwrap();
        stranger.shutdown().await;
    }
    // Wait for the victim to see the last one go.
    for _ in 0..200 {
        if victim.peers().values().all(|p| !p.is_connected()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let known = victim.peers().len();
    assert!(known <= 8, "{known} peers remembered");
    victim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_waiting_for_stream_credit_is_woken_when_a_stream_ends() {
    let mut limits = pos_p2p::Limits::default();
    limits.max_streams_per_connection = 4;
    let server = P2P::new(config(65).limits(limits)).unwrap();
    let client = P2P::new(config(66)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    // Four echo streams hold every slot.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = peer.new_stream().await.unwrap();
        stream
            .write_all(&TestHeader::Echo.to_bytes())
            .await
            .unwrap();
        open.push(stream);
    }
    let waiting = {
        let peer = peer.clone();
        tokio::spawn(async move { peer.new_stream().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the fifth stream waits for credit");
    // One stream ends on both sides: its slot comes back, and the waiting
    // task is woken (not left parked).
    let mut first = open.remove(0);
    first.close().await.unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    drop(first);
    let fifth = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting sender is woken")
        .unwrap();
    assert!(fifth.is_ok());
    client.shutdown().await;
    server.shutdown().await;
}

/// A task blocked reading a stream is woken when its own node shuts down,
/// and the read fails rather than waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_read_is_woken_when_its_node_shuts_down() {
    let server = P2P::new(config(67)).unwrap();
    let client = P2P::new(config(68)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.unwrap();
    // The echo server waits for data: nothing comes back yet.
    stream
        .write_all(&TestHeader::Echo.to_bytes())
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        stream.read(&mut buf).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reader.is_finished(), "the read waits for data");
    client.shutdown().await;
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the blocked read is woken")
        .unwrap();
    assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
    server.shutdown().await;
}

/// A task blocked reading a stream is woken when the peer goes away (here:
/// the peer's node shuts down and closes the connection), and the read
/// fails rather than waiting for ever. The wake-up comes from the Node's
/// per-stream events at disconnection; the driver adds none of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_read_is_woken_when_its_peer_goes_away() {
    let server = P2P::new(config(69)).unwrap();
    let client = P2P::new(config(70)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.unwrap();
    stream
        .write_all(&TestHeader::Echo.to_bytes())
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        stream.read(&mut buf).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reader.is_finished(), "the read waits for data");
    server.shutdown().await;
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the blocked read is woken")
        .unwrap();
    assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
    client.shutdown().await;
}

/// A stream the peer resets once its header has arrived still yields the
/// header first (the node received it whole), then the reset with its
/// code: the bytes read before a reset are not lost in the same read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_the_header_yields_the_header_then_the_reset() {
    let server = P2P::new(config(98)).unwrap();
    let client = P2P::new(config(99)).unwrap();
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.unwrap();
    let header = TestHeader::Echo.to_bytes();
    stream.write_all(&header).await.unwrap();
    let mut incoming = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .expect("in time")
        .expect("a stream");
    stream.reset(0x1234).unwrap();
    // Let the reset arrive before the first read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut buf = [0u8; 1024];
    let n = incoming.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], &header[..]);
    let error = incoming.read(&mut buf).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    let reset = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<StreamReset>());
    assert_eq!(reset, Some(&StreamReset(0x1234)));
    client.shutdown().await;
    server.shutdown().await;
}

/// Once shutdown has begun, `new_stream` fails with `Shutdown`, not as a
/// dial that could not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_stream_during_shutdown_fails_with_shutdown() {
    use futures_util::FutureExt;
    let server = P2P::new(config(100)).unwrap();
    let client = P2P::new(config(101)).unwrap();
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    // Connected, so that shutdown cannot end before the server acknowledged
    // the close (without a connection the driver may stop at once, on
    // another worker thread, and the test would not see shutdown under
    // way).
    client
        .connect(server.listen_addrs()[0], Some(server.local_identity()))
        .await
        .unwrap();
    // Shutdown begins (and is then left to finish on its own).
    assert!(client.shutdown().now_or_never().is_none());
    let result = peer.new_stream().await;
    assert!(
        matches!(result, Err(pos_p2p::NewStreamError::Shutdown)),
        "{result:?}"
    );
    server.shutdown().await;
}

/// A stream that ends right after its header (an operation without a
/// payload) reads as the header, then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_with_its_header_reads_as_the_header_then_the_end() {
    let server = P2P::new(config(104)).unwrap();
    let client = P2P::new(config(105)).unwrap();
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.unwrap();
    let header = TestHeader::Ping.to_bytes();
    stream.write_all(&header).await.unwrap();
    stream.close().await.unwrap();
    let mut incoming = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .expect("in time")
        .expect("a stream");
    // Let the end arrive with the header, before the first read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut everything = Vec::new();
    incoming.read_to_end(&mut everything).await.unwrap();
    assert_eq!(everything, header);
    client.shutdown().await;
    server.shutdown().await;
}

/// Dropping a stream mid-way gives its slot back on both sides: four
/// streams the client dropped without finishing do not hold the server's
/// four slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_give_their_slots_back() {
    let mut server_config = config(106);
    server_config.node.limits.max_streams_per_connection = 4;
    let server = P2P::new(server_config).unwrap();
    let client = P2P::new(config(107)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    for round in 0..3 {
        let mut open = Vec::new();
        for _ in 0..4 {
            let mut stream = tokio::time::timeout(Duration::from_secs(5), peer.new_stream())
                .await
                .unwrap_or_else(|_| panic!("round {round}: a slot came back"))
                .unwrap();
            stream
                .write_all(&TestHeader::Echo.to_bytes())
                .await
                .unwrap();
            stream.write_all(b"half an echo").await.unwrap();
            open.push(stream);
        }
        drop(open);
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// Reset and stop codes are the application's: below 0x100 they are the
/// protocol's (PROTOCOL.md §3.1), and a code must fit a QUIC varint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_stop_take_only_application_codes() {
    let server = P2P::new(config(108)).unwrap();
    let client = P2P::new(config(109)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.unwrap();
    for code in [0, 0x5, 0xff, 1 << 62, u64::MAX] {
        let reset = stream.reset(code).unwrap_err();
        assert_eq!(reset.kind(), io::ErrorKind::InvalidInput, "reset {code:#x}");
        let stop = stream.stop(code).unwrap_err();
        assert_eq!(stop.kind(), io::ErrorKind::InvalidInput, "stop {code:#x}");
    }
    stream.stop((1 << 62) - 1).unwrap();
    stream.reset(0x100).unwrap();
    client.shutdown().await;
    server.shutdown().await;
}
