//! Per-connection state and the control stream's send side.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::ConnectionHandle;

use super::header::HeaderStage;
use super::hello::{ControlMessage, Hello, MAX_CONTROL_MESSAGE_LEN};
use super::{ConnectionId, Direction, NodeConfig, SendStatus};
use crate::RemoteIdentity;
use crate::codec::FrameDecoder;

/// The phase of a connection, with what only that phase has.
#[derive(Debug)]
pub(super) enum Phase {
    /// TLS and the Hello exchange are under way.
    Handshaking(Handshake),
    /// Both Hellos were accepted (the peer's is in the node's peer table).
    Established,
    /// Closed or lost; waiting for QUIC to drain it.
    Closed,
}

/// A connection's handshake: TLS, then the Hellos.
#[derive(Debug)]
pub(super) struct Handshake {
    /// When it must be done (TLS and both Hellos), or the connection is
    /// closed.
    pub(super) deadline: Instant,
    /// This node's Hello is queued on the control stream.
    pub(super) hello_sent: bool,
    /// The peer's Hello, once accepted (and the metadata it sent since).
    pub(super) remote_hello: Option<Hello>,
    /// Peer-opened streams that arrived before the connection was
    /// established; their headers are read once it is.
    pub(super) early_streams: Vec<quinn_proto::StreamId>,
}

impl Phase {
    pub(super) fn is_handshaking(&self) -> bool {
        matches!(self, Self::Handshaking(_))
    }

    pub(super) fn is_established(&self) -> bool {
        matches!(self, Self::Established)
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// The handshake's deadline, while there is one.
    pub(super) fn handshake_deadline(&self) -> Option<Instant> {
        match self {
            Self::Handshaking(handshake) => Some(handshake.deadline),
            Self::Established | Self::Closed => None,
        }
    }
}

/// Per application stream: which halves are still open (so that a drained
/// duplicate connection can be closed once it carries nothing), and for a
/// stream the peer opened, where its header stands.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    pub(super) send_done: bool,
    pub(super) recv_done: bool,
    /// The peer stopped the sending half with this code, and it was reset
    /// in answer (RFC 9000 §3.5), so the peer gets the stream's credit back.
    pub(super) stopped: Option<u64>,
    /// The header of a peer-opened stream; `Done` for streams this node
    /// opened and once the application has read it.
    pub(super) header: HeaderStage,
    /// While the header is being received: when it must be complete.
    pub(super) header_deadline: Option<Instant>,
    /// The application finished the sending half (all that remains is the
    /// peer's acknowledgement), or released the stream altogether: a stop
    /// that arrives now ends the half, as nobody will be told of it.
    pub(super) send_finished: bool,
    /// The peer acknowledged every byte of the finished sending half.
    pub(super) acknowledged: bool,
    /// The application released the stream (its handle is gone).
    pub(super) released: bool,
}

impl StreamState {
    /// Where the sending half stands.
    pub(super) fn send_status(&self) -> SendStatus {
        match (self.stopped, self.acknowledged, self.send_done) {
            (Some(code), _, _) => SendStatus::Stopped(code),
            (None, true, _) => SendStatus::Acknowledged,
            (None, false, true) => SendStatus::Reset,
            (None, false, false) => SendStatus::Sending,
        }
    }

    /// Whether the application knows of this stream: it opened it, or the
    /// stream's header arrived and was announced.
    pub(super) fn is_known_to_app(&self) -> bool {
        !self.header.is_receiving()
    }
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
    /// When the connection started (for admission: the oldest
    /// unauthenticated handshake gives way first).
    pub(super) started: Instant,
    /// The application dialed this connection: it never gives way to
    /// newcomers.
    pub(super) protected: bool,
    /// When the application last opened a stream here: for a while after,
    /// the connection counts as wanted (see `admission`).
    pub(super) opened_at: Option<Instant>,
    /// When a stream the application knows of last opened or ended here
    /// (for admission: the connection idle longest gives way first).
    pub(super) last_activity: Instant,
    pub(super) control: Option<quinn_proto::StreamId>,
    pub(super) control_decoder: FrameDecoder,
    /// Control-stream bytes not yet accepted by flow control.
    pub(super) control_out: VecDeque<Bytes>,
    pub(super) streams: BTreeMap<quinn_proto::StreamId, StreamState>,
    /// Bytes of header budget held by streams whose header is being
    /// received or waits to be read (see `header`).
    pub(super) header_reserved: usize,
    /// Streams whose header body waits for budget, in the order they came.
    pub(super) header_waiting: BTreeSet<quinn_proto::StreamId>,
    /// Header deadlines of the streams still receiving one.
    pub(super) header_deadlines: BTreeSet<(Instant, quinn_proto::StreamId)>,
    /// Another connection to the same peer is kept: open no streams here,
    /// close once the open ones are done.
    pub(super) superseded: bool,
    /// The peer's `Superseded`: how many streams it opened here in all.
    pub(super) peer_superseded: Option<u64>,
    /// When a superseded connection is closed even though the peer has not
    /// given it up (its `Superseded` or some of the streams it counted
    /// never came).
    pub(super) superseded_deadline: Option<Instant>,
    /// When this drained duplicate is closed (see `DRAIN_GRACE`).
    pub(super) drained_close_at: Option<Instant>,
    /// Application streams this node opened here.
    pub(super) opened: u64,
    /// Application streams the peer opened here that were accepted.
    pub(super) accepted: u64,
    /// How the sending half ended, for streams the application still holds
    /// whose state is gone (both halves done): what `Node::send_status`
    /// answers until the application releases them.
    pub(super) ended_sends: BTreeMap<quinn_proto::StreamId, SendStatus>,
    /// A Goodbye was sent; the QUIC close (code, reason) follows once the
    /// peer acknowledged it, or at the deadline.
    pub(super) pending_close: Option<(u64, Bytes, Instant)>,
    /// The peer's Goodbye, which explains its close better than the close
    /// frame can during the handshake.
    pub(super) peer_goodbye: Option<(u64, Bytes)>,
    /// When `handle_timeout` is next due for this connection, as of the
    /// last time it rested (see `Node::active`).
    pub(super) deadline: Option<Instant>,
    /// Addresses of the peer pinged for this (relayed) connection (§10.9),
    /// and when, within the punch window.
    pub(super) punched: Vec<(SocketAddr, Instant)>,
    /// A relayed connection's direct route (§10.9).
    pub(super) route: Option<Box<super::route::Route>>,
    /// The connection's tracing span: its id, direction and path, and the
    /// peer once TLS proved it. Entered while the node works on it.
    pub(super) span: tracing::Span,
}

impl Conn {
    pub(super) fn new(
        id: ConnectionId,
        handle: ConnectionHandle,
        quic: quinn_proto::Connection,
        direction: Direction,
        expected: Option<RemoteIdentity>,
        now: Instant,
        handshake_deadline: Instant,
    ) -> Self {
        let addr = quic.remote_address();
        Self {
            id,
            handle,
            addr,
            quic,
            direction,
            expected,
            remote: None,
            phase: Phase::Handshaking(Handshake {
                deadline: handshake_deadline,
                hello_sent: false,
                remote_hello: None,
                early_streams: Vec::new(),
            }),
            started: now,
            protected: direction == Direction::Outbound,
            opened_at: None,
            last_activity: now,
            control: None,
            control_decoder: FrameDecoder::with_max_frame_len(MAX_CONTROL_MESSAGE_LEN),
            control_out: VecDeque::new(),
            streams: BTreeMap::new(),
            header_reserved: 0,
            header_waiting: BTreeSet::new(),
            header_deadlines: BTreeSet::new(),
            superseded: false,
            peer_superseded: None,
            superseded_deadline: None,
            drained_close_at: None,
            opened: 0,
            accepted: 0,
            ended_sends: BTreeMap::new(),
            pending_close: None,
            peer_goodbye: None,
            deadline: None,
            punched: Vec::new(),
            route: None,
            // Set by `Node::insert_conn`, inside the node's span.
            span: tracing::Span::none(),
        }
    }

    /// Where this (relayed) connection's datagrams go instead of its
    /// relay, if it has a direct route (§10.9).
    pub(super) fn direct_route(&self) -> Option<SocketAddr> {
        self.route.as_ref()?.direct()
    }

    /// Whether the connection carries no stream the application knows of
    /// (streams whose header is still arriving do not count: a peer cannot
    /// keep its connection busy with headers it never completes).
    pub(super) fn is_idle(&self) -> bool {
        self.streams.values().all(|s| !s.is_known_to_app())
    }
}

/// Queue this node's Hello on the control stream. A listener's Hello goes
/// out before the dialer has proven its identity (0.5-RTT data), so it
/// carries no metadata (`with_metadata` false): nothing that describes the
/// device goes to a peer before it is authenticated. The metadata follows
/// in a Metadata message once it is (`send_metadata`).
pub(super) fn send_hello(conn: &mut Conn, config: &NodeConfig, with_metadata: bool) {
    let hello = ControlMessage::Hello(Hello {
        versions: config.versions.clone(),
        app_name: config.app_name.clone(),
        metadata: if with_metadata {
            config.metadata.clone()
        } else {
            crate::metadata::Metadata::new()
        },
    });
    conn.control_out.push_back(hello.to_frame());
    if let Phase::Handshaking(handshake) = &mut conn.phase {
        handshake.hello_sent = true;
    }
    flush_control(conn);
}

/// Queue this node's metadata on the control stream (a listener's, once
/// the dialer has proven its identity).
pub(super) fn send_metadata(conn: &mut Conn, config: &NodeConfig) {
    if config.metadata.is_empty() {
        return;
    }
    conn.control_out
        .push_back(ControlMessage::Metadata(config.metadata.clone()).to_frame());
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
