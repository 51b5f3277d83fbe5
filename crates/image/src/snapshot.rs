//! A container's root filesystem over an image: an overlay mount whose lower
//! dirs are the image's shared, read-only layers and whose upper/work dirs
//! belong to the container alone.

use crate::error::{ImageError, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// `dir/upper`, `dir/work`, `dir/rootfs` (the mount point) of one container.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub dir: PathBuf,
}

impl Snapshot {
    pub fn at(dir: impl Into<PathBuf>) -> Snapshot {
        Snapshot { dir: dir.into() }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Mounts the overlay; `layers` are the layer dirs bottom to top. Mounting
    /// again over an existing upper dir (a restarted container) keeps its changes.
    pub fn mount(&self, layers: &[PathBuf]) -> Result<PathBuf> {
        if layers.is_empty() {
            return Err(ImageError::Invalid {
                what: "image".into(),
                reason: "it has no layers".into(),
            });
        }
        let (upper, work, rootfs) = (self.dir.join("upper"), self.dir.join("work"), self.rootfs());
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).map_err(|e| ImageError::io(d, e))?;
        }
        // overlayfs wants the topmost lower dir first.
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        if data.len() >= 4096 {
            return Err(ImageError::Unsupported {
                what: "image depth".into(),
                value: format!("{} layers do not fit in one overlay mount", layers.len()),
            });
        }
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| ImageError::io(&rootfs, std::io::Error::from(e)))?;
        Ok(rootfs)
    }

    pub fn is_mounted(&self) -> bool {
        let target = self.rootfs();
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|info| {
                info.lines()
                    .filter_map(|l| l.split(' ').nth(4))
                    .any(|p| Path::new(p) == target)
            })
            .unwrap_or(false)
    }

    pub fn unmount(&self) -> Result<()> {
        if self.is_mounted() {
            umount2(&self.rootfs(), MntFlags::MNT_DETACH)
                .map_err(|e| ImageError::io(self.rootfs(), std::io::Error::from(e)))?;
        }
        Ok(())
    }

    /// Unmounts and deletes the container's changes.
    pub fn remove(&self) -> Result<()> {
        self.unmount()?;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(&self.dir, e)),
        }
    }

    /// Bytes the container wrote (its upper dir).
    pub fn disk_usage(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.join("upper"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_over_two_layers() {
        assert!(nix::unistd::geteuid().is_root(), "overlay mounts need root");
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        std::fs::create_dir_all(&l1).unwrap();
        std::fs::create_dir_all(&l2).unwrap();
        std::fs::write(l1.join("a"), "one").unwrap();
        std::fs::write(l2.join("a"), "two").unwrap();
        std::fs::write(l1.join("b"), "base").unwrap();
        let snap = Snapshot::at(t.path().join("c1"));
        let root = snap.mount(&[l1.clone(), l2]).unwrap();
        let guard = scopeguard(&snap);
        assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(root.join("b")).unwrap(), "base");
        std::fs::write(root.join("b"), "changed").unwrap();
        assert_eq!(
            std::fs::read_to_string(l1.join("b")).unwrap(),
            "base",
            "layers stay read-only"
        );
        assert!(snap.disk_usage() >= 7);
        drop(guard);
        assert!(!snap.is_mounted());
        assert!(!snap.dir.exists());
    }

    struct Guard<'a>(&'a Snapshot);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove();
        }
    }
    fn scopeguard(s: &Snapshot) -> Guard<'_> {
        Guard(s)
    }
}
