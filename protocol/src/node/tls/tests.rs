//! Unit tests of the certificate verifiers and pinning.

use super::*;

#[test]
fn certificate_carries_the_identity() {
    let identity = Identity::from_bytes(&[4; 32]);
    let cert = NodeCertificate::new(&identity).unwrap();
    assert_eq!(cert.chain().len(), 1);
    assert_eq!(
        identity_of(&cert.chain()[0]).unwrap(),
        identity.to_remote_identity()
    );
}

#[test]
fn oversized_certificates_are_rejected() {
    // A valid certificate for a valid identity, padded with names.
    let identity = Identity::from_bytes(&[6; 32]);
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(identity.to_bytes().as_ref());
    let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let names: Vec<String> = (0..60)
        .map(|i| format!("a-long-host-name-{i}.example.org"))
        .collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();
    let der = cert.der().clone();
    assert!(der.len() > MAX_CERTIFICATE_LEN);
    assert_eq!(identity_of(&der).unwrap(), identity.to_remote_identity());
    assert!(IdentityVerifier::verify_cert(&der, &[]).is_err());
    let ours = NodeCertificate::new(&identity).unwrap();
    assert!(IdentityVerifier::verify_cert(&ours.chain()[0], &[]).is_ok());
}

#[test]
fn a_certificate_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
    let identity = Identity::from_bytes(&[12; 32]);
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(identity.to_bytes().as_ref());
    let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    // Ed25519 signatures are deterministic: a name of a given length
    // always gives a certificate of the same size.
    let cert_of = |name_len: usize| {
        rcgen::CertificateParams::new(vec!["a".repeat(name_len)])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap()
            .der()
            .clone()
    };
    let sized = |target: usize| {
        (1..1000)
            .map(cert_of)
            .find(|der| der.len() == target)
            .expect("a name length that gives this size")
    };
    let at_limit = sized(MAX_CERTIFICATE_LEN);
    assert!(IdentityVerifier::verify_cert(&at_limit, &[]).is_ok());
    let over = sized(MAX_CERTIFICATE_LEN + 1);
    assert!(IdentityVerifier::verify_cert(&over, &[]).is_err());
}

#[test]
fn garbage_certificates_are_rejected() {
    for bytes in [&[][..], &[0x30, 0x00][..], &[0xff; 64][..]] {
        assert!(identity_of(&CertificateDer::from(bytes.to_vec())).is_err());
    }
}

#[test]
fn configurations_build() {
    let cert = NodeCertificate::new(&Identity::from_bytes(&[5; 32])).unwrap();
    let client = client_config(provider(), &cert, b"pos-p2p/0.1", true).unwrap();
    assert_eq!(client.alpn_protocols, vec![b"pos-p2p/0.1".to_vec()]);
    let server = server_config(provider(), &cert, b"pos-p2p/0.1").unwrap();
    assert_eq!(server.max_early_data_size, 0);
}

/// A client session store that counts the tickets it is given.
#[derive(Debug)]
struct CountingStore(rustls::client::ClientSessionMemoryCache, AtomicU64);

impl CountingStore {
    fn new() -> Self {
        Self(
            rustls::client::ClientSessionMemoryCache::new(8),
            AtomicU64::new(0),
        )
    }
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.0.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.0.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.0.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.0.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.0.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.0.take_tls13_ticket(name)
    }
}

/// A whole TLS handshake between a listener's configuration and a
/// dialer's (over memory, not QUIC: the tickets are TLS's); how many
/// tickets the dialer was given.
fn tickets_given(ticket_request: Option<rustls::client::TicketRequest>) -> u64 {
    let alpn = b"pos-p2p/0.1";
    let server_cert = NodeCertificate::new(&Identity::from_bytes(&[7; 32])).unwrap();
    let client_cert = NodeCertificate::new(&Identity::from_bytes(&[8; 32])).unwrap();
    let server = Arc::new(server_config(provider(), &server_cert, alpn).unwrap());
    let mut client = client_config(provider(), &client_cert, alpn, false).unwrap();
    let store = Arc::new(CountingStore::new());
    client.resumption = rustls::client::Resumption::store(store.clone());
    client.send_ticket_request = ticket_request;
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let mut dialer = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut listener = rustls::ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        dialer.write_tls(&mut buf).unwrap();
        listener.read_tls(&mut &buf[..]).unwrap();
        listener.process_new_packets().unwrap();
        let mut buf = Vec::new();
        listener.write_tls(&mut buf).unwrap();
        dialer.read_tls(&mut &buf[..]).unwrap();
        dialer.process_new_packets().unwrap();
    }
    assert!(!dialer.is_handshaking() && !listener.is_handshaking());
    store.1.load(Ordering::Relaxed)
}

#[test]
fn a_listener_sends_one_ticket_unless_asked_for_none() {
    // PROTOCOL.md §6.5: no extension, one ticket; ticket_request(0, 0),
    // none; a pinned dial's ticket_request(1, 1), one.
    assert_eq!(tickets_given(None), 1);
    let none = rustls::client::TicketRequest {
        new_session_count: 0,
        resumption_count: 0,
    };
    assert_eq!(tickets_given(Some(none)), 0);
    let one = rustls::client::TicketRequest {
        new_session_count: 1,
        resumption_count: 1,
    };
    assert_eq!(tickets_given(Some(one)), 1);
    // And that is what the two dialer configurations ask for.
    let cert = NodeCertificate::new(&Identity::from_bytes(&[9; 32])).unwrap();
    let unpinned = client_config(provider(), &cert, b"x", false).unwrap();
    assert_eq!(
        unpinned
            .send_ticket_request
            .map(|t| (t.new_session_count, t.resumption_count)),
        Some((0, 0))
    );
    let pinned = client_config(provider(), &cert, b"x", true).unwrap();
    assert_eq!(
        pinned
            .send_ticket_request
            .map(|t| (t.new_session_count, t.resumption_count)),
        Some((1, 1))
    );
}

#[test]
fn a_pin_is_checked_before_the_dialer_shows_its_certificate() {
    let cert = NodeCertificate::new(&Identity::from_bytes(&[10; 32])).unwrap();
    let verifier = IdentityVerifier {
        verified: cert.verified.clone(),
        mismatches: cert.mismatches.clone(),
    };
    let other = NodeCertificate::new(&Identity::from_bytes(&[11; 32])).unwrap();
    let expected = Identity::from_bytes(&[12; 32]).to_remote_identity();
    let pinned_name = ServerName::try_from(server_name(&expected)).unwrap();
    let result = verifier.verify_server_cert(
        &other.chain()[0],
        &[],
        &pinned_name,
        &[],
        UnixTime::since_unix_epoch(std::time::Duration::ZERO),
    );
    assert!(matches!(
        result,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    ));
    assert_eq!(
        cert.mismatches.take(&expected),
        Some(Identity::from_bytes(&[11; 32]).to_remote_identity())
    );
    // Unpinned, the same certificate is fine.
    let unpinned = ServerName::try_from(SERVER_NAME).unwrap();
    assert!(
        verifier
            .verify_server_cert(
                &other.chain()[0],
                &[],
                &unpinned,
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::ZERO)
            )
            .is_ok()
    );
}
