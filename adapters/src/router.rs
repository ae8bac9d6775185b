//! [`Router`]: serve the streams peers open, by their header's operation.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use pos_p2p_protocol::Header;
use pos_p2p_protocol::node::{StreamId, StreamRejection};
use tracing::Instrument as _;

use crate::driver::register;
use crate::header::HeaderExt as _;
use crate::runtime::Timer;
use crate::{P2P, UnicastStream};

/// What a handler may fail with: any error; the router logs it in the
/// stream's span and counts it ([`RouterStats::failed`]).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type Handler<H> = Arc<dyn Fn(H, UnicastStream) -> HandlerFuture + Send + Sync>;
type Task = Pin<Box<dyn Future<Output = (StreamId, Outcome)> + Send>>;
type Accept = Pin<Box<dyn Future<Output = Option<UnicastStream>> + Send>>;
type NodeShutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The default [`Router::grace_period`].
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// The default [`Router::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Serves the streams peers open, by the [`operation`](Header::operation)
/// of their header `H`.
///
/// Every application otherwise writes the same loop: accept a stream, read
/// its [`Header`], pick the code for its operation, run it beside the
/// others, and stop cleanly at shutdown. The router is that loop, done
/// once:
///
/// - it accepts streams and reads each one's header with the header's own
///   limits; a header that does not decode refuses the stream with its
///   reason's code (`MALFORMED_HEADER`, `HEADER_TOO_LARGE`, or
///   `UNKNOWN_OPERATION` for a tag this version does not know), and so
///   does an operation no route serves (`UNKNOWN_OPERATION`): the sender's
///   application gets the reason as a [`StreamRejection`];
/// - it runs the handlers concurrently, each in a `tracing` span with the
///   peer and the operation, at most
///   [`max_in_flight`](Router::max_in_flight) at once (beyond that, streams
///   wait unaccepted and count against their peers' stream limits, which
///   slows the peers down instead of growing a queue);
/// - a handler that panics takes down only its own stream, which is
///   refused with [`StreamRejection::HandlerFailed`] so that the peer does
///   not take what was sent for the whole reply; the others go on;
/// - [`RouterHandle::shutdown`] stops accepting, waits for the handlers in
///   flight for the [grace period](Router::grace_period), refuses the
///   streams of those still running then ([`StreamRejection::Refused`])
///   and drops them, and only then shuts the node down.
///
/// The router's handlers all run inside one task, which it starts on the
/// node's runtime: it needs nothing from tokio, async-std or smol beyond
/// what the node uses already. A handler with heavy CPU work should hand
/// it to its runtime's blocking pool.
///
/// ```no_run
/// use std::sync::Arc;
/// use pos_p2p::codec::{DecodeError, Reader, Writer};
/// use pos_p2p::prelude::*;
/// use pos_p2p::{P2P, Router};
/// use futures_util::AsyncWriteExt;
///
/// enum AppHeader {
///     Ping,
/// }
///
/// impl Header for AppHeader {
///     fn encode(&self, w: &mut Writer) {
///         match self {
///             AppHeader::Ping => w.tag(0),
///         }
///     }
///     fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
///         match r.tag()? {
///             0 => Ok(AppHeader::Ping),
///             tag => Err(r.unknown_tag("AppHeader", tag)),
///         }
///     }
///     fn operation(&self) -> &'static str {
///         match self {
///             AppHeader::Ping => "ping",
///         }
///     }
/// }
///
/// # async fn run(p2p: Arc<P2P>) {
/// let router = Router::<AppHeader>::new(p2p)
///     .route("ping", |_header, mut stream| async move {
///         stream.write_all(b"pong").await?;
///         stream.close().await?;
///         Ok(())
///     })
///     .spawn();
/// // ... until the application quits:
/// let stats = router.shutdown().await;
/// println!("served {} streams", stats.completed);
/// # }
/// ```
pub struct Router<H> {
    p2p: Arc<P2P>,
    routes: HashMap<&'static str, Handler<H>>,
    fallback: Option<Handler<H>>,
    grace: Duration,
    max_in_flight: usize,
}

impl<H> fmt::Debug for Router<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<&&str> = self.routes.keys().collect();
        routes.sort();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("fallback", &self.fallback.is_some())
            .field("grace", &self.grace)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl<H: Header + Send + 'static> Router<H> {
    /// A router with no routes yet for the streams of `p2p`. Build it,
    /// then [`spawn`](Router::spawn) it; while it runs, it is the node's
    /// only acceptor (do not call [`P2P::accept`] beside it).
    pub fn new(p2p: Arc<P2P>) -> Self {
        Self {
            p2p,
            routes: HashMap::new(),
            fallback: None,
            grace: DEFAULT_GRACE_PERIOD,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Serve streams whose header's [`operation`](Header::operation) is
    /// `operation` with `handler`: it gets the decoded header and the
    /// stream, positioned after the header.
    ///
    /// # Panics
    ///
    /// If `operation` has a route already: two handlers for one operation
    /// is a bug in the application, found when the router is built.
    pub fn route<F, Fut>(mut self, operation: &'static str, handler: F) -> Self
    where
        F: Fn(H, UnicastStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: Handler<H> = Arc::new(move |header, stream| Box::pin(handler(header, stream)));
        if self.routes.insert(operation, handler).is_some() {
            panic!("the operation {operation:?} has two routes");
        }
        self
    }

    /// Serve the operations no [`route`](Router::route) names with
    /// `handler` (without one, they are refused with
    /// [`StreamRejection::UnknownOperation`]). Use it to serve one header
    /// type with one `match`.
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(H, UnicastStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |header, stream| {
            Box::pin(handler(header, stream))
        }));
        self
    }

    /// How long [`RouterHandle::shutdown`] waits for the handlers in flight
    /// before it refuses their streams and drops them (default 5 s; zero
    /// cancels at once).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The most handlers running at once (default 1,024, at least 1).
    /// Beyond it the router accepts no more streams until one ends; the
    /// waiting streams count against their peers' stream limits.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Start serving, in a task on the node's runtime.
    pub fn spawn(self) -> RouterHandle {
        let (serve, handle) = self.build();
        serve.p2p.shared().clone().runtime.spawn(Box::pin(serve));
        handle
    }

    /// The serving task and its handle, not started yet.
    fn build(self) -> (Serve<H>, RouterHandle) {
        let control = Arc::new(Control {
            state: Mutex::new(ControlState::default()),
        });
        let serve = Serve {
            accept: None,
            tasks: FuturesUnordered::new(),
            in_flight: BTreeSet::new(),
            routes: Arc::new(Routes {
                routes: self.routes,
                fallback: self.fallback,
            }),
            control: control.clone(),
            grace: self.grace,
            grace_timer: None,
            node_shutdown: None,
            max_in_flight: self.max_in_flight,
            p2p: self.p2p,
        };
        (serve, RouterHandle { control })
    }
}

/// A running [`Router`]: its statistics, and its shutdown.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    control: Arc<Control>,
}

impl RouterHandle {
    /// What the router did so far.
    pub fn stats(&self) -> RouterStats {
        self.control.lock().stats
    }

    /// Stop accepting streams, wait for the handlers in flight for the
    /// [grace period](Router::grace_period), refuse the streams of those
    /// still running then ([`StreamRejection::Refused`]) and drop them,
    /// then shut the node down. Resolves when all of that is done, with
    /// the router's final statistics. A handler counts as running until
    /// its future ends: one that let go of its stream and goes on with
    /// other work is cancelled like the others, and its stream refused
    /// even if its reply had been finished (the refusal can overtake
    /// reply bytes not yet acknowledged), so end handlers with their
    /// streams. Calling it again (or from several
    /// handles) waits for the same shutdown.
    pub async fn shutdown(&self) -> RouterStats {
        {
            let mut state = self.control.lock();
            state.shutting_down = true;
            if let Some(waker) = &state.serve {
                waker.wake_by_ref();
            }
        }
        std::future::poll_fn(|cx| {
            let mut state = self.control.lock();
            if state.done {
                return Poll::Ready(state.stats);
            }
            register(&mut state.done_waiters, cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// What a [`Router`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Streams accepted.
    pub accepted: u64,
    /// Handlers that returned `Ok`.
    pub completed: u64,
    /// Handlers that returned an error.
    pub failed: u64,
    /// Handlers that panicked (their streams refused with
    /// [`StreamRejection::HandlerFailed`]).
    pub panicked: u64,
    /// Streams refused for their header: it did not decode, or no route
    /// serves its operation.
    pub refused: u64,
    /// Streams whose header never came (the stream or the connection
    /// ended first).
    pub abandoned: u64,
    /// Handlers still running at the end of the grace period, cancelled.
    pub cancelled: u64,
    /// Handlers running now.
    pub in_flight: usize,
    /// How many times the router's task ran: it runs when a stream
    /// arrives or a handler makes progress, and not while nothing
    /// happens.
    pub turns: u64,
}

#[derive(Debug)]
struct Control {
    state: Mutex<ControlState>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct ControlState {
    stats: RouterStats,
    shutting_down: bool,
    done: bool,
    /// The serving task, to wake for a shutdown.
    serve: Option<Waker>,
    done_waiters: Vec<Waker>,
}

/// How one stream's handling ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    Panicked,
    Refused,
    Abandoned,
}

struct Routes<H> {
    routes: HashMap<&'static str, Handler<H>>,
    fallback: Option<Handler<H>>,
}

/// The serving task.
struct Serve<H> {
    p2p: Arc<P2P>,
    accept: Option<Accept>,
    tasks: FuturesUnordered<Task>,
    /// The streams of the handlers running.
    in_flight: BTreeSet<StreamId>,
    routes: Arc<Routes<H>>,
    control: Arc<Control>,
    grace: Duration,
    grace_timer: Option<Pin<Box<dyn Timer>>>,
    node_shutdown: Option<NodeShutdown>,
    max_in_flight: usize,
}

impl<H: Header + Send + 'static> Serve<H> {
    fn start(&mut self, stream: UnicastStream) {
        let id = stream.id();
        self.in_flight.insert(id);
        let span = tracing::info_span!(
            "handler",
            peer = %stream.remote_identity(),
            operation = tracing::field::Empty,
        );
        let routes = self.routes.clone();
        let shared = self.p2p.shared().clone();
        self.tasks.push(Box::pin(
            async move {
                // Kept alive until the outcome is known: a panicking
                // handler's stream must be refused before it is dropped,
                // or dropping it would finish it as if the reply were
                // whole.
                let mut handling =
                    std::pin::pin!(AssertUnwindSafe(handle(routes, stream)).catch_unwind());
                let outcome = match handling.as_mut().await {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<&str>()
                            .copied()
                            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                            .unwrap_or("a panic");
                        tracing::error!(panic = message, "the handler panicked");
                        let mut state = shared.lock();
                        state.node.reject(id, StreamRejection::HandlerFailed);
                        state.wake_driver();
                        Outcome::Panicked
                    }
                };
                (id, outcome)
            }
            .instrument(span),
        ));
    }

    /// Cancel every handler still running: refuse its stream, then drop it.
    fn cancel_all(&mut self) -> usize {
        let cancelled = self.tasks.len();
        {
            let mut state = self.p2p.shared().lock();
            for id in std::mem::take(&mut self.in_flight) {
                state.node.reject(id, StreamRejection::Refused);
            }
            state.wake_driver();
        }
        self.tasks.clear();
        cancelled
    }
}

/// Read the header, find the route, run it.
async fn handle<H: Header + Send + 'static>(
    routes: Arc<Routes<H>>,
    mut stream: UnicastStream,
) -> Outcome {
    let header = match H::from_stream(&mut stream).await {
        Ok(header) => header,
        Err(error) => {
            // `from_stream` refused the stream if the header was at fault.
            tracing::debug!(%error, "no header");
            return match crate::header::rejection_for(&error) {
                Some(_) => Outcome::Refused,
                None => Outcome::Abandoned,
            };
        }
    };
    let operation = header.operation();
    tracing::Span::current().record("operation", operation);
    let Some(handler) = routes.routes.get(operation).or(routes.fallback.as_ref()) else {
        tracing::debug!("no route for this operation");
        stream.reject(StreamRejection::UnknownOperation);
        return Outcome::Refused;
    };
    match handler(header, stream).await {
        Ok(()) => Outcome::Completed,
        Err(error) => {
            tracing::warn!(%error, "the handler failed");
            Outcome::Failed
        }
    }
}

impl<H: Header + Send + 'static> Future for Serve<H> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shutting_down = {
            let mut control = this.control.lock();
            control.serve = Some(cx.waker().clone());
            control.shutting_down
        };
        let mut accepted = 0;
        let mut full = false;
        if shutting_down {
            // Streams not accepted yet are the node's to close.
            this.accept = None;
        } else {
            loop {
                if this.tasks.len() >= this.max_in_flight {
                    full = true;
                    break;
                }
                let p2p = &this.p2p;
                let accept = this.accept.get_or_insert_with(|| {
                    let p2p = p2p.clone();
                    Box::pin(async move { p2p.accept().await })
                });
                match accept.as_mut().poll(cx) {
                    Poll::Ready(Some(stream)) => {
                        this.accept = None;
                        accepted += 1;
                        this.start(stream);
                    }
                    // The node shut down: what runs ends with it.
                    Poll::Ready(None) => {
                        this.control.lock().shutting_down = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let mut ended = Vec::new();
        while let Poll::Ready(Some((id, outcome))) = this.tasks.poll_next_unpin(cx) {
            this.in_flight.remove(&id);
            ended.push(outcome);
        }
        let shutting_down = this.control.lock().shutting_down;
        if full && !ended.is_empty() && !shutting_down {
            // Room again: accept on the next turn.
            cx.waker().wake_by_ref();
        }
        let mut cancelled = 0;
        if shutting_down && !this.tasks.is_empty() {
            let grace = this.grace;
            let shared = this.p2p.shared();
            let timer = this
                .grace_timer
                .get_or_insert_with(|| shared.timer(shared.clock.now() + grace));
            if timer.as_mut().poll_expired(cx).is_ready() {
                cancelled = this.cancel_all();
            }
        }
        let done = if shutting_down && this.tasks.is_empty() {
            let p2p = &this.p2p;
            let shutdown = this.node_shutdown.get_or_insert_with(|| {
                let p2p = p2p.clone();
                Box::pin(async move { p2p.shutdown().await })
            });
            shutdown.as_mut().poll(cx).is_ready()
        } else {
            false
        };
        let mut control = this.control.lock();
        let stats = &mut control.stats;
        stats.turns += 1;
        stats.accepted += accepted;
        for outcome in ended {
            match outcome {
                Outcome::Completed => stats.completed += 1,
                Outcome::Failed => stats.failed += 1,
                Outcome::Panicked => stats.panicked += 1,
                Outcome::Refused => stats.refused += 1,
                Outcome::Abandoned => stats.abandoned += 1,
            }
        }
        stats.cancelled += cancelled as u64;
        stats.in_flight = this.tasks.len();
        if done {
            control.done = true;
            control.serve = None;
            let waiters = std::mem::take(&mut control.done_waiters);
            drop(control);
            waiters.into_iter().for_each(Waker::wake);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{P2PConfig, RuntimeKind};
    use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
    use pos_p2p_protocol::codec::{DecodeError, Reader, Writer};
    use pos_p2p_protocol::{Identity, semver::Version};

    struct Hold;

    impl Header for Hold {
        fn encode(&self, w: &mut Writer) {
            w.tag(0);
        }

        fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
            match r.tag()? {
                0 => Ok(Hold),
                tag => Err(r.unknown_tag("Hold", tag)),
            }
        }

        fn operation(&self) -> &'static str {
            "hold"
        }
    }

    fn node(n: u8) -> Arc<P2P> {
        let config = P2PConfig::new(
            Identity::from_bytes(&[n; 32]),
            "router",
            Version::new(1, 0, 0),
        )
        .expect("a valid config")
        .listen(["127.0.0.1:0".parse().expect("an address")])
        .discovery(false);
        P2P::with_runtime(config, RuntimeKind::Tokio).expect("the node starts")
    }

    /// Cancelling a handler refuses its stream: its peer never takes what
    /// the handler wrote for a whole reply (dropping the stream alone
    /// would finish it). Tested with the connection kept open, where the
    /// refusal is what the peer sees (at shutdown, the node's close
    /// follows at once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_handlers_refuse_their_streams() {
        let (a, b) = (node(201), node(202));
        a.connect(b.listen_addrs()[0], Some(b.local_identity()))
            .await
            .expect("connects");
        let (mut serve, _handle) = Router::<Hold>::new(b.clone())
            .route("hold", |_, mut stream| async move {
                stream.write_all(b"partial").await?;
                std::future::pending::<()>().await;
                Ok(())
            })
            .build();
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(peer.open(&Hold).await.expect("opens"));
        }
        // Run the router until the three handlers are in flight and have
        // written.
        let mut first = [0u8; 7];
        let drive = std::future::poll_fn(|cx| {
            let _ = Pin::new(&mut serve).poll(cx);
            if serve.tasks.len() == 3 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        drive.await;
        streams[0].read_exact(&mut first).await.expect("reads");
        assert_eq!(&first, b"partial");
        assert_eq!(serve.cancel_all(), 3);
        for mut stream in streams {
            let mut rest = Vec::new();
            let error = stream
                .read_to_end(&mut rest)
                .await
                .expect_err("never a clean end");
            let reset = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<crate::StreamReset>())
                .copied();
            assert_eq!(
                reset.map(|r| r.rejection()),
                Some(StreamRejection::Refused),
                "{error}"
            );
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}
