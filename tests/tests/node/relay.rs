//! Relayed paths (docs/PROTOCOL.md §10): nodes that cannot reach each other
//! connect through a relay over simulated TCP, with identity-pinned QUIC
//! end to end.

use std::net::SocketAddr;
use std::time::Duration;

use pos_p2p_protocol::Identity;
use pos_p2p_protocol::node::{
    Event, MAX_RELAYED_PATHS, MAX_WAITING_DATAGRAMS, PathKind, RELAY_PING_INTERVAL,
    RELAY_QUEUE_BYTES, RELAY_TIMEOUT, RelayAddr, RelayId, RelayStatus,
};
use pos_p2p_protocol::relay::RelayError;
use pos_p2p_tests::sim::{Link, Sim, payload};

fn relay_identity() -> Identity {
    Identity::from_bytes(&[0xee; 32])
}

fn relay_addr() -> SocketAddr {
    "192.0.2.100:3340".parse().unwrap()
}

/// Two nodes that cannot reach each other directly, both using one relay
/// (connected to it).
fn behind_relay(seed: u64) -> (Sim, usize, usize, RelayId) {
    let mut sim = Sim::new(seed, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.partition(a, b);
    sim.add_relay(&relay_identity(), relay_addr());
    let relay = RelayAddr {
        identity: relay_identity().to_remote_identity(),
        addr: relay_addr(),
    };
    let mut id = None;
    for node in [a, b] {
        let now = sim.now;
        id = Some(sim.nodes[node].node.add_relay(now, relay.clone()).unwrap());
        let observed = sim.take_event(node, Duration::from_secs(5), |e| match e {
            Event::RelayConnected { observed, .. } => Some(*observed),
            _ => None,
        });
        assert_eq!(
            observed,
            Some(sim.nodes[node].addr),
            "the relay reports where the node connects from"
        );
    }
    (sim, a, b, id.unwrap())
}

/// `from` dials `to` through the relay.
fn dial_relayed(sim: &mut Sim, from: usize, to: usize, relay: RelayId) {
    let peer = sim.id(to);
    let now = sim.now;
    let node = &mut sim.nodes[from].node;
    let path = node.relay_path(relay, peer).expect("a relayed path");
    node.dial(now, &[path], Some(peer)).expect("dial");
}

#[test]
fn nodes_that_cannot_reach_each_other_connect_through_a_relay() {
    let (mut sim, a, b, relay) = behind_relay(1);
    dial_relayed(&mut sim, a, b, relay);
    assert!(sim.run_until_connected(a, b), "connected through the relay");
    for (node, peer) in [(a, b), (b, a)] {
        let peer = sim.id(peer);
        let stats = sim.nodes[node].node.peer_stats(&peer).unwrap();
        assert_eq!(stats.path, PathKind::Relayed(relay), "node {node}");
    }
    // Data both ways, through the relay only (the direct link is cut).
    let (ab, ba) = (payload(1, 256 << 10), payload(2, 256 << 10));
    let stream = sim.open_stream(a, b).unwrap();
    sim.write_all(a, stream, &ab).unwrap();
    let remote = sim.accept_stream(b, Duration::from_secs(30)).unwrap();
    let received = sim.read_to_end(b, remote, Duration::from_secs(60)).unwrap();
    assert!(received == ab, "a -> b through the relay");
    sim.write_all(b, remote, &ba).unwrap();
    let replied = sim.read_to_end(a, stream, Duration::from_secs(60)).unwrap();
    assert!(replied == ba, "b -> a through the relay");
    let stats = sim.relays[0].endpoint.stats();
    assert!(stats.forwarded > 2 * 256 * 1024 / 1500, "{stats:?}");
    assert!(sim.nodes[a].node.stats().relayed_sent > 0);
    assert!(sim.nodes[b].node.stats().relayed_received > 0);
}

#[test]
fn a_relay_that_is_not_the_pinned_one_is_refused() {
    let mut sim = Sim::new(2, Link::lan());
    let a = sim.add_node(Sim::config(1));
    // The relay at that address has another identity than the node pins.
    sim.add_relay(&Identity::from_bytes(&[0xdd; 32]), relay_addr());
    let now = sim.now;
    let relay = sim.nodes[a]
        .node
        .add_relay(
            now,
            RelayAddr {
                identity: relay_identity().to_remote_identity(),
                addr: relay_addr(),
            },
        )
        .unwrap();
    sim.run_for(Duration::from_millis(500));
    assert!(
        !sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::RelayConnected { .. })),
        "an impostor relay is not used"
    );
    let status = sim.nodes[a].node.relays().next().map(|(id, _, s)| (id, s));
    assert!(
        matches!(
            &status,
            Some((id, RelayStatus::Waiting { error: Some(RelayError::Tls(_)), .. })) if *id == relay
        ),
        "{status:?}"
    );
    assert_eq!(sim.relays[0].endpoint.stats().accepted, 0);
}

#[test]
fn a_relay_restart_loses_only_the_path_for_a_moment() {
    let (mut sim, a, b, relay) = behind_relay(3);
    dial_relayed(&mut sim, a, b, relay);
    assert!(sim.run_until_connected(a, b));
    sim.restart_relay(0, &relay_identity());
    // Both nodes notice and connect again.
    for node in [a, b] {
        let gone = sim.take_event(node, Duration::from_secs(5), |e| match e {
            Event::RelayDisconnected { error, .. } => Some(error.clone()),
            _ => None,
        });
        assert!(gone.is_some(), "node {node} saw the relay go");
        let back = sim.take_event(node, Duration::from_secs(10), |e| {
            matches!(e, Event::RelayConnected { .. }).then_some(())
        });
        assert!(back.is_some(), "node {node} reconnected to the relay");
    }
    // The QUIC connection survived: a stream still goes through.
    let data = payload(3, 64 << 10);
    let stream = sim.open_stream(a, b).unwrap();
    sim.write_all(a, stream, &data).unwrap();
    let remote = sim.accept_stream(b, Duration::from_secs(30)).unwrap();
    let received = sim.read_to_end(b, remote, Duration::from_secs(60)).unwrap();
    assert!(received == data);
    assert!(
        !sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. })),
        "the peers stayed connected"
    );
}

#[test]
fn a_node_whose_relay_is_down_still_works_directly() {
    let mut sim = Sim::new(4, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    // No relay runs at that address.
    let now = sim.now;
    sim.nodes[a]
        .node
        .add_relay(
            now,
            RelayAddr {
                identity: relay_identity().to_remote_identity(),
                addr: relay_addr(),
            },
        )
        .unwrap();
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let stats = sim.nodes[a].node.peer_stats(&sim.id(b)).unwrap();
    assert_eq!(stats.path, PathKind::Direct(sim.nodes[b].addr));
    // It keeps trying, backing off: a few attempts in a minute, not
    // hundreds.
    sim.run_for(Duration::from_secs(60));
    let status = sim.nodes[a].node.relays().next().unwrap().2;
    assert!(
        matches!(
            status,
            RelayStatus::Waiting {
                error: Some(RelayError::Unreachable(_)),
                ..
            }
        ),
        "{status:?}"
    );
    assert!(sim.nodes[a].node.peer(&sim.id(b)).is_some());
}

#[test]
fn dialing_through_a_relay_pins_the_peer() {
    let (mut sim, a, b, relay) = behind_relay(5);
    // a asks the relay for node 3's identity but b is... not it: the
    // relay forwards to whoever holds the identity, so only b's identity
    // reaches b. Dialing an identity nobody holds fails cleanly.
    let nobody = Identity::from_bytes(&[9; 32]).to_remote_identity();
    let now = sim.now;
    let path = sim.nodes[a].node.relay_path(relay, nobody).unwrap();
    let dial = sim.nodes[a].node.dial(now, &[path], Some(nobody)).unwrap();
    let result = sim.take_event(a, Duration::from_secs(30), |e| match e {
        Event::DialFinished { dial: d, result } if *d == dial => Some(result.clone()),
        _ => None,
    });
    assert!(matches!(result, Some(Err(_))), "{result:?}");
    assert!(sim.nodes[b].node.peers().next().is_none());
}

#[test]
fn a_relay_that_misnames_the_sender_is_not_believed() {
    let (mut sim, a, b, relay) = behind_relay(6);
    // A third node, also using the relay: the relay will claim that what
    // c sends comes from a.
    let c = sim.add_node(Sim::config(3));
    sim.partition(a, c);
    sim.partition(b, c);
    let now = sim.now;
    let addr = RelayAddr {
        identity: relay_identity().to_remote_identity(),
        addr: relay_addr(),
    };
    sim.nodes[c].node.add_relay(now, addr).unwrap();
    assert!(
        sim.take_event(c, Duration::from_secs(5), |e| {
            matches!(e, Event::RelayConnected { .. }).then_some(())
        })
        .is_some()
    );
    let (ida, idc) = (sim.id(a), sim.id(c));
    sim.relays[0].endpoint.misname(idc, ida);
    dial_relayed(&mut sim, c, b, relay);
    let refused = sim.take_event(b, Duration::from_secs(10), |e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(
            refused,
            Some(pos_p2p_protocol::node::DisconnectReason::IdentityMismatch { expected, actual })
                if expected == ida && actual == idc
        ),
        "{refused:?}"
    );
    assert_eq!(sim.nodes[b].node.stats().relayed_identity_mismatches, 1);
    assert!(sim.nodes[b].node.peer(&idc).is_none());
    assert!(sim.nodes[b].node.peer(&ida).is_none());
}

#[test]
fn a_dial_made_while_the_relay_connects_goes_out_once_it_is_up() {
    let mut sim = Sim::new(7, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.partition(a, b);
    sim.add_relay(&relay_identity(), relay_addr());
    let relay = RelayAddr {
        identity: relay_identity().to_remote_identity(),
        addr: relay_addr(),
    };
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, relay.clone()).unwrap();
    assert!(
        sim.take_event(a, Duration::from_secs(5), |e| {
            matches!(e, Event::RelayConnected { .. }).then_some(())
        })
        .is_some()
    );
    // b adds the relay and dials through it at once: its first flight
    // waits for the relay connection instead of being lost.
    let now = sim.now;
    let id = sim.nodes[b].node.add_relay(now, relay).unwrap();
    dial_relayed(&mut sim, b, a, id);
    let started = sim.now;
    assert!(sim.run_until_connected(a, b));
    let took = sim.now - started;
    // A few round trips of 2 ms (TCP, TLS to the relay, QUIC through it),
    // not a QUIC retransmission timeout.
    assert!(took < Duration::from_millis(50), "took {took:?}");
    assert_eq!(sim.nodes[b].node.stats().relayed_dropped, 0);
}

fn the_relay() -> RelayAddr {
    RelayAddr {
        identity: relay_identity().to_remote_identity(),
        addr: relay_addr(),
    }
}

fn status(sim: &Sim, node: usize) -> RelayStatus {
    sim.nodes[node].node.relays().next().expect("a relay").2
}

#[test]
fn a_relay_that_swallows_connections_is_given_up_after_the_timeout() {
    let mut sim = Sim::new(8, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let relay = sim.add_relay(&relay_identity(), relay_addr());
    sim.relays[relay].blackhole = true;
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    sim.run_for(RELAY_TIMEOUT - Duration::from_millis(100));
    assert_eq!(
        status(&sim, a),
        RelayStatus::Connecting,
        "not before the deadline"
    );
    sim.run_for(Duration::from_millis(200));
    assert!(
        matches!(
            status(&sim, a),
            RelayStatus::Waiting {
                error: Some(RelayError::Timeout),
                ..
            }
        ),
        "{:?}",
        status(&sim, a)
    );
    // And it tries again, after its backoff.
    let attempts = sim.relay_attempts[a];
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.relay_attempts[a], attempts + 1);
}

#[test]
fn an_unreachable_relay_is_retried_with_backoff() {
    let mut sim = Sim::new(9, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let relay = sim.add_relay(&relay_identity(), relay_addr());
    sim.relays[relay].up = false;
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    sim.run_for(Duration::from_secs(120));
    // 1, 2, 4, ... 60 s apart: attempts at 0, 1, 3, 7, 15, 31, 63 (and 123).
    assert_eq!(sim.relay_attempts[a], 7);
}

#[test]
fn a_relay_that_stops_answering_pings_is_left_and_reconnected() {
    let (mut sim, a, _b, _relay) = behind_relay(10);
    let attempts = sim.relay_attempts[a];
    sim.relays[0].frozen = true;
    // A ping after 15 s, unanswered for 10 s: the node gives up on it.
    let gone = sim.take_event(
        a,
        RELAY_PING_INTERVAL + RELAY_TIMEOUT + Duration::from_secs(1),
        |e| match e {
            Event::RelayDisconnected { error, .. } => Some(error.clone()),
            _ => None,
        },
    );
    assert_eq!(gone, Some(RelayError::Timeout));
    assert!(
        sim.now - sim.start >= RELAY_PING_INTERVAL + RELAY_TIMEOUT,
        "not before the ping's deadline"
    );
    sim.relays[0].frozen = false;
    let back = sim.take_event(a, Duration::from_secs(5), |e| {
        matches!(e, Event::RelayConnected { .. }).then_some(())
    });
    assert!(back.is_some());
    assert_eq!(sim.relay_attempts[a], attempts + 1);
}

#[test]
fn an_answered_ping_keeps_the_relay() {
    let (mut sim, a, _b, _relay) = behind_relay(11);
    sim.run_for(Duration::from_secs(120));
    assert!(matches!(status(&sim, a), RelayStatus::Connected { .. }));
    assert!(
        !sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::RelayDisconnected { .. })),
        "pings every 15 s keep it"
    );
}

#[test]
fn a_connection_that_lasted_starts_the_backoff_over() {
    let mut sim = Sim::new(12, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let relay = sim.add_relay(&relay_identity(), relay_addr());
    sim.relays[relay].up = false;
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    // Four failures: the next wait would be 16 s.
    sim.run_for(Duration::from_secs(8));
    assert_eq!(sim.relay_attempts[a], 4);
    sim.relays[relay].up = true;
    assert!(
        sim.take_event(a, Duration::from_secs(20), |e| {
            matches!(e, Event::RelayConnected { .. }).then_some(())
        })
        .is_some()
    );
    // Connected for longer than STABLE, then the relay restarts.
    sim.run_for(Duration::from_secs(31));
    sim.restart_relay(relay, &relay_identity());
    let lost = sim.now;
    assert!(
        sim.take_event(a, Duration::from_secs(20), |e| {
            matches!(e, Event::RelayConnected { .. }).then_some(())
        })
        .is_some()
    );
    assert!(
        sim.now - lost <= Duration::from_millis(1100),
        "back after the first step of the backoff, took {:?}",
        sim.now - lost
    );
}

#[test]
fn the_relayed_path_table_is_bounded_and_keeps_what_is_used() {
    let (mut sim, a, b, relay) = behind_relay(13);
    dial_relayed(&mut sim, b, a, relay);
    assert!(sim.run_until_connected(a, b));
    let conn = sim.relay_conn(a, 0).expect("a's relay connection");
    let recv = |from: &pos_p2p_protocol::RemoteIdentity| {
        pos_p2p_protocol::relay::RelayFrame::Recv {
            from: *from,
            datagram: bytes::Bytes::from_static(&[0x40, 1, 2, 3]),
        }
        .to_bytes()
        .unwrap()
    };
    // x sent something through the relay once, then the application asked
    // for the path to x: it is kept although x has no connection.
    let x = Identity::from_bytes(&[0x55; 32]).to_remote_identity();
    assert!(sim.relays[0].endpoint.inject(conn, &recv(&x)));
    sim.run_for(Duration::from_millis(10));
    let path_x = sim.nodes[a].node.relay_path(relay, x).unwrap();
    // A malicious relay names thousands of senders.
    let mut frames = Vec::new();
    for i in 0..(MAX_RELAYED_PATHS as u32 + 200) {
        let mut seed = [0x77; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        frames.extend_from_slice(&recv(&Identity::from_bytes(&seed).to_remote_identity()));
        if frames.len() > 60_000 {
            assert!(sim.relays[0].endpoint.inject(conn, &frames));
            frames.clear();
            sim.run_for(Duration::from_millis(5));
        }
    }
    assert!(sim.relays[0].endpoint.inject(conn, &frames));
    sim.run_for(Duration::from_millis(50));
    let node = &sim.nodes[a].node;
    assert!(
        node.relayed_path_count() <= MAX_RELAYED_PATHS,
        "{}",
        node.relayed_path_count()
    );
    assert_eq!(
        node.relayed_path(path_x),
        Some(x),
        "the application's path stays"
    );
    let peer_b = node.peer_stats(&sim.id(b)).expect("b still connected");
    assert_eq!(
        node.relayed_path(peer_b.remote_addr),
        Some(sim.id(b)),
        "the path in use stays"
    );
    // A newcomer still gets a path: unused ones made room.
    let c = sim.add_node(Sim::config(3));
    sim.partition(a, c);
    let now = sim.now;
    let id = sim.nodes[c].node.add_relay(now, the_relay()).unwrap();
    dial_relayed(&mut sim, c, a, id);
    assert!(
        sim.run_until_connected(a, c),
        "a newcomer connects after the flood"
    );
}

#[test]
fn datagrams_for_a_relay_that_is_down_are_dropped_and_counted() {
    let mut sim = Sim::new(14, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let relay = sim.add_relay(&relay_identity(), relay_addr());
    sim.relays[relay].up = false;
    let now = sim.now;
    let id = sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    sim.run_for(Duration::from_millis(100));
    let peer = Identity::from_bytes(&[2; 32]).to_remote_identity();
    let now = sim.now;
    let path = sim.nodes[a].node.relay_path(id, peer).unwrap();
    sim.nodes[a].node.dial(now, &[path], Some(peer)).unwrap();
    sim.run_for(Duration::from_millis(100));
    let stats = sim.nodes[a].node.stats().clone();
    assert!(stats.relayed_dropped >= 1, "{stats:?}");
    assert_eq!(stats.relayed_sent, 0);
}

#[test]
fn at_most_a_few_datagrams_wait_for_a_relay_that_is_connecting() {
    let mut sim = Sim::new(15, Link::lan());
    let a = sim.add_node(Sim::config(1));
    sim.add_relay(&relay_identity(), relay_addr());
    let now = sim.now;
    let id = sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    // Twenty dials at once, each a first flight of one datagram, while
    // the relay connection is being made.
    let dials = 20u8;
    for n in 0..dials {
        let peer = Identity::from_bytes(&[100 + n; 32]).to_remote_identity();
        let path = sim.nodes[a].node.relay_path(id, peer).unwrap();
        sim.nodes[a].node.dial(now, &[path], Some(peer)).unwrap();
    }
    sim.flush();
    let stats = sim.nodes[a].node.stats().clone();
    assert_eq!(
        stats.relayed_dropped,
        u64::from(dials) - MAX_WAITING_DATAGRAMS as u64
    );
    assert!(
        sim.take_event(a, Duration::from_secs(1), |e| {
            matches!(e, Event::RelayConnected { .. }).then_some(())
        })
        .is_some()
    );
    assert!(sim.nodes[a].node.stats().relayed_sent >= MAX_WAITING_DATAGRAMS as u64);
}

#[test]
fn a_relay_connection_that_does_not_drain_holds_at_most_its_queue() {
    let mut sim = Sim::new(16, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.partition(a, b);
    // A relay that does not limit: QUIC's window grows as on a fast link.
    let mut config = pos_p2p_protocol::relay::RelayConfig::default();
    config.bytes_per_second = u32::MAX;
    config.burst = u32::MAX;
    config.queue_bytes = 64 << 20;
    sim.add_relay_with(&relay_identity(), relay_addr(), config);
    let mut id = None;
    for node in [a, b] {
        let now = sim.now;
        id = Some(sim.nodes[node].node.add_relay(now, the_relay()).unwrap());
    }
    sim.run_for(Duration::from_millis(100));
    dial_relayed(&mut sim, a, b, id.unwrap());
    assert!(sim.run_until_connected(a, b));
    // A few mebibytes first: QUIC's window grows.
    for i in 0..6 {
        let warm = payload(i, 1 << 20);
        let stream = sim.open_stream(a, b).unwrap();
        sim.write_all(a, stream, &warm).unwrap();
        let remote = sim.accept_stream(b, Duration::from_secs(30)).unwrap();
        assert!(sim.read_to_end(b, remote, Duration::from_secs(60)).unwrap() == warm);
    }
    // Now a's relay connection stops draining while a sends 8 MiB.
    sim.relay_writes_stalled.insert(a);
    let mut sent = Vec::new();
    for i in 0..8 {
        let data = payload(100 + i, 1 << 20);
        let stream = sim.open_stream(a, b).unwrap();
        let taken = sim.nodes[a].node.write(stream, &data).unwrap();
        sent.push((stream, data, taken));
    }
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.nodes[a].node.stats().relayed_dropped > 0,
        "beyond the queue, datagrams are dropped: {:?}",
        sim.nodes[a].node.stats()
    );
    let held = sim.take_relay_writes(a);
    assert!(
        held <= RELAY_QUEUE_BYTES + RELAY_QUEUE_BYTES / 50,
        "held {held} bytes for the relay"
    );
    assert!(held >= RELAY_QUEUE_BYTES / 2, "the queue was used: {held}");
    sim.relay_writes_stalled.remove(&a);
    // QUIC recovers what was dropped: every byte arrives.
    for (stream, data, taken) in &sent {
        sim.write_all(a, *stream, &data[*taken..]).unwrap();
    }
    let mut received = Vec::new();
    for _ in 0..sent.len() {
        let remote = sim.accept_stream(b, Duration::from_secs(30)).unwrap();
        received.push(
            sim.read_to_end(b, remote, Duration::from_secs(120))
                .unwrap(),
        );
    }
    let mut expected: Vec<Vec<u8>> = sent.into_iter().map(|(_, d, _)| d).collect();
    expected.sort();
    received.sort();
    assert!(received == expected, "intact after the stall");
}

#[test]
fn a_late_report_about_an_old_relay_connection_does_not_touch_the_new_one() {
    use pos_p2p_protocol::node::{Node, RelayAction};
    let start = std::time::Instant::now();
    let mut node = Node::new(Sim::config(1), start).unwrap();
    node.add_relay(start, the_relay()).unwrap();
    node.handle_timeout(start);
    let first = match node.poll_relay_action() {
        Some(RelayAction::Connect { conn, .. }) => conn,
        other => panic!("{other:?}"),
    };
    node.relay_opened(start, first);
    // TLS never finishes: the node gives up on that connection...
    let later = start + RELAY_TIMEOUT;
    node.handle_timeout(later);
    assert_eq!(
        node.poll_relay_action(),
        Some(RelayAction::Close { conn: first })
    );
    // ... and opens another after its backoff.
    let retry = later + Duration::from_secs(1);
    node.handle_timeout(retry);
    let second = match node.poll_relay_action() {
        Some(RelayAction::Connect { conn, .. }) => conn,
        other => panic!("{other:?}"),
    };
    assert_ne!(first, second, "each connection has a name of its own");
    // The old connection's end, reported late, is not the new one's.
    node.relay_closed(retry, first, Some("reset".into()));
    node.handle_relay_bytes(retry, first, b"stale bytes");
    assert_eq!(node.relays().next().unwrap().2, RelayStatus::Connecting);
    assert_eq!(node.poll_relay_action(), None);
}

/// Run the simulation for `duration`, calling node `node`'s
/// `handle_timeout` every 100 ms as well, as a driver may at any turn.
fn run_with_frequent_timeouts(sim: &mut Sim, node: usize, duration: Duration) {
    let end = sim.now + duration;
    while sim.now < end {
        sim.run_for(Duration::from_millis(100));
        let now = sim.now;
        sim.nodes[node].node.handle_timeout(now);
        sim.flush();
    }
}

#[test]
fn the_backoff_holds_however_often_the_node_is_woken() {
    let mut sim = Sim::new(17, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let relay = sim.add_relay(&relay_identity(), relay_addr());
    sim.relays[relay].up = false;
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    run_with_frequent_timeouts(&mut sim, a, Duration::from_secs(120));
    assert_eq!(sim.relay_attempts[a], 7);
}

#[test]
fn pings_go_every_fifteen_seconds_however_often_the_node_is_woken() {
    let (mut sim, a, _b, _relay) = behind_relay(18);
    let before = sim.relays[0].endpoint.stats().pings;
    run_with_frequent_timeouts(&mut sim, a, Duration::from_secs(61));
    // a's four pings, and b's (not woken more often) four.
    assert_eq!(sim.relays[0].endpoint.stats().pings - before, 8);
}

#[test]
fn a_pong_that_answers_no_ping_of_ours_does_not_keep_a_dead_relay() {
    let (mut sim, a, _b, _relay) = behind_relay(19);
    // The relay hangs just before the first ping...
    sim.run_for(RELAY_PING_INTERVAL - Duration::from_millis(10));
    sim.relays[0].frozen = true;
    sim.run_for(Duration::from_millis(100));
    // ... and a stale answer (nonce 0: no ping of a's had it) arrives.
    let conn = sim.relay_conn(a, 0).unwrap();
    let pong = pos_p2p_protocol::relay::RelayFrame::Pong { nonce: 0 }
        .to_bytes()
        .unwrap();
    assert!(sim.relays[0].endpoint.inject(conn, &pong));
    let gone = sim.take_event(a, RELAY_TIMEOUT + Duration::from_secs(1), |e| match e {
        Event::RelayDisconnected { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(gone, Some(RelayError::Timeout));
}

#[test]
fn a_peer_added_through_a_relay_is_dialed_there_by_identity() {
    let (mut sim, a, b, _relay) = behind_relay(20);
    let now = sim.now;
    let peer = sim.id(a);
    let path = sim.nodes[b]
        .node
        .add_relayed_peer(now, peer, the_relay())
        .unwrap();
    // Known by identity alone: the book holds the relayed path.
    sim.nodes[b].node.dial_peer(now, peer, &[]).unwrap();
    assert!(sim.run_until_connected(a, b));
    let stats = sim.nodes[b].node.peer_stats(&peer).unwrap();
    assert_eq!(stats.remote_addr, path);
    assert!(matches!(stats.path, PathKind::Relayed(_)));
}

/// `Connected` in [`Node::relays`] and the `RelayConnected` event mean the
/// same thing: the relay accepted the node (its first frame came). TLS
/// alone is not enough: the relay has yet to check the node's identity and
/// may refuse it. A relay lost in between must still be reported.
#[test]
fn connected_status_and_event_agree_and_a_loss_is_always_reported() {
    let mut sim = Sim::new(13, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let relay = sim.add_relay(&relay_identity(), relay_addr());
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, the_relay()).unwrap();
    let connected = |sim: &Sim| {
        sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::RelayConnected { .. }))
    };
    sim.flush();
    while !matches!(status(&sim, a), RelayStatus::Connected { .. }) {
        assert!(!connected(&sim), "the event came before the status");
        assert!(sim.step());
        // The events of that step.
        sim.flush();
        assert!(
            sim.now - sim.start < Duration::from_secs(5),
            "never connected"
        );
    }
    assert!(connected(&sim), "Connected without RelayConnected");
    assert!(matches!(
        status(&sim, a),
        RelayStatus::Connected { observed: Some(_) }
    ));
    // Lost at once: the application hears of it.
    sim.restart_relay(relay, &relay_identity());
    let gone = sim.take_event(a, Duration::from_millis(1), |e| {
        matches!(e, Event::RelayDisconnected { .. }).then_some(())
    });
    assert!(
        gone.is_some(),
        "a relay shown as connected was lost silently"
    );
}
