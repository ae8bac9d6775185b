//! Manual peers: addresses the application added (an IP literal or a host
//! name), kept connected: dialed at once, re-dialed with backoff after a
//! failure or a disconnect. The identity is pinned when given, learned from
//! the handshake otherwise. Host names are resolved on a short-lived thread
//! so no runtime's blocking pool is needed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::discovery::Backoff;
use pos_p2p_protocol::node::DialId;

use crate::driver::{Shared, State};

/// The first retry comes after about this long, then twice as long each time.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff when it ends.
const STABLE: Duration = Duration::from_secs(30);
/// How long a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most addresses one host name may resolve to that are dialed.
const MAX_RESOLVED: usize = 8;

/// Where a manual peer is: a socket address, or a host name and port that
/// the node resolves before every attempt.
///
/// ```
/// use pos_p2p::PeerAddr;
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
        /// The name, resolved by the OS resolver.
        host: String,
        /// The port.
        port: u16,
    },
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

/// A string that is neither `ip:port`, `[ipv6]:port` nor `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an address with a port: {0:?}")]
pub struct PeerAddrError(String);

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
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
        }
    }
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
        last_error: String,
    },
}

/// A manual peer as [`P2P::manual_peers`](crate::P2P::manual_peers) reports it.
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

#[derive(Debug)]
enum Phase {
    /// Due at the instant (immediately when in the past).
    Waiting(Instant),
    /// Since the instant, by the resolver thread of this generation.
    Resolving(Instant, u64),
    /// The resolver thread's answer, to dial on the next turn.
    Resolved(Result<Vec<SocketAddr>, String>),
    /// Dialing: the dial it watches (see `State::dial`).
    Dialing(DialId),
    Connected(Instant),
}

#[derive(Debug)]
pub(crate) struct Manual {
    expected: Option<RemoteIdentity>,
    identity: Option<RemoteIdentity>,
    backoff: Backoff,
    phase: Phase,
    last_error: String,
    /// Tells a resolver thread's answer from a stale one's.
    generation: u64,
}

impl Manual {
    /// Let go of what it holds in the shared state (a dial it watches),
    /// once it is removed.
    pub(crate) fn release(&self, state: &mut State) {
        if let Phase::Dialing(dial) = self.phase {
            state.unwatch_dial(dial);
        }
    }

    pub(crate) fn new(expected: Option<RemoteIdentity>, now: Instant) -> Self {
        Self {
            expected,
            identity: expected,
            backoff: Backoff::new(FIRST_RETRY, MAX_RETRY),
            phase: Phase::Waiting(now),
            last_error: String::new(),
            generation: 0,
        }
    }

    /// The same address added again: a new expected identity, the same
    /// progress and backoff.
    pub(crate) fn set_expected(&mut self, expected: Option<RemoteIdentity>) {
        if expected != self.expected {
            self.expected = expected;
            self.identity = expected.or(self.identity);
        }
    }

    /// The identity, given or learned.
    pub(crate) fn identity(&self) -> Option<RemoteIdentity> {
        self.identity
    }

    pub(crate) fn report(&self, addr: &PeerAddr, now: Instant) -> ManualPeer {
        let status = match &self.phase {
            Phase::Waiting(at) if !self.last_error.is_empty() => ManualStatus::Waiting {
                retry_in: at.saturating_duration_since(now),
                failures: self.backoff.failures(),
                last_error: self.last_error.clone(),
            },
            Phase::Resolving(..) => ManualStatus::Resolving,
            Phase::Connected(_) => ManualStatus::Connected,
            Phase::Waiting(_) | Phase::Resolved(_) | Phase::Dialing(_) => ManualStatus::Connecting,
        };
        ManualPeer {
            addr: addr.clone(),
            expected: self.expected,
            identity: self.identity,
            status,
        }
    }
}

/// Randomness for the backoff's jitter, from the OS.
struct OsRng;

impl rand_core::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        getrandom::u32().unwrap_or(u32::MAX / 2)
    }

    fn next_u64(&mut self) -> u64 {
        getrandom::u64().unwrap_or(u64::MAX / 2)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        if getrandom::fill(dst).is_err() {
            dst.fill(0x80);
        }
    }
}

/// Move every manual peer along; returns when to look again.
pub(crate) fn drive(shared: &Arc<Shared>, state: &mut State, now: Instant) -> Option<Instant> {
    if state.closing.is_some() {
        return None;
    }
    let mut next: Option<Instant> = None;
    let addrs: Vec<PeerAddr> = state.manual.keys().cloned().collect();
    for addr in addrs {
        let Some(mut manual) = state.manual.remove(&addr) else {
            continue;
        };
        if let Some(at) = step(shared, state, &addr, &mut manual, now) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        state.manual.insert(addr, manual);
    }
    next
}

fn step(
    shared: &Arc<Shared>,
    state: &mut State,
    addr: &PeerAddr,
    manual: &mut Manual,
    now: Instant,
) -> Option<Instant> {
    loop {
        match &mut manual.phase {
            Phase::Connected(since) => {
                let up = manual
                    .identity
                    .is_some_and(|id| state.node.peer(&id).is_some());
                if up {
                    return None;
                }
                if now.saturating_duration_since(*since) >= STABLE {
                    manual.backoff.reset();
                }
                manual.last_error = "disconnected".into();
                retry_later(manual, now);
            }
            Phase::Waiting(at) => {
                // Connected meanwhile by other means (the peer dialed us).
                if manual
                    .identity
                    .is_some_and(|id| state.node.peer(&id).is_some())
                {
                    manual.last_error.clear();
                    manual.phase = Phase::Connected(now);
                    return None;
                }
                if *at > now {
                    return Some(*at);
                }
                match addr {
                    PeerAddr::Addr(socket) => {
                        manual.phase = Phase::Resolved(Ok(vec![*socket]));
                    }
                    PeerAddr::Host { host, port } => {
                        manual.generation += 1;
                        let generation = manual.generation;
                        if resolve(
                            shared.clone(),
                            addr.clone(),
                            host.clone(),
                            *port,
                            generation,
                        ) {
                            manual.phase = Phase::Resolving(now, generation);
                            return Some(now + RESOLVE_TIMEOUT);
                        }
                        manual.phase = Phase::Resolved(Err("cannot start a resolver".into()));
                    }
                }
            }
            // The resolver thread moves the peer on and wakes the driver;
            // one that hangs (a stuck name service) is given up on.
            Phase::Resolving(since, _) => {
                let deadline = *since + RESOLVE_TIMEOUT;
                if now < deadline {
                    return Some(deadline);
                }
                manual.generation += 1;
                manual.last_error = format!("resolving {addr} timed out");
                retry_later(manual, now);
            }
            Phase::Resolved(result) => {
                let result = std::mem::replace(result, Ok(Vec::new()));
                let addrs = match result {
                    Ok(addrs) => addrs,
                    Err(error) => {
                        manual.last_error = error;
                        retry_later(manual, now);
                        continue;
                    }
                };
                // A dial to this peer under way (a `Peer::new_stream`) is
                // joined rather than doubled, and vice versa.
                let dialed = &addrs[..addrs.len().min(MAX_RESOLVED)];
                match state.dial(now, dialed, manual.expected) {
                    Ok(dial) => {
                        manual.phase = Phase::Dialing(dial);
                        return None;
                    }
                    Err(error) => {
                        tracing::debug!(%error, %addr, "cannot dial a manual peer");
                        manual.last_error = format!("cannot dial: {error}");
                        retry_later(manual, now);
                    }
                }
            }
            Phase::Dialing(dial) => {
                let dial = *dial;
                // Connected by other means meanwhile (the peer dialed us).
                let other = manual.expected.filter(|id| state.node.peer(id).is_some());
                let result = match (state.dial_result(dial), other) {
                    (Some(result), _) => result.clone(),
                    (None, Some(peer)) => Ok(peer),
                    (None, None) => return None,
                };
                state.unwatch_dial(dial);
                match result {
                    Ok(peer) if state.node.peer(&peer).is_some() => {
                        manual.identity = Some(peer);
                        // The application keeps this peer: never evicted,
                        // nor forgotten by the address book.
                        state.node.protect(peer);
                        if let PeerAddr::Addr(socket) = addr {
                            state.node.book_mut().pin(peer, *socket);
                        }
                        manual.last_error.clear();
                        manual.phase = Phase::Connected(now);
                        return None;
                    }
                    // Connected and gone again already.
                    Ok(_) => manual.last_error = "disconnected".into(),
                    Err(reason) => manual.last_error = reason.to_string(),
                }
                retry_later(manual, now);
            }
        }
    }
}

fn retry_later(manual: &mut Manual, now: Instant) {
    manual.phase = Phase::Waiting(now + manual.backoff.next_delay(&mut OsRng));
}

/// Resolve on a thread of its own and hand the answer to the driver;
/// `false` if no thread could be started.
fn resolve(shared: Arc<Shared>, addr: PeerAddr, host: String, port: u16, generation: u64) -> bool {
    let spawned = std::thread::Builder::new()
        .name("pos-p2p-resolve".into())
        .spawn(move || {
            let result = (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.take(MAX_RESOLVED).collect::<Vec<_>>())
                .map_err(|e| format!("cannot resolve {host}: {e}"));
            let mut state = shared.lock();
            if let Some(manual) = state.manual.get_mut(&addr)
                && matches!(manual.phase, Phase::Resolving(_, g) if g == generation)
            {
                manual.phase = Phase::Resolved(result);
            }
            state.wake_driver();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a resolver thread");
        return false;
    }
    true
}

/// The manual peers' reports.
pub(crate) fn reports(manual: &BTreeMap<PeerAddr, Manual>, now: Instant) -> Vec<ManualPeer> {
    manual.iter().map(|(addr, m)| m.report(addr, now)).collect()
}
