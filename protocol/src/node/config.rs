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
    /// Seeds every random choice the core makes (QUIC connection ids, reset
    /// and token keys). Take it from a CSPRNG; tests fix it for
    /// reproducibility. TLS key shares come from the crypto library's own
    /// secure generator.
    pub rng_seed: [u8; 32],
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
        }
    }
}

/// Resource limits. Together they bound the memory a node spends on peers:
/// at most `max_connections × connection_receive_window` bytes of received
/// data wait for the application, and as much again of sent data waits for
/// acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections in any state. Incoming connections beyond it are refused.
    pub max_connections: usize,
    /// Incoming connections that have not finished the Hello exchange.
    pub max_incoming_handshakes: usize,
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_incoming_handshakes: 32,
            max_streams_per_connection: 1024,
            // 1.25 MB per stream fills a 10 Gb/s link at 1 ms RTT (a LAN's
            // bandwidth-delay product, and quinn's default). Larger windows
            // measured slower, not faster: 8 MiB per stream moved 745 MB/s
            // over loopback against 952 MB/s with these (BENCHMARKS.md).
            stream_receive_window: 1_250_000,
            connection_receive_window: 16 * 1024 * 1024,
            send_window: 10_000_000,
        }
    }
}

/// Timeouts.
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
        }
    }
}
