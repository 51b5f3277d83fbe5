//! The caller's side of `-it`: raw mode on the caller's terminal (restored on
//! drop), window-size forwarding, and the byte relay between the caller's
//! stdio and the container's pty master.
//!
//! INTERFACE (owned by the tty helper):
//!
//! - [`RawMode`]: raw mode for the caller's terminal, restored on drop.
//! - [`get_winsize`], [`set_winsize`], [`copy_winsize`]: window sizes.
//! - [`relay`], [`relay_until`]: the single-threaded poll loop between the
//!   caller's stdio and the pty master.

use crate::error::Context;
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

pub use nix::pty::Winsize;

/// Size of each relay buffer.
const BUF_SIZE: usize = 32 * 1024;

/// Puts a terminal in raw mode; the original mode comes back on drop.
///
/// Keeps its own (close-on-exec) duplicate of the terminal fd, so the fd
/// given to [`RawMode::enter`] need not outlive it.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Saves the terminal's mode and switches it to raw (cfmakeraw, applied
    /// now). Errors clearly if `fd` is not a terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> Result<RawMode> {
        let saved = termios::tcgetattr(fd).map_err(|e| match e {
            Errno::ENOTTY | Errno::EINVAL => Error::sys("raw mode: fd is not a terminal", e),
            e => Error::sys("raw mode: read terminal attributes", e),
        })?;
        let dup = fd
            .try_clone_to_owned()
            .ctx(|| "raw mode: dup terminal fd")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)
            .ctx(|| "raw mode: set terminal attributes")?;
        Ok(RawMode { fd: dup, saved })
    }

    /// Restores the saved mode now, reporting failure (drop ignores it).
    pub fn restore(self) -> Result<()> {
        termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved)
            .ctx(|| "restore terminal attributes")
        // Drop then restores once more, which is harmless.
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Reads the window size of a terminal (TIOCGWINSZ).
pub fn get_winsize(fd: BorrowedFd<'_>) -> Result<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer,
    // which points at a live, properly typed value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut Winsize) };
    Errno::result(r).ctx(|| "get window size (TIOCGWINSZ)")?;
    Ok(ws)
}

/// Sets the window size of a terminal or pty master (TIOCSWINSZ); the
/// foreground process group of the pty gets SIGWINCH when it changes.
pub fn set_winsize(fd: BorrowedFd<'_>, ws: &Winsize) -> Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer,
    // which points at a live, properly typed value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const Winsize) };
    Errno::result(r).ctx(|| "set window size (TIOCSWINSZ)")?;
    Ok(())
}

/// Copies the window size of `from` (a terminal) to `to` (a pty master).
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<()> {
    let ws = get_winsize(from)?;
    set_winsize(to, &ws)
}

/// Relays stdin -> master and master -> stdout until the pty's slave side is
/// closed by every process (read gives EIO/EOF), forwarding SIGWINCH as window
/// size changes when stdin is a terminal. The caller blocks SIGWINCH first.
pub fn relay(master: &OwnedFd, stdin: BorrowedFd<'_>, stdout: BorrowedFd<'_>) -> Result<()> {
    relay_until(master, stdin, stdout, None)
}

/// [`relay`], which also ends when `stop` becomes readable (or hangs up),
/// e.g. a pipe or pidfd that signals the container's exit. What the master
/// still holds is written to stdout before returning.
///
/// Details:
/// - Single-threaded poll loop, 32 KiB buffers, writes completed in full.
/// - The master is switched to O_NONBLOCK for the duration (restored after),
///   so a container that does not read its input cannot stall its output.
///   stdin and stdout keep their flags (they are shared with the caller's
///   shell); EAGAIN on them is handled anyway.
/// - At stdin EOF (or EIO: the caller's terminal hung up) stdin is no longer
///   read; the relay goes on until the slave side closes.
/// - When stdin is a terminal, its size is copied to the master at the start
///   and on every SIGWINCH, read from a signalfd created here. The caller
///   must block SIGWINCH in this thread's mask (and in the other threads'),
///   or the signal never reaches the signalfd. Resize failures are ignored.
/// - The master is never closed here.
pub fn relay_until(
    master: impl AsFd,
    stdin: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
    stop: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let master = master.as_fd();
    let _nonblocking = NonBlocking::set(master)?;

    let stdin_tty = nix::unistd::isatty(stdin).unwrap_or(false);
    let winch = if stdin_tty {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGWINCH);
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .ctx(|| "relay: signalfd for SIGWINCH")?;
        let _ = copy_winsize(stdin, master);
        Some(sfd)
    } else {
        None
    };

    let mut from_master = vec![0u8; BUF_SIZE];
    let mut to_master = vec![0u8; BUF_SIZE];
    // Bytes read from stdin not yet written to the master: to_master[start..end].
    let (mut start, mut end) = (0usize, 0usize);
    let mut stdin_open = true;

    loop {
        let pending = start < end;
        let mut master_events = PollFlags::POLLIN;
        if pending {
            master_events |= PollFlags::POLLOUT;
        }
        // Read stdin only when its last chunk reached the master (backpressure).
        let poll_stdin = stdin_open && !pending;

        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(4);
        fds.push(PollFd::new(master, master_events));
        let i_stdin = poll_stdin.then(|| {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            fds.len() - 1
        });
        let i_winch = winch.as_ref().map(|s| {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let i_stop = stop.map(|s| {
            fds.push(PollFd::new(s, PollFlags::POLLIN));
            fds.len() - 1
        });

        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("relay: poll", e)),
        }
        let revents = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let master_rev = revents(0);
        let stdin_rev = i_stdin.map(revents).unwrap_or(PollFlags::empty());
        let winch_rev = i_winch.map(revents).unwrap_or(PollFlags::empty());
        let stop_rev = i_stop.map(revents).unwrap_or(PollFlags::empty());
        drop(fds);

        let ready = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;

        if master_rev.contains(PollFlags::POLLNVAL) {
            return Err(Error::sys("relay: pty master", Errno::EBADF));
        }
        if master_rev.intersects(ready) {
            match read_retry(master, &mut from_master) {
                Ok(0) | Err(Errno::EIO) => return Ok(()), // slave closed by all
                Ok(n) => write_all(stdout, &from_master[..n], "relay: write to stdout")?,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(Error::sys("relay: read pty master", e)),
            }
        }

        if pending && master_rev.contains(PollFlags::POLLOUT) {
            flush_to_master(master, &to_master, &mut start, &mut end)?;
        }

        if stdin_rev.contains(PollFlags::POLLNVAL) {
            stdin_open = false;
        } else if stdin_rev.intersects(ready) {
            match read_retry(stdin, &mut to_master) {
                Ok(0) | Err(Errno::EIO) => stdin_open = false,
                Ok(n) => {
                    start = 0;
                    end = n;
                    flush_to_master(master, &to_master, &mut start, &mut end)?;
                }
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(Error::sys("relay: read stdin", e)),
            }
        }

        if !winch_rev.is_empty() {
            if let Some(sfd) = &winch {
                // Coalesce every pending SIGWINCH into one resize.
                while let Ok(Some(_)) = sfd.read_signal() {}
                let _ = copy_winsize(stdin, master);
            }
        }

        if !stop_rev.is_empty() {
            return drain_master(master, stdout, &mut from_master);
        }
    }
}

/// Reads what the (non-blocking) master still holds and writes it to stdout.
fn drain_master(master: BorrowedFd<'_>, stdout: BorrowedFd<'_>, buf: &mut [u8]) -> Result<()> {
    loop {
        match read_retry(master, buf) {
            Ok(0) | Err(Errno::EIO) | Err(Errno::EAGAIN) => return Ok(()),
            Ok(n) => write_all(stdout, &buf[..n], "relay: write to stdout")?,
            Err(e) => return Err(Error::sys("relay: read pty master", e)),
        }
    }
}

/// Writes buf[start..end] to the non-blocking master as far as it accepts.
fn flush_to_master(
    master: BorrowedFd<'_>,
    buf: &[u8],
    start: &mut usize,
    end: &mut usize,
) -> Result<()> {
    while *start < *end {
        match nix::unistd::write(master, &buf[*start..*end]) {
            Ok(0) => break,
            Ok(n) => *start += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => break,
            // The slave is gone: the input has nowhere to go; reading the
            // master will end the relay.
            Err(Errno::EIO) => {
                *start = *end;
            }
            Err(e) => return Err(Error::sys("relay: write to pty master", e)),
        }
    }
    if *start >= *end {
        *start = 0;
        *end = 0;
    }
    Ok(())
}

fn read_retry(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::result::Result<usize, Errno> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// Writes all of `buf`, retrying on EINTR and waiting in poll on EAGAIN (an
/// fd someone else made non-blocking).
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8], what: &'static str) -> Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => {
                return Err(Error::io(
                    what,
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ))
            }
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(Error::sys(what, e)),
                }
            }
            Err(e) => return Err(Error::sys(what, e)),
        }
    }
    Ok(())
}

/// Sets O_NONBLOCK on an fd and puts the original flags back on drop.
struct NonBlocking<'a> {
    fd: BorrowedFd<'a>,
    orig: OFlag,
}

impl<'a> NonBlocking<'a> {
    fn set(fd: BorrowedFd<'a>) -> Result<Self> {
        let bits =
            nix::fcntl::fcntl(fd, FcntlArg::F_GETFL).ctx(|| "relay: get pty master flags")?;
        let orig = OFlag::from_bits_retain(bits);
        if !orig.contains(OFlag::O_NONBLOCK) {
            nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(orig | OFlag::O_NONBLOCK))
                .ctx(|| "relay: set pty master non-blocking")?;
        }
        Ok(NonBlocking { fd, orig })
    }
}

impl Drop for NonBlocking<'_> {
    fn drop(&mut self) {
        if !self.orig.contains(OFlag::O_NONBLOCK) {
            let _ = nix::fcntl::fcntl(self.fd, FcntlArg::F_SETFL(self.orig));
        }
    }
}

/// `-t` on the caller's side: raw mode and window size when stdin is a
/// terminal, then relay until the container's side of the pty closes or
/// `stop` (e.g. a pidfd of the container's process) becomes readable.
pub fn attach(master: &OwnedFd, stop: Option<BorrowedFd<'_>>) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let is_tty = nix::unistd::isatty(stdin.as_fd()).unwrap_or(false);
    let mut winch = nix::sys::signal::SigSet::empty();
    winch.add(nix::sys::signal::Signal::SIGWINCH);
    winch
        .thread_block()
        .map_err(|e| crate::Error::sys("block SIGWINCH", e))?;
    let _raw = if is_tty {
        copy_winsize(stdin.as_fd(), master.as_fd())?;
        Some(RawMode::enter(stdin.as_fd())?)
    } else {
        None
    };
    relay_until(master, stdin.as_fd(), stdout.as_fd(), stop)
}

/// A pidfd: readable once the process has exited, so a relay can stop with
/// the container's main process even if daemons it left hold the pty.
pub fn pidfd(pid: nix::unistd::Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Error::io(
            format!("pidfd_open {pid}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}
