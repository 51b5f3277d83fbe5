//! Small file helpers shared by the v1 and v2 code. Every error names the path.

use super::CgroupError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` in one write(2): cgroup files parse each write separately.
/// The kernel's reason (often EINVAL) is kept, with the value for context.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let res = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    res.map_err(|e| {
        let kind = e.kind();
        io_err(
            path,
            std::io::Error::new(kind, format!("write {value:?}: {e}")),
        )
    })
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

/// Reads a file holding one number.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| {
        CgroupError::Invalid(format!(
            "{}: expected a number, found {:?}",
            path.display(),
            text.trim()
        ))
    })
}

/// Value of `key` in a "key value" per line file (memory.events, cpu.stat...).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// Every `key number` line of a flat keyed file (memory.stat, cpu.stat).
pub(crate) fn keyed_values(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let key = it.next()?;
            Some((key.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// A limit file holding a number or `max`; `max` (and huge v1 values) are `None`.
pub(crate) fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    Ok(text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 62))
}

/// Pids listed in a cgroup.procs file; a missing file counts as empty, since
/// a cgroup that is not there holds no processes.
pub(crate) fn procs(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
        .collect())
}

/// Requires `file` to exist before writing a limit the spec asked for, so a
/// missing controller is reported as such rather than as a bare ENOENT.
pub(crate) fn require(
    dir: &Path,
    file: &str,
    controller: &str,
    what: &str,
) -> Result<PathBuf, CgroupError> {
    let path = dir.join(file);
    if path.exists() {
        Ok(path)
    } else {
        Err(CgroupError::Invalid(format!(
            "{what} requested but the {controller} controller is not available at {} ({file} is missing)",
            dir.display()
        )))
    }
}

/// SIGKILLs `pids`, never the calling process. Already-gone pids are fine.
pub(crate) fn kill_all(pids: &[i32]) {
    let me = std::process::id() as i32;
    for &pid in pids.iter().filter(|&&p| p != me) {
        // ESRCH just means it exited meanwhile; nothing else is actionable here.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Pids in `dir` and every cgroup below it (a container may have made its
/// own sub-cgroups). A missing directory holds nothing.
pub(crate) fn subtree_procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut all = procs(&dir.join("cgroup.procs"))?;
    for sub in subdirs(dir)? {
        all.extend(subtree_procs(&sub)?);
    }
    Ok(all)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        // file_type() does not follow symlinks, so nothing outside is walked.
        if entry
            .file_type()
            .map_err(|e| io_err(&entry.path(), e))?
            .is_dir()
        {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Waits until no process is left in `dir`'s subtree, re-sending SIGKILL to
/// late arrivals (children forked before the first signal landed).
pub(crate) fn kill_and_wait(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = subtree_procs(dir)?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::Invalid(format!(
                "{}: processes {left:?} still present after SIGKILL",
                dir.display()
            )));
        }
        kill_all(&left);
        sleep(Duration::from_millis(10));
    }
}

/// Removes a cgroup directory and any sub-cgroups below it (bottom-up);
/// missing is fine, EBUSY (the kernel still tearing down exited tasks) is
/// retried for about a second.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    for sub in subdirs(dir)? {
        rmdir_tree(&sub)?;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err(dir, e)),
        }
    }
}

/// Polls `check` until it is true or `timeout` passes.
pub(crate) fn wait_for(
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(Duration::from_millis(5));
    }
}

/// Rejects negative values other than -1 ("unlimited").
pub(crate) fn check_limit(value: i64, what: &str) -> Result<(), CgroupError> {
    if value < -1 {
        Err(CgroupError::Invalid(format!(
            "{what} {value} is invalid (must be -1 or positive)"
        )))
    } else {
        Ok(())
    }
}

/// Validates "rwm"-style device access; empty means all.
pub(crate) fn device_access(access: Option<&str>) -> Result<String, CgroupError> {
    let access = access.unwrap_or("");
    if access.is_empty() {
        return Ok("rwm".into());
    }
    if access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        Ok(access.into())
    } else {
        Err(CgroupError::Invalid(format!(
            "device access {access:?} is invalid (expected letters from \"rwm\")"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let text = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(1));
        assert_eq!(keyed_value(text, "oom"), Some(2));
        assert_eq!(keyed_value(text, "missing"), None);
        assert_eq!(keyed_value("oom_kill x", "oom_kill"), None);
    }

    #[test]
    fn access_strings() {
        assert_eq!(device_access(None).unwrap(), "rwm");
        assert_eq!(device_access(Some("rw")).unwrap(), "rw");
        assert!(device_access(Some("rwx")).is_err());
    }
}
