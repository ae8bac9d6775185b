//! Reading an application [`Header`] from the start of a stream.

use std::future::poll_fn;
use std::pin::Pin;

use pos_p2p_protocol::codec::Header;

use crate::error::HeaderError;

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
    /// [`Tunnel`](crate) later) and decode it.
    fn from_stream<S>(stream: &mut S) -> impl Future<Output = Result<Self, HeaderError>> + Send
    where
        S: futures_io::AsyncRead + Unpin + Send,
        Self: Send,
    {
        async move {
            let mut decoder = Self::decoder();
            let mut buf = [0u8; 512];
            loop {
                let want = decoder.bytes_needed().min(buf.len());
                let n =
                    poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut buf[..want])).await?;
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
                    return Ok(Self::from_frame_body(&frame)?);
                }
            }
        }
    }

    /// Like [`HeaderExt::from_stream`], for a `tokio::io::AsyncRead` stream.
    #[cfg(feature = "tokio")]
    fn from_tokio_stream<S>(
        stream: &mut S,
    ) -> impl Future<Output = Result<Self, HeaderError>> + Send
    where
        S: tokio::io::AsyncRead + Unpin + Send,
        Self: Send,
    {
        async move {
            let mut decoder = Self::decoder();
            let mut buf = [0u8; 512];
            loop {
                let want = decoder.bytes_needed().min(buf.len());
                let mut read_buf = tokio::io::ReadBuf::new(&mut buf[..want]);
                poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut read_buf)).await?;
                let n = read_buf.filled().len();
                if n == 0 {
                    return Err(if decoder.is_mid_frame() {
                        HeaderError::Truncated
                    } else {
                        HeaderError::Eof
                    });
                }
                let decoded = decoder.decode(&buf[..n])?;
                if let Some(frame) = decoded.frame {
                    return Ok(Self::from_frame_body(&frame)?);
                }
            }
        }
    }
}

impl<H: Header> HeaderExt for H {}
