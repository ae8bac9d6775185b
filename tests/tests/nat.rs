//! Real NATs (docs/PROTOCOL.md §10.6, §10.7): two hosts, each behind its
//! own nftables NAT in a network namespace, that know only each other's
//! identity and a relay on the "public" segment. They connect through the
//! relay, go direct (asserted by where the datagrams flow: the same
//! connection's direct route, §10.9), and a transfer started through the
//! relay survives the switch. Nothing leaves the namespaces.

use std::time::Duration;

use pos_p2p_tests::netns::NatLab;

const NODE: &str = env!("CARGO_BIN_EXE_nat_node");

#[test]
fn two_hosts_behind_real_nats_meet_through_the_relay_and_go_direct() {
    let Some(lab) = NatLab::new("real NAT traversal") else {
        return;
    };
    let listen = format!("{}:3340", NatLab::RELAY_IP);
    let mut relay = lab.spawn(&lab.relay, NODE, &["relay", &listen]);
    let relay_addr = relay
        .wait_line("relay ", Duration::from_secs(30))
        .expect("the relay starts")
        .trim_start_matches("relay ")
        .to_owned();
    let mut a = lab.spawn(&lab.homes[0], NODE, &["serve", "1", &relay_addr]);
    let identity = a
        .wait_line("ready ", Duration::from_secs(30))
        .expect("a starts")
        .trim_start_matches("ready ")
        .to_owned();
    // 16 MiB through the relay's first stream, then 16 MiB more.
    let mut b = lab.spawn(
        &lab.homes[1],
        NODE,
        &["reach", "2", &relay_addr, &identity, "16"],
    );
    let direct = b.wait_line("direct ", Duration::from_secs(60));
    let second = b.wait_line("second ", Duration::from_secs(120));
    let b = b.finish(Duration::from_secs(10));
    let a = a.finish(Duration::from_secs(1));
    let _ = relay.finish(Duration::from_secs(1));
    let context = format!("b: {}\na: {}", b.describe(), a.describe());
    // b reaches a at a's NAT's public address.
    let direct = direct.unwrap_or_else(|| panic!("b never went direct\n{context}"));
    let fields: Vec<&str> = direct.split_whitespace().collect();
    let addr: std::net::SocketAddr = fields[1].parse().expect("an address");
    assert_eq!(addr.ip(), NatLab::nat_ip(0), "{context}");
    let ms: u64 = fields[2].parse().expect("milliseconds");
    eprintln!("direct {ms} ms after b first asked for a (through two real NATs)");
    // The connection (and its first stream) began on the relay, moved to
    // the direct route while the stream ran, and the stream arrived whole
    // across the switch; the second went direct: at most a few relayed
    // datagrams came with it.
    let first = b
        .stdout
        .lines()
        .find(|l| l.starts_with("first "))
        .unwrap_or_else(|| panic!("no first transfer\n{context}"));
    let first: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(first[0], 16 << 20, "{context}");
    assert!(first[1] > 0, "the connection began on the relay\n{context}");
    let line = |prefix: &str| b.stdout.lines().position(|l| l.starts_with(prefix));
    assert!(
        line("direct ") < line("first "),
        "the switch came while the first stream ran\n{context}"
    );
    let second = second.unwrap_or_else(|| panic!("no second transfer\n{context}"));
    let second: Vec<u64> = second
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(second[0], 16 << 20, "{context}");
    assert!(
        second[1] - first[1] < 100,
        "{} datagrams of the second transfer went through the relay\n{context}",
        second[1] - first[1]
    );
}
