//! Container records: what the engine remembers of each container, one
//! JSON file per container at `<root>/containers/<id>/record.json`, written
//! with temp + fsync + rename so a crash leaves the old or the new record,
//! never a torn one. The container's logs live in the same directory.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const RECORD_FILE: &str = "record.json";
pub const CONTAINERS_DIR: &str = "containers";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    /// Running but frozen (cgroup freezer).
    Paused,
    /// Exited; the restart policy will start it again after a back-off.
    Restarting,
    Exited,
}

impl Status {
    /// A process exists (running or frozen).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        })
    }
}

/// When the monitor starts a container again after it exits (Docker's
/// `--restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartName {
    #[default]
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub name: RestartName,
    /// For on-failure: most restarts; 0 is unlimited.
    #[serde(default)]
    pub max_retries: u32,
}

impl RestartPolicy {
    /// Whether an exit with `code` leads to a restart. A container stopped
    /// by the user (stop, or kill as Docker counts it) is never restarted.
    pub fn restarts(&self, code: i32, restart_count: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name {
            RestartName::No => false,
            RestartName::Always | RestartName::UnlessStopped => true,
            RestartName::OnFailure => {
                code != 0 && (self.max_retries == 0 || restart_count < self.max_retries)
            }
        }
    }
}

/// Exit code recorded when a container's exit status is lost (the monitor
/// was not its parent when it died, e.g. after a monitor restart). Docker
/// uses the same value for "unknown".
pub const EXIT_CODE_UNKNOWN: i32 = 255;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    /// RFC 3339 time the record was made.
    pub created: String,
    pub status: Status,
    #[serde(default)]
    pub pid: Option<i32>,
    /// Shell-style: the code, or 128+N after signal N.
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339; empty until started.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub log_path: PathBuf,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Why the monitor could not run or follow the container (Docker's State.Error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The daemon's view (see `CreateRequest::config`), opaque to the monitor.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Remove the container when it exits (`--rm`) and is not restarted.
    #[serde(default)]
    pub auto_remove: bool,
    /// Its process has a terminal: output is one raw stream.
    #[serde(default)]
    pub tty: bool,
    /// Its stdin is a pipe the monitor holds for attachers (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Close that stdin when the first attacher with stdin detaches.
    #[serde(default)]
    pub stdin_once: bool,
    /// Stopped by the user: restart policies leave it alone.
    #[serde(default)]
    pub manually_stopped: bool,
}

impl ContainerRecord {
    /// A new record in state Created.
    pub fn new(id: &str, name: &str, log_path: PathBuf) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: None,
            created: cubby_runtime::state::rfc3339_now(),
            status: Status::Created,
            pid: None,
            exit_code: None,
            oom_killed: false,
            started_at: String::new(),
            finished_at: None,
            log_path,
            restart_count: 0,
            labels: BTreeMap::new(),
            error: None,
            config: serde_json::Value::Null,
            restart_policy: RestartPolicy::default(),
            auto_remove: false,
            tty: false,
            open_stdin: false,
            stdin_once: false,
            manually_stopped: false,
        }
    }
}

/// Why [`resolve`] found no single container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    NotFound,
    /// An id prefix that several containers share.
    Ambiguous,
}

/// Finds a container as Docker does: full id, name (with or without its
/// leading `/`), then a unique id prefix.
pub fn resolve<'a>(
    records: impl IntoIterator<Item = &'a ContainerRecord>,
    what: &str,
) -> Result<&'a ContainerRecord, Unresolved> {
    if what.is_empty() {
        return Err(Unresolved::NotFound);
    }
    let name = what.strip_prefix('/').unwrap_or(what);
    let mut prefixed = None;
    let mut ambiguous = false;
    for r in records {
        if r.id == what || r.name == name {
            return Ok(r);
        }
        if r.id.starts_with(what) {
            ambiguous |= prefixed.is_some();
            prefixed = Some(r);
        }
    }
    match prefixed {
        Some(_) if ambiguous => Err(Unresolved::Ambiguous),
        Some(r) => Ok(r),
        None => Err(Unresolved::NotFound),
    }
}

/// The records under one engine root.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

/// Everything [`Records::list`] could read, plus one error per record it could not.
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<ContainerRecord>,
    pub errors: Vec<Error>,
}

impl Records {
    /// Opens (creating if needed) `<root>/containers`.
    pub fn open(root: &Path) -> Result<Records> {
        let dir = root.join(CONTAINERS_DIR);
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(Records { dir })
    }

    /// The directory holding a container's record and logs.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir(id).join(RECORD_FILE)
    }

    /// Writes (creates or replaces) the record of `rec.id`.
    pub fn put(&self, rec: &ContainerRecord) -> Result<()> {
        cubby_runtime::state::validate_id(&rec.id)?;
        let dir = self.dir(&rec.id);
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::Invalid(format!("record of {}: {e}", rec.id)))?;
        cubby_runtime::state::write_atomic(&self.path(&rec.id), &data)?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<ContainerRecord> {
        if cubby_runtime::state::validate_id(id).is_err() {
            return Err(Error::NotFound(id.to_string()));
        }
        let path = self.path(id);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let rec: ContainerRecord =
            serde_json::from_slice(&data).map_err(|e| Error::CorruptRecord {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if rec.id != id {
            return Err(Error::CorruptRecord {
                path,
                reason: format!("it names container {:?}", rec.id),
            });
        }
        Ok(rec)
    }

    /// Every record, sorted by creation time then id. Directories without a
    /// record (a create interrupted before its first write) are skipped;
    /// unreadable records are reported in `errors`, the rest still listed.
    pub fn list(&self) -> Result<Listing> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
        let mut out = Listing::default();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if id.starts_with('.') || !entry.path().join(RECORD_FILE).exists() {
                continue;
            }
            match self.get(&id) {
                Ok(rec) => out.records.push(rec),
                Err(e) => out.errors.push(e),
            }
        }
        out.records
            .sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        Ok(out)
    }

    /// Removes the record and everything beside it (logs). Missing is fine.
    pub fn remove(&self, id: &str) -> Result<()> {
        cubby_runtime::state::validate_id(id)?;
        let dir = self.dir(id);
        // The container's overlay snapshot shares the directory.
        cubby_image::snapshot::Snapshot::at(&dir)
            .unmount()
            .map_err(|e| Error::Invalid(format!("unmount the rootfs of {id}: {e}")))?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ContainerRecord {
        ContainerRecord {
            image: Some("busybox".into()),
            labels: BTreeMap::from([("a".to_string(), "b".to_string())]),
            ..ContainerRecord::new(id, &format!("name-{id}"), PathBuf::from("/x/log.json"))
        }
    }

    #[test]
    fn restart_policies() {
        let p = |name, max_retries| RestartPolicy { name, max_retries };
        assert!(!p(RestartName::No, 0).restarts(1, 0, false));
        assert!(p(RestartName::Always, 0).restarts(0, 9, false));
        assert!(!p(RestartName::Always, 0).restarts(0, 0, true));
        assert!(p(RestartName::UnlessStopped, 0).restarts(0, 0, false));
        assert!(!p(RestartName::OnFailure, 0).restarts(0, 0, false));
        assert!(p(RestartName::OnFailure, 0).restarts(3, 100, false));
        assert!(p(RestartName::OnFailure, 2).restarts(3, 1, false));
        assert!(!p(RestartName::OnFailure, 2).restarts(3, 2, false));
        assert_eq!(
            serde_json::to_string(&p(RestartName::OnFailure, 3)).unwrap(),
            r#"{"name":"on-failure","max_retries":3}"#
        );
    }

    #[test]
    fn put_get_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::open(tmp.path()).unwrap();
        let a = rec("a");
        records.put(&a).unwrap();
        let mut b = rec("b");
        records.put(&b).unwrap();
        assert_eq!(records.get("a").unwrap(), a);
        b.status = Status::Exited;
        b.exit_code = Some(3);
        records.put(&b).unwrap();
        assert_eq!(records.get("b").unwrap().exit_code, Some(3));
        let listing = records.list().unwrap();
        assert!(listing.errors.is_empty());
        assert_eq!(
            listing
                .records
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        records.remove("a").unwrap();
        records.remove("a").unwrap();
        assert!(matches!(records.get("a"), Err(Error::NotFound(_))));
    }

    #[test]
    fn corrupt_record_is_named_and_others_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::open(tmp.path()).unwrap();
        records.put(&rec("good")).unwrap();
        let bad = records.dir("bad");
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join(RECORD_FILE), b"{not json").unwrap();
        fs::create_dir_all(records.dir("empty")).unwrap();
        let listing = records.list().unwrap();
        assert_eq!(listing.records.len(), 1);
        assert_eq!(listing.records[0].id, "good");
        assert_eq!(listing.errors.len(), 1);
        let msg = listing.errors[0].to_string();
        assert!(msg.contains("bad/record.json"), "{msg}");
        assert!(matches!(
            records.get("bad"),
            Err(Error::CorruptRecord { .. })
        ));
    }

    #[test]
    fn bad_ids_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::open(tmp.path()).unwrap();
        assert!(records.put(&rec("../x")).is_err());
        assert!(matches!(records.get("../x"), Err(Error::NotFound(_))));
        assert!(records.remove("..").is_err());
    }
}
