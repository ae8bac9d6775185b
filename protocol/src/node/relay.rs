//! The node's relays (docs/PROTOCOL.md §10.5): connections to the relays
//! the application configured, and the relayed paths QUIC sends over.
//!
//! QUIC addresses every path by a socket address. A path through a relay
//! gets one too: an address in `100::/64` (the IPv6 discard-only prefix,
//! RFC 6666, never routed), made of the relay's index and the first 8
//! bytes of the peer's identity. The node hands QUIC the datagrams a relay
//! brought as if they came from that address, and sends QUIC's datagrams
//! to such an address through the relay instead of to the socket, so a
//! relayed connection is an ordinary QUIC connection with identity-pinned
//! TLS end to end.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Event, Node, TimeoutReason};
use crate::RemoteIdentity;
use crate::relay::{RelayClient, RelayClientEvent, RelayError};
use crate::stun;

/// The most relays a node uses.
pub const MAX_RELAYS: usize = 16;
/// How often a node pings each relay it is connected to.
pub const RELAY_PING_INTERVAL: Duration = Duration::from_secs(15);
/// How long a relay may take to answer a ping (or to finish connecting).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait before connecting to a relay again.
pub const RELAY_MAX_RETRY: Duration = Duration::from_secs(60);
/// The most relayed paths a node remembers (peers it dialed through a
/// relay, and peers that sent through one); unused ones are forgotten
/// first.
pub const MAX_RELAYED_PATHS: usize = 4_096;
/// The most bytes waiting to be written to one relay; datagrams beyond
/// are dropped, as a full link drops them.
pub const RELAY_QUEUE_BYTES: usize = 1 << 20;
/// How many datagrams wait for a relay that is still connecting (the
/// first flight of a dial made before the relay connection was up); more
/// are dropped, and QUIC retransmits them.
pub const MAX_WAITING_DATAGRAMS: usize = 16;
/// The first segment of a relayed path's address: `100::/64`.
const PATH_PREFIX: u16 = 0x0100;

/// A relay: its identity, which the node pins, and where it listens.
///
/// Its text form is `IDENTITY@ADDRESS`:
///
/// ```
/// use pos_p2p_protocol::node::RelayAddr;
///
/// let text = "p2pb3wsrhnu4lxpfyfjc4txpj7kmj4qfh7r4jgmf3rvyecvgnbhqrea@192.0.2.7:3340";
/// # let text = format!("{}@192.0.2.7:3340", pos_p2p_protocol::Identity::from_bytes(&[7; 32]).to_remote_identity());
/// let relay: RelayAddr = text.parse().unwrap();
/// assert_eq!(relay.addr.port(), 3340);
/// assert_eq!(relay.to_string(), text);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr {
    /// The relay's identity.
    pub identity: RemoteIdentity,
    /// Where it accepts TCP connections.
    pub addr: SocketAddr,
}

/// A string that is not `IDENTITY@IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a relay address (IDENTITY@IP:PORT): {0:?}")]
pub struct RelayAddrError(String);

impl FromStr for RelayAddr {
    type Err = RelayAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RelayAddrError(s.to_owned());
        let (identity, addr) = s.split_once('@').ok_or_else(bad)?;
        Ok(Self {
            identity: identity.parse().map_err(|_| bad())?,
            addr: addr.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.identity, self.addr)
    }
}

/// A relay the node uses (its index among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(u16);

/// One TCP connection to a relay, as the driver names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayConnId(u64);

/// What the driver must do for the node's relays.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayAction {
    /// Open a TCP connection to `addr`; report it with
    /// [`Node::relay_opened`], what it reads with
    /// [`Node::handle_relay_bytes`], and its end with
    /// [`Node::relay_closed`].
    Connect {
        /// The connection.
        conn: RelayConnId,
        /// Where.
        addr: SocketAddr,
    },
    /// Close this connection (after writing what
    /// [`Node::poll_relay_write`] still gives); report nothing more about
    /// it.
    Close {
        /// The connection.
        conn: RelayConnId,
    },
}

/// How a relay connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayStatus {
    /// Connecting (TCP, TLS, or waiting for the relay to accept the node).
    Connecting,
    /// Connected: the relay accepted the node (the moment of
    /// [`Event::RelayConnected`](super::Event::RelayConnected)); peers can
    /// reach this node through it.
    Connected {
        /// Where the relay sees this node come from.
        observed: Option<SocketAddr>,
    },
    /// Not connected; the next attempt is due at `retry_at`.
    Waiting {
        /// When the node connects again.
        retry_at: Instant,
        /// Why the last connection failed or ended.
        error: Option<RelayError>,
    },
}

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathKind {
    /// Directly, at this address.
    Direct(SocketAddr),
    /// Through this relay.
    Relayed(RelayId),
}

#[derive(Debug)]
enum SlotState {
    Waiting {
        retry_at: Instant,
        error: Option<RelayError>,
    },
    /// The driver opens the TCP connection.
    Opening {
        conn: RelayConnId,
        deadline: Instant,
    },
    Open {
        conn: RelayConnId,
        client: Box<RelayClient>,
        since: Instant,
        /// Until when TLS may take, or a ping may go unanswered.
        deadline: Option<Instant>,
        next_ping: Instant,
        ping: u64,
    },
}

#[derive(Debug)]
struct Slot {
    addr: RelayAddr,
    state: SlotState,
    failures: u32,
    observed: Option<SocketAddr>,
    /// Datagrams sent while the connection was still being made.
    waiting: VecDeque<(RemoteIdentity, Bytes)>,
    /// Where the relay last saw the node's UDP socket (§10.6).
    udp: Option<SocketAddr>,
    /// The latest address probe's transaction id, until answered.
    probe: Option<stun::TransactionId>,
    /// When to probe next (while connected).
    next_probe: Option<Instant>,
    /// Probes in a row without an answer.
    probe_misses: u32,
}

impl Slot {
    /// The relay connection ended: its view of the node's UDP socket is
    /// no longer kept up to date.
    fn forget_udp(&mut self) {
        self.udp = None;
        self.probe = None;
        self.next_probe = None;
        self.probe_misses = 0;
    }
}

/// A relayed path QUIC knows by its address.
#[derive(Debug, Clone, Copy)]
struct PathEntry {
    peer: RemoteIdentity,
    /// Asked for by the application ([`Node::relay_path`]): kept.
    pinned: bool,
}

/// The node's relays and relayed paths.
#[derive(Debug, Default)]
pub(super) struct Relays {
    config: Option<Arc<rustls::ClientConfig>>,
    slots: Vec<Slot>,
    actions: VecDeque<RelayAction>,
    /// Relay connections with bytes to write.
    ready: BTreeSet<RelayId>,
    paths: HashMap<SocketAddr, PathEntry>,
    next_conn: u64,
}

/// The address of the path to `peer` through relay `relay`.
fn path_addr(relay: RelayId, peer: &RemoteIdentity) -> SocketAddr {
    let b = peer.as_bytes();
    let seg = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let ip = Ipv6Addr::new(PATH_PREFIX, 0, 0, 0, relay.0, seg(0), seg(2), seg(4));
    SocketAddr::V6(SocketAddrV6::new(ip, seg(6), 0, 0))
}

/// The relay a relayed path's address goes through, if it is one.
fn path_relay(addr: &SocketAddr) -> Option<RelayId> {
    let SocketAddr::V6(v6) = addr else {
        return None;
    };
    let s = v6.ip().segments();
    (s[0] == PATH_PREFIX && s[1..4] == [0, 0, 0]).then_some(RelayId(s[4]))
}

impl Relays {
    fn slot_of(&self, conn: RelayConnId) -> Option<usize> {
        self.slots.iter().position(|s| match &s.state {
            SlotState::Opening { conn: c, .. } | SlotState::Open { conn: c, .. } => *c == conn,
            SlotState::Waiting { .. } => false,
        })
    }

    /// The peer at the end of a relayed path.
    pub(super) fn path_peer(&self, addr: &SocketAddr) -> Option<RemoteIdentity> {
        self.paths.get(addr).map(|p| p.peer)
    }

    /// Remember the path to `peer` through `relay`; `None` if the table is
    /// full of paths in use.
    fn remember(
        &mut self,
        relay: RelayId,
        peer: RemoteIdentity,
        pinned: bool,
        in_use: impl Fn(&SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let addr = path_addr(relay, &peer);
        if let Some(entry) = self.paths.get_mut(&addr) {
            // The first 8 bytes of an identity name a path: another
            // identity with the same ones does not get it.
            if entry.peer != peer {
                return None;
            }
            entry.pinned |= pinned;
            return Some(addr);
        }
        if self.paths_full() {
            // Only when full: a sweep costs a look at every connection.
            self.paths.retain(|a, p| p.pinned || in_use(a));
        }
        if self.paths_full() {
            return None;
        }
        self.paths.insert(addr, PathEntry { peer, pinned });
        Some(addr)
    }

    fn paths_full(&self) -> bool {
        self.paths.len() >= MAX_RELAYED_PATHS
    }

    /// Where the relays see the node's UDP socket, without repeats.
    pub(super) fn observed_udp(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for addr in self.slots.iter().filter_map(|s| s.udp) {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// Forget where the relays saw the node and probe each connected one
    /// at `now`.
    pub(super) fn probe_again(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if slot.next_probe.is_some() {
                slot.forget_udp();
                slot.next_probe = Some(now);
            }
        }
    }

    /// Ask every connected relay where it sees the node now, keeping what
    /// they said until they answer (a direct route stopped answering: the
    /// node's NAT may have moved it).
    pub(super) fn probe_soon(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if let Some(at) = &mut slot.next_probe {
                *at = (*at).min(now);
            }
        }
    }

    /// The id of relay `relay`, if the node uses it.
    pub(super) fn id_of(&self, relay: &RelayAddr) -> Option<RelayId> {
        let i = self.slots.iter().position(|s| s.addr == *relay)?;
        Some(RelayId(i as u16))
    }

    /// The relays the node uses, the first `max` of them.
    pub(super) fn addrs(&self, max: usize) -> Vec<RelayAddr> {
        self.slots
            .iter()
            .take(max)
            .map(|s| s.addr.clone())
            .collect()
    }

    /// The relay a probe answer is for: it came from that relay's address
    /// and carries its latest probe's transaction id (which is then
    /// spent).
    pub(super) fn answered(
        &mut self,
        from: SocketAddr,
        id: stun::TransactionId,
    ) -> Option<RelayId> {
        let i = self
            .slots
            .iter()
            .position(|s| s.addr.addr == from && s.probe == Some(id))?;
        self.slots[i].probe = None;
        Some(RelayId(i as u16))
    }

    /// Relay `relay` sees the node's UDP socket at `addr`: the next probe
    /// is due after the full interval. Returns the address if it is news.
    pub(super) fn observed(
        &mut self,
        relay: RelayId,
        addr: SocketAddr,
        now: Instant,
    ) -> Option<SocketAddr> {
        let slot = self.slots.get_mut(usize::from(relay.0))?;
        slot.probe_misses = 0;
        if slot.next_probe.is_some() {
            slot.next_probe = Some(now + super::punch::PROBE_INTERVAL);
        }
        (slot.udp.replace(addr) != Some(addr)).then_some(addr)
    }
}

impl Node {
    /// Use the relay `relay`: the node connects to it (now, and again
    /// whenever the connection ends, backing off up to
    /// [`RELAY_MAX_RETRY`]) and stays reachable through it. Adding a relay
    /// already added returns its id.
    pub fn add_relay(&mut self, now: Instant, relay: RelayAddr) -> Result<RelayId, RelayError> {
        self.advance(now);
        if let Some(id) = self.relays.id_of(&relay) {
            return Ok(id);
        }
        if self.relays.slots.len() >= MAX_RELAYS {
            return Err(RelayError::LimitReached(
                "a node uses at most 16 relays (MAX_RELAYS)",
            ));
        }
        if self.relays.config.is_none() {
            let config = RelayClient::client_config(&self.config.identity)
                .map_err(|e| RelayError::Tls(e.to_string()))?;
            self.relays.config = Some(config);
        }
        let id = RelayId(self.relays.slots.len() as u16);
        self.relays.slots.push(Slot {
            addr: relay,
            state: SlotState::Waiting {
                retry_at: now,
                error: None,
            },
            failures: 0,
            observed: None,
            waiting: VecDeque::new(),
            udp: None,
            probe: None,
            next_probe: None,
            probe_misses: 0,
        });
        self.relay_timers(now);
        self.announce_relays();
        Ok(id)
    }

    /// Remember `peer` as reached through `relay` (which the node starts
    /// using, see [`Node::add_relay`]): its relayed path is pinned in the
    /// address book, so [`Node::dial_peer`] dials it there, and its
    /// connections are protected from eviction. Returns the path's address.
    pub fn add_relayed_peer(
        &mut self,
        now: Instant,
        peer: RemoteIdentity,
        relay: RelayAddr,
    ) -> Result<SocketAddr, RelayError> {
        let id = self.add_relay(now, relay)?;
        let path = self.relay_path(id, peer).ok_or(RelayError::LimitReached(
            "the table of relayed paths is full",
        ))?;
        self.book.pin(peer, path);
        self.protect(peer);
        Ok(path)
    }

    /// The relay `relay` is.
    pub fn relay_addr(&self, relay: RelayId) -> Option<&RelayAddr> {
        self.relays.slots.get(usize::from(relay.0)).map(|s| &s.addr)
    }

    /// The relays the node uses, and how each stands.
    pub fn relays(&self) -> impl Iterator<Item = (RelayId, &RelayAddr, RelayStatus)> {
        self.relays.slots.iter().enumerate().map(|(i, s)| {
            let status = match &s.state {
                SlotState::Waiting { retry_at, error } => RelayStatus::Waiting {
                    retry_at: *retry_at,
                    error: error.clone(),
                },
                SlotState::Opening { .. } => RelayStatus::Connecting,
                // TLS alone is not enough: the relay accepted the node when
                // its first frame (the observed address) came, as the
                // `RelayConnected` event says.
                SlotState::Open { .. } => match s.observed {
                    Some(observed) => RelayStatus::Connected {
                        observed: Some(observed),
                    },
                    None => RelayStatus::Connecting,
                },
            };
            (RelayId(i as u16), &s.addr, status)
        })
    }

    /// The address QUIC knows the path to `peer` through `relay` by: dial
    /// it (pinning `peer`) to reach the peer through the relay. `None` if
    /// the relay is unknown or the node's table of paths is full.
    pub fn relay_path(&mut self, relay: RelayId, peer: RemoteIdentity) -> Option<SocketAddr> {
        if usize::from(relay.0) >= self.relays.slots.len() {
            return None;
        }
        let conns = &self.conns;
        self.relays.remember(relay, peer, true, |a| {
            conns.values().any(|c| c.quic.remote_address() == *a)
        })
    }

    /// The peer a relayed path leads to, while the node remembers the path
    /// (see [`Node::relay_path`]).
    pub fn relayed_path(&self, addr: SocketAddr) -> Option<RemoteIdentity> {
        self.relays.path_peer(&addr)
    }

    /// How many relayed paths the node remembers (at most
    /// [`MAX_RELAYED_PATHS`]).
    pub fn relayed_path_count(&self) -> usize {
        self.relays.paths.len()
    }

    /// How connection `id` reaches its peer: directly (at its address, or
    /// at its direct route's, §10.9), or through one of the node's relays.
    pub(super) fn conn_path(&self, conn: &super::conn::Conn) -> PathKind {
        match conn.direct_route() {
            Some(direct) => PathKind::Direct(direct),
            None => self.path_kind(conn.quic.remote_address()),
        }
    }

    /// How an address is reached: directly, or through one of the node's
    /// relays.
    pub fn path_kind(&self, addr: SocketAddr) -> PathKind {
        match path_relay(&addr) {
            Some(relay) => PathKind::Relayed(relay),
            None => PathKind::Direct(addr),
        }
    }

    /// The next thing the driver must do for the relays.
    pub fn poll_relay_action(&mut self) -> Option<RelayAction> {
        self.relays.actions.pop_front()
    }

    /// The TCP connection `conn` to a relay is open: TLS starts.
    pub fn relay_opened(&mut self, now: Instant, conn: RelayConnId) {
        self.advance(now);
        let Some(i) = self.relays.slot_of(conn) else {
            return;
        };
        let Some(config) = self.relays.config.clone() else {
            return;
        };
        let slot = &mut self.relays.slots[i];
        if !matches!(slot.state, SlotState::Opening { .. }) {
            return;
        }
        match RelayClient::new(config, slot.addr.identity, RELAY_QUEUE_BYTES) {
            Ok(client) => {
                slot.state = SlotState::Open {
                    conn,
                    client: Box::new(client),
                    since: now,
                    deadline: Some(now + RELAY_TIMEOUT),
                    next_ping: now + RELAY_PING_INTERVAL,
                    ping: 0,
                };
                self.relays.ready.insert(RelayId(i as u16));
            }
            Err(e) => self.relay_failed(now, i, RelayError::Tls(e.to_string())),
        }
    }

    /// The TCP connection `conn` to a relay ended, or could not be opened
    /// (`error` says why, if known).
    pub fn relay_closed(&mut self, now: Instant, conn: RelayConnId, error: Option<String>) {
        self.advance(now);
        if let Some(i) = self.relays.slot_of(conn) {
            let error = match error {
                Some(e) if matches!(self.relays.slots[i].state, SlotState::Opening { .. }) => {
                    RelayError::Unreachable(e)
                }
                _ => RelayError::ConnectionLost,
            };
            self.relay_failed(now, i, error);
            // The driver knows: no Close action for this one.
            self.relays
                .actions
                .retain(|a| *a != RelayAction::Close { conn });
        }
    }

    /// Bytes read from the relay connection `conn`.
    pub fn handle_relay_bytes(&mut self, now: Instant, conn: RelayConnId, bytes: &[u8]) {
        self.advance(now);
        let Some(i) = self.relays.slot_of(conn) else {
            return;
        };
        let relay = RelayId(i as u16);
        let mut datagrams = Vec::new();
        let mut failure = None;
        {
            let slot = &mut self.relays.slots[i];
            let SlotState::Open {
                client,
                deadline,
                ping,
                ..
            } = &mut slot.state
            else {
                return;
            };
            if let Err(e) = client.handle_bytes(bytes) {
                failure = Some(e);
            }
            while let Some(event) = client.poll_event() {
                match event {
                    RelayClientEvent::Connected => {
                        *deadline = None;
                        // Where the NAT maps the node's UDP socket: ask at once.
                        slot.next_probe = Some(now);
                        // What QUIC sent while the relay was connecting.
                        for (peer, datagram) in slot.waiting.drain(..) {
                            if client.send_datagram(peer, datagram) {
                                self.stats.relayed_sent += 1;
                            } else {
                                self.stats.relayed_dropped += 1;
                            }
                        }
                    }
                    RelayClientEvent::ObservedAddr(addr) => {
                        let first = slot.observed.is_none();
                        slot.observed = Some(addr);
                        if first {
                            self.events.push_back(Event::RelayConnected {
                                relay,
                                observed: addr,
                            });
                        }
                    }
                    RelayClientEvent::Datagram { from, datagram } => {
                        datagrams.push((from, datagram));
                    }
                    // Only the answer to the latest ping counts.
                    RelayClientEvent::Pong { nonce } if nonce == *ping => *deadline = None,
                    RelayClientEvent::Pong { .. } => {}
                    // QUIC notices on its own that nothing comes back.
                    RelayClientEvent::PeerGone(_) => {}
                }
            }
            if client.wants_write() {
                self.relays.ready.insert(relay);
            }
        }
        for (from, datagram) in datagrams {
            self.stats.relayed_received += 1;
            let conns = &self.conns;
            let addr = self.relays.remember(relay, from, false, |a| {
                conns.values().any(|c| c.quic.remote_address() == *a)
            });
            if let Some(addr) = addr {
                self.handle_datagram(now, addr, None, None, BytesMut::from(datagram));
            }
        }
        if let Some(error) = failure {
            self.relay_failed(now, i, error);
        }
    }

    /// The next relay connection with bytes to write.
    pub fn poll_relay_ready(&mut self) -> Option<RelayConnId> {
        while let Some(relay) = self.relays.ready.pop_first() {
            if let Some(Slot {
                state: SlotState::Open { conn, .. },
                ..
            }) = self.relays.slots.get(usize::from(relay.0))
            {
                return Some(*conn);
            }
        }
        None
    }

    /// Append the bytes to write to relay connection `conn` to `buf`.
    pub fn poll_relay_write(&mut self, conn: RelayConnId, buf: &mut Vec<u8>) {
        if let Some(i) = self.relays.slot_of(conn)
            && let SlotState::Open { client, .. } = &mut self.relays.slots[i].state
        {
            client.poll_write(buf);
        }
    }

    /// Send a datagram QUIC addressed to a relayed path (`dest`) through
    /// its relay. GSO batches are split into their datagrams.
    pub(super) fn send_relayed(&mut self, dest: SocketAddr, data: &[u8], segment: Option<usize>) {
        let (Some(relay), Some(peer)) = (path_relay(&dest), self.relays.path_peer(&dest)) else {
            return;
        };
        let segment = segment.unwrap_or(data.len()).max(1);
        let Some(slot) = self.relays.slots.get_mut(usize::from(relay.0)) else {
            return;
        };
        let client = match &mut slot.state {
            SlotState::Open { client, .. } if client.is_connected() => client,
            SlotState::Waiting { .. } => {
                self.stats.relayed_dropped += data.len().div_ceil(segment) as u64;
                return;
            }
            // Connecting: the first datagrams wait for it (a dial made
            // together with the relay connection), a few at most.
            _ => {
                for datagram in data.chunks(segment) {
                    if slot.waiting.len() < MAX_WAITING_DATAGRAMS {
                        slot.waiting
                            .push_back((peer, Bytes::copy_from_slice(datagram)));
                    } else {
                        self.stats.relayed_dropped += 1;
                    }
                }
                return;
            }
        };
        for datagram in data.chunks(segment) {
            // Too large for a relay (QUIC probing the path's MTU): dropped,
            // and QUIC learns the path's limit.
            if client.send_datagram(peer, Bytes::copy_from_slice(datagram)) {
                self.stats.relayed_sent += 1;
            } else {
                self.stats.relayed_dropped += 1;
            }
        }
        if client.wants_write() {
            self.relays.ready.insert(relay);
        }
    }

    /// Whether QUIC's destination is a relayed path.
    pub(super) fn is_relayed(addr: &SocketAddr) -> bool {
        path_relay(addr).is_some()
    }

    fn relay_failed(&mut self, now: Instant, i: usize, error: RelayError) {
        let relay = RelayId(i as u16);
        let slot = &mut self.relays.slots[i];
        let conn = match &slot.state {
            SlotState::Opening { conn, .. } => Some((*conn, None)),
            SlotState::Open { conn, since, .. } => Some((*conn, Some(*since))),
            SlotState::Waiting { .. } => None,
        };
        let Some((conn, since)) = conn else {
            return;
        };
        // A connection that lasted starts the backoff over.
        if since.is_some_and(|s| now.saturating_duration_since(s) >= super::STABLE) {
            slot.failures = 0;
        }
        let wait = Duration::from_secs(1)
            .saturating_mul(1 << slot.failures.min(6))
            .min(RELAY_MAX_RETRY);
        slot.failures = slot.failures.saturating_add(1);
        let was_connected = slot.observed.take().is_some();
        slot.waiting.clear();
        slot.forget_udp();
        slot.state = SlotState::Waiting {
            retry_at: now + wait,
            error: Some(error.clone()),
        };
        self.relays.actions.push_back(RelayAction::Close { conn });
        self.relays.ready.remove(&relay);
        if was_connected {
            self.events
                .push_back(Event::RelayDisconnected { relay, error });
        }
        // A relay that is gone no longer vouches for where the node is.
        self.announce_candidates();
    }

    /// Run the relays' timers: connect when due, ping, give up on a relay
    /// that does not answer.
    pub(super) fn relay_timers(&mut self, now: Instant) {
        for i in 0..self.relays.slots.len() {
            let relay = RelayId(i as u16);
            let mut failed = None;
            let mut probe = None;
            let next_conn = &mut self.relays.next_conn;
            let slot = &mut self.relays.slots[i];
            match &mut slot.state {
                SlotState::Waiting { retry_at, .. } if *retry_at <= now && !self.shutting_down => {
                    let conn = RelayConnId(*next_conn);
                    *next_conn += 1;
                    slot.state = SlotState::Opening {
                        conn,
                        deadline: now + RELAY_TIMEOUT,
                    };
                    self.relays.actions.push_back(RelayAction::Connect {
                        conn,
                        addr: slot.addr.addr,
                    });
                }
                SlotState::Opening { deadline, .. } if *deadline <= now => {
                    failed = Some(RelayError::Timeout);
                }
                SlotState::Open {
                    client,
                    deadline,
                    next_ping,
                    ping,
                    ..
                } => {
                    if deadline.is_some_and(|at| at <= now) {
                        failed = Some(RelayError::Timeout);
                    } else if *next_ping <= now && client.is_connected() {
                        *ping += 1;
                        client.ping(*ping);
                        *next_ping = now + RELAY_PING_INTERVAL;
                        deadline.get_or_insert(now + RELAY_TIMEOUT);
                        self.relays.ready.insert(relay);
                    }
                    if failed.is_none() && slot.next_probe.is_some_and(|at| at <= now) {
                        // Unanswered: ask again sooner, doubling up to the
                        // interval.
                        if slot.probe.is_some() {
                            slot.probe_misses = slot.probe_misses.saturating_add(1);
                        }
                        let wait = super::punch::PROBE_RETRY
                            .saturating_mul(1 << slot.probe_misses.min(5))
                            .min(super::punch::PROBE_INTERVAL);
                        slot.next_probe = Some(now + wait);
                        probe = Some(slot.addr.addr);
                    }
                }
                _ => {}
            }
            if let Some(error) = failed {
                self.relay_failed(now, i, error);
            }
            if let Some(dest) = probe {
                let id = self.send_probe(dest);
                self.relays.slots[i].probe = Some(id);
            }
        }
    }

    /// The relays' next deadline.
    pub(super) fn relay_timeout(&self) -> Option<(Instant, TimeoutReason)> {
        self.relays
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let at = match &s.state {
                    SlotState::Waiting { retry_at, .. } if !self.shutting_down => Some(*retry_at),
                    SlotState::Waiting { .. } => None,
                    SlotState::Opening { deadline, .. } => Some(*deadline),
                    SlotState::Open {
                        deadline,
                        next_ping,
                        ..
                    } => [*deadline, Some(*next_ping), s.next_probe]
                        .into_iter()
                        .flatten()
                        .min(),
                }?;
                Some((at, TimeoutReason::Relay(RelayId(i as u16))))
            })
            .min_by_key(|(at, _)| *at)
    }

    /// Close every relay connection (at shutdown).
    pub(super) fn close_relays(&mut self) {
        for slot in &mut self.relays.slots {
            let conn = match &mut slot.state {
                SlotState::Opening { conn, .. } => *conn,
                SlotState::Open { conn, .. } => *conn,
                SlotState::Waiting { .. } => continue,
            };
            slot.state = SlotState::Waiting {
                retry_at: self.now,
                error: None,
            };
            slot.observed = None;
            slot.waiting.clear();
            slot.forget_udp();
            self.relays.actions.push_back(RelayAction::Close { conn });
        }
    }
}
