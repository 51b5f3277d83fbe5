//! Where archives are kept: a local directory (default) or any
//! S3-compatible service, both through `object_store`. Archives are written
//! as a stream (zstd over the tar the backend exports, sha256 over the
//! compressed bytes) with bounded memory, then read back and checked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjPath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::backend::{BackendError, ByteStream};
use crate::error::{Error, Result};

/// zstd level: 3 is zstd's default and `zstd -3`'s (the benchmark's reference).
const ZSTD_LEVEL: i32 = 3;
/// Upload buffer: parts of this size, at most [`IN_FLIGHT`] of them being
/// uploaded while zstd goes on (bounded memory: about 5 parts per archive).
const PART: usize = 8 << 20;
/// Parts uploaded at once, and ranged reads at once when an S3 object is
/// read back for its check. 2 left the compressor waiting on the store.
const IN_FLIGHT: usize = 4;
/// Reads of a local object (verify, restore, browsing): 4 of these in flight.
const READ_CHUNK: usize = 1 << 20;

/// S3-compatible storage settings (flags or environment; see serve).
#[derive(Clone)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:8333`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish()
    }
}

/// The archive store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is a local directory: archives are then
    /// written by [`write_local`] (reads and listings stay object_store's).
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    describe: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// What was written: compressed size and sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
}

/// Where the time of one [`Objects::put_compressed`] went. The stages
/// overlap, so the parts add up to more than `stream` when they run at once.
#[derive(Debug, Clone, Default)]
pub struct PutStats {
    /// Uncompressed (tar) bytes read from the backend.
    pub tar_bytes: u64,
    /// From the first read to the last byte handed to the store.
    pub stream: Duration,
    /// Waiting for the backend's next chunk (the engine's tar building).
    pub engine_wait: Duration,
    /// Waiting for the compressor to take a chunk (it was behind).
    pub compress_wait: Duration,
    /// zstd's own time (blocking thread).
    pub zstd: Duration,
    /// sha256's own time (blocking thread).
    pub sha256: Duration,
    /// Handing compressed bytes to the store (local: the writer thread's
    /// own time, overlapped with zstd; S3: waiting for part uploads).
    pub upload_wait: Duration,
    /// Completing the object: flush of the last part, fsync + rename +
    /// directory fsync (local) or the multipart completion (S3).
    pub close: Duration,
}

fn storage(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{what}: {e}"))
}

impl Objects {
    /// A local directory (created if missing). Each object is written to a
    /// temporary file, fsynced, renamed into place and its directory
    /// fsynced (object_store's `with_fsync`).
    pub fn local(dir: PathBuf) -> Result<Objects> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| storage(&format!("create {}", dir.display()), e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| storage(&format!("open {}", dir.display()), e))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let fs = Arc::new(fs);
        Ok(Objects {
            store: fs.clone(),
            local: Some(fs),
            describe: format!("local directory {}", dir.display()),
        })
    }

    /// Any S3-compatible service (AWS, MinIO, SeaweedFS), signed with SigV4
    /// over rustls+ring. Plain http is allowed only for loopback endpoints.
    pub fn s3(cfg: &S3Config) -> Result<Objects> {
        // reqwest is built without a default crypto provider: ring, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key)
            .with_secret_access_key(&cfg.secret_key)
            // A few quick retries per request; a longer outage is the
            // session's archive-pending back-off, not a request hanging
            // for minutes (object_store's default).
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(20),
                ..Default::default()
            });
        if let Some(ep) = &cfg.endpoint {
            let loopback = ep.starts_with("http://127.")
                || ep.starts_with("http://localhost")
                || ep.starts_with("http://[::1]");
            if ep.starts_with("http://") && !loopback {
                return Err(Error::Invalid(format!(
                    "S3 endpoint {ep}: plain http only to a loopback address; use https://"
                )));
            }
            b = b.with_endpoint(ep).with_allow_http(loopback);
        }
        let store = b
            .build()
            .map_err(|e| Error::Invalid(format!("S3 settings {cfg:?}: {e}")))?;
        Ok(Objects {
            store: Arc::new(store),
            local: None,
            describe: format!(
                "S3 bucket {} at {}",
                cfg.bucket,
                cfg.endpoint.as_deref().unwrap_or("AWS")
            ),
        })
    }

    /// In memory: for unit tests of the state machine only (lost on exit).
    pub fn memory() -> Objects {
        Objects {
            store: Arc::new(object_store::memory::InMemory::new()),
            local: None,
            describe: "in-memory store (tests only)".into(),
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn path(key: &str) -> Result<ObjPath> {
        ObjPath::parse(key).map_err(|e| Error::Internal(format!("archive key {key:?}: {e}")))
    }

    /// Compresses `tar` (zstd) and stores it at `key`, hashing as it goes.
    /// Nothing is visible at `key` unless the whole stream made it.
    ///
    /// Three stages overlap: reading from the engine (this task), zstd and
    /// sha256 (a blocking thread: CPU work off the async workers), and the
    /// upload (this task). Channels of 8 chunks between them keep memory
    /// bounded.
    pub async fn put_compressed(&self, key: &str, tar: ByteStream) -> Result<Written> {
        Ok(self.put_compressed_timed(key, tar).await?.0)
    }

    /// [`Objects::put_compressed`], saying where the time went.
    pub async fn put_compressed_timed(
        &self,
        key: &str,
        mut tar: ByteStream,
    ) -> Result<(Written, PutStats)> {
        let path = Self::path(key)?;
        if let Some(fs) = &self.local {
            let dest = fs.path_to_filesystem(&path).map_err(|e| storage(key, e))?;
            return put_local(key, dest, tar).await;
        }
        let mut w = BufWriter::with_capacity(self.store.clone(), path, PART)
            .with_max_concurrency(IN_FLIGHT);
        let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let compress = tokio::task::spawn_blocking(move || {
            compress(in_rx, |out| {
                out_tx
                    .blocking_send(out)
                    .map_err(|_| Error::Internal("archive upload ended early".into()))
            })
        });
        let began = Instant::now();
        let feed = async move {
            let (mut engine_wait, mut compress_wait, mut bytes) =
                (Duration::ZERO, Duration::ZERO, 0u64);
            loop {
                let t = Instant::now();
                let Some(chunk) = tar.next().await else { break };
                engine_wait += t.elapsed();
                let chunk = chunk.map_err(Error::Backend)?;
                bytes += chunk.len() as u64;
                let t = Instant::now();
                if in_tx.send(chunk).await.is_err() {
                    // The compressor stopped: its error is the one to report.
                    break;
                }
                compress_wait += t.elapsed();
            }
            Ok::<_, Error>((engine_wait, compress_wait, bytes))
        };
        let mut shut = false;
        let result: Result<(Written, PutStats)> = async {
            let upload = async {
                let mut wait = Duration::ZERO;
                while let Some(out) = out_rx.recv().await {
                    let t = Instant::now();
                    w.write_all(&out).await.map_err(|e| storage(key, e))?;
                    wait += t.elapsed();
                }
                Ok::<_, Error>(wait)
            };
            let ((engine_wait, compress_wait, tar_bytes), upload_wait) =
                tokio::try_join!(feed, upload)?;
            let (written, zstd, sha256) = compress
                .await
                .map_err(|e| Error::Internal(format!("zstd: {e}")))??;
            let stream = began.elapsed();
            shut = true;
            let t = Instant::now();
            w.shutdown().await.map_err(|e| storage(key, e))?;
            let stats = PutStats {
                tar_bytes,
                stream,
                engine_wait,
                compress_wait,
                zstd,
                sha256,
                upload_wait,
                close: t.elapsed(),
            };
            Ok((written, stats))
        }
        .await;
        if result.is_err() && !shut {
            // Drop the partial upload (multipart parts, temp files); after
            // a failed shutdown the writer cannot abort (the store's own
            // clean-up of incomplete uploads applies).
            let _ = w.abort().await;
        }
        result
    }

    /// Reads the object back and checks its size and sha256.
    pub async fn verify(&self, key: &str, want: &Written) -> Result<()> {
        let got = match &self.local {
            Some(fs) => {
                // Read and hashed on one blocking thread, one buffer.
                let path = fs
                    .path_to_filesystem(&Self::path(key)?)
                    .map_err(|e| storage(key, e))?;
                let k = key.to_string();
                tokio::task::spawn_blocking(move || hash_file(&k, &path))
                    .await
                    .map_err(|e| Error::Internal(format!("verify: {e}")))??
            }
            None => self.hash_remote(key).await?,
        };
        if &got != want {
            return Err(Error::Storage(format!(
                "{key}: read back {} bytes sha256 {}, wrote {} bytes sha256 {}",
                got.size, got.sha256, want.size, want.sha256
            )));
        }
        Ok(())
    }

    /// Size and sha256 of a stored object as the store serves it now: its
    /// size from a HEAD, then ranged GETs of [`PART`] bytes, [`IN_FLIGHT`]
    /// at once, hashed in order as they arrive (one GET streamed the whole
    /// object through a single connection).
    async fn hash_remote(&self, key: &str) -> Result<Written> {
        let path = Self::path(key)?;
        let size = self
            .store
            .head(&path)
            .await
            .map_err(|e| storage(key, e))?
            .size;
        let step = PART as u64;
        let ranges = (0..size.div_ceil(step)).map(|i| i * step..((i + 1) * step).min(size));
        let store = &self.store;
        let path = &path;
        let mut parts = futures_util::stream::iter(ranges)
            .map(|r| async move {
                let want = r.end - r.start;
                let got = store
                    .get_range(path, r)
                    .await
                    .map_err(|e| storage(key, e))?;
                if got.len() as u64 != want {
                    return Err(Error::Storage(format!(
                        "{key}: a range of {want} bytes came back with {}",
                        got.len()
                    )));
                }
                Ok(got)
            })
            .buffered(IN_FLIGHT);
        let mut hash = Sha256::new();
        let mut read = 0u64;
        while let Some(part) = parts.next().await {
            let part = part?;
            read += part.len() as u64;
            hash.update(&part);
        }
        Ok(Written {
            size: read,
            sha256: crate::store::hex(&hash.finalize()),
        })
    }

    /// The stored (compressed) bytes.
    pub async fn get(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let path = Self::path(key)?;
        let r = self.store.get(&path).await.map_err(|e| storage(key, e))?;
        let key = key.to_string();
        match r.payload {
            GetResultPayload::File(file, _) => Ok(file_stream(file, r.range, key)),
            GetResultPayload::Stream(s) => {
                Ok(s.map(move |c| c.map_err(|e| storage(&key, e))).boxed())
            }
        }
    }

    /// The archive decompressed back into the tar stream, for a backend's
    /// `import_tar`.
    pub async fn get_tar(&self, key: &str) -> Result<ByteStream> {
        let src = self.get(key).await?;
        let dec = zstd::stream::write::Decoder::new(Vec::with_capacity(256 << 10))
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        let key = key.to_string();
        let s = futures_util::stream::unfold(Some((src, dec)), move |st| {
            let key = key.clone();
            async move {
                let (mut src, mut dec) = st?;
                loop {
                    match src.next().await {
                        Some(Ok(c)) => {
                            if let Err(e) = std::io::Write::write_all(&mut dec, &c) {
                                let e = BackendError::Invalid(format!("archive {key}: {e}"));
                                return Some((Err(e), None));
                            }
                            let out = std::mem::take(dec.get_mut());
                            if !out.is_empty() {
                                return Some((Ok(Bytes::from(out)), Some((src, dec))));
                            }
                        }
                        Some(Err(e)) => {
                            let e = BackendError::Engine(format!("archive {key}: {e}"));
                            return Some((Err(e), None));
                        }
                        None => {
                            if let Err(e) = std::io::Write::flush(&mut dec) {
                                let e = BackendError::Invalid(format!("archive {key}: {e}"));
                                return Some((Err(e), None));
                            }
                            let out = std::mem::take(dec.get_mut());
                            if out.is_empty() {
                                return None;
                            }
                            return Some((Ok(Bytes::from(out)), None));
                        }
                    }
                }
            }
        });
        Ok(s.boxed())
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = Self::path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(key, e)),
        }
    }
}

/// [`Objects::put_compressed`] into a local directory: the engine's tar is
/// read here, compressed, hashed and written on one blocking thread
/// ([`write_local`]).
async fn put_local(key: &str, dest: PathBuf, mut tar: ByteStream) -> Result<(Written, PutStats)> {
    let began = Instant::now();
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let k = key.to_string();
    let whole = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w_whole = whole.clone();
    let writer = tokio::task::spawn_blocking(move || write_local(&k, &dest, in_rx, &w_whole));
    let (mut engine_wait, mut compress_wait, mut tar_bytes) = (Duration::ZERO, Duration::ZERO, 0);
    let fed = async {
        loop {
            let t = Instant::now();
            let Some(chunk) = tar.next().await else { break };
            engine_wait += t.elapsed();
            let chunk = chunk.map_err(Error::Backend)?;
            tar_bytes += chunk.len() as u64;
            let t = Instant::now();
            if in_tx.send(chunk).await.is_err() {
                break; // the writer stopped: its error is the one to report
            }
            compress_wait += t.elapsed();
        }
        Ok::<(), Error>(())
    }
    .await;
    // The channel's end means "whole" only with this set: a cut export
    // must not become an object.
    if fed.is_ok() {
        whole.store(true, std::sync::atomic::Ordering::Release);
    }
    drop(in_tx);
    let done = writer
        .await
        .map_err(|e| Error::Internal(format!("archive writer: {e}")))?;
    fed?;
    let (written, w) = done?;
    Ok((
        written,
        PutStats {
            tar_bytes,
            stream: began.elapsed() - w.close,
            engine_wait,
            compress_wait,
            zstd: w.zstd,
            sha256: w.sha256,
            upload_wait: w.write,
            close: w.close,
        },
    ))
}

/// The writer's own clock.
struct LocalTimes {
    zstd: Duration,
    sha256: Duration,
    write: Duration,
    close: Duration,
}

/// Writeback of a local archive is started every this many bytes, so that
/// the final fsync finds little left to write.
const WRITEBACK: u64 = 8 << 20;

/// Writes a local archive: zstd over the tar chunks from `input`, sha256 of
/// the compressed bytes, into `DEST#NANOS` in the destination directory
/// (written by a second thread, so that compression never waits on the disk);
/// writeback started every [`WRITEBACK`] bytes while compressing (so the
/// disk works while zstd does, rather than all at the end); then, only if
/// `whole` says the export ended well, fsync,
/// hard link to `dest` (an existing object is never replaced), the
/// temporary name removed, the directory fsynced. Any error removes the
/// temporary file and leaves nothing at `dest`.
fn write_local(
    key: &str,
    dest: &std::path::Path,
    input: tokio::sync::mpsc::Receiver<Bytes>,
    whole: &std::sync::atomic::AtomicBool,
) -> Result<(Written, LocalTimes)> {
    use std::io::Write;
    let io = |what: &str, e: std::io::Error| storage(&format!("{key}: {what}"), e);
    let dir = dest
        .parent()
        .ok_or_else(|| Error::Internal(format!("archive key {key:?}: no directory")))?;
    std::fs::create_dir_all(dir).map_err(|e| io("create its directory", e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(format!("#{nanos}"));
    let tmp = Temp(PathBuf::from(tmp));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp.0)
        .map_err(|e| io("create", e))?;
    // zstd and sha256 here, the writes (and the writeback they start) on a
    // thread of their own: the compressor does not wait for the disk.
    let (w, zstd, sha256, write) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let file = &file;
        let writer = scope.spawn(move || -> Result<Duration> {
            let (mut f, mut written, mut started, mut write) = (file, 0u64, 0u64, Duration::ZERO);
            for out in rx {
                let t = Instant::now();
                f.write_all(&out).map_err(|e| io("write", e))?;
                written += out.len() as u64;
                if written - started >= WRITEBACK {
                    start_writeback(file, started, written - started);
                    started = written;
                }
                write += t.elapsed();
            }
            Ok(write)
        });
        let compressed = compress(input, |out| {
            tx.send(out)
                .map_err(|_| Error::Internal(format!("{key}: the archive writer stopped")))
        });
        drop(tx);
        // The writer's error first: the compressor's would only say that
        // the writer stopped.
        let write = writer
            .join()
            .map_err(|_| Error::Internal(format!("{key}: the archive writer panicked")))??;
        let (w, zstd, sha256) = compressed?;
        Ok::<_, Error>((w, zstd, sha256, write))
    })?;
    if !whole.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::Internal(format!("{key}: the export ended early")));
    }
    let t = Instant::now();
    file.sync_all().map_err(|e| io("fsync", e))?;
    drop(file);
    std::fs::hard_link(&tmp.0, dest).map_err(|e| io("link into place", e))?;
    drop(tmp);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync its directory", e))?;
    let times = LocalTimes {
        zstd,
        sha256,
        write,
        close: t.elapsed(),
    };
    Ok((w, times))
}

/// Size and sha256 of a local file, as it reads now.
fn hash_file(key: &str, path: &std::path::Path) -> Result<Written> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| storage(key, e))?;
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(storage(key, e)),
        }
    }
    Ok(Written {
        size,
        sha256: crate::store::hex(&hash.finalize()),
    })
}

/// A temporary file, removed when dropped (after the link, or on an error).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts the writeback of `len` bytes at `offset` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Only a hint: durability
/// comes from the fsync at the end, so a failure here is ignored.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for as long as `file` is borrowed.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
}

/// A local object's bytes, read on one blocking thread in chunks of
/// [`READ_CHUNK`] (object_store's own stream of a file runs one blocking
/// task per 8 KiB: 12,800 of them for 100 MB). A file shorter than the
/// range ends the stream with an error, never early.
fn file_stream(
    mut file: std::fs::File,
    range: std::ops::Range<u64>,
    key: String,
) -> BoxStream<'static, Result<Bytes>> {
    use std::io::{Read, Seek, SeekFrom};
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut read = || -> std::io::Result<()> {
            file.seek(SeekFrom::Start(range.start))?;
            let mut left = range.end.saturating_sub(range.start);
            while left > 0 {
                let n = usize::try_from(left.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
                let mut buf = vec![0u8; n];
                file.read_exact(&mut buf)?;
                left -= n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the reader went away
                }
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(storage(&key, e)));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
        .boxed()
}

/// The compressing stage of [`Objects::put_compressed`]: tar chunks in,
/// zstd frames out to `sink` (in pieces of at least 256 KiB), size and
/// sha256 of what went out. Ends with the sink's error if it fails (the
/// upload or the write failed) so that a partial stream is never taken as
/// whole.
fn compress(
    mut input: tokio::sync::mpsc::Receiver<Bytes>,
    mut sink: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<(Written, Duration, Duration)> {
    const PIECE: usize = 256 << 10;
    let zerr = |e: std::io::Error| Error::Internal(format!("zstd: {e}"));
    let mut enc = zstd::stream::write::Encoder::new(Vec::with_capacity(2 * PIECE), ZSTD_LEVEL)
        .map_err(zerr)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let (mut zstd_time, mut sha_time) = (Duration::ZERO, Duration::ZERO);
    let mut send = |out: Vec<u8>, hash: &mut Sha256| -> Result<()> {
        let t = Instant::now();
        hash.update(&out);
        sha_time += t.elapsed();
        size += out.len() as u64;
        sink(out)
    };
    while let Some(chunk) = input.blocking_recv() {
        let t = Instant::now();
        std::io::Write::write_all(&mut enc, &chunk).map_err(zerr)?;
        zstd_time += t.elapsed();
        if enc.get_ref().len() >= PIECE {
            let out = std::mem::replace(enc.get_mut(), Vec::with_capacity(2 * PIECE));
            send(out, &mut hash)?;
        }
    }
    let t = Instant::now();
    let out = enc.finish().map_err(zerr)?;
    zstd_time += t.elapsed();
    if !out.is_empty() {
        send(out, &mut hash)?;
    }
    let written = Written {
        size,
        sha256: crate::store::hex(&hash.finalize()),
    };
    Ok((written, zstd_time, sha_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<std::result::Result<Vec<u8>, BackendError>>) -> ByteStream {
        futures_util::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from))).boxed()
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        out
    }

    #[tokio::test]
    async fn local_put_is_whole_verified_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let o = Objects::local(dir.path().to_path_buf()).unwrap();
        // More than WRITEBACK once compressed: pseudo-random bytes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..(12 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let parts = data.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
        let (w, stats) = o
            .put_compressed_timed("c/s/a.tar.zst", chunks(parts))
            .await
            .unwrap();
        assert_eq!(stats.tar_bytes, data.len() as u64);
        o.verify("c/s/a.tar.zst", &w).await.unwrap();
        let stored = std::fs::read(dir.path().join("c/s/a.tar.zst")).unwrap();
        assert_eq!(stored.len() as u64, w.size);
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), data);
        assert_eq!(files(dir.path()), vec!["a.tar.zst".to_string()]);
        // Never replaced: a second put at the same key fails, the first stays.
        let again = o
            .put_compressed("c/s/a.tar.zst", chunks(vec![Ok(b"other".to_vec())]))
            .await;
        assert!(again.is_err(), "{again:?}");
        o.verify("c/s/a.tar.zst", &w).await.unwrap();
        assert_eq!(files(dir.path()), vec!["a.tar.zst".to_string()]);
    }

    #[tokio::test]
    async fn local_put_of_a_cut_export_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let o = Objects::local(dir.path().to_path_buf()).unwrap();
        let cut = chunks(vec![
            Ok(vec![7u8; 1 << 20]),
            Err(BackendError::Engine("connection reset".into())),
        ]);
        let r = o.put_compressed("c/s/b.tar.zst", cut).await;
        assert!(matches!(r, Err(Error::Backend(_))), "{r:?}");
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }
}
