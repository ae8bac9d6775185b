//! Nodes' relay connections in memory: a [`RelayClient`] wired to a
//! [`RelayEndpoint`], bytes moved by hand as TCP would carry them. For
//! tests and benchmarks of the relay without sockets.

use std::net::SocketAddr;
use std::time::Instant;

use pos_p2p_protocol::relay::{ConnId, RelayClient, RelayClientEvent, RelayEndpoint, RelayError};
use pos_p2p_protocol::{Identity, RemoteIdentity};

/// A node's connection to the relay: its client and the relay's name for
/// it.
#[derive(Debug)]
pub struct Link {
    /// The node's side.
    pub client: RelayClient,
    /// The relay's name for the connection.
    pub conn: ConnId,
    /// What the client heard.
    pub events: Vec<RelayClientEvent>,
    /// How the client's side ended, if it did.
    pub error: Option<RelayError>,
    /// Whether the relay said to close the connection.
    pub closed_by_relay: bool,
}

/// Connect a node with identity `node` from `from` to `relay`, pinning
/// `pinned` and queueing at most `max_queued` bytes, and move bytes until
/// both sides are quiet (the handshake is done, or failed).
pub fn connect(
    relay: &mut RelayEndpoint,
    now: Instant,
    node: &Identity,
    pinned: RemoteIdentity,
    from: SocketAddr,
    max_queued: usize,
) -> Link {
    let config = RelayClient::client_config(node).expect("client TLS");
    let client = RelayClient::new(config, pinned, max_queued).expect("client");
    let conn = relay.connect(now, from).expect("room for a handshake");
    let mut link = Link {
        client,
        conn,
        events: Vec::new(),
        error: None,
        closed_by_relay: false,
    };
    pump(relay, now, &mut [&mut link]);
    link
}

/// Move bytes both ways until nothing moves.
pub fn pump(relay: &mut RelayEndpoint, now: Instant, links: &mut [&mut Link]) {
    loop {
        let mut moved = false;
        for link in links.iter_mut() {
            let mut up = Vec::new();
            link.client.poll_write(&mut up);
            if !up.is_empty() && link.error.is_none() {
                moved = true;
                relay.handle_bytes(now, link.conn, &up);
            }
        }
        while let Some(conn) = relay.poll_ready() {
            let mut down = Vec::new();
            let close = relay.poll_write(conn, &mut down);
            let Some(link) = links.iter_mut().find(|l| l.conn == conn) else {
                continue;
            };
            if !down.is_empty() && link.error.is_none() {
                moved = true;
                if let Err(e) = link.client.handle_bytes(&down) {
                    link.error = Some(e);
                }
                while let Some(event) = link.client.poll_event() {
                    link.events.push(event);
                }
            }
            link.closed_by_relay |= close;
        }
        if !moved {
            return;
        }
    }
}
