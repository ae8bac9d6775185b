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
//! Methods come in four groups: getters (`local_identity`, `peer`, `peers`),
//! inputs (`handle_datagram`, `handle_timeout`), commands (`connect`,
//! `open_stream`, `write`, `read`, `finish`, `reset`, `stop`, `close`,
//! `set_metadata`, `shutdown`) and outputs (`poll_transmit`, `poll_event`,
//! `poll_timeout`). Commands may create transmits and events too, so drain
//! after them as after inputs.
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

mod close;
mod config;
mod conn;
mod control;
mod event;
mod hello;
mod setup;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, StreamEvent, VarInt};

pub use config::{Limits, NodeConfig, Timeouts};
pub use event::{
    ConnectError, ConnectionId, ConnectionState, DisconnectReason, Ecn, Event, PeerInfo,
    ReadOutcome, StreamError, StreamId, TimeoutReason, Transmit,
};
pub use hello::MAX_APP_NAME_LEN;
pub use tls::TlsSetupError;

use crate::RemoteIdentity;
use crate::codec::FrameDecoder;
use crate::metadata::Metadata;
use conn::{Conn, Phase, StreamHalves, flush_control, send_hello};
pub use event::Direction;
use hello::{ControlMessage, MAX_CONTROL_MESSAGE_LEN, close_code};
use setup::{NoClock, derive_seeds, transport_config};

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
    /// Moves whenever a connection changes phase or goes away.
    connection_changes: u64,
    conns: BTreeMap<ConnectionId, Conn>,
    by_handle: HashMap<ConnectionHandle, ConnectionId>,
    peers: BTreeMap<RemoteIdentity, Peer>,
    events: VecDeque<Event>,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    next_conn: u64,
    /// Round-robin cursor for `poll_transmit`, so one busy connection
    /// cannot starve the others.
    transmit_cursor: Option<ConnectionId>,
    shutting_down: bool,
    /// The time of the latest input, for commands that take none.
    now: Instant,
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
        let cert = tls::NodeCertificate::new(&config.identity)?;
        let transport = Arc::new(transport_config(&config)?);

        let seeds = derive_seeds(&config.rng_seed);
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seeds.reset_key);
        let mut endpoint_config = quinn_proto::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.rng_seed(Some(seeds.endpoint_rng));

        let server_tls = quinn_proto::crypto::rustls::QuicServerConfig::try_from(
            tls::server_config(&cert, &alpn(&config.versions.protocol))?,
        )
        .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
        let token_key =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&seeds.token_key);
        let mut server_config =
            quinn_proto::ServerConfig::new(Arc::new(server_tls), Arc::new(token_key));
        server_config.transport_config(transport.clone());
        server_config.time_source(Arc::new(NoClock));
        // Address validation tokens need wall-clock time; a LAN library
        // has no use for them.
        server_config.validation_token_config({
            let mut tokens = quinn_proto::ValidationTokenConfig::default();
            tokens.sent(0);
            tokens
        });
        server_config.migration(true);
        server_config.max_incoming(config.limits.max_incoming_handshakes.max(1));

        let client_config = |resume: bool| -> Result<quinn_proto::ClientConfig, NodeError> {
            let client_tls = quinn_proto::crypto::rustls::QuicClientConfig::try_from(
                tls::client_config(&cert, &alpn(&config.versions.protocol), resume)?,
            )
            .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
            let mut client_config = quinn_proto::ClientConfig::new(Arc::new(client_tls));
            client_config.transport_config(transport.clone());
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
        Ok(Self {
            local: config.identity.to_remote_identity(),
            config,
            endpoint,
            client_config,
            pinned_client_config,
            signatures_verified: cert.verified.clone(),
            connection_changes: 0,
            conns: BTreeMap::new(),
            by_handle: HashMap::new(),
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            responses: VecDeque::new(),
            next_conn: 0,
            transmit_cursor: None,
            shutting_down: false,
            now,
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

    /// A counter that moves whenever a connection is established, closes
    /// or goes away: what [`Node::connection_state`] reports may have
    /// changed. Adapters use it to wake tasks waiting on dials only when
    /// there is news.
    pub fn connection_changes(&self) -> u64 {
        self.connection_changes
    }

    /// Connections in any phase, including closing ones not yet drained.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
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

    /// Where connection `id` stands; `None` once it is gone entirely.
    pub fn connection_state(&self, id: ConnectionId) -> Option<ConnectionState> {
        let conn = self.conns.get(&id)?;
        Some(match (conn.phase, conn.remote) {
            (Phase::Established, Some(peer)) => ConnectionState::Established(peer),
            (Phase::Closed, remote) => ConnectionState::Closed {
                established_with: remote.filter(|_| conn.was_established),
            },
            _ => ConnectionState::Handshaking,
        })
    }

    /// The peer on the other end of a stream.
    pub fn stream_peer(&self, stream: StreamId) -> Option<RemoteIdentity> {
        self.conns.get(&stream.conn).and_then(|c| c.remote)
    }

    // ----- inputs -----

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
        self.now = self.now.max(now);
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

    /// Time has reached `now`: run expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
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
                self.close_conn(
                    now,
                    id,
                    close_code::HANDSHAKE_TIMEOUT,
                    Bytes::from_static(b"handshake timeout"),
                    DisconnectReason::HandshakeTimeout,
                );
            }
            self.process(now, id);
        }
    }

    // ----- commands -----

    /// Dial `addr`. With `expected`, the connection fails with
    /// [`DisconnectReason::IdentityMismatch`] unless that node answers.
    /// Progress is reported by events: [`Event::Connected`] or
    /// [`Event::ConnectFailed`].
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<RemoteIdentity>,
    ) -> Result<ConnectionId, ConnectError> {
        self.now = self.now.max(now);
        if self.shutting_down {
            return Err(ConnectError::ShuttingDown);
        }
        if self.conns.len() >= self.config.limits.max_connections {
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
                other => ConnectError::Quic(other.to_string()),
            })?;
        let id = self.insert_conn(now, handle, quic, Direction::Outbound, addr, expected);
        self.process(now, id);
        Ok(id)
    }

    /// Open a bidirectional stream to a connected peer. The first bytes
    /// written on it should be the application's header frame.
    pub fn open_stream(
        &mut self,
        now: Instant,
        peer: &RemoteIdentity,
    ) -> Result<StreamId, StreamError> {
        self.now = self.now.max(now);
        let conn_id = self.primary(peer).ok_or(StreamError::NotConnected)?;
        self.active.insert(conn_id);
        let conn = self
            .conns
            .get_mut(&conn_id)
            .ok_or(StreamError::NotConnected)?;
        let id = conn
            .quic
            .streams()
            .open(Dir::Bi)
            .ok_or(StreamError::StreamsExhausted)?;
        conn.streams.insert(id, StreamHalves::default());
        conn.opened += 1;
        Ok(StreamId { conn: conn_id, id })
    }

    /// Write as much of `data` as flow control and the send window allow;
    /// returns how much was taken.
    pub fn write(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let conn = self.app_stream(stream)?;
        conn.quic
            .send_stream(stream.id)
            .write(data)
            .map_err(|e| match e {
                quinn_proto::WriteError::Blocked => StreamError::Blocked,
                quinn_proto::WriteError::Stopped(code) => StreamError::Stopped(code.into_inner()),
                quinn_proto::WriteError::ClosedStream => StreamError::Closed,
            })
    }

    /// Read up to `max` bytes, in order.
    pub fn read(&mut self, stream: StreamId, max: usize) -> Result<ReadOutcome, StreamError> {
        let conn = self.app_stream(stream)?;
        let mut recv = conn.quic.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let outcome = match chunks.next(max) {
            Ok(Some(chunk)) => ReadOutcome::Data(chunk.bytes),
            Ok(None) => ReadOutcome::Finished,
            Err(quinn_proto::ReadError::Blocked) => ReadOutcome::Blocked,
            Err(quinn_proto::ReadError::Reset(code)) => ReadOutcome::Reset(code.into_inner()),
        };
        // Flow-control credit goes out with the next poll_transmit.
        let _ = chunks.finalize();
        if matches!(outcome, ReadOutcome::Finished | ReadOutcome::Reset(_)) {
            self.stream_half_done(stream, false);
        }
        Ok(outcome)
    }

    /// Throw away everything received on `stream` so far. Returns whether
    /// the peer has ended its side (finished or reset): then there is no
    /// need to ask it to stop sending.
    pub fn discard_received(&mut self, stream: StreamId) -> Result<bool, StreamError> {
        let conn = self.app_stream(stream)?;
        let mut recv = conn.quic.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let ended = loop {
            match chunks.next(usize::MAX) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => break true,
                Err(quinn_proto::ReadError::Blocked) => break false,
            }
        };
        let _ = chunks.finalize();
        if ended {
            self.stream_half_done(stream, false);
        }
        Ok(ended)
    }

    /// Finish the sending half: the peer reads to the end, then sees
    /// [`ReadOutcome::Finished`].
    pub fn finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let conn = self.app_stream(stream)?;
        conn.quic
            .send_stream(stream.id)
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(code) => StreamError::Stopped(code.into_inner()),
                quinn_proto::FinishError::ClosedStream => StreamError::Closed,
            })
    }

    /// Abandon the sending half; the peer sees [`ReadOutcome::Reset`].
    pub fn reset(&mut self, stream: StreamId, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::InvalidCode(code))?;
        let conn = self.app_stream(stream)?;
        conn.quic
            .send_stream(stream.id)
            .reset(code)
            .map_err(|_| StreamError::Closed)?;
        self.stream_half_done(stream, true);
        Ok(())
    }

    /// Stop reading: ask the peer to stop sending with `code`.
    pub fn stop(&mut self, stream: StreamId, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::InvalidCode(code))?;
        let conn = self.app_stream(stream)?;
        conn.quic
            .recv_stream(stream.id)
            .stop(code)
            .map_err(|_| StreamError::Closed)?;
        self.stream_half_done(stream, false);
        Ok(())
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

    // ----- outputs -----

    /// The next datagram(s) to send, written to `buf`. `max_datagrams` > 1
    /// allows several equal-sized datagrams in one transmit (GSO).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        if let Some((transmit, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(transmit);
        }
        // Round-robin over the active connections, starting after the one
        // that sent last, without allocating: each turn looks up the next
        // id after the previous one (removed ids still work as bounds).
        let mut cursor = self.transmit_cursor;
        for _ in 0..self.active.len() {
            let next = cursor
                .and_then(|c| {
                    self.active
                        .range((Bound::Excluded(c), Bound::Unbounded))
                        .next()
                })
                .or_else(|| self.active.iter().next())
                .copied();
            let Some(id) = next else { break };
            cursor = Some(id);
            let Some(conn) = self.conns.get_mut(&id) else {
                self.active.remove(&id);
                continue;
            };
            buf.clear();
            if let Some(t) = conn.quic.poll_transmit(now, max_datagrams.max(1), buf) {
                self.transmit_cursor = Some(id);
                return Some(Transmit {
                    destination: t.destination,
                    ecn: t.ecn.map(Ecn::from_quinn),
                    size: t.size,
                    segment_size: t.segment_size,
                    src_ip: t.src_ip,
                });
            }
            // Nothing more to send until the next input touches it: note
            // its deadline and let it rest.
            conn.deadline = conn_deadline(conn);
            self.active.remove(&id);
        }
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called, and why.
    pub fn poll_timeout(&mut self) -> Option<(Instant, TimeoutReason)> {
        let mut next: Option<(Instant, TimeoutReason)> = None;
        let mut consider = |at: Instant, reason: TimeoutReason| {
            if next.is_none_or(|(t, _)| at < t) {
                next = Some((at, reason));
            }
        };
        for conn in self.conns.values_mut() {
            if self.active.contains(&conn.id) {
                conn.deadline = conn_deadline(conn);
            }
            if let Some(at) = conn.deadline {
                let reason = if conn
                    .pending_close
                    .as_ref()
                    .is_some_and(|(_, _, c)| *c == at)
                {
                    TimeoutReason::Close(conn.id)
                } else if conn.phase == Phase::Handshaking && conn.handshake_deadline == Some(at) {
                    TimeoutReason::Handshake(conn.id)
                } else {
                    TimeoutReason::Connection(conn.id)
                };
                consider(at, reason);
            }
        }
        next
    }

    // ----- internals -----

    fn insert_conn(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        quic: quinn_proto::Connection,
        direction: Direction,
        addr: SocketAddr,
        expected: Option<RemoteIdentity>,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.by_handle.insert(handle, id);
        self.conns.insert(
            id,
            Conn {
                id,
                handle,
                quic,
                direction,
                addr,
                expected,
                remote: None,
                phase: Phase::Handshaking,
                control: None,
                control_decoder: FrameDecoder::with_max_frame_len(MAX_CONTROL_MESSAGE_LEN),
                control_out: VecDeque::new(),
                local_hello_sent: false,
                remote_hello: None,
                handshake_deadline: Some(now + self.config.timeouts.handshake),
                early_streams: Vec::new(),
                streams: BTreeMap::new(),
                superseded: false,
                peer_superseded: None,
                opened: 0,
                accepted: 0,
                pending_close: None,
                peer_goodbye: None,
                deadline: None,
                was_established: false,
            },
        );
        id
    }

    fn handle_incoming(
        &mut self,
        now: Instant,
        incoming: quinn_proto::Incoming,
        scratch: &mut Vec<u8>,
    ) {
        let handshaking = self
            .conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && c.phase == Phase::Handshaking)
            .count();
        if self.shutting_down
            || self.conns.len() >= self.config.limits.max_connections
            || handshaking >= self.config.limits.max_incoming_handshakes
        {
            let addr = incoming.remote_address();
            let transmit = self.endpoint.refuse(incoming, scratch);
            self.queue_response(transmit, std::mem::take(scratch));
            self.events.push_back(Event::IncomingRefused {
                addr,
                reason: DisconnectReason::Refused,
            });
            return;
        }
        let addr = incoming.remote_address();
        match self.endpoint.accept(incoming, now, scratch, None) {
            Ok((handle, quic)) => {
                let id = self.insert_conn(now, handle, quic, Direction::Inbound, addr, None);
                // The listener speaks first: its Hello goes out with its
                // handshake flight (0.5-RTT data), so the dialer is ready
                // as soon as its own handshake completes.
                if let Some(conn) = self.conns.get_mut(&id)
                    && let Some(control) = conn.quic.streams().open(Dir::Bi)
                {
                    conn.control = Some(control);
                    send_hello(conn, &self.config);
                }
                self.process(now, id);
            }
            Err(error) => {
                let reason = close::transport_reason(error.cause);
                self.events
                    .push_back(Event::IncomingRefused { addr, reason });
                if let Some(transmit) = error.response {
                    self.queue_response(transmit, std::mem::take(scratch));
                }
            }
        }
    }

    fn queue_response(&mut self, transmit: quinn_proto::Transmit, mut bytes: Vec<u8>) {
        if self.responses.len() >= MAX_QUEUED_RESPONSES {
            return;
        }
        bytes.truncate(transmit.size);
        self.responses.push_back((
            Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn.map(Ecn::from_quinn),
                size: transmit.size,
                segment_size: transmit.segment_size,
                src_ip: transmit.src_ip,
            },
            bytes,
        ));
    }

    /// The connection new streams to `peer` go on.
    fn primary(&self, peer: &RemoteIdentity) -> Option<ConnectionId> {
        let peer = self.peers.get(peer)?;
        Some(peer.info.connection)
    }

    fn app_stream(&mut self, stream: StreamId) -> Result<&mut Conn, StreamError> {
        self.active.insert(stream.conn);
        let conn = self
            .conns
            .get_mut(&stream.conn)
            .ok_or(StreamError::UnknownStream)?;
        if Some(stream.id) == conn.control || conn.phase == Phase::Closed {
            return Err(StreamError::UnknownStream);
        }
        Ok(conn)
    }

    fn stream_half_done(&mut self, stream: StreamId, send: bool) {
        let Some(conn) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        if let Some(halves) = conn.streams.get_mut(&stream.id) {
            if send {
                halves.send_done = true;
            } else {
                halves.recv_done = true;
            }
            if halves.send_done && halves.recv_done {
                conn.streams.remove(&stream.id);
            }
        }
        self.close_if_drained_duplicate(stream.conn);
    }

    /// Stop opening streams on a duplicate connection and tell the peer how
    /// many were opened, so it knows when none are in flight any more.
    fn supersede(&mut self, id: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.superseded || conn.phase != Phase::Established {
            return;
        }
        conn.superseded = true;
        // The Superseded message below must go out.
        self.active.insert(id);
        let message = ControlMessage::Superseded {
            opened: conn.opened,
        };
        conn.control_out.push_back(message.to_frame());
        flush_control(conn);
        self.close_if_drained_duplicate(id);
    }

    /// Close a duplicate connection once both sides gave it up and every
    /// stream either side opened on it has been seen and is done.
    fn close_if_drained_duplicate(&mut self, id: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let drained = conn.superseded
            && conn.phase == Phase::Established
            && conn.peer_superseded.is_some_and(|n| conn.accepted >= n)
            && conn.streams.is_empty();
        if drained {
            let now = self.now;
            self.close_conn(
                now,
                id,
                close_code::DUPLICATE,
                Bytes::from_static(b"duplicate connection"),
                DisconnectReason::Duplicate,
            );
        }
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
                self.connection_changes += 1;
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
                DisconnectReason::ProtocolViolation("peer presented no identity".into()),
            );
            return;
        };
        conn.remote = Some(remote);
        // Take the control stream (without reading it) so that a Goodbye
        // can explain a mismatch to the peer.
        self.accept_streams(id);
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
                DisconnectReason::ProtocolViolation("connected to itself".into()),
            );
            return;
        }
        self.read_control(now, id);
        self.try_establish(id);
    }

    fn on_stream_event(&mut self, now: Instant, id: ConnectionId, event: StreamEvent) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match event {
            StreamEvent::Opened { dir: Dir::Bi } => {
                self.accept_streams(id);
                self.read_control(now, id);
            }
            StreamEvent::Available { dir: Dir::Bi } => {
                if let (Phase::Established, Some(peer)) = (conn.phase, conn.remote) {
                    self.events.push_back(Event::StreamsAvailable { peer });
                }
            }
            StreamEvent::Opened { dir: Dir::Uni } | StreamEvent::Available { dir: Dir::Uni } => {}
            StreamEvent::Readable { id: stream } => {
                if Some(stream) == conn.control {
                    self.read_control(now, id);
                } else if conn.phase == Phase::Established && conn.streams.contains_key(&stream) {
                    self.events.push_back(Event::StreamReadable(StreamId {
                        conn: id,
                        id: stream,
                    }));
                }
            }
            StreamEvent::Writable { id: stream } => {
                if Some(stream) == conn.control {
                    flush_control(conn);
                } else if conn.streams.contains_key(&stream) {
                    self.events.push_back(Event::StreamWritable(StreamId {
                        conn: id,
                        id: stream,
                    }));
                }
            }
            StreamEvent::Finished { id: stream } => {
                if Some(stream) == conn.control {
                    // The Goodbye was acknowledged: close for real.
                    if let Some((code, reason, _)) = conn.pending_close.take() {
                        conn.quic.close(now, VarInt::from_u32(code as u32), reason);
                    }
                } else if conn.streams.contains_key(&stream) {
                    let stream = StreamId {
                        conn: id,
                        id: stream,
                    };
                    self.events.push_back(Event::StreamFinished(stream));
                    self.stream_half_done(stream, true);
                }
            }
            StreamEvent::Stopped {
                id: stream,
                error_code,
            } => {
                if Some(stream) == conn.control {
                    self.close_conn(
                        now,
                        id,
                        close_code::PROTOCOL_VIOLATION,
                        Bytes::from_static(b"control stream stopped"),
                        DisconnectReason::ProtocolViolation(
                            "peer stopped the control stream".into(),
                        ),
                    );
                } else if conn.streams.contains_key(&stream) {
                    let stream = StreamId {
                        conn: id,
                        id: stream,
                    };
                    self.events.push_back(Event::StreamStopped {
                        stream,
                        code: error_code.into_inner(),
                    });
                    self.stream_half_done(stream, true);
                }
            }
        }
    }

    /// Once TLS proved the peer's identity and both Hellos are through, the
    /// connection is established.
    fn try_establish(&mut self, id: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let ready = conn.phase == Phase::Handshaking
            && conn.local_hello_sent
            && conn.remote_hello.is_some()
            && !conn.quic.is_handshaking();
        let (Some(remote), Some(hello), true) = (conn.remote, conn.remote_hello.as_ref(), ready)
        else {
            return;
        };
        conn.phase = Phase::Established;
        self.connection_changes += 1;
        conn.was_established = true;
        conn.handshake_deadline = None;
        let info = PeerInfo {
            identity: remote,
            versions: hello.versions.clone(),
            metadata: hello.metadata.clone(),
            addr: conn.quic.remote_address(),
            direction: conn.direction,
            connection: id,
        };
        let early = std::mem::take(&mut conn.early_streams);
        let dialer = match conn.direction {
            Direction::Outbound => self.local,
            Direction::Inbound => remote,
        };
        match self.peers.get_mut(&remote) {
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
            Some(peer) => {
                // A second connection to the same peer. Dialed from both
                // sides at once: both nodes keep the one dialed by the
                // smaller identity. Dialed twice by the same node (it
                // restarted, or its old connection died unnoticed): keep the
                // newer one, which is the one the dialer uses.
                peer.conns.insert(id);
                let old_dialer = match peer.info.direction {
                    Direction::Outbound => self.local,
                    Direction::Inbound => remote,
                };
                let this_wins = old_dialer == dialer || dialer == self.local.min(remote);
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
        for stream in early {
            self.events.push_back(Event::IncomingStream {
                peer: remote,
                stream: StreamId {
                    conn: id,
                    id: stream,
                },
            });
        }
    }
}

/// The earliest moment connection `conn` needs `handle_timeout`.
fn conn_deadline(conn: &mut Conn) -> Option<Instant> {
    let quic = conn.quic.poll_timeout();
    let handshake = match conn.phase {
        Phase::Handshaking => conn.handshake_deadline,
        _ => None,
    };
    let close = conn.pending_close.as_ref().map(|(_, _, at)| *at);
    [quic, handshake, close].into_iter().flatten().min()
}
