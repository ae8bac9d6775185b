//! The codec's errors: one enum per direction and one for framing.

/// Why bytes could not be decoded. Every variant says what was wrong and the
/// byte offset (from the start of the buffer being decoded) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated at byte {offset}: needed {needed} bytes, {available} left")]
    Truncated {
        /// Where the incomplete value starts.
        offset: usize,
        /// How many bytes the value needs.
        needed: u64,
        /// How many bytes were left.
        available: usize,
    },
    /// A length or count exceeds the limit the decoder was given. Checked
    /// before anything is allocated.
    #[error("{what} at byte {offset} is too long: {len} > {max}")]
    TooLong {
        /// What was being decoded (`"bytes"`, `"string"`, `"list"`, ...).
        what: &'static str,
        /// The announced length or count.
        len: u64,
        /// The limit.
        max: u64,
        /// Where the length prefix starts.
        offset: usize,
    },
    /// A string's bytes are not valid UTF-8.
    #[error("invalid UTF-8 in string at byte {offset}")]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: usize,
    },
    /// An enum tag that the decoder does not know.
    #[error("unknown {what} tag {tag} at byte {offset}")]
    UnknownTag {
        /// The type whose tag this is.
        what: &'static str,
        /// The tag value.
        tag: u64,
        /// Where the tag starts.
        offset: usize,
    },
    /// Bytes were left over after a complete value.
    #[error("{count} trailing bytes after the value, at byte {offset}")]
    TrailingBytes {
        /// Where the trailing bytes start.
        offset: usize,
        /// How many were left.
        count: usize,
    },
    /// A varint used more bytes than its value needs (there is exactly one
    /// encoding of each value).
    #[error("non-minimal varint at byte {offset}")]
    NonMinimalVarint {
        /// Where the varint starts.
        offset: usize,
    },
    /// A varint does not fit in 64 bits.
    #[error("varint at byte {offset} overflows 64 bits")]
    VarintOverflow {
        /// Where the varint starts.
        offset: usize,
    },
    /// A boolean byte other than 0 or 1.
    #[error("invalid bool byte {value:#04x} at byte {offset}")]
    InvalidBool {
        /// The byte found.
        value: u8,
        /// Where it was.
        offset: usize,
    },
    /// Map keys are not in strictly ascending order (the one canonical order),
    /// or a key repeats.
    #[error("map key at byte {offset} is out of order or repeated")]
    UnorderedKey {
        /// Where the offending key starts.
        offset: usize,
    },
    /// A value broke a rule of its type (for example a metadata key with a
    /// forbidden character).
    #[error("invalid {what} at byte {offset}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Where the value starts.
        offset: usize,
    },
}

/// Why a value could not be encoded: it broke a limit that its own encoder
/// declared. This is a bug or an unchecked input on the *sending* side; the
/// receiver would have rejected the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A length or count exceeds the declared maximum.
    #[error("{what} is too long to encode: {len} > {max}")]
    TooLong {
        /// What was being encoded.
        what: &'static str,
        /// Its length or count.
        len: u64,
        /// The declared limit.
        max: u64,
    },
    /// The encoded frame exceeds the frame size limit.
    #[error("encoded frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a length-prefixed frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's announced length exceeds the configured maximum. Nothing
    /// was allocated for it.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The length prefix is not a minimal varint.
    #[error("frame length prefix is a non-minimal varint")]
    NonMinimalLength,
    /// The length prefix does not fit in 64 bits.
    #[error("frame length prefix overflows 64 bits")]
    LengthOverflow,
    /// The input ended inside the frame (one-shot decoding only; the
    /// incremental [`FrameDecoder`](super::FrameDecoder) waits for more).
    #[error("frame truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the whole frame needs (prefix and body), if known yet.
        needed: u64,
        /// Bytes that were available.
        available: usize,
    },
    /// Bytes followed the frame where exactly one frame was expected.
    #[error("{count} bytes follow the frame")]
    TrailingBytes {
        /// How many bytes followed.
        count: usize,
    },
    /// The frame arrived whole but its contents did not decode. Offsets in
    /// the inner error count from the start of the frame body.
    #[error("invalid frame contents: {0}")]
    Body(#[source] DecodeError),
}
