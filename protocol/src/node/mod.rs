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
//! The code is split along the protocol's seams: `dial` (dials and their
//! outcomes), `admission` (which
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

mod admission;
mod close;
mod config;
mod conn;
mod control;
#[cfg(feature = "deterministic")]
mod deterministic;
mod dial;
mod duplicate;
mod event;
mod header;
mod hello;
mod manual;
mod output;
mod setup;
mod stream;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, VarInt};

pub use config::{Limits, NodeConfig, Timeouts};
pub use dial::{DialId, MAX_DIAL_ADDRS};
pub use event::{
    ConnectError, ConnectionId, DisconnectReason, Ecn, Event, NodeStats, PeerInfo, ReadOutcome,
    StreamError, StreamId, StreamRejection, TimeoutReason, Transmit, TransportFailure, Violation,
    stream_code,
};
pub use hello::MAX_APP_NAME_LEN;
pub use manual::{
    FIRST_RETRY, MAX_RETRY, ManualError, ManualPeer, ManualStatus, PeerAddr, PeerAddrError,
    RESOLVE_TIMEOUT, ResolveError, STABLE,
};
pub use tls::TlsSetupError;

use crate::RemoteIdentity;
use crate::book::AddressBook;
use crate::metadata::Metadata;
use crate::rate::SourceLimits;
use conn::{Conn, Phase, flush_control, send_hello};
pub use event::Direction;
use hello::{ControlMessage, close_code};
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
            .all(|c| c.phase == Phase::Closed && c.pending_close.is_none())
    }

    // ----- inputs -----

    /// Time has moved to `now` (never backwards).
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.clock
            .advance(self.now.saturating_duration_since(self.started));
    }

    /// A UDP datagram arrived from `remote`, addressed to `local_ip` (if the
    /// socket can tell).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<Ecn>,
        data: BytesMut,
    ) {
        self.advance(now);
        self.stats.datagrams += 1;
        if self.drop_early(now, remote, &data) {
            self.stats.dropped_early += 1;
            return;
        }
        let mut scratch = Vec::new();
        let event = self.endpoint.handle(
            now,
            remote,
            local_ip,
            ecn.map(Ecn::to_quinn),
            data,
            &mut scratch,
        );
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(id) = self.by_handle.get(&handle).copied() {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.quic.handle_event(event);
                    }
                    self.process(now, id);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.handle_incoming(now, incoming, &mut scratch);
            }
            Some(DatagramEvent::Response(transmit)) => self.queue_response(transmit, scratch),
        }
    }

    /// Whether a datagram can be dropped before QUIC looks at it (which
    /// for a first flight means deriving keys and decrypting): a version
    /// negotiation that the rate limit of stateless answers would not send
    /// anyway, or a first flight from an address with no connection that
    /// is over its allowance.
    fn drop_early(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) -> bool {
        let (Some(&first), Some(version)) = (data.first(), data.get(1..5)) else {
            return false;
        };
        if first & 0x80 == 0 {
            // Short header: QUIC looks up the connection id, cheaply.
            return false;
        }
        let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
        match version {
            // A version negotiation packet (to this node as a dialer).
            0 => false,
            1 => {
                // A source's allowance covers its first flights and their
                // retransmissions (established connections send short
                // headers).
                let initial = (first & 0x30) == 0;
                initial && !self.first_flights.take(now, remote.ip())
            }
            _ => data.len() >= MIN_INITIAL_SIZE && !self.response_limit.has_token(now, remote.ip()),
        }
    }

    /// Time has reached `now`: run expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| self.active.contains(&c.id) || c.deadline.is_some_and(|at| at <= now))
            .map(|c| c.id)
            .collect();
        for id in ids {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.quic.handle_timeout(now);
            if let Some((code, reason, at)) = conn.pending_close.take() {
                if at <= now {
                    conn.quic.close(now, VarInt::from_u32(code as u32), reason);
                } else {
                    conn.pending_close = Some((code, reason, at));
                }
            }
            let expired = conn.phase == Phase::Handshaking
                && conn.handshake_deadline.is_some_and(|at| at <= now);
            if expired {
                if conn.direction == Direction::Inbound {
                    self.stats.handshakes_timed_out += 1;
                }
                self.close_conn(
                    now,
                    id,
                    close_code::HANDSHAKE_TIMEOUT,
                    Bytes::from_static(b"handshake timeout"),
                    DisconnectReason::HandshakeTimeout,
                );
            }
            self.expire_headers(now, id);
            self.expire_duplicate(now, id);
            self.process(now, id);
        }
        // After the connections: a dial or a disconnection they reported
        // is news the manual peers act on in the same turn.
        if !self.shutting_down && self.manual.deadline(now).is_some_and(|at| at <= now) {
            self.drive_manual(now);
        }
    }

    // ----- commands -----

    /// Dial `addr`. With `expected`, the connection fails with
    /// [`DisconnectReason::IdentityMismatch`] unless that node answers.
    /// Progress is reported by events: [`Event::Connected`] or
    /// [`Event::ConnectFailed`]. A dialed connection is one the application
    /// asked for: it is never evicted (see [`Limits`]).
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<RemoteIdentity>,
    ) -> Result<ConnectionId, ConnectError> {
        self.advance(now);
        if self.shutting_down {
            return Err(ConnectError::ShuttingDown);
        }
        // The application asked for this connection: only the memory
        // ceiling refuses it.
        if self.conns.len() >= self.connection_ceiling() {
            return Err(ConnectError::TooManyConnections);
        }
        let (client_config, server_name) = match &expected {
            Some(identity) => (
                self.pinned_client_config.clone(),
                tls::server_name(identity),
            ),
            None => (self.client_config.clone(), tls::SERVER_NAME.to_owned()),
        };
        let (handle, quic) = self
            .endpoint
            .connect(now, client_config, addr, &server_name)
            .map_err(|e| match e {
                quinn_proto::ConnectError::InvalidRemoteAddress(a) => {
                    ConnectError::InvalidAddress(a)
                }
                quinn_proto::ConnectError::CidsExhausted => ConnectError::CidsExhausted,
                // A server name pos-p2p made, a version and a client
                // configuration it set: only a stopping endpoint is left.
                _ => ConnectError::EndpointStopping,
            })?;
        let deadline = now + self.config.timeouts.handshake;
        let id = self.insert_conn(now, handle, quic, Direction::Outbound, expected, deadline);
        self.process(now, id);
        Ok(id)
    }

    /// Close every connection to `peer`, telling it `reason`. Reports
    /// [`Event::Disconnected`] with [`DisconnectReason::ClosedLocally`].
    pub fn close(&mut self, now: Instant, peer: &RemoteIdentity, reason: &str) {
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| c.remote.as_ref() == Some(peer))
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.close_conn(
                now,
                id,
                close_code::NORMAL,
                Bytes::copy_from_slice(reason.as_bytes()),
                DisconnectReason::ClosedLocally,
            );
        }
    }

    /// Replace this node's metadata and send it to every connected peer.
    pub fn set_metadata(&mut self, metadata: Metadata) {
        self.config.metadata = metadata.clone();
        let frame = ControlMessage::Metadata(metadata).to_frame();
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| c.phase == Phase::Established)
            .map(|c| c.id)
            .collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.control_out.push_back(frame.clone());
                flush_control(conn);
                self.active.insert(id);
            }
        }
    }

    /// Close every connection and refuse new ones. Keep driving the node
    /// until [`Node::is_idle`] so that the closes reach the peers.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let ids: Vec<ConnectionId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(
                now,
                id,
                close_code::SHUTDOWN,
                Bytes::from_static(b"shutting down"),
                DisconnectReason::ClosedLocally,
            );
        }
    }

    // ----- internals -----

    fn insert_conn(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        quic: quinn_proto::Connection,
        direction: Direction,
        expected: Option<RemoteIdentity>,
        handshake_deadline: Instant,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.by_handle.insert(handle, id);
        self.conns.insert(
            id,
            Conn::new(
                id,
                handle,
                quic,
                direction,
                expected,
                now,
                handshake_deadline,
            ),
        );
        id
    }

    /// The connection new streams to `peer` go on.
    fn primary(&self, peer: &RemoteIdentity) -> Option<ConnectionId> {
        let peer = self.peers.get(peer)?;
        Some(peer.info.connection)
    }

    /// Run everything that follows an input to connection `id`.
    fn process(&mut self, now: Instant, id: ConnectionId) {
        self.active.insert(id);
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            while let Some(event) = conn.quic.poll_endpoint_events() {
                if let Some(event) = self.endpoint.handle_event(conn.handle, event) {
                    conn.quic.handle_event(event);
                }
            }
            let Some(event) = conn.quic.poll() else {
                break;
            };
            self.handle_quic_event(now, id, event);
        }
        let drained = self.conns.get(&id).is_some_and(|c| c.quic.is_drained());
        if drained {
            // Drained without a lost event (not expected): report it closed.
            self.end_conn(id, DisconnectReason::ClosedLocally);
            if let Some(conn) = self.conns.remove(&id) {
                self.by_handle.remove(&conn.handle);
            }
            self.active.remove(&id);
        }
    }

    fn handle_quic_event(&mut self, now: Instant, id: ConnectionId, event: quinn_proto::Event) {
        match event {
            quinn_proto::Event::HandshakeDataReady | quinn_proto::Event::DatagramReceived => {}
            quinn_proto::Event::DatagramsUnblocked => {}
            quinn_proto::Event::Connected => self.on_tls_done(now, id),
            quinn_proto::Event::ConnectionLost { reason } => {
                let reason = self.lost_reason(id, reason);
                self.end_conn(id, reason);
            }
            quinn_proto::Event::Stream(event) => self.on_stream_event(now, id, event),
        }
    }

    fn on_tls_done(&mut self, now: Instant, id: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(remote) = tls::peer_identity(conn.quic.crypto_session()) else {
            // The verifiers only accept identity certificates, so this
            // cannot happen; fail closed if it does.
            self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from_static(b"no identity"),
                DisconnectReason::ProtocolViolation(Violation::NoIdentity),
            );
            return;
        };
        conn.remote = Some(remote);
        // A listener's metadata goes out once the dialer proved who it is.
        if conn.direction == Direction::Inbound {
            conn::send_metadata(conn, &self.config);
        }
        // Take the control stream (without reading it) so that a Goodbye
        // can explain a mismatch to the peer.
        self.accept_streams(now, id);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(expected) = conn.expected
            && expected != remote
        {
            self.close_conn(
                now,
                id,
                close_code::IDENTITY_MISMATCH,
                Bytes::from_static(b"unexpected identity"),
                DisconnectReason::IdentityMismatch {
                    expected,
                    actual: remote,
                },
            );
            return;
        }
        if remote == self.local {
            self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from_static(b"connected to self"),
                DisconnectReason::ProtocolViolation(Violation::ConnectedToItself),
            );
            return;
        }
        self.read_control(now, id);
        self.try_establish(now, id);
    }

    /// Once TLS proved the peer's identity and both Hellos are through, the
    /// connection is established, if admission finds room for it.
    fn try_establish(&mut self, now: Instant, id: ConnectionId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let ready = conn.phase == Phase::Handshaking
            && conn.local_hello_sent
            && conn.remote_hello.is_some()
            && conn.remote.is_some()
            && !conn.quic.is_handshaking();
        if !ready {
            return;
        }
        if !self.make_room(now, id) {
            self.close_conn(
                now,
                id,
                close_code::CONNECTION_LIMIT,
                Bytes::from_static(b"too many connections"),
                DisconnectReason::Refused,
            );
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (Some(remote), Some(hello)) = (conn.remote, conn.remote_hello.as_ref()) else {
            return;
        };
        conn.phase = Phase::Established;
        self.stats.connections_established += 1;
        conn.quic.set_receive_window(VarInt::from_u32(
            self.config.limits.connection_receive_window,
        ));
        conn.handshake_deadline = None;
        conn.last_activity = now;
        let info = PeerInfo {
            identity: remote,
            versions: hello.versions.clone(),
            metadata: hello.metadata.clone(),
            addr: conn.quic.remote_address(),
            direction: conn.direction,
            connection: id,
        };
        let early = std::mem::take(&mut conn.early_streams);
        let direction = conn.direction;
        // Where to dial it again. A peer we dialed is one the application
        // asked for; one that dialed us is a stranger until it is used.
        match direction {
            Direction::Outbound => self.book.remember_used(remote, info.addr),
            Direction::Inbound => self.book.remember(remote, info.addr),
        }
        match self.peers.get(&remote).map(|p| p.info.direction) {
            None => {
                self.peers.insert(
                    remote,
                    Peer {
                        info: info.clone(),
                        conns: BTreeSet::from([id]),
                    },
                );
                self.events.push_back(Event::Connected(Box::new(info)));
            }
            Some(old_direction) => {
                let this_wins = self.new_connection_wins(remote, old_direction, direction);
                let Some(peer) = self.peers.get_mut(&remote) else {
                    return;
                };
                peer.conns.insert(id);
                let loser = if this_wins {
                    let old = peer.info.connection;
                    peer.info = info;
                    old
                } else {
                    id
                };
                self.supersede(loser);
            }
        }
        // After `Connected`: whoever waited for the dial finds the peer.
        self.dial_established(id, remote);
        self.manual.wake();
        for stream in early {
            self.start_header(now, id, stream);
        }
    }
}
