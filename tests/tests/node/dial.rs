//! Dials (`Node::dial`): one per peer, shared by every caller, each ending
//! in exactly one `Event::DialFinished` with a typed reason.

use std::net::SocketAddr;
use std::time::Duration;

use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::{ConnectError, DialId, DisconnectReason, Event};
use pos_p2p_tests::sim::{Link, Sim};
use proptest::prelude::*;

type DialResult = Result<RemoteIdentity, DisconnectReason>;

/// Every `DialFinished` node `index` reported, in order.
fn finished(sim: &Sim, index: usize) -> Vec<(DialId, DialResult)> {
    sim.nodes[index]
        .history
        .iter()
        .filter_map(|e| match e {
            Event::DialFinished { dial, result } => Some((*dial, result.clone())),
            _ => None,
        })
        .collect()
}

/// An address no node answers at.
fn nowhere() -> SocketAddr {
    Sim::sim_addr(200)
}

fn two_nodes() -> (Sim, usize, usize) {
    let mut sim = Sim::new(41, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    (sim, a, b)
}

#[test]
fn dials_to_one_peer_are_joined_and_finish_once() {
    let (mut sim, a, b) = two_nodes();
    let (addr, idb) = (sim.nodes[b].addr, sim.id(b));
    let now = sim.now;
    let first = sim.nodes[a].node.dial(now, &[addr], Some(idb)).unwrap();
    assert_eq!(sim.nodes[a].node.dial_count(), 1);
    sim.run_for(Duration::from_micros(500));
    let now = sim.now;
    let second = sim.nodes[a].node.dial(now, &[addr], Some(idb)).unwrap();
    assert_eq!(first, second, "the second caller joins the dial under way");
    assert_eq!(sim.nodes[a].node.connection_count(), 1, "one connection");
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(finished(&sim, a), vec![(first, Ok(idb))]);
    assert_eq!(sim.nodes[a].node.dial_count(), 0, "nothing kept after");
    assert_eq!(sim.nodes[a].node.stats().connections_established, 1);
    assert_eq!(sim.nodes[b].node.stats().connections_established, 1);
    // Connected is reported before the dial that led to it.
    let history = &sim.nodes[a].history;
    let connected = history
        .iter()
        .position(|e| matches!(e, Event::Connected(_)))
        .unwrap();
    let dial = history
        .iter()
        .position(|e| matches!(e, Event::DialFinished { .. }))
        .unwrap();
    assert!(connected < dial);
}

#[test]
fn a_dial_to_a_connected_peer_finishes_at_once_without_a_connection() {
    let (mut sim, a, b) = two_nodes();
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let (addr, idb) = (sim.nodes[b].addr, sim.id(b));
    let conns = sim.nodes[a].node.connection_count();
    let now = sim.now;
    let dial = sim.nodes[a].node.dial(now, &[addr], Some(idb)).unwrap();
    assert_eq!(sim.nodes[a].node.connection_count(), conns);
    assert_eq!(
        sim.nodes[a].node.poll_event(),
        Some(Event::DialFinished {
            dial,
            result: Ok(idb)
        })
    );
}

#[test]
fn a_dial_that_fails_gives_every_caller_the_reason_once() {
    let (mut sim, a, b) = two_nodes();
    let idb = sim.id(b);
    let now = sim.now;
    let first = sim.nodes[a]
        .node
        .dial(now, &[nowhere()], Some(idb))
        .unwrap();
    let second = sim.nodes[a]
        .node
        .dial(now, &[nowhere()], Some(idb))
        .unwrap();
    assert_eq!(first, second);
    sim.run_for(Duration::from_secs(15));
    let failed: Vec<DisconnectReason> = sim.nodes[a]
        .history
        .iter()
        .filter_map(|e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(finished(&sim, a), vec![(first, Err(failed[0].clone()))]);
    assert!(
        matches!(failed[0], DisconnectReason::HandshakeTimeout),
        "{:?}",
        failed[0]
    );
    // The dial is over: the next one is a new dial.
    let now = sim.now;
    let third = sim.nodes[a]
        .node
        .dial(now, &[nowhere()], Some(idb))
        .unwrap();
    assert_ne!(third, first);
}

#[test]
fn a_dial_tries_every_address_and_the_first_to_connect_finishes_it() {
    let (mut sim, a, b) = two_nodes();
    let (addr, idb) = (sim.nodes[b].addr, sim.id(b));
    let started = sim.now;
    let dial = sim.nodes[a]
        .node
        .dial(started, &[nowhere(), addr], Some(idb))
        .unwrap();
    assert_eq!(sim.nodes[a].node.connection_count(), 2);
    let result = sim.take_event(a, Duration::from_secs(15), |e| match e {
        Event::DialFinished { dial: d, result } if *d == dial => Some(result.clone()),
        _ => None,
    });
    assert_eq!(result, Some(Ok(idb)));
    assert!(
        sim.now - started < Duration::from_millis(100),
        "did not wait for the address nobody answers at"
    );
    // The attempt that is still under way ends later without a second
    // outcome for the dial.
    sim.run_for(Duration::from_secs(15));
    assert_eq!(finished(&sim, a).len(), 1);
}

#[test]
fn a_dial_that_meets_another_node_fails_with_identity_mismatch() {
    let mut sim = Sim::new(42, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let c = sim.add_node(Sim::config(3));
    let (addr, idc) = (sim.nodes[b].addr, sim.id(c));
    let now = sim.now;
    let dial = sim.nodes[a].node.dial(now, &[addr], Some(idc)).unwrap();
    let result = sim.take_event(a, Duration::from_secs(15), |e| match e {
        Event::DialFinished { dial: d, result } if *d == dial => Some(result.clone()),
        _ => None,
    });
    assert!(
        matches!(
            result,
            Some(Err(DisconnectReason::IdentityMismatch { expected, .. })) if expected == idc
        ),
        "{result:?}"
    );
}

#[test]
fn dials_from_both_sides_at_once_both_reach_the_peer() {
    let (mut sim, a, b) = two_nodes();
    let (ida, idb) = (sim.id(a), sim.id(b));
    let (addr_a, addr_b) = (sim.nodes[a].addr, sim.nodes[b].addr);
    let now = sim.now;
    let from_a = sim.nodes[a].node.dial(now, &[addr_b], Some(idb)).unwrap();
    let from_b = sim.nodes[b].node.dial(now, &[addr_a], Some(ida)).unwrap();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(finished(&sim, a), vec![(from_a, Ok(idb))]);
    assert_eq!(finished(&sim, b), vec![(from_b, Ok(ida))]);
}

#[test]
fn shutting_down_fails_the_dials_under_way() {
    let (mut sim, a, b) = two_nodes();
    let idb = sim.id(b);
    let now = sim.now;
    let dial = sim.nodes[a]
        .node
        .dial(now, &[nowhere()], Some(idb))
        .unwrap();
    sim.run_for(Duration::from_millis(10));
    let now = sim.now;
    sim.nodes[a].node.shutdown(now);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(
        finished(&sim, a),
        vec![(dial, Err(DisconnectReason::ClosedLocally))]
    );
    let now = sim.now;
    assert!(matches!(
        sim.nodes[a].node.dial(now, &[nowhere()], Some(idb)),
        Err(ConnectError::ShuttingDown)
    ));
}

#[test]
fn a_dial_needs_an_address() {
    let (mut sim, a, b) = two_nodes();
    let (idb, now) = (sim.id(b), sim.now);
    assert!(matches!(
        sim.nodes[a].node.dial(now, &[], Some(idb)),
        Err(ConnectError::NoAddress)
    ));
    let port_zero: SocketAddr = "127.0.1.2:0".parse().unwrap();
    assert!(matches!(
        sim.nodes[a].node.dial(now, &[port_zero], Some(idb)),
        Err(ConnectError::InvalidAddress(_))
    ));
    assert_eq!(sim.nodes[a].node.dial_count(), 0);
    assert!(sim.nodes[a].node.poll_event().is_none(), "no event follows");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Over lossy links and callers arriving at any time: while a dial to
    /// the peer is under way every caller joins it; every dial finishes
    /// exactly once; one that succeeds finds the peer connected.
    #[test]
    fn every_dial_finishes_exactly_once_and_callers_share_it(
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        gaps_ms in proptest::collection::vec(prop_oneof![0u64..5, 0u64..400], 1..8),
    ) {
        let link = Link { loss, ..Link::lan() };
        let mut sim = Sim::new(seed, link);
        let a = sim.add_node(Sim::config(1));
        let b = sim.add_node(Sim::config(2));
        let (addr, idb) = (sim.nodes[b].addr, sim.id(b));
        let mut ids = Vec::new();
        for gap in gaps_ms {
            sim.run_for(Duration::from_millis(gap));
            let under_way = sim.nodes[a].node.dial_count() > 0;
            let before = finished(&sim, a).len();
            let now = sim.now;
            let id = sim.nodes[a].node.dial(now, &[addr], Some(idb)).unwrap();
            if under_way {
                prop_assert_eq!(Some(&id), ids.last(), "joined the dial under way");
            }
            if sim.nodes[a].node.peer(&idb).is_some() {
                // Connected: finished at once.
                prop_assert_eq!(sim.nodes[a].node.dial_count(), 0);
                sim.flush();
                prop_assert_eq!(finished(&sim, a).len(), before + 1);
            }
            ids.push(id);
        }
        sim.run_for(Duration::from_secs(30));
        let outcomes = finished(&sim, a);
        let mut distinct = ids.clone();
        distinct.dedup();
        prop_assert_eq!(
            outcomes.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            distinct,
            "each dial once, in order"
        );
        for (_, result) in &outcomes {
            if let Ok(peer) = result {
                prop_assert_eq!(*peer, idb);
            }
        }
        prop_assert_eq!(sim.nodes[a].node.dial_count(), 0);
    }
}

/// How many made-up identities connect in the address-book test.
const STRANGERS: u32 = 10_000;

#[test]
fn ten_thousand_strangers_leave_the_address_book_within_its_bound() {
    use pos_p2p_protocol::Identity;
    use pos_p2p_protocol::node::NodeConfig;
    use pos_p2p_protocol::semver::Version;
    use std::net::{IpAddr, Ipv4Addr};

    let mut sim = Sim::new(43, Link::lan());
    let mut config = Sim::config(1);
    config.limits.max_remembered_peers = 64;
    let a = sim.add_node(config);
    let b = sim.add_node(Sim::config(2));
    // A peer the application dialed, before the flood.
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let idb = sim.id(b);
    let stranger = sim.add_node(Sim::config(3));
    for n in 0..STRANGERS {
        let mut seed = [0x77; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let mut config = NodeConfig::new(
            Identity::from_bytes(&seed),
            "sim",
            Version::new(1, 0, 0),
            seed,
        );
        config.deterministic_crypto = true;
        // Each from an address of its own: the per-address limits are
        // tested elsewhere.
        let [_, x, y, z] = n.to_be_bytes();
        sim.nodes[stranger].addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, x, y, z.max(1))),
            4433 + u16::from(z == 0),
        );
        sim.restart(stranger, config);
        sim.connect(stranger, a);
        assert!(sim.run_until_connected(stranger, a), "stranger {n}");
        let now = sim.now;
        sim.nodes[stranger].node.shutdown(now);
        sim.run_for(Duration::from_millis(5));
        assert!(sim.nodes[a].node.book().len() <= 64);
    }
    let book = sim.nodes[a].node.book();
    assert_eq!(book.len(), 64);
    assert!(
        book.addrs(&idb).is_some(),
        "the peer the application dialed stays"
    );
    assert!(!book.is_stranger(&idb));
}

#[test]
fn a_known_peer_is_dialed_where_the_book_and_discovery_say() {
    let (mut sim, a, b) = two_nodes();
    let (addr, idb) = (sim.nodes[b].addr, sim.id(b));
    let advertised: SocketAddr = "127.0.1.99:4433".parse().unwrap();
    let now = sim.now;
    // Unknown, and nothing advertised: no address.
    assert!(matches!(
        sim.nodes[a].node.dial_peer(now, idb, &[]),
        Err(ConnectError::NoAddress)
    ));
    // The book's addresses first, then the advertised ones, once each.
    sim.nodes[a].node.book_mut().pin(idb, addr);
    assert_eq!(
        sim.nodes[a].node.dial_addrs(&idb, &[advertised, addr]),
        vec![addr, advertised]
    );
    let dial = sim.nodes[a]
        .node
        .dial_peer(now, idb, &[advertised, addr])
        .unwrap();
    assert_eq!(sim.nodes[a].node.connection_count(), 2);
    let result = sim.take_event(a, Duration::from_secs(5), |e| match e {
        Event::DialFinished { dial: d, result } if *d == dial => Some(result.clone()),
        _ => None,
    });
    assert_eq!(result, Some(Ok(idb)));
}

#[test]
fn a_connected_peers_version_is_checked_against_an_operations_requirement() {
    use pos_p2p_protocol::semver::{Version, VersionReq};
    let mut sim = Sim::new(31, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let mut config = Sim::config(2);
    config.versions.app = Version::new(1, 4, 0);
    let b = sim.add_node(config);
    let idb = sim.id(b);
    let newer = VersionReq::parse(">=1.5").unwrap();
    let older = VersionReq::parse(">=1.4").unwrap();
    assert_eq!(
        sim.nodes[a].node.peer_satisfies(&idb, &newer),
        None,
        "not connected"
    );
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    assert_eq!(
        sim.nodes[a].node.peer_satisfies(&idb, &newer),
        Some(Err(&Version::new(1, 4, 0)))
    );
    assert_eq!(sim.nodes[a].node.peer_satisfies(&idb, &older), Some(Ok(())));
}
