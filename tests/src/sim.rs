//! A deterministic in-memory network for [`Node`]s: virtual time, and links
//! with seeded latency, jitter (reordering), loss, duplication and
//! partitions. Time jumps straight to the next delivery or timer, so a test
//! of a 30-second idle timeout takes milliseconds. The same seed gives the
//! same schedule of faults.
//!
//! ```
//! use pos_p2p_tests::sim::{Link, Sim};
//!
//! let mut sim = Sim::new(1, Link::lan());
//! let a = sim.add_node(Sim::config(1));
//! let b = sim.add_node(Sim::config(2));
//! sim.connect(a, b);
//! assert!(sim.run_until_connected(a, b));
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pos_p2p_protocol::node::{
    Event, Node, NodeConfig, ReadOutcome, RelayAction, RelayConnId, StreamError, StreamId,
};
use pos_p2p_protocol::relay::{ConnId, ProbeResponder, RelayConfig, RelayEndpoint};
use pos_p2p_protocol::semver::Version;
use pos_p2p_protocol::{Identity, RemoteIdentity};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The behaviour of every link of the simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter`; reorders datagrams when larger
    /// than their spacing.
    pub jitter: Duration,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
}

impl Link {
    /// A clean LAN: 1 ms one way, no faults.
    pub fn lan() -> Self {
        Self {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// One node of the simulation.
#[derive(Debug)]
pub struct SimNode {
    /// The node under test.
    pub node: Node,
    /// Its address on the simulated network.
    pub addr: SocketAddr,
    /// Events it reported, oldest first; tests take from the front.
    pub events: VecDeque<Event>,
    /// Every event it ever reported, for assertions after the fact.
    pub history: Vec<Event>,
    /// The NAT it is behind (an index into [`Sim::nats`]), if any: its
    /// address is then a private one.
    pub nat: Option<usize>,
    /// A firewall drops every UDP datagram to and from it (TCP to relays
    /// still works).
    pub udp_blocked: bool,
}

/// How a NAT picks the outside port for an inside socket (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One outside port per inside socket, whatever the destination: the
    /// port a relay observes is the one peers can reach.
    EndpointIndependent,
    /// A new outside port for every destination address and port (a
    /// "symmetric" NAT): the port a relay observes is useless to peers.
    AddressDependent,
}

/// A NAT box between a private network and the simulated internet:
/// [`Mapping`] as configured, port-restricted filtering (a datagram comes
/// in only from an address and port the inside sent to through that
/// mapping), mappings that expire after [`Nat::timeout`] without outgoing
/// traffic, and no hairpinning (a datagram from inside to the NAT's own
/// public address is dropped).
#[derive(Debug)]
pub struct Nat {
    /// Its public address.
    pub public_ip: IpAddr,
    /// How it maps.
    pub mapping: Mapping,
    /// How long a mapping lives without outgoing traffic.
    pub timeout: Duration,
    /// Datagrams its filter dropped.
    pub filtered: u64,
    /// Datagrams dropped because they were sent to its own public address
    /// from inside (no hairpinning).
    pub hairpin_dropped: u64,
    next_port: u16,
    entries: Vec<NatEntry>,
}

#[derive(Debug)]
struct NatEntry {
    inside: SocketAddr,
    /// The destination, for an address-dependent mapping.
    dest: Option<SocketAddr>,
    port: u16,
    /// Where the inside sent through this mapping: what may come in.
    peers: BTreeSet<SocketAddr>,
    last_out: Instant,
}

impl Nat {
    fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.entries
            .retain(|e| now.saturating_duration_since(e.last_out) < timeout);
    }

    /// The outside address of a datagram from `inside` to `dest`.
    fn outbound(&mut self, now: Instant, inside: SocketAddr, dest: SocketAddr) -> SocketAddr {
        self.expire(now);
        let key = match self.mapping {
            Mapping::EndpointIndependent => None,
            Mapping::AddressDependent => Some(dest),
        };
        let entry = match self
            .entries
            .iter()
            .position(|e| e.inside == inside && e.dest == key)
        {
            Some(i) => &mut self.entries[i],
            None => {
                let port = self.next_port;
                self.next_port = self.next_port.wrapping_add(1).max(1024);
                self.entries.push(NatEntry {
                    inside,
                    dest: key,
                    port,
                    peers: BTreeSet::new(),
                    last_out: now,
                });
                self.entries.last_mut().expect("just pushed")
            }
        };
        entry.peers.insert(dest);
        entry.last_out = now;
        SocketAddr::new(self.public_ip, entry.port)
    }

    /// Where a datagram from `from` to the outside port `port` goes
    /// inside, if the NAT lets it in.
    fn inbound(&mut self, now: Instant, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        self.expire(now);
        let inside = self
            .entries
            .iter()
            .find(|e| e.port == port && e.peers.contains(&from))
            .map(|e| e.inside);
        if inside.is_none() {
            self.filtered += 1;
        }
        inside
    }

    /// Forget every mapping (a NAT reboot or rebinding): the next
    /// outgoing datagram gets a new outside port.
    pub fn rebind(&mut self) {
        self.entries.clear();
    }

    /// How many mappings it holds now.
    pub fn mappings(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    /// The sending node, if a node sent it.
    src: Option<usize>,
    /// Within the private network of this NAT (not through it).
    lan: Option<usize>,
}

/// The simulated network and its nodes.
#[derive(Debug)]
pub struct Sim {
    /// The virtual time.
    pub now: Instant,
    /// The time the simulation started.
    pub start: Instant,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    /// Link behaviour.
    pub link: Link,
    rng: ChaCha8Rng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Node pairs that cannot reach each other.
    partitions: BTreeSet<(usize, usize)>,
    /// Nodes whose datagrams are all lost from now on (they still hear).
    muted: BTreeSet<usize>,
    /// Datagrams sent, dropped and delivered, for tests that check faults
    /// really happened.
    pub stats: SimStats,
    /// Datagrams sent to addresses no node has (from, to, bytes), for
    /// tests that play such a peer by hand; the latest 1,000.
    pub outside: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// Steps in a row at which time did not move.
    stalled: u32,
    /// Relays, reached over simulated TCP.
    pub relays: Vec<SimRelay>,
    pipes: Vec<Pipe>,
    /// How many relay connections each node opened (by node index).
    pub relay_attempts: Vec<u64>,
    /// Nodes whose bytes for their relays are not taken (a TCP connection
    /// that does not drain): the node must bound what it holds.
    pub relay_writes_stalled: BTreeSet<usize>,
    /// NAT boxes, by index.
    pub nats: Vec<Nat>,
}

/// A relay of the simulation: the relay's own sans-IO endpoint, reached
/// over simulated TCP connections (reliable, in order, with the link's
/// latency, never lost).
#[derive(Debug)]
pub struct SimRelay {
    /// The relay under test.
    pub endpoint: RelayEndpoint,
    /// Where it accepts TCP connections.
    pub addr: SocketAddr,
    /// Whether it is running (a stopped relay refuses connections).
    pub up: bool,
    /// Connections to it are neither accepted nor refused (a firewall
    /// that drops them): the node's own deadline must end them.
    pub blackhole: bool,
    /// It reads nothing more from its connections (a hung relay): what
    /// nodes send waits in the simulated TCP connection.
    pub frozen: bool,
    /// It answers address probes (STUN) on UDP at its address.
    pub stun: bool,
    /// Its address probe responder.
    pub probes: ProbeResponder,
}

/// A simulated TCP connection between a node and a relay.
#[derive(Debug)]
struct Pipe {
    node: usize,
    node_conn: RelayConnId,
    relay: usize,
    relay_conn: ConnId,
    to_relay: VecDeque<(Instant, Vec<u8>)>,
    to_node: VecDeque<(Instant, Vec<u8>)>,
    /// The relay closes it once what it wrote has arrived.
    relay_closing: bool,
}

/// Steps in a row without time moving after which a node that keeps asking
/// to be woken now, and does nothing about it when woken, is a bug (a
/// deadline `handle_timeout` does not handle): the simulation fails loudly
/// instead of spinning for ever.
const MAX_STALLED_STEPS: u32 = 100_000;

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams the nodes sent.
    pub sent: u64,
    /// Datagrams dropped by loss or partition.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Datagrams delivered.
    pub delivered: u64,
}

impl Sim {
    /// An empty network whose faults are drawn from `seed`.
    pub fn new(seed: u64, link: Link) -> Self {
        // A fixed origin: virtual time only ever moves forward from it.
        let start = Instant::now();
        Self {
            now: start,
            start,
            nodes: Vec::new(),
            link,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            seq: 0,
            partitions: BTreeSet::new(),
            muted: BTreeSet::new(),
            outside: VecDeque::new(),
            stats: SimStats::default(),
            buf: Vec::new(),
            stalled: 0,
            relays: Vec::new(),
            pipes: Vec::new(),
            relay_attempts: Vec::new(),
            relay_writes_stalled: BTreeSet::new(),
            nats: Vec::new(),
        }
    }

    /// Whether `addr` is a relayed path's address (`100::/64`, as the
    /// node names its relayed paths).
    pub fn is_relayed_addr(addr: SocketAddr) -> bool {
        matches!(addr, SocketAddr::V6(v6) if v6.ip().segments()[..4] == [0x100, 0, 0, 0])
    }

    /// Add a NAT box with public address 198.51.100.`index + 1`, mapping
    /// as `mapping`, whose mappings expire after 30 s without outgoing
    /// traffic; returns its index.
    pub fn add_nat(&mut self, mapping: Mapping) -> usize {
        let index = self.nats.len();
        self.nats.push(Nat {
            public_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, index as u8 + 1)),
            mapping,
            timeout: Duration::from_secs(30),
            filtered: 0,
            hairpin_dropped: 0,
            next_port: 40_000,
            entries: Vec::new(),
        });
        index
    }

    /// Add a node behind NAT `nat`, at private address
    /// 10.0.`nat + 1`.`k + 2`:4433 (the `k`th node behind it), which it is
    /// told is its local address; returns its index.
    pub fn add_node_behind(&mut self, config: NodeConfig, nat: usize) -> usize {
        let k = self.nodes.iter().filter(|n| n.nat == Some(nat)).count();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, nat as u8 + 1, k as u8 + 2)),
            4433,
        );
        let index = self.add_node_at(config, addr);
        self.nodes[index].nat = Some(nat);
        let now = self.now;
        self.nodes[index].node.set_local_addrs(now, &[addr]);
        index
    }

    /// Move node `index` to a new private address behind NAT `nat` (a
    /// network change: it joined another network), telling it its new
    /// local address.
    pub fn move_node(&mut self, index: usize, nat: usize) {
        let k = self.nodes.iter().filter(|n| n.nat == Some(nat)).count();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, nat as u8 + 1, k as u8 + 2)),
            4433,
        );
        self.nodes[index].addr = addr;
        self.nodes[index].nat = Some(nat);
        let now = self.now;
        self.nodes[index].node.set_local_addrs(now, &[addr]);
    }

    /// The address node `index`'s TCP connections to relays come from.
    fn tcp_source(&self, index: usize) -> SocketAddr {
        match self.nodes[index].nat {
            Some(nat) => SocketAddr::new(self.nats[nat].public_ip, 20_000 + index as u16),
            None => self.nodes[index].addr,
        }
    }

    /// The relay's name for node `node`'s connection to relay `relay`.
    pub fn relay_conn(&self, node: usize, relay: usize) -> Option<ConnId> {
        self.pipes
            .iter()
            .find(|p| p.node == node && p.relay == relay)
            .map(|p| p.relay_conn)
    }

    /// Take what node `node` has for its relays now (bypassing a stall):
    /// how many bytes that was.
    pub fn take_relay_writes(&mut self, node: usize) -> usize {
        let mut total = 0;
        let now = self.now;
        let latency = self.link.latency;
        while let Some(conn) = self.nodes[node].node.poll_relay_ready() {
            let mut bytes = Vec::new();
            self.nodes[node].node.poll_relay_write(conn, &mut bytes);
            total += bytes.len();
            if let Some(pipe) = self
                .pipes
                .iter_mut()
                .find(|p| p.node == node && p.node_conn == conn)
                && !bytes.is_empty()
            {
                pipe.to_relay.push_back((now + latency, bytes));
            }
        }
        total
    }

    /// Add a relay with identity `identity` at `addr` (TCP); returns its
    /// index.
    pub fn add_relay(&mut self, identity: &Identity, addr: SocketAddr) -> usize {
        self.add_relay_with(identity, addr, RelayConfig::default())
    }

    /// Like [`Sim::add_relay`], with these limits.
    pub fn add_relay_with(
        &mut self,
        identity: &Identity,
        addr: SocketAddr,
        config: RelayConfig,
    ) -> usize {
        self.relays.push(SimRelay {
            endpoint: RelayEndpoint::new(identity, config).expect("relay TLS"),
            addr,
            up: true,
            blackhole: false,
            frozen: false,
            stun: true,
            probes: ProbeResponder::new(self.now),
        });
        self.relays.len() - 1
    }

    /// Stop relay `index` (its connections end at once) and start it again
    /// with the same identity: a relay restart.
    pub fn restart_relay(&mut self, index: usize, identity: &Identity) {
        self.restart_relay_with(index, identity, RelayConfig::default());
    }

    /// Like [`Sim::restart_relay`], with these limits.
    pub fn restart_relay_with(&mut self, index: usize, identity: &Identity, config: RelayConfig) {
        let now = self.now;
        let pipes = std::mem::take(&mut self.pipes);
        for pipe in pipes {
            if pipe.relay == index {
                self.nodes[pipe.node]
                    .node
                    .relay_closed(now, pipe.node_conn, Some("reset".into()));
            } else {
                self.pipes.push(pipe);
            }
        }
        self.relays[index].endpoint = RelayEndpoint::new(identity, config).expect("relay TLS");
        self.flush();
    }

    /// Move what nodes and relays wrote onto their TCP connections, and
    /// act on the nodes' relay actions.
    fn flush_relays(&mut self) {
        let now = self.now;
        let latency = self.link.latency;
        for i in 0..self.nodes.len() {
            while let Some(action) = self.nodes[i].node.poll_relay_action() {
                match action {
                    RelayAction::Connect { conn, addr } => {
                        if self.relay_attempts.len() <= i {
                            self.relay_attempts.resize(i + 1, 0);
                        }
                        self.relay_attempts[i] += 1;
                        if self
                            .relays
                            .iter()
                            .any(|r| r.up && r.blackhole && r.addr == addr)
                        {
                            continue;
                        }
                        let relay = self.relays.iter().position(|r| r.up && r.addr == addr);
                        let from = self.tcp_source(i);
                        let accepted = relay
                            .and_then(|r| Some((r, self.relays[r].endpoint.connect(now, from)?)));
                        match accepted {
                            Some((relay, relay_conn)) => {
                                self.pipes.push(Pipe {
                                    node: i,
                                    node_conn: conn,
                                    relay,
                                    relay_conn,
                                    to_relay: VecDeque::new(),
                                    to_node: VecDeque::new(),
                                    relay_closing: false,
                                });
                                self.nodes[i].node.relay_opened(now, conn);
                            }
                            None => self.nodes[i].node.relay_closed(
                                now,
                                conn,
                                Some("connection refused".into()),
                            ),
                        }
                    }
                    RelayAction::Close { conn } => {
                        if let Some(p) = self
                            .pipes
                            .iter()
                            .position(|p| p.node == i && p.node_conn == conn)
                        {
                            let pipe = self.pipes.remove(p);
                            self.relays[pipe.relay].endpoint.remove(pipe.relay_conn);
                        }
                    }
                    _ => {}
                }
            }
            if !self.relay_writes_stalled.contains(&i) {
                self.take_relay_writes(i);
            }
        }
        for r in 0..self.relays.len() {
            while let Some(conn) = self.relays[r].endpoint.poll_ready() {
                let mut bytes = Vec::new();
                let close = self.relays[r].endpoint.poll_write(conn, &mut bytes);
                if let Some(pipe) = self
                    .pipes
                    .iter_mut()
                    .find(|p| p.relay == r && p.relay_conn == conn)
                {
                    if !bytes.is_empty() {
                        pipe.to_node.push_back((now + latency, bytes));
                    }
                    pipe.relay_closing |= close;
                }
            }
        }
    }

    /// The next moment a byte arrives on a simulated TCP connection or a
    /// relay's timer is due.
    fn next_relay_event(&self) -> Option<Instant> {
        let pipes = self.pipes.iter().flat_map(|p| {
            let closing = (p.relay_closing && p.to_node.is_empty()).then_some(self.now);
            [
                p.to_relay
                    .front()
                    .filter(|_| !self.relays[p.relay].frozen)
                    .map(|x| x.0),
                p.to_node.front().map(|x| x.0),
                closing,
            ]
        });
        let timers = self.relays.iter().filter_map(|r| r.endpoint.poll_timeout());
        pipes.flatten().chain(timers).min()
    }

    /// Deliver what has arrived on simulated TCP connections by now.
    fn deliver_relays(&mut self) {
        let now = self.now;
        let mut i = 0;
        while i < self.pipes.len() {
            while let Some((at, _)) = self.pipes[i].to_relay.front()
                && *at <= now
                && !self.relays[self.pipes[i].relay].frozen
            {
                let Some((_, bytes)) = self.pipes[i].to_relay.pop_front() else {
                    break;
                };
                let (r, conn) = (self.pipes[i].relay, self.pipes[i].relay_conn);
                self.relays[r].endpoint.handle_bytes(now, conn, &bytes);
            }
            while let Some((at, _)) = self.pipes[i].to_node.front()
                && *at <= now
            {
                let Some((_, bytes)) = self.pipes[i].to_node.pop_front() else {
                    break;
                };
                let (n, conn) = (self.pipes[i].node, self.pipes[i].node_conn);
                self.nodes[n].node.handle_relay_bytes(now, conn, &bytes);
            }
            if self.pipes[i].relay_closing && self.pipes[i].to_node.is_empty() {
                let pipe = self.pipes.remove(i);
                self.relays[pipe.relay].endpoint.remove(pipe.relay_conn);
                self.nodes[pipe.node]
                    .node
                    .relay_closed(now, pipe.node_conn, None);
                continue;
            }
            i += 1;
        }
        for relay in &mut self.relays {
            if relay.endpoint.poll_timeout().is_some_and(|at| at <= now) {
                relay.endpoint.handle_timeout(now);
            }
        }
    }

    /// A node configuration for application `sim` version 1.0.0 whose
    /// identity and seed derive from `n`, with deterministic crypto (TLS
    /// and connection ids from the seed).
    pub fn config(n: u8) -> NodeConfig {
        Self::config_with_version(n, Version::new(1, 0, 0))
    }

    /// Like [`Sim::config`] with another application version.
    pub fn config_with_version(n: u8, version: Version) -> NodeConfig {
        let mut config = NodeConfig::new(Identity::from_bytes(&[n; 32]), "sim", version, [n; 32]);
        // Every byte of a simulation follows from its seeds, TLS included,
        // so recorded handshakes replay.
        config.deterministic_crypto = true;
        config
            .metadata
            .insert("name", format!("node {n}"))
            .expect("valid metadata");
        config
    }

    /// Add a node at [`Sim::sim_addr`] of its index; returns its index.
    pub fn add_node(&mut self, config: NodeConfig) -> usize {
        let index = self.nodes.len();
        self.add_node_at(config, Self::sim_addr(index))
    }

    /// The address [`Sim::add_node`] gives node `index`: 127.0.1.`index + 1`,
    /// port 4433.
    pub fn sim_addr(index: usize) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, (index + 1) as u8)),
            4433,
        )
    }

    /// Add a node at `addr` (several nodes may share an IP address, as
    /// behind one NAT); returns its index.
    pub fn add_node_at(&mut self, config: NodeConfig, addr: SocketAddr) -> usize {
        let index = self.nodes.len();
        let node = Node::new(config, self.now).expect("valid node configuration");
        self.nodes.push(SimNode {
            node,
            addr,
            events: VecDeque::new(),
            history: Vec::new(),
            nat: None,
            udp_blocked: false,
        });
        index
    }

    /// Replace node `index` with a fresh one (a restart), keeping its address.
    pub fn restart(&mut self, index: usize, config: NodeConfig) {
        self.nodes[index].node = Node::new(config, self.now).expect("valid node configuration");
        self.nodes[index].events.clear();
    }

    /// The identity of node `index`.
    pub fn id(&self, index: usize) -> RemoteIdentity {
        self.nodes[index].node.local_identity()
    }

    /// Node `index` dials node `to`, pinning its identity.
    pub fn connect(&mut self, index: usize, to: usize) {
        let (addr, expected) = (self.nodes[to].addr, self.id(to));
        self.nodes[index]
            .node
            .connect(self.now, addr, Some(expected))
            .expect("connect");
    }

    /// Hand node `index` a datagram from `from`, as if it had arrived now
    /// (an attacker's hand-made packet), and collect what follows.
    pub fn inject(&mut self, index: usize, from: SocketAddr, data: &[u8]) {
        let now = self.now;
        self.nodes[index]
            .node
            .handle_datagram(now, from, None, None, BytesMut::from(data));
        self.flush();
    }

    /// Lose every datagram node `index` sends from now on (what it already
    /// sent still arrives): a peer that goes silent mid-handshake.
    pub fn mute(&mut self, index: usize) {
        self.muted.insert(index);
    }

    /// Undo every [`Sim::mute`] and [`Sim::partition`].
    pub fn heal_all(&mut self) {
        self.muted.clear();
        self.partitions.clear();
    }

    /// Cut the link between `a` and `b` both ways.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.partitions.insert((a.min(b), a.max(b)));
    }

    /// Restore the link between `a` and `b`.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.partitions.remove(&(a.min(b), a.max(b)));
    }

    /// The node at a public address (not behind a NAT).
    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.addr == addr && n.nat.is_none())
    }

    /// Whether anything listens at `addr` on the public network: a node, a
    /// NAT's public address, a relay.
    fn is_known(&self, addr: SocketAddr) -> bool {
        self.index_of(addr).is_some()
            || self.nats.iter().any(|n| n.public_ip == addr.ip())
            || self.relays.iter().any(|r| r.up && r.stun && r.addr == addr)
    }

    /// Where a datagram from node `i` to `to` leaves: its source address
    /// on the network it travels, and the NAT whose private network it
    /// stays in (if it does); `None` if it goes nowhere (a firewall, or
    /// hairpinning).
    fn route_out(&mut self, i: usize, to: SocketAddr) -> Option<(SocketAddr, Option<usize>)> {
        let node = &self.nodes[i];
        if node.udp_blocked {
            return None;
        }
        let Some(nat) = node.nat else {
            return Some((node.addr, None));
        };
        let inside = node.addr;
        let lan = self
            .nodes
            .iter()
            .any(|n| n.nat == Some(nat) && n.addr == to);
        if lan {
            return Some((inside, Some(nat)));
        }
        if to.ip() == self.nats[nat].public_ip {
            self.nats[nat].hairpin_dropped += 1;
            return None;
        }
        let now = self.now;
        Some((self.nats[nat].outbound(now, inside, to), None))
    }

    /// The node a datagram that arrived now reaches, if any lets it in.
    fn route_in(&mut self, d: &InFlight) -> Option<usize> {
        let now = self.now;
        let j = match d.lan {
            Some(nat) => self
                .nodes
                .iter()
                .position(|n| n.nat == Some(nat) && n.addr == d.to)?,
            None => match self.index_of(d.to) {
                Some(j) => j,
                None => {
                    let nat = self.nats.iter().position(|n| n.public_ip == d.to.ip())?;
                    let inside = self.nats[nat].inbound(now, d.from, d.to.port())?;
                    self.nodes
                        .iter()
                        .position(|n| n.nat == Some(nat) && n.addr == inside)?
                }
            },
        };
        let cut = self.nodes[j].udp_blocked
            || d.src
                .is_some_and(|i| self.partitions.contains(&(i.min(j), i.max(j))));
        (!cut).then_some(j)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Send every pending transmit of every node onto the network, and
    /// collect every pending event.
    pub fn flush(&mut self) {
        self.flush_relays();
        for i in 0..self.nodes.len() {
            loop {
                let mut buf = std::mem::take(&mut self.buf);
                let transmit = self.nodes[i].node.poll_transmit(self.now, 1, &mut buf);
                let Some(transmit) = transmit else {
                    self.buf = buf;
                    break;
                };
                self.stats.sent += 1;
                let to = transmit.destination;
                let data = buf[..transmit.size].to_vec();
                self.buf = buf;
                let lan_target = self.nodes[i].nat.is_some_and(|nat| {
                    self.nodes
                        .iter()
                        .any(|n| n.nat == Some(nat) && n.addr == to)
                });
                if !lan_target && !self.is_known(to) && !self.muted.contains(&i) {
                    if self.outside.len() == 1_000 {
                        self.outside.pop_front();
                    }
                    self.outside
                        .push_back((self.nodes[i].addr, to, data.clone()));
                }
                let route = if self.muted.contains(&i) {
                    None
                } else {
                    self.route_out(i, to)
                };
                let loss = self.link.loss;
                let Some((from, lan)) = route else {
                    self.stats.dropped += 1;
                    continue;
                };
                if self.chance(loss) {
                    self.stats.dropped += 1;
                    continue;
                }
                let copies = if self.chance(self.link.duplicate) {
                    2
                } else {
                    1
                };
                self.stats.duplicated += copies - 1;
                for _ in 0..copies {
                    let jitter_ns = self.link.jitter.as_nanos() as u64;
                    let jitter = if jitter_ns == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_nanos(self.rng.next_u64() % (jitter_ns + 1))
                    };
                    self.seq += 1;
                    self.in_flight.push(Reverse(InFlight {
                        at: self.now + self.link.latency + jitter,
                        seq: self.seq,
                        from,
                        to,
                        data: data.clone(),
                        src: Some(i),
                        lan,
                    }));
                }
            }
            while let Some(event) = self.nodes[i].node.poll_event() {
                self.nodes[i].history.push(event.clone());
                self.nodes[i].events.push_back(event);
            }
        }
        // Relayed datagrams the nodes just sent.
        self.flush_relays();
    }

    /// Advance to the next delivery or timer and process it. Returns false
    /// when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.step_until(None)
    }

    /// Like [`Sim::step`], but time goes no further than `limit`: if
    /// nothing happens before it, time moves to `limit` and the step
    /// returns true.
    fn step_until(&mut self, limit: Option<Instant>) -> bool {
        self.flush();
        let next_delivery = self.in_flight.peek().map(|Reverse(d)| d.at);
        let next_timer = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.node.poll_timeout().map(|(at, _)| at))
            .min();
        let next = [next_delivery, next_timer, self.next_relay_event()]
            .into_iter()
            .flatten()
            .min();
        let next = match (next, limit) {
            (Some(next), Some(limit)) => next.min(limit),
            (Some(next), None) => next,
            (None, Some(limit)) if limit > self.now => limit,
            (None, _) => return false,
        };
        if next <= self.now {
            self.stalled += 1;
            if self.stalled > MAX_STALLED_STEPS {
                let due: Vec<_> = self
                    .nodes
                    .iter_mut()
                    .map(|n| n.node.poll_timeout())
                    .collect();
                panic!("time stands still: a node is due again at once every step ({due:?})");
            }
        } else {
            self.stalled = 0;
        }
        self.now = self.now.max(next);
        while self
            .in_flight
            .peek()
            .is_some_and(|Reverse(d)| d.at <= self.now)
        {
            let Some(Reverse(datagram)) = self.in_flight.pop() else {
                break;
            };
            if datagram.lan.is_none()
                && let Some(r) = self
                    .relays
                    .iter()
                    .position(|r| r.up && r.stun && r.addr == datagram.to)
            {
                // A relay's address probe responder.
                let now = self.now;
                let answer = self.relays[r]
                    .probes
                    .answer(now, datagram.from, &datagram.data);
                if let Some(answer) = answer {
                    self.seq += 1;
                    self.in_flight.push(Reverse(InFlight {
                        at: self.now + self.link.latency,
                        seq: self.seq,
                        from: datagram.to,
                        to: datagram.from,
                        data: answer,
                        src: None,
                        lan: None,
                    }));
                }
                continue;
            }
            let Some(j) = self.route_in(&datagram) else {
                self.stats.dropped += 1;
                continue;
            };
            {
                self.stats.delivered += 1;
                let now = self.now;
                self.nodes[j].node.handle_datagram(
                    now,
                    datagram.from,
                    None,
                    None,
                    BytesMut::from(&datagram.data[..]),
                );
            }
        }
        self.deliver_relays();
        for i in 0..self.nodes.len() {
            let due = self.nodes[i]
                .node
                .poll_timeout()
                .is_some_and(|(at, _)| at <= self.now);
            if due {
                let now = self.now;
                self.nodes[i].node.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Step until `done` holds or `limit` of virtual time passes (time
    /// stops at the limit, never past it); returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.flush();
            if done(self) {
                return true;
            }
            if self.now >= deadline || !self.step_until(Some(deadline)) {
                return done(self);
            }
        }
    }

    /// Step for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until(duration, |sim| sim.now >= deadline);
    }

    /// Run until `a` and `b` see each other connected (up to 10 s).
    pub fn run_until_connected(&mut self, a: usize, b: usize) -> bool {
        let (ida, idb) = (self.id(a), self.id(b));
        self.run_until(Duration::from_secs(10), |sim| {
            sim.nodes[a].node.peer(&idb).is_some() && sim.nodes[b].node.peer(&ida).is_some()
        })
    }

    /// Remove and return the first event of node `index` that `pick` maps
    /// to `Some`, running the network until one appears (up to `limit`).
    pub fn take_event<T>(
        &mut self,
        index: usize,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let mut found = None;
        self.run_until(limit, |sim| {
            let events = &mut sim.nodes[index].events;
            if let Some(pos) = events.iter().position(|e| pick(e).is_some()) {
                found = events.remove(pos).and_then(|e| pick(&e));
                true
            } else {
                false
            }
        });
        found
    }

    /// Play `raw` against the simulated network for `limit`, a millisecond
    /// at a time: its datagrams go to the nodes, theirs to it.
    pub fn drive_raw(&mut self, raw: &mut crate::raw::RawDialer, limit: Duration) {
        let end = self.now + limit;
        while self.now < end {
            let now = self.now;
            for (to, datagram) in raw.poll(now) {
                if let Some(node) = self.nodes.iter().position(|n| n.addr == to) {
                    let from = raw.addr;
                    self.inject(node, from, &datagram);
                }
            }
            while let Some((from, to, datagram)) = self.outside.pop_front() {
                if to == raw.addr {
                    raw.handle(now, from, &datagram);
                }
            }
            self.run_for(Duration::from_millis(1));
        }
    }

    /// Open a stream from node `from` to node `to` and write the header
    /// frame every application stream begins with ([`SIM_HEADER`]).
    pub fn open_stream(&mut self, from: usize, to: usize) -> Result<StreamId, StreamError> {
        let (now, peer) = (self.now, self.id(to));
        let stream = self.nodes[from].node.open_stream(now, &peer)?;
        let written = self.nodes[from].node.write(stream, SIM_HEADER)?;
        assert_eq!(
            written,
            SIM_HEADER.len(),
            "a fresh stream takes a tiny header"
        );
        Ok(stream)
    }

    /// Wait (up to `limit`) for a stream a peer opened on node `index`, and
    /// read its header frame, which must be [`SIM_HEADER`]: what the stream
    /// carries next is the payload.
    pub fn accept_stream(&mut self, index: usize, limit: Duration) -> Option<StreamId> {
        let stream = self.take_event(index, limit, |e| match e {
            Event::IncomingStream { stream, .. } => Some(*stream),
            _ => None,
        })?;
        let header = self.nodes[index].node.read(stream, usize::MAX);
        assert_eq!(
            header,
            Ok(ReadOutcome::Data(bytes::Bytes::from_static(SIM_HEADER))),
            "a stream is announced with its whole header"
        );
        Some(stream)
    }

    /// Write all of `data` to `stream` on node `index`, then finish it,
    /// stepping the network while flow control blocks.
    pub fn write_all(
        &mut self,
        index: usize,
        stream: StreamId,
        data: &[u8],
    ) -> Result<(), StreamError> {
        let mut written = 0;
        let deadline = self.now + Duration::from_secs(600);
        while written < data.len() {
            match self.nodes[index].node.write(stream, &data[written..]) {
                Ok(n) => written += n,
                Err(StreamError::Blocked) => {
                    if self.now > deadline || !self.step() {
                        return Err(StreamError::Blocked);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.nodes[index].node.finish(stream)
    }

    /// Read `stream` on node `index` to its end, stepping the network while
    /// nothing is available. Returns the bytes, or the reset code.
    pub fn read_to_end(
        &mut self,
        index: usize,
        stream: StreamId,
        limit: Duration,
    ) -> Result<Vec<u8>, ReadEnd> {
        let deadline = self.now + limit;
        let mut data = Vec::new();
        loop {
            match self.nodes[index].node.read(stream, usize::MAX) {
                Ok(ReadOutcome::Data(bytes)) => data.extend_from_slice(&bytes),
                Ok(ReadOutcome::Finished) => return Ok(data),
                Ok(ReadOutcome::Reset(code)) => return Err(ReadEnd::Reset(code)),
                Ok(ReadOutcome::Blocked) => {
                    if self.now > deadline || !self.step() {
                        return Err(ReadEnd::TimedOut(data.len()));
                    }
                }
                Err(e) => return Err(ReadEnd::Error(e)),
            }
        }
    }
}

impl Sim {
    /// Open a stream from `from` to `to` and move `data` over it, writing
    /// and reading at the same time (so flow control never stalls it), up
    /// to `limit` of virtual time. Returns what `to` read to the stream's
    /// end, and releases both ends' handles; `on_step` runs after every step (to change the network
    /// mid-transfer).
    pub fn transfer(
        &mut self,
        from: usize,
        to: usize,
        data: &[u8],
        limit: Duration,
        mut on_step: impl FnMut(&mut Sim),
    ) -> Result<Vec<u8>, ReadEnd> {
        let deadline = self.now + limit;
        let stream = self.open_stream(from, to).map_err(ReadEnd::Error)?;
        let (mut written, mut finished) = (0, false);
        let mut remote = None;
        let mut received = Vec::new();
        loop {
            while written < data.len() {
                match self.nodes[from].node.write(stream, &data[written..]) {
                    Ok(n) => written += n,
                    Err(StreamError::Blocked) => break,
                    Err(e) => return Err(ReadEnd::Error(e)),
                }
            }
            if written == data.len() && !finished {
                self.nodes[from]
                    .node
                    .finish(stream)
                    .map_err(ReadEnd::Error)?;
                finished = true;
            }
            if remote.is_none()
                && let Some(i) = self.nodes[to]
                    .events
                    .iter()
                    .position(|e| matches!(e, Event::IncomingStream { .. }))
                && let Some(Event::IncomingStream { stream, .. }) = self.nodes[to].events.remove(i)
            {
                let header = self.nodes[to].node.read(stream, usize::MAX);
                assert_eq!(
                    header,
                    Ok(ReadOutcome::Data(bytes::Bytes::from_static(SIM_HEADER))),
                    "a stream is announced with its whole header"
                );
                remote = Some(stream);
            }
            if let Some(id) = remote {
                loop {
                    match self.nodes[to].node.read(id, usize::MAX) {
                        Ok(ReadOutcome::Data(bytes)) => received.extend_from_slice(&bytes),
                        Ok(ReadOutcome::Finished) => {
                            // Done with both handles, as an application
                            // dropping them.
                            self.nodes[to].node.release(id);
                            self.nodes[from].node.release(stream);
                            return Ok(received);
                        }
                        Ok(ReadOutcome::Reset(code)) => return Err(ReadEnd::Reset(code)),
                        Ok(ReadOutcome::Blocked) => break,
                        Err(e) => return Err(ReadEnd::Error(e)),
                    }
                }
            }
            if self.now > deadline || !self.step() {
                return Err(ReadEnd::TimedOut(received.len()));
            }
            on_step(self);
        }
    }
}

/// Why [`Sim::read_to_end`] did not reach the end of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEnd {
    /// The peer reset the stream.
    Reset(u64),
    /// The stream or connection failed.
    Error(StreamError),
    /// The limit passed; this many bytes had arrived.
    TimedOut(usize),
}

/// The header frame [`Sim::open_stream`] writes: a one-byte header, tag 0
/// (the example application's `Ping`).
pub const SIM_HEADER: &[u8] = &[1, 0];

/// A deterministic pseudo-random payload of `len` bytes.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0; len];
    rng.fill_bytes(&mut data);
    data
}
