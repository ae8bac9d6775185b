//! Failures surface as typed errors and events on both sides, in bounded
//! time.

use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::{DisconnectReason, NewStreamError, P2P, P2PEvent, RuntimeKind};

use crate::common::{TestHeader, config, config_with, handle, start};

async fn next_failure(events: &mut pos_p2p::Events) -> DisconnectReason {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event in time")
            .expect("node running");
        if let P2PEvent::ConnectFailed { reason, .. } = event {
            return reason;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_rejection_is_typed_on_both_sides() {
    let listen = "127.0.0.1:0".parse().unwrap();
    let a = P2P::new(config_with(61, Version::new(1, 0, 0), listen)).unwrap();
    let b = P2P::new(config_with(62, Version::new(2, 0, 0), listen)).unwrap();
    let (mut events_a, mut events_b) = (a.events(), b.events());
    let peer = a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let error = peer.new_stream().await.expect_err("rejected");
    let NewStreamError::Unreachable(DisconnectReason::VersionRejected(rejection)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(rejection.local.app, Version::new(1, 0, 0));
    assert_eq!(rejection.remote.app, Version::new(2, 0, 0));
    assert!(matches!(
        next_failure(&mut events_a).await,
        DisconnectReason::VersionRejected(_)
    ));
    let at_b = next_failure(&mut events_b).await;
    assert_eq!(at_b, DisconnectReason::RejectedByPeer(rejection.clone()));
    // The same readable reason on both sides.
    assert!(at_b.to_string().contains(&rejection.to_string()));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_mismatch_is_typed_on_both_sides() {
    let a = start(63, RuntimeKind::Tokio);
    let b = start(64, RuntimeKind::Tokio);
    let impostor_of = pos_p2p::Identity::from_bytes(&[65; 32]).to_remote_identity();
    let mut events_b = b.events();
    // a believes node 65 lives at b's address.
    let peer = a.add_peer(impostor_of, b.listen_addrs()[0]);
    let error = peer.new_stream().await.expect_err("wrong node answers");
    assert_eq!(
        error,
        NewStreamError::Unreachable(DisconnectReason::IdentityMismatch {
            expected: impostor_of,
            actual: b.local_identity()
        })
    );
    assert_eq!(
        next_failure(&mut events_b).await,
        DisconnectReason::NotExpectedByPeer
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peers_fail_in_bounded_time() {
    let mut timeouts = pos_p2p::Timeouts::default();
    timeouts.handshake = Duration::from_secs(1);
    let a = P2P::with_runtime(config(66).timeouts(timeouts), RuntimeKind::Tokio).unwrap();
    // Nobody listens on this port.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = a.add_peer(
        pos_p2p::Identity::from_bytes(&[67; 32]).to_remote_identity(),
        silent.local_addr().unwrap(),
    );
    let started = std::time::Instant::now();
    let error = peer.new_stream().await.expect_err("nobody answers");
    // The reason is the timeout itself, not a generic failure.
    assert!(
        matches!(
            error,
            NewStreamError::Unreachable(
                DisconnectReason::HandshakeTimeout | DisconnectReason::TimedOut
            )
        ),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let error = a
        .connect(silent.local_addr().unwrap(), None)
        .await
        .expect_err("nobody answers");
    assert!(
        matches!(
            error,
            pos_p2p::ConnectError::Failed(
                DisconnectReason::HandshakeTimeout | DisconnectReason::TimedOut
            )
        ),
        "{error:?}"
    );
    a.shutdown().await;
}

#[test]
fn a_peer_that_vanishes_mid_transfer_fails_reads_and_writes_within_the_idle_timeout() {
    // The vanishing node runs on its own tokio runtime; dropping that
    // runtime kills its driver without a word, like a crashed process.
    let doomed_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let doomed = doomed_rt.block_on(async {
        let b = start(71, RuntimeKind::Tokio);
        let server = b.clone();
        tokio::spawn(async move {
            while let Some(stream) = server.accept().await {
                tokio::spawn(handle(stream));
            }
        });
        b
    });
    let (doomed_id, doomed_addr) = (doomed.local_identity(), doomed.listen_addrs()[0]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = config(72);
        cfg.node.timeouts.idle = Duration::from_secs(2);
        cfg.node.timeouts.keep_alive = Duration::from_millis(500);
        let a = P2P::with_runtime(cfg, RuntimeKind::Tokio).unwrap();
        let peer = a.add_peer(doomed_id, doomed_addr);
        let mut writer = peer.new_stream().await.unwrap();
        writer
            .write_all(&TestHeader::Sink.to_bytes())
            .await
            .unwrap();
        writer.write_all(&[0u8; 100_000]).await.unwrap();
        let mut reader = peer.new_stream().await.unwrap();
        reader
            .write_all(&TestHeader::Echo.to_bytes())
            .await
            .unwrap();
        reader.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).await.unwrap();

        // The peer vanishes.
        doomed_rt.shutdown_background();
        let vanished = std::time::Instant::now();

        let write_result = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = writer.write_all(&[0u8; 65536]).await {
                    return e;
                }
            }
        })
        .await
        .expect("the writer does not hang");
        let read_result = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("the reader does not hang");
        assert!(read_result.is_err(), "{read_result:?}");
        assert_eq!(
            write_result.kind(),
            std::io::ErrorKind::NotConnected,
            "{write_result}"
        );
        assert!(
            vanished.elapsed() < Duration::from_secs(5),
            "{:?}",
            vanished.elapsed()
        );
        assert!(!peer.is_connected());
        a.shutdown().await;
    });
    drop(doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_requirement_set_on_the_config_refuses_older_peers() {
    // a requires 1.3 or later: b's 1.2 is compatible by semver, but not
    // enough for a; c's 1.3 is.
    let listen = "127.0.0.1:0".parse().unwrap();
    let policy = pos_p2p::VersionPolicy::default()
        .require_app_version(">=1.3".parse().expect("a valid requirement"));
    let a =
        P2P::new(config_with(190, Version::new(1, 4, 0), listen).version_policy(policy)).unwrap();
    let b = P2P::new(config_with(191, Version::new(1, 2, 0), listen)).unwrap();
    let c = P2P::new(config_with(192, Version::new(1, 3, 0), listen)).unwrap();
    let error = a
        .add_peer(b.local_identity(), b.listen_addrs()[0])
        .new_stream()
        .await
        .expect_err("b is too old for a");
    let NewStreamError::Unreachable(DisconnectReason::VersionRejected(rejection)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(rejection.remote.app, Version::new(1, 2, 0));
    a.add_peer(c.local_identity(), c.listen_addrs()[0])
        .new_stream()
        .await
        .expect("c is new enough");
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_stats_show_the_connection_in_use() {
    let a = start(193, RuntimeKind::Tokio);
    let b = start(194, RuntimeKind::Tokio);
    tokio::spawn(crate::common::serve(b.clone()));
    let peer = a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    assert_eq!(peer.stats(), None, "not connected yet");
    crate::common::ping(&a, &b).await.expect("ping");
    let stats = peer.stats().expect("connected");
    assert_eq!(stats.remote_addr, b.listen_addrs()[0]);
    assert!(
        stats.rtt > Duration::ZERO && stats.rtt < Duration::from_secs(5),
        "{stats:?}"
    );
    assert!(
        stats.bytes_sent > 0 && stats.bytes_received > 0,
        "{stats:?}"
    );
    assert!(
        stats.packets_sent > 0 && stats.congestion_window > 0,
        "{stats:?}"
    );
    assert!(stats.mtu >= 1200, "{stats:?}");
    // Bytes sent grow with what is sent.
    let before = stats.bytes_sent;
    let mut stream = peer.new_stream().await.expect("opens");
    stream
        .write_all(&TestHeader::Sink.to_bytes())
        .await
        .expect("writes");
    stream.write_all(&[7u8; 100_000]).await.expect("writes");
    stream.close().await.expect("finishes");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("reads");
    let after = peer.stats().expect("connected").bytes_sent;
    assert!(after >= before + 100_000, "{before} -> {after}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_p2p_shuts_the_node_down_under_live_handles() {
    let a = start(195, RuntimeKind::Tokio);
    let b = start(196, RuntimeKind::Tokio);
    tokio::spawn(crate::common::serve(b.clone()));
    let peer = a.add_peer(b.local_identity(), b.listen_addrs()[0]);
    let mut stream = peer.new_stream().await.expect("opens");
    stream
        .write_all(&TestHeader::Echo.to_bytes())
        .await
        .expect("writes");
    stream.write_all(b"live").await.expect("writes");
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.expect("echoed");
    let (events_a, events_b) = (a.events(), b.events());
    let a_id = a.local_identity();
    // The application lets go of its node, keeping a Peer, a stream and
    // an event subscription.
    drop(a);
    let error = peer.new_stream().await.expect_err("the node is gone");
    assert_eq!(error, NewStreamError::Shutdown);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the read ends in time");
    assert!(read.is_err(), "{read:?}");
    // The subscription ends; the peer sees the node go.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while events_a.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "a's events end");
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events_b.recv().await {
                Some(P2PEvent::PeerDisconnected { peer, .. }) if peer == a_id => return,
                Some(_) => {}
                None => panic!("b stopped"),
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "b sees a disconnect");
    b.shutdown().await;
}
