//! `POST /containers/create`, `/containers/{id}/start` and `/wait`.
//!
//! Create takes an image already in the store (no pull), mounts an overlay
//! snapshot of it at `<root>/containers/<id>` (the layout `cubby run` uses,
//! so `cubby image prune` sees the image in use), builds the spec from
//! cubby's defaults, the image config and the body (Image, Cmd, Entrypoint,
//! Env, WorkingDir, User as numbers, Labels, Hostname) and hands it to the
//! monitor, which today creates AND starts the container. So the first
//! `start` after `create` answers 204 whatever the container did meanwhile
//! (the daemon remembers, in memory, which it has not started), a later
//! one 304 while it runs (as Docker for a started container), and starting
//! an exited container again is not supported yet (501).

use super::containers::find;
use super::error::ApiError;
use super::util::Query;
use super::{blocking, ApiResult, Shared};
use crate::logs::LogOptions;
use crate::monitor::CreateRequest;
use crate::records::Status;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cubby_image::reference::Reference;
use cubby_image::snapshot::Snapshot;
use cubby_image::store::ImageRecord;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Docker's create body (Config plus HostConfig); see [`prepare`] for the
/// parts cubby honours.
pub type CreateBody = bollard_stubs::models::ContainerCreateBody;

/// Docker's container name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A 64-hex-digit id, as Docker's.
fn new_id() -> ApiResult<String> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| ApiError::internal(format!("read /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `KEY=VALUE` lists merged by key, later ones winning, order kept.
pub fn merge_env(lists: &[&[String]]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for list in lists {
        for kv in list.iter() {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            match out
                .iter_mut()
                .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
            {
                Some(e) => *e = kv.clone(),
                None => out.push(kv.clone()),
            }
        }
    }
    out
}

/// `uid[:gid]` as numbers; names need the image's passwd (not yet).
fn numeric_user(user: &str) -> ApiResult<Option<(u32, u32)>> {
    if user.is_empty() {
        return Ok(None);
    }
    let (u, g) = user.split_once(':').unwrap_or((user, "0"));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok(Some((u, g))),
        _ => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("user {user:?}: only numeric uid[:gid] is supported by cubby yet"),
        )),
    }
}

fn find_image(d: &Shared, name: &str) -> ApiResult<Option<ImageRecord>> {
    let internal = |e: cubby_image::ImageError| ApiError::internal(e.to_string());
    if let Ok(r) = Reference::parse(name) {
        if let Some(rec) = d.images.get_image(&r.to_string()).map_err(internal)? {
            return Ok(Some(rec));
        }
    }
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let images = d.images.images().map_err(internal)?;
        return Ok(images
            .into_iter()
            .find(|r| r.config_digest.hex().starts_with(id)));
    }
    Ok(None)
}

pub async fn create(
    State(d): State<Shared>,
    Q(q): Q<Query>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid create body: {e}")))?;
    if body.image.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "config cannot be empty: Image is required",
        ));
    }
    if body.tty.unwrap_or(false) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "containers with a TTY are not supported by cubby's API yet",
        ));
    }
    let user = numeric_user(body.user.as_deref().unwrap_or(""))?;
    let id = new_id()?;
    let name = match q.get("name").map(|n| n.strip_prefix('/').unwrap_or(n)) {
        None | Some("") => format!("cubby-{}", &id[..12]),
        Some(n) if valid_name(n) => n.to_string(),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )))
        }
    };
    let records = d.monitor(|c| c.list()).await?;
    if let Some(other) = records.iter().find(|r| r.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            ),
        ));
    }
    let d2 = d.clone();
    let id2 = id.clone();
    let name2 = name.clone();
    let req = blocking(move || prepare(&d2, &id2, &name2, body, user)).await?;
    let snapshot = Snapshot::at(req.bundle.clone());
    match d.monitor(move |c| c.create(req)).await {
        Ok(_) => {
            if let Ok(mut set) = d.unstarted.lock() {
                set.insert(id.clone());
            }
            Ok((
                StatusCode::CREATED,
                Json(json!({ "Id": id, "Warnings": [] })),
            ))
        }
        Err(e) => {
            let _ = blocking(move || {
                let _ = snapshot.remove();
                Ok(())
            })
            .await;
            Err(e)
        }
    }
}

/// Mounts the snapshot and builds the monitor's request (blocking).
fn prepare(
    d: &Shared,
    id: &str,
    name: &str,
    body: CreateBody,
    user: Option<(u32, u32)>,
) -> ApiResult<CreateRequest> {
    let image_name = body.image.clone().unwrap_or_default();
    let image = find_image(d, &image_name)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such image: {image_name}"),
        )
    })?;
    let config: oci_spec::image::ImageConfiguration = d
        .images
        .read_blob(&image.config_digest)
        .map_err(|e| ApiError::internal(e.to_string()))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| ApiError::internal(format!("image config of {}: {e}", image.name)))
        })?;
    let defaults = cubby_image::config::run_defaults(
        &image_name,
        &config,
        body.entrypoint.as_deref().filter(|e| !e.is_empty()),
        body.cmd.as_deref().unwrap_or(&[]),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let user = match user {
        Some(u) => Some(u),
        None => numeric_user(defaults.user.as_deref().unwrap_or(""))?,
    };

    let dir = d.root.join("containers").join(id);
    let snapshot = Snapshot::at(&dir);
    let layers: Vec<PathBuf> = image.layers.iter().map(|l| d.images.layer_dir(l)).collect();
    let mounted = snapshot.mount(&layers).and_then(|rootfs| {
        let layer_list: String = image.layers.iter().map(|l| format!("{l}\n")).collect();
        for (file, text) in [
            ("image", image.config_digest.to_string()),
            ("image-name", image.name.clone()),
            ("layers", layer_list),
        ] {
            let p = dir.join(file);
            std::fs::write(&p, text).map_err(|e| cubby_image::ImageError::io(&p, e))?;
        }
        Ok(rootfs)
    });
    let rootfs = match mounted {
        Ok(r) => r,
        Err(e) => {
            let _ = snapshot.remove();
            return Err(ApiError::internal(format!(
                "snapshot of {}: {e}",
                image.name
            )));
        }
    };

    let mut spec = cubby_runtime::spec::default_spec(&rootfs, defaults.command);
    let mut process = spec.process().clone().unwrap_or_default();
    let base = process.env().clone().unwrap_or_default();
    process.set_env(Some(merge_env(&[
        &base,
        &defaults.env,
        body.env.as_deref().unwrap_or(&[]),
    ])));
    let cwd = body
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or(defaults.workdir)
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        let _ = snapshot.remove();
        return Err(ApiError::bad_request(format!(
            "the working directory {cwd:?} is not absolute"
        )));
    }
    process.set_cwd(PathBuf::from(cwd));
    if let Some((uid, gid)) = user {
        let mut u = process.user().clone();
        u.set_uid(uid);
        u.set_gid(gid);
        process.set_user(u);
    }
    spec.set_process(Some(process));
    let hostname = body
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| id[..12].to_string());
    spec.set_hostname(Some(hostname));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!(
        "/{}/{id}",
        d.cgroup_parent.trim_matches('/')
    ))));
    spec.set_linux(Some(linux));
    let mounts =
        super::mounts::apply(d, id, &mut spec, &rootfs, &body, &config).inspect_err(|_| {
            let _ = snapshot.remove();
        })?;
    let mut body = body;
    let host_config = body.host_config.take().unwrap_or_default();
    let labels = body
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let config = json!({
        "Config": body,
        "HostConfig": host_config,
        "Mounts": mounts,
    });
    Ok(CreateRequest {
        id: id.into(),
        name: name.into(),
        spec,
        bundle: dir,
        image: Some(image_name),
        labels,
        log: LogOptions::default(),
        config,
    })
}

pub async fn start(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = find(&d, id).await?;
    // The monitor started it at create; it may have exited since.
    let first = d.unstarted.lock().is_ok_and(|mut set| set.remove(&r.id));
    if first {
        return Ok(StatusCode::NO_CONTENT);
    }
    match r.status {
        Status::Running => Ok(StatusCode::NOT_MODIFIED),
        Status::Created | Status::Exited => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "container {}: starting a stopped container is not supported by cubby yet",
                r.name
            ),
        )),
    }
}

/// Answers at once with 200 and its headers (the docker CLI waits for
/// them before it starts a container), then sends
/// `{"StatusCode": N, "Error": null}` when the container is not running
/// (`not-running`, `next-exit`) or removed (`removed`).
pub async fn wait(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let removed = match q.get("condition").map(String::as_str) {
        None | Some("" | "not-running" | "next-exit") => false,
        Some("removed") => true,
        Some(c) => return Err(ApiError::bad_request(format!("invalid condition: {c:?}"))),
    };
    let r = find(&d, id).await?;
    let body = futures_util::stream::once(async move {
        let (code, error) = match wait_for(&d, &r.id, r.exit_code.unwrap_or(0), removed).await {
            Ok(code) => (code, Value::Null),
            Err(e) => (-1, json!({ "Message": e.message })),
        };
        let doc = json!({ "StatusCode": code, "Error": error });
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{doc}\n")))
    });
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn wait_for(d: &Shared, id: &str, mut code: i32, removed: bool) -> ApiResult<i32> {
    loop {
        let id = id.to_string();
        match d.monitor(move |c| c.get(&id)).await {
            Ok(now) => {
                code = now.exit_code.unwrap_or(code);
                if !removed && now.status != Status::Running {
                    return Ok(code);
                }
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(code),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_env_users() {
        assert!(valid_name("web-1") && valid_name("a.b_c"));
        assert!(!valid_name("-x") && !valid_name("a") && !valid_name("a/b") && !valid_name(""));
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            merge_env(&[
                &s(&["PATH=/bin", "A=1"]),
                &s(&["A=2", "B"]),
                &s(&["PATH=/x"])
            ]),
            s(&["PATH=/x", "A=2", "B"])
        );
        assert_eq!(numeric_user("").unwrap(), None);
        assert_eq!(numeric_user("1000").unwrap(), Some((1000, 0)));
        assert_eq!(numeric_user("1:2").unwrap(), Some((1, 2)));
        assert_eq!(
            numeric_user("nginx").unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
        let b: CreateBody =
            serde_json::from_str(r#"{"Image":"busybox","Cmd":["sh"],"Env":null,"Junk":1}"#)
                .unwrap();
        assert_eq!(b.image.as_deref(), Some("busybox"));
        assert_eq!(b.cmd, Some(vec!["sh".to_string()]));
    }
}
