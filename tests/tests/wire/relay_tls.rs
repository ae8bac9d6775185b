//! The relay over TLS, in memory: [`RelayEndpoint`] (the relay) and
//! [`RelayClient`] (a node's side) exchanging bytes as TCP would carry
//! them. The pin, the handshake limits and deadline, refusals, and frames
//! that survive bursts larger than one write.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pos_p2p_protocol::relay::{
    Access, CloseReason, ConnId, MAX_RELAY_HANDSHAKES, RELAY_HANDSHAKE_TIMEOUT, RelayClientEvent,
    RelayConfig, RelayEndpoint, RelayError,
};
use pos_p2p_protocol::{Identity, RemoteIdentity};
use pos_p2p_tests::relay_link::{self, Link, pump};

fn identity(n: u8) -> Identity {
    Identity::from_bytes(&[n; 32])
}

fn id(n: u8) -> RemoteIdentity {
    identity(n).to_remote_identity()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], port))
}

const RELAY: u8 = 0xee;

fn connect(relay: &mut RelayEndpoint, now: Instant, node: u8, pinned: RemoteIdentity) -> Link {
    let from = addr(u16::from(node));
    relay_link::connect(relay, now, &identity(node), pinned, from, 256 << 10)
}

fn relay(config: RelayConfig) -> RelayEndpoint {
    RelayEndpoint::new(&identity(RELAY), config).unwrap()
}

#[test]
fn two_nodes_exchange_datagrams_through_the_relay() {
    let now = Instant::now();
    let mut relay = relay(RelayConfig::default());
    let mut a = connect(&mut relay, now, 1, id(RELAY));
    let mut b = connect(&mut relay, now, 2, id(RELAY));
    for link in [&a, &b] {
        assert!(link.client.is_connected(), "{:?}", link.error);
        assert!(
            matches!(
                link.events[..],
                [
                    RelayClientEvent::Connected,
                    RelayClientEvent::ObservedAddr(_)
                ]
            ),
            "{:?}",
            link.events
        );
    }
    assert!(a.client.send_datagram(id(2), Bytes::from_static(b"hello")));
    pump(&mut relay, now, &mut [&mut a, &mut b]);
    assert_eq!(
        b.events.last(),
        Some(&RelayClientEvent::Datagram {
            from: id(1),
            datagram: Bytes::from_static(b"hello")
        })
    );
    assert_eq!(relay.stats().forwarded, 1);
    // Finished handshakes no longer count against the handshake limit.
    assert_eq!(relay.handshaking(), 0);
    assert_eq!(relay.handshakes_failed(), 0);
}

#[test]
fn a_burst_larger_than_one_write_arrives_frame_by_frame() {
    // More frames queued for b than one `poll_write` takes (64 KiB): the
    // TLS stream must carry whole frames only, in order.
    let now = Instant::now();
    let mut config = RelayConfig::default();
    config.burst = 4 << 20;
    let mut relay = relay(config);
    let mut a = connect(&mut relay, now, 1, id(RELAY));
    let mut b = connect(&mut relay, now, 2, id(RELAY));
    let count = 150u16;
    for i in 0..count {
        let mut datagram = vec![0u8; 1400];
        datagram[..2].copy_from_slice(&i.to_be_bytes());
        assert!(a.client.send_datagram(id(2), Bytes::from(datagram)));
    }
    // a's bytes reach the relay; b is not served until all are queued.
    let mut up = Vec::new();
    a.client.poll_write(&mut up);
    relay.handle_bytes(now, a.conn, &up);
    pump(&mut relay, now, &mut [&mut a, &mut b]);
    assert_eq!(b.error, None, "b's stream stayed intact");
    let got: Vec<u16> = b
        .events
        .iter()
        .filter_map(|e| match e {
            RelayClientEvent::Datagram { datagram, .. } => {
                Some(u16::from_be_bytes([datagram[0], datagram[1]]))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..count).collect::<Vec<_>>());
}

#[test]
fn a_relay_with_another_identity_fails_tls() {
    let now = Instant::now();
    let mut relay = relay(RelayConfig::default());
    let a = connect(&mut relay, now, 1, id(0x77));
    assert!(!a.client.is_connected());
    assert!(matches!(a.error, Some(RelayError::Tls(_))), "{:?}", a.error);
    assert_eq!(relay.stats().accepted, 0);
}

#[test]
fn a_node_not_on_the_allowlist_is_told_and_closed() {
    let now = Instant::now();
    let mut config = RelayConfig::default();
    config.access = Access::Allow(BTreeSet::from([id(1)]));
    let mut relay = relay(config);
    let a = connect(&mut relay, now, 1, id(RELAY));
    assert!(a.error.is_none() && a.client.is_connected());
    let b = connect(&mut relay, now, 2, id(RELAY));
    assert_eq!(b.error, Some(RelayError::Closed(CloseReason::NotAllowed)));
    assert!(b.closed_by_relay, "the relay closes the connection");
    assert_eq!(relay.stats().refused, 1);
}

#[test]
fn handshakes_are_bounded_in_number_and_time() {
    let now = Instant::now();
    let mut relay = relay(RelayConfig::default());
    // Connections that never speak TLS.
    let silent: Vec<ConnId> = (0..MAX_RELAY_HANDSHAKES)
        .map(|i| {
            relay
                .connect(now, addr(i as u16))
                .expect("room for a handshake")
        })
        .collect();
    assert_eq!(relay.handshaking(), MAX_RELAY_HANDSHAKES);
    assert!(
        relay.connect(now, addr(9999)).is_none(),
        "one more is refused"
    );
    assert_eq!(relay.handshakes_failed(), 1);
    assert_eq!(relay.poll_timeout(), Some(now + RELAY_HANDSHAKE_TIMEOUT));
    relay.handle_timeout(now + RELAY_HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(
        relay.handshaking(),
        MAX_RELAY_HANDSHAKES,
        "not before the deadline"
    );
    relay.handle_timeout(now + RELAY_HANDSHAKE_TIMEOUT);
    assert_eq!(relay.handshaking(), 0);
    assert_eq!(relay.handshakes_failed(), 1 + MAX_RELAY_HANDSHAKES as u64);
    assert_eq!(
        relay.connections(),
        MAX_RELAY_HANDSHAKES,
        "held until removed"
    );
    let mut closing = BTreeSet::new();
    while let Some(conn) = relay.poll_ready() {
        if relay.poll_write(conn, &mut Vec::new()) {
            closing.insert(conn);
        }
    }
    assert_eq!(closing, silent.iter().copied().collect(), "each is closed");
    for conn in silent {
        relay.remove(conn);
    }
    assert_eq!(relay.connections(), 0);
    // Room again.
    let later = now + RELAY_HANDSHAKE_TIMEOUT;
    let a = connect(&mut relay, later, 1, id(RELAY));
    assert!(a.client.is_connected());
}

#[test]
fn garbage_instead_of_tls_closes_the_connection() {
    let now = Instant::now();
    let mut relay = relay(RelayConfig::default());
    let conn = relay.connect(now, addr(1)).unwrap();
    relay.handle_bytes(now, conn, &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]);
    relay.handle_bytes(now, conn, b"GET / HTTP/1.1\r\n\r\n");
    let mut closed = false;
    while let Some(c) = relay.poll_ready() {
        closed |= c == conn && relay.poll_write(c, &mut Vec::new());
    }
    assert!(closed);
    assert_eq!(relay.handshaking(), 0);
    assert_eq!(relay.handshakes_failed(), 1);
}
