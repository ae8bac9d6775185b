//! The tunnel's framing: a 2-byte big-endian length, then that many bytes,
//! as the Noise spec recommends for stream transports.

use super::TunnelError;

/// The largest frame body: what a 2-byte length can say.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// An incremental reader of 2-byte-length frames. It buffers at most one
/// frame (64 KiB) and never consumes bytes past the frame it returns.
#[derive(Debug, Clone)]
pub struct FrameReader {
    len: [u8; 2],
    have_len: usize,
    body: Vec<u8>,
    want: Option<usize>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self {
            len: [0; 2],
            have_len: 0,
            body: Vec::new(),
            want: None,
        }
    }

    /// Consume bytes from `input` up to the end of the current frame.
    /// Returns the bytes used and whether a frame is complete; read it with
    /// [`FrameReader::frame`] and then call [`FrameReader::clear`].
    pub fn push(&mut self, input: &[u8]) -> (usize, bool) {
        let mut used = 0;
        if self.is_complete() {
            return (0, true);
        }
        while self.want.is_none() {
            let Some(&byte) = input.get(used) else {
                return (used, false);
            };
            self.len[self.have_len] = byte;
            self.have_len += 1;
            used += 1;
            if self.have_len == 2 {
                let len = usize::from(u16::from_be_bytes(self.len));
                self.want = Some(len);
                self.body.clear();
                self.body.reserve_exact(len);
            }
        }
        let want = self.want.unwrap_or(0);
        let take = (want - self.body.len()).min(input.len() - used);
        self.body.extend_from_slice(&input[used..used + take]);
        used += take;
        (used, self.is_complete())
    }

    /// Whether a whole frame is buffered.
    pub fn is_complete(&self) -> bool {
        self.want == Some(self.body.len())
    }

    /// Whether part of a frame has been consumed.
    pub fn is_mid_frame(&self) -> bool {
        self.have_len > 0 && !self.is_complete()
    }

    /// The complete frame's body.
    pub fn frame(&self) -> &[u8] {
        &self.body
    }

    /// Forget the complete frame, keeping the buffer for the next one.
    pub fn clear(&mut self) {
        self.have_len = 0;
        self.want = None;
        self.body.clear();
    }
}

/// Append a frame holding `parts` concatenated.
pub(crate) fn write_frame(out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), TunnelError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u16::try_from(len).map_err(|_| TunnelError::Buffer)?;
    out.extend_from_slice(&len.to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stream that ends between frames is whole; one that ends inside a
    /// frame's length or body is cut (the tunnel's reader tells the two
    /// apart by this).
    #[test]
    fn mid_frame_is_any_consumed_part_of_an_incomplete_frame() {
        let mut reader = FrameReader::new();
        assert!(!reader.is_mid_frame(), "nothing consumed");
        assert_eq!(reader.push(&[0]), (1, false));
        assert!(reader.is_mid_frame(), "half a length");
        assert_eq!(reader.push(&[3, 7]), (2, false));
        assert!(reader.is_mid_frame(), "a length and part of the body");
        assert_eq!(reader.push(&[8, 9, 10]), (2, true));
        assert!(!reader.is_mid_frame(), "a whole frame");
        reader.clear();
        assert!(!reader.is_mid_frame(), "between frames");
        // An empty frame is whole as soon as its length is.
        assert_eq!(reader.push(&[0, 0]), (2, true));
        assert!(!reader.is_mid_frame());
    }

    proptest! {
        #[test]
        fn frames_survive_any_chunking(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
            chunk in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for body in &bodies {
                write_frame(&mut stream, &[body]).unwrap();
            }
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let end = (pos + chunk).min(stream.len());
                let mut slice = &stream[pos..end];
                while !slice.is_empty() {
                    let (used, done) = reader.push(slice);
                    assert!(used > 0 || done, "a reader given bytes makes progress");
                    slice = &slice[used..];
                    pos += used;
                    if done {
                        got.push(reader.frame().to_vec());
                        reader.clear();
                        prop_assert!(got.len() <= bodies.len(), "no more frames than were sent");
                    }
                }
            }
            prop_assert_eq!(got, bodies);
        }
    }
}
