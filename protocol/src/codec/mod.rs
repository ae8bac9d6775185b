//! The wire toolkit: primitives, [`Header`] framing and the incremental
//! [`FrameDecoder`].
//!
//! All multi-byte fixed-width integers are big-endian; lengths, counts and
//! tags are minimal LEB128 varints ([`varint`]). Every decoder takes an
//! explicit maximum for each variable-length value and checks it before
//! allocating. `docs/PROTOCOL.md` specifies the encodings byte by byte.

mod error;
mod frame;
mod header;
mod reader;
pub mod varint;
mod writer;

pub use error::{DecodeError, EncodeError, FrameError};
pub(crate) use frame::encode_frame;
pub use frame::{DEFAULT_MAX_FRAME_LEN, Decoded, FrameDecoder, decode_frame};
pub use header::Header;
pub use reader::Reader;
pub use writer::Writer;
