//! Streams abused by an authenticated peer: the flood findings A (a
//! stopped stream never reset wedges the connection), B (header memory),
//! and G (headers that never finish), each in virtual time.

use std::time::Duration;

use pos_p2p_protocol::node::{Event, ReadOutcome, StreamError, StreamId, stream_code};
use pos_p2p_tests::sim::{Link, Sim};

fn connected(seed: u64, server_config: pos_p2p_protocol::node::NodeConfig) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed, Link::lan());
    let server = sim.add_node(server_config);
    let client = sim.add_node(Sim::config(2));
    sim.connect(client, server);
    assert!(sim.run_until_connected(client, server));
    (sim, client, server)
}

/// Read `stream` on `node` until it is reset; the code.
fn reset_code(sim: &mut Sim, node: usize, stream: StreamId, limit: Duration) -> Option<u64> {
    let mut code = None;
    sim.run_until(limit, |sim| {
        loop {
            match sim.nodes[node].node.read(stream, usize::MAX) {
                Ok(ReadOutcome::Data(_)) => continue,
                Ok(ReadOutcome::Reset(c)) => code = Some(c),
                _ => {}
            }
            break;
        }
        code.is_some()
    });
    code
}

#[test]
fn a_stream_stopped_while_its_sender_writes_is_reset_so_its_credit_comes_back() {
    // The receiver has room for 16 streams at once; 200 streams are each
    // refused by the receiving application (dropped after the header, as
    // an unknown operation is) while the sender is still writing.
    let mut config = Sim::config(1);
    config.limits.max_streams_per_connection = 16;
    let (mut sim, client, server) = connected(60, config);
    let chunk = vec![7u8; 4096];
    for i in 0..200 {
        let stream = sim.open_stream(client, server);
        let stream = match stream {
            Ok(stream) => stream,
            Err(StreamError::StreamsExhausted) => {
                // Credit comes back once the receiver has seen the resets.
                let ok = sim.run_until(Duration::from_secs(1), |sim| {
                    sim.open_stream(client, server).is_ok()
                });
                panic!("stream {i}: no stream credit came back (retried: {ok})");
            }
            Err(e) => panic!("stream {i}: {e}"),
        };
        sim.nodes[client].node.write(stream, &chunk).unwrap();
        let remote = sim
            .accept_stream(server, Duration::from_secs(1))
            .expect("the server gets the stream");
        // The receiving application rejects it: stop and drop.
        sim.nodes[server]
            .node
            .stop(remote, stream_code::UNKNOWN_OPERATION)
            .unwrap();
        sim.nodes[server].node.release(remote);
        // The sender keeps writing until it hears of the stop, and never
        // finishes or resets the stream itself.
        let stopped = sim.run_until(Duration::from_secs(1), |sim| {
            matches!(
                sim.nodes[client].node.write(stream, &chunk),
                Err(StreamError::Stopped(stream_code::UNKNOWN_OPERATION))
            )
        });
        assert!(stopped, "stream {i}: the sender sees the receiver's code");
    }
    assert!(sim.nodes[client].node.stats().streams_reset_on_stop >= 200);
    assert!(sim.nodes[client].node.peer(&sim.id(server)).is_some());
}

#[test]
fn a_dropped_stream_whose_finish_fails_still_ends() {
    // The other order: the sender's application drops its stream (release)
    // after the stop arrived, when finishing fails with `Stopped`.
    let mut config = Sim::config(1);
    config.limits.max_streams_per_connection = 4;
    let (mut sim, client, server) = connected(61, config);
    for _ in 0..50 {
        let stream = sim.open_stream(client, server).expect("credit came back");
        sim.nodes[client].node.write(stream, &[1u8; 1000]).unwrap();
        let remote = sim.accept_stream(server, Duration::from_secs(1)).unwrap();
        sim.nodes[server].node.release(remote);
        sim.run_for(Duration::from_millis(10));
        assert_eq!(
            sim.nodes[client].node.finish(stream),
            Err(StreamError::Stopped(stream_code::CLOSED))
        );
        sim.nodes[client].node.release(stream);
        sim.run_for(Duration::from_millis(10));
    }
}

#[test]
fn a_header_larger_than_the_limit_is_refused_with_its_code() {
    let (mut sim, client, server) = connected(62, Sim::config(1));
    let max = sim.nodes[server].node.config().limits.max_header_len;
    let (now, peer) = (sim.now, sim.id(server));
    let stream = sim.nodes[client].node.open_stream(now, &peer).unwrap();
    // A prefix announcing one byte more than allowed: 65,537 as a varint.
    let mut prefix = Vec::new();
    let mut len = max as u64 + 1;
    while len >= 0x80 {
        prefix.push((len as u8) | 0x80);
        len >>= 7;
    }
    prefix.push(len as u8);
    sim.nodes[client].node.write(stream, &prefix).unwrap();
    assert_eq!(
        reset_code(&mut sim, client, stream, Duration::from_secs(1)),
        Some(stream_code::HEADER_TOO_LARGE)
    );
    assert_eq!(sim.nodes[server].node.stats().headers_too_large, 1);
    assert!(
        !sim.nodes[server]
            .history
            .iter()
            .any(|e| matches!(e, Event::IncomingStream { .. })),
        "the application never hears of it"
    );
}

#[test]
fn malformed_and_cut_headers_are_refused_with_their_code() {
    let (mut sim, client, server) = connected(63, Sim::config(1));
    let peer = sim.id(server);
    // A non-minimal length prefix; a stream that ends inside its header;
    // and an empty stream.
    for bytes in [&[0x85, 0x00][..], &[5, 1, 2][..], &[][..]] {
        let now = sim.now;
        let stream = sim.nodes[client].node.open_stream(now, &peer).unwrap();
        sim.nodes[client].node.write(stream, bytes).ok();
        sim.nodes[client].node.finish(stream).unwrap();
        assert_eq!(
            reset_code(&mut sim, client, stream, Duration::from_secs(1)),
            Some(stream_code::MALFORMED_HEADER),
            "{bytes:?}"
        );
    }
    assert_eq!(sim.nodes[server].node.stats().headers_malformed, 3);
}

#[test]
fn header_memory_stays_within_the_per_connection_budget() {
    let (mut sim, client, server) = connected(64, Sim::config(1));
    let limits = sim.nodes[server].node.config().limits.clone();
    let peer = sim.id(server);
    // 300 streams announce the largest header and send all but its last
    // byte, never finishing: 19 MiB announced, almost all of it sent.
    let body = vec![9u8; limits.max_header_len - 1];
    let mut prefix = Vec::new();
    let mut len = limits.max_header_len as u64;
    while len >= 0x80 {
        prefix.push((len as u8) | 0x80);
        len >>= 7;
    }
    prefix.push(len as u8);
    let mut streams = Vec::new();
    for _ in 0..300 {
        let now = sim.now;
        let Ok(stream) = sim.nodes[client].node.open_stream(now, &peer) else {
            break;
        };
        // Once the connection's receive window is full, the rest of the
        // streams get nothing through.
        if sim.nodes[client].node.write(stream, &prefix).is_err() {
            streams.push(stream);
            continue;
        }
        let mut written = 0;
        while written < body.len() {
            match sim.nodes[client].node.write(stream, &body[written..]) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        streams.push(stream);
        sim.run_for(Duration::from_millis(5));
        let conn = sim.nodes[server]
            .node
            .peer(&sim.id(client))
            .unwrap()
            .connection;
        assert!(sim.nodes[server].node.header_bytes(conn) <= limits.header_buffer);
    }
    assert!(streams.len() >= 100, "opened {}", streams.len());
    let conn = sim.nodes[server]
        .node
        .peer(&sim.id(client))
        .unwrap()
        .connection;
    let held = sim.nodes[server].node.header_bytes(conn);
    assert!(held > 0 && held <= limits.header_buffer, "{held}");
    // Each body that gets room must arrive within the header deadline, so
    // in turn every one of them is refused, the budget comes back, and the
    // connection still works.
    let drained = sim.run_until(Duration::from_secs(600), |sim| {
        sim.nodes[server].node.header_bytes(conn) == 0
    });
    assert!(drained);
    assert!(sim.nodes[server].node.stats().headers_timed_out > 0);
    let stream = sim.open_stream(client, server).unwrap();
    sim.write_all(client, stream, b"still fine").unwrap();
    let remote = sim.accept_stream(server, Duration::from_secs(1)).unwrap();
    assert_eq!(
        sim.read_to_end(server, remote, Duration::from_secs(1))
            .unwrap(),
        b"still fine"
    );
}

#[test]
fn headers_beyond_the_budget_wait_and_all_arrive_as_the_application_reads() {
    let (mut sim, client, server) = connected(65, Sim::config(1));
    let limits = sim.nodes[server].node.config().limits.clone();
    // Complete headers of 60 KiB each: about four fit in the budget at once.
    let mut frame = vec![0x80 | (61_440 & 0x7f) as u8, (61_440 >> 7) as u8 & 0x7f];
    frame.push(((61_440 >> 14) & 0x7f) as u8);
    while frame.last() == Some(&0) {
        frame.pop();
    }
    let mut check = frame.clone();
    check.extend(std::iter::repeat_n(3u8, 61_440));
    let frame = check;
    let count = 12;
    for _ in 0..count {
        let (now, peer) = (sim.now, sim.id(server));
        let stream = sim.nodes[client].node.open_stream(now, &peer).unwrap();
        sim.write_all(client, stream, &frame).unwrap();
    }
    let conn = sim.nodes[server]
        .node
        .peer(&sim.id(client))
        .unwrap()
        .connection;
    let mut read = 0;
    while read < count {
        let stream = sim
            .take_event(server, Duration::from_secs(2), |e| match e {
                Event::IncomingStream { stream, .. } => Some(*stream),
                _ => None,
            })
            .unwrap_or_else(|| panic!("stream {read} of {count} announced"));
        assert!(sim.nodes[server].node.header_bytes(conn) <= limits.header_buffer);
        let got = sim
            .read_to_end(server, stream, Duration::from_secs(2))
            .unwrap();
        assert!(got == frame, "the application reads the whole frame");
        read += 1;
    }
    assert_eq!(sim.nodes[server].node.stats().headers_timed_out, 0);
}

#[test]
fn a_header_that_trickles_in_is_refused_at_its_deadline() {
    let (mut sim, client, server) = connected(66, Sim::config(1));
    let deadline = sim.nodes[server].node.config().timeouts.header;
    let (now, peer) = (sim.now, sim.id(server));
    let stream = sim.nodes[client].node.open_stream(now, &peer).unwrap();
    // One byte a second of a 100-byte header.
    let start = sim.now;
    sim.nodes[client].node.write(stream, &[100]).unwrap();
    let mut code = None;
    for _ in 0..20 {
        let _ = sim.nodes[client].node.write(stream, &[1]);
        sim.run_until(Duration::from_secs(1), |sim| {
            if let Ok(ReadOutcome::Reset(c)) = sim.nodes[client].node.read(stream, 10) {
                code = Some(c);
            }
            code.is_some()
        });
        if code.is_some() {
            break;
        }
    }
    assert_eq!(code, Some(stream_code::HEADER_TIMEOUT));
    let took = sim.now - start;
    assert!(
        took >= deadline && took <= deadline + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(sim.nodes[server].node.stats().headers_timed_out, 1);
}

#[test]
fn a_stop_that_crosses_a_finish_leaves_no_stream_state_behind() {
    let (mut sim, client, server) = connected(67, Sim::config(1));
    let on_client = sim.nodes[client]
        .node
        .peer(&sim.id(server))
        .unwrap()
        .connection;
    let on_server = sim.nodes[server]
        .node
        .peer(&sim.id(client))
        .unwrap()
        .connection;
    for _ in 0..20 {
        let stream = sim.open_stream(client, server).unwrap();
        let remote = sim.accept_stream(server, Duration::from_secs(1)).unwrap();
        // The client sends its last bytes, finishes and lets go of the
        // stream; at the same moment the server stops reading and finishes
        // its side: its STOP_SENDING overtakes the acknowledgement of the
        // client's FIN, so the client's half is reset, never acknowledged.
        sim.nodes[client].node.write(stream, b"last").unwrap();
        sim.nodes[client].node.finish(stream).unwrap();
        sim.nodes[client].node.release(stream);
        sim.nodes[server].node.stop(remote, 0x100).unwrap();
        sim.nodes[server].node.finish(remote).unwrap();
        sim.nodes[server].node.release(remote);
        sim.run_for(Duration::from_millis(100));
    }
    assert!(sim.nodes[client].node.stats().streams_reset_on_stop > 0);
    assert_eq!(sim.nodes[client].node.stream_count(on_client), 0);
    assert_eq!(sim.nodes[server].node.stream_count(on_server), 0);
}
