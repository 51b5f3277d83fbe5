//! cgroup v2 (unified hierarchy).
//!
//! Device rules (`linux.resources.devices`): v2 has no devices controller,
//! so the same rule list v1 writes (deny all, the spec's rules, the default
//! devices) is compiled into an eBPF `BPF_PROG_TYPE_CGROUP_DEVICE` program and
//! attached to the container's cgroup; see [`super::devices_bpf`] for the exact
//! semantics. A spec without `devices` leaves the cgroup's filter as it is
//! (as v1 leaves its lists). Directories not on a cgroup2 file system (the
//! fake trees of the unit tests) get their rules validated but no program.
//!
//! Also ignored, having no v2 interface: memory swappiness, disableOOMKiller,
//! kernel/kernelTCP memory and blkio leaf weights.

use super::devices_bpf;
use super::fs::{self, check_limit, io_err, require};
use super::{CgroupError, Stats};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Controllers enabled for the container, when the parent offers them.
pub const CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids", "hugetlb"];

const KILL_TIMEOUT: Duration = Duration::from_secs(3);
const FREEZE_TIMEOUT: Duration = Duration::from_secs(3);

fn dir(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Words of a space-separated interface file; missing counts as empty.
fn words(path: &Path) -> Result<Vec<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.split_whitespace().map(str::to_owned).collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Delegates the wanted controllers from `dir` to its children.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let available = words(&dir.join("cgroup.controllers"))?;
    let enabled = words(&dir.join("cgroup.subtree_control"))?;
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.iter().any(|a| a == c) && !enabled.iter().any(|e| e == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let file = dir.join("cgroup.subtree_control");
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if fs::write(&file, &all.join(" ")).is_ok() {
        return Ok(());
    }
    // The write is all-or-nothing; one refusal (e.g. cpu while a realtime
    // task sits in the parent) should not cost the others. A controller that
    // stays off surfaces later as a "controller is not available" error, but
    // only if the spec asks for one of its limits.
    for c in all {
        let _ = fs::write(&file, &c);
    }
    Ok(())
}

pub(crate) fn create(root: &Path, path: &Path) -> Result<(), CgroupError> {
    if !root.is_dir() {
        return Err(CgroupError::NoHierarchy(root.to_path_buf()));
    }
    let mut current = root.to_path_buf();
    for comp in path.strip_prefix("/").unwrap_or(path).components() {
        enable_controllers(&current)?;
        current.push(comp);
        match std::fs::create_dir(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&current, e)),
        }
    }
    Ok(())
}

/// cgroup v1 shares (2..262144) to v2 weight (1..10000), the mapping runc
/// and crun use so both ends of the ranges line up.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000), as runc converts.
pub fn blkio_weight_to_io(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// The OCI swap value is memory+swap; memory.swap.max is swap alone.
/// Returns the value for memory.swap.max (-1 = max), or None to leave it.
pub fn swap_to_v2(limit: Option<i64>, swap: Option<i64>) -> Result<Option<i64>, CgroupError> {
    let limit = limit.filter(|&v| v != 0);
    match swap.filter(|&v| v != 0) {
        // Unlimited memory with no swap setting lifts swap too (as runc).
        None => Ok((limit == Some(-1)).then_some(-1)),
        Some(-1) => Ok(Some(-1)),
        Some(s) if s < -1 => Err(CgroupError::Invalid(format!(
            "memory+swap limit {s} is invalid (must be -1 or positive)"
        ))),
        Some(s) => match limit {
            None | Some(-1) => Err(CgroupError::Invalid(format!(
                "memory+swap limit {s} needs a memory limit"
            ))),
            Some(l) if s < l => Err(CgroupError::Invalid(format!(
                "memory+swap limit {s} must be >= memory limit {l}"
            ))),
            Some(l) => Ok(Some(s - l)),
        },
    }
}

fn limit_str(v: i64) -> String {
    if v == -1 {
        "max".into()
    } else {
        v.to_string()
    }
}

pub(crate) fn apply(root: &Path, path: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
    let d = dir(root, path);
    // First: if a later limit fails, the device filter is already in place.
    if let Some(devices) = r.devices() {
        set_devices(&d, devices)?;
    }
    if let Some(m) = r.memory() {
        set_memory(&d, m)?;
    }
    if let Some(c) = r.cpu() {
        set_cpu(&d, c)?;
    }
    if let Some(p) = r.pids() {
        let limit = p.limit();
        if limit > 0 {
            fs::write(
                &require(&d, "pids.max", "pids", "pids limit")?,
                &limit.to_string(),
            )?;
        } else if d.join("pids.max").exists() {
            fs::write(&d.join("pids.max"), "max")?;
        }
    }
    if let Some(b) = r.block_io() {
        set_io(&d, b)?;
    }
    for l in r.hugepage_limits().iter().flatten() {
        let size = l.page_size();
        if size.is_empty() || size.contains('/') {
            return Err(CgroupError::Invalid(format!(
                "invalid hugepage size {size:?}"
            )));
        }
        check_limit(l.limit(), "hugepage limit")?;
        let file = require(
            &d,
            &format!("hugetlb.{size}.max"),
            "hugetlb",
            "hugepage limit",
        )?;
        fs::write(&file, &limit_str(l.limit()))?;
    }
    if let Some(net) = r.network() {
        if net.class_id().is_some() || net.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(CgroupError::Invalid(
                "network classID/priorities need the v1 net_cls/net_prio controllers, absent on cgroup v2".into(),
            ));
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CgroupError::Invalid("rdma limits are not supported".into()));
    }
    // Raw key/value pairs go last so they can override the converted values.
    for (key, value) in r.unified().iter().flatten() {
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::Invalid(format!(
                "invalid unified cgroup key {key:?}"
            )));
        }
        let controller = key.split('.').next().unwrap_or(key);
        let file = require(&d, key, controller, &format!("unified {key}"))?;
        fs::write(&file, value)?;
    }
    Ok(())
}

/// Attaches the device filter built from the same list v1 applies. The
/// rules are validated before anything is attached; on a directory that is
/// not cgroup2 (a fake tree) nothing is attached.
fn set_devices(d: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let rules = devices_bpf::rules_for_spec(rules)?;
    if !devices_bpf::on_cgroup2(d)? {
        return Ok(());
    }
    devices_bpf::apply(d, &rules)
}

fn set_memory(d: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = m.limit().filter(|&v| v != 0);
    if let Some(l) = limit {
        check_limit(l, "memory limit")?;
    }
    let swap = swap_to_v2(limit, m.swap())?;
    if let Some(l) = limit {
        fs::write(
            &require(d, "memory.max", "memory", "memory limit")?,
            &limit_str(l),
        )?;
    }
    if let Some(s) = swap {
        let file = d.join("memory.swap.max");
        // Without swap accounting there is no file; "max" is then already true.
        if s != -1 || file.exists() {
            let f = require(
                d,
                "memory.swap.max",
                "memory (with swap accounting)",
                "swap limit",
            )?;
            fs::write(&f, &limit_str(s))?;
        }
    }
    if let Some(res) = m.reservation().filter(|&v| v != 0) {
        check_limit(res, "memory reservation")?;
        fs::write(
            &require(d, "memory.low", "memory", "memory reservation")?,
            &limit_str(res),
        )?;
    }
    Ok(())
}

fn set_cpu(d: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = c.shares().filter(|&v| v != 0) {
        let f = require(d, "cpu.weight", "cpu", "cpu shares")?;
        fs::write(&f, &shares_to_weight(shares).to_string())?;
    }
    let quota = c.quota().filter(|&v| v != 0);
    let period = c.period().filter(|&v| v != 0);
    if quota.is_some() || period.is_some() {
        let f = require(d, "cpu.max", "cpu", "cpu quota/period")?;
        // cpu.max holds both; keep whichever half the spec leaves unset.
        let current = words(&f)?;
        let quota = match quota {
            Some(q) => {
                check_limit(q, "cpu quota")?;
                limit_str(q)
            }
            None => current.first().cloned().unwrap_or_else(|| "max".into()),
        };
        let value = match period
            .map(|p| p.to_string())
            .or_else(|| current.get(1).cloned())
        {
            Some(p) => format!("{quota} {p}"),
            None => quota,
        };
        fs::write(&f, &value)?;
    }
    if let Some(burst) = c.burst() {
        let f = require(d, "cpu.max.burst", "cpu", "cpu burst")?;
        fs::write(&f, &burst.to_string())?;
    }
    if let Some(idle) = c.idle() {
        fs::write(
            &require(d, "cpu.idle", "cpu", "cpu idle")?,
            &idle.to_string(),
        )?;
    }
    if c.realtime_runtime().is_some_and(|v| v != 0) || c.realtime_period().is_some_and(|v| v != 0) {
        return Err(CgroupError::Invalid(
            "realtime cpu limits are not supported on cgroup v2".into(),
        ));
    }
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        fs::write(&require(d, "cpuset.cpus", "cpuset", "cpuset cpus")?, cpus)?;
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        fs::write(&require(d, "cpuset.mems", "cpuset", "cpuset mems")?, mems)?;
    }
    Ok(())
}

fn set_io(d: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // BFQ takes blkio-range weights as-is; otherwise io.weight's wider range.
    let bfq = d.join("io.bfq.weight");
    let weight = |w: u16| -> Result<(PathBuf, u64), CgroupError> {
        if bfq.exists() {
            Ok((bfq.clone(), u64::from(w)))
        } else {
            Ok((
                require(d, "io.weight", "io", "io weight")?,
                blkio_weight_to_io(w),
            ))
        }
    };
    if let Some(w) = b.weight().filter(|&v| v != 0) {
        let (file, value) = weight(w)?;
        fs::write(&file, &value.to_string())?;
    }
    for wd in b.weight_device().iter().flatten() {
        if let Some(w) = wd.weight() {
            let (file, value) = weight(w)?;
            fs::write(&file, &format!("{}:{} {value}", wd.major(), wd.minor()))?;
        }
    }
    let throttles = [
        (b.throttle_read_bps_device(), "rbps"),
        (b.throttle_write_bps_device(), "wbps"),
        (b.throttle_read_iops_device(), "riops"),
        (b.throttle_write_iops_device(), "wiops"),
    ];
    for (list, key) in throttles {
        for t in list.iter().flatten() {
            let f = require(d, "io.max", "io", "io throttle")?;
            fs::write(
                &f,
                &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
            )?;
        }
    }
    Ok(())
}

pub(crate) fn add_process(root: &Path, path: &Path, pid: i32) -> Result<(), CgroupError> {
    fs::write(&dir(root, path).join("cgroup.procs"), &pid.to_string())
}

pub(crate) fn pids(root: &Path, path: &Path) -> Result<Vec<i32>, CgroupError> {
    let d = dir(root, path);
    if !d.is_dir() {
        return Err(io_err(&d, ErrorKind::NotFound.into()));
    }
    fs::procs(&d.join("cgroup.procs"))
}

/// The `oom_kill` count of memory.events; 0 when the memory controller is not
/// enabled (then no limit of this cgroup can cause a kill).
pub(crate) fn oom_kills(root: &Path, path: &Path) -> Result<u64, CgroupError> {
    let d = dir(root, path);
    let events = d.join("memory.events");
    match std::fs::read_to_string(&events) {
        Ok(text) => Ok(fs::keyed_value(&text, "oom_kill").unwrap_or(0)),
        Err(e) if e.kind() == ErrorKind::NotFound && d.is_dir() => Ok(0),
        Err(e) => Err(io_err(&events, e)),
    }
}

pub(crate) fn stats(root: &Path, path: &Path) -> Result<Stats, CgroupError> {
    let d = dir(root, path);
    let mut s = Stats {
        pids: pids(root, path)?.len() as u64,
        oom_kills: oom_kills(root, path)?,
        ..Stats::default()
    };
    if d.join("memory.current").exists() {
        s.memory_bytes = fs::read_u64(&d.join("memory.current"))?;
        s.memory_limit_bytes = fs::read(&d.join("memory.max"))?.trim().parse().ok();
        if d.join("memory.stat").exists() {
            s.memory_stat = fs::keyed_values(&fs::read(&d.join("memory.stat"))?);
        }
    }
    if d.join("cpu.stat").exists() {
        let text = fs::read(&d.join("cpu.stat"))?;
        let ns = |key| {
            fs::keyed_value(&text, key)
                .unwrap_or(0)
                .saturating_mul(1000)
        };
        s.cpu_usage_ns = ns("usage_usec");
        s.cpu_user_ns = ns("user_usec");
        s.cpu_system_ns = ns("system_usec");
    }
    if d.join("pids.current").exists() {
        s.pids = fs::read_u64(&d.join("pids.current"))?;
    }
    if d.join("pids.max").exists() {
        s.pids_limit = fs::read_limit(&d.join("pids.max"))?;
    }
    if d.join("io.stat").exists() {
        s.io_bytes = super::parse_v2_io(&fs::read(&d.join("io.stat"))?);
    }
    Ok(s)
}

pub(crate) fn set_frozen(root: &Path, path: &Path, frozen: bool) -> Result<(), CgroupError> {
    let d = dir(root, path);
    let what = if frozen { "freeze" } else { "thaw" };
    let file = require(&d, "cgroup.freeze", "freezer (Linux >= 5.2)", what)?;
    fs::write(&file, if frozen { "1" } else { "0" })?;
    // The write only starts the freeze; cgroup.events reports completion.
    let events = d.join("cgroup.events");
    let want = u64::from(frozen);
    let done = fs::wait_for(FREEZE_TIMEOUT, || {
        let text = fs::read(&events)?;
        Ok(fs::keyed_value(&text, "frozen").is_none_or(|v| v == want))
    })?;
    if done {
        return Ok(());
    }
    if frozen {
        let _ = fs::write(&file, "0");
    }
    Err(CgroupError::Invalid(format!(
        "{}: did not {what} within {FREEZE_TIMEOUT:?}",
        d.display()
    )))
}

pub(crate) fn destroy(root: &Path, path: &Path) -> Result<(), CgroupError> {
    let d = dir(root, path);
    if !d.is_dir() {
        return Ok(());
    }
    let kill = d.join("cgroup.kill");
    if kill.exists() {
        // Linux >= 5.14: the kernel kills the whole subtree, racing no fork.
        fs::write(&kill, "1")?;
    } else {
        // Freeze so nothing forks between reading the list and the signal.
        let froze = d.join("cgroup.freeze").exists() && set_frozen(root, path, true).is_ok();
        fs::kill_all(&fs::subtree_procs(&d)?);
        if froze {
            set_frozen(root, path, false)?;
        }
    }
    fs::kill_and_wait(&d, KILL_TIMEOUT)?;
    fs::rmdir_tree(&d)
}

#[cfg(test)]
mod tests {
    use super::super::{Cgroup, Hierarchy};
    use super::*;
    use oci_spec::runtime::*;

    const ALL: &str = "cpuset cpu io memory pids";

    /// Mimics what the kernel does on mkdir in a cgroup2 mount: the interface
    /// files of the controllers enabled in the parent appear in the child.
    /// Our mkdir on an existing directory is a no-op, so pre-creating the
    /// tree lets `create` run against it.
    fn fake_cgroup(dir: &Path, controllers: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let mut files = vec![
            ("cgroup.controllers", controllers.to_string()),
            ("cgroup.subtree_control", String::new()),
            ("cgroup.procs", String::new()),
            ("cgroup.freeze", "0".into()),
            ("cgroup.events", "populated 0\nfrozen 0\n".into()),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n".into(),
            ),
        ];
        for c in controllers.split_whitespace() {
            let extra: &[(&str, &str)] = match c {
                "memory" => &[
                    ("memory.max", "max"),
                    ("memory.swap.max", "max"),
                    ("memory.low", "0"),
                    ("memory.current", "8192"),
                    ("memory.stat", "anon 4096\nfile 4096\ninactive_file 1024\n"),
                    ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
                ],
                "cpu" => &[("cpu.max", "max 100000"), ("cpu.weight", "100")],
                "pids" => &[("pids.max", "max"), ("pids.current", "0")],
                "cpuset" => &[("cpuset.cpus", ""), ("cpuset.mems", "")],
                "io" => &[("io.weight", "default 100"), ("io.max", "")],
                _ => &[],
            };
            files.extend(extra.iter().map(|(f, v)| (*f, v.to_string())));
        }
        for (f, v) in files {
            std::fs::write(dir.join(f), v).unwrap();
        }
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    fn cgroup(root: &Path, path: &str) -> Cgroup {
        Cgroup::new(
            Hierarchy::V2 {
                root: root.to_path_buf(),
            },
            path,
        )
        .unwrap()
    }

    fn resources() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(96i64 << 20)
                    .reservation(16i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(200_000u64)
                    .cpus("0-1")
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(32i64).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .build()
                    .unwrap(),
            )
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .build()
                .unwrap()])
            .build()
            .unwrap()
    }

    #[test]
    fn conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
        assert_eq!(swap_to_v2(Some(100), Some(300)).unwrap(), Some(200));
        assert_eq!(swap_to_v2(Some(100), Some(100)).unwrap(), Some(0));
        assert_eq!(swap_to_v2(Some(100), Some(-1)).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(Some(-1), None).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(Some(100), None).unwrap(), None);
        assert_eq!(swap_to_v2(None, Some(0)).unwrap(), None);
        assert!(swap_to_v2(Some(200), Some(100)).is_err());
        assert!(swap_to_v2(None, Some(100)).is_err());
        assert!(swap_to_v2(Some(-1), Some(100)).is_err());
        assert!(swap_to_v2(Some(1), Some(-7)).is_err());
    }

    #[test]
    fn create_writes_limits_and_delegates_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("cubby"), ALL);
        fake_cgroup(&root.join("cubby/c1"), ALL);
        // Already delegated at this level: must not be rewritten.
        std::fs::write(
            root.join("cubby/cgroup.subtree_control"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        let cg = cgroup(root, "cubby/c1");
        cg.create(Some(&resources())).unwrap();

        assert_eq!(
            read(root.join("cgroup.subtree_control")),
            "+cpuset +cpu +io +memory +pids"
        );
        assert_eq!(
            read(root.join("cubby/cgroup.subtree_control")),
            "cpuset cpu io memory pids"
        );
        // The leaf's own subtree_control is left alone (it holds processes).
        assert_eq!(read(root.join("cubby/c1/cgroup.subtree_control")), "");
        let leaf = root.join("cubby/c1");
        assert_eq!(read(leaf.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(
            read(leaf.join("memory.swap.max")),
            (32u64 << 20).to_string()
        );
        assert_eq!(read(leaf.join("memory.low")), (16u64 << 20).to_string());
        assert_eq!(read(leaf.join("cpu.max")), "50000 200000");
        assert_eq!(read(leaf.join("cpu.weight")), "39");
        assert_eq!(read(leaf.join("cpuset.cpus")), "0-1");
        assert_eq!(read(leaf.join("cpuset.mems")), "0");
        assert_eq!(read(leaf.join("pids.max")), "32");
        assert_eq!(
            read(leaf.join("io.weight")),
            blkio_weight_to_io(500).to_string()
        );

        cg.add_process(4242).unwrap();
        assert_eq!(read(leaf.join("cgroup.procs")), "4242");
        std::fs::write(leaf.join("cgroup.procs"), "4242\n4243\n").unwrap();
        assert_eq!(cg.pids().unwrap(), vec![4242, 4243]);

        let st = cg.stats().unwrap();
        assert_eq!(st.memory_bytes, 8192);
        assert_eq!(st.memory_limit_bytes, Some(64 << 20));
        assert_eq!(st.cpu_usage_ns, 1_500_000);
        assert_eq!((st.cpu_user_ns, st.cpu_system_ns), (1_000_000, 500_000));
        assert_eq!(st.memory_stat.get("inactive_file"), Some(&1024));
        assert_eq!(st.pids_limit, Some(32));
    }

    #[test]
    fn device_rules_are_validated_but_not_attached_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("c"), ALL);
        let cg = cgroup(root, "/c");
        // Not cgroup2: no program can be attached, the other limits still are.
        cg.create(Some(&resources())).unwrap();
        assert_eq!(read(root.join("c/pids.max")), "32");
        let bad = |d: LinuxDeviceCgroupBuilder| {
            let r = LinuxResourcesBuilder::default()
                .devices(vec![d.build().unwrap()])
                .pids(LinuxPidsBuilder::default().limit(7i64).build().unwrap())
                .build()
                .unwrap();
            cg.apply(&r).unwrap_err().to_string()
        };
        let err = bad(LinuxDeviceCgroupBuilder::default().access("rwx"));
        assert!(err.contains("\"rwx\""), "{err}");
        let err = bad(LinuxDeviceCgroupBuilder::default().major(1i64 << 32));
        assert!(err.contains("4294967296"), "{err}");
        // Refused before any limit was written.
        assert_eq!(read(root.join("c/pids.max")), "32");
        // A directory that does not exist is named.
        let gone = cgroup(root, "/gone");
        let r = LinuxResourcesBuilder::default()
            .devices(vec![])
            .build()
            .unwrap();
        match gone.apply(&r) {
            Err(CgroupError::Io { path, .. }) => assert_eq!(path, root.join("gone")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn update_keeps_the_other_half_of_cpu_max() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("c"), ALL);
        let cg = cgroup(root, "/c");
        std::fs::write(root.join("c/cpu.max"), "30000 100000").unwrap();
        let period_only = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .period(50_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cg.apply(&period_only).unwrap();
        assert_eq!(read(root.join("c/cpu.max")), "30000 50000");
        let unlimited = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(-1i64).build().unwrap())
            .memory(LinuxMemoryBuilder::default().limit(-1i64).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
            .build()
            .unwrap();
        cg.apply(&unlimited).unwrap();
        assert_eq!(read(root.join("c/cpu.max")), "max 50000");
        assert_eq!(read(root.join("c/memory.max")), "max");
        assert_eq!(read(root.join("c/memory.swap.max")), "max");
        assert_eq!(read(root.join("c/pids.max")), "max");
    }

    #[test]
    fn only_offered_controllers_are_enabled_and_missing_ones_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, "cpu pids");
        fake_cgroup(&root.join("c"), "cpu pids");
        let cg = cgroup(root, "/c");
        cg.create(None).unwrap();
        assert_eq!(read(root.join("cgroup.subtree_control")), "+cpu +pids");

        let mem = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        match cg.apply(&mem) {
            Err(CgroupError::Invalid(msg)) => {
                assert!(msg.contains("memory controller"), "{msg}");
                assert!(msg.contains("memory.max"), "{msg}");
                assert!(msg.contains(&root.join("c").display().to_string()), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Unset limits never touch files, so a missing controller is fine.
        let unset = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(0i64).build().unwrap())
            .build()
            .unwrap();
        cg.apply(&unset).unwrap();
        assert_eq!(read(root.join("c/pids.max")), "max");
        // No memory controller: nothing to report, not an error.
        assert!(!cg.oom_killed().unwrap());
    }

    #[test]
    fn oom_from_memory_events() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("c"), ALL);
        let cg = cgroup(root, "/c");
        assert!(!cg.oom_killed().unwrap());
        std::fs::write(
            root.join("c/memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 3\noom_group_kill 0\n",
        )
        .unwrap();
        assert!(cg.oom_killed().unwrap());
        assert_eq!(cg.stats().unwrap().oom_kills, 3);
        // A cgroup that does not exist is an error naming it.
        match cgroup(root, "/gone").oom_killed() {
            Err(CgroupError::Io { path, .. }) => assert!(path.ends_with("gone/memory.events")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn freeze_and_thaw_wait_for_events() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("c"), ALL);
        let cg = cgroup(root, "/c");
        // The fake kernel has already "completed" the freeze.
        std::fs::write(root.join("c/cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        cg.freeze().unwrap();
        assert_eq!(read(root.join("c/cgroup.freeze")), "1");
        std::fs::write(root.join("c/cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        cg.thaw().unwrap();
        assert_eq!(read(root.join("c/cgroup.freeze")), "0");
    }

    #[test]
    fn destroy_uses_cgroup_kill_then_rmdir() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("cubby/c"), ALL);
        std::fs::write(root.join("cubby/c/cgroup.kill"), "").unwrap();
        let cg = cgroup(root, "/cubby/c");
        // On a real cgroupfs the interface files vanish with rmdir; on this
        // tmpfs fake they make the directory non-empty, so rmdir is attempted
        // and its failure reported with the path.
        match cg.destroy() {
            Err(CgroupError::Io { path, source }) => {
                assert_eq!(path, root.join("cubby/c"));
                assert_eq!(source.raw_os_error(), Some(libc::ENOTEMPTY));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(read(root.join("cubby/c/cgroup.kill")), "1");

        // Interface files gone (as the kernel would have them): the leaf and
        // its sub-cgroups are removed, the parent stays, and it is idempotent.
        let leaf = root.join("cubby/c");
        for e in std::fs::read_dir(&leaf).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::create_dir(leaf.join("nested")).unwrap();
        cg.destroy().unwrap();
        assert!(!leaf.exists());
        assert!(root.join("cubby").is_dir());
        cg.destroy().unwrap();
    }

    #[test]
    fn destroy_without_cgroup_kill_signals_listed_pids() {
        use std::os::unix::process::ExitStatusExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_cgroup(root, ALL);
        fake_cgroup(&root.join("c"), ALL);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        std::fs::write(
            root.join("c/cgroup.procs"),
            format!("{}\n{me}\n", child.id()),
        )
        .unwrap();
        // No "frozen" key: the fake cannot change state, so freeze/thaw
        // must not wait on it.
        std::fs::write(root.join("c/cgroup.events"), "populated 1\n").unwrap();
        let cg = cgroup(root, "/c");
        // The fake list never empties, so destroy times out naming the
        // leftovers; the point is that the child got SIGKILL and we did not.
        let err = cg.destroy().unwrap_err().to_string();
        assert!(err.contains("still present"), "{err}");
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
