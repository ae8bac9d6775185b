//! One connection per pair of nodes (PROTOCOL.md §7.5): which of two
//! connections to a peer is kept, and draining the other.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::{Conn, flush_control};
use super::hello::{ControlMessage, close_code};
use super::{ConnectionId, Direction, DisconnectReason, Node};
use crate::RemoteIdentity;

/// How long a drained duplicate stays open before the node closes it:
/// closing discards what the peer has received on it but its application
/// has not read yet (the last answer of a request that raced the switch to
/// another connection).
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

impl Node {
    /// Of two established connections to `remote`, whether the new one,
    /// dialed by `new_dialer`, is kept over the one in use (dialed by
    /// `old_dialer`). Dialed from both sides at once: both nodes keep the
    /// one dialed by the smaller identity. Dialed twice by the same node
    /// (it restarted, or its old connection died unnoticed): the newer one,
    /// which is the one the dialer uses.
    pub(super) fn new_connection_wins(
        &self,
        remote: RemoteIdentity,
        old_direction: Direction,
        new_direction: Direction,
    ) -> bool {
        let dialer = |direction| match direction {
            Direction::Outbound => self.local,
            Direction::Inbound => remote,
        };
        let (old_dialer, new_dialer) = (dialer(old_direction), dialer(new_direction));
        old_dialer == new_dialer || new_dialer == self.local.min(remote)
    }

    /// Stop opening streams on a duplicate connection and tell the peer how
    /// many were opened, so it knows when none are in flight any more.
    pub(super) fn supersede(&mut self, id: ConnectionId) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        if conn.superseded || !conn.phase.is_established() {
            return;
        }
        conn.superseded = true;
        conn.superseded_deadline = Some(self.now + self.config.timeouts.superseded);
        // Its last streams drain through the relay: the connection that
        // took over may be at the route's address.
        self.end_route(id);
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        // The Superseded message below must go out.
        self.active.insert(id);
        let message = ControlMessage::Superseded {
            opened: conn.opened,
        };
        conn.control_out.push_back(message.to_frame());
        flush_control(conn);
        self.close_if_drained_duplicate(id);
    }

    /// Close a duplicate connection [`DRAIN_GRACE`] after both sides gave
    /// it up and every stream either side opened on it has been seen and
    /// is done.
    pub(super) fn close_if_drained_duplicate(&mut self, id: ConnectionId) {
        let now = self.now;
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        let drained = conn.superseded
            && conn.phase.is_established()
            && conn.peer_gave_up()
            && conn.streams.is_empty();
        if !drained {
            conn.drained_close_at = None;
            return;
        }
        let at = *conn.drained_close_at.get_or_insert(now + DRAIN_GRACE);
        // Its timer is looked at again.
        self.active.insert(id);
        if at <= now {
            self.close_conn(
                now,
                id,
                close_code::DUPLICATE,
                Bytes::from_static(b"duplicate connection"),
                DisconnectReason::Duplicate,
            );
        }
    }

    /// Close a superseded connection the peer has not given up in time,
    /// whatever still runs on it: a peer that never says `Superseded`, or
    /// counts streams that never come, cannot keep it open for ever.
    pub(super) fn expire_duplicate(&mut self, now: Instant, id: ConnectionId) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        if conn.drained_close_at.is_some_and(|at| at <= now) {
            self.close_if_drained_duplicate(id);
            return;
        }
        if conn.superseded_timeout().is_some_and(|at| at <= now) {
            self.stats.duplicates_timed_out += 1;
            self.close_conn(
                now,
                id,
                close_code::DUPLICATE,
                Bytes::from_static(b"duplicate connection: not given up in time"),
                DisconnectReason::Duplicate,
            );
        }
    }
}

impl Conn {
    /// Whether the peer gave this connection up: it said `Superseded` and
    /// every stream it counted there has arrived.
    pub(super) fn peer_gave_up(&self) -> bool {
        self.peer_superseded.is_some_and(|n| self.accepted >= n)
    }

    /// When this superseded connection stops waiting for the peer to give
    /// it up, if it still waits.
    pub(super) fn superseded_timeout(&self) -> Option<Instant> {
        self.superseded_deadline
            .filter(|_| self.phase.is_established() && !self.peer_gave_up())
    }

    /// The duplicate's next deadline: giving up on the peer, or closing
    /// once drained.
    pub(super) fn duplicate_deadline(&self) -> Option<Instant> {
        [self.superseded_timeout(), self.drained_close_at]
            .into_iter()
            .flatten()
            .min()
    }
}
