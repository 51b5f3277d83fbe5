//! The monitor: one single-threaded process that parents every container.
//!
//! It is a child subreaper, so a container's init (cloned by the runtime
//! from this process) and anything orphaned inside stay its children. It
//! holds each container's stdout/stderr pipes and copies them into the
//! json-file log, and it reaps the init to record the exit code. Because it
//! owns the processes and their stdio, the API daemon can restart freely.
//!
//! The loop is poll(2) over the pipes and a signalfd for SIGCHLD; no
//! threads (the runtime clones containers only from a single-threaded
//! process, and checks). SIGCHLD is blocked for the signalfd, and unblocked
//! only around the runtime's create so the container does not inherit a
//! blocked SIGCHLD; a SIGCHLD that lands in that window is not lost, since
//! every [`Monitor::run_once`] reaps with `WNOHANG` whether or not the
//! signalfd fired.
//!
//! After a monitor restart, containers still alive are adopted: their exit
//! status can no longer be waited for (they are no longer our children), so
//! their liveness is checked on every loop and, once gone, they are
//! recorded Exited with [`EXIT_CODE_UNKNOWN`] (255, as Docker does), as are
//! containers found dead at start-up.

use crate::error::{Error, Result};
use crate::logs::{LogOptions, LogWriter, Stream};
use crate::protocol::{self, ErrorKind, Request, Response, MAX_REQUEST_LINE};
use crate::records::{ContainerRecord, Records, Status, EXIT_CODE_UNKNOWN};
use cubby_runtime::cgroups::{Cgroup, Hierarchy};
use cubby_runtime::container::{self, CreateOptions};
use cubby_runtime::state::{self, StateRoot};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{send, MsgFlags};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const LOG_FILE: &str = "log.json";

/// What [`Monitor::create`] needs to run a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub name: String,
    pub spec: Spec,
    pub bundle: PathBuf,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, with = "log_options")]
    pub log: LogOptions,
    /// The daemon's own view of the container, kept in the record as given
    /// (Docker's `{"Config":…,"HostConfig":…,"Mounts":[…]}`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
}

/// [`LogOptions`] on the wire: `{"max_size": 1000, "max_file": 2}`.
mod log_options {
    use crate::logs::LogOptions;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        #[serde(default)]
        max_size: Option<u64>,
        #[serde(default = "one")]
        max_file: u32,
    }

    fn one() -> u32 {
        1
    }

    pub fn serialize<S: Serializer>(o: &LogOptions, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            max_size: o.max_size,
            max_file: o.max_file,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogOptions, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(LogOptions {
            max_size: w.max_size,
            max_file: w.max_file,
        })
    }
}

/// A container the monitor follows.
struct Live {
    pid: i32,
    start_time: u64,
    /// We cloned it, so waitpid works; false for containers adopted after a restart.
    child: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    log: Option<LogWriter>,
}

pub struct Monitor {
    state: StateRoot,
    records: Records,
    sigfd: SignalFd,
    live: BTreeMap<String, Live>,
    recovery_errors: Vec<Error>,
    /// SIGTERM or SIGINT arrived while serving.
    stop: bool,
}

impl Monitor {
    /// Makes this process a child subreaper with SIGCHLD on a signalfd,
    /// opens the records under `root` and the runtime state under
    /// `state_dir`, and recovers containers recorded as running.
    pub fn new(root: &Path, state_dir: &Path) -> Result<Monitor> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::sys("PR_SET_CHILD_SUBREAPER", e))?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("block SIGCHLD", e))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::sys("signalfd", e))?;
        let mut monitor = Monitor {
            state: StateRoot::new(state_dir),
            records: Records::open(root)?,
            sigfd,
            live: BTreeMap::new(),
            recovery_errors: Vec::new(),
            stop: false,
        };
        monitor.recover()?;
        Ok(monitor)
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Records that could not be read or settled at start-up.
    pub fn recovery_errors(&self) -> &[Error] {
        &self.recovery_errors
    }

    /// Ids of the containers still followed (running or adopted).
    pub fn running(&self) -> Vec<String> {
        self.live.keys().cloned().collect()
    }

    fn recover(&mut self) -> Result<()> {
        let listing = self.records.list()?;
        self.recovery_errors.extend(listing.errors);
        for rec in listing.records {
            if rec.status == Status::Exited {
                continue;
            }
            let alive = match self.state.load(&rec.id) {
                Ok(st) if rec.status == Status::Running && rec.pid == Some(st.pid) => {
                    state::process_is(st.pid, st.pid_start_time).then_some(st)
                }
                _ => None,
            };
            match alive {
                Some(st) => {
                    self.live.insert(
                        rec.id.clone(),
                        Live {
                            pid: st.pid,
                            start_time: st.pid_start_time,
                            child: false,
                            stdout: None,
                            stderr: None,
                            log: None,
                        },
                    );
                }
                None => {
                    if let Err(e) = self.finish(&rec.id, None) {
                        self.recovery_errors.push(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates and starts a container whose stdout and stderr go to its
    /// json-file log and whose stdin is /dev/null.
    pub fn create(&mut self, req: CreateRequest) -> Result<()> {
        state::validate_id(&req.id)?;
        match self.records.get(&req.id) {
            Err(Error::NotFound(_)) => {}
            Ok(_) | Err(Error::CorruptRecord { .. }) => {
                return Err(Error::AlreadyExists(req.id.clone()))
            }
            Err(e) => return Err(e),
        }
        let terminal = req
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if terminal {
            return Err(Error::Invalid(
                "containers with a terminal are not supported by the monitor yet".into(),
            ));
        }
        let mut rec = ContainerRecord {
            id: req.id.clone(),
            name: req.name.clone(),
            image: req.image.clone(),
            created: state::rfc3339_now(),
            status: Status::Created,
            pid: None,
            exit_code: None,
            oom_killed: false,
            started_at: String::new(),
            finished_at: None,
            log_path: self.records.dir(&req.id).join(LOG_FILE),
            restart_count: 0,
            labels: req.labels.clone(),
            error: None,
            config: req.config.clone(),
        };
        self.records.put(&rec)?;
        let live = match self.spawn(&req, &rec.log_path) {
            Ok(live) => live,
            Err(e) => {
                let _ = container::delete(&self.state, &req.id, true);
                let _ = self.records.remove(&req.id);
                return Err(e);
            }
        };
        rec.status = Status::Running;
        rec.pid = Some(live.pid);
        rec.started_at = state::rfc3339_now();
        self.live.insert(req.id.clone(), live);
        if let Err(e) = self.records.put(&rec) {
            // Without a record nobody could find it again: do not leave it running.
            let _ = container::kill_container(&self.state, &req.id, Signal::SIGKILL, false);
            return Err(e);
        }
        Ok(())
    }

    fn spawn(&mut self, req: &CreateRequest, log_path: &Path) -> Result<Live> {
        let log = LogWriter::open(log_path, req.log)?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let devnull = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::io("open /dev/null", e))?;
        let created = {
            // The runtime's child inherits the caller's fds 0-2.
            let _stdio = StdioSwap::install(devnull.as_fd(), out_w.as_fd(), err_w.as_fd())?;
            let _sigchld = SigchldUnblocked::new()?;
            container::create(CreateOptions {
                id: &req.id,
                bundle: &req.bundle,
                spec: req.spec.clone(),
                root: &self.state,
                console_socket: None,
                pid_file: None,
                init: false,
                preserve_fds: 0,
            })?
        };
        drop(out_w);
        drop(err_w);
        container::start(&self.state, &req.id)?;
        Ok(Live {
            pid: created.state.pid,
            start_time: created.state.pid_start_time,
            child: true,
            stdout: Some(out_r),
            stderr: Some(err_r),
            log: Some(log),
        })
    }

    /// Waits up to `timeout` for output or exits and handles what came.
    pub fn run_once(&mut self, timeout: Duration) -> Result<()> {
        self.cycle(timeout, None).map(|_| ())
    }

    /// One turn of the loop: polls the signalfd, the containers' pipes and
    /// the server's sockets (whose events are returned, listener first, for
    /// the caller to handle), copies output, reaps.
    fn cycle(&mut self, timeout: Duration, server: Option<&Server>) -> Result<Vec<PollFlags>> {
        let mut slots: Vec<(String, Stream)> = Vec::new();
        let (ready, server_events): (Vec<bool>, Vec<PollFlags>) = {
            let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
            for (id, live) in &self.live {
                for (stream, fd) in [
                    (Stream::Stdout, &live.stdout),
                    (Stream::Stderr, &live.stderr),
                ] {
                    if let Some(fd) = fd {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                        slots.push((id.clone(), stream));
                    }
                }
            }
            let own = fds.len();
            if let Some(server) = server {
                server.poll_fds(&mut fds);
            }
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(Error::sys("poll", e)),
            }
            let events: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            (
                events[..own].iter().map(|r| !r.is_empty()).collect(),
                events[own..].to_vec(),
            )
        };
        for (i, (id, stream)) in slots.iter().enumerate() {
            if ready[i + 1] {
                if let Some(live) = self.live.get_mut(id) {
                    pump(live, *stream, 16);
                }
            }
        }
        // Empty the signalfd; the reaping below does not depend on it.
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == Signal::SIGTERM as i32 || signo == Signal::SIGINT as i32 {
                self.stop = true;
            }
        }
        self.reap()?;
        let gone: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| !l.child && !state::process_is(l.pid, l.start_time))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.finish(&id, None)?;
        }
        Ok(server_events)
    }

    fn reap(&mut self) -> Result<()> {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return Ok(()),
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys("waitpid", e)),
            };
            let id = self
                .live
                .iter()
                .find(|(_, l)| l.child && l.pid == pid.as_raw())
                .map(|(id, _)| id.clone());
            // Other pids are orphans reparented to us: reaping them is all.
            if let Some(id) = id {
                self.finish(&id, Some(code))?;
            }
        }
    }

    /// Settles an exited container: rest of its output, OOM flag, cgroup
    /// and runtime state removed, record Exited. `code` None means unknown.
    fn finish(&mut self, id: &str, code: Option<i32>) -> Result<()> {
        let mut live = self.live.remove(id);
        if let Some(live) = &mut live {
            drain(live);
        }
        let mut errors = Vec::new();
        let mut oom = false;
        match self.state.load(id) {
            Ok(st) => {
                match Hierarchy::detect().and_then(|h| Cgroup::new(h, &st.cgroup_path)) {
                    Ok(cg) => oom = cg.oom_killed().unwrap_or(false),
                    Err(e) => errors.push(format!("cgroup: {e}")),
                }
                // Kills what is left in the cgroup, removes it and the state.
                if let Err(e) = container::delete(&self.state, id, true) {
                    errors.push(format!("delete runtime state: {e}"));
                }
            }
            Err(cubby_runtime::Error::NotFound(_)) => {}
            Err(e) => {
                errors.push(format!("runtime state: {e}"));
                let _ = self.state.remove(id);
            }
        }
        if let Some(live) = &mut live {
            // Processes left in the cgroup are dead now: their writes are all in.
            drain(live);
            if let Some(log) = &mut live.log {
                for stream in [Stream::Stdout, Stream::Stderr] {
                    if let Err(e) = log.finish(stream) {
                        errors.push(format!("log: {e}"));
                    }
                }
            }
        }
        let mut rec = self.records.get(id)?;
        rec.status = Status::Exited;
        rec.pid = None;
        rec.exit_code = Some(code.unwrap_or(EXIT_CODE_UNKNOWN));
        rec.oom_killed = oom;
        rec.finished_at = Some(state::rfc3339_now());
        if code.is_none() {
            errors.insert(
                0,
                "exit status unknown: the container was not followed by this monitor when it exited"
                    .into(),
            );
        }
        if !errors.is_empty() {
            rec.error = Some(errors.join("; "));
        }
        self.records.put(&rec)
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&mut self, id: &str, signal: Signal) -> Result<()> {
        if !self.live.contains_key(id) {
            let rec = self.records.get(id)?;
            return Err(Error::WrongState {
                id: id.into(),
                status: rec.status.to_string(),
                wanted: "only a running container can be signalled".into(),
            });
        }
        container::kill_container(&self.state, id, signal, false)?;
        Ok(())
    }

    /// Removes a container's record and logs; a running one only with
    /// `force` (it is killed and reaped first).
    pub fn remove(&mut self, id: &str, force: bool) -> Result<()> {
        if self.live.contains_key(id) {
            if !force {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: Status::Running.to_string(),
                    wanted: "stop it first or force the removal".into(),
                });
            }
            let _ = container::kill_container(&self.state, id, Signal::SIGKILL, false);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.live.contains_key(id) && Instant::now() < deadline {
                self.run_once(Duration::from_millis(50))?;
            }
            if self.live.contains_key(id) {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: Status::Running.to_string(),
                    wanted: "it did not die within 10 s of SIGKILL".into(),
                });
            }
        }
        match self.records.get(id) {
            Ok(_) => {}
            Err(Error::CorruptRecord { .. }) if force => {}
            Err(e) => return Err(e),
        }
        if self.state.dir(id).exists() {
            container::delete(&self.state, id, true)?;
        }
        self.records.remove(id)
    }

    /// Serves the protocol of [`crate::protocol`] on a Unix socket at
    /// `socket` until SIGTERM or SIGINT, alongside the containers.
    ///
    /// The socket is made with mode 0600. An existing socket file is
    /// removed only if nothing answers on it; if a monitor answers (or
    /// holds `<socket>.lock`), this refuses to start. Clients are served
    /// independently with non-blocking I/O, one request at a time each.
    /// On SIGTERM/SIGINT the monitor stops accepting, flushes the
    /// containers' logs, removes its socket and returns Ok; the containers
    /// keep running, for the next monitor to adopt.
    pub fn serve(&mut self, socket: &Path) -> Result<()> {
        let mut server = Server::bind(socket)?;
        let mut mask = SigSet::empty();
        for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(sig);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("block SIGTERM and SIGINT", e))?;
        self.sigfd
            .set_mask(&mask)
            .map_err(|e| Error::sys("signalfd mask", e))?;
        while !self.stop {
            let timeout = if server.busy() {
                Duration::ZERO
            } else {
                Duration::from_millis(500)
            };
            let events = match self.cycle(timeout, Some(&server)) {
                Ok(events) => events,
                Err(e) => {
                    log_error(Err(e));
                    // Do not spin on a persistent failure.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if self.stop {
                break;
            }
            server.accept(&events);
            server.exchange(&events, |req| self.handle(req));
        }
        for live in self.live.values_mut() {
            drain(live);
            if let Some(log) = &mut live.log {
                for stream in [Stream::Stdout, Stream::Stderr] {
                    log_error(log.finish(stream));
                }
            }
        }
        server.close();
        Ok(())
    }

    /// Answers one request.
    fn handle(&mut self, req: Request) -> Response {
        let result = match req {
            Request::Ping => Ok(Response::Ok),
            Request::Create(req) => {
                let id = req.id.clone();
                self.create(*req)
                    .and_then(|()| self.records.get(&id))
                    .map(|r| Response::Record(Box::new(r)))
            }
            Request::Kill { id, signal } => Signal::try_from(signal)
                .map_err(|_| Error::Invalid(format!("no such signal: {signal}")))
                .and_then(|sig| self.kill(&id, sig))
                .map(|()| Response::Ok),
            Request::Remove { id, force } => self.remove(&id, force).map(|()| Response::Ok),
            Request::List => self.records.list().map(|l| {
                for e in l.errors {
                    log_error(Err(e));
                }
                Response::Records(l.records)
            }),
            Request::Get { id } => self.records.get(&id).map(|r| Response::Record(Box::new(r))),
        };
        result.unwrap_or_else(|e| Response::from(&e))
    }

    /// Runs the loop until no container is followed or `timeout` passes;
    /// true if all exited.
    pub fn wait_all_exited(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while !self.live.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.run_once((deadline - now).min(Duration::from_millis(100)))?;
        }
        Ok(true)
    }
}

/// Most client connections served at once; more wait in the backlog.
const MAX_CONNS: usize = 256;
/// Requests answered per connection per turn of the loop, for fairness.
const MAX_REQUESTS_PER_TURN: usize = 64;

/// The listening socket and the clients of [`Monitor::serve`].
struct Server {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// (dev, ino) of the socket file we made, to remove only ours.
    ident: (u64, u64),
    conns: Vec<Conn>,
    _lock: Flock<std::fs::File>,
}

impl Server {
    fn bind(path: &Path) -> Result<Server> {
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
        let old = umask(Mode::from_bits_truncate(0o177));
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
            _lock: lock,
        })
    }

    /// The listener, then every connection, in the order [`Server::accept`]
    /// and [`Server::exchange`] read their events.
    fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
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

    /// True if a connection has a request ready to answer.
    fn busy(&self) -> bool {
        self.conns
            .iter()
            .any(|c| c.wbuf.is_empty() && c.has_request())
    }

    fn accept(&mut self, events: &[PollFlags]) {
        let Some(l) = &self.listener else { return };
        if events.first().is_none_or(|e| e.is_empty()) {
            return;
        }
        while self.conns.len() < MAX_CONNS {
            match l.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn::new(stream));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock, or a connection that failed before we took it.
                Err(_) => break,
            }
        }
    }

    /// Reads, answers and writes on every connection; closes finished ones.
    fn exchange(&mut self, events: &[PollFlags], mut handle: impl FnMut(Request) -> Response) {
        let skip = usize::from(self.listener.is_some());
        let conns = std::mem::take(&mut self.conns);
        let mut open = Vec::with_capacity(conns.len());
        // Connections accepted this turn have no events yet.
        for (i, mut c) in conns.into_iter().enumerate() {
            let ev = events.get(skip + i).copied().unwrap_or(PollFlags::empty());
            if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                && c.wbuf.is_empty()
            {
                c.fill();
            }
            for _ in 0..MAX_REQUESTS_PER_TURN {
                c.flush();
                if c.dead || !c.wbuf.is_empty() {
                    break;
                }
                let Some(line) = c.take_line() else { break };
                let resp = match line {
                    Ok(line) => match protocol::decode_request(&line) {
                        Ok(req) => handle(req),
                        Err(resp) => resp,
                    },
                    Err(TooLong) => Response::error(
                        ErrorKind::BadRequest,
                        format!("request line longer than {MAX_REQUEST_LINE} bytes"),
                    ),
                };
                c.wbuf = protocol::encode(&resp);
                c.wpos = 0;
            }
            c.flush();
            let finished = c.eof && c.wbuf.is_empty() && !c.has_request();
            if !c.dead && !finished {
                open.push(c);
            }
        }
        self.conns = open;
    }

    /// Stops accepting and removes the socket file if it is still ours.
    fn close(&mut self) {
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
struct TooLong;

/// One client: its partial request and its unsent response.
struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    /// Bytes at the start of `rbuf` known to hold no newline.
    scanned: usize,
    /// Skipping the rest of an over-long line up to its newline.
    discarding: bool,
    /// An over-long line ended: its error response is due.
    too_long: bool,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The client will send nothing more.
    eof: bool,
    dead: bool,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            rbuf: Vec::new(),
            scanned: 0,
            discarding: false,
            too_long: false,
            wbuf: Vec::new(),
            wpos: 0,
            eof: false,
            dead: false,
        }
    }

    /// Read while nothing is to be sent and no request waits: one request
    /// at a time, so a client that does not read its responses cannot make
    /// us buffer without bound.
    fn interest(&self) -> PollFlags {
        if !self.wbuf.is_empty() {
            PollFlags::POLLOUT
        } else if !self.eof && !self.has_request() {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        }
    }

    fn has_request(&self) -> bool {
        self.too_long || self.rbuf[self.scanned..].contains(&b'\n')
    }

    /// Reads what is available, stopping at the first complete request.
    fn fill(&mut self) {
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
    fn take_line(&mut self) -> Option<Result<Vec<u8>, TooLong>> {
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

    fn flush(&mut self) {
        while self.wpos < self.wbuf.len() {
            match send(
                self.stream.as_raw_fd(),
                &self.wbuf[self.wpos..],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => self.wpos += n,
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.wbuf = Vec::new();
        self.wpos = 0;
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| Error::sys("set pipe non-blocking", e))?;
    Ok((r, w))
}

/// Reads up to `max_reads` chunks of `stream` into the log; closes the pipe
/// at end of file.
fn pump(live: &mut Live, stream: Stream, max_reads: usize) {
    let slot = match stream {
        Stream::Stdout => &mut live.stdout,
        Stream::Stderr => &mut live.stderr,
    };
    let mut buf = [0u8; 32 * 1024];
    for _ in 0..max_reads {
        let Some(fd) = slot.as_ref() else { return };
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => {
                *slot = None;
                if let Some(log) = &mut live.log {
                    log_error(log.finish(stream));
                }
                return;
            }
            Ok(n) => {
                if let Some(log) = &mut live.log {
                    log_error(log.write(stream, &buf[..n]));
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => return,
            Err(_) => {
                *slot = None;
                return;
            }
        }
    }
}

/// Reads everything available now on both pipes.
fn drain(live: &mut Live) {
    for stream in [Stream::Stdout, Stream::Stderr] {
        pump(live, stream, usize::MAX);
    }
}

/// A failed log write must not stop the monitor; the monitor's own stderr
/// is where it is told.
fn log_error(r: Result<()>) {
    if let Err(e) = r {
        let _ = writeln!(std::io::stderr(), "cubby monitor: {e}");
    }
}

/// Points fds 0, 1, 2 at the given files and puts the originals back on
/// drop (or /dev/null for one the process did not have).
struct StdioSwap {
    saved: [Option<OwnedFd>; 3],
    devnull: OwnedFd,
}

impl StdioSwap {
    fn install(
        stdin: std::os::fd::BorrowedFd,
        stdout: std::os::fd::BorrowedFd,
        stderr: std::os::fd::BorrowedFd,
    ) -> Result<StdioSwap> {
        let _ = std::io::stdout().flush();
        let devnull = stdin
            .try_clone_to_owned()
            .map_err(|e| Error::io("dup /dev/null", e))?;
        let swap = StdioSwap {
            saved: [
                std::io::stdin().as_fd().try_clone_to_owned().ok(),
                std::io::stdout().as_fd().try_clone_to_owned().ok(),
                std::io::stderr().as_fd().try_clone_to_owned().ok(),
            ],
            devnull,
        };
        nix::unistd::dup2_stdin(stdin).map_err(|e| Error::sys("dup2 stdin", e))?;
        nix::unistd::dup2_stdout(stdout).map_err(|e| Error::sys("dup2 stdout", e))?;
        nix::unistd::dup2_stderr(stderr).map_err(|e| Error::sys("dup2 stderr", e))?;
        Ok(swap)
    }
}

impl Drop for StdioSwap {
    fn drop(&mut self) {
        let fd = |i: usize| self.saved[i].as_ref().unwrap_or(&self.devnull).as_fd();
        let _ = nix::unistd::dup2_stdin(fd(0));
        let _ = nix::unistd::dup2_stdout(fd(1));
        let _ = nix::unistd::dup2_stderr(fd(2));
    }
}

/// SIGCHLD unblocked while alive, so a container cloned meanwhile does not
/// inherit it blocked.
struct SigchldUnblocked(SigSet);

impl SigchldUnblocked {
    fn new() -> Result<SigchldUnblocked> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("unblock SIGCHLD", e))?;
        Ok(SigchldUnblocked(mask))
    }
}

impl Drop for SigchldUnblocked {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&self.0), None);
    }
}
