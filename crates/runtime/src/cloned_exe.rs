//! CVE-2019-5736: a container must never be able to reach the runtime's own
//! binary through /proc/PID/exe and write to it. Before any container work the
//! runtime re-executes itself from a sealed, read-only memfd copy.
//!
//! INTERFACE (owned by the security helper):

use crate::Result;

/// If the current executable is not already a sealed memfd, copies it into one,
/// seals it and re-executes it with the same argv and environment (does not
/// return on success). Returns Ok(()) when already running from the sealed copy.
pub fn ensure_sealed() -> Result<()> {
    todo!()
}

/// True if /proc/self/exe is a sealed memfd.
pub fn is_sealed() -> bool {
    todo!()
}
