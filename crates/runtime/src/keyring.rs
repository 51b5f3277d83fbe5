//! A new session keyring per container (as runc does unless
//! `--no-new-keyring`): without it every container shares the session
//! keyring of whoever started the runtime, so a container whose seccomp
//! profile allows `keyctl` could read or link the host's keys.

use crate::error::{Error, Result};

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

/// The keyring's name: one per container, so an exec'd process joins the
/// same keyring as the container's init.
pub fn name_for(id: &str) -> String {
    format!("_ses.{id}")
}

/// Joins (creating if needed) the session keyring `name`. A kernel built
/// without keys (ENOSYS) leaves nothing to isolate and is not an error.
pub fn join_session(name: &str) -> Result<()> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| Error::InvalidSpec(format!("NUL byte in keyring name {name:?}")))?;
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, name) reads a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(());
        }
        return Err(Error::io(
            format!("join a new session keyring {name:?} (--no-new-keyring skips this)"),
            err,
        ));
    }
    Ok(())
}
