//! pos-p2p: peer-to-peer sync between a user's devices.
//!
//! A node has an ed25519 [`Identity`]; it finds peers on the LAN over mDNS
//! or by address ([`P2P::add_manual_peer`]), keeps one mutually
//! authenticated QUIC connection per peer, and opens cheap streams on it that begin with an
//! application-defined [`Header`]. A handshake exchanges metadata and
//! refuses incompatible versions with a reason both sides see.
//!
//! ```no_run
//! use std::sync::Arc;
//! use pos_p2p::prelude::*;
//! use pos_p2p::{P2P, P2PConfig, RemoteIdentity, generate_identity, semver::Version};
//! use tokio::io::AsyncWriteExt;
//!
//! # #[derive(Debug)] enum AppHeader { Ping }
//! # impl Header for AppHeader {
//! #     fn encode(&self, w: &mut pos_p2p::codec::Writer) { w.tag(0) }
//! #     fn decode(r: &mut pos_p2p::codec::Reader<'_>) -> Result<Self, pos_p2p::codec::DecodeError> {
//! #         match r.tag()? { 0 => Ok(AppHeader::Ping), t => Err(r.unknown_tag("AppHeader", t)) }
//! #     }
//! # }
//! async fn ping(p2p: Arc<P2P>, identity: RemoteIdentity) -> Result<(), Box<dyn std::error::Error>> {
//!     let peer = p2p
//!         .peers()
//!         .get(&identity)
//!         .ok_or("Peer not found, has it been discovered?")?
//!         .clone();
//!     let mut stream = peer.new_stream().await?;
//!     stream.write_all(&AppHeader::Ping.to_bytes()).await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = P2PConfig::new(generate_identity()?, "notes", Version::new(1, 0, 0))?;
//! let p2p = P2P::new(config)?;
//! while let Some(mut stream) = p2p.accept().await {
//!     match AppHeader::from_stream(&mut stream).await? {
//!         AppHeader::Ping => println!("ping from {}", stream.remote_identity()),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Runtimes: with the `tokio` feature (default) a node started inside a
//! tokio runtime runs its driver there; with the `async-std` feature nodes
//! run on async-io, the reactor of async-std and smol. The protocol itself
//! lives in the sans-IO crate [`pos_p2p_protocol`].

mod clock;
mod driver;
mod error;
mod event;
mod header;
mod manual;
mod mdns;
mod p2p;
mod peer;
mod relay;
mod router;
mod routes;
mod runtime;
mod stream;
pub mod transfer;
mod tunnel_stream;

pub use error::{HeaderError, NewStreamError, StartError};
pub use event::{Events, P2PEvent};
pub use header::HeaderExt;
pub use manual::{ManualError, ManualPeer, ManualStatus, PeerAddr, PeerAddrError, ResolveError};
#[doc(hidden)]
pub use p2p::TableSizes;
pub use p2p::{P2P, P2PConfig, generate_identity};
pub use peer::{Peer, Peers};
pub use router::{
    DEFAULT_GRACE_PERIOD, DEFAULT_MAX_IN_FLIGHT, HandlerError, Router, RouterHandle, RouterStats,
};
pub use runtime::RuntimeKind;
pub use stream::{StreamReset, UnicastStream};
pub use tunnel_stream::{Tunnel, TunnelOpenError};

pub use pos_p2p_protocol::codec;
pub use pos_p2p_protocol::discovery::DiscoveryStats;
pub use pos_p2p_protocol::node::{
    ConnectError, DisconnectReason, Limits, NodeAddr, NodeAddrError, NodeStats, PathKind,
    PeerStats, RelayAddr, RelayAddrError, RelayStatus, StreamError, StreamRejection, Timeouts,
    TransportFailure, Violation, stream_code,
};
pub use pos_p2p_protocol::relay::RelayError;
/// The Tunnel: proof that both ends are instances of the same library,
/// and encryption of library-scoped data. [`Tunnel`] is the
/// async stream; the rest is the sans-IO core's
/// ([`pos_p2p_protocol::tunnel`]).
pub mod tunnel {
    pub use crate::tunnel_stream::{Tunnel, TunnelOpenError};
    pub use pos_p2p_protocol::tunnel::*;
}

/// Hooks for tests, not part of the supported API: they may change in any
/// release.
#[doc(hidden)]
pub mod testing {
    pub use crate::clock::Clock;
}
/// `#[derive(Header)]`: the trait's implementation from attributes
/// (explicit tags, limits), checked at compile time. See
/// [`pos_p2p_derive`].
pub use pos_p2p_derive::Header;
pub use pos_p2p_protocol::version;
pub use pos_p2p_protocol::{
    AppVersion, Header, Identity, IdentityError, Metadata, MetadataError, OperatingSystem,
    PeerMetadata, PeerMetadataError, Rejection, RemoteIdentity, SignatureError, VersionPolicy,
    Versions, semver,
};

/// The traits application code needs in scope: `use pos_p2p::prelude::*;`.
pub mod prelude {
    pub use crate::HeaderExt;
    pub use pos_p2p_derive::Header;
    pub use pos_p2p_protocol::Header;
}

/// `docs/USAGE.md`, compiled as doc tests so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/USAGE.md")]
pub struct UsageGuide;
