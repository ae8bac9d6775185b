//! Manual peers in the core, in virtual time: redialed with the documented
//! backoff (seeded jitter, so a run replays exactly), back after a
//! partition, host names resolved by the driver with late answers ignored.

use std::time::Duration;

use pos_p2p_protocol::node::{
    DisconnectReason, Event, FIRST_RETRY, ManualError, ManualPeer, ManualStatus, NodeConfig,
    PeerAddr, RESOLVE_TIMEOUT, ResolveError, STABLE,
};
use pos_p2p_tests::sim::{Link, Sim};

/// A node that gives up a handshake after 1 s (so failed attempts are
/// quick), and sees a silent peer gone after 3 s.
fn quick(n: u8) -> NodeConfig {
    let mut config = Sim::config(n);
    config.timeouts.handshake = Duration::from_secs(1);
    config.timeouts.idle = Duration::from_secs(3);
    config.timeouts.keep_alive = Duration::from_secs(1);
    config
}

fn status(sim: &Sim, index: usize) -> ManualPeer {
    let peers = sim.nodes[index].node.manual_peers();
    assert_eq!(peers.len(), 1);
    peers[0].clone()
}

/// When each of the first `n` attempts of node 0 to reach node 1 failed,
/// since the peer was added, with the link cut.
fn failure_times(rng_seed: [u8; 32], n: usize) -> Vec<Duration> {
    let mut sim = Sim::new(5, Link::lan());
    let mut config = quick(1);
    config.rng_seed = rng_seed;
    let a = sim.add_node(config);
    let b = sim.add_node(quick(2));
    sim.partition(a, b);
    let (addr, idb, start) = (sim.nodes[b].addr, sim.id(b), sim.now);
    sim.nodes[a]
        .node
        .add_manual_peer(start, PeerAddr::Addr(addr), Some(idb));
    (0..n)
        .map(|_| {
            sim.take_event(a, Duration::from_secs(120), |e| match e {
                Event::ConnectFailed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .expect("an attempt fails");
            sim.now - start
        })
        .collect()
}

#[test]
fn a_manual_peer_is_redialed_with_the_documented_backoff() {
    let times = failure_times([1; 32], 6);
    // The first attempt starts at once and fails at the handshake timeout.
    assert_eq!(times[0], Duration::from_secs(1));
    // Then each waits 75–100 % of 1 s, 2 s, 4 s, 8 s, 16 s before the
    // next attempt, which fails a handshake timeout later.
    for (k, pair) in times.windows(2).enumerate() {
        let waited = pair[1] - pair[0] - Duration::from_secs(1);
        let nominal = Duration::from_secs(1 << k);
        assert!(
            waited >= nominal * 3 / 4 && waited <= nominal,
            "attempt {}: waited {waited:?}, nominal {nominal:?}",
            k + 2
        );
    }
    // The jitter comes from the node's seed: the same seed, the same
    // schedule; another seed, another one.
    assert_eq!(failure_times([1; 32], 6), times);
    assert_ne!(failure_times([2; 32], 6), times);
}

#[test]
fn a_manual_peer_comes_back_after_a_partition() {
    let mut sim = Sim::new(6, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    let (addr, idb, now) = (sim.nodes[b].addr, sim.id(b), sim.now);
    sim.nodes[a]
        .node
        .add_manual_peer(now, PeerAddr::Addr(addr), None);
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_millis(10));
    let connected = status(&sim, a);
    assert_eq!(connected.status, ManualStatus::Connected);
    assert_eq!(connected.identity, Some(idb), "learned from the handshake");
    assert!(sim.nodes[a].node.book().addrs(&idb).is_some());
    // The link is cut: the connection times out, the peer waits to be
    // dialed again, with the reason.
    sim.partition(a, b);
    let lost = sim.take_event(a, Duration::from_secs(10), |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(lost, Some(DisconnectReason::TimedOut));
    sim.run_for(Duration::from_millis(1));
    assert!(
        matches!(
            status(&sim, a).status,
            ManualStatus::Waiting {
                last_error: ManualError::Disconnected,
                ..
            }
        ),
        "{:?}",
        status(&sim, a)
    );
    // Healed: it is back within the first retry and a round trip.
    sim.heal(a, b);
    let healed = sim.now;
    assert!(sim.run_until(Duration::from_secs(3), |sim| {
        sim.nodes[a].node.peer(&idb).is_some()
    }));
    assert!(
        sim.now - healed <= Duration::from_millis(1010),
        "{:?}",
        sim.now - healed
    );
    sim.run_for(Duration::from_millis(10));
    assert_eq!(status(&sim, a).status, ManualStatus::Connected);
}

/// The host-name peer's `ResolveHost` requests so far.
fn resolve_requests(sim: &Sim, index: usize) -> Vec<(PeerAddr, u64)> {
    sim.nodes[index]
        .history
        .iter()
        .filter_map(|e| match e {
            Event::ResolveHost { addr, generation } => Some((addr.clone(), *generation)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_host_name_is_resolved_by_the_driver_and_late_answers_are_ignored() {
    let mut sim = Sim::new(7, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    let (addr, idb) = (sim.nodes[b].addr, sim.id(b));
    let host: PeerAddr = "peer-b.example:4433".parse().unwrap();
    let now = sim.now;
    sim.nodes[a]
        .node
        .add_manual_peer(now, host.clone(), Some(idb));
    sim.flush();
    assert_eq!(resolve_requests(&sim, a), vec![(host.clone(), 1)]);
    assert_eq!(status(&sim, a).status, ManualStatus::Resolving);
    // The resolver never answers: the attempt fails at the deadline.
    let asked = sim.now;
    assert!(
        sim.run_until(RESOLVE_TIMEOUT + Duration::from_secs(1), |sim| {
            matches!(status(sim, a).status, ManualStatus::Waiting { .. })
        })
    );
    assert_eq!(sim.now - asked, RESOLVE_TIMEOUT);
    let ManualStatus::Waiting { last_error, .. } = status(&sim, a).status else {
        unreachable!()
    };
    assert_eq!(last_error, ManualError::ResolveTimedOut);
    // Its answer, late, is ignored: nothing is dialed.
    let now = sim.now;
    sim.nodes[a]
        .node
        .handle_resolved(now, &host, 1, Ok(vec![addr]));
    assert_eq!(sim.nodes[a].node.connection_count(), 0);
    // The next attempt asks again; an answer without an address fails it.
    assert!(sim.run_until(Duration::from_secs(2), |sim| {
        resolve_requests(sim, a).len() == 2
    }));
    let (asked, second) = resolve_requests(&sim, a)[1].clone();
    assert_eq!(asked, host);
    assert!(second > 1, "a new generation");
    let now = sim.now;
    sim.nodes[a]
        .node
        .handle_resolved(now, &host, second, Ok(Vec::new()));
    let ManualStatus::Waiting { last_error, .. } = status(&sim, a).status else {
        panic!("{:?}", status(&sim, a))
    };
    assert_eq!(last_error, ManualError::Resolve(ResolveError::NoAddress));
    // The third is answered in time, and the peer connects.
    assert!(sim.run_until(Duration::from_secs(3), |sim| {
        resolve_requests(sim, a).len() == 3
    }));
    let (_, third) = resolve_requests(&sim, a)[2].clone();
    assert!(third > second);
    let now = sim.now;
    sim.nodes[a]
        .node
        .handle_resolved(now, &host, third, Ok(vec![addr]));
    assert!(sim.run_until_connected(a, b));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(status(&sim, a).status, ManualStatus::Connected);
}

#[test]
fn a_removed_manual_peer_is_not_dialed_again() {
    let mut sim = Sim::new(8, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    sim.partition(a, b);
    let (addr, idb, now) = (sim.nodes[b].addr, sim.id(b), sim.now);
    let peer = PeerAddr::Addr(addr);
    sim.nodes[a]
        .node
        .add_manual_peer(now, peer.clone(), Some(idb));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.nodes[a].node.remove_manual_peer(&peer), Some(Some(idb)));
    assert_eq!(sim.nodes[a].node.remove_manual_peer(&peer), None);
    let dials = |sim: &Sim| {
        sim.nodes[a]
            .history
            .iter()
            .filter(|e| matches!(e, Event::ConnectFailed { .. }))
            .count()
    };
    sim.run_for(Duration::from_secs(2));
    let before = dials(&sim);
    sim.run_for(Duration::from_secs(60));
    assert_eq!(dials(&sim), before, "no attempt after removal");
    assert!(
        sim.nodes[a]
            .node
            .poll_timeout()
            .is_none_or(|(at, _)| at > sim.now)
    );
}

#[test]
fn a_node_that_shuts_down_forgets_its_manual_peers() {
    let mut sim = Sim::new(9, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    let (addr, idb, now) = (sim.nodes[b].addr, sim.id(b), sim.now);
    sim.nodes[a]
        .node
        .add_manual_peer(now, PeerAddr::Addr(addr), Some(idb));
    assert!(sim.run_until_connected(a, b));
    let now = sim.now;
    sim.nodes[a].node.shutdown(now);
    assert!(sim.nodes[a].node.manual_peers().is_empty());
    // Nor does it take new ones, or wake up for them.
    sim.nodes[a]
        .node
        .add_manual_peer(now, PeerAddr::Addr(addr), Some(idb));
    assert!(sim.nodes[a].node.manual_peers().is_empty());
    sim.run_for(Duration::from_secs(10));
    assert!(
        sim.nodes[a]
            .node
            .poll_timeout()
            .is_none_or(|(_, reason)| reason != pos_p2p_protocol::node::TimeoutReason::Manual)
    );
}

#[test]
fn peer_addresses_parse_as_documented() {
    let parse = |s: &str| s.parse::<PeerAddr>();
    assert_eq!(
        parse("192.0.2.1:4433"),
        Ok(PeerAddr::Addr("192.0.2.1:4433".parse().unwrap()))
    );
    assert_eq!(
        parse("[2001:db8::1]:4433"),
        Ok(PeerAddr::Addr("[2001:db8::1]:4433".parse().unwrap()))
    );
    assert_eq!(
        parse("laptop.local:4433"),
        Ok(PeerAddr::Host {
            host: "laptop.local".into(),
            port: 4433
        })
    );
    // The longest host name DNS allows, and one character more.
    let longest = format!("{}:1", "a".repeat(253));
    assert!(parse(&longest).is_ok());
    let too_long = format!("{}:1", "a".repeat(254));
    assert!(parse(&too_long).is_err());
    // Shown as written.
    for text in ["192.0.2.1:4433", "[2001:db8::1]:4433", "laptop.local:4433"] {
        assert_eq!(parse(text).unwrap().to_string(), text);
    }
    // No host, a character no host name has, no port, a bad port.
    for bad in [
        ":4433",
        "bad_host:1",
        "two words:1",
        "no-port",
        "host:x",
        "host:70000",
    ] {
        assert!(parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn adding_a_manual_peer_again_updates_the_identity_it_must_have() {
    let mut sim = Sim::new(9, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    let (addr, idb, now) = (sim.nodes[b].addr, sim.id(b), sim.now);
    let stranger = pos_p2p_protocol::Identity::from_bytes(&[99; 32]).to_remote_identity();
    let peer = PeerAddr::Addr(addr);
    // First added with the wrong identity (b cannot prove it), then with
    // b's own: the second call is what counts, and the peer connects.
    sim.nodes[a]
        .node
        .add_manual_peer(now, peer.clone(), Some(stranger));
    assert_eq!(status(&sim, a).expected, Some(stranger));
    let now = sim.now;
    sim.nodes[a]
        .node
        .add_manual_peer(now, peer.clone(), Some(idb));
    assert_eq!(status(&sim, a).expected, Some(idb));
    assert!(sim.run_until(Duration::from_secs(120), |sim| {
        sim.nodes[a].node.peer(&sim.id(b)).is_some()
    }));
    assert_eq!(status(&sim, a).identity, Some(idb));
    // Added again without an identity: whatever answers there will do.
    let now = sim.now;
    sim.nodes[a].node.add_manual_peer(now, peer, None);
    assert_eq!(status(&sim, a).expected, None);
    assert_eq!(
        status(&sim, a).identity,
        Some(idb),
        "what it proved is kept"
    );
}

/// The manual peer at `addr` of node `index`.
fn status_of(sim: &Sim, index: usize, addr: &PeerAddr) -> ManualPeer {
    sim.nodes[index]
        .node
        .manual_peers()
        .into_iter()
        .find(|p| &p.addr == addr)
        .expect("a manual peer at that address")
}

#[test]
fn a_resolve_times_out_at_its_deadline_whatever_else_the_manual_peers_do() {
    let mut sim = Sim::new(11, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    let c = sim.add_node(quick(3));
    // Another manual peer, unreachable: its attempts and retries step the
    // manual peers every second or so while the host name is resolved.
    sim.partition(a, c);
    let (addr_c, idc, idb, now) = (sim.nodes[c].addr, sim.id(c), sim.id(b), sim.now);
    sim.nodes[a]
        .node
        .add_manual_peer(now, PeerAddr::Addr(addr_c), Some(idc));
    let host: PeerAddr = "peer-b.example:4433".parse().unwrap();
    sim.nodes[a]
        .node
        .add_manual_peer(now, host.clone(), Some(idb));
    sim.flush();
    assert_eq!(status_of(&sim, a, &host).status, ManualStatus::Resolving);
    let asked = sim.now;
    assert!(
        sim.run_until(RESOLVE_TIMEOUT + Duration::from_secs(1), |sim| {
            matches!(
                status_of(sim, a, &host).status,
                ManualStatus::Waiting { .. }
            )
        })
    );
    assert_eq!(sim.now - asked, RESOLVE_TIMEOUT);
    let failed = sim.nodes[a]
        .history
        .iter()
        .filter(|e| matches!(e, Event::ConnectFailed { .. }))
        .count();
    assert!(failed >= 2, "the other peer was tried meanwhile ({failed})");
}

/// Node 0's failed attempts since its last stable connection, once it
/// waits again after the link to node 1 was cut.
fn failures_after_cut(sim: &mut Sim, a: usize, b: usize) -> (u32, Duration) {
    sim.partition(a, b);
    let lost = sim.take_event(a, Duration::from_secs(10), |e| match e {
        Event::Disconnected { .. } => Some(()),
        _ => None,
    });
    assert_eq!(lost, Some(()));
    sim.run_for(Duration::from_millis(1));
    match status(sim, a).status {
        ManualStatus::Waiting {
            failures, retry_in, ..
        } => (failures, retry_in),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_a_connection_that_lasted_resets_the_backoff() {
    let mut sim = Sim::new(12, Link::lan());
    let a = sim.add_node(quick(1));
    let b = sim.add_node(quick(2));
    sim.partition(a, b);
    let (addr, idb, now) = (sim.nodes[b].addr, sim.id(b), sim.now);
    sim.nodes[a]
        .node
        .add_manual_peer(now, PeerAddr::Addr(addr), Some(idb));
    for _ in 0..3 {
        sim.take_event(a, Duration::from_secs(120), |e| match e {
            Event::ConnectFailed { .. } => Some(()),
            _ => None,
        })
        .expect("an attempt fails");
    }
    let ManualStatus::Waiting {
        failures: before, ..
    } = status(&sim, a).status
    else {
        panic!("{:?}", status(&sim, a))
    };
    // A short connection (well under STABLE): the failures count on.
    sim.heal(a, b);
    assert!(sim.run_until(Duration::from_secs(60), |sim| {
        sim.nodes[a].node.peer(&idb).is_some()
    }));
    sim.run_for(Duration::from_secs(5));
    let (short, _) = failures_after_cut(&mut sim, a, b);
    assert_eq!(short, before + 1);
    // A connection that lasts STABLE: the backoff starts over.
    sim.heal(a, b);
    assert!(sim.run_until(Duration::from_secs(120), |sim| {
        sim.nodes[a].node.peer(&idb).is_some()
    }));
    sim.run_for(STABLE + Duration::from_secs(1));
    let (long, retry_in) = failures_after_cut(&mut sim, a, b);
    assert_eq!(long, 1);
    assert!(retry_in <= FIRST_RETRY, "{retry_in:?}");
}
