//! Length-prefixed frames and [`FrameDecoder`], the incremental frame decoder.
//!
//! A frame is a minimal LEB128 varint `len` followed by exactly `len` bytes of
//! body. Frames carry stream headers and handshake messages; what follows a
//! frame on a stream belongs to the application and is never consumed here.

use bytes::{Buf, Bytes};

use super::error::{EncodeError, FrameError};
use super::varint::{MAX_VARINT_LEN, VarintError, decode_varint, put_varint, varint_len};
use super::writer::Writer;

/// The default limit on a frame's body: 64 KiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Build one frame whose body is what `body` writes, checking the body
/// against `max_len`. One allocation: the body is written after room for the
/// longest prefix, and the unused part of that room is skipped.
pub(crate) fn encode_frame(
    max_len: usize,
    body: impl FnOnce(&mut Writer),
) -> Result<Bytes, EncodeError> {
    let mut writer = Writer::with_reserved_prefix(MAX_VARINT_LEN);
    body(&mut writer);
    let len = writer.len();
    let mut buf = writer.finish_mut()?;
    if len > max_len {
        return Err(EncodeError::FrameTooLarge { len, max: max_len });
    }
    let start = MAX_VARINT_LEN - varint_len(len as u64);
    put_varint(&mut &mut buf[start..MAX_VARINT_LEN], len as u64);
    buf.advance(start);
    Ok(buf.freeze())
}

/// Decode exactly one whole frame at the start of `input`.
///
/// Returns the body and the number of bytes the frame used (prefix and body);
/// bytes after the frame are left alone. Fails with
/// [`FrameError::Truncated`] if `input` ends inside the frame.
pub fn decode_frame(input: &[u8], max_len: usize) -> Result<(&[u8], usize), FrameError> {
    let (len, prefix) = match decode_varint(input) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Err(FrameError::Truncated {
                needed: (input.len() + 1) as u64,
                available: input.len(),
            });
        }
        Err(VarintError::NonMinimal) => return Err(FrameError::NonMinimalLength),
        Err(VarintError::Overflow) => return Err(FrameError::LengthOverflow),
    };
    if len > max_len as u64 {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    // `len <= max_len`, a `usize`.
    let end = prefix + len as usize;
    match input.get(prefix..end) {
        Some(body) => Ok((body, end)),
        None => Err(FrameError::Truncated {
            needed: end as u64,
            available: input.len(),
        }),
    }
}

/// The result of one [`FrameDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "`consumed` says how much of the input was used; the rest belongs to the caller"]
pub struct Decoded {
    /// How many bytes of the input the decoder used. The caller must pass the
    /// bytes after these again (to this decoder for the next frame, or to
    /// whatever reads the stream after the frame).
    pub consumed: usize,
    /// A complete frame's body, if this call finished one.
    pub frame: Option<Bytes>,
}

/// A sans-IO incremental decoder of length-prefixed frames.
///
/// Feed it chunks of any size, in order; it consumes bytes only up to the end
/// of the frame in progress and yields each complete frame's body. It never
/// holds more than the configured maximum frame size (64 KiB by default),
/// rejects a frame whose announced length is larger before buffering any of
/// it, and buffers only what has arrived (never the announced length up
/// front). After an error it stays failed: the stream's framing is lost.
///
/// ```
/// use pos_p2p_protocol::codec::FrameDecoder;
///
/// let stream = [3, b'a', b'b', b'c', 1, b'z', 0xff];
/// let mut decoder = FrameDecoder::new();
/// let mut frames = Vec::new();
/// let mut input = &stream[..];
/// // Deliver one byte at a time, as a hostile or slow network might.
/// while frames.len() < 2 {
///     let chunk = &input[..1];
///     let decoded = decoder.decode(chunk).unwrap();
///     input = &input[decoded.consumed..];
///     frames.extend(decoded.frame);
/// }
/// assert_eq!(frames, [&b"abc"[..], &b"z"[..]]);
/// // The byte after the second frame was not consumed.
/// assert_eq!(input, [0xff]);
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_len: usize,
    prefix: [u8; MAX_VARINT_LEN],
    prefix_len: usize,
    /// The body length, once the prefix is complete.
    body_len: Option<usize>,
    body: Vec<u8>,
    error: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the default limit, [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A decoder that rejects frames with bodies longer than `max_len` bytes.
    pub fn with_max_frame_len(max_len: usize) -> Self {
        Self {
            max_len,
            prefix: [0; MAX_VARINT_LEN],
            prefix_len: 0,
            body_len: None,
            body: Vec::new(),
            error: None,
        }
    }

    /// The configured limit on a frame's body.
    pub fn max_frame_len(&self) -> usize {
        self.max_len
    }

    /// Whether part of a frame has been consumed but not yet yielded. A
    /// stream that ends while this is true ended inside a frame.
    pub fn is_mid_frame(&self) -> bool {
        self.prefix_len > 0
    }

    /// The fewest bytes the decoder needs before it can yield the frame in
    /// progress, and the most it will consume for it: 1 while reading the
    /// length prefix, then what is left of the body. A reader that must not
    /// read past the frame asks for at most this many bytes.
    pub fn bytes_needed(&self) -> usize {
        match self.body_len {
            None => 1,
            Some(len) => (len - self.body.len()).max(1),
        }
    }

    /// Consume bytes from `input`, up to the end of the current frame.
    ///
    /// Returns how many bytes were used and, if a frame was completed, its
    /// body. Call again with the rest of the input to decode further frames.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, FrameError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let mut consumed = 0;
        let body_len = loop {
            if let Some(len) = self.body_len {
                break len;
            }
            let Some(&byte) = input.get(consumed) else {
                return Ok(Decoded {
                    consumed,
                    frame: None,
                });
            };
            consumed += 1;
            self.read_prefix_byte(byte)?;
        };

        let rest = &input[consumed..];
        let missing = body_len - self.body.len();
        if self.body.is_empty() && rest.len() >= missing {
            // The whole body is in this chunk: copy it out once.
            let frame = Bytes::copy_from_slice(&rest[..missing]);
            self.start_next_frame();
            return Ok(Decoded {
                consumed: consumed + missing,
                frame: Some(frame),
            });
        }
        let take = missing.min(rest.len());
        // Room for what arrived, not for what was announced: a peer that
        // announces a large frame and sends little costs little. Growth
        // doubles (so a frame in many small pieces is copied O(n) times in
        // all) but never past the announced length.
        let wanted = self.body.len() + take;
        if self.body.capacity() < wanted {
            let target = wanted.max(self.body.capacity() * 2).min(body_len);
            self.body.reserve_exact(target - self.body.len());
        }
        self.body.extend_from_slice(&rest[..take]);
        consumed += take;
        let frame = if self.body.len() == body_len {
            let frame = Bytes::from(std::mem::take(&mut self.body));
            self.start_next_frame();
            Some(frame)
        } else {
            None
        };
        Ok(Decoded { consumed, frame })
    }

    fn read_prefix_byte(&mut self, byte: u8) -> Result<(), FrameError> {
        let Some(slot) = self.prefix.get_mut(self.prefix_len) else {
            // Unreachable: a tenth prefix byte either ends the varint or
            // overflows. Fail rather than trust that.
            return Err(self.fail(FrameError::LengthOverflow));
        };
        *slot = byte;
        self.prefix_len += 1;
        match decode_varint(&self.prefix[..self.prefix_len]) {
            Ok(None) => Ok(()),
            Ok(Some((len, _))) if len > self.max_len as u64 => {
                Err(self.fail(FrameError::TooLarge {
                    len,
                    max: self.max_len,
                }))
            }
            Ok(Some((len, _))) => {
                // `len <= max_len`, a `usize`.
                self.body_len = Some(len as usize);
                Ok(())
            }
            Err(VarintError::NonMinimal) => Err(self.fail(FrameError::NonMinimalLength)),
            Err(VarintError::Overflow) => Err(self.fail(FrameError::LengthOverflow)),
        }
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.error = Some(error.clone());
        self.body = Vec::new();
        error
    }

    fn start_next_frame(&mut self) {
        self.prefix_len = 0;
        self.body_len = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_of_exactly_the_limit_is_a_frame_and_one_byte_more_is_not() {
        let at_limit = encode_frame(8, |w| w.raw(&[7; 8])).unwrap();
        assert_eq!(&at_limit[..], &[8, 7, 7, 7, 7, 7, 7, 7, 7]);
        assert_eq!(decode_frame(&at_limit, 8), Ok((&[7u8; 8][..], 9)));
        assert_eq!(
            encode_frame(8, |w| w.raw(&[7; 9])),
            Err(EncodeError::FrameTooLarge { len: 9, max: 8 })
        );
        let over = [9, 7, 7, 7, 7, 7, 7, 7, 7, 7];
        assert_eq!(
            decode_frame(&over, 8),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        );
    }

    #[test]
    fn encode_frame_prefixes_the_body() {
        let frame = encode_frame(1000, |w| w.raw(&[7; 200])).unwrap();
        assert_eq!(&frame[..2], [0xc8, 0x01]);
        assert_eq!(frame.len(), 202);
        assert_eq!(decode_frame(&frame, 1000).unwrap(), (&[7u8; 200][..], 202));
        assert_eq!(encode_frame(10, |_| {}).unwrap(), Bytes::from_static(&[0]));
        assert_eq!(
            encode_frame(10, |w| w.raw(&[0; 11])),
            Err(EncodeError::FrameTooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn one_shot_decoding_errors() {
        assert_eq!(
            decode_frame(&[], 10),
            Err(FrameError::Truncated {
                needed: 1,
                available: 0
            })
        );
        assert_eq!(
            decode_frame(&[3, 1, 2], 10),
            Err(FrameError::Truncated {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(
            decode_frame(&[11], 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        assert_eq!(
            decode_frame(&[0x81, 0x00], 10),
            Err(FrameError::NonMinimalLength)
        );
        assert_eq!(decode_frame(&[1, 9, 9], 10), Ok((&[9u8][..], 2)));
    }

    #[test]
    fn huge_length_prefix_is_rejected_before_buffering() {
        // 2^62 as a varint.
        let prefix = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
        let mut decoder = FrameDecoder::new();
        let err = decoder.decode(&prefix).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 1 << 62,
                max: DEFAULT_MAX_FRAME_LEN
            }
        );
        assert_eq!(decoder.body.capacity(), 0);
        // Sticky: the framing of this stream is lost.
        assert_eq!(decoder.decode(&[0]), Err(err));
    }

    #[test]
    fn bytes_needed_never_overshoots_the_frame() {
        let mut decoder = FrameDecoder::with_max_frame_len(100);
        assert_eq!(decoder.bytes_needed(), 1);
        assert_eq!(decoder.decode(&[5]).unwrap().consumed, 1);
        assert_eq!(decoder.bytes_needed(), 5);
        assert!(decoder.is_mid_frame());
        assert_eq!(decoder.decode(&[1, 2]).unwrap().consumed, 2);
        assert_eq!(decoder.bytes_needed(), 3);
        let decoded = decoder.decode(&[3, 4, 5, 6, 7]).unwrap();
        assert_eq!(decoded.consumed, 3);
        assert_eq!(decoded.frame.unwrap(), Bytes::from_static(&[1, 2, 3, 4, 5]));
        assert!(!decoder.is_mid_frame());
        assert_eq!(decoder.bytes_needed(), 1);
    }

    #[test]
    fn memory_follows_the_bytes_received_not_the_announced_length() {
        let mut decoder = FrameDecoder::with_max_frame_len(64 * 1024);
        // 65,536 announced (a three-byte prefix), one byte sent.
        assert_eq!(decoder.decode(&[0x80, 0x80, 0x04, 7]).unwrap().consumed, 4);
        assert!(decoder.body.capacity() < 64, "{}", decoder.body.capacity());
        // Growth doubles and stops at the announced length.
        let mut sent = 1;
        while sent < 64 * 1024 {
            let chunk = vec![7u8; 1000.min(64 * 1024 - sent)];
            let decoded = decoder.decode(&chunk).unwrap();
            sent += decoded.consumed;
            assert!(decoder.body.capacity() <= 64 * 1024);
            assert!(decoder.body.is_empty() || decoder.body.capacity() <= 2 * decoder.body.len());
            if let Some(frame) = decoded.frame {
                assert_eq!(frame.len(), 64 * 1024);
            }
        }
    }

    #[test]
    fn empty_frames_are_frames() {
        let mut decoder = FrameDecoder::new();
        let decoded = decoder.decode(&[0, 0]).unwrap();
        assert_eq!(decoded.consumed, 1);
        assert_eq!(decoded.frame.unwrap().len(), 0);
    }
}
