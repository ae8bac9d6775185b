//! A connection's way to the established state: QUIC events, the TLS
//! handshake's outcome, and the Hello exchange's end.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, VarInt};

use super::conn::{Conn, Handshake, Phase};
use super::hello::close_code;
use super::{
    ConnectionId, Direction, DisconnectReason, Event, Node, Peer, PeerInfo, Violation, conn, tls,
};
use crate::RemoteIdentity;

impl Node {
    pub(super) fn insert_conn(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        quic: quinn_proto::Connection,
        direction: Direction,
        expected: Option<RemoteIdentity>,
        handshake_deadline: Instant,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.by_handle.insert(handle, id);
        let mut conn = Conn::new(
            id,
            handle,
            quic,
            direction,
            expected,
            now,
            handshake_deadline,
        );
        conn.span = tracing::debug_span!(
            parent: &self.span,
            "conn",
            id = id.0,
            dir = ?direction,
            path = %conn.addr,
            peer = tracing::field::Empty,
        );
        *self.direct_addrs.entry(conn.addr).or_default() += 1;
        self.conns.insert(id, conn);
        id
    }

    /// The connection new streams to `peer` go on.
    pub(super) fn primary(&self, peer: &RemoteIdentity) -> Option<ConnectionId> {
        let peer = self.peers.get(peer)?;
        Some(peer.info.connection)
    }

    /// Run everything that follows an input to connection `id`.
    pub(super) fn process(&mut self, now: Instant, id: ConnectionId) {
        self.active.insert(id);
        let span = self.conns.get(&id).map(|c| c.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        loop {
            let Some(conn) = live_conn!(self, id) else {
                return;
            };
            while let Some(event) = conn.quic.poll_endpoint_events() {
                if let Some(event) = self.endpoint.handle_event(conn.handle, event) {
                    conn.quic.handle_event(event);
                }
            }
            let Some(event) = conn.quic.poll() else {
                break;
            };
            self.handle_quic_event(now, id, event);
        }
        let drained = self.conns.get(&id).is_some_and(|c| c.quic.is_drained());
        if drained {
            // Drained without a lost event (not expected): report it closed.
            self.end_conn(id, DisconnectReason::ClosedLocally);
            self.end_route(id);
            if let Some(conn) = self.conns.remove(&id) {
                self.by_handle.remove(&conn.handle);
                if let Some(n) = self.direct_addrs.get_mut(&conn.addr) {
                    *n -= 1;
                    if *n == 0 {
                        self.direct_addrs.remove(&conn.addr);
                    }
                }
            }
            self.active.remove(&id);
        }
    }

    pub(super) fn handle_quic_event(
        &mut self,
        now: Instant,
        id: ConnectionId,
        event: quinn_proto::Event,
    ) {
        match event {
            quinn_proto::Event::HandshakeDataReady | quinn_proto::Event::DatagramReceived => {}
            quinn_proto::Event::DatagramsUnblocked => {}
            quinn_proto::Event::Connected => self.on_tls_done(now, id),
            quinn_proto::Event::ConnectionLost { reason } => {
                let reason = self.lost_reason(id, reason);
                self.end_conn(id, reason);
            }
            quinn_proto::Event::Stream(event) => self.on_stream_event(now, id, event),
        }
    }

    pub(super) fn on_tls_done(&mut self, now: Instant, id: ConnectionId) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        let Some(remote) = tls::peer_identity(conn.quic.crypto_session()) else {
            // The verifiers only accept identity certificates, so this
            // cannot happen; fail closed if it does.
            self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from_static(b"no identity"),
                DisconnectReason::ProtocolViolation(Violation::NoIdentity),
            );
            return;
        };
        conn.remote = Some(remote);
        conn.span.record("peer", tracing::field::display(remote));
        tracing::debug!(parent: &conn.span, "TLS proved the peer's identity");
        // A listener's metadata goes out once the dialer proved who it is.
        if conn.direction == Direction::Inbound {
            conn::send_metadata(conn, &self.config);
        }
        // Take the control stream (without reading it) so that a Goodbye
        // can explain a mismatch to the peer.
        self.accept_streams(now, id);
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        // The identity a dial pinned, and the one a relay names as the
        // sender of what it forwards: TLS proved another, so the
        // connection is not kept (a relay that names someone else is lying
        // or confused).
        let said = self.relays.path_peer(&conn.quic.remote_address());
        let mismatch = [(conn.expected, false), (said, true)]
            .into_iter()
            .find_map(|(e, relayed)| e.filter(|e| *e != remote).map(|e| (e, relayed)));
        if let Some((expected, relayed)) = mismatch {
            if relayed {
                self.stats.relayed_identity_mismatches += 1;
            }
            self.close_conn(
                now,
                id,
                close_code::IDENTITY_MISMATCH,
                Bytes::from_static(b"unexpected identity"),
                DisconnectReason::IdentityMismatch {
                    expected,
                    actual: remote,
                },
            );
            return;
        }
        if remote == self.local {
            self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from_static(b"connected to self"),
                DisconnectReason::ProtocolViolation(Violation::ConnectedToItself),
            );
            return;
        }
        self.read_control(now, id);
        self.try_establish(now, id);
    }

    /// Once TLS proved the peer's identity and both Hellos are through, the
    /// connection is established, if admission finds room for it.
    pub(super) fn try_establish(&mut self, now: Instant, id: ConnectionId) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        let ready = matches!(
            &conn.phase,
            Phase::Handshaking(Handshake {
                hello_sent: true,
                remote_hello: Some(_),
                ..
            })
        ) && conn.remote.is_some()
            && !conn.quic.is_handshaking();
        if !ready {
            return;
        }
        if !self.make_room(now, id) {
            self.close_conn(
                now,
                id,
                close_code::CONNECTION_LIMIT,
                Bytes::from_static(b"too many connections"),
                DisconnectReason::Refused,
            );
            return;
        }
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        let Some(remote) = conn.remote else {
            return;
        };
        // The transition: the handshake's data goes where it is used now.
        let (hello, early) = match &mut conn.phase {
            Phase::Handshaking(Handshake {
                remote_hello: hello @ Some(_),
                early_streams,
                ..
            }) => (hello.take(), std::mem::take(early_streams)),
            Phase::Handshaking(_) | Phase::Established | Phase::Closed => (None, Vec::new()),
        };
        let Some(hello) = hello else {
            debug_assert!(
                false,
                "a connection ready to be established has the peer's Hello"
            );
            return;
        };
        conn.phase = Phase::Established;
        self.stats.connections_established += 1;
        conn.quic.set_receive_window(VarInt::from_u32(
            self.config.limits.connection_receive_window,
        ));
        conn.last_activity = now;
        let info = PeerInfo {
            identity: remote,
            versions: hello.versions,
            metadata: hello.metadata,
            addr: conn.quic.remote_address(),
            direction: conn.direction,
            connection: id,
        };
        let direction = conn.direction;
        // Where to dial it again. A peer we dialed is one the application
        // asked for; one that dialed us is a stranger until it is used.
        match direction {
            Direction::Outbound => self.book.remember_used(remote, info.addr),
            Direction::Inbound => self.book.remember(remote, info.addr),
        }
        let path = info.addr;
        match self
            .peers
            .get(&remote)
            .map(|p| (p.info.direction, p.info.addr, p.info.connection))
        {
            None => {
                self.peers.insert(
                    remote,
                    Peer {
                        info: info.clone(),
                        conns: BTreeSet::from([id]),
                    },
                );
                self.events.push_back(Event::Connected(Box::new(info)));
            }
            Some((old_direction, old_path, old_id)) => {
                // A direct path beats a relayed one (§7.5); otherwise the
                // dialers decide.
                let this_wins = match (Self::is_relayed(&old_path), Self::is_relayed(&path)) {
                    (true, false) => true,
                    (false, true) => false,
                    _ => self.new_connection_wins(remote, old_direction, direction),
                };
                // How the old connection reached the peer (it may have had a
                // direct route, §10.9).
                let old_kind = match self.conns.get(&old_id) {
                    Some(old) => self.conn_path(old),
                    None => self.path_kind(old_path),
                };
                if this_wins && old_kind != self.path_kind(path) {
                    self.events.push_back(Event::PathChanged {
                        peer: remote,
                        path: self.path_kind(path),
                    });
                }
                let Some(peer) = self.peers.get_mut(&remote) else {
                    return;
                };
                peer.conns.insert(id);
                let loser = if this_wins {
                    let old = peer.info.connection;
                    peer.info = info;
                    old
                } else {
                    id
                };
                self.supersede(loser);
            }
        }
        tracing::debug!("connection established");
        // Where this node can be looked for if it moves (§10.8).
        self.send_relays(id);
        // Through a relay: tell the peer where this node may be reached
        // directly, so both can look for a direct route (§10.7, §10.9).
        if Self::is_relayed(&path) {
            self.start_route(id);
            if self.primary(&remote) == Some(id) {
                self.send_candidates(id);
            }
        }
        // After `Connected`: whoever waited for the dial finds the peer.
        self.dial_established(id, remote);
        self.manual.wake();
        for stream in early {
            self.start_header(now, id, stream);
        }
    }
}
