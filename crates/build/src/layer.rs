//! Layers: a directory (an overlay upper dir, or a staging dir of COPY) to
//! an OCI layer tar, overlayfs whiteouts (0/0 character devices, opaque
//! directories) to `.wh.` entries; the gzip blob stored and unpacked
//! through the image store; lookups through a stack of unpacked layers.

use crate::error::{BuildError, Result};
use cubby_image::digest::Digest;
use cubby_image::store::Store;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One layer of an image being built.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    pub chain: Digest,
    pub diff_id: Digest,
    pub blob: Digest,
    pub blob_size: u64,
    pub media_type: String,
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated; buf is valid for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    xattr(path, "trusted.overlay.opaque").as_deref() == Some(b"y")
}

/// A writer that hashes what passes through.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(h: sha2::Sha256) -> Result<Digest> {
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
        .parse()
        .map_err(|e: cubby_image::ImageError| BuildError::Image(e))
}

/// Writes `dir` as a layer tar to `out` (entries sorted, so the same tree
/// gives the same bytes).
pub fn write_tar(dir: &Path, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    walk(&mut b, dir, "", &mut links)?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| BuildError::io("writing layer tar", e))
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    rel: &str,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    let host = dir.join(rel);
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(&host)
        .map_err(|e| BuildError::io_path(&host, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| BuildError::io_path(&p, e)
    };
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let p = dir.join(&r);
        let m = fs::symlink_metadata(&p).map_err(err(&p))?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&m, tar::HeaderMode::Deterministic);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mode(m.mode() & 0o7777);
        if is_whiteout(&m) {
            let wh = match r.rsplit_once('/') {
                Some((parent, n)) => format!("{parent}/.wh.{n}"),
                None => format!(".wh.{name}"),
            };
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, wh, io::empty()).map_err(err(&p))?;
        } else if m.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, format!("{r}/"), io::empty())
                .map_err(err(&p))?;
            if is_opaque(&p) {
                let mut o = tar::Header::new_gnu();
                o.set_entry_type(tar::EntryType::Regular);
                o.set_size(0);
                o.set_mode(0o644);
                b.append_data(&mut o, format!("{r}/.wh..wh..opq"), io::empty())
                    .map_err(err(&p))?;
            }
            walk(b, dir, &r, links)?;
        } else if m.file_type().is_symlink() {
            let target = fs::read_link(&p).map_err(err(&p))?;
            h.set_size(0);
            b.append_link(&mut h, &r, target).map_err(err(&p))?;
        } else if m.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &r, first).map_err(err(&p))?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), r.clone());
            }
            let f = File::open(&p).map_err(err(&p))?;
            b.append_data(&mut h, &r, f).map_err(err(&p))?;
        } else {
            // Devices and fifos: the header carries all there is.
            h.set_size(0);
            b.append_data(&mut h, &r, io::empty()).map_err(err(&p))?;
        }
    }
    Ok(())
}

/// Tars `dir`, stores the gzip blob and unpacks it as the layer above
/// `parent` (a chain id). Scratch files go to `tmp`.
pub fn commit_dir(store: &Store, dir: &Path, parent: Option<&Digest>, tmp: &Path) -> Result<Layer> {
    let blob_path = tmp.join("layer.tar.gz");
    let (diff_id, blob, blob_size) = {
        let f = File::create(&blob_path).map_err(|e| BuildError::io_path(&blob_path, e))?;
        let gz_out = Hashing {
            inner: io::BufWriter::new(f),
            hash: sha2::Sha256::new(),
            len: 0,
        };
        let gz = flate2::write::GzEncoder::new(gz_out, flate2::Compression::fast());
        let mut tar_out = Hashing {
            inner: gz,
            hash: sha2::Sha256::new(),
            len: 0,
        };
        write_tar(dir, &mut tar_out)?;
        let diff = digest_of(tar_out.hash)?;
        let mut gz_out = tar_out
            .inner
            .finish()
            .map_err(|e| BuildError::io_path(&blob_path, e))?;
        gz_out
            .flush()
            .map_err(|e| BuildError::io_path(&blob_path, e))?;
        (diff, digest_of(gz_out.hash)?, gz_out.len)
    };
    let open = || File::open(&blob_path).map_err(|e| BuildError::io_path(&blob_path, e));
    store.ingest(&blob, Some(blob_size), open()?)?;
    let _ = fs::remove_file(&blob_path);
    let chain = Store::chain_id(parent, &diff_id);
    let stored = store.blob_path(&blob);
    let f = File::open(&stored).map_err(|e| BuildError::io_path(&stored, e))?;
    store.unpack_layer(&chain, &diff_id, f, GZIP_LAYER)?;
    Ok(Layer {
        chain,
        diff_id,
        blob,
        blob_size,
        media_type: GZIP_LAYER.into(),
    })
}

/// What is at `path` (relative, cleaned) in the stack of unpacked layers
/// `dirs` (bottom to top), seen through whiteouts and opaque directories.
pub fn lookup(dirs: &[PathBuf], path: &str) -> Option<Metadata> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for d in dirs.iter().rev() {
        // A whiteout or opaque dir above `path` in this layer hides the rest.
        let mut hidden = false;
        let mut cur = d.clone();
        for (i, s) in segs.iter().enumerate() {
            cur.push(s);
            match fs::symlink_metadata(&cur) {
                Ok(m) if is_whiteout(&m) => return None,
                Ok(m) if i + 1 == segs.len() => return Some(m),
                Ok(m) if m.is_dir() => {
                    if is_opaque(&cur) {
                        hidden = true;
                    }
                }
                Ok(_) => break,
                Err(_) => break,
            }
        }
        if segs.is_empty() {
            return fs::symlink_metadata(d).ok();
        }
        if hidden {
            return None;
        }
    }
    None
}
