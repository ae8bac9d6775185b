//! LAN discovery over mDNS / DNS-SD (RFC 6762, RFC 6763), sans-IO.
//!
//! A [`Discovery`] advertises this node as the service instance
//! `<identity>._<app>._udp.local` (SRV, TXT with the metadata, A/AAAA) and
//! browses for the other instances of the same service. It is a pure state
//! machine like [`Node`](crate::node::Node): the caller feeds it the packets
//! received on the mDNS multicast group with [`Discovery::handle_packet`],
//! sends what [`Discovery::poll_transmit`] returns to the group (or to a
//! legacy querier), and calls [`Discovery::handle_timeout`] when
//! [`Discovery::poll_timeout`] says. `now` is always a parameter.
//!
//! What a peer advertises is untrusted: its addresses are only dialed with
//! its advertised identity pinned, so a spoofed advertisement cannot
//! impersonate a node. Packets are size-checked before parsing, a token
//! bucket bounds how many are parsed per second, the peer table is bounded,
//! and every malformed packet is counted in [`DiscoveryStats`] and dropped.
//!
//! ```
//! use std::time::Instant;
//! use pos_p2p_protocol::discovery::{Discovery, DiscoveryConfig, Destination};
//! use pos_p2p_protocol::Identity;
//!
//! let now = Instant::now();
//! let identity = Identity::from_bytes(&[1; 32]).to_remote_identity();
//! let mut discovery = Discovery::new(DiscoveryConfig::new(identity, "notes", [7; 32]), now);
//! discovery.set_addrs(now, vec!["192.0.2.1:4433".parse().unwrap()]);
//! // The first announcement goes out at once.
//! let transmit = discovery.poll_transmit().unwrap();
//! assert_eq!(transmit.destination, Destination::Multicast);
//! ```

mod backoff;
mod records;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::RemoteIdentity;
use crate::metadata::Metadata;
use crate::rate::{SourceLimits, TokenBucket};

pub use backoff::Backoff;
use records::{Advert, Answer, Message, Names, QueryType};
pub use records::{MAX_PACKET_LEN, MAX_TXT_LEN, PacketError, TRUNCATED_MARKER, service_type};

/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;
/// The IPv4 mDNS group, 224.0.0.251.
pub const MDNS_IPV4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 251);
/// The IPv6 mDNS group, ff02::fb.
pub const MDNS_IPV6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);

/// The most PTR known answers one query carries.
const MAX_KNOWN_ANSWERS: usize = 16;
/// The most events kept unpolled.
const MAX_EVENTS: usize = 4096;
/// The most addresses kept per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// The most unicast replies waiting to be sent.
const MAX_QUEUED_TRANSMITS: usize = 32;
/// How many announcements follow a start or a change (RFC 6762 §8.3: at
/// least two, one second apart, doubling).
const ANNOUNCEMENTS: u8 = 3;
/// RFC 6762 §6: a record is multicast at most once a second.
const MIN_MULTICAST_INTERVAL: Duration = Duration::from_secs(1);
/// The longest TTL honoured (RFC 6762 §10's 75 minutes), so that forged
/// records cannot hold a place in the peer table for ever.
const MAX_TTL: u32 = 75 * 60;
/// How long an entry that is not complete (SRV, TXT and an address) is
/// kept.
const INCOMPLETE_LIFETIME: Duration = Duration::from_secs(10);
/// How long a sent query is remembered to recognise its loopback echo.
const ECHO_WINDOW: Duration = Duration::from_secs(2);
/// RFC 6762 §10.1: a goodbye removes a record one second later.
const GOODBYE_DELAY: Duration = Duration::from_secs(1);
/// How many source addresses get a rate limit of their own; the others
/// share one (see [`SourceLimits`]).
const MAX_TRACKED_SOURCES: usize = 256;
/// How many penalised sources are remembered at once.
const MAX_PENALTIES: usize = 64;

/// How a [`Discovery`] behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// This node's identity: the instance name.
    pub identity: RemoteIdentity,
    /// The DNS-SD service type, `_<app>._udp.local` (see [`service_type`]).
    pub service: String,
    /// The metadata advertised in TXT (cut to [`MAX_TXT_LEN`] bytes by the
    /// documented rules).
    pub metadata: Metadata,
    /// The TTL of every advertised record. RFC 6762 recommends 120 s for
    /// host records; a silent peer expires this long after its last answer.
    pub ttl: Duration,
    /// The most peers remembered; more are ignored and counted.
    pub max_peers: usize,
    /// Browse queries go out at 1, 2, 4, … seconds, capped here (RFC 6762
    /// §5.2 allows up to an hour; peers announce themselves anyway).
    pub max_query_interval: Duration,
    /// How many packets from sources that are not known peers are parsed
    /// per second, on average, in all; more are dropped and counted, so a
    /// flood costs bounded CPU. Known peers' packets do not count here, so
    /// a flood cannot blind the node to the peers it knows.
    pub packets_per_second: u32,
    /// How many packets may be parsed in a burst above that average.
    pub packet_burst: u32,
    /// How many packets one source address may have parsed per second, on
    /// average: a single flooder uses up its own allowance, not everyone's.
    pub packets_per_source: u32,
    /// How many packets one source may have parsed in a burst.
    pub source_burst: u32,
    /// The most service instances one source address may hold in the peer
    /// table (a host runs one node per application, rarely a few).
    pub max_instances_per_source: usize,
    /// How long a source is ignored after one of the instances it announced
    /// failed the pinned handshake (it advertised an identity it could not
    /// prove).
    pub forgery_penalty: Duration,
    /// Seeds the response delays. From a CSPRNG in real use.
    pub rng_seed: [u8; 32],
}

impl DiscoveryConfig {
    /// Defaults for `identity` in application `app_name`.
    pub fn new(identity: RemoteIdentity, app_name: &str, rng_seed: [u8; 32]) -> Self {
        Self {
            identity,
            service: service_type(app_name),
            metadata: Metadata::new(),
            ttl: Duration::from_secs(120),
            max_peers: 256,
            max_query_interval: Duration::from_secs(3600),
            packets_per_second: 500,
            packet_burst: 1000,
            packets_per_source: 20,
            source_burst: 50,
            max_instances_per_source: 16,
            forgery_penalty: Duration::from_secs(600),
            rng_seed,
        }
    }
}

/// Where a [`DiscoveryTransmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The mDNS group on every interface and address family in use.
    Multicast,
    /// One legacy querier (a resolver that did not send from port 5353).
    Unicast(SocketAddr),
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryTransmit {
    /// Where.
    pub destination: Destination,
    /// The DNS message.
    pub payload: Vec<u8>,
}

/// A node found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// Its identity, from the instance name. Dial it pinned to this.
    pub identity: RemoteIdentity,
    /// Where it listens: its advertised addresses with the SRV port. IPv6
    /// link-local addresses are left out (they need an interface).
    pub addrs: Vec<SocketAddr>,
    /// Its advertised metadata.
    pub metadata: Metadata,
    /// Whether the advertiser cut its metadata to fit; the handshake's
    /// Hello carries all of it.
    pub metadata_truncated: bool,
}

/// What discovery reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A peer was found: its SRV, TXT and at least one address are known.
    Discovered(DiscoveredPeer),
    /// A known peer's addresses or metadata changed.
    Changed(DiscoveredPeer),
    /// A peer's records lapsed or it said goodbye.
    Expired(RemoteIdentity),
}

/// Counters, for diagnostics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryStats {
    /// Packets handed to [`Discovery::handle_packet`].
    pub packets: u64,
    /// Packets that were not valid DNS (dropped).
    pub malformed: u64,
    /// Packets dropped unparsed by a rate limit (their source's, or the one
    /// for all unknown sources).
    pub rate_limited: u64,
    /// New instances refused because their source is penalised for a
    /// forged announcement.
    pub penalized: u64,
    /// Peers not remembered because the table was full of verified peers,
    /// or their source already holds its share of instances.
    pub peers_refused: u64,
    /// Peers forgotten to make room for new ones (never verified by a
    /// handshake, oldest first).
    pub peers_evicted: u64,
    /// Peers dropped because a dial to them failed the pinned identity.
    pub peers_forged: u64,
    /// Peers a dial to an advertised address proved genuine
    /// ([`Discovery::handle_verified`]).
    pub peers_verified: u64,
    /// Responses and announcements sent.
    pub responses_sent: u64,
    /// Queries sent.
    pub queries_sent: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
}

#[derive(Debug)]
struct Cached {
    ttl: Duration,
    /// When its records were last renewed.
    renewed: Instant,
    expires: Instant,
    port: Option<u16>,
    host: Option<String>,
    txt: Option<(Metadata, bool)>,
    /// Cache-maintenance queries sent since the last renewal (at 80, 85,
    /// 90 and 95 % of the TTL, RFC 6762 §5.2).
    refreshes: u8,
    /// What was last reported.
    reported: Option<DiscoveredPeer>,
    /// The address the instance was last announced from.
    source: IpAddr,
    /// A handshake proved the advertised identity at an advertised
    /// address ([`Discovery::handle_verified`]).
    verified: bool,
}

impl Cached {
    fn next_refresh(&self) -> Option<Instant> {
        (self.refreshes < 4).then(|| {
            let percent = 80 + 5 * u32::from(self.refreshes);
            self.renewed + self.ttl * percent / 100
        })
    }
}

/// What [`Discovery::poll_timeout`] is waiting for. For logs and for
/// debugging busy loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryTimeout {
    /// The next periodic query.
    Query,
    /// The next announcement of this node's record (start-up, changes).
    Announce,
    /// A delayed answer to a query (RFC 6762 §6).
    Response,
    /// A peer's record expires.
    PeerExpires(RemoteIdentity),
    /// A peer's record is due for a refreshing query (at 80–95 % of its
    /// TTL).
    PeerRefresh(RemoteIdentity),
    /// A host address record expires.
    AddressExpires,
}

/// The sans-IO mDNS responder and browser. See the [module docs](self).
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    names: Names,
    advert: Option<Advert>,
    rng: ChaCha8Rng,
    peers: BTreeMap<RemoteIdentity, Cached>,
    /// Addresses of the hosts our peers' SRVs point at, with expiry.
    hosts: BTreeMap<String, Vec<(IpAddr, Instant)>>,
    next_query: Instant,
    query_interval: Duration,
    /// The next announcement and how many are left.
    announce: Option<(Instant, u8)>,
    pending_response: Option<(Instant, Answer)>,
    last_multicast: Option<Instant>,
    transmits: VecDeque<DiscoveryTransmit>,
    /// Hashes of the queries sent lately, to recognise their multicast
    /// loopback echo and not answer ourselves.
    sent_queries: VecDeque<(Instant, u64)>,
    events: VecDeque<DiscoveryEvent>,
    /// The rate limit of packets from sources that are not known peers.
    unknown_sources: TokenBucket,
    /// The rate limit of each source that is not a verified peer's address.
    sources: SourceLimits,
    /// The rate limit of each verified peer's address: a flood from other
    /// (or forged) addresses cannot crowd these out of their table.
    known_sources: SourceLimits,
    /// Sources that may announce no new instance until the given time
    /// (forged announcements).
    penalties: BTreeMap<IpAddr, Instant>,
    /// The advertised addresses of verified peers.
    verified_ips: std::collections::HashSet<IpAddr>,
    stats: DiscoveryStats,
    closed: bool,
}

impl Discovery {
    /// A discovery that starts browsing at once; it advertises once it
    /// knows its addresses ([`Discovery::set_addrs`]).
    pub fn new(mut config: DiscoveryConfig, now: Instant) -> Self {
        // Keep the settings where the timers make sense: a TTL of 0 would
        // make every announcement a goodbye, an interval of 0 a flood.
        let max_ttl = Duration::from_secs(u64::from(MAX_TTL));
        config.ttl = config.ttl.clamp(Duration::from_secs(1), max_ttl);
        config.max_query_interval = config
            .max_query_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600));
        config.packets_per_second = config.packets_per_second.max(1);
        config.packet_burst = config.packet_burst.max(1);
        config.max_instances_per_source = config.max_instances_per_source.max(1);
        let mut rng = ChaCha8Rng::from_seed(config.rng_seed);
        // RFC 6762 §5.2: the first query waits 20–120 ms.
        let first = Duration::from_millis(20 + u64::from(rng.next_u32() % 100));
        Self {
            names: Names::new(&config.service, &config.identity),
            unknown_sources: TokenBucket::new(config.packets_per_second, config.packet_burst, now),
            sources: SourceLimits::new(
                config.packets_per_source,
                config.source_burst,
                MAX_TRACKED_SOURCES,
                now,
            ),
            known_sources: SourceLimits::new(
                config.packets_per_source,
                config.source_burst,
                config.max_peers.saturating_mul(MAX_ADDRS_PER_PEER),
                now,
            ),
            penalties: BTreeMap::new(),
            verified_ips: Default::default(),
            config,
            advert: None,
            rng,
            peers: BTreeMap::new(),
            hosts: BTreeMap::new(),
            next_query: now + first,
            query_interval: Duration::from_secs(1),
            announce: None,
            pending_response: None,
            last_multicast: None,
            transmits: VecDeque::new(),
            sent_queries: VecDeque::new(),
            events: VecDeque::new(),
            stats: DiscoveryStats::default(),
            closed: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &DiscoveryStats {
        &self.stats
    }

    /// The peers found and not expired, complete or not yet.
    pub fn peers(&self) -> impl Iterator<Item = &DiscoveredPeer> {
        self.peers.values().filter_map(|c| c.reported.as_ref())
    }

    /// One peer, if found.
    pub fn peer(&self, identity: &RemoteIdentity) -> Option<&DiscoveredPeer> {
        self.peers.get(identity)?.reported.as_ref()
    }

    /// How many entries the peer table holds, complete or not (at most
    /// [`DiscoveryConfig::max_peers`]).
    pub fn table_len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the peer table has an entry for `identity`, complete or not.
    pub fn has_entry(&self, identity: &RemoteIdentity) -> bool {
        self.peers.contains_key(identity)
    }

    /// Set the addresses this node listens on (one port; unspecified,
    /// loopback, multicast and IPv6 link-local addresses are not
    /// advertised). A change is announced. An empty list stops answering.
    pub fn set_addrs(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        if self.closed {
            return;
        }
        let port = addrs.first().map_or(0, SocketAddr::port);
        let mut ips: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| a.port() == port && advertisable(&a.ip()))
            .map(SocketAddr::ip)
            .collect();
        ips.sort();
        ips.dedup();
        ips.truncate(MAX_ADDRS_PER_PEER);
        let advert = (!ips.is_empty()).then(|| Advert {
            names: self.names.clone(),
            port,
            ips,
            txt: records::txt_strings(&self.config.metadata),
        });
        if advert != self.advert {
            if let (None, Some(old)) = (&advert, self.advert.clone()) {
                // No address left: withdraw the records now rather than let
                // them linger for a TTL.
                self.queue_response(old, Answer::ALL, 0, None);
            }
            self.advert = advert;
            self.start_announcing(now);
            // A new network may hold peers that will not announce again:
            // browse from the start (RFC 6762 §8.3 asks for it on a change
            // of network).
            self.restart_browsing(now);
        }
    }

    /// Browse again from a 1 s interval, the first query 20–120 ms from now.
    fn restart_browsing(&mut self, now: Instant) {
        let first = Duration::from_millis(20 + u64::from(self.rng.next_u32() % 100));
        self.next_query = self.next_query.min(now + first);
        self.query_interval = Duration::from_secs(1);
    }

    /// Replace the advertised metadata; a change is announced.
    pub fn set_metadata(&mut self, now: Instant, metadata: Metadata) {
        if self.closed || metadata == self.config.metadata {
            return;
        }
        self.config.metadata = metadata;
        if let Some(advert) = &mut self.advert {
            advert.txt = records::txt_strings(&self.config.metadata);
            self.start_announcing(now);
        }
    }

    /// Announce now, then twice more at 1 and 3 s.
    fn start_announcing(&mut self, now: Instant) {
        self.drop_pending_covered_by_announcement();
        self.announce = None;
        if self.advert.is_none() {
            return;
        }
        // At most one multicast of the records a second, however often
        // the application changes them.
        match self
            .last_multicast
            .map(|last| last + MIN_MULTICAST_INTERVAL)
        {
            Some(allowed) if allowed > now => self.announce = Some((allowed, ANNOUNCEMENTS)),
            _ => {
                if let Some(advert) = self.advert.clone() {
                    self.queue_response(advert, Answer::ALL, ttl_secs(self.config.ttl), None);
                }
                self.multicast_sent(now);
                self.announce = Some((now + Duration::from_secs(1), ANNOUNCEMENTS - 1));
            }
        }
    }

    /// A multicast response went out at `now`: the next, the pending answer
    /// included, waits at least a second (RFC 6762 §6).
    fn multicast_sent(&mut self, now: Instant) {
        self.last_multicast = Some(now);
        if let Some((at, _)) = &mut self.pending_response {
            *at = (*at).max(now + MIN_MULTICAST_INTERVAL);
        }
    }

    /// An announcement carries every record but the enumeration PTR: a
    /// pending answer is left with that alone, or dropped.
    fn drop_pending_covered_by_announcement(&mut self) {
        self.pending_response = self.pending_response.and_then(|(at, answer)| {
            answer.enumeration.then_some((
                at,
                Answer {
                    enumeration: true,
                    ..Answer::default()
                },
            ))
        });
    }

    /// Say goodbye (every advertised record with TTL 0) and stop. Poll the
    /// goodbye out with [`Discovery::poll_transmit`].
    pub fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.transmits.clear();
        // Those watching the events learn that the peers are gone from
        // this node's view.
        let reported: Vec<RemoteIdentity> = self
            .peers
            .iter()
            .filter(|(_, c)| c.reported.is_some())
            .map(|(id, _)| *id)
            .collect();
        for identity in reported {
            self.push_event(DiscoveryEvent::Expired(identity));
        }
        self.peers.clear();
        self.hosts.clear();
        if let Some(advert) = &self.advert {
            self.queue_response(advert.clone(), Answer::ALL, 0, None);
        }
        self.announce = None;
        self.pending_response = None;
    }

    /// Whether [`Discovery::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Handle a packet received from `from` on the mDNS port.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.closed {
            return;
        }
        self.stats.packets += 1;
        let source = from.ip();
        // Each source has an allowance of its own; packets from sources
        // that are not verified peers' addresses also share one for all,
        // which bounds what a flood from many (forged) addresses costs.
        let allowed = if self.is_verified_address(&source) {
            self.known_sources.take(now, source)
        } else {
            self.sources.take(now, source) && self.unknown_sources.take(now)
        };
        if !allowed {
            self.stats.rate_limited += 1;
            return;
        }
        let message = match records::parse(data, &self.config.service) {
            Ok(message) => message,
            Err(error) => {
                tracing::trace!(%from, %error, "malformed mDNS packet");
                self.stats.malformed += 1;
                return;
            }
        };
        if message.is_response {
            // RFC 6762 §6: responses from other ports are not mDNS.
            if from.port() == MDNS_PORT {
                self.handle_response(now, source, message);
            }
        } else if !self.is_own_echo(now, data) {
            self.handle_query(now, from, message);
        }
    }

    /// Whether `ip` is an advertised address of a verified peer (one that
    /// this node dialed there and that proved its identity).
    fn is_verified_address(&self, ip: &IpAddr) -> bool {
        self.verified_ips.contains(ip)
    }

    /// The advertised addresses of the verified peers, after a change.
    fn update_verified_ips(&mut self) {
        let hosts = &self.hosts;
        self.verified_ips = self
            .peers
            .values()
            .filter(|c| c.verified)
            .filter_map(|c| c.host.as_ref())
            .filter_map(|host| hosts.get(host))
            .flatten()
            .map(|(ip, _)| *ip)
            .collect();
    }

    /// This node dialed `identity` at `addr` and the handshake proved that
    /// identity. If `addr` is one of the addresses the peer advertises, the
    /// entry is genuine: it is kept over unverified ones when the table is
    /// full, and its addresses get a rate limit apart from strangers'.
    pub fn handle_verified(&mut self, identity: &RemoteIdentity, addr: SocketAddr) {
        let advertised = self
            .peers
            .get(identity)
            .and_then(|c| c.reported.as_ref())
            .is_some_and(|p| p.addrs.contains(&addr));
        if !advertised {
            return;
        }
        if let Some(cached) = self.peers.get_mut(identity)
            && !cached.verified
        {
            cached.verified = true;
            self.stats.peers_verified += 1;
        }
        self.update_verified_ips();
    }

    /// A dial to `identity` at its advertised addresses was answered by
    /// another identity: the announcement was forged (or stale). The entry
    /// is dropped (reported expired), and its source may announce no new
    /// instance for [`DiscoveryConfig::forgery_penalty`], unless that
    /// source is a verified peer's address (mDNS sources are easy to forge:
    /// a verified peer is not to be silenced by a forgery in its name). The
    /// source's other instances are renewed as before.
    pub fn handle_forged(&mut self, now: Instant, identity: &RemoteIdentity) {
        let Some(cached) = self.peers.get(identity) else {
            return;
        };
        if cached.verified {
            // It proved itself before; the failure is about something else.
            return;
        }
        let source = cached.source;
        self.stats.peers_forged += 1;
        if !self.is_verified_address(&source) {
            self.penalties.retain(|_, until| *until > now);
            if self.penalties.len() >= MAX_PENALTIES {
                // Make room: the penalty that ends soonest goes.
                let soonest = self
                    .penalties
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(ip, _)| *ip);
                if let Some(ip) = soonest {
                    self.penalties.remove(&ip);
                }
            }
            self.penalties
                .insert(source, now + self.config.forgery_penalty);
        }
        self.forget(identity);
    }

    /// Drop an entry (and its host's addresses if no other entry uses
    /// them), reporting it expired if it had been reported.
    fn forget(&mut self, identity: &RemoteIdentity) {
        let Some(cached) = self.peers.remove(identity) else {
            return;
        };
        if let Some(host) = &cached.host {
            let shared = self.peers.values().any(|c| c.host.as_ref() == Some(host));
            if !shared {
                self.hosts.remove(host);
            }
        }
        if cached.verified {
            self.update_verified_ips();
        }
        if cached.reported.is_some() {
            self.push_event(DiscoveryEvent::Expired(*identity));
        }
    }

    /// Whether `data` is a query this node sent in the last two seconds,
    /// looped back by the multicast group.
    fn is_own_echo(&mut self, now: Instant, data: &[u8]) -> bool {
        while self
            .sent_queries
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > ECHO_WINDOW)
        {
            self.sent_queries.pop_front();
        }
        let hash = hash(data);
        self.sent_queries.iter().any(|(_, h)| *h == hash)
    }

    fn handle_query(&mut self, now: Instant, from: SocketAddr, message: Message) {
        let Some(advert) = &self.advert else { return };
        let names = &advert.names;
        let ttl = ttl_secs(self.config.ttl);
        let suppressed = message
            .known_answers
            .iter()
            .any(|(id, known_ttl)| *id == self.config.identity && *known_ttl >= ttl / 2);
        let mut answer = Answer::default();
        for (name, qtype) in &message.questions {
            if *name == names.service && qtype.asks_for(QueryType::Ptr) && !suppressed {
                answer.ptr = true;
            }
            if name == records::SERVICES_NAME && qtype.asks_for(QueryType::Ptr) {
                answer.enumeration = true;
            }
            if *name == names.instance
                && (qtype.asks_for(QueryType::Srv) || qtype.asks_for(QueryType::Txt))
            {
                answer.instance = true;
            }
            if *name == names.host
                && (qtype.asks_for(QueryType::A) || qtype.asks_for(QueryType::Aaaa))
            {
                answer.addrs = true;
            }
        }
        if answer.is_empty() {
            return;
        }
        if from.port() != MDNS_PORT {
            // A legacy unicast resolver (RFC 6762 §6.7): answer it directly.
            let advert = advert.clone();
            self.queue_response(
                advert,
                answer,
                ttl,
                Some((from, message.id, &message.questions)),
            );
            return;
        }
        // Shared records (PTRs) wait 20–120 ms so that responders do not
        // answer in lockstep; unique ones go at once (RFC 6762 §6).
        let delay = if answer.instance || answer.addrs {
            Duration::ZERO
        } else {
            Duration::from_millis(20 + u64::from(self.rng.next_u32() % 100))
        };
        let mut at = now + delay;
        if let Some(last) = self.last_multicast {
            at = at.max(last + MIN_MULTICAST_INTERVAL);
        }
        self.pending_response = Some(match self.pending_response {
            Some((pending_at, pending)) => (pending_at.min(at), pending.union(answer)),
            None => (at, answer),
        });
    }

    fn handle_response(&mut self, now: Instant, source: IpAddr, message: Message) {
        let mut touched = Vec::new();
        // Entries this message created: never evicted to make room for the
        // message's other instances (those are refused instead).
        let mut created = std::collections::BTreeSet::new();
        for (identity, records) in message.instances {
            if identity == self.config.identity {
                continue;
            }
            if !self.peers.contains_key(&identity) {
                let renews = records.ptr_ttl.is_some_and(|t| t > 0)
                    || records.srv.as_ref().is_some_and(|s| s.0 > 0)
                    || records.txt.as_ref().is_some_and(|t| t.0 > 0);
                if !renews {
                    continue;
                }
                if self
                    .penalties
                    .get(&source)
                    .is_some_and(|until| *until > now)
                {
                    self.stats.penalized += 1;
                    continue;
                }
                let from_source = self.peers.values().filter(|c| c.source == source).count();
                if from_source >= self.config.max_instances_per_source
                    || (self.peers.len() >= self.config.max_peers && !self.evict(source, &created))
                {
                    self.stats.peers_refused += 1;
                    continue;
                }
                self.peers.insert(
                    identity,
                    Cached {
                        ttl: self.config.ttl,
                        renewed: now,
                        expires: now + INCOMPLETE_LIFETIME,
                        port: None,
                        host: None,
                        txt: None,
                        refreshes: 0,
                        reported: None,
                        source,
                        verified: false,
                    },
                );
                created.insert(identity);
            }
            let Some(cached) = self.peers.get_mut(&identity) else {
                continue;
            };
            cached.source = source;
            // The records of an instance live as long as the shortest-lived
            // of them (standard responders give PTR and TXT 75 minutes, SRV
            // two); a TTL of 0 is a goodbye.
            let ttls = [
                records.ptr_ttl,
                records.srv.as_ref().map(|s| s.0),
                records.txt.as_ref().map(|t| t.0),
            ];
            match ttls.into_iter().flatten().min() {
                Some(0) => {
                    // Goodbye: gone in a second, unless renewed meanwhile.
                    cached.expires = cached.expires.min(now + GOODBYE_DELAY);
                    cached.refreshes = 4;
                }
                Some(ttl) => {
                    let ttl = Duration::from_secs(u64::from(ttl.min(MAX_TTL)));
                    cached.ttl = ttl;
                    cached.renewed = now;
                    cached.expires = now + ttl;
                    cached.refreshes = 0;
                }
                None => {}
            }
            if let Some((_, port, host)) = records.srv {
                cached.port = Some(port);
                cached.host = Some(host);
            }
            if let Some((_, strings)) = records.txt {
                let strings: Vec<&[u8]> = strings.iter().map(Vec::as_slice).collect();
                cached.txt = Some(records::metadata_from_txt(&strings));
            }
            if cached.reported.is_none() {
                // Until it is complete an entry holds its place briefly, so
                // that bare PTRs cannot fill the table.
                cached.expires = cached.expires.min(now + INCOMPLETE_LIFETIME);
            }
            touched.push(identity);
        }

        // Host addresses: a packet's records for a host replace what was
        // known (our announcements carry the whole set, with cache-flush).
        let mut by_host: BTreeMap<String, Vec<(IpAddr, u32)>> = BTreeMap::new();
        for (host, ip, ttl) in message.addrs {
            by_host.entry(host).or_default().push((ip, ttl));
        }
        for (host, addrs) in by_host {
            let users: Vec<RemoteIdentity> = self
                .peers
                .iter()
                .filter(|(_, c)| c.host.as_deref() == Some(host.as_str()))
                .map(|(id, _)| *id)
                .collect();
            if users.is_empty() {
                continue;
            }
            let mut fresh: Vec<(IpAddr, Instant)> = addrs
                .iter()
                .filter(|(ip, ttl)| *ttl > 0 && usable(ip))
                .map(|(ip, ttl)| {
                    (
                        *ip,
                        now + Duration::from_secs(u64::from((*ttl).min(MAX_TTL))),
                    )
                })
                .collect();
            fresh.truncate(MAX_ADDRS_PER_PEER);
            let known = self.hosts.remove(&host).unwrap_or_default();
            // Records with TTL > 0 replace what was known; without any,
            // the known addresses stay.
            let mut next = if fresh.is_empty() {
                known.clone()
            } else {
                fresh
            };
            // Goodbyes (RFC 6762 §10.1): a known address the message gives
            // TTL 0 goes one second from now, unless it lapses sooner.
            let goodbye_at = now + GOODBYE_DELAY;
            for (ip, _) in addrs.iter().filter(|(_, ttl)| *ttl == 0) {
                let Some(&(_, expires)) = known.iter().find(|(k, _)| k == ip) else {
                    continue;
                };
                let room = next.len() < MAX_ADDRS_PER_PEER;
                match next.iter_mut().find(|(k, _)| k == ip) {
                    Some(entry) => entry.1 = entry.1.min(goodbye_at),
                    None if room => next.push((*ip, expires.min(goodbye_at))),
                    None => {}
                }
            }
            if !next.is_empty() {
                self.hosts.insert(host, next);
            }
            touched.extend(users);
        }
        // Forget hosts no peer points at any more (a peer moved its SRV).
        let used: std::collections::BTreeSet<&String> = self
            .peers
            .values()
            .filter_map(|c| c.host.as_ref())
            .collect();
        self.hosts.retain(|host, _| used.contains(host));
        if self.peers.values().any(|c| c.verified) {
            self.update_verified_ips();
        }
        touched.sort();
        touched.dedup();
        for identity in touched {
            self.report(now, identity);
        }
    }

    /// Make room for a new entry announced from `source`: forget the entry
    /// that was never complete and was renewed longest ago; failing that,
    /// one that no handshake ever verified: the new entry's own source's
    /// first (so a source that keeps announcing new instances only pushes
    /// out its own), else the one renewed longest ago. Verified peers are
    /// never evicted, nor entries the message being processed created
    /// (`created`). Ties go to the smaller identity. `false` if nothing
    /// could go.
    fn evict(
        &mut self,
        source: IpAddr,
        created: &std::collections::BTreeSet<RemoteIdentity>,
    ) -> bool {
        let candidates = || self.peers.iter().filter(|(id, _)| !created.contains(*id));
        let incomplete = candidates()
            .filter(|(_, c)| c.reported.is_none())
            .min_by_key(|(id, c)| (c.renewed, **id))
            .map(|(id, _)| *id);
        let unverified = || {
            candidates()
                .filter(|(_, c)| !c.verified)
                .min_by_key(|(id, c)| (c.source != source, c.renewed, **id))
                .map(|(id, _)| *id)
        };
        let Some(victim) = incomplete.or_else(unverified) else {
            return false;
        };
        self.stats.peers_evicted += 1;
        self.forget(&victim);
        true
    }

    /// Report a peer if it is complete and new or changed.
    fn report(&mut self, now: Instant, identity: RemoteIdentity) {
        let Some(cached) = self.peers.get(&identity) else {
            return;
        };
        let (Some(port), Some(host), Some((metadata, truncated))) =
            (cached.port, &cached.host, &cached.txt)
        else {
            return;
        };
        let addrs: Vec<SocketAddr> = self
            .hosts
            .get(host)
            .into_iter()
            .flatten()
            .filter(|(_, expires)| *expires > now)
            .map(|(ip, _)| SocketAddr::new(*ip, port))
            .collect();
        if addrs.is_empty() {
            // Every address lapsed: not reachable by what it advertised.
            if let Some(cached) = self.peers.get_mut(&identity)
                && cached.reported.take().is_some()
            {
                self.push_event(DiscoveryEvent::Expired(identity));
            }
            return;
        }
        let peer = DiscoveredPeer {
            identity,
            addrs,
            metadata: metadata.clone(),
            metadata_truncated: *truncated,
        };
        let event = match &cached.reported {
            None => DiscoveryEvent::Discovered(peer.clone()),
            Some(reported) if *reported != peer => DiscoveryEvent::Changed(peer.clone()),
            Some(_) => return,
        };
        if let Some(cached) = self.peers.get_mut(&identity) {
            if cached.reported.is_none() && cached.refreshes < 4 {
                // Complete now: it lives as long as its records.
                cached.expires = cached.renewed + cached.ttl;
            }
            cached.reported = Some(peer);
        }
        self.push_event(event);
    }

    /// Advance to `now`: announce, answer, query, refresh and expire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        // Expiry.
        let expired: Vec<RemoteIdentity> = self
            .peers
            .iter()
            .filter(|(_, c)| c.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for identity in expired {
            self.forget(&identity);
        }
        let mut shrunk = Vec::new();
        for (host, addrs) in &mut self.hosts {
            let before = addrs.len();
            addrs.retain(|(_, expires)| *expires > now);
            if addrs.len() != before {
                shrunk.push(host.clone());
            }
        }
        // An address lapsing on its own is a change.
        let changed: Vec<RemoteIdentity> = self
            .peers
            .iter()
            .filter(|(_, c)| c.host.as_ref().is_some_and(|h| shrunk.contains(h)))
            .map(|(id, _)| *id)
            .collect();
        for identity in changed {
            self.report(now, identity);
        }

        // Announcements.
        if let Some((at, left)) = self.announce
            && at <= now
        {
            if let Some(advert) = self.advert.clone() {
                let ttl = ttl_secs(self.config.ttl);
                self.queue_response(advert, Answer::ALL, ttl, None);
                self.drop_pending_covered_by_announcement();
                self.multicast_sent(now);
            }
            let sent = ANNOUNCEMENTS - left + 1;
            self.announce =
                (left > 1).then(|| (now + Duration::from_secs(1 << (sent - 1)), left - 1));
        }

        // Answers to queries.
        if let Some((at, answer)) = self.pending_response
            && at <= now
        {
            self.pending_response = None;
            if let Some(advert) = self.advert.clone() {
                let ttl = ttl_secs(self.config.ttl);
                self.queue_response(advert, answer, ttl, None);
                self.multicast_sent(now);
            }
        }

        // Browsing, with the peers we know as known answers.
        if self.next_query <= now {
            let service = self.config.service.clone();
            let mut known: Vec<(RemoteIdentity, u32)> = self
                .peers
                .iter()
                .filter_map(|(id, c)| {
                    let left = c.expires.saturating_duration_since(now);
                    (c.reported.is_some() && left > c.ttl / 2).then(|| (*id, ttl_secs(left)))
                })
                .collect();
            known.truncate(MAX_KNOWN_ANSWERS);
            self.queue_query(now, &[(&service, QueryType::Ptr)], &known);
            self.next_query = now + self.query_interval;
            self.query_interval = (self.query_interval * 2).min(self.config.max_query_interval);
        }

        // Cache maintenance: ask peers whose records are about to lapse.
        let due: Vec<RemoteIdentity> = self
            .peers
            .iter()
            .filter(|(_, c)| c.next_refresh().is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        if !due.is_empty() {
            let due: Vec<RemoteIdentity> = due.into_iter().take(MAX_KNOWN_ANSWERS).collect();
            // The instance's SRV and TXT, and its host's addresses (which
            // other responders may not send along).
            let mut names: Vec<String> = Vec::new();
            for id in &due {
                names.push(format!("{id}.{}", self.config.service));
                if let Some(host) = self.peers.get(id).and_then(|c| c.host.clone())
                    && !names.contains(&host)
                {
                    names.push(host);
                }
            }
            let questions: Vec<(&str, QueryType)> = names
                .iter()
                .map(|name| (name.as_str(), QueryType::Any))
                .collect();
            self.queue_query(now, &questions, &[]);
            for id in &due {
                if let Some(cached) = self.peers.get_mut(id) {
                    // One query for every point that has passed (after a
                    // long sleep, several may have).
                    while cached.next_refresh().is_some_and(|at| at <= now) {
                        cached.refreshes += 1;
                    }
                }
            }
        }
    }

    fn queue_query(
        &mut self,
        now: Instant,
        questions: &[(&str, QueryType)],
        known: &[(RemoteIdentity, u32)],
    ) {
        // A random ID (RFC 6762 §18.1 allows it) tells this node's queries,
        // looped back by the group, from identical ones of other nodes.
        let id = (self.rng.next_u32() & 0xffff) as u16;
        match records::query(id, questions, &self.config.service, known) {
            Ok(payload) => {
                self.stats.queries_sent += 1;
                if self.sent_queries.len() == MAX_QUEUED_TRANSMITS {
                    self.sent_queries.pop_front();
                }
                self.sent_queries.push_back((now, hash(&payload)));
                self.push_transmit(DiscoveryTransmit {
                    destination: Destination::Multicast,
                    payload,
                });
            }
            Err(error) => tracing::debug!(%error, "cannot build an mDNS query"),
        }
    }

    fn queue_response(
        &mut self,
        advert: Advert,
        answer: Answer,
        ttl: u32,
        legacy: Option<LegacyQuery<'_>>,
    ) {
        let destination = legacy.map_or(Destination::Multicast, |(to, _, _)| {
            Destination::Unicast(to)
        });
        let legacy = legacy.map(|(_, id, questions)| (id, questions));
        match records::response(&advert, answer, ttl, legacy) {
            Ok(payload) => {
                self.stats.responses_sent += 1;
                self.push_transmit(DiscoveryTransmit {
                    destination,
                    payload,
                });
            }
            Err(error) => tracing::debug!(%error, "cannot build an mDNS response"),
        }
    }

    fn push_transmit(&mut self, transmit: DiscoveryTransmit) {
        if self.transmits.len() < MAX_QUEUED_TRANSMITS {
            self.transmits.push_back(transmit);
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<DiscoveryTransmit> {
        self.transmits.pop_front()
    }

    /// Queue an event; past `MAX_EVENTS` unpolled ones the oldest goes.
    fn push_event(&mut self, event: DiscoveryEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// The next event. Poll them: past 4,096 unpolled events the oldest
    /// are dropped (and counted).
    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.pop_front()
    }

    /// When [`Discovery::handle_timeout`] must be called next; `None` once
    /// closed.
    pub fn poll_timeout(&self) -> Option<(Instant, DiscoveryTimeout)> {
        if self.closed {
            return None;
        }
        let peers = self.peers.iter().flat_map(|(id, c)| {
            [
                Some((c.expires, DiscoveryTimeout::PeerExpires(*id))),
                c.next_refresh()
                    .map(|at| (at, DiscoveryTimeout::PeerRefresh(*id))),
            ]
        });
        let hosts = self
            .hosts
            .values()
            .flatten()
            .map(|(_, at)| (*at, DiscoveryTimeout::AddressExpires));
        [
            Some((self.next_query, DiscoveryTimeout::Query)),
            self.announce
                .map(|(at, _)| (at, DiscoveryTimeout::Announce)),
            self.pending_response
                .map(|(at, _)| (at, DiscoveryTimeout::Response)),
        ]
        .into_iter()
        .chain(peers)
        .flatten()
        .chain(hosts)
        .min_by_key(|(at, _)| *at)
    }
}

/// A legacy unicast query to answer: its source, ID and questions.
type LegacyQuery<'a> = (SocketAddr, u16, &'a [(String, QueryType)]);

fn hash(data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut hasher);
    hasher.finish()
}

fn ttl_secs(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)
}

/// Whether an address of ours is worth advertising.
fn advertisable(ip: &IpAddr) -> bool {
    usable(ip) && !ip.is_loopback()
}

/// Whether an advertised address can be dialed without more context.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpolled_events_are_bounded_and_the_oldest_dropped_are_counted() {
        let me = crate::Identity::from_bytes(&[1; 32]).to_remote_identity();
        let mut discovery =
            Discovery::new(DiscoveryConfig::new(me, "test", [1; 32]), Instant::now());
        let peer = |n: u32| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            RemoteIdentity::from_validated(key)
        };
        let extra = 10;
        for n in 0..(MAX_EVENTS as u32 + extra) {
            discovery.push_event(DiscoveryEvent::Expired(peer(n)));
        }
        assert_eq!(discovery.stats().events_dropped, u64::from(extra));
        let mut kept = Vec::new();
        while let Some(event) = discovery.poll_event() {
            kept.push(event);
        }
        assert_eq!(kept.len(), MAX_EVENTS);
        assert_eq!(
            kept[0],
            DiscoveryEvent::Expired(peer(extra)),
            "the oldest went"
        );
    }
}
