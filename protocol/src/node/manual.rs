//! Manual peers: addresses the application added (an IP literal or a host
//! name), kept connected. Each is dialed at once and, after a failure or a
//! disconnect, again after a backoff: 1 s doubling to 60 s, each delay
//! drawn between 75 % and 100 % of that from the node's seeded random
//! source (so a simulation replays it exactly). A connection that lasted
//! 30 s resets the backoff when it ends.
//!
//! A host name is resolved before every attempt, by the driver: the node
//! asks with [`Event::ResolveHost`] and takes the answer in
//! [`Node::handle_resolved`]. An answer carries the generation it was
//! asked for, so a late answer to an earlier attempt is ignored; one that
//! does not come within [`RESOLVE_TIMEOUT`] fails the attempt.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;

use super::{ConnectError, DialId, DisconnectReason, Event, MAX_DIAL_ADDRS, Node};
use crate::RemoteIdentity;
use crate::discovery::Backoff;

/// The first retry comes after about this long, then twice as long each
/// time.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff when it ends.
pub const STABLE: Duration = Duration::from_secs(30);
/// How long a host name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a manual peer is: a socket address, or a host name and port that
/// is resolved before every attempt.
///
/// ```
/// use pos_p2p_protocol::node::PeerAddr;
///
/// let v4: PeerAddr = "192.0.2.1:4433".parse().unwrap();
/// let v6: PeerAddr = "[2001:db8::1]:4433".parse().unwrap();
/// let host: PeerAddr = "laptop.local:4433".parse().unwrap();
/// assert!(matches!(v4, PeerAddr::Addr(_)));
/// assert!(matches!(v6, PeerAddr::Addr(a) if a.is_ipv6()));
/// assert_eq!(host, PeerAddr::Host { host: "laptop.local".into(), port: 4433 });
/// assert!("no-port".parse::<PeerAddr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerAddr {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A host name and port.
    Host {
        /// The name, resolved by the driver (the OS resolver).
        host: String,
        /// The port.
        port: u16,
    },
    /// A node by identity: its relays and direct addresses, all dialed at
    /// once, its identity pinned (docs/PROTOCOL.md §10.8).
    Node(super::NodeAddr),
}

impl From<super::NodeAddr> for PeerAddr {
    fn from(addr: super::NodeAddr) -> Self {
        Self::Node(addr)
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

/// A string that is neither `ip:port`, `[ipv6]:port`, `host:port` nor a
/// [`NodeAddr`](super::NodeAddr).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an address with a port, nor a node address: {0:?}")]
pub struct PeerAddrError(String);

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        if let Ok(node) = s.parse::<super::NodeAddr>() {
            return Ok(Self::Node(node));
        }
        let bad = || PeerAddrError(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(bad());
        }
        Ok(Self::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => addr.fmt(f),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
            Self::Node(node) => node.fmt(f),
        }
    }
}

/// Why a host name gave no address to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name resolved to no address.
    #[error("the name has no address")]
    NoAddress,
    /// The resolver failed, with this kind of error.
    #[error("the resolver failed: {0}")]
    Failed(std::io::ErrorKind),
    /// The driver could not start a resolver.
    #[error("no resolver could be started")]
    Unavailable,
}

/// Why a manual peer's last attempt failed, or its connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManualError {
    /// Its relays cannot be used (see [`Node::add_relay`]).
    #[error("cannot use its relays: {0}")]
    Relay(crate::relay::RelayError),
    /// It was connected, and the connection ended.
    #[error("disconnected")]
    Disconnected,
    /// Its host name did not resolve.
    #[error("cannot resolve: {0}")]
    Resolve(ResolveError),
    /// Its host name did not resolve within [`RESOLVE_TIMEOUT`].
    #[error("resolving timed out")]
    ResolveTimedOut,
    /// No address could be dialed.
    #[error("cannot dial: {0}")]
    Dial(ConnectError),
    /// Every address was dialed, and the last attempt failed thus.
    #[error("{0}")]
    Failed(DisconnectReason),
}

/// Where a manual peer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManualStatus {
    /// Resolving the host name.
    Resolving,
    /// Dialing.
    Connecting,
    /// Connected.
    Connected,
    /// The last attempt failed; the next one is due in `retry_in`.
    Waiting {
        /// Until the next attempt.
        retry_in: Duration,
        /// Failed attempts since the last stable connection.
        failures: u32,
        /// Why the last attempt failed (or the connection ended).
        last_error: ManualError,
    },
}

/// A manual peer as [`Node::manual_peers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManualPeer {
    /// Where it is.
    pub addr: PeerAddr,
    /// The identity it must have, if one was given.
    pub expected: Option<RemoteIdentity>,
    /// The identity it proved on the last connection.
    pub identity: Option<RemoteIdentity>,
    /// Where it stands.
    pub status: ManualStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Due at the instant (at once when in the past).
    Waiting(Instant),
    /// Asked the driver to resolve, for this generation, at the instant.
    Resolving { since: Instant, generation: u64 },
    /// Dialing: this dial decides.
    Dialing(DialId),
    /// Connected since the instant.
    Connected(Instant),
}

#[derive(Debug)]
struct Manual {
    expected: Option<RemoteIdentity>,
    identity: Option<RemoteIdentity>,
    backoff: Backoff,
    phase: Phase,
    last_error: Option<ManualError>,
    /// Tells a resolver's answer from a stale one's.
    generation: u64,
}

/// The manual peers of a node.
#[derive(Debug)]
pub(super) struct Manuals {
    peers: BTreeMap<PeerAddr, Manual>,
    /// The backoff's jitter, from the node's seed.
    rng: ChaCha8Rng,
    /// Something they wait for happened (a dial finished, a peer connected
    /// or disconnected): look at them on the next `handle_timeout`.
    due: bool,
}

impl Manuals {
    pub(super) fn new(seed: [u8; 32]) -> Self {
        use rand_core::SeedableRng;
        Self {
            peers: BTreeMap::new(),
            rng: ChaCha8Rng::from_seed(seed),
            due: false,
        }
    }

    /// When they next need `handle_timeout`.
    pub(super) fn deadline(&self, now: Instant) -> Option<Instant> {
        if self.due {
            return Some(now);
        }
        self.peers
            .values()
            .filter_map(|m| match m.phase {
                Phase::Waiting(at) => Some(at),
                Phase::Resolving { since, .. } => Some(since + RESOLVE_TIMEOUT),
                Phase::Dialing(_) | Phase::Connected(_) => None,
            })
            .min()
    }

    /// Forget every manual peer (the node shuts down).
    pub(super) fn clear(&mut self) {
        self.peers.clear();
        self.due = false;
    }

    /// A peer connected or disconnected, or a dial finished: the manual
    /// peers look again.
    pub(super) fn wake(&mut self) {
        if !self.peers.is_empty() {
            self.due = true;
        }
    }
}

impl Node {
    /// Keep the peer at `addr` connected (unless the node is shutting
    /// down, which forgets every manual peer): dial it at once and, after a
    /// failure or a disconnect, again after a backoff of [`FIRST_RETRY`]
    /// doubling to [`MAX_RETRY`], each delay drawn between 75 % and 100 %
    /// of that from the node's seeded random source (a connection that
    /// lasted [`STABLE`] resets it). A host name is resolved before every
    /// attempt by the driver: [`Event::ResolveHost`], answered with
    /// [`Node::handle_resolved`]. With `expected`, only that identity is
    /// accepted (and it is protected from eviction at once); without, the
    /// identity is learned from the handshake. The peer is protected and
    /// pinned in the address book once connected. Adding an address again
    /// replaces its expected identity and keeps its progress. A
    /// [`PeerAddr::Node`] names its identity: that one is expected,
    /// whatever `expected` says; its relays are used (see
    /// [`Node::add_relayed_peer`]) and every path to it is dialed at once.
    pub fn add_manual_peer(
        &mut self,
        now: Instant,
        addr: PeerAddr,
        expected: Option<RemoteIdentity>,
    ) {
        self.advance(now);
        if self.shutting_down {
            return;
        }
        let expected = match &addr {
            PeerAddr::Node(node) => Some(node.identity),
            _ => expected,
        };
        if let Some(identity) = expected {
            self.protect(identity);
        }
        let manual = self.manual.peers.entry(addr).or_insert_with(|| Manual {
            expected,
            identity: expected,
            backoff: Backoff::new(FIRST_RETRY, MAX_RETRY),
            phase: Phase::Waiting(now),
            last_error: None,
            generation: 0,
        });
        if manual.expected != expected {
            manual.expected = expected;
            manual.identity = expected.or(manual.identity);
        }
        self.drive_manual(now);
    }

    /// Stop keeping the peer at `addr` connected; a connection to it stays
    /// until closed. Returns the identity it had (given or learned), or
    /// `None` inside if it never had one, or `None` if it was not a manual
    /// peer. Protection from eviction and the address book's pin stay to
    /// the caller to undo ([`Node::unprotect`], [`Node::book_mut`]), as the
    /// application may hold the peer for other reasons.
    pub fn remove_manual_peer(&mut self, addr: &PeerAddr) -> Option<Option<RemoteIdentity>> {
        self.manual.peers.remove(addr).map(|m| m.identity)
    }

    /// The manual peers and where each stands.
    pub fn manual_peers(&self) -> Vec<ManualPeer> {
        self.manual
            .peers
            .iter()
            .map(|(addr, m)| {
                let status = match (&m.phase, &m.last_error) {
                    (Phase::Waiting(at), Some(error)) => ManualStatus::Waiting {
                        retry_in: at.saturating_duration_since(self.now),
                        failures: m.backoff.failures(),
                        last_error: error.clone(),
                    },
                    (Phase::Resolving { .. }, _) => ManualStatus::Resolving,
                    (Phase::Connected(_), _) => ManualStatus::Connected,
                    (Phase::Waiting(_) | Phase::Dialing(_), _) => ManualStatus::Connecting,
                };
                ManualPeer {
                    addr: addr.clone(),
                    expected: m.expected,
                    identity: m.identity,
                    status,
                }
            })
            .collect()
    }

    /// The driver's answer to [`Event::ResolveHost`] for `addr` and
    /// `generation`. A stale answer (another attempt has begun since, or
    /// the peer was removed) is ignored.
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        addr: &PeerAddr,
        generation: u64,
        result: Result<Vec<SocketAddr>, ResolveError>,
    ) {
        self.advance(now);
        let current = self.manual.peers.get(addr).is_some_and(
            |m| matches!(m.phase, Phase::Resolving { generation: g, .. } if g == generation),
        );
        if !current {
            return;
        }
        let Some(mut manual) = self.manual.peers.remove(addr) else {
            return;
        };
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                let dialed = &addrs[..addrs.len().min(MAX_DIAL_ADDRS)];
                self.manual_dial(now, &mut manual, dialed);
            }
            Ok(_) => self.retry_later(
                &mut manual,
                now,
                ManualError::Resolve(ResolveError::NoAddress),
            ),
            Err(error) => self.retry_later(&mut manual, now, ManualError::Resolve(error)),
        }
        self.manual.peers.insert(addr.clone(), manual);
    }

    /// Move every manual peer along (from `handle_timeout` and commands).
    pub(super) fn drive_manual(&mut self, now: Instant) {
        self.manual.due = false;
        let mut peers = std::mem::take(&mut self.manual.peers);
        for (addr, manual) in peers.iter_mut() {
            self.step_manual(now, addr, manual);
        }
        // Nothing adds peers while they are out (commands take `&mut`).
        self.manual.peers = peers;
    }

    fn step_manual(&mut self, now: Instant, addr: &PeerAddr, manual: &mut Manual) {
        let connected =
            |node: &Node, id: Option<RemoteIdentity>| id.filter(|id| node.peers.contains_key(id));
        loop {
            match manual.phase {
                Phase::Connected(since) => {
                    if connected(self, manual.identity).is_some() {
                        return;
                    }
                    if now.saturating_duration_since(since) >= STABLE {
                        manual.backoff.reset();
                    }
                    self.retry_later(manual, now, ManualError::Disconnected);
                }
                Phase::Waiting(at) => {
                    // Connected meanwhile by other means (the peer dialed us).
                    if let Some(peer) = connected(self, manual.identity) {
                        self.manual_connected(now, addr, manual, peer);
                        return;
                    }
                    if now < at {
                        return;
                    }
                    match addr {
                        PeerAddr::Addr(socket) => self.manual_dial(now, manual, &[*socket]),
                        PeerAddr::Node(node) => match self.node_addr_paths(now, node) {
                            Ok(paths) => self.manual_dial(now, manual, &paths),
                            Err(error) => self.retry_later(manual, now, ManualError::Relay(error)),
                        },
                        PeerAddr::Host { .. } => {
                            manual.generation += 1;
                            manual.phase = Phase::Resolving {
                                since: now,
                                generation: manual.generation,
                            };
                            self.events.push_back(Event::ResolveHost {
                                addr: addr.clone(),
                                generation: manual.generation,
                            });
                            return;
                        }
                    }
                }
                Phase::Resolving { since, .. } => {
                    if now < since + RESOLVE_TIMEOUT {
                        return;
                    }
                    // Whatever the resolver says now is stale: its answer
                    // finds the peer no longer resolving (and the next
                    // resolve has a new generation).
                    self.retry_later(manual, now, ManualError::ResolveTimedOut);
                }
                Phase::Dialing(dial) => {
                    let other = connected(self, manual.expected);
                    if let Some(peer) = other {
                        self.manual_connected(now, addr, manual, peer);
                        return;
                    }
                    if self.dials.is_under_way(dial) {
                        return;
                    }
                    // Finished: its outcome was recorded when it came.
                    match manual.last_error.take() {
                        Some(error) => self.retry_later(manual, now, error),
                        None => match connected(self, manual.identity) {
                            Some(peer) => {
                                self.manual_connected(now, addr, manual, peer);
                                return;
                            }
                            None => self.retry_later(manual, now, ManualError::Disconnected),
                        },
                    }
                }
            }
        }
    }

    fn manual_dial(&mut self, now: Instant, manual: &mut Manual, addrs: &[SocketAddr]) {
        manual.last_error = None;
        match self.dial(now, addrs, manual.expected) {
            Ok(dial) => manual.phase = Phase::Dialing(dial),
            Err(error) => self.retry_later(manual, now, ManualError::Dial(error)),
        }
    }

    fn manual_connected(
        &mut self,
        now: Instant,
        addr: &PeerAddr,
        manual: &mut Manual,
        peer: RemoteIdentity,
    ) {
        manual.identity = Some(peer);
        manual.last_error = None;
        manual.phase = Phase::Connected(now);
        // The application keeps this peer: never evicted, nor forgotten by
        // the address book.
        self.protect(peer);
        if let PeerAddr::Addr(socket) = addr {
            self.book.pin(peer, *socket);
        }
    }

    fn retry_later(&mut self, manual: &mut Manual, now: Instant, error: ManualError) {
        manual.last_error = Some(error);
        manual.phase = Phase::Waiting(now + manual.backoff.next_delay(&mut self.manual.rng));
    }

    /// Dial `dial` finished: record its outcome for the manual peer that
    /// waits for it (its identity, or why it failed).
    pub(super) fn manual_dial_finished(
        &mut self,
        dial: DialId,
        result: &Result<RemoteIdentity, DisconnectReason>,
    ) {
        for manual in self.manual.peers.values_mut() {
            if manual.phase == Phase::Dialing(dial) {
                match result {
                    Ok(peer) => manual.identity = Some(*peer),
                    Err(reason) => manual.last_error = Some(ManualError::Failed(reason.clone())),
                }
            }
        }
        self.manual.wake();
    }
}
