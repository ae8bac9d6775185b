//! Every primitive round-trips, and decoding stops at its limits.

use std::collections::BTreeMap;

use pos_p2p_protocol::codec::{DecodeError, EncodeError, Reader, Writer};
use proptest::prelude::*;

/// One value of each primitive, written and read back in sequence.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Varint(u64),
    Bool(bool),
    Id(#[allow(dead_code)] [u8; 16]),
    Bytes(Vec<u8>),
    Str(String),
    OptionStr(Option<String>),
    List(Vec<u32>),
    Map(BTreeMap<String, u64>),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<u16>().prop_map(Value::U16),
        any::<u32>().prop_map(Value::U32),
        any::<u64>().prop_map(Value::U64),
        any::<u64>().prop_map(Value::Varint),
        any::<bool>().prop_map(Value::Bool),
        any::<[u8; 16]>().prop_map(Value::Id),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        ".{0,32}".prop_map(Value::Str),
        proptest::option::of(".{0,8}").prop_map(Value::OptionStr),
        proptest::collection::vec(any::<u32>(), 0..16).prop_map(Value::List),
        proptest::collection::btree_map(".{0,8}", any::<u64>(), 0..8).prop_map(Value::Map),
    ]
}

const MAX: usize = 1024;

fn write(w: &mut Writer, value: &Value) {
    match value {
        Value::U8(v) => w.u8(*v),
        Value::U16(v) => w.u16(*v),
        Value::U32(v) => w.u32(*v),
        Value::U64(v) => w.u64(*v),
        Value::Varint(v) => w.varint(*v),
        Value::Bool(v) => w.bool(*v),
        Value::Id(v) => w.id16(v),
        Value::Bytes(v) => w.bytes(v, MAX),
        Value::Str(v) => w.str(v, MAX),
        Value::OptionStr(v) => w.option(v.as_ref(), |w, s| w.str(s, MAX)),
        Value::List(v) => w.list(v, MAX, |w, x| w.u32(*x)),
        Value::Map(v) => w.map(v, MAX, |w, k| w.str(k, MAX), |w, x| w.varint(*x)),
    }
}

fn read(r: &mut Reader<'_>, like: &Value) -> Result<Value, DecodeError> {
    Ok(match like {
        Value::U8(_) => Value::U8(r.u8()?),
        Value::U16(_) => Value::U16(r.u16()?),
        Value::U32(_) => Value::U32(r.u32()?),
        Value::U64(_) => Value::U64(r.u64()?),
        Value::Varint(_) => Value::Varint(r.varint()?),
        Value::Bool(_) => Value::Bool(r.bool()?),
        Value::Id(_) => Value::Id(r.id16()?),
        Value::Bytes(_) => Value::Bytes(r.bytes(MAX)?.to_vec()),
        Value::Str(_) => Value::Str(r.string(MAX)?),
        Value::OptionStr(_) => Value::OptionStr(r.option(|r| r.string(MAX))?),
        Value::List(_) => Value::List(r.list(MAX, Reader::u32)?),
        Value::Map(_) => Value::Map(r.map(MAX, |r| r.string(MAX), Reader::varint)?),
    })
}

proptest! {
    #[test]
    fn sequences_of_primitives_round_trip(values in proptest::collection::vec(value(), 0..12)) {
        let mut w = Writer::new();
        for v in &values {
            write(&mut w, v);
        }
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes);
        for v in &values {
            prop_assert_eq!(&read(&mut r, v)?, v);
        }
        prop_assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn every_truncation_is_a_typed_error(values in proptest::collection::vec(value(), 1..6)) {
        let mut w = Writer::new();
        for v in &values {
            write(&mut w, v);
        }
        let bytes = w.finish().unwrap();
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let mut failed = false;
            for v in &values {
                match read(&mut r, v) {
                    Ok(_) => {}
                    Err(e) => {
                        prop_assert!(matches!(e, DecodeError::Truncated { .. }), "{e:?}");
                        failed = true;
                        break;
                    }
                }
            }
            prop_assert!(failed, "a truncated sequence decoded whole");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), like in value()) {
        let mut r = Reader::new(&bytes);
        let _ = read(&mut r, &like);
    }
}

#[test]
fn limits_are_checked_on_both_sides() {
    let mut w = Writer::new();
    w.str("hello", 4);
    w.u8(1); // ignored after the error
    assert_eq!(
        w.finish(),
        Err(EncodeError::TooLong {
            what: "string",
            len: 5,
            max: 4
        })
    );

    let mut w = Writer::new();
    w.str("hello", 5);
    let bytes = w.finish().unwrap();
    assert_eq!(
        Reader::new(&bytes).str(4),
        Err(DecodeError::TooLong {
            what: "string",
            len: 5,
            max: 4,
            offset: 0
        })
    );
    let mut w = Writer::new();
    w.list(&[1u8, 2, 3], 2, |w, x| w.u8(*x));
    assert!(matches!(
        w.finish(),
        Err(EncodeError::TooLong { what: "list", .. })
    ));
}

#[test]
fn hostile_counts_do_not_reserve_memory() {
    // A list claiming 2^40 items in a 10-byte input is rejected by the limit,
    // and with a huge limit it fails on truncation after reserving at most
    // the input's size.
    let mut w = Writer::new();
    w.varint(1 << 40);
    let bytes = w.finish().unwrap();
    assert!(matches!(
        Reader::new(&bytes).list(1000, Reader::u8),
        Err(DecodeError::TooLong {
            len: 1_099_511_627_776,
            ..
        })
    ));
    assert!(matches!(
        Reader::new(&bytes).list(usize::MAX, Reader::u8),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn bad_bytes_are_named() {
    assert_eq!(
        Reader::new(&[2]).bool(),
        Err(DecodeError::InvalidBool {
            value: 2,
            offset: 0
        })
    );
    assert_eq!(
        Reader::new(&[0, 2, 0xc3, 0x28])
            .option(|r| r.string(10))
            .map(|_| ()),
        Ok(())
    );
    assert_eq!(
        Reader::new(&[1, 2, 0xc3, 0x28]).option(|r| r.string(10)),
        Err(DecodeError::InvalidUtf8 { offset: 2 })
    );
    assert_eq!(
        Reader::new(&[0x80, 0x00]).varint(),
        Err(DecodeError::NonMinimalVarint { offset: 0 })
    );
    assert_eq!(
        Reader::new(&[0xff; 11]).varint(),
        Err(DecodeError::VarintOverflow { offset: 0 })
    );
    let mut r = Reader::new(&[1, 2, 3]);
    r.u8().unwrap();
    assert_eq!(
        r.finish(),
        Err(DecodeError::TrailingBytes {
            offset: 1,
            count: 2
        })
    );
}
