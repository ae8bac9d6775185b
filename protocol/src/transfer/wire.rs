//! The transfer's messages and its byte schedule (docs/PROTOCOL.md §11.3).
//!
//! A transfer is one stream. The sender writes an [`Offer`] (every file's
//! path, size and BLAKE3 hash, every directory); the receiver answers with
//! an [`Answer`]: [`Decline`](Answer::Decline), or a [`Want`] (the files'
//! outboards and group ranges it lacks, so a resumed transfer asks only
//! for what is missing). The sender then writes exactly the pieces the
//! want names, in the order [`Want::pieces`] gives, each behind a one-byte
//! [`PIECE`] marker (or an [`ABORT`] and a reason). No round trip per file
//! or per chunk: everything wanted is in flight at once and QUIC's flow
//! control paces it. The receiver verifies every group as it arrives and
//! answers again: another `Want` with the groups that failed (at most
//! [`MAX_ROUNDS`] rounds), [`Done`](Answer::Done), or
//! [`Failed`](Answer::Failed) with its reason (a full disk).
//!
//! Everything here is decoded from a peer's bytes: lengths are checked
//! before anything is allocated, and a message that decodes is consistent
//! (paths are [`SafePath`]s, no path twice, no file under a file, sizes
//! that add up, ranges inside their files).

use std::collections::BTreeSet;
use std::ops::Range;

use bytes::Bytes;

use super::names::{MAX_DEPTH, MAX_NAME_LEN, NameError, SafePath};
use super::tree::{GROUP_LEN, HASH_LEN, group_count, group_range, outboard_len};
use crate::codec::encode_frame;
use crate::codec::{DecodeError, EncodeError, Reader, Writer};

/// The longest [`Offer`] frame a receiver takes: 16 MiB.
pub const MAX_OFFER_LEN: usize = 16 * 1024 * 1024;
/// The most entries (files and directories) in one offer. With
/// [`MAX_OFFER_LEN`] this bounds what a decoded offer holds to about
/// 40 MiB.
pub const MAX_ENTRIES: usize = 250_000;
/// The longest sender name in an offer, in bytes.
pub const MAX_SENDER_LEN: usize = 64;
/// The longest [`Answer`] frame a sender takes: 4 MiB.
pub const MAX_ANSWER_LEN: usize = 4 * 1024 * 1024;
/// The most group ranges one file's entry in a [`Want`] names.
pub const MAX_RANGES: usize = 1024;
/// The longest reason in a decline, a failure or an abort, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// How many `Want`s a receiver sends at most: the first, and a re-fetch
/// of corrupt groups three times.
pub const MAX_ROUNDS: u32 = 4;
/// The largest file an offer may hold: 1 TiB (its outboard, which a
/// receiver holds in memory, is 128 MiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// The marker before each piece of data.
pub const PIECE: u8 = 0;
/// The marker of a sender that stops: a [`MAX_REASON_LEN`] string follows
/// (a varint length and UTF-8).
pub const ABORT: u8 = 1;
/// The BLAKE3 hash of no bytes: the only hash an empty file can have.
pub const EMPTY_HASH: [u8; HASH_LEN] = [
    0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6, 0xa0, 0x40, 0x4d, 0xea, 0x36, 0xdc, 0xc9, 0x49,
    0x9b, 0xcb, 0x25, 0xc9, 0xad, 0xc1, 0x12, 0xb7, 0xcc, 0x9a, 0x93, 0xca, 0xe4, 0x1f, 0x32, 0x62,
];

/// Why a transfer message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The bytes do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A path in the offer is not a plain relative name.
    #[error("unsafe path in the offer: {0}")]
    Name(#[from] NameError),
    /// Entries out of order or a path twice.
    #[error("offer entries must be in ascending path order, each path once")]
    Order,
    /// A file and another entry under it.
    #[error("an entry under the file {0:?}")]
    UnderFile(String),
    /// An empty file whose hash is not the hash of nothing.
    #[error("an empty file with a non-empty hash")]
    EmptyHash,
    /// A want names an entry the offer does not have, or not a file, or
    /// names files out of order.
    #[error("a want names entry {0}, which is not a file of the offer in order")]
    NotAFile(u64),
    /// A want's ranges are empty, out of order, overlapping or beyond the
    /// file.
    #[error("a want's group ranges for entry {0} are not ascending ranges inside the file")]
    Ranges(u64),
    /// A want entry that asks for nothing.
    #[error("a want entry {0} that asks for nothing")]
    Nothing(u64),
    /// A file over [`MAX_FILE_SIZE`].
    #[error("a file of {0} bytes, over the limit")]
    FileTooLarge(u64),
    /// More than [`MAX_ROUNDS`] wants.
    #[error("more than {MAX_ROUNDS} rounds")]
    TooManyRounds,
}

/// What an offer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (sent so that empty ones arrive too).
    Dir,
    /// A file.
    File {
        /// Its size in bytes.
        size: u64,
        /// Its BLAKE3 hash.
        hash: [u8; HASH_LEN],
    },
}

/// One file or directory of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it goes, relative to the receiver's directory.
    pub path: SafePath,
    /// A directory or a file.
    pub kind: EntryKind,
}

/// The sender's first message: who sends and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The sender's name for itself, shown to the receiver (not an
    /// identity: the connection's peer identity is that).
    pub sender: String,
    /// The entries, in ascending path order.
    pub entries: Vec<Entry>,
    total: u64,
}

impl Offer {
    /// An offer of `entries` (sorted here), checked as a receiver checks it
    /// (a sender name or an entry count beyond the limits fails in
    /// [`to_frame`](Offer::to_frame)).
    pub fn new(sender: String, mut entries: Vec<Entry>) -> Result<Self, MessageError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let total = check_entries(&entries)?;
        Ok(Self {
            sender,
            entries,
            total,
        })
    }

    /// The bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.total
    }

    /// How many files (not directories).
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count()
    }

    /// The offer as a frame (a varint length, then the body).
    pub fn to_frame(&self) -> Result<Bytes, EncodeError> {
        encode_frame(MAX_OFFER_LEN, |w| {
            w.str(&self.sender, MAX_SENDER_LEN);
            w.list(&self.entries, MAX_ENTRIES, |w, entry| {
                w.list(entry.path.components(), MAX_DEPTH, |w, name| {
                    w.str(name, MAX_NAME_LEN);
                });
                match &entry.kind {
                    EntryKind::Dir => w.tag(0),
                    &EntryKind::File { size, ref hash } => {
                        w.tag(1);
                        w.varint(size);
                        w.raw(hash);
                    }
                }
            });
        })
    }

    /// Decode an offer's body (the frame's contents) and check it.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let sender = r.string(MAX_SENDER_LEN)?;
        let mut bad_name = None;
        let entries = r.list(MAX_ENTRIES, |r| {
            let components = r.list(MAX_DEPTH, |r| r.string(MAX_NAME_LEN))?;
            let kind = match r.tag()? {
                0 => EntryKind::Dir,
                1 => EntryKind::File {
                    size: r.varint()?,
                    hash: r.array()?,
                },
                tag => return Err(r.unknown_tag("offer entry", tag)),
            };
            let path = match SafePath::new(components) {
                Ok(path) => path,
                Err(error) => {
                    bad_name.get_or_insert(error);
                    return Ok(None);
                }
            };
            Ok(Some(Entry { path, kind }))
        })?;
        r.finish()?;
        if let Some(error) = bad_name {
            return Err(error.into());
        }
        let entries: Vec<Entry> = entries.into_iter().flatten().collect();
        if entries.windows(2).any(|w| w[0].path >= w[1].path) {
            return Err(MessageError::Order);
        }
        let total = check_entries(&entries)?;
        Ok(Self {
            sender,
            entries,
            total,
        })
    }
}

/// Check sorted entries: each path once, nothing under a file, empty
/// files with the empty hash, sizes that add up. Returns the total.
fn check_entries(entries: &[Entry]) -> Result<u64, MessageError> {
    let mut files: BTreeSet<&[String]> = BTreeSet::new();
    let mut total: u64 = 0;
    let mut previous: Option<&SafePath> = None;
    for entry in entries {
        if previous.is_some_and(|p| *p >= entry.path) {
            return Err(MessageError::Order);
        }
        previous = Some(&entry.path);
        let components = entry.path.components();
        for depth in 1..components.len() {
            if files.contains(&components[..depth]) {
                return Err(MessageError::UnderFile(components[..depth].join("/")));
            }
        }
        if let EntryKind::File { size, hash } = &entry.kind {
            if *size == 0 && *hash != EMPTY_HASH {
                return Err(MessageError::EmptyHash);
            }
            if *size > MAX_FILE_SIZE {
                return Err(MessageError::FileTooLarge(*size));
            }
            // At most MAX_ENTRIES files of MAX_FILE_SIZE: no overflow.
            total = total.saturating_add(*size);
            files.insert(components);
        }
    }
    Ok(total)
}

/// What the receiver wants of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantFile {
    /// The file's index in [`Offer::entries`].
    pub index: u64,
    /// Whether to send its outboard first (a receiver that resumes has
    /// it).
    pub outboard: bool,
    /// The groups to send, as ascending, non-overlapping, non-empty
    /// ranges.
    pub groups: Vec<Range<u64>>,
}

/// What the receiver wants sent: files in ascending index order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Want {
    /// The files, each once, in ascending index order.
    pub files: Vec<WantFile>,
}

/// One piece of the data a [`Want`] asks for, in the order it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A file's outboard: `len` bytes.
    Outboard {
        /// The file's index in the offer.
        file: usize,
        /// [`outboard_len`] of its size.
        len: u64,
    },
    /// A group of a file: the bytes `range` of the file.
    Group {
        /// The file's index in the offer.
        file: usize,
        /// The group's index.
        index: u64,
        /// Its bytes in the file.
        range: Range<u64>,
    },
}

impl Piece {
    /// How many bytes of data the piece is (its marker not counted).
    pub fn len(&self) -> u64 {
        match self {
            Piece::Outboard { len, .. } => *len,
            Piece::Group { range, .. } => range.end - range.start,
        }
    }

    /// Whether the piece has no bytes (an empty file's group).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Want {
    /// Check a want against the offer it answers.
    pub fn check(&self, offer: &Offer) -> Result<(), MessageError> {
        let mut previous: Option<u64> = None;
        for file in &self.files {
            let index = file.index;
            if previous.is_some_and(|p| p >= index) {
                return Err(MessageError::NotAFile(index));
            }
            previous = Some(index);
            let Some(Entry {
                kind: EntryKind::File { size, .. },
                ..
            }) = usize::try_from(index)
                .ok()
                .and_then(|i| offer.entries.get(i))
            else {
                return Err(MessageError::NotAFile(index));
            };
            if !file.outboard && file.groups.is_empty() {
                return Err(MessageError::Nothing(index));
            }
            let groups = group_count(*size);
            let mut end = 0;
            for (i, range) in file.groups.iter().enumerate() {
                if range.start >= range.end || (i > 0 && range.start <= end) || range.end > groups {
                    return Err(MessageError::Ranges(index));
                }
                end = range.end;
            }
        }
        Ok(())
    }

    /// The pieces the sender sends for this want, in order: for each file,
    /// its outboard if wanted, then its wanted groups in ascending order.
    /// The want must have passed [`check`](Want::check) against `offer`.
    pub fn pieces<'a>(&'a self, offer: &'a Offer) -> impl Iterator<Item = Piece> + 'a {
        self.files.iter().flat_map(move |file| {
            let index = file.index as usize;
            let size = match offer.entries.get(index).map(|e| &e.kind) {
                Some(EntryKind::File { size, .. }) => *size,
                _ => 0,
            };
            let outboard = file.outboard.then_some(Piece::Outboard {
                file: index,
                len: outboard_len(size),
            });
            let groups = file.groups.iter().flat_map(move |range| {
                range.clone().filter_map(move |group| {
                    group_range(size, group).map(|bytes| Piece::Group {
                        file: index,
                        index: group,
                        range: bytes,
                    })
                })
            });
            outboard.into_iter().chain(groups)
        })
    }

    /// The bytes of data the want asks for (markers not counted).
    pub fn data_len(&self, offer: &Offer) -> u64 {
        self.pieces(offer)
            .fold(0u64, |sum, piece| sum.saturating_add(piece.len()))
    }

    fn encode(&self, w: &mut Writer) {
        w.list(&self.files, MAX_ENTRIES, |w, file| {
            w.varint(file.index);
            w.bool(file.outboard);
            w.list(&file.groups, MAX_RANGES, |w, range| {
                w.varint(range.start);
                w.varint(range.end);
            });
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let files = r.list(MAX_ENTRIES, |r| {
            Ok(WantFile {
                index: r.varint()?,
                outboard: r.bool()?,
                groups: r.list(MAX_RANGES, |r| Ok(r.varint()?..r.varint()?))?,
            })
        })?;
        Ok(Self { files })
    }
}

/// The receiver's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No, with a reason for the sender to show.
    Decline {
        /// Why.
        reason: String,
    },
    /// Send these pieces.
    Want(Want),
    /// Everything arrived and was verified.
    Done,
    /// The receiver cannot go on (a full disk, a directory it cannot
    /// write); what it verified so far it keeps, to resume.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Answer {
    /// The answer as a frame.
    pub fn to_frame(&self) -> Result<Bytes, EncodeError> {
        encode_frame(MAX_ANSWER_LEN, |w| match self {
            Answer::Decline { reason } => {
                w.tag(0);
                w.str(reason, MAX_REASON_LEN);
            }
            Answer::Want(want) => {
                w.tag(1);
                want.encode(w);
            }
            Answer::Done => w.tag(2),
            Answer::Failed { reason } => {
                w.tag(3);
                w.str(reason, MAX_REASON_LEN);
            }
        })
    }

    /// Decode an answer's body (the frame's contents). A `Want` still has
    /// to be [checked](Want::check) against its offer.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let answer = match r.tag()? {
            0 => Answer::Decline {
                reason: r.string(MAX_REASON_LEN)?,
            },
            1 => Answer::Want(Want::decode(&mut r)?),
            2 => Answer::Done,
            3 => Answer::Failed {
                reason: r.string(MAX_REASON_LEN)?,
            },
            tag => return Err(r.unknown_tag("transfer answer", tag).into()),
        };
        r.finish()?;
        Ok(answer)
    }
}

/// The bytes of an abort: [`ABORT`], then the reason (cut to
/// [`MAX_REASON_LEN`] bytes at a character boundary).
pub fn abort_bytes(reason: &str) -> Result<Bytes, EncodeError> {
    let mut w = Writer::new();
    w.u8(ABORT);
    w.str(cut_reason(reason), MAX_REASON_LEN);
    w.finish()
}

/// `reason` cut to at most [`MAX_REASON_LEN`] bytes, at a character
/// boundary.
pub fn cut_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Which of `count` groups are missing, as ascending ranges, from a
/// predicate saying which are present; at most [`MAX_RANGES`] ranges (the
/// gaps between the last ones are asked for again rather than cut off).
pub fn missing_ranges(count: u64, mut have: impl FnMut(u64) -> bool) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for group in 0..count {
        if have(group) {
            continue;
        }
        let full = ranges.len() >= MAX_RANGES;
        match ranges.last_mut() {
            Some(last) if last.end == group || full => last.end = group + 1,
            _ => ranges.push(group..group + 1),
        }
    }
    ranges
}

/// The number of bytes of `groups` ranges of a file of `size` bytes.
pub fn ranges_len(size: u64, groups: &[Range<u64>]) -> u64 {
    groups
        .iter()
        .map(|r| {
            let start = r.start.saturating_mul(GROUP_LEN).min(size);
            let end = r.end.saturating_mul(GROUP_LEN).min(size);
            end - start
        })
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
#[allow(
    clippy::single_range_in_vec_init,
    clippy::type_complexity,
    clippy::reversed_empty_ranges
)]
mod tests {
    use super::*;
    use crate::codec::decode_frame;
    use proptest::prelude::*;

    fn path(p: &str) -> SafePath {
        SafePath::new(p.split('/').map(str::to_owned).collect()).unwrap()
    }

    fn file(p: &str, size: u64) -> Entry {
        let hash = if size == 0 { EMPTY_HASH } else { [7; 32] };
        Entry {
            path: path(p),
            kind: EntryKind::File { size, hash },
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            path: path(p),
            kind: EntryKind::Dir,
        }
    }

    fn body(frame: &Bytes, max: usize) -> Vec<u8> {
        let (body, used) = decode_frame(frame, max).unwrap();
        assert_eq!(used, frame.len());
        body.to_vec()
    }

    #[test]
    fn the_empty_hash_is_blake3_of_nothing() {
        assert_eq!(EMPTY_HASH, *blake3::hash(b"").as_bytes());
    }

    #[test]
    fn an_offer_has_known_bytes() {
        let offer =
            Offer::new("ann".into(), vec![file("a/b", 300), dir("a"), file("e", 0)]).unwrap();
        let frame = offer.to_frame().unwrap();
        let mut expected = vec![0u8, 3, b'a', b'n', b'n', 3];
        expected.extend_from_slice(&[1, 1, b'a', 0]);
        expected.extend_from_slice(&[2, 1, b'a', 1, b'b', 1, 0xac, 0x02]);
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&[1, 1, b'e', 1, 0]);
        expected.extend_from_slice(&EMPTY_HASH);
        expected[0] = (expected.len() - 1) as u8;
        assert_eq!(frame.as_ref(), expected.as_slice());
        assert_eq!(Offer::decode(&body(&frame, MAX_OFFER_LEN)).unwrap(), offer);
        assert_eq!(offer.total_size(), 300);
        assert_eq!(offer.file_count(), 2);
    }

    #[test]
    fn an_answer_has_known_bytes() {
        let want = Answer::Want(Want {
            files: vec![WantFile {
                index: 2,
                outboard: true,
                groups: vec![0..1, 3..5],
            }],
        });
        let frame = want.to_frame().unwrap();
        assert_eq!(frame.as_ref(), &[9, 1, 1, 2, 1, 2, 0, 1, 3, 5]);
        assert_eq!(Answer::decode(&frame[1..]).unwrap(), want);
        for answer in [
            Answer::Done,
            Answer::Decline {
                reason: "no".into(),
            },
            Answer::Failed {
                reason: "disk full".into(),
            },
        ] {
            let frame = answer.to_frame().unwrap();
            assert_eq!(Answer::decode(&frame[1..]).unwrap(), answer);
        }
        assert_eq!(Answer::Done.to_frame().unwrap().as_ref(), &[1, 2]);
    }

    fn offer_bytes(entries: &[(&[&str], Option<(u64, [u8; 32])>)]) -> Vec<u8> {
        let mut w = Writer::new();
        w.str("x", 64);
        w.varint(entries.len() as u64);
        for (components, kind) in entries {
            w.varint(components.len() as u64);
            for c in *components {
                w.str(c, 1000);
            }
            match kind {
                None => w.tag(0),
                Some((size, hash)) => {
                    w.tag(1);
                    w.varint(*size);
                    w.raw(hash);
                }
            }
        }
        w.finish().unwrap().to_vec()
    }

    #[test]
    fn a_file_of_the_largest_size_is_accepted() {
        let body = offer_bytes(&[(&["a"], Some((MAX_FILE_SIZE, [1; 32])))]);
        let offer = Offer::decode(&body).unwrap();
        assert_eq!(offer.total_size(), MAX_FILE_SIZE);
        let body = offer_bytes(&[(&["a"], Some((MAX_FILE_SIZE + 1, [1; 32])))]);
        assert_eq!(
            Offer::decode(&body),
            Err(MessageError::FileTooLarge(MAX_FILE_SIZE + 1))
        );
    }

    #[test]
    fn a_hostile_offer_is_refused() {
        let h = Some((5, [1; 32]));
        let cases: Vec<(Vec<u8>, fn(&MessageError) -> bool)> = vec![
            (offer_bytes(&[(&["..", "etc"], h)]), |e| {
                matches!(e, MessageError::Name(NameError::Dots))
            }),
            (offer_bytes(&[(&["/etc"], h)]), |e| {
                matches!(e, MessageError::Name(NameError::Separator))
            }),
            (offer_bytes(&[(&["NUL.txt"], h)]), |e| {
                matches!(e, MessageError::Name(NameError::Reserved(_)))
            }),
            (offer_bytes(&[(&["b"], h), (&["a"], h)]), |e| {
                matches!(e, MessageError::Order)
            }),
            (offer_bytes(&[(&["a"], h), (&["a"], None)]), |e| {
                matches!(e, MessageError::Order)
            }),
            (offer_bytes(&[(&["a"], h), (&["a", "b"], h)]), |e| {
                matches!(e, MessageError::UnderFile(_))
            }),
            (offer_bytes(&[(&["a"], Some((0, [1; 32])))]), |e| {
                matches!(e, MessageError::EmptyHash)
            }),
            (
                offer_bytes(&[(&["a"], Some((MAX_FILE_SIZE + 1, [1; 32])))]),
                |e| matches!(e, MessageError::FileTooLarge(_)),
            ),
        ];
        for (bytes, expected) in cases {
            let error = Offer::decode(&bytes).unwrap_err();
            assert!(expected(&error), "{error:?}");
        }
        // A count beyond the limit is refused before anything is allocated.
        let mut w = Writer::new();
        w.str("x", 64);
        w.varint(MAX_ENTRIES as u64 + 1);
        assert!(matches!(
            Offer::decode(&w.finish().unwrap()),
            Err(MessageError::Decode(DecodeError::TooLong { .. }))
        ));
        // Trailing bytes.
        let mut bytes = offer_bytes(&[(&["a"], h)]);
        bytes.push(0);
        assert!(Offer::decode(&bytes).is_err());
    }

    #[test]
    fn a_want_is_checked_against_its_offer() {
        // Entries: 0 dir "d", 1 file "d/big" (3 groups), 2 file "e" (empty).
        let offer = Offer::new(
            "x".into(),
            vec![dir("d"), file("d/big", 2 * GROUP_LEN + 1), file("e", 0)],
        )
        .unwrap();
        let want = |index, outboard, groups: Vec<Range<u64>>| Want {
            files: vec![WantFile {
                index,
                outboard,
                groups,
            }],
        };
        assert!(want(1, true, vec![0..1, 2..3]).check(&offer).is_ok());
        assert!(want(2, false, vec![0..1]).check(&offer).is_ok());
        let bad = [
            (want(0, true, vec![0..1]), MessageError::NotAFile(0)),
            (want(3, true, vec![0..1]), MessageError::NotAFile(3)),
            (
                want(u64::MAX, true, vec![0..1]),
                MessageError::NotAFile(u64::MAX),
            ),
            (want(1, false, vec![]), MessageError::Nothing(1)),
            (want(1, false, vec![0..4]), MessageError::Ranges(1)),
            (want(1, false, vec![1..1]), MessageError::Ranges(1)),
            (want(1, false, vec![2..1]), MessageError::Ranges(1)),
            (want(1, false, vec![0..2, 1..3]), MessageError::Ranges(1)),
            (want(1, false, vec![0..1, 1..2]), MessageError::Ranges(1)),
            (want(1, false, vec![1..2, 0..1]), MessageError::Ranges(1)),
        ];
        for (want, error) in bad {
            assert_eq!(want.check(&offer), Err(error), "{want:?}");
        }
        let twice = Want {
            files: vec![
                WantFile {
                    index: 1,
                    outboard: true,
                    groups: vec![],
                },
                WantFile {
                    index: 1,
                    outboard: false,
                    groups: vec![0..1],
                },
            ],
        };
        assert_eq!(twice.check(&offer), Err(MessageError::NotAFile(1)));
    }

    #[test]
    fn pieces_follow_the_want() {
        let size = 2 * GROUP_LEN + 1;
        let offer = Offer::new("x".into(), vec![file("a", size), file("b", 0)]).unwrap();
        let want = Want {
            files: vec![
                WantFile {
                    index: 0,
                    outboard: true,
                    groups: vec![0..1, 2..3],
                },
                WantFile {
                    index: 1,
                    outboard: false,
                    groups: vec![0..1],
                },
            ],
        };
        want.check(&offer).unwrap();
        let pieces: Vec<Piece> = want.pieces(&offer).collect();
        assert_eq!(
            pieces,
            vec![
                Piece::Outboard { file: 0, len: 96 },
                Piece::Group {
                    file: 0,
                    index: 0,
                    range: 0..GROUP_LEN
                },
                Piece::Group {
                    file: 0,
                    index: 2,
                    range: 2 * GROUP_LEN..size
                },
                Piece::Group {
                    file: 1,
                    index: 0,
                    range: 0..0
                },
            ]
        );
        assert_eq!(want.data_len(&offer), 96 + GROUP_LEN + 1);
        assert_eq!(ranges_len(size, &[0..1, 2..3]), GROUP_LEN + 1);
    }

    #[test]
    fn missing_ranges_merge_and_stay_bounded() {
        assert_eq!(missing_ranges(6, |g| g == 2), vec![0..2, 3..6]);
        assert_eq!(missing_ranges(3, |_| true), Vec::<Range<u64>>::new());
        // Every other group missing: the ranges stop at MAX_RANGES and the
        // last one covers the rest (present groups asked for again).
        let n = 3 * MAX_RANGES as u64;
        let ranges = missing_ranges(n, |g| g % 2 == 1);
        assert_eq!(ranges.len(), MAX_RANGES);
        assert_eq!(ranges.last().unwrap().end, n - 1);
        for g in (0..n).step_by(2) {
            assert!(ranges.iter().any(|r| r.contains(&g)), "group {g} lost");
        }
    }

    #[test]
    fn an_abort_is_cut_at_a_character() {
        let long = "é".repeat(200);
        let bytes = abort_bytes(&long).unwrap();
        assert_eq!(bytes[0], ABORT);
        let mut r = Reader::new(&bytes[1..]);
        let reason = r.string(MAX_REASON_LEN).unwrap();
        assert_eq!(reason.len(), 256);
        r.finish().unwrap();
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}"
    }

    proptest! {
        #[test]
        fn offers_round_trip(
            names in proptest::collection::btree_set(
                proptest::collection::vec(arb_name(), 1..3), 0..20),
            sizes in proptest::collection::vec(0u64..(1 << 40), 20),
        ) {
            // Keep only entries not under a file: make every path with
            // children a directory.
            let all: Vec<Vec<String>> = names.into_iter().collect();
            let mut entries = Vec::new();
            for (i, components) in all.iter().enumerate() {
                let is_parent = all.iter().any(|o| o.len() > components.len() && o.starts_with(components));
                let under_file = entries.iter().any(|e: &Entry| {
                    matches!(e.kind, EntryKind::File { .. })
                        && components.starts_with(e.path.components())
                });
                if under_file { continue; }
                // Generated names can be Windows devices ("aux"): those
                // are refused, so are not in an offer.
                let Ok(path) = SafePath::new(components.clone()) else { continue };
                let kind = if is_parent {
                    EntryKind::Dir
                } else {
                    let size = sizes[i % sizes.len()];
                    EntryKind::File { size, hash: if size == 0 { EMPTY_HASH } else { [i as u8; 32] } }
                };
                entries.push(Entry { path, kind });
            }
            let offer = Offer::new("p".into(), entries).unwrap();
            let frame = offer.to_frame().unwrap();
            let decoded = Offer::decode(&body(&frame, MAX_OFFER_LEN)).unwrap();
            prop_assert_eq!(&decoded, &offer);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Offer::decode(&bytes);
            if let Ok(Answer::Want(want)) = Answer::decode(&bytes) {
                let offer = Offer::new("x".into(), vec![file("a", 5 * GROUP_LEN)]).unwrap();
                if want.check(&offer).is_ok() {
                    prop_assert!(want.data_len(&offer) <= 160 + 5 * GROUP_LEN);
                }
            }
        }

        #[test]
        fn a_checked_want_sends_exactly_its_ranges(
            size in 0u64..(20 * GROUP_LEN),
            have in proptest::collection::vec(any::<bool>(), 20),
            outboard in any::<bool>(),
        ) {
            let offer = Offer::new("x".into(), vec![file("a", size)]).unwrap();
            let groups = missing_ranges(group_count(size), |g| have[g as usize]);
            prop_assume!(outboard || !groups.is_empty());
            let want = Want { files: vec![WantFile { index: 0, outboard, groups: groups.clone() }] };
            prop_assert!(want.check(&offer).is_ok());
            let frame = Answer::Want(want.clone()).to_frame().unwrap();
            prop_assert_eq!(Answer::decode(&body(&frame, MAX_ANSWER_LEN)).unwrap(), Answer::Want(want.clone()));
            let mut sent = 0u64;
            for piece in want.pieces(&offer) {
                if let Piece::Group { index, range, .. } = piece {
                    prop_assert!(!have[index as usize]);
                    prop_assert_eq!(Some(range.clone()), group_range(size, index));
                    sent += range.end - range.start;
                }
            }
            prop_assert_eq!(sent, ranges_len(size, &groups));
            prop_assert_eq!(want.data_len(&offer), sent + if outboard { outboard_len(size) } else { 0 });
        }
    }
}
