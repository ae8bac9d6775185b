//! [`Writer`]: encodes the codec's primitives, enforcing declared limits.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::EncodeError;
use super::varint::put_varint;

/// Encodes the codec's primitives into a growing buffer.
///
/// Each variable-length method takes the same maximum that the decoding side
/// passes to [`Reader`](super::Reader), so a value the receiver would reject
/// is caught here instead. The first violated limit is remembered (a sticky
/// error): later writes are ignored and [`Writer::finish`] returns the error.
/// That keeps hand-written `encode` methods free of `?` noise while never
/// producing bytes the other side cannot decode.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
    /// Bytes at the start of `buf` set aside for a frame's length prefix.
    reserved: usize,
    error: Option<EncodeError>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// A writer whose buffer starts with `prefix` placeholder bytes, so that
    /// a frame can be built in one allocation.
    pub(crate) fn with_reserved_prefix(prefix: usize) -> Self {
        let mut buf = BytesMut::with_capacity(prefix + 64);
        buf.put_bytes(0, prefix);
        Self {
            buf,
            reserved: prefix,
            error: None,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.reserved
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first limit that was violated, if any.
    pub fn error(&self) -> Option<&EncodeError> {
        self.error.as_ref()
    }

    /// The encoded bytes, or the first violated limit.
    pub fn finish(self) -> Result<Bytes, EncodeError> {
        self.finish_mut().map(BytesMut::freeze)
    }

    pub(crate) fn finish_mut(self) -> Result<BytesMut, EncodeError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.buf),
        }
    }

    /// Record a violated limit; returns whether writing may go on.
    fn check(&mut self, what: &'static str, len: usize, max: usize) -> bool {
        if self.error.is_some() {
            return false;
        }
        if len > max {
            self.error = Some(EncodeError::TooLong {
                what,
                len: len as u64,
                max: max as u64,
            });
            return false;
        }
        true
    }

    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Raw bytes, with no length prefix (the reader uses
    /// [`Reader::take`](super::Reader::take) or `array`).
    pub fn raw(&mut self, bytes: &[u8]) {
        if self.ok() {
            self.buf.put_slice(bytes);
        }
    }

    /// One byte.
    pub fn u8(&mut self, value: u8) {
        self.raw(&[value]);
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, value: u16) {
        self.raw(&value.to_be_bytes());
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, value: u32) {
        self.raw(&value.to_be_bytes());
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, value: u64) {
        self.raw(&value.to_be_bytes());
    }

    /// A minimal LEB128 varint.
    pub fn varint(&mut self, value: u64) {
        if self.ok() {
            put_varint(&mut self.buf, value);
        }
    }

    /// An enum tag (a varint).
    pub fn tag(&mut self, tag: u64) {
        self.varint(tag);
    }

    /// A boolean as one byte, `0` or `1`.
    pub fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    /// A 16-byte identifier (a UUID's bytes, in order).
    pub fn id16(&mut self, id: &[u8; 16]) {
        self.raw(id);
    }

    /// A socket address: `u8` family (4 or 6), the IP address (4 or 16
    /// bytes), `u16` port.
    pub fn socket_addr(&mut self, addr: &std::net::SocketAddr) {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                self.u8(4);
                self.raw(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                self.u8(6);
                self.raw(&ip.octets());
            }
        }
        self.u16(addr.port());
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, bytes: &[u8], max: usize) {
        if self.check("bytes", bytes.len(), max) {
            put_varint(&mut self.buf, bytes.len() as u64);
            self.buf.put_slice(bytes);
        }
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, s: &str, max: usize) {
        if self.check("string", s.len(), max) {
            put_varint(&mut self.buf, s.len() as u64);
            self.buf.put_slice(s.as_bytes());
        }
    }

    /// An optional value: a presence byte, then the value if present.
    pub fn option<T>(&mut self, value: Option<&T>, mut write: impl FnMut(&mut Self, &T)) {
        self.bool(value.is_some());
        if let Some(value) = value {
            write(self, value);
        }
    }

    /// A list of at most `max` items: a varint count, then the items.
    pub fn list<T>(&mut self, items: &[T], max: usize, mut write: impl FnMut(&mut Self, &T)) {
        if self.check("list", items.len(), max) {
            put_varint(&mut self.buf, items.len() as u64);
            for item in items {
                write(self, item);
            }
        }
    }

    /// A map of at most `max` entries: a varint count, then each key and its
    /// value in ascending key order (a `BTreeMap`'s order, which
    /// [`Reader::map`](super::Reader::map) requires).
    pub fn map<K, V>(
        &mut self,
        map: &BTreeMap<K, V>,
        max: usize,
        mut key: impl FnMut(&mut Self, &K),
        mut value: impl FnMut(&mut Self, &V),
    ) {
        if self.check("map", map.len(), max) {
            put_varint(&mut self.buf, map.len() as u64);
            for (k, v) in map {
                key(self, k);
                value(self, v);
            }
        }
    }
}
