//! `docker exec`: `POST /containers/{id}/exec` records the exec in the
//! daemon (Docker's two-step API), `POST /exec/{id}/start` asks the monitor
//! to run it (hijacking the connection unless detached), `GET
//! /exec/{id}/json` reports it, `POST /exec/{id}/resize` sizes its TTY.
//!
//! Exec configs that were never started live only in the daemon's memory
//! (a restarted daemon forgets them, as Docker forgets them on restart);
//! started ones are known to the monitor.

use super::error::ApiError;
use super::hijack::{hijack_then, Streams};
use super::util::Query;
use super::{ApiResult, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query as Q, Request as HttpRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use bollard_stubs::models::ExecConfig;
use serde_json::{json, Value};

pub async fn create(
    State(d): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let config: ExecConfig = super::json::decode(&body, "exec body")?;
    let exec_id = d.exec_create(&id, config).await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": exec_id }))))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct StartBody {
    detach: bool,
    tty: Option<bool>,
}

pub async fn start(
    State(d): State<Shared>,
    Path(exec_id): Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("exec start body: {e}")))?;
    let body: StartBody = super::json::decode(&bytes, "exec start body")?;
    let e = d.exec_entry(&exec_id)?;
    let req = d.exec_begin(&exec_id, body.detach, body.tty)?;
    if body.detach {
        d.exec_run_detached(req).await?;
        return Ok(StatusCode::OK.into_response());
    }
    let c = &e.config;
    let streams = Streams {
        stdout: c.attach_stdout.unwrap_or(true),
        stderr: c.attach_stderr.unwrap_or(true),
        tty: req.tty,
    };
    let d2 = d.clone();
    let open = async move { d2.exec_open(req).await.map_err(ApiError::from) };
    Ok(hijack_then(
        HttpRequest::from_parts(parts, axum::body::Body::empty()),
        streams,
        open,
    ))
}

pub async fn inspect(
    State(d): State<Shared>,
    Path(exec_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (e, state) = d.exec_inspect(&exec_id).await?;
    let c = &e.config;
    let cmd = c.cmd.clone().unwrap_or_default();
    Ok(Json(json!({
        "ID": exec_id,
        "ContainerID": e.container,
        "Running": state.as_ref().is_some_and(|s| s.running),
        "ExitCode": state.as_ref().and_then(|s| s.exit_code).or(e.failed),
        "Pid": state.as_ref().map_or(0, |s| s.pid),
        "OpenStdin": c.attach_stdin.unwrap_or(false),
        "OpenStdout": c.attach_stdout.unwrap_or(false),
        "OpenStderr": c.attach_stderr.unwrap_or(false),
        "CanRemove": false,
        "DetachKeys": "",
        "ProcessConfig": {
            "tty": c.tty.unwrap_or(false),
            "entrypoint": cmd.first().cloned().unwrap_or_default(),
            "arguments": cmd.get(1..).unwrap_or(&[]),
            "privileged": c.privileged.unwrap_or(false),
            "user": c.user.clone().unwrap_or_default(),
        },
    })))
}

pub async fn resize(
    State(d): State<Shared>,
    Path(exec_id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let num = |k: &str| -> ApiResult<u16> {
        let v = q.get(k).map(String::as_str).unwrap_or("");
        v.parse()
            .map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}")))
    };
    d.exec_resize(&exec_id, num("h")?, num("w")?).await?;
    Ok(StatusCode::OK)
}
