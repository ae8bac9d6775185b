//! Relay connections: one task per TCP connection the node asks for
//! ([`RelayAction`]), moving bytes between the socket and
//! [`Node::handle_relay_bytes`] / [`Node::poll_relay_write`]. TLS, framing,
//! pings, timeouts and reconnecting are the core's.
//!
//! [`Node::handle_relay_bytes`]: pos_p2p_protocol::node::Node::handle_relay_bytes
//! [`Node::poll_relay_write`]: pos_p2p_protocol::node::Node::poll_relay_write

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Poll, Waker};

use pos_p2p_protocol::node::{RelayAction, RelayConnId};

use crate::driver::{Shared, State};

/// How many reads and writes a relay task does per poll before it lets
/// other tasks run.
const ROUNDS_PER_POLL: usize = 32;
/// The read buffer of a relay connection.
const READ_BUF: usize = 16 << 10;

/// What the driver and a relay task share (in [`State`]).
#[derive(Debug, Default)]
pub(crate) struct RelayTask {
    waker: Option<Waker>,
    /// The node closed this connection: the task ends.
    closed: bool,
}

/// Act on the node's relay actions and wake the tasks of relay
/// connections with bytes to write; their wakers go to `woken`.
pub(crate) fn service(state: &mut State, shared: &Arc<Shared>, woken: &mut Vec<Waker>) {
    while let Some(action) = state.node.poll_relay_action() {
        match action {
            RelayAction::Connect { conn, addr } => {
                state.relay_tasks.insert(conn, RelayTask::default());
                shared
                    .runtime
                    .spawn(Box::pin(run(shared.clone(), conn, addr)));
            }
            RelayAction::Close { conn } => close(state, conn, woken),
            _ => {}
        }
    }
    while let Some(conn) = state.node.poll_relay_ready() {
        if let Some(task) = state.relay_tasks.get_mut(&conn) {
            woken.extend(task.waker.take());
        }
    }
}

fn close(state: &mut State, conn: RelayConnId, woken: &mut Vec<Waker>) {
    if let Some(task) = state.relay_tasks.get_mut(&conn) {
        task.closed = true;
        woken.extend(task.waker.take());
    }
}

/// End every relay task (the driver stops).
pub(crate) fn close_all(state: &mut State, woken: &mut Vec<Waker>) {
    let conns: Vec<RelayConnId> = state.relay_tasks.keys().copied().collect();
    for conn in conns {
        close(state, conn, woken);
    }
}

/// Whether the node closed `conn`; registers the waker otherwise.
fn closed(state: &mut State, conn: RelayConnId, waker: &Waker) -> bool {
    match state.relay_tasks.get_mut(&conn) {
        Some(task) if !task.closed => {
            if !task.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                task.waker = Some(waker.clone());
            }
            false
        }
        _ => true,
    }
}

/// One relay connection, from TCP connect to its end.
async fn run(shared: Arc<Shared>, conn: RelayConnId, addr: SocketAddr) {
    let mut connecting = shared.runtime.connect_tcp(addr);
    let connected = poll_fn(|cx| {
        if closed(&mut shared.lock(), conn, cx.waker()) {
            return Poll::Ready(None);
        }
        connecting.as_mut().poll(cx).map(Some)
    })
    .await;
    let io = match connected {
        None => return finish(&shared, conn, None),
        Some(Err(error)) => {
            tracing::debug!(%addr, %error, "relay unreachable");
            return finish(&shared, conn, Some(error.to_string()));
        }
        Some(Ok(io)) => io,
    };
    {
        let mut state = shared.lock();
        state.node.relay_opened(shared.clock.now(), conn);
        state.wake_driver();
    }
    let mut out = Vec::new();
    let mut written = 0;
    let mut buf = vec![0; READ_BUF];
    let ended = poll_fn(|cx| {
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;
            {
                let mut state = shared.lock();
                if closed(&mut state, conn, cx.waker()) {
                    return Poll::Ready(None);
                }
                if written == out.len() {
                    out.clear();
                    written = 0;
                    state.node.poll_relay_write(conn, &mut out);
                }
            }
            while written < out.len() {
                match io.poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Some("connection closed".into())),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(e.to_string())),
                    Poll::Pending => break,
                }
            }
            match io.poll_read(cx, &mut buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(None),
                Poll::Ready(Ok(n)) => {
                    let mut state = shared.lock();
                    let now = shared.clock.now();
                    state.node.handle_relay_bytes(now, conn, &buf[..n]);
                    state.wake_driver();
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(e.to_string())),
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Busy: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    finish(&shared, conn, ended);
}

/// The connection ended: tell the node (unless it closed it) and forget it.
fn finish(shared: &Shared, conn: RelayConnId, error: Option<String>) {
    let mut state = shared.lock();
    if state
        .relay_tasks
        .remove(&conn)
        .is_some_and(|task| !task.closed)
    {
        state.node.relay_closed(shared.clock.now(), conn, error);
        state.wake_driver();
    }
}
