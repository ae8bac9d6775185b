//! iroh (the current release, relays and address lookup off, direct
//! addresses on loopback): what an application developer would pick
//! instead of pos-p2p. Built only with the benches crate's `iroh` feature,
//! so the default build and CI do not compile it.
//!
//! Everything as an application would write it with iroh's defaults, with
//! the two settings every contender shares: up to 1,024 concurrent
//! bidirectional streams, and for the idle scenario a 10 s keep-alive.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, QuicTransportConfig, RecvStream, SendStream, VarInt, presets};
use iroh::{Endpoint, EndpointAddr, TransportAddr};

use crate::{Result, idle_cpu, rss};

const ALPN: &[u8] = b"bench";

fn boxed(e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    e.to_string().into()
}

fn transport(keep_alive: bool) -> QuicTransportConfig {
    let builder =
        QuicTransportConfig::builder().max_concurrent_bidi_streams(VarInt::from_u32(1024));
    let builder = if keep_alive {
        builder.keep_alive_interval(Duration::from_secs(10))
    } else {
        builder
    };
    builder.build()
}

/// An endpoint bound to loopback only, without relays or address lookup
/// (`presets::Minimal` leaves both off); a server also accepts the
/// benchmark's ALPN.
async fn endpoint(server: bool, keep_alive: bool) -> Result<Endpoint> {
    let mut builder = Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .map_err(boxed)?
        .transport_config(transport(keep_alive));
    if server {
        builder = builder.alpns(vec![ALPN.to_vec()]);
    }
    builder.bind().await.map_err(boxed)
}

/// A client and a server endpoint, and the server's address (its identity
/// and its one loopback socket).
async fn endpoints(keep_alive: bool) -> Result<(Endpoint, Endpoint, EndpointAddr)> {
    let server = endpoint(true, keep_alive).await?;
    let client = endpoint(false, keep_alive).await?;
    let socket: SocketAddr = *server
        .bound_sockets()
        .first()
        .ok_or("the iroh server bound no socket")?;
    let addr = EndpointAddr::from_parts(server.id(), [TransportAddr::Ip(socket)]);
    Ok((client, server, addr))
}

pub(crate) struct Pair {
    client: Endpoint,
    server: Endpoint,
    addr: EndpointAddr,
    conn: Connection,
}

impl Pair {
    pub(crate) async fn start() -> Result<Self> {
        let (client, server, addr) = endpoints(false).await?;
        tokio::spawn(serve(server.clone()));
        let conn = client.connect(addr.clone(), ALPN).await.map_err(boxed)?;
        Ok(Self {
            client,
            server,
            addr,
            conn,
        })
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
            return Err("iroh server miscounted".into());
        }
        Ok(())
    }

    /// `n` dials, each timed from the dial to ready; `pause` (untimed)
    /// after each, before the close.
    pub(crate) async fn connect_latencies(&self, n: usize, pause: Duration) -> Result<Vec<f64>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let conn = self
                .client
                .connect(self.addr.clone(), ALPN)
                .await
                .map_err(boxed)?;
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
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(handle(send, recv));
            }
        });
    }
}

/// The same server as quinn's and pos-p2p's: op 0 counts a bulk upload,
/// op 1 echoes a 100-byte request.
async fn handle(mut send: SendStream, mut recv: RecvStream) {
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
    // Finish and let go, as the other servers do.
    let _ = send.finish();
}

/// Memory per idle connection and idle CPU: one client endpoint with `n`
/// connections to one server endpoint, in this process, with the same
/// 10 s keep-alive as pos-p2p.
pub(crate) async fn idle_connections(n: usize, idle: Duration) -> Result<(usize, f64)> {
    let (client, server, addr) = endpoints(true).await?;
    tokio::spawn(serve(server.clone()));
    let before = rss();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(client.connect(addr.clone(), ALPN).await.map_err(boxed)?);
    }
    let bytes = rss().saturating_sub(before);
    let cpu = idle_cpu(idle).await;
    for conn in &conns {
        conn.close(VarInt::from_u32(0), b"done");
    }
    client.close().await;
    server.close().await;
    Ok((bytes, cpu))
}
