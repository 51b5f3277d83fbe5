//! The stdio of processes the monitor starts: pipes, ptys, the frames
//! that carry output to attached clients, and the fd juggling around the
//! runtime's clone.

use crate::error::{Error, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Frame kinds on an attached stream (the first byte of a frame). 1 and 2
/// are Docker's multiplexed-stream kinds, so the daemon can pass frames
/// through unchanged for containers without a terminal.
pub const FRAME_STDOUT: u8 = 1;
pub const FRAME_STDERR: u8 = 2;
/// The process exited: the payload is its exit code, i32 big-endian. Last
/// frame of a stream.
pub const FRAME_EXIT: u8 = 0xff;

/// `[kind, 0, 0, 0, len as u32 big-endian]` then `data`.
pub fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A pipe, both ends close-on-exec, the read end non-blocking.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    set_nonblocking(&r)?;
    Ok((r, w))
}

pub fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("F_GETFL", e))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| Error::sys("set non-blocking", e))?;
    Ok(())
}

/// What a process reads and writes: pipes (the ends the monitor keeps) or
/// a pty master.
pub struct Stdio {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Where attachers' input goes (the pipe's write end, or a dup of the
    /// pty master); None when stdin is /dev/null or was closed.
    pub stdin: Option<OwnedFd>,
    /// Input not yet accepted by `stdin`.
    pub stdin_buf: Vec<u8>,
    /// The attacher's input ended: close `stdin` once `stdin_buf` is written.
    pub stdin_eof: bool,
    /// The pty master (also in `stdout`), for resizes.
    pub pty: Option<OwnedFd>,
}

/// Input kept for a process that does not read; past this, attachers'
/// input waits in their sockets.
pub const MAX_STDIN_BUF: usize = 1 << 20;

impl Stdio {
    pub fn none() -> Stdio {
        Stdio {
            stdout: None,
            stderr: None,
            stdin: None,
            stdin_buf: Vec::new(),
            stdin_eof: false,
            pty: None,
        }
    }

    /// Writes buffered input; drops stdin when the process closed it, or
    /// when all input was written after the attacher's end of input.
    pub fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            match nix::unistd::write(fd, &self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) => return,
                Err(_) => {
                    self.stdin = None;
                    self.stdin_buf.clear();
                    return;
                }
            }
        }
        if self.stdin_eof {
            self.stdin = None;
        }
    }

    /// Closes stdin once what is buffered is written (at once if nothing
    /// is): input sent just before the client closed is not lost.
    pub fn close_stdin(&mut self) {
        self.stdin_eof = true;
        self.write_stdin();
    }

    /// Holds as much input as the monitor keeps for this process: read no
    /// more from its attachers until the process takes some.
    pub fn stdin_full(&self) -> bool {
        self.stdin.is_some() && self.stdin_buf.len() >= MAX_STDIN_BUF
    }
}

/// Runs `clone`, which starts a process from this one (the runtime's create
/// or exec), with fds 0-2 pointing at fresh pipes (stdin a pipe only with
/// `stdin`, else /dev/null), or all at /dev/null when the process gets a
/// terminal from the runtime instead (the process unblocks the SIGCHLD we
/// keep blocked itself: `process::unblock_all_signals`). Returns what
/// `clone` returned and the monitor's ends of the pipes.
pub fn with_process_stdio<T>(
    tty: bool,
    stdin: bool,
    clone: impl FnOnce() -> Result<T>,
) -> Result<(T, Stdio)> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Error::io("open /dev/null", e))?;
    let null = devnull.as_fd();
    let mut io = Stdio::none();
    if tty {
        let _swap = StdioSwap::install(null, null, null, null)?;
        return Ok((clone()?, io));
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = if stdin {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
        set_nonblocking(&w)?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let made = {
        // The runtime's child inherits the caller's fds 0-2.
        let stdin_fd = in_r.as_ref().map_or(null, |r| r.as_fd());
        let _swap = StdioSwap::install(stdin_fd, out_w.as_fd(), err_w.as_fd(), null)?;
        clone()?
    };
    io.stdout = Some(out_r);
    io.stderr = Some(err_r);
    io.stdin = in_w;
    Ok((made, io))
}

impl Stdio {
    /// Takes the pty master of a process with a terminal: output is read
    /// from it, input (with `stdin`) written to it, resizes applied to it.
    pub fn adopt_pty(&mut self, master: OwnedFd, stdin: bool) -> Result<()> {
        set_nonblocking(&master)?;
        let dup = || {
            master
                .try_clone()
                .map_err(|e| Error::io("dup the pty master", e))
        };
        if stdin {
            self.stdin = Some(dup()?);
        }
        self.pty = Some(dup()?);
        self.stdout = Some(master);
        Ok(())
    }
}

/// One read of a non-blocking fd.
pub enum ReadResult {
    Data(Vec<u8>),
    WouldBlock,
    /// End of file (EIO on a pty master whose slave is gone counts).
    Eof,
}

pub fn read_some(fd: BorrowedFd<'_>) -> ReadResult {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return ReadResult::Eof,
            Ok(n) => {
                buf.truncate(n);
                return ReadResult::Data(buf);
            }
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => return ReadResult::WouldBlock,
            Err(_) => return ReadResult::Eof,
        }
    }
}

/// Points fds 0, 1, 2 at the given files and puts the originals back on
/// drop (or /dev/null for one the process did not have).
pub struct StdioSwap {
    saved: [Option<OwnedFd>; 3],
    devnull: OwnedFd,
}

impl StdioSwap {
    pub fn install(
        stdin: BorrowedFd,
        stdout: BorrowedFd,
        stderr: BorrowedFd,
        devnull: BorrowedFd,
    ) -> Result<StdioSwap> {
        let _ = std::io::stdout().flush();
        let devnull = devnull
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(frame(FRAME_STDOUT, b"hi"), b"\x01\0\0\0\0\0\0\x02hi");
        assert_eq!(frame(FRAME_EXIT, &7i32.to_be_bytes()).len(), 12);
    }
}
