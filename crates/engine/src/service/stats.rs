//! A container's resource use, read from its cgroup (`/<cgroup_parent>/<id>`)
//! on demand: no background collector, so an engine with no stats reader
//! does no work. The API (`api/stats.rs`) turns samples into Docker's
//! documents; a caller that wants CPU % keeps its previous sample.

use super::error::{EngineError, EngineResult};
use super::{blocking, Engine};
use crate::records::ContainerRecord;
use cubby_runtime::cgroups::{Cgroup, Hierarchy, Stats};

/// USER_HZ, fixed at 100 for user space on Linux.
pub const TICKS_PER_SEC: u64 = 100;

/// One reading of a container's cgroup and of the host.
#[derive(Debug, Clone)]
pub struct StatsSample {
    /// When it was read (RFC 3339).
    pub read: String,
    pub stats: Stats,
    /// Host CPU time (all CPUs, idle included) in ns, from /proc/stat.
    pub system_ns: u64,
    pub online_cpus: u32,
    /// The host's MemTotal in bytes (the limit of a container without one).
    pub host_memory: u64,
}

impl Engine {
    /// The cgroup `create` put container `id` in.
    pub fn container_cgroup(&self, id: &str) -> EngineResult<Cgroup> {
        let hierarchy = Hierarchy::detect()
            .map_err(|e| EngineError::internal(format!("cgroup hierarchy: {e}")))?;
        Cgroup::new(
            hierarchy,
            &format!("/{}/{id}", self.cgroup_parent.trim_matches('/')),
        )
        .map_err(|e| EngineError::internal(format!("cgroup of {id}: {e}")))
    }

    /// The container a client named and, if it runs (or is paused), one
    /// reading of its resource use; None when it is not running.
    pub async fn stats(&self, what: &str) -> EngineResult<(ContainerRecord, Option<StatsSample>)> {
        let r = self.find(what).await?;
        if !r.status.is_live() {
            return Ok((r, None));
        }
        let cg = self.container_cgroup(&r.id)?;
        let s = blocking(move || sample(&cg)).await?;
        Ok((r, Some(s)))
    }

    /// A further reading of container `id` (a stream's next one); None once
    /// it no longer runs.
    pub async fn stats_again(&self, id: &str) -> EngineResult<Option<StatsSample>> {
        let id2 = id.to_string();
        let now = self.monitor(move |c| c.get(&id2)).await?;
        if !now.status.is_live() {
            return Ok(None);
        }
        let cg = self.container_cgroup(id)?;
        blocking(move || sample(&cg)).await.map(Some)
    }
}

/// Reads a cgroup and the host's CPU time (blocking).
pub fn sample(cg: &Cgroup) -> EngineResult<StatsSample> {
    let stats = cg
        .stats()
        .map_err(|e| EngineError::internal(format!("stats of {}: {e}", cg.path.display())))?;
    let (system_ns, online_cpus) = host_cpu()?;
    Ok(StatsSample {
        read: cubby_runtime::state::rfc3339_now(),
        stats,
        system_ns,
        online_cpus,
        host_memory: host_memory(),
    })
}

/// The host's total CPU time in ns and its number of CPUs, from
/// /proc/stat (the same source and units Docker uses).
pub fn host_cpu() -> EngineResult<(u64, u32)> {
    let text = std::fs::read_to_string("/proc/stat")
        .map_err(|e| EngineError::internal(format!("read /proc/stat: {e}")))?;
    parse_proc_stat(&text)
        .ok_or_else(|| EngineError::internal("/proc/stat has no aggregate cpu line"))
}

fn parse_proc_stat(text: &str) -> Option<(u64, u32)> {
    let mut total = None;
    let mut cpus = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest is in user).
                let ticks: u64 = f.take(8).filter_map(|v| v.parse::<u64>().ok()).sum();
                total = Some(ticks.saturating_mul(1_000_000_000 / TICKS_PER_SEC));
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    Some((total?, cpus.max(1)))
}

/// MemTotal in bytes.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat() {
        let text = "cpu  100 5 50 1000 10 1 2 3 0 0\ncpu0 50 0 25 500 5 0 1 1 0 0\ncpu1 50 5 25 500 5 1 1 2 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(text), Some((1171 * 10_000_000, 2)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        assert!(host_cpu().is_ok_and(|(ns, cpus)| ns > 0 && cpus >= 1));
        assert!(host_memory() > 0);
    }
}
