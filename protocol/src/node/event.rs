//! What a [`Node`](super::Node) reports: events, peers, stream handles,
//! transmits and errors.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::RemoteIdentity;
use crate::metadata::Metadata;
use crate::version::{Rejection, Versions};

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

/// Why a connection ended or never became usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// This node closed it (`close`, shutdown).
    #[error("closed locally")]
    ClosedLocally,
    /// The peer closed it.
    #[error("closed by the peer (code {code}): {reason}")]
    ClosedByPeer {
        /// The application error code.
        code: u64,
        /// The peer's reason text, lossily decoded.
        reason: String,
    },
    /// Nothing was heard from the peer for the idle timeout.
    #[error("timed out")]
    TimedOut,
    /// The peer closed the connection during the TLS handshake, when QUIC
    /// carries no reason (RFC 9000 §10.2.3): it gave up on the handshake
    /// (too slow, or no room), or refused what it saw.
    #[error("the peer closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// The peer no longer knows the connection (it restarted, or timed out
    /// first) and said so with a QUIC stateless reset.
    #[error("the peer no longer knows the connection (stateless reset)")]
    Reset,
    /// The Hello exchange did not finish within the handshake timeout.
    #[error("handshake did not finish in time")]
    HandshakeTimeout,
    /// This node rejected the peer's versions.
    #[error("rejected the peer: {0}")]
    VersionRejected(Box<Rejection>),
    /// The peer rejected this node's versions. The rejection is the one the
    /// peer computed: its `local` is the peer.
    #[error("rejected by the peer: {0}")]
    RejectedByPeer(Box<Rejection>),
    /// The peer answered with another identity than the dialer expected.
    #[error("expected peer {expected}, but {actual} answered")]
    IdentityMismatch {
        /// Whom the dialer wanted.
        expected: RemoteIdentity,
        /// Who answered.
        actual: RemoteIdentity,
    },
    /// The peer (a dialer) expected another node than this one.
    #[error("the dialer expected another node")]
    NotExpectedByPeer,
    /// The peer runs another application.
    #[error("the peer runs application {remote:?}, not {local:?}")]
    ApplicationMismatch {
        /// This node's application.
        local: String,
        /// The peer's application.
        remote: String,
    },
    /// The peer does not speak this protocol's ALPN (another protocol or an
    /// incompatible major version).
    #[error("the peer does not speak this protocol (ALPN mismatch)")]
    AlpnMismatch,
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    ProtocolViolation(Violation),
    /// Another connection to the same peer is kept instead of this one.
    #[error("replaced by another connection to the same peer")]
    Duplicate,
    /// The node has too many connections (or too many handshakes from
    /// one address): this node refused the peer, or the peer refused us.
    #[error("connection refused: too many connections")]
    Refused,
    /// This node closed an idle connection from a peer the application
    /// never asked for, to make room for a new one (see
    /// [`Limits::max_connections`](super::Limits::max_connections)).
    #[error("closed to make room for another connection")]
    Evicted,
    /// Any other QUIC or TLS failure.
    #[error("transport error: {0}")]
    Transport(TransportFailure),
}

/// How a peer broke the protocol (PROTOCOL.md §4 and §5): the connection
/// is closed with `PROTOCOL_VIOLATION`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A control-stream frame's length prefix was invalid.
    #[error("bad control frame: {0}")]
    ControlFrame(crate::codec::FrameError),
    /// A control message did not decode.
    #[error("bad control message: {0}")]
    ControlMessage(crate::codec::DecodeError),
    /// The peer finished its control stream.
    #[error("control stream finished")]
    ControlStreamFinished,
    /// The peer reset its control stream.
    #[error("control stream reset")]
    ControlStreamReset,
    /// The peer stopped our control stream.
    #[error("peer stopped the control stream")]
    ControlStreamStopped,
    /// The peer sent a second Hello.
    #[error("peer sent a second Hello")]
    SecondHello,
    /// The peer sent metadata before its Hello.
    #[error("metadata before Hello")]
    MetadataBeforeHello,
    /// TLS finished without a certificate from the peer.
    #[error("peer presented no identity")]
    NoIdentity,
    /// The peer has this node's own identity.
    #[error("connected to itself")]
    ConnectedToItself,
}

/// A QUIC failure that has no meaning of its own in pos-p2p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportFailure {
    /// The peer speaks no QUIC version this node does.
    #[error("no common QUIC version")]
    VersionMismatch,
    /// This node detected a QUIC transport error (RFC 9000 §20.1 code;
    /// `0x100`–`0x1ff` are TLS alerts).
    #[error("QUIC transport error {code:#x}")]
    Local {
        /// The transport error code.
        code: u64,
    },
    /// The peer closed the connection with this QUIC transport error code.
    #[error("peer closed with QUIC transport error {code:#x}")]
    Peer {
        /// The transport error code.
        code: u64,
    },
    /// The peer's application closed the connection with a code pos-p2p
    /// does not know.
    #[error("peer's application closed with {code:#x}")]
    Application {
        /// The application error code.
        code: u64,
    },
    /// The connection ran out of connection ids.
    #[error("connection ids exhausted")]
    CidsExhausted,
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
    /// [`StreamError::StreamsExhausted`].
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
    /// The peer asked us to stop sending on a stream.
    StreamStopped {
        /// The stream.
        stream: StreamId,
        /// The peer's error code.
        code: u64,
    },
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

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer is not connected.
    #[error("peer is not connected")]
    NotConnected,
    /// The stream or its connection is gone.
    #[error("unknown or closed stream")]
    UnknownStream,
    /// The peer allows no more concurrent streams now; retry after a stream
    /// ends.
    #[error("the peer allows no more streams now")]
    StreamsExhausted,
    /// Flow control or the send buffer is full; retry after
    /// [`Event::StreamWritable`].
    #[error("stream is blocked by flow control")]
    Blocked,
    /// The peer stopped the stream with this code.
    #[error("the peer stopped the stream (code {0})")]
    Stopped(u64),
    /// The stream was already finished or reset locally.
    #[error("stream is already finished or reset")]
    Closed,
    /// The error code is not a QUIC varint (it must be below 2^62).
    #[error("error code {0} is too large")]
    InvalidCode(u64),
}

impl StreamError {
    /// For [`StreamError::Stopped`], what the peer's code means.
    pub fn rejection(&self) -> Option<StreamRejection> {
        match self {
            Self::Stopped(code) => Some(StreamRejection::from_code(*code)),
            _ => None,
        }
    }
}

/// Why a connection could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address cannot be dialed (port 0 or unspecified address).
    #[error("cannot dial {0}")]
    InvalidAddress(SocketAddr),
    /// The node already has `max_connections` connections.
    #[error("too many connections")]
    TooManyConnections,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// QUIC cannot start connections any more (its endpoint is stopping).
    #[error("the QUIC endpoint is stopping")]
    EndpointStopping,
    /// QUIC has no connection id left for a new connection.
    #[error("no connection id left")]
    CidsExhausted,
    /// A dial was given no address to try.
    #[error("no address to dial")]
    NoAddress,
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

/// The error codes of RESET_STREAM and STOP_SENDING on application streams
/// (PROTOCOL.md §3.1). Codes below [`FIRST_APPLICATION_CODE`] are the
/// protocol's; applications use codes from there up.
///
/// [`FIRST_APPLICATION_CODE`]: stream_code::FIRST_APPLICATION_CODE
pub mod stream_code {
    /// The receiver is done with the stream: it stopped reading before the
    /// end (a dropped stream), or answers a STOP_SENDING with nothing to add.
    pub const CLOSED: u64 = 0x0;
    /// The receiver's application does not know the operation the header
    /// names (an older or different version).
    pub const UNKNOWN_OPERATION: u64 = 0x1;
    /// The header frame announced more bytes than the receiver accepts.
    pub const HEADER_TOO_LARGE: u64 = 0x2;
    /// The header frame's length prefix was invalid, the stream ended
    /// inside the header, or the header's fields did not decode.
    pub const MALFORMED_HEADER: u64 = 0x3;
    /// The receiver refuses the stream (it is shutting down, or does not
    /// serve this operation to this peer).
    pub const REFUSED: u64 = 0x4;
    /// The header did not arrive within the receiver's deadline.
    pub const HEADER_TIMEOUT: u64 = 0x5;
    /// The first code applications may use for their own resets and stops.
    pub const FIRST_APPLICATION_CODE: u64 = 0x100;
}

/// Why the peer reset or stopped a stream, from its error code
/// ([`stream_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum StreamRejection {
    /// The peer is done with the stream ([`stream_code::CLOSED`]).
    #[error("the peer closed the stream")]
    Closed,
    /// The peer does not know the operation the header names.
    #[error("the peer does not know this operation")]
    UnknownOperation,
    /// The header was larger than the peer accepts.
    #[error("the header is larger than the peer accepts")]
    HeaderTooLarge,
    /// The peer could not decode the header.
    #[error("the peer could not decode the header")]
    MalformedHeader,
    /// The peer refused the stream.
    #[error("the peer refused the stream")]
    Refused,
    /// The header did not reach the peer in time.
    #[error("the header did not reach the peer in time")]
    HeaderTimeout,
    /// A protocol code this version does not know (below
    /// [`stream_code::FIRST_APPLICATION_CODE`]).
    #[error("the peer ended the stream (protocol code {0})")]
    Protocol(u64),
    /// The peer's application's own code.
    #[error("the peer's application ended the stream (code {0})")]
    Application(u64),
}

impl StreamRejection {
    /// The meaning of a stream error code.
    pub fn from_code(code: u64) -> Self {
        match code {
            stream_code::CLOSED => Self::Closed,
            stream_code::UNKNOWN_OPERATION => Self::UnknownOperation,
            stream_code::HEADER_TOO_LARGE => Self::HeaderTooLarge,
            stream_code::MALFORMED_HEADER => Self::MalformedHeader,
            stream_code::REFUSED => Self::Refused,
            stream_code::HEADER_TIMEOUT => Self::HeaderTimeout,
            code if code < stream_code::FIRST_APPLICATION_CODE => Self::Protocol(code),
            code => Self::Application(code),
        }
    }

    /// Why a receiver refuses a stream whose header (a frame body) did not
    /// decode: an unknown tag as the header's first byte is an operation
    /// this version does not know; anything else is a malformed header.
    pub fn for_decode_error(error: &crate::codec::DecodeError) -> Self {
        match error {
            crate::codec::DecodeError::UnknownTag { offset: 0, .. } => Self::UnknownOperation,
            _ => Self::MalformedHeader,
        }
    }

    /// The error code on the wire.
    pub fn code(&self) -> u64 {
        match self {
            Self::Closed => stream_code::CLOSED,
            Self::UnknownOperation => stream_code::UNKNOWN_OPERATION,
            Self::HeaderTooLarge => stream_code::HEADER_TOO_LARGE,
            Self::MalformedHeader => stream_code::MALFORMED_HEADER,
            Self::Refused => stream_code::REFUSED,
            Self::HeaderTimeout => stream_code::HEADER_TIMEOUT,
            Self::Protocol(code) | Self::Application(code) => *code,
        }
    }
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
}
