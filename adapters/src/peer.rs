//! [`Peer`]: a remote node this node knows, and opening streams to it.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use pos_p2p_protocol::Header;
use pos_p2p_protocol::RemoteIdentity;
use pos_p2p_protocol::node::{ConnectError, DisconnectReason, PeerStats, StreamError};
use pos_p2p_protocol::semver::{Version, VersionReq};

use crate::driver::{DialWatch, Shared, State, register};
use crate::error::NewStreamError;
use crate::runtime::Timer;
use crate::stream::UnicastStream;

/// A remote node: connected, or known by address. A cheap handle (clone
/// it freely); every getter reads the live state.
#[derive(Debug, Clone)]
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
    /// advertises it on the LAN; empty if neither. While connected, the
    /// `version` key is the application version of the peer's handshake
    /// (the one version gating checks), whatever its metadata said.
    /// [`PeerMetadata::from_hashmap`](crate::PeerMetadata::from_hashmap)
    /// gives the typed view.
    pub fn metadata(&self) -> HashMap<String, String> {
        let state = self.shared.lock();
        if let Some(peer) = state.node.peer(&self.identity) {
            return connected_metadata(&peer.metadata, &peer.versions);
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

    /// How the connection to the peer is doing: round-trip time,
    /// congestion window, bytes and packets, the path; `None` while not
    /// connected.
    pub fn stats(&self) -> Option<PeerStats> {
        self.shared.lock().node.peer_stats(&self.identity)
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
    /// the handshake timeout with [`NewStreamError::Unreachable`]; a peer
    /// that allows no more streams now (each allows
    /// [`Limits::max_streams_per_connection`](crate::Limits) at once) is
    /// waited for until one of its streams ends, for at most
    /// [`P2PConfig::stream_wait`](crate::P2PConfig::stream_wait), then
    /// fails with [`StreamError::StreamsExhausted`].
    ///
    /// Cancel-safe: dropping the future opens no stream (a dial it started
    /// goes on for the callers that share it, or ends).
    pub async fn new_stream(&self) -> Result<UnicastStream, NewStreamError> {
        self.open_stream(None).await
    }

    /// Open a stream to the peer (as [`new_stream`](Peer::new_stream)
    /// does) and write `header` on it: the stream, ready for the
    /// operation's own bytes. If the operation
    /// [requires](Header::requires) versions of the peer's application,
    /// the peer's version (from its handshake, connecting first if needed)
    /// is checked before the stream is opened: a peer that does not
    /// match fails with [`NewStreamError::PeerTooOld`], and nothing is
    /// sent to it.
    ///
    /// Cancel-safe until the stream is open; dropping the future while it
    /// writes the header drops the stream (as dropping a stream does).
    pub async fn open<H: Header>(&self, header: &H) -> Result<UnicastStream, NewStreamError> {
        let bytes = header.try_to_bytes()?;
        let required = header.requires();
        let gate = required
            .as_ref()
            .map(|required| (header.operation(), required));
        let mut stream = self.open_stream(gate).await?;
        stream.write_chunk(bytes).await.map_err(|error| {
            let reason = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<StreamError>())
                .cloned()
                .unwrap_or(StreamError::NotConnected);
            NewStreamError::Stream(reason)
        })?;
        Ok(stream)
    }

    /// Open a stream, once the peer's version matches `gate` if given.
    async fn open_stream(
        &self,
        gate: Option<(&'static str, &VersionReq)>,
    ) -> Result<UnicastStream, NewStreamError> {
        // The dial this call waits for, if the peer is not connected: the
        // Node joins every caller to one dial per peer.
        let mut watch = DialWatch::new(self.shared.clone());
        // Set when the peer first allows no more streams.
        let mut credit_timer: Option<Pin<Box<dyn Timer>>> = None;
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.closing.is_some() || state.stopped {
                return Poll::Ready(Err(NewStreamError::Shutdown));
            }
            let now = self.shared.clock.now();
            loop {
                if state.node.peer(&self.identity).is_some() {
                    if let Some((operation, required)) = gate
                        && let Some(Err(version)) =
                            state.node.peer_satisfies(&self.identity, required)
                    {
                        let version = version.clone();
                        watch.release(&mut state);
                        return Poll::Ready(Err(NewStreamError::PeerTooOld {
                            operation,
                            required: required.clone(),
                            version,
                        }));
                    }
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
                            let timer = credit_timer.get_or_insert_with(|| {
                                self.shared.timer(now + self.shared.stream_wait)
                            });
                            if timer.as_mut().poll_expired(cx).is_ready() {
                                return Poll::Ready(Err(StreamError::StreamsExhausted.into()));
                            }
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

/// A connected peer's metadata as the application sees it: what the peer
/// sent, with `version` set to the application version of its handshake.
pub(crate) fn connected_metadata(
    metadata: &pos_p2p_protocol::Metadata,
    versions: &pos_p2p_protocol::Versions,
) -> HashMap<String, String> {
    let mut map = metadata.to_hashmap();
    map.insert(
        pos_p2p_protocol::KEY_VERSION.to_owned(),
        versions.app.to_string(),
    );
    map
}

/// A snapshot of the peers a node knows ([`P2P::peers`](crate::P2P::peers)):
/// connected, in its address book, found on the LAN, or added by address.
/// It is owned (no lock is held) and hands out owned [`Peer`] handles, so
/// what `p2p.peers().get(&id)` returns can be kept past the statement.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    map: HashMap<RemoteIdentity, Peer>,
}

impl Peers {
    pub(crate) fn new(map: HashMap<RemoteIdentity, Peer>) -> Self {
        Self { map }
    }

    /// The peer with this identity, if the node knew it when the snapshot
    /// was taken.
    pub fn get(&self, identity: &RemoteIdentity) -> Option<Peer> {
        self.map.get(identity).cloned()
    }

    /// Whether the snapshot holds this identity.
    pub fn contains(&self, identity: &RemoteIdentity) -> bool {
        self.map.contains_key(identity)
    }

    /// How many peers the snapshot holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the snapshot holds no peer.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The peers, with their identities, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&RemoteIdentity, &Peer)> {
        self.map.iter()
    }

    /// The peers, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.map.values()
    }

    /// The identities, in no particular order.
    pub fn identities(&self) -> impl Iterator<Item = &RemoteIdentity> {
        self.map.keys()
    }
}

impl std::ops::Index<&RemoteIdentity> for Peers {
    type Output = Peer;

    /// The peer with this identity.
    ///
    /// # Panics
    ///
    /// If the snapshot does not hold it (use [`Peers::get`] to ask).
    fn index(&self, identity: &RemoteIdentity) -> &Peer {
        &self.map[identity]
    }
}

impl IntoIterator for Peers {
    type Item = (RemoteIdentity, Peer);
    type IntoIter = std::collections::hash_map::IntoIter<RemoteIdentity, Peer>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.into_iter()
    }
}

impl<'a> IntoIterator for &'a Peers {
    type Item = (&'a RemoteIdentity, &'a Peer);
    type IntoIter = std::collections::hash_map::Iter<'a, RemoteIdentity, Peer>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}
