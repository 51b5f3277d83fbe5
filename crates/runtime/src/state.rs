//! Container state on disk: one directory per container under the runtime's
//! root (`--root`), holding `state.json` (written to a temp file and renamed
//! over, so a killed runtime never leaves a torn file) and the `exec.fifo`
//! that holds a created container until `start`.
//!
//! The root is a tmpfs in real deployments (/run/...), and the containers
//! it describes do not survive a reboot anyway, so by default nothing is
//! fsynced: temp + rename is atomic against a killed runtime, which is the
//! failure that matters (`delete` repairs a killed `create`). A root on a
//! disk that must survive power loss asks for fsync ([`StateRoot::with_fsync`],
//! `cubby-oci --fsync-state`).

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What the runtime remembers of a container. The first fields are the OCI
/// `state` output; the rest is cubby's own bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    /// Start time of `pid` in clock ticks since boot (field 22 of
    /// /proc/PID/stat): tells our process from a later one with a reused pid.
    pub pid_start_time: u64,
    /// The normalised cgroup path inside the hierarchy.
    pub cgroup_path: String,
    /// Created with `--no-new-keyring`: exec'd processes keep the caller's
    /// session keyring too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_keyring: bool,
}

impl State {
    /// Refreshes `status` from the live system: is the init still ours and
    /// alive, is it still waiting on the exec fifo, is its cgroup frozen.
    pub fn refresh(&mut self, dir: &Path) {
        self.status = if !process_is(self.pid, self.pid_start_time) {
            Status::Stopped
        } else if dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else if self.status == Status::Paused {
            Status::Paused
        } else {
            Status::Running
        };
    }

    /// The OCI `state` document (runc adds rootfs, created and owner too).
    pub fn to_oci_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": self.status,
            "pid": if self.status == Status::Stopped { 0 } else { self.pid },
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
        })
    }
}

/// True if `pid` exists, is not a zombie, and started at `start_time`.
pub fn process_is(pid: i32, start_time: u64) -> bool {
    match proc_stat(pid) {
        Some((state, start)) => state != 'Z' && state != 'X' && start == start_time,
        None => false,
    }
}

/// (state char, start time) from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // After state come 18 fields before starttime (field 22 overall).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The runtime's state root (runc's `--root`).
#[derive(Debug, Clone)]
pub struct StateRoot {
    pub path: PathBuf,
    /// fsync each state write (file and directory).
    pub fsync: bool,
}

impl StateRoot {
    /// A state root written without fsync (see the module docs).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateRoot {
            path: path.into(),
            fsync: false,
        }
    }

    /// The same root, fsyncing every write when `fsync` is true.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Writes a file of this root (or a pid file for its caller) atomically,
    /// with fsync only if the root asks for it.
    pub fn write(&self, path: &Path, data: &[u8]) -> Result<()> {
        write_replace(path, data, self.fsync)
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Makes the directory of a new container; fails if the id is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        fs::create_dir_all(&self.path)
            .ctx(|| format!("create state root {}", self.path.display()))?;
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists(id.to_string()))
            }
            Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
        }
    }

    pub fn load(&self, id: &str) -> Result<State> {
        validate_id(id)?;
        let dir = self.dir(id);
        let path = dir.join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let mut state: State = serde_json::from_slice(&data).map_err(|e| Error::Config {
            path: path.clone(),
            reason: format!("corrupt state file ({e}); `delete --force {id}` removes it"),
        })?;
        state.refresh(&dir);
        Ok(state)
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let data = serde_json::to_vec(state).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        self.write(&self.dir(&state.id).join(STATE_FILE), &data)
    }

    /// Every container with a readable state file, sorted by id.
    pub fn list(&self) -> Result<Vec<State>> {
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", self.path.display()), e)),
        };
        let mut out: Vec<State> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| self.load(e.file_name().to_str()?).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
        }
    }
}

/// Container ids become path components and cgroup names.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// Writes `data` to `path` so that a crash leaves either the old or the new
/// file: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_replace(path, data, true)
}

/// Temp file + rename (atomic for readers and against a killed writer);
/// with `fsync` also durable across a power loss.
pub fn write_replace(path: &Path, data: &[u8], fsync: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        if fsync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if fsync {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("write {}", path.display()), e)
    })
}

/// RFC 3339 UTC timestamp with nanoseconds, as runc prints `created`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_798_761_599, 0), "2026-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn ids() {
        for good in ["a", "abc-1.2_x", "0123456789abcdef"] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "é"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        let (state, start) = proc_stat(pid).unwrap();
        assert_ne!(state, 'Z');
        assert!(process_is(pid, start));
        assert!(!process_is(pid, start + 1));
        assert!(!process_is(-1, 0));
    }

    #[test]
    fn state_round_trip_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path());
        root.create_dir("c1").unwrap();
        assert!(matches!(
            root.create_dir("c1"),
            Err(Error::AlreadyExists(_))
        ));
        let st = State {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: Status::Created,
            pid: 999_999_999,
            bundle: "/b".into(),
            annotations: HashMap::new(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339_now(),
            owner: String::new(),
            pid_start_time: 1,
            cgroup_path: "/cubby/c1".into(),
            no_new_keyring: false,
        };
        root.save(&st).unwrap();
        let back = root.load("c1").unwrap();
        assert_eq!(back.status, Status::Stopped, "dead pid reads as stopped");
        assert_eq!(root.list().unwrap().len(), 1);
        fs::write(root.dir("c1").join(STATE_FILE), b"{garbage").unwrap();
        let err = root.load("c1").unwrap_err().to_string();
        assert!(err.contains("corrupt state file"), "{err}");
        root.remove("c1").unwrap();
        assert!(matches!(root.load("c1"), Err(Error::NotFound(_))));
    }
}
