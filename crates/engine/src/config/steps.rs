//! The builder's steps: each applies one concern of a [`ContainerConfig`]
//! to a spec that starts as cubby's default.

use super::{ConfigError, ConfigResult, ContainerConfig, Seccomp};
use crate::users::{self, ResolvedUser, UserSpec};
use cubby_runtime::capabilities as caps;
use cubby_runtime::spec as rspec;
use oci_spec::runtime::{
    Capabilities, LinuxCpu, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxMemory, LinuxNamespaceType, LinuxPids, Mount, Spec,
};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn internal(what: &str) -> ConfigError {
    ConfigError::invalid(format!("internal: the base spec has no {what}"))
}

/// Sets `key=value` in `env`, replacing an existing entry in place.
pub fn set_env(env: &mut Vec<String>, kv: &str) {
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(e) => *e = kv.to_string(),
        None => env.push(kv.to_string()),
    }
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter()
        .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
}

/// The user the process runs as (root when unset), from the rootfs's
/// /etc/passwd and /etc/group.
pub fn resolve_user(cfg: &ContainerConfig, rootfs: &Path) -> ConfigResult<ResolvedUser> {
    let spec = match cfg.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => {
            users::parse_user(u).map_err(|e| ConfigError::invalid(format!("user {u:?}: {e}")))?
        }
        None => UserSpec {
            user: users::IdOrName::Id(0),
            group: None,
        },
    };
    let (passwd, group) =
        users::read_db(rootfs).map_err(|e| ConfigError::invalid(e.to_string()))?;
    users::resolve_user(&spec, passwd.as_deref(), group.as_deref()).map_err(|e| {
        ConfigError::invalid(format!(
            "user {:?}: {e}",
            cfg.user.as_deref().unwrap_or("root")
        ))
    })
}

/// Command, environment (image, then user; TERM with a terminal, HOME from
/// passwd), working directory, terminal, user and groups, rlimits, hostname.
pub fn process(cfg: &ContainerConfig, user: &ResolvedUser, spec: &mut Spec) -> ConfigResult<()> {
    if cfg.command.is_empty() {
        return Err(ConfigError::invalid(
            "no command: give one, or use an image with an Entrypoint or Cmd",
        ));
    }
    if let Some(h) = &cfg.hostname {
        spec.set_hostname(Some(h.clone()));
    }
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or_else(|| internal("process"))?;
    let mut env = process.env().clone().unwrap_or_default();
    for kv in cfg.image_env.iter().chain(&cfg.env) {
        set_env(&mut env, kv);
    }
    if cfg.tty && !has_env(&env, "TERM") {
        set_env(&mut env, "TERM=xterm");
    }
    if !has_env(&env, "HOME") {
        set_env(
            &mut env,
            &format!("HOME={}", user.home.as_deref().unwrap_or("/")),
        );
    }
    process.set_env(Some(env));
    process.set_terminal(Some(cfg.tty));
    let cwd = cfg.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !cwd.is_absolute() {
        return Err(ConfigError::invalid(format!(
            "the working directory {} is not absolute",
            cwd.display()
        )));
    }
    process.set_cwd(cwd);
    // Supplementary groups come from /etc/group; with a user namespace
    // only the mapped ones.
    let mut extra = user.additional_gids.clone();
    if let Some((_, count)) = cfg.userns {
        extra.retain(|g| *g < count);
    }
    process
        .user_mut()
        .set_uid(user.uid)
        .set_gid(user.gid)
        .set_additional_gids((!extra.is_empty()).then_some(extra));
    let mut rlimits = process.rlimits().clone().unwrap_or_default();
    for r in &cfg.ulimits {
        rlimits.retain(|x| x.typ() != r.typ());
        rlimits.push(*r);
    }
    process.set_rlimits(Some(rlimits));
    Ok(())
}

/// Memory, CPU, cpuset and pids limits; the cgroup path.
pub fn resources(cfg: &ContainerConfig, spec: &mut Spec) -> ConfigResult<()> {
    let r = &cfg.resources;
    let linux = spec.linux_mut().as_mut().ok_or_else(|| internal("linux"))?;
    if let Some(p) = &cfg.cgroup_path {
        linux.set_cgroups_path(Some(p.clone()));
    }
    let mut res = linux.resources().clone().unwrap_or_default();
    if r.memory.is_some() || r.memory_swap.is_some() || r.memory_reservation.is_some() {
        let mut m = LinuxMemory::default();
        m.set_limit(r.memory)
            .set_swap(r.memory_swap)
            .set_reservation(r.memory_reservation);
        res.set_memory(Some(m));
    }
    if r.cpu_quota.is_some()
        || r.cpu_period.is_some()
        || r.cpu_shares.is_some()
        || r.cpuset_cpus.is_some()
        || r.cpuset_mems.is_some()
    {
        let mut c = LinuxCpu::default();
        c.set_quota(r.cpu_quota)
            .set_period(r.cpu_period)
            .set_shares(r.cpu_shares)
            .set_cpus(r.cpuset_cpus.clone())
            .set_mems(r.cpuset_mems.clone());
        res.set_cpu(Some(c));
    }
    if let Some(n) = r.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(n);
        res.set_pids(Some(p));
    }
    linux.set_resources(Some(res));
    Ok(())
}

/// Capabilities, no_new_privileges, seccomp, privileged mode, read-only root.
pub fn security(cfg: &ContainerConfig, spec: &mut Spec) -> ConfigResult<()> {
    let s = &cfg.security;
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(cfg.read_only));
    }
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or_else(|| internal("process"))?;
    process.set_no_new_privileges(Some(s.no_new_privileges));
    // "Every capability" is every one the kernel knows that this process
    // can pass on (a host that runs cubby without some cannot grant them).
    let all = || -> Capabilities {
        let last = caps::last_cap();
        let bounding = own_bounding_set();
        caps::ALL
            .iter()
            .copied()
            .filter(|c| caps::number(*c) <= last && bounding & (1u64 << caps::number(*c)) != 0)
            .collect()
    };
    // Docker's rules: --privileged or --cap-add ALL give every capability
    // but the dropped ones; otherwise the defaults (none with --cap-drop
    // ALL) minus the dropped ones, plus the added ones.
    let set: Capabilities = if s.privileged || s.cap_add_all {
        all()
            .into_iter()
            .filter(|c| s.privileged || !s.cap_drop.contains(c))
            .collect()
    } else {
        let mut set: Capabilities = if s.cap_drop_all {
            Capabilities::new()
        } else {
            caps::default_set()
                .into_iter()
                .filter(|c| !s.cap_drop.contains(c))
                .collect()
        };
        set.extend(s.cap_add.iter().copied());
        set
    };
    if let Some(mut c) = process.capabilities().clone() {
        c.set_bounding(Some(set.clone()))
            .set_effective(Some(set.clone()))
            .set_permitted(Some(set));
        process.set_capabilities(Some(c));
    }
    let linux = spec.linux_mut().as_mut().ok_or_else(|| internal("linux"))?;
    match (&s.seccomp, s.privileged) {
        (Seccomp::Unconfined, _) | (Seccomp::Default, true) => {
            linux.set_seccomp(None);
        }
        (Seccomp::Profile(p), _) => {
            linux.set_seccomp(Some((**p).clone()));
        }
        (Seccomp::Default, false) => {}
    }
    if s.privileged {
        linux.set_masked_paths(None).set_readonly_paths(None);
        let mut res = linux.resources().clone().unwrap_or_default();
        res.set_devices(Some(vec![rspec::device_rule(
            true,
            LinuxDeviceType::A,
            None,
            None,
            "rwm",
        )]));
        linux.set_resources(Some(res));
        let mut devices = linux.devices().clone().unwrap_or_default();
        devices.extend(host_devices());
        linux.set_devices(Some(devices));
        // /sys and the cgroup tree writable, as Docker's --privileged.
        let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
        for m in mounts.iter_mut() {
            if matches!(m.typ().as_deref(), Some("sysfs") | Some("cgroup")) {
                if let Some(opts) = m.options().clone() {
                    m.set_options(Some(opts.into_iter().filter(|o| o != "ro").collect()));
                }
            }
        }
    }
    Ok(())
}

/// This process's capability bounding set (CapBnd), all bits if unreadable.
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Nodes the runtime makes in every container's /dev anyway.
const DEFAULT_DEVICES: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
];

/// The host's device nodes directly in /dev (for --privileged).
fn host_devices() -> Vec<LinuxDevice> {
    let Ok(dir) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut out: Vec<LinuxDevice> = dir
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            !DEFAULT_DEVICES.iter().any(|d| n == *d)
        })
        .filter_map(|e| device_of(&e.path(), &e.path()).ok())
        .collect();
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The OCI device for the node at `host`, placed at `container`.
fn device_of(host: &Path, container: &Path) -> Result<LinuxDevice, String> {
    let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(format!(
            "{} is not a character or block device",
            host.display()
        ));
    };
    let rdev = meta.rdev();
    LinuxDeviceBuilder::default()
        .path(container.to_path_buf())
        .typ(typ)
        .major(libc::major(rdev) as i64)
        .minor(libc::minor(rdev) as i64)
        .file_mode(meta.mode() & 0o777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map_err(|e| format!("{}: {e}", host.display()))
}

/// `--device HOST[:CONTAINER[:PERMISSIONS]]`: the node, and a device-cgroup
/// rule allowing it.
pub fn devices(cfg: &ContainerConfig, spec: &mut Spec) -> ConfigResult<()> {
    if cfg.devices.is_empty() {
        return Ok(());
    }
    let linux = spec.linux_mut().as_mut().ok_or_else(|| internal("linux"))?;
    let mut nodes = linux.devices().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules = res.devices().clone().unwrap_or_default();
    for d in &cfg.devices {
        if d.permissions.is_empty() || !d.permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(ConfigError::invalid(format!(
                "device {}: permissions {:?} must be some of r, w and m",
                d.host.display(),
                d.permissions
            )));
        }
        if !d.container.is_absolute() {
            return Err(ConfigError::invalid(format!(
                "device {}: the container path {} is not absolute",
                d.host.display(),
                d.container.display()
            )));
        }
        let node = device_of(&d.host, &d.container)
            .map_err(|e| ConfigError::invalid(format!("device: {e}")))?;
        rules.push(rspec::device_rule(
            true,
            node.typ(),
            Some(node.major()),
            Some(node.minor()),
            &d.permissions,
        ));
        nodes.retain(|n| n.path() != node.path());
        nodes.push(node);
    }
    res.set_devices(Some(rules));
    linux.set_resources(Some(res));
    linux.set_devices(Some(nodes));
    Ok(())
}

/// The caller's mounts (each replacing a default at the same place,
/// parents before children), the /dev/shm size, host networking.
pub fn mounts(cfg: &ContainerConfig, spec: &mut Spec) -> ConfigResult<()> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut extra: Vec<Mount> = cfg.mounts.clone();
    for (i, m) in extra.iter().enumerate() {
        if extra[..i]
            .iter()
            .any(|o| o.destination() == m.destination())
        {
            return Err(ConfigError::invalid(format!(
                "duplicate mount point {}: give each mount its own destination",
                m.destination().display()
            )));
        }
    }
    if let Some(size) = cfg.shm_size {
        if size <= 0 {
            return Err(ConfigError::invalid(format!(
                "ShmSize {size}: it must be a positive number of bytes"
            )));
        }
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
        {
            let mut opts: Vec<String> = m.options().clone().unwrap_or_default();
            opts.retain(|o| !o.starts_with("size="));
            opts.push(format!("size={size}"));
            m.set_options(Some(opts));
        }
    }
    mounts.retain(|m| !extra.iter().any(|e| e.destination() == m.destination()));
    extra.sort_by_key(|m| m.destination().components().count());
    mounts.extend(extra);
    spec.set_mounts(Some(mounts));
    if cfg.host_network() {
        let linux = spec.linux_mut().as_mut().ok_or_else(|| internal("linux"))?;
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
        linux.set_namespaces(Some(ns));
    }
    Ok(())
}

fn id_mapping(host_id: u32, size: u32) -> ConfigResult<LinuxIdMapping> {
    LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_id)
        .size(size)
        .build()
        .map_err(|e| ConfigError::invalid(format!("user namespace mapping: {e}")))
}

/// A user namespace mapping container ids 0..count to host ids from
/// `host`; mounts it cannot make are adapted (sysfs with the host's
/// network, devpts' gid=5 with fewer than 6 ids).
pub fn userns(cfg: &ContainerConfig, user: &ResolvedUser, spec: &mut Spec) -> ConfigResult<()> {
    let Some((host_id, count)) = cfg.userns else {
        return Ok(());
    };
    for (what, id) in [("uid", user.uid), ("gid", user.gid)] {
        if id >= count {
            return Err(ConfigError::invalid(format!(
                "{what} {id} is not mapped by the user namespace (container ids 0 to {})",
                count - 1
            )));
        }
    }
    let mapping = id_mapping(host_id, count)?;
    let linux = spec.linux_mut().as_mut().ok_or_else(|| internal("linux"))?;
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    if !ns.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
        ns.push(rspec::namespace(LinuxNamespaceType::User));
    }
    linux
        .set_namespaces(Some(ns))
        .set_uid_mappings(Some(vec![mapping]))
        .set_gid_mappings(Some(vec![mapping]));
    let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
    for m in mounts.iter_mut() {
        if cfg.host_network() && m.typ().as_deref() == Some("sysfs") {
            *m = rspec::mount(
                &m.destination().to_string_lossy(),
                "bind",
                "/sys",
                &["rbind", "nosuid", "noexec", "nodev", "ro"],
            );
        }
        if count <= 5 && m.typ().as_deref() == Some("devpts") {
            if let Some(opts) = m.options().clone() {
                m.set_options(Some(opts.into_iter().filter(|o| o != "gid=5").collect()));
            }
        }
    }
    Ok(())
}
