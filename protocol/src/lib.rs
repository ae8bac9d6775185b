//! The sans-IO core of pos-p2p.
//!
//! This crate holds everything pos-p2p decides without a socket: node
//! identities, the wire toolkit (primitives, stream-header framing and an
//! incremental frame decoder), node metadata and version gating. It never
//! opens a socket, never reads the clock and never draws hidden randomness:
//! time and random number generators are always parameters, so the same code
//! can be fuzzed, property-tested and driven by any async runtime.
//!
//! Applications normally use the `pos-p2p` crate, which re-exports what they
//! need from here.
//!
//! Every byte from the network is untrusted: decoders return typed errors,
//! never panic, and never allocate beyond the limits they are given.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod book;
pub mod codec;
pub mod direct;
pub mod discovery;
mod identity;
mod metadata;
pub mod node;
mod rate;
pub mod relay;
pub mod stun;
pub mod transfer;
pub mod tunnel;
pub mod version;

pub use codec::Header;
pub use identity::{
    Identity, IdentityError, PUBLIC_KEY_LEN, REMOTE_IDENTITY_TEXT_LEN, RemoteIdentity,
    SECRET_KEY_LEN, SIGNATURE_LEN, SignatureError,
};
pub use metadata::{
    AppVersion, KEY_DEVICE_MODEL, KEY_NAME, KEY_OS, KEY_VERSION,
    MAX_ENCODED_LEN as MAX_METADATA_LEN, MAX_ENTRIES as MAX_METADATA_ENTRIES,
    MAX_KEY_LEN as MAX_METADATA_KEY_LEN, MAX_VALUE_LEN as MAX_METADATA_VALUE_LEN, Metadata,
    MetadataError, OperatingSystem, PeerMetadata, PeerMetadataError,
};
pub use semver;
pub use version::{Rejection, VersionPolicy, Versions};
