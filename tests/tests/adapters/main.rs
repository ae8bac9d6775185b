//! The async API over real sockets on loopback, under every runtime.

mod abuse;
mod clock;
mod common;
mod dial;
mod failures;
mod guide;
mod load;
mod manual;
mod router;
mod runtimes;
mod transfer;
mod tunnel;
