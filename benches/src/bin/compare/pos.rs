//! pos-p2p's side: two nodes on loopback (tokio adapter), a server that
//! answers the benchmark's operations by stream header.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::tunnel::{LibraryId, LibraryKeys};
use pos_p2p::{
    HandlerError, Identity, P2P, P2PConfig, Peer, RemoteIdentity, Router, RouterHandle,
    RuntimeKind, Tunnel, UnicastStream,
};

use crate::{Result, idle_cpu, rss};

/// The benchmark's operations.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Read everything, answer with the byte count.
    Sink,
    /// Read 100 bytes, answer 100 bytes.
    Echo,
    /// A tunnel, then as `Sink` inside it.
    TunnelSink,
    /// A tunnel handshake, then close.
    TunnelOnly,
}

impl Header for Op {
    fn encode(&self, w: &mut Writer) {
        w.tag(*self as u64);
    }

    fn decode(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        Ok(match r.tag()? {
            0 => Op::Sink,
            1 => Op::Echo,
            2 => Op::TunnelSink,
            3 => Op::TunnelOnly,
            tag => return Err(r.unknown_tag("Op", tag)),
        })
    }
}

const LIBRARY: LibraryId = LibraryId::from_bytes([0xbe; 16]);

/// A library member's keys, as an application holds them: made once
/// (deriving an ed25519 public key is a scalar multiplication).
struct Keys(Identity);

/// The keys of instance `n`, made once per process.
fn keys(n: u8) -> &'static Keys {
    static KEYS: std::sync::OnceLock<[Keys; 2]> = std::sync::OnceLock::new();
    &KEYS.get_or_init(|| [1, 2].map(|n| Keys(Identity::from_bytes(&[n; 32]))))[usize::from(n - 1)]
}

impl LibraryKeys for Keys {
    fn local_instance(&self, _: &LibraryId) -> Option<Identity> {
        Some(self.0.clone())
    }

    fn is_member(&self, library: &LibraryId, _: &RemoteIdentity) -> bool {
        *library == LIBRARY
    }
}

/// Flow-control windows for pos-p2p: its defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Windows {
    Ours,
}

fn config(n: u8) -> Result<P2PConfig> {
    let mut config = P2PConfig::new(
        Identity::from_bytes(&[n; 32]),
        "bench",
        Version::new(1, 0, 0),
    )?
    .listen(["127.0.0.1:0".parse()?])
    .discovery(false);
    config.node.limits.max_connections = 4096;
    config.node.limits.max_incoming_handshakes = 4096;
    Ok(config)
}

pub(crate) struct Pair {
    client: Arc<P2P>,
    server: Arc<P2P>,
    router: Option<RouterHandle>,
}

/// How the server takes its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serving {
    /// An accept loop that spawns a tokio task per stream, as an
    /// application writes it by hand.
    AcceptLoop,
    /// A [`Router`] with one handler for every operation.
    Router,
}

impl Pair {
    pub(crate) async fn start(windows: Windows) -> Result<Self> {
        Self::start_serving(windows, Serving::AcceptLoop).await
    }

    pub(crate) async fn start_serving(_windows: Windows, serving: Serving) -> Result<Self> {
        let server = P2P::with_runtime(config(2)?, RuntimeKind::Tokio)?;
        let client = P2P::with_runtime(config(1)?, RuntimeKind::Tokio)?;
        let router = match serving {
            Serving::AcceptLoop => {
                tokio::spawn(serve(server.clone()));
                None
            }
            Serving::Router => Some(
                Router::<Op>::new(server.clone())
                    .fallback(|op, stream| async move {
                        handle_op(op, stream)
                            .await
                            .map_err(|e| HandlerError::from(e.to_string()))
                    })
                    .spawn(),
            ),
        };
        client.add_peer(server.local_identity(), server.listen_addrs()[0]);
        client
            .connect(server.listen_addrs()[0], Some(server.local_identity()))
            .await?;
        Ok(Self {
            client,
            server,
            router,
        })
    }

    pub(crate) async fn shutdown(self) {
        self.client.shutdown().await;
        if let Some(router) = self.router {
            router.shutdown().await;
        }
        self.server.shutdown().await;
    }

    /// The server, as the client's peer.
    fn server_peer(&self) -> Result<Peer> {
        Ok(self
            .client
            .peers()
            .get(&self.server.local_identity())
            .ok_or("server unknown")?)
    }

    async fn stream(&self) -> Result<UnicastStream> {
        let peer = self.server_peer()?;
        Ok(peer.new_stream().await?)
    }

    /// Send `len` bytes on one stream (through a Tunnel if `tunnel`), and
    /// check the server counted them all.
    pub(crate) async fn bulk(&self, len: usize, tunnel: bool) -> Result<()> {
        let mut stream = self.stream().await?;
        let chunk = vec![0x5au8; 1 << 20];
        let count = if tunnel {
            stream.write_all(&Op::TunnelSink.to_bytes()).await?;
            let mut tunnel = Tunnel::initiator(stream, LIBRARY, keys(1)).await?;
            send(&mut tunnel, &chunk, len).await?
        } else {
            stream.write_all(&Op::Sink.to_bytes()).await?;
            send(&mut stream, &chunk, len).await?
        };
        if count != len as u64 {
            return Err(format!("server counted {count} of {len} bytes").into());
        }
        Ok(())
    }

    /// Connect latencies of `n` fresh connections, in µs.
    /// `n` dials, each timed from the dial to ready; `pause` (untimed)
    /// after each, before the disconnect.
    pub(crate) async fn connect_latencies(&self, n: usize, pause: Duration) -> Result<Vec<f64>> {
        let server_id = self.server.local_identity();
        let addr = self.server.listen_addrs()[0];
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            self.client.disconnect(&server_id, "next");
            // Not timed: wait until both sides forgot the old connection,
            // or fail: timing a dial to a peer still connected would time
            // nothing.
            let mut forgotten = false;
            for _ in 0..10_000 {
                let client_sees = self
                    .client
                    .peers()
                    .get(&server_id)
                    .is_some_and(|p| p.is_connected());
                let server_sees = self
                    .server
                    .peers()
                    .get(&self.client.local_identity())
                    .is_some_and(|p| p.is_connected());
                if !client_sees && !server_sees {
                    forgotten = true;
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if !forgotten {
                return Err("the previous connection was not torn down within 2 s".into());
            }
            let t = Instant::now();
            self.client.connect(addr, Some(server_id)).await?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(samples)
    }

    /// `n` request/response exchanges, `parallel` at a time.
    pub(crate) async fn requests(&self, n: usize, parallel: usize) -> Result<()> {
        let peer = self.server_peer()?;
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..parallel {
            let peer = peer.clone();
            let share = n / parallel + usize::from(worker < n % parallel);
            tasks.spawn(async move {
                let mut request = Op::Echo.to_bytes().to_vec();
                request.extend_from_slice(&[7u8; 100]);
                for _ in 0..share {
                    let mut stream = peer.new_stream().await.map_err(|e| e.to_string())?;
                    stream
                        .write_all(&request)
                        .await
                        .map_err(|e| e.to_string())?;
                    stream.close().await.map_err(|e| e.to_string())?;
                    let mut reply = Vec::with_capacity(100);
                    stream
                        .read_to_end(&mut reply)
                        .await
                        .map_err(|e| e.to_string())?;
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

    /// `n` tunnel handshakes over the established connection, `parallel`
    /// at a time (1: one after another).
    pub(crate) async fn tunnel_handshakes(&self, n: usize, parallel: usize) -> Result<()> {
        let peer = self.server_peer()?;
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..parallel {
            let peer = peer.clone();
            let share = n / parallel + usize::from(worker < n % parallel);
            tasks.spawn(async move {
                for _ in 0..share {
                    let mut stream = peer.new_stream().await.map_err(|e| e.to_string())?;
                    stream
                        .write_all(&Op::TunnelOnly.to_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    let tunnel = Tunnel::initiator(stream, LIBRARY, keys(1))
                        .await
                        .map_err(|e| e.to_string())?;
                    drop(tunnel);
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

async fn send<S>(stream: &mut S, chunk: &[u8], len: usize) -> Result<u64>
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        stream.write_all(&chunk[..n]).await?;
        sent += n;
    }
    stream.close().await?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await?;
    Ok(u64::from_be_bytes(count))
}

async fn serve(p2p: Arc<P2P>) {
    while let Some(stream) = p2p.accept().await {
        tokio::spawn(async move {
            let _ = handle(stream).await;
        });
    }
}

async fn handle(mut stream: UnicastStream) -> Result<()> {
    let op = Op::from_stream(&mut stream).await?;
    handle_op(op, stream).await
}

async fn handle_op(op: Op, mut stream: UnicastStream) -> Result<()> {
    match op {
        Op::Sink => sink(&mut stream).await,
        Op::Echo => {
            let mut request = [0u8; 100];
            stream.read_exact(&mut request).await?;
            stream.write_all(&request).await?;
            stream.close().await?;
            Ok(())
        }
        Op::TunnelSink => {
            let mut tunnel = Tunnel::responder(stream, keys(2)).await?;
            sink(&mut tunnel).await
        }
        Op::TunnelOnly => {
            let mut tunnel = Tunnel::responder(stream, keys(2)).await?;
            tunnel.close().await?;
            Ok(())
        }
    }
}

async fn sink<S>(stream: &mut S) -> Result<()>
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 1 << 20];
    let mut count = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        count += n as u64;
    }
    stream.write_all(&count.to_be_bytes()).await?;
    stream.close().await?;
    Ok(())
}

/// Memory per idle connection and idle CPU: one server node and `n` client
/// nodes in this process (pos-p2p keeps one connection per pair of nodes,
/// so `n` connections need `n` client identities; each client node also
/// brings its own socket, driver task and buffers, which the figure
/// includes).
pub(crate) async fn idle_connections(n: usize, idle: Duration) -> Result<(usize, f64)> {
    let mut server_config = config(200)?;
    // Every client is a stranger on 127.0.0.1: lift the per-address
    // limits (32 connections, 8 handshakes) that protect a real node from
    // one address opening many identities.
    server_config.node.limits.max_connections_per_source = n + 1;
    server_config.node.limits.max_handshakes_per_source = n + 1;
    let server = P2P::with_runtime(server_config, RuntimeKind::Tokio)?;
    let before = rss();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut cfg = P2PConfig::new(
            Identity::from_bytes(&seed(i)),
            "bench",
            Version::new(1, 0, 0),
        )?
        .listen(["127.0.0.1:0".parse()?])
        .discovery(false);
        cfg.node.limits.max_connections = 4;
        let client = P2P::with_runtime(cfg, RuntimeKind::Tokio)?;
        client
            .connect(server.listen_addrs()[0], Some(server.local_identity()))
            .await?;
        clients.push(client);
    }
    // The server finishes each handshake half a round trip after its client.
    let mut connected = 0;
    for _ in 0..500 {
        connected = server.peers().values().filter(|p| p.is_connected()).count();
        if connected == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if connected != n {
        return Err(format!("{connected} of {n} connections up").into());
    }
    let bytes = rss().saturating_sub(before);
    let cpu = idle_cpu(idle).await;
    for client in clients {
        client.shutdown().await;
    }
    server.shutdown().await;
    Ok((bytes, cpu))
}

fn seed(i: usize) -> [u8; 32] {
    let mut seed = [0x77u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    seed
}
