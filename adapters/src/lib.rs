//! pos-p2p: peer-to-peer sync between a user's devices.
//!
//! This crate is the async face of pos-p2p. Today it re-exports the wire
//! toolkit of the sans-IO core ([`pos_p2p_protocol`]): node identities,
//! stream [`Header`]s with their framing, [`Metadata`] and version gating.
//! The `P2P` node, `Peer`, `UnicastStream` and the tokio and async-std
//! adapters build on it (see the project's issue tracker for their status).
//!
//! ```
//! use pos_p2p::{Identity, RemoteIdentity};
//!
//! let identity = Identity::from_bytes(&[42; 32]);
//! let id: RemoteIdentity = identity.to_remote_identity().to_string().parse().unwrap();
//! assert_eq!(id, identity.to_remote_identity());
//! ```

pub use pos_p2p_protocol::codec;
pub use pos_p2p_protocol::version;
pub use pos_p2p_protocol::{
    Header, Identity, IdentityError, Metadata, MetadataError, OperatingSystem, PeerMetadata,
    PeerMetadataError, Rejection, RemoteIdentity, SignatureError, VersionPolicy, Versions, semver,
};
