//! Building quinn-proto's configuration from a [`NodeConfig`].

use super::{NodeConfig, NodeError};
use std::sync::atomic::{AtomicU64, Ordering};

use quinn_proto::VarInt;

/// The connection receive window before the Hello exchange is done.
pub(super) const HANDSHAKE_RECEIVE_WINDOW: u32 = 256 * 1024;

pub(super) fn transport_config(
    config: &NodeConfig,
) -> Result<quinn_proto::TransportConfig, NodeError> {
    let limits = &config.limits;
    let idle = quinn_proto::IdleTimeout::try_from(config.timeouts.idle)
        .map_err(|_| NodeError::InvalidConfig("idle timeout too large"))?;
    let mut transport = quinn_proto::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_receive_window))
        // Until the Hello exchange is done, a peer may have only a little
        // unread data with us (handshake slots are many and cheap to take);
        // the whole window opens when the connection is established.
        .receive_window(VarInt::from_u32(
            limits
                .connection_receive_window
                .min(HANDSHAKE_RECEIVE_WINDOW),
        ))
        .send_window(limits.send_window)
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.timeouts.keep_alive))
        .initial_rtt(config.timeouts.initial_rtt)
        .datagram_receive_buffer_size(None);
    Ok(transport)
}

/// Independent keys and seeds derived from the configured seed.
pub(super) struct Seeds {
    pub(super) endpoint_rng: [u8; 32],
    pub(super) reset_key: [u8; 32],
    pub(super) token_key: [u8; 32],
    /// Deterministic crypto only: TLS, connection ids, and dialers' first
    /// destination connection ids.
    #[cfg_attr(not(feature = "deterministic"), allow(dead_code))]
    pub(super) tls: [u8; 32],
    #[cfg_attr(not(feature = "deterministic"), allow(dead_code))]
    pub(super) cids: [u8; 32],
    #[cfg_attr(not(feature = "deterministic"), allow(dead_code))]
    pub(super) initial_cids: [u8; 32],
    /// The manual peers' backoff jitter.
    pub(super) manual: [u8; 32],
    /// Address probes' transaction ids.
    pub(super) probe: [u8; 32],
}

pub(super) fn derive_seeds(seed: &[u8; 32]) -> Seeds {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let mut seeds = Seeds {
        endpoint_rng: [0; 32],
        reset_key: [0; 32],
        token_key: [0; 32],
        tls: [0; 32],
        cids: [0; 32],
        initial_cids: [0; 32],
        manual: [0; 32],
        probe: [0; 32],
    };
    // Appended in this order, so that earlier seeds stay as they were.
    rng.fill_bytes(&mut seeds.endpoint_rng);
    rng.fill_bytes(&mut seeds.reset_key);
    rng.fill_bytes(&mut seeds.token_key);
    rng.fill_bytes(&mut seeds.tls);
    rng.fill_bytes(&mut seeds.cids);
    rng.fill_bytes(&mut seeds.initial_cids);
    rng.fill_bytes(&mut seeds.manual);
    rng.fill_bytes(&mut seeds.probe);
    seeds
}

/// The clock of QUIC's address-validation (Retry) tokens: the node's own
/// time since it started, as the node was told it through its inputs, on
/// a fixed origin. The core never reads the OS's clock; tokens only need
/// to expire relative to when the same node issued them.
#[derive(Debug, Default)]
pub(super) struct NodeClock {
    /// Microseconds since the node started.
    elapsed_us: AtomicU64,
}

impl NodeClock {
    /// The origin: any fixed time works, as only this node reads its tokens.
    const ORIGIN_SECS: u64 = 1 << 30;

    pub(super) fn advance(&self, since_start: std::time::Duration) {
        let us = u64::try_from(since_start.as_micros()).unwrap_or(u64::MAX);
        self.elapsed_us.fetch_max(us, Ordering::Relaxed);
    }
}

impl quinn_proto::TimeSource for NodeClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(Self::ORIGIN_SECS)
            + std::time::Duration::from_micros(self.elapsed_us.load(Ordering::Relaxed))
    }
}
