//! Why things fail: disconnections, protocol violations, stream and
//! connection errors, and the stream error codes of PROTOCOL.md §3.1.

use std::net::SocketAddr;

use crate::RemoteIdentity;
use crate::version::Rejection;

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
    /// [`Event::StreamWritable`](super::Event::StreamWritable).
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
    /// The dial was made, and failed: the reason its last attempt gave.
    /// [`Node::dial`](super::Node::dial) itself never returns this (the
    /// outcome comes as [`Event::DialFinished`](super::Event::DialFinished));
    /// an API that waits for the outcome does, so that connecting has one
    /// error type.
    #[error("connection failed: {0}")]
    Failed(DisconnectReason),
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
    /// The receiver's application failed while handling the stream (its
    /// handler panicked) before it finished its side: what it sent is not
    /// the whole reply.
    pub const HANDLER_FAILED: u64 = 0x6;
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
    /// The peer's application failed while handling the stream: what it
    /// sent is not the whole reply.
    #[error("the peer's handler for this stream failed")]
    HandlerFailed,
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
            stream_code::HANDLER_FAILED => Self::HandlerFailed,
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
            Self::HandlerFailed => stream_code::HANDLER_FAILED,
            Self::Protocol(code) | Self::Application(code) => *code,
        }
    }
}
