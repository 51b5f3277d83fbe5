//! Layer unpacking: a layer tar stream to a directory in overlayfs form.
//!
//! - `dir/.wh.NAME` becomes a 0/0 character device `dir/NAME` (overlayfs
//!   whiteout); `dir/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `dir`.
//! - Regular files, directories, symlinks, hard links, devices and fifos are
//!   recreated with numeric ownership, full modes (setuid/setgid/sticky),
//!   mtimes and `SCHILY.xattr.*` extended attributes.
//! - Hostile archives are refused ([`ImageError::UnsafeArchive`]): `..` that
//!   escapes, parents that are symlinks (or anything but a real directory),
//!   hard links leaving the layer. A leading `/` is stripped, as Docker does.
//!   Symlinks are created as written but never followed while unpacking.
//!
//! Safety argument: `dest` is a fresh directory that only this function
//! writes to. Every parent directory of an entry is either created here with
//! `mkdir` or verified with `lstat` to be a real directory (a cache of
//! verified directories avoids repeating this, and is invalidated when a
//! directory is replaced). The last component is always created with a call
//! that does not follow symlinks (`O_CREAT|O_EXCL`, `mkdir`, `mknod`,
//! `symlink`, `linkat` without `AT_SYMLINK_FOLLOW`), after removing whatever
//! was there. Metadata is applied through the new file descriptor or with
//! no-follow calls, so nothing outside `dest` is ever touched.

use crate::error::{ImageError, Result};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const MAX_WARNINGS: usize = 20;
const BUF_SIZE: usize = 1 << 20;

/// What [`unpack`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries created (files, dirs, links, devices, fifos), not counting whiteouts.
    pub files: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers translated.
    pub whiteouts: u64,
    /// Extended attributes the filesystem refused (e.g. `security.selinux`,
    /// `user.*` on a symlink); the layer is still unpacked.
    pub xattrs_skipped: u64,
    /// Human-readable notes about skipped things (at most 20).
    pub warnings: Vec<String>,
}

impl UnpackStats {
    fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }
}

/// Unpacks the (uncompressed) layer tar `reader` into `dest`, an existing,
/// empty directory. `layer` names the layer in errors (e.g. its digest).
///
/// Reads the archive up to its end-of-archive marker; the caller should drain
/// whatever follows if it hashes the stream.
pub fn unpack(reader: impl Read, dest: &Path, layer: &str) -> Result<UnpackStats> {
    let meta = fs::symlink_metadata(dest).map_err(|e| ImageError::io(dest, e))?;
    if !meta.is_dir() {
        return Err(ImageError::Invalid {
            what: format!("unpack destination {}", dest.display()),
            reason: "not a directory".into(),
        });
    }
    let mut u = Unpacker {
        dest: dest.to_path_buf(),
        layer: layer.to_string(),
        known_dirs: HashSet::new(),
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
        buf: vec![0u8; BUF_SIZE],
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(256 * 1024, reader));
    let entries = archive.entries().map_err(|e| u.read_err(e))?;
    for entry in entries {
        let entry = entry.map_err(|e| u.read_err(e))?;
        u.entry(entry)?;
    }
    u.finish_dirs();
    Ok(u.stats)
}

struct Unpacker {
    dest: PathBuf,
    layer: String,
    /// Relative paths verified (or created) to be real directories.
    known_dirs: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, TimeSpec)>,
    stats: UnpackStats,
    buf: Vec<u8>,
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker {
    fn read_err(&self, e: io::Error) -> ImageError {
        ImageError::Invalid {
            what: format!("layer {}", self.layer),
            reason: format!("reading tar stream: {e}"),
        }
    }

    fn invalid(&self, path: &str, reason: impl Into<String>) -> ImageError {
        ImageError::Invalid {
            what: format!("layer {} entry {path:?}", self.layer),
            reason: reason.into(),
        }
    }

    fn unsafe_path(&self, path: &str, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeArchive {
            layer: self.layer.clone(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Lexically normalises an archive path: strips leading `/` and `.`
    /// components, resolves `..` and refuses one that climbs above the root.
    fn normalize(&self, raw: &[u8]) -> Result<PathBuf> {
        let mut parts: Vec<&[u8]> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(self.unsafe_path(
                            &String::from_utf8_lossy(raw),
                            "`..` escapes the layer root",
                        ));
                    }
                }
                c => parts.push(c),
            }
        }
        let mut p = PathBuf::new();
        for c in parts {
            p.push(OsStr::from_bytes(c));
        }
        Ok(p)
    }

    /// Makes sure every ancestor of `rel` is a real directory inside dest,
    /// creating missing ones (mode 0755). With `create == false` missing
    /// ancestors are an error (used for hard-link targets).
    fn ensure_parents(&mut self, rel: &Path, shown: &str, create: bool) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if parent.as_os_str().is_empty() || self.known_dirs.contains(parent) {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let abs = self.dest.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(
                        self.unsafe_path(shown, format!("parent {} is a symlink", cur.display()))
                    );
                }
                Ok(_) => {
                    return Err(self.unsafe_path(
                        shown,
                        format!("parent {} is not a directory", cur.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match fs::create_dir(&abs) {
                        Ok(()) => {}
                        Err(e) => return Err(ImageError::io(&abs, e)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(self.unsafe_path(
                        shown,
                        format!("link target's parent {} does not exist", cur.display()),
                    ));
                }
                Err(e) => return Err(ImageError::io(&abs, e)),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `rel` (without following symlinks).
    fn remove_existing(&mut self, rel: &Path) -> Result<()> {
        let abs = self.dest.join(rel);
        let m = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io(&abs, e)),
        };
        if m.is_dir() {
            // remove_dir_all does not follow symlinks inside.
            fs::remove_dir_all(&abs).map_err(|e| ImageError::io(&abs, e))?;
            self.known_dirs.retain(|d| !d.starts_with(rel));
        } else {
            fs::remove_file(&abs).map_err(|e| ImageError::io(&abs, e))?;
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| self.invalid(shown, format!("bad {what}: {e}"));
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        // Some writers leave numeric fields blank: read that as 0.
        let old = h.as_old();
        let blank = |f: &[u8]| f.iter().all(|&b| b == 0 || b == b' ');
        let mut uid = if blank(&old.uid) {
            0
        } else {
            h.uid().map_err(|e| bad("uid", e))?
        };
        let mut gid = if blank(&old.gid) {
            0
        } else {
            h.gid().map_err(|e| bad("gid", e))?
        };
        let mtime = if blank(&old.mtime) {
            0
        } else {
            h.mtime().map_err(|e| bad("mtime", e))?
        };
        let mut mtime = TimeSpec::new(mtime as i64, 0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| bad("PAX record", e))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if let Ok(name) = CString::new(name) {
                        xattrs.push((name, value.to_vec()));
                    }
                } else if key == b"uid" {
                    uid = parse_num(value).ok_or_else(|| self.invalid(shown, "bad PAX uid"))?;
                } else if key == b"gid" {
                    gid = parse_num(value).ok_or_else(|| self.invalid(shown, "bad PAX gid"))?;
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(value) {
                        mtime = t;
                    }
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| self.invalid(shown, format!("{what} {v} out of range")))
        };
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime,
            xattrs,
        })
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => return Ok(()),
            _ => {}
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = self.normalize(&raw)?;

        // Whiteouts and opaque markers.
        if let Some(name) = rel.file_name().map(|n| n.as_bytes()) {
            if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return self.whiteout(&rel, name, &shown);
            }
        }

        let meta = self.meta(&mut entry, &shown)?;
        if rel.as_os_str().is_empty() {
            // The layer root itself ("./").
            if kind != EntryType::Directory {
                return Err(self.invalid(&shown, "the layer root is not a directory"));
            }
            let dest = self.dest.clone();
            self.apply_dir(&dest, &meta, Path::new(""))?;
            return Ok(());
        }
        self.ensure_parents(&rel, &shown, true)?;
        let abs = self.dest.join(&rel);
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let file = match self.create_file(&abs) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        self.remove_existing(&rel)?;
                        self.create_file(&abs)
                            .map_err(|e| ImageError::io(&abs, e))?
                    }
                    Err(e) => return Err(ImageError::io(&abs, e)),
                };
                self.write_file(&mut entry, file, &abs, &meta)?;
            }
            EntryType::Directory => {
                match fs::create_dir(&abs) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let m = fs::symlink_metadata(&abs).map_err(|e| ImageError::io(&abs, e))?;
                        if !m.is_dir() {
                            self.remove_existing(&rel)?;
                            fs::create_dir(&abs).map_err(|e| ImageError::io(&abs, e))?;
                        }
                    }
                    Err(e) => return Err(ImageError::io(&abs, e)),
                }
                self.known_dirs.insert(rel.clone());
                self.apply_dir(&abs, &meta, &rel)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.invalid(&shown, "symlink without a target"))?
                    .into_owned();
                let target = OsStr::from_bytes(&target);
                self.create_with_replace(&rel, |p| symlink(target, p))?;
                self.apply_nonfile(&abs, &meta, true)?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.invalid(&shown, "hard link without a target"))?
                    .into_owned();
                let target_rel = self.normalize(&target_raw).map_err(|_| {
                    self.unsafe_path(
                        &shown,
                        format!(
                            "hard link target {:?} escapes the layer root",
                            String::from_utf8_lossy(&target_raw)
                        ),
                    )
                })?;
                if target_rel.as_os_str().is_empty() {
                    return Err(self.unsafe_path(&shown, "hard link to the layer root"));
                }
                if target_rel == rel {
                    return Ok(());
                }
                self.ensure_parents(&target_rel, &shown, false)?;
                let target_abs = self.dest.join(&target_rel);
                match fs::symlink_metadata(&target_abs) {
                    Ok(m) if m.is_dir() => {
                        return Err(self.unsafe_path(&shown, "hard link to a directory"));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(self.invalid(
                            &shown,
                            format!(
                                "hard link target {:?} is not in the layer (links must point to earlier entries)",
                                String::from_utf8_lossy(&target_raw)
                            ),
                        ));
                    }
                    Err(e) => return Err(ImageError::io(&target_abs, e)),
                }
                // std's hard_link is linkat(..., 0): a symlink target is linked
                // itself, never followed.
                self.create_with_replace(&rel, |p| fs::hard_link(&target_abs, p))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let h = entry.header();
                        let major = h
                            .device_major()
                            .ok()
                            .flatten()
                            .ok_or_else(|| self.invalid(&shown, "bad device major"))?;
                        let minor = h
                            .device_minor()
                            .ok()
                            .flatten()
                            .ok_or_else(|| self.invalid(&shown, "bad device minor"))?;
                        let f = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, libc::makedev(major, minor))
                    }
                };
                self.create_with_replace(&rel, |p| {
                    nix::sys::stat::mknod(p, sflag, Mode::from_bits_truncate(0o600), dev)
                        .map_err(io::Error::from)
                })?;
                self.apply_nonfile(&abs, &meta, false)?;
            }
            other => {
                return Err(ImageError::Unsupported {
                    what: format!("tar entry type in layer {} ({shown:?})", self.layer),
                    value: format!("{other:?}"),
                });
            }
        }
        self.stats.files += 1;
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path, name: &[u8], shown: &str) -> Result<()> {
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE_MARKER.as_bytes() {
            self.ensure_parents(rel, shown, true)?;
            let dir = self.dest.join(&parent);
            set_xattr_nofollow(&dir, c"trusted.overlay.opaque", b"y").map_err(|e| {
                ImageError::io(
                    &dir,
                    io::Error::new(
                        e.kind(),
                        format!("setting trusted.overlay.opaque (needs root and a filesystem with trusted xattrs): {e}"),
                    ),
                )
            })?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(self.invalid(shown, "whiteout without a valid name"));
        }
        self.ensure_parents(rel, shown, true)?;
        let hidden = parent.join(OsStr::from_bytes(target));
        self.create_with_replace(&hidden, |p| {
            nix::sys::stat::mknod(p, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
        })?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Runs `create` on the absolute path of `rel`; if something is already
    /// there it is removed first and `create` retried once.
    fn create_with_replace(
        &mut self,
        rel: &Path,
        create: impl Fn(&Path) -> io::Result<()>,
    ) -> Result<()> {
        let abs = self.dest.join(rel);
        match create(&abs) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(rel)?;
                create(&abs).map_err(|e| ImageError::io(&abs, e))
            }
            Err(e) => Err(ImageError::io(&abs, e)),
        }
    }

    fn create_file(&self, abs: &Path) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(abs)
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        mut file: File,
        abs: &Path,
        meta: &Meta,
    ) -> Result<()> {
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_err(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| ImageError::io(abs, e))?;
            written += n as u64;
        }
        self.stats.bytes += written;
        self.set_owner_xattrs_mode(&file, abs, meta)?;
        nix::sys::stat::futimens(file.as_fd(), &meta.mtime, &meta.mtime)
            .map_err(|e| ImageError::io(abs, e.into()))?;
        Ok(())
    }

    /// Order matters: chown clears setuid/setgid and file capabilities, so
    /// ownership first, then xattrs, then the mode.
    fn set_owner_xattrs_mode(&mut self, f: &File, abs: &Path, meta: &Meta) -> Result<()> {
        nix::unistd::fchown(
            f.as_fd(),
            Some(nix::unistd::Uid::from_raw(meta.uid)),
            Some(nix::unistd::Gid::from_raw(meta.gid)),
        )
        .map_err(|e| ImageError::io(abs, e.into()))?;
        for (name, value) in &meta.xattrs {
            if let Err(e) = fset_xattr(f, name, value) {
                self.skipped_xattr(abs, name, e);
            }
        }
        nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_retain(meta.mode))
            .map_err(|e| ImageError::io(abs, e.into()))
    }

    fn skipped_xattr(&mut self, path: &Path, name: &CString, e: io::Error) {
        self.stats.xattrs_skipped += 1;
        self.stats.warn(format!(
            "layer {}: {}: xattr {} not set: {e}",
            self.layer,
            path.display(),
            name.to_string_lossy()
        ));
    }

    /// Ownership, xattrs and mode of a directory now; its mtime at the end
    /// (creating children changes it).
    fn apply_dir(&mut self, abs: &Path, meta: &Meta, rel: &Path) -> Result<()> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(abs)
            .map_err(|e| ImageError::io(abs, e))?;
        self.set_owner_xattrs_mode(&dir, abs, meta)?;
        self.dir_times.push((rel.to_path_buf(), meta.mtime));
        Ok(())
    }

    /// Symlinks, devices, fifos: nothing to open, so no-follow path calls on
    /// the node just created.
    fn apply_nonfile(&mut self, abs: &Path, meta: &Meta, is_symlink: bool) -> Result<()> {
        std::os::unix::fs::lchown(abs, Some(meta.uid), Some(meta.gid))
            .map_err(|e| ImageError::io(abs, e))?;
        for (name, value) in &meta.xattrs {
            if let Err(e) = set_xattr_nofollow(abs, name, value) {
                self.skipped_xattr(abs, name, e);
            }
        }
        if !is_symlink {
            // The node was just created by mknod (not a symlink), so chmod's
            // following of the last component is harmless.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                abs,
                Mode::from_bits_retain(meta.mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ImageError::io(abs, e.into()))?;
        }
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            abs,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ImageError::io(abs, e.into()))?;
        Ok(())
    }

    fn finish_dirs(&mut self) {
        // Best effort: a directory may have been replaced by a later entry.
        for (rel, t) in std::mem::take(&mut self.dir_times) {
            let abs = self.dest.join(&rel);
            let _ = nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &abs,
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            );
        }
    }
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction ("1700000000.123").
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
        if secs < 0 {
            nanos = -nanos;
        }
    }
    let (secs, nanos) = if nanos < 0 {
        (secs - 1, nanos + 1_000_000_000)
    } else {
        (secs, nanos)
    };
    Some(TimeSpec::new(secs, nanos))
}

fn fset_xattr(file: &File, name: &CString, value: &[u8]) -> io::Result<()> {
    // SAFETY: fd is open for the call's duration; name is NUL-terminated;
    // value pointer/length describe a live slice.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_xattr_nofollow(path: &Path, name: &std::ffi::CStr, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value
    // pointer/length describe a live slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
