//! A simulated LAN segment for [`Discovery`]: every packet a node sends to
//! the mDNS group reaches every node on the segment (itself included, as
//! with `IP_MULTICAST_LOOP`) after a fixed latency, with seeded loss. Time
//! is virtual and jumps to the next delivery or timer, so ten minutes of
//! mDNS take milliseconds.
//!
//! ```
//! use std::time::Duration;
//! use pos_p2p_tests::lan::Lan;
//!
//! let mut lan = Lan::new(1);
//! let a = lan.add_node(1);
//! let b = lan.add_node(2);
//! lan.run_for(Duration::from_secs(2));
//! assert!(lan.nodes[a].discovery.peer(&lan.id(b)).is_some());
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use pos_p2p_protocol::discovery::{
    Destination, Discovery, DiscoveryConfig, DiscoveryEvent, MDNS_PORT,
};
use pos_p2p_protocol::{Identity, Metadata, RemoteIdentity};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Steps at one instant before the simulator calls it a hang.
const MAX_STALLED_STEPS: u32 = 100_000;

/// One host on the segment.
#[derive(Debug)]
pub struct LanNode {
    /// Its discovery state machine.
    pub discovery: Discovery,
    /// Its IP address; it advertises port 4433.
    pub ip: IpAddr,
    /// Every event it reported, oldest first.
    pub events: Vec<(Duration, DiscoveryEvent)>,
    /// Whether it is plugged in; an unplugged node neither sends nor
    /// receives, and says no goodbye.
    pub online: bool,
    /// Packets it sent.
    pub sent: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    data: Vec<u8>,
}

/// The segment.
#[derive(Debug)]
pub struct Lan {
    /// Virtual time.
    pub now: Instant,
    /// When the segment started.
    pub start: Instant,
    /// The hosts, by index.
    pub nodes: Vec<LanNode>,
    /// One-way delay.
    pub latency: Duration,
    /// Probability that a packet is lost on its way to one receiver.
    pub loss: f64,
    /// Unicast replies to legacy queriers: destination and payload.
    pub replies: Vec<(SocketAddr, Vec<u8>)>,
    /// Every multicast packet sent: sender, time since the start, bytes.
    pub log: Vec<(usize, Duration, Vec<u8>)>,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Packet>>,
    seq: u64,
}

impl Lan {
    /// An empty segment: 1 ms latency, no loss, faults drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Self {
            now: start,
            start,
            nodes: Vec::new(),
            latency: Duration::from_millis(1),
            loss: 0.0,
            replies: Vec::new(),
            log: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// The identity of a node made with `n`.
    pub fn identity(n: u8) -> RemoteIdentity {
        Identity::from_bytes(&[n; 32]).to_remote_identity()
    }

    /// A configuration for app `sim` with metadata `name=node <n>`.
    pub fn config(n: u8) -> DiscoveryConfig {
        let mut config = DiscoveryConfig::new(Self::identity(n), "sim", [n; 32]);
        let mut metadata = Metadata::new();
        metadata
            .insert("name", format!("node {n}"))
            .expect("valid metadata");
        config.metadata = metadata;
        config
    }

    /// Add a node made with `n` ([`Lan::config`]); returns its index.
    pub fn add_node(&mut self, n: u8) -> usize {
        self.add_node_with(Self::config(n))
    }

    /// Add a node with this configuration; returns its index.
    pub fn add_node_with(&mut self, config: DiscoveryConfig) -> usize {
        let index = self.nodes.len();
        let ip = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10 + index as u8));
        let mut discovery = Discovery::new(config, self.now);
        discovery.set_addrs(self.now, vec![SocketAddr::new(ip, 4433)]);
        self.nodes.push(LanNode {
            discovery,
            ip,
            events: Vec::new(),
            online: true,
            sent: 0,
        });
        self.flush(index);
        index
    }

    /// The identity of node `index`.
    pub fn id(&self, index: usize) -> RemoteIdentity {
        self.nodes[index].discovery.config().identity
    }

    /// Send `data` to every node as if from `from`.
    pub fn inject(&mut self, from: SocketAddr, data: Vec<u8>) {
        for to in 0..self.nodes.len() {
            self.enqueue(to, from, data.clone());
        }
    }

    /// Send `data` to one node as if from `from`, delivered at once.
    pub fn inject_to(&mut self, to: usize, from: SocketAddr, data: &[u8]) {
        let node = &mut self.nodes[to];
        node.discovery.handle_packet(self.now, from, data);
        self.flush(to);
    }

    fn enqueue(&mut self, to: usize, from: SocketAddr, data: Vec<u8>) {
        if !self.nodes[to].online {
            return;
        }
        if self.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.loss {
            return;
        }
        self.seq += 1;
        self.queue.push(Reverse(Packet {
            at: self.now + self.latency,
            seq: self.seq,
            to,
            from,
            data,
        }));
    }

    /// Move node `index`'s transmits and events out.
    fn flush(&mut self, index: usize) {
        let elapsed = self.now - self.start;
        while let Some(event) = self.nodes[index].discovery.poll_event() {
            self.nodes[index].events.push((elapsed, event));
        }
        let from = SocketAddr::new(self.nodes[index].ip, MDNS_PORT);
        while let Some(transmit) = self.nodes[index].discovery.poll_transmit() {
            if !self.nodes[index].online {
                continue;
            }
            self.nodes[index].sent += 1;
            match transmit.destination {
                Destination::Multicast => {
                    self.log.push((index, elapsed, transmit.payload.clone()));
                    for to in 0..self.nodes.len() {
                        self.enqueue(to, from, transmit.payload.clone());
                    }
                }
                Destination::Unicast(addr) => {
                    // Only the tests' legacy queriers use unicast; they read
                    // replies from `replies`.
                    self.replies.push((addr, transmit.payload));
                }
            }
        }
    }

    /// Advance virtual time by `duration`, delivering and firing timers.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        let mut stalled = 0;
        loop {
            let next_packet = self.queue.peek().map(|Reverse(p)| p.at);
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.online)
                .filter_map(|n| n.discovery.poll_timeout().map(|(at, _)| at))
                .min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                self.now = end;
                return;
            };
            if next > end {
                self.now = end;
                return;
            }
            // A node that asks to be woken and then does nothing would spin
            // here for ever: fail loudly instead of hanging.
            if next <= self.now {
                stalled += 1;
                assert!(
                    stalled <= MAX_STALLED_STEPS,
                    "time stands still: a node is due again at once every step"
                );
            } else {
                stalled = 0;
            }
            self.now = self.now.max(next);
            while self.queue.peek().is_some_and(|Reverse(p)| p.at <= self.now) {
                let Some(Reverse(packet)) = self.queue.pop() else {
                    break;
                };
                if self.nodes[packet.to].online {
                    self.nodes[packet.to].discovery.handle_packet(
                        self.now,
                        packet.from,
                        &packet.data,
                    );
                    self.flush(packet.to);
                }
            }
            for index in 0..self.nodes.len() {
                let due = self.nodes[index]
                    .discovery
                    .poll_timeout()
                    .is_some_and(|(at, _)| at <= self.now);
                if self.nodes[index].online && due {
                    self.nodes[index].discovery.handle_timeout(self.now);
                    self.flush(index);
                }
            }
        }
    }

    /// Unplug node `index`: it goes silent without a goodbye.
    pub fn unplug(&mut self, index: usize) {
        self.nodes[index].online = false;
    }

    /// Shut node `index` down: it sends its goodbye, then goes silent.
    pub fn shutdown(&mut self, index: usize) {
        self.nodes[index].discovery.shutdown();
        self.flush(index);
        self.nodes[index].online = false;
    }

    /// Change node `index`'s metadata.
    pub fn set_metadata(&mut self, index: usize, metadata: Metadata) {
        let now = self.now;
        self.nodes[index].discovery.set_metadata(now, metadata);
        self.flush(index);
    }

    /// Move node `index` to another address.
    pub fn set_ip(&mut self, index: usize, ip: IpAddr) {
        let now = self.now;
        self.nodes[index].ip = ip;
        self.nodes[index]
            .discovery
            .set_addrs(now, vec![SocketAddr::new(ip, 4433)]);
        self.flush(index);
    }

    /// How far virtual time has run.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}
