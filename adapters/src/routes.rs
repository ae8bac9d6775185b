//! Notifications of address and link changes, so that discovery looks at
//! the interfaces at once rather than at its next periodic scan (30 s).
//! Linux: an rtnetlink socket subscribed to link and address changes; any
//! message means "rescan" (the scan itself reads the interface list).
//! Elsewhere there is none, and the periodic scan is all there is.

use std::io;
use std::net::UdpSocket;

/// A socket that becomes readable when a link or an address changes. It is
/// a netlink socket wrapped as a `UdpSocket` so that the runtimes can
/// register it (they only need its file descriptor); only `recv` is used.
#[cfg(target_os = "linux")]
pub(crate) fn watch() -> io::Result<UdpSocket> {
    use nix::libc::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket,
    };
    use std::os::fd::AsRawFd;

    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let groups = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) as u32;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(UdpSocket::from(fd))
}

/// Whether a read failed because notifications were lost (the socket's
/// buffer overflowed): something changed, and the socket still works.
#[cfg(target_os = "linux")]
pub(crate) fn overflowed(error: &io::Error) -> bool {
    error.raw_os_error() == Some(nix::libc::ENOBUFS)
}

/// Whether a read failed because notifications were lost (never, here).
#[cfg(not(target_os = "linux"))]
pub(crate) fn overflowed(_: &io::Error) -> bool {
    false
}

/// No change notifications on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn watch() -> io::Result<UdpSocket> {
    Err(io::ErrorKind::Unsupported.into())
}
