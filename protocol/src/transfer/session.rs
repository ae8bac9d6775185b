//! The receiver's side of a transfer as a state machine (docs/PROTOCOL.md
//! §11.3): what to ask for, and what each arriving piece means. No files,
//! no streams: the adapter reads pieces, hands them here, and writes the
//! groups this accepts.
//!
//! ```
//! use pos_p2p_protocol::transfer::session::{Receiving, Arrived};
//! use pos_p2p_protocol::transfer::tree::FileHasher;
//! use pos_p2p_protocol::transfer::wire::{Entry, EntryKind, Offer, Piece};
//! use pos_p2p_protocol::transfer::names::SafePath;
//!
//! let data = b"hello".to_vec();
//! let mut hasher = FileHasher::new();
//! hasher.update(&data);
//! let (hash, _) = hasher.finalize();
//! let path = SafePath::new(vec!["hello.txt".into()]).unwrap();
//! let offer = Offer::new("ann".into(), vec![Entry { path, kind: EntryKind::File { size: 5, hash } }]).unwrap();
//!
//! let mut receiving = Receiving::new(offer.clone());
//! let want = receiving.next_want().unwrap().expect("everything is missing");
//! for piece in want.pieces(&offer) {
//!     // ... read `piece.len()` bytes from the stream: here an outboard
//!     // (none for a file of one group), then the file's one group.
//!     let bytes: &[u8] = match piece {
//!         Piece::Outboard { .. } => &[],
//!         Piece::Group { .. } => &data,
//!     };
//!     let arrived = receiving.arrived(&piece, bytes).unwrap();
//!     assert!(matches!(arrived, Arrived::Outboard | Arrived::Verified { file_complete: true }));
//! }
//! assert!(receiving.next_want().unwrap().is_none()); // done
//! ```

use std::ops::Range;

use super::tree::{HASH_LEN, Verifier, VerifyError, group_count, group_range};
use super::wire::{
    Answer, EntryKind, MAX_ROUNDS, MessageError, Offer, Piece, Want, WantFile, missing_ranges,
};

/// Why a receiver gives up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The sender's outboard does not match the file's hash: it cannot be
    /// the file it offered.
    #[error("the sender's outboard for {path} does not match its hash: {error}")]
    Outboard {
        /// The file.
        path: String,
        /// What was wrong.
        error: VerifyError,
    },
    /// A group still did not verify after [`MAX_ROUNDS`] rounds: the
    /// sender's file is not what it offered (it changed while sending?).
    #[error(
        "{path}: {groups} group(s) still corrupt after {MAX_ROUNDS} attempts; did the file change while it was sent?"
    )]
    StillCorrupt {
        /// The first file with corrupt groups.
        path: String,
        /// How many of its groups.
        groups: u64,
    },
    /// A piece the want did not ask for (a bug in the caller).
    #[error("a piece for entry {0} that is not a wanted file")]
    Unexpected(usize),
    /// [`Receiving::next_want`] before every piece of the last want
    /// arrived (a bug in the caller: a stream that ended early is an
    /// error of its own, not a round).
    #[error("the next want was asked for before {groups} group(s) of entry {index} arrived")]
    RoundIncomplete {
        /// The first file with groups outstanding.
        index: usize,
        /// How many.
        groups: u64,
    },
}

/// What one arriving piece did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// An outboard, checked against the hash.
    Outboard,
    /// A group that verified: write it. `file_complete` once the file has
    /// every group.
    Verified {
        /// Whether this was the file's last missing group.
        file_complete: bool,
    },
    /// A group that did not verify: drop it; it is asked for again.
    Corrupt,
}

#[derive(Debug, Clone)]
struct FileProgress {
    size: u64,
    hash: [u8; HASH_LEN],
    verifier: Option<Verifier>,
    /// Groups asked for this round (or to ask for next, before a round).
    missing: Vec<Range<u64>>,
    /// Groups asked for but not yet verified this round.
    outstanding: u64,
    /// Groups that failed this round.
    corrupt: Vec<u64>,
    /// An earlier file of the offer with the same contents: this one is
    /// not asked for, but copied from that one.
    same_as: Option<usize>,
}

/// The receiver's state for one offer.
#[derive(Debug, Clone)]
pub struct Receiving {
    offer: Offer,
    /// One per offer entry; `None` for directories.
    files: Vec<Option<FileProgress>>,
    rounds: u32,
}

impl Receiving {
    /// A receiver that has nothing of `offer` yet.
    /// A file whose contents an earlier file has is not asked for
    /// ([`same_as`](Receiving::same_as) names that file).
    pub fn new(offer: Offer) -> Self {
        let mut first_of = std::collections::HashMap::new();
        let files = offer
            .entries
            .iter()
            .enumerate()
            .map(|(index, entry)| match entry.kind {
                EntryKind::Dir => None,
                EntryKind::File { size, hash } => {
                    let same_as = match first_of.entry(hash) {
                        std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(index);
                            None
                        }
                    };
                    let missing = match same_as {
                        Some(_) => Vec::new(),
                        None => std::iter::once(0..group_count(size)).collect(),
                    };
                    Some(FileProgress {
                        size,
                        hash,
                        verifier: None,
                        missing,
                        outstanding: 0,
                        corrupt: Vec::new(),
                        same_as,
                    })
                }
            })
            .collect();
        Self {
            offer,
            files,
            rounds: 0,
        }
    }

    /// The offer.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    fn progress(&mut self, index: usize) -> Option<&mut FileProgress> {
        self.files.get_mut(index).and_then(Option::as_mut)
    }

    /// File `index` resumes: its outboard was kept (`verifier`, made from
    /// it) and `have` says which groups are on disk and verify. Only the
    /// others are asked for, and no outboard. Returns the bytes kept.
    pub fn resume(
        &mut self,
        index: usize,
        verifier: Verifier,
        mut have: impl FnMut(u64) -> bool,
    ) -> u64 {
        let Some(file) = self.progress(index) else {
            return 0;
        };
        if verifier.size() != file.size {
            return 0;
        }
        let size = file.size;
        let mut kept = 0;
        file.missing = missing_ranges(group_count(size), |g| {
            let present = have(g);
            if present {
                kept += group_range(size, g).map_or(0, |r| r.end - r.start);
            }
            present
        });
        file.verifier = Some(verifier);
        kept
    }

    /// File `index` needs nothing: it is already in place (same hash).
    pub fn skip(&mut self, index: usize) {
        if let Some(file) = self.progress(index) {
            file.missing.clear();
        }
    }

    /// The earlier file of the offer with the same contents as file
    /// `index`, if any: `index` is never asked for; copy it from that one
    /// once that one is complete.
    pub fn same_as(&self, index: usize) -> Option<usize> {
        self.files.get(index)?.as_ref()?.same_as
    }

    /// The verifier of file `index`, once its outboard is known.
    pub fn verifier(&self, index: usize) -> Option<&Verifier> {
        self.files.get(index)?.as_ref()?.verifier.as_ref()
    }

    /// Whether file `index` has all its groups (an empty file needs none
    /// sent, but asks for its one empty group to be told it is complete).
    pub fn is_complete(&self, index: usize) -> bool {
        self.files
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|f| f.missing.is_empty() && f.outstanding == 0 && f.corrupt.is_empty())
    }

    /// What to ask for next: `None` once every file is complete. Groups
    /// that were corrupt last round are asked for again, at most
    /// [`MAX_ROUNDS`] rounds in all. Every piece of the last want must
    /// have [`arrived`](Receiving::arrived) first.
    pub fn next_want(&mut self) -> Result<Option<Want>, ReceiveError> {
        for (index, file) in self.files.iter().enumerate() {
            if let Some(file) = file
                && file.outstanding > 0
            {
                return Err(ReceiveError::RoundIncomplete {
                    index,
                    groups: file.outstanding,
                });
            }
        }
        let mut want = Want::default();
        for (index, file) in self.files.iter_mut().enumerate() {
            let Some(file) = file else { continue };
            if !file.corrupt.is_empty() {
                // Groups of the last round that failed.
                let mut groups: Vec<u64> = std::mem::take(&mut file.corrupt);
                groups.sort_unstable();
                file.missing = missing_ranges(group_count(file.size), |g| {
                    groups.binary_search(&g).is_err()
                });
            }
            if file.missing.is_empty() {
                continue;
            }
            if self.rounds >= MAX_ROUNDS {
                let path = self.offer.entries[index].path.components().join("/");
                let groups = file.missing.iter().map(|r| r.end - r.start).sum();
                return Err(ReceiveError::StillCorrupt { path, groups });
            }
            file.outstanding = file.missing.iter().map(|r| r.end - r.start).sum();
            want.files.push(WantFile {
                index: index as u64,
                outboard: file.verifier.is_none(),
                groups: std::mem::take(&mut file.missing),
            });
        }
        if want.files.is_empty() {
            return Ok(None);
        }
        self.rounds += 1;
        Ok(Some(want))
    }

    /// A piece of the current want arrived with its bytes.
    pub fn arrived(&mut self, piece: &Piece, data: &[u8]) -> Result<Arrived, ReceiveError> {
        let (file_index, group) = match piece {
            Piece::Outboard { file, .. } => (*file, None),
            Piece::Group { file, index, .. } => (*file, Some(*index)),
        };
        let Some(file) = self.files.get_mut(file_index).and_then(Option::as_mut) else {
            return Err(ReceiveError::Unexpected(file_index));
        };
        let Some(group) = group else {
            let verifier = Verifier::new(file.size, file.hash, data);
            return match verifier {
                Ok(verifier) => {
                    file.verifier = Some(verifier);
                    Ok(Arrived::Outboard)
                }
                Err(error) => {
                    let path = self.offer.entries[file_index].path.components().join("/");
                    Err(ReceiveError::Outboard { path, error })
                }
            };
        };
        if file.outstanding == 0 {
            return Err(ReceiveError::Unexpected(file_index));
        }
        let Some(verifier) = &file.verifier else {
            return Err(ReceiveError::Unexpected(file_index));
        };
        file.outstanding -= 1;
        match verifier.verify(group, data) {
            Ok(()) => Ok(Arrived::Verified {
                file_complete: file.outstanding == 0 && file.corrupt.is_empty(),
            }),
            Err(_) => {
                file.corrupt.push(group);
                Ok(Arrived::Corrupt)
            }
        }
    }

    /// How many rounds were asked for so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }
}

/// What the sender does next, from the receiver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendStep {
    /// Send these pieces ([`Want::pieces`]); the want was checked.
    Send(Want),
    /// The receiver has everything.
    Done,
    /// The receiver declined, with its reason.
    Declined(String),
    /// The receiver gave up, with its reason.
    Failed(String),
}

/// The sender's side: checks each answer against the offer and counts
/// rounds (a receiver may not ask more than [`MAX_ROUNDS`] times).
#[derive(Debug, Clone)]
pub struct Sending {
    offer: Offer,
    rounds: u32,
}

impl Sending {
    /// A sender of `offer`.
    pub fn new(offer: Offer) -> Self {
        Self { offer, rounds: 0 }
    }

    /// The receiver's answer (a frame's body) arrived.
    pub fn answered(&mut self, body: &[u8]) -> Result<SendStep, MessageError> {
        Ok(match Answer::decode(body)? {
            Answer::Decline { reason } => SendStep::Declined(reason),
            Answer::Failed { reason } => SendStep::Failed(reason),
            Answer::Done => SendStep::Done,
            Answer::Want(want) => {
                want.check(&self.offer)?;
                if self.rounds >= MAX_ROUNDS {
                    return Err(MessageError::TooManyRounds);
                }
                self.rounds += 1;
                SendStep::Send(want)
            }
        })
    }

    /// How many wants were answered so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init, clippy::useless_vec)]
mod tests {
    use super::*;
    use crate::transfer::names::SafePath;
    use crate::transfer::tree::{FileHasher, GROUP_LEN, group_range};
    use crate::transfer::wire::{EMPTY_HASH, Entry};

    fn hashed(data: &[u8]) -> ([u8; 32], Vec<u8>) {
        let mut hasher = FileHasher::new();
        hasher.update(data);
        hasher.finalize()
    }

    fn entry(name: &str, data: &[u8]) -> Entry {
        Entry {
            path: SafePath::new(vec![name.into()]).unwrap(),
            kind: EntryKind::File {
                size: data.len() as u64,
                hash: hashed(data).0,
            },
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 11) as u8)
            .collect()
    }

    /// Serve a want from `files` (entry index → bytes), corrupting the
    /// groups `corrupt` says.
    fn serve(
        receiving: &mut Receiving,
        files: &[Vec<u8>],
        want: &Want,
        mut corrupt: impl FnMut(usize, u64) -> bool,
    ) -> Vec<Arrived> {
        let offer = receiving.offer().clone();
        want.check(&offer).unwrap();
        want.pieces(&offer)
            .map(|piece| {
                let bytes = match &piece {
                    Piece::Outboard { file, .. } => hashed(&files[*file]).1,
                    Piece::Group { file, index, range } => {
                        let mut b = files[*file][range.start as usize..range.end as usize].to_vec();
                        if corrupt(*file, *index) && !b.is_empty() {
                            b[0] ^= 1;
                        }
                        b
                    }
                };
                receiving.arrived(&piece, &bytes).unwrap()
            })
            .collect()
    }

    #[test]
    fn corrupt_groups_are_asked_for_again_and_only_they() {
        let files = vec![data(5 * GROUP_LEN as usize + 3, 3), data(10, 5)];
        let offer = Offer::new(
            "x".into(),
            vec![entry("a", &files[0]), entry("b", &files[1])],
        )
        .unwrap();
        let mut receiving = Receiving::new(offer);
        let want = receiving.next_want().unwrap().unwrap();
        let arrived = serve(&mut receiving, &files, &want, |f, g| {
            f == 0 && (g == 1 || g == 4)
        });
        assert_eq!(
            arrived.iter().filter(|a| **a == Arrived::Corrupt).count(),
            2
        );
        assert!(!receiving.is_complete(0));
        assert!(receiving.is_complete(1));
        let again = receiving.next_want().unwrap().unwrap();
        assert_eq!(
            again.files,
            vec![WantFile {
                index: 0,
                outboard: false,
                groups: vec![1..2, 4..5]
            }]
        );
        let arrived = serve(&mut receiving, &files, &again, |_, _| false);
        assert_eq!(
            arrived,
            vec![
                Arrived::Verified {
                    file_complete: false
                },
                Arrived::Verified {
                    file_complete: true
                }
            ]
        );
        assert!(receiving.is_complete(0));
        assert_eq!(receiving.next_want().unwrap(), None);
        assert_eq!(receiving.rounds(), 2);
    }

    #[test]
    fn a_group_that_never_verifies_ends_after_the_last_round() {
        let files = vec![data(3 * GROUP_LEN as usize, 9)];
        let offer = Offer::new("x".into(), vec![entry("a", &files[0])]).unwrap();
        let mut receiving = Receiving::new(offer);
        for _ in 0..MAX_ROUNDS {
            let want = receiving.next_want().unwrap().unwrap();
            serve(&mut receiving, &files, &want, |_, g| g == 1);
        }
        assert_eq!(
            receiving.next_want(),
            Err(ReceiveError::StillCorrupt {
                path: "a".into(),
                groups: 1
            })
        );
    }

    #[test]
    fn identical_contents_are_asked_for_once() {
        let files = vec![data(GROUP_LEN as usize + 9, 2), data(100, 3)];
        let offer = Offer::new(
            "x".into(),
            vec![
                entry("a", &files[0]),
                entry("b", &files[1]),
                entry("c", &files[0]),
            ],
        )
        .unwrap();
        let mut receiving = Receiving::new(offer);
        assert_eq!(receiving.same_as(2), Some(0));
        assert_eq!(receiving.same_as(0), None);
        let want = receiving.next_want().unwrap().unwrap();
        let asked: Vec<u64> = want.files.iter().map(|f| f.index).collect();
        assert_eq!(asked, vec![0, 1]);
    }

    #[test]
    fn the_next_want_waits_for_every_piece_of_the_last() {
        let files = vec![data(3 * GROUP_LEN as usize, 4)];
        let offer = Offer::new("x".into(), vec![entry("a", &files[0])]).unwrap();
        let mut receiving = Receiving::new(offer.clone());
        let want = receiving.next_want().unwrap().unwrap();
        // The outboard and group 0 arrive; groups 1 and 2 never do.
        for piece in want.pieces(&offer).take(2) {
            let bytes = match &piece {
                Piece::Outboard { .. } => hashed(&files[0]).1,
                Piece::Group { range, .. } => {
                    files[0][range.start as usize..range.end as usize].to_vec()
                }
            };
            receiving.arrived(&piece, &bytes).unwrap();
        }
        assert!(!receiving.is_complete(0));
        assert_eq!(
            receiving.next_want(),
            Err(ReceiveError::RoundIncomplete {
                index: 0,
                groups: 2
            })
        );
    }

    #[test]
    fn a_forged_outboard_is_fatal() {
        let files = vec![data(3 * GROUP_LEN as usize, 9)];
        let offer = Offer::new("x".into(), vec![entry("a", &files[0])]).unwrap();
        let mut receiving = Receiving::new(offer);
        let want = receiving.next_want().unwrap().unwrap();
        let offer = receiving.offer().clone();
        let first = want.pieces(&offer).next().unwrap();
        let mut outboard = hashed(&files[0]).1;
        outboard[40] ^= 1;
        assert!(matches!(
            receiving.arrived(&first, &outboard),
            Err(ReceiveError::Outboard { .. })
        ));
        // A group before any outboard is a caller's bug, not a panic.
        let group = Piece::Group {
            file: 0,
            index: 0,
            range: 0..GROUP_LEN,
        };
        assert_eq!(
            receiving.arrived(&group, &files[0][..GROUP_LEN as usize]),
            Err(ReceiveError::Unexpected(0))
        );
    }

    #[test]
    fn a_resumed_file_asks_only_for_what_it_lacks() {
        let files = vec![data(6 * GROUP_LEN as usize, 11)];
        let offer = Offer::new("x".into(), vec![entry("a", &files[0])]).unwrap();
        let (hash, outboard) = hashed(&files[0]);
        let verifier = Verifier::new(files[0].len() as u64, hash, &outboard).unwrap();
        let mut receiving = Receiving::new(offer);
        assert_eq!(receiving.resume(0, verifier, |g| g < 4), 4 * GROUP_LEN);
        let want = receiving.next_want().unwrap().unwrap();
        assert_eq!(
            want.files,
            vec![WantFile {
                index: 0,
                outboard: false,
                groups: vec![4..6]
            }]
        );
        assert_eq!(
            want.data_len(receiving.offer()),
            2 * GROUP_LEN,
            "only the missing part"
        );
        serve(&mut receiving, &files, &want, |_, _| false);
        assert!(receiving.is_complete(0));
        assert_eq!(
            group_range(6 * GROUP_LEN, 5),
            Some(5 * GROUP_LEN..6 * GROUP_LEN)
        );
    }

    #[test]
    fn skipped_and_empty_files() {
        let offer = Offer::new(
            "x".into(),
            vec![
                entry("same", b"same"),
                Entry {
                    path: SafePath::new(vec!["empty".into()]).unwrap(),
                    kind: EntryKind::File {
                        size: 0,
                        hash: EMPTY_HASH,
                    },
                },
            ],
        )
        .unwrap();
        let files = vec![Vec::new(), b"same".to_vec()];
        let mut receiving = Receiving::new(offer);
        receiving.skip(1);
        let want = receiving.next_want().unwrap().unwrap();
        assert_eq!(want.files.len(), 1);
        assert_eq!(want.files[0].index, 0, "the empty file");
        let arrived = serve(&mut receiving, &files, &want, |_, _| false);
        assert_eq!(
            arrived,
            vec![
                Arrived::Outboard,
                Arrived::Verified {
                    file_complete: true
                }
            ]
        );
        assert_eq!(receiving.next_want().unwrap(), None);
    }

    #[test]
    fn a_sender_checks_every_want_and_counts_rounds() {
        let files = vec![data(3 * GROUP_LEN as usize, 2)];
        let offer = Offer::new("x".into(), vec![entry("a", &files[0])]).unwrap();
        let mut sending = Sending::new(offer);
        let want = Want {
            files: vec![WantFile {
                index: 0,
                outboard: true,
                groups: vec![0..3],
            }],
        };
        let frame = Answer::Want(want.clone()).to_frame().unwrap();
        for round in 1..=MAX_ROUNDS {
            assert_eq!(
                sending.answered(&frame[1..]),
                Ok(SendStep::Send(want.clone()))
            );
            assert_eq!(sending.rounds(), round);
        }
        assert_eq!(
            sending.answered(&frame[1..]),
            Err(MessageError::TooManyRounds)
        );
        // A want beyond the file is refused before anything is read.
        let mut sending = Sending::new(sending.offer.clone());
        let beyond = Answer::Want(Want {
            files: vec![WantFile {
                index: 0,
                outboard: false,
                groups: vec![0..4],
            }],
        })
        .to_frame()
        .unwrap();
        assert_eq!(sending.answered(&beyond[1..]), Err(MessageError::Ranges(0)));
        let declined = Answer::Decline {
            reason: "no".into(),
        }
        .to_frame()
        .unwrap();
        assert_eq!(
            sending.answered(&declined[1..]),
            Ok(SendStep::Declined("no".into()))
        );
        let done = Answer::Done.to_frame().unwrap();
        assert_eq!(sending.answered(&done[1..]), Ok(SendStep::Done));
    }
}
