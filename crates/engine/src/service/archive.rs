//! Copy in/out of a container (`docker cp`) as engine calls:
//! [`Engine::copy_stat`], [`Engine::copy_out`] and [`Engine::copy_in`].
//! They see the container's root as it is now (a running process's, or
//! its snapshot's), with the volumes and binds of a stopped container in
//! view (on a thread with a private mount namespace). The caller only
//! moves the bytes (the API: HTTP bodies).

use super::error::{EngineError, EngineResult};
use super::{blocking, Engine, Shared};
use crate::container_fs::{
    with_mounts, ContainerRoot, ExtractOptions, FsError, PathStat, ViewMount,
};
use crate::records::ContainerRecord;
use std::io::{Read, Write};

/// A sink for a copy-out's tar.
pub type TarSink = Box<dyn Write + Send>;

/// A copy-out under way: the path's stat, known before the first byte is
/// written, and the archive, written by [`CopyOut::write_to`].
pub struct CopyOut {
    pub stat: PathStat,
    source: Source,
}

enum Source {
    /// A running container's root, or a snapshot with nothing mounted.
    Root { root: ContainerRoot, path: String },
    /// The thread that sees a stopped container's volumes and binds,
    /// waiting for the sink (dropping the CopyOut ends it).
    View {
        sink: std::sync::mpsc::Sender<TarSink>,
        thread: std::thread::JoinHandle<Result<Result<(), String>, FsError>>,
    },
}

impl CopyOut {
    /// Writes the tar of the path into `out` and flushes it (blocking).
    /// An error here comes after the stat was answered: the caller can
    /// only cut its stream short.
    pub fn write_to(self, mut out: TarSink) -> EngineResult<()> {
        match self.source {
            Source::Root { root, path } => root
                .archive(&path, &mut out)
                .map_err(|e| e.to_string())
                .and_then(|()| out.flush().map_err(|e| e.to_string()))
                .map_err(EngineError::internal),
            Source::View { sink, thread } => {
                sink.send(out)
                    .map_err(|_| EngineError::internal("copy-out thread ended early"))?;
                match thread.join() {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(m))) => Err(EngineError::internal(m)),
                    Ok(Err(e)) => Err(EngineError::internal(e.to_string())),
                    Err(_) => Err(EngineError::internal("copy-out thread panicked")),
                }
            }
        }
    }
}

/// Where a copy-in extracts: the container's root and, for `copyUIDGID`,
/// the user its files are given to.
pub struct CopyIn {
    root: ContainerRoot,
    path: String,
    who: String,
    user: String,
}

impl CopyIn {
    /// Extracts the tar `input` at the path (blocking); with `copy_uid_gid`
    /// its entries belong to the container's user (as `docker cp -a`).
    pub fn extract(
        self,
        input: impl Read,
        mut opts: ExtractOptions,
        copy_uid_gid: bool,
    ) -> EngineResult<()> {
        if copy_uid_gid {
            opts.chown =
                Some(container_user(&self.root, &self.user).map_err(EngineError::invalid)?);
        }
        self.root
            .extract(&self.path, input, &opts)
            .map_err(|e| EngineError::from_fs(e, &self.path, &self.who))
    }
}

/// `uid[:gid]` or names from the container's own passwd/group; empty is
/// root.
pub fn container_user(root: &ContainerRoot, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let passwd = root.read_small("/etc/passwd").unwrap_or_default();
    let group = root.read_small("/etc/group").unwrap_or_default();
    crate::users::lookup(&passwd, &group, user)
}

impl Engine {
    /// The stat of `path` in container `id` (`docker cp`'s HEAD).
    pub async fn copy_stat(self: &Shared, id: &str, path: &str) -> EngineResult<PathStat> {
        let r = self.find(id).await?;
        if let Some((rootfs, mounts)) = stopped_view(self, &r).await? {
            let p = path.to_string();
            let h = with_mounts(rootfs, mounts, move |root| root.stat(&p));
            return join_view(h, path, id)
                .await?
                .map_err(|e| EngineError::from_fs(e, path, id));
        }
        let (_, stat) = stat_of(self, id.to_string(), path.to_string()).await?;
        Ok(stat)
    }

    /// Starts a copy-out of `path` from container `id`: NotFound (Docker's
    /// wording) before anything is written if the path is not there.
    pub async fn copy_out(self: &Shared, id: &str, path: &str) -> EngineResult<CopyOut> {
        let r = self.find(id).await?;
        let Some((rootfs, mounts)) = stopped_view(self, &r).await? else {
            let (root, stat) = stat_of(self, id.to_string(), path.to_string()).await?;
            return Ok(CopyOut {
                stat,
                source: Source::Root {
                    root,
                    path: path.to_string(),
                },
            });
        };
        // Stat and archive on the thread that sees the mounts.
        let (stat_tx, stat_rx) = tokio::sync::oneshot::channel();
        let (sink_tx, sink_rx) = std::sync::mpsc::channel::<TarSink>();
        let p = path.to_string();
        let thread = with_mounts(rootfs, mounts, move |root| {
            let stat = root.stat(&p);
            let ok = stat.is_ok();
            let _ = stat_tx.send(stat);
            let Some(mut out) = ok.then(|| sink_rx.recv().ok()).flatten() else {
                return Ok(());
            };
            root.archive(&p, &mut out)
                .map_err(|e| e.to_string())
                .and_then(|()| out.flush().map_err(|e| e.to_string()))
        });
        match stat_rx.await {
            Ok(stat) => Ok(CopyOut {
                stat: stat.map_err(|e| EngineError::from_fs(e, path, id))?,
                source: Source::View {
                    sink: sink_tx,
                    thread,
                },
            }),
            // The thread failed before the stat: its error says why.
            Err(_) => {
                join_view(thread, path, id)
                    .await?
                    .map_err(EngineError::internal)?;
                Err(EngineError::internal("copy-out ended early"))
            }
        }
    }

    /// Where a copy-in into `path` of container `id` goes (the container
    /// found and its root opened first: errors before any byte is read).
    pub async fn copy_in(self: &Shared, id: &str, path: &str) -> EngineResult<CopyIn> {
        let r = self.find(id).await?;
        let user = r
            .config
            .pointer("/Config/User")
            .and_then(|u| u.as_str())
            .unwrap_or("")
            .to_string();
        let root = open_root(self, r, path, id).await?;
        Ok(CopyIn {
            root,
            path: path.to_string(),
            who: id.to_string(),
            user,
        })
    }
}

/// The container's root as it is now: its process's root while it has
/// one, else its overlay snapshot (mounted again if needed).
async fn open_root(
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
async fn stopped_view(
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
async fn join_view<T: Send + 'static>(
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
async fn stat_of(d: &Shared, id: String, path: String) -> EngineResult<(ContainerRoot, PathStat)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
