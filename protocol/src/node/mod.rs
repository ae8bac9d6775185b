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
//! with the smaller identity; the other is drained (no new streams on it)
//! and closed once its streams are done, so no stream opened during the race
//! is cut off.

mod config;
mod event;
mod hello;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Side, StreamEvent, TransportErrorCode,
    VarInt,
};

pub use config::{Limits, NodeConfig, Timeouts};
pub use event::{
    ConnectError, ConnectionId, DisconnectReason, Ecn, Event, PeerInfo, ReadOutcome, StreamError,
    StreamId, TimeoutReason, Transmit,
};
pub use hello::MAX_APP_NAME_LEN;
pub use tls::TlsSetupError;

use crate::RemoteIdentity;
use crate::codec::FrameDecoder;
use crate::metadata::Metadata;
pub use event::Direction;
use hello::{ControlMessage, Hello, MAX_CONTROL_MESSAGE_LEN, close_code};

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

/// The phase of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS and the Hello exchange are under way.
    Handshaking,
    /// Both Hellos were accepted.
    Established,
    /// Closed or lost; waiting for QUIC to drain it.
    Closed,
}

/// Per application stream: which halves are still open, so that a drained
/// duplicate connection can be closed once it carries nothing.
#[derive(Debug, Clone, Copy, Default)]
struct StreamHalves {
    send_done: bool,
    recv_done: bool,
}

#[derive(Debug)]
struct Conn {
    id: ConnectionId,
    handle: ConnectionHandle,
    quic: quinn_proto::Connection,
    direction: Direction,
    addr: SocketAddr,
    expected: Option<RemoteIdentity>,
    remote: Option<RemoteIdentity>,
    phase: Phase,
    control: Option<quinn_proto::StreamId>,
    control_decoder: FrameDecoder,
    /// Control-stream bytes not yet accepted by flow control.
    control_out: VecDeque<Bytes>,
    local_hello_sent: bool,
    remote_hello: Option<Hello>,
    handshake_deadline: Option<Instant>,
    /// Peer-opened streams that arrived before the connection was
    /// established; announced when it is.
    early_streams: Vec<quinn_proto::StreamId>,
    streams: BTreeMap<quinn_proto::StreamId, StreamHalves>,
    /// Another connection to the same peer is kept: open no streams here,
    /// close once the open ones are done.
    superseded: bool,
    /// The peer's `Superseded`: how many streams it opened here in all.
    peer_superseded: Option<u64>,
    /// Application streams this node opened here.
    opened: u64,
    /// Application streams the peer opened here that were accepted.
    accepted: u64,
    /// A Goodbye was sent; the QUIC close (code, reason) follows once the
    /// peer acknowledged it, or at the deadline.
    pending_close: Option<(u64, Bytes, Instant)>,
    /// The peer's Goodbye, which explains its close better than the close
    /// frame can during the handshake.
    peer_goodbye: Option<(u64, Bytes)>,
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

        let client_tls = quinn_proto::crypto::rustls::QuicClientConfig::try_from(
            tls::client_config(&cert, &alpn(&config.versions.protocol))?,
        )
        .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
        let mut client_config = quinn_proto::ClientConfig::new(Arc::new(client_tls));
        client_config.transport_config(transport);

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
            conns: BTreeMap::new(),
            by_handle: HashMap::new(),
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            responses: VecDeque::new(),
            next_conn: 0,
            transmit_cursor: None,
            shutting_down: false,
            now,
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

    /// Connections in any phase, including closing ones not yet drained.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether the node has no connections left (after
    /// [`Node::shutdown`], the adapter may stop driving it).
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
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
        let ids: Vec<ConnectionId> = self.conns.keys().copied().collect();
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
        let (handle, quic) = self
            .endpoint
            .connect(now, self.client_config.clone(), addr, tls::SERVER_NAME)
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
        let start = self.transmit_cursor;
        let order: Vec<ConnectionId> = match start {
            Some(cursor) => self
                .conns
                .range((Bound::Excluded(cursor), Bound::Unbounded))
                .chain(self.conns.range(..=cursor))
                .map(|(id, _)| *id)
                .collect(),
            None => self.conns.keys().copied().collect(),
        };
        for id in order {
            let Some(conn) = self.conns.get_mut(&id) else {
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
            if let Some(at) = conn.quic.poll_timeout() {
                consider(at, TimeoutReason::Connection(conn.id));
            }
            if conn.phase == Phase::Handshaking {
                if let Some(at) = conn.handshake_deadline {
                    consider(at, TimeoutReason::Handshake(conn.id));
                }
            }
            if let Some((_, _, at)) = conn.pending_close {
                consider(at, TimeoutReason::Close(conn.id));
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
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(control) = conn.quic.streams().open(Dir::Bi) {
                        conn.control = Some(control);
                        send_hello(conn, &self.config);
                    }
                }
                self.process(now, id);
            }
            Err(error) => {
                let reason = match error.cause {
                    ConnectionError::TransportError(e)
                        if e.code == TransportErrorCode::crypto(ALPN_ALERT) =>
                    {
                        DisconnectReason::AlpnMismatch
                    }
                    other => DisconnectReason::Transport(other.to_string()),
                };
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
            if let Some(conn) = self.conns.remove(&id) {
                self.by_handle.remove(&conn.handle);
                if conn.phase != Phase::Closed {
                    // Drained without a lost event: treat as closed.
                    self.conns.insert(id, conn);
                    self.end_conn(id, DisconnectReason::ClosedLocally);
                    if let Some(conn) = self.conns.remove(&id) {
                        self.by_handle.remove(&conn.handle);
                    }
                }
            }
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
        self.accept_streams(now, id);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(expected) = conn.expected {
            if expected != remote {
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
        self.try_establish(now, id);
    }

    fn on_stream_event(&mut self, now: Instant, id: ConnectionId, event: StreamEvent) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match event {
            StreamEvent::Opened { dir: Dir::Bi } => {
                self.accept_streams(now, id);
                self.read_control(now, id);
            }
            StreamEvent::Opened { dir: Dir::Uni } | StreamEvent::Available { .. } => {}
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

    /// Accept peer-opened bidirectional streams: the control stream (the
    /// listener's first stream) and application streams.
    fn accept_streams(&mut self, now: Instant, id: ConnectionId) {
        let _ = now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // Streams are only announced once the peer's identity is known.
        if conn.remote.is_none() || conn.phase == Phase::Closed {
            return;
        }
        let mut announce = Vec::new();
        while let Some(stream) = conn.quic.streams().accept(Dir::Bi) {
            let is_control = conn.direction == Direction::Outbound
                && stream.initiator() == Side::Server
                && stream.index() == 0;
            if is_control {
                conn.control = Some(stream);
                continue;
            }
            conn.streams.insert(stream, StreamHalves::default());
            conn.accepted += 1;
            if conn.phase == Phase::Established {
                announce.push(stream);
            } else {
                conn.early_streams.push(stream);
            }
        }
        let peer = conn.remote;
        if let Some(peer) = peer {
            for stream in announce {
                self.events.push_back(Event::IncomingStream {
                    peer,
                    stream: StreamId {
                        conn: id,
                        id: stream,
                    },
                });
            }
        }
    }

    fn read_control(&mut self, now: Instant, id: ConnectionId) {
        let mut messages = Vec::new();
        let mut failure: Option<String> = None;
        {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(control) = conn.control else {
                return;
            };
            if conn.phase == Phase::Closed || conn.remote.is_none() {
                return;
            }
            let mut recv = conn.quic.recv_stream(control);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            loop {
                match chunks.next(MAX_CONTROL_MESSAGE_LEN) {
                    Ok(Some(chunk)) => {
                        let mut input = &chunk.bytes[..];
                        while !input.is_empty() {
                            match conn.control_decoder.decode(input) {
                                Ok(decoded) => {
                                    input = &input[decoded.consumed..];
                                    if let Some(frame) = decoded.frame {
                                        match ControlMessage::decode(&frame) {
                                            Ok(message) => messages.push(message),
                                            Err(e) => {
                                                failure = Some(format!("bad control message: {e}"));
                                                break;
                                            }
                                        }
                                    }
                                }
                                Err(e) => {
                                    failure = Some(format!("bad control frame: {e}"));
                                    break;
                                }
                            }
                        }
                        if failure.is_some() {
                            break;
                        }
                    }
                    Ok(None) => {
                        failure = Some("control stream finished".into());
                        break;
                    }
                    Err(quinn_proto::ReadError::Reset(_)) => {
                        failure = Some("control stream reset".into());
                        break;
                    }
                    Err(quinn_proto::ReadError::Blocked) => break,
                }
            }
            let _ = chunks.finalize();
        }
        for message in messages {
            if self.conns.get(&id).is_none_or(|c| c.phase == Phase::Closed) {
                return;
            }
            self.handle_control(now, id, message);
        }
        if let Some(why) = failure {
            self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from(why.clone().into_bytes()),
                DisconnectReason::ProtocolViolation(why),
            );
        }
    }

    fn handle_control(&mut self, now: Instant, id: ConnectionId, message: ControlMessage) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match message {
            ControlMessage::Hello(hello) if conn.remote_hello.is_none() => {
                if hello.app_name != self.config.app_name {
                    let reason = DisconnectReason::ApplicationMismatch {
                        local: self.config.app_name.clone(),
                        remote: hello.app_name,
                    };
                    // The reason names our application, for the peer to show.
                    let ours = Bytes::from(self.config.app_name.clone().into_bytes());
                    self.close_conn(now, id, close_code::APPLICATION_MISMATCH, ours, reason);
                    return;
                }
                if let Err(rejection) = self
                    .config
                    .version_policy
                    .check(&self.config.versions, &hello.versions)
                {
                    let bytes = hello::encode_rejection(&rejection);
                    self.close_conn(
                        now,
                        id,
                        close_code::VERSION_REJECTED,
                        bytes,
                        DisconnectReason::VersionRejected(rejection),
                    );
                    return;
                }
                conn.remote_hello = Some(hello);
                if !conn.local_hello_sent {
                    send_hello(conn, &self.config);
                }
                self.try_establish(now, id);
            }
            ControlMessage::Hello(_) => self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from_static(b"second hello"),
                DisconnectReason::ProtocolViolation("peer sent a second Hello".into()),
            ),
            ControlMessage::Metadata(metadata) => {
                if conn.phase != Phase::Established {
                    self.close_conn(
                        now,
                        id,
                        close_code::PROTOCOL_VIOLATION,
                        Bytes::from_static(b"metadata before hello"),
                        DisconnectReason::ProtocolViolation("metadata before Hello".into()),
                    );
                    return;
                }
                let Some(peer) = conn.remote else {
                    return;
                };
                if let Some(hello) = conn.remote_hello.as_mut() {
                    hello.metadata = metadata.clone();
                }
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.info.metadata = metadata.clone();
                }
                self.events
                    .push_back(Event::MetadataUpdated { peer, metadata });
            }
            ControlMessage::Superseded { opened } => {
                conn.peer_superseded = Some(opened);
                self.close_if_drained_duplicate(id);
            }
            ControlMessage::Goodbye { code, reason } => {
                let why = self.peer_close_reason(code, &reason);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.peer_goodbye = Some((code, reason));
                    conn.quic.close(
                        now,
                        VarInt::from_u32(close_code::NORMAL as u32),
                        Bytes::new(),
                    );
                }
                self.end_conn(id, why);
            }
            ControlMessage::Unknown(_) => {}
        }
    }

    /// Once TLS proved the peer's identity and both Hellos are through, the
    /// connection is established.
    fn try_establish(&mut self, now: Instant, id: ConnectionId) {
        let _ = now;
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
                // A second connection to the same peer: both nodes keep the
                // one dialed by the smaller identity.
                peer.conns.insert(id);
                let this_wins = dialer == self.local.min(remote);
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

    fn close_conn(
        &mut self,
        now: Instant,
        id: ConnectionId,
        code: u64,
        reason: Bytes,
        local_reason: DisconnectReason,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let reason = reason.slice(..reason.len().min(hello::MAX_CLOSE_REASON_LEN));
        match conn.control {
            // QUIC replaces an application close sent before the handshake
            // is confirmed with a bare APPLICATION_ERROR, losing the code
            // and reason. So say goodbye on the control stream first (1-RTT
            // data), and close once the peer has acknowledged it.
            Some(control) if !conn.quic.is_handshaking() && conn.peer_goodbye.is_none() => {
                let goodbye = ControlMessage::Goodbye {
                    code,
                    reason: reason.clone(),
                };
                conn.control_out.push_back(goodbye.to_frame());
                flush_control(conn);
                let _ = conn.quic.send_stream(control).finish();
                let grace = (conn.quic.rtt() * 3).clamp(
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_secs(1),
                );
                conn.pending_close = Some((code, reason, now + grace));
            }
            _ => conn.quic.close(now, VarInt::from_u32(code as u32), reason),
        }
        self.end_conn(id, local_reason);
    }

    /// The connection is over for the application: report it once.
    fn end_conn(&mut self, id: ConnectionId, reason: DisconnectReason) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let was_established = conn.phase == Phase::Established;
        conn.phase = Phase::Closed;
        conn.handshake_deadline = None;
        let remote = conn.remote;
        let addr = conn.addr;
        if !was_established {
            self.events.push_back(Event::ConnectFailed {
                connection: id,
                addr,
                peer: remote,
                reason,
            });
            return;
        }
        let Some(remote) = remote else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&remote) else {
            return;
        };
        peer.conns.remove(&id);
        if let Some(&next) = peer.conns.iter().next() {
            // Another connection to this peer carries on.
            if peer.info.connection == id {
                peer.info.connection = next;
                if let Some(conn) = self.conns.get_mut(&next) {
                    conn.superseded = false;
                    peer.info.addr = conn.quic.remote_address();
                    peer.info.direction = conn.direction;
                }
            }
            return;
        }
        self.peers.remove(&remote);
        self.events.push_back(Event::Disconnected {
            peer: remote,
            reason,
        });
    }

    /// What the peer's close code and reason (from its Goodbye or its
    /// CONNECTION_CLOSE) mean for this node.
    fn peer_close_reason(&self, code: u64, reason: &[u8]) -> DisconnectReason {
        let text = || String::from_utf8_lossy(reason).into_owned();
        match code {
            close_code::VERSION_REJECTED => match hello::decode_rejection(reason) {
                Ok(rejection) => DisconnectReason::RejectedByPeer(Box::new(rejection)),
                Err(_) => DisconnectReason::ClosedByPeer {
                    code,
                    reason: text(),
                },
            },
            close_code::IDENTITY_MISMATCH => DisconnectReason::NotExpectedByPeer,
            close_code::APPLICATION_MISMATCH => DisconnectReason::ApplicationMismatch {
                local: self.config.app_name.clone(),
                remote: text(),
            },
            close_code::DUPLICATE => DisconnectReason::Duplicate,
            close_code::HANDSHAKE_TIMEOUT => DisconnectReason::HandshakeTimeout,
            close_code::PROTOCOL_VIOLATION => DisconnectReason::ClosedByPeer {
                code,
                reason: text(),
            },
            _ => DisconnectReason::ClosedByPeer {
                code,
                reason: text(),
            },
        }
    }

    fn lost_reason(&self, id: ConnectionId, error: ConnectionError) -> DisconnectReason {
        if let Some((code, reason)) = self.conns.get(&id).and_then(|c| c.peer_goodbye.as_ref()) {
            return self.peer_close_reason(*code, reason);
        }
        let handshaking = self
            .conns
            .get(&id)
            .is_some_and(|c| c.phase == Phase::Handshaking);
        match error {
            ConnectionError::ApplicationClosed(close) => {
                self.peer_close_reason(close.error_code.into_inner(), &close.reason)
            }
            ConnectionError::ConnectionClosed(close)
                if close.error_code == TransportErrorCode::crypto(ALPN_ALERT) =>
            {
                DisconnectReason::AlpnMismatch
            }
            ConnectionError::TransportError(error)
                if error.code == TransportErrorCode::crypto(ALPN_ALERT) =>
            {
                DisconnectReason::AlpnMismatch
            }
            ConnectionError::ConnectionClosed(close)
                if close.error_code == TransportErrorCode::CONNECTION_REFUSED =>
            {
                DisconnectReason::Refused
            }
            ConnectionError::TimedOut if handshaking => DisconnectReason::TimedOut,
            ConnectionError::TimedOut => DisconnectReason::TimedOut,
            ConnectionError::LocallyClosed => DisconnectReason::ClosedLocally,
            other => DisconnectReason::Transport(other.to_string()),
        }
    }
}

/// Queue this node's Hello on the control stream.
fn send_hello(conn: &mut Conn, config: &NodeConfig) {
    let hello = ControlMessage::Hello(Hello {
        versions: config.versions.clone(),
        app_name: config.app_name.clone(),
        metadata: config.metadata.clone(),
    });
    conn.control_out.push_back(hello.to_frame());
    conn.local_hello_sent = true;
    flush_control(conn);
}

/// Write queued control bytes as far as flow control allows.
fn flush_control(conn: &mut Conn) {
    let Some(control) = conn.control else {
        return;
    };
    while let Some(front) = conn.control_out.front_mut() {
        match conn.quic.send_stream(control).write(front) {
            Ok(n) if n == front.len() => {
                conn.control_out.pop_front();
            }
            Ok(n) => {
                let _ = bytes::Buf::advance(front, n);
                return;
            }
            Err(_) => return,
        }
    }
}

fn transport_config(config: &NodeConfig) -> Result<quinn_proto::TransportConfig, NodeError> {
    let limits = &config.limits;
    let idle = quinn_proto::IdleTimeout::try_from(config.timeouts.idle)
        .map_err(|_| NodeError::InvalidConfig("idle timeout too large"))?;
    let mut transport = quinn_proto::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_receive_window))
        .receive_window(VarInt::from_u32(limits.connection_receive_window))
        .send_window(limits.send_window)
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.timeouts.keep_alive))
        .datagram_receive_buffer_size(None);
    Ok(transport)
}

/// Independent keys and seeds derived from the configured seed.
struct Seeds {
    endpoint_rng: [u8; 32],
    reset_key: [u8; 32],
    token_key: [u8; 32],
}

fn derive_seeds(seed: &[u8; 32]) -> Seeds {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let mut seeds = Seeds {
        endpoint_rng: [0; 32],
        reset_key: [0; 32],
        token_key: [0; 32],
    };
    rng.fill_bytes(&mut seeds.endpoint_rng);
    rng.fill_bytes(&mut seeds.reset_key);
    rng.fill_bytes(&mut seeds.token_key);
    seeds
}

/// quinn's server asks a time source for address-validation tokens, which
/// are disabled; the core reads no clock.
#[derive(Debug)]
struct NoClock;

impl quinn_proto::TimeSource for NoClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH
    }
}
