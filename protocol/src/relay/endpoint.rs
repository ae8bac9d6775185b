//! [`RelayEndpoint`]: a relay's TLS connections in front of its
//! [`RelayServer`], sans-IO. The relay binary accepts TCP connections and
//! moves bytes; everything else is decided here.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::CloseReason;
use super::server::{ClientId, RelayConfig, RelayServer, RelayStats};
use super::tls;
use crate::node::TlsSetupError;
use crate::{Identity, RemoteIdentity};

/// A TCP connection to the relay, as the I/O layer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// How long a connection may take to finish TLS.
pub const RELAY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections in their TLS handshake at once; more are closed at
/// once ([`RelayEndpoint::connect`] returns `None`).
pub const MAX_RELAY_HANDSHAKES: usize = 256;
/// The most bytes of frames [`RelayEndpoint::poll_write`] hands out at
/// once, so the I/O layer's buffer stays small and the server's queue
/// (bounded by [`RelayConfig::queue_bytes`]) does the bounding.
const WRITE_CHUNK: usize = 64 << 10;

#[derive(Debug)]
struct Conn {
    tls: rustls::ServerConnection,
    addr: SocketAddr,
    /// The client, once TLS proved its identity and the server accepted it.
    client: Option<ClientId>,
    /// Until when the TLS handshake may take.
    deadline: Option<Instant>,
    /// Close once what is queued is written.
    closing: bool,
    ready: bool,
}

/// A relay: TLS connections ([`RelayEndpoint::connect`],
/// [`handle_bytes`](RelayEndpoint::handle_bytes),
/// [`poll_write`](RelayEndpoint::poll_write)) in front of the forwarding
/// logic of [`RelayServer`]. Memory is bounded by [`RelayConfig`] and
/// [`MAX_RELAY_HANDSHAKES`].
#[derive(Debug)]
pub struct RelayEndpoint {
    identity: RemoteIdentity,
    tls: Arc<rustls::ServerConfig>,
    server: RelayServer,
    conns: HashMap<ConnId, Conn>,
    by_client: HashMap<ClientId, ConnId>,
    handshaking: usize,
    ready: VecDeque<ConnId>,
    next: u64,
    /// Connections refused before TLS ended (too many handshakes, failed
    /// or timed out handshakes).
    handshakes_failed: u64,
}

impl RelayEndpoint {
    /// A relay with the identity `identity` and these limits.
    pub fn new(identity: &Identity, config: RelayConfig) -> Result<Self, TlsSetupError> {
        Ok(Self {
            identity: identity.to_remote_identity(),
            tls: tls::server_config(identity)?,
            server: RelayServer::new(config),
            conns: HashMap::new(),
            by_client: HashMap::new(),
            handshaking: 0,
            ready: VecDeque::new(),
            next: 0,
            handshakes_failed: 0,
        })
    }

    /// The relay's identity, which nodes pin.
    pub fn identity(&self) -> RemoteIdentity {
        self.identity
    }

    /// A TCP connection from `addr` was accepted; `None` if too many are in
    /// their handshake already (the I/O layer closes it).
    pub fn connect(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        if self.handshaking >= MAX_RELAY_HANDSHAKES {
            self.handshakes_failed += 1;
            return None;
        }
        // Fails only with a configuration rustls rejects, which `new`
        // would have reported already.
        let Ok(mut tls) = rustls::ServerConnection::new(self.tls.clone()) else {
            return None;
        };
        // Whole frames or nothing: a partly written frame would corrupt
        // the stream. What TLS holds is bounded by the server's queues and
        // by what one `poll_write` takes (`WRITE_CHUNK`).
        tls.set_buffer_limit(None);
        let id = ConnId(self.next);
        self.next += 1;
        self.handshaking += 1;
        self.conns.insert(
            id,
            Conn {
                tls,
                addr,
                client: None,
                deadline: Some(now + RELAY_HANDSHAKE_TIMEOUT),
                closing: false,
                ready: false,
            },
        );
        Some(id)
    }

    /// Bytes read from `conn`.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, mut bytes: &[u8]) {
        let mut plaintext = Vec::new();
        while !bytes.is_empty() {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.closing {
                return;
            }
            let ok = c.tls.read_tls(&mut bytes).is_ok() && c.tls.process_new_packets().is_ok();
            if !ok {
                // rustls queued an alert, if it could: write it, then close.
                self.fail(conn);
                return;
            }
            if c.client.is_none() && !c.tls.is_handshaking() {
                self.handshake_done(now, conn);
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let mut buf = [0u8; 4096];
            loop {
                match c.tls.reader().read(&mut buf) {
                    Ok(0) => {
                        c.closing = true;
                        break;
                    }
                    Ok(n) => plaintext.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if let Some(client) = c.client
                && !plaintext.is_empty()
            {
                self.server.handle_bytes(now, client, &plaintext);
                plaintext.clear();
            }
            self.mark_ready(conn);
        }
    }

    fn handshake_done(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.deadline = None;
        self.handshaking -= 1;
        let identity = tls::peer_identity(c.tls.peer_certificates());
        // The verifier accepts only identity certificates: fail closed
        // should that ever change.
        let Some(identity) = identity else {
            c.closing = true;
            return;
        };
        match self.server.accept(now, identity, c.addr) {
            Ok(client) => {
                c.client = Some(client);
                self.by_client.insert(client, conn);
            }
            Err(reason) => {
                let refusal = RelayServer::refusal(reason);
                let _ = c.tls.writer().write_all(&refusal);
                c.tls.send_close_notify();
                c.closing = true;
            }
        }
    }

    fn fail(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.deadline.take().is_some() {
                self.handshaking -= 1;
                self.handshakes_failed += 1;
            }
            c.closing = true;
            if let Some(client) = c.client {
                self.server.remove(client);
            }
        }
        self.mark_ready(conn);
    }

    fn mark_ready(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.ready
            && (c.closing || c.tls.wants_write())
        {
            c.ready = true;
            self.ready.push_back(conn);
        }
    }

    /// Close connections whose TLS handshake took too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for conn in expired {
            self.fail(conn);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }

    /// The next connection with bytes to write or to close (each named once
    /// until it is polled again).
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        while let Some(client) = self.server.poll_ready() {
            if let Some(conn) = self.by_client.get(&client).copied()
                && let Some(c) = self.conns.get_mut(&conn)
                && !c.ready
            {
                c.ready = true;
                self.ready.push_back(conn);
            }
        }
        while let Some(conn) = self.ready.pop_front() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.ready = false;
                return Some(conn);
            }
        }
        None
    }

    /// Append what to write to `conn` to `buf` (up to a bounded chunk of
    /// frames at a time); whether the I/O layer should close it once that
    /// is written.
    pub fn poll_write(&mut self, conn: ConnId, buf: &mut Vec<u8>) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return true;
        };
        if let Some(client) = c.client {
            // Frames are encrypted together, in records of up to 16 KiB.
            let mut frames = Vec::new();
            while frames.len() < WRITE_CHUNK {
                let Some(frame) = self.server.poll_transmit(client) else {
                    break;
                };
                frames.extend_from_slice(&frame);
            }
            let taken = frames.len();
            if taken > 0 {
                let _ = c.tls.writer().write_all(&frames);
            }
            if self.server.closing(client).is_some() && !c.closing {
                // The `Close` frame was the last one queued.
                c.tls.send_close_notify();
                c.closing = true;
            }
            if taken >= WRITE_CHUNK && !c.ready {
                // More frames wait: come back.
                c.ready = true;
                self.ready.push_back(conn);
            }
        }
        while c.tls.wants_write() {
            match c.tls.write_tls(buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        c.closing
    }

    /// The TCP connection `conn` ended: forget it.
    pub fn remove(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if c.deadline.is_some() {
                self.handshaking -= 1;
            }
            if let Some(client) = c.client {
                self.by_client.remove(&client);
                self.server.remove(client);
            }
        }
    }

    /// Close every connection and refuse new ones.
    pub fn shutdown(&mut self) {
        self.server.shutdown();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            if let Some(c) = self.conns.get_mut(&conn)
                && c.client.is_none()
            {
                c.closing = true;
            }
            self.mark_ready(conn);
        }
    }

    /// Why the relay closes `conn`'s client, if it does.
    pub fn closing(&self, conn: ConnId) -> Option<CloseReason> {
        let client = self.conns.get(&conn)?.client?;
        self.server.closing(client)
    }

    /// For tests only: see [`RelayServer::misname`].
    #[cfg(feature = "deterministic")]
    pub fn misname(&mut self, actual: RemoteIdentity, claimed: RemoteIdentity) {
        self.server.misname(actual, claimed);
    }

    /// For tests and fuzzing only (the `deterministic` feature): write
    /// `bytes` to `conn`'s client as if they were frames, as a malicious
    /// relay could; `false` if the connection has no client.
    #[cfg(feature = "deterministic")]
    pub fn inject(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.client.is_none() || c.tls.writer().write_all(bytes).is_err() {
            return false;
        }
        self.mark_ready(conn);
        true
    }

    /// The forwarding logic's counters.
    pub fn stats(&self) -> RelayStats {
        self.server.stats()
    }

    /// Connections in their TLS handshake now.
    pub fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// Connections that never finished TLS (refused, failed, timed out).
    pub fn handshakes_failed(&self) -> u64 {
        self.handshakes_failed
    }

    /// TCP connections held.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}
