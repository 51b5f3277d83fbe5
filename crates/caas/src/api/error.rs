//! One JSON error shape for every failure: `{"error": {"code", "message"}}`
//! with the status that fits, and a JSON body extractor whose rejections
//! (malformed JSON, wrong fields) use the same shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::backend::BackendError;
use crate::error::Error;

impl Error {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::Backend(BackendError::ImageMissing { .. }) => {
                (StatusCode::BAD_REQUEST, "image_missing")
            }
            Error::Backend(BackendError::Invalid(_))
            | Error::Backend(BackendError::Unsupported(_)) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::Backend(BackendError::NotFound { .. }) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Backend(BackendError::NetworkTooSmall(_)) => (StatusCode::CONFLICT, "conflict"),
            Error::Backend(_) => (StatusCode::BAD_GATEWAY, "backend"),
            Error::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database"),
            Error::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            crate::log!("warn", "{status}: {self}");
        }
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        let mut r = (status, axum::Json(body)).into_response();
        if let Error::RateLimited(_) = self {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        r
    }
}

/// `axum::Json` with our error shape on rejection.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) => Err(Error::Invalid(match e {
                JsonRejection::MissingJsonContentType(_) => {
                    "send the body as JSON with Content-Type: application/json".to_string()
                }
                other => format!("request body: {}", other.body_text()),
            })),
        }
    }
}

/// `axum::extract::Query` with our error shape on rejection.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| Error::Invalid(format!("query string: {}", e.body_text())))
    }
}
