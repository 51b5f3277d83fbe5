//! Container lifecycle: start, stop, restart, pause, unpause, rename, wait,
//! attach and resize. The monitor does the work; requests that last as
//! long as the container (stop, restart, wait) use an async connection
//! without a timeout.

use super::containers::find;
use super::error::ApiError;
use super::hijack::{hijack, Streams};
use super::util::{flag, parse_signal, Query};
use super::{conn, ApiResult, Shared};
use crate::protocol::{Request, Response, WaitCondition};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, Request as HttpRequest, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use serde_json::json;

/// 204, or 304 when the monitor says there was nothing to do.
async fn no_content(d: &Shared, req: Request) -> ApiResult<StatusCode> {
    match d.call(req).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(e) if e.status == StatusCode::NOT_MODIFIED => Ok(StatusCode::NOT_MODIFIED),
        Err(e) => Err(e),
    }
}

pub async fn start(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = find(&d, id).await?;
    super::create::ensure_rootfs(&d, &r.id).await?;
    no_content(&d, Request::Start { id: r.id }).await
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
        Some(s) => Some(parse_signal(s)? as i32),
        None => None,
    };
    let r = find(&d, id).await?;
    // The image or create config may name another stop signal.
    let signal = signal.or_else(|| {
        r.config["Config"]["StopSignal"]
            .as_str()
            .and_then(|s| parse_signal(s).ok())
            .map(|s| s as i32)
    });
    let timeout = timeout.or_else(|| r.config["Config"]["StopTimeout"].as_i64());
    no_content(
        &d,
        Request::Stop {
            id: r.id,
            timeout,
            signal,
        },
    )
    .await
}

pub async fn restart(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let timeout = stop_timeout(&q)?;
    let r = find(&d, id).await?;
    super::create::ensure_rootfs(&d, &r.id).await?;
    no_content(&d, Request::Restart { id: r.id, timeout }).await
}

pub async fn pause(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = find(&d, id).await?;
    no_content(&d, Request::Pause { id: r.id }).await
}

pub async fn unpause(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = find(&d, id).await?;
    no_content(&d, Request::Unpause { id: r.id }).await
}

pub async fn rename(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let name = q
        .get("name")
        .map(|n| n.trim_start_matches('/'))
        .unwrap_or("");
    if !super::create::valid_name(name) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let r = find(&d, id).await?;
    no_content(
        &d,
        Request::Rename {
            id: r.id,
            name: name.into(),
        },
    )
    .await
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
    let r = find(&d, id).await?;
    let req = Request::Wait {
        id: r.id,
        condition,
    };
    let body = futures_util::stream::once(async move {
        let doc = match d.call(req).await {
            Ok(Response::Exit { code }) => json!({ "StatusCode": code, "Error": null }),
            Ok(_) => json!({ "StatusCode": -1, "Error": { "Message": "unexpected answer" } }),
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.message } }),
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
    let r = find(&d, id).await?;
    d.call(Request::Resize {
        id: r.id,
        exec_id: None,
        height,
        width,
    })
    .await?;
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
    let r = find(&d, id).await?;
    let streams = Streams {
        stdout: flag(&q, "stdout"),
        stderr: flag(&q, "stderr"),
        tty: r.tty,
    };
    let stdin = flag(&q, "stdin") && r.open_stdin;
    let monitor = conn::open_stream(
        &d.monitor_socket,
        &Request::Attach {
            id: r.id.clone(),
            stdin,
        },
    )
    .await?;
    let mut e = crate::monitor::events::Event::new("container", "attach", &r.id);
    e.attributes.insert("name".into(), r.name.clone());
    d.publish(e).await;
    Ok(hijack(req, monitor, streams))
}
