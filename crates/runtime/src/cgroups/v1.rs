//! cgroup v1 (one hierarchy per controller).
//!
//! Each controller is mounted at `root/<controller>`; co-mounted controllers
//! (`cpu,cpuacct` reached through a `cpu` symlink) are handled once. The
//! container gets the same relative directory in every mounted controller.

use super::fs::{self, check_limit, io_err, require};
use super::{CgroupError, Stats};
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Controllers a container joins, when the host mounts them.
pub const CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
];

/// Devices every container may use, appended after the spec's own rules (the
/// same set runc allows): mknod of anything, plus null, zero, full, random,
/// urandom, tty, ptmx and the pty slaves.
pub const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// Values at or above this in `*.limit_in_bytes` mean "no limit" (the kernel
/// reports PAGE_COUNTER_MAX pages, rounded, rather than -1).
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// How long destroy waits for killed processes to leave.
const KILL_TIMEOUT: Duration = Duration::from_secs(3);
const FREEZE_TIMEOUT: Duration = Duration::from_secs(3);

fn rel(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// The container's directory in `controller`'s hierarchy.
fn dir(root: &Path, path: &Path, controller: &str) -> PathBuf {
    root.join(controller).join(rel(path))
}

/// One (mount, leaf) pair per distinct mounted hierarchy.
fn mounts(root: &Path, path: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for c in CONTROLLERS {
        let mount = root.join(c);
        if !mount.is_dir() {
            continue;
        }
        let canonical = std::fs::canonicalize(&mount).unwrap_or_else(|_| mount.clone());
        if seen.contains(&canonical) {
            continue;
        }
        seen.push(canonical);
        let leaf = mount.join(rel(path));
        out.push((mount, leaf));
    }
    out
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// cpuset refuses tasks while cpus/mems are empty, and new directories start
/// empty, so inherit the parent's values at each level.
fn inherit_cpuset(dir: &Path, parent: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !own.exists() {
            continue;
        }
        if fs::read(&own)?.trim().is_empty() {
            let from_parent = fs::read(&parent.join(file))?;
            fs::write(&own, from_parent.trim())?;
        }
    }
    Ok(())
}

pub(crate) fn create(root: &Path, path: &Path) -> Result<(), CgroupError> {
    let mounts = mounts(root, path);
    if mounts.is_empty() {
        return Err(CgroupError::NoHierarchy(root.to_path_buf()));
    }
    for (mount, _) in &mounts {
        let mut current = mount.clone();
        for comp in rel(path).components() {
            let parent = current.clone();
            current.push(comp);
            mkdir(&current)?;
            inherit_cpuset(&current, &parent)?;
        }
    }
    Ok(())
}

pub(crate) fn apply(root: &Path, path: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        set_memory(&dir(root, path, "memory"), m)?;
    }
    if let Some(cpu) = r.cpu() {
        set_cpu(root, path, cpu)?;
    }
    if let Some(pids) = r.pids() {
        let d = dir(root, path, "pids");
        let limit = pids.limit();
        if limit > 0 {
            fs::write(
                &require(&d, "pids.max", "pids", "pids limit")?,
                &limit.to_string(),
            )?;
        } else if d.join("pids.max").exists() {
            fs::write(&d.join("pids.max"), "max")?;
        }
    }
    if let Some(bio) = r.block_io() {
        set_blkio(&dir(root, path, "blkio"), bio)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        let d = dir(root, path, "hugetlb");
        for l in limits {
            let size = l.page_size();
            if size.is_empty() || size.contains('/') {
                return Err(CgroupError::Invalid(format!(
                    "invalid hugepage size {size:?}"
                )));
            }
            check_limit(l.limit(), "hugepage limit")?;
            let file = format!("hugetlb.{size}.limit_in_bytes");
            fs::write(
                &require(&d, &file, "hugetlb", "hugepage limit")?,
                &l.limit().to_string(),
            )?;
        }
    }
    if let Some(net) = r.network() {
        if let Some(id) = net.class_id() {
            let d = dir(root, path, "net_cls");
            fs::write(
                &require(&d, "net_cls.classid", "net_cls", "network class id")?,
                &id.to_string(),
            )?;
        }
        if let Some(prios) = net.priorities() {
            let d = dir(root, path, "net_prio");
            for p in prios {
                let file = require(&d, "net_prio.ifpriomap", "net_prio", "network priority")?;
                fs::write(&file, &format!("{} {}", p.name(), p.priority()))?;
            }
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CgroupError::Invalid("rdma limits are not supported".into()));
    }
    if r.unified().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CgroupError::Invalid(
            "linux.resources.unified requires cgroup v2, but this host uses cgroup v1".into(),
        ));
    }
    if let Some(devices) = r.devices() {
        set_devices(&dir(root, path, "devices"), devices)?;
    }
    Ok(())
}

fn set_memory(d: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    // runc treats 0 as "not set" for these.
    let limit = m.limit().filter(|&v| v != 0);
    let mut swap = m.swap().filter(|&v| v != 0);
    if let Some(l) = limit {
        check_limit(l, "memory limit")?;
    }
    if let Some(s) = swap {
        check_limit(s, "memory+swap limit")?;
    }
    let memsw = d.join("memory.memsw.limit_in_bytes");
    // Lifting the memory limit alone would leave memsw below it, which the
    // kernel rejects; runc lifts both.
    if limit == Some(-1) && swap.is_none() && memsw.exists() {
        swap = Some(-1);
    }
    match (limit, swap) {
        (Some(l), Some(s)) if l > 0 && s > 0 && s < l => {
            return Err(CgroupError::Invalid(format!(
                "memory+swap limit {s} must be >= memory limit {l}"
            )))
        }
        (Some(-1), Some(s)) if s > 0 => {
            return Err(CgroupError::Invalid(format!(
                "memory+swap limit {s} needs a memory limit, but memory is unlimited"
            )))
        }
        _ => {}
    }
    if limit.is_some() || swap.is_some() {
        let limit_file = require(d, "memory.limit_in_bytes", "memory", "memory limit")?;
        // Without swap accounting (swapaccount=0) there is no memsw file and
        // swap cannot be limited; the memory limit still applies.
        let swap = swap.filter(|_| memsw.exists());
        match (limit, swap) {
            (Some(l), Some(s)) => {
                // memory.limit_in_bytes <= memsw must hold after every write:
                // raise memsw first when growing, shrink memory first otherwise.
                let current = fs::read_u64(&limit_file)?;
                if s == -1 || l == -1 || l as u64 > current {
                    fs::write(&memsw, &s.to_string())?;
                    fs::write(&limit_file, &l.to_string())?;
                } else {
                    fs::write(&limit_file, &l.to_string())?;
                    fs::write(&memsw, &s.to_string())?;
                }
            }
            (Some(l), None) => fs::write(&limit_file, &l.to_string())?,
            (None, Some(s)) => fs::write(&memsw, &s.to_string())?,
            (None, None) => {}
        }
    }
    if let Some(res) = m.reservation().filter(|&v| v != 0) {
        check_limit(res, "memory reservation")?;
        let f = require(
            d,
            "memory.soft_limit_in_bytes",
            "memory",
            "memory reservation",
        )?;
        fs::write(&f, &res.to_string())?;
    }
    if let Some(tcp) = m.kernel_tcp().filter(|&v| v != 0) {
        check_limit(tcp, "kernel TCP memory limit")?;
        let f = require(
            d,
            "memory.kmem.tcp.limit_in_bytes",
            "memory",
            "kernel TCP memory limit",
        )?;
        fs::write(&f, &tcp.to_string())?;
    }
    // `kernel` (kmem) is ignored: obsolete since Linux 5.4 and ignored by runc.
    if let Some(sw) = m.swappiness() {
        if sw > 100 {
            return Err(CgroupError::Invalid(format!(
                "memory swappiness {sw} is invalid (0-100)"
            )));
        }
        let f = require(d, "memory.swappiness", "memory", "memory swappiness")?;
        fs::write(&f, &sw.to_string())?;
    }
    if let Some(disable) = m.disable_oom_killer() {
        if disable {
            let f = require(
                d,
                "memory.oom_control",
                "memory",
                "disabling the OOM killer",
            )?;
            fs::write(&f, "1")?;
        } else if d.join("memory.oom_control").exists() {
            fs::write(&d.join("memory.oom_control"), "0")?;
        }
    }
    Ok(())
}

fn set_cpu(root: &Path, path: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    let d = dir(root, path, "cpu");
    if let Some(shares) = c.shares().filter(|&v| v != 0) {
        fs::write(
            &require(&d, "cpu.shares", "cpu", "cpu shares")?,
            &shares.to_string(),
        )?;
    }
    // Period first: the kernel validates a new quota against the period.
    if let Some(period) = c.period().filter(|&v| v != 0) {
        let f = require(&d, "cpu.cfs_period_us", "cpu", "cpu period")?;
        fs::write(&f, &period.to_string())?;
    }
    if let Some(quota) = c.quota().filter(|&v| v != 0) {
        check_limit(quota, "cpu quota")?;
        let f = require(&d, "cpu.cfs_quota_us", "cpu", "cpu quota")?;
        fs::write(&f, &quota.to_string())?;
    }
    if let Some(burst) = c.burst() {
        let f = require(&d, "cpu.cfs_burst_us", "cpu", "cpu burst")?;
        fs::write(&f, &burst.to_string())?;
    }
    if let Some(idle) = c.idle() {
        fs::write(
            &require(&d, "cpu.idle", "cpu", "cpu idle")?,
            &idle.to_string(),
        )?;
    }
    // Period before runtime, for the same reason as CFS.
    if let Some(p) = c.realtime_period().filter(|&v| v != 0) {
        let f = require(
            &d,
            "cpu.rt_period_us",
            "cpu (with RT group scheduling)",
            "realtime period",
        )?;
        fs::write(&f, &p.to_string())?;
    }
    if let Some(rt) = c.realtime_runtime().filter(|&v| v != 0) {
        let f = require(
            &d,
            "cpu.rt_runtime_us",
            "cpu (with RT group scheduling)",
            "realtime runtime",
        )?;
        fs::write(&f, &rt.to_string())?;
    }
    let cs = dir(root, path, "cpuset");
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        fs::write(&require(&cs, "cpuset.cpus", "cpuset", "cpuset cpus")?, cpus)?;
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        fs::write(&require(&cs, "cpuset.mems", "cpuset", "cpuset mems")?, mems)?;
    }
    Ok(())
}

fn set_blkio(d: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // CFQ exposes blkio.weight, BFQ blkio.bfq.weight; mq-deadline/none neither.
    let pick = |plain: &str, bfq: &str, what: &str| -> Result<PathBuf, CgroupError> {
        if d.join(bfq).exists() && !d.join(plain).exists() {
            Ok(d.join(bfq))
        } else {
            require(
                d,
                plain,
                "blkio (with a weight-capable I/O scheduler)",
                what,
            )
        }
    };
    if let Some(w) = b.weight().filter(|&v| v != 0) {
        fs::write(
            &pick("blkio.weight", "blkio.bfq.weight", "blkio weight")?,
            &w.to_string(),
        )?;
    }
    if let Some(w) = b.leaf_weight().filter(|&v| v != 0) {
        fs::write(
            &require(d, "blkio.leaf_weight", "blkio", "blkio leaf weight")?,
            &w.to_string(),
        )?;
    }
    for wd in b.weight_device().iter().flatten() {
        if let Some(w) = wd.weight() {
            let f = pick(
                "blkio.weight_device",
                "blkio.bfq.weight_device",
                "blkio device weight",
            )?;
            fs::write(&f, &format!("{}:{} {w}", wd.major(), wd.minor()))?;
        }
        if let Some(w) = wd.leaf_weight() {
            let f = require(
                d,
                "blkio.leaf_weight_device",
                "blkio",
                "blkio device leaf weight",
            )?;
            fs::write(&f, &format!("{}:{} {w}", wd.major(), wd.minor()))?;
        }
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
        ),
    ];
    for (list, file) in throttles {
        for t in list.iter().flatten() {
            let f = require(d, file, "blkio", "blkio throttle")?;
            fs::write(&f, &format!("{}:{} {}", t.major(), t.minor(), t.rate()))?;
        }
    }
    Ok(())
}

/// Formats one spec rule for devices.allow/deny; `None` for FIFO rules,
/// which the device controller does not govern.
pub fn device_rule(d: &LinuxDeviceCgroup) -> Result<Option<String>, CgroupError> {
    let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => return Ok(None),
    };
    let num = |n: Option<i64>, what: &str| -> Result<String, CgroupError> {
        match n {
            None | Some(-1) => Ok("*".into()),
            Some(v) if v >= 0 => Ok(v.to_string()),
            Some(v) => Err(CgroupError::Invalid(format!(
                "device {what} number {v} is invalid"
            ))),
        }
    };
    let access = fs::device_access(d.access().as_deref())?;
    Ok(Some(format!(
        "{typ} {}:{} {access}",
        num(d.major(), "major")?,
        num(d.minor(), "minor")?
    )))
}

fn set_devices(d: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    // Validate everything before touching the live allowlist.
    let mut lines = Vec::new();
    for rule in rules {
        if let Some(line) = device_rule(rule)? {
            lines.push((rule.allow(), line));
        }
    }
    lines.extend(DEFAULT_DEVICE_RULES.iter().map(|l| (true, l.to_string())));
    let deny = require(d, "devices.deny", "devices", "device rules")?;
    let allow = require(d, "devices.allow", "devices", "device rules")?;
    fs::write(&deny, "a")?;
    for (is_allow, line) in lines {
        fs::write(if is_allow { &allow } else { &deny }, &line)?;
    }
    Ok(())
}

/// Moves the calling thread into `path` in every controller and returns the
/// `tasks` files of the cgroups it came from. A thread moving itself (writing
/// "0" to `tasks`) skips the global threadgroup rwsem that any other move
/// takes for writing, which costs an RCU grace period (~10 ms here): a child
/// cloned while we are inside starts in the cgroup for free.
pub(crate) fn enter_self(root: &Path, path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let own_file = Path::new("/proc/self/cgroup");
    let own = std::fs::read_to_string(own_file).map_err(|e| io_err(own_file, e))?;
    let mut back = Vec::new();
    for (mount, leaf) in mounts(root, path) {
        let canonical = std::fs::canonicalize(&mount).unwrap_or_else(|_| mount.clone());
        let name = canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let wanted: Vec<&str> = name.split(',').collect();
        let current = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, p) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls
                .split(',')
                .any(|c| wanted.contains(&c))
                .then(|| p.to_string())
        });
        let Some(current) = current else { continue };
        fs::write(&leaf.join("tasks"), "0")?;
        back.push(mount.join(rel(Path::new(&current))).join("tasks"));
    }
    Ok(back)
}

/// Puts the calling thread back where [`enter_self`] found it.
pub(crate) fn return_self(tasks_files: &[PathBuf]) -> Result<(), CgroupError> {
    for f in tasks_files {
        fs::write(f, "0")?;
    }
    Ok(())
}

pub(crate) fn add_process(root: &Path, path: &Path, pid: i32) -> Result<(), CgroupError> {
    let mounts = mounts(root, path);
    if mounts.is_empty() {
        return Err(CgroupError::NoHierarchy(root.to_path_buf()));
    }
    // The runtime only moves single-threaded processes (a freshly cloned
    // init, an exec helper), so writing the thread to `tasks` moves the whole
    // process. Unlike `cgroup.procs`, it does not take the global threadgroup
    // rwsem for writing, which costs an RCU grace period (10-20 ms here) per
    // container start.
    let pid = pid.to_string();
    for (_, leaf) in mounts {
        let tasks = leaf.join("tasks");
        let file = if tasks.exists() {
            tasks
        } else {
            leaf.join("cgroup.procs")
        };
        fs::write(&file, &pid)?;
    }
    Ok(())
}

/// Union of the processes in every controller's directory (they differ only
/// if a move was interrupted).
pub(crate) fn pids(root: &Path, path: &Path) -> Result<Vec<i32>, CgroupError> {
    let mounts = mounts(root, path);
    let Some((_, first)) = mounts.iter().find(|(_, leaf)| leaf.is_dir()) else {
        let leaf = dir(root, path, "pids");
        return Err(io_err(&leaf, ErrorKind::NotFound.into()));
    };
    let mut all = fs::procs(&first.join("cgroup.procs"))?;
    for (_, leaf) in &mounts {
        all.extend(fs::procs(&leaf.join("cgroup.procs"))?);
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// Kills counted in memory.oom_control's `oom_kill` line (Linux >= 4.13;
/// older kernels lack the line and report 0). Without a memory controller
/// nothing can be OOM-killed on this cgroup's account: 0.
pub(crate) fn oom_kills(root: &Path, path: &Path) -> Result<u64, CgroupError> {
    if !root.join("memory").is_dir() {
        return Ok(0);
    }
    let d = dir(root, path, "memory");
    let text = fs::read(&d.join("memory.oom_control"))?;
    Ok(fs::keyed_value(&text, "oom_kill").unwrap_or(0))
}

pub(crate) fn stats(root: &Path, path: &Path) -> Result<Stats, CgroupError> {
    let mem = dir(root, path, "memory");
    let mut s = Stats::default();
    if mem.join("memory.usage_in_bytes").exists() {
        s.memory_bytes = fs::read_u64(&mem.join("memory.usage_in_bytes"))?;
        let limit = fs::read_u64(&mem.join("memory.limit_in_bytes"))?;
        s.memory_limit_bytes = (limit < UNLIMITED_THRESHOLD).then_some(limit);
        s.oom_kills = oom_kills(root, path)?;
        let stat = mem.join("memory.stat");
        if stat.exists() {
            s.memory_stat = fs::keyed_values(&fs::read(&stat)?);
        }
    }
    let acct = dir(root, path, "cpuacct").join("cpuacct.usage");
    if acct.exists() {
        s.cpu_usage_ns = fs::read_u64(&acct)?;
    }
    let acct_stat = dir(root, path, "cpuacct").join("cpuacct.stat");
    if acct_stat.exists() {
        // In USER_HZ ticks, which Linux fixes at 100 for user space.
        let text = fs::read(&acct_stat)?;
        let ns = |key| {
            fs::keyed_value(&text, key)
                .unwrap_or(0)
                .saturating_mul(10_000_000)
        };
        s.cpu_user_ns = ns("user");
        s.cpu_system_ns = ns("system");
    }
    let max = dir(root, path, "pids").join("pids.max");
    if max.exists() {
        s.pids_limit = fs::read_limit(&max)?;
    }
    let io = dir(root, path, "blkio").join("blkio.throttle.io_service_bytes_recursive");
    if io.exists() {
        s.io_bytes = super::parse_v1_io(&fs::read(&io)?);
    }
    let current = dir(root, path, "pids").join("pids.current");
    s.pids = if current.exists() {
        fs::read_u64(&current)?
    } else {
        pids(root, path)?.len() as u64
    };
    Ok(s)
}

pub(crate) fn set_frozen(root: &Path, path: &Path, frozen: bool) -> Result<(), CgroupError> {
    let d = dir(root, path, "freezer");
    let what = if frozen { "freeze" } else { "thaw" };
    let state = require(&d, "freezer.state", "freezer", what)?;
    let want = if frozen { "FROZEN" } else { "THAWED" };
    // A write may leave the state at FREEZING (a task busy in the kernel);
    // writing FROZEN again retries the freeze.
    let done = fs::wait_for(FREEZE_TIMEOUT, || {
        fs::write(&state, want)?;
        Ok(fs::read(&state)?.trim() == want)
    })?;
    if done {
        return Ok(());
    }
    if frozen {
        // Do not leave a half-frozen container behind.
        let _ = fs::write(&state, "THAWED");
    }
    Err(CgroupError::Invalid(format!(
        "{}: did not reach {want} within {FREEZE_TIMEOUT:?}",
        state.display()
    )))
}

pub(crate) fn destroy(root: &Path, path: &Path) -> Result<(), CgroupError> {
    let leaves: Vec<PathBuf> = mounts(root, path)
        .into_iter()
        .map(|(_, leaf)| leaf)
        .filter(|leaf| leaf.is_dir())
        .collect();
    if leaves.is_empty() {
        return Ok(());
    }
    // Freeze first so nothing can fork between reading cgroup.procs and the
    // kill; frozen tasks only act on SIGKILL once thawed.
    let freezer = dir(root, path, "freezer");
    let froze = freezer.is_dir() && set_frozen(root, path, true).is_ok();
    let mut all = Vec::new();
    for leaf in &leaves {
        all.extend(fs::subtree_procs(leaf)?);
    }
    fs::kill_all(&all);
    if freezer.is_dir() {
        let thawed = set_frozen(root, path, false);
        if froze {
            thawed?;
        }
    }
    let mut first_err = None;
    for leaf in &leaves {
        let res = fs::kill_and_wait(leaf, KILL_TIMEOUT).and_then(|()| fs::rmdir_tree(leaf));
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn device_rules() {
        let rule = |b: LinuxDeviceCgroupBuilder| device_rule(&b.build().unwrap()).unwrap();
        let b = LinuxDeviceCgroupBuilder::default;
        assert_eq!(rule(b().allow(false)).as_deref(), Some("a *:* rwm"));
        assert_eq!(
            rule(
                b().allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(1)
                    .minor(3)
                    .access("rw")
            )
            .as_deref(),
            Some("c 1:3 rw")
        );
        assert_eq!(
            rule(b().typ(LinuxDeviceType::B).major(8).minor(-1)).as_deref(),
            Some("b 8:* rwm")
        );
        assert_eq!(
            rule(b().typ(LinuxDeviceType::U).major(4)).as_deref(),
            Some("c 4:* rwm")
        );
        assert_eq!(rule(b().typ(LinuxDeviceType::P)), None);
        let bad = b().major(-5).build().unwrap();
        assert!(device_rule(&bad).is_err());
        let bad = b().access("x").build().unwrap();
        assert!(device_rule(&bad).is_err());
    }

    /// A fake v1 tree: a directory per controller with the files the kernel
    /// would create, so the write logic can be checked without root.
    fn fake_v1(root: &Path, leaf: &str) {
        let files: &[(&str, &[(&str, &str)])] = &[
            (
                "memory",
                &[
                    ("memory.limit_in_bytes", "9223372036854771712"),
                    ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                    ("memory.soft_limit_in_bytes", ""),
                    (
                        "memory.oom_control",
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                    ),
                    ("memory.usage_in_bytes", "4096"),
                    ("memory.stat", "cache 1024\ntotal_inactive_file 512\n"),
                ],
            ),
            (
                "cpu",
                &[
                    ("cpu.shares", ""),
                    ("cpu.cfs_quota_us", ""),
                    ("cpu.cfs_period_us", ""),
                ],
            ),
            (
                "cpuacct",
                &[
                    ("cpuacct.usage", "300000000"),
                    ("cpuacct.stat", "user 20\nsystem 10\n"),
                ],
            ),
            ("cpuset", &[("cpuset.cpus", ""), ("cpuset.mems", "")]),
            ("pids", &[("pids.max", ""), ("pids.current", "0")]),
            ("devices", &[("devices.allow", ""), ("devices.deny", "")]),
        ];
        for (c, fs) in files {
            let d = root.join(c).join(leaf);
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in *fs {
                std::fs::write(d.join(f), v).unwrap();
            }
            std::fs::write(d.join("cgroup.procs"), "").unwrap();
        }
        std::fs::write(root.join("cpuset/cpuset.cpus"), "0-3").unwrap();
        std::fs::write(root.join("cpuset/cpuset.mems"), "0").unwrap();
        std::fs::write(root.join("cpuset/cgroup.procs"), "").unwrap();
    }

    #[test]
    fn fake_tree_writes() {
        use oci_spec::runtime::*;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v1(root, "c1");
        let cg = super::super::Cgroup {
            hierarchy: super::super::Hierarchy::V1 { root: root.into() },
            path: "/c1".into(),
        };
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(128i64 << 20)
                    .reservation(32i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(32i64).build().unwrap())
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        cg.create(Some(&res)).unwrap();
        let rd = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(
            rd("memory/c1/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            rd("memory/c1/memory.memsw.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        assert_eq!(
            rd("memory/c1/memory.soft_limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(rd("cpu/c1/cpu.shares"), "512");
        assert_eq!(rd("cpu/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(rd("cpu/c1/cpu.cfs_period_us"), "100000");
        assert_eq!(rd("cpuset/c1/cpuset.cpus"), "0-3");
        assert_eq!(rd("cpuset/c1/cpuset.mems"), "0");
        assert_eq!(rd("pids/c1/pids.max"), "32");
        // Files keep only the last write; the deny-all went first.
        assert_eq!(rd("devices/c1/devices.allow"), "c 136:* rwm");
        assert_eq!(rd("devices/c1/devices.deny"), "a *:* rwm");

        // swap < memory is refused before anything is written.
        let bad = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(1i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(matches!(cg.apply(&bad), Err(CgroupError::Invalid(m)) if m.contains(">=")));

        // A requested limit on a missing controller names the file.
        let hugetlb = LinuxResourcesBuilder::default()
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(1i64 << 21)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        match cg.apply(&hugetlb) {
            Err(CgroupError::Invalid(m)) => {
                assert!(
                    m.contains("hugetlb.2MB.limit_in_bytes") && m.contains("hugetlb controller"),
                    "{m}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }

        let st = cg.stats().unwrap();
        assert_eq!(st.memory_bytes, 4096);
        assert_eq!(st.memory_limit_bytes, Some(64 << 20));
        assert_eq!(st.cpu_usage_ns, 300_000_000);
        // USER_HZ ticks (100 a second) as ns.
        assert_eq!(
            (st.cpu_user_ns, st.cpu_system_ns),
            (200_000_000, 100_000_000)
        );
        assert_eq!(st.memory_stat.get("total_inactive_file"), Some(&512));
        assert_eq!(st.pids_limit, Some(32));
        assert!(!cg.oom_killed().unwrap());
        std::fs::write(
            root.join("memory/c1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(cg.oom_killed().unwrap());
    }
}
