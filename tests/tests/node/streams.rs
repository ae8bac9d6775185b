//! Application streams: data both ways, many at once, under loss.

use std::time::Duration;

use pos_p2p_protocol::node::{Event, ReadOutcome, SendStatus, StreamError, StreamId};
use pos_p2p_tests::sim::{Link, Sim, payload};

/// Two connected nodes.
fn connected(seed: u64, link: Link) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed, link);
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b), "nodes connect");
    (sim, a, b)
}

fn incoming(sim: &mut Sim, node: usize) -> StreamId {
    sim.accept_stream(node, Duration::from_secs(30))
        .expect("an incoming stream")
}

/// Open a stream from `from` to `to`, send `data`, and return what `to`
/// read, plus what `from` read back from `to`'s reply (`reply`).
fn exchange(
    sim: &mut Sim,
    from: usize,
    to: usize,
    data: &[u8],
    reply: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let stream = sim.open_stream(from, to).expect("open");
    sim.write_all(from, stream, data).expect("write");
    let remote = incoming(sim, to);
    let received = sim
        .read_to_end(to, remote, Duration::from_secs(60))
        .expect("read");
    sim.write_all(to, remote, reply).expect("reply");
    let replied = sim
        .read_to_end(from, stream, Duration::from_secs(60))
        .expect("read reply");
    (received, replied)
}

#[test]
fn one_mebibyte_each_way_arrives_intact() {
    let (mut sim, a, b) = connected(10, Link::lan());
    let (ab, ba) = (payload(1, 1 << 20), payload(2, 1 << 20));
    let (received, replied) = exchange(&mut sim, a, b, &ab, &ba);
    assert!(received == ab, "a -> b corrupted");
    assert!(replied == ba, "b -> a corrupted");
    // And the other way round, opened by the listener.
    let (received, replied) = exchange(&mut sim, b, a, &ba, &ab);
    assert!(received == ba && replied == ab);
}

#[test]
fn a_hundred_concurrent_streams() {
    let (mut sim, a, b) = connected(11, Link::lan());
    let mut sent = Vec::new();
    for i in 0..100u64 {
        let stream = sim.open_stream(a, b).expect("open");
        let data = payload(i, 1000 + i as usize * 37);
        sim.write_all(a, stream, &data).expect("write");
        sent.push(data);
    }
    let mut received = Vec::new();
    for _ in 0..100 {
        let stream = incoming(&mut sim, b);
        received.push(
            sim.read_to_end(b, stream, Duration::from_secs(10))
                .expect("read"),
        );
    }
    received.sort();
    sent.sort();
    assert!(received == sent, "every stream's bytes arrive");
}

#[test]
fn five_percent_loss_and_reordering_deliver_every_byte_in_order() {
    let link = Link {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(4),
        loss: 0.05,
        duplicate: 0.01,
    };
    let (mut sim, a, b) = connected(12, link);
    let data = payload(3, 512 * 1024);
    let (received, replied) = exchange(&mut sim, a, b, &data, b"ok");
    assert!(received == data, "bytes arrive complete and in order");
    assert_eq!(replied, b"ok");
    assert!(
        sim.stats.dropped > 10,
        "loss really happened: {:?}",
        sim.stats
    );
    assert!(
        sim.stats.duplicated > 0,
        "duplication really happened: {:?}",
        sim.stats
    );
}

#[test]
fn reset_and_stop_are_reported() {
    let (mut sim, a, b) = connected(13, Link::lan());
    let stream = sim.open_stream(a, b).unwrap();
    sim.nodes[a].node.write(stream, b"partial").unwrap();
    // The header must be out before the reset: a stream reset before its
    // header arrived is never reported to the application.
    let remote = incoming(&mut sim, b);
    sim.nodes[a].node.reset(stream, 42).unwrap();
    let outcome = sim.run_until(Duration::from_secs(1), |sim| {
        matches!(
            sim.nodes[b].node.read(remote, 100),
            Ok(ReadOutcome::Reset(42))
        )
    });
    assert!(outcome, "the reset code reaches the reader");

    let stream = sim.open_stream(a, b).unwrap();
    sim.nodes[a].node.write(stream, b"hello").unwrap();
    let remote = incoming(&mut sim, b);
    sim.nodes[b].node.stop(remote, 7).unwrap();
    let code = sim.take_event(a, Duration::from_secs(1), |e| match e {
        Event::StreamStopped { stream: s, code } if *s == stream => Some(*code),
        _ => None,
    });
    assert_eq!(code, Some(7));
}

#[test]
fn writes_are_bounded_by_flow_control() {
    let (mut sim, a, b) = connected(14, Link::lan());
    let stream = sim.open_stream(a, b).unwrap();
    // Nobody reads on b: the writer is refused once the windows are full,
    // instead of buffering without bound.
    let chunk = vec![0u8; 64 * 1024];
    let mut accepted = 0usize;
    let mut stalled = false;
    for _ in 0..2000 {
        match sim.nodes[a].node.write(stream, &chunk) {
            Ok(n) => {
                accepted += n;
                stalled = false;
            }
            Err(StreamError::Blocked) if !stalled => {
                // Let acknowledgements free the send window, once.
                sim.run_for(Duration::from_millis(50));
                stalled = true;
            }
            Err(StreamError::Blocked) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // The header frame took part of the window.
    let accepted = accepted + pos_p2p_tests::sim::SIM_HEADER.len();
    let window = sim.nodes[b].node.config().limits.stream_receive_window as usize;
    let bound = window + sim.nodes[a].node.config().limits.send_window as usize;
    assert!(
        accepted >= window && accepted <= bound,
        "accepted {accepted}, window {window}, bound {bound}"
    );
}

#[test]
fn a_rejected_stream_fails_both_ways_with_the_rejections_code() {
    use pos_p2p_protocol::node::{StreamRejection, stream_code};
    use pos_p2p_tests::sim::ReadEnd;
    let (mut sim, a, b) = connected(61, Link::lan());
    let sent = sim.open_stream(a, b).unwrap();
    sim.nodes[a]
        .node
        .write(sent, b"an operation b does not know")
        .unwrap();
    let at_b = sim.accept_stream(b, Duration::from_secs(1)).unwrap();
    sim.nodes[b]
        .node
        .reject(at_b, StreamRejection::UnknownOperation);
    // a's read sees the reset, its writes the stop, both with code 1.
    assert_eq!(
        sim.read_to_end(a, sent, Duration::from_secs(1)),
        Err(ReadEnd::Reset(stream_code::UNKNOWN_OPERATION))
    );
    let stopped = sim.take_event(a, Duration::from_secs(1), |e| match e {
        Event::StreamStopped { stream, code } if *stream == sent => Some(*code),
        _ => None,
    });
    assert_eq!(stopped, Some(stream_code::UNKNOWN_OPERATION));
    // A code QUIC cannot carry is sent as REFUSED.
    let sent = sim.open_stream(a, b).unwrap();
    let at_b = sim.accept_stream(b, Duration::from_secs(1)).unwrap();
    sim.nodes[b]
        .node
        .reject(at_b, StreamRejection::Application(1 << 62));
    assert_eq!(
        sim.read_to_end(a, sent, Duration::from_secs(1)),
        Err(ReadEnd::Reset(stream_code::REFUSED))
    );
}

/// A read needs a driver turn only when QUIC has something to send: small
/// reads leave nothing to send; reading an eighth of the stream's receive
/// window or more sends credit (quinn-proto's threshold).
#[test]
fn a_read_asks_for_a_transmit_only_when_quic_has_credit_to_send() {
    use pos_p2p_protocol::node::ReadOutcome;
    let mut sim = Sim::new(61, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(b, a);
    assert!(sim.run_until_connected(a, b));
    let stream = sim.open_stream(b, a).unwrap();
    let window = sim.nodes[a].node.config().limits.stream_receive_window as usize;
    // Less than an eighth of the window: no credit worth a packet.
    let small = window / 16;
    sim.nodes[b].node.write(stream, &payload(1, small)).unwrap();
    let at_a = sim.accept_stream(a, Duration::from_secs(2)).unwrap();
    sim.run_for(Duration::from_millis(50));
    assert!(!sim.nodes[a].node.wants_transmit(), "drained");
    let mut read = 0;
    while let Ok(ReadOutcome::Data(bytes)) = sim.nodes[a].node.read(at_a, usize::MAX) {
        read += bytes.len();
    }
    assert_eq!(read, small);
    assert!(
        !sim.nodes[a].node.wants_transmit(),
        "reading a sixteenth of the window sends nothing"
    );
    // More than an eighth of the window read: credit goes out.
    let large = window / 4;
    let mut sent = 0;
    while sent < large {
        let n = sim.nodes[b]
            .node
            .write(stream, &payload(2, large - sent))
            .unwrap_or(0);
        sent += n;
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_millis(50));
    let mut asked = false;
    while let Ok(ReadOutcome::Data(_)) = sim.nodes[a].node.read(at_a, usize::MAX) {
        asked |= sim.nodes[a].node.wants_transmit();
    }
    assert!(asked, "reading past an eighth of the window sends credit");
}

/// A stream borrowed from its node (`node.stream(id)`) does what the
/// node's methods do for it.
#[test]
fn a_borrowed_stream_view_writes_reads_and_finishes() {
    let mut sim = Sim::new(62, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let stream = sim.open_stream(a, b).unwrap();
    let mut view = sim.nodes[a].node.stream(stream);
    assert_eq!(view.id(), stream);
    assert_eq!(view.write(b"through a view").unwrap(), 14);
    view.finish().unwrap();
    let at_b = sim.accept_stream(b, Duration::from_secs(2)).unwrap();
    assert_eq!(
        sim.read_to_end(b, at_b, Duration::from_secs(2)).unwrap(),
        b"through a view"
    );
    // Released, the stream is gone for the view as for the node.
    sim.nodes[a].node.stream(stream).release();
    let error = sim.nodes[a].node.stream(stream).write(b"x").unwrap_err();
    assert_eq!(Err(error.clone()), sim.nodes[a].node.write(stream, b"x"));
    assert!(
        matches!(error, StreamError::UnknownStream | StreamError::Closed),
        "{error:?}"
    );
}

#[test]
fn a_finished_stream_counts_as_acknowledged_only_once_the_peer_has_every_byte() {
    let (mut sim, a, b) = connected(21, Link::lan());
    let stream = sim.open_stream(a, b).unwrap();
    let status = |sim: &Sim| sim.nodes[a].node.send_status(stream);
    assert_eq!(status(&sim), Ok(SendStatus::Sending));
    // While the link is cut nothing can be acknowledged.
    sim.partition(a, b);
    sim.nodes[a].node.write(stream, b"hello").unwrap();
    sim.nodes[a].node.finish(stream).unwrap();
    sim.run_for(Duration::from_millis(500));
    assert_eq!(status(&sim), Ok(SendStatus::Sending));
    sim.heal(a, b);
    let acknowledged = sim.run_until(Duration::from_secs(5), |sim| {
        status(sim) == Ok(SendStatus::Acknowledged)
    });
    assert!(acknowledged, "{:?}", status(&sim));
    // The peer reads everything and ends its half too: the stream's state
    // is gone, and the answer stays until the application lets go.
    let remote = incoming(&mut sim, b);
    assert_eq!(
        sim.read_to_end(b, remote, Duration::from_secs(5)),
        Ok(b"hello".to_vec())
    );
    sim.nodes[b].node.finish(remote).unwrap();
    let ended = sim.read_to_end(a, stream, Duration::from_secs(5));
    assert_eq!(ended, Ok(Vec::new()));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.nodes[a].node.stream_count(stream.connection()), 0);
    assert_eq!(status(&sim), Ok(SendStatus::Acknowledged));
    sim.nodes[a].node.release(stream);
    assert_eq!(status(&sim), Err(StreamError::UnknownStream));

    // A stopped stream says so, with the peer's code; a reset one too.
    let stopped = sim.open_stream(a, b).unwrap();
    let remote = incoming(&mut sim, b);
    sim.nodes[b].node.stop(remote, 9).unwrap();
    let seen = sim.run_until(Duration::from_secs(5), |sim| {
        sim.nodes[a].node.send_status(stopped) == Ok(SendStatus::Stopped(9))
    });
    assert!(seen, "{:?}", sim.nodes[a].node.send_status(stopped));
    let reset = sim.open_stream(a, b).unwrap();
    sim.nodes[a].node.reset(reset, 0x100).unwrap();
    assert_eq!(sim.nodes[a].node.send_status(reset), Ok(SendStatus::Reset));

    // A stream released before it ended leaves nothing behind when it
    // does: nobody holds it to ask.
    let released = sim.open_stream(a, b).unwrap();
    sim.nodes[a].node.finish(released).unwrap();
    sim.nodes[a].node.release(released);
    // At once, while the stream is still sending: nobody holds it.
    assert_eq!(
        sim.nodes[a].node.send_status(released),
        Err(StreamError::UnknownStream)
    );
    let remote = incoming(&mut sim, b);
    sim.read_to_end(b, remote, Duration::from_secs(5)).unwrap();
    // (a asked b to stop sending when it released the stream.)
    assert_eq!(
        sim.nodes[b].node.finish(remote),
        Err(StreamError::Stopped(0))
    );
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.nodes[a].node.send_status(released),
        Err(StreamError::UnknownStream)
    );
}

#[test]
fn write_chunks_takes_the_bytes_as_they_are_and_says_how_many() {
    let (mut sim, a, b) = connected(22, Link::lan());
    let stream = sim.open_stream(a, b).unwrap();
    let mut chunks = [
        bytes::Bytes::from_static(b"hello, "),
        bytes::Bytes::from_static(b"world"),
    ];
    let taken = sim.nodes[a].node.write_chunks(stream, &mut chunks).unwrap();
    assert_eq!(taken, 12);
    assert!(chunks.iter().all(bytes::Bytes::is_empty), "{chunks:?}");
    sim.nodes[a].node.finish(stream).unwrap();
    let remote = incoming(&mut sim, b);
    assert_eq!(
        sim.read_to_end(b, remote, Duration::from_secs(5)),
        Ok(b"hello, world".to_vec())
    );
}

#[test]
fn reset_answers_ok_after_a_stop_and_closed_when_already_reset() {
    let (mut sim, a, b) = connected(23, Link::lan());
    // The peer stopped it (so it was reset in answer): resetting is fine.
    let stopped = sim.open_stream(a, b).unwrap();
    let remote = incoming(&mut sim, b);
    sim.nodes[b].node.stop(remote, 9).unwrap();
    let seen = sim.run_until(Duration::from_secs(5), |sim| {
        sim.nodes[a].node.send_status(stopped) == Ok(SendStatus::Stopped(9))
    });
    assert!(seen);
    assert_eq!(sim.nodes[a].node.reset(stopped, 0x100), Ok(()));
    // Reset once already: a second reset is refused.
    let reset = sim.open_stream(a, b).unwrap();
    assert_eq!(sim.nodes[a].node.reset(reset, 0x100), Ok(()));
    assert_eq!(
        sim.nodes[a].node.reset(reset, 0x100),
        Err(StreamError::Closed)
    );
}

#[test]
fn discarding_what_arrived_says_whether_the_peer_had_ended() {
    let (mut sim, a, b) = connected(24, Link::lan());
    let stream = sim.open_stream(a, b).unwrap();
    let remote = incoming(&mut sim, b);
    // Data, not the end yet.
    sim.nodes[a].node.write(stream, b"unread").unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.nodes[b].node.discard_received(remote), Ok(false));
    // b is done sending; its receiving half is still open, so the stream
    // stays.
    sim.nodes[b].node.finish(remote).unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.nodes[b].node.stream_count(remote.connection()), 1);
    // The end arrives: discarding reaches it, and with both halves done
    // the stream is gone from the connection, with nothing more read.
    sim.nodes[a].node.write(stream, b"more").unwrap();
    sim.nodes[a].node.finish(stream).unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.nodes[b].node.discard_received(remote), Ok(true));
    assert_eq!(sim.nodes[b].node.stream_count(remote.connection()), 0);
}

#[test]
fn a_half_still_sending_when_its_connection_closes_is_not_connected() {
    let (mut sim, a, b) = connected(25, Link::lan());
    let idb = sim.id(b);
    let stream = sim.open_stream(a, b).unwrap();
    assert_eq!(sim.nodes[a].node.stream_peer(stream), Some(idb));
    // Nothing can be acknowledged while the link is cut; the application
    // closes the connection meanwhile.
    sim.partition(a, b);
    sim.nodes[a]
        .node
        .write(stream, b"never acknowledged")
        .unwrap();
    sim.nodes[a].node.finish(stream).unwrap();
    sim.run_for(Duration::from_millis(100));
    let now = sim.now;
    sim.nodes[a].node.close(now, &idb, "done");
    sim.flush();
    assert_eq!(
        sim.nodes[a].node.send_status(stream),
        Err(StreamError::NotConnected)
    );
}

#[test]
fn a_writer_blocked_by_flow_control_hears_when_it_may_write_again() {
    let (mut sim, a, b) = connected(26, Link::lan());
    let stream = sim.open_stream(a, b).unwrap();
    // Fill the windows: nobody reads on b yet.
    let chunk = vec![0u8; 64 * 1024];
    let mut blocked = false;
    for _ in 0..2000 {
        match sim.nodes[a].node.write(stream, &chunk) {
            Ok(_) => {}
            Err(StreamError::Blocked) => {
                sim.run_for(Duration::from_millis(50));
                if sim.nodes[a].node.write(stream, &chunk) == Err(StreamError::Blocked) {
                    blocked = true;
                    break;
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(blocked, "the windows filled");
    sim.nodes[a].events.clear();
    // b reads: credit flows back, and a hears that its stream is writable.
    let remote = incoming(&mut sim, b);
    let mut read = 0;
    while read < 256 * 1024 {
        match sim.nodes[b].node.read(remote, usize::MAX) {
            Ok(ReadOutcome::Data(bytes)) => read += bytes.len(),
            _ => sim.run_for(Duration::from_millis(1)),
        }
    }
    let writable = sim.take_event(a, Duration::from_secs(5), |e| match e {
        Event::StreamWritable(s) if *s == stream => Some(()),
        _ => None,
    });
    assert_eq!(writable, Some(()), "the writer is told");
    assert!(sim.nodes[a].node.write(stream, &chunk).is_ok());
}

#[test]
fn discarding_a_stream_whose_header_is_held_gives_its_budget_to_the_next() {
    use pos_p2p_tests::sim::SIM_HEADER;
    // b holds few header frames at a time for its application: the
    // smallest budget allowed, for headers of at most one byte.
    let mut sim = Sim::new(27, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let mut config = Sim::config(2);
    config.limits.max_header_len = 1;
    config.limits.header_buffer = 1 + pos_p2p_protocol::codec::varint::MAX_VARINT_LEN;
    let fit = config.limits.header_buffer / SIM_HEADER.len();
    let b = sim.add_node(config);
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b), "nodes connect");
    for _ in 0..=fit {
        sim.open_stream(a, b).unwrap();
    }
    // Announced, their headers held for the application (not read).
    let announced = |sim: &mut Sim, limit| {
        sim.take_event(b, limit, |e| match e {
            Event::IncomingStream { stream, .. } => Some(*stream),
            _ => None,
        })
    };
    let held: Vec<StreamId> = (0..fit)
        .map(|_| announced(&mut sim, Duration::from_secs(1)).expect("announced"))
        .collect();
    // One more waits: the held headers take the budget.
    assert_eq!(announced(&mut sim, Duration::from_millis(500)), None);
    // Throwing one away (header included) lets it in.
    assert_eq!(sim.nodes[b].node.discard_received(held[0]), Ok(false));
    assert!(
        announced(&mut sim, Duration::from_secs(1)).is_some(),
        "the waiting stream arrives"
    );
}
