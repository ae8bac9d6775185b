//! The bodies of the cargo-fuzz targets in `fuzz/`. Each takes arbitrary
//! bytes, must never panic except on a broken invariant (which is the bug the
//! fuzzer is looking for), and checks what it can about the result.

use pos_p2p_protocol::codec::{FrameDecoder, Header};
use pos_p2p_protocol::{Metadata, PeerMetadata};

use crate::ExampleHeader;

/// Feed `data` to a [`FrameDecoder`] in chunks whose sizes come from the first
/// byte, decode every frame as an [`ExampleHeader`], and check that:
/// the decoder never consumes more than it is given; each frame it yields
/// is the one a one-shot decode finds at the same place; and every header
/// that decodes re-encodes to exactly the same bytes (one encoding per value).
pub fn frame_and_header(data: &[u8]) {
    let Some((&chunk_seed, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk_seed % 17) + 1;
    let mut decoder = FrameDecoder::with_max_frame_len(4096);
    let mut offset = 0;
    let mut frame_start = 0;
    while offset < stream.len() {
        let end = (offset + chunk).min(stream.len());
        let decoded = match decoder.decode(&stream[offset..end]) {
            Ok(decoded) => decoded,
            Err(_) => {
                // One-shot decoding of the same frame must fail too.
                assert!(
                    pos_p2p_protocol::codec::decode_frame(&stream[frame_start..], 4096).is_err()
                );
                return;
            }
        };
        assert!(decoded.consumed <= end - offset, "consumed more than given");
        offset += decoded.consumed;
        if let Some(frame) = decoded.frame {
            let (body, used) = pos_p2p_protocol::codec::decode_frame(&stream[frame_start..], 4096)
                .expect("one-shot decode agrees with incremental");
            assert_eq!(body, &frame[..]);
            assert_eq!(
                frame_start + used,
                offset,
                "frame ends where it was consumed"
            );
            frame_start = offset;
            if let Ok(header) = ExampleHeader::from_frame_body(&frame) {
                let reencoded = header.to_bytes();
                assert_eq!(&reencoded[..], &stream[frame_start - used..frame_start]);
            }
        } else if decoded.consumed == 0 {
            // No progress without a frame means the chunk was empty.
            assert_eq!(offset, end);
        }
    }
}

/// Decode `data` as [`Metadata`]; whatever decodes must re-encode to the same
/// bytes and survive the typed view's round trip.
pub fn metadata(data: &[u8]) {
    let Ok(metadata) = Metadata::from_bytes(data) else {
        return;
    };
    assert_eq!(
        &metadata.to_bytes()[..],
        data,
        "metadata encoding is canonical"
    );
    assert_eq!(metadata.encoded_len(), data.len());
    let map = metadata.to_hashmap();
    assert_eq!(Metadata::from_hashmap(&map).as_ref(), Ok(&metadata));
    if let Ok(typed) = PeerMetadata::from_metadata(&metadata) {
        assert_eq!(typed.to_hashmap(), map, "typed view is lossless");
    }
}

/// Feed a [`Node`](pos_p2p_protocol::node::Node) an arbitrary sequence of
/// datagrams, timer expiries and dials, draining its outputs after each, as
/// an adapter would. Each step is one opcode byte:
///
/// - `op % 4 == 0 | 1`: a datagram from peer `op / 4 % 4`; two bytes of
///   big-endian length follow, then that many bytes (fewer if the input ends);
/// - `op % 4 == 2`: time advances by the next byte × 10 ms, then timers run;
/// - `op % 4 == 3`: the node dials peer `op / 4 % 4`.
///
/// Nothing may panic, and the node must keep answering its polls.
pub fn node_datagrams(data: &[u8]) {
    use bytes::BytesMut;
    use pos_p2p_protocol::node::Node;
    use std::time::{Duration, Instant};

    let start = Instant::now();
    let mut now = start;
    let mut node = Node::new(crate::sim::Sim::config(1), now).expect("valid config");
    let peer = |op: u8| {
        std::net::SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 2 + (op / 4 % 4))),
            4433,
        )
    };
    let mut buf = Vec::new();
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        match op % 4 {
            0 | 1 => {
                let len = match input {
                    [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
                    _ => input.len(),
                };
                input = input.get(2..).unwrap_or(&[]);
                let take = len.min(input.len());
                let (datagram, rest) = input.split_at(take);
                input = rest;
                node.handle_datagram(now, peer(op), None, None, BytesMut::from(datagram));
            }
            2 => {
                let ticks = input.first().copied().unwrap_or(1);
                input = input.get(1..).unwrap_or(&[]);
                now += Duration::from_millis(u64::from(ticks) * 10);
                node.handle_timeout(now);
            }
            _ => {
                let _ = node.connect(now, peer(op), None);
            }
        }
        let mut transmits = 0;
        while let Some(transmit) = node.poll_transmit(now, 1, &mut buf) {
            assert!(transmit.size <= buf.len());
            transmits += 1;
            assert!(transmits < 10_000, "poll_transmit must run dry");
        }
        while node.poll_event().is_some() {}
        if let Some((at, _)) = node.poll_timeout() {
            // A timer in the past is fine (it fires at the next input), but
            // it must not be absurdly far away either.
            assert!(at <= now + Duration::from_secs(3600));
        }
    }
}
