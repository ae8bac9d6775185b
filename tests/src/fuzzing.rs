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
/// - `op % 4 == 3`: the node dials peer `op / 4 % 4` (the first 8 of them
///   in an input).
///
/// The node is [`fuzz_config`]`(1)`, with deterministic crypto, so the recorded
/// handshakes of the seeds (`record_dialer_session`) replay: the fuzzer
/// starts from a connected peer and explores the Hello, the control stream,
/// stream headers and stream data. Nothing may panic, and the node must
/// keep answering its polls.
pub fn node_datagrams(data: &[u8]) {
    let _ = run_node_datagrams(data);
}

/// The configuration of node `n` in the node fuzz targets:
/// [`Sim::config`](crate::sim::Sim::config) (deterministic crypto) with 16
/// streams per connection, so that the fuzzer reaches the stream limit and
/// a new connection does not pay for 1,024 stream slots. Made once per
/// thread: deriving an identity's public key is a scalar multiplication.
pub fn fuzz_config(n: u8) -> pos_p2p_protocol::node::NodeConfig {
    use pos_p2p_protocol::node::NodeConfig;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    thread_local! {
        static CONFIGS: RefCell<BTreeMap<u8, NodeConfig>> = const { RefCell::new(BTreeMap::new()) };
    }
    CONFIGS.with_borrow_mut(|configs| {
        configs
            .entry(n)
            .or_insert_with(|| {
                let mut config = crate::sim::Sim::config(n);
                config.limits.max_streams_per_connection = 16;
                config.cheap_key_exchange = true;
                config
            })
            .clone()
    })
}

/// The dials one `node_datagrams` input may make (later dial opcodes do
/// nothing).
const MAX_FUZZ_DIALS: usize = 8;

/// [`node_datagrams`], returning every event the node reported.
pub fn run_node_datagrams(data: &[u8]) -> Vec<pos_p2p_protocol::node::Event> {
    use bytes::BytesMut;
    use pos_p2p_protocol::node::{Event, Node, ReadOutcome};
    use std::time::{Duration, Instant};

    let start = Instant::now();
    let mut now = start;
    let mut node = Node::new(fuzz_config(1), now).expect("valid config");
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut input = data;
    // Each dial makes a connection that retransmits until it times out:
    // a few per input explore dialing; thousands would only make the input
    // slow to run.
    let mut dials = 0;
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
            _ if dials < MAX_FUZZ_DIALS => {
                dials += 1;
                let _ = node.connect(now, fuzz_peer(op / 4), None);
            }
            _ => {}
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
    let mut fuzzed = Node::new(fuzz_config(1), now).expect("valid config");
    let mut dialer = Node::new(fuzz_config(2), now).expect("valid config");
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
    use pos_p2p_protocol::tunnel::{FrameReader, MAX_PLAINTEXT_LEN, TunnelTransport};
    thread_local! {
        // The handshake runs once per thread; each input starts from a copy
        // of the established responder.
        static RESPONDER: TunnelTransport = crate::tunnel_pair(
            fuzz_nodes(),
            FUZZ_LIBRARY,
            &TunnelKeys::instance(1),
            &TunnelKeys::instance(2),
            [[5; 32], [6; 32]],
        )
        .responder;
    }
    let mut rx = RESPONDER.with(TunnelTransport::receive_only_copy);
    let mut reader = FrameReader::new();
    let mut plain = vec![0u8; MAX_PLAINTEXT_LEN];
    let mut rest = data;
    let (mut failed, mut ended) = (false, false);
    while !rest.is_empty() {
        let (used, done) = reader.push(rest);
        assert!(used > 0 || done, "a reader given bytes makes progress");
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
        if discovery.poll_timeout().is_some_and(|(at, _)| at <= now) {
            discovery.handle_timeout(now);
            // Every timer moved past now: a driver would not spin.
            assert!(discovery.poll_timeout().is_none_or(|(at, _)| at > now));
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

/// What the receiving application of [`node_streams`] did with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// The header decoded; the stream is read to its end and answered.
    Accepted,
    /// The header did not decode: refused with this code.
    Rejected(u64),
}

/// Stream operations on a live connection between two nodes (structure
/// aware: the fuzzer chooses plaintext, the nodes encrypt it), checking the
/// stream error codes of PROTOCOL.md §3.1 end to end. Opcodes, each
/// followed by its arguments:
///
/// - `0 len bytes…`: node 0 opens a stream to node 1 and writes `len`
///   arbitrary bytes where the header frame belongs;
/// - `1 len`: the same with a valid `Message` header of `len` bytes;
/// - `2 index len`: `len` payload bytes on stream `index`;
/// - `3 index`: finish it; `4 index code`: reset it (code `0x100 + code`);
///   `5 index code`: stop reading it;
/// - `6 ticks`: `ticks` × 10 ms pass;
/// - `7 len bytes…`: node 0 changes its metadata (the control stream).
///
/// Node 1 reads each header, decodes it as [`crate::ExampleHeader`], and
/// refuses one that does not decode with
/// [`StreamRejection::for_decode_error`](pos_p2p_protocol::node::StreamRejection::for_decode_error);
/// it answers every other stream with `ok` once the stream ends. Checked:
/// every code node 0 reads is one of §3.1's protocol codes; a stream
/// refused by node 1 fails at node 0 with exactly that code; a stream with
/// a good header that node 0 finished and never reset or stopped is
/// answered `ok`; nothing panics.
pub fn node_streams(data: &[u8]) {
    let _ = run_node_streams(data);
}

/// [`node_streams`], returning how each of node 0's streams ended as node 0
/// read it.
pub fn run_node_streams(
    data: &[u8],
) -> Vec<Result<pos_p2p_protocol::node::ReadOutcome, pos_p2p_protocol::node::StreamError>> {
    use crate::sim::{Link, Sim};
    use pos_p2p_protocol::codec::{FrameError, Header};
    use pos_p2p_protocol::node::{Event, ReadOutcome, StreamId, StreamRejection, stream_code};
    use std::collections::BTreeMap;
    use std::time::Duration;

    let mut sim = Sim::new(1, Link::lan());
    let (a, b) = (sim.add_node(fuzz_config(1)), sim.add_node(fuzz_config(2)));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b), "a clean link connects");
    let peer = sim.id(b);
    // Streams are matched across the nodes by their ids: the one
    // connection must have the same id on both sides.
    let conn_at = |sim: &Sim, at: usize, other: usize| {
        sim.nodes[at]
            .node
            .peer(&sim.id(other))
            .map(|p| p.connection)
    };
    assert_eq!(
        conn_at(&sim, a, b),
        conn_at(&sim, b, a),
        "one connection id"
    );

    // Node 0's streams: whether its header was good, finished, disturbed.
    #[derive(Default)]
    struct Sent {
        good: bool,
        finished: bool,
        disturbed: bool,
    }
    let mut sent: Vec<(StreamId, Sent)> = Vec::new();
    let mut received: BTreeMap<StreamId, Received> = BTreeMap::new();

    // The receiving application: headers, refusals, answers.
    let serve = |sim: &mut Sim, received: &mut BTreeMap<StreamId, Received>| {
        while let Some(event) = sim.nodes[b].events.pop_front() {
            let stream = match event {
                Event::IncomingStream { stream, .. } => {
                    let header = match sim.nodes[b].node.read(stream, usize::MAX) {
                        Ok(ReadOutcome::Data(header)) => header,
                        other => panic!("a stream is announced with its header, got {other:?}"),
                    };
                    let verdict = match crate::ExampleHeader::from_bytes(&header) {
                        Ok(_) => Received::Accepted,
                        Err(FrameError::Body(error)) => {
                            let why = StreamRejection::for_decode_error(&error);
                            sim.nodes[b].node.reject(stream, why);
                            Received::Rejected(why.code())
                        }
                        Err(_) => {
                            // The node checked the framing: the frame is whole.
                            sim.nodes[b]
                                .node
                                .reject(stream, StreamRejection::MalformedHeader);
                            Received::Rejected(stream_code::MALFORMED_HEADER)
                        }
                    };
                    received.insert(stream, verdict);
                    stream
                }
                Event::StreamReadable(stream) => stream,
                _ => continue,
            };
            if received.get(&stream) != Some(&Received::Accepted) {
                continue;
            }
            loop {
                match sim.nodes[b].node.read(stream, 4096) {
                    Ok(ReadOutcome::Data(_)) => {}
                    Ok(ReadOutcome::Finished) => {
                        let node = &mut sim.nodes[b].node;
                        let _ = node.write(stream, b"ok");
                        let _ = node.finish(stream);
                        node.release(stream);
                        break;
                    }
                    Ok(ReadOutcome::Blocked) => break,
                    Ok(ReadOutcome::Reset(_)) | Err(_) => {
                        sim.nodes[b].node.release(stream);
                        break;
                    }
                }
            }
        }
    };

    let mut input = data;
    let mut next = || -> Option<u8> {
        let (&byte, rest) = input.split_first()?;
        input = rest;
        Some(byte)
    };
    while let Some(op) = next() {
        let now = sim.now;
        match op % 8 {
            0 | 1 => {
                let len = usize::from(next().unwrap_or(0));
                let header: Vec<u8> = if op % 8 == 0 {
                    (0..len).map_while(|_| next()).collect()
                } else {
                    crate::ExampleHeader::Message("m".repeat(len))
                        .to_bytes()
                        .to_vec()
                };
                if let Ok(stream) = sim.nodes[a].node.open_stream(now, &peer) {
                    let good = crate::ExampleHeader::from_bytes(&header).is_ok();
                    let whole = sim.nodes[a].node.write(stream, &header) == Ok(header.len());
                    sent.push((
                        stream,
                        Sent {
                            good: good && whole,
                            finished: false,
                            disturbed: !whole,
                        },
                    ));
                }
            }
            2 => {
                let (index, len) = (next().unwrap_or(0), next().unwrap_or(0));
                let count = sent.len().max(1);
                if let Some((stream, state)) = sent.get_mut(usize::from(index) % count) {
                    let payload = vec![index; usize::from(len)];
                    if sim.nodes[a].node.write(*stream, &payload) != Ok(payload.len()) {
                        state.disturbed = true;
                    }
                }
            }
            3 => {
                let index = next().unwrap_or(0);
                let count = sent.len().max(1);
                if let Some((stream, state)) = sent.get_mut(usize::from(index) % count) {
                    state.finished |= sim.nodes[a].node.finish(*stream).is_ok();
                }
            }
            4 | 5 => {
                let (index, code) = (next().unwrap_or(0), next().unwrap_or(0));
                let count = sent.len().max(1);
                if let Some((stream, state)) = sent.get_mut(usize::from(index) % count) {
                    let code = stream_code::FIRST_APPLICATION_CODE + u64::from(code);
                    let node = &mut sim.nodes[a].node;
                    let _ = if op % 8 == 4 {
                        node.reset(*stream, code)
                    } else {
                        node.stop(*stream, code)
                    };
                    state.disturbed = true;
                }
            }
            6 => {
                let ticks = next().unwrap_or(1);
                sim.run_for(Duration::from_millis(u64::from(ticks) * 10));
            }
            _ => {
                let len = usize::from(next().unwrap_or(0));
                let value: Vec<u8> = (0..len).map_while(|_| next()).collect();
                let mut metadata = pos_p2p_protocol::Metadata::new();
                if metadata
                    .insert("name", String::from_utf8_lossy(&value))
                    .is_ok()
                {
                    sim.nodes[a].node.set_metadata(metadata);
                }
            }
        }
        serve(&mut sim, &mut received);
    }
    // Long enough for every header deadline (5 s) and every answer.
    for _ in 0..20 {
        sim.run_for(Duration::from_millis(500));
        serve(&mut sim, &mut received);
    }
    // Both nodes are honest and driven through the API only: nothing the
    // fuzzer does may cost the connection.
    assert!(
        sim.nodes[a].node.peer(&peer).is_some(),
        "the connection survives: {:?}",
        sim.nodes[a].history.last()
    );
    let mut outcomes = Vec::new();
    for (stream, state) in &sent {
        let mut reply = Vec::new();
        let outcome = loop {
            match sim.nodes[a].node.read(*stream, usize::MAX) {
                Ok(ReadOutcome::Data(bytes)) => reply.extend_from_slice(&bytes),
                other => break other,
            }
        };
        if let Ok(ReadOutcome::Reset(code)) = outcome {
            assert!(
                code <= stream_code::HEADER_TIMEOUT,
                "node 1 only refuses with §3.1's codes, got {code:#x}"
            );
        }
        if let Some(Received::Rejected(code)) = received.get(stream)
            && !state.disturbed
        {
            assert_eq!(
                &outcome,
                &Ok(ReadOutcome::Reset(*code)),
                "a refused stream fails with the refusal's code"
            );
        }
        if state.good && state.finished && !state.disturbed {
            assert_eq!(received.get(stream), Some(&Received::Accepted));
            assert_eq!(
                (&outcome, reply.as_slice()),
                (&Ok(ReadOutcome::Finished), &b"ok"[..]),
                "a good, finished stream is answered"
            );
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// The committed seeds of the `node_streams` target: a good stream, an
/// unknown operation, a malformed header, a header that never completes,
/// and a mix with payloads, a reset, a stop and a metadata change.
pub fn node_stream_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("seed-good", vec![1, 5, 2, 0, 40, 3, 0, 6, 10]),
        ("seed-unknown-operation", vec![0, 2, 1, 0x20, 3, 0, 6, 10]),
        ("seed-malformed", vec![0, 3, 2, 2, 0xff, 3, 0, 6, 10]),
        ("seed-header-never-ends", vec![0, 1, 5, 6, 255]),
        (
            "seed-mixed",
            vec![
                1, 3, 0, 2, 1, 0xee, 2, 0, 100, 3, 0, 3, 1, 1, 0, 4, 2, 7, 7, 4, b'n', b'a', b'm',
                b'e', 1, 1, 5, 3, 9, 6, 20, 3, 3,
            ],
        ),
    ]
}

/// A relay with three connected nodes and small limits, fed `data` as the
/// bytes its connections read: each chunk is one byte naming the sending
/// client (and how far time moves on), one byte of length, then that
/// many bytes. Checks that nothing panics, that every frame the relay
/// writes decodes, that no client's queue grows past its bound (plus the
/// relay's own control frames), and that a client the relay closes gets
/// its `Close` frame last.
pub fn relay_server(data: &[u8]) {
    use pos_p2p_protocol::Identity;
    use pos_p2p_protocol::relay::{RelayConfig, RelayFrame, RelayServer};
    use std::time::{Duration, Instant};

    let mut now = Instant::now();
    let mut config = RelayConfig::default();
    config.queue_bytes = 4096;
    config.bytes_per_second = 8192;
    config.burst = 4096;
    let queue_bound = config.queue_bytes + 256;
    let mut relay = RelayServer::new(config);
    let addr = std::net::SocketAddr::from(([192, 0, 2, 1], 5000));
    let clients: Vec<_> = (1..=3u8)
        .filter_map(|n| {
            relay
                .accept(
                    now,
                    Identity::from_bytes(&[n; 32]).to_remote_identity(),
                    addr,
                )
                .ok()
        })
        .collect();
    assert_eq!(clients.len(), 3);
    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (chunk, after) = tail.split_at(take);
        rest = after;
        now += Duration::from_millis(u64::from(selector >> 2));
        let client = clients[usize::from(selector & 3) % clients.len()];
        relay.handle_bytes(now, client, chunk);
        // Drain what half of the clients would write (the others do not
        // read, so their queues fill).
        while let Some(ready) = relay.poll_ready() {
            if ready == clients[2] {
                continue;
            }
            let closing = relay.closing(ready);
            let mut last = None;
            while let Some(frame) = relay.poll_transmit(ready) {
                last = Some(RelayFrame::from_bytes(&frame).expect("the relay writes valid frames"));
            }
            if let Some(reason) = closing {
                assert_eq!(last, Some(RelayFrame::Close { reason }), "Close comes last");
            }
        }
    }
    // The client that never read holds at most its bound.
    let mut held = 0;
    while let Some(frame) = relay.poll_transmit(clients[2]) {
        held += frame.len();
    }
    assert!(held <= queue_bound, "{held} bytes queued");
}

/// Seeds for the `relay_server` target: a datagram from each client to the
/// next, pings, an unknown destination, and a frame only a relay sends.
pub fn relay_server_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::Identity;
    use pos_p2p_protocol::relay::RelayFrame;
    let id = |n: u8| Identity::from_bytes(&[n; 32]).to_remote_identity();
    let chunk = |client: u8, frame: RelayFrame| {
        let bytes = frame.to_bytes().expect("a valid frame");
        let mut out = Vec::new();
        for piece in bytes.chunks(255) {
            out.push(client);
            out.push(piece.len() as u8);
            out.extend_from_slice(piece);
        }
        out
    };
    let send = |to: u8, len: usize| RelayFrame::Send {
        to: id(to),
        datagram: vec![0x5a; len].into(),
    };
    let mut forward = Vec::new();
    for (client, to) in [(0, 2), (1, 3), (2, 1)] {
        forward.extend(chunk(client, send(to, 100)));
    }
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.extend(chunk(0, send(3, 1200)));
    }
    let mut misc = chunk(1, RelayFrame::Ping { nonce: 7 });
    misc.extend(chunk(0, send(9, 10)));
    misc.extend(chunk(0, send(9, 10)));
    let bad = chunk(
        1,
        RelayFrame::Recv {
            from: id(1),
            datagram: vec![1, 2, 3].into(),
        },
    );
    vec![
        ("seed-forward", forward),
        ("seed-flood", flood),
        ("seed-misc", misc),
        ("seed-bad-frame", bad),
    ]
}

/// A node's relay connection fed arbitrary frames by a malicious relay
/// (after a real TLS handshake with a [`RelayEndpoint`], so the bytes
/// reach [`RelayClient`]'s frame handling): each chunk of the input is
/// written as the relay's plaintext. Checks that the client either keeps
/// going or stops with a typed error, stays stopped, and that every event
/// it reports is one a relay may cause.
///
/// [`RelayEndpoint`]: pos_p2p_protocol::relay::RelayEndpoint
/// [`RelayClient`]: pos_p2p_protocol::relay::RelayClient
pub fn relay_client(data: &[u8]) {
    run_relay_client(data);
}

/// The body of [`relay_client`]: how the client's connection ended, if it
/// did.
pub fn run_relay_client(data: &[u8]) -> Option<pos_p2p_protocol::relay::RelayError> {
    use pos_p2p_protocol::Identity;
    use pos_p2p_protocol::relay::{RelayClient, RelayConfig, RelayEndpoint};
    use std::time::Instant;

    let now = Instant::now();
    let relay_identity = Identity::from_bytes(&[0xee; 32]);
    let mut relay = RelayEndpoint::new(&relay_identity, RelayConfig::default()).expect("relay TLS");
    let node = Identity::from_bytes(&[1; 32]);
    let config = RelayClient::client_config(&node).expect("client TLS");
    let mut client =
        RelayClient::new(config, relay_identity.to_remote_identity(), 64 << 10).expect("client");
    let conn = relay
        .connect(now, std::net::SocketAddr::from(([192, 0, 2, 1], 5000)))
        .expect("room for a handshake");
    let mut failed = None;
    let mut pump = |relay: &mut RelayEndpoint, client: &mut RelayClient| loop {
        let mut moved = false;
        let mut up = Vec::new();
        client.poll_write(&mut up);
        if !up.is_empty() {
            moved = true;
            relay.handle_bytes(now, conn, &up);
        }
        while let Some(ready) = relay.poll_ready() {
            let mut down = Vec::new();
            relay.poll_write(ready, &mut down);
            if !down.is_empty() {
                moved = true;
                let result = client.handle_bytes(&down);
                match (&failed, result) {
                    (None, Err(e)) => failed = Some(e),
                    (Some(before), Err(after)) => assert_eq!(*before, after, "stays failed"),
                    (Some(_), Ok(())) => panic!("a failed client accepted more"),
                    (None, Ok(())) => {}
                }
            }
        }
        while let Some(event) = client.poll_event() {
            assert!(
                !matches!(event, pos_p2p_protocol::relay::RelayClientEvent::Connected)
                    || client.is_connected()
            );
        }
        if !moved {
            return;
        }
    };
    pump(&mut relay, &mut client);
    assert!(client.is_connected(), "the handshake completes");
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (chunk, after) = tail.split_at(take);
        rest = after;
        if !relay.inject(conn, chunk) {
            break;
        }
        pump(&mut relay, &mut client);
    }
    failed
}

/// Seeds for the `relay_client` target: each frame a relay sends, a ping,
/// a frame only a node sends, a frame over the limit, and frames cut in
/// pieces.
pub fn relay_client_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::Identity;
    use pos_p2p_protocol::relay::{CloseReason, RelayFrame};
    let id = |n: u8| Identity::from_bytes(&[n; 32]).to_remote_identity();
    let chunked = |bytes: &[u8], size: usize| {
        let mut out = Vec::new();
        for piece in bytes.chunks(size) {
            out.push(piece.len() as u8);
            out.extend_from_slice(piece);
        }
        out
    };
    let frames = |list: &[RelayFrame]| {
        let mut bytes = Vec::new();
        for frame in list {
            bytes.extend_from_slice(&frame.to_bytes().expect("a valid frame"));
        }
        bytes
    };
    let good = frames(&[
        RelayFrame::Recv {
            from: id(2),
            datagram: vec![0x5a; 300].into(),
        },
        RelayFrame::PeerGone { identity: id(3) },
        RelayFrame::Ping { nonce: 9 },
        RelayFrame::Pong { nonce: 1 },
        RelayFrame::ObservedAddr {
            addr: "[2001:db8::1]:4000".parse().expect("an address"),
        },
    ]);
    let close = frames(&[RelayFrame::Close {
        reason: CloseReason::Full,
    }]);
    let node_only = frames(&[RelayFrame::Send {
        to: id(2),
        datagram: vec![1, 2, 3].into(),
    }]);
    // A length prefix (LEB128) of 1,565: one over the limit.
    let too_long = vec![0x9d, 0x0c, 0x02];
    vec![
        ("seed-good", chunked(&good, 255)),
        ("seed-good-in-pieces", chunked(&good, 7)),
        ("seed-close", chunked(&close, 255)),
        ("seed-node-only", chunked(&node_only, 255)),
        ("seed-too-long", chunked(&too_long, 255)),
    ]
}

/// Read `data` as a STUN message both ways (docs/PROTOCOL.md §10.6): as
/// the answer to a node's probe and as a request to a relay's responder.
/// Nothing may panic; an answer that decodes re-encodes to an answer with
/// the same transaction id and address, and a request is answered with
/// the address it came from.
pub fn stun(data: &[u8]) {
    use pos_p2p_protocol::relay::ProbeResponder;
    use pos_p2p_protocol::stun;
    if let Ok((id, addr)) = stun::parse_binding_response(data) {
        assert!(stun::is_stun(data));
        let again = stun::binding_response(id, addr);
        assert_eq!(stun::parse_binding_response(&again), Ok((id, addr)));
    }
    let from: std::net::SocketAddr = "198.51.100.7:40000".parse().expect("an address");
    let mut responder = ProbeResponder::new(std::time::Instant::now());
    let now = std::time::Instant::now();
    match (
        stun::parse_binding_request(data),
        responder.answer(now, from, data),
    ) {
        (Ok(id), Some(answer)) => {
            assert_eq!(stun::parse_binding_response(&answer), Ok((id, from)));
        }
        (Err(_), None) => {}
        (request, answer) => panic!("request {request:?} but answer {answer:?}"),
    }
}

/// The `stun` target's seeds: a request, the RFC 5769 sample answer (with
/// attributes to skip), an IPv6 answer.
pub fn stun_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::stun::{TransactionId, binding_request, binding_response};
    let id = TransactionId([0xb7; 12]);
    let rfc5769: Vec<u8> = [
        "0101003c2112a442b7e7a701bc34d686fa87dfae",
        "8022000b7465737420766563746f7220",
        "002000080001a147e112a643",
        "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7",
        "80280004c07d4c96",
    ]
    .concat()
    .as_bytes()
    .chunks(2)
    .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("hex"), 16).expect("hex"))
    .collect();
    vec![
        ("seed-request", binding_request(id).to_vec()),
        ("seed-rfc5769-answer", rfc5769),
        (
            "seed-ipv6-answer",
            binding_response(id, "[2001:db8::7]:4433".parse().expect("an address")),
        ),
    ]
}

/// Read `data` as a direct-path packet (docs/PROTOCOL.md §10.9). Nothing
/// may panic; a packet that parses is exactly its own encoding.
pub fn direct(data: &[u8]) {
    use pos_p2p_protocol::direct::{DirectPacket, PACKET_LEN, is_direct};
    if let Ok(packet) = DirectPacket::parse(data) {
        assert!(is_direct(data));
        assert_eq!(data.len(), PACKET_LEN);
        assert_eq!(packet.to_bytes().as_slice(), data);
    }
}

/// The `direct` target's seeds: a ping, a pong, an unknown kind.
pub fn direct_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::direct::{DirectPacket, PacketKind};
    let ping = DirectPacket {
        kind: PacketKind::Ping,
        token: [0x5a; 16],
        txid: [0xc3; 12],
    }
    .to_bytes();
    let pong = DirectPacket {
        kind: PacketKind::Pong,
        ..DirectPacket::parse(&ping).expect("a ping")
    }
    .to_bytes();
    let mut unknown = ping;
    unknown[4] = 9;
    vec![
        ("seed-ping", ping.to_vec()),
        ("seed-pong", pong.to_vec()),
        ("seed-unknown-kind", unknown.to_vec()),
    ]
}

/// Peer input to the transfer building blocks (docs/PROTOCOL.md §11): the
/// first byte picks the part. A path's components (NUL-separated) are
/// checked as a receiver checks them, and an accepted path joins to a
/// relative path of exactly those components; or a claimed size, hash,
/// outboard and group are verified. Nothing may panic, and nothing is
/// allocated from the claimed size.
pub fn transfer(data: &[u8]) {
    use pos_p2p_protocol::transfer::names::SafePath;
    use pos_p2p_protocol::transfer::tree::{Verifier, outboard_len};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let components: Vec<String> = rest
            .split(|b| *b == 0)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        if let Ok(path) = SafePath::new(components.clone()) {
            let joined = path.to_path_buf();
            assert!(joined.is_relative());
            assert_eq!(joined.components().count(), components.len());
        }
        return;
    }
    if rest.len() < 48 {
        return;
    }
    let size = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) % (1 << 24);
    let index = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes")) % 128;
    let mut hash = [0; 32];
    hash.copy_from_slice(&rest[16..48]);
    let rest = &rest[48..];
    let split = (outboard_len(size) as usize).min(rest.len());
    let (outboard, group) = rest.split_at(split);
    if let Ok(verifier) = Verifier::new(size, hash, outboard) {
        assert_eq!(verifier.size(), size);
        let _ = verifier.verify(index, group);
    }
}

/// The `transfer` target's seeds: a hostile path, a verified two-group
/// file's outboard and second group.
pub fn transfer_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::transfer::tree::{FileHasher, GROUP_LEN};
    let mut path = vec![0u8];
    path.extend_from_slice(b"photos\0..\0CON.txt");
    let data = crate::sim::payload(15, GROUP_LEN as usize + 100);
    let mut hasher = FileHasher::new();
    hasher.update(&data);
    let (hash, outboard) = hasher.finalize();
    let mut file = vec![1u8];
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(&1u64.to_le_bytes());
    file.extend_from_slice(&hash);
    file.extend_from_slice(&outboard);
    file.extend_from_slice(&data[GROUP_LEN as usize..]);
    vec![("seed-path", path), ("seed-two-groups", file)]
}

/// The files [`transfer_messages`] offers: two groups and 100 bytes, one
/// short file, one empty file, and a directory. Their bytes are
/// deterministic so that a corpus file means the same thing in every run.
/// The offer, and each entry's bytes and outboard (empty for the
/// directory).
type TransferFixture = (
    pos_p2p_protocol::transfer::wire::Offer,
    Vec<Vec<u8>>,
    Vec<Vec<u8>>,
);

fn transfer_fixture() -> &'static TransferFixture {
    use pos_p2p_protocol::transfer::names::SafePath;
    use pos_p2p_protocol::transfer::tree::{FileHasher, GROUP_LEN};
    use pos_p2p_protocol::transfer::wire::{Entry, EntryKind, Offer};
    static FIXTURE: std::sync::OnceLock<TransferFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path =
            |p: &str| SafePath::new(p.split('/').map(str::to_owned).collect()).expect("safe");
        let contents = [
            (
                "a/big",
                crate::sim::payload(21, 2 * GROUP_LEN as usize + 100),
            ),
            ("a/small", b"small file".to_vec()),
            ("empty", Vec::new()),
        ];
        let mut entries = vec![Entry {
            path: path("a"),
            kind: EntryKind::Dir,
        }];
        let (mut data, mut outboards) = (Vec::new(), Vec::new());
        for (name, bytes) in contents {
            let mut hasher = FileHasher::new();
            hasher.update(&bytes);
            let (hash, outboard) = hasher.finalize();
            entries.push(Entry {
                path: path(name),
                kind: EntryKind::File {
                    size: bytes.len() as u64,
                    hash,
                },
            });
            data.push(bytes);
            outboards.push(outboard);
        }
        let offer = Offer::new("fuzz".into(), entries).expect("a valid offer");
        // Entry 0 is the directory; files are entries 1..=3.
        let mut by_entry_data = vec![Vec::new()];
        let mut by_entry_outboard = vec![Vec::new()];
        by_entry_data.extend(data);
        by_entry_outboard.extend(outboards);
        (offer, by_entry_data, by_entry_outboard)
    })
}

/// The transfer's messages from a peer (docs/PROTOCOL.md §11.3). The first
/// byte picks the side:
///
/// - `0`: an offer's body. One that decodes re-encodes to the same bytes
///   and holds only safe, ordered paths.
/// - `1`: an answer's body. One that decodes re-encodes to the same bytes.
/// - `2`: the sender's side: answer frames, one after another, to an offer
///   of the fixture's files (`transfer_fixture`). Every want the sender takes passed
///   [`Want::check`](pos_p2p_protocol::transfer::wire::Want::check): its
///   pieces lie inside their files and add up to its `data_len`; never
///   more than `MAX_ROUNDS` wants.
/// - `3`: the receiver's side, with a sender that corrupts pieces: each
///   input byte says what happens to the next piece (send it as it is, or
///   flip one of its bytes). A group is accepted exactly when it was sent
///   as it is, the receiver asks again for exactly what it refused, and it
///   finishes or gives up within `MAX_ROUNDS`.
///
/// Nothing may panic.
pub fn transfer_messages(data: &[u8]) {
    use pos_p2p_protocol::codec::decode_frame;
    use pos_p2p_protocol::transfer::names::SafePath;
    use pos_p2p_protocol::transfer::session::{Arrived, Receiving, SendStep, Sending};
    use pos_p2p_protocol::transfer::wire::{
        Answer, EntryKind, MAX_ANSWER_LEN, MAX_OFFER_LEN, MAX_ROUNDS, Offer, Piece,
    };
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(offer) = Offer::decode(rest) {
                let frame = offer.to_frame().expect("a decoded offer encodes");
                let (body, _) = decode_frame(&frame, MAX_OFFER_LEN).expect("its own frame");
                assert_eq!(body, rest, "one encoding per offer");
                for pair in offer.entries.windows(2) {
                    assert!(pair[0].path < pair[1].path);
                }
                for entry in &offer.entries {
                    let again = SafePath::new(entry.path.components().to_vec());
                    assert_eq!(again.as_ref(), Ok(&entry.path));
                }
            }
        }
        1 => {
            if let Ok(answer) = Answer::decode(rest) {
                let frame = answer.to_frame().expect("a decoded answer encodes");
                let (body, _) = decode_frame(&frame, MAX_ANSWER_LEN).expect("its own frame");
                assert_eq!(body, rest, "one encoding per answer");
            }
        }
        2 => {
            let (offer, _, _) = transfer_fixture();
            let mut sending = Sending::new(offer.clone());
            let mut input = rest;
            let mut wants = 0;
            while let Ok((body, used)) = decode_frame(input, MAX_ANSWER_LEN) {
                input = &input[used..];
                match sending.answered(body) {
                    Ok(SendStep::Send(want)) => {
                        wants += 1;
                        assert!(wants <= MAX_ROUNDS);
                        let mut total = 0u64;
                        for piece in want.pieces(offer) {
                            let file = match &piece {
                                Piece::Outboard { file, .. } | Piece::Group { file, .. } => *file,
                            };
                            let EntryKind::File { size, .. } = offer.entries[file].kind else {
                                panic!("a piece of a directory");
                            };
                            if let Piece::Group { range, .. } = &piece {
                                assert!(range.start <= range.end && range.end <= size);
                            }
                            total += piece.len();
                        }
                        assert_eq!(total, want.data_len(offer));
                    }
                    Ok(_) | Err(_) => break,
                }
            }
        }
        _ => {
            let (offer, contents, outboards) = transfer_fixture();
            let mut receiving = Receiving::new(offer.clone());
            let mut actions = rest.iter().copied();
            let mut rounds = 0;
            loop {
                let want = match receiving.next_want() {
                    Ok(Some(want)) => want,
                    Ok(None) => {
                        for file in 1..offer.entries.len() {
                            assert!(receiving.is_complete(file));
                        }
                        return;
                    }
                    Err(_) => {
                        assert_eq!(rounds, MAX_ROUNDS, "gave up before the last round");
                        return;
                    }
                };
                rounds += 1;
                assert!(rounds <= MAX_ROUNDS);
                assert_eq!(receiving.rounds(), rounds);
                for piece in want.pieces(offer) {
                    let mut bytes = match &piece {
                        Piece::Outboard { file, .. } => outboards[*file].clone(),
                        Piece::Group { file, range, .. } => {
                            contents[*file][range.start as usize..range.end as usize].to_vec()
                        }
                    };
                    // Past the input, every piece is sent as it is.
                    let action = actions.next().unwrap_or(0);
                    let corrupt = action % 2 == 1 && !bytes.is_empty();
                    if corrupt {
                        let at = usize::from(action / 2) % bytes.len();
                        bytes[at] ^= 0x01;
                    }
                    match receiving.arrived(&piece, &bytes) {
                        Ok(Arrived::Outboard) => assert!(!corrupt),
                        Ok(Arrived::Verified { .. }) => assert!(!corrupt),
                        Ok(Arrived::Corrupt) => assert!(corrupt),
                        Err(_) => {
                            // Only a forged outboard ends a transfer.
                            assert!(corrupt && matches!(piece, Piece::Outboard { .. }));
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The `transfer_messages` target's seeds: the fixture's offer, each kind
/// of answer, a sender given a want and a re-fetch, and a receiver whose
/// group 1 of the large file is corrupt once.
#[allow(clippy::single_range_in_vec_init)]
pub fn transfer_messages_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pos_p2p_protocol::transfer::wire::{Answer, Want, WantFile};
    let (offer, _, _) = transfer_fixture();
    let body = |frame: bytes::Bytes| frame[1..].to_vec();
    let offer_frame = offer.to_frame().expect("offer");
    let (offer_body, _) =
        pos_p2p_protocol::codec::decode_frame(&offer_frame, usize::MAX).expect("frame");
    let want = Answer::Want(Want {
        files: vec![
            WantFile {
                index: 1,
                outboard: true,
                groups: vec![0..3],
            },
            WantFile {
                index: 3,
                outboard: false,
                groups: vec![0..1],
            },
        ],
    });
    let refetch = Answer::Want(Want {
        files: vec![WantFile {
            index: 1,
            outboard: false,
            groups: vec![1..2],
        }],
    });
    let mut sender = vec![2u8];
    for answer in [&want, &refetch, &Answer::Done] {
        sender.extend_from_slice(&answer.to_frame().expect("answer"));
    }
    // The receiver's pieces: outboard, groups 0, 1 (corrupt: flip byte 3),
    // 2 of the large file, then the rest as they are.
    let receiver = vec![3u8, 0, 0, 7, 0];
    vec![
        ("seed-offer", [&[0u8][..], offer_body].concat()),
        (
            "seed-want",
            [vec![1u8], body(want.to_frame().expect("want"))].concat(),
        ),
        (
            "seed-decline",
            [
                vec![1u8],
                body(
                    Answer::Decline {
                        reason: "no".into(),
                    }
                    .to_frame()
                    .expect("decline"),
                ),
            ]
            .concat(),
        ),
        ("seed-sender", sender),
        ("seed-receiver", receiver),
    ]
}
