//! [`TunnelTransport`]: sealing and opening the tunnel's messages.

use super::TunnelError;
use super::frame::MAX_FRAME_LEN;

/// The AEAD tag each message carries.
const TAG_LEN: usize = 16;
/// The most plaintext one message carries: a frame's 65,535 bytes less the
/// tag.
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - TAG_LEN;
/// Both directions rekey (Noise `REKEY`) after every this many messages, so
/// nonces never come near wrapping and no key protects more than 2^20
/// messages (about 64 GiB at full size).
pub const REKEY_INTERVAL: u64 = 1 << 20;

/// The bytes [`TunnelTransport::seal`] writes for `plaintext_len` bytes:
/// the 2-byte length, the ciphertext and the tag.
pub const fn sealed_len(plaintext_len: usize) -> usize {
    2 + plaintext_len + TAG_LEN
}

/// An established tunnel's cipher states. Messages must be opened in the
/// order they were sealed (the stream under the tunnel is ordered); any
/// corruption, reordering, replay or loss fails authentication.
pub struct TunnelTransport {
    noise: snow::TransportState,
    sent: u64,
    received: u64,
    rekey_interval: u64,
    failed: bool,
}

impl core::fmt::Debug for TunnelTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TunnelTransport")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TunnelTransport {
    pub(crate) fn new(noise: snow::TransportState) -> Self {
        Self {
            noise,
            sent: 0,
            received: 0,
            rekey_interval: REKEY_INTERVAL,
            failed: false,
        }
    }

    /// Rekey after every `interval` messages instead of [`REKEY_INTERVAL`];
    /// both sides must agree. For tests of the rekeying itself.
    #[doc(hidden)]
    pub fn set_rekey_interval(&mut self, interval: u64) {
        self.rekey_interval = interval.max(1);
    }

    /// Encrypt `plaintext` (at most [`MAX_PLAINTEXT_LEN`] bytes) as one
    /// framed message into `out`, which needs [`sealed_len`] bytes. Returns
    /// the bytes written. No allocation.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, TunnelError> {
        if self.failed {
            return Err(TunnelError::Failed);
        }
        let len = sealed_len(plaintext.len());
        if plaintext.len() > MAX_PLAINTEXT_LEN || out.len() < len {
            return Err(TunnelError::Buffer);
        }
        let n = self
            .noise
            .write_message(plaintext, &mut out[2..len])
            .map_err(|_| self.fail(TunnelError::Crypto))?;
        // `n` is at most MAX_FRAME_LEN, checked above.
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        self.sent += 1;
        if self.sent.is_multiple_of(self.rekey_interval) {
            self.noise.rekey_outgoing();
        }
        Ok(2 + n)
    }

    /// Decrypt one message's frame body (without its 2-byte length) into
    /// `out`, which needs `frame.len() - 16` bytes. Returns the plaintext
    /// length. After a failure the transport is unusable.
    pub fn open(&mut self, frame: &[u8], out: &mut [u8]) -> Result<usize, TunnelError> {
        if self.failed {
            return Err(TunnelError::Failed);
        }
        if let [kind, code] = frame {
            // The other side refused the handshake after this side finished
            // it (its accept did not verify there); transport messages are
            // never this short.
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
        let n = self
            .noise
            .read_message(frame, out)
            .map_err(|_| self.fail(TunnelError::Decrypt))?;
        self.received += 1;
        if self.received.is_multiple_of(self.rekey_interval) {
            self.noise.rekey_incoming();
        }
        Ok(n)
    }

    fn fail(&mut self, error: TunnelError) -> TunnelError {
        self.failed = true;
        error
    }
}
