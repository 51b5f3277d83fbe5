//! The monitor: one single-threaded process that parents every container.
//!
//! It is a child subreaper, so a container's init (cloned by the runtime
//! from this process), its execs and anything orphaned inside stay its
//! children. It holds each container's stdio (pipes, or a pty master),
//! copies output into the json-file log and to attached clients, feeds
//! attached clients' input to stdin, reaps to record exit codes and OOM
//! kills, applies restart policies and `--rm`, and keeps the event log.
//! Because it owns the processes and their stdio, the API daemon can
//! restart freely.
//!
//! The loop is poll(2) over the stdio fds, a signalfd for SIGCHLD and the
//! server's sockets ([`server`]); no threads (the runtime clones containers
//! only from a single-threaded process, and checks). SIGCHLD is blocked for
//! the signalfd and unblocked only around the runtime's clone so children
//! do not inherit it blocked; every turn reaps with `WNOHANG` whether or
//! not the signalfd fired, so none is lost.
//!
//! Requests that finish later (stop, restart, forced remove, wait) park
//! the client's connection and are answered from the loop when the
//! container exits. Timers (SIGKILL after a stop's grace period, restarts
//! after their back-off) bound the poll timeout.
//!
//! After a monitor restart, containers still alive are adopted: their exit
//! status can no longer be waited for (they are no longer our children), so
//! their liveness is checked on every turn and, once gone, they are
//! recorded Exited with [`EXIT_CODE_UNKNOWN`] (255, as Docker does), as are
//! containers found dead at start-up.

pub mod events;
pub use crate::protocol::CreateRequest;
mod exec;
use exec::ExecProc;
mod reserve;
mod serve;
pub mod server;
pub mod stdio;

use crate::error::{Error, Result};
use crate::logs::{LogWriter, Stream};
use crate::protocol::{self, ExecRequest, ExecState, Request, Response, WaitCondition};
use crate::records::{ContainerRecord, Records, Status, EXIT_CODE_UNKNOWN};
use cubby_runtime::cgroups::{Cgroup, Hierarchy};
use cubby_runtime::container::{self, CreateOptions, ExecOptions};
use cubby_runtime::state::{self, StateRoot};
use events::{Event, EventLog};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use server::{Conn, Mode, Server, Target};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stdio::{ReadResult, Stdio, FRAME_EXIT, FRAME_STDERR, FRAME_STDOUT};

pub use stdio::frame;

pub const LOG_FILE: &str = "log.json";
/// The create request kept beside the record, to start the container again.
pub const CREATE_FILE: &str = "create.json";
/// Restart back-off: first delay, cap, and the run time that resets it.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// The delay before restart attempt: 100 ms, doubling to 60 s; back to
/// 100 ms after a run of at least 10 s (`ran`: how long it last ran).
fn next_backoff(previous: Option<Duration>, ran: Option<Duration>) -> Duration {
    match (previous, ran) {
        (Some(_), Some(ran)) if ran >= BACKOFF_RESET_AFTER => BACKOFF_START,
        (Some(d), _) => (d * 2).min(BACKOFF_MAX),
        (None, _) => BACKOFF_START,
    }
}

/// What an exit leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExitDecision {
    /// The restart policy brings it back (after [`next_backoff`]).
    restarts: bool,
    /// `--rm`: removed now.
    auto_remove: bool,
    status: Status,
}

/// The exit state machine: a `docker restart` or `rm -f` in progress
/// overrides the policy; `--rm` applies only to an exit for good.
fn exit_decision(
    rec: &ContainerRecord,
    exit_code: i32,
    restart_waiter: bool,
    removing: bool,
) -> ExitDecision {
    let restarts = !restart_waiter
        && !removing
        && rec
            .restart_policy
            .restarts(exit_code, rec.restart_count, rec.manually_stopped);
    ExitDecision {
        restarts,
        auto_remove: rec.auto_remove && !restarts && !restart_waiter,
        status: if restarts {
            Status::Restarting
        } else {
            Status::Exited
        },
    }
}

/// Stop's grace period before SIGKILL when the request gives none.
const DEFAULT_STOP_TIMEOUT: i64 = 10;

/// A container process the monitor follows.
struct Live {
    pid: i32,
    start_time: u64,
    /// We cloned it, so waitpid works; false for containers adopted after a restart.
    child: bool,
    stdio: Stdio,
    log: Option<LogWriter>,
    started: Instant,
}

/// A request answered when its container exits (or is removed).
#[derive(Debug, Clone, PartialEq)]
enum Waiter {
    Wait {
        token: u64,
        id: String,
        condition: WaitCondition,
    },
    Stop {
        token: u64,
        id: String,
    },
    Restart {
        token: u64,
        id: String,
    },
    Remove {
        token: u64,
        id: String,
    },
}

impl Waiter {
    fn id(&self) -> &str {
        match self {
            Waiter::Wait { id, .. }
            | Waiter::Stop { id, .. }
            | Waiter::Restart { id, .. }
            | Waiter::Remove { id, .. } => id,
        }
    }
}

/// How a request is answered.
enum Reply {
    Now(Response),
    /// A waiter was registered; the answer comes from the loop.
    Later,
    /// Answer Ok, then the connection becomes a stream.
    Stream(Mode),
}

/// No connection: requests made in-process (tests, tools).
const NO_TOKEN: u64 = 0;

pub struct Monitor {
    /// cubby's data root (containers, volumes).
    root: PathBuf,
    state: StateRoot,
    records: Records,
    /// Every record, as on disk (the monitor is the only writer).
    recs: BTreeMap<String, ContainerRecord>,
    sigfd: SignalFd,
    live: BTreeMap<String, Live>,
    execs: BTreeMap<String, ExecProc>,
    waiters: Vec<Waiter>,
    /// SIGKILL due (a stop's grace period ran out).
    kill_at: BTreeMap<String, Instant>,
    /// Restart due (restart policy after back-off).
    restart_at: BTreeMap<String, Instant>,
    backoff: BTreeMap<String, Duration>,
    events: EventLog,
    server: Option<Server>,
    /// `since` of the events subscription being set up.
    pending_since: Option<i64>,
    /// Input from attachers that came before the container started (docker
    /// attaches, then starts), and whether their stdin already ended.
    early_stdin: BTreeMap<String, (Vec<u8>, bool)>,
    recovery_errors: Vec<Error>,
    /// Creates in flight (two-phase create), by container id.
    reserved: BTreeMap<String, reserve::Held>,
    /// SIGTERM or SIGINT arrived while serving.
    stop: bool,
}

/// Where one poll slot's events go.
enum Slot {
    Signal,
    Output(Target, u8),
    Input(Target),
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
        let records = Records::open(root)?;
        let listing = records.list()?;
        let mut monitor = Monitor {
            root: root.to_path_buf(),
            state: StateRoot::new(state_dir),
            records,
            recs: listing
                .records
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            sigfd,
            live: BTreeMap::new(),
            execs: BTreeMap::new(),
            waiters: Vec::new(),
            kill_at: BTreeMap::new(),
            restart_at: BTreeMap::new(),
            backoff: BTreeMap::new(),
            events: EventLog::default(),
            server: None,
            pending_since: None,
            early_stdin: BTreeMap::new(),
            reserved: BTreeMap::new(),
            recovery_errors: listing.errors,
            stop: false,
        };
        monitor.recover();
        Ok(monitor)
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Records that could not be read or settled at start-up.
    pub fn recovery_errors(&self) -> &[Error] {
        &self.recovery_errors
    }

    /// Ids of the containers whose process is followed (running or adopted).
    pub fn running(&self) -> Vec<String> {
        self.live.keys().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Result<ContainerRecord> {
        self.recs
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.into()))
    }

    fn rec_mut(&mut self, id: &str) -> Result<&mut ContainerRecord> {
        self.recs
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.into()))
    }

    /// Writes the cached record of `id` to disk.
    fn save(&self, id: &str) -> Result<()> {
        match self.recs.get(id) {
            Some(r) => self.records.put(r),
            None => Err(Error::NotFound(id.into())),
        }
    }

    fn recover(&mut self) {
        let ids: Vec<String> = self.recs.keys().cloned().collect();
        for id in ids {
            let Some(rec) = self.recs.get(&id) else {
                continue;
            };
            let status = rec.status;
            if matches!(status, Status::Exited | Status::Created) {
                continue;
            }
            let alive = match self.state.load(&id) {
                Ok(st) if status.is_live() && rec.pid == Some(st.pid) => {
                    state::process_is(st.pid, st.pid_start_time).then_some(st)
                }
                _ => None,
            };
            match alive {
                Some(st) => {
                    self.live.insert(
                        id.clone(),
                        Live {
                            pid: st.pid,
                            start_time: st.pid_start_time,
                            child: false,
                            stdio: Stdio::none(),
                            log: None,
                            started: Instant::now(),
                        },
                    );
                }
                // Dead while nobody watched, or a restart was due.
                None => {
                    if let Err(e) = self.finish(&id, None) {
                        self.recovery_errors.push(e);
                    }
                }
            }
        }
    }

    fn emit(&mut self, e: Event) {
        let e = self.events.push(e);
        if let Some(server) = &mut self.server {
            let line = protocol::encode(&e);
            for c in &mut server.conns {
                if let Mode::Events { until } = c.mode {
                    if until.is_none_or(|u| e.time_nano <= u) {
                        c.queue(&line);
                    }
                }
            }
        }
    }

    fn container_event(&self, action: &str, id: &str) -> Event {
        let mut e = Event::new("container", action, id);
        if let Some(r) = self.recs.get(id) {
            e = e
                .attr("name", r.name.clone())
                .attr("image", r.image.clone().unwrap_or_default());
            for (k, v) in &r.labels {
                e.attributes.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        e
    }

    /// Records a container in state Created; [`Monitor::start`] runs it.
    pub fn create(&mut self, req: CreateRequest) -> Result<ContainerRecord> {
        state::validate_id(&req.id)?;
        if self.recs.contains_key(&req.id) || self.records.dir(&req.id).join(CREATE_FILE).exists() {
            return Err(Error::AlreadyExists(req.id.clone()));
        }
        self.check_name_free(&req.name, &req.id)?;
        let dir = self.records.dir(&req.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let data = serde_json::to_vec(&req)
            .map_err(|e| Error::Invalid(format!("create request of {}: {e}", req.id)))?;
        state::write_atomic(&dir.join(CREATE_FILE), &data)?;
        let rec = ContainerRecord {
            image: req.image.clone(),
            labels: req.labels.clone(),
            config: req.config.clone(),
            restart_policy: req.restart,
            auto_remove: req.auto_remove,
            tty: req.tty(),
            open_stdin: req.open_stdin,
            stdin_once: req.stdin_once,
            ..ContainerRecord::new(&req.id, &req.name, dir.join(LOG_FILE))
        };
        if let Err(e) = self.records.put(&rec) {
            let _ = std::fs::remove_file(dir.join(CREATE_FILE));
            return Err(e);
        }
        self.recs.insert(rec.id.clone(), rec.clone());
        // Second phase done: the record now holds the name and volumes.
        self.reserved.remove(&rec.id);
        self.emit(self.container_event("create", &rec.id));
        Ok(rec)
    }

    fn load_request(&self, id: &str) -> Result<CreateRequest> {
        let path = self.records.dir(id).join(CREATE_FILE);
        let data =
            std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        serde_json::from_slice(&data).map_err(|e| Error::CorruptRecord {
            path,
            reason: e.to_string(),
        })
    }

    /// Starts a created or exited container.
    pub fn start(&mut self, id: &str) -> Result<()> {
        let rec = self.get(id)?;
        if rec.status.is_live() {
            return Err(Error::NotModified(format!(
                "container {id} is already running"
            )));
        }
        let req = self.load_request(id)?;
        self.restart_at.remove(id);
        self.mount_volumes(&rec)?;
        // Runtime state left by a crash between create and our record.
        if self.state.dir(id).exists() {
            let _ = container::delete(&self.state, id, true);
        }
        let live = match self.spawn(&req, &rec.log_path) {
            Ok(live) => live,
            Err(e) => {
                let _ = container::delete(&self.state, id, true);
                self.start_failed(id, &e);
                return Err(e);
            }
        };
        let pid = live.pid;
        self.live.insert(id.to_string(), live);
        if let Some((data, ended)) = self.early_stdin.remove(id) {
            if let Some(io) = self.stdio_mut(&Target::Container(id.to_string())) {
                io.stdin_buf = data;
                io.write_stdin();
                if ended {
                    io.close_stdin();
                }
            }
        }
        let r = self.rec_mut(id)?;
        if r.status == Status::Restarting {
            r.restart_count += 1;
        }
        r.status = Status::Running;
        r.pid = Some(pid);
        r.started_at = state::rfc3339_now();
        r.exit_code = None;
        r.oom_killed = false;
        r.error = None;
        r.manually_stopped = false;
        if let Err(e) = self.save(id) {
            // Without a record nobody could find it again: do not leave it running.
            let _ = container::kill_container(&self.state, id, Signal::SIGKILL, false);
            return Err(e);
        }
        self.emit(self.container_event("start", id));
        Ok(())
    }

    /// A start that failed ends like an exit (Docker's 126/127 for a
    /// command that cannot run): attached clients and waiters are told,
    /// and `--rm` removes the container.
    fn start_failed(&mut self, id: &str, e: &Error) {
        let code = match e {
            Error::Runtime(re) if re.exec_code() != 0 => re.exec_code() as i32,
            _ => 128,
        };
        let Ok(r) = self.rec_mut(id) else { return };
        r.error = Some(e.to_string());
        r.status = Status::Exited;
        r.exit_code = Some(code);
        r.finished_at = Some(state::rfc3339_now());
        let auto_remove = r.auto_remove;
        log_error(self.save(id));
        let target = Target::Container(id.to_string());
        if let Some(server) = &mut self.server {
            server.broadcast(&target, FRAME_EXIT, &code.to_be_bytes());
            server.end_streams(&target);
        }
        let tokens: Vec<u64> = self
            .waiters
            .iter()
            .filter_map(|w| match w {
                Waiter::Wait {
                    token,
                    id: w_id,
                    condition,
                } if w_id == id && *condition != WaitCondition::Removed => Some(*token),
                _ => None,
            })
            .collect();
        self.waiters.retain(|w| {
            !matches!(w, Waiter::Wait { id: w_id, condition, .. } if w_id == id && *condition != WaitCondition::Removed)
        });
        for t in tokens {
            self.respond(t, Response::Exit { code });
        }
        if auto_remove {
            log_error(self.remove_now(id));
        }
    }

    fn spawn(&mut self, req: &CreateRequest, log_path: &Path) -> Result<Live> {
        let log = LogWriter::open(log_path, req.log)?;
        let (created, mut io) =
            stdio::with_process_stdio(req.tty(), req.open_stdin, || self.runtime_create(req))?;
        if let Some(master) = created.pty_master {
            io.adopt_pty(master, req.open_stdin)?;
        }
        container::start(&self.state, &req.id)?;
        Ok(Live {
            pid: created.state.pid,
            start_time: created.state.pid_start_time,
            child: true,
            stdio: io,
            log: Some(log),
            started: Instant::now(),
        })
    }

    fn runtime_create(&self, req: &CreateRequest) -> Result<container::Created> {
        Ok(container::create(CreateOptions {
            id: &req.id,
            bundle: &req.bundle,
            spec: req.spec.clone(),
            root: &self.state,
            console_socket: None,
            pid_file: None,
            init: req.init,
            preserve_fds: 0,
        })?)
    }

    /// Waits up to `timeout` for output, exits or timers and handles them.
    pub fn run_once(&mut self, timeout: Duration) -> Result<()> {
        self.cycle(timeout)
    }

    /// When the next timer is due, if any.
    fn next_timer(&self) -> Option<Instant> {
        self.kill_at
            .values()
            .chain(self.restart_at.values())
            .min()
            .copied()
    }

    /// One turn of the loop.
    fn cycle(&mut self, timeout: Duration) -> Result<()> {
        let mut timeout = timeout;
        if let Some(t) = self.next_timer() {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        if self.server.as_ref().is_some_and(|s| s.busy()) {
            timeout = Duration::ZERO;
        }
        let mut slots = vec![Slot::Signal];
        let (own, server_events) = {
            let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
            let procs = self
                .live
                .iter()
                .map(|(id, l)| (Target::Container(id.clone()), &l.stdio))
                .chain(
                    self.execs
                        .iter()
                        .map(|(id, e)| (Target::Exec(id.clone()), &e.stdio)),
                );
            for (target, io) in procs {
                for (kind, fd) in [(FRAME_STDOUT, &io.stdout), (FRAME_STDERR, &io.stderr)] {
                    if let Some(fd) = fd {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                        slots.push(Slot::Output(target.clone(), kind));
                    }
                }
                if let (Some(fd), false) = (&io.stdin, io.stdin_buf.is_empty()) {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                    slots.push(Slot::Input(target.clone()));
                }
            }
            let own = fds.len();
            // Back-pressure: attachers of a process with a full input
            // buffer (or of a created container's early input) wait.
            let full: Vec<Target> = self
                .live
                .iter()
                .filter(|(_, l)| l.stdio.stdin_full())
                .map(|(id, _)| Target::Container(id.clone()))
                .chain(
                    self.execs
                        .iter()
                        .filter(|(_, e)| e.stdio.stdin_full())
                        .map(|(id, _)| Target::Exec(id.clone())),
                )
                .chain(
                    self.early_stdin
                        .iter()
                        .filter(|(_, (buf, _))| buf.len() >= stdio::MAX_STDIN_BUF)
                        .map(|(id, _)| Target::Container(id.clone())),
                )
                .collect();
            if let Some(server) = &mut self.server {
                for c in server.conns.iter_mut() {
                    if let Mode::Attach { target, .. } = &c.mode {
                        c.paused = full.contains(target);
                    }
                }
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
            (events[..own].to_vec(), events[own..].to_vec())
        };
        for (slot, ev) in slots.iter().zip(&own) {
            if ev.is_empty() {
                continue;
            }
            match slot {
                Slot::Signal => {}
                Slot::Output(target, kind) => self.pump(target, *kind, 16),
                Slot::Input(target) => {
                    if let Some(io) = self.stdio_mut(target) {
                        io.write_stdin();
                    }
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
        self.run_timers();
        if self.server.is_some() && !self.stop {
            self.serve_conns(&server_events);
        }
        if let Some(server) = &mut self.server {
            let now = events::now_nanos();
            for c in &mut server.conns {
                if matches!(c.mode, Mode::Events { until: Some(u) } if u < now) {
                    c.close_when_flushed = true;
                }
            }
            server.flush_and_prune();
            // A wait whose client left answers nobody (stop, restart and
            // forced removal still finish what they started).
            let tokens: std::collections::BTreeSet<u64> =
                server.conns.iter().map(|c| c.token).collect();
            self.waiters.retain(|w| match w {
                Waiter::Wait { token, .. } => *token == NO_TOKEN || tokens.contains(token),
                _ => true,
            });
        }
        Ok(())
    }

    fn stdio_mut(&mut self, target: &Target) -> Option<&mut Stdio> {
        match target {
            Target::Container(id) => self.live.get_mut(id).map(|l| &mut l.stdio),
            Target::Exec(id) => self.execs.get_mut(id).map(|e| &mut e.stdio),
        }
    }

    /// Reads up to `max_reads` chunks of one output fd into the log (for
    /// containers) and to attached clients; closes the fd at end of file.
    fn pump(&mut self, target: &Target, kind: u8, max_reads: usize) {
        let stream = if kind == FRAME_STDERR {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        for _ in 0..max_reads {
            let (io, log) = match target {
                Target::Container(id) => match self.live.get_mut(id) {
                    Some(l) => (&mut l.stdio, l.log.as_mut()),
                    None => return,
                },
                Target::Exec(id) => match self.execs.get_mut(id) {
                    Some(e) => (&mut e.stdio, None),
                    None => return,
                },
            };
            let slot = if kind == FRAME_STDERR {
                &mut io.stderr
            } else {
                &mut io.stdout
            };
            let Some(fd) = slot.as_ref() else { return };
            match stdio::read_some(fd.as_fd()) {
                ReadResult::Data(data) => {
                    if let Some(log) = log {
                        log_error(log.write(stream, &data));
                    }
                    if let Some(server) = &mut self.server {
                        server.broadcast(target, kind, &data);
                    }
                }
                ReadResult::WouldBlock => return,
                ReadResult::Eof => {
                    *slot = None;
                    if let Some(log) = log {
                        log_error(log.finish(stream));
                    }
                    return;
                }
            }
        }
    }

    /// Reads everything available now from a process's output.
    fn drain(&mut self, target: &Target) {
        for kind in [FRAME_STDOUT, FRAME_STDERR] {
            self.pump(target, kind, usize::MAX);
        }
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
            let pid = pid.as_raw();
            if let Some(id) = self
                .live
                .iter()
                .find(|(_, l)| l.child && l.pid == pid)
                .map(|(id, _)| id.clone())
            {
                self.finish(&id, Some(code))?;
            } else if let Some(exec_id) = self
                .execs
                .iter()
                .find(|(_, e)| e.exit_code.is_none() && e.pid == pid)
                .map(|(id, _)| id.clone())
            {
                self.finish_exec(&exec_id, code);
            }
            // Other pids are orphans reparented to us: reaping them is all.
        }
    }

    /// Settles an exited container: rest of its output, OOM flag, cgroup
    /// and runtime state removed, record Exited (or Restarting), waiters
    /// answered, `--rm` honoured. `code` None means unknown.
    fn finish(&mut self, id: &str, code: Option<i32>) -> Result<()> {
        let target = Target::Container(id.to_string());
        self.drain(&target);
        let mut errors = Vec::new();
        let mut oom = false;
        match self.state.load(id) {
            Ok(st) => {
                match Hierarchy::detect().and_then(|h| Cgroup::new(h, &st.cgroup_path)) {
                    Ok(cg) => {
                        oom = cg.oom_killed().unwrap_or(false);
                        // A frozen cgroup cannot be emptied.
                        let _ = cg.thaw();
                    }
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
        // Processes left in the cgroup are dead now: their writes are all in.
        self.drain(&target);
        let live = self.live.remove(id);
        let ran = live.as_ref().map(|l| l.started.elapsed());
        if let Some(mut live) = live {
            if let Some(log) = &mut live.log {
                for stream in [Stream::Stdout, Stream::Stderr] {
                    if let Err(e) = log.finish(stream) {
                        errors.push(format!("log: {e}"));
                    }
                }
            }
        }
        // Its execs died with it.
        let execs: Vec<String> = self
            .execs
            .iter()
            .filter(|(_, e)| e.container == id && e.exit_code.is_none())
            .map(|(x, _)| x.clone())
            .collect();
        for x in execs {
            self.finish_exec(&x, EXIT_CODE_UNKNOWN);
        }
        self.kill_at.remove(id);
        let exit_code = code.unwrap_or(EXIT_CODE_UNKNOWN);
        if code.is_none() {
            errors.insert(
                0,
                "exit status unknown: the container was not followed by this monitor when it exited"
                    .into(),
            );
        }
        let restart_waiter = self
            .waiters
            .iter()
            .any(|w| matches!(w, Waiter::Restart { id: w_id, .. } if w_id == id));
        let removing = self
            .waiters
            .iter()
            .any(|w| matches!(w, Waiter::Remove { id: w_id, .. } if w_id == id));
        let rec = self.rec_mut(id)?;
        let was_running = rec.status.is_live();
        rec.pid = None;
        rec.exit_code = Some(exit_code);
        rec.oom_killed = oom;
        rec.finished_at = Some(state::rfc3339_now());
        if !errors.is_empty() {
            rec.error = Some(errors.join("; "));
        }
        let ExitDecision {
            restarts,
            auto_remove,
            status,
        } = exit_decision(rec, exit_code, restart_waiter, removing);
        rec.status = status;
        self.save(id)?;
        if let Some(server) = &mut self.server {
            server.broadcast(&target, FRAME_EXIT, &exit_code.to_be_bytes());
            server.end_streams(&target);
        }
        if oom {
            self.emit(self.container_event("oom", id));
        }
        if was_running || code.is_some() {
            let e = self
                .container_event("die", id)
                .attr("exitCode", exit_code.to_string());
            self.emit(e);
        }
        // Answer who waited for this exit.
        let waiters: Vec<Waiter> = self
            .waiters
            .iter()
            .filter(|w| w.id() == id)
            .cloned()
            .collect();
        self.waiters.retain(|w| {
            w.id() != id
                || matches!(
                    w,
                    Waiter::Wait {
                        condition: WaitCondition::Removed,
                        ..
                    } | Waiter::Remove { .. }
                )
        });
        for w in waiters {
            match w {
                Waiter::Wait {
                    token, condition, ..
                } if condition != WaitCondition::Removed => {
                    self.respond(token, Response::Exit { code: exit_code });
                }
                Waiter::Stop { token, .. } => {
                    self.emit(self.container_event("stop", id));
                    self.respond(token, Response::Ok);
                }
                Waiter::Restart { token, .. } => {
                    self.emit(self.container_event("stop", id));
                    let resp = match self.start(id) {
                        Ok(()) => {
                            self.emit(self.container_event("restart", id));
                            Response::Ok
                        }
                        Err(e) => Response::from(&e),
                    };
                    self.respond(token, resp);
                }
                _ => {}
            }
        }
        if removing || auto_remove {
            let volumes = self
                .recs
                .get(id)
                .map(crate::volumes::mounted_by)
                .unwrap_or_default();
            let resp = match self.remove_now(id) {
                Ok(()) => Response::Ok,
                Err(e) => Response::from(&e),
            };
            // `--rm` takes the container's anonymous volumes with it, as Docker's does.
            if auto_remove && !removing && resp == Response::Ok {
                self.remove_anonymous_volumes(id, &volumes);
            }
            let tokens: Vec<u64> = self
                .waiters
                .iter()
                .filter_map(|w| match w {
                    Waiter::Remove { token, id: w_id } if w_id == id => Some(*token),
                    _ => None,
                })
                .collect();
            self.waiters
                .retain(|w| !matches!(w, Waiter::Remove { id: w_id, .. } if w_id == id));
            for t in tokens {
                self.respond(t, resp.clone());
            }
        } else if restarts {
            let delay = next_backoff(self.backoff.get(id).copied(), ran);
            self.backoff.insert(id.to_string(), delay);
            self.restart_at
                .insert(id.to_string(), Instant::now() + delay);
        }
        Ok(())
    }

    /// Mounts the sized volumes `rec` uses that are not mounted (after a
    /// reboot), so a start or restart never writes into the bare mount
    /// point on the host's disk.
    fn mount_volumes(&self, rec: &ContainerRecord) -> Result<()> {
        let names = crate::volumes::mounted_by(rec);
        if names.is_empty() {
            return Ok(());
        }
        crate::volumes::VolumeStore::open(&self.root)
            .and_then(|s| s.ensure_all_mounted(&names))
            .map_err(|e| Error::Invalid(format!("volumes of {}: {e}", rec.id)))
    }

    fn remove_anonymous_volumes(&self, id: &str, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let store = match crate::volumes::VolumeStore::open(&self.root) {
            Ok(s) => s,
            Err(e) => return log_error(Err(Error::Invalid(format!("volumes of {id}: {e}")))),
        };
        // Creates in flight hold their volumes too.
        let others = crate::volumes::InUse {
            records: self.recs.values().cloned().collect(),
            reserved: self.reserved_list(),
        };
        for name in names {
            if store.get(name).is_ok_and(|v| v.anonymous()) {
                if let Err(e) = store.remove(name, &others, true) {
                    log_error(Err(Error::Invalid(format!(
                        "remove volume {name} of {id}: {e}"
                    ))));
                }
            }
        }
    }

    /// SIGKILLs containers whose stop grace period ran out; starts those
    /// whose restart back-off ran out.
    fn run_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .kill_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.kill_at.remove(&id);
            if self.live.contains_key(&id) {
                let _ = self.signal(&id, Signal::SIGKILL);
            }
        }
        let due: Vec<String> = self
            .restart_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.restart_at.remove(&id);
            if let Err(e) = self.start(&id) {
                log_error(Err(e));
                // Could not start: try again later, unless it is gone.
                if let Ok(r) = self.get(&id) {
                    if r.restart_policy
                        .restarts(1, r.restart_count, r.manually_stopped)
                    {
                        let d = next_backoff(self.backoff.get(&id).copied(), None);
                        self.backoff.insert(id.clone(), d);
                        self.restart_at.insert(id.clone(), Instant::now() + d);
                        if let Ok(r) = self.rec_mut(&id) {
                            r.status = Status::Restarting;
                        }
                        let _ = self.save(&id);
                    }
                }
            } else {
                self.emit(self.container_event("restart", &id));
            }
        }
    }

    fn respond(&mut self, token: u64, resp: Response) {
        if let Some(server) = &mut self.server {
            server.respond(token, &resp);
        }
    }

    /// Sends `signal` to the container's init (thawing a paused one, or
    /// the signal would wait).
    fn signal(&mut self, id: &str, signal: Signal) -> Result<()> {
        container::kill_container(&self.state, id, signal, false)?;
        if self.get(id)?.status == Status::Paused
            && matches!(signal, Signal::SIGKILL | Signal::SIGTERM)
        {
            self.set_frozen(id, false)?;
        }
        Ok(())
    }

    /// The runtime sees the container's init gone (exited, not yet reaped
    /// by this loop).
    fn init_gone(&self, id: &str) -> bool {
        self.state
            .load(id)
            .is_ok_and(|st| st.status == state::Status::Stopped)
    }

    fn need_live(&self, id: &str, what: &str) -> Result<()> {
        let rec = self.get(id)?;
        if !self.live.contains_key(id) || !rec.status.is_live() {
            return Err(Error::WrongState {
                id: id.into(),
                status: rec.status.to_string(),
                wanted: format!("{what} needs a running container"),
            });
        }
        Ok(())
    }

    /// Sends `signal` to the container's init. The user stopped it: restart
    /// policies leave it alone (as Docker counts `kill`).
    pub fn kill(&mut self, id: &str, signal: Signal) -> Result<()> {
        self.need_live(id, "kill")?;
        self.signal(id, signal)?;
        let r = self.rec_mut(id)?;
        if !r.manually_stopped {
            r.manually_stopped = true;
            self.save(id)?;
        }
        let e = self
            .container_event("kill", id)
            .attr("signal", (signal as i32).to_string());
        self.emit(e);
        Ok(())
    }

    fn set_frozen(&mut self, id: &str, frozen: bool) -> Result<()> {
        let st = self.state.load(id)?;
        let cg = Cgroup::new(Hierarchy::detect()?, &st.cgroup_path)?;
        if frozen {
            cg.freeze()?;
        } else {
            cg.thaw()?;
        }
        let r = self.rec_mut(id)?;
        r.status = if frozen {
            Status::Paused
        } else {
            Status::Running
        };
        self.save(id)?;
        self.emit(self.container_event(if frozen { "pause" } else { "unpause" }, id));
        Ok(())
    }

    pub fn pause(&mut self, id: &str) -> Result<()> {
        let rec = self.get(id)?;
        if rec.status == Status::Paused {
            return Err(Error::WrongState {
                id: id.into(),
                status: rec.status.to_string(),
                wanted: "it is already paused".into(),
            });
        }
        self.need_live(id, "pause")?;
        self.set_frozen(id, true)
    }

    pub fn unpause(&mut self, id: &str) -> Result<()> {
        let rec = self.get(id)?;
        if rec.status != Status::Paused {
            return Err(Error::WrongState {
                id: id.into(),
                status: rec.status.to_string(),
                wanted: "it is not paused".into(),
            });
        }
        self.set_frozen(id, false)
    }

    pub fn rename(&mut self, id: &str, name: &str) -> Result<()> {
        let old = self.get(id)?.name;
        if old == name {
            return Ok(());
        }
        self.check_name_free(name, id)?;
        self.rec_mut(id)?.name = name.into();
        self.save(id)?;
        let e = self
            .container_event("rename", id)
            .attr("oldName", format!("/{old}"));
        self.emit(e);
        Ok(())
    }

    /// Stop: `signal` (default SIGTERM), then SIGKILL after `timeout`
    /// seconds (None: 10; negative: never). Answered when it exited.
    fn stop_container(
        &mut self,
        token: u64,
        id: &str,
        timeout: Option<i64>,
        signal: Option<i32>,
        restart: bool,
    ) -> Result<Reply> {
        let rec = self.get(id)?;
        if !rec.status.is_live() {
            if restart {
                self.start(id)?;
                self.emit(self.container_event("restart", id));
                return Ok(Reply::Now(Response::Ok));
            }
            if rec.status == Status::Restarting {
                // Cancels the pending restart.
                self.restart_at.remove(id);
                let r = self.rec_mut(id)?;
                r.status = Status::Exited;
                r.manually_stopped = true;
                self.save(id)?;
                return Ok(Reply::Now(Response::Ok));
            }
            return Err(Error::NotModified(format!("container {id} is not running")));
        }
        let signal = match signal {
            Some(s) => {
                Signal::try_from(s).map_err(|_| Error::Invalid(format!("no such signal: {s}")))?
            }
            None => Signal::SIGTERM,
        };
        let r = self.rec_mut(id)?;
        r.manually_stopped = true;
        self.save(id)?;
        match self.signal(id, signal) {
            Ok(()) => {}
            // Its init exited a moment ago and the exit is not handled
            // yet (a `--restart always` container between two runs): the
            // waiter below gets that exit, and manually_stopped keeps the
            // restart policy off, as Docker's stop of such a container.
            Err(_) if self.init_gone(id) => {}
            Err(e) => return Err(e),
        }
        let e = self
            .container_event("kill", id)
            .attr("signal", (signal as i32).to_string());
        self.emit(e);
        let timeout = timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
        if timeout >= 0 {
            let at = Instant::now() + Duration::from_secs(timeout as u64);
            self.kill_at
                .entry(id.to_string())
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
        let id = id.to_string();
        self.waiters.push(if restart {
            Waiter::Restart { token, id }
        } else {
            Waiter::Stop { token, id }
        });
        Ok(Reply::Later)
    }

    /// Removes a container: record, logs, snapshot. A running one only with
    /// `force`: it is killed and removed once reaped.
    fn remove_container(&mut self, token: u64, id: &str, force: bool) -> Result<Reply> {
        let rec = match self.get(id) {
            Ok(r) => r,
            // An unreadable record can still be removed by force.
            Err(Error::NotFound(_)) if force && self.records.dir(id).exists() => {
                state::validate_id(id)?;
                if self.state.dir(id).exists() {
                    container::delete(&self.state, id, true)?;
                }
                self.records.remove(id)?;
                return Ok(Reply::Now(Response::Ok));
            }
            Err(e) => return Err(e),
        };
        if self.live.contains_key(id) {
            if !force {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: rec.status.to_string(),
                    wanted: "stop it first or force the removal".into(),
                });
            }
            self.rec_mut(id)?.manually_stopped = true;
            self.signal(id, Signal::SIGKILL)?;
            self.waiters.push(Waiter::Remove {
                token,
                id: id.into(),
            });
            return Ok(Reply::Later);
        }
        self.remove_now(id)?;
        Ok(Reply::Now(Response::Ok))
    }

    fn remove_now(&mut self, id: &str) -> Result<()> {
        self.restart_at.remove(id);
        self.early_stdin.remove(id);
        self.backoff.remove(id);
        if self.state.dir(id).exists() {
            container::delete(&self.state, id, true)?;
        }
        self.records.remove(id)?;
        let event = self.container_event("destroy", id);
        let code = self.recs.remove(id).and_then(|r| r.exit_code).unwrap_or(0);
        self.execs.retain(|_, e| e.container != id);
        self.emit(event);
        let target = Target::Container(id.to_string());
        if let Some(server) = &mut self.server {
            server.end_streams(&target);
        }
        let tokens: Vec<u64> = self
            .waiters
            .iter()
            .filter_map(|w| match w {
                Waiter::Wait {
                    token, id: w_id, ..
                } if w_id == id => Some(*token),
                _ => None,
            })
            .collect();
        self.waiters
            .retain(|w| !matches!(w, Waiter::Wait { id: w_id, .. } if w_id == id));
        for t in tokens {
            self.respond(t, Response::Exit { code });
        }
        Ok(())
    }

    /// Removes a container, waiting (by running the loop) for a forced
    /// one to die; for in-process use, not while serving.
    pub fn remove(&mut self, id: &str, force: bool) -> Result<()> {
        match self.remove_container(NO_TOKEN, id, force)? {
            Reply::Later => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.recs.contains_key(id) && Instant::now() < deadline {
                    self.run_once(Duration::from_millis(50))?;
                }
                if self.recs.contains_key(id) {
                    return Err(Error::WrongState {
                        id: id.into(),
                        status: Status::Running.to_string(),
                        wanted: "it did not die within 10 s of SIGKILL".into(),
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn wait(&mut self, token: u64, id: &str, condition: WaitCondition) -> Result<Reply> {
        let rec = self.get(id)?;
        if condition == WaitCondition::NotRunning
            && !rec.status.is_live()
            && rec.status != Status::Restarting
        {
            return Ok(Reply::Now(Response::Exit {
                code: rec.exit_code.unwrap_or(0),
            }));
        }
        self.waiters.push(Waiter::Wait {
            token,
            id: id.into(),
            condition,
        });
        Ok(Reply::Later)
    }

    fn resize(&mut self, id: &str, exec_id: Option<&str>, height: u16, width: u16) -> Result<()> {
        self.get(id)?;
        let io = match exec_id {
            Some(x) => self.execs.get(x).map(|e| &e.stdio),
            None => self.live.get(id).map(|l| &l.stdio),
        };
        let Some(pty) = io.and_then(|io| io.pty.as_ref()) else {
            return Err(Error::WrongState {
                id: id.into(),
                status: "without a terminal".into(),
                wanted: "resize needs a running process with a TTY".into(),
            });
        };
        let ws = nix::pty::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        cubby_runtime::tty::set_winsize(pty.as_fd(), &ws)?;
        Ok(())
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

/// A failure that must not stop the monitor; its own stderr is where it is told.
fn log_error(r: Result<()>) {
    if let Err(e) = r {
        let _ = writeln!(std::io::stderr(), "cubby monitor: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RestartName, RestartPolicy};

    fn rec(policy: RestartName, max: u32, auto_remove: bool) -> ContainerRecord {
        let mut r = ContainerRecord::new("c", "c", PathBuf::from("/x/log.json"));
        r.restart_policy = RestartPolicy {
            name: policy,
            max_retries: max,
        };
        r.auto_remove = auto_remove;
        r
    }

    #[test]
    fn exit_state_machine() {
        let d = |r: &ContainerRecord, code, restart_waiter, removing| {
            let x = exit_decision(r, code, restart_waiter, removing);
            (x.restarts, x.auto_remove, x.status)
        };
        use Status::{Exited, Restarting};
        // No policy: exited; --rm removes.
        assert_eq!(
            d(&rec(RestartName::No, 0, false), 1, false, false),
            (false, false, Exited)
        );
        assert_eq!(
            d(&rec(RestartName::No, 0, true), 0, false, false),
            (false, true, Exited)
        );
        // always / on-failure restart; a restart or rm -f in progress wins.
        let always = rec(RestartName::Always, 0, false);
        assert_eq!(d(&always, 0, false, false), (true, false, Restarting));
        assert_eq!(d(&always, 0, true, false), (false, false, Exited));
        assert_eq!(d(&always, 0, false, true), (false, false, Exited));
        let mut stopped = always.clone();
        stopped.manually_stopped = true;
        assert_eq!(d(&stopped, 137, false, false), (false, false, Exited));
        let mut onf = rec(RestartName::OnFailure, 2, false);
        assert_eq!(d(&onf, 0, false, false), (false, false, Exited));
        assert_eq!(d(&onf, 3, false, false), (true, false, Restarting));
        onf.restart_count = 2;
        assert_eq!(d(&onf, 3, false, false), (false, false, Exited));
        // --rm with `docker restart`: kept for the restart.
        assert_eq!(
            d(&rec(RestartName::No, 0, true), 0, true, false),
            (false, false, Exited)
        );
    }

    #[test]
    fn restart_backoff() {
        let ms = Duration::from_millis;
        assert_eq!(next_backoff(None, None), ms(100));
        assert_eq!(next_backoff(Some(ms(100)), Some(ms(5))), ms(200));
        assert_eq!(next_backoff(Some(ms(200)), None), ms(400));
        assert_eq!(
            next_backoff(Some(Duration::from_secs(40)), None),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(60)), None),
            Duration::from_secs(60)
        );
        // A run of 10 s or more resets it.
        assert_eq!(
            next_backoff(Some(ms(6400)), Some(Duration::from_secs(10))),
            ms(100)
        );
    }
}
