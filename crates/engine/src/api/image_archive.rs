//! `docker save` (`GET /images/get`, `GET /images/{name}/get`), `docker
//! load` (`POST /images/load`) and `docker import` (`POST
//! /images/create?fromSrc=-` with `changes`): the image layer's archive
//! functions, streamed between the HTTP body and a blocking thread through
//! a channel of a few chunks, so memory stays bounded whatever the image
//! size (the archive is never held whole).

use super::body_reader::ChannelReader;
use super::body_writer::ChannelWriter;
use super::error::ApiError;
use super::{blocking, ApiResult, Shared};
use crate::service::EngineError;
use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use cubby_image::archive;
use cubby_image::reference::Reference;
use futures_util::StreamExt;
use serde_json::json;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// Chunks in flight between the HTTP side and the archive's thread.
const CHUNKS: usize = 8;
const CHUNK: usize = 256 * 1024;

/// Forwards the request body to a [`ChannelReader`] (on a task of its own).
fn body_reader(body: Body) -> ChannelReader {
    let (tx, rx) = mpsc::channel(CHUNKS);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(|e| io::Error::other(format!("request body: {e}")));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    ChannelReader::new(rx)
}

/// `GET /images/get?names=A&names=B` and `GET /images/{name}/get`.
pub async fn save(d: Shared, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    let d2 = d.clone();
    // Every name is resolved before the first byte: a missing image is a
    // 404, not a truncated archive.
    let items = blocking(move || Ok(d2.image_save_items(&names)?)).await?;
    let (tx, rx) = mpsc::channel(CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter::new(tx.clone(), CHUNK);
        let r = archive::save(&d.images, &items, &mut w).and_then(|_| {
            w.flush()
                .map_err(|e| cubby_image::ImageError::io(std::path::Path::new("response"), e))
        });
        if let Err(e) = r {
            // Aborts the response: the client sees a broken transfer.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn json_lines(lines: Vec<serde_json::Value>) -> Response {
    let mut out = String::new();
    for l in lines {
        out.push_str(&l.to_string());
        out.push('\n');
    }
    ([(CONTENT_TYPE, "application/json")], out).into_response()
}

/// `POST /images/load`: Docker's `{"stream": "Loaded image: ..."}` lines.
pub async fn load(d: Shared, body: Body) -> ApiResult<Response> {
    let reader = body_reader(body);
    let loaded = blocking(move || Ok(d.image_load(reader)?)).await?;
    let lines = loaded
        .iter()
        .map(|l| {
            let text = match &l.name {
                Some(r) => format!("Loaded image: {}\n", r.familiar()),
                None => format!("Loaded image ID: {}\n", l.record.config_digest),
            };
            json!({ "stream": text })
        })
        .collect();
    Ok(json_lines(lines))
}

/// `POST /images/create?fromSrc=-&repo=R&tag=T&changes=...`: the body is
/// a root filesystem tar (plain, gzip or zstd).
pub async fn import(d: Shared, pairs: Vec<(String, String)>, body: Body) -> ApiResult<Response> {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if get("fromSrc").as_deref() != Some("-") {
        return Err(EngineError::Unsupported(
            "docker import from a URL (fromSrc): cubby imports only a tar sent with the request (`docker import FILE` or `-`)".into(),
        )
        .into());
    }
    if let Some(p) = get("platform") {
        let host = cubby_image::pull::Platform::host();
        if !p.ends_with(&host.architecture) {
            return Err(EngineError::Unsupported(format!(
                "docker import --platform {p}: cubby imports for this host's platform only"
            ))
            .into());
        }
    }
    let changes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "changes")
        .map(|(_, v)| v.clone())
        .collect();
    let name = match get("repo") {
        Some(repo) => {
            let full = match get("tag") {
                Some(t) => format!("{repo}:{t}"),
                None => repo,
            };
            Some(
                Reference::parse(&full)
                    .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?
                    .to_string(),
            )
        }
        None => None,
    };
    if get("message").is_some() {
        return Err(EngineError::Unsupported(
            "docker import --message: cubby does not record a commit message".into(),
        )
        .into());
    }
    let reader = body_reader(body);
    let rec = blocking(move || Ok(d.image_import(reader, name.as_deref(), &changes)?)).await?;
    Ok(json_lines(vec![
        json!({ "status": rec.config_digest.to_string() }),
    ]))
}
