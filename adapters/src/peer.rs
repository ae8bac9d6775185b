//! [`Peer`]: a remote node this node knows, and opening streams to it.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::{ConnectionId, ConnectionState, DisconnectReason, StreamError};
use pos_p2p_protocol::semver::Version;

use crate::driver::{Shared, State, register};
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
        for addr in dial_addrs(&state, &self.identity) {
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
        let mut dials: Vec<ConnectionId> = Vec::new();
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.closing.is_some() || state.stopped {
                return Poll::Ready(Err(NewStreamError::Shutdown));
            }
            let now = Instant::now();
            if state.node.peer(&self.identity).is_some() {
                return match state.node.open_stream(now, &self.identity) {
                    Ok(id) => {
                        state.wake_driver();
                        state.book.touch(&self.identity);
                        forget_dials(&mut state, &self.identity, &dials);
                        Poll::Ready(Ok(UnicastStream::new(
                            self.shared.clone(),
                            id,
                            state.node.local_identity(),
                            self.identity,
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
            if dials.is_empty() {
                // Join a dial to this peer that is already under way rather
                // than opening a connection per waiting caller.
                let in_flight: Vec<ConnectionId> = state
                    .peer_dials
                    .get(&self.identity)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|id| {
                        matches!(
                            state.node.connection_state(*id),
                            Some(ConnectionState::Handshaking)
                        )
                    })
                    .collect();
                if in_flight.is_empty() {
                    let addrs = dial_addrs(&state, &self.identity);
                    if addrs.is_empty() {
                        return Poll::Ready(Err(NewStreamError::NoAddress));
                    }
                    for addr in addrs {
                        if let Ok(id) = state.dial(now, addr, Some(self.identity)) {
                            dials.push(id);
                        }
                    }
                    if dials.is_empty() {
                        return Poll::Ready(Err(NewStreamError::Unreachable(
                            DisconnectReason::Refused,
                        )));
                    }
                    state.peer_dials.insert(self.identity, dials.clone());
                    state.wake_driver();
                } else {
                    dials = in_flight;
                }
            } else {
                let all_failed = dials.iter().all(|id| {
                    !matches!(
                        state.node.connection_state(*id),
                        Some(ConnectionState::Handshaking | ConnectionState::Established(_))
                    )
                });
                if all_failed {
                    let reason = dials
                        .iter()
                        .rev()
                        .find_map(|id| state.dials.get(id).and_then(|d| d.failure.clone()))
                        .unwrap_or(DisconnectReason::ClosedLocally);
                    forget_dials(&mut state, &self.identity, &dials);
                    return Poll::Ready(Err(NewStreamError::Unreachable(reason)));
                }
            }
            register(
                state.peer_waiters.entry(self.identity).or_default(),
                cx.waker(),
            );
            Poll::Pending
        })
        .await
    }
}

/// Where to dial a peer: the addresses it was added or reached at, then
/// those it advertises on the LAN.
fn dial_addrs(state: &State, peer: &RemoteIdentity) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = state.book.addrs(peer).into_iter().flatten().collect();
    let advertised = state.discovery.as_ref().and_then(|d| d.peer(peer));
    for addr in advertised.into_iter().flat_map(|p| &p.addrs) {
        if !addrs.contains(addr) {
            addrs.push(*addr);
        }
    }
    addrs
}

/// Drop the records of a finished dial once, whoever sees it finish first;
/// later waiters of the same dial still find the reason until then.
fn forget_dials(state: &mut State, peer: &RemoteIdentity, dials: &[ConnectionId]) {
    if dials.is_empty() {
        return;
    }
    let finished = dials.iter().all(|id| {
        !matches!(
            state.node.connection_state(*id),
            Some(ConnectionState::Handshaking)
        )
    });
    if finished && state.peer_dials.get(peer).is_some_and(|d| d == dials) {
        state.peer_dials.remove(peer);
        for id in dials {
            state.dials.remove(id);
        }
    }
}
