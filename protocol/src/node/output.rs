//! The node's outputs: transmits, events and its next deadline.

use std::ops::Bound;
use std::time::Instant;

use super::conn::Conn;
use super::{Ecn, Event, Node, TimeoutReason, Transmit};

impl Node {
    /// The next datagram(s) to send, written to `buf`. `max_datagrams` > 1
    /// allows several equal-sized datagrams in one transmit (GSO).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        // What the node sends outside QUIC: address probes (§10.6), then
        // direct-path pings and pongs (§10.9).
        if let Some((destination, probe)) = self.traversal.probes.pop_front() {
            return Some(Transmit::single(destination, &probe, buf));
        }
        if let Some((destination, packet)) = self.direct_out.pop_front() {
            return Some(Transmit::single(destination, &packet, buf));
        }
        while let Some((transmit, bytes)) = self.responses.pop_front() {
            if Self::is_relayed(&transmit.destination) {
                self.send_relayed(transmit.destination, &bytes, transmit.segment_size);
                continue;
            }
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(transmit);
        }
        // Round-robin over the active connections, starting after the one
        // that sent last, without allocating: each turn looks up the next
        // id after the previous one (removed ids still work as bounds).
        let mut cursor = self.transmit_cursor;
        let mut turns = self.active.len();
        while turns > 0 {
            turns -= 1;
            let next = cursor
                .and_then(|c| {
                    self.active
                        .range((Bound::Excluded(c), Bound::Unbounded))
                        .next()
                })
                .or_else(|| self.active.iter().next())
                .copied();
            let Some(id) = next else { break };
            cursor = Some(id);
            let Some(conn) = self.conns.get_mut(&id) else {
                self.active.remove(&id);
                continue;
            };
            buf.clear();
            if let Some(t) = conn.quic.poll_transmit(now, max_datagrams.max(1), buf) {
                self.transmit_cursor = Some(id);
                if let Some(direct) = conn
                    .direct_route()
                    .filter(|_| Self::is_relayed(&t.destination))
                {
                    // A relayed connection with a direct route (§10.9).
                    return Some(Transmit {
                        destination: direct,
                        ecn: t.ecn.map(Ecn::from_quinn),
                        size: t.size,
                        segment_size: t.segment_size,
                        src_ip: None,
                    });
                }
                if Self::is_relayed(&t.destination) {
                    // Through a relay, not the socket; then this
                    // connection again (its turn is not over).
                    let data = std::mem::take(buf);
                    self.send_relayed(t.destination, &data[..t.size], t.segment_size);
                    *buf = data;
                    cursor = self.active.range(..id).next_back().copied();
                    turns += 1;
                    continue;
                }
                return Some(Transmit {
                    destination: t.destination,
                    ecn: t.ecn.map(Ecn::from_quinn),
                    size: t.size,
                    segment_size: t.segment_size,
                    src_ip: t.src_ip,
                });
            }
            // Nothing more to send until the next input touches it: note
            // its deadline and let it rest.
            conn.deadline = conn_deadline(conn);
            self.active.remove(&id);
        }
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called, and why.
    pub fn poll_timeout(&mut self) -> Option<(Instant, TimeoutReason)> {
        let mut next: Option<(Instant, TimeoutReason)> = None;
        for conn in self.conns.values_mut() {
            if self.active.contains(&conn.id) {
                conn.deadline = conn_deadline(conn);
            }
            let Some(at) = conn.deadline else {
                continue;
            };
            if next.is_some_and(|(t, _)| t <= at) {
                continue;
            }
            let reason = if conn
                .pending_close
                .as_ref()
                .is_some_and(|(_, _, c)| *c == at)
            {
                TimeoutReason::Close(conn.id)
            } else if conn.phase.handshake_deadline() == Some(at) {
                TimeoutReason::Handshake(conn.id)
            } else if conn.header_deadlines.first().is_some_and(|(h, _)| *h == at) {
                TimeoutReason::Header(conn.id)
            } else if conn.duplicate_deadline() == Some(at) {
                TimeoutReason::Duplicate(conn.id)
            } else {
                TimeoutReason::Connection(conn.id)
            };
            next = Some((at, reason));
        }
        if let Some(at) = self.manual.deadline(self.now)
            && next.is_none_or(|(t, _)| at < t)
        {
            next = Some((at, TimeoutReason::Manual));
        }
        if let Some((at, reason)) = self.relay_timeout()
            && next.is_none_or(|(t, _)| at < t)
        {
            next = Some((at, reason));
        }
        next
    }

    /// Queue a stateless answer (version negotiation, stateless reset,
    /// refusal, retry), unless answers to its destination are over their
    /// rate limit: each goes to an address nobody has verified, which may
    /// be a spoofed victim's.
    pub(super) fn queue_response(&mut self, transmit: quinn_proto::Transmit, mut bytes: Vec<u8>) {
        if self.responses.len() >= super::MAX_QUEUED_RESPONSES
            || !self
                .response_limit
                .take(self.now, transmit.destination.ip())
        {
            self.stats.responses_limited += 1;
            return;
        }
        self.stats.responses_sent += 1;
        bytes.truncate(transmit.size);
        self.responses.push_back((
            Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn.map(Ecn::from_quinn),
                size: transmit.size,
                segment_size: transmit.segment_size,
                src_ip: transmit.src_ip,
            },
            bytes,
        ));
    }
}

/// The earliest moment connection `conn` needs `handle_timeout`.
pub(super) fn conn_deadline(conn: &mut Conn) -> Option<Instant> {
    let quic = conn.quic.poll_timeout();
    let handshake = conn.phase.handshake_deadline();
    let close = conn.pending_close.as_ref().map(|(_, _, at)| *at);
    let header = conn.header_deadlines.first().map(|(at, _)| *at);
    let duplicate = conn.duplicate_deadline();
    let route = conn.route.as_ref().and_then(|r| r.deadline());
    [quic, handshake, close, header, duplicate, route]
        .into_iter()
        .flatten()
        .min()
}

impl Transmit {
    /// One datagram of `bytes` to `destination`, copied into `buf`.
    fn single(destination: std::net::SocketAddr, bytes: &[u8], buf: &mut Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(bytes);
        Self {
            destination,
            ecn: None,
            size: bytes.len(),
            segment_size: None,
            src_ip: None,
        }
    }
}
