//! Property: under any seed and fault settings, data either arrives complete
//! and in order, or both sides get a typed error; never a hang past the idle
//! timeout, never a panic.

use std::time::Duration;

use pos_p2p_protocol::node::Event;
use pos_p2p_tests::sim::{Link, ReadEnd, Sim, payload};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn data_arrives_or_both_sides_fail(
        seed in any::<u64>(),
        latency_ms in 1u64..40,
        jitter_ms in 0u64..20,
        loss in 0.0f64..0.25,
        duplicate in 0.0f64..0.1,
        size in 0usize..150_000,
        partition_after_ms in proptest::option::of(0u64..400),
    ) {
        let link = Link {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss,
            duplicate,
        };
        let mut sim = Sim::new(seed, link);
        let a = sim.add_node(Sim::config(1));
        let b = sim.add_node(Sim::config(2));
        let idle = sim.nodes[a].node.config().timeouts.idle;
        sim.connect(a, b);
        if let Some(ms) = partition_after_ms {
            sim.run_for(Duration::from_millis(ms));
            sim.partition(a, b);
        }
        if !sim.run_until_connected(a, b) {
            // Not connected: the dialer must have been told why, in bounded time.
            let failed = sim.run_until(idle * 2, |sim| {
                sim.nodes[a].history.iter().any(|e| matches!(e, Event::ConnectFailed { .. } | Event::Disconnected { .. }))
            });
            prop_assert!(failed, "dialer neither connected nor failed");
            return Ok(());
        }
        let data = payload(seed, size);
        let peer = sim.id(b);
        let now = sim.now;
        let stream = sim.nodes[a].node.open_stream(now, &peer).unwrap();
        let wrote = sim.write_all(a, stream, &data);
        let arrived = sim.take_event(b, idle * 2, |e| match e {
            Event::IncomingStream { stream, .. } => Some(*stream),
            _ => None,
        });
        let outcome = match arrived {
            Some(remote) => sim.read_to_end(b, remote, idle * 2),
            None => Err(ReadEnd::TimedOut(0)),
        };
        match outcome {
            Ok(received) => {
                prop_assert!(wrote.is_ok());
                prop_assert!(received == data, "bytes arrive complete and in order");
            }
            Err(_) => {
                // Failure is allowed only as a typed disconnect on both sides,
                // reported within the idle timeout (plus slack).
                let both = sim.run_until(idle * 2, |sim| {
                    [a, b].iter().all(|&i| sim.nodes[i].history.iter().any(|e| {
                        matches!(e, Event::Disconnected { .. })
                    }))
                });
                prop_assert!(both, "a failed transfer must be reported on both sides");
                prop_assert!(partition_after_ms.is_some() || loss > 0.0, "a clean link never fails");
            }
        }
    }
}
