//! Linux capabilities: Docker's default set, and applying an OCI
//! `LinuxCapabilities` to the calling process.
//!
//! INTERFACE (owned by the security helper):

use crate::Result;
use oci_spec::runtime::{Capability, LinuxCapabilities};

/// Docker's default capability set.
pub fn default_set() -> Vec<Capability> {
    todo!()
}

/// Drops every capability not in `caps.bounding` from the bounding set.
/// Call while still privileged (before changing uid).
pub fn drop_bounding(_caps: &LinuxCapabilities) -> Result<()> {
    todo!()
}

/// Sets effective, permitted, inheritable and ambient sets. Call after setuid
/// (with PR_SET_KEEPCAPS set before it).
pub fn apply(_caps: &LinuxCapabilities) -> Result<()> {
    todo!()
}
