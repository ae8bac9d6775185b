//! The header frame of a peer-opened stream, received by the node before
//! the application hears of the stream.
//!
//! Every application stream begins with one header frame (PROTOCOL.md §3).
//! The node reads that frame itself and reports
//! [`Event::IncomingStream`] only once it is complete; the application's
//! first reads then return the frame, prefix included, so
//! `Header::from_stream` works unchanged. Doing it here bounds what a peer
//! can make the node hold:
//!
//! - a header frame longer than [`Limits::max_header_len`] is refused as
//!   soon as its length prefix is complete (`HEADER_TOO_LARGE`);
//! - the bytes of header frames held per connection (being received, or
//!   complete and not yet read by the application) never exceed
//!   [`Limits::header_buffer`]: a body is started only when its whole
//!   length fits in that budget, and until then waits in QUIC's receive
//!   buffer, which flow control bounds;
//! - a header that has not arrived within [`Timeouts::header`] of the
//!   stream's opening is refused (`HEADER_TIMEOUT`), so slow or stalled
//!   headers cannot hold stream slots or budget;
//! - a stream that ends inside its header, or whose length prefix is not a
//!   minimal varint, is refused (`MALFORMED_HEADER`).
//!
//! A refused stream is stopped and reset with the code, so its stream
//! credit goes back to the peer and the peer's application gets a typed
//! error.
//!
//! [`Limits::max_header_len`]: super::Limits::max_header_len
//! [`Limits::header_buffer`]: super::Limits::header_buffer
//! [`Timeouts::header`]: super::Timeouts::header

use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ReadError, VarInt};

use super::conn::{Conn, StreamState};
use super::error::stream_code;
use super::{ConnectionId, Event, Node, StreamId};
use crate::codec::varint::{MAX_VARINT_LEN, VarintError, decode_varint};

/// Where the header of a stream stands.
#[derive(Debug, Default)]
pub(super) enum HeaderStage {
    /// No header to receive: the stream was opened by this node, or the
    /// application has read the header.
    #[default]
    Done,
    /// Reading the length prefix, one byte at a time (a longer read could
    /// take bytes past a short frame).
    Prefix {
        bytes: [u8; MAX_VARINT_LEN],
        len: usize,
    },
    /// The prefix is complete; the body waits until its length fits in the
    /// connection's header budget.
    Waiting {
        prefix: [u8; MAX_VARINT_LEN],
        prefix_len: usize,
        body_len: usize,
    },
    /// Receiving the body: `buf` holds the prefix and the body so far, and
    /// `total` bytes of budget (the whole frame) are reserved for it.
    Body { buf: Vec<u8>, total: usize },
    /// Complete and reported; what the application has not read yet, and
    /// the budget it holds until then.
    Ready { frame: Bytes, reserved: usize },
}

impl HeaderStage {
    fn prefix() -> Self {
        Self::Prefix {
            bytes: [0; MAX_VARINT_LEN],
            len: 0,
        }
    }

    /// Whether the node is still receiving this header (the application
    /// has not heard of the stream).
    pub(super) fn is_receiving(&self) -> bool {
        matches!(
            self,
            Self::Prefix { .. } | Self::Waiting { .. } | Self::Body { .. }
        )
    }

    /// The budget this stage holds.
    fn reserved(&self) -> usize {
        match self {
            Self::Body { total, .. } => *total,
            Self::Ready { reserved, .. } => *reserved,
            _ => 0,
        }
    }
}

/// What one attempt to read a header got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pulled {
    /// More bytes are needed; QUIC reports when they arrive.
    Pending,
    /// The body does not fit in the budget now.
    Waiting,
    /// The frame is complete.
    Complete,
    /// The header is invalid: refuse the stream with this code.
    Refuse(u64),
    /// The peer reset the stream before its header was complete.
    PeerReset,
    /// The stream is not receiving a header.
    NotReceiving,
}

impl Conn {
    /// Read as much of `stream`'s header as has arrived and fits.
    fn pull_header(
        &mut self,
        stream: quinn_proto::StreamId,
        max_len: usize,
        budget: usize,
    ) -> Pulled {
        let Some(state) = self.streams.get_mut(&stream) else {
            return Pulled::NotReceiving;
        };
        if !state.header.is_receiving() {
            return Pulled::NotReceiving;
        }
        let mut recv = self.quic.recv_stream(stream);
        let Ok(mut chunks) = recv.read(true) else {
            return Pulled::PeerReset;
        };
        let pulled = loop {
            match &mut state.header {
                HeaderStage::Prefix { bytes, len } => match chunks.next(1) {
                    Ok(Some(chunk)) => {
                        let Some(&byte) = chunk.bytes.first() else {
                            continue;
                        };
                        let Some(slot) = bytes.get_mut(*len) else {
                            break Pulled::Refuse(stream_code::MALFORMED_HEADER);
                        };
                        *slot = byte;
                        *len += 1;
                        match decode_varint(&bytes[..*len]) {
                            Ok(None) => {}
                            Ok(Some((body_len, _))) if body_len > max_len as u64 => {
                                break Pulled::Refuse(stream_code::HEADER_TOO_LARGE);
                            }
                            Ok(Some((body_len, _))) => {
                                state.header = HeaderStage::Waiting {
                                    prefix: *bytes,
                                    prefix_len: *len,
                                    // At most `max_len`, a usize.
                                    body_len: body_len as usize,
                                };
                            }
                            Err(VarintError::NonMinimal | VarintError::Overflow) => {
                                break Pulled::Refuse(stream_code::MALFORMED_HEADER);
                            }
                        }
                    }
                    Ok(None) => break Pulled::Refuse(stream_code::MALFORMED_HEADER),
                    Err(ReadError::Blocked) => break Pulled::Pending,
                    Err(ReadError::Reset(_)) => break Pulled::PeerReset,
                },
                HeaderStage::Waiting {
                    prefix,
                    prefix_len,
                    body_len,
                } => {
                    let total = *prefix_len + *body_len;
                    if self.header_reserved + total > budget {
                        break Pulled::Waiting;
                    }
                    self.header_reserved += total;
                    // Room for what is likely to be there; the body grows
                    // with what arrives (see below), never past `total`.
                    let mut buf = Vec::with_capacity(total.min(*prefix_len + 1024));
                    buf.extend_from_slice(&prefix[..*prefix_len]);
                    state.header = HeaderStage::Body { buf, total };
                }
                HeaderStage::Body { buf, total } => {
                    let missing = *total - buf.len();
                    if missing == 0 {
                        let frame = Bytes::from(std::mem::take(buf));
                        state.header = HeaderStage::Ready {
                            frame,
                            reserved: *total,
                        };
                        break Pulled::Complete;
                    }
                    match chunks.next(missing) {
                        Ok(Some(chunk)) => {
                            let wanted = buf.len() + chunk.bytes.len();
                            if buf.capacity() < wanted {
                                // Doubling, capped at the frame: O(n) copies
                                // however small the pieces, and never more
                                // memory than the budget reserved.
                                let target = wanted.max(buf.capacity() * 2).min(*total);
                                buf.reserve_exact(target - buf.len());
                            }
                            buf.extend_from_slice(&chunk.bytes);
                        }
                        Ok(None) => break Pulled::Refuse(stream_code::MALFORMED_HEADER),
                        Err(ReadError::Blocked) => break Pulled::Pending,
                        Err(ReadError::Reset(_)) => break Pulled::PeerReset,
                    }
                }
                HeaderStage::Done | HeaderStage::Ready { .. } => break Pulled::NotReceiving,
            }
        };
        // Flow-control credit for what was read goes out with the next
        // transmit.
        let _ = chunks.finalize();
        pulled
    }

    /// Give back the budget `stream`'s header holds and forget its
    /// deadline; the stream is no longer receiving a header.
    pub(super) fn end_header(&mut self, stream: quinn_proto::StreamId) {
        self.header_waiting.remove(&stream);
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        self.header_reserved -= state.header.reserved().min(self.header_reserved);
        if let Some(at) = state.header_deadline.take() {
            self.header_deadlines.remove(&(at, stream));
        }
        state.header = HeaderStage::Done;
    }
}

impl Node {
    /// A peer opened `stream` on established connection `id`: receive its
    /// header.
    pub(super) fn start_header(
        &mut self,
        now: Instant,
        id: ConnectionId,
        stream: quinn_proto::StreamId,
    ) {
        let deadline = now + self.config.timeouts.header;
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        conn.streams.insert(
            stream,
            StreamState {
                header: HeaderStage::prefix(),
                header_deadline: Some(deadline),
                ..StreamState::default()
            },
        );
        conn.header_deadlines.insert((deadline, stream));
        self.pull_header(now, id, stream);
    }

    /// Read what has arrived of `stream`'s header; report the stream once
    /// the header is complete, refuse it if the header is invalid.
    pub(super) fn pull_header(
        &mut self,
        now: Instant,
        id: ConnectionId,
        stream: quinn_proto::StreamId,
    ) {
        let (max_len, budget) = (
            self.config.limits.max_header_len,
            self.config.limits.header_buffer,
        );
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        // Streams that waited for budget go first, in order.
        if conn
            .header_waiting
            .first()
            .is_some_and(|first| *first < stream)
        {
            conn.header_waiting.insert(stream);
            self.pull_waiting_headers(now, id);
            return;
        }
        let pulled = conn.pull_header(stream, max_len, budget);
        self.on_pulled(now, id, stream, pulled);
        if matches!(pulled, Pulled::Refuse(_) | Pulled::PeerReset) {
            self.pull_waiting_headers(now, id);
        }
    }

    /// Budget was given back on connection `id`: start the bodies that
    /// waited for it, in the order their streams came.
    pub(super) fn pull_waiting_headers(&mut self, now: Instant, id: ConnectionId) {
        let (max_len, budget) = (
            self.config.limits.max_header_len,
            self.config.limits.header_buffer,
        );
        loop {
            let Some(conn) = live_conn!(self, id) else {
                return;
            };
            let Some(&stream) = conn.header_waiting.first() else {
                return;
            };
            let pulled = conn.pull_header(stream, max_len, budget);
            if pulled == Pulled::Waiting {
                return;
            }
            conn.header_waiting.remove(&stream);
            // The body started: its deadline runs from now.
            if let Some(state) = conn.streams.get_mut(&stream)
                && state.header_deadline.is_none()
                && state.header.is_receiving()
            {
                let at = now + self.config.timeouts.header;
                state.header_deadline = Some(at);
                conn.header_deadlines.insert((at, stream));
            }
            self.on_pulled(now, id, stream, pulled);
        }
    }

    fn on_pulled(
        &mut self,
        now: Instant,
        id: ConnectionId,
        stream: quinn_proto::StreamId,
        pulled: Pulled,
    ) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        match pulled {
            Pulled::Pending | Pulled::NotReceiving => {}
            Pulled::Waiting => {
                // Waiting for room, the header's clock stops: the room is
                // held by bodies on deadlines of their own, or by headers the
                // application has not read yet (its own backlog).
                conn.header_waiting.insert(stream);
                if let Some(state) = conn.streams.get_mut(&stream)
                    && let Some(at) = state.header_deadline.take()
                {
                    conn.header_deadlines.remove(&(at, stream));
                }
            }
            Pulled::Complete => {
                if let Some(state) = conn.streams.get_mut(&stream)
                    && let Some(at) = state.header_deadline.take()
                {
                    conn.header_deadlines.remove(&(at, stream));
                }
                let Some(peer) = conn.remote.filter(|_| conn.phase.is_established()) else {
                    return;
                };
                conn.last_activity = now;
                self.events.push_back(Event::IncomingStream {
                    peer,
                    stream: StreamId {
                        conn: id,
                        id: stream,
                    },
                });
            }
            Pulled::Refuse(code) => self.refuse_stream(id, stream, code),
            Pulled::PeerReset => {
                // The peer gave the stream up: close our half too, so the
                // stream is freed.
                conn.end_header(stream);
                let _ = conn.quic.send_stream(stream).reset(VarInt::from_u32(0));
                conn.streams.remove(&stream);
                self.close_if_drained_duplicate(id);
            }
        }
    }

    /// Refuse a peer-opened stream the application has not seen: stop
    /// reading and reset, both with `code`.
    pub(super) fn refuse_stream(
        &mut self,
        id: ConnectionId,
        stream: quinn_proto::StreamId,
        code: u64,
    ) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        conn.end_header(stream);
        let code_varint = VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0));
        let _ = conn.quic.recv_stream(stream).stop(code_varint);
        let _ = conn.quic.send_stream(stream).reset(code_varint);
        conn.streams.remove(&stream);
        self.active.insert(id);
        match code {
            stream_code::HEADER_TOO_LARGE => self.stats.headers_too_large += 1,
            stream_code::HEADER_TIMEOUT => self.stats.headers_timed_out += 1,
            _ => self.stats.headers_malformed += 1,
        }
        self.close_if_drained_duplicate(id);
    }

    /// Refuse the streams of connection `id` whose header is overdue.
    pub(super) fn expire_headers(&mut self, now: Instant, id: ConnectionId) {
        loop {
            let Some(conn) = live_conn!(self, id) else {
                return;
            };
            if conn
                .header_deadlines
                .first()
                .is_none_or(|(at, _)| *at > now)
            {
                break;
            }
            // Taken off first, so the loop ends even if the stream is gone.
            let Some((_, stream)) = conn.header_deadlines.pop_first() else {
                break;
            };
            if let Some(state) = conn.streams.get_mut(&stream) {
                state.header_deadline = None;
            }
            self.refuse_stream(id, stream, stream_code::HEADER_TIMEOUT);
        }
        self.pull_waiting_headers(now, id);
    }

    /// The application takes up to `max` bytes of `stream`'s header, if
    /// some are left to read. Gives the budget back once it is all read.
    pub(super) fn read_header(
        &mut self,
        now: Instant,
        stream: StreamId,
        max: usize,
    ) -> Option<Bytes> {
        let conn = self.conns.get_mut(&stream.conn)?;
        let state = conn.streams.get_mut(&stream.id)?;
        let HeaderStage::Ready { frame, .. } = &mut state.header else {
            return None;
        };
        let taken = frame.split_to(max.min(frame.len()));
        if frame.is_empty() {
            conn.end_header(stream.id);
            self.pull_waiting_headers(now, stream.conn);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_buffering_stages_hold_budget() {
        assert_eq!(HeaderStage::prefix().reserved(), 0);
        assert!(HeaderStage::prefix().is_receiving());
        let body = HeaderStage::Body {
            buf: Vec::new(),
            total: 70,
        };
        assert_eq!(body.reserved(), 70);
        let ready = HeaderStage::Ready {
            frame: Bytes::from_static(b"x"),
            reserved: 70,
        };
        assert_eq!(ready.reserved(), 70);
        assert!(!ready.is_receiving());
        assert_eq!(HeaderStage::Done.reserved(), 0);
    }
}
