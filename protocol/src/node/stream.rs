//! Application streams: the commands on them, and what QUIC reports about
//! them.
//!
//! Every path that ends a stream gives its stream credit back to the peer:
//! a sending half the peer stopped is reset at once (RFC 9000 §3.5 says it
//! must be), a stream whose header is refused is stopped and reset, and
//! [`Node::release`] closes whatever half the application left open.

use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{Dir, StreamEvent, VarInt};

use super::conn::{Conn, Phase, StreamState};
use super::error::stream_code;
use super::hello::close_code;
use super::{
    ConnectionId, DisconnectReason, Event, Node, ReadOutcome, SendStatus, StreamError, StreamId,
    Violation,
};

impl Node {
    /// Open a bidirectional stream to a connected peer. The first bytes
    /// written on it must be the application's header frame.
    pub fn open_stream(
        &mut self,
        now: Instant,
        peer: &crate::RemoteIdentity,
    ) -> Result<StreamId, StreamError> {
        self.now = self.now.max(now);
        let conn_id = self.primary(peer).ok_or(StreamError::NotConnected)?;
        self.active.insert(conn_id);
        let conn = self
            .conns
            .get_mut(&conn_id)
            .ok_or(StreamError::NotConnected)?;
        let id = conn
            .quic
            .streams()
            .open(Dir::Bi)
            .ok_or(StreamError::StreamsExhausted)?;
        conn.streams.insert(id, StreamState::default());
        conn.opened += 1;
        // The application wants this peer (for a while: see admission).
        conn.opened_at = Some(now);
        conn.last_activity = now;
        Ok(StreamId { conn: conn_id, id })
    }

    /// Write as much of `data` as flow control and the send window allow;
    /// returns how much was taken.
    pub fn write(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let conn = self.app_stream(stream)?;
        let stopped = conn.streams.get(&stream.id).and_then(|s| s.stopped);
        conn.quic
            .send_stream(stream.id)
            .write(data)
            .map_err(|e| write_error(e, stopped))
    }

    /// Like [`Node::write`], without copying: QUIC keeps the `Bytes` it
    /// takes as they are. Takes as much as flow control and the send
    /// window allow, advancing (or emptying) `data`; returns how many bytes
    /// were taken.
    pub fn write_chunks(
        &mut self,
        stream: StreamId,
        data: &mut [Bytes],
    ) -> Result<usize, StreamError> {
        let conn = self.app_stream(stream)?;
        let stopped = conn.streams.get(&stream.id).and_then(|s| s.stopped);
        conn.quic
            .send_stream(stream.id)
            .write_chunks(data)
            .map(|written| written.bytes)
            .map_err(|e| write_error(e, stopped))
    }

    /// Read up to `max` bytes, in order. On a stream the peer opened, the
    /// first bytes are its header frame, prefix included.
    ///
    /// A read leaves the connection with something to send only when QUIC
    /// says so (flow-control credit worth sending, or the stream's end);
    /// [`Node::wants_transmit`] tells a driver whether it needs a turn.
    pub fn read(&mut self, stream: StreamId, max: usize) -> Result<ReadOutcome, StreamError> {
        let conn = self.app_stream_quiet(stream)?;
        if has_header(conn, stream.id) {
            // Taking the header may let waiting headers in: look again.
            self.active.insert(stream.conn);
            if let Some(header) = self.read_header(self.now, stream, max) {
                return Ok(ReadOutcome::Data(header));
            }
        }
        let conn = self.app_stream_quiet(stream)?;
        let mut recv = conn.quic.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let outcome = match chunks.next(max) {
            Ok(Some(chunk)) => ReadOutcome::Data(chunk.bytes),
            Ok(None) => ReadOutcome::Finished,
            Err(quinn_proto::ReadError::Blocked) => ReadOutcome::Blocked,
            Err(quinn_proto::ReadError::Reset(code)) => ReadOutcome::Reset(code.into_inner()),
        };
        // Flow-control credit goes out with the next poll_transmit, if QUIC
        // finds it worth a packet.
        if chunks.finalize().should_transmit() {
            self.active.insert(stream.conn);
        }
        if matches!(outcome, ReadOutcome::Finished | ReadOutcome::Reset(_)) {
            self.active.insert(stream.conn);
            self.stream_half_done(stream, false);
        }
        Ok(outcome)
    }

    /// Whether a command left a connection with something to send or a
    /// deadline to look at again since the last `poll_transmit` and
    /// `poll_timeout`: a driver that gets `false` after a command needs no
    /// turn for it.
    pub fn wants_transmit(&self) -> bool {
        !self.active.is_empty()
    }

    /// Throw away everything received on `stream` so far. Returns whether
    /// the peer has ended its side (finished or reset): then there is no
    /// need to ask it to stop sending.
    pub fn discard_received(&mut self, stream: StreamId) -> Result<bool, StreamError> {
        let conn = self.app_stream(stream)?;
        let header_dropped = discard_header(conn, stream.id);
        let ended = match conn.quic.recv_stream(stream.id).read(true) {
            Ok(mut chunks) => {
                let ended = loop {
                    match chunks.next(usize::MAX) {
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => break true,
                        Err(quinn_proto::ReadError::Blocked) => break false,
                    }
                };
                let _ = chunks.finalize();
                Ok(ended)
            }
            Err(_) => Err(StreamError::Closed),
        };
        if ended == Ok(true) {
            self.stream_half_done(stream, false);
        }
        // Also on error: the header's budget came back either way.
        if header_dropped {
            self.pull_waiting_headers(self.now, stream.conn);
        }
        ended
    }

    /// Finish the sending half: the peer reads to the end, then sees
    /// [`ReadOutcome::Finished`]. Fails with [`StreamError::Stopped`] if
    /// the peer stopped the stream (it was reset in answer).
    pub fn finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let conn = self.app_stream(stream)?;
        let stopped = conn.streams.get(&stream.id).and_then(|s| s.stopped);
        let result = conn
            .quic
            .send_stream(stream.id)
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(code) => StreamError::Stopped(code.into_inner()),
                quinn_proto::FinishError::ClosedStream => {
                    stopped.map_or(StreamError::Closed, StreamError::Stopped)
                }
            });
        match result {
            Ok(()) => {
                if let Some(state) = self
                    .conns
                    .get_mut(&stream.conn)
                    .and_then(|c| c.streams.get_mut(&stream.id))
                {
                    state.send_finished = true;
                }
            }
            // Nothing more will be sent: the application has seen the stop.
            Err(StreamError::Stopped(code)) => {
                if let Some(state) = self
                    .conns
                    .get_mut(&stream.conn)
                    .and_then(|c| c.streams.get_mut(&stream.id))
                {
                    state.stopped.get_or_insert(code);
                }
                self.stream_half_done(stream, true);
            }
            Err(_) => {}
        }
        result
    }

    /// Abandon the sending half; the peer sees [`ReadOutcome::Reset`].
    /// Applications use codes from
    /// [`stream_code::FIRST_APPLICATION_CODE`] up.
    pub fn reset(&mut self, stream: StreamId, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::InvalidCode(code))?;
        let conn = self.app_stream(stream)?;
        let stopped = conn
            .streams
            .get(&stream.id)
            .is_some_and(|s| s.stopped.is_some());
        let result = conn.quic.send_stream(stream.id).reset(code);
        // A stream reset in answer to a stop is reset already.
        if result.is_err() && !stopped {
            return Err(StreamError::Closed);
        }
        self.stream_half_done(stream, true);
        Ok(())
    }

    /// Stop reading: ask the peer to stop sending with `code`. Applications
    /// use codes from [`stream_code::FIRST_APPLICATION_CODE`] up.
    pub fn stop(&mut self, stream: StreamId, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::InvalidCode(code))?;
        let conn = self.app_stream(stream)?;
        let header_dropped = discard_header(conn, stream.id);
        let result = conn
            .quic
            .recv_stream(stream.id)
            .stop(code)
            .map_err(|_| StreamError::Closed);
        if result.is_ok() {
            self.stream_half_done(stream, false);
        }
        // Also on error: the header's budget came back either way.
        if header_dropped {
            self.pull_waiting_headers(self.now, stream.conn);
        }
        result
    }

    /// Refuse `stream` for a protocol reason (PROTOCOL.md §3.1): stop its
    /// receiving half and reset its sending half, each if still open, with
    /// `why`'s code (a code QUIC cannot carry becomes
    /// [`stream_code::REFUSED`]). The peer's reads and writes fail with it.
    pub fn reject(&mut self, stream: StreamId, why: super::StreamRejection) {
        let code = Some(why.code())
            .filter(|code| VarInt::from_u64(*code).is_ok())
            .unwrap_or(stream_code::REFUSED);
        let _ = self.stop(stream, code);
        let _ = self.reset(stream, code);
    }

    /// The application is done with `stream` (its handle is gone): finish
    /// the sending half if it is still open (written data is still
    /// delivered), and if the peer has not ended its side, throw away what
    /// arrived and ask it to stop ([`stream_code::CLOSED`]). Whatever the
    /// state, the stream's credit comes back to both sides.
    pub fn release(&mut self, stream: StreamId) {
        let Ok(conn) = self.app_stream(stream) else {
            return;
        };
        conn.ended_sends.remove(&stream.id);
        if let Some(state) = conn.streams.get_mut(&stream.id) {
            state.released = true;
        }
        let Some(state) = conn.streams.get(&stream.id) else {
            return;
        };
        let (send_done, recv_done, stopped) = (state.send_done, state.recv_done, state.stopped);
        if let Some(state) = conn.streams.get_mut(&stream.id) {
            state.send_finished = true;
        }
        // A finished half becomes done once the peer acknowledged it all
        // (`StreamEvent::Finished`), or once a stop arrives (the half is
        // reset then, never acknowledged); a stopped one was reset when the
        // stop arrived, and is done now.
        if !send_done && conn.quic.send_stream(stream.id).finish().is_err() && stopped.is_some() {
            self.stream_half_done(stream, true);
        }
        if !recv_done {
            let ended = self.discard_received(stream).unwrap_or(true);
            if !ended {
                let _ = self.stop(stream, stream_code::CLOSED);
            }
        }
    }

    /// Where the sending half of `stream` stands: still sending (or waiting
    /// for the peer's acknowledgement), acknowledged in full, stopped by the
    /// peer, or reset. Answers for a stream the application holds until it
    /// [releases](Node::release) it, even after both halves ended, and
    /// after its connection closed if the outcome was known by then; a half
    /// still sending when its connection closed fails with
    /// [`StreamError::NotConnected`], an unknown or released stream with
    /// [`StreamError::UnknownStream`]. [`Event::StreamFinished`],
    /// [`Event::StreamStopped`] and [`Event::StreamWritable`] (sent for
    /// every stream of a connection that ends) tell when to ask again.
    pub fn send_status(&self, stream: StreamId) -> Result<SendStatus, StreamError> {
        let conn = self
            .conns
            .get(&stream.conn)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(status) = conn.ended_sends.get(&stream.id) {
            return Ok(*status);
        }
        if Some(stream.id) == conn.control {
            return Err(StreamError::UnknownStream);
        }
        let state = conn
            .streams
            .get(&stream.id)
            .filter(|s| s.is_known_to_app() && !s.released)
            .ok_or(StreamError::UnknownStream)?;
        match state.send_status() {
            SendStatus::Sending if conn.phase.is_closed() => Err(StreamError::NotConnected),
            status => Ok(status),
        }
    }

    /// The peer on the other end of a stream.
    pub fn stream_peer(&self, stream: StreamId) -> Option<crate::RemoteIdentity> {
        self.conns.get(&stream.conn).and_then(|c| c.remote)
    }

    pub(super) fn app_stream(&mut self, stream: StreamId) -> Result<&mut Conn, StreamError> {
        self.active.insert(stream.conn);
        self.app_stream_quiet(stream)
    }

    /// [`Node::app_stream`] without marking the connection active.
    fn app_stream_quiet(&mut self, stream: StreamId) -> Result<&mut Conn, StreamError> {
        let conn = self
            .conns
            .get_mut(&stream.conn)
            .ok_or(StreamError::UnknownStream)?;
        if Some(stream.id) == conn.control || conn.phase.is_closed() {
            return Err(StreamError::UnknownStream);
        }
        Ok(conn)
    }

    pub(super) fn stream_half_done(&mut self, stream: StreamId, send: bool) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        if let Some(state) = conn.streams.get_mut(&stream.id) {
            if send {
                state.send_done = true;
            } else {
                state.recv_done = true;
            }
            if state.send_done && state.recv_done {
                let known = state.is_known_to_app();
                if known && !state.released {
                    // The application may still ask how its sending ended.
                    conn.ended_sends.insert(stream.id, state.send_status());
                }
                conn.end_header(stream.id);
                conn.streams.remove(&stream.id);
                if known {
                    conn.last_activity = now;
                }
            }
        }
        self.close_if_drained_duplicate(stream.conn);
    }

    pub(super) fn on_stream_event(&mut self, now: Instant, id: ConnectionId, event: StreamEvent) {
        let Some(conn) = live_conn!(self, id) else {
            return;
        };
        match event {
            StreamEvent::Opened { dir: Dir::Bi } => {
                self.accept_streams(now, id);
                self.read_control(now, id);
            }
            StreamEvent::Available { dir: Dir::Bi } => {
                if let (Phase::Established, Some(peer)) = (&conn.phase, conn.remote) {
                    self.events.push_back(Event::StreamsAvailable { peer });
                }
            }
            StreamEvent::Opened { dir: Dir::Uni } | StreamEvent::Available { dir: Dir::Uni } => {}
            StreamEvent::Readable { id: stream } => {
                if Some(stream) == conn.control {
                    self.read_control(now, id);
                    return;
                }
                let Some(state) = conn.streams.get(&stream) else {
                    return;
                };
                if state.header.is_receiving() {
                    self.pull_header(now, id, stream);
                } else if conn.phase.is_established() {
                    self.events.push_back(Event::StreamReadable(StreamId {
                        conn: id,
                        id: stream,
                    }));
                }
            }
            StreamEvent::Writable { id: stream } => {
                if Some(stream) == conn.control {
                    super::conn::flush_control(conn);
                } else if conn.streams.contains_key(&stream) {
                    self.events.push_back(Event::StreamWritable(StreamId {
                        conn: id,
                        id: stream,
                    }));
                }
            }
            StreamEvent::Finished { id: stream } => {
                if Some(stream) == conn.control {
                    // The Goodbye was acknowledged: close for real.
                    if let Some((code, reason, _)) = conn.pending_close.take() {
                        conn.quic.close(now, VarInt::from_u32(code as u32), reason);
                    }
                } else if let Some(state) = conn.streams.get_mut(&stream) {
                    state.acknowledged = true;
                    let stream = StreamId {
                        conn: id,
                        id: stream,
                    };
                    self.events.push_back(Event::StreamFinished(stream));
                    self.stream_half_done(stream, true);
                }
            }
            StreamEvent::Stopped {
                id: stream,
                error_code,
            } => {
                if Some(stream) == conn.control {
                    self.close_conn(
                        now,
                        id,
                        close_code::PROTOCOL_VIOLATION,
                        Bytes::from_static(b"control stream stopped"),
                        DisconnectReason::ProtocolViolation(Violation::ControlStreamStopped),
                    );
                    return;
                }
                let Some(state) = conn.streams.get_mut(&stream) else {
                    return;
                };
                // RFC 9000 §3.5: a stopped sending half must be reset, or the
                // peer never learns the stream's final size and never gets
                // its stream credit back. Done here, whatever the
                // application does with the stream.
                state.stopped = Some(error_code.into_inner());
                if conn.quic.send_stream(stream).reset(error_code).is_ok() {
                    self.stats.streams_reset_on_stop += 1;
                }
                let (known, finished) = (state.is_known_to_app(), state.send_finished);
                let stream = StreamId {
                    conn: id,
                    id: stream,
                };
                if finished {
                    // Finished or released: the reset half will never be
                    // acknowledged as finished, and nobody will ask again.
                    self.stream_half_done(stream, true);
                }
                if known {
                    self.events.push_back(Event::StreamStopped {
                        stream,
                        code: error_code.into_inner(),
                    });
                }
            }
        }
    }
}

/// Drop the unread header of a stream; whether there was one (its budget
/// came back).
fn discard_header(conn: &mut Conn, stream: quinn_proto::StreamId) -> bool {
    let held = conn
        .streams
        .get(&stream)
        .is_some_and(|s| !matches!(s.header, super::header::HeaderStage::Done));
    if held {
        conn.end_header(stream);
    }
    held
}

/// Whether the node holds `stream`'s header frame for the application's
/// first reads.
fn has_header(conn: &Conn, stream: quinn_proto::StreamId) -> bool {
    conn.streams
        .get(&stream)
        .is_some_and(|s| matches!(s.header, super::header::HeaderStage::Ready { .. }))
}

/// A write's error as the application sees it; `stopped` is the code the
/// peer's STOP_SENDING carried, if it sent one.
fn write_error(error: quinn_proto::WriteError, stopped: Option<u64>) -> StreamError {
    match error {
        quinn_proto::WriteError::Blocked => StreamError::Blocked,
        quinn_proto::WriteError::Stopped(code) => StreamError::Stopped(code.into_inner()),
        // Reset in answer to the peer's STOP_SENDING.
        quinn_proto::WriteError::ClosedStream => {
            stopped.map_or(StreamError::Closed, StreamError::Stopped)
        }
    }
}
