//! Dials through the async API (the Node's one dial per peer, shared by
//! every task that waits for the peer), and the events a connection's
//! life publishes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use std::net::SocketAddr;

use pos_p2p::{DisconnectReason, Identity, NewStreamError, P2P, RemoteIdentity};

use crate::common::{config, handle};

async fn serve(p2p: Arc<P2P>) {
    while let Some(stream) = p2p.accept().await {
        tokio::spawn(handle(stream));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_open_streams_to_one_peer_at_once_share_one_connection() {
    let server = P2P::new(config(80)).unwrap();
    let client = P2P::new(config(81)).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = client.add_peer(server.local_identity(), server.listen_addrs()[0]);
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        join_all((0..20).map(|_| peer.new_stream())),
    )
    .await
    .expect("in time");
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    assert_eq!(client.stats().connections_established, 1);
    // The listener counts it once the dialer's last flight arrives.
    for _ in 0..200 {
        if server.stats().connections_established > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats().connections_established, 1);
    // And `connect` to the connected peer joins it rather than dialing.
    let id = client
        .connect(server.listen_addrs()[0], Some(server.local_identity()))
        .await
        .unwrap();
    assert_eq!(id, server.local_identity());
    assert_eq!(client.stats().connections_established, 1);
    drop(opened);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_waiting_for_a_dial_that_fails_gets_its_reason() {
    let server = P2P::new(config(82)).unwrap();
    let client = P2P::new(config(83)).unwrap();
    // The peer the client looks for is not the node at that address.
    let absent = Identity::from_bytes(&[84; 32]).to_remote_identity();
    let peer = client.add_peer(absent, server.listen_addrs()[0]);
    let failed = tokio::time::timeout(
        Duration::from_secs(10),
        join_all((0..8).map(|_| peer.new_stream())),
    )
    .await
    .expect("in time");
    for result in &failed {
        assert!(
            matches!(
                result,
                Err(NewStreamError::Unreachable(DisconnectReason::IdentityMismatch { expected, .. }))
                    if *expected == absent
            ),
            "{result:?}"
        );
    }
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_waits_out_a_cancelled_caller_and_serves_the_next() {
    let server = P2P::new(config(85)).unwrap();
    let client = P2P::new(config(86)).unwrap();
    tokio::spawn(serve(server.clone()));
    let addr = server.listen_addrs()[0];
    let expected = Some(server.local_identity());
    // A caller that gives up after starting the dial: polled once (the
    // dial starts), then dropped. (On a loaded machine the handshake may
    // even finish within that poll: the next caller is served either way.)
    let _ = client.connect(addr, expected).now_or_never();
    // The next caller gets the peer.
    let id = tokio::time::timeout(Duration::from_secs(10), client.connect(addr, expected))
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(id, server.local_identity());
    client.shutdown().await;
    server.shutdown().await;
}

/// Every way a wait for a dial can end lets go of it: nothing is left in
/// the adapter's or the Node's tables afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_dials_leave_nothing_behind() {
    let server = P2P::new(config(87)).unwrap();
    let client = P2P::new(config(88)).unwrap();
    tokio::spawn(serve(server.clone()));
    let addr = server.listen_addrs()[0];
    let expected = Some(server.local_identity());
    let empty = |p2p: &P2P| {
        let sizes = p2p.table_sizes();
        // The dial to the silent address may still be under way.
        sizes.dials == 0 && sizes.node_dials <= 1
    };
    // A cancelled `connect` to an address that never answers: its wait
    // is gone at once, the Node's dial goes on (to its handshake timeout).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = silent.local_addr().unwrap();
    assert!(client.connect(nowhere, None).now_or_never().is_none());
    let sizes = client.table_sizes();
    assert_eq!((sizes.dials, sizes.node_dials), (0, 1), "{sizes:?}");
    // One that succeeds, several joined.
    let joined = join_all((0..4).map(|_| client.connect(addr, expected))).await;
    assert!(joined.iter().all(Result::is_ok), "{joined:?}");
    assert!(empty(&client), "{:?}", client.table_sizes());
    // `new_stream`s that dial, after the peer went away.
    client.disconnect(&server.local_identity(), "again");
    for _ in 0..200 {
        if client.peers().values().all(|p| !p.is_connected()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peer = client.peers()[&server.local_identity()].clone();
    let opened = join_all((0..4).map(|_| peer.new_stream())).await;
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    drop(opened);
    assert!(empty(&client), "{:?}", client.table_sizes());
    // Dials that fail.
    let wrong = Some(Identity::from_bytes(&[89; 32]).to_remote_identity());
    let failed = join_all((0..4).map(|_| client.connect(addr, wrong))).await;
    assert!(failed.iter().all(Result::is_err), "{failed:?}");
    assert!(empty(&client), "{:?}", client.table_sizes());
    client.shutdown().await;
    server.shutdown().await;
}

async fn connected(events: &mut pos_p2p::Events) -> (RemoteIdentity, SocketAddr) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(pos_p2p::P2PEvent::PeerConnected { peer, addr })) => return (peer, addr),
            Ok(Some(_)) => {}
            other => panic!("no PeerConnected: {other:?}"),
        }
    }
}

/// Both sides hear `PeerConnected` with the peer and its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_hear_that_the_peer_connected() {
    let server = P2P::new(config(90)).unwrap();
    let client = P2P::new(config(91)).unwrap();
    let (mut server_events, mut client_events) = (server.events(), client.events());
    let addr = server.listen_addrs()[0];
    client.connect(addr, None).await.unwrap();
    let (peer, at) = connected(&mut client_events).await;
    assert_eq!((peer, at), (server.local_identity(), addr));
    let (peer, _) = connected(&mut server_events).await;
    assert_eq!(peer, client.local_identity());
    client.shutdown().await;
    server.shutdown().await;
}

/// The next event `pick` maps to `Some`, within 5 s.
async fn next_event<T>(
    events: &mut pos_p2p::Events,
    pick: impl Fn(pos_p2p::P2PEvent) -> Option<T>,
) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            other => panic!("not in time: {other:?}"),
        }
    }
}

/// A dialer of another protocol major is refused at ALPN: the listener
/// hears `IncomingRefused` with the address and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_incoming_connection_is_an_event() {
    let server = P2P::new(config(92)).unwrap();
    let mut newer = config(93);
    newer.node.versions.protocol = pos_p2p::semver::Version::new(7, 0, 0);
    let client = P2P::new(newer).unwrap();
    let mut events = server.events();
    let failed = client.connect(server.listen_addrs()[0], None).await;
    assert!(
        matches!(
            failed,
            Err(pos_p2p::ConnectError::Failed(
                DisconnectReason::AlpnMismatch
            ))
        ),
        "{failed:?}"
    );
    let (addr, reason) = next_event(&mut events, |e| match e {
        pos_p2p::P2PEvent::IncomingRefused { addr, reason } => Some((addr, reason)),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::AlpnMismatch);
    assert_eq!(addr, client.listen_addrs()[0]);
    client.shutdown().await;
    server.shutdown().await;
}

/// New metadata reaches the connected peer as `MetadataUpdated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_metadata_reaches_the_peer_as_an_event() {
    let server = P2P::new(config(94)).unwrap();
    let client = P2P::new(config(95)).unwrap();
    let mut events = server.events();
    client
        .connect(server.listen_addrs()[0], Some(server.local_identity()))
        .await
        .unwrap();
    let mut metadata = pos_p2p::Metadata::new();
    metadata.insert("name", "renamed").unwrap();
    client.set_metadata(metadata);
    let (peer, name) = next_event(&mut events, |e| match e {
        pos_p2p::P2PEvent::MetadataUpdated { peer, metadata } => {
            Some((peer, metadata.get("name").cloned()))
        }
        _ => None,
    })
    .await;
    assert_eq!(peer, client.local_identity());
    assert_eq!(name.as_deref(), Some("renamed"));
    client.shutdown().await;
    server.shutdown().await;
}

/// A subscriber that does not read keeps the oldest 1,024 events, loses
/// the rest, and is told how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told_how_many_events_it_lost() {
    let server = P2P::new(config(115)).unwrap();
    let client = P2P::new(config(116)).unwrap();
    let idle = server.events();
    client
        .connect(server.listen_addrs()[0], Some(server.local_identity()))
        .await
        .unwrap();
    const UPDATES: usize = 1_100;
    for i in 0..UPDATES {
        let mut metadata = pos_p2p::Metadata::new();
        metadata.insert("name", format!("name {i}")).unwrap();
        client.set_metadata(metadata);
    }
    // The server applied the last update (and published its event in the
    // same turn).
    let name = |server: &P2P| {
        let peer = server.peer(&client.local_identity())?;
        peer.metadata().get("name").cloned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while name(&server).as_deref() != Some("name 1099") {
        assert!(std::time::Instant::now() < deadline, "{:?}", name(&server));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One connection and 1,100 updates, of which the queue kept 1,024.
    assert_eq!(idle.lost(), 1 + UPDATES as u64 - 1_024);
    let next = || async {
        tokio::time::timeout(Duration::from_secs(5), idle.recv())
            .await
            .expect("queued")
            .expect("an event")
    };
    let first = next().await;
    assert!(
        matches!(first, pos_p2p::P2PEvent::PeerConnected { .. }),
        "{first:?}"
    );
    for i in 0..1_023 {
        match next().await {
            pos_p2p::P2PEvent::MetadataUpdated { metadata, .. } => {
                assert_eq!(metadata.get("name"), Some(&format!("name {i}")));
            }
            other => panic!("{other:?}"),
        }
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// `UnicastStream::finished` finishes the stream and returns once the
/// peer has every byte (that it waits for the acknowledgements is the
/// core's `send_status`, tested in virtual time); a peer that refuses the
/// stream makes it fail with the refusal's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_returns_once_the_peer_has_everything_and_fails_if_it_refused() {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    use pos_p2p::prelude::*;

    use crate::common::{TestHeader, serve};

    let sender = P2P::new(config(118)).unwrap();
    let receiver = P2P::new(config(119)).unwrap();
    tokio::spawn(serve(receiver.clone()));
    let peer = sender.add_peer(receiver.local_identity(), receiver.listen_addrs()[0]);

    // 1 MiB to the receiver's sink, which answers with the length it read.
    let mut stream = peer.new_stream().await.expect("a stream");
    stream
        .write_all(&TestHeader::Sink.to_bytes())
        .await
        .unwrap();
    let data = pos_p2p_tests::sim::payload(5, 1 << 20);
    stream.write_all(&data).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), stream.finished())
        .await
        .expect("in time")
        .expect("acknowledged");
    // Finishing again, or writing after it, is refused; the answer comes.
    assert!(stream.write_all(b"more").await.is_err());
    stream.finished().await.expect("still acknowledged");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(&answer[..8], &(data.len() as u64).to_be_bytes());

    // An operation the receiver does not know: it refuses the stream.
    let mut refused = peer.new_stream().await.expect("a stream");
    refused.write_all(&[1, 9]).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), refused.finished())
        .await
        .expect("in time")
        .expect_err("refused");
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<pos_p2p::StreamError>());
    assert_eq!(
        inner.and_then(pos_p2p::StreamError::rejection),
        Some(pos_p2p::StreamRejection::UnknownOperation),
        "{error:?}"
    );
    sender.shutdown().await;
    receiver.shutdown().await;
}
