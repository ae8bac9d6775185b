//! [`P2P`]: a running node, and [`P2PConfig`], what it is built from.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use pos_p2p_protocol::node::{ConnectionState, DisconnectReason, Node, NodeConfig};
use pos_p2p_protocol::semver::Version;
use pos_p2p_protocol::{Identity, Metadata, RemoteIdentity};

use crate::driver::{Dial, Driver, EVENT_QUEUE, Shared, State, register};
use crate::error::{ConnectError, StartError};
use crate::event::Events;
use crate::peer::Peer;
use crate::runtime::{Runtime, RuntimeKind};
use crate::stream::UnicastStream;

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
        getrandom::fill(&mut seed).map_err(|e| StartError::Random(e.to_string()))?;
        Ok(Self {
            node: NodeConfig::new(identity, app_name, app_version, seed),
            listen_addrs: vec![
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            ],
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
}

/// Generate a new node identity from the operating system's secure random
/// number generator.
pub fn generate_identity() -> Result<Identity, StartError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| StartError::Random(e.to_string()))?;
    Ok(Identity::from_bytes(&seed))
}

/// A running pos-p2p node. Build it with [`P2P::new`] and share it as
/// `Arc<P2P>`.
///
/// One driver task per node owns the sockets; every method here only takes
/// a short lock, never across an `.await`.
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

    /// Start a node on the given runtime.
    pub fn with_runtime(config: P2PConfig, runtime: RuntimeKind) -> Result<Arc<Self>, StartError> {
        let runtime: Box<dyn Runtime> = match runtime {
            #[cfg(feature = "tokio")]
            RuntimeKind::Tokio => Box::new(crate::runtime::tokio::Tokio(
                tokio::runtime::Handle::try_current()
                    .map_err(|_| StartError::NoRuntime("tokio"))?,
            )),
            #[cfg(feature = "async-std")]
            RuntimeKind::AsyncStd => Box::new(crate::runtime::async_std::AsyncStd),
        };
        let now = Instant::now();
        let identity = config.node.identity.to_remote_identity();
        let node = Node::new(config.node, now)?;

        let mut sockets = Vec::new();
        for addr in &config.listen_addrs {
            match bind(*addr) {
                Ok(socket) => {
                    sockets.push(
                        runtime
                            .wrap_udp(socket)
                            .map_err(|source| StartError::Bind {
                                addr: *addr,
                                source,
                            })?,
                    )
                }
                // The default IPv6 socket is optional: not every machine
                // has IPv6.
                Err(_) if !config.explicit_listen && addr.is_ipv6() => {}
                Err(source) => {
                    return Err(StartError::Bind {
                        addr: *addr,
                        source,
                    });
                }
            }
        }
        if sockets.is_empty() {
            return Err(StartError::NoListenAddress);
        }

        let shared = Shared::new(State {
            node,
            driver: None,
            readers: HashMap::new(),
            writers: HashMap::new(),
            peer_waiters: HashMap::new(),
            dials: Default::default(),
            peer_dials: HashMap::new(),
            dial_waiters: Vec::new(),
            known: Default::default(),
            subscribers: Vec::new(),
            incoming: Default::default(),
            accept_waiters: Vec::new(),
            closing: None,
            stopped: false,
            stopped_waiters: Vec::new(),
        });
        let driver =
            Driver::new(shared.clone(), sockets, runtime.timer(now)).map_err(|source| {
                StartError::Bind {
                    addr: config.listen_addrs[0],
                    source,
                }
            })?;
        let listen_addrs = driver.local_addrs();
        runtime.spawn(Box::pin(driver));
        Ok(Arc::new(Self {
            shared,
            identity,
            listen_addrs,
        }))
    }

    /// This node's identity.
    pub fn remote_identity(&self) -> RemoteIdentity {
        self.identity
    }

    /// The addresses the node listens on, with the ports actually bound.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The peers this node knows: connected ones and ones added by address.
    /// An owned snapshot; no lock is held.
    pub fn peers(&self) -> HashMap<RemoteIdentity, Arc<Peer>> {
        let state = self.shared.lock();
        let mut peers: HashMap<RemoteIdentity, Arc<Peer>> = HashMap::new();
        let connected = state.node.peers().map(|p| p.identity);
        for identity in connected.chain(state.known.keys().copied()) {
            peers
                .entry(identity)
                .or_insert_with(|| Arc::new(Peer::new(self.shared.clone(), identity)));
        }
        peers
    }

    /// This node's metadata.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.shared.lock().node.config().metadata.to_hashmap()
    }

    /// Replace this node's metadata; connected peers are told.
    pub fn set_metadata(&self, metadata: Metadata) {
        let mut state = self.shared.lock();
        state.node.set_metadata(metadata);
        state.wake_driver();
    }

    /// Remember a peer by identity and address, so that
    /// [`Peer::new_stream`] can dial it on demand. IPv6 literals work as
    /// `"[::1]:4433".parse()`.
    pub fn add_peer(&self, identity: RemoteIdentity, addr: SocketAddr) -> Arc<Peer> {
        let mut state = self.shared.lock();
        crate::driver::remember_addr(&mut state.known, identity, addr);
        Arc::new(Peer::new(self.shared.clone(), identity))
    }

    /// Dial `addr` and wait until the peer is connected; with `expected`,
    /// only that identity is accepted. Returns the peer's identity, learned
    /// from the handshake when not given.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<RemoteIdentity>,
    ) -> Result<RemoteIdentity, ConnectError> {
        let id = {
            let mut state = self.shared.lock();
            if state.closing.is_some() {
                return Err(ConnectError::Shutdown);
            }
            let now = Instant::now();
            let id = state.node.connect(now, addr, expected)?;
            state.dials.insert(
                id,
                Dial {
                    started: now,
                    failure: None,
                    established: None,
                },
            );
            state.wake_driver();
            id
        };
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            let result = match state.node.connection_state(id) {
                Some(ConnectionState::Established(peer)) => Some(Ok(peer)),
                Some(ConnectionState::Handshaking) if !state.stopped => None,
                // The dial made it, then gave way to another connection to
                // the same peer (both sides dialed): the peer is connected.
                Some(ConnectionState::Closed {
                    established_with: Some(peer),
                }) if state.node.peer(&peer).is_some() => Some(Ok(peer)),
                None if state
                    .dials
                    .get(&id)
                    .and_then(|d| d.established)
                    .is_some_and(|peer| state.node.peer(&peer).is_some()) =>
                {
                    state.dials.get(&id).and_then(|d| d.established).map(Ok)
                }
                _ if state.stopped => Some(Err(ConnectError::Shutdown)),
                _ => Some(Err(ConnectError::Failed(
                    state
                        .dials
                        .get_mut(&id)
                        .and_then(|d| d.failure.take())
                        .unwrap_or(DisconnectReason::ClosedLocally),
                ))),
            };
            match result {
                Some(result) => {
                    state.dials.remove(&id);
                    if let Ok(peer) = result {
                        crate::driver::remember_addr(&mut state.known, peer, addr);
                    }
                    Poll::Ready(result)
                }
                None => {
                    register(&mut state.dial_waiters, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Close every connection to `peer`, telling it `reason`. The peer stays
    /// known by address, so a later `new_stream` dials it again.
    pub fn disconnect(&self, peer: &RemoteIdentity, reason: &str) {
        let mut state = self.shared.lock();
        state.node.close(Instant::now(), peer, reason);
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
        self.shared.lock().subscribers.push(tx);
        Events { rx: Box::pin(rx) }
    }

    /// Close every connection gracefully and stop the driver; resolves once
    /// the peers were told (or after a short grace period) and the sockets
    /// are closed.
    pub async fn shutdown(&self) {
        {
            let mut state = self.shared.lock();
            if state.closing.is_none() {
                let now = Instant::now();
                state.closing = Some(now);
                state.node.shutdown(now);
            }
            state.wake_driver();
        }
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

    /// Whether the driver has stopped (after [`P2P::shutdown`] or drop).
    pub fn is_stopped(&self) -> bool {
        self.shared.lock().stopped
    }
}

impl Drop for P2P {
    fn drop(&mut self) {
        // Close the connections and let the driver finish on its own; it
        // stops within the shutdown grace period and drops the sockets.
        let mut state = self.shared.lock();
        if state.closing.is_none() {
            let now = Instant::now();
            state.closing = Some(now);
            state.node.shutdown(now);
        }
        state.wake_driver();
    }
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
