//! [`P2P`]: a running node, and [`P2PConfig`], what it is built from.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use pos_p2p_protocol::discovery::{Discovery, DiscoveryConfig, DiscoveryStats};
use pos_p2p_protocol::node::{Limits, Node, NodeConfig, RelayAddr, RelayStatus, Timeouts};
use pos_p2p_protocol::relay::RelayError;
use pos_p2p_protocol::semver::Version;
use pos_p2p_protocol::{Identity, Metadata, RemoteIdentity, VersionPolicy};

use crate::clock::Clock;
use crate::driver::{DialWatch, Driver, EVENT_QUEUE, Shared, State, register};
use crate::error::StartError;
use crate::event::Events;
use crate::manual::{ManualPeer, PeerAddr};
use crate::mdns::Mdns;
use crate::peer::{Peer, Peers};
use crate::runtime::{Runtime, RuntimeKind};
use crate::stream::UnicastStream;
use pos_p2p_protocol::node::ConnectError;

/// What a [`P2P`] node is built from.
///
/// ```
/// use pos_p2p::{Identity, P2PConfig, semver::Version};
///
/// let config = P2PConfig::new(Identity::from_bytes(&[1; 32]), "notes", Version::new(1, 0, 0))
///     .unwrap()
///     .listen(["127.0.0.1:0".parse().unwrap()]);
/// assert_eq!(config.listen_addrs.len(), 1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct P2PConfig {
    /// The core's configuration: identity, application name and version,
    /// metadata, version policy, limits, timeouts.
    pub node: NodeConfig,
    /// Where to listen. Port 0 picks a free port. Defaults to all IPv4 and
    /// all IPv6 interfaces; a default IPv6 socket that cannot be bound (no
    /// IPv6 on the machine) is skipped.
    pub listen_addrs: Vec<SocketAddr>,
    /// Find peers on the LAN and be found, over mDNS (default: on). Off,
    /// the node opens no mDNS socket and sends no multicast at all.
    pub discovery: bool,
    /// How long [`Peer::new_stream`] waits for a connected peer to allow
    /// another stream (each peer allows
    /// [`Limits::max_streams_per_connection`](crate::Limits) at once)
    /// before failing with `StreamError::StreamsExhausted` (default: 10 s).
    pub stream_wait: Duration,
    /// The relays the node connects to and is reachable through (default:
    /// none; see [`P2PConfig::relay`]).
    pub relays: Vec<RelayAddr>,
    explicit_listen: bool,
}

impl P2PConfig {
    /// A configuration with defaults, seeded from the OS's randomness.
    pub fn new(
        identity: Identity,
        app_name: impl Into<String>,
        app_version: Version,
    ) -> Result<Self, StartError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| StartError::Random(crate::error::random_error(e)))?;
        Ok(Self {
            node: NodeConfig::new(identity, app_name, app_version, seed),
            listen_addrs: vec![
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            ],
            discovery: true,
            stream_wait: Duration::from_secs(10),
            relays: Vec::new(),
            explicit_listen: false,
        })
    }

    /// Listen on these addresses instead of the defaults.
    pub fn listen(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.listen_addrs = addrs.into_iter().collect();
        self.explicit_listen = true;
        self
    }

    /// Use this metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.node.metadata = metadata;
        self
    }

    /// Wait at most this long for a peer to allow another stream (see
    /// [`P2PConfig::stream_wait`]).
    pub fn stream_wait(mut self, wait: Duration) -> Self {
        self.stream_wait = wait;
        self
    }

    /// Which peer versions to accept (default: the same major version, or
    /// the same minor for `0.x`; see [`VersionPolicy`]).
    pub fn version_policy(mut self, policy: VersionPolicy) -> Self {
        self.node.version_policy = policy;
        self
    }

    /// Use these limits (connections, streams, headers, windows, the
    /// address book; see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.node.limits = limits;
        self
    }

    /// Use these timeouts (handshake, idle, keep-alive, header; see
    /// [`Timeouts`]).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.node.timeouts = timeouts;
        self
    }

    /// Use a relay (see [`P2P::add_relay`]). None are used unless
    /// configured: the node talks to no server its application did not
    /// name.
    pub fn relay(mut self, relay: RelayAddr) -> Self {
        self.relays.push(relay);
        self
    }

    /// Try to reach peers met through a relay directly (on by default):
    /// see [`NodeConfig::hole_punching`](pos_p2p_protocol::node::NodeConfig::hole_punching).
    /// Off, peers reached through a relay never learn this node's
    /// addresses, and such connections stay relayed.
    pub fn hole_punching(mut self, on: bool) -> Self {
        self.node.hole_punching = on;
        self
    }

    /// Turn LAN discovery on or off (see [`P2PConfig::discovery`]).
    pub fn discovery(mut self, on: bool) -> Self {
        self.discovery = on;
        self
    }
}

impl Drop for P2P {
    fn drop(&mut self) {
        // Close the connections and let the driver finish on its own; it
        // stops within the shutdown grace period and drops the sockets.
        self.begin_shutdown();
    }
}

/// Generate a new node identity from the operating system's secure random
/// number generator.
pub fn generate_identity() -> Result<Identity, StartError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| StartError::Random(crate::error::random_error(e)))?;
    Ok(Identity::from_bytes(&seed))
}

/// A running pos-p2p node. Build it with [`P2P::new`] and share it as
/// `Arc<P2P>`.
///
/// One driver task per node owns the sockets; every method here only takes
/// a short lock, never across an `.await`.
///
/// The node lives as long as its `P2P`: dropping the last `Arc<P2P>`
/// starts the same shutdown as [`P2P::shutdown`] (without waiting for it),
/// even while [`Peer`] handles, streams or [`Events`] are still held. From
/// then on, `Peer::new_stream` fails with
/// [`NewStreamError::Shutdown`](crate::NewStreamError::Shutdown), reads and
/// writes on open streams fail (the connections are closed, so the peers
/// see them end), and the event stream ends. A [`Router`](crate::Router)
/// holds its node, so a node with a running router lives until the
/// router's shutdown.
#[derive(Debug)]
pub struct P2P {
    shared: Arc<Shared>,
    identity: RemoteIdentity,
    listen_addrs: Vec<SocketAddr>,
}

impl P2P {
    /// Start a node on the runtime this is called from: tokio if called
    /// within a tokio runtime (feature `tokio`), otherwise the async-io
    /// runtime of async-std and smol (feature `async-std`).
    pub fn new(config: P2PConfig) -> Result<Arc<Self>, StartError> {
        #[cfg(feature = "tokio")]
        if tokio::runtime::Handle::try_current().is_ok() {
            return Self::with_runtime(config, RuntimeKind::Tokio);
        }
        #[cfg(feature = "async-std")]
        {
            Self::with_runtime(config, RuntimeKind::AsyncStd)
        }
        #[cfg(not(feature = "async-std"))]
        {
            let _ = config;
            Err(StartError::NoRuntime("tokio"))
        }
    }

    /// What the node's handles share.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Start a node on the given runtime.
    pub fn with_runtime(config: P2PConfig, runtime: RuntimeKind) -> Result<Arc<Self>, StartError> {
        Self::with_clock(config, runtime, Clock::system())
    }

    /// Start a node on the given runtime, reading the time from `clock`
    /// (a test hook: see [`crate::testing`]).
    #[doc(hidden)]
    pub fn with_clock(
        config: P2PConfig,
        runtime: RuntimeKind,
        clock: Clock,
    ) -> Result<Arc<Self>, StartError> {
        let runtime: Box<dyn Runtime> = match runtime {
            #[cfg(feature = "tokio")]
            RuntimeKind::Tokio => Box::new(crate::runtime::tokio::Tokio(
                tokio::runtime::Handle::try_current()
                    .map_err(|_| StartError::NoRuntime("tokio"))?,
            )),
            #[cfg(feature = "async-std")]
            RuntimeKind::AsyncStd => Box::new(crate::runtime::async_std::AsyncStd),
        };
        let now = clock.now();
        let identity = config.node.identity.to_remote_identity();
        let mut discovery_config = DiscoveryConfig::new(identity, &config.node.app_name, {
            // Only response jitter is drawn from it; derive it from the node's.
            let mut seed = config.node.rng_seed;
            seed.reverse();
            seed
        });
        discovery_config.metadata = config.node.metadata.clone();
        let mut node = Node::new(config.node, now)?;
        for relay in &config.relays {
            node.add_relay(now, relay.clone())?;
        }

        let mut sockets = Vec::new();
        let mut v4_port = None;
        for addr in &config.listen_addrs {
            let mut addr = *addr;
            // One port for both families, so that one SRV record advertises
            // both: the default IPv6 socket takes the IPv4 socket's port.
            if let (false, 0, true, Some(v4)) =
                (config.explicit_listen, addr.port(), addr.is_ipv6(), v4_port)
            {
                addr.set_port(v4);
            }
            let bound = bind(addr).or_else(|e| match addr.port() {
                p if p != 0 && !config.explicit_listen => bind(SocketAddr::new(addr.ip(), 0)),
                _ => Err(e),
            });
            match bound {
                Ok(socket) => {
                    if addr.is_ipv4() && v4_port.is_none() {
                        v4_port = socket.local_addr().map(|a| a.port()).ok();
                    }
                    sockets.push(
                        runtime
                            .wrap_udp(socket)
                            .map_err(|source| StartError::Bind { addr, source })?,
                    )
                }
                // The default IPv6 socket is optional: not every machine
                // has IPv6.
                Err(_) if !config.explicit_listen && addr.is_ipv6() => {}
                Err(source) => return Err(StartError::Bind { addr, source }),
            }
        }
        if sockets.is_empty() {
            return Err(StartError::NoListenAddress);
        }

        let listening: Vec<SocketAddr> =
            sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
        let mdns = if config.discovery {
            Mdns::open(&*runtime, listening, now)
        } else {
            None
        };
        let discovery = mdns.as_ref().map(|_| Discovery::new(discovery_config, now));
        let shared = Shared::new(
            State {
                node,
                discovery,
                resolves: Vec::new(),
                driver: None,
                readers: HashMap::new(),
                writers: HashMap::new(),
                peer_waiters: HashMap::new(),
                dials: HashMap::new(),
                woken: Vec::new(),
                added: Default::default(),
                subscribers: Vec::new(),
                incoming: Default::default(),
                accept_waiters: Vec::new(),
                closing: None,
                stopped: false,
                stopped_waiters: Vec::new(),
                relay_tasks: HashMap::new(),
            },
            clock.clone(),
            runtime,
            config.stream_wait,
        );
        let driver =
            Driver::new(shared.clone(), sockets, shared.timer(now), mdns).map_err(|source| {
                StartError::Bind {
                    addr: config.listen_addrs[0],
                    source,
                }
            })?;
        let listen_addrs = driver.local_addrs();
        shared.runtime.spawn(Box::pin(driver));
        Ok(Arc::new(Self {
            shared,
            identity,
            listen_addrs,
        }))
    }

    /// This node's identity (the public half, as peers see it).
    pub fn local_identity(&self) -> RemoteIdentity {
        self.identity
    }

    /// This node's identity.
    #[deprecated(note = "this node's identity, not a peer's: use `P2P::local_identity`")]
    pub fn remote_identity(&self) -> RemoteIdentity {
        self.identity
    }

    /// This node's address by identity: its identity, its relays and where
    /// it may be reached directly (its interface addresses, and the public
    /// address its relays see). Its text form (`to_string()`) is short
    /// enough for a link or a QR code; another device passes it to
    /// [`P2P::add_manual_peer`] (parsed, `text.parse::<PeerAddr>()`, or as
    /// a [`NodeAddr`](crate::NodeAddr)) to keep this node connected however
    /// it can reach it.
    pub fn node_addr(&self) -> crate::NodeAddr {
        self.shared.lock().node.node_addr()
    }

    /// The addresses the node listens on, with the ports actually bound.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The peers this node knows: connected ones, ones in its address book,
    /// found on the LAN, or added by address. An owned snapshot; no lock is
    /// held.
    pub fn peers(&self) -> Peers {
        let state = self.shared.lock();
        let mut peers: HashMap<RemoteIdentity, Peer> = HashMap::new();
        let connected = state.node.peers().map(|p| p.identity);
        let discovered = state
            .discovery
            .iter()
            .flat_map(|d| d.peers())
            .map(|p| p.identity);
        let manual: Vec<RemoteIdentity> = state
            .node
            .manual_peers()
            .into_iter()
            .filter_map(|m| m.identity)
            .collect();
        for identity in connected
            .chain(state.node.book().peers().copied())
            .chain(discovered)
            .chain(manual)
        {
            peers
                .entry(identity)
                .or_insert_with(|| Peer::new(self.shared.clone(), identity));
        }
        Peers::new(peers)
    }

    /// The peer with this identity, if this node knows it (as
    /// [`P2P::peers`] would list it).
    pub fn peer(&self, identity: &RemoteIdentity) -> Option<Peer> {
        let state = self.shared.lock();
        let known = state.node.peer(identity).is_some()
            || state.node.book().addrs(identity).is_some()
            || state
                .discovery
                .as_ref()
                .is_some_and(|d| d.peer(identity).is_some())
            || state
                .node
                .manual_peers()
                .iter()
                .any(|m| m.identity.as_ref() == Some(identity));
        known.then(|| Peer::new(self.shared.clone(), *identity))
    }

    /// This node's metadata.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.shared.lock().node.config().metadata.to_hashmap()
    }

    /// Replace this node's metadata; connected peers are told.
    pub fn set_metadata(&self, metadata: Metadata) {
        let mut state = self.shared.lock();
        if let Some(discovery) = &mut state.discovery {
            let now = self.shared.clock.now();
            discovery.set_metadata(now, metadata.clone());
        }
        state.node.set_metadata(metadata);
        state.wake_driver();
    }

    /// Remember a peer by identity and address, so that
    /// [`Peer::new_stream`] can dial it on demand. IPv6 literals work as
    /// `"[::1]:4433".parse()`.
    pub fn add_peer(&self, identity: RemoteIdentity, addr: SocketAddr) -> Peer {
        let mut state = self.shared.lock();
        state.node.book_mut().pin(identity, addr);
        state.added.insert(identity);
        // The application asked for this peer: its connections are never
        // evicted to make room for strangers.
        state.node.protect(identity);
        Peer::new(self.shared.clone(), identity)
    }

    /// Use the relay `relay`: the node connects to it over TLS on TCP,
    /// pinning its identity, stays connected (reconnecting with backoff
    /// when the connection ends), and can be reached through it by any
    /// node that knows this node's identity and the relay. Its status is
    /// in [`P2P::relays`], its comings and goings in [`P2P::events`].
    pub fn add_relay(&self, relay: RelayAddr) -> Result<(), RelayError> {
        let mut state = self.shared.lock();
        state.node.add_relay(self.shared.clock.now(), relay)?;
        state.wake_driver();
        Ok(())
    }

    /// The relays the node uses and how each stands.
    pub fn relays(&self) -> Vec<(RelayAddr, RelayStatus)> {
        let state = self.shared.lock();
        state
            .node
            .relays()
            .map(|(_, addr, status)| (addr.clone(), status))
            .collect()
    }

    /// Remember a peer reached through the relay `relay` (which this node
    /// starts using too), so that [`Peer::new_stream`] dials it there on
    /// demand, pinning `identity` end to end: the relay only forwards
    /// encrypted datagrams.
    pub fn add_peer_via_relay(
        &self,
        identity: RemoteIdentity,
        relay: RelayAddr,
    ) -> Result<Peer, RelayError> {
        let mut state = self.shared.lock();
        let now = self.shared.clock.now();
        state.node.add_relayed_peer(now, identity, relay)?;
        state.added.insert(identity);
        state.wake_driver();
        drop(state);
        Ok(Peer::new(self.shared.clone(), identity))
    }

    /// Add a manual peer: an address (`"192.0.2.1:4433"`, `"[::1]:4433"`)
    /// or a host name (`"laptop.local:4433"`, resolved before each attempt)
    /// that the node keeps connected. It is dialed at once and, after a
    /// failure or a disconnect, again with exponential backoff (1 s doubling
    /// to 60 s, jittered). With `expected` the peer must prove that
    /// identity; without, the identity is learned from the handshake. The
    /// peer shows in [`P2P::peers`] once its identity is known, and its
    /// status in [`P2P::manual_peers`]. Adding the same address again
    /// replaces its expected identity and keeps its progress.
    pub fn add_manual_peer(&self, addr: impl Into<PeerAddr>, expected: Option<RemoteIdentity>) {
        let mut state = self.shared.lock();
        state
            .node
            .add_manual_peer(self.shared.clock.now(), addr.into(), expected);
        state.wake_driver();
    }

    /// Stop keeping a manual peer connected (an existing connection stays
    /// until closed). Returns whether it was there.
    pub fn remove_manual_peer(&self, addr: &PeerAddr) -> bool {
        let mut state = self.shared.lock();
        let Some(identity) = state.node.remove_manual_peer(addr) else {
            return false;
        };
        // Unless the application added it by identity too.
        if let Some(identity) = identity.filter(|id| !state.added.contains(id)) {
            state.node.unprotect(&identity);
            state.node.book_mut().unpin(&identity);
        }
        true
    }

    /// The manual peers and where each stands.
    pub fn manual_peers(&self) -> Vec<ManualPeer> {
        self.shared.lock().node.manual_peers()
    }

    /// Dial `addr` and wait until the peer is connected; with `expected`,
    /// only that identity is accepted. Returns the peer's identity, learned
    /// from the handshake when not given.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<RemoteIdentity>,
    ) -> Result<RemoteIdentity, ConnectError> {
        let mut watch = DialWatch::new(self.shared.clone());
        {
            let mut state = self.shared.lock();
            if state.closing.is_some() {
                return Err(ConnectError::ShuttingDown);
            }
            watch.set(state.dial(self.shared.clock.now(), &[addr], expected)?);
        }
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            let Some(id) = watch.id() else {
                return Poll::Ready(Err(ConnectError::ShuttingDown));
            };
            let Poll::Ready(result) = state.poll_dial(id, cx) else {
                return Poll::Pending;
            };
            watch.release(&mut state);
            Poll::Ready(match result {
                Ok(peer) => {
                    // Dialed by address on the application's request: kept.
                    state.node.book_mut().pin(peer, addr);
                    Ok(peer)
                }
                Err(_) if state.closing.is_some() => Err(ConnectError::ShuttingDown),
                Err(reason) => Err(ConnectError::Failed(reason)),
            })
        })
        .await
    }

    /// Close every connection to `peer`, telling it `reason`. The peer stays
    /// known by address, so a later `new_stream` dials it again.
    pub fn disconnect(&self, peer: &RemoteIdentity, reason: &str) {
        let mut state = self.shared.lock();
        state.node.close(self.shared.clock.now(), peer, reason);
        state.wake_driver();
    }

    /// The next stream a peer opened; `None` once the node has shut down.
    /// Streams not yet accepted count against their connection's stream
    /// limit, so a slow acceptor slows its peers down instead of growing a
    /// queue.
    pub async fn accept(&self) -> Option<UnicastStream> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some((id, peer)) = state.incoming.pop_front() {
                return Poll::Ready(Some(UnicastStream::new(
                    self.shared.clone(),
                    id,
                    self.identity,
                    peer,
                    state.node.span(),
                )));
            }
            if state.stopped {
                return Poll::Ready(None);
            }
            register(&mut state.accept_waiters, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// A subscription to this node's events from now on.
    pub fn events(&self) -> Events {
        let (tx, rx) = async_channel::bounded(EVENT_QUEUE);
        let lost = Arc::default();
        self.shared.lock().subscribers.push((tx, Arc::clone(&lost)));
        Events {
            rx: Box::pin(rx),
            lost,
        }
    }

    /// Close every connection gracefully and stop the driver; resolves once
    /// the peers were told (or after a short grace period) and the sockets
    /// are closed.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.stopped {
                Poll::Ready(())
            } else {
                register(&mut state.stopped_waiters, cx.waker());
                Poll::Pending
            }
        })
        .await;
    }

    /// Start closing every connection and discovery (once); the driver
    /// does the rest.
    fn begin_shutdown(&self) {
        let mut state = self.shared.lock();
        if state.closing.is_none() {
            let now = self.shared.clock.now();
            state.closing = Some(now);
            state.node.shutdown(now);
            if let Some(discovery) = &mut state.discovery {
                discovery.shutdown();
            }
        }
        state.wake_driver();
    }

    /// Whether LAN discovery is running: it was not turned off and an mDNS
    /// socket could be opened.
    pub fn is_discovering(&self) -> bool {
        let state = self.shared.lock();
        state.discovery.as_ref().is_some_and(|d| !d.is_closed())
    }

    /// Turn LAN discovery off while running: the node says goodbye (its
    /// records expire at once on the other nodes), closes its mDNS sockets
    /// and sends no more multicast. Connections, including those to
    /// discovered peers, are not affected. It cannot be turned on again
    /// without restarting the node.
    pub fn stop_discovery(&self) {
        let mut state = self.shared.lock();
        if let Some(discovery) = &mut state.discovery {
            discovery.shutdown();
            state.wake_driver();
        }
    }

    /// LAN discovery's counters (packets, malformed ones, rate-limited
    /// ones, …); `None` when discovery is not running.
    pub fn discovery_stats(&self) -> Option<DiscoveryStats> {
        let state = self.shared.lock();
        state.discovery.as_ref().map(|d| d.stats().clone())
    }

    /// What the node counted: refused, deferred and evicted handshakes and
    /// connections, refused streams, rate-limited and early-dropped
    /// datagrams (see [`NodeStats`](crate::NodeStats)).
    pub fn stats(&self) -> pos_p2p_protocol::node::NodeStats {
        self.shared.lock().node.stats().clone()
    }

    /// Whether the driver has stopped (after [`P2P::shutdown`] or drop).
    pub fn is_stopped(&self) -> bool {
        self.shared.lock().stopped
    }

    /// The node's idea of now (the time of its latest input): for tests on
    /// a manual clock, to know that the driver saw an advance (not a
    /// stable API).
    #[doc(hidden)]
    pub fn node_now(&self) -> std::time::Instant {
        self.shared.lock().node.now()
    }

    /// How many entries the adapter's own tables hold: for tests that
    /// check nothing is left behind (not a stable API).
    #[doc(hidden)]
    pub fn table_sizes(&self) -> TableSizes {
        let state = self.shared.lock();
        TableSizes {
            dials: state.dials.len(),
            node_dials: state.node.dial_count(),
            readers: state.readers.len(),
            writers: state.writers.len(),
            peer_waiters: state.peer_waiters.len(),
        }
    }
}

/// The sizes [`P2P::table_sizes`] reports (not a stable API).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSizes {
    /// Dials someone waits for.
    pub dials: usize,
    /// Dials under way in the Node.
    pub node_dials: usize,
    /// Tasks waiting to read a stream.
    pub readers: usize,
    /// Tasks waiting to write a stream.
    pub writers: usize,
    /// Peers with tasks waiting for stream credit.
    pub peer_waiters: usize,
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // One socket per address family: IPv4 peers reach the IPv4 socket.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
