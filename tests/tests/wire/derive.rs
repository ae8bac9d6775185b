//! `#[derive(Header)]`: the derived encoding is the hand-written one, byte
//! for byte; derived headers round-trip; limits and unknown tags decode to
//! the typed errors; operations and requirements come from the
//! attributes. (The derive's compile errors are tested with trybuild in
//! the derive crate.)

use pos_p2p::Header;
use pos_p2p::codec::{DecodeError, EncodeError, FrameError, Writer};
use pos_p2p::semver::{Version, VersionReq};
use pos_p2p_tests::{ExampleHeader, MAX_MESSAGE_LEN, MAX_SYNC_OPS, MAX_TAG_LEN, MAX_TAGS};
use proptest::prelude::*;

/// `ExampleHeader`, derived (its byte range as two varints).
#[derive(Debug, Clone, PartialEq, Eq, Header)]
#[header(crate = pos_p2p_protocol)]
enum Derived {
    #[header(tag = 0)]
    Ping,
    #[header(tag = 1, requires = ">=1.5")]
    File {
        id: [u8; 16],
        #[header(varint)]
        start: u64,
        #[header(varint)]
        end: u64,
    },
    #[header(tag = 2, operation = "say")]
    Message(#[header(max = MAX_MESSAGE_LEN)] String),
    #[header(tag = 3)]
    Sync {
        library: [u8; 16],
        #[header(max = MAX_SYNC_OPS, varint)]
        ops: Vec<u64>,
        #[header(max = MAX_MESSAGE_LEN)]
        note: Option<String>,
    },
    #[header(tag = 4)]
    Tags {
        #[header(max = MAX_TAGS, item_max = MAX_TAG_LEN)]
        tags: Vec<String>,
        replace: bool,
    },
}

/// Every other field type the derive knows, through `::pos_p2p`, as a
/// struct (no tag) with its own frame limit.
#[derive(Debug, Clone, PartialEq, Eq, Header)]
#[header(max_len = 512, operation = "record", requires = "^2")]
struct Record {
    small: u8,
    medium: u16,
    wide: u32,
    fixed: u64,
    key: [u8; 4],
    #[header(max = 64)]
    blob: Vec<u8>,
    #[header(max = 4, item_max = 8)]
    blobs: Vec<Vec<u8>>,
    maybe: Option<u32>,
}

fn to_hand(derived: &Derived) -> ExampleHeader {
    match derived.clone() {
        Derived::Ping => ExampleHeader::Ping,
        Derived::File { id, start, end } => ExampleHeader::File {
            id,
            range: start..end,
        },
        Derived::Message(text) => ExampleHeader::Message(text),
        Derived::Sync { library, ops, note } => ExampleHeader::Sync { library, ops, note },
        Derived::Tags { tags, replace } => ExampleHeader::Tags { tags, replace },
    }
}

fn derived() -> impl Strategy<Value = Derived> {
    prop_oneof![
        Just(Derived::Ping),
        (any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(|(id, a, b)| Derived::File {
            id,
            start: a.min(b),
            end: a.max(b),
        }),
        ".{0,64}".prop_map(Derived::Message),
        (
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u64>(), 0..20),
            proptest::option::of(".{0,16}")
        )
            .prop_map(|(library, ops, note)| Derived::Sync { library, ops, note }),
        (proptest::collection::vec(".{0,10}", 0..8), any::<bool>())
            .prop_map(|(tags, replace)| Derived::Tags { tags, replace }),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (
        (any::<u8>(), any::<u16>(), any::<u32>(), any::<u64>()),
        any::<[u8; 4]>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |((small, medium, wide, fixed), key, blob, blobs, maybe)| Record {
                small,
                medium,
                wide,
                fixed,
                key,
                blob,
                blobs,
                maybe,
            },
        )
}

proptest! {
    #[test]
    fn derived_and_hand_written_make_the_same_bytes(h in derived()) {
        let bytes = h.to_bytes();
        prop_assert_eq!(&bytes, &to_hand(&h).to_bytes());
        prop_assert_eq!(ExampleHeader::from_bytes(&bytes), Ok(to_hand(&h)));
        prop_assert_eq!(Derived::from_bytes(&bytes), Ok(h));
    }

    #[test]
    fn derived_structs_round_trip(r in record()) {
        let bytes = r.to_bytes();
        prop_assert_eq!(Record::from_bytes(&bytes), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_derived_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..128)
    ) {
        let _ = Derived::from_bytes(&bytes);
        let _ = Record::from_bytes(&bytes);
    }
}

#[test]
fn unknown_tags_and_broken_limits_are_typed_errors() {
    // Tag 9: the hand-written decoder's error, named after the type.
    let unknown = Derived::from_bytes(&[1, 9]).expect_err("unknown tag");
    assert_eq!(
        unknown,
        FrameError::Body(DecodeError::UnknownTag {
            what: "Derived",
            tag: 9,
            offset: 0
        })
    );
    // The hand-written decoder says the same, with its own type's name.
    assert_eq!(
        ExampleHeader::from_bytes(&[1, 9]).expect_err("unknown tag"),
        FrameError::Body(DecodeError::UnknownTag {
            what: "ExampleHeader",
            tag: 9,
            offset: 0
        })
    );
    // A string over its limit is refused on both sides.
    let long = Derived::Message("x".repeat(MAX_MESSAGE_LEN + 1));
    assert!(matches!(
        long.try_to_bytes(),
        Err(EncodeError::TooLong { .. })
    ));
    let mut body = Writer::new();
    body.tag(2);
    body.str(&"x".repeat(MAX_MESSAGE_LEN + 1), usize::MAX);
    let body = body.finish().expect("encodes without the limit");
    let mut frame = Writer::new();
    frame.varint(body.len() as u64);
    frame.raw(&body);
    let hand = frame.finish().expect("encodes");
    assert!(matches!(
        Derived::from_bytes(&hand),
        Err(FrameError::Body(DecodeError::TooLong { .. }))
    ));
    // A list item over `item_max`.
    let fat_tag = Derived::Tags {
        tags: vec!["y".repeat(MAX_TAG_LEN + 1)],
        replace: false,
    };
    assert!(fat_tag.try_to_bytes().is_err());
    // The frame limit from `max_len`.
    assert_eq!(<Record as Header>::MAX_LEN, 512);
}

#[test]
fn operations_and_requirements_come_from_the_attributes() {
    assert_eq!(Derived::Ping.operation(), "ping");
    assert_eq!(Derived::Message(String::new()).operation(), "say");
    let file = Derived::File {
        id: [0; 16],
        start: 0,
        end: 1,
    };
    assert_eq!(file.operation(), "file");
    let requires = file.requires().expect("File requires 1.5");
    assert_eq!(requires, VersionReq::parse(">=1.5").expect("valid"));
    assert!(!requires.matches(&Version::new(1, 4, 0)));
    assert_eq!(Derived::Ping.requires(), None);
    let record = Record {
        small: 0,
        medium: 0,
        wide: 0,
        fixed: 0,
        key: [0; 4],
        blob: Vec::new(),
        blobs: Vec::new(),
        maybe: None,
    };
    assert_eq!(record.operation(), "record");
    assert_eq!(
        record.requires(),
        Some(VersionReq::parse("^2").expect("valid"))
    );
}
