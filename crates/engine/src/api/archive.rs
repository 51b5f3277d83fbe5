//! `/containers/{id}/archive` (`docker cp`): `HEAD` stats a path (the
//! `X-Docker-Container-Path-Stat` header), `GET` streams it out as a tar,
//! `PUT` extracts a tar into a directory. Running containers are reached
//! through `/proc/<pid>/root`, stopped ones through their overlay snapshot
//! (mounted again if needed); [`crate::container_fs`] keeps every path
//! inside that root.

use super::body_reader::ChannelReader;
use super::body_writer::ChannelWriter;
use super::error::ApiError;
use super::util::{flag, Query};
use super::{blocking, ApiResult, Shared};
use crate::container_fs::ExtractOptions;
use crate::service::EngineError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::io;
use tokio::sync::mpsc;

pub const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Chunks of copy-out in flight (64 KiB each): the walk waits for the client.
const CHANNEL_CHUNKS: usize = 8;
const CHUNK: usize = 64 * 1024;

/// A request's container path: `?path=` (required).
fn path_of(q: &Query) -> ApiResult<String> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.clone()),
        _ => Err(ApiError::bad_request("bad parameter: path cannot be empty")),
    }
}

pub async fn head(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let path = path_of(&q)?;
    let stat = d.copy_stat(&id, &path).await?;
    Ok(([(STAT_HEADER, stat.header_value())], ()).into_response())
}

pub async fn get(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let path = path_of(&q)?;
    let out = d.copy_out(&id, &path).await?;
    let stat = out.stat.header_value();
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let w = ChannelWriter::new(tx.clone(), CHUNK);
        if let Err(e) = out.write_to(Box::new(w)) {
            // Ends the body with an error: the client sees a cut archive,
            // never a short one that looks complete.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (CONTENT_TYPE.as_str(), "application/x-tar".to_string()),
            (STAT_HEADER, stat),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn put(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
    body: Body,
) -> ApiResult<StatusCode> {
    let path = path_of(&q)?;
    let opts = ExtractOptions {
        no_overwrite_dir_non_dir: flag(&q, "noOverwriteDirNonDir"),
        chown: None,
    };
    let copy_uid_gid = flag(&q, "copyUIDGID");
    let target = d.copy_in(&id, &path).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    // Extracts while the body arrives (a task of its own: the channel holds
    // only a few chunks).
    let task = tokio::spawn(blocking(move || {
        Ok(target.extract(ChannelReader::new(rx), opts, copy_uid_gid)?)
    }));
    let mut stream = body.into_data_stream();
    let mut tx = Some(tx);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| io::Error::other(format!("read the request body: {e}")));
        let failed = chunk.is_err();
        if let Some(sender) = &tx {
            // A closed channel: the extraction stopped (its result follows).
            if sender.send(chunk).await.is_err() {
                tx = None;
            }
        }
        if failed {
            break;
        }
        // The rest (the archive's trailing blocks, or all of it after an
        // error) is read and dropped: a client cut off while it still
        // writes sees a broken pipe instead of our answer.
    }
    drop(tx);
    task.await
        .map_err(|e| ApiError::from(EngineError::internal(format!("worker failed: {e}"))))??;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container_fs::FsError;

    fn api_error(e: FsError, path: &str, who: &str) -> ApiError {
        EngineError::from_fs(e, path, who).into()
    }

    #[test]
    fn docker_messages() {
        let e = api_error(FsError::NotFound("/x".into()), "/x", "web");
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        assert_eq!(e.message, "Could not find the file /x in container web");
        let e = api_error(FsError::NotADirectory("/x".into()), "/x", "web");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        let e = api_error(FsError::Conflict("cannot overwrite".into()), "/x", "web");
        assert_eq!(e.status, axum::http::StatusCode::CONFLICT);
    }
}
