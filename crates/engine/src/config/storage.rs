//! A container's storage as the user asked for it, before anything
//! exists: validated [`MountRequest`]s ([`ContainerConfig::storage`]),
//! which `api/create_body/storage.rs` makes from Docker's `-v`, `--mount`,
//! `--tmpfs` and `Config.Volumes`. The engine
//! (`service/mounts.rs`) realises them: creates volumes and missing `-v`
//! sources, fills new volumes from the image, and adds the image's own
//! volumes ([`add_anonymous`]).
//!
//! [`ContainerConfig::storage`]: super::ContainerConfig::storage

use super::{ConfigError, ConfigResult};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bind,
    Volume,
    Tmpfs,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Volume => "volume",
            Kind::Tmpfs => "tmpfs",
        }
    }
}

/// One validated mount request, before any volume or directory exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub kind: Kind,
    /// Cleaned absolute path in the container.
    pub dest: String,
    /// Bind: cleaned absolute host path; volume: its name, empty for a new
    /// anonymous one; tmpfs: empty.
    pub source: String,
    pub read_only: bool,
    /// Docker's MountPoint `Mode` (the `-v` mode string).
    pub mode: String,
    /// Empty: the default (`rprivate`).
    pub propagation: String,
    pub nocopy: bool,
    /// Labels of a volume this mount creates.
    pub labels: BTreeMap<String, String>,
    /// A directory inside the volume to mount instead of its root.
    pub subpath: String,
    /// tmpfs mount options (`size=64m`, `mode=1777`, ...).
    pub tmpfs: Vec<String>,
    /// `-v` creates a missing bind source; `--mount` refuses it.
    pub create_source: bool,
    pub recursive: bool,
    /// Shown in `Mounts` (Docker does not list `--tmpfs` ones).
    pub listed: bool,
}

impl MountRequest {
    pub fn new(kind: Kind, dest: String) -> MountRequest {
        MountRequest {
            kind,
            dest,
            source: String::new(),
            read_only: false,
            mode: String::new(),
            propagation: String::new(),
            nocopy: false,
            labels: BTreeMap::new(),
            subpath: String::new(),
            tmpfs: Vec::new(),
            create_source: false,
            recursive: true,
            listed: true,
        }
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError::invalid(msg)
}

/// Docker's `invalid mount config for type "T": ...`.
pub(crate) fn config_err(kind: &str, msg: impl std::fmt::Display) -> ConfigError {
    bad(format!("invalid mount config for type {kind:?}: {msg}"))
}

/// Lexical cleaning as Go's `path.Clean` (for absolute paths).
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A destination: absolute, not `/`; returned cleaned.
pub(crate) fn destination(kind: &str, dest: &str) -> ConfigResult<String> {
    if dest.is_empty() {
        return Err(config_err(kind, "field Target must not be empty"));
    }
    if !dest.starts_with('/') {
        return Err(config_err(
            kind,
            format!("invalid mount path: '{dest}' mount path must be absolute"),
        ));
    }
    let dest = clean(dest);
    if dest == "/" {
        return Err(bad("invalid specification: destination can't be '/'"));
    }
    Ok(dest)
}

/// An anonymous volume for each of `volumes` (container paths: the
/// config's `Volumes`, then the image's) that no mount covers yet.
pub fn add_anonymous(out: &mut Vec<MountRequest>, volumes: &[String]) -> ConfigResult<()> {
    for v in volumes {
        let dest = destination("volume", v)?;
        if !out.iter().any(|o| o.dest == dest) {
            let mut p = MountRequest::new(Kind::Volume, dest);
            p.create_source = true;
            out.push(p);
        }
    }
    Ok(())
}
