//! [`UnicastStream`]: one bidirectional stream to a peer, as
//! `AsyncRead + AsyncWrite`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::{
    ReadOutcome, SendStatus, StreamError, StreamId, StreamRejection, stream_code,
};

use crate::driver::Shared;

/// A bidirectional stream to a peer: `futures::io::{AsyncRead, AsyncWrite}`
/// and, with the `tokio` feature, `tokio::io::{AsyncRead, AsyncWrite}`.
///
/// Writes are accepted only as far as QUIC flow control and the send window
/// allow; a writer that outpaces the network waits. Reads hand out what has
/// arrived, in order; `Ok(0)` means the peer finished the stream.
///
/// `close()` (futures) or `shutdown()` (tokio) finishes the sending half:
/// the peer reads everything written, then the end. If the peer has
/// already dropped its side (stop code 0), there is nothing to finish and
/// `close` succeeds; a peer that stopped with another code makes it fail.
/// Dropping the stream finishes the sending half too if it is still open
/// (written data is still delivered), and asks the peer to stop sending if
/// the peer has not finished its side. Either way the stream's slot comes
/// back to both nodes: a sending half the peer stopped is reset at once.
///
/// Errors are `io::Error`s whose inner error, where there is one, is a
/// [`StreamReset`] (the peer reset the stream: kind `ConnectionReset`) or a
/// [`StreamError`] (`Stopped`: the peer stopped it, kind `BrokenPipe`;
/// `NotConnected`: the connection is gone). Both name the peer's reason as
/// a [`StreamRejection`]: for example
/// [`StreamRejection::UnknownOperation`] from a peer that does not know the
/// header's operation.
#[derive(Debug)]
pub struct UnicastStream {
    shared: Arc<Shared>,
    id: StreamId,
    local: RemoteIdentity,
    remote: RemoteIdentity,
    send_closed: bool,
    recv_done: bool,
    /// The receiving half ended: `None` finished, `Some(code)` reset.
    recv_end: Option<Option<u64>>,
    /// The stream's tracing span (its id and peer), entered by every
    /// operation on it.
    span: tracing::Span,
}

impl UnicastStream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: StreamId,
        local: RemoteIdentity,
        remote: RemoteIdentity,
        node_span: &tracing::Span,
    ) -> Self {
        Self {
            shared,
            id,
            local,
            remote,
            send_closed: false,
            recv_done: false,
            recv_end: None,
            span: tracing::debug_span!(parent: node_span, "stream", id = ?id, peer = %remote),
        }
    }

    /// The stream's id in the node.
    pub(crate) fn id(&self) -> StreamId {
        self.id
    }

    /// The peer on the other end.
    pub fn remote_identity(&self) -> RemoteIdentity {
        self.remote
    }

    /// This node's identity.
    pub fn local_identity(&self) -> RemoteIdentity {
        self.local
    }

    /// Abandon the sending half with an application error code (at least
    /// [`stream_code::FIRST_APPLICATION_CODE`]; lower codes are the
    /// protocol's); the peer's reads fail with that code.
    pub fn reset(&mut self, code: u64) -> io::Result<()> {
        let _entered = self.span.clone().entered();
        tracing::trace!(code, "reset");
        application_code(code)?;
        let mut state = self.shared.lock();
        self.send_closed = true;
        let result = state.node.reset(self.id, code).map_err(to_io);
        state.wake_driver();
        result
    }

    /// Stop reading: ask the peer to stop sending, with an application error
    /// code (at least [`stream_code::FIRST_APPLICATION_CODE`]).
    pub fn stop(&mut self, code: u64) -> io::Result<()> {
        let _entered = self.span.clone().entered();
        tracing::trace!(code, "stop");
        application_code(code)?;
        let mut state = self.shared.lock();
        self.recv_done = true;
        let result = state.node.stop(self.id, code).map_err(to_io);
        state.wake_driver();
        result
    }

    /// Refuse the stream for a protocol reason (an operation this
    /// application does not know, a header it cannot decode, ...): stop
    /// reading and reset, both with the reason's code, so the peer's
    /// application gets that [`StreamRejection`] as a typed error.
    /// `Header::from_stream` does this itself when the header does not
    /// decode.
    pub fn reject(&mut self, why: StreamRejection) {
        let _entered = self.span.clone().entered();
        tracing::debug!(?why, "rejected");
        let mut state = self.shared.lock();
        state.node.reject(self.id, why);
        self.recv_done = true;
        self.send_closed = true;
        state.wake_driver();
    }

    /// Finish the sending half (if it is still open) and wait until the
    /// peer has received every byte written: its QUIC stack acknowledged
    /// them all. (Whether its application read them is for the application
    /// protocol to say, with a reply.) Use it before forgetting what was
    /// sent, for example before deleting a file that was sent.
    ///
    /// Fails with [`StreamError::Stopped`] and the peer's code if the peer
    /// stopped the stream (code 0 too: it did not take everything),
    /// [`StreamError::Closed`] if this side reset it, and
    /// [`StreamError::NotConnected`] if the connection ended first.
    /// Dropping the future leaves the stream finished.
    pub async fn finished(&mut self) -> io::Result<()> {
        if !self.send_closed {
            let _entered = self.span.clone().entered();
            let mut state = self.shared.lock();
            self.send_closed = true;
            let result = state.node.finish(self.id);
            state.wake_driver();
            match result {
                // `Closed`: reset already; the status below says so.
                Ok(()) | Err(StreamError::Closed) => {}
                Err(error) => return Err(to_io(error)),
            }
        }
        std::future::poll_fn(|cx| self.poll_finished(cx)).await
    }

    fn poll_finished(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _entered = self.span.clone().entered();
        let mut state = self.shared.lock();
        let error = match state.node.send_status(self.id) {
            Ok(SendStatus::Acknowledged) => return Poll::Ready(Ok(())),
            Ok(SendStatus::Stopped(code)) => StreamError::Stopped(code),
            Ok(SendStatus::Reset) => StreamError::Closed,
            Ok(_) if state.stopped => StreamError::NotConnected,
            Ok(_) => {
                // Woken by StreamFinished, StreamStopped, or the
                // connection's end (StreamWritable).
                state.writers.insert(self.id, cx.waker().clone());
                return Poll::Pending;
            }
            Err(StreamError::UnknownStream) => StreamError::NotConnected,
            Err(error) => error,
        };
        Poll::Ready(Err(to_io(error)))
    }

    /// Write all of `data` without copying it: QUIC keeps the `Bytes` as
    /// they are until they are acknowledged. For callers that hold `Bytes`
    /// already (a file read into `BytesMut`, a shared buffer); otherwise
    /// `write_all` is the same.
    pub async fn write_chunk(&mut self, mut data: Bytes) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_chunk(cx, &mut data)).await
    }

    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        let _entered = self.span.clone().entered();
        let mut state = self.shared.lock();
        while !data.is_empty() {
            match state.node.write_chunks(self.id, std::slice::from_mut(data)) {
                Ok(_) => state.wake_driver(),
                Err(StreamError::Blocked) => {
                    if state.stopped {
                        return Poll::Ready(Err(to_io(StreamError::NotConnected)));
                    }
                    state.writers.insert(self.id, cx.waker().clone());
                    return Poll::Pending;
                }
                Err(error) => return Poll::Ready(Err(to_io(error))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The next piece of the stream as QUIC received it (about a packet's
    /// worth, at most `max` bytes), without copying; `None` at the end.
    /// A reset fails as `read` does ([`StreamReset`]).
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        let _entered = self.span.clone().entered();
        match self.recv_end {
            Some(None) => return Poll::Ready(Ok(None)),
            Some(Some(code)) => {
                return Poll::Ready(Err(reset_error(code)));
            }
            None => {}
        }
        let mut state = self.shared.lock();
        let result = match state.node.read(self.id, max.max(1)) {
            Ok(ReadOutcome::Data(bytes)) => Poll::Ready(Ok(Some(bytes))),
            Ok(ReadOutcome::Finished) => {
                self.recv_done = true;
                self.recv_end = Some(None);
                Poll::Ready(Ok(None))
            }
            Ok(ReadOutcome::Reset(code)) => {
                self.recv_done = true;
                self.recv_end = Some(Some(code));
                Poll::Ready(Err(reset_error(code)))
            }
            Ok(ReadOutcome::Blocked) => {
                if state.stopped {
                    Poll::Ready(Err(to_io(StreamError::NotConnected)))
                } else {
                    state.readers.insert(self.id, cx.waker().clone());
                    Poll::Pending
                }
            }
            Err(error) => Poll::Ready(Err(to_io(error))),
        };
        if state.node.wants_transmit() {
            state.wake_driver();
        }
        result
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let _entered = self.span.clone().entered();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.recv_end {
            Some(None) => return Poll::Ready(Ok(0)),
            Some(Some(code)) => {
                return Poll::Ready(Err(reset_error(code)));
            }
            None => {}
        }
        let mut state = self.shared.lock();
        // quinn hands out one received chunk (about a packet) per read: fill
        // the caller's buffer from as many as are there, and wake the driver
        // once per call, not per packet, and only if QUIC has something to
        // send (flow-control credit worth a packet, the stream's end).
        let mut filled = 0;
        let result = loop {
            if filled == buf.len() {
                break Poll::Ready(Ok(filled));
            }
            match state.node.read(self.id, buf.len() - filled) {
                Ok(ReadOutcome::Data(bytes)) => {
                    buf[filled..filled + bytes.len()].copy_from_slice(&bytes);
                    filled += bytes.len();
                }
                Ok(ReadOutcome::Reset(code)) if filled == 0 => {
                    self.recv_done = true;
                    self.recv_end = Some(Some(code));
                    break Poll::Ready(Err(reset_error(code)));
                }
                // The end or the reset is reported by the next call (QUIC
                // forgets the stream once it has said so).
                Ok(ReadOutcome::Finished) => {
                    self.recv_done = true;
                    self.recv_end = Some(None);
                    break Poll::Ready(Ok(filled));
                }
                Ok(ReadOutcome::Reset(code)) => {
                    self.recv_done = true;
                    self.recv_end = Some(Some(code));
                    break Poll::Ready(Ok(filled));
                }
                Ok(ReadOutcome::Blocked) if filled > 0 => break Poll::Ready(Ok(filled)),
                Ok(ReadOutcome::Blocked) => {
                    if state.stopped {
                        break Poll::Ready(Err(to_io(StreamError::NotConnected)));
                    }
                    state.readers.insert(self.id, cx.waker().clone());
                    break Poll::Pending;
                }
                Err(error) => break partial_or(filled, error),
            }
        };
        if state.node.wants_transmit() {
            state.wake_driver();
        }
        result
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let _entered = self.span.clone().entered();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut state = self.shared.lock();
        match state.node.write(self.id, buf) {
            Ok(n) => {
                state.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(StreamError::Blocked) => {
                if state.stopped {
                    return Poll::Ready(Err(to_io(StreamError::NotConnected)));
                }
                state.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(to_io(error))),
        }
    }

    fn poll_close_inner(&mut self) -> Poll<io::Result<()>> {
        let _entered = self.span.clone().entered();
        if self.send_closed {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.shared.lock();
        self.send_closed = true;
        let result = match state.node.finish(self.id) {
            // The peer dropped its side without reading to the end after
            // taking what it wanted (code 0, what a dropped stream sends):
            // nothing is left to finish. Other codes are the peer's
            // application saying no, and stay errors.
            Ok(()) | Err(StreamError::Stopped(0)) => Ok(()),
            Err(error) => Err(to_io(error)),
        };
        state.wake_driver();
        Poll::Ready(result)
    }
}

/// The peer reset the stream with this error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer reset the stream: {}", self.rejection())]
pub struct StreamReset(pub u64);

impl StreamReset {
    /// What the code means (PROTOCOL.md §3.1).
    pub fn rejection(&self) -> StreamRejection {
        StreamRejection::from_code(self.0)
    }
}

/// What a read that failed after copying `filled` bytes returns: those
/// bytes (the error comes again with the next read), or the error if there
/// are none. (No failure is known to follow data within one read: the
/// stream cannot change between the two calls, and QUIC reports its end or
/// reset before it forgets it. This keeps bytes already copied from being
/// lost if that ever changes.)
fn partial_or(filled: usize, error: StreamError) -> Poll<io::Result<usize>> {
    if filled > 0 {
        Poll::Ready(Ok(filled))
    } else {
        Poll::Ready(Err(to_io(error)))
    }
}

/// Codes below `FIRST_APPLICATION_CODE` are the protocol's, and a code
/// must be a QUIC varint (below 2^62).
fn application_code(code: u64) -> io::Result<()> {
    if !(stream_code::FIRST_APPLICATION_CODE..1 << 62).contains(&code) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            StreamError::InvalidCode(code),
        ));
    }
    Ok(())
}

/// What a read returns once the peer reset the stream with `code`.
fn reset_error(code: u64) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, StreamReset(code))
}

fn to_io(error: StreamError) -> io::Error {
    let kind = match error {
        StreamError::Stopped(_) => io::ErrorKind::BrokenPipe,
        StreamError::NotConnected | StreamError::UnknownStream => io::ErrorKind::NotConnected,
        StreamError::Blocked => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

impl Drop for UnicastStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        // The core finishes what is still open, stops what the peer still
        // sends, and resets a half the peer stopped: every path gives the
        // stream's slot back.
        state.node.release(self.id);
        state.readers.remove(&self.id);
        state.writers.remove(&self.id);
        state.wake_driver();
    }
}

impl futures_io::AsyncRead for UnicastStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_inner(cx, buf)
    }
}

impl futures_io::AsyncWrite for UnicastStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already with QUIC, which sends it as fast as
        // congestion control allows.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner()
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncRead for UnicastStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read_buf(buf, |dst| this.poll_read_inner(cx, dst))
    }
}

/// tokio's `poll_read` (a `ReadBuf`) in terms of a slice reader.
#[cfg(feature = "tokio")]
pub(crate) fn poll_read_buf(
    buf: &mut tokio::io::ReadBuf<'_>,
    read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<()>> {
    let n = std::task::ready!(read(buf.initialize_unfilled()))?;
    buf.advance(n);
    Poll::Ready(Ok(()))
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncWrite for UnicastStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner()
    }
}
