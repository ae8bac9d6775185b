//! The [`Header`] trait: the application's stream headers.

use bytes::Bytes;

use super::error::{DecodeError, EncodeError, FrameError};
use super::frame::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, decode_frame, encode_frame};
use super::reader::Reader;
use super::writer::Writer;

/// A stream header: the first frame of every application stream, usually an
/// enum with one variant per operation of the application.
///
/// Implement [`encode`](Header::encode) and [`decode`](Header::decode) with
/// the [`Writer`] and [`Reader`] primitives, passing the same limits on both
/// sides; the provided methods add the framing.
///
/// ```
/// use pos_p2p_protocol::codec::{DecodeError, Header, Reader, Writer};
///
/// #[derive(Debug, PartialEq)]
/// enum AppHeader {
///     Ping,
///     File { id: [u8; 16], offset: u64 },
///     Hello(String),
/// }
///
/// impl Header for AppHeader {
///     fn encode(&self, w: &mut Writer) {
///         match self {
///             AppHeader::Ping => w.tag(0),
///             AppHeader::File { id, offset } => {
///                 w.tag(1);
///                 w.id16(id);
///                 w.u64(*offset);
///             }
///             AppHeader::Hello(name) => {
///                 w.tag(2);
///                 w.str(name, 255);
///             }
///         }
///     }
///
///     fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
///         Ok(match r.tag()? {
///             0 => AppHeader::Ping,
///             1 => AppHeader::File { id: r.id16()?, offset: r.u64()? },
///             2 => AppHeader::Hello(r.string(255)?),
///             tag => return Err(r.unknown_tag("AppHeader", tag)),
///         })
///     }
/// }
///
/// let bytes = AppHeader::Hello("hi".into()).to_bytes();
/// assert_eq!(&bytes[..], [4, 2, 2, b'h', b'i']);
/// assert_eq!(AppHeader::from_bytes(&bytes).unwrap(), AppHeader::Hello("hi".into()));
/// ```
pub trait Header: Sized {
    /// The largest encoded header, in bytes. Both [`to_bytes`](Header::to_bytes)
    /// and the decoders from [`decoder`](Header::decoder) enforce it.
    const MAX_LEN: usize = DEFAULT_MAX_FRAME_LEN;

    /// Write the header's fields. Limits violated here surface from
    /// [`try_to_bytes`](Header::try_to_bytes).
    fn encode(&self, w: &mut Writer);

    /// Read the header's fields. Must not panic on any input.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// The header as one frame: a varint length, then the encoded header.
    fn try_to_bytes(&self) -> Result<Bytes, EncodeError> {
        encode_frame(Self::MAX_LEN, |w| self.encode(w))
    }

    /// The header as one frame, ready to write to a stream.
    ///
    /// # Panics
    ///
    /// If the header breaks a limit its own `encode` declares, or is longer
    /// than [`MAX_LEN`](Header::MAX_LEN): a bug in the sending application,
    /// which the receiver would have rejected. Use
    /// [`try_to_bytes`](Header::try_to_bytes) for headers built from
    /// unchecked input.
    fn to_bytes(&self) -> Bytes {
        match self.try_to_bytes() {
            Ok(bytes) => bytes,
            Err(error) => panic!("header cannot be encoded: {error}"),
        }
    }

    /// Decode a frame's body (as yielded by a [`FrameDecoder`]); every byte
    /// must belong to the header.
    fn from_frame_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body);
        let header = Self::decode(&mut reader)?;
        reader.finish()?;
        Ok(header)
    }

    /// Decode `bytes` holding exactly one whole frame, as made by
    /// [`to_bytes`](Header::to_bytes).
    fn from_bytes(bytes: &[u8]) -> Result<Self, FrameError> {
        let (body, used) = decode_frame(bytes, Self::MAX_LEN)?;
        if used != bytes.len() {
            return Err(FrameError::TrailingBytes {
                count: bytes.len() - used,
            });
        }
        Self::from_frame_body(body).map_err(FrameError::Body)
    }

    /// A [`FrameDecoder`] limited to [`MAX_LEN`](Header::MAX_LEN), for reading
    /// this header incrementally from a stream.
    fn decoder() -> FrameDecoder {
        FrameDecoder::with_max_frame_len(Self::MAX_LEN)
    }

    /// The name of the operation this header starts: what a router
    /// dispatches on and what tracing spans show. By default the type's
    /// name, the same for every value; an enum with one variant per
    /// operation names each (`"ping"`, `"file"`, ...). Names are never
    /// sent: the wire carries only the encoded header.
    fn operation(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The versions of the peer's application this operation needs, if it
    /// needs any: a sender checks them against the version the peer
    /// announced in its handshake before it opens a stream, and fails
    /// with a typed error instead of sending an operation the peer would
    /// refuse. By default `None`: every version.
    fn requires(&self) -> Option<semver::VersionReq> {
        None
    }
}
