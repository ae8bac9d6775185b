//! The comparison harness: pos-p2p against what an application would pick
//! instead, on this machine, in the same run.
//!
//! Each scenario runs every contender once per round, alternating
//! (A B A B ...), for several rounds; the table shows the median, the
//! min–max and the ratio pos-p2p / baseline of the medians. Absolute figures
//! on a shared machine drift; the ratios of one run are what to compare.
//!
//! ```text
//! cargo run --release -p pos-p2p-benches --bin compare            # full run
//! cargo run --release -p pos-p2p-benches --bin compare -- --json out.json
//! cargo run -p pos-p2p-benches --bin compare -- --smoke           # CI: tiny, checks correctness only
//! cargo run --release -p pos-p2p-benches --features iroh --bin compare   # with iroh
//! ```

#[cfg(feature = "iroh")]
mod iroh_side;
mod pos;
mod quinn_side;
mod report;
mod tcp;

use std::time::{Duration, Instant};

use clap::Parser;

use report::{Report, Row};

/// pos-p2p against quinn, TCP and (with the `iroh` feature) iroh, in one
/// run, with ratios.
#[derive(Debug, Parser)]
struct Args {
    /// Tiny sizes, one round: checks that every scenario moves the right
    /// bytes; the numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Rounds per scenario.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bulk transfer size in MiB.
    #[arg(long, default_value_t = 1024)]
    bulk_mib: usize,
    /// Fresh connections per connect-latency sample.
    #[arg(long, default_value_t = 200)]
    connects: usize,
    /// An untimed pause after each connect, in milliseconds, before the
    /// next (0: back to back).
    #[arg(long, default_value_t = 0)]
    connect_pause_ms: u64,
    /// Requests per request/response sample.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Idle connections in the scale scenario.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// How long to measure idle CPU, in seconds.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Tunnel handshakes per sample.
    #[arg(long, default_value_t = 200)]
    handshakes: usize,
    /// Worker threads of the tokio runtime every contender runs on.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Internal: measure one contender's idle connections in this process
    /// and print the result (the scale scenario runs each contender in a
    /// fresh process of its own, so none inherits another's heap).
    #[arg(long, hide = true)]
    idle_child: Option<String>,
}

/// Sizes for this run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) bulk: usize,
    pub(crate) connects: usize,
    pub(crate) connect_pause: Duration,
    pub(crate) requests: usize,
    pub(crate) idle_connections: usize,
    pub(crate) idle: Duration,
    pub(crate) handshakes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (rounds, sizes) = if args.smoke {
        (
            1,
            Sizes {
                bulk: 4 << 20,
                connects: 5,
                connect_pause: Duration::ZERO,
                requests: 20,
                idle_connections: 10,
                idle: Duration::from_millis(500),
                handshakes: 5,
            },
        )
    } else {
        (
            args.rounds.max(1),
            Sizes {
                bulk: args.bulk_mib << 20,
                connects: args.connects,
                connect_pause: Duration::from_millis(args.connect_pause_ms),
                requests: args.requests,
                idle_connections: args.idle_connections,
                idle: Duration::from_secs(args.idle_seconds),
                handshakes: args.handshakes,
            },
        )
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    if let Some(contender) = &args.idle_child {
        let (bytes, cpu) = runtime.block_on(async {
            match contender.as_str() {
                "pos" => pos::idle_connections(sizes.idle_connections, sizes.idle).await,
                "quinn" => quinn_side::idle_connections(sizes.idle_connections, sizes.idle).await,
                #[cfg(feature = "iroh")]
                "iroh" => iroh_side::idle_connections(sizes.idle_connections, sizes.idle).await,
                other => Err(format!("unknown contender {other}").into()),
            }
        })?;
        println!("idle-result {bytes} {cpu}");
        return Ok(());
    }
    let mut report = Report::new(args.smoke);
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    runtime.block_on(async {
        if wanted("bulk") {
            bulk(&mut report, rounds, sizes).await?;
        }
        if wanted("tunnel-bulk") {
            tunnel_bulk(&mut report, rounds, sizes).await?;
        }
        if wanted("connect") {
            connect(&mut report, rounds, sizes).await?;
        }
        if wanted("request") {
            request_response(&mut report, rounds, sizes).await?;
        }
        if wanted("tunnel-handshake") {
            tunnel_handshakes(&mut report, rounds, sizes).await?;
        }
        if wanted("scale") {
            scale(&mut report, rounds, &args).await?;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    report.print();
    if let Some(path) = args.json {
        std::fs::write(&path, report.json())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

async fn bulk(report: &mut Report, rounds: usize, sizes: Sizes) -> Result<()> {
    let pos = pos::Pair::start(pos::Windows::Ours).await?;
    let quinn_default = quinn_side::Pair::start(quinn_side::Windows::Default).await?;
    let quinn_ours = quinn_side::Pair::start(quinn_side::Windows::SameAsPos).await?;
    let tcp = tcp::Pair::start().await?;
    #[cfg(feature = "iroh")]
    let iroh = iroh_side::Pair::start().await?;
    let mut rows = vec![
        Row::new("bulk 1 stream", "pos-p2p (tokio)", "MB/s", true),
        Row::new("bulk 1 stream", "quinn, default windows", "MB/s", true),
        Row::new("bulk 1 stream", "quinn, pos-p2p's windows", "MB/s", true),
        Row::new("bulk 1 stream", "TCP (tokio)", "MB/s", true),
    ];
    #[cfg(feature = "iroh")]
    rows.push(Row::new("bulk 1 stream", "iroh, defaults", "MB/s", true));
    for _ in 0..rounds {
        let t = Instant::now();
        pos.bulk(sizes.bulk, false).await?;
        rows[0].push(mb_per_s(sizes.bulk, t.elapsed()));
        let t = Instant::now();
        quinn_default.bulk(sizes.bulk).await?;
        rows[1].push(mb_per_s(sizes.bulk, t.elapsed()));
        let t = Instant::now();
        quinn_ours.bulk(sizes.bulk).await?;
        rows[2].push(mb_per_s(sizes.bulk, t.elapsed()));
        let t = Instant::now();
        tcp.bulk(sizes.bulk).await?;
        rows[3].push(mb_per_s(sizes.bulk, t.elapsed()));
        #[cfg(feature = "iroh")]
        {
            let t = Instant::now();
            iroh.bulk(sizes.bulk).await?;
            rows[4].push(mb_per_s(sizes.bulk, t.elapsed()));
        }
    }
    report.add(rows);
    pos.shutdown().await;
    #[cfg(feature = "iroh")]
    iroh.shutdown().await;
    Ok(())
}

async fn tunnel_bulk(report: &mut Report, rounds: usize, sizes: Sizes) -> Result<()> {
    let pos = pos::Pair::start(pos::Windows::Ours).await?;
    let mut rows = [
        Row::new("bulk through the Tunnel", "pos-p2p Tunnel", "MB/s", true),
        Row::new(
            "bulk through the Tunnel",
            "pos-p2p plain stream",
            "MB/s",
            true,
        ),
    ];
    for _ in 0..rounds {
        let t = Instant::now();
        pos.bulk(sizes.bulk, true).await?;
        rows[0].push(mb_per_s(sizes.bulk, t.elapsed()));
        let t = Instant::now();
        pos.bulk(sizes.bulk, false).await?;
        rows[1].push(mb_per_s(sizes.bulk, t.elapsed()));
    }
    report.add(rows);
    pos.shutdown().await;
    Ok(())
}

async fn connect(report: &mut Report, rounds: usize, sizes: Sizes) -> Result<()> {
    let pos = pos::Pair::start(pos::Windows::Ours).await?;
    let quinn = quinn_side::Pair::start(quinn_side::Windows::Default).await?;
    let quinn_mutual = quinn_side::Pair::start(quinn_side::Windows::MutualTls).await?;
    #[cfg(feature = "iroh")]
    let iroh = iroh_side::Pair::start().await?;
    let mut rows = vec![
        Row::new(
            "connect (dial to ready)",
            "pos-p2p (QUIC + TLS + Hello)",
            "µs",
            false,
        ),
        Row::new("connect (dial to ready)", "quinn", "µs", false),
        Row::new(
            "connect (dial to ready)",
            "quinn, mutual TLS (ed25519)",
            "µs",
            false,
        ),
    ];
    #[cfg(feature = "iroh")]
    rows.push(Row::new(
        "connect (dial to ready)",
        "iroh (direct, loopback)",
        "µs",
        false,
    ));
    for _ in 0..rounds {
        rows[0].push(median(
            pos.connect_latencies(sizes.connects, sizes.connect_pause)
                .await?,
        ));
        rows[1].push(median(
            quinn
                .connect_latencies(sizes.connects, sizes.connect_pause)
                .await?,
        ));
        rows[2].push(median(
            quinn_mutual
                .connect_latencies(sizes.connects, sizes.connect_pause)
                .await?,
        ));
        #[cfg(feature = "iroh")]
        rows[3].push(median(
            iroh.connect_latencies(sizes.connects, sizes.connect_pause)
                .await?,
        ));
    }
    report.add(rows);
    pos.shutdown().await;
    #[cfg(feature = "iroh")]
    iroh.shutdown().await;
    Ok(())
}

async fn request_response(report: &mut Report, rounds: usize, sizes: Sizes) -> Result<()> {
    let pos = pos::Pair::start(pos::Windows::Ours).await?;
    let quinn = quinn_side::Pair::start(quinn_side::Windows::Default).await?;
    let routed = pos::Pair::start_serving(pos::Windows::Ours, pos::Serving::Router).await?;
    #[cfg(feature = "iroh")]
    let iroh = iroh_side::Pair::start().await?;
    let mut sequential = vec![
        Row::new("request/response, sequential", "pos-p2p", "req/s", true),
        Row::new("request/response, sequential", "quinn", "req/s", true),
        Row::new(
            "request/response, sequential",
            "pos-p2p served by a Router",
            "req/s",
            true,
        ),
    ];
    let mut parallel = vec![
        Row::new("request/response, 32 in flight", "pos-p2p", "req/s", true),
        Row::new("request/response, 32 in flight", "quinn", "req/s", true),
        Row::new(
            "request/response, 32 in flight",
            "pos-p2p served by a Router",
            "req/s",
            true,
        ),
    ];
    #[cfg(feature = "iroh")]
    {
        sequential.push(Row::new(
            "request/response, sequential",
            "iroh",
            "req/s",
            true,
        ));
        parallel.push(Row::new(
            "request/response, 32 in flight",
            "iroh",
            "req/s",
            true,
        ));
    }
    let rate = |n: usize, t: Instant| n as f64 / t.elapsed().as_secs_f64();
    for _ in 0..rounds {
        for (rows, in_flight) in [(&mut sequential, 1), (&mut parallel, 32)] {
            let t = Instant::now();
            pos.requests(sizes.requests, in_flight).await?;
            rows[0].push(rate(sizes.requests, t));
            let t = Instant::now();
            quinn.requests(sizes.requests, in_flight).await?;
            rows[1].push(rate(sizes.requests, t));
            let t = Instant::now();
            routed.requests(sizes.requests, in_flight).await?;
            rows[2].push(rate(sizes.requests, t));
            #[cfg(feature = "iroh")]
            {
                let t = Instant::now();
                iroh.requests(sizes.requests, in_flight).await?;
                rows[3].push(rate(sizes.requests, t));
            }
        }
    }
    report.add(sequential.into_iter().chain(parallel));
    pos.shutdown().await;
    routed.shutdown().await;
    #[cfg(feature = "iroh")]
    iroh.shutdown().await;
    Ok(())
}

async fn tunnel_handshakes(report: &mut Report, rounds: usize, sizes: Sizes) -> Result<()> {
    let pos = pos::Pair::start(pos::Windows::Ours).await?;
    let mut rows = [
        Row::new(
            "Tunnel handshakes on one connection",
            "pos-p2p Tunnel",
            "handshakes/s",
            true,
        ),
        Row::new(
            "Tunnel handshakes, 8 at once, one connection",
            "pos-p2p Tunnel",
            "handshakes/s",
            true,
        ),
    ];
    for _ in 0..rounds {
        for (row, parallel) in rows.iter_mut().zip([1, 8]) {
            let t = Instant::now();
            pos.tunnel_handshakes(sizes.handshakes, parallel).await?;
            row.push(sizes.handshakes as f64 / t.elapsed().as_secs_f64());
        }
    }
    report.add(rows);
    pos.shutdown().await;
    Ok(())
}

/// One contender's idle connections, measured in a fresh process of its
/// own (this program again, with `--idle-child`): resident memory is a
/// property of the whole process, so a contender measured after another
/// would reuse (or pay for) the other's heap.
fn idle_in_own_process(contender: &str, args: &Args) -> Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command.args([
        "--idle-child",
        contender,
        "--idle-connections",
        &args.idle_connections.to_string(),
        "--idle-seconds",
        &args.idle_seconds.to_string(),
        "--workers",
        &args.workers.to_string(),
    ]);
    if args.smoke {
        command.arg("--smoke");
    }
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("idle-result "))
        .ok_or_else(|| {
            format!(
                "the {contender} idle process failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let mut fields = line.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(bytes)), Some(Ok(cpu))) => Ok((bytes, cpu)),
        _ => Err(format!("bad idle result {line:?}").into()),
    }
}

async fn scale(report: &mut Report, rounds: usize, args: &Args) -> Result<()> {
    let n = if args.smoke {
        10.0
    } else {
        args.idle_connections as f64
    };
    #[cfg(not(feature = "iroh"))]
    let contenders = [("pos", "pos-p2p"), ("quinn", "quinn")];
    #[cfg(feature = "iroh")]
    let contenders = [("pos", "pos-p2p"), ("quinn", "quinn"), ("iroh", "iroh")];
    let mut memory: Vec<Row> = contenders
        .iter()
        .map(|&(_, name)| {
            Row::new(
                "idle connections: memory per connection",
                name,
                "KiB",
                false,
            )
        })
        .collect();
    let mut cpu: Vec<Row> = contenders
        .iter()
        .map(|&(_, name)| {
            Row::new(
                "idle connections: CPU while idle",
                name,
                "% of a core",
                false,
            )
        })
        .collect();
    // Each contender in a fresh process per round; the order rotates (it
    // cannot matter between processes, and the figures show it).
    for round in 0..rounds {
        for i in 0..contenders.len() {
            let row = (i + round) % contenders.len();
            let (bytes, used) =
                tokio::task::block_in_place(|| idle_in_own_process(contenders[row].0, args))?;
            memory[row].push(bytes / n / 1024.0);
            cpu[row].push(used);
        }
    }
    report.add(memory.into_iter().chain(cpu));
    Ok(())
}

pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Resident memory of this process, in bytes.
pub(crate) fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time (user + system) this process has used.
pub(crate) fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" of the command name; utime and stime are the
    // 12th and 13th of those, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU use of this process while it sleeps for `duration`, in percent of
/// one core.
pub(crate) async fn idle_cpu(duration: Duration) -> f64 {
    let before = cpu_time();
    tokio::time::sleep(duration).await;
    (cpu_time() - before).as_secs_f64() / duration.as_secs_f64() * 100.0
}
