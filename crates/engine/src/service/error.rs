//! [`EngineError`]: what every [`super::Engine`] call returns. Each variant
//! carries the message a user sees (Docker's wording where clients match on
//! it); only `api/` turns a variant into an HTTP status, in one place.

use crate::client::ClientError;
use crate::protocol::ErrorKind;

pub type EngineResult<T> = std::result::Result<T, EngineError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No such container, image, network, volume or exec.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists in a state that refuses the request (running, name
    /// in use, already exists).
    #[error("{0}")]
    Conflict(String),
    /// A value the caller gave is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// Already in the wanted state; nothing was done.
    #[error("{0}")]
    NotModified(String),
    /// An option cubby does not implement (refused, never dropped).
    #[error("{0}")]
    Unsupported(String),
    /// Allowed by syntax, refused by policy (a network still in use).
    #[error("{0}")]
    Forbidden(String),
    /// A registry refused the credentials (or their absence).
    #[error("{0}")]
    Unauthorized(String),
    /// cubby's own failure: I/O, the monitor, the runtime.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn not_found(m: impl Into<String>) -> Self {
        EngineError::NotFound(m.into())
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        EngineError::Conflict(m.into())
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        EngineError::InvalidArgument(m.into())
    }
    pub fn internal(m: impl Into<String>) -> Self {
        EngineError::Internal(m.into())
    }
    /// Docker's wording, which clients match on.
    pub fn no_such_container(id: &str) -> Self {
        EngineError::NotFound(format!("No such container: {id}"))
    }
    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            EngineError::NotFound(m)
            | EngineError::Conflict(m)
            | EngineError::InvalidArgument(m)
            | EngineError::NotModified(m)
            | EngineError::Unsupported(m)
            | EngineError::Forbidden(m)
            | EngineError::Unauthorized(m)
            | EngineError::Internal(m) => m,
        }
    }
}

impl EngineError {
    /// A container filesystem error (copy in/out) as Docker words it;
    /// `path` and `who` (the container) as the client gave them.
    pub fn from_fs(e: crate::container_fs::FsError, path: &str, who: &str) -> EngineError {
        use crate::container_fs::FsError;
        use nix::errno::Errno;
        match e {
            FsError::NotFound(_) => {
                EngineError::NotFound(format!("Could not find the file {path} in container {who}"))
            }
            FsError::NotADirectory(_) => {
                EngineError::invalid("extraction point is not a directory")
            }
            FsError::Escape { .. } | FsError::BadArchive(_) => EngineError::invalid(e.to_string()),
            FsError::Conflict(m) => EngineError::Conflict(m),
            FsError::Sys {
                source: Errno::ELOOP | Errno::EXDEV,
                ..
            } => EngineError::invalid(format!(
                "container {who}: {path}: too many levels of symbolic links, or a magic link"
            )),
            FsError::Sys {
                source: Errno::EROFS,
                ..
            } => EngineError::Forbidden(format!(
                "container {who}: {path} is on a read-only file system"
            )),
            e => EngineError::internal(format!("container {who}: {e}")),
        }
    }
}

impl From<ClientError> for EngineError {
    fn from(e: ClientError) -> EngineError {
        match e {
            ClientError::Monitor { kind, message } => EngineError::from_kind(kind, message),
            other => EngineError::Internal(format!("container monitor: {other}")),
        }
    }
}

impl EngineError {
    /// A monitor error kind as an engine error.
    pub fn from_kind(kind: ErrorKind, message: String) -> EngineError {
        match kind {
            ErrorKind::NotFound => EngineError::NotFound(message),
            ErrorKind::AlreadyExists | ErrorKind::Conflict => EngineError::Conflict(message),
            ErrorKind::Invalid => EngineError::InvalidArgument(message),
            ErrorKind::NotModified => EngineError::NotModified(message),
            // A request the monitor could not parse is the engine's fault.
            ErrorKind::BadRequest | ErrorKind::Internal => EngineError::Internal(message),
        }
    }
}

/// The monitor's and records' own errors, classed as the monitor classes
/// them on the wire.
impl From<crate::error::Error> for EngineError {
    fn from(e: crate::error::Error) -> EngineError {
        EngineError::from_kind(ErrorKind::of(&e), e.to_string())
    }
}

impl From<crate::config::ConfigError> for EngineError {
    fn from(e: crate::config::ConfigError) -> EngineError {
        use crate::config::ConfigError as C;
        match e {
            C::Refused(m) => EngineError::Unsupported(m),
            C::NotFound(m) => EngineError::NotFound(m),
            // Docker refuses a create option it cannot apply with a 400, as
            // any other bad value: so is an option cubby does not implement.
            e => EngineError::InvalidArgument(e.to_string()),
        }
    }
}

impl From<cubby_network::NetError> for EngineError {
    fn from(e: cubby_network::NetError) -> EngineError {
        use cubby_network::NetError as N;
        let m = e.to_string();
        match e {
            N::NotFound(_) => EngineError::NotFound(m),
            N::Exists(_) => EngineError::Conflict(m),
            N::InUse { .. } => EngineError::Forbidden(m),
            N::Invalid(_) | N::Exhausted { .. } => EngineError::InvalidArgument(m),
            _ => EngineError::Internal(m),
        }
    }
}

impl From<crate::volumes::VolumeError> for EngineError {
    fn from(e: crate::volumes::VolumeError) -> EngineError {
        use crate::volumes::VolumeError as V;
        let m = e.to_string();
        match e {
            V::InvalidName(_) | V::InvalidOption(_) | V::InvalidSize { .. } => {
                EngineError::InvalidArgument(m)
            }
            V::NotFound(_) | V::NoSuchDriver(_) => EngineError::NotFound(m),
            V::InUse { .. } | V::DriverConflict { .. } => EngineError::Conflict(m),
            V::Unsupported { .. } => EngineError::Unsupported(m),
            V::Corrupt { .. } | V::Io { .. } | V::Loop { .. } => EngineError::Internal(m),
        }
    }
}

impl From<cubby_image::ImageError> for EngineError {
    fn from(e: cubby_image::ImageError) -> EngineError {
        use cubby_image::ImageError as I;
        let m = e.to_string();
        match e {
            I::NotFound { .. } => EngineError::NotFound(m),
            // Something the request names (a --change instruction, an
            // archive's layer type) that cubby cannot take: Docker's 400.
            I::InvalidReference { .. } | I::Invalid { .. } | I::Unsupported { .. } => {
                EngineError::InvalidArgument(m)
            }
            I::Unauthorized { .. } => EngineError::Unauthorized(m),
            I::InUse { .. } => EngineError::Conflict(m),
            _ => EngineError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_kinds_map_to_engine_errors() {
        let e: EngineError = ClientError::Monitor {
            kind: ErrorKind::Conflict,
            message: "running".into(),
        }
        .into();
        assert_eq!(e, EngineError::conflict("running"));
        let e: EngineError = ClientError::Broken.into();
        assert!(matches!(e, EngineError::Internal(_)));
        let e: EngineError = crate::config::ConfigError::unsupported("HostConfig.X").into();
        assert!(matches!(e, EngineError::InvalidArgument(m) if m.contains("HostConfig.X")));
    }
}
