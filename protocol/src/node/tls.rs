//! TLS 1.3 for QUIC with node identities instead of a PKI.
//!
//! Each node presents a self-signed X.509 certificate whose subject public key
//! *is* its ed25519 identity key, and signs the TLS handshake with that key.
//! Both sides require a certificate from the other (mutual authentication).
//! The verifiers here accept exactly one certificate with an ed25519 subject
//! public key, and check the handshake signature against that key: whoever
//! completes the handshake holds the private key of the identity it presents.
//! Names, validity periods and issuers carry no meaning and are not checked;
//! the identity is the key. A dialer that pins an identity checks it in the
//! verifier, before it sends its own certificate: an impostor learns
//! nothing about the dialer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerIncompatible, SignatureScheme,
};
use zeroize::Zeroizing;

use crate::{Identity, RemoteIdentity};

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }, then the 32
/// key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410 §7), followed
/// by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The largest peer certificate accepted.
const MAX_CERTIFICATE_LEN: usize = 1024;

/// The server name of dials that do not pin an identity. It is not sent
/// (no SNI) and carries no meaning: the identity is checked against the
/// certificate's key.
pub(crate) const SERVER_NAME: &str = "pos-p2p";

/// Why TLS configuration could not be built. These are local failures (a
/// broken crypto backend), never caused by a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate could not be generated.
    #[error("generating the node certificate: {0}")]
    Certificate(String),
    /// rustls rejected the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// QUIC cannot use the TLS configuration.
    #[error("the TLS configuration is unusable for QUIC: {0}")]
    Quic(String),
}

/// The node's certificate and key in the forms rustls wants.
#[derive(Debug)]
pub(crate) struct NodeCertificate {
    /// The certificate and its signing key, parsed once and shared by the
    /// server and both client configurations.
    certified: Arc<CertifiedKey>,
    /// Handshake signatures the verifiers accepted (full handshakes; a
    /// resumed one has none).
    pub(crate) verified: Arc<AtomicU64>,
    /// Pinned dials that another identity answered: the pinned identity
    /// and who answered, for the node to report.
    pub(crate) mismatches: Arc<Mismatches>,
}

/// Pinned dials the verifier refused, by the pinned identity: the identity
/// that answered instead. Bounded; the node takes each entry when the
/// connection's failure is reported.
#[derive(Debug, Default)]
pub(crate) struct Mismatches(
    std::sync::Mutex<std::collections::VecDeque<(RemoteIdentity, RemoteIdentity)>>,
);

/// How many refused pins are remembered for the node to report.
const MAX_MISMATCHES: usize = 64;

impl Mismatches {
    fn record(&self, expected: RemoteIdentity, actual: RemoteIdentity) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == MAX_MISMATCHES {
            list.pop_front();
        }
        list.push_back((expected, actual));
    }

    /// Who answered a dial pinned to `expected`, if the verifier refused it.
    pub(crate) fn take(&self, expected: &RemoteIdentity) -> Option<RemoteIdentity> {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = list.iter().position(|(e, _)| e == expected)?;
        list.remove(at).map(|(_, actual)| actual)
    }
}

impl NodeCertificate {
    /// A self-signed certificate for `identity`, signed with it.
    pub(crate) fn new(identity: &Identity) -> Result<Self, TlsSetupError> {
        Ok(Self::from_certified(Self::certify(identity)?))
    }

    /// A certificate from a certified key made by [`NodeCertificate::certify`].
    pub(crate) fn from_certified(certified: Arc<CertifiedKey>) -> Self {
        Self {
            certified,
            verified: Arc::new(AtomicU64::new(0)),
            mismatches: Arc::default(),
        }
    }

    /// The self-signed certificate of `identity` and its signing key.
    pub(crate) fn certify(identity: &Identity) -> Result<Arc<CertifiedKey>, TlsSetupError> {
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(identity.to_bytes().as_ref());
        let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice())
            .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            identity.to_remote_identity().to_string(),
        );
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
        let signer = rustls::crypto::ring::sign::any_eddsa_type(&key)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            signer,
        )))
    }

    /// The certificate chain (one self-signed certificate).
    #[cfg(test)]
    fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }
}

/// The crypto provider: ring (TLS 1.3 only, by the configurations below).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The core reads no clock. Certificates' validity periods mean nothing here
/// (the identity is the key), so rustls is given a fixed time.
#[derive(Debug)]
struct NoClock;

impl rustls::time_provider::TimeProvider for NoClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(std::time::Duration::ZERO))
    }
}

/// How many peers a dialer keeps TLS sessions for (up to 8 tickets each),
/// and how many sessions a listener can resume. rustls allocates both
/// caches up front, so they are kept small: a cache miss only means a full
/// handshake.
const RESUMABLE_PEERS: usize = 32;
const RESUMABLE_SESSIONS: usize = 256;

/// The server name a dialer uses when it pins `identity`. It is not sent
/// (no SNI); it keys the dialer's session cache, so a session made with a
/// node is only offered on dials that pin that node's identity.
pub(crate) fn server_name(identity: &RemoteIdentity) -> String {
    format!("{identity}.{SERVER_NAME}")
}

/// The rustls client configuration of a dialer. With `resume`, sessions
/// are kept and resumed (used only when the dialer pins the identity, see
/// [`server_name`]).
pub(crate) fn client_config(
    provider: Arc<CryptoProvider>,
    cert: &NodeCertificate,
    alpn: &[u8],
    resume: bool,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut config = rustls::ClientConfig::builder_with_details(provider, Arc::new(NoClock))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(IdentityVerifier {
            verified: cert.verified.clone(),
            mismatches: cert.mismatches.clone(),
        }))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified.clone())));
    config.alpn_protocols = vec![alpn.to_vec()];
    // A resumed TLS 1.3 session (PSK with a fresh X25519 exchange, no 0-RTT)
    // carries the identity proven in the full handshake it came from: only
    // the holder of that session's secret can resume it.
    config.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(RESUMABLE_PEERS)
            .tls12_resumption(rustls::client::Tls12Resumption::Disabled)
    } else {
        rustls::client::Resumption::disabled()
    };
    // One ticket for a dialer that will use it, none otherwise (RFC 9149),
    // so that dials that cannot resume do not crowd the listener's cache.
    let tickets = u8::from(resume);
    config.send_ticket_request = Some(rustls::client::TicketRequest {
        new_session_count: tickets,
        resumption_count: tickets,
    });
    // No SNI: the server name only keys the session cache, and sent in the
    // clear it would tell observers which identity is being dialed.
    config.enable_sni = false;
    Ok(config)
}

/// The rustls server configuration of a listener.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    cert: &NodeCertificate,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let mut config = rustls::ServerConfig::builder_with_details(provider, Arc::new(NoClock))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(IdentityVerifier {
            verified: cert.verified.clone(),
            mismatches: cert.mismatches.clone(),
        }))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified.clone())));
    config.alpn_protocols = vec![alpn.to_vec()];
    // 0-RTT would let a replayed first flight reach the application.
    config.max_early_data_size = 0;
    // One single-use ticket per handshake, from a bounded cache: a dialer
    // reconnecting to this node skips both signatures and verifications.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(RESUMABLE_SESSIONS);
    config.send_tls13_tickets = 1;
    config.max_tls13_tickets = 1;
    Ok(config)
}

/// The identity a certificate carries: its subject public key, if it is an
/// ed25519 key that is a valid identity.
pub(crate) fn identity_of(cert: &CertificateDer<'_>) -> Result<RemoteIdentity, rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..]).ok_or(
        rustls::Error::PeerIncompatible(PeerIncompatible::NoSignatureSchemesInCommon),
    )?;
    RemoteIdentity::try_from(key)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// The identity of the peer of an established QUIC connection. The
/// certificate passed [`IdentityVerifier`] in this handshake or in the one
/// the resumed session came from, so its key is not validated again.
pub(crate) fn peer_identity(session: &dyn quinn_proto::crypto::Session) -> Option<RemoteIdentity> {
    let certs = session.peer_identity()?;
    let certs = certs.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let parsed = webpki::EndEntityCert::try_from(certs.first()?).ok()?;
    let key = parsed
        .subject_public_key_info()
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])?
        .try_into()
        .ok()?;
    Some(RemoteIdentity::from_validated(key))
}

/// Accepts a single self-signed certificate whose key is a valid ed25519
/// identity and checks TLS 1.3 handshake signatures with that key. Used on
/// both sides.
#[derive(Debug)]
struct IdentityVerifier {
    verified: Arc<AtomicU64>,
    mismatches: Arc<Mismatches>,
}

/// The identity a dial pins, from the server name it was given
/// ([`server_name`]); `None` for a dial that pins nothing.
fn pinned(server_name: &ServerName<'_>) -> Option<RemoteIdentity> {
    let ServerName::DnsName(name) = server_name else {
        return None;
    };
    let text = name.as_ref().strip_suffix(&format!(".{SERVER_NAME}"))?;
    text.parse().ok()
}

impl IdentityVerifier {
    fn verify_cert(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        // Ours are about 300 bytes; resumable sessions keep the peer's
        // certificate, so a large one would be kept many times over.
        if end_entity.len() > MAX_CERTIFICATE_LEN {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        }
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        identity_of(end_entity).map(|_| ())
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerIncompatible(
                PeerIncompatible::NoSignatureSchemesInCommon,
            ));
        }
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        parsed
            .verify_signature(webpki::ring::ED25519, message, dss.signature())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        self.verified.fetch_add(1, Ordering::Relaxed);
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::verify_cert(end_entity, intermediates)?;
        // The pin is checked here, before this dialer sends its own
        // certificate: a listener that is not the pinned node learns
        // nothing about who dialed it (the handshake ends with
        // access_denied).
        if let Some(expected) = pinned(server_name) {
            let actual = identity_of(end_entity)?;
            if actual != expected {
                self.mismatches.record(expected, actual);
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled, so rustls never asks.
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for IdentityVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::verify_cert(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests;
