//! Per-connection state and the control stream's send side.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::ConnectionHandle;

use super::hello::{ControlMessage, Hello};
use super::{ConnectionId, Direction, NodeConfig};
use crate::RemoteIdentity;
use crate::codec::FrameDecoder;

/// The phase of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// TLS and the Hello exchange are under way.
    Handshaking,
    /// Both Hellos were accepted.
    Established,
    /// Closed or lost; waiting for QUIC to drain it.
    Closed,
}

/// Per application stream: which halves are still open, so that a drained
/// duplicate connection can be closed once it carries nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StreamHalves {
    pub(super) send_done: bool,
    pub(super) recv_done: bool,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: ConnectionId,
    pub(super) handle: ConnectionHandle,
    pub(super) quic: quinn_proto::Connection,
    pub(super) direction: Direction,
    pub(super) addr: SocketAddr,
    pub(super) expected: Option<RemoteIdentity>,
    pub(super) remote: Option<RemoteIdentity>,
    pub(super) phase: Phase,
    pub(super) control: Option<quinn_proto::StreamId>,
    pub(super) control_decoder: FrameDecoder,
    /// Control-stream bytes not yet accepted by flow control.
    pub(super) control_out: VecDeque<Bytes>,
    pub(super) local_hello_sent: bool,
    pub(super) remote_hello: Option<Hello>,
    pub(super) handshake_deadline: Option<Instant>,
    /// Peer-opened streams that arrived before the connection was
    /// established; announced when it is.
    pub(super) early_streams: Vec<quinn_proto::StreamId>,
    pub(super) streams: BTreeMap<quinn_proto::StreamId, StreamHalves>,
    /// Another connection to the same peer is kept: open no streams here,
    /// close once the open ones are done.
    pub(super) superseded: bool,
    /// The peer's `Superseded`: how many streams it opened here in all.
    pub(super) peer_superseded: Option<u64>,
    /// Application streams this node opened here.
    pub(super) opened: u64,
    /// Application streams the peer opened here that were accepted.
    pub(super) accepted: u64,
    /// A Goodbye was sent; the QUIC close (code, reason) follows once the
    /// peer acknowledged it, or at the deadline.
    pub(super) pending_close: Option<(u64, Bytes, Instant)>,
    /// The peer's Goodbye, which explains its close better than the close
    /// frame can during the handshake.
    pub(super) peer_goodbye: Option<(u64, Bytes)>,
    /// When `handle_timeout` is next due for this connection, as of the
    /// last time it rested (see `Node::active`).
    pub(super) deadline: Option<Instant>,
    /// Whether the Hello exchange ever completed.
    pub(super) was_established: bool,
}

/// Queue this node's Hello on the control stream.
pub(super) fn send_hello(conn: &mut Conn, config: &NodeConfig) {
    let hello = ControlMessage::Hello(Hello {
        versions: config.versions.clone(),
        app_name: config.app_name.clone(),
        metadata: config.metadata.clone(),
    });
    conn.control_out.push_back(hello.to_frame());
    conn.local_hello_sent = true;
    flush_control(conn);
}

/// Write queued control bytes as far as flow control allows.
pub(super) fn flush_control(conn: &mut Conn) {
    let Some(control) = conn.control else {
        return;
    };
    while let Some(front) = conn.control_out.front_mut() {
        match conn.quic.send_stream(control).write(front) {
            Ok(n) if n == front.len() => {
                conn.control_out.pop_front();
            }
            Ok(n) => {
                bytes::Buf::advance(front, n);
                return;
            }
            Err(_) => return,
        }
    }
}
