//! Typed errors of the engine; each names what failed.

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
    #[error("runtime: {0}")]
    Runtime(#[from] cubby_runtime::Error),
    #[error("cgroup: {0}")]
    Cgroup(#[from] cubby_runtime::cgroups::CgroupError),
    #[error("corrupt container record {path}: {reason}")]
    CorruptRecord { path: PathBuf, reason: String },
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("the container name \"/{name}\" is already in use by container \"{id}\"")]
    NameInUse { name: String, id: String },
    #[error("container {id:?} is {status}: {wanted}")]
    WrongState {
        id: String,
        status: String,
        wanted: String,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Already in the wanted state.
    #[error("{0}")]
    NotModified(String),
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
