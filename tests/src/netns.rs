//! Network namespaces for real-socket tests: hosts on one LAN segment,
//! made with iproute2 and removed when dropped (even when a test fails).
//! Needs root; [`Segment::new`] says so and returns `None` without it,
//! unless `POS_P2P_REQUIRE_NETNS=1` is set, when it panics instead.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this process may make network namespaces (root, and `ip`).
pub fn available() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    });
    root && Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `None`, with a note on stderr, if namespaces are unavailable; a panic
/// instead if the environment requires them.
pub fn require(what: &str) -> Option<()> {
    if available() {
        return Some(());
    }
    assert!(
        std::env::var_os("POS_P2P_REQUIRE_NETNS").is_none(),
        "POS_P2P_REQUIRE_NETNS is set but network namespaces are unavailable (need root and iproute2)"
    );
    // Written to the process's stderr directly, not through `eprintln!`,
    // which the test harness captures for passing tests: a skip shows in
    // the output of `cargo test` as it happens.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {what}: network namespaces need root and iproute2"
    );
    None
}

/// Hosts on one segment: a namespace per host, each with a veth to a
/// bridge in a hub namespace, addresses `10.<net>.0.<i + 1>/24`.
#[derive(Debug)]
pub struct Segment {
    hub: String,
    /// The hosts' namespaces.
    pub hosts: Vec<String>,
    /// The hosts' addresses.
    pub ips: Vec<Ipv4Addr>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Segment {
    /// `hosts` hosts on `10.<net>.0.0/24`.
    pub fn new(what: &str, hosts: usize, net: u8) -> Option<Self> {
        require(what)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        let hub = format!("posH{tag}");
        ip(&["netns", "add", &hub]);
        let mut segment = Segment {
            hub: hub.clone(),
            hosts: Vec::new(),
            ips: Vec::new(),
        };
        // Multicast (mDNS) must cross the bridge without IGMP snooping.
        ip(&[
            "-n",
            &hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = format!("posS{tag}h{i}");
            ip(&["netns", "add", &ns]);
            segment.hosts.push(ns.clone());
            let (inner, outer) = (format!("h{i}"), format!("p{tag}h{i}"));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &outer, "netns", &hub]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &outer, "up"]);
            let addr = Ipv4Addr::new(10, net, 0, i as u8 + 1);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            segment.ips.push(addr);
        }
        Some(segment)
    }

    /// `program args` in host `i`'s namespace, its output piped.
    pub fn spawn(&self, i: usize, program: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the program starts")
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Deleting a namespace deletes its ends of the veths.
        for ns in self.hosts.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Wait for a child, killing it after `limit`.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A child whose stdout is read line by line as it runs, so a test can wait
/// for a line (readiness) rather than sleep.
#[derive(Debug)]
pub struct Watched {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

/// What a [`Watched`] child did.
#[derive(Debug)]
pub struct Finished {
    /// How it ended (killed if it outlived its limit).
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Finished {
    /// Status and output, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Watched {
    /// Watch `child` (spawned with piped stdout and stderr).
    pub fn new(mut child: Child) -> Self {
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait (up to `limit`) for a line starting with `prefix`; the line.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Some(line.clone());
        }
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
    }

    /// Drop the lines seen so far that start with `prefix`, so that
    /// [`Watched::wait_line`] waits for a new one.
    pub fn forget(&mut self, prefix: &str) {
        self.seen.retain(|line| !line.starts_with(prefix));
    }

    /// Wait for the child to end, killing it after `limit`.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.wait().expect("wait");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        // The reader thread ends with the child's stdout.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let mut stdout = self.seen.join("\n");
        stdout.push('\n');
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

/// Whether nftables' `nft` is installed (the NAT lab needs it).
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A small internet in namespaces: a public segment `203.0.113.0/24` with
/// a relay host at `.1`, and two home networks `192.168.<k>.0/24` (a host
/// at `.2` each), each behind its own NAT router (public address
/// `203.0.113.1<k>`, nftables masquerading, which maps a socket to one
/// public port whatever the destination, and a firewall that lets in only
/// replies to what went out). Removed when dropped.
#[derive(Debug)]
pub struct NatLab {
    /// The relay host's namespace.
    pub relay: String,
    /// The NAT routers' namespaces.
    pub nats: [String; 2],
    /// The home hosts' namespaces.
    pub homes: [String; 2],
    all: Vec<String>,
}

impl NatLab {
    /// The relay host's address.
    pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    /// The public address of NAT `k` (0 or 1).
    pub fn nat_ip(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 11 + k as u8)
    }

    /// Build it; `None` (with a note) where namespaces or nftables are
    /// unavailable, unless `POS_P2P_REQUIRE_NETNS=1` (then a panic).
    pub fn new(what: &str) -> Option<Self> {
        require(what)?;
        if !nft_available() {
            assert!(
                std::env::var_os("POS_P2P_REQUIRE_NETNS").is_none(),
                "POS_P2P_REQUIRE_NETNS is set but nft (nftables) is not installed"
            );
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {what}: nft is not installed");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        let name = |role: &str| format!("posN{tag}{role}");
        let mut lab = NatLab {
            relay: name("relay"),
            nats: [name("nat0"), name("nat1")],
            homes: [name("home0"), name("home1")],
            all: Vec::new(),
        };
        let hub = name("hub");
        for ns in [&hub, &lab.relay]
            .into_iter()
            .chain(&lab.nats)
            .chain(&lab.homes)
        {
            ip(&["netns", "add", ns]);
            lab.all.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        // A host on the public segment: a veth from the hub's bridge.
        let public = |ns: &str, port: &str, addr: Ipv4Addr| {
            ip(&[
                "-n", &hub, "link", "add", port, "type", "veth", "peer", "name", "wan", "netns", ns,
            ]);
            ip(&["-n", &hub, "link", "set", port, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", port, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "wan"]);
            ip(&["-n", ns, "link", "set", "wan", "up"]);
        };
        public(&lab.relay, "prelay", Self::RELAY_IP);
        for k in 0..2 {
            let (nat, home) = (&lab.nats[k], &lab.homes[k]);
            public(nat, &format!("pnat{k}"), Self::nat_ip(k));
            ip(&[
                "-n", nat, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
                home,
            ]);
            let (gw, host) = (
                format!("192.168.{}.1", k + 1),
                format!("192.168.{}.2", k + 1),
            );
            ip(&["-n", nat, "addr", "add", &format!("{gw}/24"), "dev", "lan"]);
            ip(&["-n", nat, "link", "set", "lan", "up"]);
            ip(&[
                "-n",
                home,
                "addr",
                "add",
                &format!("{host}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", home, "link", "set", "eth0", "up"]);
            ip(&["-n", home, "route", "add", "default", "via", &gw]);
            run(nat, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            run(nat, "nft", &["add", "table", "ip", "nat"]);
            run(
                nat,
                "nft",
                &[
                    "add",
                    "chain",
                    "ip",
                    "nat",
                    "post",
                    "{ type nat hook postrouting priority 100; }",
                ],
            );
            run(
                nat,
                "nft",
                &[
                    "add",
                    "rule",
                    "ip",
                    "nat",
                    "post",
                    "oifname",
                    "wan",
                    "masquerade",
                ],
            );
            // A home router's firewall: nothing unsolicited comes in from
            // the public side, to the router itself or through it. (Without
            // it, a peer's punching packet that arrives before this side
            // sent anything is delivered to the router, and the state
            // Linux keeps for it makes the router map this side's own
            // packets to that peer to another port: punching fails.)
            run(nat, "nft", &["add", "table", "inet", "filter"]);
            for hook in ["input", "forward"] {
                run(
                    nat,
                    "nft",
                    &[
                        "add",
                        "chain",
                        "inet",
                        "filter",
                        hook,
                        &format!("{{ type filter hook {hook} priority 0; }}"),
                    ],
                );
                run(
                    nat,
                    "nft",
                    &[
                        "add", "rule", "inet", "filter", hook, "iifname", "wan", "ct", "state",
                        "new", "drop",
                    ],
                );
            }
        }
        Some(lab)
    }

    /// `program args` in namespace `ns`, watched line by line.
    pub fn spawn(&self, ns: &str, program: &str, args: &[&str]) -> Watched {
        Watched::new(
            Command::new("ip")
                .args(["netns", "exec", ns, program])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the program starts"),
        )
    }
}

/// `program args` in namespace `ns`, which must succeed.
fn run(ns: &str, program: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .expect("ip netns exec runs");
    assert!(
        out.status.success(),
        "{program} {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in &self.all {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
