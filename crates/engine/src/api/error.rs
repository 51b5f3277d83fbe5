//! API errors as Docker returns them: a status and `{"message": "..."}`.

use crate::service::EngineError;
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
    /// A path no route serves (Docker's wording).
    pub fn page_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "page not found")
    }
}

/// The one mapping of engine errors to Docker's statuses.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match &e {
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            EngineError::NotModified(_) => StatusCode::NOT_MODIFIED,
            EngineError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match e {
            EngineError::NotFound(m)
            | EngineError::Conflict(m)
            | EngineError::InvalidArgument(m)
            | EngineError::NotModified(m)
            | EngineError::Unsupported(m)
            | EngineError::Forbidden(m)
            | EngineError::Unauthorized(m)
            | EngineError::Internal(m) => m,
        };
        ApiError::new(status, message)
    }
}

/// Errors of the layers below, through the engine's mapping.
macro_rules! via_engine {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> ApiError {
                EngineError::from(e).into()
            }
        }
    )*};
}
via_engine!(
    crate::client::ClientError,
    crate::config::ConfigError,
    crate::volumes::VolumeError,
    cubby_network::NetError,
    cubby_image::ImageError,
    crate::error::Error
);

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
    use crate::client::ClientError;
    use crate::protocol::ErrorKind;

    #[test]
    fn engine_errors_map_to_statuses() {
        let e: ApiError = ClientError::Monitor {
            kind: ErrorKind::Conflict,
            message: "running".into(),
        }
        .into();
        assert_eq!(e, ApiError::new(StatusCode::CONFLICT, "running"));
        let s = |e: EngineError| ApiError::from(e).status;
        assert_eq!(s(EngineError::not_found("x")), StatusCode::NOT_FOUND);
        assert_eq!(s(EngineError::invalid("x")), StatusCode::BAD_REQUEST);
        assert_eq!(
            s(EngineError::NotModified("x".into())),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            s(EngineError::Unsupported("x".into())),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(s(EngineError::Forbidden("x".into())), StatusCode::FORBIDDEN);
        assert_eq!(
            s(EngineError::Unauthorized("x".into())),
            StatusCode::UNAUTHORIZED
        );
        let e: ApiError = ClientError::Broken.into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
