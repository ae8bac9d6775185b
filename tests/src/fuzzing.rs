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

/// The address `node_datagrams` sees peer `n` (0 to 3) at; peer 0 is where
/// the recorded dialer of the seeds was (`Sim`'s second node).
fn fuzz_peer(n: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 2 + n % 4)),
        4433,
    )
}

/// Feed a [`Node`](pos_p2p_protocol::node::Node) an arbitrary sequence of
/// datagrams, timer expiries and dials, draining its outputs after each and
/// using its streams as an application would. Each step is one opcode byte:
///
/// - `op % 4 == 0 | 1`: a datagram from peer `op / 4 % 4`; two bytes of
///   big-endian length follow, then that many bytes (fewer if the input ends);
/// - `op % 4 == 2`: time advances by the next byte × 10 ms, then timers run;
/// - `op % 4 == 3`: the node dials peer `op / 4 % 4`.
///
/// The node is `Sim::config(1)` with deterministic crypto, so the recorded
/// handshakes of the seeds (`record_dialer_session`) replay: the fuzzer
/// starts from a connected peer and explores the Hello, the control stream,
/// stream headers and stream data. Nothing may panic, and the node must
/// keep answering its polls.
pub fn node_datagrams(data: &[u8]) {
    let _ = run_node_datagrams(data);
}

/// [`node_datagrams`], returning every event the node reported.
pub fn run_node_datagrams(data: &[u8]) -> Vec<pos_p2p_protocol::node::Event> {
    use bytes::BytesMut;
    use pos_p2p_protocol::node::{Event, Node, ReadOutcome};
    use std::time::{Duration, Instant};

    let start = Instant::now();
    let mut now = start;
    let mut node = Node::new(crate::sim::Sim::config(1), now).expect("valid config");
    let mut events = Vec::new();
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
                node.handle_datagram(now, fuzz_peer(op / 4), None, None, BytesMut::from(datagram));
            }
            2 => {
                let ticks = input.first().copied().unwrap_or(1);
                input = input.get(1..).unwrap_or(&[]);
                now += Duration::from_millis(u64::from(ticks) * 10);
                node.handle_timeout(now);
            }
            _ => {
                let _ = node.connect(now, fuzz_peer(op / 4), None);
            }
        }
        // Drain as an adapter does, and use the streams as an application
        // does: read what arrives, answer, finish, release.
        for _ in 0..16 {
            let mut transmits = 0;
            while let Some(transmit) = node.poll_transmit(now, 1, &mut buf) {
                assert!(transmit.size <= buf.len());
                transmits += 1;
                assert!(transmits < 10_000, "poll_transmit must run dry");
            }
            let Some(event) = node.poll_event() else {
                break;
            };
            if let Event::IncomingStream { stream, .. } | Event::StreamReadable(stream) = &event {
                let mut total = 0usize;
                loop {
                    match node.read(*stream, 4096) {
                        Ok(ReadOutcome::Data(bytes)) => {
                            total += bytes.len();
                            assert!(
                                total <= 64 << 20,
                                "a stream cannot deliver more than was sent"
                            );
                        }
                        Ok(ReadOutcome::Finished) => {
                            let _ = node.write(*stream, b"done");
                            let _ = node.finish(*stream);
                            node.release(*stream);
                            break;
                        }
                        Ok(ReadOutcome::Reset(_)) | Err(_) => {
                            node.release(*stream);
                            break;
                        }
                        Ok(ReadOutcome::Blocked) => break,
                    }
                }
            }
            events.push(event);
        }
        let limits = node.config().limits.clone();
        for peer in node.peers() {
            assert!(node.header_bytes(peer.connection) <= limits.header_buffer);
        }
        if let Some((at, _)) = node.poll_timeout() {
            // A timer in the past is fine (it fires at the next input), but
            // it must not be absurdly far away either.
            assert!(at <= now + Duration::from_secs(3600));
        }
    }
    events
}

/// The committed seeds of the `node_datagrams` target (`make_seeds` writes
/// them; a test checks they are current): a first flight, whole sessions
/// with good and bad stream headers, a dial, and garbage.
pub fn node_datagram_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::codec::Header;
    let ping = crate::ExampleHeader::Ping.to_bytes();
    let message = crate::ExampleHeader::Message("recorded".into()).to_bytes();
    let session = record_dialer_session(&ping, &[7; 1000], 3);
    // The first datagram of the session alone: opcode, length, bytes.
    let first_len = usize::from(u16::from_be_bytes([session[1], session[2]]));
    vec![
        ("seed-initial", session[..3 + first_len].to_vec()),
        ("seed-session", session),
        (
            "seed-session-message",
            record_dialer_session(&message, b"hello", 1),
        ),
        // A non-minimal length prefix, and a frame cut short.
        (
            "seed-session-bad-headers",
            record_dialer_session(&[0x85, 0x00, 0x01], &[], 2),
        ),
        ("seed-dial-and-wait", vec![3, 2, 255, 2, 255, 2, 255]),
        ("seed-garbage", vec![0, 0, 8, 0xc0, 0, 0, 0, 1, 8, 1, 2]),
    ]
}

/// Record a dialer's whole session with the node of [`node_datagrams`], in
/// that target's opcodes, with the same clock steps it replays with: the
/// handshake and Hello, `streams` streams each carrying `header` then
/// `payload` and finished, a metadata update, and a close. Replayed into a
/// fresh node (deterministic crypto on both sides), it reproduces the
/// session byte for byte.
pub fn record_dialer_session(header: &[u8], payload: &[u8], streams: usize) -> Vec<u8> {
    use bytes::BytesMut;
    use pos_p2p_protocol::Metadata;
    use pos_p2p_protocol::node::Node;
    use std::time::{Duration, Instant};

    let start = Instant::now();
    let mut now = start;
    let mut fuzzed = Node::new(crate::sim::Sim::config(1), now).expect("valid config");
    let mut dialer = Node::new(crate::sim::Sim::config(2), now).expect("valid config");
    let fuzzed_addr = crate::sim::Sim::sim_addr(0);
    let dialer_addr = fuzz_peer(0);
    assert_eq!(dialer_addr, crate::sim::Sim::sim_addr(1));
    let target = fuzzed.local_identity();
    dialer
        .connect(now, fuzzed_addr, Some(target))
        .expect("dial");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    // One step: the dialer's datagrams reach the fuzzed node (recorded),
    // 10 ms pass (recorded), the fuzzed node's datagrams reach the dialer.
    let mut step = |fuzzed: &mut Node, dialer: &mut Node, now: &mut Instant, out: &mut Vec<u8>| {
        while let Some(t) = dialer.poll_transmit(*now, 1, &mut buf) {
            let datagram = buf[..t.size].to_vec();
            out.push(0);
            out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
            out.extend_from_slice(&datagram);
            fuzzed.handle_datagram(*now, dialer_addr, None, None, BytesMut::from(&datagram[..]));
        }
        *now += Duration::from_millis(10);
        out.extend_from_slice(&[2, 1]);
        fuzzed.handle_timeout(*now);
        let mut to_dialer = Vec::new();
        while let Some(t) = fuzzed.poll_transmit(*now, 1, &mut buf) {
            to_dialer.push(buf[..t.size].to_vec());
        }
        while fuzzed.poll_event().is_some() {}
        for datagram in to_dialer {
            dialer.handle_datagram(*now, fuzzed_addr, None, None, BytesMut::from(&datagram[..]));
        }
        dialer.handle_timeout(*now);
        while dialer.poll_event().is_some() {}
    };
    for _ in 0..6 {
        step(&mut fuzzed, &mut dialer, &mut now, &mut out);
    }
    assert!(
        dialer.peer(&target).is_some(),
        "the recorded dialer connected"
    );
    for _ in 0..streams {
        if let Ok(stream) = dialer.open_stream(now, &target) {
            let _ = dialer.write(stream, header);
            let _ = dialer.write(stream, payload);
            let _ = dialer.finish(stream);
        }
        step(&mut fuzzed, &mut dialer, &mut now, &mut out);
    }
    let mut metadata = Metadata::new();
    let _ = metadata.insert("name", "recorded");
    dialer.set_metadata(metadata);
    for _ in 0..3 {
        step(&mut fuzzed, &mut dialer, &mut now, &mut out);
    }
    dialer.close(now, &target, "bye");
    for _ in 0..3 {
        step(&mut fuzzed, &mut dialer, &mut now, &mut out);
    }
    out
}

/// The library keys of the tunnel fuzz targets: this end is instance `me`;
/// instances 1 and 2 are the members of [`FUZZ_LIBRARY`].
#[derive(Debug)]
pub struct TunnelKeys {
    me: pos_p2p_protocol::Identity,
}

impl TunnelKeys {
    /// The keys of instance `n` (1 or 2 are members).
    pub fn instance(n: u8) -> Self {
        Self {
            me: pos_p2p_protocol::Identity::from_bytes(&[n; 32]),
        }
    }
}

/// The library the tunnel fuzz targets use.
pub const FUZZ_LIBRARY: pos_p2p_protocol::tunnel::LibraryId =
    pos_p2p_protocol::tunnel::LibraryId::from_bytes([0x11; 16]);

impl pos_p2p_protocol::tunnel::LibraryKeys for TunnelKeys {
    fn local_instance(
        &self,
        library: &pos_p2p_protocol::tunnel::LibraryId,
    ) -> Option<pos_p2p_protocol::Identity> {
        (*library == FUZZ_LIBRARY).then(|| self.me.clone())
    }

    fn is_member(
        &self,
        library: &pos_p2p_protocol::tunnel::LibraryId,
        instance: &pos_p2p_protocol::RemoteIdentity,
    ) -> bool {
        *library == FUZZ_LIBRARY
            && [1u8, 2].iter().any(|n| {
                pos_p2p_protocol::Identity::from_bytes(&[*n; 32]).to_remote_identity() == *instance
            })
    }
}

/// The node pair of the tunnel fuzz targets.
pub fn fuzz_nodes() -> pos_p2p_protocol::tunnel::NodePair {
    pos_p2p_protocol::tunnel::NodePair {
        initiator: pos_p2p_protocol::Identity::from_bytes(&[0xa1; 32]).to_remote_identity(),
        responder: pos_p2p_protocol::Identity::from_bytes(&[0xb2; 32]).to_remote_identity(),
    }
}

/// Arbitrary bytes, in chunks sized by the first byte, into a tunnel
/// responder (instance 2). Whatever happens must be a value or a typed
/// error; after an error every call fails; consumed counts stay in bounds.
pub fn tunnel_responder(data: &[u8]) {
    use pos_p2p_protocol::tunnel::{TunnelError, TunnelHandshake};
    let Some((&chunk_seed, input)) = data.split_first() else {
        return;
    };
    let keys = TunnelKeys::instance(2);
    let mut responder = TunnelHandshake::responder(fuzz_nodes(), [6; 32]);
    let chunk = usize::from(chunk_seed % 64) + 1;
    let mut out = Vec::new();
    let mut failed = false;
    for piece in input.chunks(chunk) {
        match responder.handle_input(piece, &keys) {
            Ok(used) => {
                assert!(!failed, "a failed handshake must stay failed");
                assert!(used <= piece.len());
            }
            Err(error) => {
                if failed {
                    assert_eq!(error, TunnelError::Failed);
                }
                failed = true;
            }
        }
        responder.take_output(&mut out);
        if responder.is_done() {
            break;
        }
    }
    if responder.is_done() {
        // Only a genuine member can complete: the fuzzer cannot forge the
        // signature of instance 1 or 2.
        let (_, info) = responder.into_transport().expect("done");
        assert_eq!(info.library, FUZZ_LIBRARY);
    }
}

/// A real handshake between instances 1 and 2, then arbitrary bytes as the
/// initiator's transport stream into the responder: frames are read and
/// opened; every outcome is plaintext or a typed error, never a panic, and
/// nothing decrypts after the first failure or after the end. When the
/// bytes run out, the stream ends: complete only after the end.
pub fn tunnel_transport(data: &[u8]) {
    use pos_p2p_protocol::tunnel::{FrameReader, MAX_PLAINTEXT_LEN};
    let mut rx = crate::tunnel_pair(
        fuzz_nodes(),
        FUZZ_LIBRARY,
        &TunnelKeys::instance(1),
        &TunnelKeys::instance(2),
        [[5; 32], [6; 32]],
    )
    .responder;
    let mut reader = FrameReader::new();
    let mut plain = vec![0u8; MAX_PLAINTEXT_LEN];
    let mut rest = data;
    let (mut failed, mut ended) = (false, false);
    while !rest.is_empty() {
        let (used, done) = reader.push(rest);
        assert!(used <= rest.len());
        rest = &rest[used..];
        if done {
            match rx.open(reader.frame(), &mut plain) {
                Ok(n) => {
                    assert!(!failed, "nothing opens after a failure");
                    assert!(!ended, "nothing opens after the end");
                    assert!(n <= MAX_PLAINTEXT_LEN);
                    ended = n == 0;
                }
                Err(_) => failed = true,
            }
            reader.clear();
        }
    }
    if !reader.is_mid_frame() && !failed {
        assert_eq!(
            rx.handle_eof().is_ok(),
            ended,
            "complete only after the end"
        );
        assert_eq!(rx.is_end_received(), ended);
    }
}

/// Feed `data` to a [`Discovery`](pos_p2p_protocol::discovery::Discovery)
/// as mDNS packets: first whole, then as a sequence of
/// `[len_hi, len_lo, flags, packet…]` records (flags: bit 0 a legacy source
/// port, bits 1–7 the milliseconds to advance). Checks that every packet it
/// sends is a valid DNS message within the size limit, that the peer table
/// stays within its bound, that it never reports itself, and that every
/// reported peer has an address.
pub fn mdns_packets(data: &[u8]) {
    use pos_p2p_protocol::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, MAX_PACKET_LEN};
    use std::time::{Duration, Instant};

    let start = Instant::now();
    let mut now = start;
    let me = pos_p2p_protocol::Identity::from_bytes(&[1; 32]).to_remote_identity();
    let mut config = DiscoveryConfig::new(me, "fuzz", [1; 32]);
    config.max_peers = 8;
    let mut discovery = Discovery::new(config, now);
    discovery.set_addrs(now, vec!["192.0.2.1:4433".parse().expect("address")]);
    let mdns: std::net::SocketAddr = "192.0.2.9:5353".parse().expect("address");
    let legacy: std::net::SocketAddr = "192.0.2.9:40000".parse().expect("address");

    let check = |discovery: &mut Discovery, now: Instant| {
        if discovery.poll_timeout().is_some_and(|at| at <= now) {
            discovery.handle_timeout(now);
            // Every timer moved past now: a driver would not spin.
            assert!(discovery.poll_timeout().is_none_or(|at| at > now));
        }
        while let Some(transmit) = discovery.poll_transmit() {
            assert!(transmit.payload.len() <= MAX_PACKET_LEN);
            simple_dns::Packet::parse(&transmit.payload).expect("we send valid DNS");
        }
        while let Some(event) = discovery.poll_event() {
            if let DiscoveryEvent::Discovered(peer) | DiscoveryEvent::Changed(peer) = event {
                assert_ne!(peer.identity, me, "reported itself");
                assert!(!peer.addrs.is_empty(), "reported a peer without an address");
            }
        }
        assert!(discovery.peers().count() <= 8);
    };

    discovery.handle_packet(now, mdns, data);
    check(&mut discovery, now);
    let mut rest = data;
    while let [hi, lo, flags, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (packet, next) = tail.split_at(len);
        now += Duration::from_millis(u64::from(flags >> 1) * 50);
        let from = if flags & 1 == 1 { legacy } else { mdns };
        discovery.handle_packet(now, from, packet);
        check(&mut discovery, now);
        rest = next;
    }
    // Long after (beyond the 75-minute TTL cap): everything expired.
    now += Duration::from_secs(2 * 3600);
    check(&mut discovery, now);
    assert_eq!(discovery.peers().count(), 0);
    discovery.shutdown();
    check(&mut discovery, now);
}
