//! Files inside a container, for `docker cp`: stat a path, copy a path out
//! as a tar stream, extract a tar into a directory.
//!
//! Every path is resolved inside the container's root and never leaves it:
//! the root is a directory fd (`/proc/<pid>/root` of a running container,
//! which sees its volumes and tmpfs as it does; the overlay snapshot of a
//! stopped one), paths given by the client are resolved with `openat2`
//! `RESOLVE_IN_ROOT` (`..` and absolute symlinks stop at that root), and
//! everything below is walked and created with `*at()` calls relative to
//! directory fds, final components never followed. Tar entries are placed
//! with `RESOLVE_BENEATH` the destination: an entry name with `..` escaping
//! it is refused, an absolute name is taken relative to it, and a symlink
//! on the way that leads outside it (to `/`, or `../..`) is refused rather
//! than followed.

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path does not exist in the container.
    #[error("no such file or directory in the container: {0}")]
    NotFound(String),
    /// A copy-in destination that is not a directory.
    #[error("extraction point is not a directory: {0}")]
    NotADirectory(String),
    /// A tar entry that would land (or link) outside the destination.
    #[error("tar entry {entry:?} refused: {reason}")]
    Escape { entry: String, reason: String },
    /// `noOverwriteDirNonDir`, or a file where a directory is needed.
    #[error("{0}")]
    Conflict(String),
    #[error("invalid tar archive: {0}")]
    BadArchive(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: Errno,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> FsError {
    let what = what.into();
    move |source| FsError::Sys { what, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FsError {
    let what = what.into();
    move |source| FsError::Io { what, source }
}

/// Docker's `ContainerPathStat` (the `X-Docker-Container-Path-Stat` header).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits, which the docker CLI tests (`ModeDir`, `ModeSymlink`).
    pub mode: u32,
    /// RFC 3339 with nanoseconds, as Go marshals a `time.Time`.
    pub mtime: String,
    /// For a symlink: where it leads, resolved inside the container, absolute.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl PathStat {
    /// The header value: base64 of the JSON document.
    pub fn header_value(&self) -> String {
        use base64::Engine as _;
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    pub fn is_dir(&self) -> bool {
        self.mode & GO_MODE_DIR != 0
    }
}

pub const GO_MODE_DIR: u32 = 1 << 31;
pub const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
const GO_MODE_SOCKET: u32 = 1 << 24;
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;
const GO_MODE_STICKY: u32 = 1 << 20;

/// A Unix `st_mode` as Go's `os.FileMode`.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    m |= match st_mode & libc::S_IFMT {
        libc::S_IFDIR => GO_MODE_DIR,
        libc::S_IFLNK => GO_MODE_SYMLINK,
        libc::S_IFBLK => GO_MODE_DEVICE,
        libc::S_IFCHR => GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
        libc::S_IFIFO => GO_MODE_NAMED_PIPE,
        libc::S_IFSOCK => GO_MODE_SOCKET,
        _ => 0,
    };
    for (bit, go) in [
        (libc::S_ISUID, GO_MODE_SETUID),
        (libc::S_ISGID, GO_MODE_SETGID),
        (libc::S_ISVTX, GO_MODE_STICKY),
    ] {
        if st_mode & bit != 0 {
            m |= go;
        }
    }
    m
}

/// A container path as Docker reads it: made absolute and cleaned
/// lexically (`..` is applied before any symlink is looked at, as Go's
/// `filepath.Clean`), remembering whether it asked for the last element to
/// be followed (a trailing `/` or `/.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPath {
    /// Cleaned components below `/`.
    pub components: Vec<String>,
    /// Trailing `/` or `/.`: resolve the last element like the others.
    pub follow_last: bool,
    /// What archive entries are named after (Go's `filepath.Base` of the
    /// path with its trailing `/.` kept): `"."` for `dir/.`, `"/"` for `/`.
    pub name: String,
}

impl ContainerPath {
    pub fn parse(path: &str) -> ContainerPath {
        let mut components: Vec<String> = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    components.pop();
                }
                c => components.push(c.to_string()),
            }
        }
        let dot = path == "." || path.ends_with("/.");
        let follow_last = components.is_empty() || dot || path.ends_with('/');
        let name = if dot {
            ".".to_string()
        } else {
            components.last().cloned().unwrap_or_else(|| "/".into())
        };
        ContainerPath {
            components,
            follow_last,
            name,
        }
    }

    /// `/a/b` (for messages and `linkTarget`).
    pub fn display(&self) -> String {
        format!("/{}", self.components.join("/"))
    }

    fn parent(&self) -> String {
        match self.components.split_last() {
            Some((_, parent)) if !parent.is_empty() => parent.join("/"),
            _ => ".".into(),
        }
    }
}

/// `openat2` flags for client paths: symlinks and `..` stay in the root,
/// and no magic links (`/proc/<pid>/root` inside the container).
fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `openat2` flags for tar entries: never above the destination.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn open_how(flags: OFlag, resolve: ResolveFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// How a copy-in extracts.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory or the reverse
    /// (the docker CLI always asks for this).
    pub no_overwrite_dir_non_dir: bool,
    /// Owner for everything extracted (`docker cp -a`: the container's
    /// user); `None` keeps the archive's uid/gid.
    pub chown: Option<(u32, u32)>,
}

/// A container's root directory, held open.
#[derive(Debug)]
pub struct ContainerRoot {
    fd: OwnedFd,
}

/// Filesystems whose contents copy-out does not descend into (kernel views,
/// not files; Docker's copy never sees them either).
const PSEUDO_FS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x7363_6673, // securityfs
    0xcafe_4a11, // bpf
];

impl ContainerRoot {
    /// Any directory as a root (a stopped container's mounted rootfs).
    pub fn at(dir: &Path) -> Result<ContainerRoot> {
        let fd = nix::fcntl::open(dir, dir_flags(), Mode::empty())
            .map_err(sys(format!("open {}", dir.display())))?;
        Ok(ContainerRoot { fd })
    }

    /// The root of running process `pid`, as that process sees it. The
    /// process must be in a cgroup whose path contains `id`, so a pid
    /// reused by another process is never taken for the container.
    pub fn of_process(pid: i32, id: &str) -> Result<ContainerRoot> {
        let proc_dir = format!("/proc/{pid}");
        let pdir = nix::fcntl::open(proc_dir.as_str(), dir_flags(), Mode::empty())
            .map_err(sys(format!("open {proc_dir}")))?;
        let cg = openat(
            &pdir,
            "cgroup",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(format!("open {proc_dir}/cgroup")))?;
        let mut text = String::new();
        std::fs::File::from(cg)
            .read_to_string(&mut text)
            .map_err(io_err(format!("read {proc_dir}/cgroup")))?;
        if !text.contains(id) {
            return Err(FsError::NotFound(format!(
                "process {pid} is no longer container {id}"
            )));
        }
        let fd = openat(&pdir, "root", dir_flags(), Mode::empty())
            .map_err(sys(format!("open {proc_dir}/root")))?;
        Ok(ContainerRoot { fd })
    }

    /// `path` opened with `O_PATH`, followed inside the root (a mount
    /// target for [`with_mounts`]).
    pub fn open_path(&self, path: &str) -> Result<OwnedFd> {
        let p = ContainerPath::parse(path);
        let whole = if p.components.is_empty() {
            ".".to_string()
        } else {
            p.components.join("/")
        };
        openat2(&self.fd, whole.as_str(), open_how(OFlag::O_PATH, in_root()))
            .map_err(|_| FsError::NotFound(p.display()))
    }

    /// [`ContainerRoot::open_path`], first creating what is missing of it
    /// (directories, and an empty file at the end when `!dir`), every step
    /// resolved inside the root: what the runtime does for a mount target.
    pub fn make_mountpoint(&self, path: &str, dir: bool) -> Result<OwnedFd> {
        if let Ok(fd) = self.open_path(path) {
            return Ok(fd);
        }
        let p = ContainerPath::parse(path);
        let mut cur = self.open_path("/")?;
        for i in 0..p.components.len() {
            let prefix = p.components[..=i].join("/");
            cur = match openat2(
                &self.fd,
                prefix.as_str(),
                open_how(OFlag::O_PATH, in_root()),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    let name = p.components[i].as_str();
                    let last = i + 1 == p.components.len();
                    let made = if last && !dir {
                        mknodat(
                            &cur,
                            name,
                            SFlag::S_IFREG,
                            Mode::from_bits_truncate(0o644),
                            0,
                        )
                    } else {
                        mkdirat(&cur, name, Mode::from_bits_truncate(0o755))
                    };
                    match made {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(FsError::Sys {
                                what: format!("create {}", p.display()),
                                source: e,
                            })
                        }
                    }
                    openat2(
                        &self.fd,
                        prefix.as_str(),
                        open_how(OFlag::O_PATH, in_root()),
                    )
                    .map_err(sys(format!("open {}", p.display())))?
                }
                Err(e) => {
                    return Err(FsError::Sys {
                        what: format!("open {}", p.display()),
                        source: e,
                    })
                }
            };
        }
        Ok(cur)
    }

    /// A small regular file of the container (`/etc/passwd`), followed
    /// inside the root; at most 1 MiB is read.
    pub fn read_small(&self, path: &str) -> Result<String> {
        let p = ContainerPath::parse(path);
        let fd = openat2(
            &self.fd,
            p.components.join("/").as_str(),
            open_how(OFlag::O_PATH, in_root()),
        )
        .map_err(|_| FsError::NotFound(p.display()))?;
        let st = fstat(&fd).map_err(sys(format!("stat {}", p.display())))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::NotFound(p.display()));
        }
        // Only now opened for reading: never a device or fifo.
        let fd = reopen(&fd, OFlag::O_RDONLY)?;
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(io_err(format!("read {}", p.display())))?;
        Ok(text)
    }

    /// Docker's stat of `path`: the last element is not followed unless
    /// the path ends in `/` or `/.`.
    pub fn stat(&self, path: &str) -> Result<PathStat> {
        let p = ContainerPath::parse(path);
        let (_, st) = self.lookup(&p)?;
        let link_target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            self.resolve_string(&p.components)?
        } else {
            String::new()
        };
        Ok(PathStat {
            name: p.name.clone(),
            size: st.st_size,
            mode: go_file_mode(st.st_mode),
            mtime: cubby_runtime::state::rfc3339(st.st_mtime, st.st_mtime_nsec as u32)
                .replace(".000000000Z", "Z"),
            link_target,
        })
    }

    /// Opens the parent of `p` and stats its last element (or the whole
    /// path, followed, when it asks for that). Returns the parent fd and
    /// the stat.
    fn lookup(&self, p: &ContainerPath) -> Result<(Option<OwnedFd>, FileStat)> {
        let not_found = |e: Errno| match e {
            Errno::ENOENT | Errno::ENOTDIR => FsError::NotFound(p.display()),
            e => FsError::Sys {
                what: format!("resolve {}", p.display()),
                source: e,
            },
        };
        if p.follow_last || p.components.is_empty() {
            let whole = if p.components.is_empty() {
                ".".to_string()
            } else {
                p.components.join("/")
            };
            let fd = openat2(&self.fd, whole.as_str(), open_how(OFlag::O_PATH, in_root()))
                .map_err(not_found)?;
            let st = fstat(&fd).map_err(sys(format!("stat {}", p.display())))?;
            return Ok((None, st));
        }
        let parent = openat2(
            &self.fd,
            p.parent().as_str(),
            open_how(dir_flags(), in_root()),
        )
        .map_err(not_found)?;
        let base = p.components.last().map(String::as_str).unwrap_or(".");
        let st = fstatat(&parent, base, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(not_found)?;
        Ok((Some(parent), st))
    }

    /// Where `components` lead with every symlink followed inside the
    /// root, as an absolute path (Docker's `linkTarget`). Missing elements
    /// are kept as they are, like Docker's `FollowSymlinkInScope`.
    fn resolve_string(&self, components: &[String]) -> Result<String> {
        let mut todo: Vec<String> = components.iter().rev().cloned().collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let parent = if done.is_empty() {
                ".".to_string()
            } else {
                done.join("/")
            };
            // `done` holds no symlinks, so none are needed to reach it.
            let how = open_how(
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
            );
            let target = match openat2(&self.fd, parent.as_str(), how) {
                Ok(dir) => readlinkat(&dir, c.as_str()).ok(),
                Err(_) => None,
            };
            match target {
                Some(t) => {
                    links += 1;
                    if links > 255 {
                        return Err(FsError::Sys {
                            what: format!("resolve {}", components.join("/")),
                            source: Errno::ELOOP,
                        });
                    }
                    let t = t.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        done.clear();
                    }
                    todo.extend(t.split('/').rev().map(str::to_string));
                }
                None => done.push(c),
            }
        }
        Ok(format!("/{}", done.join("/")))
    }

    /// Writes `path` as a tar stream to `out`, Docker's layout: one entry
    /// named [`ContainerPath::name`], and for a directory everything below
    /// it (the root itself is named `.`). Call [`ContainerRoot::stat`]
    /// first to answer 404 before any byte is sent.
    pub fn archive(&self, path: &str, out: impl Write) -> Result<()> {
        let p = ContainerPath::parse(path);
        let name = Path::new(if p.name == "/" { "." } else { &p.name });
        let mut w = TarWriter {
            b: tar::Builder::new(out),
            links: HashMap::new(),
        };
        match self.lookup(&p)? {
            (Some(parent), _) => {
                let base = p.components.last().map(String::as_str).unwrap_or(".");
                w.add(parent.as_fd(), base, name)?;
            }
            (None, _) => {
                // A followed path: open it the same way the lookup did.
                let whole = if p.components.is_empty() {
                    ".".to_string()
                } else {
                    p.components.join("/")
                };
                let fd = openat2(&self.fd, whole.as_str(), open_how(OFlag::O_PATH, in_root()))
                    .map_err(|_| FsError::NotFound(p.display()))?;
                // Reopen through our own fd: the very inode resolved above.
                w.add_opened(fd, name)?;
            }
        }
        w.b.into_inner().map_err(io_err("write the archive"))?;
        Ok(())
    }

    /// Extracts the tar stream `tar` into the directory `path` (followed
    /// to the end, inside the root).
    pub fn extract(&self, path: &str, tar: impl Read, opts: &ExtractOptions) -> Result<()> {
        let p = ContainerPath::parse(path);
        let whole = if p.components.is_empty() {
            ".".to_string()
        } else {
            p.components.join("/")
        };
        let dest = match openat2(&self.fd, whole.as_str(), open_how(dir_flags(), in_root())) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(FsError::NotFound(p.display())),
            Err(Errno::ENOTDIR) => {
                // The last element exists and is not a directory, or a middle one.
                return match openat2(&self.fd, whole.as_str(), open_how(OFlag::O_PATH, in_root())) {
                    Ok(_) => Err(FsError::NotADirectory(p.display())),
                    Err(_) => Err(FsError::NotFound(p.display())),
                };
            }
            Err(e) => return Err(sys(format!("open {}", p.display()))(e)),
        };
        Extractor {
            dest,
            opts,
            dir_times: Vec::new(),
        }
        .run(tar)
    }
}

/// Device numbers as glibc's `major`/`minor`/`makedev`.
fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}
fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// Reopens an `O_PATH` fd for reading, through `/proc/self/fd` (the same
/// inode, no path lookup in the container).
fn reopen(fd: &OwnedFd, flags: OFlag) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::fcntl::open(path.as_str(), flags | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("reopen a file of the container"))
}

struct TarWriter<W: Write> {
    b: tar::Builder<W>,
    /// (dev, ino) of files with several links → the first entry's name.
    links: HashMap<(u64, u64), std::path::PathBuf>,
}

impl<W: Write> TarWriter<W> {
    fn header(&self, st: &FileStat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// Adds entry `name` for `base` in the directory `dir` (not followed).
    fn add(&mut self, dir: BorrowedFd<'_>, base: &str, name: &Path) -> Result<()> {
        self.add_os(dir, OsStr::new(base), name)
    }

    fn add_os(&mut self, dir: BorrowedFd<'_>, base: &OsStr, name: &Path) -> Result<()> {
        let st = match fstatat(dir, base, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the directory was read.
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(sys(format!("stat {}", name.display()))(e)),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                let target =
                    readlinkat(dir, base).map_err(sys(format!("readlink {}", name.display())))?;
                let mut h = self.header(&st, tar::EntryType::Symlink);
                self.b
                    .append_link(&mut h, name, Path::new(&target))
                    .map_err(io_err(format!("archive {}", name.display())))
            }
            libc::S_IFREG | libc::S_IFDIR => {
                // O_PATH first and the type checked on that very inode: a
                // device node or fifo swapped in meanwhile by the container
                // is archived as such, never opened for reading.
                let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = match openat(dir, base, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => return Ok(()),
                    Err(e) => return Err(sys(format!("open {}", name.display()))(e)),
                };
                self.add_opened(fd, name)
            }
            _ => self.add_special(&st, name),
        }
    }

    /// A followed path's fd (`O_PATH`): the file itself, whatever it is.
    fn add_opened(&mut self, fd: OwnedFd, name: &Path) -> Result<()> {
        let st = fstat(&fd).map_err(sys(format!("stat {}", name.display())))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => {
                let fd = reopen(&fd, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
                self.add_fd(fd, name)
            }
            _ => self.add_special(&st, name),
        }
    }

    /// A regular file or directory, opened for reading.
    fn add_fd(&mut self, fd: OwnedFd, name: &Path) -> Result<()> {
        let st = fstat(&fd).map_err(sys(format!("stat {}", name.display())))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => self.add_dir(fd, &st, name),
            libc::S_IFREG => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let first = first.clone();
                        let mut h = self.header(&st, tar::EntryType::Link);
                        return self
                            .b
                            .append_link(&mut h, name, &first)
                            .map_err(io_err(format!("archive {}", name.display())));
                    }
                    self.links.insert(key, name.to_path_buf());
                }
                let size = st.st_size.max(0) as u64;
                let mut h = self.header(&st, tar::EntryType::Regular);
                h.set_size(size);
                // Exactly `size` bytes even if the file changes meanwhile
                // (zeros if it shrank), or the archive would be torn.
                let data = std::fs::File::from(fd)
                    .take(size)
                    .chain(io::repeat(0))
                    .take(size);
                self.b
                    .append_data(&mut h, name, data)
                    .map_err(io_err(format!("archive {}", name.display())))
            }
            _ => self.add_special(&st, name),
        }
    }

    fn add_dir(&mut self, fd: OwnedFd, st: &FileStat, name: &Path) -> Result<()> {
        let mut h = self.header(st, tar::EntryType::Directory);
        let mut dir_name = name.as_os_str().to_os_string();
        dir_name.push("/");
        self.b
            .append_data(&mut h, &dir_name, io::empty())
            .map_err(io_err(format!("archive {}", name.display())))?;
        if let Ok(fs) = nix::sys::statfs::fstatfs(&fd) {
            // The field's type differs between architectures.
            #[allow(clippy::unnecessary_cast)]
            if PSEUDO_FS.contains(&(fs.filesystem_type().0 as i64)) {
                return Ok(());
            }
        }
        let mut dir =
            Dir::from_fd(fd).map_err(sys(format!("read directory {}", name.display())))?;
        let mut names: Vec<OsString> = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(sys(format!("read directory {}", name.display())))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        names.sort();
        for n in names {
            let child = name.join(&n);
            self.add_os(dir.as_fd(), &n, &child)?;
        }
        Ok(())
    }

    /// Devices and fifos (headers only); sockets are skipped, as Docker does.
    fn add_special(&mut self, st: &FileStat, name: &Path) -> Result<()> {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFCHR => tar::EntryType::Char,
            libc::S_IFBLK => tar::EntryType::Block,
            libc::S_IFIFO => tar::EntryType::Fifo,
            _ => return Ok(()),
        };
        let mut h = self.header(st, kind);
        let rdev = st.st_rdev;
        h.set_device_major(major(rdev) as u32)
            .and_then(|_| h.set_device_minor(minor(rdev) as u32))
            .map_err(io_err(format!("archive {}", name.display())))?;
        self.b
            .append_data(&mut h, name, io::empty())
            .map_err(io_err(format!("archive {}", name.display())))
    }
}

/// A tar entry name made relative to the destination: leading `/` and `.`
/// dropped, `..` applied; `None` if it climbs above the destination.
pub fn entry_components(name: &[u8]) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Some(out)
}

fn join(c: &[OsString]) -> OsString {
    if c.is_empty() {
        return ".".into();
    }
    let mut s = OsString::new();
    for (i, p) in c.iter().enumerate() {
        if i > 0 {
            s.push("/");
        }
        s.push(p);
    }
    s
}

struct Extractor<'a> {
    dest: OwnedFd,
    opts: &'a ExtractOptions,
    /// Directories whose times are set last (their entries change them).
    dir_times: Vec<(Vec<OsString>, i64)>,
}

impl Extractor<'_> {
    fn run(mut self, tar: impl Read) -> Result<()> {
        let mut ar = tar::Archive::new(tar);
        let entries = ar
            .entries()
            .map_err(|e| FsError::BadArchive(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| FsError::BadArchive(e.to_string()))?;
            self.entry(&mut entry)?;
        }
        // Deepest first, so a parent's time is set after its children.
        self.dir_times
            .sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (c, mtime) in std::mem::take(&mut self.dir_times) {
            if let Ok(fd) = openat2(
                &self.dest,
                join(&c).as_os_str(),
                open_how(dir_flags(), beneath()),
            ) {
                let t = TimeSpec::new(mtime, 0);
                let _ = futimens(&fd, &t, &t);
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let h = entry.header().clone();
        let kind = h.entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let escape = |reason: &str| FsError::Escape {
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let comps = entry_components(&raw)
            .ok_or_else(|| escape("its name climbs out of the destination with '..'"))?;
        let bad = |what: &str| FsError::BadArchive(format!("entry {shown:?}: {what}"));
        let mode = h.mode().map_err(|_| bad("bad mode"))? & 0o7777;
        // Empty numeric fields are 0, as Go's tar reader takes them.
        let mtime = h.mtime().unwrap_or(0) as i64;
        let (uid, gid) = match self.opts.chown {
            Some(ids) => ids,
            None => (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32),
        };

        let Some((base, parent_c)) = comps.split_last() else {
            // The destination itself ("./"): a directory's metadata, as Docker.
            if kind.is_dir() {
                let fd = self.reopen_dest()?;
                self.set_owner_mode(&fd, uid, gid, mode, &shown)?;
                self.dir_times.push((Vec::new(), mtime));
                return Ok(());
            }
            return Err(FsError::Conflict(format!(
                "cannot overwrite the destination directory with non-directory {shown:?}"
            )));
        };
        let parent = self.parent_dir(parent_c, &shown)?;

        // What is there now.
        if let Ok(st) = fstatat(&parent, base.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if self.opts.no_overwrite_dir_non_dir {
                if is_dir && !kind.is_dir() {
                    return Err(FsError::Conflict(format!(
                        "cannot overwrite directory {:?} with non-directory {shown:?}",
                        join(&comps)
                    )));
                }
                if !is_dir && kind.is_dir() {
                    return Err(FsError::Conflict(format!(
                        "cannot overwrite non-directory {:?} with directory {shown:?}",
                        join(&comps)
                    )));
                }
            }
            if !(is_dir && kind.is_dir()) {
                remove_all(&parent, base.as_os_str()).map_err(sys(format!("replace {shown:?}")))?;
            }
        }

        let name = base.as_os_str();
        let what = |op: &str| format!("{op} {shown:?}");
        match kind {
            tar::EntryType::Directory => {
                match mkdirat(&parent, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(sys(what("create directory"))(e)),
                }
                let fd = openat(
                    &parent,
                    name,
                    dir_flags() | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(sys(what("open directory")))?;
                self.set_owner_mode(&fd, uid, gid, mode, &shown)?;
                self.dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let flags = OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let fd = openat(&parent, name, flags, Mode::from_bits_truncate(0o600))
                    .map_err(sys(what("create")))?;
                let mut f = std::fs::File::from(fd);
                io::copy(entry, &mut f).map_err(io_err(what("write")))?;
                self.set_owner_mode(f.as_fd(), uid, gid, mode, &shown)?;
                let t = TimeSpec::new(mtime, 0);
                futimens(&f, &t, &t).map_err(sys(what("set times of")))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("symlink without a target"))?
                    .into_owned();
                symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(sys(what("create symlink")))?;
                fchownat(
                    &parent,
                    name,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys(what("chown")))?;
                let t = TimeSpec::new(mtime, 0);
                let _ = utimensat(&parent, name, &t, &t, UtimensatFlags::NoFollowSymlink);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("hard link without a target"))?
                    .into_owned();
                let tc = entry_components(&target)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| escape("its hard link target is outside the destination"))?;
                let (tbase, tparent) = tc.split_last().ok_or_else(|| bad("empty link"))?;
                let src_dir = openat2(
                    &self.dest,
                    join(tparent).as_os_str(),
                    open_how(dir_flags(), beneath()),
                )
                .map_err(|e| match e {
                    Errno::EXDEV | Errno::ELOOP => {
                        escape("its hard link target leads outside the destination")
                    }
                    e => sys(what("find the hard link target of"))(e),
                })?;
                linkat(&src_dir, tbase.as_os_str(), &parent, name, AtFlags::empty())
                    .map_err(sys(what("hard link")))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = makedev(
                    h.device_major().ok().flatten().unwrap_or(0) as u64,
                    h.device_minor().ok().flatten().unwrap_or(0) as u64,
                );
                mknodat(&parent, name, sflag, Mode::from_bits_truncate(mode), dev)
                    .map_err(sys(what("create")))?;
                fchownat(
                    &parent,
                    name,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys(what("chown")))?;
            }
            other => return Err(bad(&format!("unsupported entry type {other:?}"))),
        }
        Ok(())
    }

    fn reopen_dest(&self) -> Result<OwnedFd> {
        openat(&self.dest, ".", dir_flags(), Mode::empty()).map_err(sys("open the destination"))
    }

    /// The entry's parent directory, beneath the destination; missing ones
    /// are made (0755, root, as Docker).
    fn parent_dir(&self, comps: &[OsString], shown: &str) -> Result<OwnedFd> {
        let escape = |e: Errno| match e {
            Errno::EXDEV | Errno::ELOOP => FsError::Escape {
                entry: shown.to_string(),
                reason: "a symbolic link on its path leads outside the destination".into(),
            },
            Errno::ENOTDIR => FsError::Conflict(format!(
                "cannot extract {shown:?}: a parent is not a directory"
            )),
            e => FsError::Sys {
                what: format!("open the directory of {shown:?}"),
                source: e,
            },
        };
        match openat2(
            &self.dest,
            join(comps).as_os_str(),
            open_how(dir_flags(), beneath()),
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(escape(e)),
        }
        let mut cur = self.reopen_dest()?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            cur = match openat2(
                &self.dest,
                prefix.as_os_str(),
                open_how(dir_flags(), beneath()),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(&cur, comps[i].as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(escape(e)),
                    }
                    openat2(
                        &self.dest,
                        prefix.as_os_str(),
                        open_how(dir_flags(), beneath()),
                    )
                    .map_err(escape)?
                }
                Err(e) => return Err(escape(e)),
            };
        }
        Ok(cur)
    }

    fn set_owner_mode(
        &self,
        fd: impl AsFd,
        uid: u32,
        gid: u32,
        mode: u32,
        shown: &str,
    ) -> Result<()> {
        fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(sys(format!("chown {shown:?}")))?;
        // After chown, which clears set-id bits.
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(sys(format!("chmod {shown:?}")))
    }
}

/// Removes `name` in `dir` (recursively if a directory), never following a
/// symlink.
fn remove_all(dir: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let sub = openat(dir, name, dir_flags() | OFlag::O_NOFOLLOW, Mode::empty())?;
    let mut d = Dir::from_fd(sub)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    let sub = openat(&d, ".", dir_flags(), Mode::empty())?;
    for n in names {
        remove_all(&sub, &n)?;
    }
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    #[test]
    fn paths_parse_like_docker() {
        let p = ContainerPath::parse("a/b/../c");
        assert_eq!(p.components, ["a", "c"]);
        assert!(!p.follow_last);
        assert_eq!(p.name, "c");
        let p = ContainerPath::parse("/dir/");
        assert!(p.follow_last);
        assert_eq!(p.name, "dir");
        let p = ContainerPath::parse("/dir/.");
        assert!(p.follow_last);
        assert_eq!(p.name, ".");
        let p = ContainerPath::parse("/../../..");
        assert!(p.components.is_empty());
        assert_eq!(p.name, "/");
        assert_eq!(p.display(), "/");
        assert_eq!(ContainerPath::parse("").name, "/");
    }

    #[test]
    fn entry_names() {
        let c = |s: &str| {
            entry_components(s.as_bytes()).map(|v| {
                v.iter()
                    .map(|o| o.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(c("a/b/").unwrap(), ["a", "b"]);
        assert_eq!(c("/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(c("./x/../y").unwrap(), ["y"]);
        assert!(c("./").unwrap().is_empty());
        assert_eq!(c("../x"), None);
        assert_eq!(c("a/../../x"), None);
    }

    #[test]
    fn go_modes() {
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), GO_MODE_DIR | 0o755);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o4755), GO_MODE_SETUID | 0o755);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), GO_MODE_SYMLINK | 0o777);
        assert_eq!(
            go_file_mode(libc::S_IFCHR | 0o666),
            GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE | 0o666
        );
        assert_eq!(
            go_file_mode(libc::S_IFDIR | 0o1777),
            GO_MODE_DIR | GO_MODE_STICKY | 0o777
        );
        assert_eq!(
            makedev(major(makedev(259, 70000)), minor(makedev(259, 70000))),
            makedev(259, 70000)
        );
        assert_eq!((major(makedev(1, 3)), minor(makedev(1, 3))), (1, 3));
    }

    /// A fake container root inside `outer`, with a marker file beside it
    /// (the "host") that nothing may read or write.
    fn fixture() -> (tempfile::TempDir, PathBuf, ContainerRoot) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("work/sub")).unwrap();
        std::fs::write(root.join("etc/hostname"), "inside\n").unwrap();
        std::fs::write(root.join("work/a.txt"), "A").unwrap();
        std::fs::write(outer.path().join("marker"), "HOST").unwrap();
        std::fs::create_dir_all(outer.path().join("etc")).unwrap();
        std::fs::write(outer.path().join("etc/hostname"), "HOST\n").unwrap();
        symlink("/", root.join("work/to-root")).unwrap();
        symlink("../../../..", root.join("work/up")).unwrap();
        symlink("../etc/hostname", root.join("work/host-link")).unwrap();
        let r = ContainerRoot::at(&root).unwrap();
        (outer, root, r)
    }

    fn names(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut ar = tar::Archive::new(tar_bytes);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let n = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (n, data)
            })
            .collect()
    }

    #[test]
    fn resolution_stays_in_the_root() {
        let (_outer, _root, r) = fixture();
        // `..` above the root is the root.
        let mut out = Vec::new();
        r.archive("/../../etc/hostname", &mut out).unwrap();
        assert_eq!(
            names(&out),
            [("hostname".to_string(), b"inside\n".to_vec())]
        );
        // Through an absolute symlink to `/`, and a relative one climbing out.
        for p in [
            "/work/to-root/etc/hostname",
            "/work/up/etc/hostname",
            "/work/up/../marker",
        ] {
            let mut out = Vec::new();
            match r.archive(p, &mut out) {
                Ok(()) => assert_eq!(names(&out)[0].1, b"inside\n", "{p}"),
                Err(FsError::NotFound(_)) => {}
                Err(e) => panic!("{p}: {e}"),
            }
        }
        assert!(matches!(r.stat("/marker"), Err(FsError::NotFound(_))));
        assert!(matches!(
            r.stat("/work/up/marker"),
            Err(FsError::NotFound(_))
        ));
        // A symlink as the last element is the link itself, its target
        // resolved inside the root.
        let st = r.stat("/work/up").unwrap();
        assert_eq!(st.mode & GO_MODE_SYMLINK, GO_MODE_SYMLINK);
        assert_eq!(st.link_target, "/");
        assert_eq!(
            r.stat("/work/host-link").unwrap().link_target,
            "/etc/hostname"
        );
        let mut out = Vec::new();
        r.archive("/work/to-root", &mut out).unwrap();
        let mut ar = tar::Archive::new(&out[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
        // Followed with a trailing slash: the container's root, named after the link.
        let st = r.stat("/work/to-root/").unwrap();
        assert!(st.is_dir());
        assert_eq!(st.name, "to-root");
    }

    #[test]
    fn directory_round_trip() {
        let (_outer, root, r) = fixture();
        std::fs::set_permissions(
            root.join("work/a.txt"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        std::fs::hard_link(root.join("work/a.txt"), root.join("work/sub/hard")).unwrap();
        // Names are bytes, not necessarily UTF-8.
        let latin1 = OsStr::from_bytes(b"caf\xe9");
        std::fs::write(root.join("work/sub").join(latin1), "bytes").unwrap();
        // A fifo is archived as one, never opened (that would block).
        nix::unistd::mkfifo(&root.join("work/pipe"), Mode::from_bits_truncate(0o600)).unwrap();
        let mut out = Vec::new();
        r.archive("/work", &mut out).unwrap();
        let n: Vec<String> = names(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            n,
            [
                "work/",
                "work/a.txt",
                "work/host-link",
                "work/pipe",
                "work/sub/",
                "work/sub/caf\u{fffd}",
                "work/sub/hard",
                "work/to-root",
                "work/up"
            ]
        );
        std::fs::create_dir(root.join("copy")).unwrap();
        r.extract(
            "/copy",
            &out[..],
            &ExtractOptions {
                no_overwrite_dir_non_dir: true,
                chown: None,
            },
        )
        .unwrap();
        let m = std::fs::metadata(root.join("copy/work/a.txt")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o751);
        assert_eq!(m.nlink(), 2, "the hard link is kept");
        let pipe = std::fs::symlink_metadata(root.join("copy/work/pipe")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
        assert_eq!(
            std::fs::read(root.join("copy/work/sub").join(latin1)).unwrap(),
            b"bytes"
        );
        assert_eq!(
            std::fs::read_link(root.join("copy/work/to-root")).unwrap(),
            Path::new("/")
        );
        // noOverwriteDirNonDir: a file over a directory is refused.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "work", &b"x"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: true,
            chown: Some((7, 8)),
        };
        assert!(matches!(
            r.extract("/copy", &t[..], &opts),
            Err(FsError::Conflict(_))
        ));
        // Into a file or nowhere.
        assert!(matches!(
            r.extract("/etc/hostname", &t[..], &opts),
            Err(FsError::NotADirectory(_))
        ));
        assert!(matches!(
            r.extract("/nope", &t[..], &opts),
            Err(FsError::NotFound(_))
        ));
        // copyUIDGID.
        r.extract("/etc", &t[..], &opts).unwrap();
        let m = std::fs::metadata(root.join("etc/work")).unwrap();
        assert_eq!((m.uid(), m.gid()), (7, 8));
    }

    /// Raw tar bytes with any name (the `tar` crate refuses `..` in
    /// `set_path`, which is the point of these tests).
    pub fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    #[test]
    fn crafted_archives_are_refused_or_contained() {
        let (outer, root, r) = fixture();
        let opts = ExtractOptions::default();
        let reg = tar::EntryType::Regular;
        let finish = |mut t: Vec<u8>| {
            t.extend_from_slice(&[0; 1024]);
            t
        };
        // `../x` climbing out of the destination.
        let mut t = Vec::new();
        raw_entry(&mut t, "../../../../marker", reg, "", b"PWNED");
        let e = r.extract("/work", &finish(t)[..], &opts).unwrap_err();
        assert!(matches!(e, FsError::Escape { .. }), "{e}");
        // An absolute name lands below the destination.
        let mut t = Vec::new();
        raw_entry(&mut t, "/marker", reg, "", b"contained");
        r.extract("/work", &finish(t)[..], &opts).unwrap();
        assert_eq!(
            std::fs::read(root.join("work/marker")).unwrap(),
            b"contained"
        );
        // Symlink then a file through it: refused, in both flavours.
        for (i, target) in ["/", "../../../.."].iter().enumerate() {
            let mut t = Vec::new();
            let link = format!("evil{i}");
            raw_entry(&mut t, &link, tar::EntryType::Symlink, target, b"");
            raw_entry(&mut t, &format!("{link}/marker"), reg, "", b"PWNED");
            let e = r.extract("/work", &finish(t)[..], &opts).unwrap_err();
            assert!(matches!(e, FsError::Escape { .. }), "{e}");
        }
        // The pre-existing escaping symlinks of the container, too.
        let mut t = Vec::new();
        raw_entry(&mut t, "up/marker", reg, "", b"PWNED");
        assert!(r.extract("/work", &finish(t)[..], &opts).is_err());
        // A hard link to a host file.
        let mut t = Vec::new();
        raw_entry(&mut t, "h", tar::EntryType::Link, "../../marker", b"");
        assert!(matches!(
            r.extract("/work", &finish(t)[..], &opts),
            Err(FsError::Escape { .. })
        ));
        let mut t = Vec::new();
        raw_entry(
            &mut t,
            "h",
            tar::EntryType::Link,
            "to-root/etc/hostname",
            b"",
        );
        assert!(r.extract("/work", &finish(t)[..], &opts).is_err());
        // Copy-in through a destination symlink stays inside the root.
        let mut t = Vec::new();
        raw_entry(&mut t, "etc/hostname", reg, "", b"written\n");
        r.extract("/work/up", &finish(t)[..], &opts).unwrap();
        assert_eq!(
            std::fs::read(root.join("etc/hostname")).unwrap(),
            b"written\n"
        );
        assert_eq!(std::fs::read(outer.path().join("marker")).unwrap(), b"HOST");
        assert_eq!(
            std::fs::read(outer.path().join("etc/hostname")).unwrap(),
            b"HOST\n"
        );
        // Garbage.
        assert!(matches!(
            r.extract("/work", &b"not a tar at all"[..], &opts),
            Err(FsError::BadArchive(_)) | Ok(())
        ));
    }
}

/// A volume or bind of a stopped container: host `source` at `destination`.
#[derive(Debug, Clone)]
pub struct ViewMount {
    pub source: PathBuf,
    pub destination: String,
}

/// Runs `f` on a thread of its own, in a private mount namespace where
/// `mounts` are bind-mounted over the stopped container's root `rootfs`, so
/// copy-out of a stopped container sees its volumes and binds as it did
/// running. Nothing propagates to the host (the namespace is made private
/// and dies with the thread). Mount targets are resolved inside the root,
/// so a symlink the container left cannot aim a mount elsewhere; a target
/// missing from the snapshot (a created container) is made, as the runtime
/// does at start.
pub fn with_mounts<T: Send + 'static>(
    rootfs: PathBuf,
    mut mounts: Vec<ViewMount>,
    f: impl FnOnce(ContainerRoot) -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    std::thread::spawn(move || {
        // CLONE_FS too: a thread may only leave the namespace it shares
        // with its process once it has its own root and cwd.
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
            .map_err(sys("unshare a mount namespace for copy-out"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(sys("make the copy-out mount namespace private"))?;
        let root = ContainerRoot::at(&rootfs)?;
        // Parents before children.
        mounts.sort_by_key(|m| m.destination.matches('/').count());
        for m in &mounts {
            let target = root.make_mountpoint(&m.destination, m.source.is_dir())?;
            let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
            mount(
                Some(&m.source),
                target_path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys(format!(
                "mount {} at {} for copy-out",
                m.source.display(),
                m.destination
            )))?;
        }
        Ok(f(root))
    })
}
