//! What a [`Node`](super::Node) reports: events, peers, stream handles
//! and transmits.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::error::DisconnectReason;
use crate::RemoteIdentity;
use crate::metadata::Metadata;
use crate::version::Versions;

/// A connection of this node, unique for the node's lifetime (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

/// An application stream, unique for the node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub(crate) conn: ConnectionId,
    pub(crate) id: quinn_proto::StreamId,
}

impl StreamId {
    /// The connection the stream belongs to.
    pub fn connection(&self) -> ConnectionId {
        self.conn
    }
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This node dialed.
    Outbound,
    /// The peer dialed.
    Inbound,
}

/// What is known about a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's identity, proven by TLS.
    pub identity: RemoteIdentity,
    /// The peer's protocol and application versions.
    pub versions: Versions,
    /// The peer's metadata, as last sent.
    pub metadata: Metadata,
    /// The peer's address on the connection in use.
    pub addr: SocketAddr,
    /// Who dialed the connection in use.
    pub direction: Direction,
    /// The connection in use.
    pub connection: ConnectionId,
}

/// What a [`Node`](super::Node) reports. Poll with
/// [`Node::poll_event`](super::Node::poll_event) after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer finished the Hello exchange: it can be used. Reported once
    /// per peer, however many connections it has.
    Connected(Box<PeerInfo>),
    /// The last connection to a connected peer ended.
    Disconnected {
        /// The peer.
        peer: RemoteIdentity,
        /// Why.
        reason: DisconnectReason,
    },
    /// A connection ended before its peer was connected: dialing failed,
    /// the peer was rejected or rejected us, or an incoming attempt failed.
    ConnectFailed {
        /// The connection.
        connection: ConnectionId,
        /// The peer's address.
        addr: SocketAddr,
        /// The peer's identity, if TLS got far enough to prove it.
        peer: Option<RemoteIdentity>,
        /// Why.
        reason: DisconnectReason,
    },
    /// A dial ([`Node::dial`](super::Node::dial)) is over: connected to
    /// this peer, or every attempt failed, with the reason the last one
    /// gave. Reported exactly once per [`DialId`](super::DialId), after
    /// the [`Event::ConnectFailed`] of its last attempt or the
    /// [`Event::Connected`] of the peer, if there was one.
    DialFinished {
        /// The dial.
        dial: super::DialId,
        /// The peer reached, or why none was.
        result: Result<RemoteIdentity, DisconnectReason>,
    },
    /// A manual peer's host name needs resolving: resolve it (off the
    /// driver's thread) and hand the answer to
    /// [`Node::handle_resolved`](super::Node::handle_resolved) with this
    /// generation.
    ResolveHost {
        /// The manual peer (a [`PeerAddr::Host`](super::PeerAddr::Host)).
        addr: super::PeerAddr,
        /// Which attempt asks.
        generation: u64,
    },
    /// An incoming connection was refused or failed before it started:
    /// too many connections, an incompatible ALPN, a malformed handshake.
    IncomingRefused {
        /// The address it came from.
        addr: SocketAddr,
        /// Why.
        reason: DisconnectReason,
    },
    /// A connected peer sent new metadata.
    MetadataUpdated {
        /// The peer.
        peer: RemoteIdentity,
        /// Its new metadata.
        metadata: Metadata,
    },
    /// A peer opened a stream and its header frame has arrived: the
    /// application's first reads return that frame.
    IncomingStream {
        /// The peer.
        peer: RemoteIdentity,
        /// The stream.
        stream: StreamId,
    },
    /// A connected peer allows more streams again after
    /// [`StreamError::StreamsExhausted`](super::StreamError::StreamsExhausted).
    StreamsAvailable {
        /// The peer.
        peer: RemoteIdentity,
    },
    /// A stream has data, its end, or a reset waiting to be read.
    ///
    /// Also reported, with [`Event::StreamWritable`], for every stream the
    /// application knows when its connection ends (for whatever reason,
    /// [`Node::shutdown`](super::Node::shutdown) included), so a task
    /// blocked on it looks again and finds it gone: a driver needs no
    /// wake-up of its own for streams at disconnection.
    StreamReadable(StreamId),
    /// A stream that refused a write can take more (and see
    /// [`Event::StreamReadable`] about connections that end).
    StreamWritable(StreamId),
    /// Everything written on a finished stream was acknowledged.
    StreamFinished(StreamId),
    /// The node connected to one of its relays: peers can reach it
    /// through it now.
    RelayConnected {
        /// The relay.
        relay: super::RelayId,
        /// Where the relay sees this node come from.
        observed: SocketAddr,
    },
    /// The connection to a relay ended; the node connects again (see
    /// [`Node::relays`](super::Node::relays)). Peers reached through it are
    /// cut off unless QUIC finds another path.
    RelayDisconnected {
        /// The relay.
        relay: super::RelayId,
        /// Why.
        error: crate::relay::RelayError,
    },
    /// A relay answered the node's address probe (docs/PROTOCOL.md §10.6):
    /// the node's UDP socket is seen at `addr` from the relay, a new
    /// address (the first, or another than before: the NAT's mapping
    /// changed). The node tells its relayed peers (see
    /// [`Node::candidates`](super::Node::candidates)).
    AddressDiscovered {
        /// The relay.
        relay: super::RelayId,
        /// Where the relay sees the node's UDP socket.
        addr: SocketAddr,
    },
    /// A connected peer is now reached on another kind of path: a
    /// connection made through a relay found a direct route or lost it
    /// (docs/PROTOCOL.md §10.9: the same connection, its streams carry
    /// on), or another connection took over from the one in use (a direct
    /// one from a relayed one, or the other way round: streams already
    /// open on the old connection finish there, new ones use the new
    /// path).
    PathChanged {
        /// The peer.
        peer: RemoteIdentity,
        /// How it is reached now.
        path: super::PathKind,
    },
    /// The peer asked us to stop sending on a stream.
    StreamStopped {
        /// The stream.
        stream: StreamId,
        /// The peer's error code.
        code: u64,
    },
}

/// Where the sending half of a stream stands ([`Node::send_status`](super::Node::send_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendStatus {
    /// Open, or finished with data the peer has not acknowledged yet.
    Sending,
    /// Finished, and the peer acknowledged every byte: it has received
    /// everything (whether its application read it is another matter).
    Acknowledged,
    /// The peer stopped it with this code (and it was reset in answer).
    Stopped(u64),
    /// This node reset it.
    Reset,
}

/// The result of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Data, in order.
    Data(Bytes),
    /// Nothing available now; a [`Event::StreamReadable`] follows when there is.
    Blocked,
    /// The peer finished the stream and every byte has been read.
    Finished,
    /// The peer reset the stream with this code.
    Reset(u64),
}

/// Explicit congestion notification codepoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecn {
    /// ECT(0)
    Ect0,
    /// ECT(1)
    Ect1,
    /// Congestion experienced.
    Ce,
}

impl Ecn {
    pub(crate) fn to_quinn(self) -> quinn_proto::EcnCodepoint {
        match self {
            Self::Ect0 => quinn_proto::EcnCodepoint::Ect0,
            Self::Ect1 => quinn_proto::EcnCodepoint::Ect1,
            Self::Ce => quinn_proto::EcnCodepoint::Ce,
        }
    }

    pub(crate) fn from_quinn(ecn: quinn_proto::EcnCodepoint) -> Self {
        match ecn {
            quinn_proto::EcnCodepoint::Ect0 => Self::Ect0,
            quinn_proto::EcnCodepoint::Ect1 => Self::Ect1,
            quinn_proto::EcnCodepoint::Ce => Self::Ce,
        }
    }
}

/// One or more UDP datagrams to send; the bytes are the first `size` bytes
/// of the buffer given to [`Node::poll_transmit`](super::Node::poll_transmit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a transmit must be sent"]
pub struct Transmit {
    /// Where to send.
    pub destination: SocketAddr,
    /// The ECN codepoint to set.
    pub ecn: Option<Ecn>,
    /// The total size of the datagrams.
    pub size: usize,
    /// With several datagrams (GSO), the size of each but the last.
    pub segment_size: Option<usize>,
    /// The local address to send from, if it matters.
    pub src_ip: Option<IpAddr>,
}

/// Why the node wants to be woken at the time
/// [`Node::poll_timeout`](super::Node::poll_timeout) returns. For debugging
/// busy loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutReason {
    /// A QUIC timer (loss detection, pacing, idle, keep-alive) of a connection.
    Connection(ConnectionId),
    /// A relay connection is due: to be opened again, pinged, or given up.
    Relay(super::RelayId),
    /// The deadline of a connection's Hello exchange.
    Handshake(ConnectionId),
    /// A connection that said Goodbye closes at the latest now.
    Close(ConnectionId),
    /// A stream's header is overdue on this connection.
    Header(ConnectionId),
    /// A superseded connection stops waiting for the peer to give it up
    /// (see [`Timeouts::superseded`](super::Timeouts::superseded)).
    Duplicate(ConnectionId),
    /// A manual peer is due: its next attempt, its resolver's deadline, or
    /// news it waits for (see [`Node::add_manual_peer`](super::Node::add_manual_peer)).
    Manual,
}

/// How the connection to one peer is doing
/// ([`Node::peer_stats`](super::Node::peer_stats)): QUIC's own figures for
/// the connection in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The smoothed round-trip time.
    pub rtt: std::time::Duration,
    /// The congestion window: how many bytes may be in flight now.
    pub congestion_window: u64,
    /// UDP payload bytes sent on the connection (headers, retransmissions
    /// and acknowledgements included).
    pub bytes_sent: u64,
    /// UDP payload bytes received on the connection.
    pub bytes_received: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// The path: the peer's address on the connection in use (for a
    /// relayed path, the address QUIC knows it by, see
    /// [`Node::relay_path`](super::Node::relay_path)).
    pub remote_addr: SocketAddr,
    /// Whether the peer is reached directly or through a relay.
    pub path: super::PathKind,
    /// The largest datagram the path carries now (path MTU discovery).
    pub mtu: u16,
}

/// What a [`Node`](super::Node) counted: what it refused, limited and
/// evicted, for diagnostics and for tests that prove a limit acted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams: u64,
    /// Connections that completed the Hello exchange, in either direction,
    /// duplicates of a connected peer's connection included.
    pub connections_established: u64,
    /// Datagrams dropped before QUIC looked at them: version negotiation
    /// requests over the rate limit of stateless answers, and first flights
    /// over their source's allowance.
    pub dropped_early: u64,
    /// Stateless answers sent (version negotiation, stateless resets,
    /// refusals, retries).
    pub responses_sent: u64,
    /// Stateless answers not sent because of their rate limit.
    pub responses_limited: u64,
    /// Incoming connections refused (shutting down, or too many
    /// connections in all).
    pub incoming_refused: u64,
    /// First flights ignored for lack of a handshake slot (from this
    /// address, or in all); the dialer's retransmission comes back later.
    pub incoming_deferred: u64,
    /// Incoming connections asked to prove their address (QUIC Retry)
    /// because many handshakes were under way.
    pub retries_sent: u64,
    /// Unauthenticated incoming handshakes closed to make room for newer
    /// ones.
    pub handshakes_evicted: u64,
    /// Incoming handshakes closed for not finishing in time.
    pub handshakes_timed_out: u64,
    /// Idle connections closed to make room (see [`DisconnectReason::Evicted`]).
    pub connections_evicted: u64,
    /// Duplicate connections closed because the peer did not give them up
    /// within [`Timeouts::superseded`](super::Timeouts::superseded).
    pub duplicates_timed_out: u64,
    /// Streams refused because their header announced too many bytes.
    pub headers_too_large: u64,
    /// Streams refused because their header frame was malformed or cut.
    pub headers_malformed: u64,
    /// Streams refused because their header did not arrive in time.
    pub headers_timed_out: u64,
    /// Streams the peer stopped, reset in answer.
    pub streams_reset_on_stop: u64,
    /// Datagrams sent through a relay.
    pub relayed_sent: u64,
    /// Datagrams that arrived through a relay.
    pub relayed_received: u64,
    /// Datagrams for a relayed path that could not be sent (the relay not
    /// connected, or its queue full).
    pub relayed_dropped: u64,
    /// Relayed connections closed because TLS proved another identity
    /// than the one the relay said sent them.
    pub relayed_identity_mismatches: u64,
    /// Address probes (STUN Binding requests) sent to relays.
    pub probes_sent: u64,
    /// Address probes a relay answered (matching transaction id, from the
    /// relay's address).
    pub probes_answered: u64,
    /// STUN messages that were not the answer to the latest probe of a
    /// relay they came from (dropped).
    pub stun_ignored: u64,
    /// Addresses of relayed peers pinged to find a direct route (their
    /// candidates, and where their pings came from: hole punching,
    /// docs/PROTOCOL.md §10.7, §10.9), each counted once per punch window.
    pub punch_attempts: u64,
    /// Candidate addresses not tried because the peer's budget of attempts
    /// was spent (see [`MAX_PUNCHES`](super::MAX_PUNCHES)).
    pub punches_limited: u64,
    /// Direct-path pings sent (docs/PROTOCOL.md §10.9).
    pub path_pings_sent: u64,
    /// Pongs sent (answers to a peer's pings).
    pub path_pongs_sent: u64,
    /// Pongs that answered one of this node's pings.
    pub path_pongs_received: u64,
    /// Direct-path packets dropped: malformed, an unknown token, a pong
    /// to no ping of this node's, or over a connection's pong budget.
    pub path_packets_ignored: u64,
    /// Direct routes given up (unanswered, or the node's addresses
    /// changed): their connections went back to the relay.
    pub routes_lost: u64,
}
