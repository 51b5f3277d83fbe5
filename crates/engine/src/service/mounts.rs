//! A container's storage made real at create: the requests of
//! [`ContainerConfig::storage`] (parsed and checked in
//! [`crate::config::storage`]) plus anonymous volumes for the image's
//! `Volumes` not covered yet. [`apply`] creates missing `-v` host
//! directories and volumes, copies the image's content into new, empty
//! volumes (unless `nocopy`), and gives the OCI mounts for the spec plus
//! Docker MountPoint documents for `config["Mounts"]`.
//!
//! [`ContainerConfig::storage`]: crate::config::ContainerConfig::storage

use super::error::{EngineError, EngineResult};
use super::Engine;
use crate::config::storage::{add_anonymous, config_err, Kind, MountRequest};
use crate::config::ContainerConfig;
use crate::volumes::{CreateOptions, VolumeStore};
use bollard_stubs::models::{MountPoint, MountPointTypeEnum};
use oci_spec::runtime::{MountBuilder, Spec};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The OCI mount and the MountPoint document of one realised mount.
fn realise(
    p: &MountRequest,
    source: &Path,
    name: &str,
) -> EngineResult<(oci_spec::runtime::Mount, Option<MountPoint>)> {
    let prop = if p.propagation.is_empty() {
        "rprivate".to_string()
    } else {
        p.propagation.clone()
    };
    let mut options: Vec<String> = match p.kind {
        Kind::Tmpfs => ["noexec", "nosuid", "nodev"].map(String::from).to_vec(),
        _ => vec![if p.recursive { "rbind" } else { "bind" }.to_string()],
    };
    options.push(prop.clone());
    options.extend(p.tmpfs.iter().cloned());
    if p.read_only && p.kind != Kind::Tmpfs {
        options.push("ro".into());
    }
    let (typ, src) = match p.kind {
        Kind::Tmpfs => ("tmpfs", PathBuf::from("tmpfs")),
        _ => ("bind", source.to_path_buf()),
    };
    let mount = MountBuilder::default()
        .destination(PathBuf::from(&p.dest))
        .typ(typ)
        .source(src)
        .options(options)
        .build()
        .map_err(|e| EngineError::internal(format!("mount {}: {e}", p.dest)))?;
    let point = p.listed.then(|| MountPoint {
        typ: Some(match p.kind {
            Kind::Bind => MountPointTypeEnum::BIND,
            Kind::Volume => MountPointTypeEnum::VOLUME,
            Kind::Tmpfs => MountPointTypeEnum::TMPFS,
        }),
        name: (p.kind == Kind::Volume).then(|| name.to_string()),
        source: Some(match p.kind {
            Kind::Tmpfs => String::new(),
            _ => source.to_string_lossy().into_owned(),
        }),
        destination: Some(p.dest.clone()),
        driver: (p.kind == Kind::Volume).then(|| "local".to_string()),
        mode: Some(p.mode.clone()),
        rw: Some(!p.read_only),
        propagation: Some(if p.kind == Kind::Bind {
            prop
        } else {
            String::new()
        }),
    });
    Ok((mount, point))
}

/// The hook in `create`'s `prepare` (blocking): resolves the body's mounts,
/// creates what they need, appends the OCI mounts to `spec` (replacing a
/// default mount at the same destination, e.g. `/dev/shm`) and returns the
/// MountPoints for `config["Mounts"]`.
pub fn apply(
    d: &Engine,
    monitor: &mut crate::client::MonitorClient,
    id: &str,
    spec: &mut Spec,
    rootfs: &Path,
    cfg: &ContainerConfig,
    image: &oci_spec::image::ImageConfiguration,
) -> EngineResult<Value> {
    let image_volumes = image
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default();
    let mut planned = cfg.storage.clone();
    add_anonymous(&mut planned, &image_volumes)?;
    if planned.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    // Host paths first, so a bad bind creates no volume.
    for p in planned.iter().filter(|p| p.kind == Kind::Bind) {
        if Path::new(&p.source).exists() {
            continue;
        }
        if !p.create_source {
            return Err(config_err(
                "bind",
                format!("bind source path does not exist: {}", p.source),
            )
            .into());
        }
        std::fs::create_dir_all(&p.source).map_err(|e| {
            EngineError::internal(format!("create the bind source {}: {e}", p.source))
        })?;
    }
    let store = if planned.iter().any(|p| p.kind == Kind::Volume) {
        Some(d.volume_store()?)
    } else {
        None
    };
    // Anonymous volumes are named now, and every volume is claimed in the
    // monitor (by this create's reservation) before it is created, so no
    // client's rm or prune can take it before the container's record exists.
    let mut names = Vec::new();
    for p in planned.iter_mut().filter(|p| p.kind == Kind::Volume) {
        if p.source.is_empty() {
            p.source = crate::volumes::anonymous_name()?;
            p.labels
                .insert(crate::volumes::ANONYMOUS_LABEL.into(), String::new());
        }
        names.push(p.source.clone());
    }
    if !names.is_empty() {
        monitor.claim(id, &names)?;
    }
    let mut mounts = Vec::new();
    let mut points = Vec::new();
    for p in &planned {
        let (source, name) = match (p.kind, &store) {
            (Kind::Volume, Some(store)) => volume_source(store, p, rootfs)?,
            (Kind::Bind, _) => (PathBuf::from(&p.source), String::new()),
            _ => (PathBuf::new(), String::new()),
        };
        let (m, point) = realise(p, &source, &name)?;
        mounts.push(m);
        points.extend(point);
    }
    // Parents before children, as Docker sorts them.
    mounts.sort_by_key(|m| m.destination().components().count());
    let mut all = spec.mounts().clone().unwrap_or_default();
    all.retain(|m| {
        !planned
            .iter()
            .any(|p| Path::new(&p.dest) == m.destination())
    });
    all.extend(mounts);
    spec.set_mounts(Some(all));
    serde_json::to_value(points).map_err(|e| EngineError::internal(format!("mount points: {e}")))
}

/// Creates (or finds) the volume of `p`, fills a new one from the image,
/// and returns the host path to mount and the volume's name.
fn volume_source(
    store: &VolumeStore,
    p: &MountRequest,
    rootfs: &Path,
) -> EngineResult<(PathBuf, String)> {
    let (v, _) = store.create(&CreateOptions {
        name: Some(p.source.clone()),
        labels: p.labels.clone(),
        ..Default::default()
    })?;
    if v.sized() {
        store.ensure_mounted(&v.name)?;
    }
    let data = store.data_dir(&v.name);
    if !p.subpath.is_empty() {
        // Symlinks in the volume (a container may have made them) resolve
        // inside it. A container that swaps a path component for a symlink
        // between here and the mount could still redirect it.
        let dir = cubby_runtime::rootfs::secure_join(&data, Path::new(&p.subpath))
            .map_err(|e| config_err("volume", format!("subpath {}: {e}", p.subpath)))?;
        if !dir.exists() {
            return Err(config_err(
                "volume",
                format!(
                    "cannot access path {}: no such file or directory",
                    dir.display()
                ),
            )
            .into());
        }
        return Ok((dir, v.name));
    }
    if !p.nocopy {
        let src = cubby_runtime::rootfs::secure_join(rootfs, Path::new(&p.dest))
            .map_err(|e| EngineError::internal(format!("image path {}: {e}", p.dest)))?;
        store.populate(&v.name, &src)?;
    }
    Ok((data, v.name))
}
