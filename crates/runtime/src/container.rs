//! The container lifecycle: create, start, state, kill, delete, exec.
//!
//! Process model: the runtime clones the container's init straight into its
//! new namespaces (no intermediate re-exec of the runtime binary). The init
//! sets itself up, reports over a socketpair, then blocks writing the exec
//! fifo until `start` reads it. The runtime must be single-threaded when it
//! clones (checked): after fork only the cloning thread exists, and a lock
//! held by another thread at that moment would never be released.

use crate::cgroups::{Cgroup, Hierarchy};
use crate::console;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Kind};
use crate::keyring;
use crate::namespaces::{self, Plan};
use crate::process;
use crate::rootfs;
use crate::seccomp;
use crate::state::{self, State, StateRoot, Status, EXEC_FIFO};
use crate::sync::{self, Channel, Msg};
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The copy of the spec kept with the state, so exec and delete do not
/// depend on the bundle staying unchanged.
const SPEC_COPY: &str = "config.json";

pub struct CreateOptions<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub spec: Spec,
    pub root: &'a StateRoot,
    /// runc's --console-socket: where the pty master is sent.
    pub console_socket: Option<&'a Path>,
    pub pid_file: Option<&'a Path>,
    /// Run cubby's tiny init as PID 1 (see [`crate::init`]).
    pub init: bool,
    /// Extra fds (3, 4, ...) passed to the container (runc --preserve-fds).
    pub preserve_fds: u32,
}

/// Options runc has that cubby's own callers do not use (kept apart from
/// [`CreateOptions`] so adding one does not change every caller).
#[derive(Debug, Default, Clone)]
pub struct CreateExtras {
    /// runc's --no-new-keyring: keep the caller's session keyring.
    pub no_new_keyring: bool,
}

pub struct Created {
    pub state: State,
    /// The pty master when the spec asks for a terminal and no console
    /// socket was given: the caller relays it.
    pub pty_master: Option<OwnedFd>,
}

/// Undoes a half-made container when create fails at any step.
struct Undo<'a> {
    root: &'a StateRoot,
    id: &'a str,
    cgroup: Option<Cgroup>,
    child: Option<Pid>,
    /// The rootfs, when the container's mounts live in our namespace.
    host_mounts: Option<PathBuf>,
    /// A create hook failed: the lifecycle goes on with poststop hooks
    /// (runtime-spec), given this state JSON, after the cleanup.
    poststop: Option<(&'a Spec, String)>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        if let Some(rootfs) = &self.host_mounts {
            let _ = rootfs::unmount_under(rootfs);
        }
        let _ = self.root.remove(self.id);
        if let Some((spec, json)) = &self.poststop {
            hooks::run_warn(spec, Kind::Poststop, json.as_bytes());
        }
    }
}

pub fn ensure_single_threaded() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").ctx(|| "read /proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(1);
    if threads != 1 {
        return Err(Error::InvalidSpec(format!(
            "the runtime must fork containers from a single-threaded process (this one has {threads} threads)"
        )));
    }
    Ok(())
}

fn rootfs_of(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("no root in config.json".into()))?;
    let path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => path
            .canonicalize()
            .ctx(|| format!("resolve rootfs {}", path.display())),
        Ok(_) => Err(Error::InvalidSpec(format!(
            "rootfs {} is not a directory",
            path.display()
        ))),
        Err(e) => Err(Error::io(format!("rootfs {}", path.display()), e)),
    }
}

/// The spec's seccomp profile compiled to BPF, in the parent (the child only loads it).
fn seccomp_of(spec: &Spec) -> Result<Option<seccomp::Program>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(seccomp::Program::compile)
        .transpose()
}

fn cgroup_of(spec: &Spec, id: &str) -> Result<Cgroup> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("/cubby/{id}"));
    Ok(Cgroup::new(Hierarchy::detect()?, &path)?)
}

/// Creates the container: namespaces, cgroup, rootfs, all set up; the
/// process waits for [`start`].
pub fn create(opts: CreateOptions) -> Result<Created> {
    create_with(opts, &CreateExtras::default())
}

/// [`create`] with runc's less common options.
pub fn create_with(opts: CreateOptions, extras: &CreateExtras) -> Result<Created> {
    ensure_single_threaded()?;
    let spec = &opts.spec;
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::InvalidSpec("no process in config.json".into()))?;
    let rootfs = rootfs_of(spec, opts.bundle)?;
    let bundle = opts
        .bundle
        .canonicalize()
        .ctx(|| format!("bundle {}", opts.bundle.display()))?;
    let plan = Plan::from_spec(spec)?;
    let mount_ns = plan.has(CloneFlags::CLONE_NEWNS);
    if !mount_ns {
        rootfs::check_without_mount_ns(spec)?;
    }
    let filter = seccomp_of(spec)?;
    // Read once here rather than in every init (see v1_hierarchies).
    rootfs::warm_v1_hierarchies(spec)?;

    let dir = opts.root.create_dir(opts.id)?;
    let mut undo = Undo {
        root: opts.root,
        id: opts.id,
        cgroup: None,
        child: None,
        host_mounts: (!mount_ns).then(|| rootfs.clone()),
        poststop: None,
        armed: true,
    };
    let spec_json = serde_json::to_vec(spec).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    opts.root.write(&dir.join(SPEC_COPY), &spec_json)?;

    let cgroup = cgroup_of(spec, opts.id)?;
    // Recorded before anything is made, so that if the runtime is killed
    // half-way, `delete` still knows which cgroup to remove.
    let mut st = State {
        oci_version: spec.version().clone(),
        id: opts.id.to_string(),
        status: Status::Creating,
        pid: 0,
        bundle,
        annotations: spec.annotations().clone().unwrap_or_default(),
        rootfs: rootfs.clone(),
        created: state::rfc3339_now(),
        owner: String::new(),
        pid_start_time: 0,
        cgroup_path: cgroup.path.to_string_lossy().into_owned(),
        no_new_keyring: extras.no_new_keyring,
    };
    opts.root.save(&st)?;
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    undo.cgroup = Some(cgroup.clone());
    cgroup.create(resources)?;

    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o622))
        .ctx(|| format!("mkfifo {}", fifo_path.display()))?;
    // Past the umask: the init may write it as a non-root user (user namespace).
    std::fs::set_permissions(
        &fifo_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o622),
    )
    .ctx(|| format!("chmod {}", fifo_path.display()))?;
    let fifo = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| format!("open {}", fifo_path.display()))?;

    let (parent_ch, child_ch) = sync::pair()?;
    if let Some(pidns) = plan.pid_to_join() {
        nix::sched::setns(pidns.as_fd(), CloneFlags::CLONE_NEWPID).ctx(|| "join pid namespace")?;
    }
    let in_userns = plan.has(CloneFlags::CLONE_NEWUSER);
    let ctx = ChildContext {
        spec,
        process: &process,
        rootfs: &rootfs,
        bundle: &st.bundle,
        plan: &plan,
        channel: &child_ch,
        parent_end: parent_ch.raw(),
        fifo: &fifo,
        filter: filter.as_ref(),
        init: opts.init,
        preserve_fds: opts.preserve_fds,
        in_userns,
        mount_ns,
        keyring: (!extras.no_new_keyring).then(|| keyring::name_for(opts.id)),
        init_hooks: [
            Kind::Prestart,
            Kind::CreateRuntime,
            Kind::CreateContainer,
            Kind::StartContainer,
        ]
        .iter()
        .any(|k| !hooks::of(spec, *k).is_empty()),
    };
    // The cgroup namespace is unshared by the child once it is in its cgroup,
    // so that its cgroup becomes the namespace's root.
    let flags = plan.create - CloneFlags::CLONE_NEWCGROUP;
    let mut stack = vec![0u8; 1 << 20];
    let entered = cgroup.enter()?;
    // SAFETY: we are single-threaded (checked above); the child gets its own
    // copy of memory and runs container_init on the 1 MiB stack, then exits.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| container_init(&ctx)),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .ctx(|| format!("clone container init with {flags:?}"));
    if let Some(previous) = &entered {
        Cgroup::leave(previous)?;
    }
    let pid = pid?;
    drop(stack);
    undo.child = Some(pid);
    drop(child_ch);

    if plan.creates(CloneFlags::CLONE_NEWUSER) {
        let linux = spec.linux().clone().unwrap_or_default();
        namespaces::write_id_maps(
            pid.as_raw(),
            linux.uid_mappings().as_deref().unwrap_or_default(),
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )?;
    }
    if entered.is_none() {
        cgroup.add_process(pid.as_raw())?;
    }
    parent_ch.send(&Msg::Go)?;

    let mut pty_master = None;
    loop {
        match parent_ch.recv()? {
            Some(Msg::Created) => break,
            Some(Msg::Hooks) => {
                // The init is in its namespaces with its mounts made, before
                // pivot_root: the runtime-namespace hooks run now.
                st.pid = pid.as_raw();
                let json = st.to_oci_json().to_string();
                let mut stopped = st.clone();
                stopped.status = Status::Stopped;
                undo.poststop = Some((spec, stopped.to_oci_json().to_string()));
                hooks::run(spec, Kind::Prestart, json.as_bytes())?;
                hooks::run(spec, Kind::CreateRuntime, json.as_bytes())?;
                parent_ch.send(&Msg::State(json))?;
            }
            Some(Msg::Pty(master)) => match opts.console_socket {
                Some(sock) => send_to_console_socket(sock, &master)?,
                None => pty_master = Some(master),
            },
            // The init failed (createContainer hooks included); poststop runs
            // only if the spec's hooks were reached (undo.poststop is set).
            Some(Msg::Failed { code, text }) => return Err(Error::from_child(code, text)),
            Some(other) => return Err(Error::Child(format!("unexpected message {other:?}"))),
            None => {
                return Err(Error::Child(
                    "container init exited during setup without a reason".into(),
                ))
            }
        }
    }

    let (_, start_time) = state::proc_stat(pid.as_raw())
        .ok_or_else(|| Error::Child("container init vanished after setup".into()))?;
    st.status = Status::Created;
    st.pid = pid.as_raw();
    st.pid_start_time = start_time;
    opts.root.save(&st)?;
    if let Some(pf) = opts.pid_file {
        opts.root.write(pf, pid.as_raw().to_string().as_bytes())?;
    }
    undo.armed = false;
    Ok(Created {
        state: st,
        pty_master,
    })
}

fn send_to_console_socket(path: &Path, master: &OwnedFd) -> Result<()> {
    let sock =
        UnixStream::connect(path).ctx(|| format!("connect console socket {}", path.display()))?;
    console::send_fd(sock.as_fd(), master.as_fd())
}

struct ChildContext<'a> {
    spec: &'a Spec,
    process: &'a Process,
    rootfs: &'a Path,
    bundle: &'a Path,
    plan: &'a Plan,
    channel: &'a Channel,
    parent_end: std::os::fd::RawFd,
    fifo: &'a OwnedFd,
    filter: Option<&'a seccomp::Program>,
    init: bool,
    preserve_fds: u32,
    in_userns: bool,
    mount_ns: bool,
    /// The session keyring to join, unless --no-new-keyring.
    keyring: Option<String>,
    /// The spec has hooks that need the init's cooperation.
    init_hooks: bool,
}

/// Runs in the cloned child, PID 1 of the new PID namespace. Never returns.
fn container_init(ctx: &ChildContext) -> isize {
    process::unblock_all_signals();
    // Our copy of the parent's end would hide the parent's death from us.
    let _ = nix::unistd::close(ctx.parent_end);
    // The init is a clone of its caller and got a copy of all its
    // descriptors: a daemon's monitor holds thousands, which would fill the
    // container's RLIMIT_NOFILE (1024 by default) before the init opens its
    // exec fifo (EMFILE: "init died before start"). Keep only what it uses.
    let mut keep: Vec<RawFd> = (3..3 + ctx.preserve_fds as RawFd).collect();
    keep.extend([ctx.channel.raw(), ctx.fifo.as_raw_fd()]);
    keep.extend(ctx.plan.join.iter().map(|(_, fd)| fd.as_raw_fd()));
    process::close_fds_except(&mut keep);
    let err = match setup_and_exec(ctx) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let code = err.exec_code();
    if ctx.channel.send(&Msg::failed(&err)).is_err() {
        // The runtime is gone (after `create` returned): stderr is all we have.
        eprintln!("cubby: container init: {err}");
    }
    // SAFETY: _exit skips atexit handlers that belong to the parent's copy.
    unsafe { libc::_exit(if code != 0 { code as i32 } else { 1 }) }
}

fn setup_and_exec(ctx: &ChildContext) -> Result<std::convert::Infallible> {
    match ctx.channel.recv()? {
        Some(Msg::Go) => {}
        _ => return Err(Error::Child("runtime went away before setup".into())),
    }
    if ctx.plan.creates(CloneFlags::CLONE_NEWUSER) {
        // Become root of the new user namespace (the ids are mapped now).
        let root_uid = nix::unistd::Uid::from_raw(0);
        let root_gid = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_gid, root_gid, root_gid)
            .ctx(|| "setgid 0 in user namespace")?;
        nix::unistd::setresuid(root_uid, root_uid, root_uid)
            .ctx(|| "setuid 0 in user namespace")?;
    }
    ctx.plan.join_all()?;
    if let Some(name) = &ctx.keyring {
        keyring::join_session(name)?;
    }
    if ctx.plan.creates(CloneFlags::CLONE_NEWCGROUP) {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).ctx(|| "unshare cgroup namespace")?;
    }
    nix::unistd::chdir(ctx.bundle).ctx(|| format!("chdir {}", ctx.bundle.display()))?;
    if ctx.plan.creates(CloneFlags::CLONE_NEWNET) {
        namespaces::loopback_up()?;
    }
    if ctx.plan.creates(CloneFlags::CLONE_NEWUTS) {
        if let Some(h) = ctx.spec.hostname() {
            nix::unistd::sethostname(h).ctx(|| format!("set hostname {h:?}"))?;
        }
        if let Some(d) = ctx.spec.domainname() {
            set_domainname(d)?;
        }
    }

    rootfs::prepare(
        ctx.spec,
        &rootfs::Options {
            rootfs: ctx.rootfs,
            in_userns: ctx.in_userns,
            mount_ns: ctx.mount_ns,
        },
    )?;
    let state_json = if ctx.init_hooks {
        ctx.channel.send(&Msg::Hooks)?;
        let json = match ctx.channel.recv()? {
            Some(Msg::State(json)) => json,
            _ => return Err(Error::Child("runtime went away during hooks".into())),
        };
        hooks::run(ctx.spec, Kind::CreateContainer, json.as_bytes())?;
        Some(json)
    } else {
        None
    };
    if ctx.mount_ns {
        rootfs::pivot(ctx.rootfs)?;
    } else {
        rootfs::chroot(ctx.rootfs)?;
    }

    let terminal = ctx.process.terminal().unwrap_or(false);
    let slave = if terminal {
        let (master, slave) = console::open_pty()?;
        let name = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
            .ctx(|| "name of the pty")?;
        rootfs::bind_console(&name)?;
        ctx.channel.send(&Msg::Pty(master))?;
        Some(slave)
    } else {
        None
    };

    rootfs::finish(ctx.spec)?;
    if let Some(slave) = &slave {
        // From here on the pty is the container's stdio: it must not keep the
        // caller's (create's) stdout/stderr open until start, or a caller
        // reading them to EOF (containerd's shim) waits forever.
        stdio_to(slave.as_fd())?;
    }
    let ready = process::finalize(ctx.process, ctx.filter, ctx.preserve_fds)?;
    ctx.channel.send(&Msg::Created)?;
    // The runtime stops listening after Created: later failures go to
    // `start` through the exec fifo (see [`after_start`]).
    let _ = nix::unistd::close(ctx.channel.raw());

    let started = wait_for_start(ctx.fifo)?;
    let err = match after_start(ctx, ready, slave, &started, state_json) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // `start` is reading the fifo until EOF: it reports this text.
    let text = format!("E{err}");
    let _ = nix::unistd::write(&started, text.as_bytes());
    let code = err.exec_code();
    // SAFETY: _exit skips atexit handlers that belong to the parent's copy.
    unsafe { libc::_exit(if code != 0 { code as i32 } else { 1 }) }
}

/// Dup2s the pty slave onto stdin, stdout and stderr.
fn stdio_to(slave: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    nix::unistd::dup2_stdin(slave).ctx(|| "dup2 pty slave to stdin")?;
    nix::unistd::dup2_stdout(slave).ctx(|| "dup2 pty slave to stdout")?;
    nix::unistd::dup2_stderr(slave).ctx(|| "dup2 pty slave to stderr")
}

/// The init's steps once `start` released it: startContainer hooks, the
/// controlling terminal, then the seccomp filter (the last thing before
/// execve, so the filter never sees the runtime's own work), cubby's init.
fn after_start(
    ctx: &ChildContext,
    ready: process::Ready,
    slave: Option<OwnedFd>,
    started: &OwnedFd,
    state_json: Option<String>,
) -> Result<std::convert::Infallible> {
    if let Some(json) = state_json {
        let json = match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(mut v) => {
                v["status"] = "created".into();
                v.to_string()
            }
            Err(_) => json,
        };
        hooks::run(ctx.spec, Kind::StartContainer, json.as_bytes())?;
    }
    if !ctx.init {
        if let Some(slave) = &slave {
            console::make_controlling(slave.as_fd())?;
        }
        return Err(ready.exec());
    }
    // cubby's init is part of the container: filtered like its command.
    ready.lock_down()?;
    crate::init::become_init(Some(started.as_raw_fd()))?;
    if let Some(slave) = &slave {
        console::make_controlling(slave.as_fd())?;
    }
    Err(ready.exec_only())
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: setdomainname reads `len` bytes from a valid buffer.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if r != 0 {
        return Err(Error::io(
            format!("set domainname {name:?}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Blocks until `start` opens the fifo for reading, then hands it one byte.
/// The write end stays open (close-on-exec) until the command execs, so
/// `start` sees EOF then, or an error text first.
fn wait_for_start(fifo: &OwnedFd) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let w = open(
        path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open exec fifo")?;
    nix::unistd::write(&w, b"0").ctx(|| "write exec fifo")?;
    Ok(w)
}

/// Lets a created container run its process.
pub fn start(root: &StateRoot, id: &str) -> Result<()> {
    let mut st = root.load(id)?;
    if st.status != Status::Created {
        return Err(Error::WrongState {
            id: id.into(),
            status: st.status.to_string(),
            wanted: "only a created container can be started".into(),
        });
    }
    let fifo_path = root.dir(id).join(EXEC_FIFO);
    let fifo = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", fifo_path.display()))?;
    // The init writes "0" once released, then holds the write end until its
    // command execs (EOF here) or writes "E" and the reason it failed.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(&fifo, &mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            // EOF once released: the command exec'd, or the init died.
            Ok(_) if !got.is_empty() => break,
            Ok(_) | Err(nix::Error::EAGAIN) => {
                if !state::process_is(st.pid, st.pid_start_time) {
                    // A short command may have been released, run and exited
                    // (a zombie) since the read above: its bytes are still there.
                    while let Ok(n) = nix::unistd::read(&fifo, &mut buf) {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    if !got.is_empty() {
                        break;
                    }
                    return Err(Error::WrongState {
                        id: id.into(),
                        status: "stopped".into(),
                        wanted: "its init died before start".into(),
                    });
                }
                let mut fds = [nix::poll::PollFd::new(
                    fifo.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            }
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(Error::sys("read exec fifo", e)),
        }
    }
    std::fs::remove_file(&fifo_path).ctx(|| format!("remove {}", fifo_path.display()))?;
    if let Some(text) = got.strip_prefix(b"0E") {
        // It failed between start and exec (a startContainer hook, the
        // seccomp filter...): the container is stopped, `delete` cleans up.
        let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
        return Err(Error::Child(format!(
            "container process failed to start: {}",
            String::from_utf8_lossy(text)
        )));
    }
    st.status = Status::Running;
    root.save(&st)?;
    let spec = spec_of(root, id)?;
    if !hooks::of(&spec, Kind::Poststart).is_empty() {
        let json = st.to_oci_json().to_string();
        hooks::run_warn(&spec, Kind::Poststart, json.as_bytes());
    }
    Ok(())
}

pub fn state(root: &StateRoot, id: &str) -> Result<State> {
    root.load(id)
}

/// Sends `signal` to the container's init, or with `all` to every process
/// in its cgroup.
pub fn kill_container(root: &StateRoot, id: &str, signal: Signal, all: bool) -> Result<()> {
    let st = root.load(id)?;
    if st.status == Status::Stopped {
        return Err(Error::WrongState {
            id: id.into(),
            status: st.status.to_string(),
            wanted: "it is not running".into(),
        });
    }
    if all {
        let cg = Cgroup::new(Hierarchy::detect()?, &st.cgroup_path)?;
        for pid in cg.pids()? {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        Ok(())
    } else {
        kill(Pid::from_raw(st.pid), signal).ctx(|| format!("kill {} with {signal}", st.pid))
    }
}

/// Removes a stopped container (with `force`, kills it first).
pub fn delete(root: &StateRoot, id: &str, force: bool) -> Result<()> {
    let st = match root.load(id) {
        Ok(st) => st,
        // A corrupt record, or a directory whose runtime died before its
        // first state write: nothing else was made yet.
        Err(Error::Config { .. }) if force => return root.remove(id),
        Err(Error::NotFound(_)) if root.dir(id).is_dir() => return root.remove(id),
        Err(e) => return Err(e),
    };
    if st.status != Status::Stopped {
        if !force {
            return Err(Error::WrongState {
                id: id.into(),
                status: st.status.to_string(),
                wanted: "stop it first or use --force".into(),
            });
        }
        let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while state::process_is(st.pid, st.pid_start_time) && Instant::now() < deadline {
            // Reap it if it is ours (cubby run); otherwise its parent will.
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(st.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let cg = Cgroup::new(Hierarchy::detect()?, &st.cgroup_path)?;
    cg.destroy()?;
    // The bundle's copy of the spec says whether the container had its own
    // mount namespace and which poststop hooks to run.
    let spec = spec_of(root, id).ok();
    if let Some(spec) = &spec {
        if !has_mount_ns(spec) {
            rootfs::unmount_under(&st.rootfs)?;
        }
    }
    root.remove(id)?;
    if let Some(spec) = &spec {
        if !hooks::of(spec, Kind::Poststop).is_empty() {
            let mut st = st;
            st.status = Status::Stopped;
            hooks::run_warn(
                spec,
                Kind::Poststop,
                st.to_oci_json().to_string().as_bytes(),
            );
        }
    }
    Ok(())
}

fn has_mount_ns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount)
        })
}

/// The spec the container was created with.
pub fn spec_of(root: &StateRoot, id: &str) -> Result<Spec> {
    let path = root.dir(id).join(SPEC_COPY);
    let data = std::fs::read(&path).ctx(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| Error::Config {
        path,
        reason: e.to_string(),
    })
}

pub struct ExecOptions<'a> {
    pub console_socket: Option<&'a Path>,
    pub pid_file: Option<&'a Path>,
    pub preserve_fds: u32,
}

pub struct Execed {
    /// Host pid of the new process. The caller became a child subreaper, so it
    /// can wait for it.
    pub pid: Pid,
    pub pty_master: Option<OwnedFd>,
}

/// Runs `process` inside a running container: same namespaces, cgroup,
/// seccomp and capability rules as the spec gives it.
pub fn exec(root: &StateRoot, id: &str, process: &Process, opts: ExecOptions) -> Result<Execed> {
    ensure_single_threaded()?;
    let st = root.load(id)?;
    if st.status != Status::Running {
        return Err(Error::WrongState {
            id: id.into(),
            status: st.status.to_string(),
            wanted: "exec needs a running container".into(),
        });
    }
    let spec = spec_of(root, id)?;
    let filter = seccomp_of(&spec)?;
    let ns = namespaces::of_process(st.pid)?;
    let cgroup = Cgroup::new(Hierarchy::detect()?, &st.cgroup_path)?;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let (parent_ch, child_ch) = sync::pair()?;
    // SAFETY: single-threaded (checked above).
    match unsafe { nix::unistd::fork() }.ctx(|| "fork exec helper")? {
        nix::unistd::ForkResult::Child => {
            process::unblock_all_signals();
            drop(parent_ch);
            // As the create's init: none of the caller's descriptors but ours.
            let mut keep: Vec<RawFd> = (3..3 + opts.preserve_fds as RawFd).collect();
            keep.push(child_ch.raw());
            keep.extend(ns.iter().map(|(_, fd)| fd.as_raw_fd()));
            process::close_fds_except(&mut keep);
            let keyring = (!st.no_new_keyring).then(|| keyring::name_for(id));
            let r = exec_intermediate(
                &child_ch,
                &cgroup,
                &ns,
                st.pid,
                process,
                filter.as_ref(),
                opts.preserve_fds,
                keyring.as_deref(),
            );
            if let Err(e) = r {
                let _ = child_ch.send(&Msg::failed(&e));
            }
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(child_ch);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut pid = None;
            let mut pty_master = None;
            // EOF means every holder of the child end is gone: the new
            // process exec'd (close-on-exec) and the helper exited.
            while let Some(msg) = parent_ch.recv()? {
                match msg {
                    Msg::Pid(p) => pid = Some(Pid::from_raw(p)),
                    Msg::Pty(master) => match opts.console_socket {
                        Some(sock) => send_to_console_socket(sock, &master)?,
                        None => pty_master = Some(master),
                    },
                    Msg::Failed { code, text } => {
                        if let Some(p) = pid {
                            let _ = nix::sys::wait::waitpid(p, None);
                        }
                        return Err(Error::from_child(code, text));
                    }
                    other => return Err(Error::Child(format!("unexpected message {other:?}"))),
                }
            }
            let pid = pid.ok_or_else(|| Error::Child("exec helper died without a pid".into()))?;
            if let Some(pf) = opts.pid_file {
                root.write(pf, pid.as_raw().to_string().as_bytes())?;
            }
            Ok(Execed { pid, pty_master })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn exec_intermediate(
    ch: &Channel,
    cgroup: &Cgroup,
    ns: &[(CloneFlags, OwnedFd)],
    init_pid: i32,
    process: &Process,
    filter: Option<&seccomp::Program>,
    preserve_fds: u32,
    keyring: Option<&str>,
) -> Result<()> {
    cgroup.add_process(std::process::id() as i32)?;
    for (flag, fd) in ns {
        nix::sched::setns(fd.as_fd(), *flag)
            .ctx(|| format!("join container namespace {flag:?}"))?;
    }
    if !ns.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWNS) {
        // A container without its own mount namespace: its root is a chroot.
        let root = format!("/proc/{init_pid}/root");
        nix::unistd::chroot(root.as_str()).ctx(|| format!("chroot {root}"))?;
        nix::unistd::chdir("/").ctx(|| "chdir /")?;
    }
    if let Some(name) = keyring {
        keyring::join_session(name)?;
    }
    // SAFETY: this helper process is single-threaded.
    match unsafe { nix::unistd::fork() }.ctx(|| "fork into the pid namespace")? {
        nix::unistd::ForkResult::Parent { child } => ch.send(&Msg::Pid(child.as_raw())),
        nix::unistd::ForkResult::Child => {
            let err = match exec_process(ch, process, filter, preserve_fds) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let code = err.exec_code();
            let _ = ch.send(&Msg::failed(&err));
            // SAFETY: as above.
            unsafe { libc::_exit(if code != 0 { code as i32 } else { 1 }) }
        }
    }
}

fn exec_process(
    ch: &Channel,
    process: &Process,
    filter: Option<&seccomp::Program>,
    preserve_fds: u32,
) -> Result<std::convert::Infallible> {
    let slave = if process.terminal().unwrap_or(false) {
        let (master, slave) = console::open_pty()?;
        ch.send(&Msg::Pty(master))?;
        Some(slave)
    } else {
        None
    };
    let ready = process::finalize(process, filter, preserve_fds)?;
    if let Some(slave) = &slave {
        console::make_controlling(slave.as_fd())?;
    }
    Err(ready.exec())
}

/// Waits for a child process and returns its exit code the way a shell
/// reports it (128+N for signal N).
pub fn wait_exit_code(pid: Pid) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("wait for {pid}"), e)),
        }
    }
}
