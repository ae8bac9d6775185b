//! Manual peers: added by address or host name, kept connected, re-dialed
//! with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_p2p::semver::Version;
use pos_p2p::{
    DisconnectReason, ManualError, ManualPeer, ManualStatus, P2P, PeerAddr, RemoteIdentity,
    ResolveError,
};

use crate::common::config_with;

/// A loopback port reserved by a silent socket: nothing answers there,
/// and nothing else can take the port until the socket is dropped, right
/// before the node that needs the port binds it.
fn reserved_port() -> (std::net::UdpSocket, SocketAddr) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn node(n: u8, listen: SocketAddr) -> Arc<P2P> {
    let mut config = config_with(n, Version::new(1, 0, 0), listen);
    config.node.timeouts.handshake = Duration::from_millis(500);
    P2P::new(config).expect("node starts")
}

/// Poll `a`'s one manual peer until `done` holds; panics after `limit`.
pub(crate) async fn wait_for(
    a: &P2P,
    limit: Duration,
    done: impl Fn(&ManualPeer) -> bool,
) -> ManualPeer {
    let deadline = Instant::now() + limit;
    loop {
        let peers = a.manual_peers();
        assert_eq!(peers.len(), 1);
        if done(&peers[0]) {
            return peers[0].clone();
        }
        assert!(Instant::now() < deadline, "gave up waiting: {:?}", peers[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn connected_to(identity: RemoteIdentity) -> impl Fn(&ManualPeer) -> bool {
    move |p| p.status == ManualStatus::Connected && p.identity == Some(identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_peer_is_dialed_again_until_it_comes_up_and_its_identity_is_learned() {
    let a = node(81, "127.0.0.1:0".parse().unwrap());
    let (reserved, addr) = reserved_port();
    a.add_manual_peer(addr, None);
    let waiting = wait_for(&a, Duration::from_secs(5), |p| {
        matches!(p.status, ManualStatus::Waiting { failures: 1.., .. })
    })
    .await;
    let ManualStatus::Waiting { last_error, .. } = &waiting.status else {
        unreachable!()
    };
    assert!(
        matches!(last_error, ManualError::Failed(_)),
        "{last_error:?}"
    );
    assert_eq!(waiting.identity, None);
    // Dialed again after a backoff that grows (1 s, then 2 s, each 75–100 %;
    // the exact schedule is the core's `Backoff`, tested there): what is
    // left of the wait never exceeds the documented delay, however late
    // this test looks.
    let again = wait_for(&a, Duration::from_secs(10), |p| {
        matches!(p.status, ManualStatus::Waiting { failures: 2.., .. })
    })
    .await;
    let ManualStatus::Waiting { retry_in, .. } = again.status else {
        unreachable!()
    };
    assert!(retry_in <= Duration::from_secs(2), "{retry_in:?}");

    drop(reserved);
    let b = node(82, addr);
    // The next attempt comes within the backoff (≤ 2 s after two
    // failures) plus a handshake.
    let up = wait_for(&a, Duration::from_secs(6), connected_to(b.local_identity())).await;
    assert_eq!(up.expected, None);
    let peer = a
        .peers()
        .get(&b.local_identity())
        .expect("in the peer table");
    assert!(peer.is_connected());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manual_peer_is_reconnected() {
    let a = node(83, "127.0.0.1:0".parse().unwrap());
    let b = node(84, "127.0.0.1:0".parse().unwrap());
    let addr = b.listen_addrs()[0];
    a.add_manual_peer(addr, Some(b.local_identity()));
    wait_for(&a, Duration::from_secs(5), connected_to(b.local_identity())).await;
    b.shutdown().await;
    drop(b);
    wait_for(&a, Duration::from_secs(5), |p| {
        p.status != ManualStatus::Connected
    })
    .await;
    let b = node(84, addr);
    wait_for(&a, Duration::from_secs(8), connected_to(b.local_identity())).await;
    assert!(a.remove_manual_peer(&PeerAddr::Addr(addr)));
    assert!(a.manual_peers().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_is_resolved_and_the_given_identity_pinned() {
    let a = node(85, "127.0.0.1:0".parse().unwrap());
    let b = node(86, "127.0.0.1:0".parse().unwrap());
    let host: PeerAddr = format!("localhost:{}", b.listen_addrs()[0].port())
        .parse()
        .unwrap();
    a.add_manual_peer(host, Some(b.local_identity()));
    wait_for(&a, Duration::from_secs(5), connected_to(b.local_identity())).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_peer_that_proves_another_identity_is_refused_with_the_reason() {
    let a = node(87, "127.0.0.1:0".parse().unwrap());
    let b = node(88, "127.0.0.1:0".parse().unwrap());
    let someone_else = pos_p2p::Identity::from_bytes(&[89; 32]).to_remote_identity();
    a.add_manual_peer(b.listen_addrs()[0], Some(someone_else));
    let waiting = wait_for(&a, Duration::from_secs(5), |p| {
        matches!(p.status, ManualStatus::Waiting { .. })
    })
    .await;
    let ManualStatus::Waiting {
        last_error,
        retry_in,
        ..
    } = &waiting.status
    else {
        unreachable!()
    };
    assert!(
        matches!(
            last_error,
            ManualError::Failed(DisconnectReason::IdentityMismatch { expected, .. })
                if *expected == someone_else
        ),
        "{last_error:?}"
    );
    assert!(*retry_in <= Duration::from_secs(1));
    assert!(
        !a.peers().contains(&b.local_identity()) || !a.peers()[&b.local_identity()].is_connected()
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_does_not_resolve_is_retried_with_the_reason() {
    let a = node(90, "127.0.0.1:0".parse().unwrap());
    // `.invalid` never resolves (RFC 2606).
    let addr: PeerAddr = "nothing-here.invalid:4433".parse().unwrap();
    a.add_manual_peer(addr.clone(), None);
    let waiting = wait_for(&a, Duration::from_secs(40), |p| {
        matches!(p.status, ManualStatus::Waiting { .. })
    })
    .await;
    let ManualStatus::Waiting { last_error, .. } = &waiting.status else {
        unreachable!()
    };
    assert!(
        matches!(
            last_error,
            ManualError::Resolve(ResolveError::Failed(_) | ResolveError::NoAddress)
        ),
        "{last_error:?}"
    );
    // Removing it while it waits (or resolves) leaves nothing behind.
    assert!(a.remove_manual_peer(&addr));
    assert!(a.manual_peers().is_empty());
    a.shutdown().await;
}
