//! The errors of the async API.

use std::io;

use pos_p2p_protocol::codec::{DecodeError, EncodeError, FrameError};
use pos_p2p_protocol::node::{DisconnectReason, NodeError, StreamError};
use pos_p2p_protocol::semver;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid or TLS could not be set up.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// No listen address could be bound.
    #[error("no listen address")]
    NoListenAddress,
    /// The requested runtime is not running here (for tokio: not called
    /// from within a tokio runtime).
    #[error("the {0} runtime is not available here")]
    NoRuntime(&'static str),
    /// The OS could not provide randomness for the node's seed.
    #[error("no randomness: {0}")]
    Random(io::Error),
    /// A relay of the configuration cannot be used (more than
    /// [`MAX_RELAYS`](pos_p2p_protocol::node::MAX_RELAYS)).
    #[error("relay: {0}")]
    Relay(#[from] pos_p2p_protocol::relay::RelayError),
}

/// The OS's randomness failure as an I/O error (its `errno` when it has
/// one).
pub(crate) fn random_error(error: getrandom::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(error),
    }
}

/// Why [`Peer::new_stream`](crate::Peer::new_stream) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NewStreamError {
    /// The peer is not connected and no address is known to dial.
    #[error("the peer is not connected and has no known address")]
    NoAddress,
    /// Every dial failed; the last reason is given (identity mismatch,
    /// version rejection, timeout, ...).
    #[error("the peer cannot be reached: {0}")]
    Unreachable(DisconnectReason),
    /// The stream could not be opened.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The node is shutting down.
    #[error("the node is shut down")]
    Shutdown,
    /// The operation needs a newer (or other) version of the peer's
    /// application than the one it announced in its handshake
    /// ([`Header::requires`](crate::Header::requires)); nothing was sent.
    #[error("the peer runs {version}, and {operation:?} needs {required}")]
    PeerTooOld {
        /// The header's operation.
        operation: &'static str,
        /// The versions the operation needs.
        required: semver::VersionReq,
        /// The peer's application version.
        version: semver::Version,
    },
    /// The header cannot be encoded (it breaks a limit its own `encode`
    /// declares, or is longer than its `MAX_LEN`); nothing was sent.
    #[error("the header cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
}

/// Why a header could not be read from a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Reading the stream failed.
    #[error("reading the header: {0}")]
    Io(#[from] io::Error),
    /// The stream ended before a header started.
    #[error("the stream ended before the header")]
    Eof,
    /// The stream ended inside the header frame.
    #[error("the stream ended inside the header")]
    Truncated,
    /// The header frame is invalid (too large, bad length prefix).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The header's contents did not decode.
    #[error("invalid header: {0}")]
    Decode(#[from] DecodeError),
}
