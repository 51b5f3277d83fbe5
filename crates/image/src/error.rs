//! Errors of the image layer. Each names the image, registry, file or digest
//! concerned and, where there is one, the fix.

use std::path::PathBuf;

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{what}: not found{hint}")]
    NotFound { what: String, hint: String },
    #[error(
        "{registry}: authentication required or refused ({status}); run `cubby login {registry}`"
    )]
    Unauthorized { registry: String, status: u16 },
    #[error("{registry}: too many requests (429); try again later{retry}")]
    RateLimited { registry: String, retry: String },
    #[error("{registry}: server error {status} for {what}")]
    Server {
        registry: String,
        status: u16,
        what: String,
    },
    #[error("cannot reach {registry}: {reason}")]
    Network { registry: String, reason: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("unsupported {what}: {value}")]
    Unsupported { what: String, value: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("unsafe path in layer {layer}: {path:?} ({reason})")]
    UnsafeArchive {
        layer: String,
        path: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image} is used by container {container}: remove it first or use -f")]
    InUse { image: String, container: String },
}

impl ImageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }
}
