//! The tokio runtime: a task, `tokio::time::Sleep`, `tokio::net::UdpSocket`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::{Interest, Runtime, Task, TcpConnect, TcpIo, Timer, UdpIo};

#[derive(Debug)]
pub(crate) struct Tokio(pub(crate) tokio::runtime::Handle);

impl Runtime for Tokio {
    fn spawn(&self, task: Task) {
        self.0.spawn(task);
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        let _guard = self.0.enter();
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn UdpIo>> {
        let _guard = self.0.enter();
        Ok(Box::new(tokio::net::UdpSocket::from_std(socket)?))
    }

    fn connect_tcp(&self, addr: std::net::SocketAddr) -> TcpConnect {
        let handle = self.0.clone();
        Box::pin(async move {
            let stream = {
                let _guard = handle.enter();
                tokio::net::TcpStream::connect(addr)
            }
            .await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn TcpIo>)
        })
    }
}

impl TcpIo for tokio::net::TcpStream {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_read_ready(cx))?;
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_write_ready(cx))?;
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Timer for tokio::time::Sleep {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        tokio::time::Sleep::reset(self, at.into());
    }

    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        std::future::Future::poll(self, cx)
    }
}

impl UdpIo for tokio::net::UdpSocket {
    fn sock_ref(&self) -> quinn_udp::UdpSockRef<'_> {
        quinn_udp::UdpSockRef::from(self)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }

    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        match interest {
            Interest::Read => self.poll_recv_ready(cx),
            Interest::Write => self.poll_send_ready(cx),
        }
    }

    fn try_io(
        &self,
        interest: Interest,
        op: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let interest = match interest {
            Interest::Read => tokio::io::Interest::READABLE,
            Interest::Write => tokio::io::Interest::WRITABLE,
        };
        tokio::net::UdpSocket::try_io(self, interest, op)
    }
}
