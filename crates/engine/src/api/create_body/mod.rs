//! Docker's create body (Config + HostConfig) into a [`ContainerConfig`].
//!
//! Every field of the body is either used (here, or by the API's mounts,
//! networks, logs and restart handling, listed in [`HANDLED`]) or, when set
//! to anything but its zero value, refused with the field's name: nothing
//! a client asks for is dropped. The check runs on the raw JSON, so fields
//! newer than cubby's API model are caught too.

pub mod endpoints;
pub mod storage;

use crate::config::parse::{self, parse_size};
use crate::config::{
    ConfigError, ConfigResult, ContainerConfig, DeviceMapping, NetworkMode, Resources,
};
use crate::logs::LogOptions;
use crate::records::{RestartName, RestartPolicy};
use crate::service::NewContainer;
use bollard_stubs::models::{ContainerCreateBody, HostConfig};
use serde_json::Value;
use std::path::PathBuf;

/// Docker's smallest memory limit.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Top-level (Config) fields cubby honours.
const CONFIG_HANDLED: &[&str] = &[
    "Hostname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "HostConfig",
    "NetworkingConfig",
    // Windows-only; meaningless on Linux.
    "ArgsEscaped",
];

/// HostConfig fields cubby honours (some only with certain values,
/// checked in [`from_body`]).
pub const HANDLED: &[&str] = &[
    // config/storage.rs, realised by service/mounts.rs
    "Binds",
    "Mounts",
    "Tmpfs",
    "VolumeDriver",
    "VolumesFrom",
    // config/endpoints.rs, attached by service/networks.rs
    "NetworkMode",
    "PortBindings",
    // api/logs.rs
    "LogConfig",
    // api/create.rs
    "RestartPolicy",
    "AutoRemove",
    // the terminal's first size: the client resizes after attaching
    "ConsoleSize",
    // `--cidfile`: the CLI writes the file itself; daemons ignore it
    "ContainerIDFile",
    // here
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "MemorySwappiness",
    "NanoCpus",
    "CpuQuota",
    "CpuPeriod",
    "CpuShares",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "ReadonlyRootfs",
    "CapAdd",
    "CapDrop",
    "Privileged",
    "SecurityOpt",
    "Ulimits",
    "Devices",
    "Init",
    "ShmSize",
    "UsernsMode",
    "IpcMode",
    "PidMode",
    "UTSMode",
    "CgroupnsMode",
    "Isolation",
    "Runtime",
    "OomKillDisable",
];

/// A JSON value that asks for nothing: null, false, 0, "", [] or {}.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Refuses any field of the raw create body that cubby does not handle
/// and that is set.
pub fn check_supported(raw: &Value) -> ConfigResult<()> {
    let Some(top) = raw.as_object() else {
        return Err(ConfigError::invalid("the create body is not a JSON object"));
    };
    for (k, v) in top {
        if !CONFIG_HANDLED.contains(&k.as_str()) && !is_zero(v) {
            return Err(ConfigError::unsupported(format!("Config.{k}")));
        }
    }
    if let Some(hc) = top.get("HostConfig").and_then(Value::as_object) {
        for (k, v) in hc {
            if !HANDLED.contains(&k.as_str()) && !is_zero(v) {
                return Err(ConfigError::unsupported(format!("HostConfig.{k}")));
            }
        }
    }
    Ok(())
}

pub use crate::config::ImageDefaults;

fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> ConfigResult<()> {
    let v = value.unwrap_or("");
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(ConfigError::unsupported_because(
        format!("HostConfig.{field}={v}"),
        format!(
            "use one of {}",
            allowed
                .iter()
                .map(|a| if a.is_empty() { "\"\"" } else { a })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Docker's resource fields, validated with Docker's wording.
pub fn resources(hc: &HostConfig) -> ConfigResult<Resources> {
    let pos = |v: Option<i64>| v.filter(|&n| n > 0);
    let mut r = Resources::default();
    let memory = pos(hc.memory);
    if let Some(m) = memory {
        if m < MIN_MEMORY {
            return Err(ConfigError::invalid("Minimum memory limit allowed is 6MB"));
        }
    }
    let swap = hc.memory_swap.filter(|&s| s != 0);
    if let (Some(s), Some(m)) = (swap, memory) {
        if s > 0 && s < m {
            return Err(ConfigError::invalid(
                "Minimum memoryswap limit should be larger than memory limit, see usage",
            ));
        }
    }
    if swap.is_some() && memory.is_none() {
        return Err(ConfigError::invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ));
    }
    if let Some(s) = hc.memory_swappiness.filter(|s| *s != -1) {
        return Err(ConfigError::unsupported_because(
            format!("HostConfig.MemorySwappiness={s}"),
            "swappiness is a cgroup v1 knob this host does not offer per container",
        ));
    }
    r.memory = memory;
    r.memory_swap = swap.map(|s| s.max(-1));
    r.memory_reservation = pos(hc.memory_reservation);
    let nano = pos(hc.nano_cpus);
    if nano.is_some() && (pos(hc.cpu_quota).is_some() || pos(hc.cpu_period).is_some()) {
        return Err(ConfigError::invalid(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    (r.cpu_quota, r.cpu_period) = match nano {
        // --cpus=N is a quota of N periods of 100 ms.
        Some(n) => (Some(n * 100_000 / 1_000_000_000), Some(100_000u64)),
        None => (pos(hc.cpu_quota), pos(hc.cpu_period).map(|p| p as u64)),
    };
    r.cpu_shares = pos(hc.cpu_shares).map(|s| s as u64);
    r.cpuset_cpus = hc
        .cpuset_cpus
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse::cpuset(s, "HostConfig.CpusetCpus"))
        .transpose()?;
    r.cpuset_mems = hc
        .cpuset_mems
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse::cpuset(s, "HostConfig.CpusetMems"))
        .transpose()?;
    // Docker: 0 is unset, -1 unlimited.
    r.pids_limit = hc.pids_limit.filter(|&p| p != 0).map(|p| p.max(-1));
    Ok(r)
}

/// The body as [`Engine::create`] takes it: the image, Entrypoint and
/// Cmd (the engine combines them with the image's), the typed config and
/// the body itself, kept only for inspect.
///
/// [`Engine::create`]: crate::service::Engine::create
pub fn new_container(
    body: ContainerCreateBody,
    name: Option<String>,
) -> ConfigResult<NewContainer> {
    let config = body_config(&body)?;
    Ok(NewContainer {
        image: body.image.clone().unwrap_or_default(),
        name,
        entrypoint: body.entrypoint.clone().filter(|e| !e.is_empty()),
        cmd: body.cmd.clone().unwrap_or_default(),
        open_stdin: body.open_stdin.unwrap_or(false),
        stdin_once: body.stdin_once.unwrap_or(false),
        config,
        shown: Some(body),
    })
}

/// The body as a [`ContainerConfig`] completed with `image`'s defaults, as
/// the engine completes it at create (tests and the CLI's round trip).
pub fn from_body(
    body: &ContainerCreateBody,
    image: ImageDefaults,
) -> ConfigResult<ContainerConfig> {
    let mut cfg = body_config(body)?;
    cfg.complete_from_image(image)?;
    Ok(cfg)
}

/// The body as a [`ContainerConfig`], before the image is known: no
/// command or image environment yet, and no working directory or user
/// unless the body sets them.
pub fn body_config(body: &ContainerCreateBody) -> ConfigResult<ContainerConfig> {
    let hc = body.host_config.clone().unwrap_or_default();
    one_of("UsernsMode", hc.userns_mode.as_deref(), &["", "host"])?;
    one_of(
        "IpcMode",
        hc.ipc_mode.as_deref(),
        &["", "private", "shareable"],
    )?;
    one_of("PidMode", hc.pid_mode.as_deref(), &["", "private"])?;
    one_of("UTSMode", hc.uts_mode.as_deref(), &["", "private"])?;
    let cgroupns = hc.cgroupns_mode.map(|m| m.to_string());
    one_of("CgroupnsMode", cgroupns.as_deref(), &["", "private"])?;
    let isolation = hc.isolation.map(|m| m.to_string());
    one_of("Isolation", isolation.as_deref(), &["", "default"])?;
    one_of("Runtime", hc.runtime.as_deref(), &["", "runc", "cubby"])?;
    if hc.oom_kill_disable == Some(true) {
        return Err(ConfigError::unsupported_because(
            "HostConfig.OomKillDisable",
            "the OOM killer stays on for containers",
        ));
    }
    let mut cfg = ContainerConfig {
        env: body.env.clone().unwrap_or_default(),
        tty: body.tty.unwrap_or(false),
        init: hc.init.unwrap_or(false),
        read_only: hc.readonly_rootfs.unwrap_or(false),
        resources: resources(&hc)?,
        shm_size: hc.shm_size.filter(|s| *s != 0),
        ..Default::default()
    };
    if let Some(wd) = body.working_dir.clone().filter(|w| !w.is_empty()) {
        crate::config::check_workdir(&wd)?;
        cfg.workdir = Some(PathBuf::from(wd));
    }
    cfg.user = body.user.clone().filter(|u| !u.is_empty());
    cfg.hostname = body.hostname.clone().filter(|h| !h.is_empty());
    let sec = &mut cfg.security;
    sec.privileged = hc.privileged.unwrap_or(false);
    parse::apply_capabilities(
        sec,
        hc.cap_add.as_deref().unwrap_or(&[]),
        hc.cap_drop.as_deref().unwrap_or(&[]),
        "HostConfig.CapAdd",
        "HostConfig.CapDrop",
    )?;
    let no_files = |p: &str| -> Result<String, String> {
        Err(format!(
            "the daemon takes the profile's JSON, not a path ({p}); the docker CLI sends the file's content"
        ))
    };
    for opt in hc.security_opt.iter().flatten() {
        parse::security_opt(sec, opt, "HostConfig.SecurityOpt", &no_files)?;
    }
    for u in hc.ulimits.iter().flatten() {
        let name = u.name.as_deref().unwrap_or("");
        let soft = u.soft.unwrap_or(0);
        cfg.ulimits.push(parse::ulimit(
            name,
            soft,
            u.hard.unwrap_or(soft),
            "HostConfig.Ulimits",
        )?);
    }
    for d in hc.devices.iter().flatten() {
        let host = d.path_on_host.clone().unwrap_or_default();
        if host.is_empty() {
            return Err(ConfigError::invalid(
                "HostConfig.Devices: an entry has no PathOnHost",
            ));
        }
        let container = d
            .path_in_container
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| host.clone());
        cfg.devices.push(DeviceMapping {
            host: PathBuf::from(host),
            container: PathBuf::from(container),
            permissions: d
                .cgroup_permissions
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "rwm".into()),
        });
    }
    cfg.network = NetworkMode::parse(hc.network_mode.as_deref().unwrap_or(""))?;
    cfg.restart = restart_policy(&hc)?;
    cfg.auto_remove = hc.auto_remove.unwrap_or(false);
    if cfg.auto_remove && cfg.restart.name != RestartName::No {
        return Err(ConfigError::invalid(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    cfg.labels = body
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    cfg.log = log_options(Some(&hc))?;
    let mut config_volumes: Vec<String> = body
        .volumes
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    config_volumes.sort();
    cfg.storage = storage::plan(&hc, &config_volumes)?;
    cfg.endpoints = endpoints::endpoints(body)?;
    cfg.ports = endpoints::ports(&hc)?;
    Ok(cfg)
}

/// HostConfig.RestartPolicy as the monitor applies it.
fn restart_policy(host: &HostConfig) -> ConfigResult<RestartPolicy> {
    use bollard_stubs::models::RestartPolicyNameEnum as N;
    let Some(p) = &host.restart_policy else {
        return Ok(RestartPolicy::default());
    };
    let name = match p.name {
        None | Some(N::EMPTY) | Some(N::NO) => RestartName::No,
        Some(N::ALWAYS) => RestartName::Always,
        Some(N::UNLESS_STOPPED) => RestartName::UnlessStopped,
        Some(N::ON_FAILURE) => RestartName::OnFailure,
    };
    let max = p.maximum_retry_count.unwrap_or(0);
    if max < 0 || (max > 0 && name != RestartName::OnFailure) {
        return Err(ConfigError::invalid(format!(
            "invalid restart policy: maximum retry count {max} is only valid with on-failure"
        )));
    }
    Ok(RestartPolicy {
        name,
        max_retries: max as u32,
    })
}

/// The json-file options of a create body's `HostConfig.LogConfig`
/// (`max-size` as Docker's sizes: `10k`, `5m`, `1g`...; `max-file`).
/// Other drivers are refused: cubby writes json-file logs only.
pub fn log_options(hc: Option<&HostConfig>) -> ConfigResult<LogOptions> {
    let mut opts = LogOptions::default();
    let Some(lc) = hc.and_then(|h| h.log_config.as_ref()) else {
        return Ok(opts);
    };
    match lc.typ.as_deref() {
        None | Some("" | "json-file") => {}
        Some(other) => {
            return Err(ConfigError::invalid(format!(
                "logging driver {other:?} is not supported by cubby: use json-file"
            )))
        }
    }
    for (k, v) in lc.config.iter().flatten() {
        match k.as_str() {
            "max-size" => {
                let n = parse_size(v).ok_or_else(|| {
                    ConfigError::invalid(format!("invalid max-size {v:?}: want e.g. 10m"))
                })?;
                // Docker: -1 is unlimited.
                opts.max_size = (n > 0).then_some(n as u64);
                if n == 0 {
                    return Err(ConfigError::invalid("max-size must be a positive number"));
                }
            }
            "max-file" => {
                opts.max_file = match v.parse::<i64>() {
                    Ok(n) if n >= 1 => n.min(u32::MAX as i64) as u32,
                    _ => {
                        return Err(ConfigError::invalid(format!(
                            "invalid max-file {v:?}: want a number >= 1"
                        )))
                    }
                }
            }
            // Options of json-file that do not change what is written.
            "compress" | "labels" | "labels-regex" | "env" | "env-regex" | "tag" => {}
            other => {
                return Err(ConfigError::invalid(format!(
                    "unknown log opt '{other}' for json-file log driver"
                )))
            }
        }
    }
    if opts.max_file > 1 && opts.max_size.is_none() {
        return Err(ConfigError::invalid(
            "max-file cannot be greater than 1 when max-size is not set",
        ));
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{build, Seccomp};
    use oci_spec::runtime::{Capability, LinuxNamespaceType, PosixRlimitType};
    use serde_json::json;

    fn rootfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
        t
    }

    /// Docker create body → ContainerConfig → spec, every field cubby
    /// takes in this step.
    #[test]
    fn create_body_round_trip() {
        let raw = json!({
            "Image": "busybox",
            "Hostname": "box",
            "User": "app",
            "Env": ["A=1", "PATH=/x"],
            "Tty": true,
            "WorkingDir": "/srv",
            "HostConfig": {
                "ReadonlyRootfs": true,
                "CapAdd": ["SYS_TIME"], "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges=false",
                                "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"mkdir\"],\"action\":\"SCMP_ACT_ERRNO\"}]}"],
                "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
                "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}],
                "CpusetCpus": "0", "CpusetMems": "0",
                "Memory": 67108864, "MemorySwap": 134217728, "MemoryReservation": 33554432,
                "NanoCpus": 1500000000, "CpuShares": 512, "PidsLimit": 50,
                "Init": true, "ShmSize": 1048576, "NetworkMode": "host",
                "MemorySwappiness": -1, "IpcMode": "", "ConsoleSize": [24, 80],
                "OomKillDisable": false, "Privileged": false
            }
        });
        check_supported(&raw).unwrap();
        let body: ContainerCreateBody = serde_json::from_value(raw).unwrap();
        let cfg = from_body(
            &body,
            ImageDefaults {
                command: vec!["sh".into()],
                env: vec!["PATH=/bin".into(), "B=2".into()],
                workdir: Some("/img".into()),
                user: None,
            },
        )
        .unwrap();
        assert!(cfg.init && cfg.read_only && cfg.tty && cfg.host_network());
        assert!(cfg.security.cap_drop_all && !cfg.security.no_new_privileges);
        assert!(matches!(cfg.security.seccomp, Seccomp::Profile(_)));
        let root = rootfs();
        let spec = build(&cfg, root.path()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec!["sh".to_string()]);
        let env = p.env().as_ref().unwrap();
        for want in ["PATH=/x", "A=1", "B=2", "TERM=xterm", "HOME=/home/app"] {
            assert!(env.contains(&want.to_string()), "{want} in {env:?}");
        }
        assert_eq!(p.cwd(), &PathBuf::from("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids().as_ref(), Some(&vec![10]));
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.no_new_privileges(), Some(false));
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(
            caps.effective()
                .as_ref()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            vec![&Capability::SysTime]
        );
        let nofile = p
            .rlimits()
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.typ() == PosixRlimitType::RlimitNofile)
            .unwrap();
        assert_eq!((nofile.soft(), nofile.hard()), (100, 200));
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let l = spec.linux().as_ref().unwrap();
        let seccomp = l.seccomp().as_ref().unwrap();
        assert_eq!(seccomp.syscalls().as_ref().unwrap().len(), 1);
        let dev = &l.devices().as_ref().unwrap()[0];
        assert_eq!(
            (dev.path(), dev.major(), dev.minor()),
            (&PathBuf::from("/dev/mynull"), 1, 3)
        );
        let res = l.resources().as_ref().unwrap();
        assert!(res.devices().as_ref().unwrap().iter().any(|r| r.allow()
            && r.major() == Some(1)
            && r.minor() == Some(3)
            && r.access().as_deref() == Some("rw")));
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        assert_eq!(
            (cpu.quota(), cpu.period(), cpu.shares()),
            (Some(150_000), Some(100_000), Some(512))
        );
        let mem = res.memory().as_ref().unwrap();
        assert_eq!(
            (mem.limit(), mem.swap(), mem.reservation()),
            (Some(64 << 20), Some(128 << 20), Some(32 << 20))
        );
        assert_eq!(res.pids().as_ref().unwrap().limit(), 50);
        assert!(!l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == &PathBuf::from("/dev/shm"))
            .unwrap();
        assert!(shm
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=1048576".to_string()));
    }

    #[test]
    fn privileged_and_defaults() {
        let root = rootfs();
        let body: ContainerCreateBody =
            serde_json::from_value(json!({"Image": "x", "HostConfig": {"Privileged": true}}))
                .unwrap();
        let cfg = from_body(
            &body,
            ImageDefaults {
                command: vec!["sh".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let spec = build(&cfg, root.path()).unwrap();
        let l = spec.linux().as_ref().unwrap();
        assert!(l.seccomp().is_none() && l.masked_paths().is_none());
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert!(caps
            .effective()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        // Defaults: seccomp on, no_new_privileges on, Docker's capabilities, no init.
        let body: ContainerCreateBody = serde_json::from_value(json!({"Image": "x"})).unwrap();
        let cfg = from_body(
            &body,
            ImageDefaults {
                command: vec!["sh".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!cfg.init);
        let spec = build(&cfg, root.path()).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_some());
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        assert!(!p
            .capabilities()
            .as_ref()
            .unwrap()
            .effective()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
    }

    #[test]
    fn unsupported_fields_are_named() {
        let refuse = |raw: Value| -> String {
            let body: ContainerCreateBody = serde_json::from_value(raw.clone()).unwrap();
            match check_supported(&raw).and_then(|_| from_body(&body, ImageDefaults::default())) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted {raw}"),
            }
        };
        assert!(refuse(json!({"HostConfig": {"Dns": ["1.1.1.1"]}})).contains("HostConfig.Dns"));
        assert!(
            refuse(json!({"HostConfig": {"BlkioWeight": 300}})).contains("HostConfig.BlkioWeight")
        );
        assert!(refuse(json!({"HostConfig": {"FutureThing": {"a": 1}}}))
            .contains("HostConfig.FutureThing"));
        assert!(refuse(json!({"Healthcheck": {"Test": ["CMD", "true"]}}))
            .contains("Config.Healthcheck"));
        assert!(refuse(json!({"Domainname": "example.org"})).contains("Config.Domainname"));
        assert!(
            refuse(json!({"HostConfig": {"PidMode": "host"}})).contains("HostConfig.PidMode=host")
        );
        assert!(refuse(json!({"HostConfig": {"UsernsMode": "private"}})).contains("UsernsMode"));
        assert!(
            refuse(json!({"HostConfig": {"SecurityOpt": ["apparmor=unconfined"]}}))
                .contains("apparmor")
        );
        assert!(
            refuse(json!({"HostConfig": {"SecurityOpt": ["seccomp=/etc/p.json"]}}))
                .contains("not a path")
        );
        assert!(
            refuse(json!({"HostConfig": {"MemorySwappiness": 10}})).contains("MemorySwappiness")
        );
        // The docker CLI's zero values pass.
        check_supported(
            &json!({"Image": "x", "Domainname": "", "Healthcheck": null, "HostConfig": {
            "Dns": [], "DnsOptions": [], "BlkioWeight": 0, "Links": null, "OomScoreAdj": 0,
            "LogConfig": {"Type": "", "Config": {}}}}),
        )
        .unwrap();
    }

    #[test]
    fn log_config() {
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1.5KB"), Some(1536));
        assert_eq!(parse_size("2gib"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("-1"), Some(-1));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size(""), None);
        let hc = |j: &str| serde_json::from_str::<HostConfig>(j).unwrap();
        assert_eq!(log_options(None).unwrap(), LogOptions::default());
        let o = log_options(Some(&hc(
            r#"{"LogConfig":{"Type":"json-file","Config":{"max-size":"1k","max-file":"2"}}}"#,
        )))
        .unwrap();
        assert_eq!(o.max_size, Some(1024));
        assert_eq!(o.max_file, 2);
        assert_eq!(
            log_options(Some(&hc(r#"{"LogConfig":{"Type":"","Config":{}}}"#))).unwrap(),
            LogOptions::default()
        );
        for bad in [
            r#"{"LogConfig":{"Type":"syslog"}}"#,
            r#"{"LogConfig":{"Config":{"max-size":"lots"}}}"#,
            r#"{"LogConfig":{"Config":{"max-size":"0"}}}"#,
            r#"{"LogConfig":{"Config":{"max-file":"0","max-size":"1m"}}}"#,
            r#"{"LogConfig":{"Config":{"max-file":"3"}}}"#,
            r#"{"LogConfig":{"Config":{"nope":"1"}}}"#,
        ] {
            assert!(log_options(Some(&hc(bad))).is_err(), "{bad}");
        }
    }

    /// Every field of ContainerConfig from one create body. The expected
    /// value is a full struct literal: a field added to ContainerConfig
    /// does not compile here until the test covers it.
    #[test]
    fn every_config_field_from_a_body() {
        let raw = json!({
            "Image": "busybox",
            "Hostname": "box",
            "User": "app:wheel",
            "Env": ["A=1"],
            "Tty": true,
            "WorkingDir": "/srv",
            "Labels": {"course": "os", "lab": "3"},
            "Volumes": {"/cache": {}},
            "NetworkingConfig": {"EndpointsConfig": {
                "lab-net": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}},
                "default": {"Aliases": ["b"]}
            }},
            "HostConfig": {
                "Binds": ["/h:/data:ro"],
                "Mounts": [{"Type": "volume", "Source": "v1", "Target": "/v"}],
                "Tmpfs": {"/run": "size=64m"},
                "PortBindings": {
                    "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                    "53/udp": [{"HostPort": ""}]
                },
                "ReadonlyRootfs": true,
                "CapAdd": ["SYS_TIME"], "CapDrop": ["NET_RAW"],
                "SecurityOpt": ["no-new-privileges=false", "seccomp=unconfined"],
                "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
                "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}],
                "CpusetCpus": "0", "CpusetMems": "0",
                "Memory": 67108864, "MemorySwap": 134217728, "MemoryReservation": 33554432,
                "CpuQuota": 50000, "CpuPeriod": 100000, "CpuShares": 512, "PidsLimit": 50,
                "Init": true, "ShmSize": 1048576, "NetworkMode": "lab-net",
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
            }
        });
        check_supported(&raw).unwrap();
        let body: ContainerCreateBody = serde_json::from_value(raw).unwrap();
        let image = ImageDefaults {
            command: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            workdir: Some("/img".into()),
            user: None,
        };
        let cfg = from_body(&body, image).unwrap();
        let want = ContainerConfig {
            command: vec!["sh".into()],
            image_env: vec!["PATH=/bin".into()],
            env: vec!["A=1".into()],
            workdir: Some("/srv".into()),
            user: Some("app:wheel".into()),
            hostname: Some("box".into()),
            tty: true,
            init: true,
            read_only: true,
            resources: Resources {
                memory: Some(67108864),
                memory_swap: Some(134217728),
                memory_reservation: Some(33554432),
                cpu_quota: Some(50000),
                cpu_period: Some(100000),
                cpu_shares: Some(512),
                cpuset_cpus: Some("0".into()),
                cpuset_mems: Some("0".into()),
                pids_limit: Some(50),
            },
            security: crate::config::Security {
                cap_add: vec![Capability::SysTime],
                cap_add_all: false,
                cap_drop: vec![Capability::NetRaw],
                cap_drop_all: false,
                privileged: false,
                no_new_privileges: false,
                seccomp: Seccomp::Unconfined,
            },
            ulimits: vec![parse::ulimit("nofile", 100, 200, "HostConfig.Ulimits").unwrap()],
            devices: vec![DeviceMapping {
                host: "/dev/null".into(),
                container: "/dev/mynull".into(),
                permissions: "rw".into(),
            }],
            shm_size: Some(1048576),
            userns: None,
            network: NetworkMode::Named("lab-net".into()),
            mounts: Vec::new(),
            storage: {
                use super::storage::{parse_bind, parse_mount, parse_tmpfs};
                let mut anon = crate::config::storage::MountRequest::new(
                    crate::config::storage::Kind::Volume,
                    "/cache".into(),
                );
                anon.create_source = true;
                let mount = serde_json::from_value(
                    json!({"Type": "volume", "Source": "v1", "Target": "/v"}),
                )
                .unwrap();
                vec![
                    parse_bind("/h:/data:ro").unwrap(),
                    parse_mount(&mount).unwrap(),
                    parse_tmpfs("/run", "size=64m").unwrap(),
                    anon,
                ]
            },
            endpoints: [
                (
                    "lab-net".to_string(),
                    crate::config::Endpoint {
                        aliases: vec!["web".into()],
                        ip: Some("10.9.0.5".parse().unwrap()),
                    },
                ),
                (
                    cubby_network::DEFAULT_NETWORK.to_string(),
                    crate::config::Endpoint {
                        aliases: vec!["b".into()],
                        ip: None,
                    },
                ),
            ]
            .into(),
            ports: {
                let mut p = vec![
                    crate::config::PublishedPort {
                        proto: "udp".into(),
                        host_ip: None,
                        host_port: None,
                        port: 53,
                    },
                    crate::config::PublishedPort {
                        proto: "tcp".into(),
                        host_ip: Some("127.0.0.1".parse().unwrap()),
                        host_port: Some(8080),
                        port: 80,
                    },
                ];
                // PortBindings is a map: its order is not the body's.
                p.sort_by_key(|x| x.port);
                p
            },
            cgroup_path: None,
            restart: RestartPolicy {
                name: RestartName::OnFailure,
                max_retries: 3,
            },
            auto_remove: false,
            labels: [("course", "os"), ("lab", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: LogOptions {
                max_size: Some(1 << 20),
                max_file: 2,
            },
        };
        let mut cfg = cfg;
        cfg.ports.sort_by_key(|x| x.port);
        assert_eq!(cfg, want);
        // ... and into the spec: storage and endpoints are the engine's to
        // realise (volumes, netns), never half-applied by the builder.
        let root = rootfs();
        let spec = build(&cfg, root.path()).unwrap();
        let dests: Vec<_> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().clone())
            .collect();
        assert!(
            !dests.iter().any(|d| d == std::path::Path::new("/data")),
            "{dests:?}"
        );
    }

    #[test]
    fn network_restart_and_auto_remove() {
        let cfg = |hc: Value| {
            let body: ContainerCreateBody =
                serde_json::from_value(json!({"Image": "x", "HostConfig": hc})).unwrap();
            from_body(
                &body,
                ImageDefaults {
                    command: vec!["sh".into()],
                    env: Vec::new(),
                    workdir: None,
                    user: None,
                },
            )
        };
        for (mode, want) in [
            ("", NetworkMode::Default),
            ("default", NetworkMode::Default),
            ("none", NetworkMode::None),
            ("host", NetworkMode::Host),
            ("bridge", NetworkMode::Named("bridge".into())),
        ] {
            assert_eq!(cfg(json!({"NetworkMode": mode})).unwrap().network, want);
        }
        let e = cfg(json!({"NetworkMode": "container:web"})).unwrap_err();
        assert!(e.to_string().contains("container:NAME"), "{e}");
        let c = cfg(json!({"AutoRemove": true})).unwrap();
        assert!(c.auto_remove && c.restart == RestartPolicy::default());
        assert!(cfg(json!({"AutoRemove": true, "RestartPolicy": {"Name": "always"}})).is_err());
        assert!(cfg(json!({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}})).is_err());
        assert!(
            cfg(json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}})).is_err()
        );
        assert_eq!(
            cfg(json!({"RestartPolicy": {"Name": "unless-stopped"}}))
                .unwrap()
                .restart
                .name,
            RestartName::UnlessStopped
        );
    }
}
