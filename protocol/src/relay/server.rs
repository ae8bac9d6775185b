//! [`RelayServer`]: the relay's state machine.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{CloseReason, RelayFrame};
use crate::RemoteIdentity;
use crate::codec::FrameDecoder;
use crate::rate::TokenBucket;

/// Who may use a relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Any node.
    #[default]
    Open,
    /// Only these nodes (their TLS client certificates prove it); others
    /// are refused with [`CloseReason::NotAllowed`].
    Allow(BTreeSet<RemoteIdentity>),
}

/// A relay's limits and access rule.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Who may connect (default: anyone).
    pub access: Access,
    /// The most nodes connected at once (default 4,096); more are refused
    /// with [`CloseReason::Full`].
    pub max_clients: usize,
    /// What each node may send through the relay, in bytes a second of
    /// frames, averaged (default 1 MiB/s); beyond it its datagrams are
    /// dropped, as a congested link would, and QUIC slows down.
    pub bytes_per_second: u32,
    /// How much a node may send at once above that rate (default 256 KiB).
    pub burst: u32,
    /// The most bytes of frames queued for one node that its connection
    /// has not taken yet (default 256 KiB); datagrams to a node whose
    /// queue is full are dropped.
    pub queue_bytes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            access: Access::Open,
            max_clients: 4_096,
            bytes_per_second: 1 << 20,
            burst: 256 << 10,
            queue_bytes: 256 << 10,
        }
    }
}

/// What a relay counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Nodes connected now.
    pub clients: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (not allowed, or the relay was full).
    pub refused: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Bytes of datagrams forwarded.
    pub forwarded_bytes: u64,
    /// Frames dropped because their sender was over its rate.
    pub dropped_rate: u64,
    /// Datagrams dropped because the destination's queue was full.
    pub dropped_queue: u64,
    /// Datagrams to nodes not connected to this relay.
    pub unknown_destination: u64,
    /// Pings answered.
    pub pings: u64,
}

/// A client connection, as the relay's I/O layer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

/// How often a sender hears that one destination is gone, at most.
const GONE_NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// The most destinations a client's gone notices are remembered for.
const MAX_GONE_NOTICES: usize = 64;

#[derive(Debug)]
struct Client {
    identity: RemoteIdentity,
    decoder: FrameDecoder,
    outbox: VecDeque<Bytes>,
    queued: usize,
    bucket: TokenBucket,
    /// When each missing destination was last reported to this client.
    gone_notices: HashMap<RemoteIdentity, Instant>,
    /// Set when the relay closes the connection: nothing is read any more,
    /// and the I/O layer closes it once the outbox (ending with a `Close`
    /// frame) is written.
    closing: Option<CloseReason>,
    /// In the ready queue.
    ready: bool,
}

/// The relay's decision logic, sans-IO: the I/O layer reports connections
/// ([`accept`](RelayServer::accept), [`remove`](RelayServer::remove)) and
/// the bytes they read ([`handle_bytes`](RelayServer::handle_bytes)), and
/// writes what [`poll_transmit`](RelayServer::poll_transmit) gives for the
/// clients [`poll_ready`](RelayServer::poll_ready) names. Memory is bounded
/// by the limits of [`RelayConfig`].
///
/// ```
/// use std::time::Instant;
/// use pos_p2p_protocol::Identity;
/// use pos_p2p_protocol::relay::{RelayConfig, RelayFrame, RelayServer};
///
/// let now = Instant::now();
/// let mut relay = RelayServer::new(RelayConfig::default());
/// let (a, b) = (Identity::from_bytes(&[1; 32]), Identity::from_bytes(&[2; 32]));
/// let addr = "192.0.2.1:5000".parse().unwrap();
/// let ca = relay.accept(now, a.to_remote_identity(), addr).unwrap();
/// let cb = relay.accept(now, b.to_remote_identity(), addr).unwrap();
/// let send = RelayFrame::Send { to: b.to_remote_identity(), datagram: "hi".into() };
/// relay.handle_bytes(now, ca, &send.to_bytes().unwrap());
/// // b first hears its observed address, then the datagram.
/// let _observed = relay.poll_transmit(cb).unwrap();
/// let recv = RelayFrame::from_bytes(&relay.poll_transmit(cb).unwrap()).unwrap();
/// assert_eq!(recv, RelayFrame::Recv { from: a.to_remote_identity(), datagram: "hi".into() });
/// ```
#[derive(Debug)]
pub struct RelayServer {
    config: RelayConfig,
    clients: HashMap<ClientId, Client>,
    by_identity: HashMap<RemoteIdentity, ClientId>,
    ready: VecDeque<ClientId>,
    next_id: u64,
    stats: RelayStats,
    shutting_down: bool,
    /// A lying relay, for tests: the sender it names instead of each of
    /// these.
    #[cfg(feature = "deterministic")]
    misnamed: HashMap<RemoteIdentity, RemoteIdentity>,
}

impl RelayServer {
    /// A relay with these limits.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            clients: HashMap::new(),
            by_identity: HashMap::new(),
            ready: VecDeque::new(),
            next_id: 0,
            stats: RelayStats::default(),
            shutting_down: false,
            #[cfg(feature = "deterministic")]
            misnamed: HashMap::new(),
        }
    }

    /// A node whose TLS client certificate proved `identity` connected from
    /// `addr`. Refused (the I/O layer sends [`RelayServer::refusal`] and
    /// closes) if the access rule does not allow it or the relay is full. A
    /// node connected already is replaced: its older connection is closed
    /// with [`CloseReason::Replaced`] (the newest connection of a node is
    /// the one that works, as after a network change).
    pub fn accept(
        &mut self,
        now: Instant,
        identity: RemoteIdentity,
        addr: SocketAddr,
    ) -> Result<ClientId, CloseReason> {
        let refused = if self.shutting_down {
            Some(CloseReason::ShuttingDown)
        } else if let Access::Allow(allowed) = &self.config.access
            && !allowed.contains(&identity)
        {
            Some(CloseReason::NotAllowed)
        } else if !self.by_identity.contains_key(&identity)
            && self.by_identity.len() >= self.config.max_clients
        {
            Some(CloseReason::Full)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.stats.refused += 1;
            return Err(reason);
        }
        if let Some(old) = self.by_identity.remove(&identity) {
            self.close(old, CloseReason::Replaced);
        }
        let id = ClientId(self.next_id);
        self.next_id += 1;
        self.clients.insert(
            id,
            Client {
                identity,
                decoder: RelayFrame::decoder(),
                outbox: VecDeque::new(),
                queued: 0,
                bucket: TokenBucket::new(self.config.bytes_per_second, self.config.burst, now),
                gone_notices: HashMap::new(),
                closing: None,
                ready: false,
            },
        );
        self.by_identity.insert(identity, id);
        self.stats.accepted += 1;
        self.queue(id, &RelayFrame::ObservedAddr { addr }, true);
        Ok(id)
    }

    /// The frame a refused connection is sent before it is closed.
    pub fn refusal(reason: CloseReason) -> Bytes {
        frame_bytes(&RelayFrame::Close { reason })
    }

    /// Bytes read from `client`'s connection: every whole frame in them is
    /// acted on. A frame that does not decode, is too large, or is one
    /// only a relay sends closes the connection ([`CloseReason::Protocol`]).
    pub fn handle_bytes(&mut self, now: Instant, client: ClientId, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Some(state) = self.clients.get_mut(&client) else {
                return;
            };
            if state.closing.is_some() {
                return;
            }
            let decoded = match state.decoder.decode(bytes) {
                Ok(decoded) => decoded,
                Err(_) => return self.protocol_error(client),
            };
            bytes = &bytes[decoded.consumed..];
            let Some(body) = decoded.frame else {
                return;
            };
            // Every frame counts against its sender's rate, by size.
            let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
            if !state.bucket.take_n(now, size.max(1)) {
                self.stats.dropped_rate += 1;
                continue;
            }
            match RelayFrame::from_body(&body) {
                Ok(RelayFrame::Send { to, datagram }) => self.forward(now, client, to, datagram),
                Ok(RelayFrame::Ping { nonce }) => {
                    self.stats.pings += 1;
                    self.queue(client, &RelayFrame::Pong { nonce }, false);
                }
                // An answer to a ping of ours (the relay sends none yet).
                Ok(RelayFrame::Pong { .. }) => {}
                Ok(_) | Err(_) => return self.protocol_error(client),
            }
        }
    }

    fn forward(&mut self, now: Instant, from: ClientId, to: RemoteIdentity, datagram: Bytes) {
        let Some(sender) = self.clients.get(&from).map(|c| c.identity) else {
            return;
        };
        #[cfg(feature = "deterministic")]
        let (sender, to) = (
            self.misnamed.get(&sender).copied().unwrap_or(sender),
            self.misnamed
                .iter()
                .find(|(_, claimed)| **claimed == to)
                .map_or(to, |(actual, _)| *actual),
        );
        let destination = self
            .by_identity
            .get(&to)
            .copied()
            .filter(|id| self.clients.get(id).is_some_and(|c| c.closing.is_none()));
        let Some(destination) = destination else {
            self.stats.unknown_destination += 1;
            self.notify_gone(now, from, to);
            return;
        };
        let len = datagram.len();
        let frame = RelayFrame::Recv {
            from: sender,
            datagram,
        };
        if self.queue(destination, &frame, false) {
            self.stats.forwarded += 1;
            self.stats.forwarded_bytes += len as u64;
        } else {
            self.stats.dropped_queue += 1;
        }
    }

    /// Tell `client` that `missing` is not here, at most once a second per
    /// destination.
    fn notify_gone(&mut self, now: Instant, client: ClientId, missing: RemoteIdentity) {
        let Some(state) = self.clients.get_mut(&client) else {
            return;
        };
        if state
            .gone_notices
            .get(&missing)
            .is_some_and(|at| now.saturating_duration_since(*at) < GONE_NOTICE_INTERVAL)
        {
            return;
        }
        if state.gone_notices.len() >= MAX_GONE_NOTICES {
            state.gone_notices.clear();
        }
        state.gone_notices.insert(missing, now);
        self.queue(client, &RelayFrame::PeerGone { identity: missing }, false);
    }

    /// Queue `frame` for `client`, within its queue's bound unless
    /// `always` (the relay's own few control frames); whether it was.
    fn queue(&mut self, client: ClientId, frame: &RelayFrame, always: bool) -> bool {
        let Some(state) = self.clients.get_mut(&client) else {
            return false;
        };
        let bytes = frame_bytes(frame);
        if !always && state.queued + bytes.len() > self.config.queue_bytes {
            return false;
        }
        state.queued += bytes.len();
        state.outbox.push_back(bytes);
        if !state.ready {
            state.ready = true;
            self.ready.push_back(client);
        }
        true
    }

    fn protocol_error(&mut self, client: ClientId) {
        self.stats.protocol_errors += 1;
        self.close(client, CloseReason::Protocol);
    }

    /// Close `client`: drop what was queued for it, queue the `Close`
    /// frame, and stop reading it.
    fn close(&mut self, client: ClientId, reason: CloseReason) {
        let Some(state) = self.clients.get_mut(&client) else {
            return;
        };
        if state.closing.is_some() {
            return;
        }
        state.closing = Some(reason);
        state.outbox.clear();
        state.queued = 0;
        if self.by_identity.get(&state.identity) == Some(&client) {
            self.by_identity.remove(&state.identity);
        }
        self.queue(client, &RelayFrame::Close { reason }, true);
    }

    /// The next client with frames to write, if any (each named once until
    /// its outbox is empty again).
    pub fn poll_ready(&mut self) -> Option<ClientId> {
        while let Some(client) = self.ready.pop_front() {
            if let Some(state) = self.clients.get_mut(&client) {
                state.ready = false;
                if !state.outbox.is_empty() {
                    return Some(client);
                }
            }
        }
        None
    }

    /// The next frame to write to `client`.
    pub fn poll_transmit(&mut self, client: ClientId) -> Option<Bytes> {
        let state = self.clients.get_mut(&client)?;
        let frame = state.outbox.pop_front()?;
        state.queued -= frame.len();
        Some(frame)
    }

    /// Why the relay closes `client`, once it did: the I/O layer closes the
    /// connection after writing what [`poll_transmit`] still gives (the
    /// `Close` frame last).
    ///
    /// [`poll_transmit`]: RelayServer::poll_transmit
    pub fn closing(&self, client: ClientId) -> Option<CloseReason> {
        self.clients.get(&client).and_then(|c| c.closing)
    }

    /// The connection of `client` ended (closed by either side, or
    /// failed): forget it.
    pub fn remove(&mut self, client: ClientId) {
        if let Some(state) = self.clients.remove(&client)
            && self.by_identity.get(&state.identity) == Some(&client)
        {
            self.by_identity.remove(&state.identity);
        }
    }

    /// Close every connection ([`CloseReason::ShuttingDown`]) and refuse
    /// new ones.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for client in clients {
            self.close(client, CloseReason::ShuttingDown);
        }
    }

    /// The node `client` is, while connected.
    pub fn identity(&self, client: ClientId) -> Option<RemoteIdentity> {
        self.clients.get(&client).map(|c| c.identity)
    }

    /// For tests only (the `deterministic` feature), never in a relay:
    /// lie about who sends, naming `claimed` as the sender of what
    /// `actual` sends (and handing `actual` what is sent to `claimed`), so
    /// tests can prove nodes do not believe a relay.
    #[cfg(feature = "deterministic")]
    pub fn misname(&mut self, actual: RemoteIdentity, claimed: RemoteIdentity) {
        self.misnamed.insert(actual, claimed);
    }

    /// What the relay counted.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            clients: self.by_identity.len(),
            ..self.stats.clone()
        }
    }
}

/// A frame the relay builds itself: always within the limits (datagrams
/// were decoded within them).
fn frame_bytes(frame: &RelayFrame) -> Bytes {
    frame.to_bytes().unwrap_or_default()
}
