//! Reading an application [`Header`] from the start of a stream.

use std::any::Any;
use std::future::poll_fn;
use std::pin::Pin;

use pos_p2p_protocol::codec::Header;
use pos_p2p_protocol::node::StreamRejection;

use crate::error::HeaderError;
use crate::{Tunnel, UnicastStream};

/// `Header::from_stream(&mut stream).await` for every application
/// [`Header`]. Bring it into scope with `use pos_p2p::HeaderExt;` (or
/// `pos_p2p::prelude::*`).
///
/// It reads through the core's `FrameDecoder` and never reads past the
/// header frame: what follows belongs to the application. The frame may be
/// at most [`Header::MAX_LEN`] bytes.
pub trait HeaderExt: Header {
    /// Read one header frame from a `futures::io::AsyncRead` stream (such as
    /// a [`UnicastStream`](crate::UnicastStream) or a
    /// [`Tunnel`](crate::Tunnel)) and decode it.
    ///
    /// If the header does not decode, a `UnicastStream` (or the stream
    /// under a `Tunnel`) is refused with the reason's code before the error
    /// is returned: [`StreamRejection::UnknownOperation`] for an unknown
    /// operation tag (the peer runs a version that has an operation this
    /// one lacks), [`StreamRejection::MalformedHeader`] otherwise. The
    /// sender's application gets that reason as a typed error.
    fn from_stream<S>(stream: &mut S) -> impl Future<Output = Result<Self, HeaderError>> + Send
    where
        S: futures_io::AsyncRead + Unpin + Send + 'static,
        Self: Send,
    {
        async move {
            let result = read_header::<Self, _>(stream).await;
            if let Err(error) = &result {
                reject(stream, error);
            }
            result
        }
    }

    /// Like [`HeaderExt::from_stream`], for a `tokio::io::AsyncRead` stream.
    #[cfg(feature = "tokio")]
    fn from_tokio_stream<S>(
        stream: &mut S,
    ) -> impl Future<Output = Result<Self, HeaderError>> + Send
    where
        S: tokio::io::AsyncRead + Unpin + Send + 'static,
        Self: Send,
    {
        async move {
            let result = read_header::<Self, _>(&mut TokioRead(stream)).await;
            if let Err(error) = &result {
                reject(stream, error);
            }
            result
        }
    }
}

/// Read and decode one header frame, never reading past it.
async fn read_header<H: Header, S: futures_io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<H, HeaderError> {
    let mut decoder = H::decoder();
    let mut buf = [0u8; 512];
    loop {
        let want = decoder.bytes_needed().min(buf.len());
        let n = poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut buf[..want])).await?;
        if n == 0 {
            return Err(if decoder.is_mid_frame() {
                HeaderError::Truncated
            } else {
                HeaderError::Eof
            });
        }
        let decoded = decoder.decode(&buf[..n])?;
        // `want` never exceeds what the frame still needs.
        debug_assert_eq!(decoded.consumed, n);
        if let Some(frame) = decoded.frame {
            return Ok(H::from_frame_body(&frame)?);
        }
    }
}

/// The reason a stream whose header failed with `error` is refused with,
/// if the header itself was at fault (not the stream).
pub(crate) fn rejection_for(error: &HeaderError) -> Option<StreamRejection> {
    match error {
        HeaderError::Decode(error) => Some(StreamRejection::for_decode_error(error)),
        HeaderError::Frame(_) | HeaderError::Truncated => Some(StreamRejection::MalformedHeader),
        HeaderError::Io(_) | HeaderError::Eof => None,
    }
}

/// Refuse a pos-p2p stream whose header failed; other readers are left
/// alone.
fn reject(stream: &mut dyn Any, error: &HeaderError) {
    let Some(why) = rejection_for(error) else {
        return;
    };
    if let Some(stream) = stream.downcast_mut::<UnicastStream>() {
        stream.reject(why);
    } else if let Some(tunnel) = stream.downcast_mut::<Tunnel<UnicastStream>>() {
        tunnel.reject(why);
    }
}

/// A tokio reader seen as a futures reader.
#[cfg(feature = "tokio")]
struct TokioRead<'a, S>(&'a mut S);

#[cfg(feature = "tokio")]
impl<S: tokio::io::AsyncRead + Unpin> futures_io::AsyncRead for TokioRead<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut read_buf = tokio::io::ReadBuf::new(buf);
        match Pin::new(&mut *self.0).poll_read(cx, &mut read_buf) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(read_buf.filled().len())),
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<H: Header> HeaderExt for H {}

#[cfg(test)]
mod tests {
    use super::*;
    use pos_p2p_protocol::codec::{DecodeError, Reader, Writer};

    #[derive(Debug, PartialEq)]
    struct Name(String);

    impl Header for Name {
        fn encode(&self, w: &mut Writer) {
            w.str(&self.0, 64);
        }

        fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
            Ok(Name(r.string(64)?))
        }
    }

    fn stream_bytes() -> Vec<u8> {
        let mut bytes = Name("photos".into()).to_bytes().to_vec();
        bytes.extend_from_slice(b"after the header");
        bytes
    }

    #[tokio::test]
    async fn from_stream_reads_exactly_the_header() {
        {
            let mut cursor = futures_util::io::Cursor::new(stream_bytes());
            let header = Name::from_stream(&mut cursor).await.unwrap();
            assert_eq!(header, Name("photos".into()));
            let rest = &cursor.get_ref()[cursor.position() as usize..];
            assert_eq!(rest, b"after the header");
            // An empty stream and a cut one are told apart.
            let mut empty = futures_util::io::Cursor::new(Vec::new());
            assert!(matches!(
                Name::from_stream(&mut empty).await,
                Err(HeaderError::Eof)
            ));
            let mut cut = futures_util::io::Cursor::new(stream_bytes()[..4].to_vec());
            assert!(matches!(
                Name::from_stream(&mut cut).await,
                Err(HeaderError::Truncated)
            ));
        }
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn from_tokio_stream_reads_exactly_the_header() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&stream_bytes()).await.unwrap();
        drop(a);
        let header = Name::from_tokio_stream(&mut b).await.unwrap();
        assert_eq!(header, Name("photos".into()));
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"after the header");
    }
}
