//! Manual peers: addresses the application added, which the sans-IO
//! [`Node`](pos_p2p_protocol::node::Node) keeps connected (dialing,
//! backoff, status). The driver's part is resolving host names, on a
//! short-lived thread so that no runtime's blocking pool is needed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use pos_p2p_protocol::node::{MAX_DIAL_ADDRS, Node};
pub use pos_p2p_protocol::node::{
    ManualError, ManualPeer, ManualStatus, PeerAddr, PeerAddrError, ResolveError,
};

/// Resolve a manual peer's host name on a thread of its own and give the
/// answer to `answer` there (which hands it to the node, which ignores it
/// if it came too late). If no thread can be started, the node hears that
/// at once.
pub(crate) fn resolve(
    node: &mut Node,
    now: Instant,
    addr: PeerAddr,
    generation: u64,
    answer: impl FnOnce(PeerAddr, u64, Result<Vec<SocketAddr>, ResolveError>) + Send + 'static,
) {
    let PeerAddr::Host { host, port } = addr.clone() else {
        // The node asks only for host names; an address is its own answer.
        if let PeerAddr::Addr(socket) = addr {
            node.handle_resolved(now, &addr, generation, Ok(vec![socket]));
        }
        return;
    };
    let asked = addr.clone();
    let spawned = std::thread::Builder::new()
        .name("pos-p2p-resolve".into())
        .spawn(move || {
            let result = (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.take(MAX_DIAL_ADDRS).collect::<Vec<_>>())
                .map_err(|e| ResolveError::Failed(e.kind()));
            answer(addr, generation, result);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a resolver thread");
        node.handle_resolved(now, &asked, generation, Err(ResolveError::Unavailable));
    }
}
