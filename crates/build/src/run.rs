//! RUN steps: a container over an overlay snapshot of the stage, made by
//! the engine's one spec builder ([`cubby_engine::config::build`]) and run
//! by cubby's runtime in a helper process (`cubby build-step`), because the
//! runtime forks containers only from a single-threaded process and the
//! daemon is not one. Output is streamed line by line; the exit code is the
//! helper's.

use crate::error::{BuildError, Result};
use cubby_engine::config::{self, ContainerConfig, NetworkMode};
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How RUN containers are started.
#[derive(Clone)]
pub struct Runner {
    /// The `cubby` binary (its `build-step` subcommand).
    pub exe: PathBuf,
    /// The runtime's state directory for build containers.
    pub state_dir: PathBuf,
    /// cgroup parent of build containers (e.g. `cubby`).
    pub cgroup_parent: String,
    /// The engine whose networks RUN steps join (`--network bridge` or
    /// another network name); None: only `none` and `host`.
    pub engine: Option<cubby_engine::service::Shared>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("exe", &self.exe)
            .field("state_dir", &self.state_dir)
            .field("cgroup_parent", &self.cgroup_parent)
            .field("networks", &self.engine.is_some())
            .finish()
    }
}

/// A RUN container's network endpoint, released on drop.
struct NetHold<'a> {
    engine: &'a cubby_engine::service::Engine,
    id: &'a str,
}

impl Drop for NetHold<'_> {
    fn drop(&mut self) {
        if let Err(e) = cubby_engine::service::networks::release_transient(self.engine, self.id) {
            eprintln!("cubby build: release the network of {}: {e}", self.id);
        }
    }
}

/// One RUN.
pub struct RunStep<'a> {
    pub id: &'a str,
    pub rootfs: &'a Path,
    /// The snapshot dir: the bundle (`config.json` is written there).
    pub bundle: &'a Path,
    pub command: Vec<String>,
    pub image_env: Vec<String>,
    /// Build args in scope (`K=V`), not kept in the image.
    pub env: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub user: Option<String>,
    pub network: NetworkMode,
}

impl Runner {
    /// Runs the step; returns its exit code.
    pub fn run(&self, step: RunStep, out: &mut dyn FnMut(&str)) -> Result<i32> {
        let cfg = ContainerConfig {
            command: step.command,
            image_env: step.image_env,
            env: step.env,
            workdir: step.workdir,
            user: step.user,
            hostname: Some(step.id.chars().take(12).collect()),
            network: step.network,
            cgroup_path: Some(PathBuf::from(format!(
                "/{}/build-{}",
                self.cgroup_parent.trim_matches('/'),
                step.id
            ))),
            ..Default::default()
        };
        let mut spec = config::build(&cfg, step.rootfs)?;
        let _net = match &cfg.network {
            NetworkMode::None | NetworkMode::Host => None,
            NetworkMode::Default | NetworkMode::Named(_) => {
                let Some(engine) = self.engine.as_deref() else {
                    return Err(BuildError::invalid(format!(
                        "RUN on network {}: this builder has no container networks (use none or host)",
                        network_name(&cfg.network)
                    )));
                };
                cubby_engine::service::networks::setup_transient(engine, step.id, &cfg, &mut spec)
                    .map_err(|e| {
                        BuildError::invalid(format!(
                            "RUN on network {}: {e}",
                            network_name(&cfg.network)
                        ))
                    })?;
                Some(NetHold {
                    engine,
                    id: step.id,
                })
            }
        };
        let cfg_path = step.bundle.join("config.json");
        let json = serde_json::to_vec(&spec)
            .map_err(|e| BuildError::invalid(format!("RUN container spec: {e}")))?;
        std::fs::write(&cfg_path, json).map_err(|e| BuildError::io_path(&cfg_path, e))?;

        // stdout and stderr share one pipe: lines stay in order.
        let (r, w) = nix::unistd::pipe().map_err(|e| BuildError::io("pipe", e.into()))?;
        let w2: OwnedFd = w.try_clone().map_err(|e| BuildError::io("pipe", e))?;
        let mut child = Command::new(&self.exe)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("build-step")
            .arg("--id")
            .arg(step.id)
            .arg(step.bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2))
            .spawn()
            .map_err(|e| BuildError::io(format!("starting {}", self.exe.display()), e))?;
        let mut lines = BufReader::new(std::fs::File::from(r));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => out(&String::from_utf8_lossy(&buf)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BuildError::io("reading RUN output", e));
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| BuildError::io("waiting for the RUN helper", e))?;
        Ok(status.code().unwrap_or(128 + 9))
    }
}

fn network_name(n: &NetworkMode) -> &str {
    match n {
        NetworkMode::Named(n) => n,
        NetworkMode::Default => "bridge",
        NetworkMode::None => "none",
        NetworkMode::Host => "host",
    }
}

/// The `cubby build-step` helper: creates, starts and waits for the
/// container of `BUNDLE/config.json`, then deletes it (cgroup and state);
/// returns the command's exit code. Must run single-threaded.
pub fn step_main(state_dir: &Path, id: &str, bundle: &Path) -> cubby_runtime::Result<i32> {
    use cubby_runtime::container::{self, CreateOptions};
    let root = cubby_runtime::state::StateRoot::new(state_dir);
    let spec = cubby_runtime::spec::load(bundle)?;
    let created = container::create(CreateOptions {
        id,
        bundle,
        spec,
        root: &root,
        console_socket: None,
        pid_file: None,
        init: false,
        preserve_fds: 0,
    })?;
    let pid = nix::unistd::Pid::from_raw(created.state.pid);
    if let Err(e) = container::start(&root, id) {
        let _ = container::delete(&root, id, true);
        return Err(e);
    }
    let code = container::wait_exit_code(pid);
    let deleted = container::delete(&root, id, true);
    let code = code?;
    deleted?;
    Ok(code)
}
