//! The header router: routes by operation, refuses what it cannot serve
//! with the documented codes, contains a handler's panic to its stream,
//! bounds the handlers in flight, shuts down within its grace period, and
//! gates operations on the peer's version before anything is sent.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::{Version, VersionReq};
use pos_p2p::{
    NewStreamError, P2P, Router, RouterHandle, RouterStats, RuntimeKind, StreamError,
    StreamRejection, StreamReset, UnicastStream,
};

use crate::common::config_with;

/// The operations of these tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Echo everything, then finish.
    Echo,
    /// Write a little, then panic.
    Panic,
    /// Wait for the client's end, then answer `done`; with `forever`,
    /// never answer.
    Hold { forever: bool },
    /// A known operation that no route serves.
    Unrouted,
    /// Needs a peer of version 1.5 or later.
    Gated,
}

impl Header for Op {
    fn encode(&self, w: &mut Writer) {
        match self {
            Op::Echo => w.tag(0),
            Op::Panic => w.tag(1),
            Op::Hold { forever } => {
                w.tag(2);
                w.bool(*forever);
            }
            Op::Unrouted => w.tag(3),
            Op::Gated => w.tag(4),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.tag()? {
            0 => Op::Echo,
            1 => Op::Panic,
            2 => Op::Hold { forever: r.bool()? },
            3 => Op::Unrouted,
            4 => Op::Gated,
            tag => return Err(r.unknown_tag("Op", tag)),
        })
    }

    fn operation(&self) -> &'static str {
        match self {
            Op::Echo => "echo",
            Op::Panic => "panic",
            Op::Hold { .. } => "hold",
            Op::Unrouted => "unrouted",
            Op::Gated => "gated",
        }
    }

    fn requires(&self) -> Option<VersionReq> {
        match self {
            Op::Gated => Some(VersionReq::parse(">=1.5").expect("a valid requirement")),
            _ => None,
        }
    }
}

async fn echo(mut stream: UnicastStream) -> Result<(), pos_p2p::HandlerError> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
    }
    stream.close().await?;
    Ok(())
}

fn router(p2p: Arc<P2P>, grace: Duration) -> RouterHandle {
    Router::<Op>::new(p2p)
        .grace_period(grace)
        .route("echo", |_, stream| echo(stream))
        .route("gated", |_, stream| echo(stream))
        .route("panic", |_, mut stream| async move {
            stream.write_all(b"partial").await?;
            if stream.remote_identity().as_bytes()[0] != 0xff {
                panic!("the handler panics on purpose");
            }
            Ok(())
        })
        .route("hold", |op, mut stream| async move {
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            if op == (Op::Hold { forever: true }) {
                std::future::pending::<()>().await;
            }
            stream.write_all(b"done").await?;
            stream.close().await?;
            Ok(())
        })
        .spawn()
}

/// Two nodes, `a` connected to `b`; `b` runs version `version`.
async fn pair(n: u8, version: Version, runtime: RuntimeKind) -> (Arc<P2P>, Arc<P2P>) {
    let listen = "127.0.0.1:0".parse().expect("an address");
    let a = P2P::with_runtime(config_with(n, Version::new(1, 0, 0), listen), runtime)
        .expect("a starts");
    let b = P2P::with_runtime(config_with(n + 1, version, listen), runtime).expect("b starts");
    a.connect(b.listen_addrs()[0], Some(b.local_identity()))
        .await
        .expect("a connects to b");
    (a, b)
}

/// Open a stream from `a` to `b` with `bytes` as its first bytes, finish
/// it, and read the reply: the bytes, or the error.
async fn exchange(a: &P2P, b: &P2P, bytes: &[u8], then: &[u8]) -> io::Result<Vec<u8>> {
    let peer = a.peer(&b.local_identity()).expect("b is known");
    let mut stream = peer.new_stream().await.map_err(io::Error::other)?;
    stream.write_all(bytes).await?;
    stream.write_all(then).await?;
    stream.close().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply)
}

/// The reason a failed read carries: the peer's reset code, or the
/// stream's own error.
fn rejection(error: &io::Error) -> Option<StreamRejection> {
    let inner = error.get_ref()?;
    if let Some(reset) = inner.downcast_ref::<StreamReset>() {
        return Some(reset.rejection());
    }
    inner.downcast_ref::<StreamError>()?.rejection()
}

/// Run `test` or fail after 30 s: a router that stops serving fails the
/// test instead of hanging it (async-io's timer, which every runtime here
/// can run).
async fn within<T>(test: impl std::future::Future<Output = T>) -> T {
    use futures_util::future::{Either, select};
    let limit = smol::Timer::after(Duration::from_secs(30));
    match select(std::pin::pin!(test), limit).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("the test did not finish within 30 s"),
    }
}

/// Wait (in short sleeps of async-io's timer, which every runtime here
/// can run) until `done` holds of the router's statistics.
async fn until(handle: &RouterHandle, done: impl Fn(&RouterStats) -> bool) -> RouterStats {
    for _ in 0..2_000 {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    panic!("the router never got there: {:?}", handle.stats());
}

async fn routes_and_refusals(n: u8, runtime: RuntimeKind) {
    let (a, b) = pair(n, Version::new(1, 0, 0), runtime).await;
    let handle = router(b.clone(), Duration::from_secs(1));
    // A routed operation.
    let reply = exchange(&a, &b, &Op::Echo.to_bytes(), b"hello").await;
    assert_eq!(reply.expect("echo answers"), b"hello");
    // A known operation without a route, and a tag this version does not
    // know: both refused as unknown operations.
    let error = exchange(&a, &b, &Op::Unrouted.to_bytes(), b"")
        .await
        .expect_err("no route");
    assert_eq!(rejection(&error), Some(StreamRejection::UnknownOperation));
    let error = exchange(&a, &b, &[1, 9], b"")
        .await
        .expect_err("unknown tag");
    assert_eq!(rejection(&error), Some(StreamRejection::UnknownOperation));
    // A header whose fields do not decode (Hold without its flag).
    let error = exchange(&a, &b, &[1, 2], b"").await.expect_err("malformed");
    assert_eq!(rejection(&error), Some(StreamRejection::MalformedHeader));
    let stats = until(&handle, |s| s.completed == 1 && s.refused == 3).await;
    assert_eq!(stats.accepted, 4);
    assert_eq!(stats.in_flight, 0);
    let stats = handle.shutdown().await;
    assert_eq!(stats.completed, 1);
    assert!(b.is_stopped(), "the router's shutdown shut the node down");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_operation_and_refuses_with_the_documented_codes_on_tokio() {
    within(routes_and_refusals(170, RuntimeKind::Tokio)).await;
}

#[test]
fn routes_by_operation_and_refuses_with_the_documented_codes_on_smol() {
    smol::block_on(within(routes_and_refusals(172, RuntimeKind::AsyncStd)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_only_its_own_stream() {
    within(async {
        let (a, b) = pair(174, Version::new(1, 0, 0), RuntimeKind::Tokio).await;
        let handle = router(b.clone(), Duration::from_secs(1));
        // A handler in flight while another panics: it waits for its
        // client's end.
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let mut held = peer
            .open(&Op::Hold { forever: false })
            .await
            .expect("a stream opens");
        until(&handle, |s| s.in_flight == 1).await;
        // The panicking handler wrote "partial": the peer must not take it for
        // a whole reply.
        let error = exchange(&a, &b, &Op::Panic.to_bytes(), b"")
            .await
            .expect_err("the handler panicked");
        assert_eq!(rejection(&error), Some(StreamRejection::HandlerFailed));
        // The other handler, in flight meanwhile, and later ones are served.
        held.close().await.expect("finishes");
        let mut reply = Vec::new();
        held.read_to_end(&mut reply).await.expect("held answers");
        assert_eq!(reply, b"done");
        let reply = exchange(&a, &b, &Op::Echo.to_bytes(), b"still here").await;
        assert_eq!(reply.expect("echo answers"), b"still here");
        let stats = until(&handle, |s| s.completed == 2).await;
        assert_eq!(stats.panicked, 1);
        handle.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_handlers_within_the_grace_period_and_cancels_the_rest() {
    within(async {
        let (a, b) = pair(176, Version::new(1, 0, 0), RuntimeKind::Tokio).await;
        let handle = router(b.clone(), Duration::from_millis(1500));
        // 100 handlers in flight: 50 finish once their client ends its side,
        // 50 never do.
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let mut streams = Vec::new();
        for i in 0..100 {
            let forever = i % 2 == 1;
            let stream = peer
                .open(&Op::Hold { forever })
                .await
                .expect("a stream opens");
            streams.push((forever, stream));
        }
        until(&handle, |s| s.in_flight == 100).await;
        let shutdown = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.shutdown().await })
        };
        // The router no longer accepts, and the handlers in flight go on: the
        // finite ones answer their clients within the grace period.
        let mut clients = Vec::new();
        for (forever, mut stream) in streams {
            clients.push(tokio::spawn(async move {
                stream.close().await?;
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).await?;
                Ok::<_, io::Error>((forever, reply))
            }));
        }
        let stats = shutdown.await.expect("joins");
        assert_eq!(stats.completed, 50, "{stats:?}");
        assert_eq!(stats.cancelled, 50, "{stats:?}");
        assert_eq!(stats.in_flight, 0);
        assert!(b.is_stopped());
        for client in clients {
            match client.await.expect("joins") {
                Ok((false, reply)) => assert_eq!(reply, b"done"),
                // A cancelled handler's stream is refused (or its connection
                // closed): never a clean end.
                Ok((true, reply)) => {
                    panic!("a cancelled handler's stream ended cleanly: {reply:?}")
                }
                Err(error) => assert!(
                    matches!(rejection(&error), Some(StreamRejection::Refused) | None),
                    "{error}"
                ),
            }
        }
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_handlers_run_than_allowed() {
    within(async {
        let (a, b) = pair(178, Version::new(1, 0, 0), RuntimeKind::Tokio).await;
        let router = Router::<Op>::new(b.clone()).max_in_flight(2).route(
            "hold",
            |_, mut stream| async move {
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await?;
                stream.write_all(b"done").await?;
                stream.close().await?;
                Ok(())
            },
        );
        // It says what it serves.
        let shown = format!("{router:?}");
        assert!(
            shown.contains("\"hold\"") && shown.contains("max_in_flight: 2"),
            "{shown}"
        );
        let handle = router.spawn();
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let mut streams = Vec::new();
        for _ in 0..3 {
            let stream = peer
                .open(&Op::Hold { forever: false })
                .await
                .expect("a stream opens");
            streams.push(stream);
        }
        until(&handle, |s| s.in_flight == 2).await;
        // The third waits unaccepted while two handlers run, and the
        // router's task sleeps meanwhile (it does not poll in a loop while
        // it is full).
        let turns = handle.stats().turns;
        smol::Timer::after(Duration::from_millis(200)).await;
        assert_eq!(handle.stats().accepted, 2);
        let idle_turns = handle.stats().turns - turns;
        assert!(idle_turns <= 3, "{idle_turns} turns while nothing happened");
        // One ends: the third is taken.
        let mut first = streams.remove(0);
        first.close().await.expect("finishes");
        let mut reply = Vec::new();
        first.read_to_end(&mut reply).await.expect("answered");
        assert_eq!(reply, b"done");
        let stats = until(&handle, |s| s.accepted == 3).await;
        assert!(stats.in_flight <= 2, "{stats:?}");
        drop(streams);
        handle.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_gated_on_a_newer_version_fails_before_a_stream_opens() {
    within(async {
        // b runs 1.4; the operation needs >= 1.5.
        let (a, b) = pair(180, Version::new(1, 4, 0), RuntimeKind::Tokio).await;
        let handle = router(b.clone(), Duration::from_secs(1));
        let peer = a.peer(&b.local_identity()).expect("b is known");
        match peer.open(&Op::Gated).await {
            Err(NewStreamError::PeerTooOld {
                operation,
                required,
                version,
            }) => {
                assert_eq!(operation, "gated");
                assert_eq!(required, VersionReq::parse(">=1.5").expect("valid"));
                assert_eq!(version, Version::new(1, 4, 0));
            }
            other => panic!("expected PeerTooOld, got {other:?}"),
        }
        // Nothing reached b: the next stream is the first it accepts.
        let mut stream = peer.open(&Op::Echo).await.expect("echo opens");
        stream.write_all(b"after").await.expect("writes");
        stream.close().await.expect("finishes");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("reads");
        assert_eq!(reply, b"after");
        let stats = until(&handle, |s| s.completed == 1).await;
        assert_eq!(stats.accepted, 1);
        handle.shutdown().await;
        // A 1.5 peer is served.
        let (c, d) = pair(182, Version::new(1, 5, 0), RuntimeKind::Tokio).await;
        let handle = router(d.clone(), Duration::from_secs(1));
        let peer = c.peer(&d.local_identity()).expect("d is known");
        let mut stream = peer.open(&Op::Gated).await.expect("gated opens");
        stream.write_all(b"new").await.expect("writes");
        stream.close().await.expect("finishes");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("reads");
        assert_eq!(reply, b"new");
        handle.shutdown().await;
        a.shutdown().await;
        c.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_past_the_grace_period_while_the_router_serves() {
    within(async {
        // The grace period only bounds a shutdown: a handler that runs
        // longer while the router serves is not cancelled.
        let (a, b) = pair(184, Version::new(1, 0, 0), RuntimeKind::Tokio).await;
        let handle = router(b.clone(), Duration::from_millis(100));
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let mut stream = peer
            .open(&Op::Hold { forever: false })
            .await
            .expect("a stream opens");
        until(&handle, |s| s.in_flight == 1).await;
        smol::Timer::after(Duration::from_millis(500)).await;
        stream.close().await.expect("finishes");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("answered");
        assert_eq!(reply, b"done");
        let stats = until(&handle, |s| s.completed == 1).await;
        assert_eq!(stats.cancelled, 0);
        handle.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handlers_and_abandoned_streams_are_counted() {
    within(async {
        let (a, b) = pair(186, Version::new(1, 0, 0), RuntimeKind::Tokio).await;
        let handle = Router::<Op>::new(b.clone())
            .max_in_flight(1)
            .route("echo", |_, _| async {
                Err::<(), _>(pos_p2p::HandlerError::from("the handler gives up"))
            })
            .route("hold", |_, mut stream| async move {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                Ok(())
            })
            .spawn();
        // A handler that returns an error.
        let _ = exchange(&a, &b, &Op::Echo.to_bytes(), b"").await;
        let stats = until(&handle, |s| s.failed == 1).await;
        assert_eq!(stats.completed, 0);
        // One handler runs; a second stream waits unaccepted; the peer
        // goes away before the router reads the waiting stream's header.
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let _held = peer
            .open(&Op::Hold { forever: false })
            .await
            .expect("opens");
        until(&handle, |s| s.in_flight == 1).await;
        let _waiting = peer
            .open(&Op::Hold { forever: false })
            .await
            .expect("opens");
        smol::Timer::after(Duration::from_millis(100)).await;
        a.shutdown().await;
        let stats = until(&handle, |s| s.in_flight == 0 && s.accepted == 3).await;
        assert_eq!(stats.abandoned, 1, "{stats:?}");
        handle.shutdown().await;
    })
    .await;
}
