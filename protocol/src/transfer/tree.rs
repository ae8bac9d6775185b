//! BLAKE3 verified streaming (docs/PROTOCOL.md §11.1).
//!
//! A file of `size` bytes is cut into **groups** of [`GROUP_LEN`] bytes
//! (the last may be shorter; an empty file is one empty group). Because
//! [`GROUP_LEN`] is a power of two times BLAKE3's 1 KiB chunk, every group
//! is a whole subtree of the file's BLAKE3 tree: its *chaining value*
//! (the subtree's non-root hash) is what the tree above it is made of, and
//! the file's hash is the ordinary BLAKE3 hash of its bytes. A receiver
//! that knows the file's hash asks for the groups' chaining values (32
//! bytes per 256 KiB, 0.01 %), checks them against the hash
//! ([`Verifier::new`]), and then checks each group the moment it arrives
//! ([`Verifier::verify`]), in any order.
//!
//! ```
//! use pos_p2p_protocol::transfer::tree::{FileHasher, Verifier, GROUP_LEN};
//!
//! let data = vec![7u8; 3 * GROUP_LEN as usize / 2];
//! let mut hasher = FileHasher::new();
//! hasher.update(&data);
//! let (hash, outboard) = hasher.finalize();
//! assert_eq!(hash, *blake3::hash(&data).as_bytes()); // what b3sum prints
//! let verifier = Verifier::new(data.len() as u64, hash, &outboard).unwrap();
//! let second = &data[GROUP_LEN as usize..];
//! assert!(verifier.verify(1, second).is_ok());
//! let mut corrupt = second.to_vec();
//! corrupt[100] ^= 1;
//! assert!(verifier.verify(1, &corrupt).is_err());
//! ```

use std::ops::Range;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// The bytes of one group: 256 KiB (256 BLAKE3 chunks).
pub const GROUP_LEN: u64 = 256 * 1024;
/// The length of a hash or a chaining value.
pub const HASH_LEN: usize = 32;

/// How many groups a file of `size` bytes has (an empty file has one).
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_LEN).max(1)
}

/// The bytes of the file group `index` covers, if the file has it.
pub fn group_range(size: u64, index: u64) -> Option<Range<u64>> {
    if index >= group_count(size) {
        return None;
    }
    let start = index * GROUP_LEN;
    Some(start..start.saturating_add(GROUP_LEN).min(size))
}

/// How long a file's outboard (its groups' chaining values) is: none for
/// a file of one group (its hash says everything), 32 bytes per group
/// otherwise.
pub fn outboard_len(size: u64) -> u64 {
    match group_count(size) {
        1 => 0,
        // A size no outboard can have (a peer's claim): never matched.
        n => n.saturating_mul(HASH_LEN as u64),
    }
}

/// Why a file's outboard or one of its groups was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The outboard is not `outboard_len(size)` bytes.
    #[error("the outboard is {got} bytes, a file of {size} bytes has {expected}")]
    OutboardLength {
        /// The file's size.
        size: u64,
        /// The outboard's length.
        got: usize,
        /// What it must be.
        expected: u64,
    },
    /// The outboard does not hash to the file's hash.
    #[error("the outboard does not match the file's hash")]
    OutboardMismatch,
    /// No such group in a file of this size.
    #[error("no group {0} in this file")]
    NoSuchGroup(u64),
    /// The group's bytes are not its length.
    #[error("group {index} is {got} bytes, not {expected}")]
    GroupLength {
        /// The group.
        index: u64,
        /// The bytes given.
        got: usize,
        /// Its length.
        expected: u64,
    },
    /// The group's bytes are not what the file's hash says.
    #[error("group {0} is corrupt")]
    Corrupt(u64),
}

/// The chaining value of group `index` (at its offset in the file).
fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * GROUP_LEN);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// The chaining value of the subtree of `len` bytes starting at group
/// `first`, from the groups' chaining values (`len` > `GROUP_LEN`: more
/// than one group).
fn subtree_cv(cvs: &[ChainingValue], first: usize, len: u64) -> ChainingValue {
    if len <= GROUP_LEN {
        return cvs[first];
    }
    let left = left_subtree_len(len);
    let right_first = first + (left / GROUP_LEN) as usize;
    merge_subtrees_non_root(
        &subtree_cv(cvs, first, left),
        &subtree_cv(cvs, right_first, len - left),
        Mode::Hash,
    )
}

/// The file's hash from its groups' chaining values (more than one).
fn root(cvs: &[ChainingValue], size: u64) -> [u8; HASH_LEN] {
    let left = left_subtree_len(size);
    let right_first = (left / GROUP_LEN) as usize;
    *merge_subtrees_root(
        &subtree_cv(cvs, 0, left),
        &subtree_cv(cvs, right_first, size - left),
        Mode::Hash,
    )
    .as_bytes()
}

/// Hashes a file as it is read, front to back: its hash and its outboard.
#[derive(Debug, Clone, Default)]
pub struct FileHasher {
    whole: blake3::Hasher,
    group: Vec<u8>,
    cvs: Vec<ChainingValue>,
}

impl FileHasher {
    /// A hasher for a new file.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        while !data.is_empty() {
            if self.group.len() == GROUP_LEN as usize {
                // A full group with more to come: it is not the last.
                let index = self.cvs.len() as u64;
                self.cvs.push(group_cv(index, &self.group));
                self.group.clear();
            }
            let room = GROUP_LEN as usize - self.group.len();
            let take = room.min(data.len());
            self.group.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    /// The file's hash (its plain BLAKE3 hash) and its outboard
    /// ([`outboard_len`] bytes).
    pub fn finalize(mut self) -> ([u8; HASH_LEN], Vec<u8>) {
        let hash = *self.whole.finalize().as_bytes();
        if self.cvs.is_empty() {
            return (hash, Vec::new());
        }
        let index = self.cvs.len() as u64;
        self.cvs.push(group_cv(index, &self.group));
        (hash, self.cvs.concat())
    }
}

/// Checks a file's groups against its hash, each on its own.
#[derive(Debug, Clone)]
pub struct Verifier {
    size: u64,
    hash: [u8; HASH_LEN],
    cvs: Vec<ChainingValue>,
}

impl Verifier {
    /// A verifier for a file of `size` bytes whose hash is `hash`, given
    /// its outboard (from the peer: checked here, never trusted).
    pub fn new(size: u64, hash: [u8; HASH_LEN], outboard: &[u8]) -> Result<Self, VerifyError> {
        let expected = outboard_len(size);
        if outboard.len() as u64 != expected {
            return Err(VerifyError::OutboardLength {
                size,
                got: outboard.len(),
                expected,
            });
        }
        let cvs: Vec<ChainingValue> = outboard
            .chunks_exact(HASH_LEN)
            .map(|c| {
                let mut cv = [0; HASH_LEN];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        if !cvs.is_empty() && root(&cvs, size) != hash {
            return Err(VerifyError::OutboardMismatch);
        }
        Ok(Self { size, hash, cvs })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many groups the file has.
    pub fn groups(&self) -> u64 {
        group_count(self.size)
    }

    /// Check group `index`'s bytes.
    pub fn verify(&self, index: u64, data: &[u8]) -> Result<(), VerifyError> {
        let range = group_range(self.size, index).ok_or(VerifyError::NoSuchGroup(index))?;
        let expected = range.end - range.start;
        if data.len() as u64 != expected {
            return Err(VerifyError::GroupLength {
                index,
                got: data.len(),
                expected,
            });
        }
        let ok = if self.cvs.is_empty() {
            *blake3::hash(data).as_bytes() == self.hash
        } else {
            group_cv(index, data) == self.cvs[index as usize]
        };
        if ok {
            Ok(())
        } else {
            Err(VerifyError::Corrupt(index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn hash_and_outboard(data: &[u8]) -> ([u8; 32], Vec<u8>) {
        let mut hasher = FileHasher::new();
        hasher.update(data);
        hasher.finalize()
    }

    #[test]
    fn sizes_around_group_boundaries_hash_like_b3sum_and_verify() {
        let g = GROUP_LEN as usize;
        for len in [
            0,
            1,
            1024,
            g - 1,
            g,
            g + 1,
            2 * g,
            2 * g + 1,
            3 * g - 5,
            5 * g + 77,
        ] {
            let data = data(len, 3);
            let (hash, outboard) = hash_and_outboard(&data);
            assert_eq!(hash, *blake3::hash(&data).as_bytes(), "len {len}");
            assert_eq!(outboard.len() as u64, outboard_len(len as u64));
            let verifier = Verifier::new(len as u64, hash, &outboard).unwrap();
            assert_eq!(verifier.size(), len as u64);
            assert_eq!(verifier.groups(), (len as u64).div_ceil(GROUP_LEN).max(1));
            for i in 0..group_count(len as u64) {
                let r = group_range(len as u64, i).unwrap();
                let group = &data[r.start as usize..r.end as usize];
                assert_eq!(verifier.verify(i, group), Ok(()), "len {len} group {i}");
                if !group.is_empty() {
                    let mut bad = group.to_vec();
                    bad[group.len() / 2] ^= 1;
                    assert_eq!(verifier.verify(i, &bad), Err(VerifyError::Corrupt(i)));
                }
            }
            assert_eq!(
                verifier.verify(group_count(len as u64), &[]),
                Err(VerifyError::NoSuchGroup(group_count(len as u64)))
            );
        }
    }

    #[test]
    fn a_group_is_checked_at_its_own_offset() {
        // Two identical groups at different offsets have different
        // chaining values: one cannot stand in for the other.
        let g = GROUP_LEN as usize;
        let data = vec![9u8; 2 * g];
        let (hash, outboard) = hash_and_outboard(&data);
        let verifier = Verifier::new(data.len() as u64, hash, &outboard).unwrap();
        assert_ne!(outboard[..32], outboard[32..]);
        assert_eq!(verifier.verify(0, &data[..g]), Ok(()));
        assert_eq!(verifier.verify(1, &data[g..]), Ok(()));
    }

    #[test]
    fn a_forged_or_truncated_outboard_is_refused() {
        let g = GROUP_LEN as usize;
        let data = data(3 * g, 1);
        let (hash, outboard) = hash_and_outboard(&data);
        let mut forged = outboard.clone();
        forged[40] ^= 1;
        assert_eq!(
            Verifier::new(data.len() as u64, hash, &forged).unwrap_err(),
            VerifyError::OutboardMismatch
        );
        assert!(matches!(
            Verifier::new(data.len() as u64, hash, &outboard[..64]),
            Err(VerifyError::OutboardLength { expected: 96, .. })
        ));
        // Another file's hash.
        assert_eq!(
            Verifier::new(data.len() as u64, [0; 32], &outboard).unwrap_err(),
            VerifyError::OutboardMismatch
        );
        // A one-group file has no outboard.
        assert!(matches!(
            Verifier::new(10, hash, &outboard[..32]),
            Err(VerifyError::OutboardLength { expected: 0, .. })
        ));
    }

    #[test]
    fn a_group_of_the_wrong_length_is_refused() {
        let data = data(100, 2);
        let (hash, outboard) = hash_and_outboard(&data);
        let verifier = Verifier::new(100, hash, &outboard).unwrap();
        assert_eq!(
            verifier.verify(0, &data[..99]),
            Err(VerifyError::GroupLength {
                index: 0,
                got: 99,
                expected: 100
            })
        );
    }

    #[test]
    fn a_huge_claimed_size_allocates_nothing() {
        // The size comes from the peer's offer: checked against the
        // outboard's length before anything is allocated.
        assert!(matches!(
            Verifier::new(u64::MAX, [0; 32], &[]),
            Err(VerifyError::OutboardLength { .. })
        ));
        assert_eq!(group_count(u64::MAX), u64::MAX.div_ceil(GROUP_LEN));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_size_and_any_split_hash_like_b3sum(
            len in 0usize..(4 * GROUP_LEN as usize + 3000),
            cut in any::<prop::sample::Index>(),
            seed in any::<u8>(),
        ) {
            let data = data(len, seed);
            let at = if len == 0 { 0 } else { cut.index(len) };
            let mut hasher = FileHasher::new();
            hasher.update(&data[..at]);
            hasher.update(&data[at..]);
            let (hash, outboard) = hasher.finalize();
            prop_assert_eq!(hash, *blake3::hash(&data).as_bytes());
            let verifier = Verifier::new(len as u64, hash, &outboard).unwrap();
            for i in 0..group_count(len as u64) {
                let r = group_range(len as u64, i).unwrap();
                prop_assert!(verifier.verify(i, &data[r.start as usize..r.end as usize]).is_ok());
            }
        }

        #[test]
        fn arbitrary_outboards_never_panic(
            size in any::<u64>(),
            hash in any::<[u8; 32]>(),
            outboard in proptest::collection::vec(any::<u8>(), 0..200),
            index in any::<u64>(),
            group in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(verifier) = Verifier::new(size, hash, &outboard) {
                let _ = verifier.verify(index, &group);
            }
        }
    }
}

#[cfg(test)]
mod spec {
    use super::*;

    /// The example of docs/PROTOCOL.md §11.1: 300,000 bytes of 0x61 ('a').
    #[test]
    fn the_protocol_md_example() {
        let data = vec![0x61u8; 300_000];
        let mut hasher = FileHasher::new();
        hasher.update(&data);
        let (hash, outboard) = hasher.finalize();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // The hash is what any BLAKE3 implementation (b3sum) gives.
        assert_eq!(
            hex(&hash),
            "f7ccc8e72910daf8e0557c8f7cbe06405bffcc58e22cc096cfdefdd61e3497db"
        );
        assert_eq!(
            hex(&outboard[..32]),
            "8c6a1e8e190ee3873c1194a84ec7786c4adc3a366dacdfc21eefb9ebcd7986ae"
        );
        assert_eq!(
            hex(&outboard[32..]),
            "9ac772b8f725c6bfd5e9f385605179ef267d60edd1c10f20703ed99bafc41f3c"
        );
    }
}
