//! The incremental decoder yields the same frames however the stream is cut.

use bytes::Bytes;
use pos_p2p_protocol::codec::{FrameDecoder, FrameError, Header};
use pos_p2p_tests::ExampleHeader;
use proptest::prelude::*;

use crate::headers::header;

/// Decode `stream` delivered in the chunks that `cuts` (sorted positions)
/// make; return the frames and the bytes never consumed.
fn decode_in_chunks(stream: &[u8], cuts: &[usize], frames_wanted: usize) -> (Vec<Bytes>, usize) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(stream.len());
    let mut pos = 0;
    for &bound in &bounds {
        // Deliver [pos, bound), possibly in several calls when frames end
        // inside the chunk.
        while pos < bound && frames.len() < frames_wanted {
            let decoded = decoder.decode(&stream[pos..bound]).unwrap();
            assert!(decoded.consumed <= bound - pos);
            pos += decoded.consumed;
            frames.extend(decoded.frame);
        }
    }
    (frames, stream.len() - pos)
}

fn stream_of(headers: &[ExampleHeader], tail: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    for h in headers {
        stream.extend_from_slice(&h.to_bytes());
    }
    stream.extend_from_slice(tail);
    stream
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_frames(
        headers in proptest::collection::vec(header(), 1..6),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        raw_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let stream = stream_of(&headers, &tail);
        let mut cuts: Vec<usize> = raw_cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let (frames, left) = decode_in_chunks(&stream, &cuts, headers.len());
        // Exactly the bytes after the last frame are left to the application.
        prop_assert_eq!(left, tail.len());
        let decoded: Vec<ExampleHeader> = frames
            .iter()
            .map(|f| ExampleHeader::from_frame_body(f).unwrap())
            .collect();
        prop_assert_eq!(decoded, headers);
    }
}

/// Literally every way of cutting a short stream of three frames and a tail
/// into chunks: all 2^(n-1) subsets of cut positions.
#[test]
fn every_split_of_a_short_stream() {
    let headers = [
        ExampleHeader::Ping,
        ExampleHeader::Message("héllo".into()),
        ExampleHeader::Tags {
            tags: vec!["a".into()],
            replace: true,
        },
    ];
    let tail = [0xde, 0xad];
    let stream = stream_of(&headers, &tail);
    let n = stream.len();
    assert!(n <= 20, "keep the exhaustive test small: {n} bytes");
    let mut checked = 0u32;
    for mask in 0u32..(1 << (n - 1)) {
        let cuts: Vec<usize> = (1..n).filter(|i| mask & (1 << (i - 1)) != 0).collect();
        let (frames, left) = decode_in_chunks(&stream, &cuts, headers.len());
        assert_eq!(left, tail.len(), "cuts {cuts:?}");
        let decoded: Vec<ExampleHeader> = frames
            .iter()
            .map(|f| ExampleHeader::from_frame_body(f).unwrap())
            .collect();
        assert_eq!(decoded, headers, "cuts {cuts:?}");
        checked += 1;
    }
    assert_eq!(checked, 1 << (n - 1));
}

#[test]
fn length_prefix_of_2_pow_62_is_refused() {
    let prefix = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    for chunk in [1, 3, 9] {
        let mut decoder = FrameDecoder::new();
        let mut result = Ok(());
        for piece in prefix.chunks(chunk) {
            if let Err(e) = decoder.decode(piece) {
                result = Err(e);
                break;
            }
        }
        assert_eq!(
            result,
            Err(FrameError::TooLarge {
                len: 1 << 62,
                max: 64 * 1024
            })
        );
    }
}

#[test]
fn non_minimal_and_overlong_prefixes_are_refused() {
    let mut decoder = FrameDecoder::new();
    assert_eq!(
        decoder.decode(&[0x80, 0x00]),
        Err(FrameError::NonMinimalLength)
    );
    let mut decoder = FrameDecoder::with_max_frame_len(usize::MAX);
    assert_eq!(decoder.decode(&[0xff; 10]), Err(FrameError::LengthOverflow));
}

#[test]
fn configurable_limit() {
    let mut decoder = FrameDecoder::with_max_frame_len(3);
    assert_eq!(decoder.max_frame_len(), 3);
    let decoded = decoder.decode(&[3, 1, 2, 3]).unwrap();
    assert_eq!(decoded.frame.unwrap().len(), 3);
    assert_eq!(
        decoder.decode(&[4]),
        Err(FrameError::TooLarge { len: 4, max: 3 })
    );
}
