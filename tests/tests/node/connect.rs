//! Connecting: the Hello exchange, its cost in round trips, identity pinning.

use std::time::Duration;

use pos_p2p_protocol::node::{Direction, Event};
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
    assert_eq!(info.metadata.get("name"), Some("node 2"));
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
