//! The boundary between the classroom service and whatever runs sandboxes.
//!
//! No Docker types cross it: the session logic speaks only these types, so a
//! Kubernetes backend (pods, NetworkPolicy, PVCs) can implement the same trait.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub mod docker;
pub mod local_engine;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// Every sandbox and network the service makes carries this label (value:
/// the service instance's id), so ownership can be read back after a crash.
pub const LABEL_MANAGED: &str = "io.cubby.caas";
pub const LABEL_SESSION: &str = "io.cubby.caas.session";
pub const LABEL_CLASS: &str = "io.cubby.caas.class";
pub const LABEL_STUDENT: &str = "io.cubby.caas.student";
/// The workspace path inside the sandbox (so an orphan can be archived
/// without its template).
pub const LABEL_WORKSPACE: &str = "io.cubby.caas.workspace";
/// On warm-pool members (value: the template's id): made before any
/// student is known, so no session/class/student labels; once claimed, the
/// session row is authoritative (labels are immutable in the engine).
pub const LABEL_POOL: &str = "io.cubby.caas.pool";
/// On members of a class's pool (value: the class id), warmed on the class
/// network ahead of its scheduled start; only that class claims them.
pub const LABEL_POOL_CLASS: &str = "io.cubby.caas.pool.class";
/// The digest of the template spec a pool member was made from: members of
/// an older spec are removed, never claimed.
pub const LABEL_POOL_SPEC: &str = "io.cubby.caas.pool.spec";

/// What a sandbox may reach over the network. In both cases: its class
/// peers only, never another class, the host's own addresses, the control
/// plane, the engine API or the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    /// The class's own network with egress to the outside allowed.
    Class,
    /// The class's own network with no egress at all.
    Exam,
}

/// One network per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassNetwork {
    pub name: String,
    pub policy: NetworkPolicy,
    pub labels: BTreeMap<String, String>,
    /// How many sandboxes it must hold at once (the class's capacity, or
    /// the warm pools' sizes, plus headroom: [`with_headroom`]). A backend
    /// makes the network big enough or refuses; 0: not known (a spec that
    /// only names the network, e.g. for a sandbox start).
    pub hosts: u32,
}

/// The sandboxes a network is sized for when `n` are expected at once: a
/// quarter more and 8 (teacher, sandboxes being replaced, pool members
/// between networks at claim).
pub fn with_headroom(n: u64) -> u32 {
    u32::try_from(n.saturating_add(n / 4).saturating_add(8)).unwrap_or(u32::MAX)
}

/// Hard limits the backend must enforce (never best effort).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPUs × 10⁹ (Docker's NanoCpus).
    pub nano_cpus: u64,
    pub pids: u32,
}

/// Everything needed to make one sandbox; built from a template + session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Unique and derived from the session, which makes starting idempotent.
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a user name known to the image.
    pub user: String,
    pub limits: Limits,
    /// The volume holding the student's work, mounted at `workspace_path`.
    pub workspace_volume: String,
    pub workspace_path: String,
    /// A size cap for the workspace; a backend that cannot enforce one
    /// refuses it with [`BackendError::Unsupported`].
    pub workspace_size_bytes: Option<u64>,
    pub network: ClassNetwork,
    /// The app's TCP port inside the sandbox, if it serves one.
    pub app_port: Option<u16>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub name: String,
    pub status: SandboxStatus,
    pub labels: BTreeMap<String, String>,
    /// Its address on the class network (readiness probes, the proxy later).
    pub address: Option<IpAddr>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// An interactive process with a pseudo-terminal inside a sandbox (the web
/// terminal). Output is the pty's byte stream; it ends when the process
/// exits. Dropping `input` closes the process's stdin.
pub struct Terminal {
    /// Names this process for [`Backend::resize_terminal`].
    pub id: String,
    pub output: BoxStream<'static, Result<bytes::Bytes, BackendError>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// What the backend reports about sandboxes as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    Started {
        name: String,
    },
    Exited {
        name: String,
        exit_code: i64,
        oom_killed: bool,
    },
    Removed {
        name: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach the container engine at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("image {image} is not present: {hint}")]
    ImageMissing { image: String, hint: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Invalid(String),
    #[error("not supported by this backend: {0}")]
    Unsupported(String),
    #[error("container engine error: {0}")]
    Engine(String),
    #[error("sandbox {name} did not become ready: {reason}")]
    NotReady { name: String, reason: String },
    /// An existing network too small for what it must hold, not grown
    /// because sandboxes are on it (the message says what to do).
    #[error("{0}")]
    NetworkTooSmall(String),
}

/// What a running sandbox uses now (the roster shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time used since it started, in ns (a rate needs two samples).
    pub cpu_ns: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
}

/// Provisions sandboxes. Implementations: `docker` (any Docker Engine API).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Checks the backend answers; returns a one-line description for logs.
    async fn describe(&self) -> Result<String, BackendError>;
    /// `Ok` when the image is present, [`BackendError::ImageMissing`] (with
    /// how to pull or import it) when not.
    async fn check_image(&self, image: &str) -> Result<(), BackendError>;
    /// Pulls `image` into the engine's store (pre-pull before a scheduled
    /// start); a backend that cannot pull refuses it.
    async fn pull_image(&self, image: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "pulling {image}: this backend does not pull images"
        )))
    }
    /// Creates the class's network if missing (idempotent).
    async fn ensure_network(&self, net: &ClassNetwork) -> Result<(), BackendError>;
    async fn remove_network(&self, name: &str) -> Result<(), BackendError>;
    /// Creates and starts the sandbox. Idempotent by `spec.name`: if it exists
    /// already (a retry after a crash), it is started if needed and returned,
    /// never duplicated.
    async fn start_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, BackendError>;
    /// `None` when no sandbox has this name.
    async fn inspect_sandbox(&self, name: &str) -> Result<Option<SandboxInfo>, BackendError>;
    /// Stops it (its stop signal, then killed after `grace`); the sandbox and
    /// its workspace stay. Stopping a stopped or missing sandbox is `Ok`.
    async fn stop_sandbox(&self, name: &str, grace: Duration) -> Result<(), BackendError>;
    /// Removes the sandbox, never its workspace volume. Missing is `Ok`.
    async fn remove_sandbox(&self, name: &str) -> Result<(), BackendError>;
    /// Every sandbox labelled as this service's (running or not).
    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, BackendError>;
    /// Runs a command inside a running sandbox and collects its output.
    async fn exec(
        &self,
        name: &str,
        cmd: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, BackendError>;
    /// Waits until `port` accepts TCP connections on the sandbox's address,
    /// failing early if the sandbox exits.
    async fn wait_ready(
        &self,
        sandbox: &SandboxInfo,
        port: u16,
        timeout: Duration,
    ) -> Result<(), BackendError>;
    /// Starts `cmd` with a pty of `cols`×`rows` in a running sandbox as
    /// `user`, in `working_dir`, with `env` (`KEY=VALUE`).
    async fn open_terminal(
        &self,
        name: &str,
        cmd: &[String],
        user: &str,
        working_dir: Option<&str>,
        env: &[String],
        size: (u16, u16),
    ) -> Result<Terminal, BackendError> {
        let _ = (cmd, user, working_dir, env, size);
        Err(BackendError::Unsupported(format!(
            "interactive terminals (sandbox {name})"
        )))
    }
    /// Resizes a terminal's pty (`cols`, `rows`).
    async fn resize_terminal(&self, id: &str, size: (u16, u16)) -> Result<(), BackendError> {
        let _ = size;
        Err(BackendError::Unsupported(format!("terminal {id}")))
    }
    /// CPU and memory use now; `None` when the sandbox is not running.
    async fn usage(&self, name: &str) -> Result<Option<Usage>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "usage of sandbox {name}"
        )))
    }
    /// The CPU time (ns) the sandbox has used so far, for idle culling;
    /// `None` when it is not running.
    async fn cpu_usage_ns(&self, name: &str) -> Result<Option<u64>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "CPU use of sandbox {name}"
        )))
    }
    /// Sandbox events from now on (exits with their OOM flag, removals).
    async fn events(
        &self,
    ) -> Result<BoxStream<'static, Result<SandboxEvent, BackendError>>, BackendError>;

    /// `path` inside the sandbox as a tar stream (entries named from the
    /// path's last component, as `docker cp` does), running or stopped
    /// (a stopped sandbox's volumes are exported as it left them).
    async fn export_path(&self, name: &str, path: &str) -> Result<ByteStream, BackendError>;
    /// Extracts a tar stream into the directory `dir` of a running sandbox,
    /// keeping the archive's owners and modes. The stream ends early (and
    /// the call fails) if `tar` yields an error.
    async fn import_tar(&self, name: &str, dir: &str, tar: ByteStream) -> Result<(), BackendError>;
    /// Renames a sandbox (a claimed warm-pool member takes its session's
    /// sandbox name). Fails if `new` is taken or `name` is missing.
    async fn rename_sandbox(&self, name: &str, new: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "renaming sandbox {name} to {new}"
        )))
    }
    /// Connects a running sandbox to a network (already connected is `Ok`).
    async fn connect_network(&self, name: &str, network: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "connecting sandbox {name} to network {network}"
        )))
    }
    /// Disconnects a sandbox from a network (not connected is `Ok`).
    async fn disconnect_network(&self, name: &str, network: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "disconnecting sandbox {name} from network {network}"
        )))
    }
    /// Whether a volume of this name exists.
    async fn volume_exists(&self, name: &str) -> Result<bool, BackendError>;
    /// Removes a workspace volume; missing is `Ok`. Only ever called after
    /// its contents are archived and verified.
    async fn remove_volume(&self, name: &str) -> Result<(), BackendError>;
}

/// A stream of bytes (tar archives in and out of sandboxes).
pub type ByteStream = BoxStream<'static, Result<bytes::Bytes, BackendError>>;
