//! Named network namespaces: a new netns bind-mounted on `<dir>/<id>` (as
//! `ip netns add` does), so it outlives any process and the runtime can
//! join it through the spec's namespace `path`.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{NetError, Result};

/// Directories [`prepare_dir`] made shared bind mounts in this process
/// ([`unmount_dir`] forgets them).
static PREPARED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Makes `dir` a shared bind mount of itself (once), so unmounting a netns
/// file here also unmounts it in mount namespaces copied from this one
/// (containers started while the file existed); otherwise those copies
/// would keep the namespace, and its veth, alive.
fn prepare_dir(dir: &Path) -> Result<()> {
    // Once per process and directory: checking reads all of mountinfo,
    // which grows with every netns (and container) on the host.
    let mut done = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    if done.iter().any(|d| d == dir) {
        return Ok(());
    }
    prepare_dir_now(dir)?;
    done.push(dir.to_path_buf());
    Ok(())
}

fn prepare_dir_now(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_ok() && is_mountpoint(dir) {
        return Ok(());
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| NetError::io(format!("bind-mount {} on itself", dir.display()), e.into()))?;
    shared().map_err(|e| NetError::io(format!("make {} shared", dir.display()), e.into()))
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Creates the named netns `<dir>/<name>` and returns its path. An existing
/// mounted one is reused (idempotent after a crash).
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(NetError::Invalid(format!("netns name {name:?}")));
    }
    prepare_dir(dir)?;
    let path = dir.join(name);
    if is_mounted(&path) {
        return Ok(path);
    }
    fs::File::create(&path).map_err(|e| NetError::io(format!("create {}", path.display()), e))?;
    let p = path.clone();
    // unshare() moves only the calling thread: do it on a throwaway thread.
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::io("unshare network namespace", e.into()))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| NetError::io(format!("bind-mount netns on {}", p.display()), e.into()))
    })
    .join()
    .unwrap_or_else(|_| Err(NetError::Invalid("netns thread panicked".into())));
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Whether `path` is a mounted netns (not just a leftover empty file).
pub fn is_mounted(path: &Path) -> bool {
    // A netns bind-mounted on the file shows as nsfs there: one statfs,
    // where scanning mountinfo cost O(mounts) per container.
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unmounts and removes `<dir>/<name>`; the kernel frees the namespace (and
/// the veth ends in it) when the last user goes. Absent is fine.
pub fn remove(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    if is_mounted(&path) {
        umount2(&path, MntFlags::MNT_DETACH)
            .map_err(|e| NetError::io(format!("unmount {}", path.display()), e.into()))?;
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("remove {}", path.display()), e)),
    }
}

/// Names of the netns files in `dir` (empty if it does not exist).
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| NetError::io(format!("read {}", dir.display()), e))?;
        if let Some(n) = ent.file_name().to_str() {
            if !n.starts_with('.') {
                out.push(n.to_string());
            }
        }
    }
    Ok(out)
}

/// Undoes [`create`]'s self bind mount of `dir` (after every netns in it
/// was removed), so the directory itself can be deleted; for tests and
/// tools that use a throwaway netns dir. Not mounted is fine.
pub fn unmount_dir(dir: &Path) -> Result<()> {
    PREPARED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| d != dir);
    while is_mountpoint(dir) {
        umount2(dir, MntFlags::MNT_DETACH)
            .map_err(|e| NetError::io(format!("unmount {}", dir.display()), e.into()))?;
    }
    Ok(())
}
