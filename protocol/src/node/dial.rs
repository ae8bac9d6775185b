//! Dials: what the application asked to connect to, and their outcomes.
//!
//! A dial is one or more connection attempts, one per address, to one
//! peer (or to whoever answers at an address). The first attempt that
//! reaches the established state finishes the dial; if every attempt
//! fails, the dial fails with the reason of the last attempt that ended.
//! A dial to a peer is shared: asking for a second dial to a peer while
//! one is under way joins it, so every waiter gets the same outcome from
//! the same connection attempts. Each dial ends with exactly one
//! [`Event::DialFinished`](super::Event::DialFinished).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use super::{ConnectError, ConnectionId, DisconnectReason, Event, Node};
use crate::RemoteIdentity;

/// The most addresses one dial tries at once; the rest are ignored.
pub const MAX_DIAL_ADDRS: usize = 8;

/// A dial, as returned by [`Node::dial`]; reported once in
/// [`Event::DialFinished`](super::Event::DialFinished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialId(u64);

/// A dial under way.
#[derive(Debug)]
struct Dial {
    /// The peer it must reach, if it pins one.
    peer: Option<RemoteIdentity>,
    /// Connection attempts not yet ended.
    attempts: BTreeSet<ConnectionId>,
}

/// The dials under way and how to find them.
#[derive(Debug, Default)]
pub(super) struct Dials {
    next: u64,
    dials: BTreeMap<DialId, Dial>,
    by_conn: HashMap<ConnectionId, DialId>,
    by_peer: HashMap<RemoteIdentity, DialId>,
}

impl Dials {
    fn finish(&mut self, id: DialId) -> Option<Dial> {
        let dial = self.dials.remove(&id)?;
        for conn in &dial.attempts {
            self.by_conn.remove(conn);
        }
        if let Some(peer) = dial.peer {
            self.by_peer.remove(&peer);
        }
        Some(dial)
    }

    /// Dials under way (for tests and statistics).
    pub(super) fn len(&self) -> usize {
        self.dials.len()
    }

    /// Whether dial `id` has not finished yet.
    pub(super) fn is_under_way(&self, id: DialId) -> bool {
        self.dials.contains_key(&id)
    }
}

impl Node {
    /// Dial a peer at `addrs`, all at once (at most [`MAX_DIAL_ADDRS`]).
    /// With `expected`, only that node is accepted at each address (the
    /// others fail with [`DisconnectReason::IdentityMismatch`]); without,
    /// whoever answers.
    ///
    /// The outcome comes once, as [`Event::DialFinished`]: the first
    /// attempt that is established finishes the dial with the peer's
    /// identity (also when it gave way to another connection to the same
    /// peer); when all have failed, it fails with the reason the last one
    /// gave. Connection attempts still under way when the dial finishes
    /// carry on as ordinary connections.
    ///
    /// A dial to a peer that is connected finishes at once, without a new
    /// connection. A dial to a peer that another dial is already trying to
    /// reach joins that dial: the same [`DialId`] is returned, and every
    /// waiter gets the same outcome. Dials are never evicted (see
    /// [`Limits`](super::Limits)).
    ///
    /// Fails, with no event to follow, if no address could be dialed: the
    /// error of the last address tried, or [`ConnectError::NoAddress`].
    pub fn dial(
        &mut self,
        now: Instant,
        addrs: &[SocketAddr],
        expected: Option<RemoteIdentity>,
    ) -> Result<DialId, ConnectError> {
        self.advance(now);
        if self.shutting_down {
            return Err(ConnectError::ShuttingDown);
        }
        if let Some(peer) = expected {
            if let Some(&joined) = self.dials.by_peer.get(&peer) {
                return Ok(joined);
            }
            if self.peers.contains_key(&peer) {
                let id = self.next_dial_id();
                self.events.push_back(Event::DialFinished {
                    dial: id,
                    result: Ok(peer),
                });
                return Ok(id);
            }
        }
        let mut attempts = BTreeSet::new();
        let mut error = ConnectError::NoAddress;
        for addr in addrs.iter().take(MAX_DIAL_ADDRS) {
            match self.connect(now, *addr, expected) {
                Ok(conn) => {
                    attempts.insert(conn);
                }
                Err(e) => error = e,
            }
        }
        if attempts.is_empty() {
            return Err(error);
        }
        let id = self.next_dial_id();
        for conn in &attempts {
            self.dials.by_conn.insert(*conn, id);
        }
        if let Some(peer) = expected {
            self.dials.by_peer.insert(peer, id);
        }
        self.dials.dials.insert(
            id,
            Dial {
                peer: expected,
                attempts,
            },
        );
        Ok(id)
    }

    /// Dial a known peer where it can be found: the addresses the address
    /// book has for it (most recent first), then `advertised` ones (what
    /// discovery reports), each once; otherwise as [`Node::dial`] with
    /// the peer pinned. Fails with [`ConnectError::NoAddress`] if there is
    /// none (and the peer is neither connected nor being dialed).
    pub fn dial_peer(
        &mut self,
        now: Instant,
        peer: RemoteIdentity,
        advertised: &[SocketAddr],
    ) -> Result<DialId, ConnectError> {
        let addrs = self.dial_addrs(&peer, advertised);
        self.dial(now, &addrs, Some(peer))
    }

    /// Where [`Node::dial_peer`] dials `peer`: the address book's addresses
    /// for it, most recent first, then `advertised`, without repeats.
    pub fn dial_addrs(&self, peer: &RemoteIdentity, advertised: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.book.addrs(peer).into_iter().flatten().collect();
        for addr in advertised {
            if !addrs.contains(addr) {
                addrs.push(*addr);
            }
        }
        addrs
    }

    fn next_dial_id(&mut self) -> DialId {
        self.dials.next += 1;
        DialId(self.dials.next)
    }

    /// Connection `conn` reached the established state with `peer`.
    pub(super) fn dial_established(&mut self, conn: ConnectionId, peer: RemoteIdentity) {
        let Some(&id) = self.dials.by_conn.get(&conn) else {
            return;
        };
        self.dials.finish(id);
        let result = Ok(peer);
        self.manual_dial_finished(id, &result);
        self.events
            .push_back(Event::DialFinished { dial: id, result });
    }

    /// Connection `conn` ended before it was established.
    pub(super) fn dial_attempt_failed(&mut self, conn: ConnectionId, reason: &DisconnectReason) {
        let Some(id) = self.dials.by_conn.remove(&conn) else {
            return;
        };
        let Some(dial) = self.dials.dials.get_mut(&id) else {
            debug_assert!(false, "a connection's dial is under way until it finishes");
            return;
        };
        dial.attempts.remove(&conn);
        if !dial.attempts.is_empty() {
            return;
        }
        self.dials.finish(id);
        let result = Err(reason.clone());
        self.manual_dial_finished(id, &result);
        self.events
            .push_back(Event::DialFinished { dial: id, result });
    }
}
