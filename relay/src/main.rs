//! `pos-p2p-relay`: run a relay for pos-p2p nodes.
//!
//! ```text
//! cargo run --release -p pos-p2p-relay -- --listen 0.0.0.0:3340 --identity relay.key
//! ```
//!
//! It prints `relay IDENTITY@ADDRESS` once it listens: what nodes configure
//! (`P2PConfig::relay`). The identity is kept in the `--identity` file
//! (created on first start, readable by its owner only), so nodes' pins
//! survive restarts.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use pos_p2p_protocol::relay::{Access, RelayConfig};
use pos_p2p_protocol::{Identity, RemoteIdentity};

/// A pos-p2p relay: forwards the end-to-end encrypted QUIC datagrams of
/// nodes that cannot reach each other directly, over TLS on TCP.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to accept nodes' TCP connections.
    #[arg(long, default_value = "0.0.0.0:3340")]
    listen: SocketAddr,
    /// The relay's identity (32-byte ed25519 secret key, hex), created if
    /// missing.
    #[arg(long, default_value = "pos-p2p-relay.key")]
    identity: PathBuf,
    /// Serve only these node identities (repeat the flag); default: any.
    #[arg(long = "allow", value_name = "IDENTITY")]
    allow: Vec<RemoteIdentity>,
    /// The most nodes connected at once.
    #[arg(long, default_value_t = 4096)]
    max_clients: usize,
    /// What each node may send through the relay, in bytes a second.
    #[arg(long, default_value_t = 1 << 20)]
    bytes_per_second: u32,
    /// How much above that rate a node may send at once, in bytes.
    #[arg(long, default_value_t = 256 << 10)]
    burst: u32,
    /// The most bytes queued for one node that does not read.
    #[arg(long, default_value_t = 256 << 10)]
    queue_bytes: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pos-p2p-relay: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    let identity = load_or_create(&args.identity)?;
    let mut config = RelayConfig::default();
    if !args.allow.is_empty() {
        config.access = Access::Allow(args.allow.iter().copied().collect::<BTreeSet<_>>());
    }
    config.max_clients = args.max_clients;
    config.bytes_per_second = args.bytes_per_second;
    config.burst = args.burst;
    config.queue_bytes = args.queue_bytes;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let relay = pos_p2p_relay::Relay::serve(listener, &identity, config)?;
        println!("relay {}", relay.relay_addr());
        std::io::stdout().flush()?;
        tokio::signal::ctrl_c().await?;
        let stats = relay.stats();
        relay.shutdown().await;
        eprintln!(
            "pos-p2p-relay: stopped; forwarded {} datagrams ({} bytes)",
            stats.forwarded, stats.forwarded_bytes
        );
        Ok(())
    })
}

/// The identity in `path`, or a new one written there (owner-only).
fn load_or_create(path: &Path) -> std::io::Result<Identity> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key(text.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a 64-digit hex key", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(file, "{hex}")?;
            Ok(Identity::from_bytes(&seed))
        }
        Err(e) => Err(e),
    }
}

fn parse_key(text: &str) -> Option<Identity> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Identity::from_bytes(&seed))
}
