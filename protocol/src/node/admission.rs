//! Admission: which incoming handshakes and which connections a node
//! keeps when it cannot keep them all. The policy is documented on
//! [`Limits`](super::Limits).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::Conn;
use super::hello::close_code;
use super::{ConnectionId, Direction, DisconnectReason, Event, Node, send_hello};
use crate::RemoteIdentity;

/// How long a connection counts as wanted after the application last
/// opened a stream on it.
const WANTED_AFTER_OPENING: Duration = Duration::from_secs(300);

impl Node {
    /// The application wants `identity` (it added it by address, or keeps
    /// it connected): connections to it are never refused for lack of room
    /// and never evicted to make room for others.
    pub fn protect(&mut self, identity: RemoteIdentity) {
        self.protected.insert(identity);
    }

    /// Undo [`Node::protect`].
    pub fn unprotect(&mut self, identity: &RemoteIdentity) {
        self.protected.remove(identity);
    }

    /// Whether connection `conn` is one the application asked for: it
    /// dialed it, protected its peer, or opened a stream on it lately.
    fn is_wanted(&self, conn: &Conn) -> bool {
        conn.protected
            || conn.remote.is_some_and(|r| self.protected.contains(&r))
            || conn
                .opened_at
                .is_some_and(|at| self.now.saturating_duration_since(at) < WANTED_AFTER_OPENING)
    }

    /// Connections in any phase but closed (closed ones only wait to drain).
    fn live_connections(&self) -> usize {
        self.conns.values().filter(|c| !c.phase.is_closed()).count()
    }

    /// The most connections in any phase, closing ones included: a ceiling
    /// on memory however fast connections come and go.
    pub(super) fn connection_ceiling(&self) -> usize {
        let limits = &self.config.limits;
        2 * (limits.max_connections + limits.max_incoming_handshakes)
    }

    fn incoming_handshakes(&self) -> impl Iterator<Item = &Conn> {
        self.conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && c.phase.is_handshaking())
    }

    fn handshakes_from(&self, ip: IpAddr) -> usize {
        self.incoming_handshakes()
            .filter(|c| c.addr.ip() == ip)
            .count()
    }

    pub(super) fn handle_incoming(
        &mut self,
        now: Instant,
        mut incoming: quinn_proto::Incoming,
        scratch: &mut Vec<u8>,
    ) {
        let addr = incoming.remote_address();
        if self.incoming_handshakes().count() * 2 >= self.config.limits.max_incoming_handshakes {
            self.close_stale_handshakes(now);
        }
        let limits = &self.config.limits;
        let handshaking = self.incoming_handshakes().count();
        let total_cap = limits.max_connections + limits.max_incoming_handshakes;
        if self.shutting_down
            || self.live_connections() >= total_cap
            || self.conns.len() >= self.connection_ceiling()
        {
            return self.refuse(incoming, scratch, DisconnectReason::Refused);
        }
        // Under load (half the slots taken), a dialer proves it receives at
        // its address before it takes a slot: a flood from spoofed
        // addresses then costs one stateless Retry per packet (rate-limited
        // like every stateless answer) and no state.
        let under_load = handshaking * 2 >= limits.max_incoming_handshakes;
        if under_load && !incoming.remote_address_validated() {
            match self.endpoint.retry(incoming, scratch) {
                Ok(transmit) => {
                    self.stats.retries_sent += 1;
                    self.queue_response(transmit, std::mem::take(scratch));
                    return;
                }
                Err(error) => incoming = error.into_incoming(),
            }
        }
        // Under load, one address gets a few slots; and when every slot is
        // taken, the oldest stranger gives way. A dialer turned away here is
        // ignored rather than refused: its Initial comes back with QUIC's
        // retransmission (about a second later), when there may be room.
        let crowded = under_load
            && self.handshakes_from(addr.ip()) >= limits.max_handshakes_per_source.max(1);
        if crowded || (handshaking >= limits.max_incoming_handshakes && !self.evict_handshake(now))
        {
            self.stats.incoming_deferred += 1;
            self.endpoint.ignore(incoming);
            return;
        }
        match self.endpoint.accept(incoming, now, scratch, None) {
            Ok((handle, quic)) => {
                let deadline = now + self.config.timeouts.handshake;
                let id = self.insert_conn(now, handle, quic, Direction::Inbound, None, deadline);
                // The listener speaks first: its Hello goes out with its
                // handshake flight (0.5-RTT data), so the dialer is ready
                // as soon as its own handshake completes.
                if let Some(conn) = self.conns.get_mut(&id)
                    && let Some(control) = conn.quic.streams().open(quinn_proto::Dir::Bi)
                {
                    conn.control = Some(control);
                    send_hello(conn, &self.config, false);
                }
                self.process(now, id);
            }
            Err(error) => {
                let reason = super::close::transport_reason(error.cause);
                self.stats.incoming_refused += 1;
                self.events
                    .push_back(Event::IncomingRefused { addr, reason });
                if let Some(transmit) = error.response {
                    self.queue_response(transmit, std::mem::take(scratch));
                }
            }
        }
    }

    fn refuse(
        &mut self,
        incoming: quinn_proto::Incoming,
        scratch: &mut Vec<u8>,
        reason: DisconnectReason,
    ) {
        let addr = incoming.remote_address();
        let transmit = self.endpoint.refuse(incoming, scratch);
        self.queue_response(transmit, std::mem::take(scratch));
        self.stats.incoming_refused += 1;
        self.events
            .push_back(Event::IncomingRefused { addr, reason });
    }

    /// Under load: close the incoming handshakes that have not finished
    /// (TLS and the Hello) within `handshake_under_load`. An honest dialer
    /// sends its Hello right after TLS, so one that proved an identity and
    /// then says nothing is as stale as one that never proved one.
    fn close_stale_handshakes(&mut self, now: Instant) {
        let limit = self.config.timeouts.handshake_under_load;
        let stale: Vec<ConnectionId> = self
            .incoming_handshakes()
            .filter(|c| now.saturating_duration_since(c.started) >= limit)
            .map(|c| c.id)
            .collect();
        for id in stale {
            self.stats.handshakes_timed_out += 1;
            self.close_conn(
                now,
                id,
                close_code::HANDSHAKE_TIMEOUT,
                Bytes::from_static(b"handshake too slow under load"),
                DisconnectReason::HandshakeTimeout,
            );
        }
    }

    /// Every handshake slot is taken: close the oldest incoming handshake
    /// whose peer has not proven an identity yet, or failing that the
    /// oldest one. Returns whether one gave way.
    fn evict_handshake(&mut self, now: Instant) -> bool {
        let oldest = self
            .incoming_handshakes()
            .min_by_key(|c| (c.remote.is_some(), c.started, c.id))
            .map(|c| c.id);
        let Some(id) = oldest else {
            return false;
        };
        self.stats.handshakes_evicted += 1;
        self.close_conn(
            now,
            id,
            close_code::CONNECTION_LIMIT,
            Bytes::from_static(b"too many handshakes"),
            DisconnectReason::Evicted,
        );
        true
    }

    /// Connection `id` is about to be established. Returns whether there
    /// is room for it, making room if a connection can give way; if not,
    /// the caller refuses it.
    pub(super) fn make_room(&mut self, now: Instant, id: ConnectionId) -> bool {
        let Some(newcomer) = live_conn!(&self, id) else {
            return false;
        };
        // A second connection to a connected peer is resolved by the
        // duplicate rules, not admission.
        if newcomer.remote.is_some_and(|r| self.peers.contains_key(&r)) {
            return true;
        }
        let wanted = self.is_wanted(newcomer);
        // One address gets a share of the room for peers nobody asked for:
        // made-up identities from one device cannot fill the node.
        if !wanted {
            let ip = newcomer.addr.ip();
            let from_source = self
                .conns
                .values()
                .filter(|c| c.phase.is_established() && c.addr.ip() == ip && !self.is_wanted(c))
                .count();
            if from_source >= self.config.limits.max_connections_per_source {
                return false;
            }
        }
        let established = self
            .conns
            .values()
            .filter(|c| c.phase.is_established())
            .count();
        if established < self.config.limits.max_connections {
            return true;
        }
        let victim = self
            .conns
            .values()
            .filter(|c| {
                c.phase.is_established()
                    && c.direction == Direction::Inbound
                    && c.is_idle()
                    && !self.is_wanted(c)
            })
            .min_by_key(|c| (c.last_activity, c.id))
            .map(|c| c.id);
        match victim {
            Some(victim) => {
                self.stats.connections_evicted += 1;
                self.close_conn(
                    now,
                    victim,
                    close_code::CONNECTION_LIMIT,
                    Bytes::from_static(b"too many connections"),
                    DisconnectReason::Evicted,
                );
                true
            }
            // Nobody can give way: a peer the application asked for comes
            // in over the limit, a stranger is refused.
            None => wanted,
        }
    }
}
