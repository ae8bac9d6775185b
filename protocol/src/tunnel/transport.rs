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
///
/// Each direction ends with an authenticated **end**: a message with an
/// empty plaintext ([`seal_end`](Self::seal_end)), which
/// [`open`](Self::open) reports as `Ok(0)`. A stream that ends without it
/// was cut short: [`handle_eof`](Self::handle_eof) says so.
pub struct TunnelTransport {
    noise: snow::TransportState,
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
    pub(crate) fn new(noise: snow::TransportState) -> Self {
        Self {
            noise,
            sent: 0,
            received: 0,
            rekey_interval: REKEY_INTERVAL,
            failed: false,
            end_sent: false,
            end_received: false,
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
        let n = self
            .noise
            .read_message(frame, out)
            .map_err(|_| self.fail(TunnelError::Decrypt))?;
        self.received += 1;
        if self.received.is_multiple_of(self.rekey_interval) {
            self.noise.rekey_incoming();
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
