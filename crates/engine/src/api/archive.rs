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
use super::{ApiResult, Shared};
use crate::container_fs::{with_mounts, ContainerRoot, ExtractOptions, FsError};
use crate::service::archive::{join_view, open_root, stat_of, stopped_view};
use crate::service::EngineError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::io::{self, Write};
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

/// A [`FsError`] through the engine's one mapping.
fn api_error(e: FsError, path: &str, who: &str) -> ApiError {
    EngineError::from_fs(e, path, who).into()
}

pub async fn head(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let path = path_of(&q)?;
    let r = d.find(&id).await?;
    if let Some((rootfs, mounts)) = stopped_view(&d, &r).await? {
        let p = path.clone();
        let h = with_mounts(rootfs, mounts, move |root| root.stat(&p));
        let stat = join_view(h, &path, &id)
            .await?
            .map_err(|e| api_error(e, &path, &id))?;
        return Ok(([(STAT_HEADER, stat.header_value())], ()).into_response());
    }
    let (_, stat) = stat_of(&d, id, path).await?;
    Ok(([(STAT_HEADER, stat.header_value())], ()).into_response())
}

pub async fn get(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let path = path_of(&q)?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let send_archive = move |root: ContainerRoot, path: String| {
        let mut w = ChannelWriter::new(tx.clone(), CHUNK);
        let done = root
            .archive(&path, &mut w)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| w.flush());
        if let Err(e) = done {
            // Ends the body with an error: the client sees a cut archive,
            // never a short one that looks complete.
            let _ = tx.blocking_send(Err(e));
        }
    };
    let r = d.find(&id).await?;
    let stat = if let Some((rootfs, mounts)) = stopped_view(&d, &r).await? {
        // Stat and archive on the thread that sees the mounts; the
        // archive streams on after the stat is answered.
        let (stat_tx, stat_rx) = tokio::sync::oneshot::channel();
        let p = path.clone();
        let h = with_mounts(rootfs, mounts, move |root| {
            let stat = root.stat(&p);
            let ok = stat.is_ok();
            let _ = stat_tx.send(stat);
            if ok {
                send_archive(root, p);
            }
        });
        match stat_rx.await {
            Ok(stat) => stat.map_err(|e| api_error(e, &path, &id))?,
            // The thread failed before the stat: its error says why.
            Err(_) => {
                join_view(h, &path, &id).await?;
                return Err(ApiError::internal("copy-out ended early"));
            }
        }
    } else {
        let (root, stat) = stat_of(&d, id, path.clone()).await?;
        tokio::task::spawn_blocking(move || send_archive(root, path));
        stat
    };
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (CONTENT_TYPE.as_str(), "application/x-tar".to_string()),
            (STAT_HEADER, stat.header_value()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// `uid[:gid]` or names from the container's own passwd/group (`docker cp
/// -a` chowns to the container's user); empty is root.
fn container_user(root: &ContainerRoot, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let passwd = root.read_small("/etc/passwd").unwrap_or_default();
    let group = root.read_small("/etc/group").unwrap_or_default();
    crate::users::lookup(&passwd, &group, user)
}

pub async fn put(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
    body: Body,
) -> ApiResult<StatusCode> {
    let path = path_of(&q)?;
    let mut opts = ExtractOptions {
        no_overwrite_dir_non_dir: flag(&q, "noOverwriteDirNonDir"),
        chown: None,
    };
    let copy_uid_gid = flag(&q, "copyUIDGID");
    let r = d.find(&id).await?;
    let user = r
        .config
        .pointer("/Config/User")
        .and_then(|u| u.as_str())
        .unwrap_or("")
        .to_string();
    let root = open_root(&d, r, &path, &id).await?;

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let (p2, id2) = (path.clone(), id.clone());
    let task = tokio::task::spawn_blocking(move || {
        if copy_uid_gid {
            opts.chown = Some(container_user(&root, &user).map_err(ApiError::bad_request)?);
        }
        let reader = ChannelReader::new(rx);
        root.extract(&p2, reader, &opts)
            .map_err(|e| api_error(e, &p2, &id2))
    });
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
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))??;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn users_from_the_container() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nstudent:x:1000:1001::/home/s:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let root = ContainerRoot::at(t.path()).unwrap();
        assert_eq!(container_user(&root, "").unwrap(), (0, 0));
        assert_eq!(container_user(&root, "student").unwrap(), (1000, 1001));
        assert_eq!(container_user(&root, "1000").unwrap(), (1000, 1001));
        assert_eq!(container_user(&root, "student:staff").unwrap(), (1000, 50));
        assert_eq!(container_user(&root, "7:8").unwrap(), (7, 8));
        assert!(container_user(&root, "nobody").is_err());
        assert!(container_user(&root, "student:nogroup").is_err());
    }
}
