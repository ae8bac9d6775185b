//! Going direct (docs/PROTOCOL.md §10.6, §10.7): a node learns where its
//! NAT maps its QUIC socket by asking its relays (STUN Binding) and tells
//! the peers it reaches through a relay where it may be reached directly
//! (`Candidates`). What it does with theirs (ping them, and move the
//! relayed connection onto the first that answers) is `route`'s (§10.9).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::{RngCore, SeedableRng};

use super::hello::{ControlMessage, MAX_CANDIDATES};
use super::{ConnectionId, Event, Node, conn::flush_control};
#[cfg(feature = "deterministic")]
use crate::RemoteIdentity;
use crate::stun;

/// How often a node asks each relay it is connected to where its UDP
/// socket is seen (which also keeps the NAT's mapping alive).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(25);
/// The wait before asking again when a probe got no answer; it doubles up
/// to [`PROBE_INTERVAL`].
pub const PROBE_RETRY: Duration = Duration::from_secs(1);
/// The window over which a relayed peer's candidates are pinged at most
/// [`MAX_PUNCHES`] times.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(10);
/// The most addresses a node pings for one relayed connection within
/// [`PUNCH_WINDOW`]: a peer cannot make the node send to more addresses
/// than that, however often it sends `Candidates`.
pub const MAX_PUNCHES: usize = 16;

/// The node's own candidate addresses and its address probes.
#[derive(Debug)]
pub(super) struct Traversal {
    rng: rand_chacha::ChaCha20Rng,
    /// Addresses of the node's socket on its interfaces (the driver's
    /// word).
    local: Vec<SocketAddr>,
    /// Probes waiting for `poll_transmit`: destination and bytes.
    pub(super) probes: std::collections::VecDeque<(SocketAddr, [u8; stun::HEADER_LEN])>,
    /// The candidates last told to relayed peers.
    announced: Vec<SocketAddr>,
}

impl Traversal {
    pub(super) fn new(seed: [u8; 32]) -> Self {
        Self {
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            local: Vec::new(),
            probes: std::collections::VecDeque::new(),
            announced: Vec::new(),
        }
    }

    /// A fresh, unpredictable transaction id: an off-path attacker cannot
    /// answer a probe it did not see.
    pub(super) fn transaction_id(&mut self) -> stun::TransactionId {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        stun::TransactionId(id)
    }
}

/// Whether an address can be dialed at all: not unspecified, not port 0,
/// not multicast, not IPv6 link-local (meaningless without the interface),
/// not a relayed path.
pub(super) fn dialable(addr: &SocketAddr) -> bool {
    let link_local_v6 = matches!(addr.ip(), IpAddr::V6(ip) if ip.segments()[0] & 0xffc0 == 0xfe80);
    !addr.ip().is_unspecified()
        && !addr.ip().is_multicast()
        && !link_local_v6
        && addr.port() != 0
        && !Node::is_relayed(addr)
}

impl Node {
    /// Tell the node the addresses its UDP socket has on the host's
    /// interfaces (at most [`MAX_CANDIDATES`] count; unspecified
    /// addresses and port 0 are ignored). They are candidates for direct
    /// connections: peers on the same network reach the node there. Call
    /// it again when they change (a network change): the node then also
    /// forgets where its relays saw it and asks them again at once.
    pub fn set_local_addrs(&mut self, now: Instant, addrs: &[SocketAddr]) {
        self.advance(now);
        let mut local = Vec::new();
        for addr in addrs.iter().filter(|a| dialable(a)) {
            if !local.contains(addr) && local.len() < MAX_CANDIDATES {
                local.push(*addr);
            }
        }
        // The same addresses in another order (an interface scan may list
        // them so) are no network change: routes stay.
        local.sort_unstable();
        if local != self.traversal.local {
            // A network change: where relays saw the node may be stale
            // too, so ask them again now.
            self.relays.probe_again(now);
            self.traversal.local = local;
            // Direct routes may be gone with the old addresses.
            self.lose_routes(now);
        }
        self.relay_timers(now);
        self.announce_candidates();
    }

    /// Where the node may be reached directly, as it tells the peers it
    /// reaches through a relay: its local addresses, then where its relays
    /// see its UDP socket; at most [`MAX_CANDIDATES`].
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let mut out = self.traversal.local.clone();
        for addr in self.relays.observed_udp() {
            if !out.contains(&addr) && out.len() < MAX_CANDIDATES {
                out.push(addr);
            }
        }
        out
    }

    /// A STUN message arrived on the node's socket: the answer to a probe,
    /// or something to drop.
    pub(super) fn handle_stun(&mut self, remote: SocketAddr, data: &[u8]) {
        let Ok((id, addr)) = stun::parse_binding_response(data) else {
            self.stats.stun_ignored += 1;
            return;
        };
        let Some(relay) = self.relays.answered(remote, id) else {
            self.stats.stun_ignored += 1;
            return;
        };
        self.stats.probes_answered += 1;
        let now = self.now;
        if let Some(changed) = self.relays.observed(relay, addr, now) {
            self.events.push_back(Event::AddressDiscovered {
                relay,
                addr: changed,
            });
            self.announce_candidates();
        }
    }

    /// Queue a probe to `dest` (a relay), returning its transaction id.
    pub(super) fn send_probe(&mut self, dest: SocketAddr) -> stun::TransactionId {
        let id = self.traversal.transaction_id();
        self.traversal
            .probes
            .push_back((dest, stun::binding_request(id)));
        self.stats.probes_sent += 1;
        id
    }

    /// Tell every relayed peer the node's candidates, if they changed
    /// since it last did.
    pub(super) fn announce_candidates(&mut self) {
        let candidates = self.candidates();
        if candidates == self.traversal.announced {
            return;
        }
        self.traversal.announced = candidates;
        for id in self.conns_in_use(true) {
            self.send_candidates(id);
        }
    }

    /// The established connections not given up for another (only the
    /// relayed ones if `relayed`): where news about this node goes.
    pub(super) fn conns_in_use(&self, relayed: bool) -> Vec<ConnectionId> {
        self.conns
            .values()
            .filter(|c| c.phase.is_established() && !c.superseded)
            .filter(|c| !relayed || Self::is_relayed(&c.addr))
            .map(|c| c.id)
            .collect()
    }

    /// Send the node's candidates on connection `id` (a relayed one that
    /// was just established, or when they changed).
    pub(super) fn send_candidates(&mut self, id: ConnectionId) {
        if !self.config.hole_punching {
            return;
        }
        let message = ControlMessage::Candidates(self.candidates());
        self.send_control(id, &message);
    }

    /// Queue `message` on connection `id`'s control stream and write what
    /// flow control allows.
    pub(super) fn send_control(&mut self, id: ConnectionId, message: &ControlMessage) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        conn.control_out.push_back(message.to_frame());
        flush_control(conn);
        self.active.insert(id);
    }

    /// Test hook (a hostile peer): send `addrs` as `Candidates` on the
    /// connection in use to `peer`, whatever its path.
    #[cfg(feature = "deterministic")]
    pub fn inject_candidates(&mut self, peer: RemoteIdentity, addrs: Vec<SocketAddr>) {
        if let Some(id) = self.primary(&peer) {
            self.send_control(id, &ControlMessage::Candidates(addrs));
        }
    }
}
