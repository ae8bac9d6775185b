//! Going direct (docs/PROTOCOL.md §10.6, §10.7): nodes behind simulated
//! NATs learn their public address from the relay, exchange candidates
//! over the relayed connection and punch through to a direct one, or stay
//! relayed when they cannot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pos_p2p_protocol::Identity;
use pos_p2p_protocol::direct::{DirectPacket, PacketKind};
use pos_p2p_protocol::node::{
    Event, MAX_HEARD_ADDRS, MAX_PENDING_PINGS, MAX_PONGS, MAX_PUNCHES, PATH_TIMEOUT,
    PROBE_INTERVAL, PUNCH_WINDOW, PathKind, RelayAddr, RelayId,
};
use pos_p2p_protocol::stun;
use pos_p2p_tests::sim::{Link, Mapping, Sim, payload};

fn relay_identity() -> Identity {
    Identity::from_bytes(&[0xee; 32])
}

fn relay_addr() -> SocketAddr {
    "192.0.2.100:3340".parse().unwrap()
}

fn relay() -> RelayAddr {
    RelayAddr {
        identity: relay_identity().to_remote_identity(),
        addr: relay_addr(),
    }
}

/// A wide-area link: 20 ms one way.
fn wan() -> Link {
    Link {
        latency: Duration::from_millis(20),
        ..Link::lan()
    }
}

/// Node `node` uses the relay; returns once it knows where the relay sees
/// its UDP socket (`None`: it never learned, UDP being blocked).
fn join_relay(sim: &mut Sim, node: usize) -> (RelayId, Option<SocketAddr>) {
    let now = sim.now;
    let id = sim.nodes[node].node.add_relay(now, relay()).unwrap();
    let public = sim.take_event(node, Duration::from_secs(5), |e| match e {
        Event::AddressDiscovered { addr, .. } => Some(*addr),
        _ => None,
    });
    (id, public)
}

/// Two nodes behind NATs of these kinds, using one public relay.
fn behind_nats(seed: u64, link: Link, kinds: [Mapping; 2]) -> (Sim, usize, usize, RelayId) {
    let mut sim = Sim::new(seed, link);
    sim.add_relay(&relay_identity(), relay_addr());
    let na = sim.add_nat(kinds[0]);
    let nb = sim.add_nat(kinds[1]);
    let a = sim.add_node_behind(Sim::config(1), na);
    let b = sim.add_node_behind(Sim::config(2), nb);
    let mut relay = None;
    for (node, nat) in [(a, na), (b, nb)] {
        let (id, public) = join_relay(&mut sim, node);
        let public = public.expect("the relay answers the node's probe");
        assert_eq!(public.ip(), sim.nats[nat].public_ip, "node {node}");
        assert!(
            sim.nodes[node].node.candidates().contains(&public),
            "node {node} offers its public address"
        );
        relay = Some(id);
    }
    (sim, a, b, relay.unwrap())
}

/// `from` reaches `to` by identity through the relay.
fn dial_through_relay(sim: &mut Sim, from: usize, to: usize) {
    let (peer, now) = (sim.id(to), sim.now);
    let node = &mut sim.nodes[from].node;
    node.add_relayed_peer(now, peer, relay()).unwrap();
    node.dial_peer(now, peer, &[]).unwrap();
}

fn path(sim: &Sim, node: usize, peer: usize) -> Option<PathKind> {
    let peer = sim.id(peer);
    sim.nodes[node].node.peer_stats(&peer).map(|s| s.path)
}

fn is_direct(sim: &Sim, node: usize, peer: usize) -> bool {
    matches!(path(sim, node, peer), Some(PathKind::Direct(_)))
}

#[test]
fn behind_endpoint_independent_nats_two_nodes_go_direct() {
    let kinds = [Mapping::EndpointIndependent; 2];
    let (mut sim, a, b, relay) = behind_nats(1, wan(), kinds);
    let start = sim.now;
    dial_through_relay(&mut sim, a, b);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| path(s, a, b).is_some()
            && path(s, b, a).is_some())
    );
    let connected = sim.now;
    assert_eq!(path(&sim, a, b), Some(PathKind::Relayed(relay)));
    assert!(
        sim.run_until(Duration::from_secs(10), |s| is_direct(s, a, b)
            && is_direct(s, b, a)),
        "direct within 10 s: {:?} / {:?}",
        path(&sim, a, b),
        path(&sim, b, a)
    );
    let direct = sim.now;
    // A change of b's addresses (a network change as far as b can tell):
    // b goes back to the relay at once and punches again; a is told b's
    // new candidates and pings the new one. Nothing really moved, so both
    // are direct again within a second, on the same connection.
    let conn = sim.nodes[a].node.peer(&sim.id(b)).unwrap().connection;
    let attempts = sim.nodes[a].node.stats().punch_attempts;
    let now = sim.now;
    sim.nodes[b]
        .node
        .set_local_addrs(now, &["10.0.2.99:4433".parse().unwrap()]);
    assert!(!is_direct(&sim, b, a), "back to the relay at once");
    assert_eq!(sim.nodes[b].node.stats().routes_lost, 1);
    assert!(sim.run_until(Duration::from_secs(1), |s| is_direct(s, a, b)
        && is_direct(s, b, a)));
    assert_eq!(sim.nodes[a].node.stats().punch_attempts, attempts + 1);
    assert_eq!(sim.nodes[a].node.peer(&sim.id(b)).unwrap().connection, conn);
    // The relayed round trip is 4 one-way hops of 20 ms.
    let relayed_rtt = Duration::from_millis(80);
    let rtts = (direct - connected).as_secs_f64() / relayed_rtt.as_secs_f64();
    eprintln!(
        "connected through the relay after {:?}, direct {:?} later ({rtts:.1} relayed round trips)",
        connected - start,
        direct - connected
    );
    assert!(
        rtts <= 4.0,
        "direct within 4 relayed round trips of connecting, took {rtts:.1}"
    );
    for (node, peer) in [(a, b), (b, a)] {
        let peer_id = sim.id(peer);
        let changed = sim.nodes[node].history.iter().any(|e| {
            matches!(e, Event::PathChanged { peer: p, path: PathKind::Direct(_) } if *p == peer_id)
        });
        assert!(changed, "node {node} was told the path changed");
        // The peer is reached at its NAT's public address.
        let Some(PathKind::Direct(addr)) = path(&sim, node, peer) else {
            unreachable!()
        };
        let nat = sim.nodes[peer].nat.unwrap();
        assert_eq!(addr.ip(), sim.nats[nat].public_ip);
    }
    // From now on the datagrams flow directly: the relay forwards nothing
    // of a transfer.
    sim.run_for(Duration::from_secs(1));
    let forwarded = sim.relays[0].endpoint.stats().forwarded;
    let data = payload(3, 1 << 20);
    let stream = sim.open_stream(a, b).unwrap();
    sim.write_all(a, stream, &data).unwrap();
    let remote = sim.accept_stream(b, Duration::from_secs(10)).unwrap();
    let received = sim.read_to_end(b, remote, Duration::from_secs(60)).unwrap();
    assert!(received == data);
    assert_eq!(
        sim.relays[0].endpoint.stats().forwarded,
        forwarded,
        "nothing more went through the relay"
    );
}

#[test]
fn symmetric_nats_on_both_sides_stay_relayed_and_deliver() {
    for (seed, kinds) in [
        (2, [Mapping::AddressDependent; 2]),
        (3, [Mapping::AddressDependent, Mapping::EndpointIndependent]),
    ] {
        let (mut sim, a, b, relay) = behind_nats(seed, wan(), kinds);
        dial_through_relay(&mut sim, a, b);
        assert!(sim.run_until_connected(a, b));
        sim.run_for(Duration::from_secs(30));
        assert_eq!(
            path(&sim, a, b),
            Some(PathKind::Relayed(relay)),
            "{kinds:?}"
        );
        assert_eq!(
            path(&sim, b, a),
            Some(PathKind::Relayed(relay)),
            "{kinds:?}"
        );
        // Both tried, and the NATs' filters stopped them.
        assert!(sim.nodes[a].node.stats().punch_attempts > 0);
        assert!(sim.nodes[b].node.stats().punch_attempts > 0);
        assert!(sim.nats.iter().all(|n| n.filtered > 0), "{kinds:?}");
        // Everything arrives, both ways, through the relay.
        let (ab, ba) = (payload(4, 512 << 10), payload(5, 512 << 10));
        let stream = sim.open_stream(a, b).unwrap();
        sim.write_all(a, stream, &ab).unwrap();
        let remote = sim.accept_stream(b, Duration::from_secs(10)).unwrap();
        assert!(
            sim.read_to_end(b, remote, Duration::from_secs(120))
                .unwrap()
                == ab
        );
        sim.write_all(b, remote, &ba).unwrap();
        assert!(
            sim.read_to_end(a, stream, Duration::from_secs(120))
                .unwrap()
                == ba
        );
    }
}

#[test]
fn udp_blocked_uses_the_relay_over_tcp() {
    let mut sim = Sim::new(4, wan());
    sim.add_relay(&relay_identity(), relay_addr());
    let nat = sim.add_nat(Mapping::EndpointIndependent);
    let a = sim.add_node_behind(Sim::config(1), nat);
    sim.nodes[a].udp_blocked = true;
    let b = sim.add_node(Sim::config(2));
    let (_, public) = join_relay(&mut sim, a);
    assert_eq!(public, None, "no probe gets through a UDP firewall");
    assert!(sim.nodes[a].node.stats().probes_sent > 1, "it kept asking");
    join_relay(&mut sim, b);
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_secs(20));
    assert!(matches!(path(&sim, a, b), Some(PathKind::Relayed(_))));
    let data = payload(6, 512 << 10);
    let stream = sim.open_stream(b, a).unwrap();
    sim.write_all(b, stream, &data).unwrap();
    let remote = sim.accept_stream(a, Duration::from_secs(10)).unwrap();
    assert!(
        sim.read_to_end(a, remote, Duration::from_secs(120))
            .unwrap()
            == data
    );
}

#[test]
fn two_nodes_behind_one_nat_go_direct_over_their_lan() {
    // The NAT does not hairpin: only the local candidates work.
    let mut sim = Sim::new(5, wan());
    sim.add_relay(&relay_identity(), relay_addr());
    let nat = sim.add_nat(Mapping::EndpointIndependent);
    let a = sim.add_node_behind(Sim::config(1), nat);
    let b = sim.add_node_behind(Sim::config(2), nat);
    join_relay(&mut sim, a);
    join_relay(&mut sim, b);
    dial_through_relay(&mut sim, a, b);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    assert_eq!(path(&sim, a, b), Some(PathKind::Direct(sim.nodes[b].addr)));
    assert!(
        sim.nats[nat].hairpin_dropped > 0,
        "the public candidates were tried"
    );
}

#[test]
fn a_transfer_survives_the_switch_from_relayed_to_direct() {
    let kinds = [Mapping::EndpointIndependent; 2];
    let (mut sim, a, b, _) = behind_nats(6, wan(), kinds);
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until(Duration::from_secs(10), |s| path(s, a, b).is_some()));
    // A stream opened on the relayed connection, before the switch.
    assert!(matches!(path(&sim, a, b), Some(PathKind::Relayed(_))));
    let data = payload(7, 64 << 20);
    let started = sim.now;
    let received = sim
        .transfer(a, b, &data, Duration::from_secs(600), |_| {})
        .unwrap();
    assert!(received == data, "every byte, in order");
    eprintln!("64 MiB in {:?} of virtual time", sim.now - started);
    assert!(is_direct(&sim, a, b), "the peer went direct meanwhile");
    // The relayed connection drained and closed: one connection left.
    let one = sim.run_until(Duration::from_secs(30), |s| {
        s.nodes[a].node.connection_count() == 1 && s.nodes[b].node.connection_count() == 1
    });
    assert!(
        one,
        "{} / {} connections: {:?}",
        sim.nodes[a].node.connection_count(),
        sim.nodes[b].node.connection_count(),
        sim.nodes[a]
            .history
            .iter()
            .filter(|e| !matches!(e, Event::StreamFinished { .. }))
            .collect::<Vec<_>>()
    );
}

/// Until `a` reaches `b` directly at an address `b` offers now (and `b`
/// reaches `a` directly): whenever `a` has lost `b`, it dials it again by
/// identity (as `Peer::new_stream` does on demand), which goes through
/// the relay and punches again.
fn redial_until_direct(sim: &mut Sim, a: usize, b: usize, limit: Duration) -> bool {
    let pb = sim.id(b);
    sim.run_until(limit, |s| {
        if s.nodes[a].node.peer(&pb).is_none() && s.nodes[a].node.dial_count() == 0 {
            let now = s.now;
            s.nodes[a].node.dial_peer(now, pb, &[]).unwrap();
        }
        is_direct(s, b, a)
            && matches!(path(s, a, b), Some(PathKind::Direct(addr)) if s.nodes[b].node.candidates().contains(&addr))
    })
}

#[test]
fn a_node_that_moves_falls_back_to_the_relay_and_punches_again() {
    let kinds = [Mapping::EndpointIndependent; 2];
    let (mut sim, a, b, _) = behind_nats(7, wan(), kinds);
    dial_through_relay(&mut sim, a, b);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    // b moves to another network behind another NAT: its old address
    // reaches nobody.
    let other = sim.add_nat(Mapping::EndpointIndependent);
    sim.move_node(b, other);
    let moved = sim.now;
    assert!(
        redial_until_direct(&mut sim, a, b, Duration::from_secs(120)),
        "direct again at b's new address: {:?} / {:?}",
        path(&sim, a, b),
        path(&sim, b, a)
    );
    eprintln!("direct again {:?} after the move", sim.now - moved);
    let relayed_again = sim.nodes[a]
        .history
        .iter()
        .filter(|e| matches!(e, Event::Connected(info) if info.addr.ip().is_ipv6()))
        .count();
    assert!(relayed_again >= 1, "through the relay first");
    let data = payload(9, 256 << 10);
    let received = sim
        .transfer(b, a, &data, Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(received == data);
}

#[test]
fn a_peer_cannot_make_a_node_dial_more_than_its_budget() {
    // Connected through the relay, the direct link cut (so nothing
    // succeeds and the relayed connection stays).
    let (mut sim, a, b, _) = behind_nats(8, wan(), [Mapping::AddressDependent; 2]);
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_secs(PUNCH_WINDOW.as_secs() + 1));
    let before = sim.nodes[b].node.stats().punch_attempts;
    let limited = sim.nodes[b].node.stats().punches_limited;
    let pb = sim.id(b);
    // a sends 5 messages of 8 new addresses each: 40 addresses, at once.
    for round in 0..5u8 {
        let addrs: Vec<SocketAddr> = (0..8u8)
            .map(|i| SocketAddr::from(([203, 0, 113, round * 8 + i + 1], 4433)))
            .collect();
        sim.nodes[a].node.inject_candidates(pb, addrs);
        sim.flush();
        sim.run_for(Duration::from_millis(200));
    }
    // The node's own retry of the real candidates (every window) may hold
    // a few of the window's pings: the hostile ones get the rest, and
    // every one of the 40 is either pinged or refused.
    let stats = sim.nodes[b].node.stats();
    let pinged = stats.punch_attempts - before;
    assert!(
        (MAX_PUNCHES as u64 - 2..=MAX_PUNCHES as u64).contains(&pinged),
        "at most MAX_PUNCHES pings per window: {pinged}"
    );
    assert_eq!(pinged + stats.punches_limited - limited, 40);
    // The same addresses again within the window: nothing new.
    let addrs: Vec<SocketAddr> = (0..8u8)
        .map(|i| SocketAddr::from(([203, 0, 113, i + 1], 4433)))
        .collect();
    sim.nodes[a].node.inject_candidates(pb, addrs.clone());
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.nodes[b].node.stats().punch_attempts - before, pinged);
    // After the window the budget is back: 8 new addresses are pinged.
    sim.run_for(PUNCH_WINDOW);
    let fresh: Vec<SocketAddr> = (0..8u8)
        .map(|i| SocketAddr::from(([198, 18, 0, i + 1], 4433)))
        .collect();
    let again = sim.nodes[b].node.stats().punch_attempts;
    sim.nodes[a].node.inject_candidates(pb, fresh);
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.nodes[b].node.stats().punch_attempts - again, 8);
    // Addresses that cannot be dialed are never tried: relayed paths,
    // unspecified, multicast, port 0.
    sim.run_for(PUNCH_WINDOW);
    let useless: Vec<SocketAddr> = vec![
        "[100::1]:4433".parse().unwrap(),
        "0.0.0.0:4433".parse().unwrap(),
        "224.0.0.251:5353".parse().unwrap(),
        "[fe80::1]:4433".parse().unwrap(),
        "203.0.113.99:0".parse().unwrap(),
    ];
    let attempts = sim.nodes[b].node.stats().punch_attempts;
    sim.nodes[a].node.inject_candidates(pb, useless);
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.nodes[b].node.stats().punch_attempts, attempts);
}

#[test]
fn candidates_on_a_direct_connection_are_not_dialed() {
    let mut sim = Sim::new(9, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let pb = sim.id(b);
    let addrs = vec!["203.0.113.1:4433".parse().unwrap()];
    sim.nodes[a].node.inject_candidates(pb, addrs);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[b].node.stats().punch_attempts, 0);
    assert!(
        sim.outside
            .iter()
            .all(|(_, to, _)| to.ip().to_string() != "203.0.113.1")
    );
}

#[test]
fn only_the_relay_can_answer_a_probe() {
    let mut sim = Sim::new(10, Link::lan());
    sim.add_relay(&relay_identity(), relay_addr());
    // The relay does not answer: the test plays it.
    sim.relays[0].stun = false;
    let nat = sim.add_nat(Mapping::EndpointIndependent);
    let a = sim.add_node_behind(Sim::config(1), nat);
    let now = sim.now;
    sim.nodes[a].node.add_relay(now, relay()).unwrap();
    sim.run_for(Duration::from_millis(100));
    let (from, request) = sim
        .outside
        .iter()
        .rev()
        .find(|(_, to, data)| *to == relay_addr() && stun::is_stun(data))
        .map(|(from, _, data)| (*from, data.clone()))
        .expect("a probe went to the relay");
    let id = stun::parse_binding_request(&request).unwrap();
    let lie: SocketAddr = "203.0.113.66:6666".parse().unwrap();
    // The right transaction id from another address; another id from the
    // relay's address: both dropped.
    sim.inject(
        a,
        "192.0.2.200:3340".parse().unwrap(),
        &stun::binding_response(id, lie),
    );
    let other = stun::TransactionId([0x55; 12]);
    sim.inject(a, relay_addr(), &stun::binding_response(other, lie));
    assert_eq!(sim.nodes[a].node.stats().stun_ignored, 2);
    assert!(!sim.nodes[a].node.candidates().contains(&lie));
    // The real answer is taken, once.
    let _ = from;
    sim.inject(a, relay_addr(), &stun::binding_response(id, lie));
    assert!(sim.nodes[a].node.candidates().contains(&lie));
    assert!(
        sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::AddressDiscovered { addr, .. } if *addr == lie))
    );
    let replay: SocketAddr = "203.0.113.77:7777".parse().unwrap();
    sim.inject(a, relay_addr(), &stun::binding_response(id, replay));
    assert!(
        !sim.nodes[a].node.candidates().contains(&replay),
        "an id answers once"
    );
}

#[test]
fn a_nat_rebinding_is_noticed_and_the_peers_go_direct_again() {
    let kinds = [Mapping::EndpointIndependent; 2];
    let (mut sim, a, b, _) = behind_nats(11, wan(), kinds);
    dial_through_relay(&mut sim, a, b);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    let nat = sim.nodes[b].nat.unwrap();
    let old = sim.nodes[b].node.candidates();
    sim.nats[nat].rebind();
    let rebound = sim.now;
    let found = sim.take_event(b, PROBE_INTERVAL + Duration::from_secs(5), |e| match e {
        Event::AddressDiscovered { addr, .. } => Some(*addr),
        _ => None,
    });
    let found = found.expect("the new mapping is discovered by the next probe");
    assert!(!old.contains(&found), "{found} is new");
    assert!(sim.now - rebound <= PROBE_INTERVAL + Duration::from_secs(1));
    assert!(sim.nodes[b].node.candidates().contains(&found));
    // QUIC follows a dialer whose address changed; a listener's new
    // address the dialer does not accept: then the connection ends and
    // the next dial goes through the relay and punches again.
    assert!(redial_until_direct(
        &mut sim,
        a,
        b,
        Duration::from_secs(120)
    ));
    let data = payload(8, 256 << 10);
    let received = sim
        .transfer(b, a, &data, Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(received == data);
}

#[test]
fn probes_repeat_at_the_interval_and_back_off_when_unanswered() {
    let mut sim = Sim::new(12, Link::lan());
    sim.add_relay(&relay_identity(), relay_addr());
    let a = sim.add_node(Sim::config(1));
    join_relay(&mut sim, a);
    let start: Instant = sim.now;
    sim.run_for(Duration::from_secs(101));
    let answered = sim.nodes[a].node.stats().probes_answered;
    // One at connect, then every 25 s: 4 more in 100 s.
    assert_eq!(answered, 5, "{:?}", sim.now - start);
    // Unanswered: 1 s, doubling up to the interval.
    sim.relays[0].stun = false;
    let sent = sim.nodes[a].node.stats().probes_sent;
    sim.run_for(Duration::from_secs(120));
    let more = sim.nodes[a].node.stats().probes_sent - sent;
    // Due at +25 (from the last answer), then +1, +2, +4, +8, +16, +25...
    assert!((5..=9).contains(&more), "{more} probes in 120 s");
}

#[test]
fn with_hole_punching_off_a_node_tells_no_address_and_stays_relayed() {
    // b does not punch: it sends no candidates and dials none of a's, so
    // behind NATs that would let them through, the two stay relayed.
    let mut sim = Sim::new(13, wan());
    sim.add_relay(&relay_identity(), relay_addr());
    let na = sim.add_nat(Mapping::EndpointIndependent);
    let nb = sim.add_nat(Mapping::EndpointIndependent);
    let a = sim.add_node_behind(Sim::config(1), na);
    let mut config = Sim::config(2);
    config.hole_punching = false;
    let b = sim.add_node_behind(config, nb);
    join_relay(&mut sim, a);
    join_relay(&mut sim, b);
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_secs(30));
    assert!(matches!(path(&sim, a, b), Some(PathKind::Relayed(_))));
    assert!(matches!(path(&sim, b, a), Some(PathKind::Relayed(_))));
    assert_eq!(
        sim.nodes[a].node.stats().punch_attempts,
        0,
        "b told a nothing"
    );
    assert_eq!(
        sim.nodes[b].node.stats().punch_attempts,
        0,
        "b dialed nothing"
    );
}

fn mapping() -> impl proptest::strategy::Strategy<Value = Mapping> {
    proptest::prop_oneof![
        proptest::strategy::Just(Mapping::EndpointIndependent),
        proptest::strategy::Just(Mapping::AddressDependent),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever the NATs and the loss on UDP, a transfer started through
    /// the relay arrives complete and in order (going direct or not), or
    /// ends with a typed error: never a hang, never corrupt data.
    #[test]
    fn across_nat_kinds_and_loss_data_arrives_whole_or_fails_typed(
        seed in proptest::prelude::any::<u64>(),
        ka in mapping(),
        kb in mapping(),
        loss in 0.0f64..0.05,
    ) {
        let link = Link { loss, jitter: Duration::from_millis(5), ..wan() };
        let mut sim = Sim::new(seed, link);
        sim.add_relay(&relay_identity(), relay_addr());
        let na = sim.add_nat(ka);
        let nb = sim.add_nat(kb);
        let a = sim.add_node_behind(Sim::config(1), na);
        let b = sim.add_node_behind(Sim::config(2), nb);
        for node in [a, b] {
            let now = sim.now;
            sim.nodes[node].node.add_relay(now, relay()).unwrap();
        }
        sim.run_for(Duration::from_secs(2));
        dial_through_relay(&mut sim, a, b);
        proptest::prop_assert!(sim.run_until_connected(a, b), "connects through the relay");
        let data = payload(seed, 256 << 10);
        match sim.transfer(a, b, &data, Duration::from_secs(300), |_| {}) {
            Ok(received) => proptest::prop_assert!(received == data, "complete and in order"),
            Err(pos_p2p_tests::sim::ReadEnd::TimedOut(n)) => {
                proptest::prop_assert!(false, "hung after {n} bytes")
            }
            // A typed end (a reset or a stream error) is an answer.
            Err(_) => {}
        }
        if ka == Mapping::AddressDependent && kb == Mapping::AddressDependent {
            proptest::prop_assert!(matches!(path(&sim, a, b), Some(PathKind::Relayed(_))));
        }
    }
}

#[test]
fn a_node_address_as_text_reaches_a_node_behind_a_nat() {
    let (mut sim, a, b, _) = behind_nats(14, wan(), [Mapping::EndpointIndependent; 2]);
    // b's address, as it would be shared in a link or a QR code.
    let text = sim.nodes[b].node.node_addr().to_string();
    eprintln!("{} characters: {text}", text.len());
    assert!(text.len() < 300, "{} characters", text.len());
    let addr: pos_p2p_protocol::node::PeerAddr = text.parse().unwrap();
    assert!(matches!(&addr, pos_p2p_protocol::node::PeerAddr::Node(n) if n.identity == sim.id(b)));
    // a knows nothing else of b; it keeps b connected.
    let now = sim.now;
    sim.nodes[a].node.add_manual_peer(now, addr, None);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    assert!(
        sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::Connected(info) if Sim::is_relayed_addr(info.addr))),
        "through b's relay first"
    );
}

#[test]
fn a_device_that_moved_is_found_again_through_its_relay() {
    // a and b meet on a LAN, both using the relay: each tells the other.
    let mut sim = Sim::new(15, wan());
    sim.add_relay(&relay_identity(), relay_addr());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    join_relay(&mut sim, a);
    join_relay(&mut sim, b);
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let pb = sim.id(b);
    sim.run_for(Duration::from_secs(1));
    let relayed = |sim: &Sim| {
        sim.nodes[a]
            .node
            .dial_addrs(&pb, &[])
            .into_iter()
            .any(Sim::is_relayed_addr)
    };
    assert!(relayed(&sim), "a learned b's relay");
    // b moves behind a NAT: its old address reaches nobody, the
    // connection ends, and a dials b again as it knows it.
    let nat = sim.add_nat(Mapping::EndpointIndependent);
    sim.move_node(b, nat);
    assert!(sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[a].node.peer(&pb).is_none()
    }));
    let now = sim.now;
    sim.nodes[a].node.dial_peer(now, pb, &[]).unwrap();
    assert!(sim.run_until(Duration::from_secs(20), |s| {
        s.nodes[a].node.peer(&pb).is_some()
    }));
    let data = payload(16, 64 << 10);
    assert!(
        sim.transfer(a, b, &data, Duration::from_secs(30), |_| {})
            .unwrap()
            == data
    );
}

#[test]
fn a_relay_restart_during_a_relayed_64_mib_transfer_loses_no_byte() {
    // Symmetric NATs: the transfer stays on the relay, which restarts in
    // the middle of it.
    let (mut sim, a, b, _) = behind_nats(16, wan(), [Mapping::AddressDependent; 2]);
    // Without the relay's default byte budget (the nodes reconnect).
    sim.restart_relay_with(0, &relay_identity(), unlimited_relay());
    sim.run_for(Duration::from_secs(5));
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until(Duration::from_secs(20), |s| path(s, a, b).is_some()));
    let data = payload(17, 64 << 20);
    let mut restarted = false;
    let received = sim
        .transfer(a, b, &data, Duration::from_secs(600), |s| {
            let forwarded = s.relays[0].endpoint.stats().forwarded;
            if !restarted && forwarded > 20_000 {
                restarted = true;
                s.restart_relay_with(0, &relay_identity(), unlimited_relay());
            }
        })
        .unwrap();
    assert!(restarted, "the relay restarted mid-transfer");
    assert!(received == data, "every byte, in order");
    assert!(matches!(path(&sim, a, b), Some(PathKind::Relayed(_))));
}

/// A relay without a byte budget (the default is 1 MiB/s per node).
fn unlimited_relay() -> pos_p2p_protocol::relay::RelayConfig {
    let mut config = pos_p2p_protocol::relay::RelayConfig::default();
    config.bytes_per_second = 1 << 30;
    config.burst = 64 << 20;
    config
}

#[test]
fn a_nat_rebinding_during_a_direct_transfer_loses_no_byte() {
    // Each side's NAT in turn forgets its mappings in the middle of a
    // 64 MiB transfer on the direct route. The new port reaches the other
    // side's port-restricted NAT from an address it never sent to, so the
    // route stops answering: within PATH_TIMEOUT the connection's
    // datagrams go through the relay (QUIC retransmits what was lost, the
    // connection never changes), the next probe finds the new mapping,
    // and the peers go direct again.
    for rebound in 0..2 {
        let kinds = [Mapping::EndpointIndependent; 2];
        let (mut sim, a, b, _) = behind_nats(17 + rebound as u64, wan(), kinds);
        dial_through_relay(&mut sim, a, b);
        assert!(
            sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
                && is_direct(s, b, a))
        );
        let pb = sim.id(b);
        let conn = sim.nodes[a].node.peer(&pb).unwrap().connection;
        let nat = sim.nodes[[a, b][rebound]].nat.unwrap();
        let data = payload(18, 64 << 20);
        let start = sim.now;
        let mut done = false;
        // When a went back to the relay, and when it was direct again.
        let (mut relayed, mut again) = (None, None);
        let received = sim
            .transfer(a, b, &data, Duration::from_secs(600), |s| {
                if !done && s.now - start > Duration::from_millis(300) {
                    done = true;
                    s.nats[nat].rebind();
                }
                let direct = is_direct(s, a, b);
                if done && !direct && relayed.is_none() {
                    relayed = Some(s.now - start);
                }
                if relayed.is_some() && direct && again.is_none() {
                    again = Some(s.now - start);
                }
            })
            .unwrap();
        assert!(done);
        assert!(received == data, "every byte, in order");
        assert_eq!(
            sim.nodes[a].node.peer(&pb).map(|p| p.connection),
            Some(conn),
            "the same connection throughout"
        );
        // The route is given up PATH_TIMEOUT after its last answer; the
        // node then asks its relays where it is at once (not at the next
        // probe, 25 s on): direct again within a few seconds.
        let (relayed, again) = (
            relayed.unwrap(),
            again.expect("direct again during the transfer"),
        );
        assert!(relayed <= Duration::from_millis(300) + PATH_TIMEOUT + Duration::from_millis(100));
        assert!(
            again - relayed < Duration::from_secs(5),
            "direct again {again:?}"
        );
        let lost = sim.nodes[a].node.stats().routes_lost + sim.nodes[b].node.stats().routes_lost;
        assert!(lost > 0, "the old route was given up");
        let moved = sim.now;
        assert!(
            sim.run_until(PROBE_INTERVAL * 2, |s| is_direct(s, a, b)
                && is_direct(s, b, a)),
            "direct again after the next probe"
        );
        eprintln!(
            "{} rebound at 300 ms: relayed at {relayed:?}, direct again at {again:?}; \
             64 MiB in {:?} of virtual time, no byte lost",
            ["a", "b"][rebound],
            moved - start,
        );
    }
}

#[test]
fn keep_alives_hold_a_nat_mapping_open_unless_it_expires_sooner() {
    // Mappings that live 30 s without outgoing traffic: the direct
    // connection's keep-alives (every 10 s) hold them; two idle minutes
    // later it is the same connection.
    let kinds = [Mapping::EndpointIndependent; 2];
    let (mut sim, a, b, _) = behind_nats(20, wan(), kinds);
    dial_through_relay(&mut sim, a, b);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    let pb = sim.id(b);
    // The race of both sides' dials settles (one direct connection left).
    sim.run_for(Duration::from_secs(15));
    let conn = sim.nodes[a].node.peer(&pb).unwrap().connection;
    assert_eq!(sim.nodes[a].node.connection_count(), 1);
    sim.run_for(Duration::from_secs(120));
    assert_eq!(
        sim.nodes[a].node.peer(&pb).map(|p| p.connection),
        Some(conn)
    );
    assert!(is_direct(&sim, a, b));
    // The route's pings keep it: it was never given up while idle.
    assert_eq!(sim.nodes[a].node.stats().routes_lost, 0);
    assert_eq!(sim.nodes[b].node.stats().routes_lost, 0);
    // A NAT that forgets a mapping after 2 s idle outruns the route's
    // pings (every 3 s): the direct route dies, and the same connection
    // goes on through the relay.
    let nat = sim.nodes[b].nat.unwrap();
    sim.nats[nat].timeout = Duration::from_secs(2);
    let lost = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[a].node.stats().routes_lost > 0
    });
    assert!(lost, "the mapping expired under the route");
    let data = payload(21, 256 << 10);
    let received = sim
        .transfer(a, b, &data, Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(received == data);
    assert_eq!(
        sim.nodes[a].node.peer(&pb).map(|p| p.connection),
        Some(conn),
        "the same connection throughout"
    );
}

#[test]
fn a_relay_added_while_connected_is_told_to_connected_peers() {
    let mut sim = Sim::new(21, Link::lan());
    sim.add_relay(&relay_identity(), relay_addr());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let pa = sim.id(a);
    let relayed = |sim: &Sim| {
        sim.nodes[b]
            .node
            .dial_addrs(&pa, &[])
            .into_iter()
            .any(Sim::is_relayed_addr)
    };
    // b uses the relay; a starts using it only now.
    join_relay(&mut sim, b);
    sim.run_for(Duration::from_secs(1));
    assert!(!relayed(&sim), "a uses no relay yet");
    join_relay(&mut sim, a);
    sim.run_for(Duration::from_secs(1));
    assert!(relayed(&sim), "b learned a's relay when a added it");
}

#[test]
fn a_direct_connection_beats_a_relayed_one_whoever_dialed() {
    // Without the direct rule, of a relayed connection dialed by the
    // smaller identity and a direct one dialed by the other node, both
    // would keep the relayed one (§7.5's dialer rule).
    let mut sim = Sim::new(22, Link::lan());
    sim.add_relay(&relay_identity(), relay_addr());
    let mut configs = [Sim::config(1), Sim::config(2)];
    for config in &mut configs {
        // Only the connections this test makes.
        config.hole_punching = false;
    }
    let [c1, c2] = configs;
    let n1 = sim.add_node(c1);
    let n2 = sim.add_node(c2);
    let (small, large) = if sim.id(n1) < sim.id(n2) {
        (n1, n2)
    } else {
        (n2, n1)
    };
    join_relay(&mut sim, small);
    join_relay(&mut sim, large);
    dial_through_relay(&mut sim, small, large);
    assert!(sim.run_until_connected(small, large));
    assert!(matches!(
        path(&sim, small, large),
        Some(PathKind::Relayed(_))
    ));
    sim.connect(large, small);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| is_direct(s, small, large)
            && is_direct(s, large, small)),
        "{:?} / {:?}",
        path(&sim, small, large),
        path(&sim, large, small)
    );
    // Each side was told once, with where the peer is now.
    let changes = |sim: &Sim, node: usize| -> Vec<PathKind> {
        sim.nodes[node]
            .history
            .iter()
            .filter_map(|e| match e {
                Event::PathChanged { path, .. } => Some(*path),
                _ => None,
            })
            .collect()
    };
    for (node, peer) in [(small, large), (large, small)] {
        assert_eq!(
            changes(&sim, node),
            vec![PathKind::Direct(sim.nodes[peer].addr)],
            "node {node}"
        );
    }
    // Another direct connection (dialed by the smaller identity, so it is
    // kept) changes the connection, not the kind of path: no news.
    sim.connect(small, large);
    sim.run_for(Duration::from_secs(5));
    for node in [small, large] {
        assert_eq!(changes(&sim, node).len(), 1, "node {node}");
    }
}

#[test]
fn local_candidates_are_distinct_dialable_and_at_most_eight() {
    let mut sim = Sim::new(23, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let mut addrs: Vec<SocketAddr> = vec![
        "192.0.2.1:4433".parse().unwrap(),
        "192.0.2.1:4433".parse().unwrap(),
        "0.0.0.0:4433".parse().unwrap(),
        "[fe80::1]:4433".parse().unwrap(),
    ];
    addrs.extend((2..=12u8).map(|i| SocketAddr::from(([192, 0, 2, i], 4433))));
    let now = sim.now;
    sim.nodes[a].node.set_local_addrs(now, &addrs);
    let expected: Vec<SocketAddr> = (1..=8u8)
        .map(|i| SocketAddr::from(([192, 0, 2, i], 4433)))
        .collect();
    assert_eq!(sim.nodes[a].node.candidates(), expected);
    assert_eq!(sim.nodes[a].node.node_addr().addrs, expected);
}

#[test]
fn an_answer_that_raced_the_switch_to_direct_can_still_be_read() {
    // A request on the relayed connection; the answer arrives, but a reads
    // it only after the switch to direct, when the relayed connection has
    // been given up on both sides and b is done with its stream.
    let kinds = [Mapping::EndpointIndependent; 2];
    let (mut sim, a, b, _) = behind_nats(24, wan(), kinds);
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until(Duration::from_secs(10), |s| path(s, a, b).is_some()));
    let stream = sim.open_stream(a, b).unwrap();
    sim.nodes[a].node.write(stream, b"ping").unwrap();
    sim.nodes[a].node.finish(stream).unwrap();
    let at_b = sim.accept_stream(b, Duration::from_secs(10)).unwrap();
    assert_eq!(
        sim.read_to_end(b, at_b, Duration::from_secs(10)).unwrap(),
        b"ping"
    );
    sim.write_all(b, at_b, b"pong").unwrap();
    sim.nodes[b].node.release(at_b);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    sim.run_for(pos_p2p_protocol::node::DRAIN_GRACE / 2);
    assert_eq!(
        sim.read_to_end(a, stream, Duration::from_secs(1)).unwrap(),
        b"pong",
        "the answer is still there"
    );
}

/// Two nodes behind endpoint-independent NATs, connected through the relay
/// and then direct (both sides), and the connection's id at `a`.
fn direct_pair(seed: u64) -> (Sim, usize, usize) {
    let (mut sim, a, b, _) = behind_nats(seed, wan(), [Mapping::EndpointIndependent; 2]);
    dial_through_relay(&mut sim, a, b);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| is_direct(s, a, b)
            && is_direct(s, b, a))
    );
    (sim, a, b)
}

fn packet(kind: PacketKind, token: [u8; 16], txid: [u8; 12]) -> [u8; 33] {
    DirectPacket { kind, token, txid }.to_bytes()
}

#[test]
fn only_the_peer_of_a_connection_can_ping_or_answer_on_it() {
    let (mut sim, a, b) = direct_pair(30);
    let pb = sim.id(b);
    let (own, peers, _) = sim.nodes[a].node.path_secrets(&pb).unwrap();
    let attacker: SocketAddr = "203.0.113.66:5000".parse().unwrap();
    let before = sim.nodes[a].node.stats().clone();
    let route = path(&sim, a, b);
    // A ping with a made-up token: not answered.
    sim.inject(a, attacker, &packet(PacketKind::Ping, [0x42; 16], [1; 12]));
    // a's own ping reflected back to it: its own token is not the peer's.
    sim.inject(a, attacker, &packet(PacketKind::Ping, own, [2; 12]));
    // A pong with the peer's token but to no ping a sent.
    sim.inject(a, attacker, &packet(PacketKind::Pong, peers, [3; 12]));
    let after = sim.nodes[a].node.stats().clone();
    assert_eq!(
        after.path_pongs_sent, before.path_pongs_sent,
        "nothing answered"
    );
    assert_eq!(after.path_packets_ignored, before.path_packets_ignored + 3);
    assert_eq!(path(&sim, a, b), route, "the route is unchanged");
    // A pong with the right token and the id of a's pending ping, but from
    // another address than the ping went to: not a route.
    let now = sim.now;
    sim.nodes[a]
        .node
        .set_local_addrs(now, &["10.0.1.77:4433".parse().unwrap()]);
    sim.flush();
    let (_, _, pending) = sim.nodes[a].node.path_secrets(&pb).unwrap();
    let (to, txid) = *pending.first().expect("a pings b's candidates again");
    assert_ne!(to, attacker);
    sim.inject(a, attacker, &packet(PacketKind::Pong, peers, txid));
    assert!(
        !is_direct(&sim, a, b),
        "a pong from elsewhere proves nothing"
    );
    assert_eq!(
        sim.nodes[a].node.stats().path_pongs_received,
        after.path_pongs_received
    );
    // The peer's token is what makes a ping: that is answered, even from
    // a new address (the peer's NAT may map it anywhere).
    sim.inject(a, attacker, &packet(PacketKind::Ping, peers, [4; 12]));
    assert_eq!(
        sim.nodes[a].node.stats().path_pongs_sent,
        before.path_pongs_sent + 1
    );
}

#[test]
fn a_peer_cannot_make_a_node_send_more_than_its_pong_budget() {
    let (mut sim, a, b) = direct_pair(31);
    let pb = sim.id(b);
    let (_, peers, _) = sim.nodes[a].node.path_secrets(&pb).unwrap();
    let before = sim.nodes[a].node.stats().path_pongs_sent;
    for i in 0..200u32 {
        let from = SocketAddr::from(([203, 0, 113, (i % 250) as u8 + 1], 7000));
        let mut txid = [0; 12];
        txid[..4].copy_from_slice(&i.to_be_bytes());
        sim.inject(a, from, &packet(PacketKind::Ping, peers, txid));
    }
    let sent = sim.nodes[a].node.stats().path_pongs_sent - before;
    assert!(
        sent <= MAX_PONGS as u64 && sent + 8 >= MAX_PONGS as u64,
        "{sent} pongs for 200 pings (budget {MAX_PONGS} per window, some spent on b's own pings)"
    );
    // What a remembers of them is bounded: the addresses whose datagrams
    // reach the connection, the pings back awaiting an answer.
    assert!(sim.nodes[a].node.routed_addr_count() <= MAX_HEARD_ADDRS);
    let (_, _, pending) = sim.nodes[a].node.path_secrets(&pb).unwrap();
    assert!(pending.len() <= MAX_PENDING_PINGS);
    sim.run_for(PUNCH_WINDOW);
    let again = sim.nodes[a].node.stats().path_pongs_sent;
    sim.inject(
        a,
        "203.0.113.9:7000".parse().unwrap(),
        &packet(PacketKind::Ping, peers, [9; 12]),
    );
    assert_eq!(
        sim.nodes[a].node.stats().path_pongs_sent,
        again + 1,
        "the budget is back"
    );
}

#[test]
fn a_new_connection_from_a_routed_address_is_a_direct_one() {
    // b dials a at the address its route uses: a sees a direct connection
    // (its handshake is not taken for the relayed connection's traffic),
    // which beats the relayed one (§7.5).
    let (mut sim, a, b) = direct_pair(32);
    let (pa, pb) = (sim.id(a), sim.id(b));
    let Some(PathKind::Direct(to_a)) = path(&sim, b, a) else {
        unreachable!()
    };
    let now = sim.now;
    sim.nodes[b].node.connect(now, to_a, Some(pa)).unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.nodes[a]
            .node
            .peer(&pb)
            .is_some_and(|p| !Sim::is_relayed_addr(p.addr))
    }));
    let data = payload(32, 256 << 10);
    assert!(
        sim.transfer(a, b, &data, Duration::from_secs(30), |_| {})
            .unwrap()
            == data
    );
}

#[test]
fn a_peer_cannot_take_over_another_connections_address() {
    // b (who holds the relayed connection's token) pings a "from" the
    // address of c, a node a is directly connected to: a answers, but
    // c's datagrams stay c's connection's.
    let (mut sim, a, b) = direct_pair(33);
    let c = sim.add_node(Sim::config(3));
    sim.connect(a, c);
    assert!(sim.run_until_connected(a, c));
    let (pb, pc) = (sim.id(b), sim.id(c));
    let (_, peers, _) = sim.nodes[a].node.path_secrets(&pb).unwrap();
    let at_c = sim.nodes[a].node.peer(&pc).unwrap().addr;
    sim.inject(a, at_c, &packet(PacketKind::Ping, peers, [5; 12]));
    let data = payload(33, 256 << 10);
    let received = sim
        .transfer(c, a, &data, Duration::from_secs(30), |_| {})
        .unwrap();
    assert!(received == data);
    assert_eq!(sim.nodes[a].node.peer(&pc).unwrap().addr, at_c);
}

#[test]
fn a_direct_path_that_opens_later_is_found_by_the_next_round_of_pings() {
    // Nothing gets through directly at first (the candidates' pings are
    // lost); once the path works, the next round (every PUNCH_WINDOW while
    // relayed) finds it, with no new candidates from anyone.
    let (mut sim, a, b, _) = behind_nats(34, wan(), [Mapping::EndpointIndependent; 2]);
    sim.partition(a, b);
    dial_through_relay(&mut sim, a, b);
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_secs(3));
    assert!(!is_direct(&sim, a, b) && !is_direct(&sim, b, a));
    sim.heal(a, b);
    let healed = sim.now;
    assert!(
        sim.run_until(PUNCH_WINDOW + Duration::from_secs(1), |s| is_direct(
            s, a, b
        ) && is_direct(
            s, b, a
        )),
        "direct within a window of the path opening"
    );
    eprintln!("direct {:?} after the path opened", sim.now - healed);
}

#[test]
fn a_device_that_changes_networks_during_a_transfer_loses_no_byte() {
    // Each side in turn joins another network (behind another NAT) in the
    // middle of a 64 MiB transfer on the direct route: it goes back to the
    // relay at once (its addresses changed), the transfer carries on there
    // on the same connection, and the two go direct again at its new
    // address.
    for mover in 0..2 {
        let (mut sim, a, b) = direct_pair(40 + mover as u64);
        let pb = sim.id(b);
        let conn = sim.nodes[a].node.peer(&pb).unwrap().connection;
        let node = [a, b][mover];
        let other = sim.add_nat(Mapping::EndpointIndependent);
        let data = payload(40, 64 << 20);
        let start = sim.now;
        let mut moved = false;
        let received = sim
            .transfer(a, b, &data, Duration::from_secs(600), |s| {
                if !moved && s.now - start > Duration::from_millis(300) {
                    moved = true;
                    s.move_node(node, other);
                    let peer = [b, a][mover];
                    assert!(!is_direct(s, node, peer), "back to the relay at once");
                }
            })
            .unwrap();
        assert!(moved);
        assert!(received == data, "every byte, in order");
        assert_eq!(
            sim.nodes[a].node.peer(&pb).map(|p| p.connection),
            Some(conn),
            "the same connection throughout"
        );
        let public = sim.nats[other].public_ip;
        let peer = [b, a][mover];
        assert!(
            sim.run_until(Duration::from_secs(30), |s| {
                matches!(path(s, peer, node), Some(PathKind::Direct(addr)) if addr.ip() == public)
                    && is_direct(s, node, peer)
            }),
            "direct again at the new network's address"
        );
        eprintln!(
            "{} moved at 300 ms: 64 MiB in {:?} of virtual time, no byte lost",
            ["a", "b"][mover],
            sim.now - start
        );
    }
}

#[test]
fn the_same_addresses_in_another_order_are_no_network_change() {
    let (mut sim, a, b) = direct_pair(35);
    let addrs: Vec<SocketAddr> = vec![
        "10.0.1.2:4433".parse().unwrap(),
        "192.168.7.2:4433".parse().unwrap(),
    ];
    let now = sim.now;
    sim.nodes[a].node.set_local_addrs(now, &addrs);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.run_until(Duration::from_secs(2), |s| is_direct(s, a, b)));
    let lost = sim.nodes[a].node.stats().routes_lost;
    let reversed: Vec<SocketAddr> = addrs.iter().rev().copied().collect();
    let now = sim.now;
    sim.nodes[a].node.set_local_addrs(now, &reversed);
    assert!(is_direct(&sim, a, b), "the route stays");
    assert_eq!(sim.nodes[a].node.stats().routes_lost, lost);
}

#[test]
fn the_addresses_of_ended_connections_are_forgotten() {
    // What keeps a route from taking an address the node has a connection
    // at is kept for live connections only (it would grow for ever, and
    // stop routes from using an address whose connection is gone).
    let mut sim = Sim::new(36, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let c = sim.add_node(Sim::config(3));
    for peer in [b, c] {
        sim.connect(a, peer);
        assert!(sim.run_until_connected(a, peer));
    }
    assert_eq!(sim.nodes[a].node.own_addr_count(), 2);
    let pb = sim.id(b);
    let now = sim.now;
    sim.nodes[a].node.close(now, &pb, "done");
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.nodes[a].node.connection_count() == 1
    }));
    assert_eq!(sim.nodes[a].node.own_addr_count(), 1);
}
