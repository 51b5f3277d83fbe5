//! An optional PID 1 for the container (like `docker run --init`): it forks
//! the real command, forwards every catchable signal to it, reaps orphans so
//! no zombie accumulates, and exits with the command's status. Without it a
//! shell as PID 1 ignores SIGTERM/SIGINT (PID 1 has no default signal
//! actions) and never reaps the orphans it inherits.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks; the child returns `Ok(())` and goes on to exec the command. The
/// parent never returns: it serves as init and exits with the child's status
/// (128+N when the child was killed by signal N). `child_only` is closed in
/// the parent (the exec fifo: `start` waits until the command has exec'd);
/// the parent never returns, so its owner never closes it a second time.
pub fn become_init(child_only: Option<std::os::fd::RawFd>) -> crate::Result<()> {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    // Block first so no signal is lost between fork and the wait loop.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old))
        .map_err(|e| crate::Error::sys("block signals for init", e))?;
    // SAFETY: the container's setup process is single-threaded.
    match unsafe { fork() }.map_err(|e| crate::Error::sys("fork the container command", e))? {
        ForkResult::Child => {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                .map_err(|e| crate::Error::sys("restore signal mask", e))?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            if let Some(fd) = child_only {
                let _ = nix::unistd::close(fd);
            }
            detach_stdio();
            serve(child, &all)
        }
    }
}

/// init keeps no terminal, pipe or other descriptor open: when the command
/// exits, readers of its output must see EOF even while init finishes
/// reaping, and the command's stdin must see EOF when its writer closes.
/// init never execs, so descriptors inherited from whoever cloned it (a
/// monitor's sockets, lock file and the other ends of its pipes) would
/// otherwise stay open for the container's lifetime.
fn detach_stdio() {
    // init uses none of them after the fork (the command keeps its own copies).
    crate::process::close_fds_except(&mut Vec::new());
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn serve(child: Pid, set: &SigSet) -> ! {
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => {
                    std::process::exit(128 + s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
