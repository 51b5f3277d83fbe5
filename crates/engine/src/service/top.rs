//! `top`: a container's processes as `ps -ef` lists them (read from
//! /proc for the pids of its cgroup), or as the host's `ps ARGS` filtered
//! to those pids (Docker's way for other arguments). The API only turns
//! the table into Docker's document.

use super::error::{EngineError, EngineResult};
use super::stats::TICKS_PER_SEC;
use super::{blocking, Engine};
use std::collections::{HashMap, HashSet};

/// A process table: column titles and one row per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

impl Engine {
    /// The processes of container `what` (a name or id); `ps_args` empty
    /// or `-ef` gives `ps -ef`'s columns, anything else runs the host's
    /// `ps` with those arguments. Conflict if it is not running (paused
    /// counts as running, as in Docker).
    pub async fn top(&self, what: &str, ps_args: &str) -> EngineResult<Top> {
        let r = self.find(what).await?;
        if !r.status.is_live() {
            return Err(EngineError::conflict(format!(
                "Container {} is not running",
                r.id
            )));
        }
        let cg = self.container_cgroup(&r.id)?;
        let args = ps_args.trim().to_string();
        blocking(move || {
            let mut pids = cg
                .pids()
                .map_err(|e| EngineError::internal(format!("processes of {}: {e}", r.id)))?;
            pids.sort_unstable();
            if !args.is_empty() && args != "-ef" {
                return host_ps(&args, &pids);
            }
            let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
            Ok(Top {
                titles: titles.iter().map(|t| t.to_string()).collect(),
                processes: ps_ef(&pids)?,
            })
        })
        .await
    }
}

/// One process of `top`, read from /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub tty_nr: u32,
    /// utime + stime, in ticks.
    pub cpu_ticks: u64,
    /// Start time in ticks after boot.
    pub start_ticks: u64,
    pub comm: String,
    pub cmdline: String,
}

/// Parses `/proc/PID/stat` (the command may hold spaces and parentheses,
/// so fields are counted from the last `)`).
pub fn parse_stat(text: &str) -> Option<(String, i32, u32, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = f.get(1)?.parse().ok()?;
    let tty = f.get(4)?.parse::<i64>().ok()? as u32;
    let cpu = num(11)? + num(12)?;
    let start = num(19)?;
    Some((comm, ppid, tty, cpu, start))
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, ppid, tty_nr, cpu_ticks, start_ticks) = parse_stat(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(Proc {
        pid,
        ppid,
        uid,
        tty_nr,
        cpu_ticks,
        start_ticks,
        comm,
        cmdline,
    })
}

/// `ps`'s TTY column for a `tty_nr`.
pub fn tty_name(tty_nr: u32) -> String {
    let (major, minor) = (
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    );
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => format!("{major}:{minor}"),
    }
}

/// `[DD-]HH:MM:SS`, as ps's TIME column.
pub fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn user_names() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// Rows of `ps -ef` (UID PID PPID C STIME TTY TIME CMD) for `pids`.
fn ps_ef(pids: &[i32]) -> EngineResult<Vec<Vec<String>>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| EngineError::internal("read /proc/uptime"))?;
    let boot = now.saturating_sub(uptime as u64);
    let users = user_names();
    let mut rows = Vec::new();
    for &pid in pids {
        // Gone since the cgroup was listed.
        let Some(p) = read_proc(pid) else { continue };
        let started = boot + p.start_ticks / TICKS_PER_SEC;
        let elapsed = now.saturating_sub(started).max(1);
        let c = p.cpu_ticks * 100 / (TICKS_PER_SEC * elapsed);
        let stime = if now - started < 86400 {
            let t = cubby_runtime::state::rfc3339(started as i64, 0);
            t.get(11..16).unwrap_or("?").to_string()
        } else {
            let t = cubby_runtime::state::rfc3339(started as i64, 0);
            t.get(5..10).unwrap_or("?").to_string()
        };
        let cmd = if p.cmdline.is_empty() {
            format!("[{}]", p.comm)
        } else {
            p.cmdline
        };
        rows.push(vec![
            users.get(&p.uid).cloned().unwrap_or(p.uid.to_string()),
            p.pid.to_string(),
            p.ppid.to_string(),
            c.to_string(),
            stime,
            tty_name(p.tty_nr),
            cpu_time(p.cpu_ticks / TICKS_PER_SEC),
            cmd,
        ]);
    }
    Ok(rows)
}

/// Docker's way for other `ps_args`: run the host's `ps`, keep the rows
/// whose PID column is one of the container's.
fn host_ps(args: &str, pids: &[i32]) -> EngineResult<Top> {
    let out = std::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| EngineError::internal(format!("Error running ps: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::internal(format!(
            "Error running ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| EngineError::internal("Couldn't find PID field in ps output"))?;
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    let mut processes = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        match fields[pid_col].parse::<i32>() {
            Ok(p) if wanted.contains(&p) => {}
            _ => continue,
        }
        let mut row: Vec<String> = fields[..titles.len() - 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        row.push(fields[titles.len() - 1..].join(" "));
        processes.push(row);
    }
    Ok(Top { titles, processes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_ps_columns() {
        let stat = "42 (a (b) c) S 7 42 42 34816 42 4194560 1 2 3 4 150 50 0 0 20 0 1 0 12345 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(("a (b) c".into(), 7, 34816, 200, 12345))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(3723), "01:02:03");
        assert_eq!(cpu_time(90000), "1-01:00:00");
    }
}
