//! `GET /containers/{id}/stats` and `/top`, container sizes (`size=1` on
//! list and inspect) and the resource limits of `HostConfig` (`-m`,
//! `--cpus`, `--pids-limit`...) turned into the spec's `linux.resources`.
//!
//! Stats are read from the container's cgroup (`/<cgroup_parent>/<id>`)
//! on demand, not by a background collector: a daemon with no `docker
//! stats` client open does no work, and a streamed reply keeps its own
//! previous sample for `precpu_stats`.

use super::error::ApiError;
use super::util::{flag, Query};
use super::{blocking, ApiResult, Shared};
use crate::records::ContainerRecord;
use crate::service::Engine;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard_stubs::models::{
    ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
    ContainerMemoryStats, ContainerPidsStats, ContainerStatsResponse, ContainerTopResponse,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Docker's zero time: `preread` of a first sample.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

use crate::service::stats::{StatsSample as Sample, TICKS_PER_SEC};

fn cpu_stats(s: &Sample) -> ContainerCpuStats {
    ContainerCpuStats {
        cpu_usage: Some(ContainerCpuUsage {
            total_usage: Some(s.stats.cpu_usage_ns),
            percpu_usage: None,
            usage_in_kernelmode: Some(s.stats.cpu_system_ns),
            usage_in_usermode: Some(s.stats.cpu_user_ns),
        }),
        system_cpu_usage: Some(s.system_ns),
        online_cpus: Some(s.online_cpus),
        throttling_data: None,
    }
}

/// Docker's stats document for `cur`, with `prev` as `precpu_stats`.
pub fn stats_doc(
    r: &ContainerRecord,
    cur: &Sample,
    prev: Option<&Sample>,
) -> ContainerStatsResponse {
    let st = &cur.stats;
    ContainerStatsResponse {
        name: Some(format!("/{}", r.name)),
        id: Some(r.id.clone()),
        read: Some(cur.read.clone()),
        preread: Some(prev.map_or(ZERO_TIME.to_string(), |p| p.read.clone())),
        pids_stats: Some(ContainerPidsStats {
            current: Some(st.pids),
            limit: st.pids_limit,
        }),
        cpu_stats: Some(cpu_stats(cur)),
        blkio_stats: Some(ContainerBlkioStats {
            io_service_bytes_recursive: Some(
                st.io_bytes
                    .iter()
                    .map(|(major, minor, op, value)| ContainerBlkioStatEntry {
                        major: Some(*major),
                        minor: Some(*minor),
                        op: Some(op.clone()),
                        value: Some(*value),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        num_procs: Some(0),
        precpu_stats: Some(prev.map(cpu_stats).unwrap_or_default()),
        memory_stats: Some(ContainerMemoryStats {
            usage: Some(st.memory_bytes),
            stats: Some(
                st.memory_stat
                    .clone()
                    .into_iter()
                    .collect::<HashMap<_, _>>(),
            ),
            limit: Some(st.memory_limit_bytes.unwrap_or(cur.host_memory)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What Docker sends for a container that is not running.
fn empty_doc(r: &ContainerRecord) -> ContainerStatsResponse {
    ContainerStatsResponse {
        name: Some(format!("/{}", r.name)),
        id: Some(r.id.clone()),
        read: Some(ZERO_TIME.into()),
        preread: Some(ZERO_TIME.into()),
        ..Default::default()
    }
}

fn line(doc: &ContainerStatsResponse) -> Bytes {
    let mut v = serde_json::to_vec(doc).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: one document per
/// second while `stream` (the default) and the container runs; with
/// `stream=0` one document, sampled twice a second apart so the client can
/// compute CPU % (`one-shot=1` skips the second sample, as Docker).
pub async fn stats(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let stream = q.get("stream").is_none_or(|_| flag(&q, "stream"));
    let one_shot = flag(&q, "one-shot");
    if one_shot && stream {
        return Err(ApiError::bad_request(
            "cannot have stream=true and one-shot=true",
        ));
    }
    let json = [(CONTENT_TYPE, "application/json")];
    let (r, first) = d.stats(&id).await?;
    let Some(first) = first else {
        return Ok((json, line(&empty_doc(&r))).into_response());
    };
    if !stream {
        if one_shot {
            return Ok((json, line(&stats_doc(&r, &first, None))).into_response());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cur = d.stats_again(&r.id).await?;
        let doc = match &cur {
            Some(cur) => stats_doc(&r, cur, Some(&first)),
            // Stopped within the second: its last reading.
            None => stats_doc(&r, &first, None),
        };
        return Ok((json, line(&doc)).into_response());
    }
    // Streamed: ends when the container stops or its cgroup goes; hyper
    // drops the stream (and so this loop) when the client goes away.
    let state = (d, r, Some(first), None::<Sample>);
    let body = futures_util::stream::unfold(state, move |(d, r, next, prev)| async move {
        let cur = match next {
            Some(s) => s,
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                d.stats_again(&r.id).await.ok()??
            }
        };
        let bytes = line(&stats_doc(&r, &cur, prev.as_ref()));
        Some((
            Ok::<_, std::convert::Infallible>(bytes),
            (d, r, None, Some(cur)),
        ))
    });
    Ok((json, Body::from_stream(body)).into_response())
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
fn ps_ef(pids: &[i32]) -> ApiResult<Vec<Vec<String>>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| ApiError::internal("read /proc/uptime"))?;
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
fn host_ps(args: &str, pids: &[i32]) -> ApiResult<ContainerTopResponse> {
    let out = std::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| ApiError::internal(format!("Error running ps: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::internal(format!(
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
        .ok_or_else(|| ApiError::internal("Couldn't find PID field in ps output"))?;
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
    Ok(ContainerTopResponse {
        titles: Some(titles),
        processes: Some(processes),
    })
}

/// `GET /containers/{id}/top?ps_args=`: the container's processes, as
/// `ps -ef` lists them (read from /proc), or as the host's `ps ARGS`.
pub async fn top(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Json<ContainerTopResponse>> {
    let r = d.find(&id).await?;
    // Paused counts as running, as in Docker.
    if !r.status.is_live() {
        return Err(crate::service::EngineError::conflict(format!(
            "Container {} is not running",
            r.id
        ))
        .into());
    }
    let cg = d.container_cgroup(&r.id)?;
    let args = q.get("ps_args").map_or("", |s| s.trim()).to_string();
    let top = blocking(move || {
        let mut pids = cg
            .pids()
            .map_err(|e| ApiError::internal(format!("processes of {}: {e}", r.id)))?;
        pids.sort_unstable();
        if !args.is_empty() && args != "-ef" {
            return host_ps(&args, &pids);
        }
        let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
        Ok(ContainerTopResponse {
            titles: Some(titles.iter().map(|t| t.to_string()).collect()),
            processes: Some(ps_ef(&pids)?),
        })
    })
    .await?;
    Ok(Json(top))
}

/// Bytes the container wrote to its own layer (its snapshot's upper dir).
pub fn size_rw(d: &Engine, id: &str) -> u64 {
    cubby_image::snapshot::Snapshot::at(d.root.join("containers").join(id)).disk_usage()
}

/// The size of the image a container was made from (its snapshot's
/// `image` file names the config digest); 0 if it is gone.
fn image_size(d: &Engine, id: &str, images: &[cubby_image::store::ImageRecord]) -> u64 {
    let file = d.root.join("containers").join(id).join("image");
    let Ok(digest) = std::fs::read_to_string(file) else {
        return 0;
    };
    images
        .iter()
        .find(|i| i.config_digest.to_string() == digest.trim())
        .map_or(0, |i| i.size)
}

/// Adds Docker's `SizeRw` and `SizeRootFs` to list or inspect documents
/// (each has its `Id`), for `size=1`.
pub async fn add_sizes(d: &Shared, docs: &mut [Value]) -> ApiResult<()> {
    let ids: Vec<String> = docs
        .iter()
        .map(|doc| doc["Id"].as_str().unwrap_or("").to_string())
        .collect();
    let d = d.clone();
    let sizes = blocking(move || {
        let images = d
            .images
            .images()
            .map_err(|e| ApiError::internal(format!("image list: {e}")))?;
        Ok(ids
            .iter()
            .map(|id| {
                let rw = size_rw(&d, id);
                (rw, rw + image_size(&d, id, &images))
            })
            .collect::<Vec<_>>())
    })
    .await?;
    for (doc, (rw, rootfs)) in docs.iter_mut().zip(sizes) {
        if let Some(o) = doc.as_object_mut() {
            o.insert("SizeRw".into(), rw.into());
            o.insert("SizeRootFs".into(), rootfs.into());
        }
    }
    Ok(())
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
