//! The content-addressed store.
//!
//! Layout under the root (default `/var/lib/cubby`):
//!
//! ```text
//! blobs/sha256/<hex>          verified blobs (manifests, configs, compressed layers)
//! layers/<chain-id hex>/diff  an unpacked layer (an overlay lowerdir)
//! layers/<chain-id hex>/committed   written last (fsync'd); without it the dir is garbage
//! images.json                 image records keyed by reference
//! tmp/<instance>/             in-progress ingests and unpacks of one open Store
//! locks/                      flock(2) lock files
//! ```
//!
//! Crash safety: blobs and layers are built under `tmp/` and renamed into
//! place only once verified; a layer's `committed` marker is written after
//! its contents are synced. Each open [`Store`] owns `tmp/<instance>/` and
//! holds `locks/tmp-<instance>.lock`; [`Store::open`] removes every `tmp/`
//! entry whose owner is gone (killed process), and never one that is in use.
//!
//! Concurrency: layer unpacks are serialised per layer (`locks/layer-<hex>.lock`),
//! `images.json` updates by the `images` lock. [`Store::gc`] takes the `gc`
//! lock exclusively; a pull should hold [`Store::pin`] (the same lock,
//! shared) from its first ingest until its `put_image`, so gc never removes
//! blobs that are about to be referenced.

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::unpack;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const DEFAULT_ROOT: &str = "/var/lib/cubby";

const IMAGES_FILE: &str = "images.json";
const COMMITTED: &str = "committed";

/// Media types of layers we can unpack.
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// One image known to the store, keyed by its canonical reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// Canonical reference, e.g. `docker.io/library/alpine:3.18`.
    pub name: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// Chain ids of the unpacked layers, bottom to top.
    pub layers: Vec<Digest>,
    /// Compressed layer blobs listed in the manifest (kept by gc).
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// Total size (as `cubby images` shows it).
    pub size: u64,
    /// RFC 3339 creation time.
    pub created: String,
}

#[derive(Serialize, Deserialize, Default)]
struct ImagesFile {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

/// What [`Store::gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub bytes_freed: u64,
}

/// Bytes used by the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    pub blobs: u64,
    pub layers: u64,
}

/// An flock(2) held on `locks/<name>.lock`; released on drop.
pub struct LockGuard {
    _lock: Flock<File>,
    path: PathBuf,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("path", &self.path)
            .finish()
    }
}

/// The content store. `Send + Sync`; one per process is typical but several
/// (in one or many processes) are safe.
pub struct Store {
    root: PathBuf,
    /// `tmp/<instance>`: this Store's scratch space.
    tmp: PathBuf,
    /// Held for the Store's lifetime: tells other processes `tmp` is live.
    tmp_lock: Option<LockGuard>,
    counter: AtomicU64,
    /// syncfs before committing a layer (see [`Store::set_sync_layers`]).
    sync_layers: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |e| ImageError::io(path, e)
}

fn runtime_err(e: cubby_runtime::Error) -> ImageError {
    match e {
        cubby_runtime::Error::Io { what, source } => ImageError::Io {
            path: PathBuf::from(what),
            source,
        },
        other => ImageError::Invalid {
            what: "store".into(),
            reason: other.to_string(),
        },
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root` and removes leftovers
    /// of killed processes from `tmp/`. A corrupt `images.json` does not
    /// prevent opening: image-record calls report it (with the fix), blobs
    /// and layers stay usable.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        for d in ["blobs/sha256", "layers", "tmp", "locks"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let instance = format!(
            "{}-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut store = Store {
            tmp: root.join("tmp").join(&instance),
            root,
            tmp_lock: None,
            counter: AtomicU64::new(0),
            sync_layers: std::sync::atomic::AtomicBool::new(true),
        };
        store.clean_tmp()?;
        // Lock first, then create the directory: another process that sees
        // the directory always finds its lock held.
        store.tmp_lock = Some(store.lock(&format!("tmp-{instance}"))?);
        fs::create_dir(&store.tmp).map_err(io_err(&store.tmp))?;
        Ok(store)
    }

    /// Opens the store at [`DEFAULT_ROOT`].
    pub fn open_default() -> Result<Store> {
        Store::open(DEFAULT_ROOT)
    }

    /// Whether [`Store::unpack_layer`] flushes the filesystem (syncfs) before
    /// writing a layer's `committed` marker (default: true). Without it a
    /// power loss shortly after a pull can leave a "committed" layer with
    /// empty files; turn it off only for throwaway stores (CI, benchmarks).
    pub fn set_sync_layers(&self, sync: bool) {
        self.sync_layers.store(sync, Ordering::Relaxed);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This Store's scratch directory (removed when the Store closes, or by
    /// the next open after a crash): for temp files of callers like import.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Removes `tmp/` entries whose owning Store is gone, and stale tmp locks.
    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        let entries = fs::read_dir(&tmp).map_err(io_err(&tmp))?;
        for e in entries {
            let e = e.map_err(io_err(&tmp))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let lock_name = format!("tmp-{name}");
            let guard = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                match self.try_lock(&lock_name)? {
                    Some(g) => Some(g),
                    None => continue, // owner alive
                }
            } else {
                None
            };
            let p = e.path();
            remove_any(&p).map_err(io_err(&p))?;
            if let Some(g) = guard {
                let _ = fs::remove_file(g.path());
            }
        }
        // Stale lock files of tmp dirs already gone.
        let locks = self.root.join("locks");
        let entries = fs::read_dir(&locks).map_err(io_err(&locks))?;
        for e in entries {
            let e = e.map_err(io_err(&locks))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(lock) = name
                .strip_prefix("tmp-")
                .and_then(|n| n.strip_suffix(".lock"))
            {
                if let Some(g) = self.try_lock(&format!("tmp-{lock}"))? {
                    let _ = fs::remove_file(g.path());
                }
            }
        }
        Ok(())
    }

    fn next_tmp(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{what}-{n}"))
    }

    // ---------------------------------------------------------------- locks

    fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    fn lock_with(&self, name: &str, arg: FlockArg) -> Result<Option<LockGuard>> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(ImageError::Invalid {
                what: format!("lock name {name:?}"),
                reason: "must be a plain file name".into(),
            });
        }
        let path = self.lock_path(name);
        loop {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err(&path))?;
            let locked = loop {
                match Flock::lock(f, arg) {
                    Ok(l) => break l,
                    Err((f2, nix::errno::Errno::EINTR)) => f = f2,
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                    Err((_, e)) => return Err(ImageError::io(&path, e.into())),
                }
            };
            // Lock files may be unlinked by their holder (gc, tmp cleanup):
            // make sure we hold the file that is still at `path`.
            if same_file(&locked, &path) {
                return Ok(Some(LockGuard {
                    _lock: locked,
                    path,
                }));
            }
        }
    }

    /// Takes the exclusive lock `locks/<name>.lock`, waiting for it; released
    /// when the guard drops. Works across processes and across threads
    /// (each call opens its own file description).
    pub fn lock(&self, name: &str) -> Result<LockGuard> {
        self.lock_with(name, FlockArg::LockExclusive)?
            .ok_or_else(|| ImageError::Invalid {
                what: format!("lock {name}"),
                reason: "not acquired".into(),
            })
    }

    /// Takes the lock `name` shared (many holders, excludes [`Store::lock`]).
    pub fn lock_shared(&self, name: &str) -> Result<LockGuard> {
        self.lock_with(name, FlockArg::LockShared)?
            .ok_or_else(|| ImageError::Invalid {
                what: format!("lock {name}"),
                reason: "not acquired".into(),
            })
    }

    /// The exclusive lock `name` if free now, else `None`.
    pub fn try_lock(&self, name: &str) -> Result<Option<LockGuard>> {
        self.lock_with(name, FlockArg::LockExclusiveNonblock)
    }

    /// Keeps [`Store::gc`] away while held: hold it from the first ingest of
    /// a pull/import until its `put_image`.
    pub fn pin(&self) -> Result<LockGuard> {
        self.lock_shared("gc")
    }

    // ---------------------------------------------------------------- blobs

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest))
            .map(|m| m.is_file())
            .unwrap_or(false)
    }

    /// Size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(blob_not_found(digest)),
            Err(e) => Err(ImageError::io(p, e)),
        }
    }

    /// Opens a stored blob for streaming (not verified: ingest verified it).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(blob_not_found(digest)),
            Err(e) => Err(ImageError::io(p, e)),
        }
    }

    /// Reads a (small) blob and verifies its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(blob_not_found(digest)),
            Err(e) => return Err(ImageError::io(p, e)),
        };
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!(
                    "stored blob {} (the store is corrupt; run `cubby image prune` and pull the image again)",
                    p.display()
                ),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Streams `reader` into the store, verifying it against `expected` (and
    /// `size` if given). Nothing is stored unless it verifies. If the blob is
    /// already present, returns at once without reading.
    pub fn ingest(
        &self,
        expected: &Digest,
        size: Option<u64>,
        reader: impl Read,
    ) -> Result<PathBuf> {
        let dest = self.blob_path(expected);
        if self.has_blob(expected) {
            return Ok(dest);
        }
        let tmp = self.next_tmp("blob");
        let result = (|| -> Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            // Don't read forever from a stream longer than announced.
            let limit = size.map(|s| s.saturating_add(1)).unwrap_or(u64::MAX);
            let mut hashing = HashingReader::new(reader.take(limit));
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match hashing.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(ImageError::io(format!("reading blob {expected}"), e));
                    }
                };
                file.write_all(&buf[..n]).map_err(io_err(&tmp))?;
            }
            hashing.finish(&format!("blob {expected}"), expected, size)?;
            file.sync_all().map_err(io_err(&tmp))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::io(&dest, e));
        }
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        Ok(dest)
    }

    /// Stores a small blob we created (config, manifest) and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        self.ingest(&d, Some(bytes.len() as u64), bytes)?;
        Ok(d)
    }

    // --------------------------------------------------------------- layers

    /// OCI chain id: chainID(L0) = diffID(L0),
    /// chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)).
    pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        }
    }

    /// Chain ids of a whole stack of diff ids, bottom to top.
    pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
        for d in diff_ids {
            let c = Store::chain_id(out.last(), d);
            out.push(c);
        }
        out
    }

    fn layer_root(&self, chain: &Digest) -> PathBuf {
        self.root.join("layers").join(chain.hex())
    }

    /// The unpacked layer's directory (an overlay lowerdir).
    pub fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.layer_root(chain).join("diff")
    }

    /// True when the layer is fully unpacked (its marker exists).
    pub fn has_layer(&self, chain: &Digest) -> bool {
        self.layer_root(chain).join(COMMITTED).is_file()
    }

    /// Unpacked size recorded when the layer was committed.
    pub fn layer_size(&self, chain: &Digest) -> Result<u64> {
        let p = self.layer_root(chain).join(COMMITTED);
        let text = fs::read_to_string(&p).map_err(io_err(&p))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("size "))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Unpacks a layer blob (gzip, zstd or plain tar, by media type and magic
    /// bytes), verifying the uncompressed stream against `diff_id`, into
    /// `layers/<chain>/`. Returns the bytes of file content unpacked (the
    /// recorded size if the layer was already there, without reading).
    /// Concurrent calls for the same layer (threads or processes) unpack
    /// it once; the others wait and find it committed.
    pub fn unpack_layer(
        &self,
        chain: &Digest,
        diff_id: &Digest,
        compressed: impl Read,
        media_type: &str,
    ) -> Result<u64> {
        if self.has_layer(chain) {
            return self.layer_size(chain);
        }
        let _guard = self.lock(&format!("layer-{}", chain.hex()))?;
        if self.has_layer(chain) {
            return self.layer_size(chain);
        }
        check_media_type(media_type)?;
        let work = self.next_tmp(&format!("layer-{}", chain.short()));
        let diff = work.join("diff");
        fs::create_dir_all(&diff).map_err(io_err(&diff))?;
        let result = self.unpack_into(&diff, diff_id, compressed);
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let finalize = || -> Result<()> {
            // Flush the unpacked files before anything points at them.
            if self.sync_layers.load(Ordering::Relaxed) {
                let d = File::open(&diff).map_err(io_err(&diff))?;
                nix::unistd::syncfs(&d).map_err(|e| ImageError::io(&diff, e.into()))?;
            }
            let dest = self.layer_root(chain);
            // An uncommitted leftover of a killed unpack: garbage.
            if fs::symlink_metadata(&dest).is_ok() {
                fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
            }
            fs::rename(&work, &dest).map_err(io_err(&dest))?;
            sync_dir(&self.root.join("layers"))?;
            let marker = format!("diff_id {diff_id}\nsize {}\n", stats.bytes);
            cubby_runtime::state::write_atomic(&dest.join(COMMITTED), marker.as_bytes())
                .map_err(runtime_err)?;
            Ok(())
        };
        if let Err(e) = finalize() {
            let _ = fs::remove_dir_all(&work);
            return Err(e);
        }
        Ok(stats.bytes)
    }

    fn unpack_into(
        &self,
        diff: &Path,
        diff_id: &Digest,
        compressed: impl Read,
    ) -> Result<unpack::UnpackStats> {
        let what = format!("layer {diff_id} (uncompressed)");
        let mut input = BufReader::with_capacity(256 * 1024, compressed);
        let magic = input
            .fill_buf()
            .map_err(|e| ImageError::io(format!("reading layer {diff_id}"), e))?;
        let decoder: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|e| ImageError::io(format!("zstd decoder for {what}"), e))?,
            )
        } else {
            Box::new(input)
        };
        // Two stages on two threads: decompression here, hashing + writing
        // files on a worker, joined by a small queue of 1 MiB chunks.
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        std::thread::scope(|s| {
            let worker = s.spawn(move || -> Result<unpack::UnpackStats> {
                let mut hashing = HashingReader::new(ChunkReader {
                    rx,
                    chunk: Vec::new(),
                    pos: 0,
                });
                let stats = unpack::unpack(&mut hashing, diff, &diff_id.to_string())?;
                hashing.finish(&what, diff_id, None)?;
                Ok(stats)
            });
            let mut decoder = decoder;
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let mut filled = 0;
                let res = loop {
                    match decoder.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == CHUNK {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(filled);
                let last = filled < CHUNK || res.is_err();
                let sent = match res {
                    Ok(()) if filled == 0 => true,
                    Ok(()) => tx.send(Ok(chunk)).is_ok(),
                    Err(e) => {
                        let _ = tx.send(Ok(chunk));
                        tx.send(Err(e)).is_ok()
                    }
                };
                // A closed queue means the worker stopped (it has the error).
                if last || !sent {
                    break;
                }
            }
            drop(tx);
            worker.join().unwrap_or_else(|_| {
                Err(ImageError::Invalid {
                    what: format!("layer {diff_id}"),
                    reason: "unpack worker panicked".into(),
                })
            })
        })
    }

    // --------------------------------------------------------------- images

    fn images_path(&self) -> PathBuf {
        self.root.join(IMAGES_FILE)
    }

    fn load_images(&self) -> Result<ImagesFile> {
        let p = self.images_path();
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(ImagesFile {
                    version: 1,
                    images: BTreeMap::new(),
                })
            }
            Err(e) => return Err(ImageError::io(p, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
            what: format!("image records {}", p.display()),
            reason: format!(
                "{e}; the file is corrupt: move it aside (`mv {0} {0}.bad`) and pull your images again \
                 (blobs and layers are kept, so this is quick)",
                p.display()
            ),
        })
    }

    fn save_images(&self, file: &ImagesFile) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| ImageError::Invalid {
            what: "image records".into(),
            reason: e.to_string(),
        })?;
        cubby_runtime::state::write_atomic(&self.images_path(), &bytes).map_err(runtime_err)
    }

    /// Adds or replaces the record `rec.name`.
    pub fn put_image(&self, rec: ImageRecord) -> Result<()> {
        let _g = self.lock("images")?;
        let mut file = self.load_images()?;
        file.version = 1;
        file.images.insert(rec.name.clone(), rec);
        self.save_images(&file)
    }

    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.load_images()?.images.remove(name))
    }

    /// All records, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.load_images()?.images.into_values().collect())
    }

    /// Removes a record (not its blobs: see [`Store::gc`]). False if absent.
    pub fn remove_image(&self, name: &str) -> Result<bool> {
        let _g = self.lock("images")?;
        let mut file = self.load_images()?;
        if file.images.remove(name).is_none() {
            return Ok(false);
        }
        self.save_images(&file)?;
        Ok(true)
    }

    // ------------------------------------------------------------------- gc

    /// Removes blobs and layers referenced neither by an image record nor by
    /// `keep_layers` (chain ids used by containers), and uncommitted layer
    /// leftovers. Waits for pinned operations ([`Store::pin`]).
    pub fn gc(&self, keep_layers: &[Digest]) -> Result<GcReport> {
        let _gc = self.lock("gc")?;
        let images = {
            let _g = self.lock("images")?;
            self.load_images()?
        };
        let mut blobs: HashSet<String> = HashSet::new();
        let mut layers: HashSet<String> = keep_layers.iter().map(|d| d.hex().to_string()).collect();
        for rec in images.images.values() {
            blobs.insert(rec.manifest_digest.hex().into());
            blobs.insert(rec.config_digest.hex().into());
            blobs.extend(rec.blobs.iter().map(|d| d.hex().to_string()));
            layers.extend(rec.layers.iter().map(|d| d.hex().to_string()));
        }
        let mut report = GcReport::default();

        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if blobs.contains(&name) {
                continue;
            }
            let p = e.path();
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            remove_any(&p).map_err(io_err(&p))?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }

        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if layers.contains(&name) {
                continue;
            }
            let Ok(chain) = format!("sha256:{name}").parse::<Digest>() else {
                // Not ours (e.g. a leftover temp name): remove anyway.
                let p = e.path();
                report.bytes_freed += tree_size(&p);
                remove_any(&p).map_err(io_err(&p))?;
                continue;
            };
            // Not while someone unpacks it.
            let Some(guard) = self.try_lock(&format!("layer-{}", chain.hex()))? else {
                continue;
            };
            let root = self.layer_root(&chain);
            let size = tree_size(&root);
            // Uncommit first: a crash mid-removal leaves garbage, not a
            // half layer that claims to be complete.
            let marker = root.join(COMMITTED);
            match fs::remove_file(&marker) {
                Ok(()) => sync_dir(&root)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io(marker, e)),
            }
            remove_any(&root).map_err(io_err(&root))?;
            let _ = fs::remove_file(guard.path());
            report.layers_removed += 1;
            report.bytes_freed += size;
        }
        Ok(report)
    }

    /// Bytes used by blobs and unpacked layers.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        Ok(DiskUsage {
            blobs: tree_size(&self.root.join("blobs")),
            layers: tree_size(&self.root.join("layers")),
        })
    }
}

const CHUNK: usize = 1 << 20;

/// Reads the chunks a decompressing thread sends; an `Err` chunk is the
/// decompressor's error, a closed queue the end of the stream.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.tmp);
        if let Some(g) = self.tmp_lock.take() {
            let _ = fs::remove_file(g.path());
        }
    }
}

fn blob_not_found(digest: &Digest) -> ImageError {
    ImageError::NotFound {
        what: format!("blob {digest}"),
        hint: "; pull the image again".into(),
    }
}

fn check_media_type(media_type: &str) -> Result<()> {
    if media_type.is_empty() || LAYER_MEDIA_TYPES.contains(&media_type) {
        Ok(())
    } else {
        Err(ImageError::Unsupported {
            what: "layer media type".into(),
            value: media_type.into(),
        })
    }
}

fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Allocated-size-agnostic byte count of a tree (file lengths), not
/// following symlinks, counting each hard-linked inode once.
fn tree_size(p: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if m.is_file() && (m.nlink() <= 1 || seen.insert((m.dev(), m.ino()))) {
            total += m.len();
        }
    }
    total
}
