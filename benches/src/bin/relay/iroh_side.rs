//! The anchor for the relay's figures: iroh's relay (`iroh-relay`, the
//! current release) in its development mode (plain HTTP, no TLS between
//! the endpoints and the relay, no QUIC address discovery), and two iroh
//! endpoints with no IP transport at all, so everything goes through the
//! relay. The same two measurements as pos-p2p's relayed pair: a bulk
//! upload whose count comes back, and sequential request/response round
//! trips (a stream opened, one byte, a 4-byte answer). Built only with the
//! benches crate's `iroh` feature.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, EndpointAddr, RelayConfig, RelayMap, RelayMode, TransportAddr};
use iroh_relay::server::{RelayConfig as ServerRelayConfig, Server, ServerConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const ALPN: &[u8] = b"relay-bench";

fn boxed(e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    e.to_string().into()
}

/// iroh's relay in development mode on loopback, without rate limits
/// (its default).
pub(crate) struct IrohRelay {
    server: Server,
    map: RelayMap,
    url: iroh::RelayUrl,
}

impl IrohRelay {
    pub(crate) async fn start() -> Result<Self> {
        let mut config = ServerConfig::default();
        config.relay = Some(ServerRelayConfig::new((Ipv4Addr::LOCALHOST, 0)));
        let server = Server::spawn(config).await.map_err(boxed)?;
        let addr = server.http_addr().ok_or("the relay serves no HTTP")?;
        let url: iroh::RelayUrl = format!("http://{addr}").parse().map_err(boxed)?;
        let map = RelayMap::from(RelayConfig::new(url.clone(), None));
        Ok(Self { server, map, url })
    }

    pub(crate) async fn shutdown(self) {
        let _ = self.server.shutdown().await;
    }
}

/// An endpoint that reaches peers only through `relay`.
async fn endpoint(relay: &IrohRelay, server: bool) -> Result<Endpoint> {
    let transport = QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(1024))
        .build();
    let mut builder = Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .relay_mode(RelayMode::Custom(relay.map.clone()))
        .transport_config(transport);
    if server {
        builder = builder.alpns(vec![ALPN.to_vec()]);
    }
    builder.bind().await.map_err(boxed)
}

/// A client connected to a server through the relay only.
pub(crate) struct Pair {
    client: Endpoint,
    server: Endpoint,
    conn: Connection,
}

impl Pair {
    pub(crate) async fn start(relay: &IrohRelay) -> Result<Self> {
        let server = endpoint(relay, true).await?;
        let client = endpoint(relay, false).await?;
        tokio::spawn(serve(server.clone()));
        let addr = EndpointAddr::from_parts(server.id(), [TransportAddr::Relay(relay.url.clone())]);
        let conn = tokio::time::timeout(Duration::from_secs(30), client.connect(addr, ALPN))
            .await
            .map_err(|_| "iroh did not connect through its relay in 30 s")?
            .map_err(boxed)?;
        let pair = Self {
            client,
            server,
            conn,
        };
        // Connected and warm before anything is timed.
        pair.request().await?;
        Ok(pair)
    }

    pub(crate) async fn bulk(&self, len: usize) -> Result<Duration> {
        let started = Instant::now();
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
            return Err("the iroh server miscounted".into());
        }
        Ok(started.elapsed())
    }

    /// One round trip: a stream, one byte, `pong` back.
    pub(crate) async fn request(&self) -> Result<()> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&[1]).await?;
        send.finish()?;
        let reply = recv.read_to_end(16).await?;
        if reply != b"pong" {
            return Err("a wrong answer".into());
        }
        Ok(())
    }

    /// Whether every path of the connection goes through the relay.
    pub(crate) fn relayed_only(&self) -> bool {
        let paths = self.conn.paths();
        !paths.is_empty() && paths.iter().all(|p| p.is_relay())
    }

    pub(crate) async fn shutdown(self) {
        self.conn.close(VarInt::from_u32(0), b"done");
        self.client.close().await;
        self.server.close().await;
    }
}

async fn serve(server: Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
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
                        let _ = recv.read_to_end(16).await;
                        let _ = send.write_all(b"pong").await;
                    }
                    let _ = send.finish();
                });
            }
        });
    }
}
