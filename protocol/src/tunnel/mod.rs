//! The Tunnel: Noise-based proof that both ends of a stream are instances of
//! the same *library*, and end-to-end encryption of what the stream carries.
//!
//! A library is a data set shared by a user's devices; each device holds an
//! instance of it with its own ed25519 key, and the application knows which
//! instance keys belong to which library ([`LibraryKeys`]). A tunnel runs
//! inside one application stream of an authenticated connection:
//!
//! 1. The initiator names the library in a cleartext hello (the stream is
//!    already encrypted node-to-node by QUIC's TLS).
//! 2. A Noise `XX` handshake (`Noise_XX_25519_AESGCM_SHA256`, or
//!    `Noise_XXpsk3_...` with a library secret) runs with a prologue that
//!    binds both *node* identities and the hello, so it cannot be relayed
//!    onto another connection.
//! 3. The initiator proves its instance first, in Noise message 3: its
//!    instance key and an ed25519 signature over the handshake hash and its
//!    Noise static key. The responder checks the signature and asks the
//!    application whether that instance is a member of the library.
//! 4. Only then does the responder prove its own instance, in the
//!    encrypted accept, which the initiator checks the same way. A prober
//!    that is no member learns neither the responder's instance nor
//!    whether it holds the library: every stranger is refused alike.
//! 5. Both sides have a [`TunnelTransport`]: AES-256-GCM messages of at
//!    most 65,519 bytes, each framed with a 2-byte big-endian length, and
//!    an authenticated end ([`TunnelTransport::seal_end`]) so that a
//!    truncated stream is never mistaken for a complete one.
//!
//! Typestate: a [`TunnelHandshake`] becomes a [`TunnelTransport`] only once
//! it is done. Buffers are the caller's. Errors are sticky and say *what*
//! failed, never a secret-dependent *why*. `docs/PROTOCOL.md` §8 specifies
//! the bytes, with a transcript that the tests check.
//!
//! ```
//! use pos_p2p_protocol::Identity;
//! use pos_p2p_protocol::tunnel::{LibraryId, LibraryKeys, NodePair, TunnelHandshake};
//! use pos_p2p_protocol::RemoteIdentity;
//!
//! struct OneLibrary { id: LibraryId, me: Identity, members: Vec<RemoteIdentity> }
//! impl LibraryKeys for OneLibrary {
//!     fn local_instance(&self, library: &LibraryId) -> Option<Identity> {
//!         (*library == self.id).then(|| self.me.clone())
//!     }
//!     fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool {
//!         *library == self.id && self.members.contains(instance)
//!     }
//! }
//!
//! let library = LibraryId::from_bytes([7; 16]);
//! let (laptop, phone) = (Identity::from_bytes(&[1; 32]), Identity::from_bytes(&[2; 32]));
//! let members = vec![laptop.to_remote_identity(), phone.to_remote_identity()];
//! let a = OneLibrary { id: library, me: laptop, members: members.clone() };
//! let b = OneLibrary { id: library, me: phone, members };
//! let (node_a, node_b) = (Identity::from_bytes(&[3; 32]), Identity::from_bytes(&[4; 32]));
//! let nodes = NodePair { initiator: node_a.to_remote_identity(), responder: node_b.to_remote_identity() };
//!
//! let mut initiator = TunnelHandshake::initiator(nodes, library, &a, [5; 32]).unwrap();
//! let mut responder = TunnelHandshake::responder(nodes, [6; 32]);
//! let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
//! while !(initiator.is_done() && responder.is_done()) {
//!     initiator.take_output(&mut to_b);
//!     let used = responder.handle_input(&to_b, &b).unwrap();
//!     to_b.drain(..used);
//!     responder.take_output(&mut to_a);
//!     let used = initiator.handle_input(&to_a, &a).unwrap();
//!     to_a.drain(..used);
//! }
//! let (mut a_tx, info) = initiator.into_transport().unwrap();
//! let (mut b_rx, _) = responder.into_transport().unwrap();
//! assert_eq!(info.remote_instance, Identity::from_bytes(&[2; 32]).to_remote_identity());
//!
//! let mut frame = [0u8; 64];
//! let n = a_tx.seal(b"library data", &mut frame).unwrap();
//! let mut plain = [0u8; 64];
//! let m = b_rx.open(&frame[2..n], &mut plain).unwrap();
//! assert_eq!(&plain[..m], b"library data");
//! ```

mod frame;
mod handshake;
mod rng;
mod transport;

use core::fmt;

pub use frame::{FrameReader, MAX_FRAME_LEN};
pub use handshake::TunnelHandshake;
pub use transport::{MAX_PLAINTEXT_LEN, REKEY_INTERVAL, TunnelTransport, sealed_len};

use crate::{Identity, RemoteIdentity};

/// A library's 16-byte id (a UUID's bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LibraryId([u8; 16]);

impl LibraryId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for LibraryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LibraryId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What the application knows about its libraries. Both sides of a tunnel
/// consult it.
pub trait LibraryKeys {
    /// This node's instance key for `library`, or `None` if it holds no
    /// instance of it.
    fn local_instance(&self, library: &LibraryId) -> Option<Identity>;

    /// Whether `instance` is an accepted member of `library`.
    fn is_member(&self, library: &LibraryId, instance: &RemoteIdentity) -> bool;

    /// The library's pre-shared secret, if the application has one. Both
    /// sides must agree on whether there is one and on its value.
    fn psk(&self, library: &LibraryId) -> Option<[u8; 32]> {
        let _ = library;
        None
    }
}

/// The two nodes of the connection a tunnel runs on. Both sides state them
/// the same way round (the initiator's node first); a tunnel handshake
/// relayed onto a connection between other nodes fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePair {
    /// The node that opened the tunnel.
    pub initiator: RemoteIdentity,
    /// The node that answered.
    pub responder: RemoteIdentity,
}

/// What a completed handshake established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The library.
    pub library: LibraryId,
    /// The other side's instance key, proven by its signature and accepted
    /// by [`LibraryKeys::is_member`].
    pub remote_instance: RemoteIdentity,
    /// The connection's nodes.
    pub nodes: NodePair,
}

/// Why the other side refused the tunnel, as it said on the wire
/// (PROTOCOL.md §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectCode {
    /// It failed for a reason of its own (code 0), not because of us.
    Internal,
    /// It holds no instance of the library (code 1). Tunnel version 1 sent
    /// it; version 2 never does (a responder without the library answers
    /// [`RejectCode::NotMember`], as for any stranger).
    UnknownLibrary,
    /// It does not accept our instance for the library: not a member, or
    /// it holds no instance of the library itself.
    NotMember,
    /// Our proof of the instance key did not verify.
    BadSignature,
    /// We disagree on whether the library has a pre-shared secret, or on the
    /// tunnel version.
    Incompatible,
    /// One of our messages failed authentication (corrupted, relayed, or a
    /// different pre-shared secret).
    AuthenticationFailed,
    /// One of our messages broke the protocol.
    ProtocolViolation,
    /// A code this version does not know.
    Other(u8),
}

impl RejectCode {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Internal => 0,
            Self::UnknownLibrary => 1,
            Self::NotMember => 2,
            Self::BadSignature => 3,
            Self::Incompatible => 4,
            Self::AuthenticationFailed => 5,
            Self::ProtocolViolation => 6,
            Self::Other(code) => code,
        }
    }

    pub(crate) fn from_u8(code: u8) -> Self {
        match code {
            0 => Self::Internal,
            1 => Self::UnknownLibrary,
            2 => Self::NotMember,
            3 => Self::BadSignature,
            4 => Self::Incompatible,
            5 => Self::AuthenticationFailed,
            6 => Self::ProtocolViolation,
            other => Self::Other(other),
        }
    }

    /// What to tell the other side when this side's handshake fails with
    /// `error`, if anything.
    pub(crate) fn for_error(error: &TunnelError) -> Option<Self> {
        Some(match error {
            // The same answer with or without the library: a stranger
            // learns nothing from it.
            TunnelError::UnknownLibrary | TunnelError::NotMember => Self::NotMember,
            TunnelError::BadSignature => Self::BadSignature,
            TunnelError::Incompatible => Self::Incompatible,
            TunnelError::Decrypt => Self::AuthenticationFailed,
            TunnelError::Protocol(_) => Self::ProtocolViolation,
            TunnelError::Buffer | TunnelError::Crypto => Self::Internal,
            // A rejection is never answered; the rest come after the
            // handshake.
            TunnelError::Rejected(_)
            | TunnelError::Failed
            | TunnelError::Truncated
            | TunnelError::Ended => return None,
        })
    }
}

/// Why a tunnel failed. Sticky: once a handshake or transport has failed,
/// every later call returns [`TunnelError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// This node holds no instance of the requested library.
    #[error("this node holds no instance of the library")]
    UnknownLibrary,
    /// The other side's instance is not a member of the library.
    #[error("the peer's instance is not a member of the library")]
    NotMember,
    /// The other side's proof of its instance key did not verify.
    #[error("the peer's instance signature is invalid")]
    BadSignature,
    /// The other side refused the tunnel.
    #[error("the peer refused the tunnel: {0:?}")]
    Rejected(RejectCode),
    /// The sides disagree on the tunnel version or on whether there is a
    /// library secret.
    #[error("incompatible tunnel parameters")]
    Incompatible,
    /// A message failed authentication: corrupted, replayed, reordered,
    /// relayed from another connection, or encrypted with another key or
    /// secret. Deliberately no more detail.
    #[error("message authentication failed")]
    Decrypt,
    /// A message broke the tunnel protocol (unexpected, malformed,
    /// truncated or oversized).
    #[error("tunnel protocol violation: {0}")]
    Protocol(&'static str),
    /// The plaintext is larger than [`MAX_PLAINTEXT_LEN`], or the output
    /// buffer is too small.
    #[error("buffer too small or message too large")]
    Buffer,
    /// The stream under the tunnel ended without the other side's
    /// authenticated end: what arrived may be cut short.
    #[error("the tunnel's stream ended without the tunnel's end: data may be missing")]
    Truncated,
    /// This side already ended the tunnel ([`TunnelTransport::seal_end`]),
    /// or the other side sent a message after its end.
    #[error("the tunnel was already ended")]
    Ended,
    /// An earlier error ended the tunnel.
    #[error("the tunnel already failed")]
    Failed,
    /// The crypto backend failed (not caused by the peer).
    #[error("crypto failure")]
    Crypto,
}

#[cfg(test)]
mod tests;
