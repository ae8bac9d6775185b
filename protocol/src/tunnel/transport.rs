//! [`TunnelTransport`]: sealing and opening the tunnel's messages.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use super::TunnelError;
use super::frame::MAX_FRAME_LEN;

/// The AEAD tag each message carries.
const TAG_LEN: usize = 16;
/// The most plaintext one message carries: a frame's 65,535 bytes less the
/// tag.
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - TAG_LEN;
/// Both directions rekey (Noise `REKEY`) after every this many messages, so
/// that no key protects more than 2^20 messages (about 64 GiB at full
/// size). `REKEY` keeps the message counter: a direction fails, rather
/// than wrap, after 2^64 − 1 messages.
pub const REKEY_INTERVAL: u64 = 1 << 20;

/// The bytes [`TunnelTransport::seal`] writes for `plaintext_len` bytes:
/// the 2-byte length, the ciphertext and the tag.
pub const fn sealed_len(plaintext_len: usize) -> usize {
    2 + plaintext_len + TAG_LEN
}

/// One direction's Noise `CipherState` for `AESGCM` (Noise §5.1, §12.4):
/// a key and a message counter `n`; each message is AES-256-GCM with the
/// nonce `0u32 ‖ n` (big-endian) and no associated data. `REKEY` replaces
/// the key with the first 32 bytes of the encryption of 32 zero bytes under
/// the nonce 2^64 − 1; `n` goes on.
#[derive(Clone)]
struct CipherState {
    key: LessSafeKey,
    n: u64,
}

impl CipherState {
    fn new(key: &[u8; 32]) -> Result<Self, TunnelError> {
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| TunnelError::Crypto)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            n: 0,
        })
    }

    fn nonce(n: u64) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    /// The next message's nonce; 2^64 − 1 is reserved for `REKEY`.
    fn next_nonce(&mut self) -> Result<Nonce, TunnelError> {
        if self.n == u64::MAX {
            return Err(TunnelError::Crypto);
        }
        let nonce = Self::nonce(self.n);
        self.n += 1;
        Ok(nonce)
    }

    /// Encrypt `in_out` in place; returns the tag.
    fn seal(&mut self, in_out: &mut [u8]) -> Result<Tag, TunnelError> {
        let nonce = self.next_nonce()?;
        self.key
            .seal_in_place_separate_tag(nonce, Aad::empty(), in_out)
            .map_err(|_| TunnelError::Crypto)
    }

    /// Decrypt `in_out` in place against `tag`. A failure leaves the
    /// counter advanced: the transport fails for good anyway.
    fn open(&mut self, tag: &[u8], in_out: &mut [u8]) -> Result<(), TunnelError> {
        let nonce = self.next_nonce()?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| TunnelError::Decrypt)?;
        self.key
            .open_in_place_separate_tag(nonce, Aad::empty(), Tag::from(tag), in_out, 0..)
            .map(|_| ())
            .map_err(|_| TunnelError::Decrypt)
    }

    fn rekey(&mut self) -> Result<(), TunnelError> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        let _tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(u64::MAX), Aad::empty(), key.as_mut())
            .map_err(|_| TunnelError::Crypto)?;
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| TunnelError::Crypto)?;
        self.key = LessSafeKey::new(unbound);
        Ok(())
    }
}

/// An established tunnel's cipher states. Messages must be opened in the
/// order they were sealed (the stream under the tunnel is ordered); any
/// corruption, reordering, replay or loss fails authentication.
///
/// Each direction ends with an authenticated **end**: a message with an
/// empty plaintext ([`seal_end`](Self::seal_end)), which
/// [`open`](Self::open) reports as `Ok(0)`. A stream that ends without it
/// was cut short: [`handle_eof`](Self::handle_eof) says so.
pub struct TunnelTransport {
    send: CipherState,
    recv: CipherState,
    sent: u64,
    received: u64,
    rekey_interval: u64,
    failed: bool,
    end_sent: bool,
    end_received: bool,
}

impl core::fmt::Debug for TunnelTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TunnelTransport")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .field("failed", &self.failed)
            .field("end_sent", &self.end_sent)
            .field("end_received", &self.end_received)
            .finish_non_exhaustive()
    }
}

impl TunnelTransport {
    /// A transport from Noise's `Split()`: `send` encrypts this side's
    /// messages, `recv` opens the other side's.
    pub(crate) fn new(send: &[u8; 32], recv: &[u8; 32]) -> Result<Self, TunnelError> {
        Ok(Self {
            send: CipherState::new(send)?,
            recv: CipherState::new(recv)?,
            sent: 0,
            received: 0,
            rekey_interval: REKEY_INTERVAL,
            failed: false,
            end_sent: false,
            end_received: false,
        })
    }

    /// A copy that can only open (tests and fuzzing, feature
    /// `deterministic`): it continues from this transport's receive state,
    /// and sealing fails ([`TunnelError::Ended`]), so that two copies can
    /// never seal with the same nonces.
    #[cfg(any(test, feature = "deterministic"))]
    #[doc(hidden)]
    pub fn receive_only_copy(&self) -> Self {
        Self {
            send: self.send.clone(),
            recv: self.recv.clone(),
            sent: self.sent,
            received: self.received,
            rekey_interval: self.rekey_interval,
            failed: self.failed,
            end_sent: true,
            end_received: self.end_received,
        }
    }

    /// Rekey after every `interval` messages instead of [`REKEY_INTERVAL`];
    /// both sides must agree. For tests of the rekeying itself.
    #[doc(hidden)]
    pub fn set_rekey_interval(&mut self, interval: u64) {
        self.rekey_interval = interval.max(1);
    }

    /// Encrypt `plaintext` (1 to [`MAX_PLAINTEXT_LEN`] bytes: an empty
    /// plaintext is the end, see [`seal_end`](Self::seal_end)) as one
    /// framed message into `out`, which needs [`sealed_len`] bytes. Returns
    /// the bytes written. No allocation.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, TunnelError> {
        if plaintext.is_empty() {
            return Err(TunnelError::Buffer);
        }
        self.seal_message(plaintext, out)
    }

    /// Seal this direction's end: the last message, with an empty
    /// plaintext, into `out` (at least [`sealed_len`]`(0)` = 18 bytes).
    /// Nothing can be sealed after it. Returns the bytes written.
    pub fn seal_end(&mut self, out: &mut [u8]) -> Result<usize, TunnelError> {
        let n = self.seal_message(&[], out)?;
        self.end_sent = true;
        Ok(n)
    }

    /// Whether this side sealed its end.
    pub fn is_end_sent(&self) -> bool {
        self.end_sent
    }

    /// Whether the other side's end arrived: everything it sent was read.
    pub fn is_end_received(&self) -> bool {
        self.end_received
    }

    /// The stream under the tunnel ended (no more bytes will come): fine
    /// after the other side's end, else [`TunnelError::Truncated`] (and the
    /// transport is unusable). Between messages only; a stream that ends
    /// inside a message is a protocol violation the framing sees.
    pub fn handle_eof(&mut self) -> Result<(), TunnelError> {
        if self.end_received {
            Ok(())
        } else {
            Err(self.fail(TunnelError::Truncated))
        }
    }

    fn seal_message(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, TunnelError> {
        if self.failed {
            return Err(TunnelError::Failed);
        }
        if self.end_sent {
            return Err(TunnelError::Ended);
        }
        let len = sealed_len(plaintext.len());
        if plaintext.len() > MAX_PLAINTEXT_LEN || out.len() < len {
            return Err(TunnelError::Buffer);
        }
        let body = &mut out[2..len];
        let (text, tag_out) = body.split_at_mut(plaintext.len());
        text.copy_from_slice(plaintext);
        let tag = self.send.seal(text).map_err(|e| self.fail(e))?;
        tag_out.copy_from_slice(tag.as_ref());
        let n = len - 2;
        // `n` is at most MAX_FRAME_LEN, checked above.
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        self.sent += 1;
        if self.sent.is_multiple_of(self.rekey_interval) {
            self.send.rekey().map_err(|e| self.fail(e))?;
        }
        Ok(len)
    }

    /// Decrypt one message's frame body (without its 2-byte length) into
    /// `out`, which needs `frame.len() - 16` bytes. Returns the plaintext
    /// length: 0 is the other side's end, after which every message is an
    /// error ([`TunnelError::Ended`]). After a failure the transport is
    /// unusable.
    pub fn open(&mut self, frame: &[u8], out: &mut [u8]) -> Result<usize, TunnelError> {
        if self.failed {
            return Err(TunnelError::Failed);
        }
        if self.end_received {
            return Err(self.fail(TunnelError::Ended));
        }
        if let ([kind, code], 0) = (frame, self.received) {
            // The initiator refused the responder's accept: its first frame
            // after the handshake is a Reject (transport messages are never
            // this short). Anywhere else such a frame fails to open.
            if *kind == super::handshake::KIND_REJECT {
                let code = super::RejectCode::from_u8(*code);
                return Err(self.fail(TunnelError::Rejected(code)));
            }
        }
        if frame.len() < TAG_LEN {
            return Err(self.fail(TunnelError::Decrypt));
        }
        if out.len() < frame.len() - TAG_LEN {
            return Err(TunnelError::Buffer);
        }
        let n = frame.len() - TAG_LEN;
        let (ciphertext, tag) = frame.split_at(n);
        out[..n].copy_from_slice(ciphertext);
        if let Err(error) = self.recv.open(tag, &mut out[..n]) {
            out[..n].fill(0);
            return Err(self.fail(error));
        }
        self.received += 1;
        if self.received.is_multiple_of(self.rekey_interval) {
            self.recv.rekey().map_err(|e| self.fail(e))?;
        }
        if n == 0 {
            self.end_received = true;
        }
        Ok(n)
    }

    fn fail(&mut self, error: TunnelError) -> TunnelError {
        self.failed = true;
        error
    }
}
