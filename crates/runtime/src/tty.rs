//! The caller's side of `-it`: raw mode on the caller's terminal (restored on
//! drop), window-size forwarding, and the byte relay between the caller's
//! stdio and the container's pty master.
//!
//! INTERFACE (owned by the tty helper):

use crate::Result;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Puts a terminal in raw mode; the original mode comes back on drop.
pub struct RawMode {
    _private: (),
}

impl RawMode {
    pub fn enter(_fd: BorrowedFd<'_>) -> Result<RawMode> {
        todo!()
    }
}

/// Copies the window size of `from` (a terminal) to `to` (a pty master).
pub fn copy_winsize(_from: BorrowedFd<'_>, _to: BorrowedFd<'_>) -> Result<()> {
    todo!()
}

/// Relays stdin -> master and master -> stdout until the pty's slave side is
/// closed by every process (read gives EIO/EOF), forwarding SIGWINCH as window
/// size changes when stdin is a terminal. The caller blocks SIGWINCH first.
pub fn relay(_master: &OwnedFd, _stdin: BorrowedFd<'_>, _stdout: BorrowedFd<'_>) -> Result<()> {
    todo!()
}
