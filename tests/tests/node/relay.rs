//! Relayed paths (docs/PROTOCOL.md §10): nodes that cannot reach each other
//! connect through a relay over simulated TCP, with identity-pinned QUIC
//! end to end.

use std::net::SocketAddr;
use std::time::Duration;

use pos_p2p_protocol::Identity;
use pos_p2p_protocol::node::{Event, PathKind, RelayAddr, RelayId, RelayStatus};
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
