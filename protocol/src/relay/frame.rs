//! The relay's frames (docs/PROTOCOL.md §10): what a node and a relay say
//! to each other over their TLS connection.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::RemoteIdentity;
use crate::codec::{
    DecodeError, EncodeError, FrameDecoder, FrameError, Reader, Writer, decode_frame,
};

/// The largest datagram a relay forwards. QUIC datagrams between nodes are
/// at most 1,452 bytes on a path of 1,500-byte packets; a relayed path is
/// given a smaller MTU still, and anything larger is refused.
pub const MAX_RELAYED_DATAGRAM: usize = 1_500;

/// The largest frame body either side accepts: a datagram with its
/// identity and a few bytes of framing.
pub const MAX_RELAY_FRAME: usize = MAX_RELAYED_DATAGRAM + 64;

/// Why a relay closes a client's connection (the `Close` frame's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The relay serves only the identities its operator allows, or
    /// clients that present its access token.
    #[error("the relay does not serve this node")]
    NotAllowed,
    /// The relay serves as many clients as it may.
    #[error("the relay is full")]
    Full,
    /// Another connection of the same node took over.
    #[error("another connection of this node took over")]
    Replaced,
    /// The client broke the protocol (an undecodable or oversized frame,
    /// a frame only a relay sends).
    #[error("the client broke the relay protocol")]
    Protocol,
    /// The relay is shutting down.
    #[error("the relay is shutting down")]
    ShuttingDown,
    /// A code this version does not know.
    #[error("the relay closed the connection (code {0})")]
    Other(u8),
}

impl CloseReason {
    /// The reason's code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::NotAllowed => 1,
            Self::Full => 2,
            Self::Replaced => 3,
            Self::Protocol => 4,
            Self::ShuttingDown => 5,
            Self::Other(code) => code,
        }
    }

    /// The reason a code names.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::NotAllowed,
            2 => Self::Full,
            3 => Self::Replaced,
            4 => Self::Protocol,
            5 => Self::ShuttingDown,
            code => Self::Other(code),
        }
    }
}

/// One frame between a node and its relay.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayFrame {
    /// Node → relay: forward `datagram` to the node `to`.
    Send {
        /// The destination node.
        to: RemoteIdentity,
        /// An end-to-end QUIC datagram, opaque to the relay.
        datagram: Bytes,
    },
    /// Relay → node: `from` sent this datagram.
    Recv {
        /// The node that sent it (as its TLS client certificate proved).
        from: RemoteIdentity,
        /// The datagram, as sent.
        datagram: Bytes,
    },
    /// Either way: answer with a `Pong` carrying the same nonce.
    Ping {
        /// Chosen by the sender.
        nonce: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// Relay → node: the node `identity` is not connected to this relay;
    /// datagrams to it are dropped.
    PeerGone {
        /// The missing node.
        identity: RemoteIdentity,
    },
    /// Relay → node: the address the relay sees this connection come from
    /// (sent once, after the relay accepted the node). An IPv6 address's
    /// scope and flow label are not carried.
    ObservedAddr {
        /// The client's address as the relay sees it.
        addr: SocketAddr,
    },
    /// Relay → node: the relay closes the connection, for this reason.
    Close {
        /// Why.
        reason: CloseReason,
    },
}

const SEND: u64 = 0x01;
const RECV: u64 = 0x02;
const PING: u64 = 0x03;
const PONG: u64 = 0x04;
const PEER_GONE: u64 = 0x05;
const OBSERVED_ADDR: u64 = 0x06;
const CLOSE: u64 = 0x07;

impl RelayFrame {
    /// The frame on the wire: a varint length, then the body.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut body = Writer::new();
        self.encode(&mut body);
        let body = body.finish()?;
        let mut frame = Writer::with_capacity(body.len() + 3);
        frame.varint(body.len() as u64);
        frame.raw(&body);
        frame.finish()
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Send { to, datagram } => {
                w.tag(SEND);
                w.raw(to.as_bytes());
                w.bytes(datagram, MAX_RELAYED_DATAGRAM);
            }
            Self::Recv { from, datagram } => {
                w.tag(RECV);
                w.raw(from.as_bytes());
                w.bytes(datagram, MAX_RELAYED_DATAGRAM);
            }
            Self::Ping { nonce } => {
                w.tag(PING);
                w.u64(*nonce);
            }
            Self::Pong { nonce } => {
                w.tag(PONG);
                w.u64(*nonce);
            }
            Self::PeerGone { identity } => {
                w.tag(PEER_GONE);
                w.raw(identity.as_bytes());
            }
            Self::ObservedAddr { addr } => {
                w.tag(OBSERVED_ADDR);
                w.socket_addr(addr);
            }
            Self::Close { reason } => {
                w.tag(CLOSE);
                w.u8(reason.code());
            }
        }
    }

    /// Decode one frame's body (as a [`FrameDecoder`] with
    /// [`decoder`](RelayFrame::decoder) yields it); every byte must belong
    /// to the frame.
    pub fn from_body(body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let identity = |r: &mut Reader<'_>| {
            let offset = r.position();
            let bytes: [u8; 32] = r.array()?;
            RemoteIdentity::from_bytes(&bytes).map_err(|_| r.invalid("identity", offset))
        };
        let frame = match r.tag()? {
            SEND => {
                let to = identity(&mut r)?;
                let datagram = datagram(&mut r, body)?;
                Self::Send { to, datagram }
            }
            RECV => {
                let from = identity(&mut r)?;
                let datagram = datagram(&mut r, body)?;
                Self::Recv { from, datagram }
            }
            PING => Self::Ping { nonce: r.u64()? },
            PONG => Self::Pong { nonce: r.u64()? },
            PEER_GONE => Self::PeerGone {
                identity: identity(&mut r)?,
            },
            OBSERVED_ADDR => Self::ObservedAddr {
                addr: r.socket_addr()?,
            },
            CLOSE => Self::Close {
                reason: CloseReason::from_code(r.u8()?),
            },
            tag => return Err(r.unknown_tag("RelayFrame", tag)),
        };
        r.finish()?;
        Ok(frame)
    }

    /// A decoder for a stream of relay frames, limited to
    /// [`MAX_RELAY_FRAME`].
    pub fn decoder() -> FrameDecoder {
        FrameDecoder::with_max_frame_len(MAX_RELAY_FRAME)
    }

    /// Decode `bytes` holding exactly one whole frame, prefix included.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FrameError> {
        let (body, used) = decode_frame(bytes, MAX_RELAY_FRAME)?;
        if used != bytes.len() {
            return Err(FrameError::TrailingBytes {
                count: bytes.len() - used,
            });
        }
        Self::from_body(&Bytes::copy_from_slice(body)).map_err(FrameError::Body)
    }
}

/// A datagram: length-prefixed, sliced out of the frame's body without a
/// copy.
fn datagram(r: &mut Reader<'_>, body: &Bytes) -> Result<Bytes, DecodeError> {
    let len = r.bytes(MAX_RELAYED_DATAGRAM)?.len();
    let end = r.position();
    Ok(body.slice(end - len..end))
}
