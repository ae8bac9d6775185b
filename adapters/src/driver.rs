//! The one driver all runtimes share: it owns the sockets, feeds datagrams
//! and timeouts to the sans-IO [`Node`], sends what it polls, and wakes the
//! tasks waiting on streams, dials and events. It holds no protocol logic.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::clock::Clock;
use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::discovery::{Discovery, DiscoveryEvent};
use pos_p2p_protocol::node::{DialId, DisconnectReason, Ecn, Event, Node, StreamId};

use crate::event::P2PEvent;
use crate::mdns::Mdns;
use crate::runtime::{Interest, Runtime, Timer, UdpIo};

/// How many receive batches (of up to quinn-udp's `BATCH_SIZE` datagrams,
/// each up to 64 KiB with GRO) one driver turn handles before yielding, so
/// that one busy peer cannot starve the application's tasks.
const RECV_BATCHES_PER_TURN: usize = 8;
/// The most datagrams in one GSO send. The kernel may report 64, but a GSO
/// send must also fit in one 64 KiB IP packet; larger batches fail whole and
/// look like loss to QUIC. 10 is what quinn uses.
const MAX_TRANSMIT_SEGMENTS: usize = 10;
/// How many transmits one driver turn sends before yielding.
const TRANSMITS_PER_TURN: usize = 256;
/// How many transmits the driver takes from the node per hold of the lock,
/// before sending them without it.
const TRANSMITS_PER_LOCK: usize = 4;
/// Room kept in the inbox between turns.
const INBOX_KEPT: usize = 256;
/// The largest UDP payload read into one slot: with GRO, several datagrams
/// coalesced, which the kernel caps at 64 KiB.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Events buffered for a slow subscriber before it loses some.
pub(crate) const EVENT_QUEUE: usize = 1024;
/// How long `shutdown` waits for the peers to acknowledge the close.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A dial someone waits for: its outcome once the Node reported it
/// (`Event::DialFinished`), and who to wake then.
#[derive(Debug, Default)]
pub(crate) struct DialSlot {
    pub(crate) result: Option<Result<RemoteIdentity, DisconnectReason>>,
    pub(crate) waiters: Vec<Waker>,
    /// How many tasks wait for it; the slot goes when
    /// the last one lets go.
    pub(crate) watchers: usize,
}

/// Everything the driver and the application's handles share, behind one
/// lock that is never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) node: Node,
    /// LAN discovery, unless turned off (or no mDNS socket could be opened).
    pub(crate) discovery: Option<Discovery>,
    /// Host names of manual peers to resolve, from this turn's events.
    pub(crate) resolves: Vec<(pos_p2p_protocol::node::PeerAddr, u64)>,
    pub(crate) driver: Option<Waker>,
    pub(crate) readers: HashMap<StreamId, Waker>,
    pub(crate) writers: HashMap<StreamId, Waker>,
    /// Tasks waiting for something to happen to a peer (connected, failed,
    /// more streams allowed).
    pub(crate) peer_waiters: HashMap<RemoteIdentity, Vec<Waker>>,
    /// Dials someone waits for. The Node shares a dial to a peer between
    /// everyone who asks for one, so several tasks may watch one slot.
    pub(crate) dials: HashMap<DialId, DialSlot>,
    /// Tasks the driver woke during its turn, woken once it let go of the
    /// lock.
    pub(crate) woken: Vec<Waker>,
    /// Peers the application added with `P2P::add_peer`.
    pub(crate) added: std::collections::BTreeSet<RemoteIdentity>,
    /// Each subscriber's queue, and how many events it missed.
    pub(crate) subscribers: Vec<(async_channel::Sender<P2PEvent>, Arc<AtomicU64>)>,
    /// Streams peers opened, waiting for `P2P::accept`. Bounded by QUIC:
    /// each is an open stream counting against its connection's limit.
    pub(crate) incoming: VecDeque<(StreamId, RemoteIdentity)>,
    pub(crate) accept_waiters: Vec<Waker>,
    /// Set by `shutdown` or by dropping `P2P`.
    pub(crate) closing: Option<Instant>,
    pub(crate) stopped: bool,
    pub(crate) stopped_waiters: Vec<Waker>,
    /// The tasks of the node's relay connections.
    pub(crate) relay_tasks: HashMap<pos_p2p_protocol::node::RelayConnId, crate::relay::RelayTask>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Where every time the adapter uses comes from.
    pub(crate) clock: Clock,
    /// The runtime: tasks and timers.
    pub(crate) runtime: Box<dyn Runtime>,
    /// How long `Peer::new_stream` waits for the peer to allow another
    /// stream ([`P2PConfig::stream_wait`](crate::P2PConfig::stream_wait)).
    pub(crate) stream_wait: Duration,
}

impl Shared {
    pub(crate) fn new(
        state: State,
        clock: Clock,
        runtime: Box<dyn Runtime>,
        stream_wait: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            clock,
            runtime,
            stream_wait,
        })
    }

    /// A timer that fires at `at` on this node's clock.
    pub(crate) fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        self.clock.timer(self.runtime.timer(at), at)
    }

    /// The state. A poisoned lock means a panic in a previous holder; the
    /// state itself is still consistent enough to shut down, so go on.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Wake the driver: a command may have produced transmits or events.
    pub(crate) fn wake_driver(&mut self) {
        if let Some(waker) = &self.driver {
            waker.wake_by_ref();
        }
    }

    /// Dial `addrs` (pinned to `expected` if given; joining a dial to
    /// that peer already under way) and watch the dial: its outcome is
    /// kept until [`State::unwatch_dial`].
    pub(crate) fn dial(
        &mut self,
        now: Instant,
        addrs: &[SocketAddr],
        expected: Option<RemoteIdentity>,
    ) -> Result<DialId, pos_p2p_protocol::node::ConnectError> {
        let id = self.node.dial(now, addrs, expected)?;
        self.dials.entry(id).or_default().watchers += 1;
        self.wake_driver();
        Ok(id)
    }

    /// Dial a known peer ([`Node::dial_peer`]) and watch the dial, as
    /// [`State::dial`].
    pub(crate) fn dial_peer(
        &mut self,
        now: Instant,
        peer: RemoteIdentity,
        advertised: &[SocketAddr],
    ) -> Result<DialId, pos_p2p_protocol::node::ConnectError> {
        let id = self.node.dial_peer(now, peer, advertised)?;
        self.dials.entry(id).or_default().watchers += 1;
        self.wake_driver();
        Ok(id)
    }

    /// The outcome of a watched dial, or `Pending` (and `cx` is woken when
    /// it comes).
    pub(crate) fn poll_dial(
        &mut self,
        id: DialId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RemoteIdentity, DisconnectReason>> {
        let Some(slot) = self.dials.get_mut(&id) else {
            // Not watched: a caller bug, but not a reason to hang.
            debug_assert!(false, "polled a dial nobody watches");
            return Poll::Ready(Err(DisconnectReason::ClosedLocally));
        };
        match &slot.result {
            Some(result) => Poll::Ready(result.clone()),
            None => {
                register(&mut slot.waiters, cx.waker());
                Poll::Pending
            }
        }
    }

    /// One watcher of dial `id` no longer waits for it.
    pub(crate) fn unwatch_dial(&mut self, id: DialId) {
        if let Some(slot) = self.dials.get_mut(&id) {
            slot.watchers -= 1;
            if slot.watchers == 0 {
                self.dials.remove(&id);
            }
        }
    }

    // The driver holds the lock for a whole turn; the tasks it wakes would
    // only contend for it. It collects their wakers in `woken` and wakes
    // them once it has let go (`Driver::poll`). Only the driver calls these.

    fn wake_peer(&mut self, peer: &RemoteIdentity) {
        if let Some(waiters) = self.peer_waiters.remove(peer) {
            self.woken.extend(waiters);
        }
    }

    fn wake_accept_waiters(&mut self) {
        self.woken.append(&mut self.accept_waiters);
    }

    fn publish(&mut self, event: P2PEvent) {
        self.subscribers
            .retain(|(tx, lost)| match tx.try_send(event.clone()) {
                Ok(()) => true,
                // A subscriber that does not keep up loses events rather than
                // growing a queue without bound, and can tell how many.
                Err(async_channel::TrySendError::Full(_)) => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(async_channel::TrySendError::Closed(_)) => false,
            });
    }
}

#[derive(Debug)]
struct Socket {
    io: Box<dyn UdpIo>,
    state: quinn_udp::UdpSocketState,
    local: SocketAddr,
}

/// The driver task.
#[derive(Debug)]
pub(crate) struct Driver {
    shared: Arc<Shared>,
    /// The node's span (`Node::span`), entered for each turn.
    span: tracing::Span,
    sockets: Vec<Socket>,
    timer: Pin<Box<dyn Timer>>,
    mdns: Option<Mdns>,
    /// The wakers of a turn, woken once the lock is released.
    woken: Vec<Waker>,
    /// Where the timer is set.
    timer_at: Instant,
    recv_buf: Vec<u8>,
    /// Datagrams read this turn, before the lock is taken.
    inbox: Vec<Received>,
    /// Transmits polled from the node, sent after the lock is released;
    /// what the socket refused (`WouldBlock`) waits here for the next turn.
    outbox: VecDeque<(pos_p2p_protocol::node::Transmit, Vec<u8>)>,
    /// Send buffers to reuse.
    spare: Vec<Vec<u8>>,
}

/// A datagram read from a socket.
#[derive(Debug)]
struct Received {
    from: SocketAddr,
    dst_ip: Option<std::net::IpAddr>,
    ecn: Option<Ecn>,
    data: BytesMut,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        sockets: Vec<Box<dyn UdpIo>>,
        timer: Pin<Box<dyn Timer>>,
        mdns: Option<Mdns>,
    ) -> io::Result<Self> {
        let sockets = sockets
            .into_iter()
            .map(|io| {
                let state = quinn_udp::UdpSocketState::new(io.sock_ref())?;
                let local = io.local_addr()?;
                Ok(Socket { io, state, local })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let span = shared.lock().node.span().clone();
        let timer_at = shared.clock.now();
        if mdns.is_none() {
            // Without mDNS nothing lists the interfaces again: the
            // candidates for direct connections are those of the start.
            let listen: Vec<SocketAddr> = sockets.iter().map(|s| s.local).collect();
            let addrs = crate::mdns::interface_addrs(&listen, &crate::mdns::interfaces());
            shared.lock().node.set_local_addrs(timer_at, &addrs);
        }
        Ok(Self {
            shared,
            span,
            sockets,
            timer,
            mdns,
            woken: Vec::new(),
            timer_at,
            recv_buf: vec![0; RECV_BUF_LEN * quinn_udp::BATCH_SIZE],
            inbox: Vec::new(),
            outbox: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    /// The sockets' local addresses.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|s| s.local).collect()
    }

    /// Read what the sockets have into the inbox, without the lock; `true`
    /// if the turn budget ran out.
    fn receive(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        for socket in &self.sockets {
            let mut batches = 0;
            loop {
                if batches == RECV_BATCHES_PER_TURN {
                    busy = true;
                    break;
                }
                // One system call reads up to quinn-udp's batch of
                // datagrams (recvmmsg), each into its own slot.
                let mut metas = [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
                let result = {
                    let mut slots = self.recv_buf.chunks_mut(RECV_BUF_LEN);
                    let mut bufs: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                        std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
                    socket.io.try_io(Interest::Read, &mut || {
                        socket
                            .state
                            .recv(socket.io.sock_ref(), &mut bufs, &mut metas)
                    })
                };
                match result {
                    Ok(count) => {
                        batches += 1;
                        for (slot, meta) in metas[..count].iter().enumerate() {
                            // One copy per datagram read; with GRO a read
                            // holds several datagrams of `stride` bytes (the
                            // last may be shorter), split off without copying.
                            let start = slot * RECV_BUF_LEN;
                            let mut data = BytesMut::from(&self.recv_buf[start..start + meta.len]);
                            while !data.is_empty() {
                                let datagram = data.split_to(meta.stride.clamp(1, data.len()));
                                self.inbox.push(Received {
                                    from: meta.addr,
                                    dst_ip: meta.dst_ip,
                                    ecn: meta.ecn.map(ecn_from_udp),
                                    data: datagram,
                                });
                            }
                        }
                    }
                    // Nothing there: register for readiness, and read again
                    // at once if the reactor says it is ready already.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match socket.io.poll_ready(cx, Interest::Read) {
                            Poll::Pending => break,
                            Poll::Ready(Err(error)) => {
                                tracing::warn!(%error, "UDP socket not readable");
                                break;
                            }
                            Poll::Ready(Ok(())) => {}
                        }
                    }
                    // ICMP errors and the like surface on the next read;
                    // QUIC's own timers deal with unreachable peers.
                    Err(error) => {
                        tracing::debug!(%error, "UDP receive failed");
                        batches += 1;
                    }
                }
            }
        }
        busy
    }

    /// Hand the inbox to the node (under the lock).
    fn feed(&mut self, state: &mut State, now: Instant) {
        for received in self.inbox.drain(..) {
            state.node.handle_datagram(
                now,
                received.from,
                received.dst_ip,
                received.ecn,
                received.data,
            );
        }
        // A burst may have grown it a lot; an idle node keeps little.
        self.inbox.shrink_to(INBOX_KEPT);
    }

    /// Take a few transmits from the node into the outbox (under the lock),
    /// unless the outbox still holds what the socket refused. Few: a
    /// transmit is stamped as sent when it is polled, so polling far ahead
    /// of the socket would skew QUIC's clocks.
    fn poll_transmits(&mut self, state: &mut State, now: Instant) {
        if !self.outbox.is_empty() {
            return;
        }
        let segments = self
            .sockets
            .iter()
            .map(|s| s.state.max_gso_segments())
            .min()
            .unwrap_or(1)
            .clamp(1, MAX_TRANSMIT_SEGMENTS);
        while self.outbox.len() < TRANSMITS_PER_LOCK {
            let mut buf = self.spare.pop().unwrap_or_default();
            match state.node.poll_transmit(now, segments, &mut buf) {
                Some(transmit) => self.outbox.push_back((transmit, buf)),
                None => {
                    self.spare.push(buf);
                    return;
                }
            }
        }
    }

    /// Send the outbox and what more the node has, a few transmits per
    /// short hold of the lock (each with a fresh `now`, so that QUIC's
    /// pacing sees time pass). When the node has nothing more, the timer is
    /// brought forward to its next deadline (sending, or a pacing pause,
    /// moves QUIC's timers after the turn set the driver's). `true` if the
    /// driver should turn again at once: the budget ran out, or that
    /// deadline has passed already.
    fn send_all(&mut self, cx: &mut Context<'_>, shared: &Arc<Shared>) -> bool {
        let rounds = TRANSMITS_PER_TURN / TRANSMITS_PER_LOCK;
        for round in 0..rounds {
            if self.outbox.is_empty() {
                return false;
            }
            self.send(cx);
            if !self.outbox.is_empty() {
                // The socket is full; its readiness brings the driver back.
                return false;
            }
            if round + 1 == rounds {
                // Nothing is polled that would wait for the next turn.
                break;
            }
            let mut state = shared.lock();
            let now = shared.clock.now();
            self.poll_transmits(&mut state, now);
            // Relayed datagrams went to the relay tasks.
            let mut woken = Vec::new();
            crate::relay::service(&mut state, shared, &mut woken);
            if !woken.is_empty() {
                drop(state);
                woken.into_iter().for_each(Waker::wake);
                state = shared.lock();
            }
            if self.outbox.is_empty() {
                let at = state.node.poll_timeout().map(|(at, _)| at);
                drop(state);
                if let Some(at) = at.filter(|at| *at < self.timer_at) {
                    self.timer_at = at;
                    self.timer.as_mut().reset(at);
                    return self.timer.as_mut().poll_expired(cx).is_ready();
                }
                return false;
            }
        }
        true
    }

    /// Send the outbox, without the lock. What the socket refuses stays for
    /// the next turn, which the socket's readiness triggers.
    fn send(&mut self, cx: &mut Context<'_>) {
        while let Some((transmit, contents)) = self.outbox.pop_front() {
            let Some(socket) = self
                .sockets
                .iter()
                .find(|s| s.local.is_ipv4() == transmit.destination.is_ipv4())
            else {
                tracing::debug!(dest = %transmit.destination, "no socket for this address family");
                self.recycle(contents);
                continue;
            };
            let udp = quinn_udp::Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn.map(ecn_to_udp),
                contents: &contents[..transmit.size],
                segment_size: transmit.segment_size,
                src_ip: transmit.src_ip,
            };
            let result = socket.io.try_io(Interest::Write, &mut || {
                socket
                    .state
                    .try_send(socket.io.sock_ref(), &udp)
                    .map(|()| 0)
            });
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait for the socket to drain, unless it already has.
                    let ready = socket.io.poll_ready(cx, Interest::Write);
                    self.outbox.push_front((transmit, contents));
                    match ready {
                        Poll::Pending => return,
                        Poll::Ready(Err(error)) => {
                            tracing::warn!(%error, "UDP socket not writable");
                            return;
                        }
                        Poll::Ready(Ok(())) => continue,
                    }
                }
                // A lost datagram is QUIC's to recover.
                Err(error) => tracing::debug!(%error, "UDP send failed"),
                Ok(_) => {}
            }
            self.recycle(contents);
        }
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < TRANSMITS_PER_LOCK {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn dispatch(state: &mut State, now: Instant) {
        while let Some(event) = state.discovery.as_mut().and_then(Discovery::poll_event) {
            state.publish(match event {
                DiscoveryEvent::Discovered(peer) => P2PEvent::PeerDiscovered {
                    peer: peer.identity,
                    addrs: peer.addrs,
                    metadata: peer.metadata.to_hashmap(),
                },
                DiscoveryEvent::Changed(peer) => P2PEvent::PeerChanged {
                    peer: peer.identity,
                    addrs: peer.addrs,
                    metadata: peer.metadata.to_hashmap(),
                },
                DiscoveryEvent::Expired(peer) => P2PEvent::PeerExpired { peer },
                _ => continue,
            });
        }
        while let Some(event) = state.node.poll_event() {
            match event {
                Event::Connected(info) => {
                    // A dial to an advertised address that the peer answered:
                    // its advertisement is genuine.
                    if info.direction == pos_p2p_protocol::node::Direction::Outbound
                        && let Some(discovery) = state.discovery.as_mut()
                    {
                        discovery.handle_verified(&info.identity, info.addr);
                    }
                    state.publish(P2PEvent::PeerConnected {
                        peer: info.identity,
                        addr: info.addr,
                    });
                }
                Event::Disconnected { peer, reason } => {
                    // The streams of the connection that ended were woken by
                    // the Node's own StreamReadable/StreamWritable events
                    // (it reports every stream the application knows).
                    state.wake_peer(&peer);
                    state.publish(P2PEvent::PeerDisconnected { peer, reason });
                }
                Event::ConnectFailed {
                    addr, peer, reason, ..
                } => {
                    // A peer advertised on the LAN that could not prove its
                    // identity at its advertised address: a forgery.
                    if let DisconnectReason::IdentityMismatch { expected, .. } = &reason
                        && let Some(discovery) = state.discovery.as_mut()
                        && discovery
                            .peer(expected)
                            .is_some_and(|p| p.addrs.contains(&addr))
                    {
                        discovery.handle_forged(now, expected);
                    }
                    state.publish(P2PEvent::ConnectFailed { addr, peer, reason });
                }
                Event::ResolveHost { addr, generation } => {
                    state.resolves.push((addr, generation));
                }
                Event::DialFinished { dial, result } => {
                    // Kept for whoever watches the dial; a dial nobody
                    // watches any more (a cancelled `connect`) is over.
                    if let Some(slot) = state.dials.get_mut(&dial) {
                        slot.result = Some(result);
                        let waiters = std::mem::take(&mut slot.waiters);
                        state.woken.extend(waiters);
                    }
                }
                Event::IncomingRefused { addr, reason } => {
                    state.publish(P2PEvent::IncomingRefused { addr, reason });
                }
                Event::MetadataUpdated { peer, metadata } => {
                    let metadata = match state.node.peer(&peer) {
                        Some(info) => crate::peer::connected_metadata(&metadata, &info.versions),
                        None => metadata.to_hashmap(),
                    };
                    state.publish(P2PEvent::MetadataUpdated { peer, metadata });
                }
                Event::IncomingStream { peer, stream } => {
                    state.incoming.push_back((stream, peer));
                    state.wake_accept_waiters();
                }
                Event::StreamsAvailable { peer } => state.wake_peer(&peer),
                Event::RelayConnected { relay, observed } => {
                    if let Some(relay) = state.node.relay_addr(relay).cloned() {
                        state.publish(P2PEvent::RelayConnected { relay, observed });
                    }
                }
                Event::RelayDisconnected { relay, error } => {
                    if let Some(relay) = state.node.relay_addr(relay).cloned() {
                        state.publish(P2PEvent::RelayDisconnected { relay, error });
                    }
                }
                Event::AddressDiscovered { relay, addr } => {
                    if let Some(relay) = state.node.relay_addr(relay).cloned() {
                        state.publish(P2PEvent::AddressDiscovered { relay, addr });
                    }
                }
                Event::PathChanged { peer, path } => {
                    state.publish(P2PEvent::PathChanged { peer, path });
                }
                Event::StreamReadable(stream) => {
                    if let Some(waker) = state.readers.remove(&stream) {
                        state.woken.push(waker);
                    }
                }
                Event::StreamWritable(stream)
                | Event::StreamFinished(stream)
                | Event::StreamStopped { stream, .. } => {
                    if let Some(waker) = state.writers.remove(&stream) {
                        state.woken.push(waker);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let span = this.span.clone();
        let _entered = span.enter();
        // Listing the interfaces and joining the multicast groups on them
        // take system calls: not under the lock.
        let rescanned = match this.mdns.as_mut() {
            Some(mdns) if mdns.scan_due(this.shared.clock.now()) => {
                mdns.rescan(this.shared.clock.now(), crate::mdns::interfaces());
                true
            }
            _ => false,
        };
        // Socket reads and writes happen without the lock, so that the
        // application's tasks (on other worker threads) are not held up by
        // system calls.
        let mut busy = this.receive(cx);
        if let Some(mdns) = this.mdns.as_mut() {
            busy |= mdns.receive(cx, this.shared.clock.now());
        }
        let shared = this.shared.clone();
        let mut state = shared.lock();
        state.driver = Some(cx.waker().clone());
        let now = shared.clock.now();
        this.feed(&mut state, now);
        if rescanned && let Some(mdns) = this.mdns.as_ref() {
            // Candidates for direct connections (and, when they changed, a
            // network change: the node asks its relays where it is again).
            state.node.set_local_addrs(now, &mdns.advertised());
        }
        state.node.handle_timeout(now);
        if let (Some(mdns), Some(discovery)) = (this.mdns.as_mut(), state.discovery.as_mut()) {
            if rescanned {
                discovery.set_addrs(now, mdns.advertised());
            }
            mdns.exchange(discovery, now);
            if discovery.poll_timeout().is_some_and(|(at, _)| at <= now) {
                discovery.handle_timeout(now);
            }
            mdns.exchange(discovery, now);
        }
        // Discovery was turned off and its goodbye is out: close the sockets.
        if state.closing.is_none() && state.discovery.as_ref().is_some_and(Discovery::is_closed) {
            Self::dispatch(&mut state, now);
            state.discovery = None;
            // The goodbye goes out before the sockets close (once, so under
            // the lock).
            if let Some(mut mdns) = this.mdns.take() {
                mdns.send();
            }
        }
        Self::dispatch(&mut state, now);
        // Host names of manual peers the node asked to resolve.
        let resolves = std::mem::take(&mut state.resolves);
        for (addr, generation) in resolves {
            let shared = shared.clone();
            crate::manual::resolve(
                &mut state.node,
                now,
                addr,
                generation,
                move |addr, generation, result| {
                    // Read under the lock, so no turn of the node is later.
                    let mut state = shared.lock();
                    let now = shared.clock.now();
                    state.node.handle_resolved(now, &addr, generation, result);
                    state.wake_driver();
                },
            );
        }
        this.poll_transmits(&mut state, now);
        {
            let mut woken = std::mem::take(&mut state.woken);
            crate::relay::service(&mut state, &shared, &mut woken);
            state.woken = woken;
        }
        if let Some(since) = state.closing {
            // Every close has been sent in an earlier turn (or the grace
            // period is over): the peers were told, stop.
            let expired = now.saturating_duration_since(since) > SHUTDOWN_GRACE;
            if (state.node.is_closed() && this.outbox.is_empty()) || expired {
                // Close the sockets before anyone hears that we stopped, so
                // that `shutdown().await` returning means the ports are free.
                this.sockets.clear();
                if let Some(mut mdns) = this.mdns.take() {
                    mdns.send();
                }
                state.stopped = true;
                // Streams need no wake-up here: shutting down ended every
                // connection, and the Node woke each of their streams then.
                let stopped = std::mem::take(&mut state.stopped_waiters);
                state.woken.extend(stopped);
                let waiting: Vec<RemoteIdentity> = state.peer_waiters.keys().copied().collect();
                for peer in waiting {
                    state.wake_peer(&peer);
                }
                state.subscribers.clear();
                state.wake_accept_waiters();
                let mut woken = std::mem::take(&mut state.woken);
                crate::relay::close_all(&mut state, &mut woken);
                state.woken = woken;
                let woken = std::mem::take(&mut state.woken);
                drop(state);
                woken.into_iter().for_each(Waker::wake);
                return Poll::Ready(());
            }
        }
        let discovery_at = state.discovery.as_ref().and_then(Discovery::poll_timeout);
        let node_at = state.node.poll_timeout();
        tracing::trace!(node = ?node_at, discovery = ?discovery_at, "driver sleeps until the next of these");
        let scan_at = this.mdns.as_ref().map(Mdns::next_scan);
        let next = [
            node_at.map(|(at, _)| at),
            discovery_at.map(|(at, _)| at),
            scan_at,
        ]
        .into_iter()
        .flatten()
        .min();
        let at = match state.closing {
            // Re-check the shutdown grace period even if nothing happens.
            Some(closing) => next.map_or(closing + SHUTDOWN_GRACE, |n| {
                n.min(closing + SHUTDOWN_GRACE)
            }),
            None => next.unwrap_or(now + Duration::from_secs(3600)),
        };
        this.timer.as_mut().reset(at);
        this.timer_at = at;
        if this.timer.as_mut().poll_expired(cx).is_ready() {
            busy = true;
        }
        // Send and wake after letting go of the lock; the waker buffer is
        // kept for reuse.
        let closing = state.closing.is_some();
        std::mem::swap(&mut this.woken, &mut state.woken);
        drop(state);
        let sending = !this.outbox.is_empty();
        if let Some(mdns) = this.mdns.as_mut() {
            mdns.send();
        }
        busy |= this.send_all(cx, &shared);
        this.woken.drain(..).for_each(Waker::wake);
        // While closing, come back at once to see whether that was the last
        // of it (once the socket took it all; else its readiness will).
        busy |= closing && sending && this.outbox.is_empty();
        if busy {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

fn ecn_from_udp(ecn: quinn_udp::EcnCodepoint) -> Ecn {
    match ecn {
        quinn_udp::EcnCodepoint::Ect0 => Ecn::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => Ecn::Ect1,
        quinn_udp::EcnCodepoint::Ce => Ecn::Ce,
    }
}

fn ecn_to_udp(ecn: Ecn) -> quinn_udp::EcnCodepoint {
    match ecn {
        Ecn::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        Ecn::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        Ecn::Ce => quinn_udp::EcnCodepoint::Ce,
    }
}

/// Add a waiting task, once: a task polled again before being woken must
/// not grow the list.
/// A task's interest in a dial it started or joined (through
/// [`State::dial`]): released under the lock when the task has the
/// outcome, or when dropped (a cancelled `connect` or `new_stream`), so a
/// dial's slot never outlives everyone who waited for it.
#[derive(Debug)]
pub(crate) struct DialWatch {
    shared: Arc<Shared>,
    id: Option<DialId>,
}

impl DialWatch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, id: None }
    }

    /// The dial watched, if any.
    pub(crate) fn id(&self) -> Option<DialId> {
        self.id
    }

    /// Watch `id`, which [`State::dial`] just counted for this watcher.
    pub(crate) fn set(&mut self, id: DialId) {
        debug_assert!(self.id.is_none(), "one dial at a time");
        self.id = Some(id);
    }

    /// Let go of the dial, under the lock the caller holds.
    pub(crate) fn release(&mut self, state: &mut State) {
        if let Some(id) = self.id.take() {
            state.unwatch_dial(id);
        }
    }
}

impl Drop for DialWatch {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.shared.lock().unwatch_dial(id);
        }
    }
}

pub(crate) fn register(waiters: &mut Vec<Waker>, waker: &Waker) {
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}
