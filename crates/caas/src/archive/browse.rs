//! Reading archives for people: the file tree of one, one file out of it,
//! and a whole class's latest archives as one zip stream.
//!
//! Archives are read as tar streams (decompressed on the fly) on a blocking
//! thread, never unpacked to disk, so memory is bounded whatever their size:
//! one tar block and the zip writer's 64 KiB buffer, plus a channel of a
//! few chunks towards the HTTP body. Entry names only ever come from the
//! archive and are matched as strings, never opened as paths; a name that
//! could escape a directory on extraction (`..`, absolute) is left out of a
//! zip rather than passed on to the teacher's unzip.

use std::io::{Read, Write};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::backend::ByteStream;
use crate::error::{Error, Result};

/// One entry of an archive's file tree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// "file", "dir", "symlink", "hardlink" or "other".
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub mtime: u64,
    /// A link's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// An async tar stream read from a blocking thread.
pub struct StreamRead {
    rt: Handle,
    stream: ByteStream,
    buf: Bytes,
}

impl StreamRead {
    pub fn new(rt: Handle, stream: ByteStream) -> StreamRead {
        StreamRead {
            rt,
            stream,
            buf: Bytes::new(),
        }
    }
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// Bytes written here go to an HTTP body, chunk by chunk, waiting while
/// the client is slower (the channel is bounded).
pub struct ChannelWrite {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

impl Write for ChannelWrite {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(b)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A body fed by `fill` on a blocking thread; an error ends the body early
/// (the client sees a cut transfer, never a complete-looking one).
pub fn body_from_blocking<F>(fill: F) -> axum::body::Body
where
    F: FnOnce(&mut std::io::BufWriter<ChannelWrite>) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(64 << 10, ChannelWrite { tx });
        let r = fill(&mut w).and_then(|()| {
            w.flush()
                .map_err(|e| Error::Internal(format!("sending: {e}")))
        });
        if let Err(e) = r {
            crate::log!("warn", "archive download: {e}");
            let _ = err_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    axum::body::Body::from_stream(s)
}

/// A path a teacher may ask for: relative, no `.`/`..`/empty components,
/// no backslashes or NULs.
pub fn check_path(p: &str) -> Result<()> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\\')
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::Invalid(format!(
            "path {p:?}: give a path as listed by the archive's files, e.g. workspace/src/a.txt"
        )));
    }
    Ok(())
}

fn bad_archive(e: std::io::Error) -> Error {
    Error::Internal(format!("reading the archive: {e}"))
}

fn entry_path<R: Read>(e: &tar::Entry<'_, R>) -> Result<String> {
    let p = e.path().map_err(bad_archive)?;
    Ok(p.to_string_lossy().trim_end_matches('/').to_string())
}

fn kind_of(t: tar::EntryType) -> &'static str {
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_hard_link() {
        "hardlink"
    } else {
        "other"
    }
}

/// Every entry of a tar stream, in archive order.
pub fn tree(tar: impl Read) -> Result<Vec<Entry>> {
    let mut a = tar::Archive::new(tar);
    let mut out = Vec::new();
    for e in a.entries().map_err(bad_archive)? {
        let e = e.map_err(bad_archive)?;
        let h = e.header();
        out.push(Entry {
            path: entry_path(&e)?,
            kind: kind_of(h.entry_type()),
            mode: h.mode().unwrap_or(0) & 0o7777,
            size: h.size().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            link: e
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned()),
        });
    }
    Ok(out)
}

/// Copies regular file `path` of a tar stream to `out`; `false` if there
/// is no such regular file.
pub fn copy_file(tar: impl Read, path: &str, out: &mut impl Write) -> Result<bool> {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().map_err(bad_archive)? {
        let mut e = e.map_err(bad_archive)?;
        if e.header().entry_type().is_file() && entry_path(&e)? == path {
            std::io::copy(&mut e, out).map_err(|e| Error::Internal(format!("sending: {e}")))?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The size of regular file `path` if the archive has it (checked before
/// any byte is sent, so a missing file is a clean 404).
pub fn has_file(tar: impl Read, path: &str) -> Result<Option<u64>> {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().map_err(bad_archive)? {
        let e = e.map_err(bad_archive)?;
        if e.header().entry_type().is_file() && entry_path(&e)? == path {
            return Ok(Some(e.header().size().unwrap_or(0)));
        }
    }
    Ok(None)
}

/// A zip folder name from a user name: letters, digits, `-`, `_`, `.`
/// kept, anything else `_` (never a separator or `..`).
pub fn folder_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Appends the entries of one tar stream under `folder/` to a zip:
/// directories and regular files (deflated), modes kept; links and special
/// files are listed in `folder/SKIPPED.txt` rather than followed.
pub fn tar_into_zip<W: Write>(
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    folder: &str,
    tar: impl Read,
) -> Result<()> {
    let zerr = |e: zip::result::ZipError| Error::Internal(format!("writing the zip: {e}"));
    let mut skipped = Vec::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().map_err(bad_archive)? {
        let mut e = e.map_err(bad_archive)?;
        let path = entry_path(&e)?;
        let t = e.header().entry_type();
        if check_path(&path).is_err() || !(t.is_file() || t.is_dir()) {
            skipped.push(format!("{} ({})", path, kind_of(t)));
            continue;
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
            .unix_permissions(mode)
            .large_file(e.header().size().unwrap_or(0) >= u32::MAX as u64);
        let name = format!("{folder}/{path}");
        if t.is_dir() {
            zip.add_directory(name, opts).map_err(zerr)?;
        } else {
            zip.start_file(name, opts).map_err(zerr)?;
            std::io::copy(&mut e, zip).map_err(|e| Error::Internal(format!("zip: {e}")))?;
        }
    }
    if !skipped.is_empty() {
        zip.start_file(
            format!("{folder}/SKIPPED.txt"),
            zip::write::SimpleFileOptions::default(),
        )
        .map_err(zerr)?;
        let text = format!(
            "Entries of the archive not in this zip (links, special files, unsafe names); \
             download the archive itself for them:\n{}\n",
            skipped.join("\n")
        );
        zip.write_all(text.as_bytes())
            .map_err(|e| Error::Internal(format!("zip: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "workspace/", &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o640);
        h.set_size(5);
        b.append_data(&mut h, "workspace/a.txt", &b"hello"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "workspace/l", "/etc/passwd").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn paths_are_checked() {
        for p in [
            "",
            "/etc/passwd",
            "a/../b",
            "../x",
            "a//b",
            "a/./b",
            "a\\b",
            "a/",
        ] {
            assert!(check_path(p).is_err(), "{p}");
        }
        check_path("workspace/src/a.txt").unwrap();
        assert_eq!(folder_name("../ann"), ".._ann");
        assert_eq!(folder_name(".."), "_..");
        assert_eq!(folder_name("a/b c"), "a_b_c");
    }

    #[test]
    fn tree_file_and_zip() {
        let t = sample();
        let entries = tree(&t[..]).unwrap();
        let names: Vec<_> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        assert_eq!(
            names,
            [
                ("workspace", "dir"),
                ("workspace/a.txt", "file"),
                ("workspace/l", "symlink")
            ]
        );
        assert_eq!(has_file(&t[..], "workspace/a.txt").unwrap(), Some(5));
        assert_eq!(has_file(&t[..], "workspace/l").unwrap(), None);
        let mut out = Vec::new();
        assert!(copy_file(&t[..], "workspace/a.txt", &mut out).unwrap());
        assert_eq!(out, b"hello");

        let mut zip = zip::ZipWriter::new_stream(Vec::new());
        tar_into_zip(&mut zip, "ann", &t[..]).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut s = String::new();
        z.by_name("ann/workspace/a.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        assert_eq!(
            z.by_name("ann/workspace/a.txt")
                .unwrap()
                .unix_mode()
                .unwrap()
                & 0o7777,
            0o640
        );
        assert!(z.by_name("ann/workspace/l").is_err());
        assert!(z.by_name("ann/SKIPPED.txt").is_ok());
    }
}
