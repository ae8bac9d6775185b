//! Direct routes for relayed connections (docs/PROTOCOL.md §10.9).
//!
//! A connection made through a relay keeps its relayed path's address for
//! its whole life: QUIC never sees the path change. Underneath, the node
//! looks for a direct route to the peer: it pings the peer's candidates
//! (and any address the peer pinged it from) with [`DirectPacket`]s
//! carrying the connection's path token, and the first address that
//! answers becomes the connection's route: QUIC's datagrams for the
//! relayed address go there over UDP, and datagrams from there are handed
//! to QUIC as if they came from the relayed address. The route is pinged
//! every [`PATH_PING_INTERVAL`]; when it has not answered for
//! [`PATH_TIMEOUT`], or the node's own addresses change, datagrams go
//! through the relay again at once (QUIC retransmits what was lost, on
//! the same connection: no stream notices) and the node pings the peer's
//! candidates again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ConnectionId, Event, Node, PathKind};
use crate::direct::{DirectPacket, PacketKind, TOKEN_LABEL};

/// How often a connection's direct route is pinged while it is used.
pub const PATH_PING_INTERVAL: Duration = Duration::from_secs(3);
/// How long a direct route may go without answering a ping before the
/// connection goes back to its relay.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(7);
/// The most pongs a node sends for one connection within
/// [`PUNCH_WINDOW`](super::PUNCH_WINDOW): a peer cannot make it send more
/// to addresses nobody verified.
pub const MAX_PONGS: usize = 64;
/// The most addresses per connection whose datagrams reach it (the peer
/// pinged from them, or answered there); the oldest is forgotten first.
pub const MAX_HEARD_ADDRS: usize = 16;
/// The most pings awaiting an answer per connection; the oldest is
/// forgotten first.
pub const MAX_PENDING_PINGS: usize = 32;

/// A relayed connection's search for, and use of, a direct route.
#[derive(Debug)]
pub(super) struct Route {
    /// The token this node puts in its packets.
    send_token: [u8; 16],
    /// The token the peer puts in its packets.
    recv_token: [u8; 16],
    /// The direct address in use and when it last answered.
    direct: Option<(SocketAddr, Instant)>,
    /// When to ping the direct address next.
    next_ping: Option<Instant>,
    /// Pings awaiting their pong: where, their id, when sent.
    pending: Vec<(SocketAddr, [u8; 12], Instant)>,
    /// The peer's latest candidates.
    candidates: Vec<SocketAddr>,
    /// Addresses the peer's pings came from (their datagrams reach this
    /// connection).
    heard: Vec<SocketAddr>,
    /// When the pongs within the window were sent.
    pongs: Vec<Instant>,
}

impl Route {
    /// The direct address datagrams go to, if there is one.
    pub(super) fn direct(&self) -> Option<SocketAddr> {
        self.direct.map(|(addr, _)| addr)
    }

    /// When the route's timers next need the node.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let expiry = self.direct.map(|(_, at)| at + PATH_TIMEOUT);
        let pending = self
            .pending
            .iter()
            .map(|(_, _, at)| *at + PATH_TIMEOUT)
            .min();
        [self.next_ping, expiry, pending]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Node {
    /// A relayed connection was established: derive its path tokens from
    /// its TLS secrets so both ends can recognise each other's packets.
    pub(super) fn start_route(&mut self, id: ConnectionId) {
        if !self.config.hole_punching {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut secret = [0; 32];
        if conn
            .quic
            .crypto_session()
            .export_keying_material(&mut secret, TOKEN_LABEL, b"")
            .is_err()
        {
            return;
        }
        let (mut dialer, mut accepter) = ([0; 16], [0; 16]);
        dialer.copy_from_slice(&secret[..16]);
        accepter.copy_from_slice(&secret[16..]);
        let (send_token, recv_token) = match conn.direction {
            super::Direction::Outbound => (dialer, accepter),
            super::Direction::Inbound => (accepter, dialer),
        };
        conn.route = Some(Box::new(Route {
            send_token,
            recv_token,
            direct: None,
            next_ping: None,
            pending: Vec::new(),
            candidates: Vec::new(),
            heard: Vec::new(),
            pongs: Vec::new(),
        }));
        self.path_tokens.insert(recv_token, id);
    }

    /// Forget connection `id`'s route (it ended, or another connection
    /// took over): its datagrams go through the relay, and addresses that
    /// reached it no longer do.
    pub(super) fn end_route(&mut self, id: ConnectionId) {
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.take()) else {
            return;
        };
        if self.path_tokens.get(&route.recv_token) == Some(&id) {
            self.path_tokens.remove(&route.recv_token);
        }
        for addr in &route.heard {
            if self.heard.get(addr) == Some(&id) {
                self.heard.remove(addr);
            }
        }
    }

    /// Datagrams from `addr` (a peer's ping came from there, or its pong
    /// answered) belong to connection `id` from now on; the oldest of more
    /// than `MAX_HEARD_ADDRS` such addresses is forgotten.
    fn hear(&mut self, id: ConnectionId, addr: SocketAddr) {
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.as_mut()) else {
            return;
        };
        if !route.heard.contains(&addr) {
            // The oldest goes, never the route in use.
            let direct = route.direct();
            if route.heard.len() >= MAX_HEARD_ADDRS
                && let Some(i) = route.heard.iter().position(|a| Some(*a) != direct)
            {
                let old = route.heard.remove(i);
                if self.heard.get(&old) == Some(&id) {
                    self.heard.remove(&old);
                }
            }
            route.heard.push(addr);
        }
        self.heard.insert(addr, id);
    }

    /// The relayed connection a datagram from `remote` belongs to, by
    /// the address QUIC knows it by: only short-header packets (new
    /// connections from there stay direct ones), and only while no
    /// connection of the node's own is at that address.
    pub(super) fn routed_source(&self, remote: SocketAddr, data: &[u8]) -> Option<SocketAddr> {
        if data.first().is_none_or(|b| b & 0x80 != 0) {
            return None;
        }
        let id = self.heard.get(&remote)?;
        if self.direct_addrs.contains_key(&remote) {
            return None;
        }
        self.conns.get(id).map(|c| c.addr)
    }

    /// A relayed peer's candidates arrived on connection `id`: remember
    /// them and ping the new ones, within the peer's budget. Only relayed
    /// connections have a route (and only with hole punching on): on any
    /// other, candidates are ignored.
    pub(super) fn handle_candidates(
        &mut self,
        now: Instant,
        id: ConnectionId,
        addrs: Vec<SocketAddr>,
    ) {
        let own = self.candidates();
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.as_mut()) else {
            return;
        };
        route.candidates = addrs
            .into_iter()
            .filter(|a| super::punch::dialable(a) && !own.contains(a))
            .take(super::MAX_CANDIDATES)
            .collect();
        self.ping_candidates(now, id);
    }

    /// Ping connection `id`'s peer at each of its candidates not pinged
    /// within the punch window, as the budget allows; while there is no
    /// direct route, again every [`PUNCH_WINDOW`](super::PUNCH_WINDOW).
    fn ping_candidates(&mut self, now: Instant, id: ConnectionId) {
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.as_mut()) else {
            return;
        };
        if route.direct.is_none() && !route.candidates.is_empty() {
            route.next_ping = Some(now + super::PUNCH_WINDOW);
        }
        let candidates = route.candidates.clone();
        for addr in candidates {
            if self.within_budget(now, id, addr) {
                self.ping(now, id, addr);
            }
        }
    }

    /// Whether connection `id` may ping `addr` now (counting it if so):
    /// each address once per window, at most [`MAX_PUNCHES`] per window.
    ///
    /// [`MAX_PUNCHES`]: super::MAX_PUNCHES
    fn within_budget(&mut self, now: Instant, id: ConnectionId, addr: SocketAddr) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        conn.punched
            .retain(|(_, at)| now.saturating_duration_since(*at) < super::PUNCH_WINDOW);
        if conn.punched.iter().any(|(a, _)| *a == addr) {
            return false;
        }
        if conn.punched.len() >= super::MAX_PUNCHES {
            self.stats.punches_limited += 1;
            return false;
        }
        conn.punched.push((addr, now));
        self.stats.punch_attempts += 1;
        true
    }

    /// Send a ping to `addr` for connection `id`.
    fn ping(&mut self, now: Instant, id: ConnectionId, addr: SocketAddr) {
        let txid = self.traversal.transaction_id().0;
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.as_mut()) else {
            return;
        };
        if route.pending.len() >= MAX_PENDING_PINGS {
            route.pending.remove(0);
        }
        route.pending.push((addr, txid, now));
        let packet = DirectPacket {
            kind: PacketKind::Ping,
            token: route.send_token,
            txid,
        };
        self.queue_direct(addr, packet);
        self.stats.path_pings_sent += 1;
        // Its timeout is a deadline of the connection.
        self.active.insert(id);
    }

    /// Queue a packet for `poll_transmit`. The queue needs no limit of its
    /// own: an input queues at most a pong and a ping, and the pings a
    /// timer sends are bounded by the punch budget and one per route.
    fn queue_direct(&mut self, addr: SocketAddr, packet: DirectPacket) {
        self.direct_out.push_back((addr, packet.to_bytes()));
    }

    /// A direct-path packet arrived from `remote`.
    pub(super) fn handle_direct(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) {
        let Ok(packet) = DirectPacket::parse(data) else {
            self.stats.path_packets_ignored += 1;
            return;
        };
        let Some(&id) = self.path_tokens.get(&packet.token) else {
            self.stats.path_packets_ignored += 1;
            return;
        };
        match packet.kind {
            PacketKind::Ping => self.on_ping(now, id, remote, packet.txid),
            PacketKind::Pong => self.on_pong(now, id, remote, packet.txid),
        }
    }

    fn on_ping(&mut self, now: Instant, id: ConnectionId, remote: SocketAddr, txid: [u8; 12]) {
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.as_mut()) else {
            return;
        };
        route
            .pongs
            .retain(|at| now.saturating_duration_since(*at) < super::PUNCH_WINDOW);
        if route.pongs.len() >= MAX_PONGS {
            self.stats.path_packets_ignored += 1;
            return;
        }
        route.pongs.push(now);
        let pong = DirectPacket {
            kind: PacketKind::Pong,
            token: route.send_token,
            txid,
        };
        let direct = route.direct() == Some(remote);
        self.queue_direct(remote, pong);
        self.stats.path_pongs_sent += 1;
        // The peer's datagrams may come from there now.
        self.hear(id, remote);
        // The peer reached this node from there: ping back that way (the
        // address its NAT maps it to for this node may be none of its
        // candidates, and this node's earlier ping there may have arrived
        // before the peer's NAT let anything in). Bounded by the pong
        // budget above.
        if !direct && super::punch::dialable(&remote) {
            self.ping(now, id, remote);
        }
    }

    fn on_pong(&mut self, now: Instant, id: ConnectionId, remote: SocketAddr, txid: [u8; 12]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = conn.remote;
        let Some(route) = conn.route.as_mut() else {
            return;
        };
        let Some(i) = route
            .pending
            .iter()
            .position(|(addr, id, _)| *addr == remote && *id == txid)
        else {
            self.stats.path_packets_ignored += 1;
            return;
        };
        route.pending.remove(i);
        self.stats.path_pongs_received += 1;
        match route.direct {
            Some((addr, ref mut at)) if addr == remote => *at = now,
            // The route in use stays while it answers.
            Some(_) => {}
            None => {
                route.direct = Some((remote, now));
                route.next_ping = Some(now + PATH_PING_INTERVAL);
                self.hear(id, remote);
                self.active.insert(id);
                tracing::debug!(%remote, "direct route");
                self.route_changed(peer, PathKind::Direct(remote));
            }
        }
    }

    /// Connection `id`'s route timers: ping the direct address when due,
    /// give it up when it stopped answering, forget unanswered pings.
    pub(super) fn route_timers(&mut self, now: Instant, id: ConnectionId) {
        let Some(route) = self.conns.get_mut(&id).and_then(|c| c.route.as_mut()) else {
            return;
        };
        route
            .pending
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < PATH_TIMEOUT);
        let Some((addr, answered)) = route.direct else {
            // No direct route yet: try the candidates again when due.
            if route.next_ping.is_some_and(|at| at <= now) {
                route.next_ping = None;
                self.ping_candidates(now, id);
            }
            return;
        };
        if now.saturating_duration_since(answered) >= PATH_TIMEOUT {
            self.lose_route(now, id, false);
        } else if route.next_ping.is_some_and(|at| at <= now) {
            route.next_ping = Some(now + PATH_PING_INTERVAL);
            self.ping(now, id, addr);
        }
    }

    /// Connection `id`'s direct route stopped working (or may have: the
    /// node's addresses changed, `moved`): back to the relay at once, and
    /// look for a direct route again (after a move, with a fresh budget:
    /// the node's own decision, not a peer's).
    pub(super) fn lose_route(&mut self, now: Instant, id: ConnectionId, moved: bool) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (peer, addr) = (conn.remote, conn.addr);
        let Some(route) = conn.route.as_mut() else {
            return;
        };
        let Some((old, _)) = route.direct.take() else {
            return;
        };
        route.next_ping = None;
        route.pending.clear();
        // The addresses the peer reached it from still lead to it: the
        // peer may go on sending there until its own route times out.
        if moved {
            conn.punched.clear();
        } else {
            // The node's NAT may have moved it (a rebinding): ask the
            // relays now rather than at the next probe, so the peer hears
            // of a new address at once.
            self.relays.probe_soon(now);
        }
        self.stats.routes_lost += 1;
        self.active.insert(id);
        tracing::debug!(%old, "direct route lost; back to the relay");
        self.route_changed(peer, self.path_kind(addr));
        self.ping_candidates(now, id);
    }

    /// Test hook: how many addresses lead to relayed connections.
    #[cfg(feature = "deterministic")]
    pub fn routed_addr_count(&self) -> usize {
        self.heard.len()
    }

    /// Test hook: how many addresses the node has connections at (what
    /// keeps a route from taking datagrams from there).
    #[cfg(feature = "deterministic")]
    pub fn own_addr_count(&self) -> usize {
        self.direct_addrs.len()
    }

    /// Test hook: connection in use to `peer`'s path tokens (this node's,
    /// the peer's) and its pings awaiting an answer, as an on-path
    /// attacker who saw them would know them.
    #[cfg(feature = "deterministic")]
    #[allow(clippy::type_complexity)]
    pub fn path_secrets(
        &self,
        peer: &crate::RemoteIdentity,
    ) -> Option<([u8; 16], [u8; 16], Vec<(SocketAddr, [u8; 12])>)> {
        let id = self.primary(peer)?;
        let route = self.conns.get(&id)?.route.as_ref()?;
        let pending = route.pending.iter().map(|(a, t, _)| (*a, *t)).collect();
        Some((route.send_token, route.recv_token, pending))
    }

    /// Tell the application that `peer` is reached on `path` now. (A
    /// connection given up for another has no route, so this is always
    /// the connection in use.)
    fn route_changed(&mut self, peer: Option<crate::RemoteIdentity>, path: PathKind) {
        if let Some(peer) = peer {
            self.events.push_back(Event::PathChanged { peer, path });
        }
    }

    /// The node's own addresses changed: every direct route may be gone.
    pub(super) fn lose_routes(&mut self, now: Instant) {
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| c.route.as_ref().is_some_and(|r| r.direct.is_some()))
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.lose_route(now, id, true);
        }
    }
}
