//! Properties of data transfer under faults, each case named for what it
//! proves:
//!
//! - on a clean link (any latency, jitter and duplication, no loss, no
//!   partition) the dial connects and the data arrives complete and in
//!   order: never a failure;
//! - on a lossy link (up to 10 % loss) the same holds, within a stated
//!   time bound;
//! - when the link is cut, or loses up to half its datagrams, data either
//!   arrives complete and in order (within ten minutes: at such loss QUIC
//!   crawls but keeps going), or both sides get a typed reason from the
//!   documented few, within the idle timeout (plus slack) of the failure:
//!   the connection's, or, when the stream's header took longer than
//!   `Timeouts::header` to get through, the stream's (`HEADER_TIMEOUT`, the
//!   sender told by STOP_SENDING) while the connection lives on; never a
//!   hang, never a panic.

use std::time::Duration;

use pos_p2p_protocol::node::{DisconnectReason, Event, stream_code};
use pos_p2p_tests::sim::{Link, ReadEnd, Sim, payload};
use proptest::prelude::*;

/// Dial, send `size` bytes from a to b, and read them on b.
fn transfer(sim: &mut Sim, size: usize, seed: u64, limit: Duration) -> Result<Vec<u8>, ReadEnd> {
    let (a, b) = (0, 1);
    let stream = sim.open_stream(a, b).map_err(ReadEnd::Error)?;
    let wrote = sim.write_all(a, stream, &payload(seed, size));
    let remote = sim.accept_stream(b, limit).ok_or(ReadEnd::TimedOut(0))?;
    let received = sim.read_to_end(b, remote, limit)?;
    wrote.map_err(ReadEnd::Error)?;
    Ok(received)
}

fn two_nodes(seed: u64, link: Link) -> Sim {
    let mut sim = Sim::new(seed, link);
    sim.add_node(Sim::config(1));
    sim.add_node(Sim::config(2));
    sim
}

/// The reasons a connection may end with when its link is cut or very
/// lossy (PROTOCOL.md §7.2, RFC 9000 §10.1 and §10.3: a side that timed
/// out answers the other's packets with a stateless reset).
fn documented_link_failure(reason: &DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::TimedOut
            | DisconnectReason::HandshakeTimeout
            | DisconnectReason::Reset
            | DisconnectReason::ClosedDuringHandshake
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_clean_link_always_delivers(
        seed in any::<u64>(),
        latency_ms in 1u64..40,
        jitter_ms in 0u64..20,
        duplicate in 0.0f64..0.1,
        size in 0usize..150_000,
    ) {
        let link = Link {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss: 0.0,
            duplicate,
        };
        let mut sim = two_nodes(seed, link);
        sim.connect(0, 1);
        prop_assert!(sim.run_until_connected(0, 1), "a clean link connects");
        let received = transfer(&mut sim, size, seed, Duration::from_secs(30));
        prop_assert!(received == Ok(payload(seed, size)), "a clean link delivers every byte in order");
        prop_assert_eq!(sim.stats.dropped, 0);
    }

    #[test]
    fn a_link_losing_up_to_ten_percent_delivers_within_a_minute(
        seed in any::<u64>(),
        latency_ms in 1u64..40,
        jitter_ms in 0u64..20,
        loss in 0.01f64..0.10,
        size in 1usize..150_000,
    ) {
        let link = Link {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss,
            duplicate: 0.0,
        };
        let mut sim = two_nodes(seed, link);
        let start = sim.now;
        sim.connect(0, 1);
        prop_assert!(sim.run_until_connected(0, 1), "connects despite {loss} loss");
        let received = transfer(&mut sim, size, seed, Duration::from_secs(60));
        prop_assert!(received == Ok(payload(seed, size)), "delivers despite {loss} loss");
        prop_assert!(sim.now - start <= Duration::from_secs(60), "within a minute: {:?}", sim.now - start);
    }

    #[test]
    fn a_cut_or_very_lossy_link_delivers_or_fails_with_a_documented_reason(
        seed in any::<u64>(),
        latency_ms in 1u64..40,
        loss in 0.0f64..0.5,
        partition_after_ms in proptest::option::of(0u64..400),
        size in 1usize..150_000,
    ) {
        let link = Link {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::ZERO,
            loss,
            duplicate: 0.0,
        };
        let mut sim = two_nodes(seed, link);
        let idle = sim.nodes[0].node.config().timeouts.idle;
        sim.connect(0, 1);
        if let Some(ms) = partition_after_ms {
            sim.run_for(Duration::from_millis(ms));
            sim.partition(0, 1);
        }
        let reasons = |sim: &Sim, i: usize| -> Vec<DisconnectReason> {
            sim.nodes[i].history.iter().filter_map(|e| match e {
                Event::Disconnected { reason, .. } | Event::ConnectFailed { reason, .. } => Some(reason.clone()),
                _ => None,
            }).collect()
        };
        // Each side's handshake deadline runs from its own first packet: the
        // listener may finish up to a handshake timeout after the dialer.
        let handshake = sim.nodes[0].node.config().timeouts.handshake;
        let (ida, idb) = (sim.id(0), sim.id(1));
        let both = |sim: &Sim| {
            sim.nodes[0].node.peer(&idb).is_some() && sim.nodes[1].node.peer(&ida).is_some()
        };
        sim.run_until(handshake * 2, |sim| both(sim) || !reasons(sim, 0).is_empty());
        if !both(&sim) {
            let failed = sim.run_until(idle * 2, |sim| !reasons(sim, 0).is_empty());
            prop_assert!(failed, "the dialer neither connected nor failed");
            prop_assert!(reasons(&sim, 0).iter().all(documented_link_failure), "{:?}", reasons(&sim, 0));
            return Ok(());
        }
        match transfer(&mut sim, size, seed, Duration::from_secs(600)) {
            Ok(received) => prop_assert!(received == payload(seed, size), "complete and in order"),
            Err(_) if sim.nodes[1].node.stats().headers_timed_out > 0 => {
                // The header did not get through in time: the receiver
                // refused the stream, and the sender is told why (or, if
                // the link dies first, both lose the connection).
                let told = sim.run_until(idle * 4, |sim| {
                    sim.nodes[0].history.iter().any(|e| matches!(
                        e,
                        Event::StreamStopped { code: stream_code::HEADER_TIMEOUT, .. }
                    )) || [0, 1].iter().all(|&i| !reasons(sim, i).is_empty())
                });
                prop_assert!(told, "the sender learns its stream was refused");
            }
            Err(_) => {
                let start = sim.now;
                // Each side's idle timer runs on its own, and at heavy loss
                // QUIC stretches it to three probe timeouts (RFC 9000
                // §10.1): the other side follows within a few idle
                // timeouts.
                let both = sim.run_until(idle * 4, |sim| {
                    [0, 1].iter().all(|&i| !reasons(sim, i).is_empty())
                });
                prop_assert!(both, "a failed transfer is reported on both sides, within {:?}", idle * 4);
                prop_assert!(sim.now - start <= idle * 4);
                for i in [0, 1] {
                    prop_assert!(reasons(&sim, i).iter().all(documented_link_failure), "{:?}", reasons(&sim, i));
                }
            }
        }
    }
}
