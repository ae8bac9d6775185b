//! The relay (docs/PROTOCOL.md §10), sans-IO: a server that forwards the
//! end-to-end QUIC datagrams of nodes that cannot reach each other
//! directly, and the frames nodes and relays exchange.
//!
//! A node connects to a relay over TLS (on TCP), proving its identity with
//! its TLS client certificate exactly as it does to peers, and pins the
//! relay's identity the same way. From then on the relay forwards
//! datagrams between the nodes connected to it by identity. It sees only
//! QUIC datagrams encrypted end to end between the two nodes, whose TLS
//! pins each other's identities: it cannot read them, change them without
//! the nodes noticing, or impersonate either node.
//!
//! [`RelayServer`] is the relay's whole decision logic: who may connect,
//! who is reachable, what is forwarded, what is dropped at which limit. The
//! relay binary only moves bytes between its sockets and this state
//! machine, like the node's adapters.

mod client;
mod endpoint;
mod frame;
mod probe;
mod server;
mod tls;

pub use client::{RelayClient, RelayClientEvent, RelayError};
pub use endpoint::{ConnId, MAX_RELAY_HANDSHAKES, RELAY_HANDSHAKE_TIMEOUT, RelayEndpoint};
pub use frame::{CloseReason, MAX_RELAY_FRAME, MAX_RELAYED_DATAGRAM, RelayFrame};
pub use probe::{PROBE_ANSWERS_PER_SOURCE, ProbeResponder};
pub use server::{Access, ClientId, RelayConfig, RelayServer, RelayStats};
pub use tls::RELAY_ALPN;
