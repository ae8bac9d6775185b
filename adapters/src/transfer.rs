//! Send files and directories to a peer, verified, resumable
//! (docs/PROTOCOL.md §11, docs/USAGE.md "Sending files").
//!
//! The protocol is the core's ([`pos_p2p_protocol::transfer`]); this
//! module does its I/O on any stream (a [`UnicastStream`](crate::UnicastStream)
//! opened with the application's own header, for example), on any
//! runtime: file reads and writes run on the `blocking` crate's thread
//! pool, never on the executor.
//!
//! - [`prepare`] walks and hashes what to send (BLAKE3, the files'
//!   outboards kept in memory: 32 bytes per 256 KiB);
//! - [`send`] offers it and sends what the receiver asks for, all of it
//!   in flight at once;
//! - [`receive`] reads the offer, lets the application accept or decline
//!   it, and writes each group after it verified, into
//!   `DIR/.pos-p2p-partial/`, moving each file into place only once all
//!   of it verified. What verified stays there if the transfer stops,
//!   and the next transfer of the same file asks only for the rest.
//!
//! ```no_run
//! # async fn run(peer: pos_p2p::Peer, mut incoming: pos_p2p::UnicastStream) -> Result<(), Box<dyn std::error::Error>> {
//! use pos_p2p::transfer::{self, Decision};
//! use std::path::{Path, PathBuf};
//!
//! // Sender (the header that opens the stream is the application's):
//! let prepared = transfer::prepare(&[PathBuf::from("photos")], "laptop").await?;
//! let mut stream = peer.new_stream().await?;
//! let report = transfer::send(&mut stream, &prepared, &mut |_progress| {}).await?;
//! println!("sent {} bytes", report.bytes_sent);
//!
//! // Receiver, on the stream the sender opened:
//! let report = transfer::receive(
//!     &mut incoming,
//!     Path::new("Downloads"),
//!     |offer| {
//!         let ok = offer.total_size() < 10 << 30;
//!         async move { if ok { Decision::Accept } else { Decision::Decline("too big".into()) } }
//!     },
//!     &mut |_progress| {},
//! ).await?;
//! println!("{} files in place", report.files);
//! # Ok(()) }
//! ```

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use futures_util::stream::{self, StreamExt as _};
use pos_p2p_protocol::codec::{DecodeError, Reader};
use pos_p2p_protocol::transfer::names::{NameError, SafePath};
use pos_p2p_protocol::transfer::session::{Arrived, ReceiveError, Receiving, SendStep, Sending};
use pos_p2p_protocol::transfer::tree::{FileHasher, HASH_LEN, Verifier, group_count, group_range};
use pos_p2p_protocol::transfer::wire::{
    ABORT, Answer, MAX_ANSWER_LEN, MAX_OFFER_LEN, MAX_REASON_LEN, MessageError, PIECE, Piece,
    abort_bytes, cut_reason,
};

pub use pos_p2p_protocol::transfer::wire::{Entry, EntryKind, Offer, Want};
/// The sans-IO pieces this module is built on.
pub use pos_p2p_protocol::transfer::{names, session, tree, wire};

/// The directory, inside the receiver's directory, where files stay until
/// they verified.
pub const PARTIAL_DIR: &str = ".pos-p2p-partial";
/// How many bytes the sender reads from a file at once.
const READ_BATCH: u64 = 4 * 1024 * 1024;
/// How many files are hashed at once while preparing.
const HASH_PARALLELISM: usize = 4;

/// Why a transfer failed. Nothing is ever left at a final name unless it
/// verified: what verified of an unfinished file stays in
/// [`PARTIAL_DIR`], to resume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The receiver declined the offer.
    #[error("the receiver declined: {0}")]
    Declined(String),
    /// The receiver could not go on (its disk is full, say).
    #[error("the receiver failed: {0}")]
    ReceiverFailed(String),
    /// The sender stopped (a file changed or could not be read there).
    #[error("the sender stopped: {0}")]
    SenderAborted(String),
    /// The peer sent something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(#[from] MessageError),
    /// A received file did not verify.
    #[error(transparent)]
    Verify(#[from] ReceiveError),
    /// A path to send has no safe name (not UTF-8, or reserved
    /// somewhere): rename it.
    #[error("cannot send {path}: {error}")]
    Name {
        /// The local path.
        path: PathBuf,
        /// Why.
        error: NameError,
    },
    /// A file changed while it was being sent.
    #[error("{0} changed while it was being sent")]
    SourceChanged(PathBuf),
    /// Something went wrong with a local file or directory.
    #[error("{what} {path}: {source}")]
    Local {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A received path would go through a symbolic link or over a file.
    #[error("refusing to write {0}: a symbolic link or a file is in the way")]
    InTheWay(PathBuf),
    /// The stream or the connection failed (the peer went away).
    #[error("the connection failed: {0}")]
    Stream(#[source] io::Error),
}

impl TransferError {
    /// Whether the local disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, TransferError::Local { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

fn local<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TransferError + 'a {
    move |source| TransferError::Local {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What happens, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Preparing: one more file hashed.
    Hashed {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The offer was accepted: this many bytes will be sent this round
    /// (the first round: what the receiver lacks).
    Round {
        /// 1 for the first, more for re-fetches of corrupt groups.
        round: u32,
        /// Data bytes this round.
        bytes: u64,
    },
    /// Bytes of a file went out or came in.
    Bytes {
        /// The offer entry.
        index: usize,
        /// How many.
        bytes: u64,
    },
    /// A file is complete (sender: all wanted bytes sent; receiver:
    /// verified and in place).
    FileDone {
        /// The offer entry.
        index: usize,
    },
    /// A group did not verify and will be asked for again.
    Corrupt {
        /// The offer entry.
        index: usize,
        /// The group.
        group: u64,
    },
}

type ProgressFn<'a> = &'a mut (dyn FnMut(Progress) + Send);

/// A local file to send.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    outboard: Arc<Vec<u8>>,
}

/// Files and directories ready to send: walked and hashed.
#[derive(Debug, Clone)]
pub struct Prepared {
    offer: Offer,
    /// One per offer entry (`None` for directories).
    sources: Vec<Option<Source>>,
    skipped: Vec<PathBuf>,
}

impl Prepared {
    /// The offer the receiver will see.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The local file behind offer entry `index`.
    pub fn source_path(&self, index: usize) -> Option<&Path> {
        self.sources.get(index)?.as_ref().map(|s| s.path.as_path())
    }

    /// What was left out: symbolic links inside directories (not followed,
    /// so nothing outside what was named is sent) and special files.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }
}

/// Walk `paths` (files and directories; a directory is sent with its
/// name, as `cp -r` would) and hash every file, several at once, on
/// blocking threads.
pub async fn prepare(paths: &[PathBuf], sender: &str) -> Result<Prepared, TransferError> {
    let paths = paths.to_vec();
    let (mut walked, skipped) = blocking::unblock(move || walk(&paths)).await?;
    walked.sort_by(|a, b| a.0.cmp(&b.0));
    let hashed: Vec<Result<HashedEntry, TransferError>> = stream::iter(walked)
        .map(|(name, local)| async move {
            match local {
                None => Ok((name, None, None)),
                Some(path) => {
                    let (source, hash) = blocking::unblock(move || hash_file(path)).await?;
                    Ok((name, Some(source), Some(hash)))
                }
            }
        })
        .buffered(HASH_PARALLELISM)
        .collect()
        .await;
    let mut entries = Vec::with_capacity(hashed.len());
    let mut sources = Vec::with_capacity(hashed.len());
    for item in hashed {
        let (path, source, hash) = item?;
        let kind = match (&source, hash) {
            (Some(source), Some(hash)) => EntryKind::File {
                size: source.len,
                hash,
            },
            _ => EntryKind::Dir,
        };
        entries.push(Entry { path, kind });
        sources.push(source);
    }
    // Entries are sorted already, so `Offer::new` keeps this order.
    let offer = Offer::new(sender.chars().take(32).collect(), entries)?;
    Ok(Prepared {
        offer,
        sources,
        skipped,
    })
}

type HashedEntry = (SafePath, Option<Source>, Option<[u8; HASH_LEN]>);

type Walked = (Vec<(SafePath, Option<PathBuf>)>, Vec<PathBuf>);

fn walk(paths: &[PathBuf]) -> Result<Walked, TransferError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| TransferError::Name {
                path: path.clone(),
                error: NameError::NotRelative(path.display().to_string()),
            })?;
        // What the user named is followed if it is a link; what is inside
        // a directory is not.
        let meta = fs::metadata(path).map_err(local("cannot read", path))?;
        walk_one(path, &name, &meta, &mut out, &mut skipped)?;
    }
    Ok((out, skipped))
}

fn walk_one(
    path: &Path,
    name: &Path,
    meta: &fs::Metadata,
    out: &mut Vec<(SafePath, Option<PathBuf>)>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), TransferError> {
    let safe = SafePath::from_relative(name).map_err(|error| TransferError::Name {
        path: path.to_owned(),
        error,
    })?;
    if meta.is_file() {
        out.push((safe, Some(path.to_owned())));
    } else if meta.is_dir() {
        out.push((safe, None));
        let mut children: Vec<_> = fs::read_dir(path)
            .map_err(local("cannot list", path))?
            .collect::<Result<_, _>>()
            .map_err(local("cannot list", path))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let child_path = child.path();
            let meta =
                fs::symlink_metadata(&child_path).map_err(local("cannot read", &child_path))?;
            if meta.is_file() || meta.is_dir() {
                walk_one(
                    &child_path,
                    &name.join(child.file_name()),
                    &meta,
                    out,
                    skipped,
                )?;
            } else {
                skipped.push(child_path);
            }
        }
    } else {
        skipped.push(path.to_owned());
    }
    Ok(())
}

fn hash_file(path: PathBuf) -> Result<(Source, [u8; HASH_LEN]), TransferError> {
    let mut file = File::open(&path).map_err(local("cannot open", &path))?;
    let before = file.metadata().map_err(local("cannot read", &path))?;
    let mut hasher = FileHasher::new();
    let mut buf = vec![0; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(local("cannot read", &path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let modified = before.modified().ok();
    if len != before.len() {
        return Err(TransferError::SourceChanged(path));
    }
    let (hash, outboard) = hasher.finalize();
    Ok((
        Source {
            path,
            len,
            modified,
            outboard: Arc::new(outboard),
        },
        hash,
    ))
}

/// What a finished send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// Files offered.
    pub files: usize,
    /// Bytes of all files offered.
    pub bytes_offered: u64,
    /// Data bytes sent (outboards and groups; what a resumed transfer
    /// did not need to send is not counted).
    pub bytes_sent: u64,
    /// Rounds (more than one: corrupt groups were sent again).
    pub rounds: u32,
    /// From the offer to the receiver's `Done`.
    pub elapsed: Duration,
}

/// Offer `prepared` on `stream` and send what the receiver wants, until it
/// says it has everything. The stream is finished at the end.
pub async fn send<S>(
    stream: &mut S,
    prepared: &Prepared,
    progress: ProgressFn<'_>,
) -> Result<SendReport, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let result = send_rounds(stream, prepared, progress).await;
    if result.is_err() {
        // Declined, failed or broken: our side ends here too (the
        // receiver waits for it before it lets the connection go).
        let _ = stream.close().await;
    }
    result
}

async fn send_rounds<S>(
    stream: &mut S,
    prepared: &Prepared,
    progress: ProgressFn<'_>,
) -> Result<SendReport, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let offer = &prepared.offer;
    write_frame(stream, offer.to_frame()).await?;
    let mut sending = Sending::new(offer.clone());
    let mut report = SendReport {
        files: offer.file_count(),
        bytes_offered: offer.total_size(),
        bytes_sent: 0,
        rounds: 0,
        elapsed: Duration::ZERO,
    };
    loop {
        let body = read_frame(stream, MAX_ANSWER_LEN).await?;
        let want = match sending.answered(&body)? {
            SendStep::Declined(reason) => return Err(TransferError::Declined(reason)),
            SendStep::Failed(reason) => return Err(TransferError::ReceiverFailed(reason)),
            SendStep::Done => break,
            SendStep::Send(want) => want,
        };
        report.rounds = sending.rounds();
        progress(Progress::Round {
            round: report.rounds,
            bytes: want.data_len(offer),
        });
        match send_pieces(stream, prepared, &want, progress, &mut report).await {
            Ok(()) => {}
            Err(SendFailure::Local(error)) => {
                // Tell the receiver why, then stop.
                if let Ok(bytes) = abort_bytes(&error.to_string()) {
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.close().await;
                }
                return Err(error);
            }
            Err(SendFailure::Stream(error)) => {
                // The receiver may have said why it stopped reading. (Our
                // end finished first, so a receiver that is still reading
                // stops instead of waiting for the rest.)
                let _ = stream.close().await;
                return Err(match read_frame(stream, MAX_ANSWER_LEN).await {
                    Ok(body) => match Answer::decode(&body) {
                        Ok(Answer::Failed { reason }) => TransferError::ReceiverFailed(reason),
                        _ => TransferError::Stream(error),
                    },
                    Err(_) => TransferError::Stream(error),
                });
            }
        }
        stream.flush().await.map_err(TransferError::Stream)?;
    }
    // The receiver has everything and may be gone already: a failure to
    // finish our side changes nothing.
    let _ = stream.close().await;
    report.elapsed = started.elapsed();
    Ok(report)
}

enum SendFailure {
    Local(TransferError),
    Stream(io::Error),
}

/// A contiguous run of pieces of one file, read at once.
struct Batch {
    file: usize,
    pieces: Vec<Piece>,
}

fn batches(prepared: &Prepared, want: &Want) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for piece in want.pieces(&prepared.offer) {
        let (file, contiguous) = match &piece {
            Piece::Outboard { file, .. } => (*file, false),
            Piece::Group { file, range, .. } => {
                let joins = out.last().is_some_and(|b| {
                    b.file == *file
                        && matches!(b.pieces.last(), Some(Piece::Group { range: last, .. }) if last.end == range.start)
                        && b.pieces.iter().map(Piece::len).sum::<u64>() < READ_BATCH
                });
                (*file, joins)
            }
        };
        if contiguous && let Some(batch) = out.last_mut() {
            batch.pieces.push(piece);
            continue;
        }
        out.push(Batch {
            file,
            pieces: vec![piece],
        });
    }
    out
}

/// Read a batch's bytes from its file (on a blocking thread), checking
/// that the file did not change since it was hashed.
fn read_batch(source: Source, pieces: Vec<Piece>) -> Result<Vec<Vec<u8>>, TransferError> {
    let path = &source.path;
    let mut file = File::open(path).map_err(local("cannot open", path))?;
    let meta = file.metadata().map_err(local("cannot read", path))?;
    if meta.len() != source.len || meta.modified().ok() != source.modified {
        return Err(TransferError::SourceChanged(source.path.clone()));
    }
    let mut out = Vec::with_capacity(pieces.len());
    for piece in &pieces {
        match piece {
            Piece::Outboard { .. } => out.push(source.outboard.as_ref().clone()),
            Piece::Group { range, .. } => {
                let mut buf = vec![0; (range.end - range.start) as usize];
                file.seek(SeekFrom::Start(range.start))
                    .map_err(local("cannot read", path))?;
                file.read_exact(&mut buf).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        TransferError::SourceChanged(source.path.clone())
                    } else {
                        TransferError::Local {
                            what: "cannot read",
                            path: source.path.clone(),
                            source: e,
                        }
                    }
                })?;
                out.push(buf);
            }
        }
    }
    Ok(out)
}

async fn send_pieces<S>(
    stream: &mut S,
    prepared: &Prepared,
    want: &Want,
    progress: ProgressFn<'_>,
    report: &mut SendReport,
) -> Result<(), SendFailure>
where
    S: AsyncWrite + Unpin,
{
    let batches = batches(prepared, want);
    let read = |batch: &Batch| {
        let source = prepared.sources.get(batch.file).cloned().flatten();
        let pieces = batch.pieces.clone();
        blocking::unblock(move || match source {
            Some(source) => read_batch(source, pieces),
            // `check` let only files through.
            None => Ok(Vec::new()),
        })
    };
    // The next batch is read while this one is written.
    let mut next = batches.first().map(read);
    for (i, batch) in batches.iter().enumerate() {
        let Some(reading) = next.take() else { break };
        let data = reading.await.map_err(SendFailure::Local)?;
        next = batches.get(i + 1).map(read);
        if data.len() != batch.pieces.len() {
            return Err(SendFailure::Local(TransferError::SourceChanged(
                prepared
                    .source_path(batch.file)
                    .unwrap_or(Path::new("?"))
                    .to_owned(),
            )));
        }
        for (piece, bytes) in batch.pieces.iter().zip(data) {
            stream
                .write_all(&[PIECE])
                .await
                .map_err(SendFailure::Stream)?;
            stream
                .write_all(&bytes)
                .await
                .map_err(SendFailure::Stream)?;
            report.bytes_sent += bytes.len() as u64;
            progress(Progress::Bytes {
                index: batch.file,
                bytes: bytes.len() as u64,
            });
            let last_of_file = match piece {
                Piece::Group { file, index, .. } => want
                    .files
                    .iter()
                    .find(|f| f.index as usize == *file)
                    .and_then(|f| f.groups.last())
                    .is_some_and(|r| r.end == index + 1),
                Piece::Outboard { .. } => false,
            };
            if last_of_file {
                progress(Progress::FileDone { index: batch.file });
            }
        }
    }
    Ok(())
}

/// The receiver's answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Receive it.
    Accept,
    /// Decline, with a reason the sender sees.
    Decline(String),
}

/// What a finished receive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveReport {
    /// Files now in place (received, resumed, or already there).
    pub files: usize,
    /// Directories in place.
    pub dirs: usize,
    /// Bytes of all files offered.
    pub bytes_offered: u64,
    /// Data bytes received (outboards and groups).
    pub bytes_received: u64,
    /// Bytes that were not sent: already verified on disk from an
    /// interrupted transfer, files already in place, or files with the
    /// same contents as another file of the transfer (sent once, copied).
    pub bytes_kept: u64,
    /// Groups that did not verify and were asked for again.
    pub corrupt_groups: u64,
    /// Rounds.
    pub rounds: u32,
    /// Where each file went (a name taken already gets ` (1)`, ` (2)`...).
    pub saved: Vec<PathBuf>,
    /// From the offer to the end.
    pub elapsed: Duration,
}

/// Receive a transfer on `stream` into `dir`: read the offer, ask
/// `decide`, and receive what it accepts. Files are written only after
/// they verify, into `dir/.pos-p2p-partial/`, and moved into place when
/// complete.
///
/// After its last answer (`Done`, a decline or a failure) it waits for the
/// sender's end of the stream, which a sender sends as soon as it has read
/// that answer: a node that closes the connection earlier (a command-line
/// receiver that exits) could take the answer away unread. A sender that
/// neither finishes nor goes away keeps this waiting; wrap the call in a
/// timeout if that matters. After a failure the sender is still sending
/// and reads the reason only once its writes fail: a node about to shut
/// down should first give the sender a moment to disconnect, as
/// `pos-p2p receive` does (up to 5 s).
pub async fn receive<S, D, F>(
    stream: &mut S,
    dir: &Path,
    decide: D,
    progress: ProgressFn<'_>,
) -> Result<ReceiveReport, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    D: FnOnce(&Offer) -> F,
    F: Future<Output = Decision>,
{
    let body = read_frame(stream, MAX_OFFER_LEN).await?;
    let offer = Offer::decode(&body)?;
    let started = Instant::now();
    if let Decision::Decline(reason) = decide(&offer).await {
        let decline = Answer::Decline {
            reason: reason.clone(),
        };
        write_frame(stream, decline.to_frame()).await?;
        let _ = stream.close().await;
        sender_finished(stream).await;
        return Err(TransferError::Declined(reason));
    }
    match receive_accepted(stream, dir, offer, progress, started).await {
        Ok(report) => Ok(report),
        Err(error) => {
            // Tell the sender why (a full disk, a bad file), then stop.
            if !matches!(
                error,
                TransferError::Stream(_) | TransferError::SenderAborted(_)
            ) {
                let reason = cut_reason(&error.to_string()).to_owned();
                if let Ok(frame) = (Answer::Failed { reason }).to_frame() {
                    let _ = stream.write_all(&frame).await;
                    let _ = stream.close().await;
                    sender_finished(stream).await;
                }
            }
            Err(error)
        }
    }
}

struct Receiver<'a> {
    dir: PathBuf,
    partial: PathBuf,
    offer: Offer,
    report: ReceiveReport,
    progress: ProgressFn<'a>,
    /// Where each file of the offer now is, once it is there.
    placed: std::collections::HashMap<usize, PathBuf>,
    /// Files with the same contents as an earlier file of the offer
    /// (entry, earlier entry): not asked for, copied once it is in place.
    copies: Vec<(usize, usize)>,
}

fn hex(hash: &[u8; HASH_LEN]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver<'_> {
    fn part_path(&self, hash: &[u8; HASH_LEN]) -> PathBuf {
        self.partial.join(format!("{}.part", hex(hash)))
    }

    fn outboard_path(&self, hash: &[u8; HASH_LEN]) -> PathBuf {
        self.partial.join(format!("{}.obao", hex(hash)))
    }
}

async fn receive_accepted<S>(
    stream: &mut S,
    dir: &Path,
    offer: Offer,
    progress: ProgressFn<'_>,
    started: Instant,
) -> Result<ReceiveReport, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let partial = dir.join(PARTIAL_DIR);
    {
        let (dir, partial) = (dir.to_owned(), partial.clone());
        blocking::unblock(move || {
            fs::create_dir_all(&dir).map_err(local("cannot create", &dir))?;
            fs::create_dir_all(&partial).map_err(local("cannot create", &partial))
        })
        .await?;
    }
    let mut rx = Receiver {
        dir: dir.to_owned(),
        partial,
        report: ReceiveReport {
            files: 0,
            dirs: 0,
            bytes_offered: offer.total_size(),
            bytes_received: 0,
            bytes_kept: 0,
            corrupt_groups: 0,
            rounds: 0,
            saved: Vec::new(),
            elapsed: Duration::ZERO,
        },
        offer: offer.clone(),
        progress,
        placed: Default::default(),
        copies: Vec::new(),
    };
    let mut receiving = Receiving::new(offer.clone());
    // What is here already: files in place, and verified groups of
    // interrupted transfers (one blocking task for all files: a tree of
    // many small files is mostly nothing).
    let lookups: Vec<_> = offer
        .entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| match entry.kind {
            EntryKind::File { size, hash } => Some(Lookup {
                index,
                target: rx.dir.join(entry.path.to_path_buf()),
                part: rx.part_path(&hash),
                obao: rx.outboard_path(&hash),
                size,
                hash,
                // Not asked for (the core decided): only its target counts.
                same_as: receiving.same_as(index),
            }),
            EntryKind::Dir => None,
        })
        .collect();
    let found = blocking::unblock(move || {
        lookups
            .into_iter()
            .map(|lookup| {
                let found = existing(&lookup);
                (lookup.index, lookup.size, lookup.same_as, found)
            })
            .collect::<Vec<_>>()
    })
    .await;
    for (index, size, same_as, found) in found {
        match found {
            Existing::InPlace(path) => {
                receiving.skip(index);
                rx.report.bytes_kept += size;
                rx.report.files += 1;
                rx.report.saved.push(path.clone());
                rx.placed.insert(index, path);
                (rx.progress)(Progress::FileDone { index });
            }
            Existing::Partial(verifier, have) => {
                rx.report.bytes_kept += receiving.resume(index, verifier, |g| {
                    have.get(g as usize).copied().unwrap_or(false)
                });
                if receiving.is_complete(index) {
                    // Every group verified before the last transfer ended,
                    // but the file was not moved into place yet.
                    finish_file(&mut rx, index).await?;
                }
            }
            Existing::Nothing => {
                if let Some(first) = same_as {
                    rx.report.bytes_kept += size;
                    rx.copies.push((index, first));
                }
            }
        }
    }
    while let Some(want) = receiving.next_want()? {
        rx.report.rounds = receiving.rounds();
        write_frame(stream, Answer::Want(want.clone()).to_frame()).await?;
        (rx.progress)(Progress::Round {
            round: receiving.rounds(),
            bytes: want.data_len(&offer),
        });
        receive_round(stream, &mut rx, &mut receiving, &want).await?;
    }
    copy_duplicates(&mut rx).await?;
    // Directories (empty ones too).
    for entry in offer.entries.iter() {
        if entry.kind == EntryKind::Dir {
            let (dir, path) = (rx.dir.clone(), entry.path.clone());
            blocking::unblock(move || safe_dirs(&dir, path.components())).await?;
            rx.report.dirs += 1;
        }
    }
    write_frame(stream, Answer::Done.to_frame()).await?;
    stream.close().await.map_err(TransferError::Stream)?;
    sender_finished(stream).await;
    let partial = rx.partial.clone();
    // Only removed if empty: other transfers' partial files stay.
    let _ = blocking::unblock(move || fs::remove_dir(partial)).await;
    rx.report.elapsed = started.elapsed();
    Ok(rx.report)
}

enum Existing {
    InPlace(PathBuf),
    Partial(Verifier, Vec<bool>),
    Nothing,
}

/// What of a file is on disk already: the file itself at its target, or a
/// partial file with its kept outboard (each group re-verified).
struct Lookup {
    index: usize,
    target: PathBuf,
    part: PathBuf,
    obao: PathBuf,
    size: u64,
    hash: [u8; HASH_LEN],
    /// An earlier entry with the same contents: only the target counts.
    same_as: Option<usize>,
}

fn existing(lookup: &Lookup) -> Existing {
    let Lookup {
        target,
        part,
        obao,
        size,
        hash,
        ..
    } = lookup;
    let (size, hash) = (*size, *hash);
    if let Ok(meta) = fs::symlink_metadata(target)
        && meta.is_file()
        && meta.len() == size
        && let Ok(mut file) = File::open(target)
    {
        let mut hasher = FileHasher::new();
        let mut buf = vec![0; 1 << 20];
        let read_all = loop {
            match file.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => break false,
            }
        };
        if read_all && hasher.finalize().0 == hash {
            return Existing::InPlace(target.clone());
        }
    }
    if lookup.same_as.is_some() {
        return Existing::Nothing;
    }
    let Ok(outboard) = fs::read(obao) else {
        return Existing::Nothing;
    };
    let Ok(verifier) = Verifier::new(size, hash, &outboard) else {
        return Existing::Nothing;
    };
    let Ok(mut file) = File::open(part) else {
        return Existing::Nothing;
    };
    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut have = Vec::with_capacity(group_count(size) as usize);
    let mut buf = Vec::new();
    for group in 0..group_count(size) {
        let Some(range) = group_range(size, group) else {
            break;
        };
        if range.end > on_disk || range.start == range.end {
            have.push(false);
            continue;
        }
        buf.resize((range.end - range.start) as usize, 0);
        let ok = file.seek(SeekFrom::Start(range.start)).is_ok()
            && file.read_exact(&mut buf).is_ok()
            && verifier.verify(group, &buf).is_ok();
        have.push(ok);
    }
    Existing::Partial(verifier, have)
}

async fn receive_round<S>(
    stream: &mut S,
    rx: &mut Receiver<'_>,
    receiving: &mut Receiving,
    want: &Want,
) -> Result<(), TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let offer = rx.offer.clone();
    // One write in flight while the next piece is read, and one batch of
    // complete files being synced and moved into place.
    let mut writing: Option<blocking::Task<Result<(), TransferError>>> = None;
    let mut open: Option<(usize, Arc<std::sync::Mutex<File>>)> = None;
    let mut finishing = Finishing::default();
    for piece in want.pieces(&offer) {
        let mut marker = [0u8];
        stream
            .read_exact(&mut marker)
            .await
            .map_err(TransferError::Stream)?;
        match marker[0] {
            PIECE => {}
            ABORT => {
                let body = read_reason(stream).await?;
                return Err(TransferError::SenderAborted(body));
            }
            other => {
                return Err(MessageError::Decode(DecodeError::UnknownTag {
                    what: "piece marker",
                    tag: other.into(),
                    offset: 0,
                })
                .into());
            }
        }
        // `check` bounded every piece by its file's size; a group is at
        // most GROUP_LEN bytes and an outboard 32 bytes per group.
        let mut data = vec![0; piece.len() as usize];
        stream
            .read_exact(&mut data)
            .await
            .map_err(TransferError::Stream)?;
        rx.report.bytes_received += data.len() as u64;
        let file_index = match &piece {
            Piece::Outboard { file, .. } | Piece::Group { file, .. } => *file,
        };
        (rx.progress)(Progress::Bytes {
            index: file_index,
            bytes: data.len() as u64,
        });
        let EntryKind::File { hash, .. } = offer.entries[file_index].kind else {
            return Err(ReceiveError::Unexpected(file_index).into());
        };
        match receiving.arrived(&piece, &data)? {
            Arrived::Outboard => {
                let path = rx.outboard_path(&hash);
                if let Some(w) = writing.take() {
                    w.await?;
                }
                blocking::unblock(move || {
                    fs::write(&path, &data).map_err(local("cannot write", &path))
                })
                .await?;
            }
            Arrived::Corrupt => {
                if let Piece::Group { index, .. } = piece {
                    rx.report.corrupt_groups += 1;
                    (rx.progress)(Progress::Corrupt {
                        index: file_index,
                        group: index,
                    });
                }
            }
            Arrived::Verified { file_complete } => {
                let Piece::Group { range, .. } = piece else {
                    continue;
                };
                let file = match &open {
                    Some((i, f)) if *i == file_index => f.clone(),
                    _ => {
                        let path = rx.part_path(&hash);
                        let f = blocking::unblock(move || {
                            fs::OpenOptions::new()
                                .create(true)
                                .write(true)
                                .truncate(false)
                                .open(&path)
                                .map_err(local("cannot create", &path))
                        })
                        .await?;
                        let f = Arc::new(std::sync::Mutex::new(f));
                        open = Some((file_index, f.clone()));
                        f
                    }
                };
                if let Some(w) = writing.take() {
                    w.await?;
                }
                let path = rx.part_path(&hash);
                writing = Some(blocking::unblock(move || {
                    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                    f.seek(SeekFrom::Start(range.start))
                        .and_then(|_| f.write_all(&data))
                        .map_err(local("cannot write", &path))
                }));
                if file_complete {
                    if let Some(w) = writing.take() {
                        w.await?;
                    }
                    open = None;
                    finishing.add(rx, file_index).await?;
                }
            }
        }
    }
    if let Some(w) = writing.take() {
        w.await?;
    }
    finishing.flush(rx).await?;
    finishing.wait(rx).await
}

/// Complete files are synced and moved into place in batches, on the
/// blocking pool while the next pieces arrive: one `fsync` per file is
/// what makes a tree of many small files slow, and a batch's writes reach
/// the disk together (the first sync commits them, the rest are cheap).
#[derive(Default)]
struct Finishing {
    batch: Vec<FinishJob>,
    batch_bytes: u64,
    running: Option<blocking::Task<Result<Vec<Finished>, TransferError>>>,
}

/// A file moved into place: its offer entry and where it is.
type Finished = (usize, PathBuf);

/// Files per batch, and bytes: a large file goes on its own at once.
const FINISH_BATCH: usize = 256;
const FINISH_BATCH_BYTES: u64 = 16 << 20;

struct FinishJob {
    index: usize,
    entry: Entry,
    size: u64,
    part: PathBuf,
    obao: PathBuf,
}

impl Finishing {
    async fn add(&mut self, rx: &mut Receiver<'_>, index: usize) -> Result<(), TransferError> {
        let entry = rx.offer.entries[index].clone();
        let EntryKind::File { size, hash } = entry.kind else {
            return Ok(());
        };
        self.batch.push(FinishJob {
            index,
            entry,
            size,
            part: rx.part_path(&hash),
            obao: rx.outboard_path(&hash),
        });
        self.batch_bytes += size;
        if self.batch.len() >= FINISH_BATCH || self.batch_bytes >= FINISH_BATCH_BYTES {
            self.flush(rx).await?;
        }
        Ok(())
    }

    /// Start the batch (after the one before it is done).
    async fn flush(&mut self, rx: &mut Receiver<'_>) -> Result<(), TransferError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.wait(rx).await?;
        let (jobs, dir) = (std::mem::take(&mut self.batch), rx.dir.clone());
        self.batch_bytes = 0;
        self.running = Some(blocking::unblock(move || finish_files(&dir, jobs)));
        Ok(())
    }

    /// Wait for the batch being finished, and count its files.
    async fn wait(&mut self, rx: &mut Receiver<'_>) -> Result<(), TransferError> {
        if let Some(task) = self.running.take() {
            for (index, saved) in task.await? {
                rx.report.files += 1;
                rx.report.saved.push(saved.clone());
                rx.placed.insert(index, saved);
                (rx.progress)(Progress::FileDone { index });
            }
        }
        Ok(())
    }
}

/// Sync each file of `jobs` (durable before it gets its name: a crash
/// leaves it partial, never a short file at the final name), then move
/// each into place: parent directories created (never through a symbolic
/// link or over a file), a free name chosen.
fn finish_files(dir: &Path, jobs: Vec<FinishJob>) -> Result<Vec<Finished>, TransferError> {
    for job in &jobs {
        let part = &job.part;
        let file = if job.size == 0 {
            File::create(part).map_err(local("cannot create", part))?
        } else {
            File::options()
                .write(true)
                .open(part)
                .map_err(local("cannot open", part))?
        };
        file.set_len(job.size)
            .map_err(local("cannot write", part))?;
        file.sync_all().map_err(local("cannot write", part))?;
    }
    let mut saved = Vec::with_capacity(jobs.len());
    for job in jobs {
        let components = job.entry.path.components();
        let (name, parents) = components
            .split_last()
            .ok_or_else(|| TransferError::InTheWay(dir.to_owned()))?;
        let parent = safe_dirs(dir, parents)?;
        let target = free_name(&parent, name);
        fs::rename(&job.part, &target).map_err(local("cannot move into place", &target))?;
        let _ = fs::remove_file(&job.obao);
        saved.push((job.index, target));
    }
    Ok(saved)
}

/// Wait for the sender's end of the stream (or any sign of it: a byte it
/// should not send, a reset, the connection's end).
async fn sender_finished<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte).await;
}

async fn read_reason<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, TransferError> {
    // A varint length, then UTF-8: read as a frame of at most the limit.
    let body = read_frame(stream, MAX_REASON_LEN).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Copy each file that has the same contents as an earlier one from where
/// that one is now, as a partial file first (synced), then into place.
async fn copy_duplicates(rx: &mut Receiver<'_>) -> Result<(), TransferError> {
    let mut jobs = Vec::with_capacity(rx.copies.len());
    for &(index, first) in &rx.copies {
        let from = rx
            .placed
            .get(&first)
            .cloned()
            .ok_or(ReceiveError::Unexpected(first))?;
        let entry = rx.offer.entries[index].clone();
        let part = rx.partial.join(format!("copy-{index}.part"));
        jobs.push((index, entry, from, part));
    }
    let dir = rx.dir.clone();
    let copied = blocking::unblock(move || -> Result<Vec<Finished>, TransferError> {
        let mut done = Vec::with_capacity(jobs.len());
        for (index, entry, from, part) in jobs {
            fs::copy(&from, &part).map_err(local("cannot copy to", &part))?;
            File::options()
                .write(true)
                .open(&part)
                .and_then(|f| f.sync_all())
                .map_err(local("cannot write", &part))?;
            let components = entry.path.components();
            let (name, parents) = components
                .split_last()
                .ok_or_else(|| TransferError::InTheWay(dir.clone()))?;
            let parent = safe_dirs(&dir, parents)?;
            let target = free_name(&parent, name);
            fs::rename(&part, &target).map_err(local("cannot move into place", &target))?;
            done.push((index, target));
        }
        Ok(done)
    })
    .await?;
    for (index, saved) in copied {
        rx.report.files += 1;
        rx.report.saved.push(saved.clone());
        rx.placed.insert(index, saved);
        (rx.progress)(Progress::FileDone { index });
    }
    Ok(())
}

/// Move one verified file into place now (a file found complete in the
/// partial directory).
async fn finish_file(rx: &mut Receiver<'_>, index: usize) -> Result<(), TransferError> {
    let mut finishing = Finishing::default();
    finishing.add(rx, index).await?;
    finishing.flush(rx).await?;
    finishing.wait(rx).await
}

/// Create `components` under `root`, refusing to go through a symbolic
/// link or a file (a link in the receiver's directory must not take a
/// peer's files elsewhere). Returns the directory.
fn safe_dirs(root: &Path, components: &[String]) -> Result<PathBuf, TransferError> {
    let mut path = root.to_owned();
    for name in components {
        path.push(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(TransferError::InTheWay(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(local("cannot create", &path))?;
            }
            Err(e) => return Err(local("cannot read", &path)(e)),
        }
    }
    Ok(path)
}

/// `dir/name`, or `dir/name (1).ext`, ... if taken (by anything, a link
/// included).
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let candidate = dir.join(name);
    if fs::symlink_metadata(&candidate).is_err() {
        return candidate;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    (1u32..)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or(candidate)
}

/// Write one frame and flush it.
async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame: Result<bytes::Bytes, pos_p2p_protocol::codec::EncodeError>,
) -> Result<(), TransferError> {
    let frame =
        frame.map_err(|e| TransferError::Stream(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    stream
        .write_all(&frame)
        .await
        .map_err(TransferError::Stream)?;
    stream.flush().await.map_err(TransferError::Stream)
}

/// Read one frame (a varint length, then the body) of at most `max`
/// bytes. Memory grows with the bytes that arrive, not with the claim.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Vec<u8>, TransferError> {
    let mut prefix = Vec::with_capacity(10);
    let len = loop {
        let mut byte = [0u8];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(TransferError::Stream)?;
        prefix.push(byte[0]);
        if byte[0] & 0x80 == 0 {
            break Reader::new(&prefix).varint().map_err(MessageError::from)?;
        }
        if prefix.len() >= 10 {
            return Err(MessageError::from(DecodeError::TooLong {
                what: "length prefix",
                len: prefix.len() as u64,
                max: 10,
                offset: 0,
            })
            .into());
        }
    };
    if len > max as u64 {
        return Err(MessageError::from(DecodeError::TooLong {
            what: "transfer message",
            len,
            max: max as u64,
            offset: 0,
        })
        .into());
    }
    let mut body = Vec::new();
    (&mut *stream)
        .take(len)
        .read_to_end(&mut body)
        .await
        .map_err(TransferError::Stream)?;
    if body.len() as u64 != len {
        return Err(TransferError::Stream(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body)
}
