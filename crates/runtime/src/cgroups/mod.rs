//! Resource limits through cgroups. The hierarchy (v1, hybrid or v2) is
//! detected at run time; the same `Cgroup` API serves both.
//!
//! INTERFACE (owned by the cgroups helper; signatures are the contract):
//!
//! Conventions shared by both layouts:
//! - A limit the spec leaves unset (None, or 0 where runc treats 0 as unset)
//!   is never written, so `apply` on a live cgroup only changes what it names.
//! - A limit the spec asks for whose interface file is missing (controller not
//!   mounted / not enabled) is an error naming the file and the controller.
//! - `-1` means "unlimited" (written as `-1` on v1 and `max` on v2).

use oci_spec::runtime::LinuxResources;
use std::path::{Component, Path, PathBuf};

pub mod devices_bpf;
mod fs;
pub mod v1;
pub mod v2;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no cgroup hierarchy found under {0}")]
    NoHierarchy(PathBuf),
}

/// Which cgroup layout this host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// v1 controllers, each mounted at `root/<controller>` (also hybrid hosts:
    /// the unified mount is ignored).
    V1 { root: PathBuf },
    /// The unified hierarchy mounted at `root`.
    V2 { root: PathBuf },
}

impl Hierarchy {
    /// Detects the layout under /sys/fs/cgroup.
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    /// Detects the layout mounted at `root`: cgroup2 there means v2; a tmpfs
    /// holding at least one v1 controller mount means v1 (hybrid hosts
    /// included — `root/unified` is deliberately ignored, as the controllers
    /// live in the v1 mounts).
    pub fn detect_at(root: &Path) -> Result<Hierarchy, CgroupError> {
        use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
        let st = statfs(root).map_err(|e| fs::io_err(root, e.into()))?;
        let fs_type = st.filesystem_type();
        if fs_type == CGROUP2_SUPER_MAGIC {
            return Ok(Hierarchy::V2 {
                root: root.to_path_buf(),
            });
        }
        if fs_type == TMPFS_MAGIC {
            let has_v1 = v1::CONTROLLERS.iter().any(|c| {
                statfs(&root.join(c))
                    .map(|s| s.filesystem_type() == CGROUP_SUPER_MAGIC)
                    .unwrap_or(false)
            });
            if has_v1 {
                return Ok(Hierarchy::V1 {
                    root: root.to_path_buf(),
                });
            }
        }
        Err(CgroupError::NoHierarchy(root.to_path_buf()))
    }

    /// The mount point of the hierarchy.
    pub fn root(&self) -> &Path {
        match self {
            Hierarchy::V1 { root } | Hierarchy::V2 { root } => root,
        }
    }
}

/// Memory, CPU and pid usage of a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: u64,
    /// CPU time in user and kernel mode (v1: cpuacct.stat ticks as ns).
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub pids: u64,
    /// pids.max; `None` when unlimited or without a pids controller.
    pub pids_limit: Option<u64>,
    pub oom_kills: u64,
    /// memory.stat as the kernel lists it (v1: `cache`, `total_inactive_file`...;
    /// v2: `anon`, `file`, `inactive_file`...), for Docker's `memory_stats.stats`.
    pub memory_stat: std::collections::BTreeMap<String, u64>,
    /// Bytes read and written per block device: (major, minor, "read" or
    /// "write", bytes), from blkio.throttle.io_service_bytes_recursive (v1)
    /// or io.stat (v2), for Docker's `blkio_stats`.
    pub io_bytes: Vec<(u64, u64, String, u64)>,
}

/// `MAJ:MIN Read N` lines (v1 blkio), read and write only.
pub(crate) fn parse_v1_io(text: &str) -> Vec<(u64, u64, String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (dev, op, n) = (w.next()?, w.next()?, w.next()?);
            let (maj, min) = dev.split_once(':')?;
            let op = match op {
                "Read" => "read",
                "Write" => "write",
                _ => return None,
            };
            Some((
                maj.parse().ok()?,
                min.parse().ok()?,
                op.to_string(),
                n.parse().ok()?,
            ))
        })
        .collect()
}

/// `MAJ:MIN rbytes=N wbytes=N ...` lines (v2 io.stat).
pub(crate) fn parse_v2_io(text: &str) -> Vec<(u64, u64, String, u64)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        let Some((maj, min)) = w.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) else {
            continue;
        };
        for kv in w {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let op = match k {
                "rbytes" => "read",
                "wbytes" => "write",
                _ => continue,
            };
            if let Ok(n) = v.parse() {
                out.push((maj, min, op.to_string(), n));
            }
        }
    }
    out
}

/// One container's cgroup (a directory per controller on v1, one on v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub hierarchy: Hierarchy,
    /// The spec's cgroupsPath, normalised to an absolute path inside the hierarchy.
    pub path: PathBuf,
}

impl Cgroup {
    /// Normalises `cgroups_path` (absolute, relative, or systemd "slice:prefix:name").
    ///
    /// - `/a/b` and `a/b` both mean `/a/b` below the hierarchy root.
    /// - `slice:prefix:name` means `/<expanded slice>/<prefix>-<name>.scope`
    ///   (`name.scope` without a prefix; `name` itself if it ends in `.slice`),
    ///   where slice `a-b.slice` expands to `a.slice/a-b.slice` as systemd does
    ///   and an empty slice means `system.slice`. No systemd call is made: the
    ///   directories are managed directly.
    ///
    /// `..` components and paths naming the root cgroup itself are rejected.
    pub fn new(hierarchy: Hierarchy, cgroups_path: &str) -> Result<Cgroup, CgroupError> {
        let path = normalize_path(cgroups_path)?;
        Ok(Cgroup { hierarchy, path })
    }

    /// Creates the directories and writes the limits. Idempotent.
    ///
    /// On v1, when `resources.devices` is given, every device is denied, the
    /// spec's rules are applied in order and then the OCI default devices
    /// (null, zero, full, random, urandom, tty, ptmx, pts) are allowed, as
    /// runc does. On v2 the same list is enforced by an eBPF device program
    /// (see [`devices_bpf`]).
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::create(root, &self.path)?,
            Hierarchy::V2 { root } => v2::create(root, &self.path)?,
        }
        match resources {
            Some(r) => self.apply(r),
            None => Ok(()),
        }
    }

    /// Rewrites limits on a live cgroup (`update`).
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::apply(root, &self.path, resources),
            Hierarchy::V2 { root } => v2::apply(root, &self.path, resources),
        }
    }

    /// Moves `pid` into this cgroup (every controller).
    /// v1: moves the calling single-threaded process into this cgroup the
    /// cheap way and returns how to go back ([`Cgroup::leave`]); children
    /// cloned meanwhile start inside. v2: `None` (use [`Cgroup::add_process`]).
    pub fn enter(&self) -> Result<Option<Vec<PathBuf>>, CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::enter_self(root, &self.path).map(Some),
            Hierarchy::V2 { .. } => Ok(None),
        }
    }

    /// Returns to the cgroups [`Cgroup::enter`] left.
    pub fn leave(previous: &[PathBuf]) -> Result<(), CgroupError> {
        v1::return_self(previous)
    }

    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::Invalid(format!(
                "invalid pid {pid} for cgroup {}",
                self.path.display()
            )));
        }
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::add_process(root, &self.path, pid),
            Hierarchy::V2 { root } => v2::add_process(root, &self.path, pid),
        }
    }

    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::pids(root, &self.path),
            Hierarchy::V2 { root } => v2::pids(root, &self.path),
        }
    }

    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::stats(root, &self.path),
            Hierarchy::V2 { root } => v2::stats(root, &self.path),
        }
    }

    /// True if the kernel OOM-killed a process in this cgroup.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        let kills = match &self.hierarchy {
            Hierarchy::V1 { root } => v1::oom_kills(root, &self.path)?,
            Hierarchy::V2 { root } => v2::oom_kills(root, &self.path)?,
        };
        Ok(kills > 0)
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::set_frozen(root, &self.path, true),
            Hierarchy::V2 { root } => v2::set_frozen(root, &self.path, true),
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::set_frozen(root, &self.path, false),
            Hierarchy::V2 { root } => v2::set_frozen(root, &self.path, false),
        }
    }

    /// SIGKILLs every process, waits for them to go and removes the directories.
    /// Missing directories are not an error.
    ///
    /// Only the leaf directory is removed; parents (e.g. `/cubby`) are left for
    /// other containers. The calling process is never signalled.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { root } => v1::destroy(root, &self.path),
            Hierarchy::V2 { root } => v2::destroy(root, &self.path),
        }
    }
}

/// Turns a spec cgroupsPath into an absolute, `..`-free path (see [`Cgroup::new`]).
pub fn normalize_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |why: &str| CgroupError::Invalid(format!("cgroupsPath {cgroups_path:?}: {why}"));
    if cgroups_path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let raw = if !cgroups_path.starts_with('/') && cgroups_path.contains(':') {
        systemd_path(cgroups_path).map_err(|why| invalid(&why))?
    } else {
        PathBuf::from(cgroups_path)
    };
    let mut out = PathBuf::from("/");
    for comp in raw.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(c) => out.push(c),
            Component::ParentDir => return Err(invalid("\"..\" is not allowed")),
            Component::Prefix(_) => return Err(invalid("unexpected path prefix")),
        }
    }
    if out == Path::new("/") {
        return Err(invalid("names the root cgroup"));
    }
    Ok(out)
}

/// Expands systemd's "slice:prefix:name" into the cgroupfs path systemd uses.
fn systemd_path(s: &str) -> Result<PathBuf, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err("systemd form must be \"slice:prefix:name\"".into());
    };
    if name.is_empty() {
        return Err("systemd form needs a name".into());
    }
    for part in [slice, prefix, name] {
        if part.contains('/') {
            return Err(format!("systemd unit part {part:?} must not contain '/'"));
        }
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut path = expand_slice(slice)?;
    let unit = if name.ends_with(".slice") {
        // A slice is nested like any other slice, so expand it in full.
        return expand_slice(name);
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push(unit);
    Ok(path)
}

/// "a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root.
fn expand_slice(slice: &str) -> Result<PathBuf, String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!(
            "{slice:?} is not a slice name (must end in .slice)"
        ));
    };
    let mut path = PathBuf::from("/");
    if stem == "-" {
        return Ok(path);
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(format!("invalid slice name {slice:?}"));
    }
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, CgroupError> {
        normalize_path(s).map(|p| p.display().to_string())
    }

    #[test]
    fn absolute_and_relative_paths() {
        assert_eq!(norm("/cubby/abc").unwrap(), "/cubby/abc");
        assert_eq!(norm("cubby/abc").unwrap(), "/cubby/abc");
        assert_eq!(norm("//cubby/./abc/").unwrap(), "/cubby/abc");
    }

    #[test]
    fn systemd_paths() {
        assert_eq!(
            norm("machine.slice:libpod:abc").unwrap(),
            "/machine.slice/libpod-abc.scope"
        );
        assert_eq!(
            norm("a-b.slice:cubby:x").unwrap(),
            "/a.slice/a-b.slice/cubby-x.scope"
        );
        assert_eq!(
            norm("user-1000-x.slice:p:n").unwrap(),
            "/user.slice/user-1000.slice/user-1000-x.slice/p-n.scope"
        );
        assert_eq!(norm(":cubby:x").unwrap(), "/system.slice/cubby-x.scope");
        assert_eq!(norm("system.slice::x").unwrap(), "/system.slice/x.scope");
        assert_eq!(norm("-.slice:p:x").unwrap(), "/p-x.scope");
        assert_eq!(
            norm("system.slice:p:my-app.slice").unwrap(),
            "/my.slice/my-app.slice"
        );
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "/cubby/../etc",
            "..",
            "a/../../b",
            "/",
            "",
            ".",
            "a:b",
            "a:b:c:d",
            "notaslice:p:x",
            "a--b.slice:p:x",
            "-a.slice:p:x",
            "system.slice:p:",
            "system.slice:p:x/y",
            "system.slice:../p:x",
        ] {
            let err = normalize_path(bad).expect_err(bad);
            match &err {
                CgroupError::Invalid(msg) => {
                    assert!(msg.contains(&format!("{bad:?}")), "{msg} should name {bad}")
                }
                other => panic!("{bad}: unexpected error {other}"),
            }
        }
    }

    #[test]
    fn detect_on_plain_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        match Hierarchy::detect_at(dir.path()) {
            Err(CgroupError::NoHierarchy(p)) => assert_eq!(p, dir.path()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Hierarchy::detect_at(&dir.path().join("missing")),
            Err(CgroupError::Io { .. })
        ));
    }
}

#[cfg(test)]
mod io_tests {
    #[test]
    fn block_io_lines() {
        let v1 = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 1\n8:0 Total 4608\nTotal 4608\n";
        assert_eq!(
            super::parse_v1_io(v1),
            [
                (8, 0, "read".to_string(), 4096),
                (8, 0, "write".to_string(), 512)
            ]
        );
        let v2 = "253:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(
            super::parse_v2_io(v2),
            [
                (253, 0, "read".to_string(), 100),
                (253, 0, "write".to_string(), 20)
            ]
        );
    }
}
