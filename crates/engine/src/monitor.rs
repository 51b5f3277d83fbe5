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
use crate::records::{ContainerRecord, Records, Status, EXIT_CODE_UNKNOWN};
use cubby_runtime::cgroups::{Cgroup, Hierarchy};
use cubby_runtime::container::{self, CreateOptions};
use cubby_runtime::state::{self, StateRoot};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const LOG_FILE: &str = "log.json";

/// What [`Monitor::create`] needs to run a container.
pub struct CreateRequest {
    pub id: String,
    pub name: String,
    pub spec: Spec,
    pub bundle: PathBuf,
    pub image: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub log: LogOptions,
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
        let mut slots: Vec<(String, Stream)> = Vec::new();
        let ready: Vec<bool> = {
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
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(Error::sys("poll", e)),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        for (i, (id, stream)) in slots.iter().enumerate() {
            if ready[i + 1] {
                if let Some(live) = self.live.get_mut(id) {
                    pump(live, *stream, 16);
                }
            }
        }
        // Empty the signalfd; the reaping below does not depend on it.
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
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
        Ok(())
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
