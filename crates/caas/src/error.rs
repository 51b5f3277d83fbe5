//! One error type for the service's domain logic; the API maps each kind to
//! one HTTP status and one JSON shape (see `api::error`).

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: what is wrong and how to fix it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (duplicate name, class full).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("database: {0}")]
    Database(String),
    /// The archive store (local directory or S3) failed or refused.
    #[error("archive store: {0}")]
    Storage(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return Error::Conflict(format!("already exists ({})", db.message()));
            }
        }
        Error::Database(e.to_string())
    }
}

/// True for a unique-constraint violation (a duplicate insert).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
