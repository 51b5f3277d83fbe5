//! What the user asked for, typed and free of HTTP: [`ContainerConfig`],
//! and the one builder that turns it into an OCI spec ([`build`]).
//!
//! Every way of making a container goes through here: standalone `cubby
//! run` (its flags become a `ContainerConfig` in `run_args.rs`), the Docker
//! API's create (the body becomes one in [`docker`]) and so the remote CLI.
//! The builder is a list of small steps over the spec ([`steps`]), each
//! owning one concern (process, user, resources, security, devices, user
//! namespace, mounts), in the manner of containerd's `SpecOpts`.

pub mod parse;
pub mod seccomp;
pub mod steps;
pub mod storage;

use oci_spec::runtime::{Capability, LinuxSeccomp, Mount, PosixRlimit, Spec};
use std::path::{Path, PathBuf};

/// An option that cannot be applied: invalid, or not supported at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value cubby understands but cannot use as given.
    #[error("{0}")]
    Invalid(String),
    /// An option cubby does not implement; the name is the option's
    /// (`HostConfig.X` through the API, the flag on the CLI).
    #[error("cubby does not support {option}{}", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    Unsupported {
        option: String,
        hint: Option<String>,
    },
    /// A refusal worded in full by the caller (Docker's own message).
    #[error("{0}")]
    Refused(String),
    /// Something the option names does not exist (a volume plugin).
    #[error("{0}")]
    NotFound(String),
}

impl ConfigError {
    pub fn invalid(msg: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(msg.into())
    }
    pub fn unsupported(option: impl Into<String>) -> ConfigError {
        ConfigError::Unsupported {
            option: option.into(),
            hint: None,
        }
    }
    pub fn unsupported_because(option: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::Unsupported {
            option: option.into(),
            hint: Some(hint.into()),
        }
    }
}

pub type ConfigResult<T> = std::result::Result<T, ConfigError>;

/// Everything that shapes a container's spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    /// The command (entrypoint and arguments already resolved).
    pub command: Vec<String>,
    /// `KEY=VALUE` from the image, below [`ContainerConfig::env`].
    pub image_env: Vec<String>,
    /// `KEY=VALUE` the user set; later entries win.
    pub env: Vec<String>,
    /// Absolute working directory; `/` when unset.
    pub workdir: Option<PathBuf>,
    /// `user[:group]`, by number or name; root when unset.
    pub user: Option<String>,
    /// The hostname; the caller supplies the default (the id's first 12).
    pub hostname: Option<String>,
    pub tty: bool,
    /// Run cubby's init as PID 1 (reaps zombies, forwards signals).
    pub init: bool,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    pub resources: Resources,
    pub security: Security,
    pub ulimits: Vec<PosixRlimit>,
    pub devices: Vec<DeviceMapping>,
    /// `/dev/shm` size in bytes (Docker's ShmSize); the default tmpfs size when unset.
    pub shm_size: Option<i64>,
    /// Map container ids 0..count to host ids `host..host+count`.
    pub userns: Option<(u32, u32)>,
    /// The network: an own netns (default network, none, a named network)
    /// or the host's.
    pub network: NetworkMode,
    /// Extra mounts (binds, tmpfs), each replacing a default one at the
    /// same destination.
    pub mounts: Vec<Mount>,
    /// Binds, volumes and tmpfs the engine makes real at create (volumes
    /// created and filled, `-v` sources made); [`build`] leaves them to it.
    pub storage: Vec<storage::MountRequest>,
    /// Per network (the primary one included, under its name): aliases
    /// and a static address.
    pub endpoints: std::collections::BTreeMap<String, Endpoint>,
    /// Published ports (`-p`).
    pub ports: Vec<PublishedPort>,
    /// `linux.cgroupsPath`.
    pub cgroup_path: Option<PathBuf>,
    /// What the monitor does when the container exits.
    pub restart: crate::records::RestartPolicy,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    pub labels: std::collections::BTreeMap<String, String>,
    /// json-file log rotation.
    pub log: crate::logs::LogOptions,
}

/// What the image contributes to a container: its command (already
/// combined with the caller's entrypoint and arguments by Docker's rules),
/// environment, working directory and user.
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// A working directory must be absolute.
pub fn check_workdir(wd: &str) -> ConfigResult<()> {
    if wd.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::invalid(format!(
            "the working directory {wd:?} is not absolute"
        )))
    }
}

impl ContainerConfig {
    /// Completes a config made before its image was known: the command and
    /// the image's environment, and the working directory (else `/`) and
    /// user where the caller set none.
    pub fn complete_from_image(&mut self, image: ImageDefaults) -> ConfigResult<()> {
        self.command = image.command;
        self.image_env = image.env;
        if self.workdir.is_none() {
            let wd = image
                .workdir
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into());
            check_workdir(&wd)?;
            self.workdir = Some(PathBuf::from(wd));
        }
        if self.user.is_none() {
            self.user = image.user.filter(|u| !u.is_empty());
        }
        Ok(())
    }
}

/// `--network` / `HostConfig.NetworkMode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The daemon's default network (an isolated netns if it has none).
    #[default]
    Default,
    /// An own netns with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// A network made with `docker network create` (or `bridge`).
    Named(String),
}

impl NetworkMode {
    /// Docker's spelling: `""`/`default`, `none`, `host`, a name;
    /// `container:NAME` is refused by name.
    pub fn parse(mode: &str) -> ConfigResult<NetworkMode> {
        Ok(match mode {
            "" | "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            m if m.starts_with("container:") => {
                return Err(ConfigError::unsupported_because(
                    "network mode container:NAME",
                    "give the container its own network",
                ))
            }
            m => NetworkMode::Named(m.to_string()),
        })
    }
}

/// A container's settings on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub aliases: Vec<String>,
    /// A static IPv4 address (`--ip`).
    pub ip: Option<std::net::Ipv4Addr>,
}

/// `-p [IP:][HOST:]CTR[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// `tcp` or `udp`.
    pub proto: String,
    /// None: every host address.
    pub host_ip: Option<std::net::Ipv4Addr>,
    /// None: a free port the engine picks at create.
    pub host_port: Option<u16>,
    pub port: u16,
}

impl ContainerConfig {
    pub fn host_network(&self) -> bool {
        self.network == NetworkMode::Host
    }
}

/// cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory: Option<i64>,
    /// Memory plus swap; -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Most processes; -1 is unlimited.
    pub pids_limit: Option<i64>,
}

/// Seccomp choice.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seccomp {
    /// cubby's default profile (Docker's).
    #[default]
    Default,
    Unconfined,
    Profile(Box<LinuxSeccomp>),
}

/// Capabilities and the other security knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    pub cap_add: Vec<Capability>,
    pub cap_add_all: bool,
    pub cap_drop: Vec<Capability>,
    pub cap_drop_all: bool,
    /// Every capability, no seccomp, no masked or read-only paths, every
    /// host device, a writable /sys.
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            cap_add: Vec::new(),
            cap_add_all: false,
            cap_drop: Vec::new(),
            cap_drop_all: false,
            privileged: false,
            // cubby's default (stricter than Docker's); `no-new-privileges=false` turns it off.
            no_new_privileges: true,
            seccomp: Seccomp::Default,
        }
    }
}

/// A host device made available in the container (`--device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    pub host: PathBuf,
    pub container: PathBuf,
    /// Some of `r`, `w`, `m`.
    pub permissions: String,
}

/// The spec for `cfg` on the root filesystem at `rootfs`: cubby's defaults
/// ([`cubby_runtime::spec::default_spec`]) and then each step.
pub fn build(cfg: &ContainerConfig, rootfs: &Path) -> ConfigResult<Spec> {
    let mut spec = cubby_runtime::spec::default_spec(rootfs, cfg.command.clone());
    let user = steps::resolve_user(cfg, rootfs)?;
    steps::process(cfg, &user, &mut spec)?;
    steps::resources(cfg, &mut spec)?;
    steps::security(cfg, &mut spec)?;
    steps::devices(cfg, &mut spec)?;
    steps::mounts(cfg, &mut spec)?;
    steps::userns(cfg, &user, &mut spec)?;
    Ok(spec)
}
