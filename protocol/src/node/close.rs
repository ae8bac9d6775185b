//! Closing connections and explaining why they ended.

use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ConnectionError, TransportErrorCode, VarInt};

use super::conn::{Phase, flush_control};
use super::hello::{self, ControlMessage, close_code};
use super::{ALPN_ALERT, ConnectionId, DisconnectReason, Event, Node, StreamId, TransportFailure};

impl Node {
    pub(super) fn close_conn(
        &mut self,
        now: Instant,
        id: ConnectionId,
        code: u64,
        reason: Bytes,
        local_reason: DisconnectReason,
    ) {
        self.active.insert(id);
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        tracing::debug!(parent: &conn.span, code, reason = %local_reason, "closing the connection");
        if conn.phase.is_closed() {
            return;
        }
        let reason = reason.slice(..reason.len().min(hello::MAX_CLOSE_REASON_LEN));
        let phrase = close_phrase(code, &reason);
        match conn.control {
            // QUIC replaces an application close sent before the handshake
            // is confirmed with a bare APPLICATION_ERROR, losing the code
            // and reason. So say goodbye on the control stream first (1-RTT
            // data), and close once the peer has acknowledged it.
            Some(control) if !conn.quic.is_handshaking() && conn.peer_goodbye.is_none() => {
                let goodbye = ControlMessage::Goodbye {
                    code,
                    reason: reason.clone(),
                };
                conn.control_out.push_back(goodbye.to_frame());
                flush_control(conn);
                let _ = conn.quic.send_stream(control).finish();
                let grace = (conn.quic.rtt() * 3).clamp(
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_secs(1),
                );
                conn.pending_close = Some((code, phrase, now + grace));
            }
            _ => conn.quic.close(now, VarInt::from_u32(code as u32), phrase),
        }
        self.end_conn(id, local_reason);
    }

    /// The connection is over for the application: report it once.
    pub(super) fn end_conn(&mut self, id: ConnectionId, reason: DisconnectReason) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        if conn.phase.is_closed() {
            return;
        }
        let was_established = conn.phase.is_established();
        conn.phase = Phase::Closed;
        self.end_route(id);
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        tracing::debug!(parent: &conn.span, %reason, was_established, "connection over");
        // Tasks blocked on this connection's streams must look again (and
        // find it gone), whether or not the peer stays connected.
        for (stream, _) in conn
            .streams
            .iter()
            .filter(|(_, s)| !s.header.is_receiving())
        {
            let stream = StreamId {
                conn: id,
                id: *stream,
            };
            self.events.push_back(Event::StreamReadable(stream));
            self.events.push_back(Event::StreamWritable(stream));
        }
        let remote = conn.remote;
        let addr = conn.addr;
        if !was_established {
            let failed = reason.clone();
            self.events.push_back(Event::ConnectFailed {
                connection: id,
                addr,
                peer: remote,
                reason,
            });
            self.dial_attempt_failed(id, &failed);
            return;
        }
        let Some(remote) = remote else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&remote) else {
            return;
        };
        peer.conns.remove(&id);
        if let Some(&next) = peer.conns.iter().next() {
            // Another connection to this peer carries on.
            if peer.info.connection == id {
                peer.info.connection = next;
                if let Some(conn) = self.conns.get_mut(&next) {
                    conn.superseded = false;
                    conn.superseded_deadline = None;
                    conn.drained_close_at = None;
                    peer.info.addr = conn.quic.remote_address();
                    peer.info.direction = conn.direction;
                }
            }
            return;
        }
        self.peers.remove(&remote);
        self.events.push_back(Event::Disconnected {
            peer: remote,
            reason,
        });
        self.manual.wake();
    }

    /// What the peer's close code and reason (from its Goodbye or its
    /// CONNECTION_CLOSE) mean for this node.
    pub(super) fn peer_close_reason(&self, code: u64, reason: &[u8]) -> DisconnectReason {
        let text = || String::from_utf8_lossy(reason).into_owned();
        match code {
            close_code::VERSION_REJECTED => match hello::decode_rejection(reason) {
                Ok(rejection) => DisconnectReason::RejectedByPeer(Box::new(rejection)),
                Err(_) => DisconnectReason::ClosedByPeer {
                    code,
                    reason: text(),
                },
            },
            close_code::IDENTITY_MISMATCH => DisconnectReason::NotExpectedByPeer,
            close_code::APPLICATION_MISMATCH => DisconnectReason::ApplicationMismatch {
                local: self.config.app_name.clone(),
                remote: text(),
            },
            close_code::DUPLICATE => DisconnectReason::Duplicate,
            close_code::HANDSHAKE_TIMEOUT => DisconnectReason::HandshakeTimeout,
            close_code::CONNECTION_LIMIT => DisconnectReason::Refused,
            // NORMAL, PROTOCOL_VIOLATION, SHUTDOWN and codes of later versions.
            _ => DisconnectReason::ClosedByPeer {
                code,
                reason: text(),
            },
        }
    }

    pub(super) fn lost_reason(&self, id: ConnectionId, error: ConnectionError) -> DisconnectReason {
        if let Some((code, reason)) = self.conns.get(&id).and_then(|c| c.peer_goodbye.as_ref()) {
            return self.peer_close_reason(*code, reason);
        }
        // A pinned dial the TLS verifier refused: who answered instead.
        if let (ConnectionError::TransportError(_), Some(expected)) =
            (&error, self.conns.get(&id).and_then(|c| c.expected))
            && let Some(actual) = self.mismatches.take(&expected)
        {
            return DisconnectReason::IdentityMismatch { expected, actual };
        }
        match error {
            ConnectionError::ApplicationClosed(close) => {
                self.peer_close_reason(close.error_code.into_inner(), &close.reason)
            }
            other => transport_reason(other),
        }
    }
}

/// The reason phrase of a CONNECTION_CLOSE for `code` and the Goodbye's
/// `reason`: UTF-8 text, as RFC 9000 §19.19 asks, so that any QUIC stack
/// shows it. A version rejection, binary in the Goodbye, becomes its text
/// (§7.3); other reasons are text already. At most
/// [`hello::MAX_CLOSE_REASON_LEN`] bytes, cut at a character boundary.
pub(super) fn close_phrase(code: u64, reason: &[u8]) -> Bytes {
    let mut text = match hello::decode_rejection(reason) {
        Ok(rejection) if code == close_code::VERSION_REJECTED => rejection.to_string(),
        _ => String::from_utf8_lossy(reason).into_owned(),
    };
    let mut end = text.len().min(hello::MAX_CLOSE_REASON_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    Bytes::from(text)
}

/// The TLS alert `access_denied` (49): a dialer's verifier refused our
/// certificate because it pinned another identity.
const ACCESS_DENIED_ALERT: u8 = 49;

/// What a QUIC or TLS failure (not an application close) means for us.
pub(super) fn transport_reason(error: ConnectionError) -> DisconnectReason {
    let alpn = TransportErrorCode::crypto(ALPN_ALERT);
    let access_denied = TransportErrorCode::crypto(ACCESS_DENIED_ALERT);
    match error {
        ConnectionError::ConnectionClosed(close) if close.error_code == access_denied => {
            DisconnectReason::NotExpectedByPeer
        }
        ConnectionError::ConnectionClosed(close) if close.error_code == alpn => {
            DisconnectReason::AlpnMismatch
        }
        ConnectionError::TransportError(error) if error.code == alpn => {
            DisconnectReason::AlpnMismatch
        }
        ConnectionError::ConnectionClosed(close)
            if close.error_code == TransportErrorCode::CONNECTION_REFUSED =>
        {
            DisconnectReason::Refused
        }
        // An application close sent before the handshake is confirmed
        // reaches the peer as a bare APPLICATION_ERROR (RFC 9000 §10.2.3).
        ConnectionError::ConnectionClosed(close)
            if close.error_code == TransportErrorCode::APPLICATION_ERROR =>
        {
            DisconnectReason::ClosedDuringHandshake
        }
        ConnectionError::TimedOut => DisconnectReason::TimedOut,
        ConnectionError::Reset => DisconnectReason::Reset,
        ConnectionError::LocallyClosed => DisconnectReason::ClosedLocally,
        ConnectionError::VersionMismatch => {
            DisconnectReason::Transport(TransportFailure::VersionMismatch)
        }
        ConnectionError::TransportError(error) => {
            DisconnectReason::Transport(TransportFailure::Local {
                code: u64::from(error.code),
            })
        }
        ConnectionError::ConnectionClosed(close) => {
            DisconnectReason::Transport(TransportFailure::Peer {
                code: u64::from(close.error_code),
            })
        }
        ConnectionError::ApplicationClosed(close) => {
            DisconnectReason::Transport(TransportFailure::Application {
                code: close.error_code.into_inner(),
            })
        }
        ConnectionError::CidsExhausted => {
            DisconnectReason::Transport(TransportFailure::CidsExhausted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_phrase_is_text_cut_at_a_character_boundary() {
        // 1,023 ASCII bytes and a two-byte character: the character does
        // not fit and is left out whole.
        let mut reason = "x".repeat(hello::MAX_CLOSE_REASON_LEN - 1).into_bytes();
        reason.extend_from_slice("é".as_bytes());
        let phrase = close_phrase(close_code::NORMAL, &reason);
        assert_eq!(phrase.len(), hello::MAX_CLOSE_REASON_LEN - 1);
        assert!(std::str::from_utf8(&phrase).is_ok());
        // Bytes that are not UTF-8 are replaced, never passed on.
        let phrase = close_phrase(close_code::PROTOCOL_VIOLATION, &[b'a', 0xff, b'b']);
        assert_eq!(&phrase[..], "a\u{fffd}b".as_bytes());
    }

    #[test]
    fn only_a_version_rejection_is_turned_into_its_text() {
        let rejection = crate::version::VersionPolicy::default()
            .check(
                &crate::version::Versions::new("1.0.0".parse().unwrap()),
                &crate::version::Versions::new("2.0.0".parse().unwrap()),
            )
            .unwrap_err();
        let binary = hello::encode_rejection(&rejection);
        let phrase = close_phrase(close_code::VERSION_REJECTED, &binary);
        assert_eq!(&phrase[..], rejection.to_string().as_bytes());
        // The same bytes under another code are passed on as they are.
        let phrase = close_phrase(close_code::NORMAL, &binary);
        assert_eq!(
            phrase,
            Bytes::from(String::from_utf8_lossy(&binary).into_owned())
        );
    }
}
