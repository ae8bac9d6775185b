//! Connecting: the Hello exchange, its cost in round trips, identity pinning.

use std::time::Duration;

use pos_p2p_protocol::node::{Direction, DisconnectReason, Event};
use pos_p2p_protocol::semver::Version;
use pos_p2p_protocol::version::{RejectReason, VersionPolicy};
use pos_p2p_tests::sim::{Link, Sim};

#[test]
fn connect_exchanges_hellos_without_an_extra_round_trip() {
    let mut sim = Sim::new(1, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let started = sim.now;
    sim.connect(a, b);
    let info = sim
        .take_event(a, Duration::from_secs(5), |e| match e {
            Event::Connected(info) => Some(info.clone()),
            _ => None,
        })
        .expect("a connects");
    let dialer_ready = sim.now - started;
    assert_eq!(info.identity, sim.id(b));
    assert_eq!(info.direction, Direction::Outbound);
    // The listener's Hello went out before it knew who dialed: it says
    // nothing about the device. Its metadata follows once the dialer is
    // authenticated, one round trip later.
    assert!(info.metadata.is_empty(), "{:?}", info.metadata);
    let metadata = sim
        .take_event(a, Duration::from_secs(5), |e| match e {
            Event::MetadataUpdated { metadata, .. } => Some(metadata.clone()),
            _ => None,
        })
        .expect("the listener's metadata follows");
    assert_eq!(metadata.get("name"), Some("node 2"));
    assert_eq!(
        sim.nodes[a]
            .node
            .peer(&sim.id(b))
            .unwrap()
            .metadata
            .get("name"),
        Some("node 2")
    );
    let info_b = sim
        .take_event(b, Duration::from_secs(5), |e| match e {
            Event::Connected(info) => Some(info.clone()),
            _ => None,
        })
        .expect("b connects");
    assert_eq!(info_b.identity, sim.id(a));
    assert_eq!(info_b.direction, Direction::Inbound);
    assert_eq!(info_b.metadata.get("name"), Some("node 1"));
    // One round trip is 2 ms on this link: the dialer is ready after the
    // QUIC handshake's single round trip, with the listener's Hello riding
    // its handshake flight.
    let rtt = 2 * sim.link.latency;
    assert!(
        dialer_ready <= rtt + Duration::from_micros(100),
        "dialer ready after {dialer_ready:?}, one RTT is {rtt:?}"
    );
    println!("dialer connected after {dialer_ready:?} (RTT {rtt:?})");
}

/// Why node `a`'s next dial failed (within 5 s).
fn connect_failure(sim: &mut Sim, a: usize) -> DisconnectReason {
    sim.take_event(a, Duration::from_secs(5), |e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .expect("the dial fails")
}

#[test]
fn identity_mismatch_fails_the_dialer_with_both_identities() {
    let mut sim = Sim::new(2, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let c = sim.add_node(Sim::config(3));
    // a dials b's address but expects c.
    let (addr, wrong) = (sim.nodes[b].addr, sim.id(c));
    let now = sim.now;
    sim.nodes[a].node.connect(now, addr, Some(wrong)).unwrap();
    let reason = connect_failure(&mut sim, a);
    assert_eq!(
        reason,
        DisconnectReason::IdentityMismatch {
            expected: sim.id(c),
            actual: sim.id(b)
        }
    );
    let reason_b = sim
        .take_event(b, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, peer, .. } => Some((reason.clone(), *peer)),
            _ => None,
        })
        .expect("b is told");
    // b is told, and never learns who dialed it: a checked the pin before
    // it sent its own certificate.
    assert_eq!(reason_b, (DisconnectReason::NotExpectedByPeer, None));
    assert_eq!(
        sim.nodes[b].node.signatures_verified(),
        0,
        "b never saw a's certificate"
    );
    assert!(sim.nodes[a].node.peer(&sim.id(b)).is_none());
    assert!(sim.nodes[b].node.peer(&sim.id(a)).is_none());
    assert!(
        !sim.nodes[a]
            .history
            .iter()
            .any(|e| matches!(e, Event::Connected(_)))
    );
}

#[test]
fn dialing_without_an_expected_identity_learns_it() {
    let mut sim = Sim::new(3, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let (addr, now) = (sim.nodes[b].addr, sim.now);
    sim.nodes[a].node.connect(now, addr, None).unwrap();
    assert!(sim.run_until_connected(a, b));
    assert_eq!(
        sim.nodes[a].node.peers().next().unwrap().identity,
        sim.id(b)
    );
}

#[test]
fn incompatible_application_versions_are_rejected_with_the_reason_on_both_sides() {
    let mut sim = Sim::new(4, Link::lan());
    let a = sim.add_node(Sim::config_with_version(1, Version::new(1, 4, 0)));
    let b = sim.add_node(Sim::config_with_version(2, Version::new(2, 0, 0)));
    sim.connect(a, b);
    let failed = |sim: &mut Sim, i: usize| {
        sim.take_event(i, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("connection fails")
    };
    let (at_a, at_b) = (failed(&mut sim, a), failed(&mut sim, b));
    // The listener speaks first, so the dialer a sees b's Hello first and
    // rejects it; b learns exactly what a decided.
    let DisconnectReason::VersionRejected(ours) = &at_a else {
        panic!("a should reject: {at_a:?}");
    };
    let DisconnectReason::RejectedByPeer(theirs) = &at_b else {
        panic!("b should be rejected: {at_b:?}");
    };
    assert_eq!(ours, theirs);
    assert_eq!(ours.reason, RejectReason::AppIncompatible);
    let text = "application versions are incompatible: 1.4.0 (rejecting node) and 2.0.0 \
                (rejected node); major versions must match";
    assert_eq!(ours.to_string(), text);
    assert_eq!(at_a.to_string(), format!("rejected the peer: {text}"));
    assert_eq!(at_b.to_string(), format!("rejected by the peer: {text}"));
    assert!(sim.nodes[a].node.peers().next().is_none());
    assert!(sim.nodes[b].node.peers().next().is_none());
}

#[test]
fn a_version_requirement_is_enforced_by_the_dialer_too() {
    let mut sim = Sim::new(5, Link::lan());
    let mut strict = Sim::config_with_version(1, Version::new(1, 5, 0));
    strict.version_policy = VersionPolicy::default().require_app_version(">=1.3".parse().unwrap());
    let a = sim.add_node(strict);
    let b = sim.add_node(Sim::config_with_version(2, Version::new(1, 2, 0)));
    sim.connect(a, b);
    let at_a = sim
        .take_event(a, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    let at_b = sim
        .take_event(b, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    let DisconnectReason::VersionRejected(rejection) = at_a else {
        panic!("{at_a:?}")
    };
    assert_eq!(at_b, DisconnectReason::RejectedByPeer(rejection.clone()));
    assert_eq!(
        rejection.reason,
        RejectReason::AppRequirementUnmet(">=1.3".parse().unwrap())
    );
}

#[test]
fn different_protocol_majors_fail_at_alpn() {
    let mut sim = Sim::new(6, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let mut other = Sim::config(2);
    other.versions.protocol = Version::new(7, 0, 0);
    let b = sim.add_node(other);
    sim.connect(a, b);
    let at_a = sim
        .take_event(a, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("the dialer reports the failure");
    assert_eq!(at_a, DisconnectReason::AlpnMismatch);
    // The listener never had a connection: it reports a refused attempt.
    let at_b = sim
        .take_event(b, Duration::from_secs(5), |e| match e {
            Event::IncomingRefused { reason, addr } => Some((reason.clone(), *addr)),
            _ => None,
        })
        .expect("the listener reports the refusal");
    assert_eq!(at_b, (DisconnectReason::AlpnMismatch, sim.nodes[a].addr));
}

#[test]
fn different_applications_refuse_each_other() {
    let mut sim = Sim::new(7, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let mut other = Sim::config(2);
    other.app_name = "photos".into();
    let b = sim.add_node(other);
    sim.connect(a, b);
    let at_b = sim
        .take_event(b, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        at_b,
        DisconnectReason::ApplicationMismatch {
            local: "photos".into(),
            remote: "sim".into()
        }
    );
    let at_a = sim
        .take_event(a, Duration::from_secs(5), |e| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(at_a, DisconnectReason::ApplicationMismatch { .. }),
        "{at_a:?}"
    );
}

/// Connect `a` to `b` (pinned when `pin`), then close and wait until both
/// forgot the connection.
fn connect_and_close(sim: &mut Sim, a: usize, b: usize, pin: bool) {
    let (addr, now) = (sim.nodes[b].addr, sim.now);
    let expected = pin.then(|| sim.id(b));
    sim.nodes[a].node.connect(now, addr, expected).unwrap();
    assert!(sim.run_until_connected(a, b));
    // Let the listener's session ticket arrive.
    sim.run_for(Duration::from_millis(50));
    let (peer, now) = (sim.id(b), sim.now);
    sim.nodes[a].node.close(now, &peer, "again");
    assert!(sim.run_until(Duration::from_secs(10), |sim| {
        sim.nodes[a].node.is_idle() && sim.nodes[b].node.is_idle()
    }));
}

#[test]
fn reconnecting_to_a_pinned_peer_resumes_the_tls_session() {
    let mut sim = Sim::new(31, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    connect_and_close(&mut sim, a, b, true);
    let verified = |sim: &Sim| {
        (
            sim.nodes[a].node.signatures_verified(),
            sim.nodes[b].node.signatures_verified(),
        )
    };
    assert_eq!(verified(&sim), (1, 1), "a full handshake");
    connect_and_close(&mut sim, a, b, true);
    // No certificate and no signature either way the second time.
    assert_eq!(
        verified(&sim),
        (1, 1),
        "the second handshake was not resumed"
    );
    // Both sides still know who the other is.
    let (peer_a, peer_b) = (sim.id(a), sim.id(b));
    let connected = |i: usize, other| {
        sim.nodes[i]
            .history
            .iter()
            .filter(|e| matches!(e, Event::Connected(info) if info.identity == other))
            .count()
    };
    assert_eq!(connected(a, peer_b), 2);
    assert_eq!(connected(b, peer_a), 2);
}

#[test]
fn dials_without_a_pinned_identity_never_resume() {
    let mut sim = Sim::new(32, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    connect_and_close(&mut sim, a, b, false);
    connect_and_close(&mut sim, a, b, false);
    assert_eq!(sim.nodes[a].node.signatures_verified(), 2);
    assert_eq!(sim.nodes[b].node.signatures_verified(), 2);
}

#[test]
fn a_session_offered_to_another_node_does_not_resume_and_the_pin_fails() {
    let mut sim = Sim::new(33, Link::lan());
    let a = sim.add_node(Sim::config(1));
    let b = sim.add_node(Sim::config(2));
    let c = sim.add_node(Sim::config(3));
    // a holds a session with b.
    connect_and_close(&mut sim, a, b, true);
    // c sits at an address where a expects b: the full handshake shows c,
    // and pinning fails.
    let (addr, expected, now) = (sim.nodes[c].addr, sim.id(b), sim.now);
    sim.nodes[a]
        .node
        .connect(now, addr, Some(expected))
        .unwrap();
    let reason = connect_failure(&mut sim, a);
    assert_eq!(
        reason,
        DisconnectReason::IdentityMismatch {
            expected: sim.id(b),
            actual: sim.id(c)
        }
    );
}

#[test]
fn a_listener_tells_a_dialer_that_has_not_authenticated_nothing_about_its_device() {
    let mut sim = Sim::new(5, Link::lan());
    let listener = sim.add_node(Sim::config(1));
    let addr = sim.nodes[listener].addr;
    // A dialer with no certificate at all: it gets the listener's first
    // flight, 0.5-RTT data included, then the handshake fails.
    let mut raw = pos_p2p_tests::raw::RawDialer::new("192.0.2.40:4433".parse().unwrap());
    let now = sim.now;
    raw.connect_with(now, addr, None);
    let mut received = Vec::new();
    for _ in 0..50 {
        let now = sim.now;
        for (_, datagram) in raw.poll(now) {
            let from = raw.addr;
            sim.inject(listener, from, &datagram);
        }
        while let Some((from, _, datagram)) = sim.outside.pop_front() {
            raw.handle(now, from, &datagram);
        }
        received.extend(raw.received());
        sim.run_for(Duration::from_millis(1));
    }
    // It read the listener's Hello: the application's name and versions,
    // and no metadata (the listener's is "name=node 1").
    let (body, _) = pos_p2p_protocol::codec::decode_frame(&received, 16 * 1024)
        .expect("the Hello frame arrived");
    assert_eq!(body[0], 0, "a Hello");
    let text = String::from_utf8_lossy(body);
    assert!(text.contains("sim"), "{text:?}");
    assert!(!text.contains("node 1"), "{text:?}");
    assert_eq!(
        *body.last().unwrap(),
        0,
        "an empty metadata map ends the Hello"
    );
    assert!(sim.nodes[listener].node.peers().next().is_none());
}

#[test]
fn a_rejection_reaches_any_quic_stack_as_text_and_a_goodbye_as_fields() {
    let mut sim = Sim::new(6, Link::lan());
    let listener = sim.add_node(Sim::config(1));
    let addr = sim.nodes[listener].addr;
    let mut raw = pos_p2p_tests::raw::RawDialer::new("192.0.2.41:4433".parse().unwrap());
    let now = sim.now;
    raw.connect(now, addr, 9);
    sim.drive_raw(&mut raw, Duration::from_millis(50));
    assert_eq!(raw.connected(), 1);
    let _listener_hello = raw.received();
    // The dialer's Hello as §7.1 spells it, from protocol version 99.0.0.
    let mut body = vec![0u8];
    for field in ["99.0.0", "sim", "1.0.0"] {
        body.push(field.len() as u8);
        body.extend_from_slice(field.as_bytes());
    }
    body.push(0);
    let mut frame = vec![body.len() as u8];
    frame.extend_from_slice(&body);
    raw.write_control(&frame);
    sim.drive_raw(&mut raw, Duration::from_millis(200));
    // On the control stream: a Goodbye whose reason is the rejection's
    // fields (§7.3), kind 0 for protocol versions.
    let control = raw.received();
    let mut rest = &control[..];
    let mut goodbye = None;
    while let Ok((body, used)) = pos_p2p_protocol::codec::decode_frame(rest, 16 * 1024) {
        if body[0] == 2 {
            goodbye = Some(body.to_vec());
        }
        rest = &rest[used..];
    }
    let goodbye = goodbye.expect("a Goodbye frame");
    assert_eq!(goodbye[1], 1, "code VERSION_REJECTED");
    assert_eq!(usize::from(goodbye[2]), goodbye.len() - 3);
    assert_eq!(goodbye[3], 0, "kind 0: protocol versions incompatible");
    // In the CONNECTION_CLOSE: the same code and the rejection's text.
    let [(code, phrase)] = &raw.closes[..] else {
        panic!("one application close: {:?}", raw.closes)
    };
    assert_eq!(*code, 1);
    let text = std::str::from_utf8(phrase).expect("UTF-8");
    assert!(
        text.starts_with("protocol versions are incompatible: ") && text.contains("99.0.0"),
        "{text:?}"
    );
}

/// How long node 0's dial to node 1 takes when the link drops everything
/// for the first 50 ms (the dialer's first flight is lost).
fn dial_time_after_a_lost_first_flight(initial_rtt: Option<Duration>) -> Duration {
    let mut sim = Sim::new(4, Link::lan());
    let mut config = Sim::config(1);
    if let Some(rtt) = initial_rtt {
        config.timeouts.initial_rtt = rtt;
    }
    let a = sim.add_node(config);
    let b = sim.add_node(Sim::config(2));
    sim.partition(a, b);
    let started = sim.now;
    sim.connect(a, b);
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.stats.delivered, 0, "the first flight was lost");
    sim.heal(a, b);
    assert!(sim.run_until_connected(a, b));
    sim.now - started
}

/// A dial whose first packet is lost sends it again after three times
/// `Timeouts::initial_rtt` (100 ms by default): connected about 300 ms
/// after the dial, where QUIC's generic 333 ms estimate waits a second.
#[test]
fn a_dial_whose_first_packet_is_lost_is_retried_after_three_initial_rtts() {
    let default = dial_time_after_a_lost_first_flight(None);
    assert!(
        default >= Duration::from_millis(300) && default < Duration::from_millis(320),
        "{default:?}"
    );
    let generic = dial_time_after_a_lost_first_flight(Some(Duration::from_millis(333)));
    assert!(
        generic >= Duration::from_millis(999) && generic < Duration::from_millis(1020),
        "{generic:?}"
    );
}

/// Configurations a node cannot run with are refused with the reason.
#[test]
fn an_unusable_configuration_is_refused_with_its_reason() {
    use pos_p2p_protocol::node::{Node, NodeError};
    let refused = |change: fn(&mut pos_p2p_protocol::node::NodeConfig)| {
        let mut config = Sim::config(1);
        change(&mut config);
        match Node::new(config, std::time::Instant::now()) {
            Err(NodeError::InvalidConfig(reason)) => reason,
            other => panic!("accepted: {other:?}"),
        }
    };
    assert!(refused(|c| c.timeouts.initial_rtt = Duration::ZERO).contains("initial_rtt"));
    assert!(refused(|c| c.timeouts.initial_rtt = c.timeouts.handshake).contains("initial_rtt"));
    assert!(refused(|c| c.timeouts.keep_alive = c.timeouts.idle).contains("keep_alive"));
    assert!(refused(|c| c.limits.max_connections = 0).contains("max_connections"));
    assert!(refused(|c| c.limits.max_incoming_handshakes = 0).contains("max_incoming"));
    assert!(
        refused(|c| c.limits.header_buffer = c.limits.max_header_len).contains("header_buffer")
    );
    // The edges that are allowed.
    let mut config = Sim::config(1);
    config.timeouts.initial_rtt = Duration::from_millis(1);
    assert!(Node::new(config, std::time::Instant::now()).is_ok());
}
