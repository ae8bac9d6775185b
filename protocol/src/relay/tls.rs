//! TLS between nodes and relays (docs/PROTOCOL.md §10.1): the node's own
//! certificate scheme (§6.2), both ways, with the ALPN `pos-p2p-relay/1`.

use std::sync::Arc;

use crate::node::TlsSetupError;
use crate::node::tls::{self, NodeCertificate};
use crate::{Identity, RemoteIdentity};

/// The ALPN protocol id of the relay protocol.
pub const RELAY_ALPN: &[u8] = b"pos-p2p-relay/1";

/// The TLS configuration a relay serves with: its own identity's
/// certificate, and a node certificate required of every client.
pub(crate) fn server_config(relay: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let cert = NodeCertificate::new(relay)?;
    let mut config = tls::server_config(tls::provider(), &cert, RELAY_ALPN)?;
    // A relay connection lives long; resuming it saves nothing worth a
    // session cache.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The TLS configuration a node connects to its relays with: its node
/// certificate as the client certificate; the relay's identity is pinned
/// by the server name of each connection ([`server_name`]).
pub(crate) fn client_config(node: &Identity) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let cert = NodeCertificate::new(node)?;
    Ok(Arc::new(tls::client_config(
        tls::provider(),
        &cert,
        RELAY_ALPN,
        false,
    )?))
}

/// The server name that pins `relay` (not sent: no SNI).
pub(crate) fn server_name(
    relay: &RemoteIdentity,
) -> Result<rustls::pki_types::ServerName<'static>, TlsSetupError> {
    rustls::pki_types::ServerName::try_from(tls::server_name(relay))
        .map_err(|e| TlsSetupError::Certificate(e.to_string()))
}

/// The identity a finished TLS handshake proved for the other side.
pub(crate) fn peer_identity(
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Option<RemoteIdentity> {
    tls::identity_of(certs?.first()?).ok()
}
