//! A node's address by identity (docs/PROTOCOL.md §10.8): who it is, the
//! relays it can be reached through, and where it may be reached directly;
//! short enough for a link or a QR code.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Instant;

use super::hello::ControlMessage;
use super::{ConnectionId, Node, RelayAddr};
use crate::RemoteIdentity;
use crate::relay::RelayError;

/// The most relays a [`NodeAddr`] names.
pub const MAX_NODE_ADDR_RELAYS: usize = 4;
/// The most direct addresses a [`NodeAddr`] names.
pub const MAX_NODE_ADDR_ADDRS: usize = 8;

/// Everything needed to reach a node: its identity, which the dialer pins,
/// the relays it can be reached through, and addresses it may be reached
/// at directly. [`Node::node_addr`] gives a node's own.
///
/// Its text form is the identity, then `?`, then `relay=IDENTITY@IP:PORT`
/// and `addr=IP:PORT` items joined by `&` (at most
/// [`MAX_NODE_ADDR_RELAYS`] relays and [`MAX_NODE_ADDR_ADDRS`]
/// addresses); the identity alone when there are none:
///
/// ```
/// use pos_p2p_protocol::Identity;
/// use pos_p2p_protocol::node::NodeAddr;
///
/// let node = Identity::from_bytes(&[1; 32]).to_remote_identity();
/// let relay = Identity::from_bytes(&[2; 32]).to_remote_identity();
/// let text = format!("{node}?relay={relay}@203.0.113.5:3340&addr=192.168.1.20:4433");
/// let addr: NodeAddr = text.parse().unwrap();
/// assert_eq!(addr.identity, node);
/// assert_eq!(addr.relays[0].addr.port(), 3340);
/// assert_eq!(addr.addrs, ["192.168.1.20:4433".parse().unwrap()]);
/// assert_eq!(addr.to_string(), text);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Who the node is.
    pub identity: RemoteIdentity,
    /// Relays it can be reached through.
    pub relays: Vec<RelayAddr>,
    /// Addresses it may be reached at directly.
    pub addrs: Vec<SocketAddr>,
}

/// A string that is not a node address (see [`NodeAddr`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a node address (IDENTITY?relay=IDENTITY@IP:PORT&addr=IP:PORT): {0:?}")]
pub struct NodeAddrError(String);

impl FromStr for NodeAddr {
    type Err = NodeAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NodeAddrError(s.to_owned());
        let (identity, rest) = s.split_once('?').unwrap_or((s, ""));
        let mut addr = NodeAddr {
            identity: identity.parse().map_err(|_| bad())?,
            relays: Vec::new(),
            addrs: Vec::new(),
        };
        for item in rest.split('&').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some(("relay", relay)) if addr.relays.len() < MAX_NODE_ADDR_RELAYS => {
                    addr.relays.push(relay.parse().map_err(|_| bad())?);
                }
                Some(("addr", direct)) if addr.addrs.len() < MAX_NODE_ADDR_ADDRS => {
                    addr.addrs.push(direct.parse().map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(addr)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.identity)?;
        let relays = self.relays.iter().take(MAX_NODE_ADDR_RELAYS);
        let addrs = self.addrs.iter().take(MAX_NODE_ADDR_ADDRS);
        let items = relays
            .map(|r| format!("relay={r}"))
            .chain(addrs.map(|a| format!("addr={a}")));
        for (i, item) in items.enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            f.write_str(&item)?;
        }
        Ok(())
    }
}

impl Node {
    /// This node's address: its identity, the relays it uses, and its
    /// candidates for direct connections ([`Node::candidates`]). Share it
    /// (as text) with a device that should reach this one.
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr {
            identity: self.local,
            relays: self.relays.addrs(MAX_NODE_ADDR_RELAYS),
            addrs: self
                .candidates()
                .into_iter()
                .take(MAX_NODE_ADDR_ADDRS)
                .collect(),
        }
    }

    /// Where to dial the node at `addr`: its relays (which this node starts
    /// using) as relayed paths, then its direct addresses; each is
    /// remembered for it in the address book, pinned. Fails if a relay
    /// cannot be used (this node's limit of relays, or of relayed paths).
    pub(super) fn node_addr_paths(
        &mut self,
        now: Instant,
        addr: &NodeAddr,
    ) -> Result<Vec<SocketAddr>, RelayError> {
        let mut paths = Vec::new();
        for relay in addr.relays.iter().take(MAX_NODE_ADDR_RELAYS) {
            paths.push(self.add_relayed_peer(now, addr.identity, relay.clone())?);
        }
        for direct in addr.addrs.iter().take(MAX_NODE_ADDR_ADDRS) {
            self.book.pin(addr.identity, *direct);
            paths.push(*direct);
        }
        Ok(paths)
    }
}

impl Node {
    /// Tell the peer of connection `id` the relays this node uses (on
    /// every connection once established, and again when a relay is
    /// added), so a peer that later finds this node gone from its direct
    /// addresses can look for it there.
    pub(super) fn send_relays(&mut self, id: ConnectionId) {
        let relays = self.relays.addrs(MAX_NODE_ADDR_RELAYS);
        if relays.is_empty() {
            return;
        }
        self.send_control(id, &ControlMessage::Relays(relays));
    }

    /// Tell every established connection's peer the relays.
    pub(super) fn announce_relays(&mut self) {
        for id in self.conns_in_use(false) {
            self.send_relays(id);
        }
    }

    /// The peer of connection `id` can be reached through `relays`: those
    /// this node uses too become a way to reach it, remembered in the
    /// address book. (Relays this node does not use are not connected to
    /// on a peer's word.)
    pub(super) fn handle_relays(&mut self, id: ConnectionId, relays: Vec<RelayAddr>) {
        let Some(peer) = self.conns.get(&id).and_then(|c| c.remote) else {
            return;
        };
        for relay in relays {
            let ours = self.relays.id_of(&relay);
            if let Some(path) = ours.and_then(|i| self.relay_path(i, peer)) {
                self.book.remember(peer, path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use proptest::prelude::*;

    fn identity(n: u8) -> RemoteIdentity {
        Identity::from_bytes(&[n; 32]).to_remote_identity()
    }

    #[test]
    fn the_identity_alone_is_an_address() {
        let text = identity(1).to_string();
        let addr: NodeAddr = text.parse().unwrap();
        assert!(addr.relays.is_empty() && addr.addrs.is_empty());
        assert_eq!(addr.to_string(), text);
        assert_eq!(format!("{text}?").parse::<NodeAddr>(), Ok(addr));
    }

    #[test]
    fn bad_addresses_are_typed_errors() {
        let id = identity(1);
        for bad in [
            String::new(),
            "not-an-identity".to_owned(),
            format!("{id}?relay=nonsense"),
            format!("{id}?addr=192.0.2.1"),
            format!("{id}?port=1"),
            format!("{id}?addr"),
            format!(
                "{id}?{}",
                vec![format!("relay={id}@192.0.2.1:1"); 5].join("&")
            ),
            format!(
                "{id}?addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1&addr=192.0.2.1:1"
            ),
        ] {
            assert_eq!(
                bad.parse::<NodeAddr>(),
                Err(NodeAddrError(bad.clone())),
                "{bad}"
            );
        }
    }

    #[test]
    fn four_relays_and_eight_addresses_are_the_most() {
        let id = identity(1);
        let most = format!(
            "{id}?{}&{}",
            vec![format!("relay={id}@192.0.2.1:1"); MAX_NODE_ADDR_RELAYS].join("&"),
            ["addr=192.0.2.1:1"; MAX_NODE_ADDR_ADDRS].join("&"),
        );
        let addr: NodeAddr = most.parse().unwrap();
        assert_eq!(addr.relays.len(), 4);
        assert_eq!(addr.addrs.len(), 8);
        assert_eq!(addr.to_string(), most);
    }

    proptest! {
        #[test]
        fn text_round_trips(
            relays in proptest::collection::vec((any::<u8>(), any::<SocketAddr>()), 0..=MAX_NODE_ADDR_RELAYS),
            addrs in proptest::collection::vec(any::<SocketAddr>(), 0..=MAX_NODE_ADDR_ADDRS),
        ) {
            // Scope ids and flow labels have no text form here.
            let plain = |a: SocketAddr| SocketAddr::new(a.ip(), a.port());
            let addr = NodeAddr {
                identity: identity(9),
                relays: relays
                    .into_iter()
                    .map(|(n, a)| RelayAddr { identity: identity(n), addr: plain(a) })
                    .collect(),
                addrs: addrs.into_iter().map(plain).collect(),
            };
            prop_assert_eq!(addr.to_string().parse::<NodeAddr>(), Ok(addr));
        }

        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = text.parse::<NodeAddr>();
        }
    }
}
