//! `POST /containers/create`.
//!
//! Create takes an image already in the store (no pull), mounts an overlay
//! snapshot of it at `<root>/containers/<id>` (the layout `cubby run` uses,
//! so `cubby image prune` sees the image in use), builds the spec from
//! cubby's defaults, the image config and the body, and records the
//! container in the monitor (state Created); `start` runs it.

use super::error::ApiError;
use super::util::Query;
use super::{blocking, ApiResult, Shared};
use crate::monitor::CreateRequest;
use crate::records::{RestartName, RestartPolicy};
use axum::body::Bytes;
use axum::extract::{Query as Q, State};
use axum::http::StatusCode;
use axum::Json;
use cubby_image::reference::Reference;
use cubby_image::snapshot::Snapshot;
use cubby_image::store::ImageRecord;
use serde_json::{json, Value};
use std::path::PathBuf;

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

/// HostConfig.RestartPolicy as the monitor takes it.
fn restart_policy(host: &bollard_stubs::models::HostConfig) -> ApiResult<RestartPolicy> {
    use bollard_stubs::models::RestartPolicyNameEnum as N;
    let Some(p) = &host.restart_policy else {
        return Ok(RestartPolicy::default());
    };
    let name = match p.name {
        None | Some(N::EMPTY) | Some(N::NO) => RestartName::No,
        Some(N::ALWAYS) => RestartName::Always,
        Some(N::UNLESS_STOPPED) => RestartName::UnlessStopped,
        Some(N::ON_FAILURE) => RestartName::OnFailure,
    };
    let max = p.maximum_retry_count.unwrap_or(0);
    if max < 0 || (max > 0 && name != RestartName::OnFailure) {
        return Err(ApiError::bad_request(format!(
            "invalid restart policy: maximum retry count {max} is only valid with on-failure"
        )));
    }
    Ok(RestartPolicy {
        name,
        max_retries: max as u32,
    })
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
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid create body: {e}")))?;
    // Nothing asked for is dropped: unknown or unhandled fields are refused.
    crate::config::docker::check_supported(&raw)?;
    let body: CreateBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid create body: {e}")))?;
    if body.image.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "config cannot be empty: Image is required",
        ));
    }
    let host = body.host_config.clone().unwrap_or_default();
    let restart = restart_policy(&host)?;
    if host.auto_remove.unwrap_or(false) && restart.name != RestartName::No {
        return Err(ApiError::bad_request(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    let id = super::new_id()?;
    let name = match q.get("name").map(|n| n.strip_prefix('/').unwrap_or(n)) {
        None | Some("") => format!("cubby-{}", &id[..12]),
        Some(n) if valid_name(n) => n.to_string(),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )))
        }
    };
    let d2 = d.clone();
    let id2 = id.clone();
    let name2 = name.clone();
    let mut req = blocking(move || prepare(&d2, &id2, &name2, body)).await?;
    req.restart = restart;
    req.auto_remove = host.auto_remove.unwrap_or(false);
    let snapshot = Snapshot::at(req.bundle.clone());
    match d.monitor(move |c| c.create(req)).await {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(json!({ "Id": id, "Warnings": [] })),
        )),
        Err(mut e) => {
            super::networks::release(&d, &id).await;
            let _ = blocking(move || {
                let _ = snapshot.remove();
                Ok(())
            })
            .await;
            if e.status == StatusCode::CONFLICT && e.message.contains("is already in use") {
                e.message = format!(
                    "Conflict. {}. You have to remove (or rename) that container to be able to reuse that name.",
                    e.message.replacen("the container", "The container", 1)
                );
            }
            Err(e)
        }
    }
}

/// Mounts the snapshot and builds the monitor's request (blocking).
fn prepare(d: &Shared, id: &str, name: &str, body: CreateBody) -> ApiResult<CreateRequest> {
    let log = super::logs::log_options(body.host_config.as_ref())?;
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
    let command = defaults.command.clone();
    // Everything the body asks for is checked before the snapshot exists.
    let mut cfg = crate::config::docker::from_body(
        &body,
        crate::config::docker::ImageDefaults {
            command: defaults.command,
            env: defaults.env,
            workdir: defaults.workdir,
            user: defaults.user,
        },
    )?;
    cfg.hostname.get_or_insert_with(|| id[..12].to_string());
    cfg.cgroup_path = Some(PathBuf::from(format!(
        "/{}/{id}",
        d.cgroup_parent.trim_matches('/')
    )));
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
    let mut spec = crate::config::build(&cfg, &rootfs).map_err(|e| {
        let _ = snapshot.remove();
        ApiError::from(e)
    })?;
    let mounts =
        super::mounts::apply(d, id, &mut spec, &rootfs, &body, &config).inspect_err(|_| {
            let _ = snapshot.remove();
        })?;
    super::networks::setup(d, id, name, &body, &mut spec).inspect_err(|_| {
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
    let (open_stdin, stdin_once) = (
        body.open_stdin.unwrap_or(false),
        body.stdin_once.unwrap_or(false),
    );
    let config = json!({
        "Config": body,
        "HostConfig": host_config,
        "Mounts": mounts,
        "Path": command.first().cloned().unwrap_or_default(),
        "Args": command.get(1..).unwrap_or(&[]),
        "ImageID": image.config_digest.to_string(),
    });
    Ok(CreateRequest {
        init: cfg.init,
        image: Some(image_name),
        labels,
        log,
        config,
        open_stdin,
        stdin_once,
        ..CreateRequest::new(id, name, spec, dir)
    })
}

/// Mounts the container's overlay again if it is not (a daemon or host
/// restart since it was created): `start` needs its rootfs.
pub async fn ensure_rootfs(d: &Shared, id: &str) -> ApiResult<()> {
    let dir = d.root.join("containers").join(id);
    let snapshot = Snapshot::at(&dir);
    let d = d.clone();
    let id = id.to_string();
    blocking(move || {
        let Ok(list) = std::fs::read_to_string(dir.join("layers")) else {
            return Ok(()); // not made from an image
        };
        if snapshot.is_mounted() {
            return Ok(());
        }
        let layers = list
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse::<cubby_image::digest::Digest>()
                    .map(|dg| d.images.layer_dir(&dg))
                    .map_err(|e| ApiError::internal(format!("layer list of {id}: {e}")))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        snapshot
            .mount(&layers)
            .map_err(|e| ApiError::internal(format!("mount the rootfs of {id}: {e}")))?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bodies() {
        assert!(valid_name("web-1") && valid_name("a.b_c"));
        assert!(!valid_name("-x") && !valid_name("a") && !valid_name("a/b") && !valid_name(""));
        let b: CreateBody =
            serde_json::from_str(r#"{"Image":"busybox","Cmd":["sh"],"Env":null,"Junk":1}"#)
                .unwrap();
        assert_eq!(b.image.as_deref(), Some("busybox"));
        assert_eq!(b.cmd, Some(vec!["sh".to_string()]));
    }
}
