//! Discovery on the simulated LAN segment, in virtual time.

use std::net::SocketAddr;
use std::time::Duration;

use pos_p2p_protocol::Metadata;
use pos_p2p_protocol::discovery::{DiscoveredPeer, Discovery, DiscoveryConfig, DiscoveryEvent};
use pos_p2p_tests::lan::Lan;
use proptest::prelude::*;

fn discovered(lan: &Lan, at: usize) -> Vec<&DiscoveredPeer> {
    lan.nodes[at]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            DiscoveryEvent::Discovered(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn expired_at(lan: &Lan, at: usize, peer: usize) -> Option<Duration> {
    let id = lan.id(peer);
    lan.nodes[at].events.iter().find_map(|(t, e)| match e {
        DiscoveryEvent::Expired(p) if *p == id => Some(*t),
        _ => None,
    })
}

#[test]
fn two_nodes_find_each_other_with_addresses_and_metadata() {
    let mut lan = Lan::new(1);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    lan.run_for(Duration::from_millis(1100));
    // b hears a's announcement at once; a announced before b was there and
    // multicasts a record at most once a second (RFC 6762 §6), so b learns
    // of a from a's answer to its first browse query or a's second
    // announcement, one second in.
    for (me, other) in [(a, b), (b, a)] {
        let found = discovered(&lan, me);
        assert_eq!(found.len(), 1, "node {me}: {:?}", lan.nodes[me].events);
        assert_eq!(found[0].identity, lan.id(other));
        assert_eq!(
            found[0].addrs,
            vec![SocketAddr::new(lan.nodes[other].ip, 4433)]
        );
        assert_eq!(
            found[0].metadata.get("name"),
            Some(format!("node {}", other + 1).as_str())
        );
        assert!(!found[0].metadata_truncated);
        assert!(lan.nodes[me].events[0].0 <= Duration::from_millis(1002));
    }
    // A node never reports itself.
    assert!(lan.nodes[a].discovery.peer(&lan.id(a)).is_none());
}

#[test]
fn a_late_joiner_is_found_by_its_announcement_and_finds_the_others_by_browsing() {
    let mut lan = Lan::new(2);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(600));
    let b = lan.add_node(2);
    lan.run_for(Duration::from_millis(500));
    assert_eq!(discovered(&lan, a).len(), 1);
    // b's first browse query (20–120 ms in) is answered by a within 120 ms.
    assert_eq!(discovered(&lan, b).len(), 1);
}

#[test]
fn ten_nodes_all_find_each_other_and_traffic_stays_bounded() {
    let mut lan = Lan::new(3);
    let nodes: Vec<usize> = (1..=10).map(|n| lan.add_node(n)).collect();
    lan.run_for(Duration::from_secs(5));
    for &me in &nodes {
        let peers: Vec<_> = lan.nodes[me]
            .discovery
            .peers()
            .map(|p| p.identity)
            .collect();
        assert_eq!(peers.len(), 9, "node {me}");
        assert_eq!(discovered(&lan, me).len(), 9, "each peer is reported once");
    }
    // Over ten minutes the peers stay (cache maintenance renews them) and
    // the segment is quiet: announcements, the browse backoff, and one
    // refresh round per TTL.
    let before: u64 = lan.nodes.iter().map(|n| n.sent).sum();
    lan.run_for(Duration::from_secs(600));
    let sent: u64 = lan.nodes.iter().map(|n| n.sent).sum::<u64>() - before;
    for &me in &nodes {
        assert_eq!(lan.nodes[me].discovery.peers().count(), 9);
        assert!(
            lan.nodes[me]
                .events
                .iter()
                .all(|(_, e)| !matches!(e, DiscoveryEvent::Expired(_)))
        );
    }
    // Each node sends a few packets per TTL (120 s): at most 5 refreshes and
    // answers per peer set, plus browse queries.
    assert!(sent < 10 * 5 * 12, "{sent} packets in 10 minutes");
}

#[test]
fn a_silent_peer_expires_after_its_ttl_and_refreshes_were_tried() {
    let mut lan = Lan::new(4);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    lan.run_for(Duration::from_secs(10));
    let sent_before = lan.nodes[a].sent;
    let unplugged_at = lan.elapsed();
    lan.unplug(b);
    lan.run_for(Duration::from_secs(300));
    let expired = expired_at(&lan, a, b).expect("b expired");
    // Its records were last renewed at most a few seconds before it went
    // silent; they last 120 s.
    let silent_for = expired - unplugged_at;
    assert!(
        silent_for > Duration::from_secs(100) && silent_for <= Duration::from_secs(120),
        "{silent_for:?}"
    );
    // a asked for b's records at 80, 85, 90 and 95 % of the TTL before
    // giving up.
    let instance = format!("{}._sim._udp.local", lan.id(b));
    let asked: Vec<Duration> = lan
        .log
        .iter()
        .filter(|(from, at, _)| *from == a && *at > unplugged_at)
        .filter(|(_, _, bytes)| questions(bytes).contains(&instance))
        .map(|(_, at, _)| *at - unplugged_at)
        .collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(lan.nodes[a].sent > sent_before);
    assert!(lan.nodes[a].discovery.peers().next().is_none());
}

#[test]
fn a_goodbye_expires_the_peer_one_second_later() {
    let mut lan = Lan::new(5);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    lan.run_for(Duration::from_secs(10));
    let bye_at = lan.elapsed();
    lan.shutdown(b);
    lan.run_for(Duration::from_secs(5));
    let expired = expired_at(&lan, a, b).expect("b expired");
    // RFC 6762 §10.1: a record said goodbye to lives one more second
    // (addresses included), so the peer is not gone at once.
    let after = expired - bye_at;
    assert!(
        after >= Duration::from_secs(1) && after <= Duration::from_millis(1002),
        "{after:?}"
    );
}

#[test]
fn metadata_and_address_changes_are_announced() {
    let mut lan = Lan::new(6);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    lan.run_for(Duration::from_secs(10));
    let mut metadata = Metadata::new();
    metadata.insert("name", "renamed").unwrap();
    lan.set_metadata(b, metadata.clone());
    lan.run_for(Duration::from_millis(10));
    let changes: Vec<&DiscoveredPeer> = lan.nodes[a]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            DiscoveryEvent::Changed(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].metadata, metadata);

    let ip = "192.168.1.99".parse().unwrap();
    lan.set_ip(b, ip);
    // Announced a second after the metadata's announcement: records are
    // multicast at most once a second.
    lan.run_for(Duration::from_millis(1010));
    let peer = lan.nodes[a].discovery.peer(&lan.id(b)).unwrap();
    assert_eq!(peer.addrs, vec![SocketAddr::new(ip, 4433)]);
    assert!(matches!(
        lan.nodes[a].events.last(),
        Some((_, DiscoveryEvent::Changed(p))) if p.addrs == peer.addrs
    ));
}

#[test]
fn discovery_survives_heavy_loss() {
    let mut lan = Lan::new(7);
    lan.loss = 0.25;
    let nodes: Vec<usize> = (1..=4).map(|n| lan.add_node(n)).collect();
    // Three announcements and a browse query at 0.1, 1.1, 3.1, 7.1, 15.1,
    // 31.1 and 63.1 s: ten chances for each pair, each lost one time in four.
    lan.run_for(Duration::from_secs(70));
    for &me in &nodes {
        assert_eq!(lan.nodes[me].discovery.peers().count(), 3, "node {me}");
    }
}

#[test]
fn known_answers_silence_responders_that_are_already_known() {
    let mut lan = Lan::new(8);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    lan.run_for(Duration::from_secs(10));
    // Until 60 s after b's last announcement (3 s in), a's browse queries
    // (at 15 and 31 s) list b as a known answer with more than half its TTL
    // left: b stays quiet. (a's query at 63 s no longer lists it, and b
    // answers that one.)
    let b_answers = lan.nodes[b].discovery.stats().responses_sent;
    let a_queries = lan.nodes[a].discovery.stats().queries_sent;
    lan.run_for(Duration::from_secs(45));
    assert!(
        lan.nodes[a].discovery.stats().queries_sent > a_queries,
        "a kept browsing"
    );
    assert_eq!(
        lan.nodes[b].discovery.stats().responses_sent,
        b_answers,
        "b answered a query it was known to (or its own echo)"
    );
}

#[test]
fn a_legacy_resolver_gets_a_unicast_reply() {
    let mut lan = Lan::new(9);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(5));
    let query = simple_query("_sim._udp.local", 42);
    let from: SocketAddr = "192.168.1.200:40000".parse().unwrap();
    lan.inject_to(a, from, &query);
    let (to, reply) = lan.replies.pop().expect("a unicast reply");
    assert_eq!(to, from);
    let packet = simple_dns::Packet::parse(&reply).unwrap();
    assert_eq!(packet.id(), 42);
    assert_eq!(packet.questions.len(), 1);
    assert!(packet.answers.iter().all(|r| r.ttl <= 10));
}

#[test]
fn a_query_flood_costs_bounded_work_and_memory() {
    let mut lan = Lan::new(10);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(5));
    let sent_before = lan.nodes[a].sent;
    let query = simple_query("_sim._udp.local", 0);
    let from: SocketAddr = "192.168.1.200:5353".parse().unwrap();
    // 100,000 queries in 10 s of virtual time.
    for _ in 0..10_000 {
        for _ in 0..10 {
            lan.inject_to(a, from, &query);
        }
        lan.run_for(Duration::from_millis(1));
    }
    let stats = lan.nodes[a].discovery.stats().clone();
    let parsed = stats.packets - stats.rate_limited;
    // One source: its burst, then its rate.
    let config = lan.nodes[a].discovery.config().clone();
    let bound = u64::from(config.source_burst + config.packets_per_source * 11);
    assert!(parsed <= bound, "{parsed} parsed, bound {bound}");
    assert!(stats.rate_limited > 95_000);
    // At most one multicast answer per second (RFC 6762 §6), plus browsing.
    let answers = lan.nodes[a].sent - sent_before;
    assert!(answers <= 16, "{answers} packets sent");
}

/// A complete announcement of instance `n`, advertising `ip`.
fn forged_announcement(lan: &Lan, n: u8, ip: &str) -> Vec<u8> {
    let mut forger = Discovery::new(Lan::config(n), lan.now);
    forger.set_addrs(lan.now, vec![format!("{ip}:4433").parse().unwrap()]);
    forger.poll_transmit().unwrap().payload
}

/// A node whose rate limits do not get in the way of table tests.
fn unlimited(n: u8, max_peers: usize) -> DiscoveryConfig {
    let mut config = Lan::config(n);
    config.max_peers = max_peers;
    config.packets_per_second = 1_000_000;
    config.packet_burst = 1_000_000;
    config.packets_per_source = 1_000_000;
    config.source_burst = 1_000_000;
    config
}

#[test]
fn one_source_cannot_fill_the_peer_table() {
    let mut lan = Lan::new(11);
    let a = lan.add_node_with(unlimited(1, 64));
    let per_source = lan.nodes[a].discovery.config().max_instances_per_source;
    for n in 2..=100u8 {
        let packet = forged_announcement(&lan, n, "192.168.1.66");
        lan.inject_to(a, "192.168.1.66:5353".parse().unwrap(), &packet);
    }
    assert_eq!(lan.nodes[a].discovery.peers().count(), per_source);
    assert_eq!(
        lan.nodes[a].discovery.stats().peers_refused,
        99 - per_source as u64
    );
}

#[test]
fn forged_advertisements_from_many_sources_cannot_keep_a_real_peer_out() {
    let mut lan = Lan::new(23);
    let a = lan.add_node_with(unlimited(1, 16));
    // 100 forged instances from 20 (spoofed) addresses fill the table.
    for n in 100..200u8 {
        let ip = format!("192.168.1.{}", 100 + n % 20);
        let packet = forged_announcement(&lan, n, &ip);
        lan.inject_to(a, format!("{ip}:5353").parse().unwrap(), &packet);
    }
    assert_eq!(lan.nodes[a].discovery.peers().count(), 16);
    // A real peer still gets in, at once: an unverified entry gives way.
    let b = lan.add_node(2);
    lan.run_for(Duration::from_millis(10));
    assert!(lan.nodes[a].discovery.peer(&lan.id(b)).is_some());
    // Once a handshake verified it, no flood of new forgeries evicts it.
    let idb = lan.id(b);
    let b_addr = std::net::SocketAddr::new(lan.nodes[b].ip, 4433);
    lan.nodes[a].discovery.handle_verified(&idb, b_addr);
    for n in 200..250u8 {
        let ip = format!("192.168.1.{}", 100 + n % 20);
        let packet = forged_announcement(&lan, n, &ip);
        lan.inject_to(a, format!("{ip}:5353").parse().unwrap(), &packet);
    }
    assert!(lan.nodes[a].discovery.peer(&idb).is_some());
    assert_eq!(lan.nodes[a].discovery.peers().count(), 16);
    assert!(lan.nodes[a].discovery.stats().peers_evicted > 0);
}

#[test]
fn a_forged_peer_is_dropped_and_its_source_ignored_for_a_while() {
    let mut lan = Lan::new(24);
    let a = lan.add_node_with(unlimited(1, 16));
    let from: SocketAddr = "192.168.1.66:5353".parse().unwrap();
    let packet = forged_announcement(&lan, 50, "192.168.1.66");
    lan.inject_to(a, from, &packet);
    let forged = Lan::identity(50);
    assert!(lan.nodes[a].discovery.peer(&forged).is_some());
    // A pinned dial to it was answered by someone else.
    let now = lan.now;
    let forged_at = now;
    lan.nodes[a].discovery.handle_forged(now, &forged);
    lan.run_for(Duration::from_millis(1));
    assert!(lan.nodes[a].discovery.peer(&forged).is_none());
    assert!(
        lan.nodes[a]
            .events
            .iter()
            .any(|(_, e)| matches!(e, DiscoveryEvent::Expired(p) if *p == forged))
    );
    // The source may announce no new instance for a while.
    lan.inject_to(a, from, &packet);
    assert!(lan.nodes[a].discovery.peer(&forged).is_none());
    assert_eq!(lan.nodes[a].discovery.stats().penalized, 1);
    let stats = lan.nodes[a].discovery.stats().clone();
    assert_eq!(stats.peers_forged, 1);
    // Another source's forgery (a while later) does not lift this one's
    // penalty.
    lan.now += Duration::from_secs(1);
    let other_from: SocketAddr = "192.168.1.67:5353".parse().unwrap();
    lan.inject_to(
        a,
        other_from,
        &forged_announcement(&lan, 51, "192.168.1.67"),
    );
    let now = lan.now;
    lan.nodes[a]
        .discovery
        .handle_forged(now, &Lan::identity(51));
    assert_eq!(lan.nodes[a].discovery.stats().peers_forged, 2);
    lan.inject_to(a, from, &packet);
    assert!(lan.nodes[a].discovery.peer(&forged).is_none());
    assert_eq!(lan.nodes[a].discovery.stats().penalized, 2);
    // Until the penalty is over: it lasts `forgery_penalty`, exactly.
    let penalty = lan.nodes[a].discovery.config().forgery_penalty;
    lan.now = forged_at + penalty - Duration::from_nanos(1);
    lan.inject_to(a, from, &packet);
    assert!(lan.nodes[a].discovery.peer(&forged).is_none());
    assert_eq!(lan.nodes[a].discovery.stats().penalized, 3);
    lan.now = forged_at + penalty;
    lan.inject_to(a, from, &packet);
    assert!(lan.nodes[a].discovery.peer(&forged).is_some());
}

#[test]
fn a_flood_from_one_source_does_not_blind_discovery() {
    let mut lan = Lan::new(25);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(2));
    let query = simple_query("_sim._udp.local", 0);
    let flooder: SocketAddr = "192.168.1.200:5353".parse().unwrap();
    // 10,000 packets a second from the flooder; a real peer joins during
    // the flood and must be found within a few seconds, during it.
    let mut b = None;
    let mut found_at = None;
    for ms in 0..10_000u64 {
        for _ in 0..10 {
            lan.inject_to(a, flooder, &query);
        }
        if ms == 2_000 {
            b = Some(lan.add_node(2));
        }
        lan.run_for(Duration::from_millis(1));
        if let Some(b) = b
            && found_at.is_none()
            && lan.nodes[a].discovery.peer(&lan.id(b)).is_some()
        {
            found_at = Some(ms);
        }
    }
    let found_at = found_at.expect("the real peer is found during the flood");
    assert!(
        found_at <= 2_000 + 3_000,
        "found after {} ms",
        found_at - 2_000
    );
    assert!(lan.nodes[a].discovery.stats().rate_limited > 90_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: counted as malformed or handled, never a panic.
    #[test]
    fn arbitrary_packets_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut lan = Lan::new(12);
        let a = lan.add_node(1);
        lan.inject_to(a, "192.168.1.66:5353".parse().unwrap(), &data);
        let stats = lan.nodes[a].discovery.stats();
        prop_assert_eq!(stats.packets, 1);
    }

    /// A real announcement with bytes flipped: never a panic, and a packet
    /// that still parses yields at most one peer.
    #[test]
    fn corrupted_announcements_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let now = std::time::Instant::now();
        let mut forger = Discovery::new(Lan::config(2), now);
        forger.set_addrs(now, vec!["192.168.1.66:4433".parse().unwrap()]);
        let mut packet = forger.poll_transmit().unwrap().payload;
        for (at, byte) in flips {
            let len = packet.len();
            packet[at % len] ^= byte;
        }
        let mut lan = Lan::new(13);
        let a = lan.add_node(1);
        lan.inject_to(a, "192.168.1.66:5353".parse().unwrap(), &packet);
        prop_assert!(lan.nodes[a].discovery.peers().count() <= 1);
    }
}

#[test]
fn malformed_packets_are_counted() {
    let mut lan = Lan::new(14);
    let a = lan.add_node(1);
    let from: SocketAddr = "192.168.1.66:5353".parse().unwrap();
    lan.inject_to(a, from, b"not dns");
    lan.inject_to(a, from, &[0xff; 12]);
    assert_eq!(lan.nodes[a].discovery.stats().malformed, 2);
}

/// PROTOCOL.md §9.10, pinned: which drops count where, and what "not a
/// valid DNS message" means.
#[test]
fn each_drop_goes_to_its_documented_counter() {
    let mut lan = Lan::new(16);
    let a = lan.add_node(1);
    let from: SocketAddr = "192.168.1.67:5353".parse().unwrap();
    // A response header with one answer, then that answer.
    let response = |record: &[u8]| -> Vec<u8> {
        let mut packet = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        packet.extend_from_slice(record);
        packet
    };
    // name, type, class IN, TTL 120, RDLENGTH, RDATA.
    let record = |name: &[u8], rtype: u16, rdata: &[u8]| -> Vec<u8> {
        let mut out = name.to_vec();
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 120]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
        out
    };
    let host = b"\x04host\x05local\x00";
    let mut long_name = Vec::new();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.push(0);
    let stats = |lan: &Lan| lan.nodes[a].discovery.stats().clone();
    let malformed = |lan: &mut Lan, packet: &[u8]| {
        let before = stats(lan);
        lan.inject_to(a, from, packet);
        let after = stats(lan);
        (
            after.packets - before.packets,
            after.malformed - before.malformed,
        )
    };
    // Dropped as not valid DNS: each counts in `packets` and `malformed`.
    for (what, packet) in [
        ("over 9,000 bytes", vec![0u8; 9_001]),
        ("shorter than a header", vec![0u8; 11]),
        (
            "counts its length cannot hold",
            vec![0, 0, 0x84, 0, 0, 0, 0, 3, 0, 0, 0, 0],
        ),
        (
            "a name over 255 bytes",
            response(&record(&long_name, 1, &[10, 0, 0, 1])),
        ),
        (
            "an A record of RDLENGTH 3",
            response(&record(host, 1, &[10, 0, 0])),
        ),
        (
            "an AAAA record of RDLENGTH 15",
            response(&record(host, 28, &[0xfd; 15])),
        ),
        ("a record cut short", {
            let whole = response(&record(host, 1, &[10, 0, 0, 1]));
            whole[..whole.len() - 2].to_vec()
        }),
        (
            "another opcode",
            vec![0, 0, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
    ] {
        assert_eq!(malformed(&mut lan, &packet), (1, 1), "{what}");
    }
    // Accepted: a TXT record of RDLENGTH 0, bytes after the last record.
    let mut trailing = response(&record(host, 1, &[10, 0, 0, 1]));
    trailing.extend_from_slice(&[0xde, 0xad]);
    for (what, packet) in [
        ("a TXT of RDLENGTH 0", response(&record(host, 16, &[]))),
        ("bytes after the last record", trailing),
    ] {
        assert_eq!(malformed(&mut lan, &packet), (1, 0), "{what}");
    }
    // Over the source's allowance (50 at once): `rate_limited`, unparsed,
    // still counted in `packets`.
    let before = stats(&lan);
    for _ in 0..60 {
        lan.inject_to(a, from, b"not dns");
    }
    let after = stats(&lan);
    assert_eq!(after.packets - before.packets, 60);
    assert!(after.rate_limited > before.rate_limited);
    assert_eq!(
        (after.malformed - before.malformed) + (after.rate_limited - before.rate_limited),
        60
    );
}

#[test]
fn different_apps_do_not_see_each_other() {
    let mut lan = Lan::new(15);
    let a = lan.add_node(1);
    let b = lan.add_node_with(DiscoveryConfig::new(Lan::identity(2), "photos", [2; 32]));
    lan.run_for(Duration::from_secs(5));
    assert_eq!(lan.nodes[a].discovery.peers().count(), 0);
    assert_eq!(lan.nodes[b].discovery.peers().count(), 0);
}

/// The question names of a query (none for a response).
fn questions(bytes: &[u8]) -> Vec<String> {
    let packet = simple_dns::Packet::parse(bytes).unwrap();
    if packet.has_flags(simple_dns::PacketFlag::RESPONSE) {
        return Vec::new();
    }
    packet
        .questions
        .iter()
        .map(|q| q.qname.to_string())
        .collect()
}

fn simple_query(service: &str, id: u16) -> Vec<u8> {
    let mut packet = simple_dns::Packet::new_query(id);
    packet.questions.push(simple_dns::Question::new(
        simple_dns::Name::new_unchecked(service),
        simple_dns::QTYPE::TYPE(simple_dns::TYPE::PTR),
        simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().unwrap()
}

#[test]
fn a_node_answers_a_query_identical_to_the_one_it_just_sent() {
    // Two nodes that start together send the same browse question at the
    // same moment; each must still tell the other's query from the loopback
    // echo of its own.
    let now = std::time::Instant::now();
    let mut a = Discovery::new(Lan::config(1), now);
    let mut b = Discovery::new(Lan::config(2), now);
    a.set_addrs(now, vec!["192.168.1.1:4433".parse().unwrap()]);
    b.set_addrs(now, vec!["192.168.1.2:4433".parse().unwrap()]);
    let later = now + Duration::from_secs(2);
    for d in [&mut a, &mut b] {
        while d.poll_transmit().is_some() {}
        d.handle_timeout(later);
    }
    let query = |d: &mut Discovery| loop {
        let payload = d.poll_transmit().expect("a browse query").payload;
        if !simple_dns::Packet::parse(&payload)
            .unwrap()
            .has_flags(simple_dns::PacketFlag::RESPONSE)
        {
            while d.poll_transmit().is_some() {}
            return payload;
        }
    };
    let query_a = query(&mut a);
    let query_b = query(&mut b);
    let from_b: SocketAddr = "192.168.1.2:5353".parse().unwrap();
    // Its own echo: no answer.
    a.handle_packet(later, "192.168.1.1:5353".parse().unwrap(), &query_a);
    a.handle_timeout(later + Duration::from_millis(200));
    assert!(a.poll_transmit().is_none(), "a answered its own query");
    // b's query: answered.
    a.handle_packet(later, from_b, &query_b);
    a.handle_timeout(later + Duration::from_millis(1200));
    let answer = a.poll_transmit().expect("a answers b");
    let packet = simple_dns::Packet::parse(&answer.payload).unwrap();
    assert!(packet.has_flags(simple_dns::PacketFlag::RESPONSE));
}

#[test]
fn a_new_address_restarts_browsing() {
    let mut lan = Lan::new(16);
    let a = lan.add_node(1);
    // After ten minutes the browse interval is long.
    lan.run_for(Duration::from_secs(600));
    let moved_at = lan.elapsed();
    lan.set_ip(a, "192.168.1.77".parse().unwrap());
    lan.run_for(Duration::from_millis(200));
    let service = "_sim._udp.local".to_owned();
    let browsed = lan.log.iter().any(|(from, at, bytes)| {
        *from == a && *at > moved_at && questions(bytes).contains(&service)
    });
    assert!(browsed, "no browse query within 200 ms of the move");
}

/// The PTR from the `sim` service to instance `n`.
fn ptr(n: u8, ttl: u32) -> simple_dns::ResourceRecord<'static> {
    let instance = format!("{}._sim._udp.local", Lan::identity(n));
    simple_dns::ResourceRecord::new(
        simple_dns::Name::new_unchecked("_sim._udp.local"),
        simple_dns::CLASS::IN,
        ttl,
        simple_dns::rdata::RData::PTR(simple_dns::rdata::PTR(
            simple_dns::Name::new_unchecked(&instance).into_owned(),
        )),
    )
}

/// A response for instance `n` as another responder would send it: PTR,
/// SRV (to `port`), TXT (one string) and A (`ip`), with the TTLs given in
/// that order.
fn foreign_response(n: u8, ttls: [u32; 4], port: u16, txt: &str, ip: [u8; 4]) -> Vec<u8> {
    use simple_dns::rdata::{A, RData, SRV, TXT};
    use simple_dns::{CLASS, Name, Packet, PacketFlag, ResourceRecord};
    let id = Lan::identity(n);
    let instance = format!("{id}._sim._udp.local");
    let host = format!("{id}.local");
    let rr = |name: &str, ttl, rdata| {
        ResourceRecord::new(
            Name::new_unchecked(name).into_owned(),
            CLASS::IN,
            ttl,
            rdata,
        )
    };
    let [ptr_ttl, srv_ttl, txt_ttl, a_ttl] = ttls;
    let mut packet = Packet::new_reply(0);
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    packet.answers.push(ptr(n, ptr_ttl));
    let target = Name::new_unchecked(&host).into_owned();
    packet.additional_records.extend([
        rr(
            &instance,
            srv_ttl,
            RData::SRV(SRV {
                priority: 0,
                weight: 0,
                port,
                target,
            }),
        ),
        rr(
            &instance,
            txt_ttl,
            RData::TXT(TXT::new().with_string(txt).unwrap()),
        ),
        rr(
            &host,
            a_ttl,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        ),
    ]);
    packet.build_bytes_vec_compressed().unwrap()
}

/// A response as standard responders (python-zeroconf, Avahi) send it: PTR
/// and TXT with 75 minutes, SRV and A with 2.
fn standard_response(n: u8, ip: [u8; 4]) -> Vec<u8> {
    foreign_response(n, [4500, 120, 4500, 120], 4433, "name=std", ip)
}

#[test]
fn records_with_mixed_ttls_live_as_long_as_the_shortest_and_refresh_asks_for_the_host() {
    let mut lan = Lan::new(17);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(5));
    let from: SocketAddr = "192.168.1.50:5353".parse().unwrap();
    lan.inject_to(a, from, &standard_response(9, [192, 168, 1, 50]));
    let id = Lan::identity(9);
    let peer = lan.nodes[a].discovery.peer(&id).expect("found").clone();
    assert_eq!(peer.addrs, vec!["192.168.1.50:4433".parse().unwrap()]);
    assert_eq!(peer.metadata.get("name"), Some("std"));
    let found_at = lan.elapsed();
    lan.run_for(Duration::from_secs(200));
    // Silent: gone when its SRV and A lapse, not 75 minutes later.
    let expired = lan.nodes[a].events.iter().find_map(|(t, e)| match e {
        DiscoveryEvent::Expired(p) if *p == id => Some(*t),
        _ => None,
    });
    let expired = expired.is_some_and(|t| t - found_at <= Duration::from_secs(121));
    assert!(expired, "{:?}", lan.nodes[a].events);
    // The refresh queries asked for the host's addresses too.
    let host = format!("{id}.local");
    assert!(
        lan.log
            .iter()
            .any(|(f, _, b)| *f == a && questions(b).contains(&host))
    );
}

#[test]
fn bare_ptrs_cannot_keep_real_peers_out() {
    let mut lan = Lan::new(18);
    let a = lan.add_node_with(unlimited(1, 16));
    let from: SocketAddr = "192.168.1.66:5353".parse().unwrap();
    for n in 100..200u8 {
        let mut packet = simple_dns::Packet::new_reply(0);
        packet.answers.push(ptr(n, 4500));
        lan.inject_to(a, from, &packet.build_bytes_vec().unwrap());
    }
    // The table is full of incomplete entries; a real peer still gets in.
    let b = lan.add_node(2);
    lan.run_for(Duration::from_secs(2));
    assert!(lan.nodes[a].discovery.peer(&lan.id(b)).is_some());
    // And the incomplete ones are gone soon.
    lan.run_for(Duration::from_secs(15));
    assert_eq!(lan.nodes[a].discovery.peers().count(), 1);
}

#[test]
fn shutting_down_reports_every_peer_gone() {
    let mut lan = Lan::new(19);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    let c = lan.add_node(3);
    lan.run_for(Duration::from_secs(5));
    lan.shutdown(a);
    let gone: Vec<_> = lan.nodes[a]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            DiscoveryEvent::Expired(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(gone.len(), 2);
    assert!(gone.contains(&lan.id(b)) && gone.contains(&lan.id(c)));
    assert_eq!(lan.nodes[a].discovery.peers().count(), 0);
}

#[test]
fn metadata_changes_are_announced_at_most_once_a_second() {
    let mut lan = Lan::new(20);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(10));
    let before = lan.nodes[a].discovery.stats().responses_sent;
    for i in 0..20 {
        let mut metadata = Metadata::new();
        metadata.insert("name", format!("rename {i}")).unwrap();
        lan.set_metadata(a, metadata);
        lan.run_for(Duration::from_millis(100));
    }
    // Two seconds of renames: at most one multicast per second, then the
    // last announcement train finishes (1 and 3 s after its start).
    let during = lan.nodes[a].discovery.stats().responses_sent - before;
    assert!(during <= 3, "{during} announcements in 2 s");
    lan.run_for(Duration::from_secs(5));
    let b = lan.add_node(2);
    lan.run_for(Duration::from_secs(2));
    let seen = lan.nodes[b].discovery.peer(&lan.id(a)).unwrap();
    assert_eq!(seen.metadata.get("name"), Some("rename 19"));
}

#[test]
fn a_peer_whose_addresses_lapse_is_reported_gone() {
    let mut lan = Lan::new(21);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(5));
    // SRV and TXT for 75 minutes, the address for 2 seconds.
    let id = Lan::identity(9);
    let packet = foreign_response(9, [4500, 4500, 4500, 2], 1, "k=v", [192, 168, 1, 50]);
    lan.inject_to(a, "192.168.1.50:5353".parse().unwrap(), &packet);
    assert!(lan.nodes[a].discovery.peer(&id).is_some());
    lan.run_for(Duration::from_secs(3));
    assert!(lan.nodes[a].discovery.peer(&id).is_none());
    assert!(
        matches!(lan.nodes[a].events.last(), Some((_, DiscoveryEvent::Expired(p))) if *p == id)
    );
}

#[test]
fn the_rate_limit_refills_between_closely_spaced_packets() {
    // 100 packets a second with a burst of 1, and packets 0.5 ms apart
    // (2,000 a second): one in twenty gets through, not none.
    let mut lan = Lan::new(22);
    let mut config = Lan::config(1);
    config.packets_per_second = 100;
    config.packet_burst = 1;
    config.packets_per_source = 1_000_000;
    config.source_burst = 1_000_000;
    let a = lan.add_node_with(config);
    let from: SocketAddr = "192.168.1.66:5353".parse().unwrap();
    for _ in 0..1000 {
        lan.inject_to(a, from, b"x");
        lan.now += Duration::from_micros(500);
    }
    let stats = lan.nodes[a].discovery.stats().clone();
    let parsed = stats.packets - stats.rate_limited;
    // 0.5 s at 100 a second, plus the one in the bucket.
    assert!((49..=52).contains(&parsed), "{parsed} parsed");
}

#[test]
fn only_a_dial_to_an_advertised_address_verifies_a_peer() {
    let mut lan = Lan::new(26);
    let a = lan.add_node_with(unlimited(1, 2));
    let b = lan.add_node(2);
    lan.run_for(Duration::from_millis(10));
    let idb = lan.id(b);
    // A connection from somewhere else proves nothing about the
    // advertisement: b stays evictable.
    lan.nodes[a]
        .discovery
        .handle_verified(&idb, "192.0.2.99:4433".parse().unwrap());
    assert_eq!(lan.nodes[a].discovery.stats().peers_verified, 0);
    for n in [3u8, 4] {
        let packet = forged_announcement(&lan, n, "192.168.1.70");
        lan.inject_to(
            a,
            format!("192.168.1.{}:5353", 60 + n).parse().unwrap(),
            &packet,
        );
    }
    assert!(lan.nodes[a].discovery.peer(&idb).is_none(), "b was evicted");
}

#[test]
fn a_forgery_in_a_verified_peers_name_does_not_silence_it() {
    let mut lan = Lan::new(27);
    let a = lan.add_node_with(unlimited(1, 16));
    let b = lan.add_node(2);
    lan.run_for(Duration::from_millis(10));
    let (idb, b_ip) = (lan.id(b), lan.nodes[b].ip);
    lan.nodes[a]
        .discovery
        .handle_verified(&idb, std::net::SocketAddr::new(b_ip, 4433));
    lan.nodes[a]
        .discovery
        .handle_verified(&idb, std::net::SocketAddr::new(b_ip, 4433));
    assert_eq!(lan.nodes[a].discovery.stats().peers_verified, 1, "once");
    // A forged instance "from" b's address, which fails its dial.
    let from = std::net::SocketAddr::new(b_ip, 5353);
    let packet = forged_announcement(&lan, 50, "192.168.1.99");
    lan.inject_to(a, from, &packet);
    let forged = Lan::identity(50);
    assert!(lan.nodes[a].discovery.peer(&forged).is_some());
    let now = lan.now;
    lan.nodes[a].discovery.handle_forged(now, &forged);
    assert!(lan.nodes[a].discovery.peer(&forged).is_none());
    // b's address is not penalised: a new instance from it is accepted.
    let other = forged_announcement(&lan, 51, "192.168.1.98");
    lan.inject_to(a, from, &other);
    assert!(lan.nodes[a].discovery.peer(&Lan::identity(51)).is_some());
    assert_eq!(lan.nodes[a].discovery.stats().penalized, 0);
}

#[test]
fn a_penalised_source_keeps_its_other_instances() {
    let mut lan = Lan::new(28);
    let a = lan.add_node_with(unlimited(1, 16));
    let from: SocketAddr = "192.168.1.66:5353".parse().unwrap();
    let kept = forged_announcement(&lan, 60, "192.168.1.66");
    let forged = forged_announcement(&lan, 61, "192.168.1.66");
    lan.inject_to(a, from, &kept);
    lan.inject_to(a, from, &forged);
    let now = lan.now;
    lan.nodes[a]
        .discovery
        .handle_forged(now, &Lan::identity(61));
    // A renewal of the instance it already had is still heard.
    lan.now += Duration::from_secs(100);
    lan.inject_to(a, from, &kept);
    lan.run_for(Duration::from_secs(30));
    assert!(lan.nodes[a].discovery.peer(&Lan::identity(60)).is_some());
}

#[test]
fn a_flood_from_many_forged_sources_leaves_verified_peers_their_allowance() {
    let mut lan = Lan::new(29);
    let a = lan.add_node(1);
    let b = lan.add_node(2);
    lan.run_for(Duration::from_millis(10));
    let (idb, b_ip) = (lan.id(b), lan.nodes[b].ip);
    lan.nodes[a]
        .discovery
        .handle_verified(&idb, std::net::SocketAddr::new(b_ip, 4433));
    // 50,000 queries in a second, each from a new address of the segment.
    let query = simple_query("_sim._udp.local", 0);
    for i in 0..50_000u32 {
        let from = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 5353));
        lan.inject_to(a, from, &query);
        if i % 50 == 0 {
            lan.now += Duration::from_millis(1);
        }
    }
    // b's goodbye still gets through at once.
    assert!(lan.nodes[a].discovery.stats().rate_limited > 40_000);
    lan.shutdown(b);
    lan.run_for(Duration::from_secs(2));
    assert!(
        lan.nodes[a].discovery.peer(&idb).is_none(),
        "b's goodbye was heard"
    );
}

#[test]
fn a_message_that_overflows_the_table_admits_what_fits_and_refuses_the_rest() {
    let mut lan = Lan::new(40);
    let mut config = unlimited(1, 16);
    config.max_instances_per_source = 64;
    let a = lan.add_node_with(config);
    // One message with 30 bare PTRs: the instances are taken in the order
    // they appear, the first 16 fill the table, and the other 14 are
    // refused rather than pushing out entries the same message created.
    let mut packet = simple_dns::Packet::new_reply(0);
    for n in 100..130u8 {
        packet.answers.push(ptr(n, 4500));
    }
    let from: SocketAddr = "192.168.1.67:5353".parse().unwrap();
    lan.inject_to(a, from, &packet.build_bytes_vec().unwrap());
    let stats = lan.nodes[a].discovery.stats().clone();
    assert_eq!(stats.peers_refused, 14);
    assert_eq!(stats.peers_evicted, 0);
    let mut first: Vec<_> = (100..116u8).map(Lan::identity).collect();
    let discovery = &lan.nodes[a].discovery;
    assert_eq!(discovery.table_len(), 16);
    assert!(first.iter().all(|id| discovery.has_entry(id)));
    first.sort();
    // A later message may push out the oldest incomplete entry, the
    // smallest identity among those renewed at the same moment.
    let mut packet = simple_dns::Packet::new_reply(0);
    packet.answers.push(ptr(200, 4500));
    lan.inject_to(a, from, &packet.build_bytes_vec().unwrap());
    let stats = lan.nodes[a].discovery.stats().clone();
    assert_eq!(stats.peers_evicted, 1);
    let discovery = &lan.nodes[a].discovery;
    assert!(!discovery.has_entry(&first[0]));
    assert!(first[1..].iter().all(|id| discovery.has_entry(id)));
    assert!(discovery.has_entry(&Lan::identity(200)));
}

#[test]
fn an_answer_left_pending_by_an_announcement_waits_a_second_after_it() {
    let mut lan = Lan::new(41);
    let a = lan.add_node(1);
    lan.run_for(Duration::from_secs(5));
    // A service enumeration query: a's answer is due 20–119 ms later.
    let from: SocketAddr = "192.168.1.70:5353".parse().unwrap();
    lan.inject_to(a, from, &simple_query("_services._dns-sd._udp.local", 0));
    lan.run_for(Duration::from_millis(10));
    // Then its metadata changes: the announcement goes at once and leaves
    // the enumeration PTR pending.
    let mut metadata = Metadata::new();
    metadata.insert("name", "renamed").unwrap();
    lan.set_metadata(a, metadata);
    lan.run_for(Duration::from_secs(3));
    let responses: Vec<(Duration, bool)> = lan
        .log
        .iter()
        .filter(|(node, _, _)| *node == a)
        .filter_map(|(_, at, bytes)| {
            let packet = simple_dns::Packet::parse(bytes).ok()?;
            packet.has_flags(simple_dns::PacketFlag::RESPONSE).then(|| {
                let enumeration = packet
                    .answers
                    .iter()
                    .any(|r| r.name.to_string() == "_services._dns-sd._udp.local");
                (*at, enumeration)
            })
        })
        .filter(|(at, _)| *at >= Duration::from_secs(5))
        .collect();
    let announced = responses.iter().find(|(_, e)| !e).expect("announcement").0;
    let answered = responses
        .iter()
        .find(|(_, e)| *e)
        .expect("enumeration answer")
        .0;
    assert!(
        answered >= announced + Duration::from_secs(1),
        "announced at {announced:?}, answered at {answered:?}"
    );
}

/// A response built record by record, for instance numbers `n` of the `sim`
/// service (port 4433, one TXT string).
struct Records(simple_dns::Packet<'static>);

impl Records {
    fn new() -> Self {
        let mut packet = simple_dns::Packet::new_reply(0);
        packet.set_flags(simple_dns::PacketFlag::AUTHORITATIVE_ANSWER);
        Self(packet)
    }

    fn rr(
        name: &str,
        ttl: u32,
        rdata: simple_dns::rdata::RData<'static>,
    ) -> simple_dns::ResourceRecord<'static> {
        simple_dns::ResourceRecord::new(
            simple_dns::Name::new_unchecked(name).into_owned(),
            simple_dns::CLASS::IN,
            ttl,
            rdata,
        )
    }

    fn instance(n: u8) -> String {
        format!("{}._sim._udp.local", Lan::identity(n))
    }

    fn ptr(mut self, n: u8, ttl: u32) -> Self {
        self.0.answers.push(ptr(n, ttl));
        self
    }

    fn srv(mut self, n: u8, ttl: u32, host: &str) -> Self {
        let srv = simple_dns::rdata::SRV {
            priority: 0,
            weight: 0,
            port: 4433,
            target: simple_dns::Name::new_unchecked(host).into_owned(),
        };
        let record = Self::rr(&Self::instance(n), ttl, simple_dns::rdata::RData::SRV(srv));
        self.0.additional_records.push(record);
        self
    }

    fn txt(mut self, n: u8, ttl: u32) -> Self {
        let txt = simple_dns::rdata::TXT::new().with_string("name=x").unwrap();
        let record = Self::rr(&Self::instance(n), ttl, simple_dns::rdata::RData::TXT(txt));
        self.0.additional_records.push(record);
        self
    }

    fn a(mut self, host: &str, ip: [u8; 4], ttl: u32) -> Self {
        let a = simple_dns::rdata::A::from(std::net::Ipv4Addr::from(ip));
        let record = Self::rr(host, ttl, simple_dns::rdata::RData::A(a));
        self.0.additional_records.push(record);
        self
    }

    /// PTR, SRV (to `host`) and TXT of instance `n`, live.
    fn full(self, n: u8, host: &str) -> Self {
        self.ptr(n, 4500).srv(n, 120, host).txt(n, 4500)
    }

    fn send(self, lan: &mut Lan, to: usize) {
        let bytes = self.0.build_bytes_vec_compressed().unwrap();
        lan.inject_to(to, "192.168.1.50:5353".parse().unwrap(), &bytes);
    }
}

fn addrs_of(lan: &Lan, at: usize, n: u8) -> Option<Vec<SocketAddr>> {
    let peer = lan.nodes[at].discovery.peer(&Lan::identity(n))?;
    Some(peer.addrs.clone())
}

fn addr(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 4433))
}

#[test]
fn instances_that_share_a_host_keep_its_addresses_when_one_goes() {
    let mut lan = Lan::new(42);
    let a = lan.add_node_with(unlimited(1, 64));
    lan.run_for(Duration::from_secs(5));
    let host = "shared.local";
    Records::new()
        .full(9, host)
        .full(10, host)
        .a(host, [192, 168, 1, 50], 120)
        .send(&mut lan, a);
    assert_eq!(addrs_of(&lan, a, 9), Some(vec![addr([192, 168, 1, 50])]));
    assert_eq!(addrs_of(&lan, a, 10), Some(vec![addr([192, 168, 1, 50])]));
    // Instance 9 says goodbye and goes a second later.
    Records::new().ptr(9, 0).send(&mut lan, a);
    lan.run_for(Duration::from_secs(2));
    assert!(!lan.nodes[a].discovery.has_entry(&Lan::identity(9)));
    // Instance 10 renews its records (not the host's): it is still
    // reachable at the host's address.
    Records::new().full(10, host).send(&mut lan, a);
    assert_eq!(addrs_of(&lan, a, 10), Some(vec![addr([192, 168, 1, 50])]));
    let id10 = Lan::identity(10);
    let gone = lan.nodes[a]
        .events
        .iter()
        .any(|(_, e)| matches!(e, DiscoveryEvent::Expired(p) if *p == id10));
    assert!(!gone, "{:?}", lan.nodes[a].events);
}

#[test]
fn an_unknown_instance_gets_an_entry_for_any_live_record_and_none_for_goodbyes() {
    let mut lan = Lan::new(43);
    let a = lan.add_node_with(unlimited(1, 64));
    lan.run_for(Duration::from_secs(5));
    let host = "h.local";
    // Goodbyes for instances the node never knew create nothing.
    Records::new().ptr(20, 0).send(&mut lan, a);
    Records::new()
        .ptr(21, 0)
        .srv(21, 0, host)
        .txt(21, 0)
        .send(&mut lan, a);
    // Any one live record does.
    Records::new().ptr(22, 4500).send(&mut lan, a);
    Records::new().srv(23, 120, host).send(&mut lan, a);
    Records::new().txt(24, 4500).send(&mut lan, a);
    let has = |n| lan.nodes[a].discovery.has_entry(&Lan::identity(n));
    assert_eq!(
        [has(20), has(21), has(22), has(23), has(24)],
        [false, false, true, true, true]
    );
    assert_eq!(lan.nodes[a].discovery.table_len(), 3);
}

#[test]
fn an_incomplete_entry_holds_its_place_for_ten_seconds_and_a_goodbye_shortens_it() {
    let mut lan = Lan::new(44);
    let a = lan.add_node_with(unlimited(1, 64));
    lan.run_for(Duration::from_secs(5));
    // A bare PTR: an entry, incomplete, for ten seconds.
    Records::new().ptr(30, 4500).send(&mut lan, a);
    // A new instance whose SRV says goodbye: an entry for one second.
    Records::new()
        .ptr(31, 4500)
        .srv(31, 0, "h.local")
        .txt(31, 4500)
        .send(&mut lan, a);
    let has = |lan: &Lan, n| lan.nodes[a].discovery.has_entry(&Lan::identity(n));
    lan.run_for(Duration::from_millis(900));
    assert!(has(&lan, 30) && has(&lan, 31));
    lan.run_for(Duration::from_millis(200));
    assert!(has(&lan, 30) && !has(&lan, 31));
    lan.run_for(Duration::from_millis(8800));
    assert!(has(&lan, 30));
    lan.run_for(Duration::from_millis(200));
    assert!(!has(&lan, 30));
}

#[test]
fn a_goodbye_for_one_address_removes_it_a_second_later() {
    let mut lan = Lan::new(45);
    let a = lan.add_node_with(unlimited(1, 64));
    lan.run_for(Duration::from_secs(5));
    // Instance 40 on two addresses; one says goodbye.
    Records::new()
        .full(40, "h40.local")
        .a("h40.local", [192, 168, 1, 41], 120)
        .a("h40.local", [192, 168, 1, 42], 120)
        .send(&mut lan, a);
    // Instance 41 on one address, which says goodbye.
    Records::new()
        .full(41, "h41.local")
        .a("h41.local", [192, 168, 1, 43], 120)
        .send(&mut lan, a);
    // Instance 42 moves from one address to another in one message.
    Records::new()
        .full(42, "h42.local")
        .a("h42.local", [192, 168, 1, 44], 120)
        .send(&mut lan, a);
    lan.run_for(Duration::from_millis(100));
    Records::new()
        .a("h40.local", [192, 168, 1, 41], 0)
        .send(&mut lan, a);
    Records::new()
        .a("h41.local", [192, 168, 1, 43], 0)
        .send(&mut lan, a);
    Records::new()
        .a("h42.local", [192, 168, 1, 45], 120)
        .a("h42.local", [192, 168, 1, 44], 0)
        .send(&mut lan, a);
    let sorted = |lan: &Lan, n| {
        let mut addrs = addrs_of(lan, a, n).unwrap_or_default();
        addrs.sort();
        addrs
    };
    lan.run_for(Duration::from_millis(900));
    assert_eq!(
        sorted(&lan, 40),
        vec![addr([192, 168, 1, 41]), addr([192, 168, 1, 42])]
    );
    assert_eq!(sorted(&lan, 41), vec![addr([192, 168, 1, 43])]);
    assert_eq!(
        sorted(&lan, 42),
        vec![addr([192, 168, 1, 44]), addr([192, 168, 1, 45])]
    );
    lan.run_for(Duration::from_millis(200));
    assert_eq!(sorted(&lan, 40), vec![addr([192, 168, 1, 42])]);
    assert_eq!(addrs_of(&lan, a, 41), None, "no address left: gone");
    assert_eq!(sorted(&lan, 42), vec![addr([192, 168, 1, 45])]);
}

#[test]
fn a_goodbye_never_takes_a_host_past_its_address_limit() {
    let mut lan = Lan::new(46);
    let a = lan.add_node_with(unlimited(1, 64));
    lan.run_for(Duration::from_secs(5));
    let host = "h50.local";
    Records::new()
        .full(50, host)
        .a(host, [192, 168, 1, 9], 120)
        .send(&mut lan, a);
    // Eight new addresses (the limit per peer) and a goodbye for the old
    // one: the new ones win, the old one goes at once.
    let mut moved = Records::new();
    for last in 10..18 {
        moved = moved.a(host, [192, 168, 1, last], 120);
    }
    moved.a(host, [192, 168, 1, 9], 0).send(&mut lan, a);
    let addrs = addrs_of(&lan, a, 50).expect("still reachable");
    assert_eq!(addrs.len(), 8, "{addrs:?}");
    assert!(!addrs.contains(&addr([192, 168, 1, 9])), "{addrs:?}");
}

#[test]
fn a_source_that_fills_the_table_pushes_out_its_own_entries_first() {
    let mut lan = Lan::new(47);
    let a = lan.add_node_with(unlimited(1, 4));
    let (x, y) = ("192.168.1.80", "192.168.1.81");
    let announce = |lan: &mut Lan, n: u8, ip: &str| {
        let packet = forged_announcement(lan, n, ip);
        lan.inject_to(a, format!("{ip}:5353").parse().unwrap(), &packet);
        lan.run_for(Duration::from_millis(10));
    };
    // Source x's two entries are the oldest in the table.
    announce(&mut lan, 60, x);
    announce(&mut lan, 61, x);
    announce(&mut lan, 62, y);
    announce(&mut lan, 63, y);
    assert_eq!(lan.nodes[a].discovery.table_len(), 4);
    // Source y announces a fifth: its own oldest entry makes room, not x's.
    announce(&mut lan, 64, y);
    let has = |n| lan.nodes[a].discovery.has_entry(&Lan::identity(n));
    assert_eq!(
        [has(60), has(61), has(62), has(63), has(64)],
        [true, true, false, true, true]
    );
    assert_eq!(lan.nodes[a].discovery.stats().peers_evicted, 1);
}
