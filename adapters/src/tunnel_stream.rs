//! [`Tunnel`]: the core's Noise tunnel over an async stream, itself an
//! `AsyncRead + AsyncWrite`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};
use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::tunnel::{
    FrameReader, LibraryId, LibraryKeys, MAX_PLAINTEXT_LEN, NodePair, TunnelError, TunnelHandshake,
    TunnelInfo, TunnelTransport, sealed_len,
};

use crate::stream::UnicastStream;

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelOpenError {
    /// The handshake failed: the reason is typed (unknown library, not a
    /// member, rejected by the peer, authentication failure, ...).
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// The stream failed or ended.
    #[error("tunnel stream: {0}")]
    Io(#[from] io::Error),
    /// No randomness for the tunnel's keys.
    #[error("no randomness: {0}")]
    Random(io::Error),
}

/// A stream wrapped in a library tunnel: both ends proved they are accepted
/// instances of one library, and everything read or written is encrypted
/// end to end between those instances (AES-256-GCM, Noise XX).
///
/// It implements the same traits as the stream it wraps: `futures::io`'s
/// `AsyncRead + AsyncWrite`, and tokio's with the `tokio` feature. The
/// library-scoped header and data go *inside* the tunnel.
///
/// ```no_run
/// # use pos_p2p::tunnel::{LibraryId, LibraryKeys};
/// # use pos_p2p::{Identity, RemoteIdentity, Tunnel, UnicastStream};
/// # struct Keys;
/// # impl LibraryKeys for Keys {
/// #     fn local_instance(&self, _: &LibraryId) -> Option<Identity> { None }
/// #     fn is_member(&self, _: &LibraryId, _: &RemoteIdentity) -> bool { false }
/// # }
/// # async fn sync(stream: UnicastStream, library: LibraryId) -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::AsyncWriteExt;
/// let mut tunnel = Tunnel::initiator(stream, library, &Keys).await?;
/// tunnel.write_all(b"library-scoped data").await?;
/// tunnel.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tunnel<S> {
    stream: S,
    transport: TunnelTransport,
    info: TunnelInfo,
    local_node: RemoteIdentity,
    /// Ciphertext read from the stream, not yet framed.
    read_buf: Box<[u8]>,
    read_pos: usize,
    read_len: usize,
    reader: FrameReader,
    /// Decrypted bytes not yet handed out.
    plain: Box<[u8]>,
    plain_pos: usize,
    plain_len: usize,
    /// A sealed message being written.
    write_buf: Box<[u8]>,
    write_pos: usize,
    write_len: usize,
}

impl Tunnel<UnicastStream> {
    /// Open a tunnel for `library` on a stream this node opened.
    pub async fn initiator(
        stream: UnicastStream,
        library: LibraryId,
        keys: &(dyn LibraryKeys + Sync),
    ) -> Result<Self, TunnelOpenError> {
        let nodes = NodePair {
            initiator: stream.local_identity(),
            responder: stream.remote_identity(),
        };
        Self::initiator_with(stream, nodes, library, keys).await
    }

    /// Answer a tunnel on a stream the peer opened.
    pub async fn responder(
        stream: UnicastStream,
        keys: &(dyn LibraryKeys + Sync),
    ) -> Result<Self, TunnelOpenError> {
        let nodes = NodePair {
            initiator: stream.remote_identity(),
            responder: stream.local_identity(),
        };
        Self::responder_with(stream, nodes, keys).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Tunnel<S> {
    /// Open a tunnel over any stream; `nodes` are the identities of the two
    /// nodes of the connection under it (this node as initiator).
    pub async fn initiator_with(
        stream: S,
        nodes: NodePair,
        library: LibraryId,
        keys: &(dyn LibraryKeys + Sync),
    ) -> Result<Self, TunnelOpenError> {
        let handshake = TunnelHandshake::initiator(nodes, library, keys, seed()?)?;
        Self::handshake(stream, handshake, keys, nodes.initiator).await
    }

    /// Answer a tunnel over any stream; `nodes` as for
    /// [`Tunnel::initiator_with`] (the peer as initiator).
    pub async fn responder_with(
        stream: S,
        nodes: NodePair,
        keys: &(dyn LibraryKeys + Sync),
    ) -> Result<Self, TunnelOpenError> {
        let handshake = TunnelHandshake::responder(nodes, seed()?);
        Self::handshake(stream, handshake, keys, nodes.responder).await
    }

    async fn handshake(
        mut stream: S,
        mut handshake: TunnelHandshake,
        keys: &(dyn LibraryKeys + Sync),
        local_node: RemoteIdentity,
    ) -> Result<Self, TunnelOpenError> {
        // Room for several whole messages, so that most open in place.
        let mut read_buf = vec![0u8; 256 * 1024].into_boxed_slice();
        let mut out = Vec::new();
        let (mut pos, mut len) = (0, 0);
        loop {
            handshake.take_output(&mut out);
            if !out.is_empty() {
                write_all(&mut stream, &out).await?;
                out.clear();
            }
            if handshake.is_done() {
                break;
            }
            if pos == len {
                let n = poll_fn(|cx| Pin::new(&mut stream).poll_read(cx, &mut read_buf)).await?;
                if n == 0 {
                    let error = handshake.handle_eof();
                    handshake.take_output(&mut out);
                    let _ = write_all(&mut stream, &out).await;
                    return Err(error.into());
                }
                (pos, len) = (0, n);
            }
            match handshake.handle_input(&read_buf[pos..len], keys) {
                Ok(used) => pos += used,
                Err(error) => {
                    // Send the rejection before giving up.
                    handshake.take_output(&mut out);
                    let _ = write_all(&mut stream, &out).await;
                    return Err(error.into());
                }
            }
        }
        let (transport, info) = handshake.into_transport()?;
        Ok(Self {
            stream,
            transport,
            info,
            local_node,
            read_buf,
            // Bytes after the handshake are the first transport messages.
            read_pos: pos,
            read_len: len,
            reader: FrameReader::new(),
            plain: vec![0u8; MAX_PLAINTEXT_LEN].into_boxed_slice(),
            plain_pos: 0,
            plain_len: 0,
            write_buf: vec![0u8; sealed_len(MAX_PLAINTEXT_LEN)].into_boxed_slice(),
            write_pos: 0,
            write_len: 0,
        })
    }
}

impl<S> Tunnel<S> {
    /// The library both ends proved membership of.
    pub fn library_id(&self) -> LibraryId {
        self.info.library
    }

    /// The other end's instance key (not its node identity).
    pub fn remote_instance(&self) -> RemoteIdentity {
        self.info.remote_instance
    }

    /// The node identity of the other end of the connection under the
    /// tunnel.
    pub fn node_remote_identity(&self) -> RemoteIdentity {
        if self.info.nodes.initiator == self.local_node {
            self.info.nodes.responder
        } else {
            self.info.nodes.initiator
        }
    }

    /// The stream under the tunnel.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream under the tunnel, mutably. Bytes written to it directly
    /// are not encrypted and break the tunnel; closing it directly skips
    /// the tunnel's authenticated end, so the other side reads a truncated
    /// tunnel ([`TunnelError::Truncated`]): use [`Tunnel`]'s own `close`.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl Tunnel<UnicastStream> {
    /// Refuse the stream under the tunnel for a protocol reason (see
    /// [`UnicastStream::reject`]): a header read from the tunnel that did
    /// not decode, for instance.
    pub fn reject(&mut self, why: pos_p2p_protocol::node::StreamRejection) {
        self.stream.reject(why);
    }
}

fn seed() -> Result<[u8; 32], TunnelOpenError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| TunnelOpenError::Random(crate::error::random_error(e)))?;
    Ok(seed)
}

async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

fn tunnel_io(error: TunnelError) -> io::Error {
    let kind = match error {
        TunnelError::Rejected(_) => io::ErrorKind::ConnectionReset,
        TunnelError::Buffer => io::ErrorKind::InvalidInput,
        TunnelError::Truncated => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, error)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Tunnel<S> {
    fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if self.transport.is_end_received() && self.plain_pos == self.plain_len {
                // After the other side's end nothing more is read.
                return Poll::Ready(Ok(0));
            }
            if self.plain_pos < self.plain_len {
                let n = buf.len().min(self.plain_len - self.plain_pos);
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                return Poll::Ready(Ok(n));
            }
            if self.read_pos < self.read_len {
                // Fast path: a whole message is in the read buffer and no
                // partial one is pending: open it where it lies, straight
                // into the caller's buffer when it fits.
                let available = &self.read_buf[self.read_pos..self.read_len];
                if !self.reader.is_mid_frame() && available.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([available[0], available[1]]));
                    if available.len() >= 2 + len {
                        let frame = &available[2..2 + len];
                        let plaintext_len = len.saturating_sub(16);
                        if buf.len() >= plaintext_len {
                            let n = self.transport.open(frame, buf).map_err(tunnel_io)?;
                            self.read_pos += 2 + len;
                            // 0: the other side's end (the transport
                            // remembers it).
                            return Poll::Ready(Ok(n));
                        } else {
                            let n = self
                                .transport
                                .open(frame, &mut self.plain)
                                .map_err(tunnel_io)?;
                            self.read_pos += 2 + len;
                            (self.plain_pos, self.plain_len) = (0, n);
                        }
                        continue;
                    }
                }
                let (used, complete) = self
                    .reader
                    .push(&self.read_buf[self.read_pos..self.read_len]);
                self.read_pos += used;
                if complete {
                    let n = self
                        .transport
                        .open(self.reader.frame(), &mut self.plain)
                        .map_err(tunnel_io)?;
                    self.reader.clear();
                    if n == 0 {
                        return Poll::Ready(Ok(0));
                    }
                    (self.plain_pos, self.plain_len) = (0, n);
                }
                continue;
            }
            let n = ready!(Pin::new(&mut self.stream).poll_read(cx, &mut self.read_buf))?;
            if n == 0 {
                if self.reader.is_mid_frame() {
                    return Poll::Ready(Err(tunnel_io(TunnelError::Protocol(
                        "the stream ended inside a tunnel message",
                    ))));
                }
                // Finished without the other side's end: cut short.
                self.transport.handle_eof().map_err(tunnel_io)?;
                return Poll::Ready(Ok(0));
            }
            (self.read_pos, self.read_len) = (0, n);
        }
    }

    /// Write out the sealed message in progress.
    fn poll_flush_sealed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.write_pos < self.write_len {
            let n = ready!(
                Pin::new(&mut self.stream)
                    .poll_write(cx, &self.write_buf[self.write_pos..self.write_len])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.write_pos += n;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_plain(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // One message in flight at a time: the stream's backpressure reaches
        // the writer.
        ready!(self.poll_flush_sealed(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = buf.len().min(MAX_PLAINTEXT_LEN);
        let n = self
            .transport
            .seal(&buf[..take], &mut self.write_buf)
            .map_err(tunnel_io)?;
        (self.write_pos, self.write_len) = (0, n);
        // Start sending now; what is left goes out on the next call.
        if let Poll::Ready(Err(e)) = self.poll_flush_sealed(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tunnel<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_plain(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tunnel<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_plain(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_sealed(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_sealed(cx))?;
        if !this.transport.is_end_sent() {
            // The authenticated end, so the other side can tell a complete
            // transfer from a cut one.
            let n = this
                .transport
                .seal_end(&mut this.write_buf)
                .map_err(tunnel_io)?;
            (this.write_pos, this.write_len) = (0, n);
            ready!(this.poll_flush_sealed(cx))?;
        }
        Pin::new(&mut this.stream).poll_close(cx)
    }
}

#[cfg(feature = "tokio")]
impl<S: AsyncRead + AsyncWrite + Unpin> tokio::io::AsyncRead for Tunnel<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        crate::stream::poll_read_buf(buf, |dst| this.poll_read_plain(cx, dst))
    }
}

#[cfg(feature = "tokio")]
impl<S: AsyncRead + AsyncWrite + Unpin> tokio::io::AsyncWrite for Tunnel<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_plain(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }
}
