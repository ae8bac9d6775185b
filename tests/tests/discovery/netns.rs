//! Real sockets, real multicast: nodes in two network namespaces joined by
//! a veth pair find each other by mDNS alone and connect. Needs root and
//! iproute2; the namespaces are removed afterwards, even on failure.
//!
//! On a machine without them the tests say so and pass, unless
//! `POS_P2P_REQUIRE_NETNS=1` is set (`.ci/run` sets it), in which case they
//! fail.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pos_p2p_tests::lan::Lan;
use pos_p2p_tests::netns::{Finished, Watched, require};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair, 10.77.0.1/24 and 10.77.0.2/24, or
/// with IPv6 only: fd77::1/64 and fd77::2/64.
struct Pair {
    ns: [String; 2],
    /// The veth ends, in namespace 0 and 1.
    links: [String; 2],
}

impl Pair {
    fn new() -> Option<Self> {
        Self::with(false)
    }

    fn with(ipv6_only: bool) -> Option<Self> {
        require("this namespace test")?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        let (va, vb) = (format!("pa{tag}"), format!("pb{tag}"));
        let pair = Pair {
            ns: [format!("posA{tag}"), format!("posB{tag}")],
            links: [va.clone(), vb.clone()],
        };
        let [a, b] = &pair.ns;
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", a],
            vec!["link", "set", &vb, "netns", b],
        ];
        let addrs: Vec<Vec<&str>> = if ipv6_only {
            vec![
                vec!["-n", a, "addr", "add", "fd77::1/64", "dev", &va, "nodad"],
                vec!["-n", b, "addr", "add", "fd77::2/64", "dev", &vb, "nodad"],
            ]
        } else {
            vec![
                vec!["-n", a, "addr", "add", "10.77.0.1/24", "dev", &va],
                vec!["-n", b, "addr", "add", "10.77.0.2/24", "dev", &vb],
            ]
        };
        let up: Vec<Vec<&str>> = vec![
            vec!["-n", a, "link", "set", &va, "up"],
            vec!["-n", b, "link", "set", &vb, "up"],
            vec!["-n", a, "link", "set", "lo", "up"],
            vec!["-n", b, "link", "set", "lo", "up"],
        ];
        for step in steps.iter().chain(&addrs).chain(&up) {
            let out = Command::new("ip").args(step).output().expect("ip runs");
            assert!(
                out.status.success(),
                "ip {step:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(pair)
    }

    /// `ip args` in namespace `i`.
    fn ip(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns[i]])
            .args(args)
            .output()
            .expect("ip runs");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (up to 10 s) until both veth ends have an IPv6 link-local
    /// address that finished duplicate address detection.
    fn wait_link_local(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for i in 0..2 {
            loop {
                let link = &self.links[i];
                let addrs = self.ip(i, &["-6", "addr", "show", "dev", link, "scope", "link"]);
                if addrs.contains("fe80::") && !addrs.contains("tentative") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no usable IPv6 link-local address on {link}: {addrs}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Start `lan_node` with `args` in namespace `i`.
    fn spawn(&self, i: usize, args: &[&str]) -> Watched {
        Watched::new(
            Command::new("ip")
                .args(["netns", "exec", &self.ns[i], env!("CARGO_BIN_EXE_lan_node")])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("lan_node starts"),
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and the pair.
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn finish(child: Watched, limit: Duration) -> Finished {
    child.finish(limit)
}

fn stdout(output: &Finished) -> &str {
    &output.stdout
}

fn describe(output: &Finished) -> String {
    output.describe()
}

#[test]
fn two_nodes_find_each_other_and_connect_without_an_address() {
    let Some(pair) = Pair::new() else { return };
    // a disconnects b and pings it again (re-dialed by b's advertised
    // addresses); b then turns discovery off, so its records expire at a
    // while their connection carries a last ping.
    let a = pair.spawn(0, &["discover", "lan-test", "1", "1", "20", "1", "stay"]);
    let b = pair.spawn(1, &["discover", "lan-test", "2", "1", "20", "4", "leave"]);
    let (a, b) = (
        finish(a, Duration::from_secs(40)),
        finish(b, Duration::from_secs(40)),
    );
    for (out, other) in [(&a, 2), (&b, 1)] {
        assert!(
            out.status.success(),
            "a: {}\nb: {}",
            describe(&a),
            describe(&b)
        );
        let other = Lan::identity(other);
        let text = stdout(out);
        assert!(text.contains(&format!("discovered {other}")), "{text}");
    }
    let id_b = Lan::identity(2);
    // a's first ping dialed b by its advertised addresses: b never dials.
    for line in ["pinged", "repinged", "expired", "pinged-after-expiry"] {
        assert!(
            stdout(&a).contains(&format!("{line} {id_b}")),
            "{}",
            stdout(&a)
        );
    }
    assert!(stdout(&b).contains("ponged"), "{}", stdout(&b));
    assert!(stdout(&b).contains("discovery-off"), "{}", stdout(&b));
    // a's dial to b's advertised addresses proved b's announcement genuine.
    assert!(stdout(&a).contains("verified 1\n"), "{}", stdout(&a));
    // Each saw the other at its veth address.
    assert!(stdout(&a).contains("10.77.0.2:"), "{}", stdout(&a));
    assert!(stdout(&b).contains("10.77.0.1:"), "{}", stdout(&b));
}

#[test]
fn a_node_with_discovery_off_sends_no_multicast() {
    let Some(pair) = Pair::new() else { return };
    // The control: a node with discovery on is heard by the sniffer.
    let mut sniffer = pair.spawn(1, &["sniff", "3"]);
    sniffer.wait_line("listening", Duration::from_secs(10));
    let node = pair.spawn(0, &["advertise", "lan-test", "3", "loud", "2"]);
    let heard = finish(sniffer, Duration::from_secs(10));
    finish(node, Duration::from_secs(10));
    assert!(stdout(&heard).contains("packets "), "{}", describe(&heard));
    assert!(
        !stdout(&heard).ends_with("packets 0\n"),
        "{}",
        describe(&heard)
    );

    let mut sniffer = pair.spawn(1, &["sniff", "3"]);
    sniffer.wait_line("listening", Duration::from_secs(10));
    let node = pair.spawn(0, &["quiet", "lan-test", "4", "2"]);
    let quiet = finish(sniffer, Duration::from_secs(10));
    let node = finish(node, Duration::from_secs(10));
    assert!(node.status.success(), "{}", describe(&node));
    assert!(
        stdout(&quiet).ends_with("packets 0\n"),
        "{}",
        describe(&quiet)
    );
}

#[test]
fn a_goodbye_reaches_the_other_namespace() {
    let Some(pair) = Pair::new() else { return };
    let mut watcher = pair.spawn(1, &["advertise", "lan-test", "5", "watcher", "8"]);
    watcher.wait_line("ready", Duration::from_secs(10));
    let leaver = pair.spawn(0, &["advertise", "lan-test", "6", "leaver", "2"]);
    let leaver = finish(leaver, Duration::from_secs(10));
    let watcher = finish(watcher, Duration::from_secs(20));
    assert!(leaver.status.success(), "{}", describe(&leaver));
    let text = stdout(&watcher);
    let id = Lan::identity(6);
    assert!(text.contains(&format!("discovered {id}")), "{text}");
    // Expired by the goodbye, long before its 120 s TTL.
    assert!(text.contains(&format!("expired {id}")), "{text}");
}

/// A node whose only IPv4 address goes away notices at once (an rtnetlink
/// notification, not the 30 s scan), and its goodbye for that last address
/// still reaches the peer: over IPv6, on the link-local address that the
/// interface keeps (the interface stays in the list, and in the IPv6
/// group, by its link-local address). Without the notification the peer
/// would learn of it 30 s later; without the goodbye, after the records'
/// TTL (120 s).
#[test]
fn a_node_that_loses_its_address_says_goodbye_at_once() {
    let Some(pair) = Pair::new() else { return };
    pair.wait_link_local();
    let mut watcher = pair.spawn(1, &["advertise", "lan-test", "9", "watcher", "40"]);
    assert!(
        watcher
            .wait_line("ready", Duration::from_secs(10))
            .is_some(),
        "the watcher starts"
    );
    let leaver = pair.spawn(0, &["advertise", "lan-test", "10", "leaver", "40"]);
    let id = Lan::identity(10);
    assert!(
        watcher
            .wait_line(&format!("discovered {id}"), Duration::from_secs(15))
            .is_some(),
        "the watcher finds the leaver"
    );
    pair.ip(0, &["addr", "del", "10.77.0.1/24", "dev", &pair.links[0]]);
    let removed = std::time::Instant::now();
    let expired = watcher.wait_line(&format!("expired {id}"), Duration::from_secs(10));
    let waited = removed.elapsed();
    let (leaver, watcher) = (
        finish(leaver, Duration::ZERO),
        finish(watcher, Duration::ZERO),
    );
    assert!(
        expired.is_some(),
        "no goodbye within 10 s of the address going away\nwatcher: {}\nleaver: {}",
        describe(&watcher),
        describe(&leaver)
    );
    println!("expired {waited:?} after the address went away");
}

/// IPv4 alone (IPv6 off in both namespaces): a node whose address is
/// replaced (as a DHCP lease can be) joins the group again with its new
/// address at once and announces it; the peer sees the new address. (The
/// rescan used to keep the interface as joined under its old address, then
/// drop it: no IPv4 multicast left until the next scan.)
#[test]
fn a_replaced_ipv4_address_is_announced_at_once() {
    let Some(pair) = Pair::new() else { return };
    for i in 0..2 {
        let ns = &pair.ns[i];
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                // IPv6 off; and the new address stays when the old
                // (primary) one is deleted, as a lease change leaves it.
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv4.conf.all.promote_secondaries=1",
            ])
            .output()
            .expect("sysctl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut watcher = pair.spawn(1, &["advertise", "lan-test", "11", "watcher", "40"]);
    assert!(
        watcher
            .wait_line("ready", Duration::from_secs(10))
            .is_some()
    );
    let mover = pair.spawn(0, &["advertise", "lan-test", "12", "mover", "40"]);
    let id = Lan::identity(12);
    assert!(
        watcher
            .wait_line(&format!("discovered {id}"), Duration::from_secs(15))
            .is_some(),
        "the watcher finds the mover"
    );
    pair.ip(0, &["addr", "add", "10.77.0.3/24", "dev", &pair.links[0]]);
    pair.ip(0, &["addr", "del", "10.77.0.1/24", "dev", &pair.links[0]]);
    let moved = std::time::Instant::now();
    let mut changed = None;
    while moved.elapsed() < Duration::from_secs(10) {
        match watcher.wait_line(&format!("changed {id}"), Duration::from_secs(1)) {
            Some(line) if line.contains("10.77.0.3:") && !line.contains("10.77.0.1:") => {
                changed = Some(line);
                break;
            }
            // An earlier change (the new address beside the old one).
            Some(_) => watcher.forget(&format!("changed {id}")),
            None => {}
        }
    }
    let waited = moved.elapsed();
    let (mover, watcher) = (
        finish(mover, Duration::ZERO),
        finish(watcher, Duration::ZERO),
    );
    assert!(
        changed.is_some(),
        "the new address was not announced within 10 s\nwatcher: {}\nmover: {}",
        describe(&watcher),
        describe(&mover)
    );
    println!("new address seen {waited:?} after the change");
}

#[test]
fn discovery_works_over_ipv6_alone() {
    let Some(pair) = Pair::with(true) else { return };
    // b only answers; a finds it by the IPv6 group and dials its IPv6
    // address.
    let a = pair.spawn(0, &["discover", "lan-v6", "7", "1", "20", "1"]);
    let b = pair.spawn(1, &["discover", "lan-v6", "8", "1", "20", "3", "leave"]);
    let (a, b) = (
        finish(a, Duration::from_secs(40)),
        finish(b, Duration::from_secs(40)),
    );
    assert!(
        a.status.success() && b.status.success(),
        "a: {}\nb: {}",
        describe(&a),
        describe(&b)
    );
    let id_b = Lan::identity(8);
    assert!(
        stdout(&a).contains(&format!("pinged {id_b}")),
        "{}",
        stdout(&a)
    );
    assert!(stdout(&a).contains("[fd77::2]:"), "{}", stdout(&a));
    assert!(stdout(&b).contains("[fd77::1]:"), "{}", stdout(&b));
}
