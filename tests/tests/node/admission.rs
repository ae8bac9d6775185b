//! Admission under load (the rules on `Limits`): which handshakes and
//! connections a full node keeps, so that strangers cannot lock honest
//! peers out; and the rate limit on stateless answers.

use std::net::SocketAddr;
use std::time::Duration;

use pos_p2p_protocol::node::{DisconnectReason, Event};
use pos_p2p_tests::sim::{Link, Sim};

fn disconnect_reason(sim: &mut Sim, node: usize, limit: Duration) -> Option<DisconnectReason> {
    sim.take_event(node, limit, |e| match e {
        Event::Disconnected { reason, .. } | Event::ConnectFailed { reason, .. } => {
            Some(reason.clone())
        }
        _ => None,
    })
}

/// A server that keeps one connection.
fn full_server(sim: &mut Sim) -> usize {
    let mut config = Sim::config(1);
    config.limits.max_connections = 1;
    sim.add_node(config)
}

#[test]
fn an_idle_stranger_gives_way_to_a_newcomer_when_the_node_is_full() {
    let mut sim = Sim::new(40, Link::lan());
    let server = full_server(&mut sim);
    let first = sim.add_node(Sim::config(2));
    let second = sim.add_node(Sim::config(3));
    sim.connect(first, server);
    assert!(sim.run_until_connected(first, server));
    sim.connect(second, server);
    assert!(
        sim.run_until_connected(second, server),
        "the newcomer gets in"
    );
    assert_eq!(
        disconnect_reason(&mut sim, server, Duration::from_secs(1)),
        Some(DisconnectReason::Evicted),
        "the server says why it closed the idle one"
    );
    assert_eq!(
        disconnect_reason(&mut sim, first, Duration::from_secs(1)),
        Some(DisconnectReason::Refused),
        "and the evicted peer learns it"
    );
    assert_eq!(sim.nodes[server].node.stats().connections_evicted, 1);
}

#[test]
fn a_connection_with_an_open_stream_is_kept_and_a_stranger_refused() {
    let mut sim = Sim::new(41, Link::lan());
    let server = full_server(&mut sim);
    let first = sim.add_node(Sim::config(2));
    let second = sim.add_node(Sim::config(3));
    sim.connect(first, server);
    assert!(sim.run_until_connected(first, server));
    // first is busy: a stream of its is open on the server.
    let stream = sim.open_stream(first, server).unwrap();
    sim.nodes[first].node.write(stream, b"working").unwrap();
    assert!(sim.accept_stream(server, Duration::from_secs(1)).is_some());
    sim.connect(second, server);
    assert_eq!(
        disconnect_reason(&mut sim, second, Duration::from_secs(5)),
        Some(DisconnectReason::Refused),
        "a stranger is refused when nobody can give way"
    );
    assert!(sim.nodes[server].node.peer(&sim.id(first)).is_some());
    assert_eq!(sim.nodes[server].node.stats().connections_evicted, 0);
}

#[test]
fn a_protected_peer_is_never_evicted() {
    let mut sim = Sim::new(42, Link::lan());
    let server = full_server(&mut sim);
    let first = sim.add_node(Sim::config(2));
    let second = sim.add_node(Sim::config(3));
    let first_id = sim.id(first);
    sim.nodes[server].node.protect(first_id);
    sim.connect(first, server);
    assert!(sim.run_until_connected(first, server));
    sim.connect(second, server);
    assert_eq!(
        disconnect_reason(&mut sim, second, Duration::from_secs(5)),
        Some(DisconnectReason::Refused)
    );
    assert!(sim.nodes[server].node.peer(&first_id).is_some());
}

#[test]
fn a_protected_newcomer_comes_in_over_the_limit() {
    let mut sim = Sim::new(43, Link::lan());
    let server = full_server(&mut sim);
    let first = sim.add_node(Sim::config(2));
    let second = sim.add_node(Sim::config(3));
    sim.connect(first, server);
    assert!(sim.run_until_connected(first, server));
    let stream = sim.open_stream(first, server).unwrap();
    sim.nodes[first].node.write(stream, b"busy").unwrap();
    assert!(sim.accept_stream(server, Duration::from_secs(1)).is_some());
    let second_id = sim.id(second);
    sim.nodes[server].node.protect(second_id);
    sim.connect(second, server);
    assert!(
        sim.run_until_connected(second, server),
        "a peer the application wants is never refused for lack of room"
    );
    assert!(sim.nodes[server].node.peer(&sim.id(first)).is_some());
    assert_eq!(sim.nodes[server].node.peers().count(), 2);
}

#[test]
fn a_connection_the_node_dialed_is_never_evicted() {
    let mut sim = Sim::new(44, Link::lan());
    let server = full_server(&mut sim);
    let first = sim.add_node(Sim::config(2));
    let second = sim.add_node(Sim::config(3));
    // The server dialed first: the application asked for it.
    sim.connect(server, first);
    assert!(sim.run_until_connected(server, first));
    sim.connect(second, server);
    assert_eq!(
        disconnect_reason(&mut sim, second, Duration::from_secs(5)),
        Some(DisconnectReason::Refused)
    );
    assert!(sim.nodes[server].node.peer(&sim.id(first)).is_some());
}

/// `attacker` starts `dials` handshakes with `server` and goes silent
/// after `round_trips` round trips (0: after its first flight; 1: after
/// answering a Retry): each holds an incoming handshake on the server
/// that never proves an identity.
fn stale_handshakes(sim: &mut Sim, attacker: usize, server: usize, dials: usize, round_trips: u32) {
    let addr = sim.nodes[server].addr;
    for _ in 0..dials {
        let now = sim.now;
        sim.nodes[attacker]
            .node
            .connect(now, addr, None)
            .expect("dial");
    }
    sim.flush();
    sim.run_for(2 * sim.link.latency * round_trips);
    sim.mute(attacker);
    // Let what was sent arrive.
    sim.run_for(sim.link.latency * 2);
}

#[test]
fn under_load_handshakes_from_one_address_are_capped() {
    let mut sim = Sim::new(45, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_incoming_handshakes = 8;
    config.limits.max_handshakes_per_source = 2;
    let server = sim.add_node(config);
    let attacker = sim.add_node(Sim::config(2));
    // Four stale handshakes from one address: below half the slots, no
    // cap applies.
    stale_handshakes(&mut sim, attacker, server, 4, 0);
    assert_eq!(sim.nodes[server].node.connection_count(), 4);
    // Now under load: more from the same address are asked to prove it
    // (the attacker can), then turned away for the address's cap.
    // (A fresh node with a seed of its own: the same seed would make the
    // same connection ids again.)
    let mut fresh = Sim::config(2);
    fresh.rng_seed = [22; 32];
    sim.nodes[attacker].node = pos_p2p_protocol::node::Node::new(fresh, sim.now).unwrap();
    sim.heal_all();
    stale_handshakes(&mut sim, attacker, server, 3, 1);
    let stats = sim.nodes[server].node.stats().clone();
    assert_eq!(sim.nodes[server].node.connection_count(), 4);
    assert_eq!(stats.incoming_deferred, 3);
    assert_eq!(stats.retries_sent, 3);
    // Another address still gets in.
    let honest = sim.add_node(Sim::config(3));
    sim.connect(honest, server);
    assert!(sim.run_until_connected(honest, server));
}

#[test]
fn a_burst_of_honest_dialers_behind_one_address_all_get_in() {
    let mut sim = Sim::new(51, Link::lan());
    let server = sim.add_node(Sim::config(1));
    // Twenty dialers share one IP address: more than half the slots at
    // once, so the last ones must prove their address, may meet the
    // per-address cap and wait for QUIC's retransmission, and get in.
    let peers: Vec<usize> = (0..20u8)
        .map(|i| {
            let addr = SocketAddr::new([192, 0, 2, 1].into(), 1000 + u16::from(i));
            sim.add_node_at(Sim::config(10 + i), addr)
        })
        .collect();
    for &peer in &peers {
        sim.connect(peer, server);
    }
    let all = sim.run_until(Duration::from_secs(10), |sim| {
        peers
            .iter()
            .all(|&p| sim.nodes[server].node.peer(&sim.id(p)).is_some())
    });
    assert!(all);
    let stats = sim.nodes[server].node.stats();
    assert!(
        stats.retries_sent > 0,
        "the burst put the node under load: {stats:?}"
    );
}

#[test]
fn under_load_an_unauthenticated_handshake_gives_way_after_a_short_time() {
    let mut sim = Sim::new(46, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_incoming_handshakes = 4;
    let server = sim.add_node(config);
    let attacker = sim.add_node(Sim::config(2));
    let short = sim.nodes[server]
        .node
        .config()
        .timeouts
        .handshake_under_load;
    assert!(short < sim.nodes[server].node.config().timeouts.handshake);
    // Two stale handshakes: the node is under load.
    stale_handshakes(&mut sim, attacker, server, 2, 0);
    assert_eq!(sim.nodes[server].node.connection_count(), 2);
    // Before the short timeout a newcomer does not dislodge them...
    let honest = sim.add_node(Sim::config(3));
    sim.connect(honest, server);
    assert!(sim.run_until_connected(honest, server));
    assert_eq!(sim.nodes[server].node.stats().handshakes_timed_out, 0);
    // ...after it, the next newcomer does.
    sim.now += short;
    let later = sim.add_node(Sim::config(4));
    sim.connect(later, server);
    assert!(sim.run_until_connected(later, server));
    assert_eq!(sim.nodes[server].node.stats().handshakes_timed_out, 2);
}

#[test]
fn without_load_a_slow_handshake_gets_the_whole_handshake_timeout() {
    let mut sim = Sim::new(52, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let attacker = sim.add_node(Sim::config(2));
    let timeout = sim.nodes[server].node.config().timeouts.handshake;
    stale_handshakes(&mut sim, attacker, server, 1, 0);
    let start = sim.now;
    let gone = sim.run_until(Duration::from_secs(60), |sim| {
        sim.nodes[server].node.connection_count() == 0
            || sim.nodes[server]
                .history
                .iter()
                .any(|e| matches!(e, Event::ConnectFailed { .. }))
    });
    assert!(gone);
    let took = sim.now - start;
    assert!(
        took + Duration::from_millis(5) >= timeout && took <= timeout + Duration::from_millis(5),
        "{took:?}"
    );
}

#[test]
fn under_load_a_dialer_proves_its_address_and_the_oldest_stale_handshake_gives_way() {
    let mut sim = Sim::new(47, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_incoming_handshakes = 2;
    let server = sim.add_node(config);
    let attackers = [sim.add_node(Sim::config(2)), sim.add_node(Sim::config(3))];
    // Two stale handshakes from two addresses fill both slots (the second
    // already had to answer a Retry, which it did before going silent).
    stale_handshakes(&mut sim, attackers[0], server, 1, 0);
    stale_handshakes(&mut sim, attackers[1], server, 1, 1);
    assert_eq!(sim.nodes[server].node.connection_count(), 2);
    let before = sim.nodes[server].node.stats().clone();
    let honest = sim.add_node(Sim::config(4));
    sim.connect(honest, server);
    assert!(
        sim.run_until_connected(honest, server),
        "an honest dialer gets in although every slot was taken"
    );
    let after = sim.nodes[server].node.stats().clone();
    assert!(
        after.retries_sent > before.retries_sent,
        "it had to prove its address"
    );
    assert_eq!(after.handshakes_evicted, 1, "one stale handshake gave way");
}

#[test]
fn under_load_a_spoofed_first_flight_takes_no_slot() {
    let mut sim = Sim::new(48, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_incoming_handshakes = 2;
    let server = sim.add_node(config);
    let stale = sim.add_node(Sim::config(2));
    stale_handshakes(&mut sim, stale, server, 1, 0);
    // A dialer whose answers never come back (as from a spoofed address).
    let spoofer = sim.add_node(Sim::config(3));
    stale_handshakes(&mut sim, spoofer, server, 3, 0);
    let stats = sim.nodes[server].node.stats();
    assert_eq!(stats.retries_sent, 3);
    assert_eq!(
        sim.nodes[server].node.connection_count(),
        1,
        "only the first handshake holds state"
    );
}

#[test]
fn a_node_that_dials_itself_is_refused() {
    let mut sim = Sim::new(49, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let addr = sim.nodes[a].addr;
    let now = sim.now;
    sim.nodes[a].node.connect(now, addr, None).unwrap();
    let reason = disconnect_reason(&mut sim, a, Duration::from_secs(5)).expect("fails");
    assert_eq!(
        reason,
        DisconnectReason::ProtocolViolation(pos_p2p_protocol::node::Violation::ConnectedToItself)
    );
    assert!(sim.nodes[a].node.peer(&sim.id(a)).is_none());
}

#[test]
fn stateless_answers_are_rate_limited() {
    let mut sim = Sim::new(50, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let limit = sim.nodes[server]
        .node
        .config()
        .limits
        .stateless_responses_per_second;
    // Long-header packets of an unknown QUIC version, large enough to be a
    // client's first flight: each asks for a version negotiation packet.
    let mut packet = vec![0u8; 1200];
    packet[0] = 0xc0;
    packet[1..5].copy_from_slice(&0x0a0a_0a0a_u32.to_be_bytes());
    packet[5] = 8;
    packet[14] = 8;
    let victim: SocketAddr = "192.0.2.99:4433".parse().unwrap();
    let sent_before = sim.stats.sent;
    for _ in 0..1000 {
        sim.inject(server, victim, &packet);
    }
    let answered = sim.stats.sent - sent_before;
    assert_eq!(answered, u64::from(limit), "one burst, then nothing");
    let stats = sim.nodes[server].node.stats();
    assert_eq!(
        stats.responses_limited + stats.dropped_early,
        1000 - u64::from(limit)
    );
    assert_eq!(
        stats.dropped_early,
        1000 - u64::from(limit),
        "once the bucket is empty, they are dropped before QUIC builds an answer"
    );
    // Only what could ask for an answer is dropped this early: a short
    // header (an established connection's packet, however large) and a
    // version negotiation packet (version 0, for this node as a dialer)
    // from the same address still reach QUIC.
    let dropped = stats.dropped_early;
    let mut short = pos_p2p_tests::sim::payload(7, 1300);
    short[0] = 0x40;
    sim.inject(server, victim, &short);
    let mut negotiation = packet.clone();
    negotiation[1..5].copy_from_slice(&0u32.to_be_bytes());
    sim.inject(server, victim, &negotiation);
    assert_eq!(sim.nodes[server].node.stats().dropped_early, dropped);
    sim.inject(server, victim, &packet);
    assert_eq!(sim.nodes[server].node.stats().dropped_early, dropped + 1);
    // Answers to another address have a limit of their own: a flood aimed
    // at one (spoofed) address does not silence the node for others.
    let other: SocketAddr = "192.0.2.100:4433".parse().unwrap();
    let sent_before = sim.stats.sent;
    sim.inject(server, other, &packet);
    assert_eq!(sim.stats.sent - sent_before, 1);
    // One second later, the bucket has refilled.
    sim.now += Duration::from_secs(1);
    let sent_before = sim.stats.sent;
    sim.inject(server, victim, &packet);
    assert_eq!(sim.stats.sent - sent_before, 1);
}

/// A 1,200-byte datagram that starts like a QUIC v1 Initial, with a random
/// body: QUIC must derive keys and fail to decrypt it.
fn garbage_initial(seed: u64) -> Vec<u8> {
    let mut data = pos_p2p_tests::sim::payload(seed, 1200);
    data[0] = 0xc0;
    data[1..5].copy_from_slice(&1u32.to_be_bytes());
    data[5] = 8;
    data[14] = 8;
    data[23] = 0;
    data[24] = 0x44;
    data[25] = 0x4c;
    data
}

#[test]
fn first_flights_from_one_address_are_limited_before_decryption() {
    let mut sim = Sim::new(53, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let flooder: SocketAddr = "192.0.2.77:4433".parse().unwrap();
    for i in 0..1000 {
        sim.inject(server, flooder, &garbage_initial(i));
    }
    let stats = sim.nodes[server].node.stats().clone();
    assert!(
        stats.dropped_early >= 850,
        "most never reach QUIC: {stats:?}"
    );
    assert_eq!(sim.nodes[server].node.connection_count(), 0);
    // Another address is not affected; and a flood of Initials from a
    // connected peer's address (a forged source) is limited the same way,
    // while the connection itself (short headers) goes on.
    let honest = sim.add_node(Sim::config(2));
    sim.connect(honest, server);
    assert!(sim.run_until_connected(honest, server));
    let before = sim.nodes[server].node.stats().dropped_early;
    let from = sim.nodes[honest].addr;
    for i in 0..1000 {
        sim.inject(server, from, &garbage_initial(i));
    }
    assert!(sim.nodes[server].node.stats().dropped_early - before >= 850);
    let stream = sim.open_stream(honest, server).unwrap();
    sim.write_all(honest, stream, b"still here").unwrap();
    assert!(sim.accept_stream(server, Duration::from_secs(1)).is_some());
}

#[test]
fn under_load_a_peer_that_proves_an_identity_and_sends_no_hello_gives_way_soon() {
    let mut sim = Sim::new(54, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_incoming_handshakes = 2;
    let server = sim.add_node(config);
    let addr = sim.nodes[server].addr;
    // A dialer completes TLS with a made-up identity and never sends its
    // Hello: the node is under load (one of two slots taken).
    let mut raw = pos_p2p_tests::raw::RawDialer::new("192.0.2.50:4433".parse().unwrap());
    let now = sim.now;
    raw.connect(now, addr, 7);
    sim.drive_raw(&mut raw, Duration::from_millis(50));
    assert_eq!(raw.connected(), 1, "TLS completed");
    assert_eq!(sim.nodes[server].node.connection_count(), 1);
    // Past the short timeout under load, the next newcomer closes it.
    let short = sim.nodes[server]
        .node
        .config()
        .timeouts
        .handshake_under_load;
    sim.drive_raw(&mut raw, short);
    let honest = sim.add_node(Sim::config(3));
    sim.connect(honest, server);
    assert!(sim.run_until_connected(honest, server));
    assert_eq!(sim.nodes[server].node.stats().handshakes_timed_out, 1);
}

#[test]
fn before_its_hello_a_peer_can_leave_only_a_little_unread_data() {
    let mut sim = Sim::new(55, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let addr = sim.nodes[server].addr;
    let mut raw = pos_p2p_tests::raw::RawDialer::new("192.0.2.51:4433".parse().unwrap());
    let now = sim.now;
    raw.connect(now, addr, 8);
    sim.drive_raw(&mut raw, Duration::from_millis(50));
    assert_eq!(raw.connected(), 1);
    // Authenticated, no Hello: it may write only the small window before
    // the exchange is done, not the connection's whole 16 MiB.
    let taken = raw.write_streams(&[0u8; 64 * 1024]);
    let window = sim.nodes[server]
        .node
        .config()
        .limits
        .connection_receive_window as usize;
    assert!(taken <= 256 * 1024, "{taken} bytes taken");
    assert!(taken < window);
}

#[test]
fn one_address_gets_a_share_of_the_room_for_strangers() {
    let mut sim = Sim::new(56, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_connections_per_source = 2;
    let server = sim.add_node(config);
    let peers: Vec<usize> = (0..3u8)
        .map(|i| {
            let addr = SocketAddr::new([192, 0, 2, 60].into(), 2000 + u16::from(i));
            sim.add_node_at(Sim::config(20 + i), addr)
        })
        .collect();
    for &peer in &peers[..2] {
        sim.connect(peer, server);
        assert!(sim.run_until_connected(peer, server));
    }
    sim.connect(peers[2], server);
    assert_eq!(
        disconnect_reason(&mut sim, peers[2], Duration::from_secs(5)),
        Some(DisconnectReason::Refused)
    );
    // A peer the application wants is not held to the share.
    let wanted = sim.id(peers[2]);
    sim.nodes[server].node.protect(wanted);
    sim.connect(peers[2], server);
    assert!(sim.run_until_connected(peers[2], server));
}

#[test]
fn headers_that_never_complete_do_not_keep_a_connection_busy() {
    let mut sim = Sim::new(57, Link::lan());
    let server = full_server(&mut sim);
    let first = sim.add_node(Sim::config(2));
    let second = sim.add_node(Sim::config(3));
    sim.connect(first, server);
    assert!(sim.run_until_connected(first, server));
    // first keeps a header forever incomplete on the server (renewed before
    // its deadline): the application never sees a stream from it.
    let (now, peer) = (sim.now, sim.id(server));
    let stream = sim.nodes[first].node.open_stream(now, &peer).unwrap();
    sim.nodes[first].node.write(stream, &[100, 1, 2]).unwrap();
    sim.run_for(Duration::from_millis(100));
    sim.connect(second, server);
    assert!(
        sim.run_until_connected(second, server),
        "the newcomer gets in: first was idle for the application"
    );
    assert_eq!(sim.nodes[server].node.stats().connections_evicted, 1);
}

#[test]
fn a_dial_is_refused_only_at_the_memory_ceiling() {
    let mut sim = Sim::new(58, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_connections = 1;
    config.limits.max_incoming_handshakes = 1;
    let node = sim.add_node(config);
    // One established connection and one incoming handshake: every limit
    // is reached, yet a dial the application asks for goes out.
    let first = sim.add_node(Sim::config(2));
    sim.connect(first, node);
    assert!(sim.run_until_connected(first, node));
    let attacker = sim.add_node(Sim::config(3));
    stale_handshakes(&mut sim, attacker, node, 1, 0);
    let target = sim.add_node(Sim::config(4));
    sim.connect(node, target);
    assert!(sim.run_until_connected(node, target));
    // The ceiling: twice the limits together, closing connections included.
    let ceiling = 2 * (1 + 1);
    for n in 0..ceiling {
        let addr = SocketAddr::new([192, 0, 2, 70].into(), 3000 + n as u16);
        let now = sim.now;
        let _ = sim.nodes[node].node.connect(now, addr, None);
    }
    let now = sim.now;
    assert_eq!(
        sim.nodes[node]
            .node
            .connect(now, "192.0.2.71:1".parse().unwrap(), None),
        Err(pos_p2p_protocol::node::ConnectError::TooManyConnections)
    );
}

/// `handshakes_timed_out` counts incoming handshakes that ran out of time
/// (what a listener holds for strangers), not this node's own dials.
#[test]
fn handshakes_that_time_out_are_counted_where_they_were_incoming() {
    let mut sim = Sim::new(63, Link::lan());
    let server = sim.add_node(Sim::config(1));
    let dialer = sim.add_node(Sim::config(2));
    stale_handshakes(&mut sim, dialer, server, 3, 0);
    let handshake = sim.nodes[server].node.config().timeouts.handshake;
    sim.run_for(handshake * 2);
    assert_eq!(sim.nodes[server].node.stats().connections_established, 0);
    assert_eq!(sim.nodes[server].node.stats().handshakes_timed_out, 3);
    assert_eq!(sim.nodes[dialer].node.stats().handshakes_timed_out, 0);
}
