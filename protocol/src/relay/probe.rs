//! The relay's address probe responder (docs/PROTOCOL.md §10.6): answers
//! STUN Binding requests on UDP at the relay's address with the address
//! and port each came from, at a bounded rate per source.

use std::net::SocketAddr;
use std::time::Instant;

use crate::rate::SourceLimits;
use crate::stun;

/// Answers per second one source IP address gets (twice as many in a
/// burst); a node asks once every 25 s per relay, more often only while
/// unanswered.
pub const PROBE_ANSWERS_PER_SOURCE: u32 = 10;
/// Source addresses with a limit of their own; the others share one.
const TRACKED_SOURCES: usize = 4_096;

/// Answers address probes. An answer is 32 bytes (44 for IPv6) for a
/// 20-byte request, and goes to the request's source, which may be
/// spoofed: the per-source limit keeps the relay from being much use to
/// anyone flooding a victim.
#[derive(Debug)]
pub struct ProbeResponder {
    limits: SourceLimits,
    answered: u64,
    refused: u64,
}

impl ProbeResponder {
    /// A responder with the default limits.
    pub fn new(now: Instant) -> Self {
        Self {
            limits: SourceLimits::new(
                PROBE_ANSWERS_PER_SOURCE,
                2 * PROBE_ANSWERS_PER_SOURCE,
                TRACKED_SOURCES,
                now,
            ),
            answered: 0,
            refused: 0,
        }
    }

    /// The answer to a datagram that arrived from `from`: `None` if it is
    /// not a Binding request, or `from` is over its limit.
    pub fn answer(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let id = stun::parse_binding_request(datagram).ok()?;
        if !self.limits.take(now, from.ip()) {
            self.refused += 1;
            return None;
        }
        self.answered += 1;
        Some(stun::binding_response(id, from))
    }

    /// Probes answered.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Probes not answered because their source was over its limit.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_requests_within_each_sources_limit() {
        let now = Instant::now();
        let mut responder = ProbeResponder::new(now);
        let request = stun::binding_request(stun::TransactionId([3; 12]));
        let a: SocketAddr = "198.51.100.1:40000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:40000".parse().unwrap();
        let answers = (0..100)
            .filter(|_| responder.answer(now, a, &request).is_some())
            .count();
        assert_eq!(answers, 2 * PROBE_ANSWERS_PER_SOURCE as usize, "the burst");
        assert_eq!(responder.refused(), 100 - answers as u64);
        // Another source is not held back by the first.
        let answer = responder.answer(now, b, &request).unwrap();
        assert_eq!(
            stun::parse_binding_response(&answer),
            Ok((stun::TransactionId([3; 12]), b))
        );
        // A second later the first has its rate again.
        let later = now + Duration::from_secs(1);
        let again = (0..100)
            .filter(|_| responder.answer(later, a, &request).is_some())
            .count();
        assert_eq!(again, PROBE_ANSWERS_PER_SOURCE as usize);
        // Anything but a request gets nothing, and costs no token.
        assert_eq!(responder.answer(later, b, &answer), None);
        assert_eq!(responder.answer(later, b, b"\x40hello quic"), None);
        assert_eq!(responder.answered(), (answers + 1 + again) as u64);
    }
}
