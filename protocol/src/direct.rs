//! Direct-path packets (docs/PROTOCOL.md §10.9): the pings and pongs two
//! nodes connected through a relay send each other's candidate addresses
//! on their QUIC socket, outside QUIC, to find and keep a direct path for
//! that same connection.
//!
//! A packet is 33 bytes:
//!
//! ```text
//! magic  4 bytes  0x3f 0x70 0x32 0x70 ("?p2p")
//! kind   1 byte   1 = ping, 2 = pong
//! token 16 bytes  the sender's path token for the connection
//! txid  12 bytes  a ping's random id; a pong repeats its ping's
//! ```
//!
//! The first byte's two top bits are 0: QUIC sets its fixed bit (the
//! node does not allow greasing it), so a packet is never mistaken for
//! QUIC; STUN's magic cookie sits at bytes 4..8, where this has the kind
//! and the token, and the parser requires the exact length.
//!
//! ```
//! use pos_p2p_protocol::direct::{DirectPacket, PacketKind};
//!
//! let ping = DirectPacket { kind: PacketKind::Ping, token: [7; 16], txid: [9; 12] };
//! let bytes = ping.to_bytes();
//! assert_eq!(&bytes[..5], &[0x3f, 0x70, 0x32, 0x70, 1]);
//! assert_eq!(DirectPacket::parse(&bytes), Ok(ping));
//! ```

/// The first four bytes of every direct-path packet.
pub const MAGIC: [u8; 4] = [0x3f, 0x70, 0x32, 0x70];
/// The length of every direct-path packet.
pub const PACKET_LEN: usize = 33;
/// The TLS exporter label both ends derive their path tokens from
/// (RFC 8446 §7.5; context empty, 32 bytes: the dialer's token, then the
/// accepter's).
pub const TOKEN_LABEL: &[u8] = b"EXPORTER-pos-p2p-direct-path";

/// A ping or a pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// "Do you hear me at this address?"
    Ping,
    /// "I heard your ping" (sent back to where the ping came from).
    Pong,
}

/// A direct-path packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirectPacket {
    /// Ping or pong.
    pub kind: PacketKind,
    /// The sender's path token: names the connection to the receiver and
    /// proves the sender knows the connection's TLS secrets.
    pub token: [u8; 16],
    /// The ping's id (a pong repeats it).
    pub txid: [u8; 12],
}

/// Bytes that are not a direct-path packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectPacketError {
    /// Not the magic, or not the packet's length.
    #[error("not a direct-path packet")]
    NotDirect,
    /// The magic and length are right but the kind is unknown.
    #[error("unknown direct-path packet kind {0}")]
    UnknownKind(u8),
}

/// Whether `datagram` starts like a direct-path packet (its magic), so it
/// is not handed to QUIC.
pub fn is_direct(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC)
}

impl DirectPacket {
    /// The packet's bytes.
    pub fn to_bytes(&self) -> [u8; PACKET_LEN] {
        let mut out = [0; PACKET_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = match self.kind {
            PacketKind::Ping => 1,
            PacketKind::Pong => 2,
        };
        out[5..21].copy_from_slice(&self.token);
        out[21..].copy_from_slice(&self.txid);
        out
    }

    /// Parse a packet: exactly [`PACKET_LEN`] bytes starting with
    /// [`MAGIC`].
    pub fn parse(datagram: &[u8]) -> Result<Self, DirectPacketError> {
        if datagram.len() != PACKET_LEN || !is_direct(datagram) {
            return Err(DirectPacketError::NotDirect);
        }
        let kind = match datagram[4] {
            1 => PacketKind::Ping,
            2 => PacketKind::Pong,
            other => return Err(DirectPacketError::UnknownKind(other)),
        };
        let mut token = [0; 16];
        token.copy_from_slice(&datagram[5..21]);
        let mut txid = [0; 12];
        txid.copy_from_slice(&datagram[21..]);
        Ok(Self { kind, token, txid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        let pong = DirectPacket {
            kind: PacketKind::Pong,
            token: [0x11; 16],
            txid: [0x22; 12],
        };
        let mut expected = vec![0x3f, 0x70, 0x32, 0x70, 0x02];
        expected.extend([0x11; 16]);
        expected.extend([0x22; 12]);
        assert_eq!(pong.to_bytes().to_vec(), expected);
    }

    #[test]
    fn wrong_length_magic_or_kind_is_refused() {
        let ping = DirectPacket {
            kind: PacketKind::Ping,
            token: [1; 16],
            txid: [2; 12],
        }
        .to_bytes();
        assert_eq!(
            DirectPacket::parse(&ping[..32]),
            Err(DirectPacketError::NotDirect)
        );
        let mut long = ping.to_vec();
        long.push(0);
        assert_eq!(
            DirectPacket::parse(&long),
            Err(DirectPacketError::NotDirect)
        );
        let mut bad = ping;
        bad[3] ^= 1;
        assert_eq!(DirectPacket::parse(&bad), Err(DirectPacketError::NotDirect));
        let mut kind = ping;
        kind[4] = 3;
        assert_eq!(
            DirectPacket::parse(&kind),
            Err(DirectPacketError::UnknownKind(3))
        );
    }

    #[test]
    fn never_looks_like_quic_or_stun() {
        // QUIC: the fixed bit (0x40) is set in every packet.
        assert_eq!(MAGIC[0] & 0x40, 0);
        let ping = DirectPacket {
            kind: PacketKind::Ping,
            token: [0; 16],
            txid: [0; 12],
        }
        .to_bytes();
        assert!(!crate::stun::is_stun(&ping));
    }

    proptest! {
        #[test]
        fn round_trips(kind in any::<bool>(), token in any::<[u8; 16]>(), txid in any::<[u8; 12]>()) {
            let kind = if kind { PacketKind::Ping } else { PacketKind::Pong };
            let packet = DirectPacket { kind, token, txid };
            prop_assert_eq!(DirectPacket::parse(&packet.to_bytes()), Ok(packet));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = DirectPacket::parse(&bytes);
        }
    }
}
