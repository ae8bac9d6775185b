//! Deterministic crypto for tests and fuzzing (feature `deterministic`,
//! never in production): every random choice of TLS (randoms, ticket
//! nonces, X25519 key shares) and of QUIC's connection ids comes from the
//! node's configured seed, so that a recorded handshake replays byte for
//! byte into a fresh node and reaches the connected state.
//!
//! Two live nodes made on one thread must not share a seed (they would
//! share a stream). Everything else in a handshake is deterministic
//! already: ed25519
//! signatures, Initial keys (derived from the connection id), the
//! endpoint's own random choices (seeded from the configuration), and time
//! (passed in).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::{NamedGroup, PeerMisbehaved};
use zeroize::Zeroizing;

/// A seeded stream: rustls wants its randomness and key exchange groups
/// `&'static`, so each is made once per seed and thread and reused
/// (restarted from the seed by every node made with it).
#[derive(Debug)]
pub(super) struct SeededCrypto {
    rng: Mutex<ChaCha20Rng>,
    /// The insecure stand-in for X25519 (see [`provider`]).
    cheap: bool,
}

impl SeededCrypto {
    fn fill(&self, buf: &mut [u8]) {
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .fill_bytes(buf);
    }
}

/// The seeded stream for `seed`, restarted. One per seed and thread: tests
/// running in parallel threads with the same seeds do not draw from each
/// other's streams, and a thread that makes nodes over and over (a fuzzer)
/// reuses what it made.
fn seeded(seed: [u8; 32], cheap: bool) -> &'static SeededCrypto {
    thread_local! {
        static STREAMS: RefCell<BTreeMap<([u8; 32], bool), &'static SeededCrypto>> =
            const { RefCell::new(BTreeMap::new()) };
    }
    let crypto = STREAMS.with_borrow_mut(|streams| {
        *streams.entry((seed, cheap)).or_insert_with(|| {
            Box::leak(Box::new(SeededCrypto {
                rng: Mutex::new(ChaCha20Rng::from_seed(seed)),
                cheap,
            }))
        })
    });
    *crypto
        .rng
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = ChaCha20Rng::from_seed(seed);
    crypto
}

/// ring's provider with randomness and X25519 from `seed`, X25519 the only
/// key exchange (a fallback to another group would bring back the system's
/// randomness). With `cheap` (fuzzing only), the X25519 group is an
/// insecure stand-in with the same wire shape: a key share is 32 seeded
/// bytes and the shared secret is the XOR of both shares, so a fuzzer
/// spends its time in the node rather than in curve arithmetic.
pub(super) fn provider(seed: [u8; 32], cheap: bool) -> Arc<CryptoProvider> {
    let crypto = seeded(seed, cheap);
    Arc::new(CryptoProvider {
        secure_random: crypto,
        kx_groups: vec![crypto],
        ..rustls::crypto::ring::default_provider()
    })
}

impl SecureRandom for SeededCrypto {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        SeededCrypto::fill(self, buf);
        Ok(())
    }
}

impl SupportedKxGroup for SeededCrypto {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        SeededCrypto::fill(self, secret.as_mut());
        let public = if self.cheap {
            *secret
        } else {
            MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
        };
        Ok(Box::new(X25519Share {
            secret,
            public,
            cheap: self.cheap,
        }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Share {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    cheap: bool,
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = Zeroizing::new(if self.cheap {
            std::array::from_fn(|i| peer[i] ^ self.public[i])
        } else {
            MontgomeryPoint(peer).mul_clamped(*self.secret).to_bytes()
        });
        // An all-zero secret means a small-order share (RFC 7748 §6.1).
        if shared.iter().all(|b| *b == 0) {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Connection ids from a seeded stream (quinn-proto's default generators
/// draw from the thread's RNG).
#[derive(Debug)]
pub(super) struct SeededCids {
    rng: ChaCha20Rng,
}

/// The length of the connection ids, quinn's default.
const CID_LEN: usize = 8;

impl SeededCids {
    pub(super) fn new(seed: [u8; 32]) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    fn next(&mut self) -> quinn_proto::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut bytes);
        quinn_proto::ConnectionId::new(&bytes)
    }
}

impl quinn_proto::ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        self.next()
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The destination connection ids of a dialer's first Initials.
pub(super) fn initial_cids(
    seed: [u8; 32],
) -> Arc<dyn Fn() -> quinn_proto::ConnectionId + Send + Sync> {
    let cids = Mutex::new(SeededCids::new(seed));
    Arc::new(move || {
        cids.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next()
    })
}

/// The certificate of `identity`, made once per thread: a deterministic
/// node's certificate is a function of its identity (ed25519 signatures
/// are deterministic), and a fuzzer makes the same node over and over.
pub(super) fn certified(
    identity: &crate::Identity,
) -> Result<Arc<rustls::sign::CertifiedKey>, super::tls::TlsSetupError> {
    thread_local! {
        static CERTIFIED: RefCell<BTreeMap<[u8; 32], Arc<rustls::sign::CertifiedKey>>> =
            const { RefCell::new(BTreeMap::new()) };
    }
    let key = *identity.to_remote_identity().as_bytes();
    if let Some(certified) = CERTIFIED.with_borrow(|map| map.get(&key).cloned()) {
        return Ok(certified);
    }
    let certified = super::tls::NodeCertificate::certify(identity)?;
    CERTIFIED.with_borrow_mut(|map| map.insert(key, certified.clone()));
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_exchange_agrees_with_ring_and_refuses_small_order_shares() {
        let ours = seeded([3; 32], false).start().unwrap();
        let ring_kx = rustls::crypto::ring::kx_group::X25519;
        let theirs = ring_kx.start_and_complete(ours.pub_key()).unwrap();
        let mine = ours.complete(&theirs.pub_key).unwrap();
        assert_eq!(mine.secret_bytes(), theirs.secret.secret_bytes());
        let zero = seeded([4; 32], false).start().unwrap();
        assert!(zero.complete(&[0; 32]).is_err());
    }

    #[test]
    fn the_cheap_exchange_agrees_and_refuses_an_echoed_share() {
        let a = seeded([5; 32], true).start().unwrap();
        let b = seeded([6; 32], true).start().unwrap();
        let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        assert_ne!(a_pub, b_pub);
        let ab = a.complete(&b_pub).unwrap();
        let ba = b.complete(&a_pub).unwrap();
        assert_eq!(ab.secret_bytes(), ba.secret_bytes());
        let c = seeded([7; 32], true).start().unwrap();
        let echoed = c.pub_key().to_vec();
        assert!(c.complete(&echoed).is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_stream_again() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        seeded([9; 32], false).fill(&mut a);
        seeded([9; 32], false).fill(&mut b);
        assert_eq!(a, b);
        let mut c = [0u8; 16];
        seeded([10; 32], false).fill(&mut c);
        assert_ne!(a, c);
    }
}
