//! File transfer building blocks (issue 15, docs/PROTOCOL.md §11): what a
//! sender and a receiver need that does not depend on sockets or files.
//!
//! - [`tree`]: BLAKE3 verified streaming. A file's hash is its plain
//!   BLAKE3 hash (what `b3sum` prints); a file is sent in groups of
//!   [`GROUP_LEN`](tree::GROUP_LEN) bytes, and a receiver that holds the
//!   groups' chaining values (checked against the hash) verifies each
//!   group on its own as it arrives, so a corrupt group is found where it
//!   is, and a resumed transfer keeps every group it already verified.
//! - [`names`]: file names from a peer, checked before they touch a disk:
//!   no absolute paths, no `..`, no device names, nothing that means
//!   something else on another platform.
//! - [`wire`]: the messages (an offer, the receiver's answers) and the
//!   order in which the wanted pieces are sent.
//! - [`session`]: the receiver's state machine: what to ask for, what each
//!   arriving piece means, when to ask again.

pub mod names;
pub mod session;
pub mod tree;
pub mod wire;
