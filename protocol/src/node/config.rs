//! [`NodeConfig`]: everything a [`Node`](super::Node) is told up front.

use std::time::Duration;

use semver::Version;

use crate::Identity;
use crate::metadata::Metadata;
use crate::version::{VersionPolicy, Versions};

/// The configuration of a [`Node`](super::Node).
///
/// ```
/// use pos_p2p_protocol::node::NodeConfig;
/// use pos_p2p_protocol::{Identity, semver::Version};
///
/// let config = NodeConfig::new(
///     Identity::from_bytes(&[1; 32]),
///     "notes",
///     Version::new(1, 0, 0),
///     [7; 32], // from a CSPRNG in real use
/// );
/// assert_eq!(config.limits.max_connections, 256);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Who this node is.
    pub identity: Identity,
    /// The application's name. Nodes of different applications refuse each
    /// other. At most 64 bytes.
    pub app_name: String,
    /// This node's protocol and application versions.
    pub versions: Versions,
    /// The metadata sent to every peer.
    pub metadata: Metadata,
    /// Which peer versions are accepted.
    pub version_policy: VersionPolicy,
    /// Resource limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Seeds every random choice the core makes (QUIC's random choices,
    /// reset and token keys). Take it from a CSPRNG; tests fix it for
    /// reproducibility. TLS randoms and key shares, and QUIC connection
    /// ids, come from the crypto library's and the system's secure
    /// generators.
    pub rng_seed: [u8; 32],
    /// Try to reach peers met through a relay directly (docs/PROTOCOL.md
    /// §10.7): tell them the node's candidate addresses and dial theirs.
    /// On by default. Off, the node's addresses are never told to peers
    /// it reaches through a relay (only the relay sees where it is), and
    /// such connections stay relayed.
    pub hole_punching: bool,
    /// Tests and fuzzing only (feature `deterministic`): take TLS randoms
    /// and key shares and QUIC connection ids from `rng_seed` too, so that
    /// a recorded handshake replays byte for byte. Never in production: the
    /// seed would be the only secret of every key exchange. Two live nodes
    /// must not share a seed.
    #[cfg(feature = "deterministic")]
    #[doc(hidden)]
    pub deterministic_crypto: bool,
    /// Fuzzing only (feature `deterministic`, with `deterministic_crypto`):
    /// replace X25519 by an insecure stand-in of the same wire shape, so a
    /// fuzzer's time goes to the node rather than to curve arithmetic.
    /// Both ends of a handshake must agree on it.
    #[cfg(feature = "deterministic")]
    #[doc(hidden)]
    pub cheap_key_exchange: bool,
}

impl NodeConfig {
    /// A configuration with default limits, timeouts, an empty metadata map
    /// and the default version policy.
    pub fn new(
        identity: Identity,
        app_name: impl Into<String>,
        app_version: Version,
        rng_seed: [u8; 32],
    ) -> Self {
        Self {
            identity,
            app_name: app_name.into(),
            versions: Versions::new(app_version),
            metadata: Metadata::new(),
            version_policy: VersionPolicy::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            rng_seed,
            hole_punching: true,
            #[cfg(feature = "deterministic")]
            deterministic_crypto: false,
            #[cfg(feature = "deterministic")]
            cheap_key_exchange: false,
        }
    }
}

/// Resource limits. Together they bound the memory a node spends on peers:
/// at most `(max_connections + max_incoming_handshakes) ×
/// (connection_receive_window + header_buffer)` bytes of received data
/// wait for the application, and `send_window` bytes per connection of
/// sent data wait for acknowledgement.
///
/// # Admission
///
/// Incoming connections are admitted in two steps, so that peers that
/// never authenticate, or authenticate and then idle, cannot lock honest
/// newcomers out:
///
/// 1. **Handshakes.** At most `max_incoming_handshakes` incoming
///    connections may be between their first packet and the end of the
///    Hello exchange. Once half of these slots are taken the node is under
///    load: a dialer must first prove its address (QUIC Retry), so a flood
///    from spoofed addresses takes no slot, and one IP address may hold at
///    most `max_handshakes_per_source` slots. When every slot is taken, the
///    oldest handshake that has not yet proven an identity gives way to
///    the new one, and any that has not proven one within
///    [`Timeouts::handshake_under_load`] is closed. A dialer turned away is
///    ignored, not refused: QUIC retransmits its first flight about a
///    second later.
/// 2. **Connections.** A peer the application asked for (it dialed it,
///    [protected](super::Node::protect) its identity, or opened a stream to
///    it in the last five minutes) is never refused for lack of room and
///    never evicted. Peers nobody asked for get at most
///    `max_connections_per_source` connections per IP address. When a
///    connection is established while `max_connections` are, the
///    established connection idle longest (no stream the application knows
///    of) from a peer nobody asked for gives way
///    ([`DisconnectReason::Evicted`](super::DisconnectReason::Evicted)); a
///    newcomer nobody asked for is refused when none can.
///
/// Closing connections, which QUIC keeps for a few round trips, do not
/// count against these limits, but all connections together never exceed
/// `2 × (max_connections + max_incoming_handshakes)`; dials fail
/// ([`ConnectError::TooManyConnections`](super::ConnectError)) only at that
/// ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Established connections (see the admission rules above).
    pub max_connections: usize,
    /// Incoming connections that have not finished the Hello exchange.
    pub max_incoming_handshakes: usize,
    /// Incoming connections from one IP address that have not finished the
    /// Hello exchange, while the node is under load (see above).
    pub max_handshakes_per_source: usize,
    /// Established connections from one IP address to peers the
    /// application has not asked for (see above).
    pub max_connections_per_source: usize,
    /// Concurrent bidirectional streams a peer may open on one connection.
    pub max_streams_per_connection: u32,
    /// Bytes a peer may send on one stream before the application reads.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on all streams of a connection before the
    /// application reads.
    pub connection_receive_window: u32,
    /// Bytes of written data per connection that may wait for
    /// acknowledgement; writes beyond it are refused until data is acked.
    pub send_window: u64,
    /// The longest header frame body accepted on a peer-opened stream;
    /// longer ones are refused with `HEADER_TOO_LARGE`. Should be at least
    /// the application's `Header::MAX_LEN`.
    pub max_header_len: usize,
    /// Bytes of header frames held per connection, being received or
    /// waiting to be read by the application. At least `max_header_len`
    /// plus 10 (one whole frame).
    pub header_buffer: usize,
    /// Stateless answers (version negotiation, stateless resets, refusals,
    /// retries) sent per second to one IP address at most (with a burst of
    /// as many), so that the node cannot be used to reflect a flood at a
    /// spoofed address. Up to 256 addresses are limited separately; the
    /// others share one such limit.
    pub stateless_responses_per_second: u32,
    /// Peers the address book ([`Node::book`](super::Node::book))
    /// remembers besides those the application added: where a connected
    /// peer was reached, for a later dial. Strangers (peers that only
    /// connected to us) are forgotten first, so they cannot push out the
    /// peers the application used.
    pub max_remembered_peers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_incoming_handshakes: 32,
            max_handshakes_per_source: 4,
            max_connections_per_source: 32,
            max_streams_per_connection: 1024,
            // 1.25 MB per stream fills a 10 Gb/s link at 1 ms RTT (a LAN's
            // bandwidth-delay product, and quinn's default). Larger windows
            // measured slower, not faster: 8 MiB per stream moved 745 MB/s
            // over loopback against 952 MB/s with these (BENCHMARKS.md).
            stream_receive_window: 1_250_000,
            connection_receive_window: 16 * 1024 * 1024,
            send_window: 10_000_000,
            max_header_len: crate::codec::DEFAULT_MAX_FRAME_LEN,
            header_buffer: 256 * 1024,
            stateless_responses_per_second: 100,
            max_remembered_peers: 1024,
        }
    }
}

/// Timeouts of connections and streams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// A connection with no traffic for this long is closed. Keep-alives
    /// keep an idle but healthy connection open.
    pub idle: Duration,
    /// How often to send a keep-alive on a quiet connection. Must be well
    /// under `idle`.
    pub keep_alive: Duration,
    /// How long a connection may take from its first packet to the end of
    /// the Hello exchange.
    pub handshake: Duration,
    /// Under load (see [`Limits`]), how long an incoming connection may
    /// take to prove its peer's identity before it gives way to new ones.
    /// Short, because until then it holds one of the few handshake slots:
    /// an honest dialer needs a couple of round trips. Without load, slow
    /// (lossy) handshakes get the whole `handshake` timeout.
    pub handshake_under_load: Duration,
    /// How long a peer-opened stream may take to deliver its header frame
    /// before it is refused with `HEADER_TIMEOUT`.
    pub header: Duration,
    /// How long a node keeps a superseded duplicate connection (PROTOCOL.md
    /// §7.5) open waiting for the peer to give it up: for the peer's
    /// `Superseded` and for every stream it counted there. After that the
    /// connection is closed with `DUPLICATE`, whatever still runs on it.
    pub superseded: Duration,
    /// The round-trip time QUIC assumes for a path before it has measured
    /// one. It decides how soon a lost handshake packet is sent again:
    /// three times this, doubling on each further loss. RFC 9002 suggests
    /// 333 ms for paths nothing is known about (a lost first packet then
    /// costs a second); pos-p2p's peers are mostly on the same LAN, so the
    /// default is 100 ms (Chromium's QUIC uses the same): a dial whose
    /// first packet is lost on a busy Wi-Fi, or to a node under a datagram
    /// flood, retries after 300 ms. Raise it for paths known to be slow
    /// (a spurious retransmission costs one packet); it is replaced by the
    /// measured round-trip time as soon as there is one. At least 1 ms and
    /// shorter than `handshake`, or [`Node::new`](super::Node::new) refuses
    /// the configuration.
    pub initial_rtt: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            handshake_under_load: Duration::from_secs(2),
            header: Duration::from_secs(5),
            superseded: Duration::from_secs(10),
            initial_rtt: Duration::from_millis(100),
        }
    }
}
