//! The node's inputs: datagrams and expired timers.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{DatagramEvent, VarInt};

use super::hello::close_code;
use super::{ConnectionId, Direction, DisconnectReason, Ecn, MIN_INITIAL_SIZE, Node};

impl Node {
    /// Time has moved to `now` (never backwards).
    pub(super) fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.clock
            .advance(self.now.saturating_duration_since(self.started));
    }

    /// A UDP datagram arrived from `remote`, addressed to `local_ip` (if the
    /// socket can tell).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<Ecn>,
        data: BytesMut,
    ) {
        self.advance(now);
        self.stats.datagrams += 1;
        // STUN (an address probe's answer) shares the socket; it never
        // looks like QUIC (§10.6).
        if crate::stun::is_stun(&data) {
            self.handle_stun(remote, &data);
            return;
        }
        if crate::direct::is_direct(&data) {
            self.handle_direct(now, remote, &data);
            return;
        }
        // From a relayed connection's direct route: QUIC knows the peer
        // by the relayed path's address (§10.9).
        let remote = self.routed_source(remote, &data).unwrap_or(remote);
        if self.drop_early(now, remote, &data) {
            self.stats.dropped_early += 1;
            return;
        }
        let mut scratch = Vec::new();
        let event = self.endpoint.handle(
            now,
            remote,
            local_ip,
            ecn.map(Ecn::to_quinn),
            data,
            &mut scratch,
        );
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(id) = self.by_handle.get(&handle).copied() {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.quic.handle_event(event);
                    }
                    self.process(now, id);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.handle_incoming(now, incoming, &mut scratch);
            }
            Some(DatagramEvent::Response(transmit)) => self.queue_response(transmit, scratch),
        }
    }

    /// Whether a datagram can be dropped before QUIC looks at it (which
    /// for a first flight means deriving keys and decrypting): a version
    /// negotiation that the rate limit of stateless answers would not send
    /// anyway, or a first flight from an address with no connection that
    /// is over its allowance.
    pub(super) fn drop_early(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) -> bool {
        let (Some(&first), Some(version)) = (data.first(), data.get(1..5)) else {
            return false;
        };
        if first & 0x80 == 0 {
            // Short header: QUIC looks up the connection id, cheaply.
            return false;
        }
        let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
        match version {
            // A version negotiation packet (to this node as a dialer).
            0 => false,
            1 => {
                // A source's allowance covers its first flights and their
                // retransmissions (established connections send short
                // headers).
                let initial = (first & 0x30) == 0;
                initial && !self.first_flights.take(now, remote.ip())
            }
            _ => data.len() >= MIN_INITIAL_SIZE && !self.response_limit.has_token(now, remote.ip()),
        }
    }

    /// Time has reached `now`: run expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| self.active.contains(&c.id) || c.deadline.is_some_and(|at| at <= now))
            .map(|c| c.id)
            .collect();
        for id in ids {
            let Some(conn) = live_conn!(self, id) else {
                continue;
            };
            conn.quic.handle_timeout(now);
            if let Some((code, reason, at)) = conn.pending_close.take() {
                if at <= now {
                    conn.quic.close(now, VarInt::from_u32(code as u32), reason);
                } else {
                    conn.pending_close = Some((code, reason, at));
                }
            }
            let expired = conn.phase.handshake_deadline().is_some_and(|at| at <= now);
            if expired {
                if conn.direction == Direction::Inbound {
                    self.stats.handshakes_timed_out += 1;
                }
                self.close_conn(
                    now,
                    id,
                    close_code::HANDSHAKE_TIMEOUT,
                    Bytes::from_static(b"handshake timeout"),
                    DisconnectReason::HandshakeTimeout,
                );
            }
            self.route_timers(now, id);
            self.expire_headers(now, id);
            self.expire_duplicate(now, id);
            self.process(now, id);
        }
        // After the connections: a dial or a disconnection they reported
        // is news the manual peers act on in the same turn.
        self.relay_timers(now);
        if self.manual.deadline(now).is_some_and(|at| at <= now) {
            self.drive_manual(now);
        }
    }
}
