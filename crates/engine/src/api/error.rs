//! API errors as Docker returns them: a status and `{"message": "..."}`.

use crate::client::ClientError;
use crate::protocol::ErrorKind;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// Docker's wording, which clients match on.
    pub fn no_such_container(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("No such container: {id}"))
    }
}

/// The HTTP status for a monitor error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotModified => StatusCode::NOT_MODIFIED,
        // A request the monitor could not parse is the daemon's fault.
        ErrorKind::BadRequest | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        match e {
            ClientError::Monitor { kind, message } => ApiError::new(status_of(kind), message),
            other => ApiError::internal(format!("container monitor: {other}")),
        }
    }
}

impl From<crate::config::ConfigError> for ApiError {
    fn from(e: crate::config::ConfigError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A 304 carries no body.
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_kinds_map_to_statuses() {
        let e: ApiError = ClientError::Monitor {
            kind: ErrorKind::Conflict,
            message: "running".into(),
        }
        .into();
        assert_eq!(e, ApiError::new(StatusCode::CONFLICT, "running"));
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorKind::Invalid), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorKind::AlreadyExists), StatusCode::CONFLICT);
        let e: ApiError = ClientError::Broken.into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
