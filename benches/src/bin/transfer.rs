//! File transfer side by side on loopback, in one run: a large file and a
//! tree of many small files, sent by
//!
//! - `pos-p2p` (the CLI: `receive --yes` and `send`, two processes),
//! - `sendme` (iroh's, `send --relay disabled --ticket-type addresses` and
//!   `receive --relay disabled`, two processes), when its binary is given
//!   (`benches/transfer.sh` installs it with cargo),
//! - `pos_p2p::transfer` in one process (two nodes), and
//! - the raw pos-p2p stream in one process (two nodes; the large file
//!   only): the file read in 4 MiB chunks and written to one stream, the
//!   receiver writing what arrives to a file and syncing it. No hashing,
//!   no verification: what the transfer protocol costs on top.
//!
//! Every contender moves the same files from the same page-cached source
//! into an empty directory, and each round runs the contenders in a
//! rotated order (so a figure does not depend on who ran first). Reported:
//! the median of the rounds' wall time from the start of the send until
//! the files are in place (for the CLIs: process start, hashing, connect,
//! transfer, verify, write), the transfer alone (from "hashed" to "in
//! place"), and CPU seconds of both sides together per GiB moved.
//! `--smoke` (CI) moves a few MiB once and checks the bytes, without
//! timing anything.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{AsyncReadExt, AsyncWriteExt};
use pos_p2p::codec::{DecodeError, Reader, Writer};
use pos_p2p::prelude::*;
use pos_p2p::semver::Version;
use pos_p2p::transfer::{self, Decision};
use pos_p2p::{Identity, P2P, P2PConfig, Router, RuntimeKind};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

#[derive(Debug, Parser)]
#[command(about = "pos-p2p file transfer vs sendme vs the raw pos-p2p stream, on loopback")]
struct Args {
    /// The large file's size, MiB.
    #[arg(long, default_value_t = 1024)]
    large_mib: u64,
    /// How many small files in the tree.
    #[arg(long, default_value_t = 10_000)]
    small: usize,
    /// Each small file's size, bytes.
    #[arg(long, default_value_t = 4096)]
    small_size: usize,
    /// Rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The `pos-p2p` binary (default: next to this one).
    #[arg(long)]
    pos_p2p: Option<PathBuf>,
    /// The `sendme` binary; without it sendme is left out.
    #[arg(long)]
    sendme: Option<PathBuf>,
    /// Where to put the workloads (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only the named workload: `large` or `tree`.
    #[arg(long)]
    only: Option<String>,
    /// CI: a few MiB, one round, bytes checked, nothing timed.
    #[arg(long)]
    smoke: bool,
}

/// One run of one contender on one workload.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From the start of the send to the files in place.
    total: Duration,
    /// From "hashed, offered" to the files in place.
    transfer: Duration,
    /// CPU of both sides, user + system.
    cpu: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Contender {
    PosP2pCli,
    Sendme,
    TransferInProcess,
    RawStream,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::PosP2pCli => "pos-p2p send/receive (CLI)",
            Contender::Sendme => "sendme send/receive",
            Contender::TransferInProcess => "pos_p2p::transfer, one process",
            Contender::RawStream => "raw pos-p2p stream, one process",
        }
    }
}

struct Workload {
    name: &'static str,
    /// The path given to the senders.
    path: PathBuf,
    bytes: u64,
    files: usize,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.large_mib = 8;
        args.small = 200;
        args.rounds = 1;
    }
    let work = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    };
    let pos_p2p = match &args.pos_p2p {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory")?
            .join("pos-p2p"),
    };
    if !pos_p2p.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release -p pos-p2p-cli) or give --pos-p2p",
            pos_p2p.display()
        )
        .into());
    }
    // Absolute: sendme runs in its own working directory.
    let pos_p2p = pos_p2p.canonicalize()?;
    if let Some(sendme) = &mut args.sendme {
        *sendme = sendme.canonicalize()?;
    }
    eprintln!("generating the workloads under {}", work.path().display());
    let workloads = generate(work.path(), &args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results: BTreeMap<(&str, Contender), Vec<Sample>> = BTreeMap::new();
    for workload in &workloads {
        let mut kept = Vec::new();
        let mut contenders = vec![Contender::PosP2pCli];
        if args.sendme.is_some() {
            contenders.push(Contender::Sendme);
        }
        contenders.push(Contender::TransferInProcess);
        if workload.files == 1 {
            contenders.push(Contender::RawStream);
        }
        for round in 0..args.rounds {
            // Rotate: each contender runs first in some round.
            let mut order = contenders.clone();
            order.rotate_left(round % contenders.len());
            for &contender in &order {
                let dst = work.path().join(format!("dst-{round}-{contender:?}"));
                std::fs::create_dir_all(&dst)?;
                let sample = match contender {
                    Contender::PosP2pCli => cli_pos_p2p(&pos_p2p, work.path(), workload, &dst)?,
                    Contender::Sendme => {
                        cli_sendme(args.sendme.as_deref().ok_or("no sendme")?, workload, &dst)?
                    }
                    Contender::TransferInProcess => {
                        runtime.block_on(in_process_transfer(workload, &dst))?
                    }
                    Contender::RawStream => runtime.block_on(raw_stream(workload, &dst))?,
                };
                check(workload, &dst, contender)?;
                if workload.files == 1 {
                    std::fs::remove_dir_all(&dst)?;
                } else {
                    // Kept until the workload's end: ext4 allocates inodes
                    // slowly next to thousands deleted seconds ago (it
                    // avoids reusing them), which would slow whoever runs
                    // next.
                    kept.push(dst);
                }
                eprintln!(
                    "  {:<6} round {} {:<34} total {:>7.3} s  transfer {:>7.3} s  cpu {:>7.3} s",
                    workload.name,
                    round + 1,
                    contender.name(),
                    sample.total.as_secs_f64(),
                    sample.transfer.as_secs_f64(),
                    sample.cpu.as_secs_f64()
                );
                results
                    .entry((workload.name, contender))
                    .or_default()
                    .push(sample);
            }
        }
        for dst in kept {
            std::fs::remove_dir_all(dst)?;
        }
    }
    if args.smoke {
        println!("smoke: every contender moved every byte");
        return Ok(());
    }
    report(&workloads, &results);
    Ok(())
}

/// Deterministic, incompressible bytes.
fn fill(out: &mut [u8], seed: u64) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn generate(root: &Path, args: &Args) -> Result<Vec<Workload>> {
    let mut out = Vec::new();
    if args.only.as_deref().is_none_or(|o| o == "large") {
        let dir = root.join("src-large");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("large.bin");
        let mut file = std::fs::File::create(&path)?;
        let mut chunk = vec![0u8; 8 << 20];
        let len = args.large_mib << 20;
        let mut written = 0;
        let mut seed = 1;
        while written < len {
            let n = (len - written).min(chunk.len() as u64) as usize;
            fill(&mut chunk[..n], seed);
            file.write_all(&chunk[..n])?;
            written += n as u64;
            seed += 1;
        }
        file.sync_all()?;
        out.push(Workload {
            name: "large",
            path,
            bytes: len,
            files: 1,
        });
    }
    if args.only.as_deref().is_none_or(|o| o == "tree") {
        let top = root.join("src-tree").join("tree");
        let mut data = vec![0u8; args.small_size];
        for i in 0..args.small {
            let dir = top.join(format!("{:03}", i % 100));
            std::fs::create_dir_all(&dir)?;
            fill(&mut data, 1_000_000 + i as u64);
            std::fs::write(dir.join(format!("{i}.bin")), &data)?;
        }
        out.push(Workload {
            name: "tree",
            path: top,
            bytes: (args.small * args.small_size) as u64,
            files: args.small,
        });
    }
    Ok(out)
}

/// Where a contender puts the workload under its destination directory.
fn received_path(workload: &Workload, dst: &Path) -> PathBuf {
    dst.join(workload.path.file_name().expect("a name"))
}

/// The received files are the sent ones, byte for byte.
fn check(workload: &Workload, dst: &Path, contender: Contender) -> Result<()> {
    let got = received_path(workload, dst);
    let same = if workload.files == 1 {
        same_file(&workload.path, &got)?
    } else {
        let mut same = true;
        let mut count = 0;
        for sub in std::fs::read_dir(&workload.path)? {
            let sub = sub?.path();
            let name = sub.file_name().ok_or("no name")?;
            for file in std::fs::read_dir(&sub)? {
                let file = file?.path();
                let other = got.join(name).join(file.file_name().ok_or("no name")?);
                same &= same_file(&file, &other)?;
                count += 1;
            }
        }
        same && count == workload.files
    };
    if !same {
        return Err(format!(
            "{}: {} differs after the transfer",
            contender.name(),
            workload.name
        )
        .into());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let (mut x, mut y) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if x.metadata()?.len() != y.metadata()?.len() {
        return Ok(false);
    }
    let (mut p, mut q) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = x.read(&mut p)?;
        if n == 0 {
            return Ok(true);
        }
        y.read_exact(&mut q[..n])?;
        if p[..n] != q[..n] {
            return Ok(false);
        }
    }
}

/// CPU time (user + system, clock ticks of 10 ms) of this process, or of
/// its children that were waited for.
fn cpu(children: bool) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, cutime, cstime: the 14th to 17th fields of the line.
    let at = if children { [13, 14] } else { [11, 12] };
    let ticks: u64 = at
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Read `child`'s stdout lines until one satisfies `found`; returns it.
fn wait_line(lines: &mut impl BufRead, what: &str, found: impl Fn(&str) -> bool) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Err(format!("ended before {what}").into());
        }
        if found(&line) {
            return Ok(line.trim().to_owned());
        }
    }
}

fn reap(mut child: Child) -> Result<std::process::ExitStatus> {
    Ok(child.wait()?)
}

const LOOPBACK: [&str; 4] = ["--listen", "127.0.0.1:0", "--no-mdns", "--json"];

fn cli_pos_p2p(bin: &Path, work: &Path, workload: &Workload, dst: &Path) -> Result<Sample> {
    let cpu_before = cpu(true);
    let mut receiver = Command::new(bin)
        .arg("receive")
        .args(LOOPBACK)
        .arg("--identity")
        .arg(work.join("receiver-identity"))
        .arg("--yes")
        .arg("--dir")
        .arg(dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut receiver_out = BufReader::new(receiver.stdout.take().ok_or("stdout")?);
    let ready = wait_line(&mut receiver_out, "ready", |l| l.contains("\"ready\""))?;
    let ready: serde_json::Value = serde_json::from_str(&ready)?;
    let addr = ready["node_addr"]
        .as_str()
        .ok_or("no node_addr")?
        .to_owned();
    let started = Instant::now();
    let mut sender = Command::new(bin)
        .arg("send")
        .args(LOOPBACK)
        .arg("--identity")
        .arg(work.join("sender-identity"))
        .arg(&addr)
        .arg(&workload.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut sender_out = BufReader::new(sender.stdout.take().ok_or("stdout")?);
    wait_line(&mut sender_out, "offering", |l| l.contains("\"offering\""))?;
    let offered = Instant::now();
    wait_line(&mut receiver_out, "received", |l| {
        l.contains("\"received\"")
    })?;
    let done = Instant::now();
    let (r, s) = (reap(receiver)?, reap(sender)?);
    if !r.success() || !s.success() {
        return Err(format!("pos-p2p exited with {r} / {s}").into());
    }
    Ok(Sample {
        total: done - started,
        transfer: done - offered,
        cpu: cpu(true) - cpu_before,
    })
}

fn cli_sendme(bin: &Path, workload: &Workload, dst: &Path) -> Result<Sample> {
    let cpu_before = cpu(true);
    // sendme keeps its store in the working directory: the sender's beside
    // the source, the receiver's in the destination (it exports from there).
    let send_dir = dst.join("..").join(format!(
        "sendme-send-{}",
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::create_dir_all(&send_dir)?;
    let started = Instant::now();
    let mut sender = Command::new(bin)
        .args([
            "send",
            "--relay",
            "disabled",
            "--ticket-type",
            "addresses",
            "--no-progress",
        ])
        .arg(&workload.path)
        .current_dir(&send_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut sender_out = BufReader::new(sender.stdout.take().ok_or("stdout")?);
    let line = wait_line(&mut sender_out, "the ticket", |l| {
        l.split_whitespace().any(|w| w.starts_with("blob"))
    })?;
    let ticket = line
        .split_whitespace()
        .find(|w| w.starts_with("blob"))
        .ok_or("no ticket")?
        .to_owned();
    let offered = Instant::now();
    let receiver = Command::new(bin)
        .args(["receive", "--relay", "disabled", "--no-progress"])
        .arg(&ticket)
        .current_dir(dst)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let status = reap(receiver)?;
    let done = Instant::now();
    let _ = sender.kill();
    let _ = reap(sender)?;
    let _ = std::fs::remove_dir_all(&send_dir);
    if !status.success() {
        return Err(format!("sendme receive exited with {status}").into());
    }
    Ok(Sample {
        total: done - started,
        transfer: done - offered,
        cpu: cpu(true) - cpu_before,
    })
}

/// The bench's one operation header for the in-process contenders.
#[derive(Debug, Clone, Copy)]
enum Op {
    Transfer,
    Raw,
}

impl Header for Op {
    fn encode(&self, w: &mut Writer) {
        w.tag(*self as u64);
    }

    fn decode(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        Ok(match r.tag()? {
            0 => Op::Transfer,
            1 => Op::Raw,
            tag => return Err(r.unknown_tag("Op", tag)),
        })
    }
}

fn node(n: u8) -> Result<Arc<P2P>> {
    let config = P2PConfig::new(
        Identity::from_bytes(&[n; 32]),
        "bench-transfer",
        Version::new(1, 0, 0),
    )?
    .listen(["127.0.0.1:0".parse()?])
    .discovery(false);
    Ok(P2P::with_runtime(config, RuntimeKind::Tokio)?)
}

/// Two nodes, connected; the receiver serves `Op`s into `dst` and
/// reports when it is done.
async fn pair(
    dst: &Path,
) -> Result<(
    Arc<P2P>,
    pos_p2p::Peer,
    pos_p2p::RouterHandle,
    tokio::sync::mpsc::Receiver<Result<()>>,
)> {
    let receiver = node(2)?;
    let sender = node(1)?;
    let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Result<()>>(1);
    let dst = dst.to_owned();
    let router = Router::<Op>::new(receiver.clone())
        .fallback(move |op, mut stream| {
            let (dst, done) = (dst.clone(), done_tx.clone());
            async move {
                let result = match op {
                    Op::Transfer => transfer::receive(
                        &mut stream,
                        &dst,
                        |_| async { Decision::Accept },
                        &mut |_| {},
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string().into()),
                    Op::Raw => raw_receive(&mut stream, &dst).await,
                };
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
    Ok((sender, peer, router, done_rx))
}

async fn in_process_transfer(workload: &Workload, dst: &Path) -> Result<Sample> {
    let (sender, peer, router, mut done) = pair(dst).await?;
    let cpu_before = cpu(false);
    let started = Instant::now();
    let prepared = transfer::prepare(std::slice::from_ref(&workload.path), "bench").await?;
    let offered = Instant::now();
    let mut stream = peer.open(&Op::Transfer).await?;
    transfer::send(&mut stream, &prepared, &mut |_| {}).await?;
    done.recv().await.ok_or("the receiver stopped")??;
    let finished = Instant::now();
    let cpu_used = cpu(false) - cpu_before;
    router.shutdown().await;
    sender.shutdown().await;
    Ok(Sample {
        total: finished - started,
        transfer: finished - offered,
        cpu: cpu_used,
    })
}

const CHUNK: usize = 4 << 20;

async fn raw_stream(workload: &Workload, dst: &Path) -> Result<Sample> {
    let (sender, peer, router, mut done) = pair(dst).await?;
    let cpu_before = cpu(false);
    let started = Instant::now();
    let mut stream = peer.open(&Op::Raw).await?;
    let name = workload
        .path
        .file_name()
        .ok_or("no name")?
        .to_string_lossy();
    let name = name.as_bytes();
    stream.write_all(&[name.len() as u8]).await?;
    stream.write_all(name).await?;
    // Read the next chunk while this one is written, as the transfer does.
    let path = workload.path.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1);
    let reader = tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => return tx.blocking_send(Err(e)),
        };
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => return tx.blocking_send(Err(e)),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            tx.blocking_send(Ok(buf))?;
        }
    });
    while let Some(chunk) = rx.recv().await {
        stream.write_all(&chunk?).await?;
    }
    stream.close().await?;
    let _ = reader.await;
    done.recv().await.ok_or("the receiver stopped")??;
    let finished = Instant::now();
    let cpu_used = cpu(false) - cpu_before;
    router.shutdown().await;
    sender.shutdown().await;
    Ok(Sample {
        total: finished - started,
        transfer: finished - started,
        cpu: cpu_used,
    })
}

/// The raw receiver: a one-byte name length and the name, then the file's
/// bytes to the end of the stream, written as they arrive (one write in
/// flight while the next chunk is read) and synced.
async fn raw_receive(stream: &mut pos_p2p::UnicastStream, dst: &Path) -> Result<()> {
    let mut len = [0u8];
    stream.read_exact(&mut len).await?;
    let mut name = vec![0u8; usize::from(len[0])];
    stream.read_exact(&mut name).await?;
    let path = dst.join(String::from_utf8(name)?);
    let file = Arc::new(std::sync::Mutex::new(std::fs::File::create(&path)?));
    let mut writing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if let Some(previous) = writing.take() {
            previous.await??;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        let file = file.clone();
        writing = Some(tokio::task::spawn_blocking(move || {
            file.lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .write_all(&buf)
        }));
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        file.lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .sync_all()
    })
    .await??;
    Ok(())
}

fn median(samples: &[Sample], key: impl Fn(&Sample) -> Duration) -> Duration {
    let mut v: Vec<Duration> = samples.iter().map(key).collect();
    v.sort();
    v[v.len() / 2]
}

fn report(workloads: &[Workload], results: &BTreeMap<(&str, Contender), Vec<Sample>>) {
    println!();
    println!(
        "| workload | contender | total, median (min–max) | transfer, median | MiB/s (total) | CPU s per GiB (both sides) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for workload in workloads {
        for ((name, contender), samples) in results {
            if *name != workload.name {
                continue;
            }
            let total = median(samples, |s| s.total);
            let transfer = median(samples, |s| s.transfer);
            let cpu = median(samples, |s| s.cpu);
            let min = samples.iter().map(|s| s.total).min().unwrap_or_default();
            let max = samples.iter().map(|s| s.total).max().unwrap_or_default();
            let gib = workload.bytes as f64 / (1u64 << 30) as f64;
            println!(
                "| {} ({} files, {:.0} MiB) | {} | {:.3} s ({:.3}–{:.3}) | {:.3} s | {:.0} | {:.2} |",
                workload.name,
                workload.files,
                workload.bytes as f64 / (1u64 << 20) as f64,
                contender.name(),
                total.as_secs_f64(),
                min.as_secs_f64(),
                max.as_secs_f64(),
                transfer.as_secs_f64(),
                workload.bytes as f64 / (1u64 << 20) as f64 / total.as_secs_f64(),
                cpu.as_secs_f64() / gib
            );
        }
    }
}
