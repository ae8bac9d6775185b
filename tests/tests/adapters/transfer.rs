//! File transfer (`pos_p2p::transfer`, docs/PROTOCOL.md §11) between two
//! nodes on loopback: trees arrive verified, a corrupt group is fetched
//! again, an interrupted transfer resumes with only the missing bytes,
//! hostile offers and links write nothing outside the directory, and a
//! declined offer, a changed file and a full disk are typed errors with
//! nothing left at a final name.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use pos_p2p::codec::Writer;
use pos_p2p::semver::Version;
use pos_p2p::transfer::tree::GROUP_LEN;
use pos_p2p::transfer::wire::MessageError;
use pos_p2p::transfer::{
    self, Decision, PARTIAL_DIR, Prepared, ReceiveReport, SendReport, TransferError,
};
use pos_p2p::{P2P, RuntimeKind, UnicastStream};

use crate::common::config_with;

/// Two nodes, `a` connected to `b`.
async fn pair(n: u8) -> (Arc<P2P>, Arc<P2P>) {
    let listen = "127.0.0.1:0".parse().expect("an address");
    let v = Version::new(1, 0, 0);
    let a =
        P2P::with_runtime(config_with(n, v.clone(), listen), RuntimeKind::Tokio).expect("a starts");
    let b = P2P::with_runtime(config_with(n + 1, v, listen), RuntimeKind::Tokio).expect("b starts");
    a.connect(b.listen_addrs()[0], Some(b.local_identity()))
        .await
        .expect("a connects to b");
    (a, b)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 12) as u8)
        .collect()
}

/// Every file under `root` (relative path, bytes) and every directory,
/// sorted, the partial directory left out.
fn snapshot(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            if rel == Path::new(PARTIAL_DIR) {
                continue;
            }
            if path.is_dir() {
                out.push((rel, None));
                go(root, &path, out);
            } else {
                out.push((rel, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// Send `prepared` from `a` over `wrap(stream)` while `b` receives into
/// `dir` with `decision`.
async fn run<W>(
    a: &P2P,
    b: &P2P,
    prepared: &Prepared,
    dir: &Path,
    decision: Decision,
    wrap: impl FnOnce(UnicastStream) -> W,
) -> (
    Result<SendReport, TransferError>,
    Result<ReceiveReport, TransferError>,
)
where
    W: AsyncRead + AsyncWrite + Unpin + Send,
{
    let peer = a.peer(&b.local_identity()).expect("b is known");
    let stream = peer.new_stream().await.expect("a stream");
    let mut stream = wrap(stream);
    let dir = dir.to_owned();
    let receiver = async {
        let mut incoming = b.accept().await.expect("a stream arrives");
        transfer::receive(
            &mut incoming,
            &dir,
            |_| async move { decision },
            &mut |_| {},
        )
        .await
    };
    let mut quiet = |_| {};
    let sender = transfer::send(&mut stream, prepared, &mut quiet);
    futures_util::join!(sender, receiver)
}

/// A stream that changes what goes through it: flips the byte at
/// `corrupt_at` (once), or fails every write from `fail_after` on.
struct Meddle {
    inner: UnicastStream,
    written: u64,
    corrupt_at: Option<u64>,
    fail_after: Option<u64>,
}

impl Meddle {
    fn new(inner: UnicastStream) -> Self {
        Self {
            inner,
            written: 0,
            corrupt_at: None,
            fail_after: None,
        }
    }
}

impl AsyncRead for Meddle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Meddle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut buf = buf;
        if let Some(limit) = this.fail_after {
            if this.written >= limit {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            buf = &buf[..buf.len().min((limit - this.written) as usize)];
        }
        let mut copy;
        if let Some(at) = this.corrupt_at
            && (this.written..this.written + buf.len() as u64).contains(&at)
        {
            copy = buf.to_vec();
            copy[(at - this.written) as usize] ^= 0x40;
            this.corrupt_at = None;
            buf = &copy;
            let n = match Pin::new(&mut this.inner).poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => {
                    this.corrupt_at = Some(at);
                    return other;
                }
            };
            if (n as u64) <= at - this.written {
                // The flipped byte did not go out yet: flip it next time.
                this.corrupt_at = Some(at);
            }
            this.written += n as u64;
            return Poll::Ready(Ok(n));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written += n as u64;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A tree with a large file (several groups, a short last one), many
/// small files in nested directories, an empty file and an empty
/// directory.
fn make_tree(root: &Path) -> PathBuf {
    let top = root.join("album");
    std::fs::create_dir_all(top.join("empty dir")).unwrap();
    std::fs::create_dir_all(top.join("small/deeper")).unwrap();
    std::fs::write(top.join("big.bin"), data(5 * GROUP_LEN as usize + 77, 3)).unwrap();
    std::fs::write(top.join("empty.txt"), b"").unwrap();
    for i in 0..300 {
        let dir = if i % 2 == 0 { "small" } else { "small/deeper" };
        std::fs::write(
            top.join(dir).join(format!("note {i}.txt")),
            data(i * 37 % 5000, i as u8),
        )
        .unwrap();
    }
    // Names that are fine everywhere but not ASCII.
    std::fs::write(top.join("été – 日本.txt"), b"unicode").unwrap();
    top
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_arrives_verified_with_empty_files_and_directories() {
    let (a, b) = pair(60).await;
    let (src, dst) = (tmp(), tmp());
    let top = make_tree(src.path());
    let prepared = transfer::prepare(std::slice::from_ref(&top), "laptop")
        .await
        .unwrap();
    assert_eq!(prepared.offer().file_count(), 303);
    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| s).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(snapshot(src.path()), snapshot(dst.path()));
    assert_eq!(received.files, 303);
    assert_eq!(received.dirs, 4);
    assert_eq!(sent.rounds, 1);
    assert_eq!(received.bytes_kept, 0);
    assert_eq!(sent.bytes_offered, received.bytes_offered);
    // Data sent: every byte once, and the big file's outboard (6 groups).
    assert_eq!(sent.bytes_sent, sent.bytes_offered + 6 * 32);
    assert_eq!(received.bytes_received, sent.bytes_sent);
    assert!(
        !dst.path().join(PARTIAL_DIR).exists(),
        "partial directory left"
    );

    // Sent again: everything is in place already, nothing is sent, and
    // nothing is duplicated.
    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| s).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(sent.bytes_sent, 0);
    assert_eq!(received.bytes_kept, sent.bytes_offered);
    assert_eq!(snapshot(src.path()), snapshot(dst.path()));
    a.shutdown().await;
    b.shutdown().await;
}

/// A receiver that shuts its node down as soon as `receive` returns (a
/// command-line receiver that exits): the sender still reads its `Done`,
/// because `receive` returns only once the sender finished its side.
/// Without that wait the connection's close raced the sender's read of
/// the answer and lost about one transfer in ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_shuts_down_at_once_still_delivers_done() {
    let src = tmp();
    let file = src.path().join("note.txt");
    std::fs::write(&file, data(100_000, 8)).unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&file), "x")
        .await
        .unwrap();
    for round in 0..25u8 {
        let (a, b) = pair(100 + 2 * round).await;
        let dst = tmp();
        let peer = a.peer(&b.local_identity()).expect("b is known");
        let mut stream = peer.new_stream().await.expect("a stream");
        let receiver = async {
            let mut incoming = b.accept().await.expect("a stream arrives");
            let report = transfer::receive(
                &mut incoming,
                dst.path(),
                |_| async { Decision::Accept },
                &mut |_| {},
            )
            .await;
            drop(incoming);
            b.shutdown().await;
            report
        };
        let mut quiet = |_| {};
        let sender = transfer::send(&mut stream, &prepared, &mut quiet);
        let (sent, received) = futures_util::join!(sender, receiver);
        received.expect("received");
        let sent = sent.unwrap_or_else(|e| panic!("round {round}: the sender failed: {e}"));
        assert_eq!(sent.bytes_sent, 100_000);
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_files_are_sent_once_and_copied() {
    let (a, b) = pair(76).await;
    let (src, dst) = (tmp(), tmp());
    let top = src.path().join("photos");
    let same = data(2 * GROUP_LEN as usize + 500, 5);
    for dir in ["", "backup", "backup/old"] {
        std::fs::create_dir_all(top.join(dir)).unwrap();
        std::fs::write(top.join(dir).join("beach.jpg"), &same).unwrap();
    }
    std::fs::write(top.join("other.jpg"), data(1000, 6)).unwrap();
    std::fs::write(top.join("backup/other copy.jpg"), data(1000, 6)).unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&top), "laptop")
        .await
        .unwrap();
    assert_eq!(prepared.offer().file_count(), 5);
    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| s).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(snapshot(src.path()), snapshot(dst.path()));
    assert_eq!(received.files, 5);
    // Each content once: the large one with its outboard (3 groups).
    assert_eq!(sent.bytes_sent, same.len() as u64 + 3 * 32 + 1000);
    assert_eq!(received.bytes_kept, 2 * same.len() as u64 + 1000);
    assert!(!dst.path().join(PARTIAL_DIR).exists());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_group_is_found_where_it_is_and_fetched_again() {
    let (a, b) = pair(62).await;
    let (src, dst) = (tmp(), tmp());
    let file = src.path().join("video.bin");
    std::fs::write(&file, data(4 * GROUP_LEN as usize, 9)).unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&file), "x")
        .await
        .unwrap();
    let offer_len = prepared.offer().to_frame().unwrap().len() as u64;
    // Offer, piece marker, outboard (128 bytes), marker, group 0, marker,
    // then group 1: flip a byte in the middle of group 1.
    let at = offer_len + 1 + 128 + 1 + GROUP_LEN + 1 + 1000;
    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| {
        let mut m = Meddle::new(s);
        m.corrupt_at = Some(at);
        m
    })
    .await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(received.corrupt_groups, 1);
    assert_eq!(received.rounds, 2);
    assert_eq!(sent.rounds, 2);
    // The second round was group 1 alone.
    assert_eq!(sent.bytes_sent, 4 * GROUP_LEN + 128 + GROUP_LEN);
    assert_eq!(
        std::fs::read(dst.path().join("video.bin")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_transfer_resumes_with_only_the_missing_bytes() {
    let (a, b) = pair(64).await;
    let (src, dst) = (tmp(), tmp());
    let file = src.path().join("disk.img");
    let size = 32 * GROUP_LEN + 5;
    std::fs::write(&file, data(size as usize, 5)).unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&file), "x")
        .await
        .unwrap();
    // The sender's stream breaks after 10.5 groups.
    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| {
        let mut m = Meddle::new(s);
        m.fail_after = Some(10 * GROUP_LEN + GROUP_LEN / 2);
        m
    })
    .await;
    assert!(matches!(sent, Err(TransferError::Stream(_))), "{sent:?}");
    assert!(
        matches!(received, Err(TransferError::Stream(_))),
        "{received:?}"
    );
    assert!(
        !dst.path().join("disk.img").exists(),
        "nothing at the final name"
    );

    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| s).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    // Groups that verified before the break were kept (at least 9 of the
    // 10 whole ones that went out; the last may not have been written).
    assert!(received.bytes_kept >= 9 * GROUP_LEN, "{received:?}");
    // Only the rest was sent: no outboard (it was kept), no kept group.
    assert_eq!(sent.bytes_sent, size - received.bytes_kept);
    assert_eq!(received.bytes_received, sent.bytes_sent);
    assert_eq!(
        std::fs::read(dst.path().join("disk.img")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    assert!(!dst.path().join(PARTIAL_DIR).exists());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_offer_tells_the_sender_why() {
    let (a, b) = pair(66).await;
    let (src, dst) = (tmp(), tmp());
    let file = src.path().join("f");
    std::fs::write(&file, b"hello").unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&file), "x")
        .await
        .unwrap();
    let (sent, received) = run(
        &a,
        &b,
        &prepared,
        dst.path(),
        Decision::Decline("not now".into()),
        |s| s,
    )
    .await;
    assert!(
        matches!(sent, Err(TransferError::Declined(ref r)) if r == "not now"),
        "{sent:?}"
    );
    assert!(matches!(received, Err(TransferError::Declined(_))));
    assert_eq!(std::fs::read_dir(dst.path()).unwrap().count(), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_sending_is_reported_on_both_sides() {
    let (a, b) = pair(68).await;
    let (src, dst) = (tmp(), tmp());
    let file = src.path().join("log.txt");
    std::fs::write(&file, data(3 * GROUP_LEN as usize, 1)).unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&file), "x")
        .await
        .unwrap();
    // Appended to after it was hashed.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all_at_end(b"more");
    let (sent, received) = run(&a, &b, &prepared, dst.path(), Decision::Accept, |s| s).await;
    assert!(
        matches!(sent, Err(TransferError::SourceChanged(_))),
        "{sent:?}"
    );
    match received {
        Err(TransferError::SenderAborted(reason)) => {
            assert!(reason.contains("changed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dst.path().join("log.txt").exists());
    a.shutdown().await;
    b.shutdown().await;
}

trait AppendExt {
    fn write_all_at_end(self, data: &[u8]);
}

impl AppendExt for std::fs::File {
    fn write_all_at_end(mut self, data: &[u8]) {
        use std::io::Write as _;
        self.write_all(data).unwrap();
    }
}

/// Send a hand-made offer (as a hostile peer would) and return what the
/// receiver did.
/// What it sends after each message it reads: `reply`.
async fn offer_raw(
    a: &P2P,
    b: &P2P,
    dir: &Path,
    body: Vec<u8>,
    reply: &[u8],
) -> Result<ReceiveReport, TransferError> {
    let peer = a.peer(&b.local_identity()).expect("b is known");
    let mut stream = peer.new_stream().await.expect("a stream");
    let mut w = Writer::new();
    w.bytes(&body, body.len());
    let frame = w.finish().unwrap();
    let dir = dir.to_owned();
    let receiver = async {
        let mut incoming = b.accept().await.expect("a stream arrives");
        transfer::receive(
            &mut incoming,
            &dir,
            |_| async { Decision::Accept },
            &mut |_| {},
        )
        .await
    };
    let sender = async {
        stream.write_all(&frame).await.unwrap();
        // Answer whatever is wanted with `reply` until the receiver stops.
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if stream.write_all(reply).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    futures_util::join!(sender, receiver).1
}

fn offer_body(paths: &[&[&str]], content: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.str("mallory", 64);
    w.varint(paths.len() as u64);
    for components in paths {
        w.varint(components.len() as u64);
        for c in *components {
            w.str(c, 1000);
        }
        w.tag(1);
        w.varint(content.len() as u64);
        w.raw(blake3_of(content).as_slice());
    }
    w.finish().unwrap().to_vec()
}

fn blake3_of(content: &[u8]) -> [u8; 32] {
    let mut hasher = pos_p2p::transfer::tree::FileHasher::new();
    hasher.update(content);
    hasher.finalize().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_links_write_nothing_outside_the_directory() {
    let (a, b) = pair(70).await;
    let (dst, outside) = (tmp(), tmp());
    for hostile in [
        &["..", "escaped"][..],
        &["/etc", "passwd"],
        &["C:", "x"],
        &["a\\..\\..\\x"],
        &["NUL"],
        &["ok", "."],
    ] {
        let result = offer_raw(&a, &b, dst.path(), offer_body(&[hostile], b"x"), b"").await;
        assert!(
            matches!(result, Err(TransferError::Protocol(MessageError::Name(_)))),
            "{hostile:?}: {result:?}"
        );
    }
    // A link in the receiver's directory that points outside it: a
    // peer's file under that name must not go through it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), dst.path().join("link")).unwrap();
        // The pieces of a one-group file: an empty outboard, then "x".
        let pieces = [0, 0, b'x'];
        let body = offer_body(&[&["link", "file"]], b"x");
        let result = offer_raw(&a, &b, dst.path(), body, &pieces).await;
        assert!(
            matches!(result, Err(TransferError::InTheWay(_))),
            "{result:?}"
        );
        // A file that would land on the link's name gets another name.
        let body = offer_body(&[&["link"]], b"x");
        let result = offer_raw(&a, &b, dst.path(), body, &pieces).await;
        let report = result.unwrap();
        assert_eq!(report.saved, vec![dst.path().join("link (1)")]);
        assert_eq!(std::fs::read(dst.path().join("link (1)")).unwrap(), b"x");
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let left: Vec<_> = std::fs::read_dir(dst.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| n == "link" || n == "link (1)" || n == PARTIAL_DIR),
        "{left:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_sender_cannot_make_the_receiver_keep_bad_data() {
    // An offer of "x" whose data is zeros: the group never verifies, the
    // receiver asks again up to its limit and gives up, nothing in place.
    let (a, b) = pair(72).await;
    let dst = tmp();
    let body = offer_body(&[&["f"]], b"real content");
    let result = offer_raw(&a, &b, dst.path(), body, &[0; 4096]).await;
    assert!(
        matches!(result, Err(TransferError::Verify(_))),
        "{result:?}"
    );
    assert!(!dst.path().join("f").exists());
    a.shutdown().await;
    b.shutdown().await;
}

/// A tmpfs of `size` mounted at a temporary directory, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tmp();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_on_both_sides() {
    let Some(disk) = SmallDisk::mount("1m") else {
        assert!(
            std::env::var_os("POS_P2P_REQUIRE_NETNS").is_none(),
            "mounting a tmpfs failed and POS_P2P_REQUIRE_NETNS is set"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    let (a, b) = pair(74).await;
    let src = tmp();
    let file = src.path().join("big.bin");
    std::fs::write(&file, data(4 * 1024 * 1024, 7)).unwrap();
    let prepared = transfer::prepare(std::slice::from_ref(&file), "x")
        .await
        .unwrap();
    let (sent, received) = run(&a, &b, &prepared, disk.0.path(), Decision::Accept, |s| s).await;
    let received = received.unwrap_err();
    assert!(received.is_disk_full(), "{received:?}");
    match sent {
        Err(TransferError::ReceiverFailed(reason)) => {
            assert!(reason.to_lowercase().contains("space"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!disk.0.path().join("big.bin").exists());
    a.shutdown().await;
    b.shutdown().await;
}
