//! [`RelayClient`]: a node's side of one connection to a relay, sans-IO:
//! TLS (rustls, driven without a socket) and the relay's frames.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::frame::{CloseReason, MAX_RELAYED_DATAGRAM, RelayFrame};
use super::tls;
use crate::RemoteIdentity;
use crate::codec::FrameDecoder;
use crate::node::TlsSetupError;

/// What a relay connection brought.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayClientEvent {
    /// TLS is done: the relay proved the pinned identity and accepted the
    /// node's (it may still refuse it with a `Close` frame).
    Connected,
    /// Where the relay sees this connection come from.
    ObservedAddr(SocketAddr),
    /// A datagram another node sent through the relay.
    Datagram {
        /// The sender, as its TLS certificate proved it to the relay.
        from: RemoteIdentity,
        /// The datagram, unchanged.
        datagram: Bytes,
    },
    /// A node this one sent to is not connected to the relay.
    PeerGone(RemoteIdentity),
    /// The relay answered a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// Why a relay connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The TLS handshake or a TLS record failed: for example the relay did
    /// not prove the identity it was pinned to.
    #[error("TLS with the relay failed: {0}")]
    Tls(String),
    /// The relay sent something the protocol does not allow.
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
    /// The relay closed the connection, saying why.
    #[error("the relay closed the connection: {0}")]
    Closed(CloseReason),
    /// The connection ended without a reason (TCP closed or failed).
    #[error("the connection to the relay ended")]
    ConnectionLost,
    /// The relay did not finish the handshake or answer a ping in time.
    #[error("the relay did not answer in time")]
    Timeout,
    /// The relay could not be reached (the TCP connection failed).
    #[error("could not reach the relay: {0}")]
    Unreachable(String),
    /// A limit of this node was reached (how many relays it uses, how
    /// many relayed paths it remembers).
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
}

/// A node's side of one connection to a relay. The caller moves bytes
/// between it and a TCP connection: [`handle_bytes`](Self::handle_bytes)
/// with what was read, and writes what [`poll_write`](Self::poll_write)
/// gives. Bounded: at most `max_queued` bytes wait to be written (datagrams
/// beyond are dropped, as a full link drops them), and what was read is
/// decoded at once.
#[derive(Debug)]
pub struct RelayClient {
    relay: RemoteIdentity,
    tls: rustls::ClientConnection,
    decoder: FrameDecoder,
    connected: bool,
    /// Frames not yet handed to TLS: they are encrypted together when
    /// `poll_write` is called, in records of up to 16 KiB rather than one
    /// record per datagram.
    plaintext: Vec<u8>,
    /// Bytes queued (frames and TLS) that `poll_write` has not taken yet.
    queued: usize,
    max_queued: usize,
    events: VecDeque<RelayClientEvent>,
    failed: Option<RelayError>,
}

impl RelayClient {
    /// A connection to the relay `relay` (pinned), as the node `config`
    /// was made for (see [`client_config`](Self::client_config)).
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        relay: RemoteIdentity,
        max_queued: usize,
    ) -> Result<Self, TlsSetupError> {
        let mut tls = rustls::ClientConnection::new(config, tls::server_name(&relay)?)?;
        // Whole frames or nothing: the queue is bounded here instead.
        tls.set_buffer_limit(None);
        Ok(Self {
            relay,
            tls,
            decoder: RelayFrame::decoder(),
            connected: false,
            plaintext: Vec::new(),
            queued: 0,
            max_queued,
            events: VecDeque::new(),
            failed: None,
        })
    }

    /// The TLS configuration for a node's relay connections.
    pub fn client_config(
        node: &crate::Identity,
    ) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        tls::client_config(node)
    }

    /// The relay this connection is pinned to.
    pub fn relay(&self) -> RemoteIdentity {
        self.relay
    }

    /// Whether TLS is done (the relay is proven).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Bytes read from the connection. An error ends the connection: the
    /// caller closes it (after writing what [`poll_write`](Self::poll_write)
    /// still gives, which may be a TLS alert).
    pub fn handle_bytes(&mut self, mut bytes: &[u8]) -> Result<(), RelayError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = (|| {
            while !bytes.is_empty() {
                self.tls
                    .read_tls(&mut bytes)
                    .map_err(|e| RelayError::Tls(e.to_string()))?;
                self.tls
                    .process_new_packets()
                    .map_err(|e| RelayError::Tls(e.to_string()))?;
                if !self.connected && !self.tls.is_handshaking() {
                    if self.tls.alpn_protocol() != Some(tls::RELAY_ALPN) {
                        return Err(RelayError::Tls("the relay chose no relay protocol".into()));
                    }
                    self.connected = true;
                    self.events.push_back(RelayClientEvent::Connected);
                }
                self.read_plaintext()?;
            }
            Ok(())
        })();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    fn read_plaintext(&mut self) -> Result<(), RelayError> {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.tls.reader().read(&mut buf) {
                Ok(0) => return Err(RelayError::ConnectionLost),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(RelayError::ConnectionLost),
            };
            let mut input = &buf[..n];
            while !input.is_empty() {
                let decoded = self
                    .decoder
                    .decode(input)
                    .map_err(|e| RelayError::Protocol(e.to_string()))?;
                input = &input[decoded.consumed..];
                if let Some(body) = decoded.frame {
                    self.handle_frame(&body)?;
                }
            }
        }
    }

    fn handle_frame(&mut self, body: &Bytes) -> Result<(), RelayError> {
        let frame = RelayFrame::from_body(body).map_err(|e| RelayError::Protocol(e.to_string()))?;
        let event = match frame {
            RelayFrame::Recv { from, datagram } => RelayClientEvent::Datagram { from, datagram },
            RelayFrame::PeerGone { identity } => RelayClientEvent::PeerGone(identity),
            RelayFrame::ObservedAddr { addr } => RelayClientEvent::ObservedAddr(addr),
            RelayFrame::Pong { nonce } => RelayClientEvent::Pong { nonce },
            RelayFrame::Ping { nonce } => {
                self.write_frame(&RelayFrame::Pong { nonce }, true);
                return Ok(());
            }
            RelayFrame::Close { reason } => return Err(RelayError::Closed(reason)),
            RelayFrame::Send { .. } => {
                return Err(RelayError::Protocol("a relay sent a Send frame".into()));
            }
        };
        self.events.push_back(event);
        Ok(())
    }

    /// The next thing the relay said.
    pub fn poll_event(&mut self) -> Option<RelayClientEvent> {
        self.events.pop_front()
    }

    /// Send `datagram` to the node `to` through the relay; `false` if it
    /// was dropped (not connected yet, too large, or the queue is full).
    pub fn send_datagram(&mut self, to: RemoteIdentity, datagram: Bytes) -> bool {
        if !self.connected || datagram.len() > MAX_RELAYED_DATAGRAM {
            return false;
        }
        self.write_frame(&RelayFrame::Send { to, datagram }, false)
    }

    /// Ping the relay (answered by [`RelayClientEvent::Pong`]).
    pub fn ping(&mut self, nonce: u64) -> bool {
        self.connected && self.write_frame(&RelayFrame::Ping { nonce }, true)
    }

    fn write_frame(&mut self, frame: &RelayFrame, always: bool) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let Ok(bytes) = frame.to_bytes() else {
            return false;
        };
        if !always && self.queued + bytes.len() > self.max_queued {
            return false;
        }
        self.plaintext.extend_from_slice(&bytes);
        self.queued += bytes.len();
        true
    }

    /// Whether there are bytes to write.
    pub fn wants_write(&self) -> bool {
        !self.plaintext.is_empty() || self.tls.wants_write()
    }

    /// Append the bytes to write to the connection to `buf`.
    pub fn poll_write(&mut self, buf: &mut Vec<u8>) {
        // Without a buffer limit rustls takes all of it; before the
        // handshake is done it holds the frames until it is.
        if !self.plaintext.is_empty() && self.tls.writer().write_all(&self.plaintext).is_ok() {
            self.plaintext.clear();
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.queued = 0;
    }

    /// Close the connection politely (a TLS close_notify to write).
    pub fn close(&mut self) {
        if self.tls.writer().write_all(&self.plaintext).is_ok() {
            self.plaintext.clear();
        }
        self.tls.send_close_notify();
    }
}
