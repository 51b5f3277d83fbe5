//! Container lifecycle: start, stop, restart, pause, unpause, rename, wait,
//! attach and resize. The monitor does the work; requests that last as
//! long as the container (stop, restart, wait) use an async connection
//! without a timeout.

use super::error::ApiError;
use super::hijack::{hijack, Streams};
use super::util::{flag, parse_signal, Query};
use super::{ApiResult, Shared};
use crate::protocol::WaitCondition;
use crate::service::{EngineError, EngineResult};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, Request as HttpRequest, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use serde_json::json;

/// 204, or 304 when the engine says there was nothing to do.
fn no_content(r: EngineResult<()>) -> ApiResult<StatusCode> {
    match r {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(EngineError::NotModified(_)) => Ok(StatusCode::NOT_MODIFIED),
        Err(e) => Err(e.into()),
    }
}

pub async fn start(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    no_content(d.start(&id).await)
}

/// `t` (or Docker's older `timeout`) in seconds; -1 waits for ever.
fn stop_timeout(q: &Query) -> ApiResult<Option<i64>> {
    match q.get("t").or_else(|| q.get("timeout")).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid timeout {t:?}"))),
    }
}

pub async fn stop(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let timeout = stop_timeout(&q)?;
    let signal = match q.get("signal").filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_signal(s)?),
        None => None,
    };
    no_content(d.stop(&id, timeout, signal).await)
}

pub async fn restart(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let timeout = stop_timeout(&q)?;
    no_content(d.restart(&id, timeout).await)
}

pub async fn pause(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    no_content(d.pause(&id).await)
}

pub async fn unpause(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    no_content(d.unpause(&id).await)
}

pub async fn rename(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let name = q.get("name").map(String::as_str).unwrap_or("");
    no_content(d.rename(&id, name).await)
}

/// Answers at once with 200 and its headers (the docker CLI waits for
/// them before it starts a container), then sends
/// `{"StatusCode": N, "Error": null}` when the condition holds.
pub async fn wait(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<HttpResponse> {
    let condition = match q.get("condition").map(String::as_str) {
        None | Some("" | "not-running") => WaitCondition::NotRunning,
        Some("next-exit") => WaitCondition::NextExit,
        Some("removed") => WaitCondition::Removed,
        Some(c) => return Err(ApiError::bad_request(format!("invalid condition: {c:?}"))),
    };
    let r = d.find(&id).await?;
    let body = futures_util::stream::once(async move {
        let doc = match d.wait(&r.id, condition).await {
            Ok(code) => json!({ "StatusCode": code, "Error": null }),
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.message() } }),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{doc}\n")))
    });
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

fn size(q: &Query, key: &str) -> ApiResult<u16> {
    let v = q.get(key).map(String::as_str).unwrap_or("");
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {key} {v:?}: a number 0-65535")))
}

pub async fn resize(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let (height, width) = (size(&q, "h")?, size(&q, "w")?);
    d.resize(&id, height, width).await?;
    Ok(StatusCode::OK)
}

/// `POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1`.
/// `logs=1` replays the log first is not supported (the stream starts now).
pub async fn attach(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (monitor, r) = d.attach(&id, flag(&q, "stdin")).await?;
    let streams = Streams {
        stdout: flag(&q, "stdout"),
        stderr: flag(&q, "stderr"),
        tty: r.tty,
    };
    Ok(hijack(req, monitor, streams))
}
