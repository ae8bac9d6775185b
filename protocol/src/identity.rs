//! Node identities: ed25519 key pairs ([`Identity`]) and their public halves
//! ([`RemoteIdentity`]).
//!
//! A node is known to the world by its [`RemoteIdentity`], the 32-byte ed25519
//! public key. Its text form is the key in RFC 4648 base32, lower case, without
//! padding: always 52 characters from `a-z` and `2-7`. That alphabet is safe in
//! URLs, file names and DNS labels (52 < 63), case-insensitive systems cannot
//! mangle it into another valid identity, and it has no look-alike pairs such
//! as `0`/`O` or `1`/`l`. Parsing accepts exactly that form and nothing else, so
//! every identity has one text form.

use core::fmt;
use core::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// Length in bytes of an identity's secret seed.
pub const SECRET_KEY_LEN: usize = 32;
/// Length in bytes of a [`RemoteIdentity`] (an ed25519 public key).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length in bytes of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length in characters of a [`RemoteIdentity`]'s text form.
pub const REMOTE_IDENTITY_TEXT_LEN: usize = 52;

/// A node's ed25519 key pair: who this node is.
///
/// The secret is zeroized when the value is dropped, and `Debug` prints only
/// the public half.
///
/// ```
/// use pos_p2p_protocol::Identity;
///
/// let identity = Identity::from_bytes(&[7; 32]);
/// let signature = identity.sign(b"hello");
/// identity.to_remote_identity().verify(b"hello", &signature).unwrap();
/// ```
#[derive(Clone)]
pub struct Identity {
    // `SigningKey` zeroizes its secret on drop (ed25519-dalek's `zeroize` feature).
    key: SigningKey,
}

impl Identity {
    /// Generate a new identity from a caller-supplied cryptographically secure
    /// random number generator. The core never reaches for hidden randomness.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self::from_bytes(&seed)
    }

    /// Rebuild an identity from its 32-byte secret seed (as returned by
    /// [`Identity::to_bytes`]). Every 32-byte value is a valid seed.
    pub fn from_bytes(seed: &[u8; SECRET_KEY_LEN]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, in a buffer that is zeroized when dropped.
    /// Store it somewhere safe: it *is* the node's identity.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// Sign `message` with this identity's secret key.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// The public half of this identity, as other nodes see it.
    pub fn to_remote_identity(&self) -> RemoteIdentity {
        RemoteIdentity(self.key.verifying_key().to_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.to_remote_identity())
            .finish_non_exhaustive()
    }
}

/// The public identity of a node: a validated ed25519 public key.
///
/// Construction rejects encodings that are not canonical, points that are not
/// on the curve and small-order ("weak") keys, so a `RemoteIdentity` always
/// names exactly one key that can verify signatures.
///
/// ```
/// use pos_p2p_protocol::{Identity, RemoteIdentity};
///
/// let id = Identity::from_bytes(&[1; 32]).to_remote_identity();
/// let text = id.to_string();
/// assert_eq!(text.len(), 52);
/// assert_eq!(text.parse::<RemoteIdentity>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteIdentity([u8; PUBLIC_KEY_LEN]);

impl RemoteIdentity {
    /// Validate a 32-byte ed25519 public key.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, IdentityError> {
        if !is_canonical_y(bytes) {
            return Err(IdentityError::NonCanonicalKey);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| IdentityError::InvalidKey)?;
        if key.is_weak() {
            return Err(IdentityError::WeakKey);
        }
        // Only the 32 bytes are kept: a cheap `Copy` key for maps, ordered
        // bytewise. The point is decompressed again to verify.
        Ok(Self(*bytes))
    }

    /// A key this node already validated (the certificate of a TLS session
    /// its verifier accepted): no second decompression of the point.
    pub(crate) fn from_validated(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the public key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Verify an ed25519 signature made by this identity over `message`.
    ///
    /// Uses strict verification (no malleable or small-order signatures).
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignatureError> {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        // Validated on construction, so decompression succeeds.
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        key.verify_strict(message, &signature)
            .map_err(|_| SignatureError)
    }
}

/// Whether the y coordinate in an ed25519 point encoding is below the field
/// prime 2^255 - 19, i.e. the encoding is the canonical one for its point.
/// ed25519-dalek accepts non-canonical encodings; we do not, so that one key
/// never has two identities.
fn is_canonical_y(bytes: &[u8; PUBLIC_KEY_LEN]) -> bool {
    // Little-endian y with the sign bit (bit 255) cleared is >= p exactly when
    // the top byte is 0x7f, the middle 30 bytes are 0xff and the low byte
    // is >= 0xed.
    let top_is_max = bytes[31] & 0x7f == 0x7f;
    let middle_is_max = bytes[1..31].iter().all(|&b| b == 0xff);
    !(top_is_max && middle_is_max && bytes[0] >= 0xed)
}

impl TryFrom<&[u8]> for RemoteIdentity {
    type Error = IdentityError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        let bytes: &[u8; PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|_| IdentityError::ByteLength {
                expected: PUBLIC_KEY_LEN,
                actual: bytes.len(),
            })?;
        Self::from_bytes(bytes)
    }
}

impl fmt::Display for RemoteIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; REMOTE_IDENTITY_TEXT_LEN];
        BASE32_NOPAD.encode_mut(self.as_bytes(), &mut text);
        text.make_ascii_lowercase();
        // The base32 alphabet is ASCII, so this conversion cannot fail.
        f.write_str(core::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for RemoteIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteIdentity({self})")
    }
}

impl FromStr for RemoteIdentity {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let input = text.as_bytes();
        if input.len() != REMOTE_IDENTITY_TEXT_LEN {
            return Err(IdentityError::TextLength {
                expected: REMOTE_IDENTITY_TEXT_LEN,
                actual: text.chars().count(),
            });
        }
        let mut upper = [0u8; REMOTE_IDENTITY_TEXT_LEN];
        for (index, (&c, out)) in input.iter().zip(upper.iter_mut()).enumerate() {
            if !(c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)) {
                // Report the character as the user typed it, even if it is
                // part of a multi-byte UTF-8 sequence.
                let ch = text
                    .get(index..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(IdentityError::InvalidCharacter { index, ch });
            }
            *out = c.to_ascii_uppercase();
        }
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        // With a fixed length and a checked alphabet, the only possible
        // failure is non-zero trailing bits: a second spelling of the key.
        BASE32_NOPAD
            .decode_mut(&upper, &mut bytes)
            .map_err(|_| IdentityError::NonCanonicalText)?;
        Self::from_bytes(&bytes)
    }
}

/// Why bytes or text are not a valid [`RemoteIdentity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text form has the wrong length.
    #[error("identity text must be {expected} characters, got {actual}")]
    TextLength {
        /// The required length.
        expected: usize,
        /// The length that was given, in characters.
        actual: usize,
    },
    /// The text form contains a character outside `a-z2-7`.
    #[error("invalid character {ch:?} at byte {index} of identity text (expected a-z or 2-7)")]
    InvalidCharacter {
        /// Byte offset of the character.
        index: usize,
        /// The offending character.
        ch: char,
    },
    /// The text form decodes, but its unused trailing bits are not zero.
    #[error("identity text is not in canonical form (last character has unused bits set)")]
    NonCanonicalText,
    /// A byte slice of the wrong length.
    #[error("identity must be {expected} bytes, got {actual}")]
    ByteLength {
        /// The required length.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// The key's encoding is not the canonical one for its point.
    #[error("public key is not canonically encoded")]
    NonCanonicalKey,
    /// The bytes are not a point on the ed25519 curve.
    #[error("public key is not a valid ed25519 point")]
    InvalidKey,
    /// The key has small order and would accept forged signatures.
    #[error("public key is a weak (small-order) ed25519 point")]
    WeakKey,
}

/// A signature did not verify. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature verification failed")]
pub struct SignatureError;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn generate_uses_the_given_rng_deterministically() {
        let a = Identity::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let b = Identity::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let c = Identity::generate(&mut ChaCha20Rng::seed_from_u64(2));
        assert_eq!(a.to_remote_identity(), b.to_remote_identity());
        assert_ne!(a.to_remote_identity(), c.to_remote_identity());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let identity = Identity::from_bytes(&[0xab; 32]);
        let debug = format!("{identity:?}");
        assert!(!debug.to_lowercase().contains("abab"), "{debug}");
        assert!(!debug.contains("171, 171"), "{debug}");
        assert!(debug.contains(&identity.to_remote_identity().to_string()));
    }

    #[test]
    fn known_text_form() {
        // The ed25519 public key of the all-zero seed (RFC 8032 test vector 1
        // uses another seed; this one is checked against the base32 spec by
        // construction: 32 bytes -> 52 lower-case characters).
        let id = Identity::from_bytes(&[0; 32]).to_remote_identity();
        assert_eq!(
            hex(id.as_bytes()),
            "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
        );
        assert_eq!(
            id.to_string(),
            "hnvcppgow2sc2yvdvdicu3ynonsteflxdxrehjr2ybekdc2z3iuq"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rejects_bad_text() {
        let good = Identity::from_bytes(&[3; 32])
            .to_remote_identity()
            .to_string();
        assert!(matches!(
            "".parse::<RemoteIdentity>(),
            Err(IdentityError::TextLength { actual: 0, .. })
        ));
        assert!(matches!(
            good[..51].parse::<RemoteIdentity>(),
            Err(IdentityError::TextLength { actual: 51, .. })
        ));
        let upper = good.to_ascii_uppercase();
        let first_letter = good.bytes().position(|c| c.is_ascii_lowercase()).unwrap();
        assert_eq!(
            upper.parse::<RemoteIdentity>(),
            Err(IdentityError::InvalidCharacter {
                index: first_letter,
                ch: upper[first_letter..].chars().next().unwrap()
            })
        );
        let mut with_one = good.clone().into_bytes();
        with_one[10] = b'1';
        assert_eq!(
            String::from_utf8(with_one)
                .unwrap()
                .parse::<RemoteIdentity>(),
            Err(IdentityError::InvalidCharacter { index: 10, ch: '1' })
        );
        // A multi-byte character of the right byte length is reported, not
        // sliced through.
        let mut multibyte = good[..50].to_string();
        multibyte.push('é');
        assert_eq!(
            multibyte.parse::<RemoteIdentity>(),
            Err(IdentityError::InvalidCharacter {
                index: 50, ch: 'é'
            })
        );
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        let id = Identity::from_bytes(&[5; 32]).to_remote_identity();
        let text = id.to_string();
        // The last character carries 1 bit of key and 4 unused bits.
        let last = text.as_bytes()[51];
        let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
        let value = alphabet.iter().position(|&c| c == last).unwrap();
        let mut tampered = text.into_bytes();
        tampered[51] = alphabet[value ^ 1];
        assert_eq!(
            String::from_utf8(tampered)
                .unwrap()
                .parse::<RemoteIdentity>(),
            Err(IdentityError::NonCanonicalText)
        );
    }

    #[test]
    fn rejects_bad_keys() {
        // The identity point (small order) encodes as y = 1.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            RemoteIdentity::from_bytes(&identity_point),
            Err(IdentityError::WeakKey)
        );
        // y = p + 1 is a non-canonical encoding of the same point.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert_eq!(
            RemoteIdentity::from_bytes(&non_canonical),
            Err(IdentityError::NonCanonicalKey)
        );
        // The same with the sign bit (bit 255, outside y) set: still y = p + 1.
        non_canonical[31] = 0xff;
        assert_eq!(
            RemoteIdentity::from_bytes(&non_canonical),
            Err(IdentityError::NonCanonicalKey)
        );
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            RemoteIdentity::from_bytes(&off_curve),
            Err(IdentityError::InvalidKey)
        );
        assert_eq!(
            RemoteIdentity::try_from(&[0u8; 31][..]),
            Err(IdentityError::ByteLength {
                expected: 32,
                actual: 31
            })
        );
    }

    #[test]
    fn canonical_keys_near_the_boundary_are_accepted() {
        // A real key whose top byte and lowest byte look like those of a
        // non-canonical encoding, but whose middle bytes do not: canonical,
        // and accepted. (All three parts of the check must hold to refuse.)
        let key = (0u32..)
            .map(|n| {
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&n.to_le_bytes());
                Identity::from_bytes(&seed).to_remote_identity()
            })
            .find(|id| id.as_bytes()[31] & 0x7f == 0x7f && id.as_bytes()[0] >= 0xed)
            .expect("one in about 1,700 keys looks like that");
        assert!(key.as_bytes()[1..31].iter().any(|&b| b != 0xff));
        assert_eq!(RemoteIdentity::from_bytes(key.as_bytes()), Ok(key));
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let identity = Identity::from_bytes(&[9; 32]);
        let remote = identity.to_remote_identity();
        let mut signature = identity.sign(b"message");
        assert_eq!(remote.verify(b"message", &signature), Ok(()));
        assert_eq!(remote.verify(b"messagE", &signature), Err(SignatureError));
        signature[0] ^= 1;
        assert_eq!(remote.verify(b"message", &signature), Err(SignatureError));
        let other = Identity::from_bytes(&[10; 32]).to_remote_identity();
        assert_eq!(
            other.verify(b"message", &identity.sign(b"message")),
            Err(SignatureError)
        );
    }

    proptest! {
        #[test]
        fn text_round_trip(seed in any::<[u8; 32]>()) {
            let identity = Identity::from_bytes(&seed);
            prop_assert_eq!(&*identity.to_bytes(), &seed);
            let id = identity.to_remote_identity();
            let text = id.to_string();
            prop_assert_eq!(text.len(), REMOTE_IDENTITY_TEXT_LEN);
            prop_assert!(text.bytes().all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
            prop_assert_eq!(text.parse::<RemoteIdentity>(), Ok(id));
            prop_assert_eq!(RemoteIdentity::from_bytes(id.as_bytes()), Ok(id));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = text.parse::<RemoteIdentity>();
        }

        #[test]
        fn parsing_arbitrary_alphabet_text_never_panics(text in "[a-z2-7]{52}") {
            // Most of these are valid base32 but about half are not curve
            // points; each must be a value or a typed error.
            match text.parse::<RemoteIdentity>() {
                Ok(id) => prop_assert_eq!(id.to_string(), text),
                Err(e) => prop_assert!(matches!(
                    e,
                    IdentityError::NonCanonicalText
                        | IdentityError::InvalidKey
                        | IdentityError::NonCanonicalKey
                        | IdentityError::WeakKey
                )),
            }
        }

        #[test]
        fn arbitrary_key_bytes_never_panic(bytes in any::<[u8; 32]>()) {
            if let Ok(id) = RemoteIdentity::from_bytes(&bytes) {
                prop_assert_eq!(id.as_bytes(), &bytes);
            }
        }

        #[test]
        fn order_follows_bytes(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let a = Identity::from_bytes(&a).to_remote_identity();
            let b = Identity::from_bytes(&b).to_remote_identity();
            prop_assert_eq!(a.cmp(&b), a.as_bytes().cmp(b.as_bytes()));
        }
    }
}
