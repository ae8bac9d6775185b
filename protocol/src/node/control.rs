//! The receive side of the control stream: accepting streams, reading and
//! acting on control messages.

use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{Dir, Side, VarInt};

use super::conn::{Handshake, Phase, send_hello};
use super::hello::{self, ControlMessage, MAX_CONTROL_MESSAGE_LEN, close_code};
use super::{ConnectionId, Direction, DisconnectReason, Event, Node, Violation};

impl Node {
    /// Accept peer-opened bidirectional streams: the control stream (the
    /// listener's first stream) and application streams, whose headers are
    /// received once the connection is established.
    pub(super) fn accept_streams(&mut self, now: Instant, id: ConnectionId) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        // Streams are only looked at once the peer's identity is known.
        if conn.remote.is_none() || conn.phase.is_closed() {
            return;
        }
        let mut started = Vec::new();
        while let Some(stream) = conn.quic.streams().accept(Dir::Bi) {
            let is_control = conn.direction == Direction::Outbound
                && stream.initiator() == Side::Server
                && stream.index() == 0;
            if is_control {
                conn.control = Some(stream);
                continue;
            }
            conn.accepted += 1;
            match &mut conn.phase {
                Phase::Established => started.push(stream),
                Phase::Handshaking(handshake) => handshake.early_streams.push(stream),
                Phase::Closed => {}
            }
        }
        for stream in started {
            self.start_header(now, id, stream);
        }
    }

    pub(super) fn read_control(&mut self, now: Instant, id: ConnectionId) {
        let mut messages = Vec::new();
        let mut failure: Option<Violation> = None;
        {
            let Some(conn) = live_conn!(self, id) else {
                return;
            };
            let Some(control) = conn.control else {
                return;
            };
            if conn.phase.is_closed() || conn.remote.is_none() {
                return;
            }
            let mut recv = conn.quic.recv_stream(control);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            loop {
                match chunks.next(MAX_CONTROL_MESSAGE_LEN) {
                    Ok(Some(chunk)) => {
                        let mut input = &chunk.bytes[..];
                        while !input.is_empty() {
                            match conn.control_decoder.decode(input) {
                                Ok(decoded) => {
                                    input = &input[decoded.consumed..];
                                    if let Some(frame) = decoded.frame {
                                        match ControlMessage::decode(&frame) {
                                            Ok(message) => messages.push(message),
                                            Err(e) => {
                                                failure = Some(Violation::ControlMessage(e));
                                                break;
                                            }
                                        }
                                    }
                                }
                                Err(e) => {
                                    failure = Some(Violation::ControlFrame(e));
                                    break;
                                }
                            }
                        }
                        if failure.is_some() {
                            break;
                        }
                    }
                    Ok(None) => {
                        failure = Some(Violation::ControlStreamFinished);
                        break;
                    }
                    Err(quinn_proto::ReadError::Reset(_)) => {
                        failure = Some(Violation::ControlStreamReset);
                        break;
                    }
                    Err(quinn_proto::ReadError::Blocked) => break,
                }
            }
            let _ = chunks.finalize();
        }
        for message in messages {
            if self.conns.get(&id).is_none_or(|c| c.phase.is_closed()) {
                return;
            }
            self.handle_control(now, id, message);
        }
        if let Some(why) = failure {
            self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from(why.to_string().into_bytes()),
                DisconnectReason::ProtocolViolation(why),
            );
        }
    }

    pub(super) fn handle_control(
        &mut self,
        now: Instant,
        id: ConnectionId,
        message: ControlMessage,
    ) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        match message {
            ControlMessage::Hello(hello) if matches!(&conn.phase, Phase::Handshaking(h) if h.remote_hello.is_none()) =>
            {
                if hello.app_name != self.config.app_name {
                    let reason = DisconnectReason::ApplicationMismatch {
                        local: self.config.app_name.clone(),
                        remote: hello.app_name,
                    };
                    // The reason names our application, for the peer to show.
                    let ours = Bytes::from(self.config.app_name.clone().into_bytes());
                    self.close_conn(now, id, close_code::APPLICATION_MISMATCH, ours, reason);
                    return;
                }
                if let Err(rejection) = self
                    .config
                    .version_policy
                    .check(&self.config.versions, &hello.versions)
                {
                    let bytes = hello::encode_rejection(&rejection);
                    self.close_conn(
                        now,
                        id,
                        close_code::VERSION_REJECTED,
                        bytes,
                        DisconnectReason::VersionRejected(rejection),
                    );
                    return;
                }
                let Phase::Handshaking(handshake) = &mut conn.phase else {
                    return;
                };
                handshake.remote_hello = Some(hello);
                if !handshake.hello_sent {
                    send_hello(conn, &self.config, true);
                }
                self.try_establish(now, id);
            }
            ControlMessage::Hello(_) => self.close_conn(
                now,
                id,
                close_code::PROTOCOL_VIOLATION,
                Bytes::from_static(b"second hello"),
                DisconnectReason::ProtocolViolation(Violation::SecondHello),
            ),
            ControlMessage::Metadata(metadata) => {
                // After the sender's Hello, which the stream's order makes
                // the first message: a listener sends its metadata as soon
                // as the dialer is authenticated, which may be before this
                // node counts the connection as established.
                let Some(peer) = conn.remote else {
                    return;
                };
                match &mut conn.phase {
                    Phase::Handshaking(Handshake {
                        remote_hello: None, ..
                    }) => {
                        self.close_conn(
                            now,
                            id,
                            close_code::PROTOCOL_VIOLATION,
                            Bytes::from_static(b"metadata before hello"),
                            DisconnectReason::ProtocolViolation(Violation::MetadataBeforeHello),
                        );
                        return;
                    }
                    Phase::Handshaking(Handshake {
                        remote_hello: Some(hello),
                        ..
                    }) => {
                        // Reported with the connection.
                        hello.metadata = metadata;
                        return;
                    }
                    Phase::Closed => return,
                    Phase::Established => {}
                }
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.info.metadata = metadata.clone();
                }
                self.events
                    .push_back(Event::MetadataUpdated { peer, metadata });
            }
            ControlMessage::Superseded { opened } => {
                conn.peer_superseded = Some(opened);
                self.close_if_drained_duplicate(id);
            }
            ControlMessage::Goodbye { code, reason } => {
                let why = self.peer_close_reason(code, &reason);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.peer_goodbye = Some((code, reason));
                    conn.quic.close(
                        now,
                        VarInt::from_u32(close_code::NORMAL as u32),
                        Bytes::new(),
                    );
                }
                self.end_conn(id, why);
            }
            ControlMessage::Candidates(addrs) => self.handle_candidates(now, id, addrs),
            ControlMessage::Relays(relays) => self.handle_relays(id, relays),
            ControlMessage::Unknown(_) => {}
        }
    }
}
