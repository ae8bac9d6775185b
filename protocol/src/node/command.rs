//! The node's connection commands: dial one address, close a peer,
//! change metadata, shut down.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::conn::flush_control;
use super::hello::{ControlMessage, close_code};
use super::{ConnectError, ConnectionId, Direction, DisconnectReason, Node, tls};
use crate::RemoteIdentity;
use crate::metadata::Metadata;

impl Node {
    /// Dial `addr`. With `expected`, the connection fails with
    /// [`DisconnectReason::IdentityMismatch`] unless that node answers.
    /// Progress is reported by events: [`Event::Connected`](super::Event::Connected) or
    /// [`Event::ConnectFailed`](super::Event::ConnectFailed). A dialed connection is one the application
    /// asked for: it is never evicted (see [`Limits`](super::Limits)).
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<RemoteIdentity>,
    ) -> Result<ConnectionId, ConnectError> {
        self.advance(now);
        if self.shutting_down {
            return Err(ConnectError::ShuttingDown);
        }
        // The application asked for this connection: only the memory
        // ceiling refuses it.
        if self.conns.len() >= self.connection_ceiling() {
            return Err(ConnectError::TooManyConnections);
        }
        let (client_config, server_name) = match &expected {
            Some(identity) => (
                self.pinned_client_config.clone(),
                tls::server_name(identity),
            ),
            None => (self.client_config.clone(), tls::SERVER_NAME.to_owned()),
        };
        let (handle, quic) = self
            .endpoint
            .connect(now, client_config, addr, &server_name)
            .map_err(|e| match e {
                quinn_proto::ConnectError::InvalidRemoteAddress(a) => {
                    ConnectError::InvalidAddress(a)
                }
                quinn_proto::ConnectError::CidsExhausted => ConnectError::CidsExhausted,
                // A server name pos-p2p made, a version and a client
                // configuration it set: only a stopping endpoint is left.
                _ => ConnectError::EndpointStopping,
            })?;
        let deadline = now + self.config.timeouts.handshake;
        let id = self.insert_conn(now, handle, quic, Direction::Outbound, expected, deadline);
        self.process(now, id);
        Ok(id)
    }

    /// Close every connection to `peer`, telling it `reason`. Reports
    /// [`Event::Disconnected`](super::Event::Disconnected) with [`DisconnectReason::ClosedLocally`].
    pub fn close(&mut self, now: Instant, peer: &RemoteIdentity, reason: &str) {
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| c.remote.as_ref() == Some(peer))
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.close_conn(
                now,
                id,
                close_code::NORMAL,
                Bytes::copy_from_slice(reason.as_bytes()),
                DisconnectReason::ClosedLocally,
            );
        }
    }

    /// Replace this node's metadata and send it to every connected peer.
    pub fn set_metadata(&mut self, metadata: Metadata) {
        self.config.metadata = metadata.clone();
        let frame = ControlMessage::Metadata(metadata).to_frame();
        let ids: Vec<ConnectionId> = self
            .conns
            .values()
            .filter(|c| c.phase.is_established())
            .map(|c| c.id)
            .collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.control_out.push_back(frame.clone());
                flush_control(conn);
                self.active.insert(id);
            }
        }
    }

    /// Close every connection and refuse new ones. Keep driving the node
    /// until [`Node::is_idle`] so that the closes reach the peers.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        // A node that shuts down keeps no one connected.
        self.manual.clear();
        self.close_relays();
        let ids: Vec<ConnectionId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(
                now,
                id,
                close_code::SHUTDOWN,
                Bytes::from_static(b"shutting down"),
                DisconnectReason::ClosedLocally,
            );
        }
    }
}
