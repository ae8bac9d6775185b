//! The example application header: round trips and hostile frames.

use pos_p2p_protocol::codec::{DecodeError, EncodeError, FrameError, Header, Writer};
use pos_p2p_tests::{ExampleHeader, MAX_MESSAGE_LEN};
use proptest::prelude::*;

pub(crate) fn header() -> impl Strategy<Value = ExampleHeader> {
    prop_oneof![
        Just(ExampleHeader::Ping),
        (any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(|(id, a, b)| {
            ExampleHeader::File {
                id,
                range: a.min(b)..a.max(b),
            }
        }),
        ".{0,64}".prop_map(ExampleHeader::Message),
        (
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u64>(), 0..20),
            proptest::option::of(".{0,16}")
        )
            .prop_map(|(library, ops, note)| ExampleHeader::Sync { library, ops, note }),
        (proptest::collection::vec(".{0,10}", 0..8), any::<bool>())
            .prop_map(|(tags, replace)| ExampleHeader::Tags { tags, replace }),
    ]
}

proptest! {
    #[test]
    fn headers_round_trip(h in header()) {
        let bytes = h.to_bytes();
        prop_assert_eq!(ExampleHeader::from_bytes(&bytes), Ok(h.clone()));
        let mut decoder = ExampleHeader::decoder();
        let decoded = decoder.decode(&bytes).unwrap();
        prop_assert_eq!(decoded.consumed, bytes.len());
        prop_assert_eq!(ExampleHeader::from_frame_body(&decoded.frame.unwrap()), Ok(h));
    }

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = ExampleHeader::from_bytes(&bytes);
        pos_p2p_tests::fuzzing::frame_and_header(&bytes);
    }
}

#[test]
fn known_bytes() {
    assert_eq!(&ExampleHeader::Ping.to_bytes()[..], [1, 0]);
    let file = ExampleHeader::File {
        id: [0xaa; 16],
        range: 5..300,
    };
    let mut expected = vec![20, 1];
    expected.extend([0xaa; 16]);
    expected.extend([5, 0xac, 0x02]);
    assert_eq!(&file.to_bytes()[..], &expected[..]);
}

#[test]
fn unknown_tag_is_named_with_its_offset() {
    assert_eq!(
        ExampleHeader::from_bytes(&[2, 0x80, 0x01]),
        Err(FrameError::Body(DecodeError::UnknownTag {
            what: "ExampleHeader",
            tag: 128,
            offset: 0
        }))
    );
}

#[test]
fn trailing_bytes_inside_and_after_the_frame() {
    assert_eq!(
        ExampleHeader::from_bytes(&[2, 0, 0]),
        Err(FrameError::Body(DecodeError::TrailingBytes {
            offset: 1,
            count: 1
        }))
    );
    assert_eq!(
        ExampleHeader::from_bytes(&[1, 0, 9]),
        Err(FrameError::TrailingBytes { count: 1 })
    );
}

#[test]
fn invalid_utf8_and_invalid_range() {
    assert_eq!(
        ExampleHeader::from_bytes(&[4, 2, 2, 0xff, 0xfe]),
        // Offsets inside a frame count from the start of its body.
        Err(FrameError::Body(DecodeError::InvalidUtf8 { offset: 2 }))
    );
    let mut w = Writer::new();
    w.tag(1);
    w.id16(&[0; 16]);
    w.varint(10);
    w.varint(9);
    let body = w.finish().unwrap();
    assert_eq!(
        ExampleHeader::from_frame_body(&body),
        Err(DecodeError::Invalid {
            what: "byte range",
            offset: 17
        })
    );
}

#[test]
fn truncated_frames() {
    let bytes = ExampleHeader::Message("hello".into()).to_bytes();
    for cut in 0..bytes.len() {
        assert!(
            matches!(
                ExampleHeader::from_bytes(&bytes[..cut]),
                Err(FrameError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn oversized_header_is_refused_by_the_sender() {
    let too_long = ExampleHeader::Message("x".repeat(MAX_MESSAGE_LEN + 1));
    assert_eq!(
        too_long.try_to_bytes(),
        Err(EncodeError::TooLong {
            what: "string",
            len: 1025,
            max: 1024
        })
    );
    let result = std::panic::catch_unwind(|| too_long.to_bytes());
    assert!(
        result.is_err(),
        "to_bytes documents a panic on a broken limit"
    );
}
