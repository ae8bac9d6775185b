//! The `pos-p2p` binary end to end, on loopback: identity, send and
//! receive of a tree (a large file, 10,000 small files, empty files and
//! directories, non-ASCII names), decline, resume after the receiver is
//! killed (only the missing part goes on the wire; a chunk corrupted on
//! its disk meanwhile is found and fetched again), a full disk, names that
//! cannot be sent, peers, ping.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use serde_json::Value;

fn bin() -> Command {
    Command::new(cargo_bin("pos-p2p"))
}

/// The transfer's verification unit (docs/PROTOCOL.md §11.1).
const GROUP: u64 = 256 * 1024;

const LOCAL: [&str; 4] = ["--listen", "127.0.0.1:0", "--no-mdns", "--json"];

/// A receiver running in the background, and its node address.
struct Receiver {
    child: Child,
    lines: BufReader<ChildStdout>,
    addr: String,
}

impl Receiver {
    fn start(identity: &Path, dir: &Path, yes: bool) -> Self {
        let mut cmd = bin();
        cmd.arg("receive")
            .args(LOCAL)
            .arg("--identity")
            .arg(identity)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if yes {
            cmd.arg("--yes");
        }
        let mut child = cmd.spawn().expect("receive starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
        let ready = next_json(&mut lines);
        assert_eq!(ready["event"], "ready", "{ready}");
        let addr = ready["node_addr"].as_str().expect("an address").to_owned();
        Self { child, lines, addr }
    }

    fn next(&mut self) -> Value {
        next_json(&mut self.lines)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait for `child` to exit, at most `limit`: a hung binary fails the
/// test instead of hanging it.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn next_json(lines: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    lines.read_line(&mut line).expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Run `send` to `addr` and return its last JSON line and exit status.
fn send(identity: &Path, addr: &str, paths: &[&Path]) -> (Value, bool) {
    let out = bin()
        .arg("send")
        .args(LOCAL)
        .arg("--identity")
        .arg(identity)
        .arg(addr)
        .args(paths)
        .output()
        .expect("send runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    (
        serde_json::from_str(last).unwrap_or(Value::Null),
        out.status.success(),
    )
}

fn fill(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as u8)
        .collect()
}

fn tree_files(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            if rel.starts_with(".pos-p2p-partial") {
                continue;
            }
            if path.is_dir() {
                out.push((rel, None));
                stack.push(path);
            } else {
                out.push((rel, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn id_is_created_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nested/identity");
    let first = bin()
        .arg("id")
        .arg("--identity")
        .arg(&file)
        .output()
        .unwrap();
    assert!(first.status.success());
    let second = bin()
        .arg("id")
        .arg("--identity")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(first.stdout, second.stdout, "the same identity both times");
    assert!(!first.stdout.is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
    }
    // Something that is not an identity file is an error, not a new key.
    std::fs::write(&file, b"garbage").unwrap();
    let bad = bin()
        .arg("id")
        .arg("--identity")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an identity file"));
}

#[test]
fn a_tree_with_ten_thousand_small_files_arrives_identical() {
    let work = tempfile::tempdir().unwrap();
    let (src, dst) = (work.path().join("src"), work.path().join("dst"));
    let top = src.join("tree");
    std::fs::create_dir_all(top.join("empty dir")).unwrap();
    std::fs::write(top.join("large.bin"), fill(24 << 20, 1)).unwrap();
    std::fs::write(top.join("empty.txt"), b"").unwrap();
    std::fs::write(top.join("naïve – 日本語.txt"), b"unicode names").unwrap();
    for i in 0..10_000u32 {
        let dir = top.join("small").join(format!("{:03}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{i}.txt")), fill(4096, i)).unwrap();
    }
    let mut receiver = Receiver::start(&work.path().join("rid"), &dst, true);
    let (sent, ok) = send(&work.path().join("sid"), &receiver.addr, &[&top]);
    assert!(ok, "{sent}");
    assert_eq!(sent["event"], "sent");
    assert_eq!(sent["files"], 10_003);
    let received = receiver.next();
    assert_eq!(received["event"], "received", "{received}");
    assert_eq!(received["files"], 10_003);
    assert_eq!(received["dirs"], 103);
    assert!(exit_within(&mut receiver.child, Duration::from_secs(30)).success());
    // Not assert_eq!: a failure would print every file's bytes.
    assert!(
        tree_files(&src) == tree_files(&dst),
        "the received tree differs from the sent one"
    );
}

#[test]
fn a_killed_receiver_resumes_and_only_the_missing_part_is_sent() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("movie.bin");
    let size: u64 = 192 << 20;
    std::fs::write(&file, fill(size as usize, 7)).unwrap();
    let dst = work.path().join("dst");
    let (rid, sid) = (work.path().join("rid"), work.path().join("sid"));
    let receiver = Receiver::start(&rid, &dst, true);
    let mut sender = bin()
        .arg("send")
        .args(LOCAL)
        .arg("--identity")
        .arg(&sid)
        .arg(&receiver.addr)
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the receiver once part of the file is on its disk.
    let partial = dst.join(".pos-p2p-partial");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_disk: u64 = std::fs::read_dir(&partial)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if on_disk >= 16 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(receiver);
    let _ = sender.kill();
    let _ = sender.wait();
    assert!(!dst.join("movie.bin").exists(), "nothing at the final name");
    // A chunk corrupted on the receiver's disk while it was down: the
    // resume re-verifies what is there, so group 0 is fetched again
    // rather than kept (the final comparison fails otherwise).
    let part = std::fs::read_dir(&partial)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "part"))
        .expect("a partial file");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.write_all(&[!fill(1001, 7)[1000]]).unwrap();
    }

    let mut receiver = Receiver::start(&rid, &dst, true);
    let (sent, ok) = send(&sid, &receiver.addr, &[&file]);
    assert!(ok, "{sent}");
    let received = receiver.next();
    assert_eq!(received["event"], "received", "{received}");
    let kept = received["bytes_kept"].as_u64().unwrap();
    let bytes_sent = sent["bytes_sent"].as_u64().unwrap();
    assert!(kept >= (16 << 20) - GROUP, "{received}");
    assert!(kept < size, "{received}");
    assert_eq!(kept % GROUP, 0, "whole groups are kept: {received}");
    assert_eq!(bytes_sent, size - kept, "only the missing part: {sent}");
    // And on the wire: the UDP bytes the sender sent are the missing part
    // plus a little overhead, not the whole file.
    let udp = sent["udp_bytes_sent"].as_u64().unwrap();
    assert!(udp < size - kept + (size - kept) / 20 + (1 << 20), "{sent}");
    assert!(udp >= size - kept, "{sent}");
    // Not assert_eq!: a failure would print 2 × 192 MiB.
    assert!(
        std::fs::read(dst.join("movie.bin")).unwrap() == std::fs::read(&file).unwrap(),
        "the resumed file differs from the sent one"
    );
}

#[test]
fn a_declined_offer_is_a_clear_answer_on_both_sides() {
    use std::io::{Read, Write};
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("secret.txt");
    std::fs::write(&file, b"not for you").unwrap();
    let dst = work.path().join("dst");
    let mut receiver = Receiver::start(&work.path().join("rid"), &dst, false);
    let mut sender = bin()
        .arg("send")
        .args(LOCAL)
        .arg("--identity")
        .arg(work.path().join("sid"))
        .arg(&receiver.addr)
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The receiver shows the offer and waits for its person.
    let offer = receiver.next();
    assert_eq!(offer["event"], "offer", "{offer}");
    assert_eq!(offer["files"], 1);
    assert_eq!(offer["bytes"], 11);
    let mut stdin = receiver.child.stdin.take().expect("stdin");
    stdin.write_all(b"n\n").unwrap();
    drop(stdin);
    let status = exit_within(&mut sender, Duration::from_secs(30));
    let mut out = String::new();
    sender
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!status.success(), "{out}");
    let last: Value = serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap();
    assert!(
        last["error"].as_str().unwrap_or("").contains("declined"),
        "{out}"
    );
    let answer = receiver.next();
    assert!(
        answer["error"].as_str().unwrap_or("").contains("declined"),
        "{answer}"
    );
    assert!(!exit_within(&mut receiver.child, Duration::from_secs(30)).success());
    assert!(!dst.join("secret.txt").exists());
}

/// A receiver whose directory is a 1 MiB tmpfs (root only; skipped
/// elsewhere unless POS_P2P_REQUIRE_NETNS says the machine must allow
/// it): both processes fail with the reason, nothing at the final name.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_clearly_on_both_sides() {
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("small-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("POS_P2P_REQUIRE_NETNS").is_none(),
            "mounting a tmpfs failed and POS_P2P_REQUIRE_NETNS is set"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let file = work.path().join("big.bin");
    std::fs::write(&file, fill(4 << 20, 3)).unwrap();
    let mut receiver = Receiver::start(&work.path().join("rid"), &disk, true);
    let (sent, ok) = send(&work.path().join("sid"), &receiver.addr, &[&file]);
    assert!(!ok, "{sent}");
    let reason = sent["error"].as_str().unwrap_or("").to_lowercase();
    assert!(reason.contains("space"), "{sent}");
    let answer = receiver.next();
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("space"),
        "{answer}"
    );
    assert!(!exit_within(&mut receiver.child, Duration::from_secs(30)).success());
    assert!(!disk.join("big.bin").exists());
}

#[cfg(target_os = "linux")]
#[test]
fn a_name_that_cannot_be_sent_is_a_clear_error() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("dir");
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
    let dst = work.path().join("dst");
    let receiver = Receiver::start(&work.path().join("rid"), &dst, true);
    let (sent, ok) = send(&work.path().join("sid"), &receiver.addr, &[&top]);
    assert!(!ok);
    assert!(
        sent["error"].as_str().unwrap().contains("cannot send"),
        "{sent}"
    );
    assert!(!dst.join("dir").exists());
}

#[test]
fn peers_lists_a_peer_added_by_address_with_its_rtt() {
    let work = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&work.path().join("rid"), &work.path().join("dst"), true);
    let identity = receiver.addr.split('?').next().unwrap().to_owned();
    let out = bin()
        .arg("peers")
        .args(LOCAL)
        .arg("--identity")
        .arg(work.path().join("sid"))
        .args(["--wait", "1", "--add"])
        .arg(&receiver.addr)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows
        .iter()
        .find(|r| r["identity"] == identity.as_str())
        .unwrap_or_else(|| panic!("{identity} not listed: {stdout}"));
    assert_eq!(row["connected"], true, "{row}");
    assert!(row["rtt_ms"].as_f64().is_some(), "{row}");
    assert_eq!(row["version"], env!("CARGO_PKG_VERSION"), "{row}");
}

#[test]
fn ping_reaches_a_receiver() {
    let work = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&work.path().join("rid"), &work.path().join("dst"), true);
    let out = bin()
        .arg("ping")
        .args(LOCAL)
        .arg("--identity")
        .arg(work.path().join("sid"))
        .args(["-c", "3"])
        .arg(&receiver.addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pongs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"pong\""))
        .count();
    assert_eq!(pongs, 3);
}
