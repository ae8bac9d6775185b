//! The relay's frames and its state machine, in virtual time: forwarding
//! by identity, the access rule and client limit, replacement, the rate
//! and queue limits, protocol errors, shutdown.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pos_p2p_protocol::relay::{
    Access, ClientId, CloseReason, MAX_RELAYED_DATAGRAM, RelayConfig, RelayFrame, RelayServer,
};
use pos_p2p_protocol::{Identity, RemoteIdentity};
use proptest::prelude::*;

fn id(n: u8) -> RemoteIdentity {
    Identity::from_bytes(&[n; 32]).to_remote_identity()
}

fn addr() -> SocketAddr {
    "192.0.2.7:40000".parse().expect("an address")
}

/// Everything the relay has for `client`, decoded.
fn drain(relay: &mut RelayServer, client: ClientId) -> Vec<RelayFrame> {
    let mut frames = Vec::new();
    while let Some(bytes) = relay.poll_transmit(client) {
        frames.push(RelayFrame::from_bytes(&bytes).expect("valid frame"));
    }
    frames
}

fn send(to: u8, datagram: &[u8]) -> Vec<u8> {
    RelayFrame::Send {
        to: id(to),
        datagram: Bytes::copy_from_slice(datagram),
    }
    .to_bytes()
    .expect("encodes")
    .to_vec()
}

fn frame() -> impl Strategy<Value = RelayFrame> {
    let identity = (1u8..=200).prop_map(id);
    let datagram =
        proptest::collection::vec(any::<u8>(), 0..=MAX_RELAYED_DATAGRAM).prop_map(Bytes::from);
    prop_oneof![
        (identity.clone(), datagram.clone())
            .prop_map(|(to, datagram)| RelayFrame::Send { to, datagram }),
        (identity.clone(), datagram)
            .prop_map(|(from, datagram)| RelayFrame::Recv { from, datagram }),
        any::<u64>().prop_map(|nonce| RelayFrame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| RelayFrame::Pong { nonce }),
        identity.prop_map(|identity| RelayFrame::PeerGone { identity }),
        // Without an IPv6 scope or flow label: the frame carries neither.
        (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, port)| RelayFrame::ObservedAddr {
            addr: SocketAddr::new(ip, port)
        }),
        any::<u8>().prop_map(|code| RelayFrame::Close {
            reason: CloseReason::from_code(code)
        }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip(frame in frame()) {
        let bytes = frame.to_bytes().expect("encodes");
        prop_assert_eq!(RelayFrame::from_bytes(&bytes), Ok(frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_relay(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = RelayFrame::from_bytes(&data);
        pos_p2p_tests::fuzzing::relay_server(&data);
    }
}

#[test]
fn a_frame_on_the_wire() {
    let bytes = RelayFrame::Ping { nonce: 0x0102 }
        .to_bytes()
        .expect("encodes");
    assert_eq!(&bytes[..], [9, 0x03, 0, 0, 0, 0, 0, 0, 1, 2]);
    let mut expected = vec![36, 0x01];
    expected.extend(id(2).as_bytes());
    expected.extend([2, b'h', b'i']);
    assert_eq!(send(2, b"hi"), expected);
    // A datagram over the limit is not a frame.
    let too_big = RelayFrame::Send {
        to: id(2),
        datagram: vec![0; MAX_RELAYED_DATAGRAM + 1].into(),
    };
    assert!(too_big.to_bytes().is_err());
}

#[test]
fn datagrams_are_forwarded_by_identity_and_unknown_ones_reported_once_a_second() {
    let mut now = Instant::now();
    let mut relay = RelayServer::new(RelayConfig::default());
    let a = relay.accept(now, id(1), addr()).expect("a accepted");
    let b = relay.accept(now, id(2), addr()).expect("b accepted");
    assert_eq!(
        drain(&mut relay, a),
        [RelayFrame::ObservedAddr { addr: addr() }]
    );
    drain(&mut relay, b);
    // Split across reads at every byte: frames are reassembled.
    let bytes = send(2, b"hello");
    for byte in &bytes {
        relay.handle_bytes(now, a, std::slice::from_ref(byte));
    }
    assert_eq!(relay.poll_ready(), Some(b));
    assert_eq!(
        drain(&mut relay, b),
        [RelayFrame::Recv {
            from: id(1),
            datagram: Bytes::from_static(b"hello")
        }]
    );
    // To a node that is not here: one notice, then none for a second.
    for _ in 0..5 {
        relay.handle_bytes(now, a, &send(9, b"x"));
    }
    assert_eq!(
        drain(&mut relay, a),
        [RelayFrame::PeerGone { identity: id(9) }]
    );
    now += Duration::from_secs(1);
    relay.handle_bytes(now, a, &send(9, b"x"));
    assert_eq!(
        drain(&mut relay, a),
        [RelayFrame::PeerGone { identity: id(9) }]
    );
    // Pings are answered.
    let ping = RelayFrame::Ping { nonce: 42 }.to_bytes().expect("encodes");
    relay.handle_bytes(now, b, &ping);
    assert_eq!(drain(&mut relay, b), [RelayFrame::Pong { nonce: 42 }]);
    let stats = relay.stats();
    assert_eq!(
        (stats.clients, stats.forwarded, stats.unknown_destination),
        (2, 1, 6)
    );
    // b goes: datagrams to it are reported, not queued.
    relay.remove(b);
    now += Duration::from_secs(1);
    relay.handle_bytes(now, a, &send(2, b"late"));
    assert_eq!(
        drain(&mut relay, a),
        [RelayFrame::PeerGone { identity: id(2) }]
    );
}

#[test]
fn the_access_rule_and_the_client_limit_refuse_with_a_reason() {
    let now = Instant::now();
    let mut config = RelayConfig::default();
    config.access = Access::Allow(BTreeSet::from([id(1), id(2)]));
    config.max_clients = 1;
    let mut relay = RelayServer::new(config);
    assert_eq!(
        relay.accept(now, id(3), addr()),
        Err(CloseReason::NotAllowed)
    );
    let a = relay.accept(now, id(1), addr()).expect("allowed");
    assert_eq!(relay.accept(now, id(2), addr()), Err(CloseReason::Full));
    // The same node again is not one more: it replaces its older
    // connection, which is closed with the reason, its Close frame last.
    let a2 = relay.accept(now, id(1), addr()).expect("replaces");
    assert_eq!(relay.closing(a), Some(CloseReason::Replaced));
    assert_eq!(
        drain(&mut relay, a).last(),
        Some(&RelayFrame::Close {
            reason: CloseReason::Replaced
        })
    );
    assert_eq!(relay.identity(a2), Some(id(1)));
    relay.remove(a);
    assert_eq!(
        relay.identity(a2),
        Some(id(1)),
        "removing the old one keeps the new"
    );
    assert_eq!(relay.stats().refused, 2);
    assert_eq!(
        RelayFrame::from_bytes(&RelayServer::refusal(CloseReason::Full)),
        Ok(RelayFrame::Close {
            reason: CloseReason::Full
        })
    );
}

#[test]
fn a_sender_over_its_rate_is_dropped_until_its_budget_refills() {
    let mut now = Instant::now();
    let mut config = RelayConfig::default();
    config.bytes_per_second = 10_000;
    config.burst = 5_000;
    let mut relay = RelayServer::new(config);
    let a = relay.accept(now, id(1), addr()).expect("a");
    let b = relay.accept(now, id(2), addr()).expect("b");
    drain(&mut relay, b);
    // 1,000-byte datagrams: frame bodies of 1,035 bytes, which is what
    // the budget counts; four fit the burst (860 bytes left).
    let datagram = vec![7u8; 1000];
    for _ in 0..10 {
        relay.handle_bytes(now, a, &send(2, &datagram));
    }
    assert_eq!(drain(&mut relay, b).len(), 4);
    assert_eq!(relay.stats().dropped_rate, 6);
    // A tenth of a second earns 1,000 bytes: 1,860, one frame (825 left).
    now += Duration::from_millis(100);
    relay.handle_bytes(now, a, &send(2, &datagram));
    assert_eq!(drain(&mut relay, b).len(), 1);
    // 10 ms more earn 100: 925, not enough; 11 ms after that, 1,035.
    now += Duration::from_millis(10);
    relay.handle_bytes(now, a, &send(2, &datagram));
    assert_eq!(drain(&mut relay, b).len(), 0);
    now += Duration::from_millis(11);
    relay.handle_bytes(now, a, &send(2, &datagram));
    assert_eq!(drain(&mut relay, b).len(), 1);
}

#[test]
fn a_node_that_does_not_read_holds_at_most_its_queue() {
    let now = Instant::now();
    let mut config = RelayConfig::default();
    config.queue_bytes = 10_000;
    let mut relay = RelayServer::new(config);
    let a = relay.accept(now, id(1), addr()).expect("a");
    let b = relay.accept(now, id(2), addr()).expect("b");
    drain(&mut relay, b);
    let datagram = vec![7u8; 1000];
    for _ in 0..50 {
        relay.handle_bytes(now, a, &send(2, &datagram));
    }
    let queued: usize = std::iter::from_fn(|| relay.poll_transmit(b))
        .map(|frame| frame.len())
        .sum();
    // Each queued frame is a Recv of the datagram: nine fit in 10,000
    // bytes, the other 41 are dropped.
    let frame_len = RelayFrame::Recv {
        from: id(1),
        datagram: datagram.clone().into(),
    }
    .to_bytes()
    .expect("encodes")
    .len();
    assert!(queued <= 10_000, "{queued}");
    assert_eq!(queued, 9 * frame_len);
    assert_eq!(relay.stats().dropped_queue, 41);
}

#[test]
fn a_client_that_breaks_the_protocol_is_closed() {
    let now = Instant::now();
    let mut relay = RelayServer::new(RelayConfig::default());
    // A frame only a relay sends.
    let a = relay.accept(now, id(1), addr()).expect("a");
    let recv = RelayFrame::Recv {
        from: id(2),
        datagram: Bytes::from_static(b"forged"),
    };
    relay.handle_bytes(now, a, &recv.to_bytes().expect("encodes"));
    assert_eq!(relay.closing(a), Some(CloseReason::Protocol));
    // Nothing more is read from it.
    relay.handle_bytes(
        now,
        a,
        &RelayFrame::Ping { nonce: 1 }.to_bytes().expect("encodes"),
    );
    assert_eq!(
        drain(&mut relay, a),
        [RelayFrame::Close {
            reason: CloseReason::Protocol
        }]
    );
    // A frame announcing more than a relay accepts (2,000 bytes, as a
    // varint).
    let b = relay.accept(now, id(2), addr()).expect("b");
    relay.handle_bytes(now, b, &[0xd0, 0x0f]);
    assert_eq!(relay.closing(b), Some(CloseReason::Protocol));
    // An identity that is not a valid key.
    let c = relay.accept(now, id(3), addr()).expect("c");
    let mut bad = send(1, b"x");
    bad[2..34].fill(0);
    bad[2] = 2;
    relay.handle_bytes(now, c, &bad);
    assert_eq!(relay.closing(c), Some(CloseReason::Protocol));
    assert_eq!(relay.stats().protocol_errors, 3);
}

#[test]
fn shutting_down_closes_everyone_and_refuses_newcomers() {
    let now = Instant::now();
    let mut relay = RelayServer::new(RelayConfig::default());
    let a = relay.accept(now, id(1), addr()).expect("a");
    relay.shutdown();
    assert_eq!(relay.closing(a), Some(CloseReason::ShuttingDown));
    assert_eq!(
        relay.accept(now, id(2), addr()),
        Err(CloseReason::ShuttingDown)
    );
    assert_eq!(
        drain(&mut relay, a).last(),
        Some(&RelayFrame::Close {
            reason: CloseReason::ShuttingDown
        })
    );
}
