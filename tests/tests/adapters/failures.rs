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
    let mut cfg = config(66);
    cfg.node.timeouts.handshake = Duration::from_secs(1);
    let a = P2P::with_runtime(cfg, RuntimeKind::Tokio).unwrap();
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
