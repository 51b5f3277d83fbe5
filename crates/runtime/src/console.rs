//! The container's terminal: a pty from the container's own devpts, whose
//! master is handed to the caller over a Unix socket (SCM_RIGHTS), as runc's
//! --console-socket contract does.
//!
//! INTERFACE (owned by the tty helper):

use crate::Result;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Inside the container after pivot_root: opens /dev/ptmx, unlocks it, opens
/// the slave and returns (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    todo!()
}

/// Sends `fd` over the connected Unix socket `sock` (one SCM_RIGHTS message).
pub fn send_fd(_sock: BorrowedFd<'_>, _fd: BorrowedFd<'_>) -> Result<()> {
    todo!()
}

/// Receives one fd sent by `send_fd`.
pub fn recv_fd(_sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    todo!()
}

/// Makes `slave` the calling process's stdin/stdout/stderr and controlling
/// terminal (setsid + TIOCSCTTY). Async-signal-safe.
pub fn make_controlling(_slave: BorrowedFd<'_>) -> Result<()> {
    todo!()
}
