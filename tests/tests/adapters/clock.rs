//! The adapter on a manual clock (`pos_p2p::testing::Clock`): time moves
//! only when the test moves it, so the adapter's schedules are asserted
//! exactly, and waits of seconds take none. The test polls for states
//! (readiness), never for durations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_p2p::semver::Version;
use pos_p2p::testing::Clock;
use pos_p2p::{DisconnectReason, ManualError, ManualPeer, ManualStatus, P2P, RuntimeKind};

use crate::common::config_with;

const HANDSHAKE: Duration = Duration::from_secs(3);

fn node(n: u8, clock: &Clock) -> Arc<P2P> {
    let mut config = config_with(n, Version::new(1, 0, 0), "127.0.0.1:0".parse().unwrap());
    config.node.timeouts.handshake = HANDSHAKE;
    P2P::with_clock(config, RuntimeKind::Tokio, clock.clone()).expect("node starts")
}

/// `a`'s one manual peer once `done` holds (polled; real time, generous:
/// only a lost wake-up makes it run out).
async fn until(a: &P2P, done: impl Fn(&ManualPeer) -> bool) -> ManualPeer {
    crate::manual::wait_for(a, Duration::from_secs(20), done).await
}

/// Move the clock by `by` and wait until `a`'s node has taken a turn at
/// the new time (so what follows sees its effects, or their absence).
async fn advance(a: &P2P, clock: &Clock, by: Duration) {
    clock.advance(by);
    let now = clock.now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.node_now() < now {
        assert!(
            Instant::now() < deadline,
            "the driver never saw the advance"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Shut `a` down while the clock runs (closing connections wait for QUIC's
/// timers).
async fn shutdown(a: Arc<P2P>, clock: &Clock) {
    let ticking = clock.clone();
    let ticker = tokio::spawn(async move {
        loop {
            ticking.advance(Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    a.shutdown().await;
    ticker.abort();
}

fn failures(p: &ManualPeer) -> Option<(u32, Duration)> {
    match &p.status {
        ManualStatus::Waiting {
            failures, retry_in, ..
        } => Some((*failures, *retry_in)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_manual_clock_a_manual_peer_is_redialed_exactly_when_its_backoff_ends() {
    let clock = Clock::manual();
    let a = node(117, &clock);
    // A port where nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    a.add_manual_peer(addr, None);
    until(&a, |p| p.status == ManualStatus::Connecting).await;

    // Real time passes, the clock does not: the handshake has not timed
    // out a moment before its deadline, and has right at it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.manual_peers()[0].status, ManualStatus::Connecting);
    advance(&a, &clock, HANDSHAKE - Duration::from_millis(1)).await;
    assert_eq!(a.manual_peers()[0].status, ManualStatus::Connecting);
    advance(&a, &clock, Duration::from_millis(1)).await;
    let failed = until(&a, |p| failures(p).is_some()).await;
    let ManualStatus::Waiting {
        retry_in,
        failures: count,
        last_error,
    } = failed.status
    else {
        unreachable!()
    };
    assert_eq!(count, 1);
    assert_eq!(
        last_error,
        ManualError::Failed(DisconnectReason::HandshakeTimeout)
    );
    // The first retry: 1 s, less up to a quarter of jitter.
    assert!(
        (Duration::from_millis(750)..=Duration::from_secs(1)).contains(&retry_in),
        "{retry_in:?}"
    );

    // The redial comes exactly when the backoff ends.
    advance(&a, &clock, retry_in - Duration::from_millis(1)).await;
    assert_eq!(
        failures(&a.manual_peers()[0]),
        Some((1, Duration::from_millis(1)))
    );
    advance(&a, &clock, Duration::from_millis(1)).await;
    until(&a, |p| p.status == ManualStatus::Connecting).await;

    // The second failure waits 2 s, less up to a quarter.
    advance(&a, &clock, HANDSHAKE).await;
    let again = until(&a, |p| failures(p).is_some()).await;
    let (count, retry_in) = failures(&again).unwrap();
    assert_eq!(count, 2);
    assert!(
        (Duration::from_millis(1500)..=Duration::from_secs(2)).contains(&retry_in),
        "{retry_in:?}"
    );
    drop(silent);
    shutdown(a, &clock).await;
}

/// Run `clock` in the background (`step` every millisecond) until the
/// returned task is aborted.
fn ticking(clock: &Clock, step: Duration) -> tokio::task::JoinHandle<()> {
    let clock = clock.clone();
    tokio::spawn(async move {
        loop {
            clock.advance(step);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_stream_waits_for_the_peers_stream_credit_for_stream_wait_then_fails() {
    use futures_util::AsyncWriteExt;
    use pos_p2p::prelude::*;

    use crate::common::{TestHeader, serve};

    const WAIT: Duration = Duration::from_secs(5);
    let clock = Clock::manual();
    let mut config =
        config_with(120, Version::new(1, 0, 0), "127.0.0.1:0".parse().unwrap()).stream_wait(WAIT);
    config.node.timeouts.handshake = HANDSHAKE;
    let opener = P2P::with_clock(config, RuntimeKind::Tokio, clock.clone()).unwrap();
    // A peer that allows two streams at once.
    let mut busy = config_with(121, Version::new(1, 0, 0), "127.0.0.1:0".parse().unwrap());
    busy.node.limits.max_streams_per_connection = 2;
    let server = P2P::new(busy).unwrap();
    tokio::spawn(serve(server.clone()));
    let peer = opener.add_peer(server.local_identity(), server.listen_addrs()[0]);

    let ticker = ticking(&clock, Duration::from_millis(10));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = peer.new_stream().await.expect("a stream");
        stream
            .write_all(&TestHeader::Sink.to_bytes())
            .await
            .unwrap();
        open.push(stream);
    }
    ticker.abort();
    let _ = ticker.await;

    // A third waits for credit: not a moment less than `stream_wait`.
    let third = tokio::spawn({
        let peer = peer.clone();
        async move { peer.new_stream().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    advance(&opener, &clock, WAIT - Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished(), "gave up before stream_wait");
    advance(&opener, &clock, Duration::from_millis(1)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("gave up in time")
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(pos_p2p::NewStreamError::Stream(
                pos_p2p::StreamError::StreamsExhausted
            ))
        ),
        "{outcome:?}"
    );

    // Once a stream ends, the credit comes back and a new one opens (the
    // clock runs at about the speed of real time now).
    let ticker = ticking(&clock, Duration::from_millis(1));
    // (The sink serves its streams one at a time: the first is the one it
    // is reading.)
    let mut done = open.remove(0);
    done.close().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::AsyncReadExt::read_to_end(&mut done, &mut answer),
    )
    .await
    .expect("the answer in time")
    .unwrap();
    drop(done);
    tokio::time::timeout(Duration::from_secs(20), peer.new_stream())
        .await
        .expect("in time")
        .expect("a stream once credit came back");
    ticker.abort();
    server.shutdown().await;
    shutdown(opener, &clock).await;
}
