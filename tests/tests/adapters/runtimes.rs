//! Every runtime combination: connect by address, Hello, metadata, ping.

use std::time::Duration;

use pos_p2p::{P2P, RuntimeKind};

use crate::common::{config_with, connect_and_check, ping, serve, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_to_tokio() {
    let a = start(1, RuntimeKind::Tokio);
    let b = start(2, RuntimeKind::Tokio);
    tokio::spawn(serve(b.clone()));
    connect_and_check(&a, &b).await;
    for _ in 0..3 {
        ping(&a, &b).await.expect("ping");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[async_std::test]
async fn async_std_to_async_std() {
    let a = start(3, RuntimeKind::AsyncStd);
    let b = start(4, RuntimeKind::AsyncStd);
    async_std::task::spawn(serve(b.clone()));
    connect_and_check(&a, &b).await;
    ping(&a, &b).await.expect("ping");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn smol_to_smol() {
    smol::block_on(async {
        let a = start(5, RuntimeKind::AsyncStd);
        let b = start(6, RuntimeKind::AsyncStd);
        let server = smol::spawn(serve(b.clone()));
        connect_and_check(&a, &b).await;
        ping(&a, &b).await.expect("ping");
        a.shutdown().await;
        b.shutdown().await;
        server.await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_to_async_std_and_back() {
    let a = start(7, RuntimeKind::Tokio);
    let b = start(8, RuntimeKind::AsyncStd);
    tokio::spawn(serve(a.clone()));
    tokio::spawn(serve(b.clone()));
    connect_and_check(&a, &b).await;
    ping(&a, &b).await.expect("tokio pings async-std");
    ping(&b, &a).await.expect("async-std pings tokio");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback() {
    let listen = "[::1]:0".parse().unwrap();
    let v = pos_p2p::semver::Version::new(1, 0, 0);
    let a = P2P::new(config_with(9, v.clone(), listen)).unwrap();
    let b = P2P::new(config_with(10, v, listen)).unwrap();
    assert!(b.listen_addrs()[0].is_ipv6());
    tokio::spawn(serve(b.clone()));
    // A peer added by an IPv6 literal, dialed on demand by new_stream.
    let addr = format!("[::1]:{}", b.listen_addrs()[0].port())
        .parse()
        .unwrap();
    a.add_peer(b.local_identity(), addr);
    ping(&a, &b).await.expect("ping over IPv6");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_drop_release_the_sockets() {
    let a = start(11, RuntimeKind::Tokio);
    let b = start(12, RuntimeKind::AsyncStd);
    tokio::spawn(serve(b.clone()));
    connect_and_check(&a, &b).await;
    let (port_a, port_b) = (a.listen_addrs()[0], b.listen_addrs()[0]);
    let events = b.events();
    a.shutdown().await;
    assert!(a.is_stopped());
    // b is told that a went away, with a reason.
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("event in time");
    assert!(
        matches!(event, Some(pos_p2p::P2PEvent::PeerDisconnected { .. })),
        "{event:?}"
    );
    // The socket is closed: the port can be bound again.
    std::net::UdpSocket::bind(port_a).expect("a's port is free after shutdown");
    b.shutdown().await;
    let _ = port_b;
    // Dropping the last handle (no shutdown) stops the driver and frees the
    // socket too, on either runtime.
    for runtime in [RuntimeKind::Tokio, RuntimeKind::AsyncStd] {
        let c = start(13, runtime);
        let port = c.listen_addrs()[0];
        drop(c);
        assert!(
            wait_until_bindable(port).await,
            "{runtime:?}: dropping P2P releases its socket"
        );
    }
}

async fn wait_until_bindable(port: std::net::SocketAddr) -> bool {
    let mut freed = false;
    for _ in 0..100 {
        if std::net::UdpSocket::bind(port).is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    freed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_an_already_connected_peer_returns() {
    let a = start(14, RuntimeKind::Tokio);
    let b = start(15, RuntimeKind::Tokio);
    connect_and_check(&a, &b).await;
    // Again from the same side, and from the other side: both dials finish
    // although neither makes the peer "newly" connected.
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        a.connect(b.listen_addrs()[0], Some(b.local_identity())),
    )
    .await
    .expect("a second dial returns");
    assert_eq!(again.unwrap(), b.local_identity());
    let back = tokio::time::timeout(
        Duration::from_secs(5),
        b.connect(a.listen_addrs()[0], Some(a.local_identity())),
    )
    .await
    .expect("a dial back returns");
    assert_eq!(back.unwrap(), a.local_identity());
    a.shutdown().await;
    b.shutdown().await;
}
