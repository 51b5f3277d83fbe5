//! The monitor's socket: a non-blocking listener and its connections,
//! served from the monitor's poll loop (no threads).
//!
//! A connection starts in request mode (JSON lines, one request at a time,
//! see [`crate::protocol`]). An attach or exec turns it into a stream: the
//! monitor appends output frames, and what the client sends is stdin. An
//! events subscription turns it into a stream of JSON lines.

use super::stdio::frame;
use crate::error::{Error, Result};
use crate::protocol::{self, ErrorKind, Response, MAX_REQUEST_LINE};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{send, MsgFlags};
use nix::sys::stat::{umask, Mode as FileMode};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Most client connections served at once; more wait in the backlog.
pub const MAX_CONNS: usize = 1024;
/// Requests answered per connection per turn of the loop, for fairness.
pub const MAX_REQUESTS_PER_TURN: usize = 64;
/// Output queued for a stream client that does not read; past this the
/// client is dropped (the container never blocks on a slow attacher).
pub const MAX_STREAM_BACKLOG: usize = 8 << 20;

/// Whose process a stream is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Container(String),
    Exec(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Requests,
    /// Output of `target` flows out; with `stdin`, input flows in.
    Attach {
        target: Target,
        stdin: bool,
    },
    /// Events flow out until `until` (nanoseconds) if given.
    Events {
        until: Option<i64>,
    },
}

/// The listening socket and the clients of the monitor.
pub struct Server {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// (dev, ino) of the socket file we made, to remove only ours.
    ident: (u64, u64),
    pub conns: Vec<Conn>,
    next_token: u64,
    _lock: Flock<std::fs::File>,
}

impl Server {
    /// Binds `path` (mode 0600) holding `<path>.lock` (which records our pid).
    /// A stale socket is replaced; a live monitor makes this fail.
    pub fn bind(path: &Path) -> Result<Server> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let busy = || Error::Invalid(format!("another monitor serves {}", path.display()));
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::Error::EWOULDBLOCK)) => return Err(busy()),
            Err((_, e)) => return Err(Error::sys(format!("lock {}", lock_path.display()), e)),
        };
        // Who holds the lock, for people and tests that must stop us.
        {
            let mut f: &std::fs::File = &lock;
            let _ = f.set_len(0);
            let _ = writeln!(f, "{}", std::process::id());
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(Error::Invalid(format!(
                    "{} exists and is not a socket",
                    path.display()
                )))
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(busy()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(|e| {
                        Error::io(format!("remove stale socket {}", path.display()), e)
                    })?;
                }
                Err(e) => return Err(Error::io(format!("connect {}", path.display()), e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        }
        // Made 0600 from the start: nobody else can connect in between.
        let old = umask(FileMode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound.map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("set listener non-blocking", e))?;
        let m = std::fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        Ok(Server {
            listener: Some(listener),
            path: path.to_path_buf(),
            ident: (m.dev(), m.ino()),
            conns: Vec::new(),
            next_token: 1,
            _lock: lock,
        })
    }

    /// The listener, then every connection, in the order [`Server::accept`]
    /// and the monitor read their events.
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(l) = &self.listener {
            let flags = if self.conns.len() < MAX_CONNS {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(l.as_fd(), flags));
        }
        for c in &self.conns {
            fds.push(PollFd::new(c.stream.as_fd(), c.interest()));
        }
    }

    /// How many poll slots [`Server::poll_fds`] used before the connections.
    pub fn listener_slots(&self) -> usize {
        usize::from(self.listener.is_some())
    }

    /// True if a connection has a request ready to answer.
    pub fn busy(&self) -> bool {
        self.conns.iter().any(|c| c.ready_for_request())
    }

    pub fn accept(&mut self, listener_event: PollFlags) {
        let Some(l) = &self.listener else { return };
        if listener_event.is_empty() {
            return;
        }
        while self.conns.len() < MAX_CONNS {
            match l.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn::new(stream, self.next_token));
                        self.next_token += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock, or a connection that failed before we took it.
                Err(_) => break,
            }
        }
    }

    pub fn conn_mut(&mut self, token: u64) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.token == token)
    }

    /// Sends a deferred response to the connection `token`, if still there.
    pub fn respond(&mut self, token: u64, resp: &Response) {
        if let Some(c) = self.conn_mut(token) {
            c.awaiting = false;
            c.queue(&protocol::encode(resp));
        }
    }

    /// Queues an output frame on every stream attached to `target`.
    pub fn broadcast(&mut self, target: &Target, kind: u8, data: &[u8]) {
        let mut framed: Option<Vec<u8>> = None;
        for c in &mut self.conns {
            if matches!(&c.mode, Mode::Attach { target: t, .. } if t == target) {
                let bytes = framed.get_or_insert_with(|| frame(kind, data));
                c.queue(bytes);
            }
        }
    }

    /// Ends every stream attached to `target` once its output is sent.
    pub fn end_streams(&mut self, target: &Target) {
        for c in &mut self.conns {
            if matches!(&c.mode, Mode::Attach { target: t, .. } if t == target) {
                c.close_when_flushed = true;
            }
        }
    }

    /// Writes what can be written and drops finished connections.
    pub fn flush_and_prune(&mut self) {
        for c in &mut self.conns {
            c.flush();
        }
        self.conns.retain(|c| !c.finished());
    }

    /// Stops accepting and removes the socket file if it is still ours.
    pub fn close(&mut self) {
        self.listener = None;
        self.conns.clear();
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A request line over [`MAX_REQUEST_LINE`].
pub struct TooLong;

/// One client.
pub struct Conn {
    pub token: u64,
    stream: UnixStream,
    pub mode: Mode,
    rbuf: Vec<u8>,
    /// Bytes at the start of `rbuf` known to hold no newline.
    scanned: usize,
    /// Skipping the rest of an over-long line up to its newline.
    discarding: bool,
    /// An over-long line ended: its error response is due.
    too_long: bool,
    wbuf: Vec<u8>,
    wpos: usize,
    /// A request was taken and its response is not queued yet.
    pub awaiting: bool,
    /// The client will send nothing more.
    pub eof: bool,
    /// Broken, or too slow: dropped at the next prune.
    pub dead: bool,
    pub close_when_flushed: bool,
    /// An attach stream whose process holds a full input buffer: not read
    /// until it drains (input waits in the socket, never dropped).
    pub paused: bool,
}

impl Conn {
    fn new(stream: UnixStream, token: u64) -> Conn {
        Conn {
            token,
            stream,
            mode: Mode::Requests,
            rbuf: Vec::new(),
            scanned: 0,
            discarding: false,
            too_long: false,
            wbuf: Vec::new(),
            wpos: 0,
            awaiting: false,
            eof: false,
            dead: false,
            close_when_flushed: false,
            paused: false,
        }
    }

    fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// In request mode: read while nothing is to be sent and no request
    /// waits (one request at a time, so a client that does not read its
    /// responses cannot make us buffer without bound). Streams always
    /// read (stdin, or to notice the client leaving).
    fn interest(&self) -> PollFlags {
        let mut f = PollFlags::empty();
        if self.pending_out() > 0 {
            f |= PollFlags::POLLOUT;
        }
        let read = match self.mode {
            Mode::Requests => {
                self.pending_out() == 0 && !self.awaiting && !self.eof && !self.has_request()
            }
            _ => !self.eof && !self.paused,
        };
        if read {
            f |= PollFlags::POLLIN;
        }
        f
    }

    pub fn ready_for_request(&self) -> bool {
        self.mode == Mode::Requests
            && !self.awaiting
            && self.pending_out() == 0
            && self.has_request()
    }

    fn has_request(&self) -> bool {
        self.too_long || self.rbuf[self.scanned..].contains(&b'\n')
    }

    pub(crate) fn finished(&self) -> bool {
        if self.dead {
            return true;
        }
        let drained = self.pending_out() == 0;
        match self.mode {
            _ if self.close_when_flushed => drained,
            Mode::Requests => self.eof && drained && !self.awaiting && !self.has_request(),
            // An attacher that closed its side still gets the output.
            Mode::Attach { .. } => false,
            Mode::Events { .. } => self.eof,
        }
    }

    /// Reads request bytes, stopping at the first complete request.
    pub fn fill(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        for _ in 0..16 {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    self.absorb(&buf[..n]);
                    if self.has_request() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Raw bytes of a stream client (at most `max`), or None at end of
    /// file. Bytes left over from request mode come first.
    pub fn read_raw(&mut self, max: usize) -> Option<Vec<u8>> {
        if !self.rbuf.is_empty() {
            self.scanned = 0;
            return Some(std::mem::take(&mut self.rbuf));
        }
        let mut buf = vec![0u8; max.clamp(1, 64 * 1024)];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return None;
                }
                Ok(n) => {
                    buf.truncate(n);
                    return Some(buf);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(Vec::new()),
                Err(_) => {
                    self.dead = true;
                    return None;
                }
            }
        }
    }

    fn absorb(&mut self, mut data: &[u8]) {
        if self.discarding {
            let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                return;
            };
            self.discarding = false;
            self.too_long = true;
            data = &data[nl + 1..];
        }
        self.rbuf.extend_from_slice(data);
        if !self.too_long
            && self.rbuf.len() > MAX_REQUEST_LINE
            && !self.rbuf[self.scanned..].contains(&b'\n')
        {
            self.rbuf = Vec::new();
            self.scanned = 0;
            self.discarding = true;
        }
    }

    /// The next request line (without its newline), if one is complete.
    pub fn take_line(&mut self) -> Option<Result<Vec<u8>, TooLong>> {
        if self.too_long {
            self.too_long = false;
            return Some(Err(TooLong));
        }
        match self.rbuf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.rbuf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                if line.len() > MAX_REQUEST_LINE {
                    return Some(Err(TooLong));
                }
                // A later over-long line in the same read was not checked.
                if self.rbuf.len() > MAX_REQUEST_LINE && !self.rbuf.contains(&b'\n') {
                    self.rbuf = Vec::new();
                    self.discarding = true;
                }
                Some(Ok(line))
            }
            None => {
                self.scanned = self.rbuf.len();
                None
            }
        }
    }

    /// The response to a request line that was too long.
    pub fn too_long_response() -> Response {
        Response::error(
            ErrorKind::BadRequest,
            format!("request line longer than {MAX_REQUEST_LINE} bytes"),
        )
    }

    /// Appends bytes to send; a stream client that fell too far behind is dropped.
    pub fn queue(&mut self, bytes: &[u8]) {
        if self.dead {
            return;
        }
        if self.mode != Mode::Requests && self.pending_out() + bytes.len() > MAX_STREAM_BACKLOG {
            self.dead = true;
            return;
        }
        if self.wpos > 0 && self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        self.wbuf.extend_from_slice(bytes);
    }

    pub fn flush(&mut self) {
        while self.wpos < self.wbuf.len() {
            match send(
                self.stream.as_raw_fd(),
                &self.wbuf[self.wpos..],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => self.wpos += n,
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) => break,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf = Vec::new();
            self.wpos = 0;
        } else if self.wpos > (1 << 20) {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
    }
}
