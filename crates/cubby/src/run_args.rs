//! `cubby run` options and their translation into an OCI spec.
//!
//! [`RunArgs`] is the clap definition (Docker's flag names); [`build_spec`]
//! starts from [`cubby_runtime::spec::default_spec`] and applies every flag.
//! Each flag's syntax is checked by a small `parse_*` function with its own
//! tests; errors name the flag and show an example.

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Args};
use cubby_runtime::spec as rspec;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCpuBuilder, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxSeccomp, Mount, PosixRlimit,
    PosixRlimitType, Spec,
};
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

    /// seccomp=unconfined, seccomp=PROFILE.json (OCI format) or no-new-privileges[=true|false]
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

/// The spec for `cubby run` with `args` as container `id`.
pub fn build_spec(args: &RunArgs, id: &str) -> Result<Spec> {
    let lookup = |k: &str| std::env::var(k).ok();
    build_spec_with(args, id, rspec::default_spec, &lookup, host_cpus())
}

/// [`build_spec`] with the base spec, the caller's environment and the host's
/// CPU count supplied (for tests).
fn build_spec_with(
    args: &RunArgs,
    id: &str,
    base: impl FnOnce(&Path, Vec<String>) -> Spec,
    lookup_env: &dyn Fn(&str) -> Option<String>,
    ncpus: usize,
) -> Result<Spec> {
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

    // Everything that can fail on user input is parsed before the base spec is built.
    let env_files = args
        .env_file
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--env-file {}: cannot read", f.display()))?;
            parse_env_file(&text, lookup_env).with_context(|| format!("--env-file {}", f.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let env_flags = args
        .env
        .iter()
        .map(|e| parse_env(e, lookup_env))
        .collect::<Result<Vec<_>>>()?;
    let workdir = args.workdir.as_deref().map(parse_workdir).transpose()?;
    let user_spec = args.user.as_deref().map(parse_user).transpose()?;
    let volumes = args
        .volume
        .iter()
        .map(|v| {
            let vol = parse_volume(v)?;
            if !vol.host.exists() {
                bail!(
                    "invalid --volume {v:?}: host path {} does not exist",
                    vol.host.display()
                );
            }
            Ok(vol)
        })
        .collect::<Result<Vec<_>>>()?;
    let tmpfs = args
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<Result<Vec<_>>>()?;
    let memory = args
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
    let swap = args
        .memory_swap
        .as_deref()
        .map(|s| parse_memory_swap(s, memory))
        .transpose()?;
    let cpu_quota = args
        .cpus
        .as_deref()
        .map(|c| parse_cpus(c, ncpus))
        .transpose()?;
    let cpuset = args.cpuset_cpus.as_deref().map(parse_cpuset).transpose()?;
    let ulimits = args
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<Vec<_>>>()?;
    let userns = args
        .userns
        .as_deref()
        .map(parse_userns)
        .transpose()?
        .flatten();
    let hostname = match &args.hostname {
        Some(h) => {
            validate_hostname(h)?;
            h.clone()
        }
        None => id.chars().take(12).collect(),
    };
    let mut seccomp_unconfined = false;
    let mut seccomp_profile = None;
    let mut no_new_privileges = true;
    for opt in &args.security_opt {
        match parse_security_opt(opt)? {
            SecurityOpt::SeccompUnconfined => seccomp_unconfined = true,
            SecurityOpt::SeccompProfile(path) => seccomp_profile = Some(load_seccomp(&path)?),
            SecurityOpt::NoNewPrivileges(v) => no_new_privileges = v,
        }
    }

    let mut spec = base(&rootfs, args.command.clone());

    // Root and hostname.
    if let Some(root) = spec.root().clone() {
        let mut root = root;
        root.set_readonly(Some(args.read_only));
        spec.set_root(Some(root));
    }
    spec.set_hostname(Some(hostname));

    // Process.
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or_else(|| anyhow!("internal: base spec has no process"))?;
    process.set_terminal(Some(args.tty));
    let mut env = process.env().clone().unwrap_or_default();
    let image_env = args.image_env.iter().filter_map(|e| {
        e.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    });
    for (k, v) in image_env {
        set_env(&mut env, &k, &v);
    }
    for (k, v) in env_files
        .into_iter()
        .flatten()
        .chain(env_flags.into_iter().flatten())
    {
        set_env(&mut env, &k, &v);
    }
    if args.tty && get_env(&env, "TERM").is_none() {
        set_env(&mut env, "TERM", "xterm");
    }
    if let Some(dir) = workdir {
        process.set_cwd(dir);
    }

    let passwd = read_in_rootfs(&rootfs, "etc/passwd");
    let group = read_in_rootfs(&rootfs, "etc/group");
    let user = match &user_spec {
        Some(u) => resolve_user(u, passwd.as_deref(), group.as_deref())
            .with_context(|| format!("invalid --user {:?}", args.user.as_deref().unwrap_or("")))?,
        None => resolve_user(
            &UserSpec {
                user: IdOrName::Id(0),
                group: None,
            },
            passwd.as_deref(),
            group.as_deref(),
        )?,
    };
    if get_env(&env, "HOME").is_none() {
        let home = user.home.clone().unwrap_or_else(|| "/".to_string());
        set_env(&mut env, "HOME", &home);
    }
    process.set_env(Some(env));
    {
        // Supplementary groups come from /etc/group, not from the caller: with a
        // user namespace keep only the mapped ones.
        let mut extra = user.additional_gids.clone();
        if let Some((_, count)) = userns {
            extra.retain(|g| *g < count);
        }
        let u = process.user_mut();
        u.set_uid(user.uid)
            .set_gid(user.gid)
            .set_additional_gids((!extra.is_empty()).then_some(extra));
    }

    let mut rlimits: Vec<PosixRlimit> = process.rlimits().clone().unwrap_or_default();
    for r in ulimits {
        rlimits.retain(|x| x.typ() != r.typ());
        rlimits.push(r);
    }
    process.set_rlimits(Some(rlimits));
    process.set_no_new_privileges(Some(no_new_privileges));

    if let Some(mut caps) = process.capabilities().clone() {
        let defaults = caps.bounding().clone().unwrap_or_default();
        let set = apply_capabilities(&defaults, &args.cap_add, &args.cap_drop)?;
        caps.set_bounding(Some(set.clone()))
            .set_effective(Some(set.clone()))
            .set_permitted(Some(set));
        process.set_capabilities(Some(caps));
    }

    // Mounts.
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut extra: Vec<Mount> = Vec::new();
    for v in &volumes {
        extra.push(v.to_mount());
    }
    for t in &tmpfs {
        extra.push(t.to_mount());
    }
    for (i, m) in extra.iter().enumerate() {
        if extra[..i]
            .iter()
            .any(|o| o.destination() == m.destination())
        {
            bail!(
                "duplicate mount point {}: give each --volume/--tmpfs its own destination",
                m.destination().display()
            );
        }
    }
    // A user mount replaces a default one at the same place (e.g. --tmpfs /dev/shm);
    // parents are mounted before their children.
    mounts.retain(|m| !extra.iter().any(|e| e.destination() == m.destination()));
    extra.sort_by_key(|m| m.destination().components().count());
    mounts.extend(extra);

    // Linux.
    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| anyhow!("internal: base spec has no linux section"))?;
    linux.set_cgroups_path(Some(PathBuf::from(format!("/cubby/{id}"))));

    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if network == "host" {
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    }
    if let Some((host_id, count)) = userns {
        let check = |what: &str, id: u32| -> Result<()> {
            if id >= count {
                bail!(
                    "{what} {id} is not mapped by --userns (container ids 0 to {})",
                    count - 1
                );
            }
            Ok(())
        };
        check("uid", user.uid)?;
        check("gid", user.gid)?;
        if !namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User)
        {
            namespaces.push(rspec::namespace(LinuxNamespaceType::User));
        }
        let mapping = id_mapping(host_id, count)?;
        linux
            .set_uid_mappings(Some(vec![mapping]))
            .set_gid_mappings(Some(vec![mapping]));
        adapt_mounts_for_userns(&mut mounts, count, network == "host");
    }
    linux.set_namespaces(Some(namespaces));

    if seccomp_unconfined {
        linux.set_seccomp(None);
    } else if let Some(profile) = seccomp_profile {
        linux.set_seccomp(Some(profile));
    }

    let mut resources = linux.resources().clone().unwrap_or_default();
    if memory.is_some() || swap.is_some() {
        let mut b = LinuxMemoryBuilder::default();
        if let Some(m) = memory {
            b = b.limit(m);
        }
        if let Some(s) = swap {
            b = b.swap(s);
        }
        resources.set_memory(Some(b.build()?));
    }
    if cpu_quota.is_some() || args.cpu_shares.is_some() || cpuset.is_some() {
        let mut b = LinuxCpuBuilder::default();
        if let Some((quota, period)) = cpu_quota {
            b = b.quota(quota).period(period);
        }
        if let Some(s) = args.cpu_shares {
            b = b.shares(s);
        }
        if let Some(c) = cpuset {
            b = b.cpus(c);
        }
        resources.set_cpu(Some(b.build()?));
    }
    if let Some(n) = args.pids_limit.filter(|n| *n > 0) {
        resources.set_pids(Some(LinuxPidsBuilder::default().limit(n).build()?));
    }
    linux.set_resources(Some(resources));

    spec.set_mounts(Some(mounts));
    Ok(spec)
}

// ---------------------------------------------------------------------------
// Names and ids.

/// Checks a container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if !ok {
        bail!(
            "invalid container name {name:?}: use up to 128 letters, digits, '_', '.' and '-', starting with a letter or digit, e.g. web-1"
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

/// Reads `rel` inside `rootfs`, resolving symlinks as if `rootfs` were `/`.
/// `None` if it does not exist or cannot be read.
fn read_in_rootfs(rootfs: &Path, rel: &str) -> Option<String> {
    let mut pending: Vec<std::ffi::OsString> = Path::new(rel)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut current = PathBuf::new(); // relative to rootfs
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        if part == "." {
            continue;
        }
        let candidate = current.join(&part);
        let full = rootfs.join(&candidate);
        let meta = std::fs::symlink_metadata(&full).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&full).ok()?;
            if target.is_absolute() {
                current = PathBuf::new();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(n.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            current = candidate;
        }
    }
    std::fs::read_to_string(rootfs.join(current)).ok()
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

fn get_env<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// Sets `key=value` in `env`, replacing an existing entry in place.
fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
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

/// A user or group, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

/// The parsed `-u` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: IdOrName,
    pub group: Option<IdOrName>,
}

/// The user the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
}

fn id_or_name(s: &str, what: &str) -> Result<IdOrName> {
    if s.is_empty() {
        bail!("empty {what}: use UID[:GID] or NAME[:GROUP], e.g. 1000:1000 or nobody");
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u32>()
            .map(IdOrName::Id)
            .map_err(|_| anyhow!("{what} {s} is too large (maximum {})", u32::MAX));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c == ':' || c == '/' || c == '\0' || c == ',')
    {
        bail!("invalid {what} name {s:?}");
    }
    Ok(IdOrName::Name(s.to_string()))
}

/// Parses `-u UID[:GID]` / `NAME[:GROUP]` (no lookup).
pub fn parse_user(s: &str) -> Result<UserSpec> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let parsed = (|| -> Result<UserSpec> {
        Ok(UserSpec {
            user: id_or_name(user, "user")?,
            group: group.map(|g| id_or_name(g, "group")).transpose()?,
        })
    })();
    parsed.with_context(|| format!("invalid --user {s:?}"))
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let uid = f.next()?.trim().parse().ok()?;
        let gid = f.next()?.trim().parse().ok()?;
        let _gecos = f.next();
        let home = f.next().unwrap_or("");
        (!name.is_empty() && !name.starts_with('#')).then_some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let gid = f.next()?.trim().parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        (!name.is_empty() && !name.starts_with('#')).then_some(GroupEntry { name, gid, members })
    })
}

/// Resolves a `-u` value with the rootfs's `/etc/passwd` and `/etc/group`
/// contents (`None`: the file is missing). Like Docker: a user without a
/// group gets its primary group from passwd (0 if not listed) and its
/// supplementary groups from /etc/group.
pub fn resolve_user(
    spec: &UserSpec,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser> {
    let entry = match &spec.user {
        IdOrName::Id(uid) => passwd.and_then(|p| passwd_entries(p).find(|e| e.uid == *uid)),
        IdOrName::Name(name) => {
            let p = passwd.ok_or_else(|| {
                anyhow!("unknown user {name:?}: the rootfs has no /etc/passwd; use a numeric UID")
            })?;
            Some(passwd_entries(p).find(|e| e.name == name).ok_or_else(|| {
                anyhow!("unknown user {name:?}: no such entry in the rootfs's /etc/passwd")
            })?)
        }
    };
    let uid = match (&spec.user, &entry) {
        (IdOrName::Id(uid), _) => *uid,
        (IdOrName::Name(_), Some(e)) => e.uid,
        (IdOrName::Name(name), None) => bail!("unknown user {name:?}"),
    };
    let home = entry
        .as_ref()
        .map(|e| e.home.to_string())
        .filter(|h| !h.is_empty());
    let (gid, additional_gids) = match &spec.group {
        Some(IdOrName::Id(gid)) => (*gid, Vec::new()),
        Some(IdOrName::Name(name)) => {
            let g = group.ok_or_else(|| {
                anyhow!("unknown group {name:?}: the rootfs has no /etc/group; use a numeric GID")
            })?;
            let gid = group_entries(g)
                .find(|e| e.name == name)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    anyhow!("unknown group {name:?}: no such entry in the rootfs's /etc/group")
                })?;
            (gid, Vec::new())
        }
        None => {
            let gid = entry.as_ref().map(|e| e.gid).unwrap_or(0);
            let mut extra = Vec::new();
            if let (Some(e), Some(g)) = (&entry, group) {
                for ge in group_entries(g) {
                    if ge.gid != gid && ge.members.contains(&e.name) && !extra.contains(&ge.gid) {
                        extra.push(ge.gid);
                    }
                }
            }
            (gid, extra)
        }
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
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

/// Changes mounts that a user namespace cannot make: sysfs needs a network
/// namespace owned by the user namespace (so with `--network host` /sys is
/// bind-mounted), and devpts' `gid=5` needs gid 5 mapped.
fn adapt_mounts_for_userns(mounts: &mut [Mount], count: u32, host_network: bool) {
    for m in mounts.iter_mut() {
        if host_network && m.typ().as_deref() == Some("sysfs") {
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
    let bad = |why: &str| anyhow!("invalid --cpuset-cpus {s:?}: {why}; e.g. 0-3 or 0,2");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty list"));
    }
    let num = |x: &str| -> Result<u32> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("{x:?} is not a CPU number")));
        }
        x.parse::<u32>()
            .ok()
            .filter(|n| *n < 8192)
            .ok_or_else(|| bad(&format!("CPU {x} is too large")))
    };
    for item in t.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(&format!("range {item} is backwards")));
                }
            }
            None => {
                num(item)?;
            }
        }
    }
    Ok(t.to_string())
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

const ULIMITS: &[(&str, PosixRlimitType)] = &[
    ("as", PosixRlimitType::RlimitAs),
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// Parses `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT; `-1` or
/// `unlimited` for no limit), e.g. `nofile=1024:2048`.
pub fn parse_ulimit(s: &str) -> Result<PosixRlimit> {
    let example = "e.g. --ulimit nofile=1024:2048";
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid --ulimit {s:?}: use NAME=SOFT[:HARD], {example}"))?;
    let typ = ULIMITS
        .iter()
        .find(|(n, _)| *n == name.trim().to_ascii_lowercase())
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = ULIMITS.iter().map(|(n, _)| *n).collect();
            anyhow!(
                "invalid --ulimit {s:?}: unknown limit {name:?}; known: {}",
                names.join(", ")
            )
        })?;
    let value = |v: &str| -> Result<u64> {
        match v.trim() {
            "-1" | "unlimited" => Ok(u64::MAX),
            x => x
                .parse::<u64>()
                .map_err(|_| anyhow!("invalid --ulimit {s:?}: {x:?} is not a number, {example}")),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((a, b)) => (value(a)?, value(b)?),
        None => {
            let v = value(values)?;
            (v, v)
        }
    };
    if soft > hard {
        bail!("invalid --ulimit {s:?}: the soft limit is above the hard limit");
    }
    Ok(rspec::rlimit(typ, soft, hard))
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

fn id_mapping(host_id: u32, size: u32) -> Result<LinuxIdMapping> {
    Ok(LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_id)
        .size(size)
        .build()?)
}

// ---------------------------------------------------------------------------
// Capabilities and security options.

/// Every capability with its number (for `ALL`, limited to what the kernel knows).
const CAPABILITIES: &[(&str, u32, Capability)] = &[
    ("CHOWN", 0, Capability::Chown),
    ("DAC_OVERRIDE", 1, Capability::DacOverride),
    ("DAC_READ_SEARCH", 2, Capability::DacReadSearch),
    ("FOWNER", 3, Capability::Fowner),
    ("FSETID", 4, Capability::Fsetid),
    ("KILL", 5, Capability::Kill),
    ("SETGID", 6, Capability::Setgid),
    ("SETUID", 7, Capability::Setuid),
    ("SETPCAP", 8, Capability::Setpcap),
    ("LINUX_IMMUTABLE", 9, Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", 10, Capability::NetBindService),
    ("NET_BROADCAST", 11, Capability::NetBroadcast),
    ("NET_ADMIN", 12, Capability::NetAdmin),
    ("NET_RAW", 13, Capability::NetRaw),
    ("IPC_LOCK", 14, Capability::IpcLock),
    ("IPC_OWNER", 15, Capability::IpcOwner),
    ("SYS_MODULE", 16, Capability::SysModule),
    ("SYS_RAWIO", 17, Capability::SysRawio),
    ("SYS_CHROOT", 18, Capability::SysChroot),
    ("SYS_PTRACE", 19, Capability::SysPtrace),
    ("SYS_PACCT", 20, Capability::SysPacct),
    ("SYS_ADMIN", 21, Capability::SysAdmin),
    ("SYS_BOOT", 22, Capability::SysBoot),
    ("SYS_NICE", 23, Capability::SysNice),
    ("SYS_RESOURCE", 24, Capability::SysResource),
    ("SYS_TIME", 25, Capability::SysTime),
    ("SYS_TTY_CONFIG", 26, Capability::SysTtyConfig),
    ("MKNOD", 27, Capability::Mknod),
    ("LEASE", 28, Capability::Lease),
    ("AUDIT_WRITE", 29, Capability::AuditWrite),
    ("AUDIT_CONTROL", 30, Capability::AuditControl),
    ("SETFCAP", 31, Capability::Setfcap),
    ("MAC_OVERRIDE", 32, Capability::MacOverride),
    ("MAC_ADMIN", 33, Capability::MacAdmin),
    ("SYSLOG", 34, Capability::Syslog),
    ("WAKE_ALARM", 35, Capability::WakeAlarm),
    ("BLOCK_SUSPEND", 36, Capability::BlockSuspend),
    ("AUDIT_READ", 37, Capability::AuditRead),
    ("PERFMON", 38, Capability::Perfmon),
    ("BPF", 39, Capability::Bpf),
    ("CHECKPOINT_RESTORE", 40, Capability::CheckpointRestore),
];

/// Parses a capability name, with or without `CAP_`, any case; `None` for `ALL`.
pub fn parse_capability(s: &str) -> Result<Option<Capability>> {
    let upper = s.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if name == "ALL" {
        return Ok(None);
    }
    CAPABILITIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, c)| Some(*c))
        .ok_or_else(|| {
            anyhow!("unknown capability {s:?}: use a name like NET_ADMIN or CAP_NET_ADMIN, or ALL")
        })
}

/// Every capability the running kernel knows (all of them if that cannot be read).
pub fn all_capabilities() -> Capabilities {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX);
    CAPABILITIES
        .iter()
        .filter(|(_, n, _)| *n <= last)
        .map(|(_, _, c)| *c)
        .collect()
}

/// Docker's rules: `--cap-add ALL` gives every capability except the dropped
/// ones; otherwise the defaults (none with `--cap-drop ALL`) minus the dropped
/// ones, plus the added ones (adding wins over dropping).
pub fn apply_capabilities(
    defaults: &Capabilities,
    add: &[String],
    drop: &[String],
) -> Result<Capabilities> {
    let parse_all = |names: &[String], flag: &str| -> Result<(bool, Vec<Capability>)> {
        let mut all = false;
        let mut caps = Vec::new();
        for n in names {
            match parse_capability(n).with_context(|| format!("invalid {flag} {n:?}"))? {
                None => all = true,
                Some(c) => caps.push(c),
            }
        }
        Ok((all, caps))
    };
    let (add_all, adds) = parse_all(add, "--cap-add")?;
    let (drop_all, drops) = parse_all(drop, "--cap-drop")?;
    if add_all {
        return Ok(all_capabilities()
            .into_iter()
            .filter(|c| !drops.contains(c))
            .collect());
    }
    let mut set: Capabilities = if drop_all {
        Capabilities::new()
    } else {
        defaults
            .iter()
            .filter(|c| !drops.contains(c))
            .copied()
            .collect()
    };
    set.extend(adds);
    Ok(set)
}

/// A parsed `--security-opt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    SeccompUnconfined,
    /// A seccomp profile file in the OCI `linux.seccomp` format.
    SeccompProfile(PathBuf),
    NoNewPrivileges(bool),
}

/// Parses `--security-opt` (`=` or the older `:` separator).
pub fn parse_security_opt(s: &str) -> Result<SecurityOpt> {
    let (key, value) = match s.split_once(['=', ':']) {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    match (key, value) {
        ("seccomp", Some("unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
        ("seccomp", Some(path)) if !path.is_empty() => {
            Ok(SecurityOpt::SeccompProfile(PathBuf::from(path)))
        }
        ("no-new-privileges", None) => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", Some(v)) => match v {
            "true" => Ok(SecurityOpt::NoNewPrivileges(true)),
            "false" => Ok(SecurityOpt::NoNewPrivileges(false)),
            _ => bail!("invalid --security-opt {s:?}: no-new-privileges takes true or false"),
        },
        _ => bail!(
            "unsupported --security-opt {s:?}: use seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges[=true|false]"
        ),
    }
}

fn load_seccomp(path: &Path) -> Result<LinuxSeccomp> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--security-opt seccomp={}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "--security-opt seccomp={}: not an OCI linux.seccomp profile",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashSet;

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
        let base = |root: &Path, cmd: Vec<String>| {
            rspec::spec_with(root, cmd, cubby_runtime::capabilities::default_set(), None)
        };
        build_spec_with(&args, "0123456789abcdef", base, &lookup, 4)
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
        for ok in ["a", "web-1", "A.b_c-9", "0abc"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
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
    fn users() {
        use IdOrName::*;
        let cases: &[(&str, UserSpec)] = &[
            (
                "0",
                UserSpec {
                    user: Id(0),
                    group: None,
                },
            ),
            (
                "1000:100",
                UserSpec {
                    user: Id(1000),
                    group: Some(Id(100)),
                },
            ),
            (
                "alice",
                UserSpec {
                    user: Name("alice".into()),
                    group: None,
                },
            ),
            (
                "alice:wheel",
                UserSpec {
                    user: Name("alice".into()),
                    group: Some(Name("wheel".into())),
                },
            ),
            (
                "1000:wheel",
                UserSpec {
                    user: Id(1000),
                    group: Some(Name("wheel".into())),
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(&parse_user(s).unwrap(), want, "{s}");
        }
        for bad in ["", ":", "1000:", ":1000", "4294967296", "a b", "a:b:c"] {
            assert!(parse_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_resolution() {
        let dir = rootfs();
        let passwd = std::fs::read_to_string(dir.path().join("etc/passwd")).unwrap();
        let group = std::fs::read_to_string(dir.path().join("etc/group")).unwrap();
        let r = |s: &str| resolve_user(&parse_user(s).unwrap(), Some(&passwd), Some(&group));
        let u = r("alice").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, [10, 29]);
        assert_eq!(u.home.as_deref(), Some("/home/alice"));
        let u = r("alice:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        assert!(u.additional_gids.is_empty());
        let u = r("1000").unwrap(); // numeric, listed: primary group from passwd
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = r("4242").unwrap(); // numeric, not listed: gid 0
        assert_eq!((u.uid, u.gid, u.home), (4242, 0, None));
        let u = r("4242:7").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 7));
        assert!(r("mallory")
            .unwrap_err()
            .to_string()
            .contains("unknown user \"mallory\""));
        assert!(r("alice:staff")
            .unwrap_err()
            .to_string()
            .contains("unknown group \"staff\""));
        // No passwd file: numbers work, names do not.
        let spec = parse_user("5:5").unwrap();
        assert_eq!(resolve_user(&spec, None, None).unwrap().uid, 5);
        let spec = parse_user("alice").unwrap();
        assert!(resolve_user(&spec, None, None)
            .unwrap_err()
            .to_string()
            .contains("no /etc/passwd"));
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

    #[test]
    fn capability_names() {
        assert_eq!(
            parse_capability("NET_ADMIN").unwrap(),
            Some(Capability::NetAdmin)
        );
        assert_eq!(
            parse_capability("cap_net_admin").unwrap(),
            Some(Capability::NetAdmin)
        );
        assert_eq!(
            parse_capability("Sys_Admin").unwrap(),
            Some(Capability::SysAdmin)
        );
        assert_eq!(parse_capability("all").unwrap(), None);
        assert_eq!(parse_capability("CAP_ALL").unwrap(), None);
        assert!(parse_capability("CAP_FOO").is_err());
        assert!(parse_capability("").is_err());
        // The table agrees with oci-spec's names.
        for (name, _, cap) in CAPABILITIES {
            assert_eq!(cap.to_string(), *name);
        }
        assert_eq!(CAPABILITIES.len(), 41);
    }

    #[test]
    fn capability_rules() {
        let defaults: Capabilities = cubby_runtime::capabilities::default_set()
            .into_iter()
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let got =
            apply_capabilities(&defaults, &s(&["NET_ADMIN"]), &s(&["chown", "CAP_KILL"])).unwrap();
        assert!(got.contains(&Capability::NetAdmin));
        assert!(!got.contains(&Capability::Chown) && !got.contains(&Capability::Kill));
        assert_eq!(got.len(), defaults.len() - 1);
        let got = apply_capabilities(&defaults, &s(&["NET_BIND_SERVICE"]), &s(&["ALL"])).unwrap();
        assert_eq!(got, HashSet::from([Capability::NetBindService]));
        let got = apply_capabilities(&defaults, &s(&["ALL"]), &s(&["SYS_ADMIN"])).unwrap();
        assert!(got.contains(&Capability::SysModule) && !got.contains(&Capability::SysAdmin));
        // Adding wins over dropping.
        let got = apply_capabilities(&defaults, &s(&["KILL"]), &s(&["KILL"])).unwrap();
        assert!(got.contains(&Capability::Kill));
        assert!(apply_capabilities(&defaults, &s(&["NOPE"]), &[])
            .unwrap_err()
            .to_string()
            .contains("--cap-add"));
    }

    #[test]
    fn security_opts() {
        let cases: &[(&str, SecurityOpt)] = &[
            ("seccomp=unconfined", SecurityOpt::SeccompUnconfined),
            ("seccomp:unconfined", SecurityOpt::SeccompUnconfined),
            (
                "seccomp=/p.json",
                SecurityOpt::SeccompProfile("/p.json".into()),
            ),
            ("no-new-privileges", SecurityOpt::NoNewPrivileges(true)),
            (
                "no-new-privileges=false",
                SecurityOpt::NoNewPrivileges(false),
            ),
            ("no-new-privileges:true", SecurityOpt::NoNewPrivileges(true)),
        ];
        for (s, want) in cases {
            assert_eq!(&parse_security_opt(s).unwrap(), want, "{s}");
        }
        for bad in [
            "",
            "seccomp",
            "seccomp=",
            "apparmor=x",
            "label=disable",
            "no-new-privileges=maybe",
        ] {
            assert!(parse_security_opt(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rootfs_reading_follows_symlinks_inside() {
        let dir = rootfs();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/etc")).unwrap();
        std::fs::write(root.join("usr/etc/group2"), "g:x:7:\n").unwrap();
        std::os::unix::fs::symlink("/usr/etc/group2", root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../usr/etc/group2", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("../../../../../../usr/etc/group2", root.join("etc/esc"))
            .unwrap();
        std::os::unix::fs::symlink("loop", root.join("etc/loop")).unwrap();
        assert_eq!(read_in_rootfs(root, "etc/abs").as_deref(), Some("g:x:7:\n"));
        assert_eq!(read_in_rootfs(root, "etc/rel").as_deref(), Some("g:x:7:\n"));
        assert_eq!(read_in_rootfs(root, "etc/esc").as_deref(), Some("g:x:7:\n"));
        assert_eq!(read_in_rootfs(root, "etc/loop"), None);
        assert_eq!(read_in_rootfs(root, "etc/missing"), None);
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
                "unsupported --security-opt",
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
        let base = |root: &Path, cmd: Vec<String>| {
            rspec::spec_with(root, cmd, cubby_runtime::capabilities::default_set(), None)
        };
        assert!(build_spec_with(&args, "../evil", base, &lookup, 4).is_err());
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
