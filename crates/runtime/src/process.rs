//! The last steps inside the container before exec: rlimits, identity,
//! capabilities, no_new_privs, seccomp, and resolving the executable in the
//! container's own PATH.

use crate::capabilities;
use crate::error::{Context, Error, Result};
use crate::seccomp;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Everything execve needs, built before the last privilege drop so no
/// allocation or lookup is left for the end.
pub struct Prepared {
    pub exe: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// Exit code conventions of Docker for a command that cannot be run.
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_CANNOT_EXEC: i32 = 126;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("{0}: permission denied (not an executable file)")]
    NotExecutable(String),
}

/// Builds argv/envp and finds the executable as the container sees it.
pub fn prepare(process: &Process) -> Result<Prepared> {
    let args = process.args().clone().unwrap_or_default();
    let first = args
        .first()
        .ok_or_else(|| Error::InvalidSpec("process.args is empty: give a command".into()))?;
    let env = process.env().clone().unwrap_or_default();
    let exe = resolve(first, &env, process.cwd()).map_err(|e| Error::CannotExec {
        code: match e {
            ExecError::NotFound(_) => EXIT_NOT_FOUND as u8,
            ExecError::NotExecutable(_) => EXIT_CANNOT_EXEC as u8,
        },
        text: e.to_string(),
    })?;
    let cstr =
        |s: &str| CString::new(s).map_err(|_| Error::InvalidSpec(format!("NUL byte in {s:?}")));
    Ok(Prepared {
        exe: CString::new(exe.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidSpec("NUL byte in executable path".into()))?,
        argv: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
        envp: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
    })
}

/// Finds `cmd` like execvp would, using the container's PATH from `env`.
pub fn resolve(cmd: &str, env: &[String], cwd: &Path) -> Result<PathBuf, ExecError> {
    let check = |p: &Path| -> Result<Option<PathBuf>, ExecError> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                Ok(Some(p.to_path_buf()))
            }
            Ok(_) => Err(ExecError::NotExecutable(p.display().to_string())),
            Err(_) => Ok(None),
        }
    };
    if cmd.contains('/') {
        let p = if Path::new(cmd).is_absolute() {
            PathBuf::from(cmd)
        } else {
            cwd.join(cmd)
        };
        return check(&p)?.ok_or_else(|| ExecError::NotFound(cmd.to_string()));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut not_exec = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        match check(&Path::new(dir).join(cmd)) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => not_exec = Some(e),
        }
    }
    Err(not_exec.unwrap_or_else(|| ExecError::NotFound(cmd.to_string())))
}

pub fn set_rlimits(process: &Process) -> Result<()> {
    for r in process.rlimits().clone().unwrap_or_default() {
        let res = match r.typ() {
            PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
            PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
            PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
            PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
            PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
            PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
            PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
            PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
            PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
            PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
            PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
            PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
            PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
            PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
            PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
            PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
        };
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads a valid, initialised rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(Error::io(
                format!(
                    "set rlimit {:?} to {}:{} (the hard limit cannot be raised without CAP_SYS_RESOURCE)",
                    r.typ(),
                    r.soft(),
                    r.hard()
                ),
                err,
            ));
        }
    }
    Ok(())
}

/// Switches to the spec's user and reduces capabilities, keeping exactly the
/// spec's sets across the uid change, plus `keep` (capability mask bits) in
/// the effective and permitted sets until [`capabilities::release`].
pub fn set_identity(process: &Process, keep: u64) -> Result<()> {
    let caps = process.capabilities().clone().unwrap_or_default();
    capabilities::drop_bounding(&caps)?;
    let user = process.user();
    // SAFETY: prctl(PR_SET_KEEPCAPS) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(Error::io(
            "prctl(PR_SET_KEEPCAPS)",
            std::io::Error::last_os_error(),
        ));
    }
    let groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    match nix::unistd::setgroups(&groups) {
        // setgroups is denied in a user namespace whose gid_map was written with
        // setgroups=deny; the process simply keeps no extra groups then.
        Err(nix::Error::EPERM) if groups.is_empty() => {}
        other => other.ctx(|| "setgroups")?,
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {}", user.gid()))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {}", user.uid()))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    capabilities::apply_keeping(&caps, keep)?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::io(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub fn set_oom_score_adj(process: &Process) -> Result<()> {
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("set oom_score_adj {adj}"))?;
    }
    Ok(())
}

/// Unblocks every signal in this process (a container's init or an exec's
/// helper, first thing after the clone): a container starts with no signal
/// blocked whatever its caller blocks — the engine's monitor keeps SIGCHLD
/// blocked for its signalfd, and must not have to unblock it around each
/// clone (a child that exits in that window would go unnoticed until the
/// monitor's next turn).
pub fn unblock_all_signals() {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Closes every fd from 3 up except those in `keep` (sorted here). Where
/// the kernel lacks close_range (before 5.9) nothing is closed: the fds
/// still end at exec (see [`close_fds_on_exec`]).
pub fn close_fds_except(keep: &mut Vec<RawFd>) {
    keep.retain(|&fd| fd >= 3);
    keep.sort_unstable();
    keep.dedup();
    let close = |first: u32, last: u32| {
        // SAFETY: close_range on this process's own descriptors; the caller
        // keeps every one it still uses.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    };
    let mut first = 3u32;
    for &fd in keep.iter() {
        let fd = fd as u32;
        if fd > first {
            close(first, fd - 1);
        }
        first = fd + 1;
    }
    close(first, u32::MAX);
}

/// Marks every fd above 2 (and above the preserved ones) close-on-exec so the
/// container inherits nothing of the runtime.
pub fn close_fds_on_exec(preserve: u32) -> Result<()> {
    let first = 3 + preserve;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        return Err(Error::io("close_range", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The container starts with default signal dispositions and nothing
/// blocked, whatever its caller had: Rust ignores SIGPIPE, a monitor blocks
/// SIGCHLD, a terminal relay blocks SIGWINCH, and ignored dispositions and
/// the mask both survive exec.
pub fn reset_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        unsafe { sigaction(sig, &default) }.ctx(|| format!("reset {sig}"))?;
    }
    // Real-time signals, including the two glibc keeps for itself (its
    // wrapper refuses them, the kernel does not): the raw syscall.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 32..=libc::SIGRTMAX() {
        // SAFETY: rt_sigaction reads a valid struct of the kernel's layout
        // (sigsetsize 8) and installs SIG_DFL; no old action is written.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "unblock signals")
}

/// A process that has dropped its privileges and only has to load its
/// seccomp filter and exec.
pub struct Ready<'a> {
    prepared: Prepared,
    filter: Option<&'a seccomp::Program>,
    /// Capabilities kept only to load the filter (no_new_privs off): the
    /// spec's exact sets, restored with one capset after loading it.
    release: Option<oci_spec::runtime::LinuxCapabilities>,
}

/// The steps shared by a container's init and an exec'd process, inside the
/// container: signals, oom score, rlimits, executable lookup, working
/// directory, inherited fds marked close-on-exec, identity and capabilities,
/// no_new_privs. The seccomp filter is left for [`Ready::exec`].
///
/// Ordering (as runc and crun arrange it): everything the runtime itself does
/// happens before the filter is loaded, so a profile may deny any syscall the
/// runtime uses (close_range, keyctl, open, write, fork...). Without
/// no_new_privs the kernel only accepts a filter from a thread holding
/// CAP_SYS_ADMIN, so when the spec drops it, it is kept in the effective and
/// permitted sets until the filter is in, then released by one capset; that
/// capset and execve are the only syscalls the filter sees from us.
pub fn finalize<'a>(
    process: &Process,
    filter: Option<&'a seccomp::Program>,
    preserve_fds: u32,
) -> Result<Ready<'a>> {
    reset_signals()?;
    set_oom_score_adj(process)?;
    set_rlimits(process)?;
    let prepared = prepare(process)?;
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to working directory {}", cwd.display()))?;
    close_fds_on_exec(preserve_fds)?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    let caps = process.capabilities().clone().unwrap_or_default();
    let keep_admin = filter.is_some() && !nnp && !capabilities::keeps_admin(&caps);
    set_identity(
        process,
        if keep_admin {
            capabilities::SYS_ADMIN_BIT
        } else {
            0
        },
    )?;
    if nnp {
        set_no_new_privs()?;
    }
    Ok(Ready {
        prepared,
        filter,
        release: keep_admin.then_some(caps),
    })
}

impl Ready<'_> {
    /// Loads the seccomp filter, drops what was kept for it, and execs.
    /// Returns only on failure.
    pub fn exec(self) -> Error {
        match self.lock_down() {
            Ok(()) => self.exec_only(),
            Err(e) => e,
        }
    }

    /// Everything before execve that the filter applies to: the filter itself
    /// and the final capset. Split out so cubby's init can fork after it.
    pub fn lock_down(&self) -> Result<()> {
        if let Some(f) = self.filter {
            f.load()?;
        }
        if let Some(caps) = &self.release {
            capabilities::release(caps)?;
        }
        Ok(())
    }

    /// Execs without loading anything (after [`Ready::lock_down`]).
    pub fn exec_only(self) -> Error {
        let p = &self.prepared;
        let err = nix::unistd::execve(&p.exe, &p.argv, &p.envp).unwrap_err();
        Error::sys(format!("exec {:?}", p.exe), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_in_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(resolve("sh", &env, Path::new("/")).unwrap().ends_with("sh"));
        assert!(matches!(
            resolve("no-such-cmd-xyz", &env, Path::new("/")),
            Err(ExecError::NotFound(_))
        ));
        assert!(matches!(
            resolve("/etc/passwd", &env, Path::new("/")),
            Err(ExecError::NotExecutable(_))
        ));
        assert!(resolve("/bin/sh", &[], Path::new("/")).is_ok());
    }
}
