//! Shared test support for pos-p2p: the example application [`ExampleHeader`],
//! the bodies of the fuzz targets ([`fuzzing`]) and corpus replay helpers.
//!
//! The integration tests in `tests/` build on it, the benchmarks use its
//! header, and the cargo-fuzz targets in `fuzz/` call [`fuzzing`] so that the
//! code fuzzed on nightly is the code replayed by `cargo test` on stable.

use std::ops::Range;

use pos_p2p_protocol::codec::{DecodeError, Header, Reader, Writer};

pub mod fuzzing;
pub mod lan;
pub mod netns;
pub mod raw;
pub mod relay_link;
pub mod sim;

/// A 16-byte identifier, as a UUID's bytes.
pub type Id = [u8; 16];

/// The longest [`ExampleHeader::Message`] text, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// The most operations in an [`ExampleHeader::Sync`].
pub const MAX_SYNC_OPS: usize = 256;
/// The longest tag in an [`ExampleHeader::Tags`] list, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// The most tags in an [`ExampleHeader::Tags`] list.
pub const MAX_TAGS: usize = 32;

/// An application's stream header, as a file-sync app would write it: one
/// variant per operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExampleHeader {
    /// No payload.
    Ping,
    /// Request a byte range of a file (a UUID and a range).
    File {
        /// The file's id.
        id: Id,
        /// The requested bytes; `start <= end`.
        range: Range<u64>,
    },
    /// A text message (a string).
    Message(String),
    /// Sync a library: an id, a list of operation numbers and an optional note.
    Sync {
        /// The library's id.
        library: Id,
        /// Operation sequence numbers.
        ops: Vec<u64>,
        /// An optional note.
        note: Option<String>,
    },
    /// A list of strings and a flag.
    Tags {
        /// The tags.
        tags: Vec<String>,
        /// Whether to replace existing tags.
        replace: bool,
    },
}

impl Header for ExampleHeader {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Ping => w.tag(0),
            Self::File { id, range } => {
                w.tag(1);
                w.id16(id);
                w.varint(range.start);
                w.varint(range.end);
            }
            Self::Message(text) => {
                w.tag(2);
                w.str(text, MAX_MESSAGE_LEN);
            }
            Self::Sync { library, ops, note } => {
                w.tag(3);
                w.id16(library);
                w.list(ops, MAX_SYNC_OPS, |w, op| w.varint(*op));
                w.option(note.as_ref(), |w, note| w.str(note, MAX_MESSAGE_LEN));
            }
            Self::Tags { tags, replace } => {
                w.tag(4);
                w.list(tags, MAX_TAGS, |w, tag| w.str(tag, MAX_TAG_LEN));
                w.bool(*replace);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.tag()? {
            0 => Self::Ping,
            1 => {
                let id = r.id16()?;
                let offset = r.position();
                let (start, end) = (r.varint()?, r.varint()?);
                if start > end {
                    return Err(r.invalid("byte range", offset));
                }
                Self::File {
                    id,
                    range: start..end,
                }
            }
            2 => Self::Message(r.string(MAX_MESSAGE_LEN)?),
            3 => Self::Sync {
                library: r.id16()?,
                ops: r.list(MAX_SYNC_OPS, Reader::varint)?,
                note: r.option(|r| r.string(MAX_MESSAGE_LEN))?,
            },
            4 => Self::Tags {
                tags: r.list(MAX_TAGS, |r| r.string(MAX_TAG_LEN))?,
                replace: r.bool()?,
            },
            tag => return Err(r.unknown_tag("ExampleHeader", tag)),
        })
    }
}

/// Both ends of a tunnel handshake completed in memory, for tests, fuzz
/// bodies and benchmarks.
#[derive(Debug)]
pub struct TunnelPair {
    /// The initiator's transport.
    pub initiator: pos_p2p_protocol::tunnel::TunnelTransport,
    /// The responder's transport.
    pub responder: pos_p2p_protocol::tunnel::TunnelTransport,
    /// Every handshake byte the initiator sent.
    pub initiator_bytes: Vec<u8>,
}

/// Run a tunnel handshake between two in-memory ends with the given keys
/// and RNG seeds (initiator's, responder's). Panics if it fails: callers
/// give it members of one library.
pub fn tunnel_pair(
    nodes: pos_p2p_protocol::tunnel::NodePair,
    library: pos_p2p_protocol::tunnel::LibraryId,
    initiator_keys: &dyn pos_p2p_protocol::tunnel::LibraryKeys,
    responder_keys: &dyn pos_p2p_protocol::tunnel::LibraryKeys,
    seeds: [[u8; 32]; 2],
) -> TunnelPair {
    use pos_p2p_protocol::tunnel::TunnelHandshake;
    let mut initiator = TunnelHandshake::initiator(nodes, library, initiator_keys, seeds[0])
        .expect("initiator starts");
    let mut responder = TunnelHandshake::responder(nodes, seeds[1]);
    let (mut to_r, mut to_i, mut initiator_bytes) = (Vec::new(), Vec::new(), Vec::new());
    while !(initiator.is_done() && responder.is_done()) {
        let before = to_r.len();
        initiator.take_output(&mut to_r);
        initiator_bytes.extend_from_slice(&to_r[before..]);
        let used = responder
            .handle_input(&to_r, responder_keys)
            .expect("responder");
        to_r.drain(..used);
        responder.take_output(&mut to_i);
        let used = initiator
            .handle_input(&to_i, initiator_keys)
            .expect("initiator");
        to_i.drain(..used);
    }
    TunnelPair {
        initiator: initiator.into_transport().expect("initiator transport").0,
        responder: responder.into_transport().expect("responder transport").0,
        initiator_bytes,
    }
}

/// Every file of the committed and locally grown corpus of fuzz target
/// `target`, as `(file name, bytes)`, sorted by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}
