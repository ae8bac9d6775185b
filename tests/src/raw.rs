//! [`RawDialer`]: a QUIC dialer driven by hand, for tests (and the flood
//! tool) that need a peer to misbehave where a `Node` never would: complete
//! TLS with a made-up identity and then say nothing, or send stream data
//! before its Hello.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{ClientConfig, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS client configuration like a pos-p2p dialer's (TLS 1.3, ed25519
/// client certificate, ALPN `pos-p2p/0.1`, no SNI) with the identity made
/// from `seed`, that accepts any server.
pub fn tls_client(seed: u64) -> rustls::ClientConfig {
    tls_client_with(Some(seed))
}

/// Like [`tls_client`], or with no client certificate at all (`None`).
pub fn tls_client_with(seed: Option<u64>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match seed {
        Some(seed) => {
            let (cert, key) = certificate(seed);
            builder
                .with_client_auth_cert(vec![cert], key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"pos-p2p/0.1".to_vec()];
    config.enable_sni = false;
    config
}

/// A self-signed certificate for the identity made from `seed`.
fn certificate(
    seed: u64,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let mut secret = [0x5e; 32];
    secret[..8].copy_from_slice(&seed.to_be_bytes());
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&secret);
    let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("an ed25519 key");
    let cert = rcgen::CertificateParams::new(vec!["pos-p2p".to_owned()])
        .expect("params")
        .self_signed(&key_pair)
        .expect("certificate");
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)),
    )
}

/// Accepts any server certificate.
#[derive(Debug)]
pub struct AnyServer(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// QUIC connections from one local address, driven by hand. The dialer
/// completes TLS but never reads the control stream nor sends a Hello.
#[derive(Debug)]
pub struct RawDialer {
    endpoint: Endpoint,
    conns: BTreeMap<ConnectionHandle, quinn_proto::Connection>,
    /// Where its datagrams come from.
    pub addr: SocketAddr,
    buf: Vec<u8>,
    /// The streams the peer opened on each connection.
    accepted: BTreeMap<ConnectionHandle, Vec<quinn_proto::StreamId>>,
    /// How the peers closed connections: (code, reason phrase) of each
    /// application CONNECTION_CLOSE received.
    pub closes: Vec<(u64, bytes::Bytes)>,
}

impl RawDialer {
    /// A dialer at `addr`, with no connection yet.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            endpoint: Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None),
            conns: BTreeMap::new(),
            addr,
            buf: Vec::new(),
            accepted: BTreeMap::new(),
            closes: Vec::new(),
        }
    }

    /// Dial `to` with the made-up identity of `seed`.
    pub fn connect(&mut self, now: Instant, to: SocketAddr, seed: u64) {
        self.connect_with(now, to, Some(seed));
    }

    /// Dial `to` with the made-up identity of `seed`, or with no
    /// certificate at all.
    pub fn connect_with(&mut self, now: Instant, to: SocketAddr, seed: Option<u64>) {
        let tls = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls_client_with(seed))
            .expect("QUIC TLS");
        let (handle, conn) = self
            .endpoint
            .connect(now, ClientConfig::new(Arc::new(tls)), to, "pos-p2p")
            .expect("dial");
        self.conns.insert(handle, conn);
    }

    /// A datagram arrived from `from`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        if let Some(DatagramEvent::ConnectionEvent(handle, event)) =
            self.endpoint
                .handle(now, from, None, None, BytesMut::from(data), &mut buf)
            && let Some(conn) = self.conns.get_mut(&handle)
        {
            conn.handle_event(event);
        }
    }

    /// Run timers and collect what the connections want sent, as
    /// (destination, datagram).
    pub fn poll(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for conn in self.conns.values_mut() {
            conn.handle_timeout(now);
            while let Some(event) = conn.poll() {
                if let quinn_proto::Event::ConnectionLost {
                    reason: quinn_proto::ConnectionError::ApplicationClosed(close),
                } = event
                {
                    self.closes
                        .push((close.error_code.into_inner(), close.reason.clone()));
                }
            }
            loop {
                self.buf.clear();
                let Some(transmit) = conn.poll_transmit(now, 1, &mut self.buf) else {
                    break;
                };
                out.push((transmit.destination, self.buf[..transmit.size].to_vec()));
            }
        }
        out
    }

    /// Everything the peers sent on the streams they opened, so far.
    pub fn received(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for (handle, conn) in &mut self.conns {
            let accepted = self.accepted.entry(*handle).or_default();
            while let Some(stream) = conn.streams().accept(Dir::Bi) {
                accepted.push(stream);
            }
            for stream in accepted.iter() {
                let mut recv = conn.recv_stream(*stream);
                if let Ok(mut chunks) = recv.read(true) {
                    while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                        out.extend_from_slice(&chunk.bytes);
                    }
                    let _ = chunks.finalize();
                }
            }
        }
        out
    }

    /// How many connections completed TLS.
    pub fn connected(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !c.is_handshaking() && !c.is_closed())
            .count()
    }

    /// Write `data` on the first stream each peer opened (a pos-p2p
    /// listener's control stream), as far as flow control allows.
    pub fn write_control(&mut self, data: &[u8]) {
        for (handle, conn) in &mut self.conns {
            if let Some(&stream) = self.accepted.get(handle).and_then(|s| s.first()) {
                let _ = conn.send_stream(stream).write(data);
            }
        }
    }

    /// Open a stream on every connected connection and write as much of
    /// `data` as flow control takes on it; the bytes taken, in all.
    pub fn write_streams(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        for conn in self.conns.values_mut() {
            if conn.is_handshaking() {
                continue;
            }
            let Some(stream) = conn.streams().open(Dir::Bi) else {
                continue;
            };
            let mut send = conn.send_stream(stream);
            // Until flow control says no.
            while let Ok(n @ 1..) = send.write(data) {
                taken += n;
            }
        }
        taken
    }
}
