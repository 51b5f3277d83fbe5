//! The engine as a library: [`Engine`] makes, runs and removes containers
//! and returns typed [`EngineError`]s. The Docker API in [`crate::api`]
//! only translates HTTP to these calls and back; `cubby build` (RUN steps)
//! and in-process tests call them directly.
//!
//! The engine talks to a running monitor (see [`crate::monitor`]), which
//! parents every container; it never clones containers itself, so it may
//! live in a multi-threaded process.

pub mod archive;
pub mod changes;
pub mod conn;
pub mod containers;
pub mod error;
pub mod exec;
pub mod filters;
pub mod images;
pub mod mounts;
pub mod networks;
pub mod prune;
pub mod pull;
pub mod stats;
pub mod top;
pub mod volumes;

pub use containers::{CreateBody, NewContainer};
pub use error::{EngineError, EngineResult};

use crate::client::MonitorClient;
use crate::protocol::{Request, Response};
use cubby_image::store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What an engine needs to open.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The socket of a running monitor.
    pub monitor_socket: PathBuf,
    /// cubby's data root: the image store, `containers/<id>` snapshots,
    /// `volumes/`.
    pub root: PathBuf,
    /// Containers go in cgroup `/<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
}

/// What the daemon keeps of an exec between create and start.
#[derive(Debug, Clone)]
pub struct ExecEntry {
    pub container: String,
    pub config: bollard_stubs::models::ExecConfig,
    pub started: bool,
    /// The exit code of an exec that could not be started after the hijack.
    pub failed: Option<i32>,
    /// The monitor took the exec (until then an inspect reports it
    /// running: it is starting, and has no exit code to show).
    pub launched: bool,
}

/// The engine: one per daemon (or per `cubby build`), shared by reference.
pub struct Engine {
    pub monitor_socket: PathBuf,
    pub images: Store,
    pub root: PathBuf,
    pub cgroup_parent: String,
    /// Execs created and not yet started, and started ones (for inspect).
    pub execs: Mutex<HashMap<String, ExecEntry>>,
    /// Registries pulled from over plain HTTP besides loopback ones
    /// (`--insecure-registry`; none after [`Engine::open`]).
    pub insecure_registries: Vec<String>,
    /// Container networks (None: containers get an isolated netns only).
    pub networks: Option<cubby_network::NetworkStore>,
    /// Containers the monitor does not know that hold a network endpoint
    /// (a build's RUN steps): the network reconcile counts them as live.
    pub transient: Mutex<std::collections::HashSet<String>>,
}

pub type Shared = Arc<Engine>;

impl Engine {
    /// Opens the image store under `root` and checks that the monitor
    /// answers on its socket.
    pub fn open(opts: EngineOptions) -> EngineResult<Engine> {
        let images = Store::open(&opts.root).map_err(|e| {
            EngineError::internal(format!(
                "open the image store at {}: {e}",
                opts.root.display()
            ))
        })?;
        MonitorClient::connect(&opts.monitor_socket)?;
        Ok(Engine::with_store(opts, images))
    }

    /// An engine over an image store already open (the daemon's); the
    /// monitor is not contacted until the first call.
    pub fn with_store(opts: EngineOptions, images: Store) -> Engine {
        Engine {
            monitor_socket: opts.monitor_socket,
            images,
            root: opts.root,
            cgroup_parent: opts.cgroup_parent,
            execs: Default::default(),
            insecure_registries: Vec::new(),
            networks: None,
            transient: Default::default(),
        }
    }

    /// Runs `f` with a fresh monitor connection on the blocking pool.
    pub(crate) async fn monitor<T, F>(&self, f: F) -> EngineResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut MonitorClient) -> crate::client::Result<T> + Send + 'static,
    {
        let socket = self.monitor_socket.clone();
        blocking(move || {
            let mut c = MonitorClient::connect(&socket)?;
            Ok(f(&mut c)?)
        })
        .await
    }

    /// One monitor request over an async connection, without a timeout
    /// (stop, restart and wait last as long as the container).
    pub(crate) async fn call(&self, req: Request) -> EngineResult<Response> {
        conn::call(&self.monitor_socket, &req).await
    }

    /// Adds an event to the monitor's log; a failure only loses the event.
    pub(crate) async fn publish(&self, e: crate::monitor::events::Event) {
        let _ = self.call(Request::Publish(Box::new(e))).await;
    }

    /// The volume store under the root.
    pub fn volume_store(&self) -> EngineResult<crate::volumes::VolumeStore> {
        Ok(crate::volumes::VolumeStore::open(&self.root)?)
    }
}

/// A 64-hex-digit id, as Docker's.
pub fn new_id() -> EngineResult<String> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| EngineError::internal(format!("read /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs blocking work on tokio's blocking pool; the error type is the
/// caller's (the engine's, or the API's, which every engine error becomes).
pub async fn blocking<T, E, F>(f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<EngineError> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(EngineError::internal(format!("worker failed: {e}"))))?
}
