//! `docker diff`: what a container changed in its root filesystem, read
//! from its overlay upper dir (the writable layer) against the image's
//! layers. The walk keeps one directory's entries at a time, so a large
//! container costs memory for its changes, not for its whole tree.

use super::{EngineError, EngineResult};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Docker's change kinds (`docker diff`'s C, A, D; the API's 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

/// Paths cubby itself creates in the upper dir as mount targets (Docker
/// keeps these in an init layer and never reports them).
const MOUNT_TARGETS: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/.dockerenv",
];

fn in_lower(lowers: &[PathBuf], rel: &Path) -> bool {
    lowers
        .iter()
        .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// The changes of the upper dir `upper` over `lowers` (top first), sorted
/// by path as Docker lists them.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> EngineResult<Vec<(ChangeKind, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| EngineError::internal(format!("diff: {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| EngineError::internal(format!("diff: {}: {e}", dir.display())))?;
            let child = rel.join(entry.file_name());
            let shown = format!("/{}", child.display());
            let meta = entry
                .metadata()
                .map_err(|e| EngineError::internal(format!("diff: {shown}: {e}")))?;
            if is_whiteout(&meta) {
                out.push((ChangeKind::Deleted, shown));
                continue;
            }
            let skip = MOUNT_TARGETS.contains(&shown.as_str());
            if !skip {
                let kind = if in_lower(lowers, &child) {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                };
                out.push((kind, shown));
            }
            if meta.is_dir() && !skip {
                stack.push(child);
            }
        }
    }
    // Directories copied up only to hold a mount target (e.g. /etc for
    // /etc/hosts) are not the user's change either.
    let parent = |p: &str| p.rsplit_once('/').map(|(d, _)| d.to_string());
    let with_changes: std::collections::HashSet<String> =
        out.iter().filter_map(|(_, p)| parent(p)).collect();
    let with_targets: std::collections::HashSet<String> =
        MOUNT_TARGETS.iter().filter_map(|t| parent(t)).collect();
    out.retain(|(k, p)| {
        !(*k == ChangeKind::Modified && with_targets.contains(p) && !with_changes.contains(p))
    });
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

impl super::Engine {
    /// `docker diff` of container `what`.
    pub async fn changes(&self, what: &str) -> EngineResult<Vec<(ChangeKind, String)>> {
        let r = self.find(what).await?;
        let dir = self.root.join("containers").join(&r.id);
        let store_layers = |d: &Path| -> EngineResult<Vec<PathBuf>> {
            let text = std::fs::read_to_string(d.join("layers")).map_err(|e| {
                EngineError::invalid(format!(
                    "container {} has no image snapshot to compare with: {e}",
                    r.name
                ))
            })?;
            let mut layers = Vec::new();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let digest: cubby_image::digest::Digest = line
                    .parse()
                    .map_err(|e| EngineError::internal(format!("layers of {}: {e}", r.name)))?;
                layers.push(self.images.layer_dir(&digest));
            }
            layers.reverse();
            Ok(layers)
        };
        let lowers = store_layers(&dir)?;
        let upper = dir.join("upper");
        super::blocking(move || changes(&upper, &lowers)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_upper_and_lowers() {
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        for d in ["etc", "home", "tmp/new"] {
            std::fs::create_dir_all(upper.join(d)).unwrap();
        }
        for d in ["etc", "home", "bin"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::write(lower.join("home/old"), "x").unwrap();
        std::fs::write(upper.join("home/old"), "y").unwrap();
        std::fs::write(upper.join("etc/hosts"), "").unwrap();
        std::fs::write(upper.join("home/added"), "").unwrap();
        nix::sys::stat::mknod(
            &upper.join("bin-gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let got = changes(&upper, &[lower]).unwrap();
        let got: Vec<String> = got
            .iter()
            .map(|(k, p)| format!("{} {p}", ["C", "A", "D"][*k as usize]))
            .collect();
        assert_eq!(
            got,
            [
                "D /bin-gone",
                "C /home",
                "A /home/added",
                "C /home/old",
                "A /tmp",
                "A /tmp/new"
            ]
        );
    }
}
