//! [`Reader`]: a bounds-checked cursor for decoding untrusted bytes.

use std::collections::BTreeMap;

use super::error::DecodeError;
use super::varint::{VarintError, decode_varint};

/// A cursor over a byte slice that decodes the codec's primitives.
///
/// Every method either returns a value and advances, or returns a
/// [`DecodeError`] that names the byte offset of the problem; on error the
/// position is unspecified and the reader should be dropped. Lengths and
/// counts are checked against the caller's maximum *and* against the bytes
/// actually left before anything is allocated, so a hostile length prefix
/// cannot make the decoder reserve memory.
///
/// ```
/// use pos_p2p_protocol::codec::{Reader, Writer};
///
/// let mut w = Writer::new();
/// w.varint(300);
/// w.str("hi", 16);
/// let bytes = w.finish().unwrap();
///
/// let mut r = Reader::new(&bytes);
/// assert_eq!(r.varint().unwrap(), 300);
/// assert_eq!(r.str(16).unwrap(), "hi");
/// r.finish().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Succeed only if every byte has been consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                offset: self.pos,
                count: self.remaining(),
            })
        }
    }

    /// Take the next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(taken) = rest.get(..len) else {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: len as u64,
                available: rest.len(),
            });
        };
        self.pos += len;
        Ok(taken)
    }

    /// A fixed-size array of bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A minimal LEB128 varint (see [`varint`](super::varint)).
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let offset = self.pos;
        match decode_varint(&self.buf[self.pos..]) {
            Ok(Some((value, len))) => {
                self.pos += len;
                Ok(value)
            }
            Ok(None) => Err(DecodeError::Truncated {
                offset,
                // At least one more byte; the exact number is unknowable.
                needed: (self.remaining() + 1) as u64,
                available: self.remaining(),
            }),
            Err(VarintError::NonMinimal) => Err(DecodeError::NonMinimalVarint { offset }),
            Err(VarintError::Overflow) => Err(DecodeError::VarintOverflow { offset }),
        }
    }

    /// A varint that must not exceed `max`; `what` names it in the error.
    pub fn varint_max(&mut self, max: u64, what: &'static str) -> Result<u64, DecodeError> {
        let offset = self.pos;
        let value = self.varint()?;
        if value > max {
            return Err(DecodeError::TooLong {
                what,
                len: value,
                max,
                offset,
            });
        }
        Ok(value)
    }

    /// An enum tag (a varint). Pair it with [`Reader::unknown_tag`] for the
    /// fall-through arm of a `match`.
    pub fn tag(&mut self) -> Result<u64, DecodeError> {
        self.varint()
    }

    /// The error for an unknown tag of type `what`, pointing at the tag that
    /// was just read.
    pub fn unknown_tag(&self, what: &'static str, tag: u64) -> DecodeError {
        DecodeError::UnknownTag {
            what,
            tag,
            offset: self.pos - super::varint::varint_len(tag).min(self.pos),
        }
    }

    /// The error for a value of type `what` that starts at `offset` and breaks
    /// a rule of its type.
    pub fn invalid(&self, what: &'static str, offset: usize) -> DecodeError {
        DecodeError::Invalid { what, offset }
    }

    /// A boolean: one byte, `0` or `1`.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidBool { value, offset }),
        }
    }

    /// A 16-byte identifier (a UUID's bytes, in order).
    pub fn id16(&mut self) -> Result<[u8; 16], DecodeError> {
        self.array()
    }

    /// A socket address: `u8` family (4 or 6), the IP address (4 or 16
    /// bytes), `u16` port.
    pub fn socket_addr(&mut self) -> Result<std::net::SocketAddr, DecodeError> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let offset = self.pos;
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(self.invalid("address family", offset)),
        };
        Ok(std::net::SocketAddr::new(ip, self.u16()?))
    }

    /// A length-prefixed byte string of at most `max` bytes, borrowed.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.length(max, "bytes")?;
        self.take(len)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes, borrowed.
    pub fn str(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        let len = self.length(max, "string")?;
        let offset = self.pos;
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { offset })
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes, owned.
    pub fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        self.str(max).map(str::to_owned)
    }

    /// An optional value: a presence byte (`0` absent, `1` present), then the
    /// value if present.
    pub fn option<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool()? {
            value(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A list: a varint count of at most `max` items, then the items.
    ///
    /// Capacity is reserved for no more items than there are bytes left, so
    /// a hostile count cannot reserve memory beyond the input's size.
    pub fn list<T>(
        &mut self,
        max: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.length(max, "list")?;
        let mut items = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// A map: a varint count of at most `max` entries, then each key and its
    /// value, keys in strictly ascending order (the one canonical order; a
    /// repeated key is an error too).
    pub fn map<K: Ord, V>(
        &mut self,
        max: usize,
        mut key: impl FnMut(&mut Self) -> Result<K, DecodeError>,
        mut value: impl FnMut(&mut Self) -> Result<V, DecodeError>,
    ) -> Result<BTreeMap<K, V>, DecodeError> {
        let count = self.length(max, "map")?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let offset = self.pos;
            let k = key(self)?;
            if map.last_key_value().is_some_and(|(last, _)| *last >= k) {
                return Err(DecodeError::UnorderedKey { offset });
            }
            let v = value(self)?;
            map.insert(k, v);
        }
        Ok(map)
    }

    /// A varint length or count, checked against `max` and converted to `usize`.
    fn length(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let len = self.varint_max(max as u64, what)?;
        // `len <= max`, and `max` is a `usize`.
        Ok(len as usize)
    }
}
