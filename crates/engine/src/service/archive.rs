//! Copy in/out of a container (`docker cp`): its root as it is now (a
//! running process's, or its snapshot's), with the volumes and binds of a
//! stopped container in view. The archive streams are the API's.

use super::error::{EngineError, EngineResult};
use super::{blocking, Shared};
use crate::container_fs::{ContainerRoot, FsError, PathStat, ViewMount};
use crate::records::ContainerRecord;

/// The container's root as it is now: its process's root while it has
/// one, else its overlay snapshot (mounted again if needed).
pub async fn open_root(
    d: &Shared,
    r: ContainerRecord,
    path: &str,
    who: &str,
) -> EngineResult<ContainerRoot> {
    if let (true, Some(pid)) = (r.status.is_live(), r.pid) {
        let id = r.id.clone();
        let (p, w) = (path.to_string(), who.to_string());
        let live = blocking(move || match ContainerRoot::of_process(pid, &id) {
            Ok(root) => Ok(Some(root)),
            // It exited meanwhile: its snapshot holds the same files.
            Err(_) if !proc_alive(pid) => Ok(None),
            Err(e) => Err(EngineError::from_fs(e, &p, &w)),
        })
        .await?;
        if let Some(root) = live {
            return Ok(root);
        }
    }
    d.ensure_rootfs(&r.id).await?;
    let rootfs = cubby_image::snapshot::Snapshot::at(
        d.root.join(crate::records::CONTAINERS_DIR).join(&r.id),
    )
    .rootfs();
    let (p, w) = (path.to_string(), who.to_string());
    blocking(move || ContainerRoot::at(&rootfs).map_err(|e| EngineError::from_fs(e, &p, &w))).await
}

/// For a container that is not running and has volumes or binds: its
/// snapshot's root and those mounts (copy-out shows them, as Docker's
/// does), else None.
pub async fn stopped_view(
    d: &Shared,
    r: &ContainerRecord,
) -> EngineResult<Option<(std::path::PathBuf, Vec<ViewMount>)>> {
    if r.status.is_live() && r.pid.is_some_and(proc_alive) {
        return Ok(None);
    }
    let mounts: Vec<ViewMount> = r
        .config
        .get("Mounts")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let source = m.get("Source")?.as_str().filter(|s| !s.is_empty())?;
            let destination = m.get("Destination")?.as_str()?;
            Some(ViewMount {
                source: source.into(),
                destination: destination.to_string(),
            })
        })
        .collect();
    if mounts.is_empty() {
        return Ok(None);
    }
    d.ensure_rootfs(&r.id).await?;
    // A sized volume's filesystem may be unmounted (after a reboot).
    let volumes = crate::volumes::mounted_by(r);
    if !volumes.is_empty() {
        let store = d.volume_store()?;
        blocking(move || Ok::<_, EngineError>(store.ensure_all_mounted(&volumes)?)).await?;
    }
    let rootfs = cubby_image::snapshot::Snapshot::at(
        d.root.join(crate::records::CONTAINERS_DIR).join(&r.id),
    )
    .rootfs();
    Ok(Some((rootfs, mounts)))
}

/// Waits for a [`with_mounts`] thread without holding a runtime worker.
pub async fn join_view<T: Send + 'static>(
    h: std::thread::JoinHandle<Result<T, FsError>>,
    path: &str,
    who: &str,
) -> EngineResult<T> {
    let (p, w) = (path.to_string(), who.to_string());
    blocking(move || match h.join() {
        Ok(r) => r.map_err(|e| EngineError::from_fs(e, &p, &w)),
        Err(_) => Err(EngineError::internal("copy-out thread panicked")),
    })
    .await
}

fn proc_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/root")).exists()
}

/// Finds the container, opens its root and stats `path` (404 first).
pub async fn stat_of(
    d: &Shared,
    id: String,
    path: String,
) -> EngineResult<(ContainerRoot, PathStat)> {
    let r = d.find(&id).await?;
    let root = open_root(d, r, &path, &id).await?;
    blocking(move || {
        let stat = root
            .stat(&path)
            .map_err(|e| EngineError::from_fs(e, &path, &id))?;
        Ok((root, stat))
    })
    .await
}
