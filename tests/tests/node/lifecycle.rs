//! Connections over time: idle timeouts, restarts, dial races, metadata
//! updates, closing.

use std::time::Duration;

use pos_p2p_protocol::Metadata;
use pos_p2p_protocol::node::{DisconnectReason, Event};
use pos_p2p_tests::sim::{Link, Sim, payload};

fn disconnected(sim: &mut Sim, node: usize, limit: Duration) -> Option<DisconnectReason> {
    sim.take_event(node, limit, |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn a_silent_peer_times_out_on_both_sides() {
    let mut sim = Sim::new(20, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    // Keep-alives hold an idle connection open well past the idle timeout.
    sim.run_for(Duration::from_secs(90));
    assert!(
        sim.nodes[a].node.peer(&sim.id(b)).is_some(),
        "keep-alive works"
    );
    sim.partition(a, b);
    let cut = sim.now;
    let idle = sim.nodes[a].node.config().timeouts.idle;
    assert_eq!(
        disconnected(&mut sim, a, idle * 2),
        Some(DisconnectReason::TimedOut)
    );
    assert!(
        sim.now - cut <= idle + Duration::from_secs(1),
        "within the idle timeout"
    );
    assert_eq!(
        disconnected(&mut sim, b, idle * 2),
        Some(DisconnectReason::TimedOut)
    );
    // Both nodes forget the connection entirely.
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.nodes[a].node.connection_count(), 0);
    assert_eq!(sim.nodes[b].node.connection_count(), 0);
}

#[test]
fn a_restarted_peer_is_reconnected() {
    let mut sim = Sim::new(21, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    // b restarts with the same identity and a fresh random seed, as a real
    // process would: it no longer knows the connection.
    let mut restarted = Sim::config(2);
    restarted.rng_seed = [99; 32];
    sim.restart(b, restarted);
    let now = sim.now;
    sim.nodes[a].node.handle_timeout(now);
    let peer = sim.id(b);
    let _ = sim.nodes[a]
        .node
        .open_stream(now, &peer)
        .map(|s| sim.nodes[a].node.write(s, b"x"));
    let reason = disconnected(&mut sim, a, Duration::from_secs(60)).expect("a notices");
    assert!(
        matches!(reason, DisconnectReason::Reset | DisconnectReason::TimedOut),
        "{reason:?}"
    );
    sim.connect(a, b);
    let ok = sim.run_until_connected(a, b);
    assert!(ok, "a reconnects to the new b");
}

#[test]
fn simultaneous_dials_settle_on_one_connection_without_losing_streams() {
    for seed in 0..8 {
        let mut sim = Sim::new(100 + seed, Link::lan());
        let a = sim.add_node(Sim::config(1));
        let b = sim.add_node(Sim::config(2));
        sim.connect(a, b);
        sim.connect(b, a);
        assert!(sim.run_until_connected(a, b), "seed {seed}");
        // Each side opens a stream at once, on whichever connection it
        // considers primary right now.
        let (ida, idb) = (sim.id(a), sim.id(b));
        let from_a = sim.open_stream(a, b).unwrap();
        let from_b = sim.open_stream(b, a).unwrap();
        let (da, db) = (payload(seed, 100_000), payload(seed + 1000, 100_000));
        sim.write_all(a, from_a, &da).unwrap();
        sim.write_all(b, from_b, &db).unwrap();
        let at_b = sim
            .accept_stream(b, Duration::from_secs(5))
            .expect("b gets a's stream");
        let at_a = sim
            .accept_stream(a, Duration::from_secs(5))
            .expect("a gets b's stream");
        assert!(sim.read_to_end(b, at_b, Duration::from_secs(5)).unwrap() == da);
        assert!(sim.read_to_end(a, at_a, Duration::from_secs(5)).unwrap() == db);
        // Finish the other halves so every stream is done on both sides.
        sim.write_all(b, at_b, b"ok").unwrap();
        sim.write_all(a, at_a, b"ok").unwrap();
        assert_eq!(
            sim.read_to_end(a, from_a, Duration::from_secs(5)).unwrap(),
            b"ok"
        );
        assert_eq!(
            sim.read_to_end(b, from_b, Duration::from_secs(5)).unwrap(),
            b"ok"
        );
        sim.run_for(Duration::from_secs(2));
        for (i, other) in [(a, idb), (b, ida)] {
            let connected = sim.nodes[i]
                .history
                .iter()
                .filter(|e| matches!(e, Event::Connected(_)))
                .count();
            assert_eq!(connected, 1, "seed {seed}: one Connected event on node {i}");
            assert!(
                !sim.nodes[i]
                    .history
                    .iter()
                    .any(|e| matches!(e, Event::Disconnected { .. })),
                "seed {seed}: node {i} stays connected"
            );
            assert_eq!(
                sim.nodes[i].node.connection_count(),
                1,
                "seed {seed}: the duplicate is gone"
            );
            assert!(sim.nodes[i].node.peer(&other).is_some());
        }
        // Both kept the same connection: the one dialed by the smaller identity.
        let dialer = ida.min(idb);
        let kept_a = sim.nodes[a].node.peer(&idb).unwrap().direction;
        let expected_a = if dialer == ida {
            pos_p2p_protocol::node::Direction::Outbound
        } else {
            pos_p2p_protocol::node::Direction::Inbound
        };
        assert_eq!(kept_a, expected_a, "seed {seed}");
    }
}

#[test]
fn metadata_updates_reach_connected_peers() {
    let mut sim = Sim::new(22, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let mut metadata = Metadata::new();
    metadata.insert("name", "renamed").unwrap();
    sim.nodes[a].node.set_metadata(metadata.clone());
    let ida = sim.id(a);
    let update = sim.take_event(b, Duration::from_secs(1), |e| match e {
        Event::MetadataUpdated { peer, metadata } if *peer == ida => Some(metadata.clone()),
        _ => None,
    });
    assert_eq!(update, Some(metadata.clone()));
    assert_eq!(sim.nodes[b].node.peer(&ida).unwrap().metadata, metadata);
}

#[test]
fn closing_tells_the_peer_why() {
    let mut sim = Sim::new(23, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let (now, idb) = (sim.now, sim.id(b));
    sim.nodes[a]
        .node
        .close(now, &idb, "user removed the device");
    assert_eq!(
        disconnected(&mut sim, a, Duration::from_secs(1)),
        Some(DisconnectReason::ClosedLocally)
    );
    assert_eq!(
        disconnected(&mut sim, b, Duration::from_secs(1)),
        Some(DisconnectReason::ClosedByPeer {
            code: 0,
            reason: "user removed the device".into()
        })
    );
    sim.run_for(Duration::from_secs(5));
    assert!(sim.nodes[a].node.is_idle() && sim.nodes[b].node.is_idle());
}

#[test]
fn shutdown_closes_everything_and_refuses_new_dials() {
    let mut sim = Sim::new(24, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let c = sim.add_node(Sim::config(3));
    sim.connect(a, b);
    sim.connect(c, b);
    assert!(sim.run_until_connected(a, b) && sim.run_until_connected(c, b));
    let now = sim.now;
    sim.nodes[b].node.shutdown(now);
    assert!(sim.run_until(Duration::from_secs(5), |sim| sim.nodes[b].node.is_idle()));
    for i in [a, c] {
        assert!(matches!(
            disconnected(&mut sim, i, Duration::from_secs(1)),
            Some(DisconnectReason::ClosedByPeer { .. })
        ));
    }
    sim.connect(a, b);
    let refused = sim.take_event(a, Duration::from_secs(5), |e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(refused, Some(DisconnectReason::Refused));
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_outcome() {
    let run = |seed: u64| {
        let link = Link {
            latency: Duration::from_millis(3),
            jitter: Duration::from_millis(3),
            loss: 0.1,
            duplicate: 0.05,
        };
        let mut sim = Sim::new(seed, link);
        let a = sim.add_node(Sim::config(1));
        let b = sim.add_node(Sim::config(2));
        sim.connect(a, b);
        assert!(sim.run_until_connected(a, b));
        let stream = sim.open_stream(a, b).unwrap();
        sim.write_all(a, stream, &payload(seed, 200_000)).unwrap();
        let remote = sim.accept_stream(b, Duration::from_secs(30)).unwrap();
        let data = sim.read_to_end(b, remote, Duration::from_secs(60)).unwrap();
        let kinds = |i: usize| -> Vec<String> {
            sim.nodes[i]
                .history
                .iter()
                .map(|e| {
                    format!("{e:?}")
                        .split(['(', ' '])
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        };
        (
            sim.stats,
            sim.now - sim.start,
            data.len(),
            kinds(a),
            kinds(b),
        )
    };
    let first = run(7);
    assert_eq!(first, run(7), "same seed, same run");
    assert_ne!(first.0, run(8).0, "another seed, another schedule");
}

#[test]
fn a_dialer_that_restarts_and_redials_replaces_its_old_connection() {
    let mut sim = Sim::new(26, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let ida = sim.id(a);
    let old = sim.nodes[b].node.peer(&ida).unwrap().connection;
    // a restarts and dials again at once; b still holds the old connection.
    let mut restarted = Sim::config(1);
    restarted.rng_seed = [77; 32];
    sim.restart(a, restarted);
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    assert!(
        sim.run_until(Duration::from_secs(1), |sim| {
            sim.nodes[b]
                .node
                .peer(&ida)
                .is_some_and(|p| p.connection != old)
        }),
        "b switches to the new connection"
    );
    // b opens a stream to a: it must go on the new connection and arrive.
    let stream = sim.open_stream(b, a).expect("b has a connection to a");
    sim.write_all(b, stream, b"hello again").unwrap();
    let at_a = sim
        .accept_stream(a, Duration::from_secs(2))
        .expect("the stream reaches the restarted a");
    assert_eq!(
        sim.read_to_end(a, at_a, Duration::from_secs(2)).unwrap(),
        b"hello again"
    );
    // b reported a single connected peer throughout.
    assert!(
        !sim.nodes[b]
            .history
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
    );
}

#[test]
fn streams_of_a_replaced_connection_are_woken_when_it_dies() {
    let mut sim = Sim::new(27, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let ida = sim.id(a);
    // b has a stream open to a on the old connection, waiting for data.
    let stale = sim.open_stream(b, a).unwrap();
    sim.nodes[b].node.write(stale, b"anyone there?").unwrap();
    // a restarts and redials: the old connection is replaced, and dies
    // (idle timeout) with the stream still open.
    let mut restarted = Sim::config(1);
    restarted.rng_seed = [78; 32];
    sim.restart(a, restarted);
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    sim.nodes[b].events.clear();
    let woken = sim.take_event(b, Duration::from_secs(60), |e| match e {
        Event::StreamReadable(s) if *s == stale => Some(()),
        _ => None,
    });
    assert!(woken.is_some(), "a task blocked on the stream is woken");
    assert!(
        sim.nodes[b].node.read(stale, 100).is_err(),
        "and finds it gone"
    );
    // The peer itself stays connected through the new connection.
    assert!(sim.nodes[b].node.peer(&ida).is_some());
}

/// a dials b a second time while connected: both keep the newer connection
/// and supersede the first. Returns when b has two connections to a.
fn redial(sim: &mut Sim, a: usize, b: usize) {
    sim.connect(a, b);
    assert!(
        sim.run_until(Duration::from_secs(2), |sim| sim.nodes[b]
            .node
            .connection_count()
            == 2),
        "the second connection is up"
    );
}

#[test]
fn a_duplicate_the_peer_never_gives_up_is_closed_after_a_bounded_time() {
    let mut sim = Sim::new(28, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    // a opens a stream and never writes on it: QUIC never tells b, so a's
    // Superseded counts a stream b will not see (as would a peer that
    // counted its control stream), and a waits for its own stream.
    let (now, idb) = (sim.now, sim.id(b));
    let silent = sim.nodes[a].node.open_stream(now, &idb).unwrap();
    redial(&mut sim, a, b);
    let patience = sim.nodes[b].node.config().timeouts.superseded;
    // b waits for the stream a counted...
    sim.run_for(patience / 2);
    assert_eq!(sim.nodes[b].node.connection_count(), 2);
    assert_eq!(sim.nodes[b].node.stats().duplicates_timed_out, 0);
    // ...but not for ever (keep-alives would keep it open).
    sim.run_for(patience / 2 + Duration::from_secs(1));
    assert_eq!(sim.nodes[b].node.connection_count(), 1);
    assert_eq!(sim.nodes[a].node.connection_count(), 1);
    assert_eq!(sim.nodes[b].node.stats().duplicates_timed_out, 1);
    assert!(sim.nodes[a].node.write(silent, b"late").is_err());
    // The peers stayed connected through the kept connection.
    for node in [a, b] {
        assert!(
            !sim.nodes[node]
                .history
                .iter()
                .any(|e| matches!(e, Event::Disconnected { .. }))
        );
    }
}

#[test]
fn a_long_stream_on_a_duplicate_the_peer_gave_up_runs_to_completion() {
    let mut sim = Sim::new(29, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    sim.connect(a, b);
    assert!(sim.run_until_connected(a, b));
    let stream = sim.open_stream(a, b).unwrap();
    let at_b = sim.accept_stream(b, Duration::from_secs(1)).unwrap();
    redial(&mut sim, a, b);
    // The stream outlives the wait for the peer by far: both sides gave
    // the connection up, so nothing cuts it.
    let patience = sim.nodes[b].node.config().timeouts.superseded;
    for _ in 0..3 {
        sim.nodes[a].node.write(stream, b"tick").unwrap();
        sim.run_for(patience);
    }
    assert_eq!(sim.nodes[b].node.connection_count(), 2);
    sim.write_all(a, stream, b"done").unwrap();
    let got = sim.read_to_end(b, at_b, Duration::from_secs(1)).unwrap();
    assert_eq!(got, b"tickticktickdone");
    sim.write_all(b, at_b, b"ok").unwrap();
    assert_eq!(
        sim.read_to_end(a, stream, Duration::from_secs(1)).unwrap(),
        b"ok"
    );
    // Then the duplicate closes, drained, on both sides: not at once (what
    // arrived last may still be being read), DRAIN_GRACE later.
    sim.run_for(pos_p2p_protocol::node::DRAIN_GRACE / 2);
    assert_eq!(sim.nodes[a].node.connection_count(), 2);
    assert_eq!(sim.nodes[b].node.connection_count(), 2);
    sim.run_for(pos_p2p_protocol::node::DRAIN_GRACE);
    assert_eq!(sim.nodes[a].node.connection_count(), 1);
    assert_eq!(sim.nodes[b].node.connection_count(), 1);
    assert_eq!(sim.nodes[b].node.stats().duplicates_timed_out, 0);
    assert_eq!(sim.nodes[a].node.stats().duplicates_timed_out, 0);
}
