//! `cubby run` options and their translation into an OCI spec.
//!
//! [`RunArgs`] is the clap definition (Docker's flag names); [`build_spec`]
//! starts from [`cubby_runtime::spec::default_spec`] and applies every flag.
//! Each flag's syntax is checked by a small `parse_*` function with its own
//! tests; errors name the flag and show an example.

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Args};
use cubby_engine::config::{self, parse, ContainerConfig, DeviceMapping};
use cubby_engine::users;
use cubby_runtime::spec as rspec;
use oci_spec::runtime::{Mount, PosixRlimit, Spec};
use std::path::{Component, Path, PathBuf};

/// Options of `cubby run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,

    /// Run in the background and print the container's id (daemon only)
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Set a label KEY=VALUE on the container (daemon only)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,

    /// Mount: type=bind|tmpfs|volume,source=...,target=...[,readonly] (daemon only)
    #[arg(long = "mount", value_name = "SPEC")]
    pub mount: Vec<String>,

    /// Restart policy: no, always, unless-stopped, on-failure[:N] (daemon only)
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,

    /// Keep stdin open
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Container name (letters, digits, '_', '.', '-'); a random id if absent
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Container hostname (default: the first 12 characters of the id)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Set an environment variable; KEY alone copies it from this environment
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file of KEY[=VALUE] lines
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Working directory inside the container (absolute)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// User and group, as numbers or names from the rootfs's /etc/passwd and /etc/group
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// Bind-mount a host path into the container
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro|rw]")]
    pub volume: Vec<String>,

    /// Mount a tmpfs (default options noexec,nosuid,nodev)
    #[arg(long, value_name = "CONTAINER[:OPTIONS]")]
    pub tmpfs: Vec<String>,

    /// Mount the root filesystem read-only
    #[arg(long = "read-only")]
    pub read_only: bool,

    /// Memory limit, e.g. 512m or 1g
    #[arg(short = 'm', long, value_name = "BYTES")]
    pub memory: Option<String>,

    /// Memory plus swap limit, e.g. 1g; -1 for unlimited swap
    #[arg(long = "memory-swap", value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,

    /// Number of CPUs, e.g. 1.5
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,

    /// Relative CPU weight (2 to 262144; 1024 is the default weight)
    #[arg(short = 'c', long = "cpu-shares", value_name = "N",
          value_parser = clap::value_parser!(u64).range(2..=262144))]
    pub cpu_shares: Option<u64>,

    /// CPUs the container may use, e.g. 0-3 or 0,2
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,

    /// Memory nodes (NUMA) the container may use, e.g. 0 or 0-1
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    pub cpuset_mems: Option<String>,

    /// Maximum number of processes; 0 or -1 for no limit
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,

    /// Network: none (only loopback; the default without a daemon), host,
    /// or with the daemon bridge (its default) or a network's name
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,

    /// Publish a container port on the host, [IP:]HOST:CTR[/tcp|udp] (daemon only)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR")]
    pub publish: Vec<String>,

    /// Another name for the container on its network (daemon only)
    #[arg(long = "network-alias", value_name = "NAME")]
    pub network_alias: Vec<String>,

    /// Add a capability (CAP_ prefix optional; ALL for every capability)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Drop a capability (CAP_ prefix optional; ALL for every capability)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Every capability, no seccomp, the host's devices, writable /sys
    #[arg(long)]
    pub privileged: bool,

    /// Give the container a host device, HOST[:CONTAINER[:rwm]]
    #[arg(long = "device", value_name = "HOST[:CONTAINER[:PERMS]]")]
    pub device: Vec<String>,

    /// seccomp=unconfined, seccomp=PROFILE.json (Docker or OCI format) or no-new-privileges[=true|false]
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,

    /// User namespace: auto (root maps to host uid 100000, 65536 ids), HOSTUID:COUNT, or host
    #[arg(long, value_name = "auto|HOSTUID:COUNT")]
    pub userns: Option<String>,

    /// Run the command directly as PID 1, without cubby's init
    #[arg(long = "no-init", action = ArgAction::SetFalse, overrides_with = "init_flag")]
    pub init: bool,

    /// Run cubby's init as PID 1: reaps zombies and forwards signals (default)
    #[arg(long = "init", overrides_with = "init")]
    pub init_flag: bool,

    /// Resource limit, e.g. nofile=1024:2048 (soft[:hard]; -1 or unlimited)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,

    /// Root filesystem directory (instead of an image)
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// When to pull the image: missing, always or never
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: crate::images::PullPolicy,

    /// Image platform, e.g. linux/arm64 (default: this host's)
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,

    /// Override the image's Entrypoint
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,

    /// The image's Env, set below --env-file and -e (filled in from the image).
    #[arg(skip)]
    pub image_env: Vec<String>,

    /// The command and its arguments
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

impl RunArgs {
    /// Standalone `cubby run` (no daemon) has no background containers,
    /// labels, --mount or restart policies: say so instead of ignoring them.
    pub fn reject_daemon_only(&self) -> Result<()> {
        let flag = if self.detach {
            "-d"
        } else if !self.label.is_empty() {
            "--label"
        } else if !self.mount.is_empty() {
            "--mount"
        } else if self.restart.is_some() {
            "--restart"
        } else {
            return Ok(());
        };
        bail!(
            "{flag} needs the cubby daemon: start `cubby daemon` (or point --host / CUBBY_HOST at one)"
        )
    }

    /// The container id: `--name` once validated, else a generated one.
    pub fn container_id(&self) -> Result<String> {
        match &self.name {
            Some(name) => {
                validate_name(name)?;
                Ok(name.clone())
            }
            None => Ok(generate_id()),
        }
    }
}

/// The spec for `cubby run` with `args` as container `id`: the flags as a
/// [`ContainerConfig`], built by the engine's one builder.
pub fn build_spec(args: &RunArgs, id: &str) -> Result<Spec> {
    let lookup = |k: &str| std::env::var(k).ok();
    let (cfg, rootfs) = to_config(args, id, &lookup, host_cpus())?;
    Ok(config::build(&cfg, &rootfs)?)
}

/// The flags as a [`ContainerConfig`] and the rootfs, with the caller's
/// environment (for `-e KEY`) and the host's CPU count supplied.
pub fn to_config(
    args: &RunArgs,
    id: &str,
    lookup_env: &dyn Fn(&str) -> Option<String>,
    ncpus: usize,
) -> Result<(ContainerConfig, PathBuf)> {
    validate_name(id)?;
    let network = args.network.as_deref().unwrap_or("none");
    if network != "none" && network != "host" {
        bail!("--network {network} needs the cubby daemon (standalone `cubby run` has none and host): start `cubby daemon`");
    }
    if !args.publish.is_empty() || !args.network_alias.is_empty() {
        bail!("-p/--publish and --network-alias need the cubby daemon: start `cubby daemon`, or drop them");
    }
    if args.command.is_empty() {
        bail!("no command given: put it after the options, e.g. `cubby run --rootfs DIR -- sh -c 'echo hi'`");
    }
    let rootfs = check_rootfs(
        args.rootfs
            .as_deref()
            .context("give an image or --rootfs DIR")?,
    )?;
    let mut cfg = ContainerConfig {
        command: args.command.clone(),
        image_env: args.image_env.clone(),
        tty: args.tty,
        init: args.init,
        read_only: args.read_only,
        network: if network == "host" {
            cubby_engine::config::NetworkMode::Host
        } else {
            cubby_engine::config::NetworkMode::None
        },
        cgroup_path: Some(PathBuf::from(format!("/cubby/{id}"))),
        ..Default::default()
    };
    for f in &args.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--env-file {}: cannot read", f.display()))?;
        let vars = parse_env_file(&text, lookup_env)
            .with_context(|| format!("--env-file {}", f.display()))?;
        cfg.env
            .extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    for e in &args.env {
        if let Some((k, v)) = parse_env(e, lookup_env)? {
            cfg.env.push(format!("{k}={v}"));
        }
    }
    cfg.workdir = args.workdir.as_deref().map(parse_workdir).transpose()?;
    if let Some(u) = args.user.as_deref() {
        users::parse_user(u).map_err(|e| anyhow!("invalid --user {u:?}: {e}"))?;
        cfg.user = Some(u.to_string());
    }
    for v in &args.volume {
        let vol = parse_volume(v)?;
        if !vol.host.exists() {
            bail!(
                "invalid --volume {v:?}: host path {} does not exist",
                vol.host.display()
            );
        }
        cfg.mounts.push(vol.to_mount());
    }
    for t in &args.tmpfs {
        cfg.mounts.push(parse_tmpfs(t)?.to_mount());
    }
    let r = &mut cfg.resources;
    r.memory = args
        .memory
        .as_deref()
        .map(|m| {
            let bytes = parse_memory("--memory", m)?;
            if bytes < MIN_MEMORY {
                bail!("invalid --memory {m:?}: the minimum memory limit is 6m");
            }
            Ok(bytes)
        })
        .transpose()?;
    r.memory_swap = args
        .memory_swap
        .as_deref()
        .map(|s| parse_memory_swap(s, r.memory))
        .transpose()?;
    if let Some(c) = args.cpus.as_deref() {
        let (quota, period) = parse_cpus(c, ncpus)?;
        (r.cpu_quota, r.cpu_period) = (Some(quota), Some(period));
    }
    r.cpu_shares = args.cpu_shares;
    r.cpuset_cpus = args.cpuset_cpus.as_deref().map(parse_cpuset).transpose()?;
    r.cpuset_mems = args
        .cpuset_mems
        .as_deref()
        .map(|m| parse::cpuset(m, "--cpuset-mems"))
        .transpose()?;
    r.pids_limit = args.pids_limit.filter(|n| *n > 0);
    cfg.ulimits = args
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<Vec<_>>>()?;
    cfg.devices = args
        .device
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>>>()?;
    cfg.userns = args
        .userns
        .as_deref()
        .map(parse_userns)
        .transpose()?
        .flatten();
    cfg.hostname = Some(match &args.hostname {
        Some(h) => {
            validate_hostname(h)?;
            h.clone()
        }
        None => id.chars().take(12).collect(),
    });
    let sec = &mut cfg.security;
    sec.privileged = args.privileged;
    parse::apply_capabilities(
        sec,
        &args.cap_add,
        &args.cap_drop,
        "--cap-add",
        "--cap-drop",
    )?;
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    for opt in &args.security_opt {
        parse::security_opt(sec, opt, "--security-opt", &read)?;
    }
    Ok((cfg, rootfs))
}

// ---------------------------------------------------------------------------
// Names and ids.

/// Checks a container name by the engine's one rule (Docker's:
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, 2 to 128 characters), so standalone
/// `cubby run` and the daemon accept the same names.
pub fn validate_name(name: &str) -> Result<()> {
    if !cubby_engine::service::containers::valid_name(name) {
        bail!(
            "invalid container name {name:?}: use 2 to 128 letters, digits, '_', '.' and '-', starting with a letter or digit, e.g. web-1"
        );
    }
    Ok(())
}

/// A 12-hex-digit id from the time, the pid and a per-process counter.
pub fn generate_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:012x}", splitmix64(seed) & 0xffff_ffff_ffff)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Checks a hostname: 1 to 64 letters, digits, '-' and '.', not starting with '-' or '.'.
pub fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !h.starts_with(['-', '.']);
    if !ok {
        bail!("invalid --hostname {h:?}: use up to 64 letters, digits, '-' and '.', e.g. web-1");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rootfs.

/// Checks that `rootfs` is an existing directory and returns its absolute, canonical path.
pub fn check_rootfs(rootfs: &Path) -> Result<PathBuf> {
    let hint = "create one, e.g. with scripts/mk-busybox-rootfs.sh";
    let canon = std::fs::canonicalize(rootfs)
        .map_err(|e| anyhow!("--rootfs {}: {e}: {hint}", rootfs.display()))?;
    if !canon.is_dir() {
        bail!("--rootfs {}: not a directory: {hint}", rootfs.display());
    }
    Ok(canon)
}

// ---------------------------------------------------------------------------
// Environment.

/// Parses `-e KEY=VALUE` or `-e KEY` (value from `lookup`; `None` when unset there,
/// like Docker, which then leaves it out).
pub fn parse_env(
    entry: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>> {
    let (key, value) = match entry.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (entry, None),
    };
    validate_env_key(key).with_context(|| format!("invalid --env {entry:?}"))?;
    let value = match value {
        Some(v) => v,
        None => match lookup(key) {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    if value.contains('\0') {
        bail!("invalid --env {entry:?}: the value contains a NUL byte");
    }
    Ok(Some((key.to_string(), value)))
}

fn validate_env_key(key: &str) -> Result<()> {
    if key.is_empty() {
        bail!("the variable name is empty: use KEY=VALUE, e.g. -e LANG=C.UTF-8");
    }
    if key.chars().any(|c| c.is_whitespace() || c == '\0') {
        bail!("variable {key:?} contains whitespace");
    }
    Ok(())
}

/// Parses an env file: `KEY=VALUE` or `KEY` lines; blank lines and lines
/// starting with `#` are skipped; leading whitespace is ignored.
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (line.trim_end(), None),
        };
        validate_env_key(key).with_context(|| format!("line {}", n + 1))?;
        let value = match value.or_else(|| lookup(key)) {
            Some(v) => v,
            None => continue,
        };
        if value.contains('\0') {
            bail!("line {}: the value contains a NUL byte", n + 1);
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Working directory and user.

/// Checks `-w`: an absolute path (`.` and `..` are resolved lexically).
pub fn parse_workdir(dir: &str) -> Result<PathBuf> {
    if !dir.starts_with('/') || dir.contains('\0') {
        bail!("invalid --workdir {dir:?}: it must be an absolute path, e.g. /app");
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(dir).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Mounts.

/// A parsed `-v HOST:CONTAINER[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
}

impl Volume {
    /// The OCI mount: a recursive bind, read-only with `:ro`.
    pub fn to_mount(&self) -> Mount {
        let mut opts = vec!["rbind".to_string()];
        if self.readonly {
            opts.push("ro".to_string());
        }
        let mut m = Mount::default();
        m.set_destination(self.container.clone())
            .set_typ(Some("bind".to_string()))
            .set_source(Some(self.host.clone()))
            .set_options(Some(opts));
        m
    }
}

/// Checks a container-side mount destination: absolute, not `/`, no `..`.
fn container_path(flag: &str, spec: &str, p: &str) -> Result<PathBuf> {
    if !p.starts_with('/') {
        bail!("invalid {flag} {spec:?}: the container path {p:?} must be absolute");
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                bail!("invalid {flag} {spec:?}: the container path {p:?} must not contain '..'")
            }
            _ => {}
        }
    }
    if out == Path::new("/") {
        bail!("invalid {flag} {spec:?}: the container path can't be '/'");
    }
    Ok(out)
}

/// Parses `-v HOST:CONTAINER[:ro|rw]` (syntax only: the host path's existence
/// is checked by [`build_spec`]).
pub fn parse_volume(s: &str) -> Result<Volume> {
    let parts: Vec<&str> = s.split(':').collect();
    let example = "e.g. -v /srv/data:/data:ro";
    let (host, ctr, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, m] => (*h, *c, Some(*m)),
        _ => bail!("invalid --volume {s:?}: use HOST:CONTAINER[:ro|rw], {example}"),
    };
    if host.is_empty() || ctr.is_empty() {
        bail!("invalid --volume {s:?}: use HOST:CONTAINER[:ro|rw], {example}");
    }
    if !host.starts_with('/') {
        bail!(
            "invalid --volume {s:?}: the host path {host:?} must be absolute (cubby has no named volumes), {example}"
        );
    }
    if host.contains('\0') {
        bail!("invalid --volume {s:?}: NUL byte in the host path");
    }
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => bail!("invalid --volume {s:?}: unknown mode {m:?}, use ro or rw"),
    };
    Ok(Volume {
        host: PathBuf::from(host),
        container: container_path("--volume", s, ctr)?,
        readonly,
    })
}

/// A parsed `--tmpfs CONTAINER[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub container: PathBuf,
    pub options: Vec<String>,
}

impl Tmpfs {
    pub fn to_mount(&self) -> Mount {
        rspec::mount(
            &self.container.to_string_lossy(),
            "tmpfs",
            "tmpfs",
            &self.options.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }
}

const TMPFS_FLAGS: &[(&str, &str)] = &[
    ("exec", "noexec"),
    ("suid", "nosuid"),
    ("dev", "nodev"),
    ("rw", "ro"),
    ("atime", "noatime"),
    ("diratime", "nodiratime"),
    ("sync", "async"),
];
const TMPFS_OTHER_FLAGS: &[&str] = &["relatime", "norelatime", "strictatime", "nostrictatime"];
const TMPFS_KEYS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes", "nr_blocks"];

/// Parses `--tmpfs CONTAINER[:OPTIONS]`. Options default to
/// `noexec,nosuid,nodev` (as Docker); a given flag replaces its opposite
/// (`exec` removes `noexec`).
pub fn parse_tmpfs(s: &str) -> Result<Tmpfs> {
    let (ctr, opts) = match s.split_once(':') {
        Some((c, o)) => (c, Some(o)),
        None => (s, None),
    };
    let container = container_path("--tmpfs", s, ctr)?;
    let mut options: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for opt in opts.into_iter().flat_map(|o| o.split(',')) {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        if let Some((key, value)) = opt.split_once('=') {
            if !TMPFS_KEYS.contains(&key) || value.is_empty() {
                bail!(
                    "invalid --tmpfs {s:?}: unknown option {opt:?}; e.g. --tmpfs /run:size=64m,mode=1777"
                );
            }
            if key == "mode" && u32::from_str_radix(value, 8).map_or(true, |m| m > 0o7777) {
                bail!("invalid --tmpfs {s:?}: mode {value:?} is not an octal mode like 1777");
            }
            options.retain(|o| o.split_once('=').map(|(k, _)| k) != Some(key));
            options.push(opt.to_string());
            continue;
        }
        let opposite = TMPFS_FLAGS.iter().find_map(|(a, b)| {
            if opt == *a {
                Some(*b)
            } else if opt == *b {
                Some(*a)
            } else {
                None
            }
        });
        match opposite {
            Some(other) => options.retain(|o| o != other && o != opt),
            None if TMPFS_OTHER_FLAGS.contains(&opt) => options.retain(|o| o != opt),
            None => bail!(
                "invalid --tmpfs {s:?}: unknown option {opt:?}; e.g. --tmpfs /run:size=64m,mode=1777"
            ),
        }
        options.push(opt.to_string());
    }
    Ok(Tmpfs { container, options })
}

// ---------------------------------------------------------------------------
// Resources.

/// Docker's minimum `--memory`.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Parses a byte size for `flag`: a number with an optional unit b, k, m, g,
/// t or p (powers of 1024; case-insensitive; optional `b`/`ib` suffix such as
/// `kb`, `MiB`), e.g. `512m`, `1.5g`, `1024`. Rejects zero, negatives and garbage.
pub fn parse_memory(flag: &str, s: &str) -> Result<i64> {
    let err = || {
        anyhow!("invalid {flag} {s:?}: use a size with an optional unit b, k, m or g, e.g. 512m")
    };
    let t = s.trim().to_ascii_lowercase();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let unit = unit.trim_start();
    let mult: u128 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(err()),
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(err());
    }
    if frac.len() > 9 {
        return Err(err());
    }
    let whole: u128 = whole.parse().map_err(|_| err())?;
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| err())?
    };
    let bytes = whole
        .checked_mul(mult)
        .and_then(|w| w.checked_add(frac_val * mult / 10u128.pow(frac.len() as u32)))
        .ok_or_else(err)?;
    if bytes == 0 {
        bail!("invalid {flag} {s:?}: it must be greater than 0, e.g. 512m");
    }
    i64::try_from(bytes).map_err(|_| anyhow!("invalid {flag} {s:?}: too large"))
}

/// Parses `--memory-swap`: `-1` for unlimited swap, else memory plus swap,
/// which needs `--memory` and must be at least as large.
pub fn parse_memory_swap(s: &str, memory: Option<i64>) -> Result<i64> {
    if s.trim() == "-1" {
        return Ok(-1);
    }
    let swap = parse_memory("--memory-swap", s)?;
    match memory {
        None => bail!("--memory-swap needs --memory too, e.g. --memory 512m --memory-swap 1g"),
        Some(m) if swap < m => bail!(
            "invalid --memory-swap {s:?}: it is memory plus swap, so it must be at least --memory ({m} bytes); e.g. --memory 512m --memory-swap 1g"
        ),
        Some(_) => Ok(swap),
    }
}

/// CFS period used for `--cpus`, in microseconds.
pub const CPU_PERIOD: u64 = 100_000;

/// Parses `--cpus N` into a CFS (quota, period): quota = N × 100000.
/// N must lie between 0.01 and the host's CPU count `ncpus`.
pub fn parse_cpus(s: &str, ncpus: usize) -> Result<(i64, u64)> {
    let t = s.trim();
    let bad = || anyhow!("invalid --cpus {s:?}: use a number of CPUs, e.g. 1.5");
    let (whole, frac) = match t.split_once('.') {
        Some((w, f)) => (w, f),
        None => (t, ""),
    };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty())
        || !digits(whole)
        || !digits(frac)
        || (t.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let range = || {
        anyhow!(
            "invalid --cpus {s:?}: range of CPUs is from 0.01 to {ncpus}.00, as there are only {ncpus} CPUs available"
        )
    };
    if whole.len() > 12 {
        return Err(range());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // Microseconds of quota: 5 decimal places are significant.
    let mut frac5 = frac.chars().take(5).collect::<String>();
    while frac5.len() < 5 {
        frac5.push('0');
    }
    let frac_us: u64 = frac5.parse().map_err(|_| bad())?;
    let quota = whole * CPU_PERIOD + frac_us;
    if quota < CPU_PERIOD / 100 || quota > ncpus as u64 * CPU_PERIOD {
        return Err(range());
    }
    Ok((quota as i64, CPU_PERIOD))
}

/// Checks `--cpuset-cpus`: comma-separated CPU numbers and ranges, e.g. `0-3,6`.
pub fn parse_cpuset(s: &str) -> Result<String> {
    Ok(parse::cpuset(s, "--cpuset-cpus")?)
}

/// The number of CPUs this process may run on (as Docker's check uses).
pub fn host_cpus() -> usize {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    if let Ok(set) = sched_getaffinity(Pid::from_raw(0)) {
        let n = (0..CpuSet::count())
            .filter(|i| set.is_set(*i).unwrap_or(false))
            .count();
        if n > 0 {
            return n;
        }
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT; `-1` or
/// `unlimited` for no limit), e.g. `nofile=1024:2048`.
pub fn parse_ulimit(s: &str) -> Result<PosixRlimit> {
    let example = "e.g. --ulimit nofile=1024:2048";
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid --ulimit {s:?}: use NAME=SOFT[:HARD], {example}"))?;
    let value =
        |v: &str| -> Result<i64> {
            match v.trim() {
                "-1" | "unlimited" => Ok(-1),
                x => x.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    anyhow!("invalid --ulimit {s:?}: {x:?} is not a number, {example}")
                }),
            }
        };
    let (soft, hard) = match values.split_once(':') {
        Some((a, b)) => (value(a)?, value(b)?),
        None => {
            let v = value(values)?;
            (v, v)
        }
    };
    Ok(parse::ulimit(name, soft, hard, &format!("--ulimit {s:?}"))?)
}

/// Parses `--device HOST[:CONTAINER[:PERMISSIONS]]` (permissions some of
/// r, w, m; default rwm), e.g. `--device /dev/fuse`.
pub fn parse_device(s: &str) -> Result<DeviceMapping> {
    let example = "e.g. --device /dev/fuse or --device /dev/sdb:/dev/xvdb:r";
    let parts: Vec<&str> = s.split(':').collect();
    let perms_ok = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms_ok(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => bail!("invalid --device {s:?}: use HOST[:CONTAINER[:PERMISSIONS]], {example}"),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        bail!("invalid --device {s:?}: paths must be absolute, {example}");
    }
    if !perms_ok(perms) {
        bail!(
            "invalid --device {s:?}: permissions {perms:?} must be some of r, w and m, {example}"
        );
    }
    Ok(DeviceMapping {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        permissions: perms.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Namespaces.

/// Parses `--userns`: `auto` is `100000:65536`, `host` means no user
/// namespace (`None`), `HOSTUID:COUNT` maps container ids 0..COUNT to
/// host ids HOSTUID..HOSTUID+COUNT (for both uids and gids).
pub fn parse_userns(s: &str) -> Result<Option<(u32, u32)>> {
    let example = "use auto, host or HOSTUID:COUNT, e.g. --userns 100000:65536";
    match s {
        "auto" => return Ok(Some((100_000, 65_536))),
        "host" => return Ok(None),
        _ => {}
    }
    let (h, c) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("invalid --userns {s:?}: {example}"))?;
    let host: u32 = h
        .parse()
        .map_err(|_| anyhow!("invalid --userns {s:?}: {h:?} is not a host uid; {example}"))?;
    let count: u32 = c
        .parse()
        .map_err(|_| anyhow!("invalid --userns {s:?}: {c:?} is not a count; {example}"))?;
    if count == 0 {
        bail!("invalid --userns {s:?}: the count must be at least 1; {example}");
    }
    if u64::from(host) + u64::from(count) > u64::from(u32::MAX) {
        bail!(
            "invalid --userns {s:?}: the range goes past uid {}",
            u32::MAX - 1
        );
    }
    Ok(Some((host, count)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use oci_spec::runtime::{Capabilities, Capability, LinuxNamespaceType, PosixRlimitType};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(argv: &[&str]) -> RunArgs {
        let mut full = vec!["cubby-run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full) {
            Ok(c) => c.run,
            Err(e) => panic!("parse {argv:?}: {e}"),
        }
    }

    /// A rootfs with /etc/passwd and /etc/group.
    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             # comment\n\
             daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
             alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:root,alice\nalice:x:1000:\naudio:x:29:alice\nnogroup:x:65534:\n",
        )
        .unwrap();
        dir
    }

    fn lookup(k: &str) -> Option<String> {
        match k {
            "FROM_HOST" => Some("hostval".into()),
            _ => None,
        }
    }

    fn build(argv: &[&str]) -> Result<Spec> {
        let args = parse(argv);
        let (cfg, rootfs) = to_config(&args, "0123456789abcdef", &lookup, 4)?;
        Ok(config::build(&cfg, &rootfs)?)
    }

    fn build_ok(rootfs: &Path, extra: &[&str]) -> Spec {
        let r = rootfs.to_str().unwrap();
        let mut argv = vec!["--rootfs", r];
        argv.extend_from_slice(extra);
        match build(&argv) {
            Ok(s) => s,
            Err(e) => panic!("{extra:?}: {e:#}"),
        }
    }

    fn build_err(rootfs: &Path, extra: &[&str]) -> String {
        let r = rootfs.to_str().unwrap();
        let mut argv = vec!["--rootfs", r];
        argv.extend_from_slice(extra);
        match build(&argv) {
            Ok(_) => panic!("{extra:?}: expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    // --- clap -----------------------------------------------------------

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn combined_short_flags_and_trailing_command() {
        let a = parse(&["-it", "--rm", "--rootfs", "/r", "sh", "-c", "echo -n hi"]);
        assert!(a.interactive && a.tty && a.rm);
        assert_eq!(a.command, ["sh", "-c", "echo -n hi"]);
        let a = parse(&["--rootfs", "/r", "--", "ls", "-l", "--color"]);
        assert_eq!(a.command, ["ls", "-l", "--color"]);
        // Options after the command belong to the command.
        let a = parse(&["--rootfs", "/r", "ls", "--rm"]);
        assert!(!a.rm);
        assert_eq!(a.command, ["ls", "--rm"]);
    }

    #[test]
    fn repeated_and_negative_values() {
        let a = parse(&[
            "-e",
            "A=1",
            "-e",
            "B",
            "-v",
            "/a:/b",
            "-v",
            "/c:/d:ro",
            "--memory-swap",
            "-1",
            "--pids-limit",
            "-1",
            "--rootfs",
            "/r",
            "true",
        ]);
        assert_eq!(a.env, ["A=1", "B"]);
        assert_eq!(a.volume.len(), 2);
        assert_eq!(a.memory_swap.as_deref(), Some("-1"));
        assert_eq!(a.pids_limit, Some(-1));
        assert_eq!(a.network, None);
    }

    #[test]
    fn init_flags() {
        let cases: &[(&[&str], bool)] = &[
            (&[], true),
            (&["--init"], true),
            (&["--no-init"], false),
            (&["--no-init", "--init"], true),
            (&["--init", "--no-init"], false),
        ];
        for (flags, want) in cases {
            let mut argv = flags.to_vec();
            argv.extend_from_slice(&["--rootfs", "/r", "true"]);
            assert_eq!(parse(&argv).init, *want, "{flags:?}");
        }
    }

    #[test]
    fn clap_rejects() {
        for argv in [
            &["--cpu-shares", "1", "--rootfs", "/r", "x"][..],
            &["--pids-limit", "lots", "--rootfs", "/r", "x"],
            // Without --rootfs the first word is an image; --pull takes a policy.
            &["--pull", "sometimes", "alpine"],
        ] {
            let mut full = vec!["cubby-run"];
            full.extend_from_slice(argv);
            assert!(Cli::try_parse_from(full).is_err(), "{argv:?}");
        }
    }

    // --- names ------------------------------------------------------------

    #[test]
    fn names() {
        for ok in ["ab", "web-1", "A.b_c-9", "0abc"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "a",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "é",
            "../x",
            &"a".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let a = generate_id();
        let b = generate_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        validate_name(&a).unwrap();
        let args = parse(&["--name", "bad name", "--rootfs", "/r", "x"]);
        assert!(args.container_id().is_err());
        let args = parse(&["--name", "good", "--rootfs", "/r", "x"]);
        assert_eq!(args.container_id().unwrap(), "good");
    }

    #[test]
    fn hostnames() {
        for ok in ["a", "web-1.example", "x9"] {
            validate_hostname(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "a_b", "a b", &"a".repeat(65)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    // --- parsers ----------------------------------------------------------

    #[test]
    fn memory() {
        let good: &[(&str, i64)] = &[
            ("1024", 1024),
            ("1024b", 1024),
            ("100k", 102_400),
            ("100K", 102_400),
            ("512m", 512 << 20),
            ("512M", 512 << 20),
            ("512mb", 512 << 20),
            ("512MiB", 512 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1.5g", 3 << 29),
            ("0.5k", 512),
            ("2t", 2 << 40),
            (" 64 m", 64 << 20),
        ];
        for (s, want) in good {
            assert_eq!(parse_memory("--memory", s).unwrap(), *want, "{s}");
        }
        for s in [
            "",
            "0",
            "0m",
            "-1",
            "-5m",
            "abc",
            "m",
            "12x",
            "1.2.3m",
            "1.m",
            ".5m",
            "9999999999p",
            "1e3",
        ] {
            let e = parse_memory("--memory", s).unwrap_err().to_string();
            assert!(e.contains("--memory"), "{s}: {e}");
            assert!(e.contains("e.g.") || e.contains("too large"), "{s}: {e}");
        }
    }

    #[test]
    fn memory_swap() {
        assert_eq!(parse_memory_swap("-1", Some(1 << 20)).unwrap(), -1);
        assert_eq!(parse_memory_swap("1g", Some(512 << 20)).unwrap(), 1 << 30);
        assert_eq!(
            parse_memory_swap("512m", Some(512 << 20)).unwrap(),
            512 << 20
        );
        assert!(parse_memory_swap("256m", Some(512 << 20)).is_err());
        assert!(parse_memory_swap("1g", None)
            .unwrap_err()
            .to_string()
            .contains("--memory"));
        assert!(parse_memory_swap("nope", Some(1)).is_err());
    }

    #[test]
    fn cpus() {
        let good: &[(&str, i64)] = &[
            ("1", 100_000),
            ("1.5", 150_000),
            ("0.01", 1_000),
            (".5", 50_000),
            ("4", 400_000),
            ("4.0", 400_000),
            ("0.123456", 12_345),
        ];
        for (s, want) in good {
            assert_eq!(parse_cpus(s, 4).unwrap(), (*want, 100_000), "{s}");
        }
        for s in ["0", "0.0", "0.009", "4.01", "5", "99999999999999999999"] {
            let e = parse_cpus(s, 4).unwrap_err().to_string();
            assert!(e.contains("range of CPUs is from 0.01 to 4.00"), "{s}: {e}");
        }
        for s in ["", "abc", "-1", "1.", "1.2.3", "1,5", "."] {
            let e = parse_cpus(s, 4).unwrap_err().to_string();
            assert!(e.contains("--cpus") && e.contains("e.g. 1.5"), "{s}: {e}");
        }
        assert!(host_cpus() >= 1);
    }

    #[test]
    fn cpuset() {
        for ok in ["0", "0-3", "0,2", "0-1,4-7,9"] {
            assert_eq!(parse_cpuset(ok).unwrap(), ok);
        }
        for bad in ["", "a", "0-", "-1", "3-1", "0,,1", "1-2-3", "0 1", "99999"] {
            assert!(parse_cpuset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume("/host:/ctr").unwrap();
        assert_eq!(
            v,
            Volume {
                host: "/host".into(),
                container: "/ctr".into(),
                readonly: false
            }
        );
        assert!(parse_volume("/host:/ctr:ro").unwrap().readonly);
        assert!(!parse_volume("/host:/ctr:rw").unwrap().readonly);
        assert_eq!(
            parse_volume("/h:/a/./b/").unwrap().container,
            Path::new("/a/b")
        );
        for (bad, why) in [
            ("/host", "HOST:CONTAINER"),
            ("/h:/c:ro:x", "HOST:CONTAINER"),
            ("data:/c", "absolute"),
            ("/h:c", "absolute"),
            ("/h:/", "can't be '/'"),
            ("/h:/a/../b", ".."),
            ("/h:/c:rx", "unknown mode"),
            (":/c", "HOST:CONTAINER"),
        ] {
            let e = parse_volume(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let m = parse_volume("/h:/c:ro").unwrap().to_mount();
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert_eq!(m.options().clone().unwrap(), ["rbind", "ro"]);
    }

    #[test]
    fn tmpfs() {
        let t = parse_tmpfs("/run").unwrap();
        assert_eq!(t.options, ["noexec", "nosuid", "nodev"]);
        let t = parse_tmpfs("/run:size=64m,mode=1777,exec").unwrap();
        assert_eq!(
            t.options,
            ["nosuid", "nodev", "size=64m", "mode=1777", "exec"]
        );
        let t = parse_tmpfs("/run:size=1m,size=2m,ro").unwrap();
        assert_eq!(t.options, ["noexec", "nosuid", "nodev", "size=2m", "ro"]);
        for bad in [
            "run",
            "/",
            "/run:bogus",
            "/run:mode=999",
            "/run:size=",
            "/run:foo=1",
        ] {
            assert!(parse_tmpfs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_entries() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("A=1", Some(("A", "1"))),
            ("A=", Some(("A", ""))),
            ("A=b=c", Some(("A", "b=c"))),
            ("FROM_HOST", Some(("FROM_HOST", "hostval"))),
            ("UNSET_ON_HOST", None),
        ];
        for (s, want) in cases {
            let got = parse_env(s, &lookup).unwrap();
            let want = want.map(|(k, v)| (k.to_string(), v.to_string()));
            assert_eq!(got, want, "{s}");
        }
        for bad in ["", "=x", "A B=1", "A\0=1", "A=\0"] {
            assert!(parse_env(bad, &lookup).is_err(), "{bad:?}");
        }
        let f = parse_env_file("# c\n\n  A=1\nFROM_HOST\nNOPE\nB=x y\n", &lookup).unwrap();
        assert_eq!(
            f,
            [("A", "1"), ("FROM_HOST", "hostval"), ("B", "x y")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let e = parse_env_file("A=1\nBAD KEY=2\n", &lookup).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }

    #[test]
    fn workdirs() {
        assert_eq!(parse_workdir("/app").unwrap(), Path::new("/app"));
        assert_eq!(parse_workdir("/a/../b/./c/").unwrap(), Path::new("/b/c"));
        assert_eq!(parse_workdir("/..").unwrap(), Path::new("/"));
        for bad in ["", "app", "./app"] {
            assert!(parse_workdir(bad)
                .unwrap_err()
                .to_string()
                .contains("absolute"));
        }
    }

    #[test]
    fn ulimits() {
        let cases: &[(&str, PosixRlimitType, u64, u64)] = &[
            (
                "nofile=1024:2048",
                PosixRlimitType::RlimitNofile,
                1024,
                2048,
            ),
            ("nofile=1024", PosixRlimitType::RlimitNofile, 1024, 1024),
            ("nproc=-1", PosixRlimitType::RlimitNproc, u64::MAX, u64::MAX),
            ("core=0:unlimited", PosixRlimitType::RlimitCore, 0, u64::MAX),
            ("NOFILE=5", PosixRlimitType::RlimitNofile, 5, 5),
        ];
        for (s, typ, soft, hard) in cases {
            let r = parse_ulimit(s).unwrap();
            assert_eq!((r.typ(), r.soft(), r.hard()), (*typ, *soft, *hard), "{s}");
        }
        for bad in [
            "nofile",
            "bogus=1",
            "nofile=a",
            "nofile=2:1",
            "nofile=1:2:3",
            "nofile=",
        ] {
            assert!(parse_ulimit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn userns() {
        assert_eq!(parse_userns("auto").unwrap(), Some((100_000, 65_536)));
        assert_eq!(parse_userns("host").unwrap(), None);
        assert_eq!(parse_userns("200000:1000").unwrap(), Some((200_000, 1000)));
        for bad in ["", "x", "1", "1:0", "a:1", "1:b", "4294967295:2", "-1:5"] {
            assert!(parse_userns(bad).is_err(), "{bad:?}");
        }
    }

    // --- build_spec -------------------------------------------------------

    #[test]
    fn build_defaults() {
        let dir = rootfs();
        let s = build_ok(dir.path(), &["sh"]);
        let canon = std::fs::canonicalize(dir.path()).unwrap();
        let root = s.root().as_ref().unwrap();
        assert_eq!(root.path(), &canon);
        assert_eq!(root.readonly(), Some(false));
        assert_eq!(s.hostname().as_deref(), Some("0123456789ab"));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["sh"]);
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(
            p.env().as_ref().unwrap(),
            &[
                rspec::DEFAULT_PATH_ENV.to_string(),
                "HOME=/root".to_string()
            ]
        );
        assert_eq!(p.no_new_privileges(), Some(true));
        let l = s.linux().as_ref().unwrap();
        assert_eq!(
            l.cgroups_path().as_deref(),
            Some(Path::new("/cubby/0123456789abcdef"))
        );
        assert!(l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(l.uid_mappings().is_none());
        let r = l.resources().as_ref().unwrap();
        assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
        assert_eq!(s.mounts().as_ref().unwrap().len(), 7);
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
    }

    #[test]
    fn build_everything() {
        let dir = rootfs();
        let host = tempfile::tempdir().unwrap();
        let h = host.path().to_str().unwrap().to_string();
        let envf = host.path().join("env");
        std::fs::write(&envf, "FILE_VAR=1\nOVER=file\n").unwrap();
        let vol_ro = format!("{h}:/data:ro");
        let vol_rw = format!("{h}:/data/sub");
        let s = build_ok(
            dir.path(),
            &[
                "-it",
                "--hostname",
                "box",
                "-e",
                "OVER=flag",
                "-e",
                "FROM_HOST",
                "-e",
                "PATH=/bin",
                "--env-file",
                envf.to_str().unwrap(),
                "-w",
                "/tmp",
                "-u",
                "alice",
                "-v",
                &vol_rw,
                "-v",
                &vol_ro,
                "--tmpfs",
                "/dev/shm:size=1m",
                "--read-only",
                "--memory",
                "512m",
                "--memory-swap",
                "1g",
                "--cpus",
                "1.5",
                "--cpu-shares",
                "512",
                "--cpuset-cpus",
                "0-1",
                "--pids-limit",
                "100",
                "--network",
                "host",
                "--cap-add",
                "NET_ADMIN",
                "--cap-drop",
                "MKNOD",
                "--security-opt",
                "no-new-privileges=false",
                "--ulimit",
                "nofile=10:20",
                "--ulimit",
                "nproc=5",
                "--",
                "sh",
                "-c",
                "id",
            ],
        );
        assert_eq!(s.hostname().as_deref(), Some("box"));
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.args().as_ref().unwrap(), &["sh", "-c", "id"]);
        assert_eq!(
            p.env().as_ref().unwrap(),
            &[
                "PATH=/bin",
                "FILE_VAR=1",
                "OVER=flag",
                "FROM_HOST=hostval",
                "TERM=xterm",
                "HOME=/home/alice"
            ]
        );
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[10, 29][..]));
        assert_eq!(p.no_new_privileges(), Some(false));
        let rl: Vec<_> = p
            .rlimits()
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| (r.typ(), r.soft(), r.hard()))
            .collect();
        assert_eq!(
            rl,
            [
                (PosixRlimitType::RlimitNofile, 10, 20),
                (PosixRlimitType::RlimitNproc, 5, 5)
            ]
        );
        let caps = p.capabilities().as_ref().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.as_ref().unwrap();
            assert!(set.contains(&Capability::NetAdmin) && !set.contains(&Capability::Mknod));
        }

        let mounts = s.mounts().as_ref().unwrap();
        let dests: Vec<_> = mounts
            .iter()
            .map(|m| m.destination().to_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/data/sub",
                "/dev/shm"
            ]
        );
        let shm = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(
            shm.options().clone().unwrap(),
            ["noexec", "nosuid", "nodev", "size=1m"]
        );
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert_eq!(data.source().as_deref(), Some(host.path()));
        assert_eq!(data.options().clone().unwrap(), ["rbind", "ro"]);

        let l = s.linux().as_ref().unwrap();
        assert!(!l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
        let r = l.resources().as_ref().unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(512 << 20), Some(1 << 30)));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!(
            (c.quota(), c.period(), c.shares()),
            (Some(150_000), Some(100_000), Some(512))
        );
        assert_eq!(c.cpus().as_deref(), Some("0-1"));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
        assert!(r.devices().as_ref().unwrap().len() > 1);
    }

    #[test]
    fn build_userns() {
        let dir = rootfs();
        let s = build_ok(dir.path(), &["--userns", "auto", "-u", "1000", "true"]);
        let l = s.linux().as_ref().unwrap();
        assert!(l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User));
        for maps in [l.uid_mappings(), l.gid_mappings()] {
            let m = maps.as_ref().unwrap();
            assert_eq!(m.len(), 1);
            assert_eq!(
                (m[0].container_id(), m[0].host_id(), m[0].size()),
                (0, 100_000, 65_536)
            );
        }
        // /sys stays sysfs with a private network namespace...
        assert!(s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.typ().as_deref() == Some("sysfs")));
        // ...and becomes a bind mount with the host's.
        let s = build_ok(
            dir.path(),
            &["--userns", "200000:1", "--network", "host", "true"],
        );
        let mounts = s.mounts().as_ref().unwrap();
        let sys = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert_eq!(sys.typ().as_deref(), Some("bind"));
        let pts = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/pts"))
            .unwrap();
        assert!(!pts
            .options()
            .as_ref()
            .unwrap()
            .contains(&"gid=5".to_string()));
        let e = build_err(
            dir.path(),
            &["--userns", "200000:1000", "-u", "alice", "true"],
        );
        assert!(e.contains("not mapped"), "{e}");
        let s = build_ok(dir.path(), &["--userns", "host", "true"]);
        assert!(s.linux().as_ref().unwrap().uid_mappings().is_none());
        // Bridges, names and published ports are the daemon's.
        let e = build_err(dir.path(), &["--network", "bridge", "true"]);
        assert!(e.contains("needs the cubby daemon"), "{e}");
        let e = build_err(dir.path(), &["-p", "8080:80", "true"]);
        assert!(e.contains("need the cubby daemon"), "{e}");
    }

    #[test]
    fn build_seccomp_and_caps() {
        let dir = rootfs();
        let prof = dir.path().join("prof.json");
        std::fs::write(&prof, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
        let opt = format!("seccomp={}", prof.display());
        let s = build_ok(dir.path(), &["--security-opt", &opt, "true"]);
        assert!(s.linux().as_ref().unwrap().seccomp().is_some());
        let s = build_ok(
            dir.path(),
            &["--security-opt", "seccomp=unconfined", "true"],
        );
        assert!(s.linux().as_ref().unwrap().seccomp().is_none());
        std::fs::write(&prof, "{").unwrap();
        let e = build_err(dir.path(), &["--security-opt", &opt, "true"]);
        assert!(e.contains("prof.json"), "{e}");
        let s = build_ok(dir.path(), &["--cap-drop", "all", "true"]);
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert!(caps.bounding().as_ref().unwrap().is_empty());
    }

    #[test]
    fn build_errors() {
        let dir = rootfs();
        let file = dir.path().join("etc/passwd");
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["-w", "rel", "x"], "absolute"),
            (&["-u", "mallory", "x"], "unknown user"),
            (
                &["-v", "/definitely/not/here:/x", "x"],
                "/definitely/not/here does not exist",
            ),
            (&["-v", "rel:/x", "x"], "absolute"),
            (&["--memory", "lots", "x"], "--memory"),
            (&["--memory", "1m", "x"], "minimum"),
            (&["--memory-swap", "1g", "x"], "needs --memory"),
            (&["--cpus", "5", "x"], "range of CPUs is from 0.01 to 4.00"),
            (&["--cpuset-cpus", "3-1", "x"], "--cpuset-cpus"),
            (&["--cap-add", "FOO", "x"], "unknown capability"),
            (
                &["--security-opt", "apparmor=x", "x"],
                "does not support --security-opt apparmor=x",
            ),
            (&["--userns", "x", "x"], "--userns"),
            (&["--ulimit", "foo=1", "x"], "--ulimit"),
            (&["--hostname", "bad host", "x"], "--hostname"),
            (&["-e", "=x", "x"], "--env"),
            (&["--env-file", "/no/such/envfile", "x"], "/no/such/envfile"),
            (
                &["--tmpfs", "/a", "-v", "/:/a", "x"],
                "duplicate mount point /a",
            ),
        ];
        for (argv, want) in cases {
            let e = build_err(dir.path(), argv);
            assert!(e.contains(want), "{argv:?}: got {e:?}, want {want:?}");
        }
        // Rootfs problems name the path and say how to make one.
        let e = format!(
            "{:#}",
            build(&["--rootfs", "/no/such/rootfs", "x"]).unwrap_err()
        );
        assert!(
            e.contains("/no/such/rootfs") && e.contains("mk-busybox-rootfs.sh"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            build(&["--rootfs", file.to_str().unwrap(), "x"]).unwrap_err()
        );
        assert!(
            e.contains("not a directory") && e.contains("mk-busybox-rootfs.sh"),
            "{e}"
        );
    }

    #[test]
    fn build_rejects_bad_id() {
        let dir = rootfs();
        let args = parse(&["--rootfs", dir.path().to_str().unwrap(), "x"]);
        assert!(to_config(&args, "../evil", &lookup, 4).is_err());
    }

    /// Uses the real default spec: needs the capabilities and seccomp helpers.
    #[test]

    fn build_spec_real_defaults() {
        let dir = rootfs();
        let args = parse(&["--rootfs", dir.path().to_str().unwrap(), "true"]);
        let s = build_spec(&args, "abc").unwrap();
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let want: Capabilities = cubby_runtime::capabilities::default_set()
            .into_iter()
            .collect();
        assert_eq!(caps.bounding().as_ref(), Some(&want));
        assert!(s.linux().as_ref().unwrap().seccomp().is_some());
    }
}
