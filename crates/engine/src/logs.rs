//! Docker's json-file log format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}`.
//!
//! [`LogWriter`] splits a stream's bytes at newlines (a line longer than
//! [`MAX_LINE`] is cut into pieces without the newline, as Docker does; a
//! partial last line is written when the stream ends) and rotates by size:
//! `log.json` is the newest file, `log.json.1` the one before, and so on up
//! to `max_file` files. [`read_logs`] reads them back oldest first.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Longest piece written as one entry (Docker's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Rotation settings (Docker's `max-size` and `max-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Rotate before a write would take the file past this many bytes;
    /// `None` never rotates.
    pub max_size: Option<u64>,
    /// Files kept, the current one included (at least 1).
    pub max_file: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_size: None,
            max_file: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    pub time: String,
}

/// Appends a container's output to its json-file log.
pub struct LogWriter {
    path: PathBuf,
    opts: LogOptions,
    file: File,
    size: u64,
    pending: [Vec<u8>; 2],
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))
}

impl LogWriter {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, opts: LogOptions) -> Result<LogWriter> {
        if opts.max_size == Some(0) {
            return Err(Error::Invalid("log max-size must be positive".into()));
        }
        let file = open_append(path)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            opts: LogOptions {
                max_file: opts.max_file.max(1),
                ..opts
            },
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Adds output of `stream`; complete lines are written now.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        let idx = stream as usize;
        self.pending[idx].extend_from_slice(data);
        let mut buf = std::mem::take(&mut self.pending[idx]);
        let mut start = 0;
        let result = loop {
            let rest = &buf[start..];
            let cut = match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if nl < MAX_LINE => nl + 1,
                _ if rest.len() >= MAX_LINE => MAX_LINE,
                _ => break Ok(()),
            };
            if let Err(e) = self.entry(stream, &rest[..cut]) {
                break Err(e);
            }
            start += cut;
        };
        buf.drain(..start);
        self.pending[idx] = buf;
        result
    }

    /// Writes what is left of `stream` (a last line without a newline).
    pub fn finish(&mut self, stream: Stream) -> Result<()> {
        let buf = std::mem::take(&mut self.pending[stream as usize]);
        if buf.is_empty() {
            Ok(())
        } else {
            self.entry(stream, &buf)
        }
    }

    fn entry(&mut self, stream: Stream, text: &[u8]) -> Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream,
            time: cubby_runtime::state::rfc3339_now(),
        };
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| Error::Invalid(format!("encode log entry: {e}")))?;
        line.push(b'\n');
        if let Some(max) = self.opts.max_size {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.file
            .write_all(&line)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e))?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let keep = self.opts.max_file;
        let ren = |from: &Path, to: &Path| match fs::rename(from, to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("rename {}", from.display()), e)),
        };
        if keep > 1 {
            for n in (1..keep - 1).rev() {
                ren(&rotated(&self.path, n), &rotated(&self.path, n + 1))?;
            }
            ren(&self.path, &rotated(&self.path, 1))?;
        } else {
            let _ = fs::remove_file(&self.path);
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// What [`read_logs`] returns (Docker's `docker logs` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines logged at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only lines logged at or before this RFC 3339 time.
    pub until: Option<String>,
    /// Prefix each line with its time and a space.
    pub timestamps: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter {
            tail: None,
            since: None,
            until: None,
            timestamps: false,
            stdout: true,
            stderr: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    pub time: String,
    /// The logged text (with its newline if it had one), after the time
    /// when `timestamps` was asked for.
    pub text: String,
}

/// A [`LogFilter`] with its times parsed.
struct Matcher<'a> {
    filter: &'a LogFilter,
    since: Option<(i64, u32)>,
    until: Option<(i64, u32)>,
}

impl<'a> Matcher<'a> {
    fn new(filter: &'a LogFilter) -> Result<Matcher<'a>> {
        let parse = |what: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    parse_rfc3339(s).ok_or_else(|| {
                        Error::Invalid(format!("{what} {s:?} is not an RFC 3339 time"))
                    })
                })
                .transpose()
        };
        Ok(Matcher {
            filter,
            since: parse("since", &filter.since)?,
            until: parse("until", &filter.until)?,
        })
    }

    /// The line if it parses and passes the filter (a torn write does not parse).
    fn line(&self, raw: &[u8]) -> Option<LogLine> {
        let entry = serde_json::from_slice::<Entry>(raw).ok()?;
        let wanted = match entry.stream {
            Stream::Stdout => self.filter.stdout,
            Stream::Stderr => self.filter.stderr,
        };
        if !wanted {
            return None;
        }
        if self.since.is_some() || self.until.is_some() {
            let t = parse_rfc3339(&entry.time)?;
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return None;
            }
        }
        let text = if self.filter.timestamps {
            format!("{} {}", entry.time, entry.log)
        } else {
            entry.log
        };
        Some(LogLine {
            stream: entry.stream,
            time: entry.time,
            text,
        })
    }
}

/// The rotated files of `path` that exist, oldest first.
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut n = 1;
    loop {
        let p = rotated(path, n);
        if !p.exists() {
            break;
        }
        files.push(p);
        n += 1;
    }
    files.reverse();
    files
}

fn read_whole(file: &Path, m: &Matcher, out: &mut Vec<LogLine>) -> Result<()> {
    let f = match File::open(file) {
        Ok(f) => f,
        // Rotated away between listing and opening.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("open {}", file.display()), e)),
    };
    for line in BufReader::new(f).split(b'\n') {
        let line = line.map_err(|e| Error::io(format!("read {}", file.display()), e))?;
        out.extend(m.line(&line));
    }
    Ok(())
}

fn apply_tail(out: &mut Vec<LogLine>, tail: Option<usize>) {
    if let Some(tail) = tail {
        let skip = out.len().saturating_sub(tail);
        out.drain(..skip);
    }
}

/// Reads the log at `path` and its rotated files, oldest first. Lines that
/// do not parse (a torn last write) are skipped.
pub fn read_logs(path: &Path, filter: &LogFilter) -> Result<Vec<LogLine>> {
    let m = Matcher::new(filter)?;
    if let Some(n) = tail_only(filter) {
        let mut sources = Vec::new();
        for file in rotated_files(path).into_iter().chain([path.to_path_buf()]) {
            if let Some(f) = open_existing(&file)? {
                let len = file_len(&f, &file)?;
                sources.push((f, len, file));
            }
        }
        return tail_of(&sources, &m, n);
    }
    let mut out = Vec::new();
    for file in rotated_files(path).iter().chain([&path.to_path_buf()]) {
        read_whole(file, &m, &mut out)?;
    }
    apply_tail(&mut out, filter.tail);
    Ok(out)
}

/// `tail` without time bounds: the lines can be read from the end.
fn tail_only(filter: &LogFilter) -> Option<usize> {
    filter
        .tail
        .filter(|_| filter.since.is_none() && filter.until.is_none())
}

fn open_existing(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        // Rotated away since it was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
    }
}

fn file_len(f: &File, path: &Path) -> Result<u64> {
    Ok(f.metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len())
}

/// Bytes read backwards at a time by [`tail_of`].
const TAIL_CHUNK: u64 = 64 * 1024;

/// The last `n` lines passing `m` in `sources` (oldest first; each read up
/// to its length), read backwards so `--tail 10` of a large log costs a
/// chunk, not the whole file. A torn last line does not parse and is skipped.
fn tail_of(sources: &[(File, u64, PathBuf)], m: &Matcher, n: usize) -> Result<Vec<LogLine>> {
    use std::os::unix::fs::FileExt;
    let mut rev = Vec::new();
    for (f, len, path) in sources.iter().rev() {
        let mut pos = *len;
        let mut carry: Vec<u8> = Vec::new();
        while rev.len() < n {
            if pos == 0 {
                rev.extend(m.line(&carry));
                break;
            }
            let size = TAIL_CHUNK.min(pos);
            pos -= size;
            let mut buf = vec![0u8; size as usize];
            f.read_exact_at(&mut buf, pos)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            buf.extend_from_slice(&carry);
            let mut end = buf.len();
            while let Some(nl) = buf[..end].iter().rposition(|&b| b == b'\n') {
                rev.extend(m.line(&buf[nl + 1..end]));
                end = nl;
                if rev.len() >= n {
                    break;
                }
            }
            buf.truncate(end);
            carry = buf;
        }
        if rev.len() >= n {
            break;
        }
    }
    rev.truncate(n);
    rev.reverse();
    Ok(rev)
}

/// The offset just after the last newline before `end` (0 if none): where
/// complete lines end.
fn after_last_newline(f: &File, end: u64, path: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut pos = end;
    while pos > 0 {
        let size = TAIL_CHUNK.min(pos);
        pos -= size;
        let mut buf = vec![0u8; size as usize];
        f.read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if let Some(nl) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(pos + nl as u64 + 1);
        }
    }
    Ok(0)
}

/// Follows a log as its writer appends and rotates it: keeps the file it
/// reads open (a rotated or, with `max-file=1`, deleted file stays
/// readable through its descriptor), drains it, then moves to the file
/// now at `path`.
pub struct LogFollower {
    path: PathBuf,
    filter: LogFilter,
    /// The file being read and its inode; `None` until `path` exists.
    file: Option<(File, u64)>,
    partial: Vec<u8>,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

impl LogFollower {
    /// Reads what the log holds now (`filter.tail` applies to it) and
    /// returns it with a follower that continues after it.
    pub fn start(path: &Path, filter: &LogFilter) -> Result<(Vec<LogLine>, LogFollower)> {
        use std::os::unix::fs::MetadataExt;
        let m = Matcher::new(filter)?;
        // The current file first: if it is rotated while the older files
        // are read, it is skipped among them and read through this handle.
        let file = match File::open(path) {
            Ok(f) => {
                let ino = f
                    .metadata()
                    .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
                    .ino();
                Some((f, ino))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let current = file.as_ref().map(|(_, ino)| *ino);
        if let Some(n) = tail_only(filter) {
            use std::io::{Seek, SeekFrom};
            let mut sources = Vec::new();
            for old in rotated_files(path) {
                if current.is_some() && inode(&old) == current {
                    continue;
                }
                if let Some(f) = open_existing(&old)? {
                    let len = file_len(&f, &old)?;
                    sources.push((f, len, old));
                }
            }
            let mut file = file;
            if let Some((f, _)) = file.as_mut() {
                // Complete lines now in the file are the tail's; the
                // follower goes on from there.
                let cut = after_last_newline(f, file_len(f, path)?, path)?;
                f.seek(SeekFrom::Start(cut))
                    .map_err(|e| Error::io(format!("seek {}", path.display()), e))?;
                let dup = f
                    .try_clone()
                    .map_err(|e| Error::io(format!("dup {}", path.display()), e))?;
                sources.push((dup, cut, path.to_path_buf()));
            }
            let out = tail_of(&sources, &m, n)?;
            let follower = LogFollower {
                path: path.to_path_buf(),
                filter: LogFilter {
                    tail: None,
                    ..filter.clone()
                },
                file,
                partial: Vec::new(),
            };
            return Ok((out, follower));
        }
        let mut out = Vec::new();
        for old in rotated_files(path) {
            if current.is_some() && inode(&old) == current {
                continue;
            }
            read_whole(&old, &m, &mut out)?;
        }
        let mut follower = LogFollower {
            path: path.to_path_buf(),
            filter: LogFilter {
                tail: None,
                ..filter.clone()
            },
            file,
            partial: Vec::new(),
        };
        out.extend(follower.poll()?);
        apply_tail(&mut out, filter.tail);
        Ok((out, follower))
    }

    /// The complete lines written since the last call.
    pub fn poll(&mut self) -> Result<Vec<LogLine>> {
        use std::io::Read;
        let m = Matcher::new(&self.filter)?;
        let mut out = Vec::new();
        loop {
            if let Some((f, _)) = self.file.as_mut() {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)
                    .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
                self.partial.extend_from_slice(&buf);
                let mut start = 0;
                while let Some(nl) = self.partial[start..].iter().position(|&b| b == b'\n') {
                    out.extend(m.line(&self.partial[start..start + nl]));
                    start += nl + 1;
                }
                self.partial.drain(..start);
            }
            // Rotated (or first created) since: the old file is drained, go on
            // with the new one.
            let now = inode(&self.path);
            if now.is_none() || now == self.file.as_ref().map(|(_, ino)| *ino) {
                return Ok(out);
            }
            match File::open(&self.path) {
                Ok(f) => {
                    use std::os::unix::fs::MetadataExt;
                    let ino = f
                        .metadata()
                        .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?
                        .ino();
                    self.file = Some((f, ino));
                    // A torn write of the old file never completes.
                    self.partial.clear();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(Error::io(format!("open {}", self.path.display()), e)),
            }
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` into seconds
/// and nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some((secs, nanos))
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(path: &Path) -> Vec<LogLine> {
        read_logs(path, &LogFilter::default()).unwrap()
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn splits_at_newlines_and_flushes_partial_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let mut w = LogWriter::open(&path, LogOptions::default()).unwrap();
        w.write(Stream::Stdout, b"one\ntw").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        w.write(Stream::Stdout, b"o\nthr").unwrap();
        assert_eq!(texts(&all(&path)), ["one\n", "err\n", "two\n"]);
        w.finish(Stream::Stdout).unwrap();
        w.finish(Stream::Stderr).unwrap();
        let lines = all(&path);
        assert_eq!(texts(&lines), ["one\n", "err\n", "two\n", "thr"]);
        assert_eq!(lines[1].stream, Stream::Stderr);
        // The raw format is Docker's.
        let raw = fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "one\n");
        assert_eq!(first["stream"], "stdout");
        assert!(parse_rfc3339(first["time"].as_str().unwrap()).is_some());
    }

    #[test]
    fn long_lines_are_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let mut w = LogWriter::open(&path, LogOptions::default()).unwrap();
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.push(b'\n');
        w.write(Stream::Stdout, &data).unwrap();
        let lines = all(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text.len(), MAX_LINE);
        assert_eq!(lines[1].text.len(), 11);
    }

    #[test]
    fn rotation_keeps_max_file_files_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let opts = LogOptions {
            max_size: Some(300),
            max_file: 3,
        };
        let mut w = LogWriter::open(&path, opts).unwrap();
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(path.exists());
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(fs::metadata(&p).unwrap().len() <= 300);
        }
        let lines = all(&path);
        let nums: Vec<u32> = lines
            .iter()
            .map(|l| {
                l.text
                    .trim()
                    .strip_prefix("line ")
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(*nums.last().unwrap(), 39);
        assert!(nums.len() < 40, "old lines were rotated away");
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        // A writer reopened on the same file keeps rotating from its size.
        drop(w);
        let mut w = LogWriter::open(&path, opts).unwrap();
        w.write(Stream::Stdout, b"again\n").unwrap();
        assert_eq!(all(&path).last().unwrap().text, "again\n");
    }

    #[test]
    fn max_file_one_truncates() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let opts = LogOptions {
            max_size: Some(200),
            max_file: 1,
        };
        let mut w = LogWriter::open(&path, opts).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(!rotated(&path, 1).exists());
        assert_eq!(all(&path).last().unwrap().text, "line 19\n");
    }

    #[test]
    fn tail_streams_and_timestamps() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let mut w = LogWriter::open(&path, LogOptions::default()).unwrap();
        for i in 0..5 {
            w.write(Stream::Stdout, format!("o{i}\n").as_bytes())
                .unwrap();
            w.write(Stream::Stderr, format!("e{i}\n").as_bytes())
                .unwrap();
        }
        let f = |tail, stdout, stderr, timestamps| LogFilter {
            tail,
            since: None,
            until: None,
            timestamps,
            stdout,
            stderr,
        };
        assert_eq!(
            texts(&read_logs(&path, &f(Some(3), true, true, false)).unwrap()),
            ["e3\n", "o4\n", "e4\n"]
        );
        assert_eq!(
            texts(&read_logs(&path, &f(Some(2), true, false, false)).unwrap()),
            ["o3\n", "o4\n"]
        );
        assert_eq!(
            read_logs(&path, &f(Some(0), true, true, false))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            read_logs(&path, &f(None, false, false, false))
                .unwrap()
                .len(),
            0
        );
        let stamped = read_logs(&path, &f(Some(1), true, true, true)).unwrap();
        assert_eq!(stamped[0].text, format!("{} e4\n", stamped[0].time));
    }

    #[test]
    fn since_filters_by_time_and_skips_torn_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let mut text = String::new();
        for (t, l) in [
            ("2024-01-01T00:00:00.000000001Z", "a"),
            ("2024-01-01T00:00:01.5Z", "b"),
            ("2024-01-01T00:00:02.000000000Z", "c"),
        ] {
            text.push_str(&format!(
                "{{\"log\":\"{l}\\n\",\"stream\":\"stdout\",\"time\":\"{t}\"}}\n"
            ));
        }
        text.push_str("{\"log\":\"torn");
        fs::write(&path, text).unwrap();
        let since = |s: &str| LogFilter {
            since: Some(s.into()),
            ..LogFilter::default()
        };
        assert_eq!(
            texts(&read_logs(&path, &since("2024-01-01T00:00:01.5Z")).unwrap()),
            ["b\n", "c\n"]
        );
        // Same instant written with an offset.
        assert_eq!(
            texts(&read_logs(&path, &since("2024-01-01T01:00:01.6+01:00")).unwrap()),
            ["c\n"]
        );
        assert_eq!(
            texts(&read_logs(&path, &since("2023-12-31T23:59:59Z")).unwrap()),
            ["a\n", "b\n", "c\n"]
        );
        assert!(matches!(
            read_logs(&path, &since("yesterday")),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn tail_from_the_end_matches_a_full_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let opts = LogOptions {
            max_size: Some(200 * 1024),
            max_file: 3,
        };
        let mut w = LogWriter::open(&path, opts).unwrap();
        for i in 0..6000 {
            let (s, text) = if i % 3 == 0 {
                (Stream::Stderr, format!("err {i}\n"))
            } else {
                (Stream::Stdout, format!("out {i} {}\n", "x".repeat(i % 50)))
            };
            w.write(s, text.as_bytes()).unwrap();
        }
        // A long (cut) line and a torn last write.
        w.write(Stream::Stdout, &vec![b'y'; MAX_LINE + 10]).unwrap();
        w.finish(Stream::Stdout).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"log\":\"torn").unwrap();
        assert!(rotated(&path, 1).exists());
        for (stdout, stderr) in [(true, true), (true, false), (false, true)] {
            let all = read_logs(
                &path,
                &LogFilter {
                    stdout,
                    stderr,
                    ..LogFilter::default()
                },
            )
            .unwrap();
            for n in [0, 1, 2, 10, 1000, 3000, 100_000] {
                let f = LogFilter {
                    tail: Some(n),
                    stdout,
                    stderr,
                    ..LogFilter::default()
                };
                let want = &all[all.len().saturating_sub(n)..];
                assert_eq!(read_logs(&path, &f).unwrap(), want, "{n} {stdout} {stderr}");
                let (got, mut follower) = LogFollower::start(&path, &f).unwrap();
                assert_eq!(got, want, "follow {n}");
                assert!(follower.poll().unwrap().is_empty());
            }
        }
        // The follower started with a tail goes on after it.
        let f = LogFilter {
            tail: Some(1),
            ..LogFilter::default()
        };
        let (_, mut follower) = LogFollower::start(&path, &f).unwrap();
        let mut w = LogWriter::open(&path, opts).unwrap();
        w.write(Stream::Stdout, b"\nnext\n").unwrap();
        let texts_now: Vec<String> = follower
            .poll()
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts_now, ["next\n"]);
    }

    #[test]
    fn until_bounds_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let mut text = String::new();
        for (t, l) in [
            ("2024-01-01T00:00:00Z", "a"),
            ("2024-01-01T00:00:01Z", "b"),
            ("2024-01-01T00:00:02Z", "c"),
        ] {
            text.push_str(&format!(
                "{{\"log\":\"{l}\\n\",\"stream\":\"stdout\",\"time\":\"{t}\"}}\n"
            ));
        }
        fs::write(&path, text).unwrap();
        let f = LogFilter {
            since: Some("2024-01-01T00:00:01Z".into()),
            until: Some("2024-01-01T00:00:01Z".into()),
            ..LogFilter::default()
        };
        assert_eq!(texts(&read_logs(&path, &f).unwrap()), ["b\n"]);
        let f = LogFilter {
            until: Some("2024-01-01T00:00:01.5Z".into()),
            ..LogFilter::default()
        };
        assert_eq!(texts(&read_logs(&path, &f).unwrap()), ["a\n", "b\n"]);
    }

    #[test]
    fn follower_reads_across_rotations_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.json");
        let opts = LogOptions {
            max_size: Some(300),
            max_file: 3,
        };
        let mut w = LogWriter::open(&path, opts).unwrap();
        for i in 0..3 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let f = LogFilter {
            tail: Some(2),
            ..LogFilter::default()
        };
        let (first, mut follower) = LogFollower::start(&path, &f).unwrap();
        assert_eq!(texts(&first), ["line 1\n", "line 2\n"]);
        assert!(follower.poll().unwrap().is_empty());
        // About one rotation between two polls; the follower drains the
        // rotated file through its handle before moving on.
        let mut got = Vec::new();
        for i in 3..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
            if i % 2 == 0 {
                got.extend(follower.poll().unwrap());
            }
        }
        got.extend(follower.poll().unwrap());
        let want: Vec<String> = (3..40).map(|i| format!("line {i}\n")).collect();
        assert_eq!(texts(&got), want);
        // max-file=1 deletes the file being read: its rest is still read.
        let path1 = tmp.path().join("one.json");
        let mut w = LogWriter::open(
            &path1,
            LogOptions {
                max_size: Some(120),
                max_file: 1,
            },
        )
        .unwrap();
        let (_, mut follower) = LogFollower::start(&path1, &LogFilter::default()).unwrap();
        let mut got = Vec::new();
        for i in 0..10 {
            w.write(Stream::Stderr, format!("e{i}\n").as_bytes())
                .unwrap();
            got.extend(follower.poll().unwrap());
        }
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|l| l.stream == Stream::Stderr));
    }

    #[test]
    fn rfc3339_parser() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.25Z"),
            Some((1, 250_000_000))
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z"),
            Some((951_868_800, 0))
        );
        let now = cubby_runtime::state::rfc3339_now();
        assert!(parse_rfc3339(&now).is_some(), "{now}");
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // The runtime's formatter and this parser agree.
        assert_eq!(
            parse_rfc3339(&cubby_runtime::state::rfc3339(1_700_000_000, 123)),
            Some((1_700_000_000, 123))
        );
    }

    #[test]
    fn zero_max_size_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            max_size: Some(0),
            max_file: 1,
        };
        assert!(LogWriter::open(&tmp.path().join("l"), opts).is_err());
    }
}
