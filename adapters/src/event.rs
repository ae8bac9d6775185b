//! [`P2PEvent`]: what happens to peers, for the application to observe.

use std::collections::HashMap;
use std::net::SocketAddr;

use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::DisconnectReason;

/// Something that happened to a peer. Subscribe with
/// [`P2P::events`](crate::P2P::events).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum P2PEvent {
    /// A peer finished the handshake and can be used.
    PeerConnected {
        /// The peer.
        peer: RemoteIdentity,
        /// Its address.
        addr: SocketAddr,
    },
    /// The last connection to a peer ended.
    PeerDisconnected {
        /// The peer.
        peer: RemoteIdentity,
        /// Why.
        reason: DisconnectReason,
    },
    /// A connection failed before its peer was connected: dialing failed,
    /// versions were rejected (either way), the identity did not match.
    ConnectFailed {
        /// The address.
        addr: SocketAddr,
        /// The peer, if TLS got far enough to prove who it is.
        peer: Option<RemoteIdentity>,
        /// Why.
        reason: DisconnectReason,
    },
    /// An incoming connection was refused before it started.
    IncomingRefused {
        /// Where it came from.
        addr: SocketAddr,
        /// Why.
        reason: DisconnectReason,
    },
    /// A peer was found on the LAN (mDNS). It is in [`P2P::peers`](crate::P2P::peers)
    /// and can be dialed with [`Peer::new_stream`](crate::Peer::new_stream).
    PeerDiscovered {
        /// The peer, as advertised; a dial pins it, so a spoofed
        /// advertisement fails the handshake.
        peer: RemoteIdentity,
        /// Its advertised addresses.
        addrs: Vec<SocketAddr>,
        /// Its advertised metadata (possibly cut to fit mDNS; the Hello on
        /// connect carries all of it).
        metadata: HashMap<String, String>,
    },
    /// A discovered peer advertised new addresses or metadata.
    PeerChanged {
        /// The peer.
        peer: RemoteIdentity,
        /// Its advertised addresses.
        addrs: Vec<SocketAddr>,
        /// Its advertised metadata.
        metadata: HashMap<String, String>,
    },
    /// A discovered peer's mDNS records lapsed or it said goodbye. A
    /// connection to it is not affected.
    PeerExpired {
        /// The peer.
        peer: RemoteIdentity,
    },
    /// A connected peer changed its metadata.
    MetadataUpdated {
        /// The peer.
        peer: RemoteIdentity,
        /// Its new metadata, with `version` set to the application
        /// version of its handshake as [`Peer::metadata`](crate::Peer::metadata)
        /// gives it (unless the peer disconnected in the same turn: then
        /// as it was sent).
        metadata: HashMap<String, String>,
    },
    /// The node connected to one of its relays: peers can reach it through
    /// the relay now.
    RelayConnected {
        /// The relay.
        relay: pos_p2p_protocol::node::RelayAddr,
        /// Where the relay sees this node come from (its public address,
        /// behind a NAT).
        observed: SocketAddr,
    },
    /// The connection to a relay ended; the node connects again, backing
    /// off.
    RelayDisconnected {
        /// The relay.
        relay: pos_p2p_protocol::node::RelayAddr,
        /// Why.
        error: pos_p2p_protocol::relay::RelayError,
    },
    /// A relay answered the node's address probe with a new address: where
    /// the node's UDP socket is seen from the relay (its NAT's mapping).
    /// The node tells the peers it reaches through a relay, so they can
    /// try to reach it directly.
    AddressDiscovered {
        /// The relay.
        relay: pos_p2p_protocol::node::RelayAddr,
        /// The node's public address and port, as the relay sees them.
        addr: SocketAddr,
    },
    /// A connected peer is reached over another path now: typically the
    /// connection made through a relay found a direct route (hole
    /// punching), or lost it and went back to the relay; its streams,
    /// open or new, carry on unaffected. Also when a direct connection
    /// took over from a relayed one (streams already open finish on the
    /// old connection).
    PathChanged {
        /// The peer.
        peer: RemoteIdentity,
        /// How it is reached now.
        path: pos_p2p_protocol::node::PathKind,
    },
}

/// The events of one subscriber, as a `futures_core::Stream` or with
/// [`Events::recv`]. Bounded: a subscriber that falls more than 1,024
/// events behind misses events rather than growing memory, and
/// [`Events::lost`] counts them.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: std::pin::Pin<Box<async_channel::Receiver<P2PEvent>>>,
    pub(crate) lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Events {
    /// The next event; `None` once the node has shut down.
    pub async fn recv(&self) -> Option<P2PEvent> {
        self.rx.recv().await.ok()
    }

    /// How many events this subscriber missed because its queue was full
    /// (it fell more than 1,024 events behind). A subscriber that sees this
    /// grow should read the current state again (`P2P::peers`) rather than
    /// trust what it built from events.
    pub fn lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl futures_core::Stream for Events {
    type Item = P2PEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<P2PEvent>> {
        self.rx.as_mut().poll_next(cx)
    }
}
