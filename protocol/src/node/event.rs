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

/// Where a connection stands, for callers waiting on a dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// TLS or the Hello exchange is under way.
    Handshaking,
    /// Established with this peer (possibly a duplicate being drained).
    Established(RemoteIdentity),
    /// Closed or lost; an event said why. `established_with` is the peer
    /// if the connection had been established (a duplicate that was closed
    /// in favour of another connection to the same peer, for instance).
    Closed {
        /// The peer it had been established with, if it had been.
        established_with: Option<RemoteIdentity>,
    },
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
    ProtocolViolation(String),
    /// Another connection to the same peer is kept instead of this one.
    #[error("replaced by another connection to the same peer")]
    Duplicate,
    /// The node has too many connections.
    #[error("connection refused: too many connections")]
    Refused,
    /// Any other QUIC or TLS failure.
    #[error("transport error: {0}")]
    Transport(String),
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
    /// A peer opened a stream.
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
    StreamReadable(StreamId),
    /// A stream that refused a write can take more.
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
    /// QUIC refused to start the connection.
    #[error("cannot start the connection: {0}")]
    Quic(String),
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
}
