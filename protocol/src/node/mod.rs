//! [`Node`]: the sans-IO pos-p2p node. QUIC connections (via quinn-proto),
//! identity-pinned mutual TLS, the Hello handshake with version gating, and
//! application streams, decided without a socket, a clock or a runtime.
//!
//! # Driving a node
//!
//! The node is a state machine. The caller owns the UDP socket(s) and the
//! timer, feeds inputs, and after **every** input drains all outputs:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use pos_p2p_protocol::node::{Node, NodeConfig};
//! # fn recv() -> Option<(std::net::SocketAddr, bytes::BytesMut)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn sleep_until(_: Option<Instant>) {}
//! # let config: NodeConfig = todo!();
//! let mut node = Node::new(config, Instant::now())?;
//! let mut buf = Vec::new();
//! loop {
//!     // 1. Inputs: datagrams, expired timers, application commands.
//!     let now = Instant::now();
//!     if let Some((from, datagram)) = recv() {
//!         node.handle_datagram(now, from, None, None, datagram);
//!     }
//!     node.handle_timeout(now);
//!     // 2. Outputs, in this order, until each returns `None`.
//!     while let Some(transmit) = node.poll_transmit(now, 1, &mut buf) {
//!         send(transmit.destination, &buf[..transmit.size]);
//!     }
//!     while let Some(event) = node.poll_event() {
//!         // connected peers, incoming streams, readable streams, ...
//!     }
//!     // 3. Sleep until the next timer or input.
//!     sleep_until(node.poll_timeout().map(|(at, _reason)| at));
//! }
//! # Ok::<(), pos_p2p_protocol::node::NodeError>(())
//! ```
//!
//! Methods come in four groups: getters (`local_identity`, `peer`, `peers`,
//! `stats`), inputs (`handle_datagram`, `handle_timeout`), commands
//! (`dial`, `connect`, `open_stream`, `write`, `read`, `finish`, `reset`,
//! `stop`, `release`, `close`, `protect`, `set_metadata`, `shutdown`) and
//! outputs (`poll_transmit`, `poll_event`, `poll_timeout`). Commands may
//! create transmits and events too, so drain after them as after inputs.
//!
//! To reach a peer, [`Node::dial`] it: one dial per peer, shared by every
//! caller that asks while it is under way, trying each address given, and
//! ending in exactly one [`Event::DialFinished`] with the peer or a typed
//! reason. [`Node::connect`] is the single connection attempt underneath,
//! reported only by [`Event::Connected`] / [`Event::ConnectFailed`].
//!
//! The code is split by responsibility: `input` (datagrams and timers),
//! `command` (dial one address, close, metadata, shutdown), `establish`
//! (QUIC events, TLS's outcome, the end of the Hello exchange), `dial`
//! (dials and their outcomes), `manual` (peers kept connected), `admission` (which
//! handshakes and connections are kept under load), `control` (the control
//! stream and the Hello), `header` (receiving the header frame of
//! peer-opened streams), `stream` (stream commands and events),
//! `duplicate` (one connection per pair of nodes), `close` (closing and
//! close reasons), `output` (transmits and deadlines), `tls` and `setup`.
//!
//! # Connections and peers
//!
//! A peer becomes *connected* once TLS has proven its identity and both
//! Hellos were accepted. Each node keeps one connection per peer: if two
//! nodes dial each other at once, both keep the connection dialed by the node
//! with the smaller identity (the newer one if the same node dialed both);
//! the other is drained (no new streams on it)
//! and closed once its streams are done, so no stream opened during the race
//! is cut off.

#[macro_use]
mod macros;

mod admission;
mod close;
mod command;
mod config;
mod conn;
mod control;
#[cfg(feature = "deterministic")]
mod deterministic;
mod dial;
mod duplicate;
mod error;
mod establish;
mod event;
mod header;
mod hello;
mod input;
mod manual;
mod node_addr;
mod output;
mod punch;
mod relay;
mod route;
mod setup;
mod stream;
pub(crate) mod tls;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::ConnectionHandle;

pub use config::{Limits, NodeConfig, Timeouts};
pub use dial::{DialId, MAX_DIAL_ADDRS};
pub use duplicate::DRAIN_GRACE;
pub use error::{
    ConnectError, DisconnectReason, StreamError, StreamRejection, TransportFailure, Violation,
    stream_code,
};
pub use event::{
    ConnectionId, Ecn, Event, NodeStats, PeerInfo, PeerStats, ReadOutcome, SendStatus, StreamId,
    TimeoutReason, Transmit,
};
pub use hello::{MAX_APP_NAME_LEN, MAX_CANDIDATES};
pub use manual::{
    FIRST_RETRY, MAX_RETRY, ManualError, ManualPeer, ManualStatus, PeerAddr, PeerAddrError,
    RESOLVE_TIMEOUT, ResolveError, STABLE,
};
pub use node_addr::{MAX_NODE_ADDR_ADDRS, MAX_NODE_ADDR_RELAYS, NodeAddr, NodeAddrError};
pub use punch::{MAX_PUNCHES, PROBE_INTERVAL, PROBE_RETRY, PUNCH_WINDOW};
pub use relay::{
    MAX_RELAYED_PATHS, MAX_RELAYS, MAX_WAITING_DATAGRAMS, PathKind, RELAY_MAX_RETRY,
    RELAY_PING_INTERVAL, RELAY_QUEUE_BYTES, RELAY_TIMEOUT, RelayAction, RelayAddr, RelayAddrError,
    RelayConnId, RelayId, RelayStatus,
};
pub use route::{MAX_HEARD_ADDRS, MAX_PENDING_PINGS, MAX_PONGS, PATH_PING_INTERVAL, PATH_TIMEOUT};
pub use tls::TlsSetupError;
pub use view::StreamView;

use crate::RemoteIdentity;
use crate::book::AddressBook;
use crate::rate::SourceLimits;
use conn::{Conn, send_hello};
pub use event::Direction;
use setup::{NodeClock, derive_seeds, transport_config};

/// The ALPN protocol id for a protocol version: the protocol's name and its
/// major version (`pos-p2p/1`), or for `0.x` versions its major and minor
/// (`pos-p2p/0.1`), as those are the breaking ones. Nodes whose protocol
/// versions are incompatible therefore fail already at the TLS layer.
pub fn alpn(protocol: &semver::Version) -> Vec<u8> {
    if protocol.major == 0 {
        format!("pos-p2p/0.{}", protocol.minor).into_bytes()
    } else {
        format!("pos-p2p/{}", protocol.major).into_bytes()
    }
}

/// The TLS alert `no_application_protocol` (120) as a QUIC crypto error.
const ALPN_ALERT: u8 = 120;

/// How many endpoint-level responses (refusals, resets) wait for
/// `poll_transmit` at most; more are dropped, which is harmless.
const MAX_QUEUED_RESPONSES: usize = 64;

/// Datagrams starting with a QUIC v1 Initial packet one source address may
/// send per second (twice as many in a burst). Each costs an Initial key
/// derivation and a decryption (about 4 µs) before QUIC can tell garbage
/// from a dialer; an honest dialer sends one, or a few with
/// retransmissions.
const FIRST_FLIGHTS_PER_SOURCE: u32 = 50;
/// How many source addresses get such a limit of their own; the others
/// share one.
const TRACKED_SOURCES: usize = 256;
/// The smallest datagram that may carry a client's first flight (RFC 9000
/// §14.1); smaller ones with an unknown version get no answer.
const MIN_INITIAL_SIZE: usize = 1200;

/// Why a node could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The application name is empty or longer than [`MAX_APP_NAME_LEN`].
    #[error("application name must be 1 to {MAX_APP_NAME_LEN} bytes")]
    InvalidAppName,
    /// A limit or timeout cannot be used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    /// Established connections to this peer (two only during a dial race).
    conns: BTreeSet<ConnectionId>,
}

/// A pos-p2p node as a sans-IO state machine. See the [module
/// docs](self) for how to drive it.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    local: RemoteIdentity,
    endpoint: quinn_proto::Endpoint,
    client_config: quinn_proto::ClientConfig,
    /// For dials that pin the peer's identity: resumes TLS sessions.
    pinned_client_config: quinn_proto::ClientConfig,
    /// Peer handshake signatures verified so far.
    signatures_verified: Arc<std::sync::atomic::AtomicU64>,
    /// Pinned dials the TLS verifier refused, and who answered them.
    mismatches: Arc<tls::Mismatches>,
    /// Dials the application asked for, until each is finished.
    dials: dial::Dials,
    /// Where peers were reached; bounded (see [`AddressBook`]).
    book: AddressBook,
    /// Peers the application asked to keep connected.
    manual: manual::Manuals,
    /// The relays the application configured, and the relayed paths.
    relays: relay::Relays,
    /// The node's candidate addresses and address probes.
    traversal: punch::Traversal,
    /// Relayed connections by the path token their peer sends (§10.9).
    path_tokens: HashMap<[u8; 16], ConnectionId>,
    /// Relayed connections by the direct addresses their peer reached the
    /// node from or answers at: short-header datagrams from there are
    /// theirs.
    heard: HashMap<SocketAddr, ConnectionId>,
    /// How many connections the node has at each address QUIC knows them
    /// by (a connection of its own at an address wins over a route).
    direct_addrs: HashMap<SocketAddr, usize>,
    /// Direct-path packets waiting for `poll_transmit`.
    direct_out: VecDeque<(SocketAddr, [u8; crate::direct::PACKET_LEN])>,
    /// The node's tracing span (its identity); every connection's span is
    /// inside it.
    span: tracing::Span,
    conns: BTreeMap<ConnectionId, Conn>,
    by_handle: HashMap<ConnectionHandle, ConnectionId>,
    peers: BTreeMap<RemoteIdentity, Peer>,
    /// Identities the application asked to keep (see [`Node::protect`]).
    protected: BTreeSet<RemoteIdentity>,
    events: VecDeque<Event>,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    /// Stateless answers go to unverified addresses: at a bounded rate per
    /// address, so the node cannot be used to flood one (spoofed) address.
    response_limit: SourceLimits,
    /// Initial packets per source address: each costs a key derivation
    /// and a decryption before it can be judged.
    first_flights: SourceLimits,
    stats: NodeStats,
    next_conn: u64,
    /// Round-robin cursor for `poll_transmit`, so one busy connection
    /// cannot starve the others.
    transmit_cursor: Option<ConnectionId>,
    shutting_down: bool,
    /// The time of the latest input, for commands that take none.
    now: Instant,
    /// When the node started, and the clock QUIC's address-validation
    /// tokens read: the node's own time since then, never the OS's.
    started: Instant,
    clock: Arc<NodeClock>,
    /// Connections touched since they last had nothing to send: only these
    /// are polled for transmits and asked for fresh deadlines, so an idle
    /// connection costs nothing per input to another one.
    active: BTreeSet<ConnectionId>,
}

impl Node {
    /// A node with the given configuration. `now` is the node's notion of
    /// the current time; the node never reads a clock.
    pub fn new(config: NodeConfig, now: Instant) -> Result<Self, NodeError> {
        if config.app_name.is_empty() || config.app_name.len() > MAX_APP_NAME_LEN {
            return Err(NodeError::InvalidAppName);
        }
        if config.timeouts.keep_alive >= config.timeouts.idle {
            return Err(NodeError::InvalidConfig(
                "keep_alive must be shorter than the idle timeout",
            ));
        }
        if config.limits.header_buffer
            < config.limits.max_header_len + crate::codec::varint::MAX_VARINT_LEN
        {
            return Err(NodeError::InvalidConfig(
                "header_buffer must hold one whole header frame of max_header_len",
            ));
        }
        #[cfg(feature = "deterministic")]
        if config.cheap_key_exchange && !config.deterministic_crypto {
            return Err(NodeError::InvalidConfig(
                "cheap_key_exchange needs deterministic_crypto",
            ));
        }
        // Below a millisecond a lost packet would be resent as fast as the
        // timer fires; at or above the handshake timeout, never.
        if config.timeouts.initial_rtt < Duration::from_millis(1)
            || config.timeouts.initial_rtt >= config.timeouts.handshake
        {
            return Err(NodeError::InvalidConfig(
                "initial_rtt must be at least 1 ms and shorter than the handshake timeout",
            ));
        }
        if config.limits.max_incoming_handshakes == 0 || config.limits.max_connections == 0 {
            return Err(NodeError::InvalidConfig(
                "max_connections and max_incoming_handshakes must be at least 1",
            ));
        }
        #[cfg(feature = "deterministic")]
        let cert = if config.deterministic_crypto {
            tls::NodeCertificate::from_certified(deterministic::certified(&config.identity)?)
        } else {
            tls::NodeCertificate::new(&config.identity)?
        };
        #[cfg(not(feature = "deterministic"))]
        let cert = tls::NodeCertificate::new(&config.identity)?;
        let transport = Arc::new(transport_config(&config)?);

        let seeds = derive_seeds(&config.rng_seed);
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seeds.reset_key);
        let mut endpoint_config = quinn_proto::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.rng_seed(Some(seeds.endpoint_rng));
        // Every QUIC packet keeps its fixed bit, so what shares the socket
        // (STUN, direct-path packets: §10.6, §10.9) is told apart by its
        // first byte.
        endpoint_config.grease_quic_bit(false);
        #[cfg_attr(not(feature = "deterministic"), allow(unused_mut))]
        let mut provider = tls::provider();
        #[cfg(feature = "deterministic")]
        if config.deterministic_crypto {
            provider = deterministic::provider(seeds.tls, config.cheap_key_exchange);
            let cids = seeds.cids;
            endpoint_config.cid_generator(move || Box::new(deterministic::SeededCids::new(cids)));
        }

        let server_tls = quinn_proto::crypto::rustls::QuicServerConfig::try_from(
            tls::server_config(provider.clone(), &cert, &alpn(&config.versions.protocol))?,
        )
        .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
        let token_key =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&seeds.token_key);
        let mut server_config =
            quinn_proto::ServerConfig::new(Arc::new(server_tls), Arc::new(token_key));
        server_config.transport_config(transport.clone());
        let clock = Arc::new(NodeClock::default());
        // Retry tokens (address validation under load) carry the time they
        // were issued; the node's own clock dates them.
        server_config.time_source(clock.clone());
        // NEW_TOKEN tokens (validation on a later connection) are not
        // issued: a LAN library has no use for them.
        server_config.validation_token_config({
            let mut tokens = quinn_proto::ValidationTokenConfig::default();
            tokens.sent(0);
            tokens
        });
        server_config.migration(true);
        server_config.max_incoming(config.limits.max_incoming_handshakes);

        let client_config = |resume: bool| -> Result<quinn_proto::ClientConfig, NodeError> {
            let client_tls =
                quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls::client_config(
                    provider.clone(),
                    &cert,
                    &alpn(&config.versions.protocol),
                    resume,
                )?)
                .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
            let mut client_config = quinn_proto::ClientConfig::new(Arc::new(client_tls));
            client_config.transport_config(transport.clone());
            #[cfg(feature = "deterministic")]
            if config.deterministic_crypto {
                // The two client configurations draw from streams of
                // their own.
                let mut seed = seeds.initial_cids;
                seed[0] ^= u8::from(resume);
                client_config.initial_dst_cid_provider(deterministic::initial_cids(seed));
            }
            Ok(client_config)
        };
        // Dials that pin the identity resume sessions; the others do not
        // (their server name would not tell peers apart).
        let (client_config, pinned_client_config) = (client_config(false)?, client_config(true)?);

        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server_config)),
            true,
            None,
        );
        let responses_per_second = config.limits.stateless_responses_per_second;
        let book = AddressBook::new(config.limits.max_remembered_peers);
        let span = tracing::info_span!("node", id = %config.identity.to_remote_identity());
        Ok(Self {
            local: config.identity.to_remote_identity(),
            config,
            endpoint,
            client_config,
            pinned_client_config,
            signatures_verified: cert.verified.clone(),
            mismatches: cert.mismatches.clone(),
            dials: dial::Dials::default(),
            book,
            manual: manual::Manuals::new(seeds.manual),
            relays: relay::Relays::default(),
            traversal: punch::Traversal::new(seeds.probe),
            path_tokens: HashMap::new(),
            heard: HashMap::new(),
            direct_addrs: HashMap::new(),
            direct_out: VecDeque::new(),
            span,
            conns: BTreeMap::new(),
            by_handle: HashMap::new(),
            peers: BTreeMap::new(),
            protected: BTreeSet::new(),
            events: VecDeque::new(),
            responses: VecDeque::new(),
            response_limit: SourceLimits::new(
                responses_per_second,
                responses_per_second,
                TRACKED_SOURCES,
                now,
            ),
            first_flights: SourceLimits::new(
                FIRST_FLIGHTS_PER_SOURCE,
                2 * FIRST_FLIGHTS_PER_SOURCE,
                TRACKED_SOURCES,
                now,
            ),
            stats: NodeStats::default(),
            next_conn: 0,
            transmit_cursor: None,
            shutting_down: false,
            now,
            started: now,
            clock,
            active: BTreeSet::new(),
        })
    }

    // ----- getters -----

    /// This node's identity.
    pub fn local_identity(&self) -> RemoteIdentity {
        self.local
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// What the node counted: refusals, evictions, rate limits.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// A connected peer.
    pub fn peer(&self, identity: &RemoteIdentity) -> Option<&PeerInfo> {
        self.peers.get(identity).map(|p| &p.info)
    }

    /// Whether the connected peer `identity` runs an application version
    /// that `required` accepts (an operation's
    /// [`Header::requires`](crate::Header::requires)): `Ok(())`, or its
    /// version; `None` while it is not connected.
    pub fn peer_satisfies(
        &self,
        identity: &RemoteIdentity,
        required: &semver::VersionReq,
    ) -> Option<Result<(), &semver::Version>> {
        let app = &self.peer(identity)?.versions.app;
        Some(if crate::version::satisfies(app, required) {
            Ok(())
        } else {
            Err(app)
        })
    }

    /// How the connection in use to `identity` is doing (`None` if it is
    /// not connected).
    pub fn peer_stats(&self, identity: &RemoteIdentity) -> Option<PeerStats> {
        let info = self.peer(identity)?;
        let conn = self.conns.get(&info.connection)?;
        let stats = conn.quic.stats();
        Some(PeerStats {
            rtt: stats.path.rtt,
            congestion_window: stats.path.cwnd,
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
            packets_sent: stats.path.sent_packets,
            packets_lost: stats.path.lost_packets,
            remote_addr: conn.quic.remote_address(),
            path: self.conn_path(conn),
            mtu: stats.path.current_mtu,
        })
    }

    /// Every connected peer, in identity order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values().map(|p| &p.info)
    }

    /// How many peer handshake signatures this node has verified: one per
    /// full TLS handshake. A reconnect to a pinned peer resumes the TLS
    /// session it had with it (a fresh key exchange authenticated by that
    /// session's secret) and needs none.
    pub fn signatures_verified(&self) -> u64 {
        self.signatures_verified
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The address book: where peers were reached, and the peers the
    /// application added (pinned). Bounded by
    /// [`Limits::max_remembered_peers`].
    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    /// The address book, to pin peers the application adds (or unpin
    /// them) and to mark peers it uses.
    pub fn book_mut(&mut self) -> &mut AddressBook {
        &mut self.book
    }

    /// The node's tracing span (fields: its identity). Connections' spans
    /// are its children; a driver enters it while it works on the node, so
    /// that everything logged there (QUIC's own logs too) carries it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The time of the latest input (`handle_*`, a command): the node's
    /// idea of now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Dials under way (see [`Node::dial`]).
    pub fn dial_count(&self) -> usize {
        self.dials.len()
    }

    /// Connections in any phase, including closing ones not yet drained.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Streams connection `id` keeps state for: open in either direction,
    /// or ended but not yet released by the application.
    pub fn stream_count(&self, id: ConnectionId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.streams.len())
    }

    /// Bytes of header frames connection `id` holds for peer-opened
    /// streams (bounded by [`Limits::header_buffer`]).
    pub fn header_bytes(&self, id: ConnectionId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.header_reserved)
    }

    /// Whether the node has no connections left at all, not even closing
    /// ones that QUIC keeps for a few round trips to absorb stray packets.
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
    }

    /// Whether every connection is closed and its close has been handed to
    /// QUIC (a Goodbye awaiting acknowledgement counts as open). After
    /// [`Node::shutdown`] and one more round of `poll_transmit`, an adapter
    /// may stop driving the node: the peers have been told.
    pub fn is_closed(&self) -> bool {
        self.conns
            .values()
            .all(|c| c.phase.is_closed() && c.pending_close.is_none())
    }
}
