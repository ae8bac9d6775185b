//! The control stream's messages (Hello, metadata updates) and the payloads
//! of the connection close codes. Layouts are specified in
//! `docs/PROTOCOL.md` §7.

use semver::Version;

use crate::codec::{DecodeError, Reader, Writer};
use crate::metadata::Metadata;
use crate::version::{RejectReason, Rejection, Versions};

/// The largest control message body: a Hello with the largest metadata.
pub(crate) const MAX_CONTROL_MESSAGE_LEN: usize = 16 * 1024;
/// The longest application name, in bytes.
pub const MAX_APP_NAME_LEN: usize = 64;
/// The longest semver version string on the wire, in bytes.
pub(crate) const MAX_VERSION_LEN: usize = 128;
/// The longest version requirement string on the wire, in bytes.
pub(crate) const MAX_REQUIREMENT_LEN: usize = 256;

const TAG_HELLO: u64 = 0;
const TAG_METADATA: u64 = 1;
const TAG_GOODBYE: u64 = 2;
const TAG_SUPERSEDED: u64 = 3;
const TAG_CANDIDATES: u64 = 4;
const TAG_RELAYS: u64 = 5;
/// The most candidate addresses a `Candidates` message carries.
pub const MAX_CANDIDATES: usize = 8;
/// The longest close reason, in bytes.
pub(crate) const MAX_CLOSE_REASON_LEN: usize = 1024;

/// What a node says about itself when a connection starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) versions: Versions,
    pub(crate) app_name: String,
    pub(crate) metadata: Metadata,
}

/// A message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ControlMessage {
    Hello(Hello),
    Metadata(Metadata),
    /// The sender is closing the connection with this code and reason (the
    /// same as its CONNECTION_CLOSE will carry). Sent on the control stream
    /// first because QUIC strips application close reasons during the
    /// handshake.
    Goodbye {
        code: u64,
        reason: bytes::Bytes,
    },
    /// The sender keeps another connection to this peer and opens no more
    /// streams on this one; it had opened `opened` bidirectional streams.
    Superseded {
        opened: u64,
    },
    /// The addresses the sender may be reached at directly (docs/PROTOCOL.md
    /// §10.7), sent on a relayed connection.
    Candidates(Vec<std::net::SocketAddr>),
    /// The relays the sender can be reached through (docs/PROTOCOL.md
    /// §10.8), sent on every connection.
    Relays(Vec<super::RelayAddr>),
    /// A message of a later protocol version; ignored.
    Unknown(u64),
}

fn write_version(w: &mut Writer, version: &Version) {
    w.str(&version.to_string(), MAX_VERSION_LEN);
}

fn read_version(r: &mut Reader<'_>, what: &'static str) -> Result<Version, DecodeError> {
    let offset = r.position();
    let text = r.str(MAX_VERSION_LEN)?;
    Version::parse(text).map_err(|_| r.invalid(what, offset))
}

impl ControlMessage {
    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Self::Hello(hello) => {
                w.tag(TAG_HELLO);
                write_version(w, &hello.versions.protocol);
                w.str(&hello.app_name, MAX_APP_NAME_LEN);
                write_version(w, &hello.versions.app);
                hello.metadata.encode(w);
            }
            Self::Metadata(metadata) => {
                w.tag(TAG_METADATA);
                metadata.encode(w);
            }
            Self::Superseded { opened } => {
                w.tag(TAG_SUPERSEDED);
                w.varint(*opened);
            }
            Self::Goodbye { code, reason } => {
                w.tag(TAG_GOODBYE);
                w.varint(*code);
                w.bytes(reason, MAX_CLOSE_REASON_LEN);
            }
            Self::Candidates(addrs) => {
                w.tag(TAG_CANDIDATES);
                w.list(addrs, MAX_CANDIDATES, |w, a| w.socket_addr(a));
            }
            Self::Relays(relays) => {
                w.tag(TAG_RELAYS);
                w.list(relays, super::MAX_NODE_ADDR_RELAYS, |w, relay| {
                    w.raw(relay.identity.as_bytes());
                    w.socket_addr(&relay.addr);
                });
            }
            // Never sent.
            Self::Unknown(tag) => w.tag(*tag),
        }
    }

    /// Decode one control frame's body.
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let message = match r.tag()? {
            TAG_HELLO => {
                let protocol = read_version(&mut r, "protocol version")?;
                let app_name = r.string(MAX_APP_NAME_LEN)?;
                let app = read_version(&mut r, "application version")?;
                let metadata = Metadata::decode(&mut r)?;
                Self::Hello(Hello {
                    versions: Versions { protocol, app },
                    app_name,
                    metadata,
                })
            }
            TAG_METADATA => Self::Metadata(Metadata::decode(&mut r)?),
            TAG_SUPERSEDED => Self::Superseded {
                opened: r.varint()?,
            },
            TAG_GOODBYE => Self::Goodbye {
                code: r.varint()?,
                reason: bytes::Bytes::copy_from_slice(r.bytes(MAX_CLOSE_REASON_LEN)?),
            },
            TAG_CANDIDATES => Self::Candidates(r.list(MAX_CANDIDATES, |r| r.socket_addr())?),
            TAG_RELAYS => Self::Relays(r.list(super::MAX_NODE_ADDR_RELAYS, |r| {
                let offset = r.position();
                let identity = crate::RemoteIdentity::from_bytes(&r.array::<32>()?)
                    .map_err(|_| r.invalid("identity", offset))?;
                Ok(super::RelayAddr {
                    identity,
                    addr: r.socket_addr()?,
                })
            })?),
            // Extensibility: a later version may add messages; the frame
            // length lets us skip them.
            tag => return Ok(Self::Unknown(tag)),
        };
        r.finish()?;
        Ok(message)
    }

    pub(crate) fn to_frame(&self) -> bytes::Bytes {
        crate::codec::encode_frame(MAX_CONTROL_MESSAGE_LEN, |w| self.encode(w))
            // Every field is bounded well below the frame limit and was
            // checked when the local configuration was built.
            .unwrap_or_default()
    }
}

/// The application error codes of a CONNECTION_CLOSE frame.
pub(crate) mod close_code {
    /// The application closed the connection.
    pub(crate) const NORMAL: u64 = 0x0;
    /// The sender rejected the receiver's versions; the reason is an encoded
    /// rejection.
    pub(crate) const VERSION_REJECTED: u64 = 0x1;
    /// The sender (a dialer) expected another identity.
    pub(crate) const IDENTITY_MISMATCH: u64 = 0x2;
    /// The nodes run different applications.
    pub(crate) const APPLICATION_MISMATCH: u64 = 0x3;
    /// The receiver broke the protocol (a malformed or unexpected message).
    pub(crate) const PROTOCOL_VIOLATION: u64 = 0x4;
    /// The Hello exchange did not finish in time.
    pub(crate) const HANDSHAKE_TIMEOUT: u64 = 0x5;
    /// Another connection between the same two nodes is kept instead.
    pub(crate) const DUPLICATE: u64 = 0x6;
    /// The node is shutting down.
    pub(crate) const SHUTDOWN: u64 = 0x7;
    /// The sender has no room for the connection: too many handshakes or
    /// connections (PROTOCOL.md §7.4).
    pub(crate) const CONNECTION_LIMIT: u64 = 0x8;
}

fn reason_tag(reason: &RejectReason) -> u8 {
    match reason {
        RejectReason::ProtocolIncompatible => 0,
        RejectReason::AppIncompatible => 1,
        RejectReason::AppRequirementUnmet(_) => 2,
    }
}

/// The close reason of [`close_code::VERSION_REJECTED`]: the whole
/// rejection, so the rejected side can show exactly what the rejecting side
/// decided.
pub(crate) fn encode_rejection(rejection: &Rejection) -> bytes::Bytes {
    let mut w = Writer::new();
    w.u8(reason_tag(&rejection.reason));
    write_version(&mut w, &rejection.local.protocol);
    write_version(&mut w, &rejection.local.app);
    write_version(&mut w, &rejection.remote.protocol);
    write_version(&mut w, &rejection.remote.app);
    if let RejectReason::AppRequirementUnmet(requirement) = &rejection.reason {
        w.str(&requirement.to_string(), MAX_REQUIREMENT_LEN);
    }
    w.finish().unwrap_or_default()
}

/// Decode a [`close_code::VERSION_REJECTED`] reason. `local` is the
/// rejecting node, as in the [`Rejection`] it computed.
pub(crate) fn decode_rejection(bytes: &[u8]) -> Result<Rejection, DecodeError> {
    let mut r = Reader::new(bytes);
    let offset = r.position();
    let tag = r.u8()?;
    let local = Versions {
        protocol: read_version(&mut r, "protocol version")?,
        app: read_version(&mut r, "application version")?,
    };
    let remote = Versions {
        protocol: read_version(&mut r, "protocol version")?,
        app: read_version(&mut r, "application version")?,
    };
    let reason = match tag {
        0 => RejectReason::ProtocolIncompatible,
        1 => RejectReason::AppIncompatible,
        2 => {
            let offset = r.position();
            let text = r.str(MAX_REQUIREMENT_LEN)?;
            RejectReason::AppRequirementUnmet(
                text.parse()
                    .map_err(|_| r.invalid("version requirement", offset))?,
            )
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "rejection reason",
                tag: u64::from(tag),
                offset,
            });
        }
    };
    r.finish()?;
    Ok(Rejection {
        local,
        remote,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VersionPolicy;
    use proptest::prelude::*;

    fn hello() -> Hello {
        let mut metadata = Metadata::new();
        metadata.insert("name", "laptop").unwrap();
        Hello {
            versions: Versions::new(Version::new(1, 2, 3)),
            app_name: "notes".into(),
            metadata,
        }
    }

    #[test]
    fn hello_round_trip_and_known_bytes() {
        let message = ControlMessage::Hello(hello());
        let frame = message.to_frame();
        let (body, _) = crate::codec::decode_frame(&frame, MAX_CONTROL_MESSAGE_LEN).unwrap();
        assert_eq!(ControlMessage::decode(body).unwrap(), message);
        let mut expected = vec![0u8];
        expected.extend(b"\x050.1.0\x05notes\x051.2.3");
        expected.extend(b"\x01\x04name\x06laptop");
        assert_eq!(body, &expected[..]);
        // The example in docs/PROTOCOL.md §7.1.
        assert_eq!(frame[0], 32);
    }

    #[test]
    fn goodbye_round_trip() {
        let message = ControlMessage::Goodbye {
            code: close_code::VERSION_REJECTED,
            reason: bytes::Bytes::from_static(b"why"),
        };
        let frame = message.to_frame();
        assert_eq!(&frame[..], [6, 2, 1, 3, b'w', b'h', b'y']);
        assert_eq!(ControlMessage::decode(&frame[1..]).unwrap(), message);
    }

    #[test]
    fn candidates_known_bytes() {
        let message = ControlMessage::Candidates(vec![
            "192.0.2.7:4433".parse().unwrap(),
            "[2001:db8::1]:1".parse().unwrap(),
        ]);
        let frame = message.to_frame();
        // The example in docs/PROTOCOL.md §10.7.
        let mut expected = vec![28, 4, 2, 4, 192, 0, 2, 7, 0x11, 0x51, 6];
        expected.extend([0x20, 0x01, 0x0d, 0xb8]);
        expected.extend([0; 11]);
        expected.extend([1, 0, 1]);
        assert_eq!(&frame[..], &expected[..]);
        assert_eq!(ControlMessage::decode(&frame[1..]).unwrap(), message);
        // More than MAX_CANDIDATES is an error, not an allocation.
        let mut many = vec![4u8, 200];
        many.extend([4, 1, 2, 3, 4, 0, 1].repeat(9));
        assert!(ControlMessage::decode(&many).is_err());
        // An unknown family.
        assert!(ControlMessage::decode(&[4, 1, 5, 1, 2, 3, 4, 0, 1]).is_err());
    }

    #[test]
    fn relays_known_bytes() {
        let identity = crate::Identity::from_bytes(&[7; 32]).to_remote_identity();
        let message = ControlMessage::Relays(vec![super::super::RelayAddr {
            identity,
            addr: "203.0.113.5:3340".parse().unwrap(),
        }]);
        let frame = message.to_frame();
        // The example in docs/PROTOCOL.md §10.8.
        let mut expected = vec![41, 5, 1];
        expected.extend(identity.as_bytes());
        expected.extend([4, 203, 0, 113, 5, 0x0d, 0x0c]);
        assert_eq!(&frame[..], &expected[..]);
        assert_eq!(ControlMessage::decode(&frame[1..]).unwrap(), message);
        // An identity that is not a valid key is an error.
        let mut bad = frame[1..].to_vec();
        bad[3..35].copy_from_slice(&[0xff; 32]);
        assert!(ControlMessage::decode(&bad).is_err());
    }

    #[test]
    fn unknown_messages_are_skipped_and_bad_versions_named() {
        assert_eq!(
            ControlMessage::decode(&[9, 1, 2, 3]),
            Ok(ControlMessage::Unknown(9))
        );
        let bad = [0u8, 3, b'1', b'.', b'x'];
        assert_eq!(
            ControlMessage::decode(&bad),
            Err(DecodeError::Invalid {
                what: "protocol version",
                offset: 1
            })
        );
    }

    #[test]
    fn rejections_round_trip() {
        let local = Versions::new(Version::new(1, 4, 0));
        let remote = Versions::new(Version::new(1, 2, 0));
        let policy = VersionPolicy::default().require_app_version(">=1.3".parse().unwrap());
        let rejection = policy.check(&local, &remote).unwrap_err();
        let bytes = encode_rejection(&rejection);
        assert_eq!(decode_rejection(&bytes).unwrap(), *rejection);
        let other = VersionPolicy::default()
            .check(&local, &Versions::new(Version::new(2, 0, 0)))
            .unwrap_err();
        assert_eq!(decode_rejection(&encode_rejection(&other)).unwrap(), *other);
    }

    proptest! {
        #[test]
        fn control_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ControlMessage::decode(&bytes);
            let _ = decode_rejection(&bytes);
        }

        #[test]
        fn candidates_round_trip(addrs in proptest::collection::vec(any::<std::net::SocketAddr>(), 0..=MAX_CANDIDATES)) {
            // The flow label and scope id are not on the wire.
            let addrs: Vec<_> = addrs.into_iter().map(|a| std::net::SocketAddr::new(a.ip(), a.port())).collect();
            let message = ControlMessage::Candidates(addrs);
            let frame = message.to_frame();
            let (body, _) = crate::codec::decode_frame(&frame, MAX_CONTROL_MESSAGE_LEN).unwrap();
            prop_assert_eq!(ControlMessage::decode(body).unwrap(), message);
        }
    }
}
