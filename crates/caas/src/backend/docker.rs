//! [`Backend`] over any Docker Engine API (cubby's engine, dockerd, podman's
//! API service) through bollard. See docs/caas-backend.md for the choices.
//!
//! Every sandbox gets the same hardening, whatever the template says: the
//! template's non-root user, all capabilities dropped, no_new_privs, the
//! engine's default seccomp profile, a read-only root filesystem with a small
//! tmpfs `/tmp`, memory without swap past the limit, CPU and pids limits, no
//! restart. The student's work lives on a labelled named volume.

/// The client crate, for callers that need more than the trait (tests,
/// tools), at the exact version the backend speaks.
pub use bollard;

use super::{
    Backend, BackendError, ClassNetwork, ExecOutput, NetworkPolicy, SandboxEvent, SandboxInfo,
    SandboxSpec, SandboxStatus, Terminal, LABEL_MANAGED,
};
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EventMessage,
    HostConfig, Ipam, IpamConfig, Mount, MountTypeEnum, MountVolumeOptions, NetworkConnectRequest,
    NetworkCreateRequest, NetworkDisconnectRequest, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, RemoveContainerOptions, RemoveVolumeOptions, RenameContainerOptions,
    StartContainerOptions, StatsOptions, StopContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The network option of cubby's engine that keeps containers away from the
/// host's own addresses (the engine's `ISOLATE_HOST_OPTION`; caas does not
/// link the engine, so the name is repeated here and checked by the tests).
pub const ISOLATE_HOST_OPTION: &str = "cubby.isolate_host";

/// The endpoint used when neither the caller nor `DOCKER_HOST` names one.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/cubby/cubby.sock";

/// The tmpfs mounted at `/tmp` (the root filesystem is read-only). Its pages
/// are charged to the sandbox's memory limit, so the size is only a cap.
const TMP_TMPFS: &str = "rw,nosuid,nodev,size=64m,mode=1777";

/// Per-request timeout for answers (not for streams such as events).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How a sandbox is kept from the host's own addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIsolation {
    /// The engine does it: cubby's engine with the `cubby.isolate_host`
    /// network option.
    Engine,
    /// The operator has installed firewall rules that do it (dockerd,
    /// podman: see docs/caas-backend.md); the option is not sent.
    Operator,
}

/// The IPv4 range that class networks bigger than a /24 are carved from
/// (`cubby serve --class-subnets`): each gets an explicit subnet (Docker's
/// IPAM config, which every engine honours) of the prefix length it needs,
/// the first one of the range that no existing network overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetRange {
    base: u32,
    prefix: u8,
}

impl SubnetRange {
    /// 10.176.0.0-10.191.255.255: beside cubby's engine's own pool
    /// (10.231.0.0/16) and dockerd's defaults (172.17-31.0.0/16,
    /// 192.168.0.0/16); room for 16 /16s.
    pub const DEFAULT: &'static str = "10.176.0.0/12";

    /// The aligned blocks of this prefix length inside the range.
    fn blocks(&self, prefix: u8) -> impl Iterator<Item = (u32, u8)> + '_ {
        let count = if prefix >= self.prefix {
            1u64 << (prefix - self.prefix)
        } else {
            0
        };
        (0..count).map(move |i| (self.base + ((i as u32) << (32 - prefix)), prefix))
    }
}

impl std::str::FromStr for SubnetRange {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        let (base, prefix) = parse_cidr(s).ok_or_else(|| {
            BackendError::Invalid(format!(
                "class subnet range {s:?}: expected an IPv4 CIDR such as {}",
                Self::DEFAULT
            ))
        })?;
        if !(8..=24).contains(&prefix) {
            return Err(BackendError::Invalid(format!(
                "class subnet range {s}: use a prefix between /8 and /24"
            )));
        }
        Ok(SubnetRange {
            base: base & mask(prefix),
            prefix,
        })
    }
}

impl std::fmt::Display for SubnetRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", cidr((self.base, self.prefix)))
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (a, p) = s.trim().split_once('/')?;
    let a: std::net::Ipv4Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    Some((u32::from(a) & mask(p), p))
}

fn cidr((base, prefix): (u32, u8)) -> String {
    format!("{}/{prefix}", std::net::Ipv4Addr::from(base))
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    a.0 & m == b.0 & m
}

/// Sandboxes a subnet of this prefix length holds (network, broadcast and
/// gateway addresses aside).
fn room(prefix: u8) -> u64 {
    (1u64 << (32 - u32::from(prefix.min(30)))) - 3
}

/// The longest prefix (from /24 to /16) whose subnet holds `hosts`.
fn prefix_for(hosts: u32) -> Option<u8> {
    (16..=24u8).rev().find(|p| room(*p) >= u64::from(hosts))
}

/// An engine network's (first) IPv4 subnet.
fn subnet_of(n: &bollard::models::Network) -> Option<(u32, u8)> {
    n.ipam
        .as_ref()?
        .config
        .as_ref()?
        .iter()
        .find_map(|c| c.subnet.as_deref().and_then(parse_cidr))
}

/// Sandboxes through a Docker Engine API endpoint.
pub struct DockerBackend {
    docker: Docker,
    endpoint: String,
    host_isolation: HostIsolation,
    class_subnets: SubnetRange,
    /// One in-flight start per sandbox name (and one network create per
    /// network name) in this process; across processes the engine's name
    /// uniqueness (409) decides.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBackend")
            .field("endpoint", &self.endpoint)
            .field("host_isolation", &self.host_isolation)
            .finish()
    }
}

/// `DOCKER_HOST` when set, else `default`.
pub fn endpoint_from_env(default: &str) -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl DockerBackend {
    /// Connects to `endpoint` (`unix:///PATH`, an absolute socket path, or
    /// `tcp://HOST:PORT`), negotiates the API version and finds out whether
    /// the engine is cubby's: only cubby's engine isolates the host by
    /// itself; on any other engine `cubby.isolate_host` is refused unless
    /// the operator says (with `HostIsolation::Operator`) that firewall
    /// rules do it.
    pub async fn connect(
        endpoint: &str,
        host_isolation: Option<HostIsolation>,
    ) -> Result<DockerBackend, BackendError> {
        let unreachable = |reason: String| BackendError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_unix(endpoint, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with("https://") {
            return Err(BackendError::Unsupported(format!(
                "{endpoint}: TLS endpoints are not supported yet; use unix:///PATH (or tcp://HOST:PORT on a trusted link)"
            )));
        } else {
            return Err(BackendError::Invalid(format!(
                "container engine endpoint {endpoint:?}: expected unix:///PATH or tcp://HOST:PORT"
            )));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let version = docker
            .version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let is_cubby = version
            .platform
            .as_ref()
            .is_some_and(|p| p.name.eq_ignore_ascii_case("cubby"));
        let host_isolation = match host_isolation {
            Some(h) => h,
            None if is_cubby => HostIsolation::Engine,
            None => {
                return Err(BackendError::Unsupported(format!(
                    "the engine at {endpoint} is not cubby's: it cannot keep sandboxes away from the \
                     host's addresses by itself; install the firewall rules of docs/caas-backend.md \
                     and select host isolation by the operator"
                )))
            }
        };
        if host_isolation == HostIsolation::Engine && !is_cubby {
            return Err(BackendError::Unsupported(format!(
                "the engine at {endpoint} is not cubby's and does not know the {ISOLATE_HOST_OPTION} \
                 network option: select host isolation by the operator (docs/caas-backend.md)"
            )));
        }
        Ok(DockerBackend {
            docker,
            endpoint: endpoint.to_string(),
            host_isolation,
            class_subnets: SubnetRange::DEFAULT.parse()?,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// Where class networks bigger than a /24 take their subnets from.
    pub fn with_class_subnets(mut self, range: SubnetRange) -> Self {
        self.class_subnets = range;
        self
    }

    /// Creates `want`, big enough for `net.hosts` sandboxes: up to a /24
    /// the engine picks the subnet (its own pool); bigger, the first free
    /// block of the needed size in `class_subnets`, tried again with the
    /// next one when the engine refuses it as overlapping (another network
    /// took it meanwhile). 409: made by another process (`check`ed).
    async fn create_network_sized(
        &self,
        net: &ClassNetwork,
        mut want: NetworkCreateRequest,
        check: &(dyn Fn(&bollard::models::Network) -> Result<(), BackendError> + Sync),
    ) -> Result<(), BackendError> {
        let prefix = match net.hosts {
            0 => 24,
            h => prefix_for(h).ok_or_else(|| {
                BackendError::Invalid(format!(
                    "network {} would have to hold {h} sandboxes: more than a /16 (65533); \
                     lower the class capacity or the warm pools",
                    net.name
                ))
            })?,
        };
        let mut refused: Vec<(u32, u8)> = Vec::new();
        for _ in 0..16 {
            if prefix < 24 {
                let taken: Vec<(u32, u8)> = self
                    .docker
                    .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
                    .await
                    .map_err(|e| self.err(e))?
                    .iter()
                    .filter_map(subnet_of)
                    .chain(refused.iter().copied())
                    .collect();
                let block = self
                    .class_subnets
                    .blocks(prefix)
                    .find(|b| taken.iter().all(|t| !overlaps(*b, *t)))
                    .ok_or_else(|| {
                        BackendError::Invalid(format!(
                            "no free /{prefix} left in {} for network {} ({} sandboxes): give \
                             cubby serve a bigger --class-subnets range",
                            self.class_subnets, net.name, net.hosts
                        ))
                    })?;
                refused.push(block);
                want.ipam = Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(cidr(block)),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
            }
            match self.docker.create_network(want.clone()).await {
                Ok(_) => return Ok(()),
                // Made by another process in the meantime.
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) => {
                    let n = self
                        .docker
                        .inspect_network(
                            &net.name,
                            None::<bollard::query_parameters::InspectNetworkOptions>,
                        )
                        .await
                        .map_err(|e| self.err(e))?;
                    return check(&n);
                }
                Err(DockerError::DockerResponseServerError { message, .. })
                    if prefix < 24 && message.to_ascii_lowercase().contains("overlap") => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(BackendError::Engine(format!(
            "network {}: the engine refused 16 subnets of {} as overlapping",
            net.name, self.class_subnets
        )))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bollard client (for tests and tools that need more than the trait).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds any more, so the map stays small.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key).or_default().clone()
    }

    fn err(&self, e: DockerError) -> BackendError {
        map_error(&self.endpoint, e)
    }

    async fn inspect_raw(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, BackendError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn ensure_volume(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        let labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self.docker.inspect_volume(&spec.workspace_volume).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.err(e)),
        }
        // A size cap is the engine's `size` volume option (cubby's engine:
        // a loop-mounted filesystem image); an engine that cannot honour it
        // refuses it, and one that drops it silently is caught below.
        let driver_opts = spec
            .workspace_size_bytes
            .map(|b| HashMap::from([("size".to_string(), b.to_string())]));
        // Creating an existing volume is not an error in the Docker API.
        let v = self
            .docker
            .create_volume(VolumeCreateOptions {
                name: Some(spec.workspace_volume.clone()),
                labels: Some(labels),
                driver_opts,
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(e))?;
        if let Some(size) = spec.workspace_size_bytes {
            let kept = v.options.get("size").map(String::as_str);
            if kept != Some(size.to_string().as_str()) {
                return Err(BackendError::Unsupported(format!(
                    "workspace size {size} bytes: the engine created volume {} without it \
                     (options {:?}); use an engine with sized volumes or leave the template's \
                     workspace_size_bytes empty",
                    spec.workspace_volume, v.options
                )));
            }
        }
        Ok(())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        let body = create_body(spec);
        match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
        {
            Ok(_) => Ok(()),
            // "No such image": say how to get it.
            Err(DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                self.check_image(&spec.image).await?;
                Err(BackendError::NotFound { what: message })
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Starts an existing sandbox of ours; "already started" is fine.
    async fn start_existing(&self, name: &str) -> Result<(), BackendError> {
        match self
            .docker
            .start_container(name, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn start_locked(&self, spec: &SandboxSpec) -> Result<SandboxInfo, BackendError> {
        // Three engine calls in the common case: create, start, inspect
        // (for the address). A retry (after a crash, a second click, another
        // process) meets "already in use" at create and resumes the sandbox;
        // a class network removed behind the manager's back is made again
        // and the create retried once; the workspace volume is created by
        // the engine with the mount's labels — except a sized one, whose
        // `size` option only a volume create can carry (one call more).
        if spec.workspace_size_bytes.is_some() {
            self.ensure_volume(spec).await?;
        }
        let mut created = self.create(spec).await;
        if let Err(BackendError::NotFound { what }) = &created {
            if what.contains("network") {
                self.ensure_network(&spec.network).await?;
                created = self.create(spec).await;
            }
        }
        match created {
            Ok(()) => {}
            Err(BackendError::Invalid(m)) | Err(BackendError::Engine(m))
                if m.contains("already in use") =>
            {
                let existing = self.inspect_raw(&spec.name).await?.ok_or_else(|| {
                    BackendError::Engine(format!(
                        "sandbox {}: the engine said the name is in use ({m}) but has no such container",
                        spec.name
                    ))
                })?;
                return self.resume(spec, existing).await;
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = self.start_existing(&spec.name).await {
            // Roll back the half-made sandbox so a retry starts clean; the
            // volume (the student's work) stays.
            let _ = self.remove_sandbox(&spec.name).await;
            return Err(e);
        }
        self.inspect_sandbox(&spec.name).await?.ok_or_else(|| {
            BackendError::Engine(format!("sandbox {} vanished after start", spec.name))
        })
    }

    /// An existing container named like the sandbox: ours → started if
    /// needed and returned; anyone else's → refused.
    async fn resume(
        &self,
        spec: &SandboxSpec,
        existing: ContainerInspectResponse,
    ) -> Result<SandboxInfo, BackendError> {
        let info = sandbox_info(&existing);
        if !info.labels.contains_key(LABEL_MANAGED) {
            return Err(BackendError::Invalid(format!(
                "a container named {} exists and is not a cubby sandbox (no {LABEL_MANAGED} label): \
                 rename or remove it",
                spec.name
            )));
        }
        if info.status != SandboxStatus::Running {
            self.start_existing(&spec.name).await?;
            return self.inspect_sandbox(&spec.name).await?.ok_or_else(|| {
                BackendError::Engine(format!("sandbox {} vanished after start", spec.name))
            });
        }
        Ok(info)
    }
}

/// Checks what no engine should be asked to do.
fn validate(spec: &SandboxSpec) -> Result<(), BackendError> {
    let uid = spec.user.split(':').next().unwrap_or("");
    if uid.is_empty() || uid == "0" || uid == "root" {
        return Err(BackendError::Invalid(format!(
            "sandbox user {:?}: sandboxes never run as root; give a non-root user such as 1000:1000",
            spec.user
        )));
    }
    if !spec.labels.contains_key(LABEL_MANAGED) {
        return Err(BackendError::Invalid(format!(
            "sandbox {}: the {LABEL_MANAGED} label is missing (it is how sandboxes are found again)",
            spec.name
        )));
    }
    if !spec.workspace_path.starts_with('/') {
        return Err(BackendError::Invalid(format!(
            "workspace path {:?} must be absolute",
            spec.workspace_path
        )));
    }
    let l = spec.limits;
    if l.memory_bytes == 0 || l.nano_cpus == 0 || l.pids == 0 {
        return Err(BackendError::Invalid(format!(
            "sandbox {}: memory, CPUs and pids limits are all required (got {l:?})",
            spec.name
        )));
    }
    let to_i64 = |what: &str, v: u64| {
        i64::try_from(v).map_err(|_| BackendError::Invalid(format!("{what} {v} is too large")))
    };
    to_i64("memory", l.memory_bytes)?;
    to_i64("nano CPUs", l.nano_cpus)?;
    Ok(())
}

/// The create body: the template's process plus the fixed hardening.
fn create_body(spec: &SandboxSpec) -> ContainerCreateBody {
    let mut env = spec.env.clone();
    // The root filesystem is read-only: unless the template says otherwise,
    // HOME is the workspace, so dotfiles persist with the student's work.
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", spec.workspace_path));
    }
    let labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let memory = spec.limits.memory_bytes as i64;
    let host = HostConfig {
        network_mode: Some(spec.network.name.clone()),
        mounts: Some(vec![Mount {
            typ: Some(MountTypeEnum::VOLUME),
            source: Some(spec.workspace_volume.clone()),
            target: Some(spec.workspace_path.clone()),
            read_only: Some(false),
            // The engine creates a missing volume with these labels (as
            // `volume create` would): no separate volume call per start.
            volume_options: Some(MountVolumeOptions {
                labels: Some(labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        tmpfs: Some(HashMap::from([("/tmp".to_string(), TMP_TMPFS.to_string())])),
        readonly_rootfs: Some(true),
        // A non-root process needs no capability: binding ports above 1024,
        // writing its own workspace and /tmp need none. Dropping the bounding
        // set too means no setuid file can hand one back.
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: None,
        // Omitting "seccomp=..." keeps the engine's default profile.
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        privileged: Some(false),
        memory: Some(memory),
        // Equal to Memory: no swap past the limit.
        memory_swap: Some(memory),
        nano_cpus: Some(spec.limits.nano_cpus as i64),
        pids_limit: Some(i64::from(spec.limits.pids)),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.command.clone(),
        env: Some(env),
        working_dir: spec.working_dir.clone(),
        user: Some(spec.user.clone()),
        labels: Some(labels),
        exposed_ports: spec
            .app_port
            .map(|p| HashMap::from([(format!("{p}/tcp"), HashMap::new())])),
        host_config: Some(host),
        ..Default::default()
    }
}

fn sandbox_info(c: &ContainerInspectResponse) -> SandboxInfo {
    let state = c.state.as_ref();
    let status = match state.and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::CREATED) => SandboxStatus::Created,
        Some(ContainerStateStatusEnum::RUNNING) => SandboxStatus::Running,
        Some(ContainerStateStatusEnum::PAUSED) => SandboxStatus::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => SandboxStatus::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => SandboxStatus::Exited,
        Some(ContainerStateStatusEnum::DEAD) => SandboxStatus::Dead,
        _ => SandboxStatus::Unknown,
    };
    let labels: BTreeMap<String, String> = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    // The address on the sandbox's own (class) network.
    let mode = c.host_config.as_ref().and_then(|h| h.network_mode.clone());
    let networks = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref());
    let endpoint = networks.and_then(|n| {
        mode.as_deref()
            .and_then(|m| n.get(m))
            .or_else(|| n.values().next())
    });
    let address = endpoint
        .and_then(|e| e.ip_address.as_deref())
        .filter(|a| !a.is_empty())
        .and_then(|a| a.parse::<IpAddr>().ok());
    let exited = matches!(status, SandboxStatus::Exited | SandboxStatus::Dead);
    SandboxInfo {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        status,
        labels,
        address: if status == SandboxStatus::Running {
            address
        } else {
            None
        },
        exit_code: if exited {
            state.and_then(|s| s.exit_code)
        } else {
            None
        },
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
    }
}

/// An engine error as the trait's, with the engine's message kept.
pub fn map_error(endpoint: &str, e: DockerError) -> BackendError {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => BackendError::NotFound { what: message },
            400 | 409 => BackendError::Invalid(message),
            _ => BackendError::Engine(format!("{message} (HTTP {status_code})")),
        },
        DockerError::SocketNotFoundError(path) => BackendError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: format!("no socket at {path}"),
        },
        e @ (DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::HttpClientError { .. }) => BackendError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        },
        e => BackendError::Engine(e.to_string()),
    }
}

/// Why an existing network cannot hold `net.hosts` and is not grown.
fn too_small(net: &ClassNetwork, have: (u32, u8), on: usize) -> String {
    let whose = match net.labels.get(super::LABEL_CLASS) {
        Some(class) => format!("the network of class {class}"),
        None => "the network".to_string(),
    };
    format!(
        "{whose}, {}, is {} (room for {} sandboxes) but must hold {} (capacity and headroom): \
         it is only made anew while no sandbox is on it, and {on} are; end the class's sessions \
         (or, for the warm pool's network, set warm_pool to 0) and start again",
        net.name,
        cidr(have),
        room(have.1),
        net.hosts
    )
}

fn network_request(net: &ClassNetwork, isolation: HostIsolation) -> NetworkCreateRequest {
    let mut options = HashMap::new();
    if isolation == HostIsolation::Engine {
        options.insert(ISOLATE_HOST_OPTION.to_string(), "true".to_string());
    }
    let mut labels: HashMap<String, String> = net
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels
        .entry(LABEL_MANAGED.to_string())
        .or_insert_with(|| "1".to_string());
    NetworkCreateRequest {
        name: net.name.clone(),
        driver: Some("bridge".to_string()),
        internal: Some(net.policy == NetworkPolicy::Exam),
        attachable: Some(false),
        options: Some(options),
        labels: Some(labels),
        ..Default::default()
    }
}

#[async_trait]
impl Backend for DockerBackend {
    async fn describe(&self) -> Result<String, BackendError> {
        let v = self.docker.version().await.map_err(|e| self.err(e))?;
        let platform = v
            .platform
            .map(|p| p.name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Docker Engine".to_string());
        Ok(format!(
            "{platform} {} (API {}) at {}, host isolation by the {}",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
            self.endpoint,
            match self.host_isolation {
                HostIsolation::Engine => "engine",
                HostIsolation::Operator => "operator's firewall",
            }
        ))
    }

    async fn check_image(&self, image: &str) -> Result<(), BackendError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(BackendError::ImageMissing {
                image: image.to_string(),
                hint: format!(
                    "on cubby's engine run `cubby pull {image}` (or `cubby import ROOTFS.tar {image}` \
                     for a local root filesystem); on dockerd or podman run `docker pull {image}`"
                ),
            }),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn pull_image(&self, image: &str) -> Result<(), BackendError> {
        let opts = bollard::query_parameters::CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| self.err(e))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(BackendError::Engine(format!("pulling {image}: {e}")));
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, net: &ClassNetwork) -> Result<(), BackendError> {
        let lock = self.lock_for(format!("network/{}", net.name));
        let _held = lock.lock().await;
        let want = network_request(net, self.host_isolation);
        let want_internal = want.internal.unwrap_or(false);
        let check = |n: &bollard::models::Network| -> Result<(), BackendError> {
            let internal = n.internal.unwrap_or(false);
            let isolated = n
                .options
                .as_ref()
                .and_then(|o| o.get(ISOLATE_HOST_OPTION))
                .is_some_and(|v| v == "true" || v == "1" || v.is_empty());
            let managed = n
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_MANAGED));
            if !managed
                || internal != want_internal
                || (self.host_isolation == HostIsolation::Engine && !isolated)
            {
                return Err(BackendError::Invalid(format!(
                    "network {} exists but is not a cubby class network with the {:?} policy \
                     (managed: {managed}, internal: {internal}, host isolated: {isolated}): \
                     remove it or choose another class network name",
                    net.name, net.policy
                )));
            }
            Ok(())
        };
        match self
            .docker
            .inspect_network(
                &net.name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(n) => {
                check(&n)?;
                let Some(have) = subnet_of(&n).filter(|s| room(s.1) < u64::from(net.hosts)) else {
                    return Ok(());
                };
                let on = n.containers.as_ref().map_or(0, HashMap::len);
                if on > 0 {
                    return Err(BackendError::NetworkTooSmall(too_small(net, have, on)));
                }
                // Empty: made anew with room.
                self.remove_network(&net.name).await?;
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.err(e)),
        }
        self.create_network_sized(net, want, &check).await
    }

    async fn remove_network(&self, name: &str) -> Result<(), BackendError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn start_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, BackendError> {
        validate(spec)?;
        let lock = self.lock_for(format!("sandbox/{}", spec.name));
        let _held = lock.lock().await;
        self.start_locked(spec).await
    }

    async fn inspect_sandbox(&self, name: &str) -> Result<Option<SandboxInfo>, BackendError> {
        Ok(self.inspect_raw(name).await?.map(|c| sandbox_info(&c)))
    }

    async fn stop_sandbox(&self, name: &str, grace: Duration) -> Result<(), BackendError> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn remove_sandbox(&self, name: &str) -> Result<(), BackendError> {
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    // Only anonymous volumes go with `v`; the workspace is a
                    // named volume, and we do not even ask.
                    v: false,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, BackendError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.err(e))?;
        // Filtered here: podman 4's `label` filter needs a value too, and
        // ours is the service instance's id, which the backend does not know.
        let ids: Vec<String> = list
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(LABEL_MANAGED))
            })
            .filter_map(|c| c.id)
            .collect();
        let infos: Vec<Option<SandboxInfo>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.inspect_sandbox(&id).await })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        // Removed between the list and the inspect: not there any more.
        let mut infos: Vec<SandboxInfo> = infos.into_iter().flatten().collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn open_terminal(
        &self,
        name: &str,
        cmd: &[String],
        user: &str,
        working_dir: Option<&str>,
        env: &[String],
        size: (u16, u16),
    ) -> Result<Terminal, BackendError> {
        let exec = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(true),
                    cmd: Some(cmd.to_vec()),
                    user: Some(user.to_string()),
                    working_dir: working_dir.map(str::to_string),
                    env: Some(env.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e {
                DockerError::DockerResponseServerError {
                    status_code: 404, ..
                } => BackendError::NotFound {
                    what: format!("sandbox {name}"),
                },
                e => self.err(e),
            })?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    tty: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.err(e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(BackendError::Engine(format!(
                "the engine started the terminal in {name} detached"
            )));
        };
        // The pty's first size; the browser resizes as its window changes.
        // An engine may answer the attach before the exec's pty is
        // registered (cubby's engine does, briefly): retry for up to 1 s.
        let mut tries = 0;
        while let Err(e) = self.resize_terminal(&exec.id, size).await {
            tries += 1;
            if tries >= 50 {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let endpoint = self.endpoint.clone();
        let output = output
            .map(move |chunk| match chunk {
                Ok(LogOutput::StdOut { message })
                | Ok(LogOutput::Console { message })
                | Ok(LogOutput::StdErr { message }) => Ok(message),
                Ok(LogOutput::StdIn { .. }) => Ok(bytes::Bytes::new()),
                Err(e) => Err(map_error(&endpoint, e)),
            })
            .boxed();
        Ok(Terminal {
            id: exec.id,
            output,
            input,
        })
    }

    async fn resize_terminal(&self, id: &str, size: (u16, u16)) -> Result<(), BackendError> {
        self.docker
            .resize_exec(
                id,
                bollard::exec::ResizeExecOptions {
                    width: size.0,
                    height: size.1,
                },
            )
            .await
            .map_err(|e| self.err(e))
    }

    async fn usage(&self, name: &str) -> Result<Option<super::Usage>, BackendError> {
        // One sample, without the engine's wait for a second one.
        let mut st = self.docker.stats(
            name,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        match st.next().await {
            Some(Ok(r)) => Ok(Some(super::Usage {
                cpu_ns: r
                    .cpu_stats
                    .and_then(|c| c.cpu_usage)
                    .and_then(|u| u.total_usage)
                    .unwrap_or(0),
                memory_bytes: r.memory_stats.and_then(|m| m.usage).unwrap_or(0),
            })),
            Some(Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Some(Err(e)) => Err(self.err(e)),
            None => Ok(None),
        }
    }

    async fn exec(
        &self,
        name: &str,
        cmd: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, BackendError> {
        let exec = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    user: user.map(str::to_string),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e {
                DockerError::DockerResponseServerError {
                    status_code: 404, ..
                } => BackendError::NotFound {
                    what: format!("sandbox {name}"),
                },
                e => self.err(e),
            })?;
        let started = self
            .docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| self.err(e))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| self.err(e))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        // The stream ends when the process does; its exit code may take a
        // moment more to be recorded.
        for _ in 0..200 {
            let i = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| self.err(e))?;
            if i.running != Some(true) {
                if let Some(code) = i.exit_code {
                    return Ok(ExecOutput {
                        exit_code: code,
                        stdout,
                        stderr,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(BackendError::Engine(format!(
            "exec in {name}: the engine never reported the exit code of {cmd:?}"
        )))
    }

    async fn wait_ready(
        &self,
        sandbox: &SandboxInfo,
        port: u16,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let not_ready = |reason: String| BackendError::NotReady {
            name: sandbox.name.clone(),
            reason,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut address = sandbox.address;
        loop {
            if let Some(ip) = address {
                let attempt = tokio::time::timeout(
                    Duration::from_millis(200),
                    tokio::net::TcpStream::connect(SocketAddr::new(ip, port)),
                )
                .await;
                if let Ok(Ok(_)) = attempt {
                    return Ok(());
                }
            }
            // Fail early on an exit rather than waiting out the timeout.
            match self.inspect_sandbox(&sandbox.name).await? {
                None => return Err(not_ready("it was removed".into())),
                Some(i) if matches!(i.status, SandboxStatus::Exited | SandboxStatus::Dead) => {
                    return Err(not_ready(if i.oom_killed {
                        "it ran out of memory".to_string()
                    } else {
                        format!("it exited with code {}", i.exit_code.unwrap_or(-1))
                    }))
                }
                Some(i) => address = i.address.or(address),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_ready(match address {
                    Some(ip) => {
                        format!("nothing accepted connections on {ip}:{port} within {timeout:?}")
                    }
                    None => format!("it has no address on its network after {timeout:?}"),
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn export_path(&self, name: &str, path: &str) -> Result<super::ByteStream, BackendError> {
        // Fail before streaming when the sandbox is missing. A stopped or
        // exited one is exported as it is: Docker and cubby's engine both
        // show a stopped container's volumes to the archive endpoint.
        if self.inspect_sandbox(name).await?.is_none() {
            return Err(BackendError::NotFound {
                what: format!("sandbox {name}"),
            });
        }
        let endpoint = self.endpoint.clone();
        let s = self.docker.download_from_container(
            name,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        Ok(s.map_err(move |e| map_error(&endpoint, e)).boxed())
    }

    async fn import_tar(
        &self,
        name: &str,
        dir: &str,
        tar: super::ByteStream,
    ) -> Result<(), BackendError> {
        // bollard's streaming body takes plain chunks: an error from `tar`
        // ends the body early (the engine then refuses the cut archive) and
        // is reported here.
        let failed: Arc<Mutex<Option<BackendError>>> = Arc::default();
        let slot = failed.clone();
        let body = tar
            .scan((), move |_, r| {
                futures_util::future::ready(match r {
                    Ok(b) => Some(b),
                    Err(e) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        None
                    }
                })
            })
            .boxed();
        let sent = self
            .docker
            .upload_to_container(
                name,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_stream(body),
            )
            .await;
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        sent.map_err(|e| self.err(e))
    }

    async fn cpu_usage_ns(&self, name: &str) -> Result<Option<u64>, BackendError> {
        // One sample, without the engine's wait for a second one.
        let mut st = self.docker.stats(
            name,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        match st.next().await {
            Some(Ok(r)) => Ok(r
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)),
            Some(Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Some(Err(e)) => Err(self.err(e)),
            None => Ok(None),
        }
    }

    async fn rename_sandbox(&self, name: &str, new: &str) -> Result<(), BackendError> {
        self.docker
            .rename_container(
                name,
                RenameContainerOptions {
                    name: new.to_string(),
                },
            )
            .await
            .map_err(|e| self.err(e))
    }

    async fn connect_network(&self, name: &str, network: &str) -> Result<(), BackendError> {
        let r = self
            .docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: Some(name.to_string()),
                    endpoint_config: Some(Default::default()),
                },
            )
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) => match self.err(e) {
                BackendError::Invalid(m) | BackendError::Engine(m) if m.contains("already") => {
                    Ok(())
                }
                e => Err(e),
            },
        }
    }

    async fn disconnect_network(&self, name: &str, network: &str) -> Result<(), BackendError> {
        let r = self
            .docker
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container: Some(name.to_string()),
                    force: Some(true),
                },
            )
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) => match self.err(e) {
                BackendError::Invalid(m) | BackendError::Engine(m)
                    if m.contains("not connected") =>
                {
                    Ok(())
                }
                e => Err(e),
            },
        }
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, BackendError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), BackendError> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn events(
        &self,
    ) -> Result<BoxStream<'static, Result<SandboxEvent, BackendError>>, BackendError> {
        // Only the type is filtered by the engine: podman 4 matches a
        // `label` filter only with a value, and names removals `remove`
        // where Docker says `destroy`; [`to_event`] picks ours.
        let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        let docker = self.docker.clone();
        let endpoint = self.endpoint.clone();
        // bollard sends the request on the first poll: `since` makes the
        // stream start when this call was made, not when it is first read.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let raw = self.docker.events(Some(EventsOptions {
            since: Some(format!("{}.{:09}", now.as_secs(), now.subsec_nanos())),
            filters: Some(filters),
            ..Default::default()
        }));
        let events = raw
            .map(move |m| (m, docker.clone(), endpoint.clone()))
            .then(|(m, docker, endpoint)| async move {
                match m {
                    Err(e) => Some(Err(map_error(&endpoint, e))),
                    Ok(m) => to_event(&docker, m).await.map(Ok),
                }
            })
            .filter_map(|e| async move { e });
        // An engine never ends this stream by itself: say so when it does
        // (a restart, or an engine that closes it), so callers log why
        // before they subscribe again.
        let endpoint = self.endpoint.clone();
        let closed = futures_util::stream::once(async move {
            Err(BackendError::Unreachable {
                endpoint,
                reason: "the engine closed the event stream".into(),
            })
        });
        Ok(events.chain(closed).boxed())
    }
}

/// A Docker event about one of our containers as a [`SandboxEvent`]; the
/// OOM flag of an exit is read by inspecting the container.
async fn to_event(docker: &Docker, m: EventMessage) -> Option<SandboxEvent> {
    let actor = m.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    if !attrs.contains_key(LABEL_MANAGED) {
        return None;
    }
    let name = attrs.get("name")?.trim_start_matches('/').to_string();
    match m.action.as_deref()? {
        "start" => Some(SandboxEvent::Started { name }),
        "die" => {
            let inspected = docker
                .inspect_container(
                    actor.id.as_deref().unwrap_or(&name),
                    None::<InspectContainerOptions>,
                )
                .await
                .ok();
            let state = inspected.as_ref().and_then(|c| c.state.as_ref());
            let exit_code = attrs
                .get("exitCode")
                .and_then(|c| c.parse().ok())
                .or_else(|| state.and_then(|s| s.exit_code))
                .unwrap_or(-1);
            let oom_killed = state.and_then(|s| s.oom_killed).unwrap_or(false);
            Some(SandboxEvent::Exited {
                name,
                exit_code,
                oom_killed,
            })
        }
        "destroy" | "remove" => Some(SandboxEvent::Removed { name }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Limits, LABEL_CLASS, LABEL_SESSION, LABEL_STUDENT};

    fn spec() -> SandboxSpec {
        SandboxSpec {
            name: "s-1".into(),
            image: "demo:latest".into(),
            entrypoint: None,
            command: None,
            env: vec![],
            working_dir: None,
            user: "1000:1000".into(),
            limits: Limits {
                memory_bytes: 64 << 20,
                nano_cpus: 500_000_000,
                pids: 64,
            },
            workspace_volume: "ws-1".into(),
            workspace_path: "/workspace".into(),
            workspace_size_bytes: None,
            network: ClassNetwork {
                name: "class-1".into(),
                policy: NetworkPolicy::Class,
                labels: BTreeMap::new(),
                hosts: 0,
            },
            app_port: Some(8080),
            labels: BTreeMap::from([
                (LABEL_MANAGED.to_string(), "i".to_string()),
                (LABEL_SESSION.to_string(), "1".to_string()),
                (LABEL_CLASS.to_string(), "c".to_string()),
                (LABEL_STUDENT.to_string(), "s".to_string()),
            ]),
        }
    }

    #[test]
    fn body_carries_every_hardening_option() {
        let b = create_body(&spec());
        let h = b.host_config.unwrap();
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.memory, h.memory_swap);
        assert_eq!(h.pids_limit, Some(64));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert!(h
            .security_opt
            .unwrap()
            .contains(&"no-new-privileges:true".to_string()));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert!(b.env.unwrap().contains(&"HOME=/workspace".to_string()));
    }

    #[test]
    fn refuses_what_it_cannot_enforce() {
        // A size cap goes to the engine's volume options (checked there).
        let mut s = spec();
        s.workspace_size_bytes = Some(1 << 30);
        assert!(validate(&s).is_ok());
        for user in ["root", "0", "0:0", ""] {
            let mut s = spec();
            s.user = user.into();
            assert!(
                matches!(validate(&s), Err(BackendError::Invalid(_))),
                "{user}"
            );
        }
        let mut s = spec();
        s.labels.remove(LABEL_MANAGED);
        assert!(validate(&s).is_err());
        assert!(validate(&spec()).is_ok());
    }

    #[test]
    fn class_network_sizes() {
        assert_eq!(prefix_for(1), Some(24));
        assert_eq!(prefix_for(253), Some(24));
        assert_eq!(prefix_for(254), Some(23));
        assert_eq!(prefix_for(383), Some(23));
        assert_eq!(prefix_for(510), Some(22));
        assert_eq!(prefix_for(65533), Some(16));
        assert_eq!(prefix_for(65534), None);
        assert_eq!(super::super::with_headroom(300), 383);
        let r: SubnetRange = "10.176.3.7/22".parse().unwrap();
        assert_eq!(r.to_string(), "10.176.0.0/22");
        let b: Vec<String> = r.blocks(23).map(cidr).collect();
        assert_eq!(b, ["10.176.0.0/23", "10.176.2.0/23"]);
        assert_eq!(r.blocks(21).count(), 0);
        assert!(overlaps((0x0AB0_0000, 22), (0x0AB0_0200, 24)));
        assert!(!overlaps((0x0AB0_0000, 23), (0x0AB0_0200, 24)));
        for bad in ["10.0.0.0", "10.0.0.0/30", "x/16", "10.0.0.0/7"] {
            assert!(bad.parse::<SubnetRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn class_and_exam_networks() {
        let mut net = spec().network;
        let class = network_request(&net, HostIsolation::Engine);
        assert_eq!(class.internal, Some(false));
        assert_eq!(
            class
                .options
                .unwrap()
                .get(ISOLATE_HOST_OPTION)
                .map(String::as_str),
            Some("true")
        );
        assert!(class.labels.unwrap().contains_key(LABEL_MANAGED));
        net.policy = NetworkPolicy::Exam;
        let exam = network_request(&net, HostIsolation::Engine);
        assert_eq!(exam.internal, Some(true));
        // Another engine would accept and ignore the option: not sent.
        let other = network_request(&net, HostIsolation::Operator);
        assert!(other.options.unwrap().is_empty());
    }

    #[test]
    fn engine_messages_are_kept() {
        let e = map_error(
            "unix:///x",
            DockerError::DockerResponseServerError {
                status_code: 400,
                message: "Minimum memory limit allowed is 6MB".into(),
            },
        );
        assert!(
            matches!(e, BackendError::Invalid(m) if m == "Minimum memory limit allowed is 6MB")
        );
    }
}
