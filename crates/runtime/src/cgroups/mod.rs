//! Resource limits through cgroups. The hierarchy (v1, hybrid or v2) is
//! detected at run time; the same `Cgroup` API serves both.
//!
//! INTERFACE (owned by the cgroups helper; signatures are the contract):

use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

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
    pub fn detect_at(_root: &Path) -> Result<Hierarchy, CgroupError> {
        todo!()
    }
}

/// Memory, CPU and pid usage of a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    pub oom_kills: u64,
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
    pub fn new(_hierarchy: Hierarchy, _cgroups_path: &str) -> Result<Cgroup, CgroupError> {
        todo!()
    }
    /// Creates the directories and writes the limits. Idempotent.
    pub fn create(&self, _resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        todo!()
    }
    /// Rewrites limits on a live cgroup (`update`).
    pub fn apply(&self, _resources: &LinuxResources) -> Result<(), CgroupError> {
        todo!()
    }
    /// Moves `pid` into this cgroup (every controller).
    pub fn add_process(&self, _pid: i32) -> Result<(), CgroupError> {
        todo!()
    }
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        todo!()
    }
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        todo!()
    }
    /// True if the kernel OOM-killed a process in this cgroup.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        todo!()
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        todo!()
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        todo!()
    }
    /// SIGKILLs every process, waits for them to go and removes the directories.
    /// Missing directories are not an error.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        todo!()
    }
}
