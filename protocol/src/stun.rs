//! Address discovery with STUN Binding (RFC 8489), the small subset
//! pos-p2p uses (docs/PROTOCOL.md §10.6): a node sends a Binding request
//! from its QUIC socket to a relay's UDP port, and the relay answers with
//! the address and port it saw the request come from
//! (`XOR-MAPPED-ADDRESS`): where the node's NAT maps its QUIC socket.
//!
//! STUN shares the node's socket with QUIC. The two never look alike: a
//! STUN message starts with two zero bits and carries the magic cookie at
//! bytes 4..8, while every QUIC packet has the fixed bit (`0x40`) set.
//!
//! ```
//! use pos_p2p_protocol::stun;
//!
//! let id = stun::TransactionId([7; 12]);
//! let request = stun::binding_request(id);
//! let seen_from = "203.0.113.5:40123".parse().unwrap();
//! // The relay's side.
//! let asked = stun::parse_binding_request(&request).unwrap();
//! let answer = stun::binding_response(asked, seen_from);
//! // The node's side: the answer to its request says where it was seen.
//! assert_eq!(stun::parse_binding_response(&answer), Ok((id, seen_from)));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie every STUN message carries at bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The length of a STUN message header.
pub const HEADER_LEN: usize = 20;
/// The longest STUN message this module reads; longer ones are not looked
/// at.
pub const MAX_MESSAGE_LEN: usize = 548;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// A STUN transaction id: 96 random bits that tie an answer to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// Why bytes are not the STUN message expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Not a STUN message at all (too short, too long, no magic cookie,
    /// the first two bits set, or a length that is not the datagram's).
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message of another type.
    #[error("unexpected STUN message type {0:#06x}")]
    UnexpectedType(u16),
    /// An attribute runs past the end of the message.
    #[error("STUN attribute at offset {0} runs past the message")]
    Truncated(usize),
    /// The answer has no `XOR-MAPPED-ADDRESS`, or one that does not decode.
    #[error("STUN answer without a valid XOR-MAPPED-ADDRESS")]
    NoAddress,
}

/// Whether a datagram is a STUN message (and not QUIC): at least a header
/// long, the first two bits zero, the magic cookie in place.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0xC0 == 0
        && datagram[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The message type, transaction id and attributes of a message, checked:
/// a STUN header whose length is exactly what follows it.
fn parse(datagram: &[u8]) -> Result<(u16, TransactionId, &[u8]), StunError> {
    if !is_stun(datagram) || datagram.len() > MAX_MESSAGE_LEN {
        return Err(StunError::NotStun);
    }
    let kind = u16::from_be_bytes([datagram[0], datagram[1]]);
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if len % 4 != 0 || HEADER_LEN + len != datagram.len() {
        return Err(StunError::NotStun);
    }
    let mut id = [0; 12];
    id.copy_from_slice(&datagram[8..HEADER_LEN]);
    Ok((kind, TransactionId(id), &datagram[HEADER_LEN..]))
}

/// A Binding request with no attributes (20 bytes).
pub fn binding_request(id: TransactionId) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..].copy_from_slice(&id.0);
    out
}

/// The transaction id of a Binding request (its attributes are ignored).
pub fn parse_binding_request(datagram: &[u8]) -> Result<TransactionId, StunError> {
    match parse(datagram)? {
        (BINDING_REQUEST, id, _) => Ok(id),
        (kind, _, _) => Err(StunError::UnexpectedType(kind)),
    }
}

/// A Binding success response carrying `observed` as its only attribute,
/// `XOR-MAPPED-ADDRESS` (32 bytes for IPv4, 44 for IPv6).
pub fn binding_response(id: TransactionId, observed: SocketAddr) -> Vec<u8> {
    let (family, xored): (u8, Vec<u8>) = match observed.ip() {
        IpAddr::V4(ip) => (1, xor(&ip.octets(), &id)),
        IpAddr::V6(ip) => (2, xor(&ip.octets(), &id)),
    };
    let value_len = 4 + xored.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value_len) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(0);
    out.push(family);
    let port = observed.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&xored);
    out
}

/// The transaction id and the address a Binding success response reports.
/// Attributes other than `XOR-MAPPED-ADDRESS` are skipped; the first
/// `XOR-MAPPED-ADDRESS` counts.
pub fn parse_binding_response(datagram: &[u8]) -> Result<(TransactionId, SocketAddr), StunError> {
    let (kind, id, mut attrs) = parse(datagram)?;
    if kind != BINDING_SUCCESS {
        return Err(StunError::UnexpectedType(kind));
    }
    while !attrs.is_empty() {
        let offset = datagram.len() - attrs.len();
        if attrs.len() < 4 {
            return Err(StunError::Truncated(offset));
        }
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let padded = len.div_ceil(4) * 4;
        let Some(value) = attrs.get(4..4 + len) else {
            return Err(StunError::Truncated(offset));
        };
        if kind == XOR_MAPPED_ADDRESS {
            return xor_mapped_address(value, &id).map(|addr| (id, addr));
        }
        attrs = attrs
            .get(4 + padded..)
            .ok_or(StunError::Truncated(offset))?;
    }
    Err(StunError::NoAddress)
}

fn xor_mapped_address(value: &[u8], id: &TransactionId) -> Result<SocketAddr, StunError> {
    let (&[0, family, p0, p1], rest) =
        value.split_first_chunk::<4>().ok_or(StunError::NoAddress)?
    else {
        return Err(StunError::NoAddress);
    };
    let port = u16::from_be_bytes([p0, p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (family, rest.len()) {
        (1, 4) => {
            let b = xor(rest, id);
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        (2, 16) => {
            let mut octets = [0; 16];
            octets.copy_from_slice(&xor(rest, id));
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(StunError::NoAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

/// An address XORed with the magic cookie and (IPv6) the transaction id.
fn xor(bytes: &[u8], id: &TransactionId) -> Vec<u8> {
    let mut key = [0; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&id.0);
    bytes.iter().zip(key).map(|(b, k)| b ^ k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 5769 §2.2: a sample IPv4 response (XOR-MAPPED-ADDRESS
    /// 192.0.2.1:32853), with its SOFTWARE, MESSAGE-INTEGRITY and
    /// FINGERPRINT attributes, which are skipped.
    const RFC5769_IPV4_RESPONSE: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae\
        8022000b7465737420766563746f7220\
        002000080001a147e112a643\
        000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
        80280004c07d4c96";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reads_the_rfc_5769_sample_response() {
        let bytes = unhex(RFC5769_IPV4_RESPONSE);
        let (id, addr) = parse_binding_response(&bytes).unwrap();
        assert_eq!(id.0, unhex("b7e7a701bc34d686fa87dfae")[..]);
        assert_eq!(addr, "192.0.2.1:32853".parse().unwrap());
    }

    #[test]
    fn encodes_as_the_rfc_does() {
        let id = TransactionId(unhex("b7e7a701bc34d686fa87dfae").try_into().unwrap());
        let ours = binding_response(id, "192.0.2.1:32853".parse().unwrap());
        let rfc = unhex(RFC5769_IPV4_RESPONSE);
        // Same header type and id; the same attribute bytes.
        assert_eq!(ours[..2], rfc[..2]);
        assert_eq!(ours[4..20], rfc[4..20]);
        assert_eq!(ours[20..32], rfc[36..48]);
        assert_eq!(ours.len(), 32);
        // The example in docs/PROTOCOL.md §10.6.
        let documented = unhex(
            "0101000c2112a442b7e7a701bc34d686fa87dfae00200008\
             0001a147e112a643",
        );
        assert_eq!(ours, documented);
    }

    #[test]
    fn ipv6_round_trips() {
        let id = TransactionId([0xA5; 12]);
        let addr: SocketAddr = "[2001:db8::1234:5678]:443".parse().unwrap();
        let response = binding_response(id, addr);
        assert_eq!(response.len(), 44);
        assert_eq!(parse_binding_response(&response), Ok((id, addr)));
    }

    /// An answer padded with an unknown attribute to `len` bytes in all.
    fn padded_answer(len: usize) -> Vec<u8> {
        let id = TransactionId([9; 12]);
        let mut out = binding_response(id, "192.0.2.1:7".parse().unwrap());
        let pad = len - out.len() - 4;
        out.extend_from_slice(&0x8022u16.to_be_bytes());
        out.extend_from_slice(&(pad as u16).to_be_bytes());
        out.resize(len, 0);
        let body = (len - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&body.to_be_bytes());
        out
    }

    #[test]
    fn messages_up_to_the_limit_are_read_and_longer_ones_are_not() {
        let at_limit = padded_answer(MAX_MESSAGE_LEN);
        assert_eq!(at_limit.len(), 548);
        assert!(parse_binding_response(&at_limit).is_ok());
        let over = padded_answer(MAX_MESSAGE_LEN + 4);
        assert_eq!(parse_binding_response(&over), Err(StunError::NotStun));
    }

    #[test]
    fn quic_is_never_stun() {
        // Long and short headers both have the fixed bit.
        let mut quic = vec![0xC0, 0, 0, 0, 1];
        quic.extend_from_slice(&[0; 1200]);
        assert!(!is_stun(&quic));
        quic[0] = 0x40;
        quic[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(!is_stun(&quic));
    }

    #[test]
    fn rejections_are_typed() {
        let id = TransactionId([1; 12]);
        let request = binding_request(id);
        assert_eq!(parse_binding_request(&request), Ok(id));
        assert_eq!(
            parse_binding_response(&request),
            Err(StunError::UnexpectedType(BINDING_REQUEST))
        );
        assert_eq!(
            parse_binding_request(&request[..19]),
            Err(StunError::NotStun)
        );
        // A length that is not the datagram's.
        let mut long = request.to_vec();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(parse_binding_request(&long), Err(StunError::NotStun));
        // An answer with no address.
        let mut empty = binding_response(id, "192.0.2.1:1".parse().unwrap());
        empty.truncate(20);
        empty[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(parse_binding_response(&empty), Err(StunError::NoAddress));
        // An attribute longer than the message.
        let mut cut = binding_response(id, "192.0.2.1:1".parse().unwrap());
        cut[23] = 200;
        assert_eq!(parse_binding_response(&cut), Err(StunError::Truncated(20)));
    }

    proptest! {
        #[test]
        fn responses_round_trip(id: [u8; 12], addr: SocketAddr) {
            // The flow label and scope id are not on the wire.
            let addr = SocketAddr::new(addr.ip(), addr.port());
            let id = TransactionId(id);
            let response = binding_response(id, addr);
            prop_assert!(is_stun(&response));
            prop_assert_eq!(parse_binding_response(&response), Ok((id, addr)));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_binding_response(&bytes);
            let _ = parse_binding_request(&bytes);
        }

        #[test]
        fn any_stun_header_with_attributes_decodes_or_errs(
            id: [u8; 12],
            attrs in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..6),
        ) {
            let mut body = Vec::new();
            for (kind, value) in &attrs {
                body.extend_from_slice(&kind.to_be_bytes());
                body.extend_from_slice(&(value.len() as u16).to_be_bytes());
                body.extend_from_slice(value);
                body.resize(body.len().div_ceil(4) * 4, 0);
            }
            let mut message = vec![1, 1];
            message.extend_from_slice(&(body.len() as u16).to_be_bytes());
            message.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            message.extend_from_slice(&id);
            message.extend_from_slice(&body);
            let first = attrs.iter().find(|(k, _)| *k == XOR_MAPPED_ADDRESS);
            match parse_binding_response(&message) {
                Ok((got, _)) => prop_assert!(got.0 == id && first.is_some()),
                Err(StunError::NoAddress) => prop_assert!(
                    first.is_none_or(|(_, v)| !(v.len() == 8 || v.len() == 20))
                        || first.is_some_and(|(_, v)| v[0] != 0 || !(v[1] == 1 || v[1] == 2))
                ),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
