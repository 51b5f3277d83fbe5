//! Typed errors of the runtime. Every variant names the thing that failed so a
//! caller can print one clear line.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("bundle config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("capabilities: {0}")]
    Capabilities(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("container {id:?} is {status}, {wanted}")]
    WrongState {
        id: String,
        status: String,
        wanted: String,
    },
    #[error("invalid container id {0:?}: use letters, digits, '_', '-' and '.'")]
    InvalidId(String),
    /// The container's command cannot be run; `code` is Docker's exit code
    /// for it (127 not found, 126 not executable).
    #[error("{text}")]
    CannotExec { code: u8, text: String },
    /// Raised inside the container's setup and passed to the parent over the
    /// sync channel, so the caller sees the child's reason.
    #[error("{0}")]
    Child(String),
    /// An OCI hook failed (its kind, index, path and quoted output).
    #[error("{0}")]
    Hook(String),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
    pub fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }
}

impl Error {
    /// Docker's exit code for a command that cannot be run, 0 otherwise.
    pub fn exec_code(&self) -> u8 {
        match self {
            Error::CannotExec { code, .. } => *code,
            _ => 0,
        }
    }

    /// Rebuilds an error reported by a container's setup process.
    pub fn from_child(code: u8, text: String) -> Error {
        if code != 0 {
            Error::CannotExec { code, text }
        } else {
            Error::Child(text)
        }
    }
}

/// Adds context to a raw syscall result: `mount(...).ctx(|| format!("mount {dst}"))`.
pub trait Context<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
