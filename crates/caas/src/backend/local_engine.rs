//! "If no engine answers on the socket, `cubby serve` starts `cubby daemon`
//! itself." The daemon is spawned detached (its own process group, stdin
//! closed, output appended to `<root>/daemon.log`), so it and the sandboxes
//! it runs outlive `cubby serve`, even a `kill -9` of it.

use super::BackendError;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a freshly spawned daemon may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`ensure_local_engine`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEngine {
    /// An engine already answered on the socket.
    AlreadyRunning,
    /// We started `cubby daemon` (this pid); its output goes to `log`.
    Started { pid: u32, log: PathBuf },
}

/// Whether an engine answers `GET /_ping` on `socket`.
pub async fn engine_answers(socket: &Path) -> bool {
    let Some(path) = socket.to_str() else {
        return false;
    };
    let Ok(docker) = bollard::Docker::connect_with_unix(path, 5, bollard::API_DEFAULT_VERSION)
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), docker.ping()).await,
        Ok(Ok(_))
    )
}

/// Pings `socket`; if nothing answers, starts `<cubby_exe> --root ROOT daemon
/// --listen unix://SOCKET` detached and waits until it answers.
pub async fn ensure_local_engine(
    cubby_exe: &Path,
    root: &Path,
    socket: &Path,
) -> Result<LocalEngine, BackendError> {
    ensure_local_engine_with(cubby_exe, root, socket, &[], &[]).await
}

/// [`ensure_local_engine`] with more global `cubby` arguments (before the
/// `daemon` subcommand, e.g. `--state-dir`) and more `cubby daemon`
/// arguments (e.g. `--cgroup-parent`, network options).
pub async fn ensure_local_engine_with(
    cubby_exe: &Path,
    root: &Path,
    socket: &Path,
    global_args: &[OsString],
    daemon_args: &[OsString],
) -> Result<LocalEngine, BackendError> {
    let endpoint = format!("unix://{}", socket.display());
    let failed = |reason: String| BackendError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    if engine_answers(socket).await {
        return Ok(LocalEngine::AlreadyRunning);
    }
    if !cubby_exe.is_file() {
        return Err(failed(format!(
            "no engine answers and {} (to start `cubby daemon`) does not exist",
            cubby_exe.display()
        )));
    }
    std::fs::create_dir_all(root)
        .map_err(|e| failed(format!("cannot create the root {}: {e}", root.display())))?;
    let log = root.join("daemon.log");
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| failed(format!("cannot open {}: {e}", log.display())))
    };
    let (out, err) = (open_log()?, open_log()?);
    let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = Command::new(cubby_exe)
        .arg("--root")
        .arg(root)
        .args(global_args)
        .arg("daemon")
        .arg("--listen")
        .arg(&endpoint)
        .args(daemon_args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C or a kill of the serve's group
        // leaves the engine (and the sandboxes) running.
        .process_group(0)
        .spawn()
        .map_err(|e| failed(format!("cannot start {} daemon: {e}", cubby_exe.display())))?;
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if engine_answers(socket).await {
            // Reap it if it ever exits while we live; it is not our child
            // in any other sense.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(LocalEngine::Started { pid, log });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!(
                "`cubby daemon` exited ({status}) before answering: {}",
                log_tail(&log, log_start)
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "`cubby daemon` (pid {pid}) did not answer within {START_TIMEOUT:?}; stopped it: {}",
                log_tail(&log, log_start)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines the daemon wrote in this attempt.
fn log_tail(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.lines().rev().take(10).collect();
    if lines.is_empty() {
        format!("it wrote nothing to {}", log.display())
    } else {
        let mut lines = lines;
        lines.reverse();
        format!("{} says: {}", log.display(), lines.join(" | "))
    }
}
