//! A pos-p2p relay server (docs/PROTOCOL.md §10), on tokio.
//!
//! Every decision (TLS, who may connect, what is forwarded, every limit) is
//! made by the sans-IO [`RelayEndpoint`] of `pos-p2p-protocol`; this crate
//! accepts TCP connections and moves bytes between them and it, and
//! answers address probes (STUN Binding, §10.6) on UDP at the same address
//! through the sans-IO [`ProbeResponder`]. Run it as
//! a binary (`cargo run -p pos-p2p-relay -- --help`) or embed it:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use pos_p2p_protocol::Identity;
//! use pos_p2p_protocol::relay::RelayConfig;
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3340").await?;
//! let identity = Identity::from_bytes(&[7; 32]); // keep a real one on disk
//! let relay = pos_p2p_relay::Relay::serve(listener, &identity, RelayConfig::default())?;
//! // Nodes add this with `P2PConfig::relay` / `P2P::add_relay`.
//! println!("relay {}", relay.relay_addr());
//! relay.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pos_p2p_protocol::node::RelayAddr;
use pos_p2p_protocol::relay::{ConnId, ProbeResponder, RelayConfig, RelayEndpoint, RelayStats};
use pos_p2p_protocol::{Identity, RemoteIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

/// How often handshake deadlines are checked.
const TICK: Duration = Duration::from_millis(500);
/// The read buffer of a connection.
const READ_BUF: usize = 16 << 10;

#[derive(Debug)]
struct Inner {
    endpoint: RelayEndpoint,
    /// Each connection's task, woken when it has bytes to write.
    tasks: HashMap<ConnId, Arc<Notify>>,
}

impl Inner {
    /// Wake the tasks of connections with something to write or to close.
    fn wake_ready(&mut self) {
        while let Some(conn) = self.endpoint.poll_ready() {
            if let Some(task) = self.tasks.get(&conn) {
                task.notify_one();
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    probes: Mutex<ProbeResponder>,
    stop: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running relay. Dropping it leaves it running; [`Relay::shutdown`]
/// stops it.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    identity: RemoteIdentity,
    accept: tokio::task::JoinHandle<()>,
    probe_task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Serve on `listener` with `identity` and these limits, on the current
    /// tokio runtime; address probes are answered on a UDP socket bound to
    /// the listener's address (fails if that cannot be bound).
    pub fn serve(
        listener: TcpListener,
        identity: &Identity,
        config: RelayConfig,
    ) -> io::Result<Self> {
        let endpoint = RelayEndpoint::new(identity, config).map_err(io::Error::other)?;
        let local_addr = listener.local_addr()?;
        let udp = std::net::UdpSocket::bind(local_addr)?;
        udp.set_nonblocking(true)?;
        let udp = UdpSocket::from_std(udp)?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                endpoint,
                tasks: HashMap::new(),
            }),
            probes: Mutex::new(ProbeResponder::new(Instant::now())),
            stop: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        let probe_task = tokio::spawn(answer_probes(shared.clone(), udp));
        tokio::spawn(ticker(shared.clone()));
        Ok(Self {
            shared,
            local_addr,
            identity: identity.to_remote_identity(),
            accept,
            probe_task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its identity, which nodes pin.
    pub fn identity(&self) -> RemoteIdentity {
        self.identity
    }

    /// What nodes configure to use it: its identity and address.
    pub fn relay_addr(&self) -> RelayAddr {
        RelayAddr {
            identity: self.identity,
            addr: self.local_addr,
        }
    }

    /// What it counted.
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().endpoint.stats()
    }

    /// Address probes answered.
    pub fn probes_answered(&self) -> u64 {
        self.shared
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered()
    }

    /// TCP connections held now (handshaking or serving).
    pub fn connections(&self) -> usize {
        self.shared.lock().endpoint.connections()
    }

    /// Close every connection (each node hears `Close(ShuttingDown)`) and
    /// stop accepting.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.probe_task.abort();
        self.shared.stop.notify_waiters();
        {
            let mut inner = self.shared.lock();
            inner.endpoint.shutdown();
            inner.wake_ready();
        }
        // Let the connections write their Close frames.
        for _ in 0..100 {
            if self.shared.lock().tasks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Answer address probes on `udp` until the relay stops.
async fn answer_probes(shared: Arc<Shared>, udp: UdpSocket) {
    let mut buf = vec![0; 2048];
    loop {
        let (len, from) = match udp.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors from earlier sends (a prober that went away).
            Err(_) => continue,
        };
        let answer = shared
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer(Instant::now(), from, &buf[..len]);
        if let Some(answer) = answer {
            let _ = udp.send_to(&answer, from).await;
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait, go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let task = {
            let mut inner = shared.lock();
            let Some(conn) = inner.endpoint.connect(Instant::now(), addr) else {
                // Too many handshakes under way: closed at once.
                continue;
            };
            let notify = Arc::new(Notify::new());
            inner.tasks.insert(conn, notify.clone());
            (conn, notify)
        };
        tokio::spawn(connection(shared.clone(), task.0, task.1, stream));
    }
}

async fn ticker(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = shared.stop.notified() => return,
        }
        let mut inner = shared.lock();
        if inner
            .endpoint
            .poll_timeout()
            .is_some_and(|at| at <= Instant::now())
        {
            inner.endpoint.handle_timeout(Instant::now());
            inner.wake_ready();
        }
    }
}

async fn connection(shared: Arc<Shared>, conn: ConnId, notify: Arc<Notify>, stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0; READ_BUF];
    let mut out = Vec::new();
    loop {
        let close = {
            let mut inner = shared.lock();
            out.clear();
            let close = inner.endpoint.poll_write(conn, &mut out);
            inner.wake_ready();
            close
        };
        if !out.is_empty() && wr.write_all(&out).await.is_err() {
            break;
        }
        if close {
            let _ = wr.shutdown().await;
            break;
        }
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut inner = shared.lock();
                    inner.endpoint.handle_bytes(Instant::now(), conn, &buf[..n]);
                    inner.wake_ready();
                }
            },
            () = notify.notified() => {}
        }
    }
    let mut inner = shared.lock();
    inner.endpoint.remove(conn);
    inner.tasks.remove(&conn);
}
