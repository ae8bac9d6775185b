//! The async-io runtime (the reactor of async-std and smol): the driver runs
//! on its own thread under `async_io::block_on`, with `async_io::Timer` and
//! `async_io::Async<UdpSocket>`. Nothing depends on async-std itself.

use std::io;
use std::net::UdpSocket;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Async;

use super::{Interest, Runtime, Task, TcpConnect, TcpIo, Timer, UdpIo};

#[derive(Debug)]
pub(crate) struct AsyncStd;

impl Runtime for AsyncStd {
    fn spawn(&self, task: Task) {
        // A thread of its own keeps the node independent of the executor:
        // async-io's reactor wakes tasks on any executor.
        let spawned = std::thread::Builder::new()
            .name("pos-p2p-driver".into())
            .spawn(move || async_io::block_on(task));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the pos-p2p driver thread");
        }
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        Box::pin(async_io::Timer::at(at))
    }

    fn wrap_udp(&self, socket: UdpSocket) -> io::Result<Box<dyn UdpIo>> {
        Ok(Box::new(Async::new(socket)?))
    }

    fn connect_tcp(&self, addr: std::net::SocketAddr) -> TcpConnect {
        Box::pin(async move {
            let stream = Async::<std::net::TcpStream>::connect(addr).await?;
            stream.get_ref().set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn TcpIo>)
        })
    }
}

impl TcpIo for Async<std::net::TcpStream> {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        use std::io::Read;
        loop {
            match (&mut self.get_ref()).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            std::task::ready!(self.poll_readable(cx))?;
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        use std::io::Write;
        loop {
            match (&mut self.get_ref()).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            std::task::ready!(self.poll_writable(cx))?;
        }
    }
}

impl Timer for async_io::Timer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.set_at(at);
    }

    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        std::future::Future::poll(self, cx).map(|_| ())
    }
}

impl UdpIo for Async<UdpSocket> {
    fn sock_ref(&self) -> quinn_udp::UdpSockRef<'_> {
        quinn_udp::UdpSockRef::from(self.get_ref())
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.get_ref().local_addr()
    }

    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        match interest {
            Interest::Read => self.poll_readable(cx),
            Interest::Write => self.poll_writable(cx),
        }
    }

    fn try_io(
        &self,
        _interest: Interest,
        op: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        // async-io re-arms interest on the next poll_ready after WouldBlock.
        op()
    }
}
