//! The little a runtime has to provide: spawn the driver, a resettable timer,
//! and readiness for a UDP socket. Everything else (the protocol, the I/O
//! calls themselves via quinn-udp) is shared by all runtimes.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

#[cfg(feature = "async-std")]
pub(crate) mod async_std;
#[cfg(feature = "tokio")]
pub(crate) mod tokio;

/// Which runtime drives a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeKind {
    /// tokio: the driver is a task on the current tokio runtime.
    #[cfg(feature = "tokio")]
    Tokio,
    /// async-io, the reactor under async-std and smol: the driver runs on its
    /// own thread, so the node works under async-std, smol or any executor.
    #[cfg(feature = "async-std")]
    AsyncStd,
}

/// A boxed driver task.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(crate) trait Runtime: Send + Sync + Debug + 'static {
    fn spawn(&self, task: Task);
    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>>;
    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn UdpIo>>;
    /// Open a TCP connection (to a relay).
    fn connect_tcp(&self, addr: std::net::SocketAddr) -> TcpConnect;
}

/// A TCP connection being opened.
pub(crate) type TcpConnect = Pin<Box<dyn Future<Output = io::Result<Box<dyn TcpIo>>> + Send>>;

/// A TCP connection registered with a runtime's reactor.
pub(crate) trait TcpIo: Send + Sync + Debug {
    /// Read into `buf`; `Ok(0)` at the end.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Write some of `buf`.
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
}

/// A one-shot timer that can be moved.
pub(crate) trait Timer: Send + Sync + Debug {
    fn reset(self: Pin<&mut Self>, at: Instant);
    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// Which way a socket must be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// A UDP socket registered with a runtime's reactor.
pub(crate) trait UdpIo: Send + Sync + Debug {
    /// The socket, for quinn-udp's calls.
    fn sock_ref(&self) -> quinn_udp::UdpSockRef<'_>;
    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<std::net::SocketAddr>;
    /// Ready for `interest`, or register the waker.
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>>;
    /// Run a non-blocking I/O call; a `WouldBlock` clears the readiness so
    /// that the next `poll_ready` waits for the reactor.
    fn try_io(
        &self,
        interest: Interest,
        op: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize>;
}
