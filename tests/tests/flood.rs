//! The flood suite: a victim node is attacked from another network
//! namespace, as a hostile device on the same LAN would, while an honest
//! peer pings it every 10 ms and new honest peers dial it every 250 ms.
//! For every scenario: the honest peer keeps at least 90 % of its pings, at
//! least 90 % of the new peers connect within 2 s, and the victim's
//! resident memory grows by less than the scenario's stated bound. For the
//! discovery floods, a new peer on the LAN is found during the flood.
//!
//! One command, short form (a few seconds per scenario; `cargo test` and CI
//! run it):
//!
//! ```text
//! cargo test -p pos-p2p-tests --test flood
//! ```
//!
//! Full form (20 s per scenario), printing the table of docs/FLOOD.md:
//!
//! ```text
//! POS_P2P_FLOOD=full cargo test --release -p pos-p2p-tests --test flood -- --nocapture
//! ```
//!
//! Traffic stays in the namespaces the suite makes (one per host, on one
//! bridge); they are removed afterwards, even on failure. Needs root and
//! iproute2 (see `pos_p2p_tests::netns`).

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use pos_p2p_tests::netns::{Segment, finish};

const FLOOD: &str = env!("CARGO_BIN_EXE_flood");
const VICTIM: usize = 0;
const ATTACKER: usize = 1;
const HONEST: usize = 2;
const LAN_PEER: usize = 3;

/// A scenario and the victim's stated memory bound.
struct Scenario {
    attack: &'static str,
    what: &'static str,
    /// How much the victim's resident memory may grow, MiB.
    memory_mib: u64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        attack: "none",
        what: "no attack (reference)",
        memory_mib: 32,
    },
    Scenario {
        attack: "udp-garbage",
        what: "random datagrams, 64-1,164 bytes (E)",
        memory_mib: 32,
    },
    Scenario {
        attack: "quic-initials",
        what: "QUIC v1 Initials with random bodies (E)",
        memory_mib: 32,
    },
    Scenario {
        attack: "version-negotiation",
        what: "unknown QUIC versions, asking for version negotiation (E)",
        memory_mib: 32,
    },
    Scenario {
        attack: "short-headers",
        what: "short headers for unknown connections (E)",
        memory_mib: 32,
    },
    Scenario {
        attack: "client-hellos",
        what: "ClientHellos that never continue, 30/s (D)",
        memory_mib: 32,
    },
    Scenario {
        attack: "client-hellos-fast",
        what: "ClientHellos that never continue, 1,000/s (D)",
        memory_mib: 48,
    },
    Scenario {
        attack: "tls-no-hello",
        what: "TLS completed with made-up identities, no Hello, 30/s (D)",
        memory_mib: 48,
    },
    Scenario {
        attack: "idle-identities",
        what: "300 made-up identities connected and idle (D)",
        memory_mib: 96,
    },
    Scenario {
        attack: "churn",
        what: "fresh identities connecting and leaving (C)",
        memory_mib: 48,
    },
    Scenario {
        attack: "stream-wedge",
        what: "streams of an unknown operation, refused while writing (A)",
        memory_mib: 48,
    },
    Scenario {
        attack: "header-bodies",
        what: "1,024 streams announcing 64 KiB headers, all but a byte sent (B)",
        memory_mib: 48,
    },
    Scenario {
        attack: "header-prefixes",
        what: "1,024 streams sending 3-byte length prefixes only (B)",
        memory_mib: 32,
    },
    Scenario {
        attack: "slow-headers",
        what: "1,024 streams sending their header a byte a second (G)",
        memory_mib: 32,
    },
    Scenario {
        attack: "mdns-queries",
        what: "mDNS query flood (F)",
        memory_mib: 32,
    },
    Scenario {
        attack: "mdns-forgery",
        what: "300 forged mDNS instances, announced every second (F)",
        memory_mib: 32,
    },
];

/// A child's stdout, line by line, as it comes.
fn lines(child: &mut Child) -> Receiver<(Instant, String)> {
    let (tx, rx) = channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line starting with `prefix`, within `limit`.
fn wait_for(rx: &Receiver<(Instant, String)>, prefix: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (_, line) = rx.recv_timeout(left).ok()?;
        if line.starts_with(prefix) {
            return Some(line);
        }
    }
}

/// `key=value` from a result line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A figure from /proc/<pid>/status, in KiB.
fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Debug)]
struct Row {
    attack: &'static str,
    what: &'static str,
    secs: u64,
    sent: u64,
    answers: u64,
    pings: u64,
    pings_ok: u64,
    new: u64,
    new_ok: u64,
    baseline_mib: f64,
    peak_mib: f64,
    memory_mib: u64,
    /// Discovery scenarios: when the new LAN peer was found, after it
    /// started (ms); `None` if it was not.
    found_ms: Option<u64>,
    victim_stats: String,
}

impl Row {
    fn ping_share(&self) -> f64 {
        self.pings_ok as f64 / self.pings.max(1) as f64
    }

    fn new_share(&self) -> f64 {
        self.new_ok as f64 / self.new.max(1) as f64
    }

    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.pings == 0 || self.ping_share() < 0.9 {
            failures.push(format!("honest pings {}/{}", self.pings_ok, self.pings));
        }
        if self.new == 0 || self.new_share() < 0.9 {
            failures.push(format!("new peers {}/{}", self.new_ok, self.new));
        }
        let growth = self.peak_mib - self.baseline_mib;
        if growth > self.memory_mib as f64 {
            failures.push(format!(
                "memory grew {growth:.1} MiB, bound {} MiB",
                self.memory_mib
            ));
        }
        if self.attack.starts_with("mdns") && self.found_ms.is_none() {
            failures.push("the new LAN peer was not discovered during the flood".into());
        }
        failures
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.0}/s | {:.1} % ({}/{}) | {:.0} % ({}/{}) | {:.1} MiB (+{:.1}, bound {}) | {} |",
            self.attack,
            self.what,
            self.sent as f64 / self.secs as f64,
            100.0 * self.ping_share(),
            self.pings_ok,
            self.pings,
            100.0 * self.new_share(),
            self.new_ok,
            self.new,
            self.peak_mib,
            self.peak_mib - self.baseline_mib,
            self.memory_mib,
            self.found_ms
                .map_or("-".into(), |ms| format!("found {ms} ms after it started")),
        )
    }
}

fn run(segment: &Segment, scenario: &Scenario, secs: u64) -> Row {
    let victim_addr = format!("{}:4433", segment.ips[VICTIM]);
    let mut victim = segment.spawn(VICTIM, FLOOD, &["victim", "7", &victim_addr]);
    let victim_pid = victim.id();
    let victim_lines = lines(&mut victim);
    let ready = wait_for(&victim_lines, "ready ", Duration::from_secs(10)).expect("victim ready");
    let id = ready
        .split_whitespace()
        .nth(1)
        .expect("identity")
        .to_owned();
    // Let the victim settle (mDNS start-up, first announcements).
    std::thread::sleep(Duration::from_millis(500));
    let baseline = proc_kib(victim_pid, "VmRSS:");
    let secs_arg = secs.to_string();
    let attacker = segment.spawn(
        ATTACKER,
        FLOOD,
        &["attack", scenario.attack, &id, &victim_addr, &secs_arg],
    );
    let honest = segment.spawn(HONEST, FLOOD, &["honest", &id, &victim_addr, &secs_arg]);
    let mut found_ms = None;
    let lan_peer = scenario.attack.starts_with("mdns").then(|| {
        // A real peer joins the LAN a second into the flood; the time to
        // find it counts from its start (process start-up included).
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let mut peer = segment.spawn(LAN_PEER, FLOOD, &["lan-peer", "9", &secs_arg]);
        let peer_lines = lines(&mut peer);
        let ready = wait_for(&peer_lines, "ready ", Duration::from_secs(10)).expect("peer ready");
        let peer_id = ready
            .split_whitespace()
            .nth(1)
            .expect("identity")
            .to_owned();
        (peer, started, peer_id)
    });
    let attack = finish(attacker, Duration::from_secs(secs + 30));
    let honest = finish(honest, Duration::from_secs(secs + 30));
    let peak = proc_kib(victim_pid, "VmHWM:");
    let _ = victim.kill();
    let _ = victim.wait();
    // What the victim printed: its last stats, and discoveries.
    let mut victim_stats = String::new();
    while let Ok((at, line)) = victim_lines.try_recv() {
        if line.starts_with("stats ") {
            victim_stats = line;
        } else if let (Some((_, started, peer_id)), Some(rest)) =
            (lan_peer.as_ref(), line.strip_prefix("discovered "))
            && rest.starts_with(peer_id.as_str())
            && found_ms.is_none()
        {
            found_ms = Some(at.saturating_duration_since(*started).as_millis() as u64);
        }
    }
    if let Some((peer, _, _)) = lan_peer {
        let _ = finish(peer, Duration::from_secs(5));
    }
    let result = |output: &std::process::Output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|l| l.starts_with("result "))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no result:\n{}\n{}",
                    scenario.attack,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
    };
    let (attack, honest) = (result(&attack), result(&honest));
    Row {
        attack: scenario.attack,
        what: scenario.what,
        secs,
        sent: field(&attack, "sent"),
        answers: field(&attack, "answers"),
        pings: field(&honest, "pings"),
        pings_ok: field(&honest, "pings_ok"),
        new: field(&honest, "new"),
        new_ok: field(&honest, "new_ok"),
        baseline_mib: baseline as f64 / 1024.0,
        peak_mib: peak as f64 / 1024.0,
        memory_mib: scenario.memory_mib,
        found_ms,
        victim_stats,
    }
}

#[test]
fn a_flooded_node_keeps_serving_its_honest_peers() {
    let Some(segment) = Segment::new("the flood suite", 4, 88) else {
        return;
    };
    let full = std::env::var("POS_P2P_FLOOD").is_ok_and(|v| v == "full");
    let secs = if full { 20 } else { 4 };
    let only = std::env::var("POS_P2P_FLOOD_ONLY").ok();
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|s| s == scenario.attack))
        {
            continue;
        }
        let row = run(&segment, scenario, secs);
        eprintln!(
            "{}\n    victim: {}\n    attacker answers: {}",
            row.markdown(),
            row.victim_stats,
            row.answers
        );
        rows.push(row);
    }
    let mut table = String::from(
        "| attack | what | rate achieved | honest pings | new peers within 2 s | victim peak RSS | discovery |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in &rows {
        table.push_str(&row.markdown());
        table.push('\n');
    }
    println!("{table}");
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("flood-report.md");
    let _ = std::fs::write(&report, &table);
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            row.failures()
                .into_iter()
                .map(move |f| format!("{}: {f}", row.attack))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}\n{table}");
}
