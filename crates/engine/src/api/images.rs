//! Images: list, inspect, history, tag, remove, prune, and pull
//! (`POST /images/create`: [`Engine::pull`](crate::service::Engine::pull)'s
//! events as Docker's JSON progress stream).
//!
//! Image names contain slashes (`127.0.0.1:5000/test/busybox:latest`), so
//! `/images/{name}/json|history|tag` and `DELETE /images/{name}` are served
//! from one catch-all route ([`get`], [`post`], [`delete`]) that splits the
//! action off the end, as Docker's `{name:.*}` routes do.
//!
//! Records sharing a config digest are one image (one Id, several
//! RepoTags). An image is "used" when a container's snapshot says so
//! (`<root>/containers/<id>/image`, written at create), the check `cubby
//! rmi` makes too.

use super::error::ApiError;
use super::util::{flag, unix_secs, Query};
use super::{blocking, ApiResult, Shared};
use crate::service::pull::{PullEvent, PullRequest};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use bollard_stubs::models::{
    CreateImageInfo, ErrorDetail, HistoryResponseItem, ImageConfig, ImageDeleteResponseItem,
    ImageInspect, ImageInspectRootFs, ImageSummary, ProgressDetail,
};
use cubby_image::auth::Credentials;
use cubby_image::digest::Digest;
use cubby_image::progress::{progress_bar, LayerStatus};
use cubby_image::pull::Platform;
use cubby_image::reference::Reference;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc::UnboundedSender;

use crate::service::images::ImageRemoved;
use crate::service::EngineError;

fn labels(config: &Value) -> HashMap<String, String> {
    config["config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------ list

/// `filters` as Docker sends it: `{"name": {"value": true}}` (or the old
/// `{"name": ["value"]}`).
pub fn parse_filters(q: &Query) -> ApiResult<HashMap<String, Vec<String>>> {
    let Some(raw) = q.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(HashMap::new());
    };
    let v: Value = super::json::decode(raw.as_bytes(), &format!("filters {raw:?}"))?;
    let mut out = HashMap::new();
    for (k, vals) in v.as_object().into_iter().flatten() {
        let list: Vec<String> = match vals {
            Value::Object(m) => m
                .iter()
                .filter(|(_, on)| on.as_bool() != Some(false))
                .map(|(v, _)| v.clone())
                .collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter {k:?}"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

/// Go's `path.Match` for image names: `*` and `?` stop at `/`.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => {
                matches!(s.split_first(), Some((c, t)) if *c != b'/' && go(rest, t))
            }
            Some((c, rest)) => matches!(s.split_first(), Some((d, t)) if d == c && go(rest, t)),
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// Docker's `reference` filter: the pattern against `name:tag`, or against
/// `name` when the pattern has no tag.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    if glob(pattern, tag) {
        return true;
    }
    let pattern_has_tag = pattern.rsplit('/').next().is_some_and(|l| l.contains(':'));
    let name = tag
        .rsplit_once(':')
        .map_or(tag, |(n, t)| if t.contains('/') { tag } else { n });
    !pattern_has_tag && glob(pattern, name)
}

pub async fn list(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<Vec<ImageSummary>>> {
    let filters = parse_filters(&q)?;
    for k in filters.keys() {
        if !matches!(k.as_str(), "reference" | "dangling" | "label") {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    blocking(move || {
        let images = d.image_groups()?;
        let mut out = Vec::new();
        for img in images {
            let tags = img.tags();
            if let Some(want) = filters.get("dangling").and_then(|v| v.first()) {
                let want = match want.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter 'dangling={other}'"
                        )))
                    }
                };
                // Docker's dangling: neither a tag nor a digest reference.
                if (tags.is_empty() && img.digests().is_empty()) != want {
                    continue;
                }
            }
            let mut tags = tags;
            let mut digests = img.digests();
            if let Some(pats) = filters.get("reference") {
                if !tags
                    .iter()
                    .any(|t| pats.iter().any(|p| reference_matches(p, t)))
                {
                    continue;
                }
                // dockerd lists only the tags the filter matched.
                tags.retain(|t| pats.iter().any(|p| reference_matches(p, t)));
                digests.retain(|dg| {
                    let name = dg.split_once('@').map_or(dg.as_str(), |(n, _)| n);
                    pats.iter().any(|p| reference_matches(p, name))
                });
            }
            // A broken config must not hide the whole list.
            let config = d.image_config(&img.id).unwrap_or(Value::Null);
            let labels = labels(&config);
            if let Some(want) = filters.get("label") {
                let ok = want.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                    None => labels.contains_key(l),
                });
                if !ok {
                    continue;
                }
            }
            let created = config["created"]
                .as_str()
                .map(unix_secs)
                .unwrap_or_else(|| img.records.first().map_or(0, |r| unix_secs(&r.created)));
            out.push(ImageSummary {
                id: img.id.to_string(),
                parent_id: String::new(),
                repo_tags: tags,
                repo_digests: digests,
                created,
                size: img.size() as i64,
                shared_size: -1,
                virtual_size: Some(img.size() as i64),
                labels,
                containers: -1,
                manifests: None,
                descriptor: None,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(Json(out))
    })
    .await
}

// ----------------------------------------------------- {name}/action routes

/// `name/json` → (`name`, `json`).
fn split_action(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or((path, ""))
}

pub async fn get(State(d): State<Shared>, Path(path): Path<String>) -> ApiResult<Response> {
    match split_action(&path) {
        (name, "json") => inspect(d, name.to_string())
            .await
            .map(IntoResponse::into_response),
        (name, "history") => history(d, name.to_string())
            .await
            .map(IntoResponse::into_response),
        (name, "get") => super::image_archive::save(d, vec![name.to_string()]).await,
        _ => Err(ApiError::page_not_found()),
    }
}

pub async fn post(
    State(d): State<Shared>,
    Path(path): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    match split_action(&path) {
        (name, "tag") => tag(d, name.to_string(), q)
            .await
            .map(IntoResponse::into_response),
        (_, "push") => Err(EngineError::Unsupported(
            "push through the API is not supported by cubby yet: use `cubby push`".into(),
        )
        .into()),
        _ => Err(ApiError::page_not_found()),
    }
}

async fn inspect(d: Shared, name: String) -> ApiResult<Json<ImageInspect>> {
    blocking(move || {
        let (img, _) = d.image_resolve(&name)?;
        let config = d.image_config(&img.id)?;
        let str_of = |k: &str| config[k].as_str().map(str::to_string);
        let image_config: Option<ImageConfig> =
            serde_json::from_value(config["config"].clone()).ok();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
        Ok(Json(ImageInspect {
            id: Some(img.id.to_string()),
            repo_tags: Some(img.tags()),
            repo_digests: Some(img.digests()),
            parent: Some(String::new()),
            comment: Some(str_of("comment").unwrap_or_default()),
            created: str_of("created"),
            docker_version: Some(str_of("docker_version").unwrap_or_default()),
            author: Some(str_of("author").unwrap_or_default()),
            config: image_config,
            architecture: str_of("architecture"),
            variant: str_of("variant"),
            os: str_of("os"),
            size: Some(img.size() as i64),
            virtual_size: Some(img.size() as i64),
            root_fs: Some(ImageInspectRootFs {
                typ: "layers".into(),
                layers: diff_ids,
            }),
            ..Default::default()
        }))
    })
    .await
}

async fn history(d: Shared, name: String) -> ApiResult<Json<Vec<HistoryResponseItem>>> {
    blocking(move || {
        let (img, _) = d.image_resolve(&name)?;
        let config = d.image_config(&img.id)?;
        let entries = config["history"].as_array().cloned().unwrap_or_default();
        let chains = img
            .records
            .first()
            .map(|r| r.layers.clone())
            .unwrap_or_default();
        // Entries that made a layer take the layers' unpacked sizes in order.
        let mut layer = 0;
        let mut out: Vec<HistoryResponseItem> = entries
            .iter()
            .map(|h| {
                let size = if h["empty_layer"].as_bool() == Some(true) {
                    0
                } else {
                    layer += 1;
                    chains.get(layer - 1).map_or(0, |c| d.layer_size(c))
                };
                HistoryResponseItem {
                    id: "<missing>".into(),
                    created: h["created"].as_str().map(unix_secs).unwrap_or(0),
                    created_by: h["created_by"].as_str().unwrap_or("").into(),
                    tags: Vec::new(),
                    size: size as i64,
                    comment: h["comment"].as_str().unwrap_or("").into(),
                }
            })
            .collect();
        // Newest first; the image's id and tags on the top entry, as Docker.
        out.reverse();
        if let Some(top) = out.first_mut() {
            top.id = img.id.to_string();
            top.tags = img.tags();
        }
        Ok(Json(out))
    })
    .await
}

async fn tag(d: Shared, name: String, q: Query) -> ApiResult<StatusCode> {
    let repo = q.get("repo").cloned().unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad_request("repository name (repo) is required"));
    }
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    blocking(move || {
        d.image_tag(&name, &target)?;
        Ok(StatusCode::CREATED)
    })
    .await
}

// ---------------------------------------------------------------- remove

fn removed_doc(r: ImageRemoved) -> ImageDeleteResponseItem {
    match r {
        ImageRemoved::Untagged(n) => ImageDeleteResponseItem {
            untagged: Some(n),
            deleted: None,
        },
        ImageRemoved::Deleted(id) => ImageDeleteResponseItem {
            untagged: None,
            deleted: Some(id),
        },
    }
}

pub async fn delete(
    State(d): State<Shared>,
    Path(name): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Json<Vec<ImageDeleteResponseItem>>> {
    let removed = d
        .image_remove(&name, flag(&q, "force"), !flag(&q, "noprune"))
        .await?;
    Ok(Json(removed.into_iter().map(removed_doc).collect()))
}

/// `POST /images/prune`: removes unused dangling images, then unreferenced
/// blobs and layers (`filters` other than `dangling` are not supported).
pub async fn prune(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<Value>> {
    let filters = parse_filters(&q)?;
    let all = filters
        .get("dangling")
        .and_then(|v| v.first())
        .is_some_and(|v| v == "false" || v == "0");
    if let Some(k) = filters.keys().find(|k| k.as_str() != "dangling") {
        return Err(EngineError::Unsupported(format!(
            "prune filter '{k}' is not supported by cubby yet"
        ))
        .into());
    }
    let (removed, freed) = blocking(move || Ok(d.image_prune(all)?)).await?;
    let deleted: Vec<Value> = removed
        .into_iter()
        .map(|r| match r {
            ImageRemoved::Untagged(n) => serde_json::json!({ "Untagged": n }),
            ImageRemoved::Deleted(id) => serde_json::json!({ "Deleted": id }),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { Value::Array(deleted) },
        "SpaceReclaimed": freed,
    })))
}

// ------------------------------------------------------------------ pull

/// One line of Docker's JSON progress stream.
pub fn status_line(status: impl Into<String>, id: Option<&str>) -> CreateImageInfo {
    CreateImageInfo {
        id: id.map(str::to_string),
        status: Some(status.into()),
        ..Default::default()
    }
}

/// The JSON line Docker sends for a layer event.
pub fn layer_line(digest: &Digest, status: LayerStatus) -> CreateImageInfo {
    let mut line = status_line(status.text(), Some(digest.short()));
    line.progress_detail = Some(match status.bytes() {
        Some((current, total)) => {
            line.progress = Some(progress_bar(current, total));
            ProgressDetail {
                current: Some(current as i64),
                total: Some(total as i64),
            }
        }
        None => ProgressDetail::default(),
    });
    line
}

pub fn error_line(message: &str) -> CreateImageInfo {
    CreateImageInfo {
        error: Some(message.to_string()),
        error_detail: Some(ErrorDetail {
            code: None,
            message: Some(message.to_string()),
        }),
        ..Default::default()
    }
}

fn to_bytes(line: &CreateImageInfo) -> Bytes {
    let mut v = serde_json::to_vec(line).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}

enum Msg {
    Line(Bytes),
    /// Failed before anything was sent: answered as an HTTP error.
    Fail(ApiError),
}

/// Turns [`PullEvent`]s into Docker's lines down the HTTP stream.
struct Sink {
    tx: UnboundedSender<Msg>,
    /// Whether a line went out (errors after that go in the stream).
    started: AtomicBool,
}

impl Sink {
    fn send(&self, line: &CreateImageInfo) {
        self.started.store(true, Ordering::SeqCst);
        // A client that went away does not stop the pull: it completes
        // and is stored, as Docker does for `docker pull` interrupted.
        let _ = self.tx.send(Msg::Line(to_bytes(line)));
    }

    fn fail(&self, e: ApiError) {
        if self.started.load(Ordering::SeqCst) {
            self.send(&error_line(&e.message));
        } else {
            let _ = self.tx.send(Msg::Fail(e));
        }
    }

    fn event(&self, event: PullEvent) {
        match event {
            PullEvent::PullingFrom { repository, tag } => self.send(&status_line(
                format!("Pulling from {repository}"),
                Some(&tag),
            )),
            PullEvent::Layer { digest, status } => self.send(&layer_line(&digest, status)),
            PullEvent::Done {
                name,
                digest,
                downloaded,
            } => {
                self.send(&status_line(format!("Digest: {digest}"), None));
                let status = if downloaded {
                    format!("Status: Downloaded newer image for {name}")
                } else {
                    format!("Status: Image is up to date for {name}")
                };
                self.send(&status_line(status, None));
            }
        }
    }
}

/// `X-Registry-Auth`: base64url JSON `{"username", "password",
/// "serveraddress"}`; `None` when absent, empty or without a user name.
pub fn registry_auth(headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    let Some(raw) = headers.get("x-registry-auth") else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("").trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE;
    let b64_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b64_std = base64::engine::general_purpose::STANDARD;
    let bytes = b64
        .decode(raw)
        .or_else(|_| b64_nopad.decode(raw))
        .or_else(|_| b64_std.decode(raw))
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not base64url-encoded JSON"))?;
    #[derive(serde::Deserialize)]
    struct Auth {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
    }
    let auth: Auth = super::json::decode(&bytes, "X-Registry-Auth")?;
    Ok((!auth.username.is_empty()).then_some(Credentials {
        username: auth.username,
        password: auth.password,
    }))
}

/// `fromImage` plus the separate `tag`, which may be a digest.
pub fn pull_reference(from: &str, tag: Option<&str>) -> ApiResult<Reference> {
    let name = match tag.filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    Reference::parse(&name)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))
}

pub async fn create(
    State(d): State<Shared>,
    Q(q): Q<Query>,
    Q(pairs): Q<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return super::image_archive::import(d, pairs, body).await;
    }
    let from = q.get("fromImage").cloned().unwrap_or_default();
    if from.is_empty() {
        return Err(ApiError::bad_request("fromImage is required"));
    }
    let r = pull_reference(&from, q.get("tag").map(String::as_str))?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).map_err(EngineError::from)?,
        None => Platform::host(),
    };
    let req = PullRequest {
        reference: r,
        platform,
        credentials: registry_auth(&headers)?,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = Sink {
        tx,
        started: AtomicBool::new(false),
    };
    tokio::task::spawn_blocking(move || {
        if let Err(e) = d.pull(req, &|event| sink.event(event)) {
            sink.fail(e.into());
        }
    });
    // Wait for the first line: an error before it is an HTTP error (the
    // docker CLI prints "Error response from daemon: ...").
    let first = match rx.recv().await {
        Some(Msg::Line(b)) => b,
        Some(Msg::Fail(e)) => return Err(e),
        None => return Err(ApiError::internal("the pull stopped without a result")),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Msg::Line(b)) => Some((Ok::<_, std::convert::Infallible>(b), rx)),
            Some(Msg::Fail(e)) => Some((Ok(to_bytes(&error_line(&e.message))), rx)),
            None => None,
        }
    });
    let body =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), rest);
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(line: &CreateImageInfo) -> String {
        String::from_utf8(to_bytes(line).to_vec()).unwrap()
    }

    #[test]
    fn progress_lines_as_docker_sends_them() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(
            json(&status_line("Pulling from test/busybox", Some("latest"))),
            "{\"id\":\"latest\",\"status\":\"Pulling from test/busybox\"}\n"
        );
        assert_eq!(
            json(&layer_line(&d, LayerStatus::PullingFsLayer { total: 9 })),
            "{\"id\":\"abababababab\",\"status\":\"Pulling fs layer\",\"progressDetail\":{}}\n"
        );
        let v: Value = serde_json::from_slice(&to_bytes(&layer_line(
            &d,
            LayerStatus::Downloading {
                current: 500,
                total: 1000,
            },
        )))
        .unwrap();
        assert_eq!(v["status"], "Downloading");
        assert_eq!(v["progressDetail"]["current"], 500);
        assert_eq!(v["progressDetail"]["total"], 1000);
        assert!(v["progress"]
            .as_str()
            .unwrap()
            .starts_with("[=========================>"));
        let e: Value = serde_json::from_slice(&to_bytes(&error_line("boom"))).unwrap();
        assert_eq!(e["error"], "boom");
        assert_eq!(e["errorDetail"]["message"], "boom");
    }

    #[test]
    fn references_filters_auth() {
        let r = pull_reference("127.0.0.1:5000/test/busybox", Some("latest")).unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/test/busybox:latest");
        let dg = format!("sha256:{}", "0".repeat(64));
        let r = pull_reference("busybox", Some(&dg)).unwrap();
        assert_eq!(r.digest.as_deref(), Some(dg.as_str()));
        assert_eq!(
            pull_reference("busybox", None).unwrap().tag.as_deref(),
            Some("latest")
        );
        assert_eq!(
            pull_reference("Bad Name", None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );

        assert!(glob("busy*", "busybox"));
        assert!(!glob("*", "a/b"));
        assert!(glob("*/*", "a/b"));
        assert!(glob("b?sybox:*", "busybox:latest"));
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches(
            "127.0.0.1:5000/test/*",
            "127.0.0.1:5000/test/busybox:1"
        ));
        assert!(!reference_matches("busybox:1", "busybox:latest"));
        assert!(!reference_matches("alpine", "busybox:latest"));

        let q: Query = [(
            "filters".to_string(),
            r#"{"reference":{"busybox":true},"dangling":["true"]}"#.to_string(),
        )]
        .into_iter()
        .collect();
        let f = parse_filters(&q).unwrap();
        assert_eq!(f["reference"], vec!["busybox".to_string()]);
        assert_eq!(f["dangling"], vec!["true".to_string()]);

        let mut h = HeaderMap::new();
        assert_eq!(registry_auth(&h).unwrap(), None);
        let enc = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"u","password":"p?>","serveraddress":"x"}"#);
        h.insert("x-registry-auth", enc.parse().unwrap());
        let c = registry_auth(&h).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p?>"));
        h.insert("x-registry-auth", "e30=".parse().unwrap());
        assert_eq!(registry_auth(&h).unwrap(), None);
        h.insert("x-registry-auth", "!!!".parse().unwrap());
        assert!(registry_auth(&h).is_err());
    }
}
