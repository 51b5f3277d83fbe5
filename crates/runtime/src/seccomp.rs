//! Seccomp: compile an OCI `LinuxSeccomp` profile to BPF (via libseccomp) in
//! the parent, load it in the child just before exec.
//!
//! INTERFACE (owned by the security helper):

use crate::Result;
use oci_spec::runtime::LinuxSeccomp;

/// cubby's default profile (used by `cubby run` unless --security-opt seccomp=unconfined).
pub fn default_profile() -> LinuxSeccomp {
    todo!()
}

/// A compiled filter, ready to load with no allocation.
pub struct Program {
    _private: (),
}

impl Program {
    pub fn compile(_profile: &LinuxSeccomp) -> Result<Program> {
        todo!()
    }
    /// Loads the filter into the calling thread. Async-signal-safe.
    pub fn load(&self) -> Result<()> {
        todo!()
    }
}
