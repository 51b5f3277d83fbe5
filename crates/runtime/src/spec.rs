//! The OCI spec cubby starts from: Docker's safe defaults (namespaces, mounts,
//! masked and read-only paths, capabilities, devices, seccomp), and config.json
//! loading for bundles.
//!
//! INTERFACE (owned by the spec helper):

use crate::Result;
use oci_spec::runtime::Spec;
use std::path::Path;

/// A spec with Docker's defaults for a rootfs at `rootfs` running `args`.
pub fn default_spec(_rootfs: &Path, _args: Vec<String>) -> Spec {
    todo!()
}

/// Reads and validates `bundle/config.json`, naming the file and the problem on error.
pub fn load(_bundle: &Path) -> Result<Spec> {
    todo!()
}
