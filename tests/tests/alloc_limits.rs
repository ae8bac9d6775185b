//! Hostile length prefixes and counts cost no more memory than the limits
//! allow. A counting allocator measures every byte allocated while decoding,
//! and a hard cap makes any larger allocation fail outright.
//!
//! This binary holds a single test so that no other test allocates while it
//! measures.

use std::alloc::System;

use cap::Cap;
use pos_p2p_protocol::Metadata;
use pos_p2p_protocol::codec::{FrameDecoder, Header, Reader, Writer};
use pos_p2p_tests::ExampleHeader;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes allocated while running `f`, which may allocate at most `hard_cap`
/// bytes more than are allocated now (beyond it, allocation fails).
fn allocated_during<T>(hard_cap: usize, f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + hard_cap)
        .expect("set limit");
    let before = ALLOCATOR.total_allocated();
    let result = f();
    let used = ALLOCATOR.total_allocated() - before;
    ALLOCATOR.set_limit(usize::MAX).expect("reset limit");
    (result, used)
}

fn varint(value: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.varint(value);
    w.finish().unwrap().to_vec()
}

#[test]
fn hostile_inputs_allocate_within_limits() {
    const CAP: usize = 1 << 20;

    // A frame announcing 2^62 bytes: rejected before anything is buffered.
    let prefix = varint(1 << 62);
    let (result, used) = allocated_during(CAP, || FrameDecoder::new().decode(&prefix));
    assert!(result.is_err());
    assert_eq!(used, 0, "a refused frame allocates nothing");

    // A frame announcing the maximum and delivering one byte holds that
    // byte, not the announced length.
    let mut big = varint(64 * 1024);
    big.push(0);
    let (result, used) = allocated_during(CAP, || {
        let mut decoder = FrameDecoder::new();
        let decoded = decoder.decode(&big).map(|d| d.frame.is_none());
        (decoded, decoder)
    });
    assert_eq!(result.0, Ok(true));
    assert!(used <= 64, "used {used} bytes");
    drop(result);

    // A header whose list claims 2^40 items in a few bytes.
    let mut w = Writer::new();
    w.tag(4);
    w.varint(1 << 40);
    let body = w.finish().unwrap();
    let (result, used) = allocated_during(CAP, || ExampleHeader::from_frame_body(&body));
    assert!(result.is_err());
    assert!(used <= 64, "used {used} bytes");

    // The same claim with no limit at all reserves no more than the input.
    let hostile = varint(1 << 40);
    let (result, used) =
        allocated_during(CAP, || Reader::new(&hostile).list(usize::MAX, Reader::u64));
    assert!(result.is_err());
    assert!(used <= hostile.len() * 8, "used {used} bytes");

    // Metadata claiming the maximum number of entries, then ending.
    let (result, used) = allocated_during(CAP, || Metadata::from_bytes(&[64]));
    assert!(result.is_err());
    assert_eq!(used, 0);

    // A string claiming 2^30 bytes inside a short frame.
    let mut w = Writer::new();
    w.tag(2);
    w.varint(1 << 30);
    let body = w.finish().unwrap();
    let (result, used) = allocated_during(CAP, || ExampleHeader::from_frame_body(&body));
    assert!(result.is_err());
    assert_eq!(used, 0);
}
