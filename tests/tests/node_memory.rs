//! What an authenticated peer's stream abuse costs in memory, counted byte
//! by byte: the bound of `Limits` (the connection's receive window plus its
//! header buffer) holds, measured for the two nodes of the in-memory network
//! in one process (the attacker's send window is kept small, so that the
//! bytes counted are essentially the victim's).
//!
//! This binary holds a single test so that no other test allocates while it
//! measures: the header attack against an honest peer's unread data, and
//! stale handshakes over time.

use std::alloc::System;
use std::time::Duration;

use cap::Cap;
use pos_p2p_tests::sim::{Link, Sim};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Two connected nodes; the attacker keeps little unsent data of its own,
/// so that what is measured is the victim's.
fn pair() -> (Sim, usize, usize) {
    let mut sim = Sim::new(70, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let mut attacker = Sim::config(2);
    attacker.limits.send_window = 256 * 1024;
    let client = sim.add_node(attacker);
    sim.connect(client, server);
    assert!(sim.run_until_connected(client, server));
    sim.run_for(Duration::from_millis(100));
    (sim, server, client)
}

/// Open `streams` streams from the client, one every 2 ms, and write
/// `frame` on each, retrying what flow control refused until nothing more
/// goes through; the peak of live bytes (from now) meanwhile.
fn peak_while_writing(
    sim: &mut Sim,
    server: usize,
    client: usize,
    streams: usize,
    frame: &[u8],
) -> usize {
    let limits = sim.nodes[server].node.config().limits.clone();
    let conn = sim.nodes[server]
        .node
        .peer(&sim.id(client))
        .unwrap()
        .connection;
    let before = ALLOCATOR.allocated();
    let mut peak = 0;
    let peer = sim.id(server);
    let mut open: Vec<(pos_p2p_protocol::node::StreamId, usize)> = Vec::new();
    let mut idle_passes = 0;
    while idle_passes < 50 {
        if open.len() < streams {
            let now = sim.now;
            let stream = sim.nodes[client]
                .node
                .open_stream(now, &peer)
                .expect("credit");
            open.push((stream, 0));
        }
        let mut progress = false;
        for (stream, written) in &mut open {
            while *written < frame.len() {
                match sim.nodes[client].node.write(*stream, &frame[*written..]) {
                    Ok(n) if n > 0 => {
                        *written += n;
                        progress = true;
                    }
                    _ => break,
                }
            }
        }
        sim.run_for(Duration::from_millis(2));
        assert!(sim.nodes[server].node.header_bytes(conn) <= limits.header_buffer);
        peak = peak.max(ALLOCATOR.allocated().saturating_sub(before));
        idle_passes = if progress || open.len() < streams {
            0
        } else {
            idle_passes + 1
        };
    }
    peak
}

/// One test, so that nothing else allocates while it measures.
#[test]
fn abuse_costs_bounded_memory() {
    header_abuse_costs_no_more_than_unread_data_and_the_header_buffer();
    stale_handshakes_cost_bounded_memory_over_time();
}

fn header_abuse_costs_no_more_than_unread_data_and_the_header_buffer() {
    // The reference: an honest peer fills the connection's receive window
    // with data the application has not read yet (a valid header, then
    // data, on 16 streams of 1.25 MB windows).
    let (mut sim, server, client) = pair();
    let limits = sim.nodes[server].node.config().limits.clone();
    let mut honest = pos_p2p_tests::sim::SIM_HEADER.to_vec();
    honest.extend(std::iter::repeat_n(
        7u8,
        limits.stream_receive_window as usize,
    ));
    let reference = peak_while_writing(&mut sim, server, client, 16, &honest);
    drop(sim);

    // The attack: 1,024 streams announce the largest header and send all
    // but its last byte, never finishing: 64 MiB announced, as much as flow
    // control lets through sent. (The node refuses them at their header
    // deadline; the attacker could go on for ever, its credit comes back.)
    let (mut sim, server, client) = pair();
    let mut frame = vec![0x80, 0x80, 0x04];
    frame.extend(std::iter::repeat_n(9u8, limits.max_header_len - 1));
    let attack = peak_while_writing(&mut sim, server, client, 1024, &frame);

    eprintln!(
        "peak live bytes: {} KiB for an honest peer's unread data, {} KiB for the header attack \
         (receive window {} KiB, header buffer {} KiB)",
        reference / 1024,
        attack / 1024,
        limits.connection_receive_window / 1024,
        limits.header_buffer / 1024,
    );
    // What QUIC itself holds for a full receive window, plus the header
    // buffer, plus a little for the attack's 1,024 streams' state.
    let bound = reference + limits.header_buffer + 1024 * 1024;
    assert!(attack <= bound, "attack peak {attack} bytes, bound {bound}");
    // And the reference is what the window says, within QUIC's bookkeeping.
    let window = limits.connection_receive_window as usize;
    assert!(
        reference <= window + window / 2,
        "reference {reference} bytes"
    );
}

fn stale_handshakes_cost_bounded_memory_over_time() {
    let mut sim = Sim::new(71, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let addr = sim.nodes[server].addr;
    sim.run_for(Duration::from_millis(10));
    let before = ALLOCATOR.allocated();
    let mut samples = Vec::new();
    // 30 first flights a second for 20 s, each from a dialer at an address
    // of its own that never answers (it is gone once its flight is sent).
    let mut buf = Vec::new();
    for second in 0..20u32 {
        for i in 0..30u32 {
            let now = sim.now;
            // (A new dialer node each time, dropped once its first flight
            // is out.)
            let mut config = Sim::config(100);
            config.rng_seed[..4].copy_from_slice(&(second * 30 + i).to_be_bytes());
            let mut dialer = pos_p2p_protocol::node::Node::new(config, now).unwrap();
            dialer.connect(now, addr, None).unwrap();
            let transmit = dialer.poll_transmit(now, 1, &mut buf).unwrap();
            let n = second * 30 + i;
            let from = std::net::SocketAddr::from(([10, 9, (n >> 8) as u8, n as u8], 4433));
            sim.inject(server, from, &buf[..transmit.size]);
            drop(dialer);
            // What the server sends the vanished dialers is not its memory.
            sim.outside.clear();
            sim.run_for(Duration::from_millis(33));
        }
        samples.push(ALLOCATOR.allocated().saturating_sub(before) / 1024);
    }
    eprintln!("live KiB after each second: {samples:?}");
    let stats = sim.nodes[server].node.stats();
    assert!(stats.retries_sent > 0, "the node was under load: {stats:?}");
    // Bounded: a few MiB for the handshakes in progress and closing.
    let max = samples.iter().max().copied().unwrap_or(0);
    assert!(max <= 8 * 1024, "{max} KiB");
    // And no drift: the second ten seconds cost what the first ten did
    // (the simulator's event history grows a little).
    let first = samples[..10].iter().max().copied().unwrap_or(0);
    let second = samples[10..].iter().max().copied().unwrap_or(0);
    assert!(second <= first + 512, "{first} KiB, then {second} KiB");
}
