//! [`AddressBook`]: where peers were reached, bounded so that remote peers
//! cannot grow it.
//!
//! Every peer that connects is remembered at the address it came from, so
//! that a later stream to it can dial it again; a peer that makes up a
//! fresh identity per connection would grow such a table without bound.
//! The book holds at most `capacity` peers the application did not add.
//! When it is full, a *stranger* goes first (a peer that only ever
//! connected to us, and that the application never used), the one seen
//! least recently; only when there are none does the least recently used
//! of the others. So a flood of made-up identities pushes out nothing but
//! other strangers, never a peer the application dialed or streamed to.
//! Peers the application added (pinned) are kept until it removes them,
//! and do not count against the capacity.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::RemoteIdentity;

/// The most addresses remembered per peer; the oldest go first.
pub const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Debug, Clone)]
struct Entry {
    /// Most recent last.
    addrs: Vec<SocketAddr>,
    /// When it was last used, on the book's own counter.
    used: u64,
    /// Added by the application: never evicted.
    pinned: bool,
    /// Used by the application (dialed, or a stream opened to it): not a
    /// stranger, so strangers are evicted before it.
    vouched: bool,
}

/// Peers and the addresses they were reached at. See the [module
/// docs](self).
///
/// ```
/// use pos_p2p_protocol::book::AddressBook;
/// use pos_p2p_protocol::Identity;
///
/// let mut book = AddressBook::new(2);
/// let peer = |n| Identity::from_bytes(&[n; 32]).to_remote_identity();
/// book.pin(peer(1), "192.0.2.1:4433".parse().unwrap());
/// for n in 2..100 {
///     book.remember(peer(n), "192.0.2.2:4433".parse().unwrap());
/// }
/// // The pinned peer and the two most recent others.
/// assert_eq!(book.len(), 3);
/// assert!(book.addrs(&peer(1)).is_some());
/// assert!(book.addrs(&peer(99)).is_some());
/// assert!(book.addrs(&peer(2)).is_none());
/// ```
#[derive(Debug, Clone)]
pub struct AddressBook {
    capacity: usize,
    entries: BTreeMap<RemoteIdentity, Entry>,
    /// Entries that are not pinned.
    unpinned: usize,
    clock: u64,
}

impl AddressBook {
    /// A book that remembers at most `capacity` peers besides the pinned
    /// ones (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            unpinned: 0,
            clock: 0,
        }
    }

    /// Remember that `peer` was reached at `addr` (it connected from
    /// there, or was dialed there): most recent first when dialing. Until
    /// [`touch`](AddressBook::touch)ed, it is a stranger.
    pub fn remember(&mut self, peer: RemoteIdentity, addr: SocketAddr) {
        self.insert(peer, addr, false, false);
    }

    /// Remember that the application reached `peer` at `addr` (it dialed
    /// it): no stranger. Unlike [`remember`](AddressBook::remember) and
    /// then [`touch`](AddressBook::touch), it cannot be evicted in between
    /// when the book is full of peers the application used.
    pub fn remember_used(&mut self, peer: RemoteIdentity, addr: SocketAddr) {
        self.insert(peer, addr, false, true);
    }

    /// The application added `peer` at `addr`: kept until [`unpin`]ned.
    ///
    /// [`unpin`]: AddressBook::unpin
    pub fn pin(&mut self, peer: RemoteIdentity, addr: SocketAddr) {
        self.insert(peer, addr, true, true);
    }

    /// The application no longer needs `peer` kept; it may be forgotten
    /// like any other.
    pub fn unpin(&mut self, peer: &RemoteIdentity) {
        if let Some(entry) = self.entries.get_mut(peer)
            && entry.pinned
        {
            entry.pinned = false;
            self.unpinned += 1;
            self.evict();
        }
    }

    /// The application used `peer` now (dialed it, or opened a stream to
    /// it): it is no stranger any more, and among the last to be
    /// forgotten.
    pub fn touch(&mut self, peer: &RemoteIdentity) {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.used = self.clock;
            entry.vouched = true;
        }
    }

    /// Whether `peer` is in the book as a stranger (see the [module
    /// docs](self)).
    pub fn is_stranger(&self, peer: &RemoteIdentity) -> bool {
        self.entries
            .get(peer)
            .is_some_and(|e| !e.pinned && !e.vouched)
    }

    /// Where `peer` was reached, most recent first.
    pub fn addrs(&self, peer: &RemoteIdentity) -> Option<impl Iterator<Item = SocketAddr> + '_> {
        self.entries
            .get(peer)
            .map(|entry| entry.addrs.iter().rev().copied())
    }

    /// Every peer in the book.
    pub fn peers(&self) -> impl Iterator<Item = &RemoteIdentity> {
        self.entries.keys()
    }

    /// How many peers are in the book, pinned or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, peer: RemoteIdentity, addr: SocketAddr, pin: bool, used: bool) {
        self.clock += 1;
        let now = self.clock;
        let entry = self.entries.entry(peer).or_insert_with(|| {
            self.unpinned += 1;
            Entry {
                addrs: Vec::new(),
                used: now,
                pinned: false,
                vouched: false,
            }
        });
        entry.used = now;
        entry.vouched |= used;
        entry.addrs.retain(|a| *a != addr);
        entry.addrs.push(addr);
        if entry.addrs.len() > MAX_ADDRS_PER_PEER {
            entry.addrs.remove(0);
        }
        if pin && !entry.pinned {
            entry.pinned = true;
            self.unpinned -= 1;
        }
        self.evict();
    }

    /// Forget unpinned peers beyond the capacity: strangers first, the
    /// least recently seen; then the least recently used of the others.
    fn evict(&mut self) {
        while self.unpinned > self.capacity {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| (e.vouched, e.used))
                .map(|(peer, _)| *peer);
            let Some(oldest) = oldest else {
                return;
            };
            self.entries.remove(&oldest);
            self.unpinned -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn peer(n: u32) -> RemoteIdentity {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        Identity::from_bytes(&seed).to_remote_identity()
    }

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], n))
    }

    #[test]
    fn ten_thousand_fresh_identities_leave_the_book_within_its_bound() {
        let mut book = AddressBook::new(64);
        book.pin(peer(0), addr(1));
        for n in 1..10_000 {
            book.remember(peer(n), addr(2));
            assert!(book.len() <= 65);
        }
        assert_eq!(book.len(), 65);
        assert!(book.addrs(&peer(0)).is_some(), "pinned peers stay");
        assert!(book.addrs(&peer(9_999)).is_some());
        assert!(book.addrs(&peer(9_935)).is_none());
    }

    #[test]
    fn a_flood_of_strangers_pushes_out_only_strangers() {
        let mut book = AddressBook::new(64);
        // Peers the application used, and one stranger seen after them.
        for n in 1..=8 {
            book.remember(peer(n), addr(1));
            book.touch(&peer(n));
        }
        book.remember(peer(100), addr(1));
        assert!(book.is_stranger(&peer(100)));
        assert!(!book.is_stranger(&peer(1)));
        for n in 1_000..11_000 {
            book.remember(peer(n), addr(2));
            assert!(book.len() <= 64);
        }
        for n in 1..=8 {
            assert!(book.addrs(&peer(n)).is_some(), "used peer {n} kept");
        }
        assert!(book.addrs(&peer(100)).is_none());
        assert!(book.addrs(&peer(10_999)).is_some());
        // A stranger cannot displace used peers, even just arrived.
        let mut book = AddressBook::new(2);
        for n in 1..=2 {
            book.remember_used(peer(n), addr(1));
        }
        book.remember(peer(3), addr(1));
        assert!(book.addrs(&peer(3)).is_none());
        // With only used peers left, the least recently used goes.
        book.remember_used(peer(3), addr(1));
        assert!(book.addrs(&peer(1)).is_none());
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut book = AddressBook::new(2);
        assert!(book.is_empty());
        assert_eq!(book.peers().count(), 0);
        book.remember(peer(1), addr(1));
        assert!(!book.is_empty());
        book.remember(peer(2), addr(2));
        book.touch(&peer(1));
        book.remember(peer(3), addr(3));
        assert!(book.addrs(&peer(1)).is_some());
        assert!(book.addrs(&peer(2)).is_none());
        let mut peers: Vec<RemoteIdentity> = book.peers().copied().collect();
        peers.sort();
        let mut expected = vec![peer(1), peer(3)];
        expected.sort();
        assert_eq!(peers, expected);
        // Unpinning makes a pinned peer an ordinary one.
        book.pin(peer(4), addr(4));
        assert_eq!(book.len(), 3);
        book.unpin(&peer(4));
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn touching_a_used_peer_makes_it_the_most_recently_used() {
        // Among peers the application used, the one touched last stays and
        // the other goes; both ways round, so that the order of the
        // identities in the book cannot decide it.
        for (first, second) in [(1, 2), (2, 1)] {
            let mut book = AddressBook::new(2);
            book.remember_used(peer(first), addr(1));
            book.remember_used(peer(second), addr(2));
            book.touch(&peer(first));
            book.remember_used(peer(3), addr(3));
            assert!(
                book.addrs(&peer(first)).is_some(),
                "{first} was touched last"
            );
            assert!(book.addrs(&peer(second)).is_none());
        }
    }

    #[test]
    fn addresses_are_bounded_and_most_recent_first() {
        let mut book = AddressBook::new(4);
        for port in 0..20 {
            book.remember(peer(1), addr(port));
        }
        book.remember(peer(1), addr(15));
        let addrs: Vec<SocketAddr> = book.addrs(&peer(1)).unwrap().collect();
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(addrs[0], addr(15));
        assert_eq!(addrs[1], addr(19));
    }
}
