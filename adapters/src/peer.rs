//! [`Peer`]: a remote node this node knows, and opening streams to it.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::{ConnectError, DisconnectReason, StreamError};
use pos_p2p_protocol::semver::Version;

use crate::driver::{DialWatch, Shared, State, register};
use crate::error::NewStreamError;
use crate::stream::UnicastStream;

/// A remote node: connected, or known by address. Cheap to clone through
/// `Arc`; every getter reads the live state.
#[derive(Debug)]
pub struct Peer {
    shared: Arc<Shared>,
    identity: RemoteIdentity,
}

impl Peer {
    pub(crate) fn new(shared: Arc<Shared>, identity: RemoteIdentity) -> Self {
        Self { shared, identity }
    }

    /// The peer's identity.
    pub fn identity(&self) -> RemoteIdentity {
        self.identity
    }

    /// The peer's metadata: as it last sent it while connected, else as it
    /// advertises it on the LAN; empty if neither.
    /// [`PeerMetadata::from_hashmap`](crate::PeerMetadata::from_hashmap)
    /// gives the typed view.
    pub fn metadata(&self) -> HashMap<String, String> {
        let state = self.shared.lock();
        if let Some(peer) = state.node.peer(&self.identity) {
            return peer.metadata.to_hashmap();
        }
        state
            .discovery
            .as_ref()
            .and_then(|d| d.peer(&self.identity))
            .map(|p| p.metadata.to_hashmap())
            .unwrap_or_default()
    }

    /// Whether the peer is advertised on the LAN now (found by mDNS and
    /// not expired).
    pub fn is_discovered(&self) -> bool {
        let state = self.shared.lock();
        state
            .discovery
            .as_ref()
            .is_some_and(|d| d.peer(&self.identity).is_some())
    }

    /// The peer's application version, while connected.
    pub fn version(&self) -> Option<Version> {
        let state = self.shared.lock();
        state
            .node
            .peer(&self.identity)
            .map(|p| p.versions.app.clone())
    }

    /// Whether the peer is connected now.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().node.peer(&self.identity).is_some()
    }

    /// The addresses the peer is known at: the current connection's first,
    /// then those it was added or reached at, then those it advertises.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let state = self.shared.lock();
        let mut addrs: Vec<SocketAddr> = state
            .node
            .peer(&self.identity)
            .map(|p| p.addr)
            .into_iter()
            .collect();
        let advertised = advertised(&state, &self.identity);
        for addr in state.node.dial_addrs(&self.identity, &advertised) {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }

    /// Open a stream to the peer, connecting first if needed (pinned to the
    /// peer's identity, trying each known address). Reuses the one
    /// connection to the peer. A peer that cannot be reached fails within
    /// the handshake timeout with [`NewStreamError::Unreachable`].
    pub async fn new_stream(&self) -> Result<UnicastStream, NewStreamError> {
        // The dial this call waits for, if the peer is not connected: the
        // Node joins every caller to one dial per peer.
        let mut watch = DialWatch::new(self.shared.clone());
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.closing.is_some() || state.stopped {
                return Poll::Ready(Err(NewStreamError::Shutdown));
            }
            let now = self.shared.clock.now();
            loop {
                if state.node.peer(&self.identity).is_some() {
                    watch.release(&mut state);
                    return match state.node.open_stream(now, &self.identity) {
                        Ok(id) => {
                            state.wake_driver();
                            state.node.book_mut().touch(&self.identity);
                            Poll::Ready(Ok(UnicastStream::new(
                                self.shared.clone(),
                                id,
                                state.node.local_identity(),
                                self.identity,
                                state.node.span(),
                            )))
                        }
                        Err(StreamError::StreamsExhausted) => {
                            register(
                                state.peer_waiters.entry(self.identity).or_default(),
                                cx.waker(),
                            );
                            Poll::Pending
                        }
                        Err(error) => Poll::Ready(Err(error.into())),
                    };
                }
                let Some(id) = watch.id() else {
                    let advertised = advertised(&state, &self.identity);
                    match state.dial_peer(now, self.identity, &advertised) {
                        Ok(id) => watch.set(id),
                        Err(ConnectError::NoAddress) => {
                            return Poll::Ready(Err(NewStreamError::NoAddress));
                        }
                        Err(_) => {
                            return Poll::Ready(Err(NewStreamError::Unreachable(
                                DisconnectReason::Refused,
                            )));
                        }
                    }
                    continue;
                };
                match state.poll_dial(id, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(reason)) => {
                        watch.release(&mut state);
                        return Poll::Ready(Err(NewStreamError::Unreachable(reason)));
                    }
                    // Connected: open the stream (above). A peer that went
                    // again at once is dialed again.
                    Poll::Ready(Ok(_)) => watch.release(&mut state),
                }
            }
        })
        .await
    }
}

/// The addresses discovery reports for `peer` (none without discovery).
fn advertised(state: &State, peer: &RemoteIdentity) -> Vec<SocketAddr> {
    state
        .discovery
        .as_ref()
        .and_then(|d| d.peer(peer))
        .map(|p| p.addrs.clone())
        .unwrap_or_default()
}
