//! `pos-p2p`: this device's identity, peers on the LAN, ping, file
//! transfer (`send` / `receive`), `doctor` and a self-contained `demo`.
//! Every command takes `--help`; `--json` prints one JSON object per line
//! for scripts. See docs/USAGE.md, "The command-line tool".

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::transfer::{self, Decision, Offer, Progress, TransferError};
use pos_p2p::{Identity, Metadata, NodeAddr, P2P, P2PConfig, RemoteIdentity, Router};
use serde_json::json;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

/// The application name nodes of this tool advertise and check.
const APP: &str = "pos-p2p-cli";

/// The tool's stream header: one variant per operation.
#[derive(Debug, Clone, PartialEq, Eq, Header)]
enum CliHeader {
    /// Answer `pong`.
    #[header(tag = 0)]
    Ping,
    /// A file transfer (docs/PROTOCOL.md §11) follows.
    #[header(tag = 1)]
    Transfer,
}

#[derive(Debug, Parser)]
#[command(
    name = "pos-p2p",
    version,
    about = "Peer-to-peer between your devices: find peers, ping them, send files."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone)]
struct Common {
    /// The identity file (default: `pos-p2p/identity` in the platform's
    /// config directory; created on first use, readable only by you).
    #[arg(long, global = true)]
    identity: Option<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Args, Clone)]
struct NodeArgs {
    /// Where to listen (repeatable).
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: Vec<SocketAddr>,
    /// No LAN discovery (mDNS): peers only by address.
    #[arg(long)]
    no_mdns: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show this device's identity (created on first run).
    Id {
        #[command(flatten)]
        common: Common,
    },
    /// Peers found on the LAN and added by address: name, OS, version,
    /// addresses, connected or not, RTT.
    Peers {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        node: NodeArgs,
        /// How long to look before the table, in seconds.
        #[arg(long, default_value_t = 3)]
        wait: u64,
        /// Also this peer, by its node address (what `receive` prints);
        /// repeatable.
        #[arg(long = "add", value_name = "NODE_ADDR")]
        add: Vec<String>,
        /// Keep the table up to date, every second, until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Round trips to a peer.
    Ping {
        /// `IDENTITY` (found on the LAN) or a node address
        /// (`IDENTITY?addr=IP:PORT`, what `receive` prints).
        peer: String,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        node: NodeArgs,
        /// How many.
        #[arg(long, short = 'c', default_value_t = 5)]
        count: u32,
    },
    /// Send files and directories to a peer that runs `receive`.
    Send {
        /// `IDENTITY` (found on the LAN) or a node address.
        peer: String,
        /// Files and directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Wait for one transfer and receive it.
    Receive {
        /// Where files go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Accept without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Why two devices do not see each other: interfaces, mDNS, a peer.
    Doctor {
        /// A peer to try (identity or node address).
        peer: Option<String>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Two nodes on this machine: one sends a generated tree (a large file
    /// and many small ones) to the other, verified.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Size of the large file, in MiB.
        #[arg(long, default_value_t = 256)]
        large_mib: u64,
        /// How many small files (4 KiB each).
        #[arg(long, default_value_t = 2000)]
        small: usize,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Id { common }
        | Command::Peers { common, .. }
        | Command::Ping { common, .. }
        | Command::Send { common, .. }
        | Command::Receive { common, .. }
        | Command::Doctor { common, .. }
        | Command::Demo { common, .. } => common.json,
    };
    if let Err(error) = run(cli).await {
        if json {
            println!("{}", json!({"event": "error", "error": error.to_string()}));
        } else {
            eprintln!("error: {error}");
        }
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Id { common } => {
            let (identity, path) = load_identity(&common)?;
            let me = identity.to_remote_identity();
            if common.json {
                println!("{}", json!({"identity": me.to_string(), "file": path}));
            } else {
                println!("{me}");
            }
            Ok(())
        }
        Command::Peers {
            common,
            node,
            wait,
            add,
            watch,
        } => peers(&common, &node, wait, &add, watch).await,
        Command::Ping {
            peer,
            common,
            node,
            count,
        } => ping(&common, &node, &peer, count).await,
        Command::Send {
            peer,
            paths,
            common,
            node,
        } => send(&common, &node, &peer, &paths).await,
        Command::Receive {
            dir,
            yes,
            common,
            node,
        } => receive(&common, &node, &dir, yes).await,
        Command::Doctor { peer, common, node } => doctor(&common, &node, peer.as_deref()).await,
        Command::Demo {
            common,
            large_mib,
            small,
        } => demo(&common, large_mib, small).await,
    }
}

/// The identity file: read, or created (mode 0600 on Unix).
fn load_identity(common: &Common) -> Result<(Identity, PathBuf)> {
    let path = match &common.identity {
        Some(path) => path.clone(),
        None => dirs::config_dir()
            .ok_or("no config directory on this platform: use --identity FILE")?
            .join("pos-p2p")
            .join("identity"),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("{}: not an identity file (32 bytes)", path.display()))?;
            Ok((Identity::from_bytes(&seed), path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let identity = pos_p2p::generate_identity()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path)?;
            file.write_all(identity.to_bytes().as_ref())?;
            file.sync_all()?;
            Ok((identity, path))
        }
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}

fn device_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".into())
}

fn start(identity: Identity, node: &NodeArgs) -> Result<Arc<P2P>> {
    let mut metadata = Metadata::new();
    metadata.insert("name", device_name())?;
    let config = P2PConfig::new(identity, APP, version())?
        .listen(node.listen.clone())
        .metadata(metadata)
        .discovery(!node.no_mdns);
    Ok(P2P::new(config)?)
}

fn version() -> Version {
    env!("CARGO_PKG_VERSION")
        .parse()
        .expect("the crate's version")
}

/// Connect to `peer` (a node address with addresses, or an identity found
/// on the LAN), within 15 s.
async fn reach(p2p: &P2P, peer: &str) -> Result<pos_p2p::Peer> {
    let addr: NodeAddr = peer
        .parse()
        .map_err(|e| format!("{e}: give IDENTITY or the address `receive` prints"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_error = None;
    for direct in &addr.addrs {
        match p2p.connect(*direct, Some(addr.identity)).await {
            Ok(_) => break,
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    if addr.addrs.is_empty() && !addr.relays.is_empty() {
        p2p.add_manual_peer(addr.clone(), Some(addr.identity));
    }
    loop {
        if let Some(peer) = p2p.peer(&addr.identity) {
            return Ok(peer);
        }
        if Instant::now() > deadline {
            return Err(match last_error {
                Some(e) => format!("cannot reach {}: {e}", addr.identity),
                None => format!(
                    "{} not found on the LAN in 15 s (try `pos-p2p doctor`)",
                    addr.identity
                ),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn peers(
    common: &Common,
    node: &NodeArgs,
    wait: u64,
    add: &[String],
    watch: bool,
) -> Result<()> {
    let (identity, _) = load_identity(common)?;
    let p2p = start(identity, node)?;
    for addr in add {
        if let Err(error) = reach(&p2p, addr).await {
            if common.json {
                println!("{}", json!({"event": "error", "error": error.to_string()}));
            } else {
                eprintln!("{error}");
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        if watch && terminal && !common.json {
            // Clear the screen and go home: the table in place.
            print!("\x1b[2J\x1b[H");
        }
        print_peers(&p2p, common.json, wait);
        if !watch {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    p2p.shutdown().await;
    Ok(())
}

fn print_peers(p2p: &P2P, json: bool, wait: u64) {
    let mut rows = Vec::new();
    for (id, peer) in p2p.peers().iter() {
        let meta = peer.metadata();
        rows.push(json!({
            "identity": id.to_string(),
            "name": meta.get("name"),
            "os": meta.get("os"),
            "version": peer.version().map(|v| v.to_string()),
            "addrs": peer.addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "connected": peer.is_connected(),
            "rtt_ms": peer.stats().map(|s| s.rtt.as_secs_f64() * 1000.0),
        }));
    }
    if json {
        for row in rows {
            println!("{row}");
        }
    } else if rows.is_empty() {
        println!(
            "no peers found in {wait} s (is `pos-p2p receive` running on the other device? try `pos-p2p doctor`)"
        );
    } else {
        println!(
            "{:<54} {:<16} {:<8} {:<8} {:<10} {:<9} addresses",
            "identity", "name", "os", "version", "connected", "rtt"
        );
        for row in rows {
            let rtt = row["rtt_ms"]
                .as_f64()
                .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
            println!(
                "{:<54} {:<16} {:<8} {:<8} {:<10} {:<9} {}",
                row["identity"].as_str().unwrap_or(""),
                row["name"].as_str().unwrap_or("?"),
                row["os"].as_str().unwrap_or("?"),
                row["version"].as_str().unwrap_or("?"),
                row["connected"],
                rtt,
                row["addrs"]
            );
        }
    }
}

async fn ping_once(peer: &pos_p2p::Peer) -> Result<Duration> {
    let started = Instant::now();
    let mut stream = peer.open(&CliHeader::Ping).await?;
    stream.close().await?;
    let mut pong = Vec::new();
    stream.read_to_end(&mut pong).await?;
    if pong != b"pong" {
        return Err(format!("unexpected reply {pong:?}").into());
    }
    Ok(started.elapsed())
}

async fn ping(common: &Common, node: &NodeArgs, target: &str, count: u32) -> Result<()> {
    let (identity, _) = load_identity(common)?;
    let p2p = start(identity, node)?;
    let peer = reach(&p2p, target).await?;
    for seq in 0..count {
        let rtt = ping_once(&peer).await?;
        if common.json {
            println!(
                "{}",
                json!({"event": "pong", "seq": seq, "rtt_ms": rtt.as_secs_f64() * 1000.0})
            );
        } else {
            println!(
                "pong from {}: seq={seq} time={:.2} ms",
                peer.identity(),
                rtt.as_secs_f64() * 1000.0
            );
        }
    }
    p2p.shutdown().await;
    Ok(())
}

/// Progress bars: overall and the current file. Hidden when stderr is not
/// a terminal, or with `--json`.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    file: ProgressBar,
    sizes: Vec<(String, u64)>,
    current: Option<usize>,
}

impl Bars {
    fn new(hidden: bool, offer: &Offer) -> Self {
        let multi = MultiProgress::with_draw_target(if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let total = multi.add(ProgressBar::new(offer.total_size()));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        let file = multi.add(ProgressBar::new(0));
        file.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        file.set_prefix("file");
        let sizes = offer
            .entries
            .iter()
            .map(|e| {
                let size = match e.kind {
                    transfer::EntryKind::File { size, .. } => size,
                    transfer::EntryKind::Dir => 0,
                };
                (e.path.components().join("/"), size)
            })
            .collect();
        Self {
            multi,
            total,
            file,
            sizes,
            current: None,
        }
    }

    fn update(&mut self, progress: &Progress) {
        match progress {
            Progress::Round { bytes, .. } => {
                self.total.set_length(*bytes);
                self.total.set_position(0);
            }
            Progress::Bytes { index, bytes } => {
                if self.current != Some(*index) {
                    self.current = Some(*index);
                    let (name, size) = self.sizes.get(*index).cloned().unwrap_or_default();
                    self.file.set_length(size);
                    self.file.set_position(0);
                    self.file.set_message(name);
                }
                self.file.inc(*bytes);
                self.total.inc(*bytes);
            }
            Progress::Corrupt { index, group } => {
                let name = self
                    .sizes
                    .get(*index)
                    .map(|s| s.0.clone())
                    .unwrap_or_default();
                let _ = self.multi.println(format!(
                    "{name}: group {group} did not verify, asking again"
                ));
            }
            _ => {}
        }
    }

    fn finish(&self) {
        self.file.finish_and_clear();
        self.total.finish_and_clear();
    }
}

fn mib_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

async fn send(common: &Common, node: &NodeArgs, target: &str, paths: &[PathBuf]) -> Result<()> {
    let (identity, _) = load_identity(common)?;
    let p2p = start(identity, node)?;
    let peer = reach(&p2p, target).await?;
    let hashing = Instant::now();
    let prepared = transfer::prepare(paths, &device_name()).await?;
    for skipped in prepared.skipped() {
        eprintln!(
            "skipped (not a regular file or directory): {}",
            skipped.display()
        );
    }
    let offer = prepared.offer().clone();
    if common.json {
        println!(
            "{}",
            json!({
                "event": "offering",
                "files": offer.file_count(),
                "bytes": offer.total_size(),
                "hash_seconds": hashing.elapsed().as_secs_f64(),
            })
        );
    } else {
        eprintln!(
            "offering {} files, {} bytes (hashed in {:.2} s)",
            offer.file_count(),
            offer.total_size(),
            hashing.elapsed().as_secs_f64()
        );
    }
    let mut stream = peer.open(&CliHeader::Transfer).await?;
    let mut bars = Bars::new(common.json, &offer);
    let result = transfer::send(&mut stream, &prepared, &mut |p| bars.update(&p)).await;
    bars.finish();
    if result.is_err() {
        // Tell the receiver at once: it waits for us to go.
        drop(stream);
        p2p.shutdown().await;
    }
    let report = result?;
    let wire = peer.stats().map(|s| s.bytes_sent);
    if common.json {
        println!(
            "{}",
            json!({
                "event": "sent",
                "files": report.files,
                "bytes_offered": report.bytes_offered,
                "bytes_sent": report.bytes_sent,
                "udp_bytes_sent": wire,
                "rounds": report.rounds,
                "seconds": report.elapsed.as_secs_f64(),
            })
        );
    } else {
        println!(
            "sent {} files: {} of {} bytes needed sending, in {:.2} s ({:.1} MiB/s)",
            report.files,
            report.bytes_sent,
            report.bytes_offered,
            report.elapsed.as_secs_f64(),
            mib_s(report.bytes_sent, report.elapsed)
        );
    }
    p2p.shutdown().await;
    Ok(())
}

/// Ask on the terminal (or stdin) whether to accept.
async fn ask(offer: &Offer, from: RemoteIdentity, json: bool) -> Decision {
    let summary = format!(
        "{} ({from}) offers {} files, {} bytes: {}",
        offer.sender,
        offer.file_count(),
        offer.total_size(),
        offer
            .entries
            .iter()
            .take(5)
            .map(|e| e.path.components().join("/"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if json {
        println!(
            "{}",
            json!({"event": "offer", "from": from.to_string(), "sender": offer.sender, "files": offer.file_count(), "bytes": offer.total_size()})
        );
    } else {
        eprint!("{summary}\naccept? [y/N] ");
    }
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    match line {
        Ok(Ok(line)) if matches!(line.trim(), "y" | "Y" | "yes") => Decision::Accept,
        _ => Decision::Decline("declined by the receiver".into()),
    }
}

type Outcome = Result<transfer::ReceiveReport, TransferError>;

async fn receive(common: &Common, node: &NodeArgs, dir: &Path, yes: bool) -> Result<()> {
    let (identity, _) = load_identity(common)?;
    let p2p = start(identity, node)?;
    let mut me = p2p.node_addr();
    // A node bound to one address (loopback, say) names it too.
    for addr in p2p.listen_addrs() {
        if !addr.ip().is_unspecified() && !me.addrs.contains(addr) && me.addrs.len() < 8 {
            me.addrs.push(*addr);
        }
    }
    if common.json {
        println!(
            "{}",
            json!({"event": "ready", "node_addr": me.to_string(), "dir": dir})
        );
    } else {
        eprintln!(
            "receiving into {}; on the other device run:\n  pos-p2p send '{me}' FILES...",
            dir.display()
        );
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Outcome>(1);
    let busy = Arc::new(tokio::sync::Mutex::new(()));
    let (dir, json) = (dir.to_owned(), common.json);
    let router = Router::<CliHeader>::new(p2p.clone())
        .route("ping", |_, mut stream| async move {
            stream.write_all(b"pong").await?;
            stream.close().await?;
            Ok(())
        })
        .route("transfer", move |_, mut stream| {
            let (dir, done, busy) = (dir.clone(), done_tx.clone(), busy.clone());
            async move {
                // One transfer at a time.
                let _one = busy.lock().await;
                let from = stream.remote_identity();
                let bars: Arc<Mutex<Option<Bars>>> = Arc::new(Mutex::new(None));
                let bars2 = bars.clone();
                let result = transfer::receive(
                    &mut stream,
                    &dir,
                    move |offer| {
                        *bars2.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Bars::new(json, offer));
                        let offer = offer.clone();
                        async move {
                            if yes {
                                Decision::Accept
                            } else {
                                ask(&offer, from, json).await
                            }
                        }
                    },
                    &mut |p| {
                        if let Some(bars) = bars.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
                        {
                            bars.update(&p);
                        }
                    },
                )
                .await;
                if let Some(bars) = bars.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    bars.finish();
                }
                let _ = done.send(result).await;
                Ok(())
            }
        })
        .spawn();
    let outcome = done_rx.recv().await.ok_or("the node stopped")?;
    // Closing the connection discards what the sender has not read yet:
    // after a failure (a full disk) it reads our reason only once its
    // writes fail. It disconnects when it is done; wait for that, at most
    // 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && p2p.peers().iter().any(|(_, p)| p.is_connected()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router.shutdown().await;
    let report = outcome?;
    if common.json {
        println!(
            "{}",
            json!({
                "event": "received",
                "files": report.files,
                "dirs": report.dirs,
                "bytes_offered": report.bytes_offered,
                "bytes_received": report.bytes_received,
                "bytes_kept": report.bytes_kept,
                "corrupt_groups": report.corrupt_groups,
                "rounds": report.rounds,
                "seconds": report.elapsed.as_secs_f64(),
            })
        );
    } else {
        println!(
            "received {} files and {} directories, {} bytes ({} already here), verified, in {:.2} s ({:.1} MiB/s)",
            report.files,
            report.dirs,
            report.bytes_offered,
            report.bytes_kept,
            report.elapsed.as_secs_f64(),
            mib_s(report.bytes_received, report.elapsed)
        );
    }
    Ok(())
}

async fn doctor(common: &Common, node: &NodeArgs, target: Option<&str>) -> Result<()> {
    let mut report = serde_json::Map::new();
    let interfaces: Vec<_> = if_addrs::get_if_addrs()
        .map(|list| {
            list.into_iter()
                .map(|i| json!({"name": i.name, "ip": i.ip().to_string(), "loopback": i.is_loopback()}))
                .collect()
        })
        .unwrap_or_default();
    let (identity, _) = load_identity(common)?;
    let p2p = start(identity, node)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let discovery = p2p.discovery_stats();
    report.insert("identity".into(), json!(p2p.local_identity().to_string()));
    report.insert("interfaces".into(), json!(interfaces));
    report.insert(
        "listening".into(),
        json!(
            p2p.listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
    );
    report.insert(
        "mdns".into(),
        match &discovery {
            Some(stats) => json!({"on": true, "packets_received": stats.packets, "malformed": stats.malformed, "peers_found": p2p.peers().len()}),
            None => json!({"on": false}),
        },
    );
    let relays: Vec<_> = p2p
        .relays()
        .into_iter()
        .map(|(addr, status)| json!({"relay": addr.to_string(), "status": format!("{status:?}")}))
        .collect();
    report.insert("relays".into(), json!(relays));
    if let Some(target) = target {
        let answer = match reach(&p2p, target).await {
            Ok(peer) => match ping_once(&peer).await {
                Ok(rtt) => {
                    json!({"reachable": true, "rtt_ms": rtt.as_secs_f64() * 1000.0, "path": peer.stats().map(|s| format!("{:?}", s.path))})
                }
                Err(e) => json!({"reachable": false, "error": e.to_string()}),
            },
            Err(e) => json!({"reachable": false, "error": e.to_string()}),
        };
        report.insert("peer".into(), answer);
    }
    p2p.shutdown().await;
    if common.json {
        println!("{}", serde_json::Value::Object(report));
        return Ok(());
    }
    println!("identity:   {}", report["identity"].as_str().unwrap_or(""));
    println!("listening:  {}", report["listening"]);
    println!("interfaces:");
    for i in report["interfaces"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} {}",
            i["name"].as_str().unwrap_or(""),
            i["ip"].as_str().unwrap_or("")
        );
    }
    match &discovery {
        Some(stats) if stats.packets == 0 => println!(
            "mDNS:       on, but no packet received in 3 s: multicast may be blocked (firewall, Wi-Fi client isolation), or no other device runs pos-p2p"
        ),
        Some(stats) => println!(
            "mDNS:       on, {} packets received, {} peers found",
            stats.packets, report["mdns"]["peers_found"]
        ),
        None => println!("mDNS:       off (--no-mdns)"),
    }
    if relays.is_empty() {
        println!("relays:     none configured");
    } else {
        println!("relays:     {}", json!(relays));
    }
    if let Some(peer) = report.get("peer") {
        println!("peer:       {peer}");
    }
    Ok(())
}

/// Deterministic file contents.
fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn demo(common: &Common, large_mib: u64, small: usize) -> Result<()> {
    let work = tempfile::tempdir()?;
    let (src, dst) = (work.path().join("from"), work.path().join("to"));
    let tree = src.join("demo-tree");
    let started = Instant::now();
    {
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(tree.join("small"))?;
            std::fs::create_dir_all(tree.join("empty"))?;
            let large = (large_mib * 1024 * 1024) as usize;
            let mut file = std::fs::File::create(tree.join("large.bin"))?;
            for (i, chunk) in (0..large).step_by(8 << 20).enumerate() {
                file.write_all(&fill((large - chunk).min(8 << 20), i as u64 + 1))?;
            }
            for i in 0..small {
                let dir = tree.join("small").join(format!("{:02}", i % 50));
                std::fs::create_dir_all(&dir)?;
                std::fs::write(
                    dir.join(format!("note-{i}.txt")),
                    fill(4096, 1000 + i as u64),
                )?;
            }
            Ok(())
        })
        .await??;
    }
    if !common.json {
        eprintln!(
            "generated {} MiB + {small} × 4 KiB in {:.1} s under {}",
            large_mib,
            started.elapsed().as_secs_f64(),
            work.path().display()
        );
    }
    let loopback = NodeArgs {
        listen: vec!["127.0.0.1:0".parse()?],
        no_mdns: true,
    };
    let receiver = start(pos_p2p::generate_identity()?, &loopback)?;
    let sender = start(pos_p2p::generate_identity()?, &loopback)?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Outcome>(1);
    let dst2 = dst.clone();
    let router = Router::<CliHeader>::new(receiver.clone())
        .route("transfer", move |_, mut stream| {
            let (dst, done) = (dst2.clone(), done_tx.clone());
            async move {
                let result = transfer::receive(
                    &mut stream,
                    &dst,
                    |_| async { Decision::Accept },
                    &mut |_| {},
                )
                .await;
                let _ = done.send(result).await;
                Ok(())
            }
        })
        .spawn();
    sender
        .connect(receiver.listen_addrs()[0], Some(receiver.local_identity()))
        .await?;
    let peer = sender
        .peer(&receiver.local_identity())
        .ok_or("the receiver is not known")?;
    let hashing = Instant::now();
    let prepared = transfer::prepare(std::slice::from_ref(&tree), "demo sender").await?;
    let hashed = hashing.elapsed();
    let mut stream = peer.open(&CliHeader::Transfer).await?;
    let mut bars = Bars::new(common.json, prepared.offer());
    let sent = transfer::send(&mut stream, &prepared, &mut |p| bars.update(&p)).await;
    bars.finish();
    let sent = sent?;
    let received = done_rx.recv().await.ok_or("the receiver stopped")??;
    router.shutdown().await;
    sender.shutdown().await;
    // Check the result independently of the transfer's own verification.
    let (a, b) = (tree.clone(), dst.join("demo-tree"));
    let identical = tokio::task::spawn_blocking(move || same_tree(&a, &b)).await??;
    if !identical {
        return Err("the received tree differs from the sent one".into());
    }
    let summary = json!({
        "event": "demo",
        "files": received.files,
        "dirs": received.dirs,
        "bytes": received.bytes_offered,
        "hash_seconds": hashed.as_secs_f64(),
        "transfer_seconds": sent.elapsed.as_secs_f64(),
        "mib_per_second": mib_s(sent.bytes_sent, sent.elapsed),
        "identical": identical,
    });
    if common.json {
        println!("{summary}");
    } else {
        println!(
            "sent {} files and {} directories ({:.1} MiB) between two nodes over authenticated QUIC on loopback:\n  hashed in {:.2} s, transferred and verified in {:.2} s ({:.1} MiB/s); the received tree is byte-for-byte identical",
            received.files,
            received.dirs,
            received.bytes_offered as f64 / (1024.0 * 1024.0),
            hashed.as_secs_f64(),
            sent.elapsed.as_secs_f64(),
            mib_s(sent.bytes_sent, sent.elapsed)
        );
    }
    Ok(())
}

/// Whether two trees have the same files, contents and directories.
fn same_tree(a: &Path, b: &Path) -> std::io::Result<bool> {
    fn list(
        root: &Path,
        dir: &Path,
        out: &mut HashMap<PathBuf, Option<Vec<u8>>>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
            if path.is_dir() {
                out.insert(rel, None);
                list(root, &path, out)?;
            } else {
                out.insert(rel, Some(std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let (mut x, mut y) = (HashMap::new(), HashMap::new());
    list(a, a, &mut x)?;
    list(b, b, &mut y)?;
    Ok(x == y)
}
