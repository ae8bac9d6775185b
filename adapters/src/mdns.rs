//! The mDNS sockets: 224.0.0.251:5353 and [ff02::fb]:5353, shared with other
//! responders on the machine (Avahi, Bonjour) through SO_REUSEADDR and
//! SO_REUSEPORT, joined on every non-loopback interface. Packets go to and
//! from the sans-IO [`Discovery`]; nothing here decides anything.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pos_p2p_protocol::discovery::{
    Destination, Discovery, DiscoveryTransmit, MAX_PACKET_LEN, MDNS_IPV4, MDNS_IPV6, MDNS_PORT,
};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::runtime::{Interest, Runtime, UdpIo};

/// How often the interfaces are looked at again, for new addresses.
const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// How long after a link or address change the interfaces are listed.
const RESCAN_SETTLE: Duration = Duration::from_millis(250);
/// How many packets one driver turn reads per socket.
const PACKETS_PER_TURN: usize = 64;

#[derive(Debug)]
struct MdnsSocket {
    io: Box<dyn UdpIo>,
    /// A second handle on the same socket, for per-packet options.
    raw: UdpSocket,
    v6: bool,
    /// Where multicasts go out: one address per IPv4 interface (with its
    /// index, when known), or IPv6 interface indexes.
    ifaces: Vec<V4Iface>,
    v6_ifaces: Vec<u32>,
}

impl MdnsSocket {
    fn has_v4(&self, iface: &if_addrs::Interface, ip: Ipv4Addr) -> bool {
        self.ifaces
            .iter()
            .any(|(index, joined)| *joined == ip || (index.is_some() && *index == iface.index))
    }
}

/// The sockets, and what the node advertises.
#[derive(Debug)]
pub(crate) struct Mdns {
    sockets: Vec<MdnsSocket>,
    buf: Vec<u8>,
    /// Where the node's QUIC sockets listen.
    listen: Vec<SocketAddr>,
    /// The interfaces as last listed.
    ifaces: Vec<if_addrs::Interface>,
    next_scan: Instant,
    /// Readable when a link or an address changes (Linux), with a second
    /// handle for reading.
    routes: Option<(Box<dyn UdpIo>, UdpSocket)>,
    /// Packets read, waiting to be handed to discovery.
    inbox: Vec<(SocketAddr, Vec<u8>)>,
    /// Packets discovery wants sent.
    outbox: Vec<DiscoveryTransmit>,
}

/// The interfaces worth using: with an address (IPv6 link-local ones
/// included: an interface with nothing else is still on a link, and mDNS
/// over IPv6 works there), not loopback. Called
/// without the shared lock held: listing them can take a while.
pub(crate) fn interfaces() -> Vec<if_addrs::Interface> {
    match if_addrs::get_if_addrs() {
        Ok(ifaces) => ifaces.into_iter().filter(|i| !i.is_loopback()).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list network interfaces");
            Vec::new()
        }
    }
}

/// The addresses the node's sockets (`listen`, the first one's port) have
/// on `ifaces`: a socket bound to an unspecified address covers every
/// interface address of its family.
pub(crate) fn interface_addrs(
    listen: &[SocketAddr],
    ifaces: &[if_addrs::Interface],
) -> Vec<SocketAddr> {
    let Some(port) = listen.first().map(SocketAddr::port) else {
        return Vec::new();
    };
    let mut addrs = Vec::new();
    for listen in listen.iter().filter(|a| a.port() == port) {
        for iface in ifaces {
            let ip = iface.ip();
            let covered = if listen.ip().is_unspecified() {
                ip.is_ipv4() == listen.is_ipv4()
            } else {
                ip == listen.ip()
            };
            if covered && !addrs.contains(&SocketAddr::new(ip, port)) {
                addrs.push(SocketAddr::new(ip, port));
            }
        }
    }
    addrs
}

/// An IPv4 interface the group was joined on: its index (when known) and
/// the address multicasts go out from.
type V4Iface = (Option<u32>, Ipv4Addr);

/// An mDNS socket of one family, bound to port 5353 and shared with the
/// machine's other responders. It joins the group in [`Mdns::rescan`], the
/// one place that looks at interfaces.
fn open_socket(v6: bool) -> io::Result<UdpSocket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    share(&socket)?;
    socket.set_nonblocking(true)?;
    if v6 {
        socket.set_only_v6(true)?;
        socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, MDNS_PORT)).into())?;
        socket.set_multicast_loop_v6(true)?;
        socket.set_multicast_hops_v6(255)?;
    } else {
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(255)?;
    }
    Ok(socket.into())
}

/// Let other mDNS responders bind port 5353 too.
fn share(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    Ok(())
}

impl Mdns {
    /// Open the sockets; `None` (with a warning) if neither family works.
    pub(crate) fn open(
        runtime: &dyn Runtime,
        listen: Vec<SocketAddr>,
        now: Instant,
    ) -> Option<Self> {
        let mut sockets = Vec::new();
        for v6 in [false, true] {
            let family = if v6 { "IPv6" } else { "IPv4" };
            let opened = open_socket(v6).and_then(|s| Ok((s.try_clone()?, s)));
            match opened.and_then(|(raw, socket)| Ok((raw, runtime.wrap_udp(socket)?))) {
                Ok((raw, io)) => sockets.push(MdnsSocket {
                    io,
                    raw,
                    v6,
                    ifaces: Vec::new(),
                    v6_ifaces: Vec::new(),
                }),
                Err(error) => tracing::warn!(%error, "cannot open the {family} mDNS socket"),
            }
        }
        if sockets.is_empty() {
            tracing::warn!("LAN discovery is unavailable: no mDNS socket could be opened");
            return None;
        }
        let routes = crate::routes::watch()
            .and_then(|socket| Ok((runtime.wrap_udp(socket.try_clone()?)?, socket)))
            .map_err(|error| {
                tracing::debug!(%error, "no address change notifications: interfaces are scanned every 30 s");
            })
            .ok();
        Some(Self {
            routes,
            sockets,
            // One byte more than the limit, so that an oversized datagram
            // arrives whole enough to be refused for its size.
            buf: vec![0; MAX_PACKET_LEN + 1],
            inbox: Vec::new(),
            outbox: Vec::new(),
            listen,
            ifaces: Vec::new(),
            // The first driver turn lists the interfaces and joins the group.
            next_scan: now,
        })
    }

    /// The addresses to advertise: the QUIC sockets' addresses with the
    /// first socket's port (an SRV record has one port; the default IPv6
    /// socket shares the IPv4 port), an unspecified address standing for
    /// every interface address of its family.
    pub(crate) fn advertised(&self) -> Vec<SocketAddr> {
        interface_addrs(&self.listen, &self.ifaces)
    }

    /// Take a fresh list of the interfaces (see [`Mdns::scan_due`]) and join
    /// the group on new ones (system calls: the driver calls this without
    /// the node's lock, then gives discovery [`Mdns::advertised`]).
    pub(crate) fn rescan(&mut self, now: Instant, ifaces: Vec<if_addrs::Interface>) {
        self.next_scan = now + RESCAN_INTERVAL;
        for socket in &mut self.sockets {
            // Interfaces that went away first: multicasts no longer go
            // there, and an interface whose IPv4 address changed is joined
            // again with its new one. An interface keeps its IPv6 link-local
            // address when its other addresses go, so it stays in the IPv6
            // group and the goodbye for a last address goes out there.
            socket.ifaces.retain(|(index, ip)| {
                ifaces
                    .iter()
                    .any(|i| i.ip() == IpAddr::V4(*ip) && (index.is_none() || i.index == *index))
            });
            socket
                .v6_ifaces
                .retain(|index| ifaces.iter().any(|i| i.index == Some(*index)));
            let sock = SockRef::from(&socket.raw);
            for iface in &ifaces {
                match (iface.ip(), socket.v6, iface.index) {
                    (IpAddr::V4(ip), false, index)
                        if !socket.has_v4(iface, ip)
                            && joined(sock.join_multicast_v4(&MDNS_IPV4, &ip), iface) =>
                    {
                        socket.ifaces.push((index, ip));
                    }
                    (IpAddr::V6(_), true, Some(index))
                        if !socket.v6_ifaces.contains(&index)
                            && joined(sock.join_multicast_v6(&MDNS_IPV6, index), iface) =>
                    {
                        socket.v6_ifaces.push(index);
                    }
                    _ => {}
                }
            }
        }
        self.ifaces = ifaces;
    }

    /// When [`Mdns::rescan`] wants to run.
    pub(crate) fn next_scan(&self) -> Instant {
        self.next_scan
    }

    /// Whether the interfaces are due to be listed again.
    pub(crate) fn scan_due(&self, now: Instant) -> bool {
        now >= self.next_scan
    }

    /// Whether `ip` is on a link of ours (RFC 6762 §11: mDNS is link-local;
    /// anything else is spoofed or routed and is dropped): an IPv6
    /// link-local address, or an address in the subnet of one of our
    /// interface addresses.
    fn on_link(&self, ip: IpAddr) -> bool {
        if let IpAddr::V6(v6) = ip
            && (v6.segments()[0] & 0xffc0) == 0xfe80
        {
            return true;
        }
        self.ifaces.iter().any(|iface| match (&iface.addr, ip) {
            (if_addrs::IfAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::from(net.netmask);
                u32::from(net.ip) & mask == u32::from(ip) & mask
            }
            (if_addrs::IfAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::from(net.netmask);
                u128::from(net.ip) & mask == u128::from(ip) & mask
            }
            _ => false,
        })
    }

    /// Feed what arrived to discovery; `true` if the turn budget ran out.
    /// Read what the sockets have into the inbox (outside the node's lock);
    /// packets from off the link are dropped here. `true` if the turn's
    /// budget ran out.
    pub(crate) fn receive(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        self.watch_routes(cx, now);
        let mut busy = false;
        for socket in &self.sockets {
            let mut count = 0;
            loop {
                if count == PACKETS_PER_TURN {
                    busy = true;
                    break;
                }
                let mut from = None;
                let result = socket.io.try_io(Interest::Read, &mut || {
                    let (len, addr) = socket.raw.recv_from(&mut self.buf)?;
                    from = Some(addr);
                    Ok(len)
                });
                match (result, from) {
                    (Ok(len), Some(from)) => {
                        count += 1;
                        if self.on_link(from.ip()) {
                            self.inbox.push((from, self.buf[..len].to_vec()));
                        } else {
                            tracing::trace!(%from, "mDNS packet from off the link dropped");
                        }
                    }
                    (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => {
                        match socket.io.poll_ready(cx, Interest::Read) {
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(error)) => {
                                tracing::warn!(%error, "mDNS socket not readable");
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    (result, _) => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "mDNS receive failed");
                        }
                        count += 1;
                    }
                }
            }
        }
        busy
    }

    /// Drain the change notifications; after any, the interfaces are
    /// listed again [`RESCAN_SETTLE`] later (a change comes as a burst of
    /// messages, and link events can be frequent: one scan for them all).
    /// The driver's timer includes [`Mdns::next_scan`].
    fn watch_routes(&mut self, cx: &mut Context<'_>, now: Instant) {
        let Some((io, raw)) = &self.routes else {
            return;
        };
        let mut changed = false;
        let mut broken = false;
        for _ in 0..PACKETS_PER_TURN {
            match io.try_io(Interest::Read, &mut || raw.recv(&mut self.buf)) {
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match io.poll_ready(cx, Interest::Read) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) | Poll::Pending => break,
                    }
                }
                // ENOBUFS: notifications were lost, so something changed.
                Err(e) if crate::routes::overflowed(&e) => changed = true,
                Err(error) => {
                    tracing::debug!(%error, "address change notifications failed: scanning every 30 s");
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            self.routes = None;
        }
        if changed {
            let soon = now + RESCAN_SETTLE;
            if soon < self.next_scan {
                tracing::debug!("a link or an address changed: listing the interfaces");
                self.next_scan = soon;
            }
        }
    }

    /// Hand the packets read to discovery, and take what it wants sent
    /// (under the node's lock; no socket calls).
    pub(crate) fn exchange(&mut self, discovery: &mut Discovery, now: Instant) {
        for (from, packet) in self.inbox.drain(..) {
            discovery.handle_packet(now, from, &packet);
        }
        self.inbox.shrink_to(PACKETS_PER_TURN);
        while let Some(transmit) = discovery.poll_transmit() {
            self.outbox.push(transmit);
        }
    }

    /// Send what discovery wanted sent (outside the node's lock). mDNS
    /// tolerates loss: a packet the socket refuses now is dropped, not
    /// queued.
    pub(crate) fn send(&mut self) {
        for transmit in self.outbox.drain(..) {
            for socket in &self.sockets {
                let sock = SockRef::from(&socket.raw);
                match transmit.destination {
                    Destination::Multicast if socket.v6 => {
                        let group = SocketAddr::from((MDNS_IPV6, MDNS_PORT));
                        for index in &socket.v6_ifaces {
                            let sent = sock
                                .set_multicast_if_v6(*index)
                                .and_then(|()| socket.raw.send_to(&transmit.payload, group));
                            log_send(sent, group);
                        }
                    }
                    Destination::Multicast => {
                        let group = SocketAddr::from((MDNS_IPV4, MDNS_PORT));
                        for (_, ip) in &socket.ifaces {
                            let sent = sock
                                .set_multicast_if_v4(ip)
                                .and_then(|()| socket.raw.send_to(&transmit.payload, group));
                            log_send(sent, group);
                        }
                    }
                    Destination::Unicast(to) if to.is_ipv6() == socket.v6 => {
                        log_send(socket.raw.send_to(&transmit.payload, to), to);
                    }
                    Destination::Unicast(_) => {}
                }
            }
        }
    }
}

/// A join succeeded, or the membership survived from before (an address
/// that went away and came back on a device that stayed).
fn joined(result: io::Result<()>, iface: &if_addrs::Interface) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => true,
        Err(error) => {
            tracing::debug!(%error, iface = %iface.name, "cannot join the mDNS group");
            false
        }
    }
}

fn log_send(result: io::Result<usize>, to: SocketAddr) {
    if let Err(error) = result {
        tracing::debug!(%error, %to, "mDNS send failed");
    }
}
