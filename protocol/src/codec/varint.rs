//! Unsigned LEB128 varints, minimal encoding only.
//!
//! A value is written seven bits at a time, least significant group first;
//! the high bit of each byte says whether another byte follows. A `u64`
//! takes 1 to 10 bytes. Decoding rejects a varint that is longer than its
//! value needs (a trailing `0x00` group) and one that overflows 64 bits, so
//! every value has exactly one encoding.

use bytes::BufMut;

/// The longest encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// How many bytes [`put_varint`] writes for `value`.
pub const fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append `value` as a minimal LEB128 varint.
pub fn put_varint<B: BufMut + ?Sized>(buf: &mut B, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// A varint that could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    NonMinimal,
    Overflow,
}

/// Decode a varint from the start of `input`.
///
/// `Ok(None)` means the input ends inside the varint (more bytes may finish
/// it); `Ok(Some((value, len)))` gives the value and the bytes it used.
pub(crate) fn decode_varint(input: &[u8]) -> Result<Option<(u64, usize)>, VarintError> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().take(MAX_VARINT_LEN).enumerate() {
        // The tenth byte holds bit 63 only: anything more overflows.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(VarintError::NonMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_cut_varint_needs_at_least_one_more_byte() {
        let mut reader = super::super::Reader::new(&[0x01, 0x80]);
        assert_eq!(reader.varint(), Ok(1));
        assert_eq!(
            reader.varint(),
            Err(super::super::DecodeError::Truncated {
                offset: 1,
                needed: 2,
                available: 1,
            })
        );
    }

    fn encode(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(1), [0x01]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(16_383), [0xff, 0x7f]);
        assert_eq!(encode(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(
            encode(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            encode(1 << 62),
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]
        );
    }

    #[test]
    fn rejects_non_minimal_and_overflow() {
        assert_eq!(decode_varint(&[0x80, 0x00]), Err(VarintError::NonMinimal));
        assert_eq!(
            decode_varint(&[0xff, 0x80, 0x00]),
            Err(VarintError::NonMinimal)
        );
        let mut eleven = [0xffu8; 11];
        eleven[10] = 0x01;
        assert_eq!(decode_varint(&eleven), Err(VarintError::Overflow));
        let mut tenth_too_big = [0xffu8; 10];
        tenth_too_big[9] = 0x02;
        assert_eq!(decode_varint(&tenth_too_big), Err(VarintError::Overflow));
        assert_eq!(decode_varint(&[0x80; 10]), Err(VarintError::Overflow));
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        assert_eq!(decode_varint(&[]), Ok(None));
        assert_eq!(decode_varint(&[0x80]), Ok(None));
        assert_eq!(decode_varint(&[0xff; 9]), Ok(None));
    }

    proptest! {
        #[test]
        fn round_trip(value in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut bytes = encode(value);
            prop_assert_eq!(bytes.len(), varint_len(value));
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_varint(&bytes), Ok(Some((value, len))));
            for cut in 0..len {
                prop_assert_eq!(decode_varint(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn arbitrary_bytes_decode_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok(Some((value, len))) = decode_varint(&bytes) {
                prop_assert_eq!(&encode(value)[..], &bytes[..len]);
            }
        }
    }
}
