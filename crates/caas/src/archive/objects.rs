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
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::backend::{BackendError, ByteStream};
use crate::error::{Error, Result};

/// zstd level: 3 is zstd's default and `zstd -3`'s (the benchmark's reference).
const ZSTD_LEVEL: i32 = 3;
/// Upload buffer: parts of this size; at most 2 in flight (bounded memory).
const PART: usize = 8 << 20;

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
    /// Handing compressed bytes to the store's writer (local: part writes
    /// on blocking threads; S3: part uploads).
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
        Ok(Objects {
            store: Arc::new(fs),
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
        let mut w =
            BufWriter::with_capacity(self.store.clone(), path, PART).with_max_concurrency(2);
        let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let compress = tokio::task::spawn_blocking(move || compress(in_rx, out_tx));
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
        let mut s = self.get(key).await?;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hash.update(&chunk);
        }
        let got = Written {
            size,
            sha256: crate::store::hex(&hash.finalize()),
        };
        if &got != want {
            return Err(Error::Storage(format!(
                "{key}: read back {} bytes sha256 {}, wrote {} bytes sha256 {}",
                got.size, got.sha256, want.size, want.sha256
            )));
        }
        Ok(())
    }

    /// The stored (compressed) bytes.
    pub async fn get(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let path = Self::path(key)?;
        let r = self.store.get(&path).await.map_err(|e| storage(key, e))?;
        let key = key.to_string();
        Ok(r.into_stream()
            .map(move |c| c.map_err(|e| storage(&key, e)))
            .boxed())
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

/// The compressing stage of [`Objects::put_compressed`]: tar chunks in,
/// zstd frames out (in pieces of at least 256 KiB), size and sha256 of
/// what went out. Ends with an error if the output side went away (the
/// upload failed) so that a partial stream is never taken as whole.
fn compress(
    mut input: tokio::sync::mpsc::Receiver<Bytes>,
    output: tokio::sync::mpsc::Sender<Vec<u8>>,
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
        output
            .blocking_send(out)
            .map_err(|_| Error::Internal("archive upload ended early".into()))
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
