//! quinn 0.11 on tokio: the baseline an application would otherwise use.
//! A self-signed certificate and a client that skips verification, as the
//! quinn examples do for benchmarks; default settings, or the same
//! flow-control windows as pos-p2p.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, Endpoint, ServerConfig, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{Result, idle_cpu, rss};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Windows {
    /// quinn's defaults.
    Default,
    /// pos-p2p's default windows (`Limits::default()`).
    SameAsPos,
    /// quinn's defaults plus pos-p2p's keep-alive (10 s), for the idle
    /// scenario.
    DefaultWithKeepAlive,
    /// quinn's defaults with what pos-p2p's handshake does on top: ed25519
    /// certificates and client authentication (mutual TLS).
    MutualTls,
}

fn transport(windows: Windows) -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    if let Windows::SameAsPos = windows {
        let ours = pos_p2p::Limits::default();
        transport
            .stream_receive_window(VarInt::from_u32(ours.stream_receive_window))
            .receive_window(VarInt::from_u32(ours.connection_receive_window))
            .send_window(ours.send_window);
    }
    if let Windows::DefaultWithKeepAlive = windows {
        transport.keep_alive_interval(Some(Duration::from_secs(10)));
    }
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    Arc::new(transport)
}

fn endpoints(windows: Windows) -> Result<(Endpoint, Endpoint, SocketAddr)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mutual = matches!(windows, Windows::MutualTls);
    let certificate = |ed25519: bool| -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
        let key_pair = if ed25519 {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?
        } else {
            rcgen::KeyPair::generate()?
        };
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key_pair)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        Ok((cert.der().clone(), key))
    };
    let (server_cert, server_key) = certificate(mutual)?;
    let server_builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let server_builder = if mutual {
        server_builder.with_client_cert_verifier(Arc::new(SkipVerification(provider.clone())))
    } else {
        server_builder.with_no_client_auth()
    };
    let mut server_tls = server_builder.with_single_cert(vec![server_cert], server_key)?;
    server_tls.alpn_protocols = vec![b"bench".to_vec()];
    let mut server_config =
        ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    server_config.transport_config(transport(windows));
    let server = Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;

    let client_builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)));
    let mut client_tls = if mutual {
        let (cert, key) = certificate(true)?;
        client_builder.with_client_auth_cert(vec![cert], key)?
    } else {
        client_builder.with_no_client_auth()
    };
    client_tls.alpn_protocols = vec![b"bench".to_vec()];
    let mut client_config = ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client_config.transport_config(transport(windows));
    let mut client = Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_config);
    Ok((client, server, addr))
}

pub(crate) struct Pair {
    client: Endpoint,
    addr: SocketAddr,
    conn: quinn::Connection,
}

impl Pair {
    pub(crate) async fn start(windows: Windows) -> Result<Self> {
        let (client, server, addr) = endpoints(windows)?;
        tokio::spawn(serve(server));
        let conn = client.connect(addr, "localhost")?.await?;
        Ok(Self { client, addr, conn })
    }

    pub(crate) async fn bulk(&self, len: usize) -> Result<()> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&[0]).await?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut sent = 0;
        while sent < len {
            let n = chunk.len().min(len - sent);
            send.write_all(&chunk[..n]).await?;
            sent += n;
        }
        send.finish()?;
        let mut count = [0u8; 8];
        recv.read_exact(&mut count).await?;
        if u64::from_be_bytes(count) != len as u64 {
            return Err("quinn server miscounted".into());
        }
        Ok(())
    }

    /// `n` dials, each timed from the dial to ready; `pause` (untimed)
    /// after each, before the close.
    pub(crate) async fn connect_latencies(
        &self,
        n: usize,
        pause: std::time::Duration,
    ) -> Result<Vec<f64>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let conn = self.client.connect(self.addr, "localhost")?.await?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            conn.close(VarInt::from_u32(0), b"next");
        }
        Ok(samples)
    }

    pub(crate) async fn requests(&self, n: usize, parallel: usize) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..parallel {
            let conn = self.conn.clone();
            let share = n / parallel + usize::from(worker < n % parallel);
            tasks.spawn(async move {
                let mut request = vec![1u8];
                request.extend_from_slice(&[7u8; 100]);
                for _ in 0..share {
                    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                    send.write_all(&request).await.map_err(|e| e.to_string())?;
                    send.finish().map_err(|e| e.to_string())?;
                    let reply = recv.read_to_end(1000).await.map_err(|e| e.to_string())?;
                    if reply.len() != 100 {
                        return Err(format!("reply of {} bytes", reply.len()));
                    }
                }
                Ok::<(), String>(())
            });
        }
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        Ok(())
    }
}

async fn serve(server: Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(handle(send, recv));
            }
        });
    }
}

async fn handle(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut op = [0u8; 1];
    if recv.read_exact(&mut op).await.is_err() {
        return;
    }
    if op[0] == 0 {
        let mut buf = vec![0u8; 1 << 20];
        let mut count = 0u64;
        while let Ok(Some(n)) = recv.read(&mut buf).await {
            count += n as u64;
        }
        let _ = send.write_all(&count.to_be_bytes()).await;
    } else {
        let mut request = [0u8; 100];
        if recv.read_exact(&mut request).await.is_ok() {
            let _ = send.write_all(&request).await;
        }
    }
    // Finish and let go, as the pos-p2p server does: neither waits for the
    // peer to have read the reply (the data is delivered all the same).
    let _ = send.finish();
}

/// Memory per idle connection and idle CPU: one client endpoint with `n`
/// connections to one server endpoint, in this process, with the same 10 s
/// keep-alive as pos-p2p.
pub(crate) async fn idle_connections(n: usize, idle: Duration) -> Result<(usize, f64)> {
    let (client, server, addr) = endpoints(Windows::DefaultWithKeepAlive)?;
    tokio::spawn(serve(server.clone()));
    let before = rss();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(client.connect(addr, "localhost")?.await?);
    }
    let bytes = rss().saturating_sub(before);
    let cpu = idle_cpu(idle).await;
    for conn in &conns {
        conn.close(VarInt::from_u32(0), b"done");
    }
    client.wait_idle().await;
    server.close(VarInt::from_u32(0), b"done");
    Ok((bytes, cpu))
}

#[derive(Debug)]
struct SkipVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl rustls::server::danger::ClientCertVerifier for SkipVerification {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}
