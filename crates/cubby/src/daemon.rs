//! `cubby daemon` (the Docker Engine API) and `cubby monitor` (the process
//! that parents every container); see docs/engine.md for the process model.
//!
//! The daemon starts a monitor when none answers on the monitor socket: the
//! same executable, `cubby monitor`, in its own process group so a Ctrl-C
//! meant for the daemon leaves the containers alone, with its output
//! appended to `<root>/monitor.log`. The monitor outlives the daemon.

use crate::tls::{TlsFiles, TlsListener};
use anyhow::{bail, Context, Result};
use cubby_engine::api;
use cubby_engine::client::MonitorClient;
use cubby_engine::monitor::Monitor;
use cubby_engine::service::{networks as engine_networks, Engine, EngineOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API socket when no `--listen` is given.
pub const DEFAULT_SOCKET: &str = "/run/cubby/cubby.sock";
/// The group that may use the API socket besides root, if it exists.
pub const SOCKET_GROUP: &str = "cubby";

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Where to serve the API: unix:///PATH, or tcp://IP:PORT with all
    /// three TLS flags (plain TCP is refused) (repeatable).
    #[arg(
        long = "listen",
        value_name = "ADDR",
        default_value = "unix:///run/cubby/cubby.sock"
    )]
    pub listen: Vec<String>,
    /// The monitor's socket (default: monitor.sock next to the API socket).
    #[arg(long, value_name = "PATH")]
    pub monitor_socket: Option<PathBuf>,
    /// Containers go in cgroup /<NAME>/<id>.
    #[arg(long, value_name = "NAME", default_value = "cubby")]
    pub cgroup_parent: String,
    /// The server certificate (PEM) for tcp:// addresses.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA (PEM).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub net: crate::network_args::NetArgs,
}

#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    /// The socket to serve the daemon on.
    #[arg(long, value_name = "PATH", default_value = "/run/cubby/monitor.sock")]
    pub socket: PathBuf,
}

/// A `--listen` address.
#[derive(Debug, PartialEq)]
enum Addr {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// `unix:///run/x.sock` or a bare path → a socket path; `tcp://IP:PORT`
/// only with `tls` (the API runs containers as root: never in clear text,
/// never to a client without a certificate).
fn parse_addr(addr: &str, tls: bool) -> Result<Addr> {
    if let Some(hostport) = addr.strip_prefix("tcp://") {
        if !tls {
            bail!(
                "--listen {addr}: plain TCP is refused; serve TCP only with TLS and client \
                 certificates: add --tls-cert, --tls-key and --tls-ca"
            );
        }
        let sock = hostport.trim_end_matches('/').parse().with_context(|| {
            format!("--listen {addr}: expected tcp://IP:PORT (e.g. tcp://127.0.0.1:2376)")
        })?;
        return Ok(Addr::Tcp(sock));
    }
    unix_path(addr).map(Addr::Unix)
}

/// `unix:///run/x.sock` or a bare path → the path.
fn unix_path(addr: &str) -> Result<PathBuf> {
    let path = addr.strip_prefix("unix://").unwrap_or(addr);
    if addr.contains("://") && !addr.starts_with("unix://") {
        bail!("--listen {addr}: only unix:///PATH and tcp://IP:PORT addresses are served");
    }
    if !path.starts_with('/') {
        bail!("--listen {addr}: the socket path must be absolute (unix:///run/cubby/cubby.sock)");
    }
    Ok(PathBuf::from(path))
}

pub fn run_daemon(
    args: DaemonArgs,
    root: &Path,
    state_dir: &Path,
    insecure_registries: &[String],
) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cubby daemon needs root to create containers: run it with sudo");
    }
    raise_open_files_limit("cubby daemon");
    let tls = TlsFiles::from_parts(
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.tls_ca.clone(),
        "cubby daemon",
    )?;
    let addrs = args
        .listen
        .iter()
        .map(|a| parse_addr(a, tls.is_some()))
        .collect::<Result<Vec<_>>>()?;
    if addrs.is_empty() {
        bail!("give at least one --listen address");
    }
    if tls.is_some() && !addrs.iter().any(|a| matches!(a, Addr::Tcp(_))) {
        bail!("--tls-cert/--tls-key/--tls-ca are for tcp:// addresses: add --listen tcp://IP:PORT");
    }
    // Checked before anything starts: a bad file is a start-up error.
    let tls_config = tls.as_ref().map(crate::tls::server_config).transpose()?;
    let first_unix = addrs.iter().find_map(|a| match a {
        Addr::Unix(p) => Some(p.as_path()),
        Addr::Tcp(_) => None,
    });
    let monitor_socket = args.monitor_socket.clone().unwrap_or_else(|| {
        first_unix
            .and_then(Path::parent)
            .unwrap_or(Path::new("/run/cubby"))
            .join("monitor.sock")
    });
    ensure_monitor(&monitor_socket, root, state_dir)?;
    let images = cubby_image::store::Store::open(root)
        .with_context(|| format!("open the image store at {}", root.display()))?;
    let mut daemon = Engine::with_store(
        EngineOptions {
            monitor_socket,
            root: root.to_path_buf(),
            cgroup_parent: args.cgroup_parent,
        },
        images,
    );
    daemon.insecure_registries = insecure_registries.to_vec();
    daemon.networks = Some(args.net.open(root, state_dir)?);
    let daemon = Arc::new(daemon);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(serve(addrs, tls_config, daemon))
}

async fn serve(
    addrs: Vec<Addr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    daemon: api::Shared,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(engine_networks::watch(daemon.clone()));
    let mut servers = Vec::new();
    for addr in &addrs {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let server = match (addr, &tls) {
            (Addr::Unix(path), _) => tokio::spawn(api::serve_with(
                bind(path)?,
                daemon.clone(),
                cubby_build::api::router(daemon.clone()),
                shutdown,
            )),
            (Addr::Tcp(sock), Some(config)) => {
                let tcp = tokio::net::TcpListener::bind(sock)
                    .await
                    .with_context(|| format!("listen on tcp://{sock}"))?;
                let listener = TlsListener::new(tcp, config.clone())?;
                tokio::spawn(api::serve_with(
                    listener,
                    daemon.clone(),
                    cubby_build::api::router(daemon.clone()),
                    shutdown,
                ))
            }
            (Addr::Tcp(sock), None) => bail!("tcp://{sock} needs TLS"),
        };
        servers.push(server);
    }
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for (server, addr) in servers.into_iter().zip(&addrs) {
        let served = server.await.context("API server task")?;
        if let Addr::Unix(path) = addr {
            let _ = std::fs::remove_file(path);
        }
        if let Err(e) = served {
            result = Err(e).with_context(|| format!("serve {addr:?}"));
        }
    }
    result
}

/// Listens on `path` with mode 0660 and group [`SOCKET_GROUP`] if it exists.
fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    bind_for_group(path, SOCKET_GROUP)
}

fn bind_for_group(path: &Path, group_name: &str) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // A socket left by a killed daemon; refuse to steal a live one.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "{} is served by another process (another cubby daemon?)",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name(group_name) {
        nix::unistd::chown(path, None, Some(group.gid))
            .with_context(|| format!("give {} to group {group_name}", path.display()))?;
    }
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

fn monitor_answers(socket: &Path) -> bool {
    MonitorClient::connect_timeout(socket, Duration::from_secs(5))
        .is_ok_and(|mut c| c.ping().is_ok())
}

/// Starts `cubby monitor` unless one answers on `socket`, and waits until
/// it does.
fn ensure_monitor(socket: &Path, root: &Path, state_dir: &Path) -> Result<()> {
    if monitor_answers(socket) {
        return Ok(());
    }
    std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    let log_path = root.join("monitor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("find the cubby executable")?;
    let mut child = Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("monitor")
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("dup the monitor log")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start cubby monitor")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !monitor_answers(socket) {
        if let Some(status) = child.try_wait().context("wait for cubby monitor")? {
            bail!(
                "cubby monitor exited {status} before serving {}; see {}",
                socket.display(),
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "cubby monitor did not answer on {} within 15 s; see {}",
                socket.display(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reap it if it ever exits while we run.
    std::thread::spawn(move || child.wait());
    Ok(())
}

pub fn run_monitor(args: MonitorArgs, root: &Path, state_dir: &Path) -> Result<()> {
    // CVE-2019-5736: every container, exec and restart is cloned from this
    // process, so it runs from a sealed memfd copy of itself (re-executing
    // here once); nothing in a container can reach the host's binary.
    cubby_runtime::cloned_exe::ensure_sealed()
        .context("re-execute the monitor from a sealed copy of cubby")?;
    // The runtime clones containers from this process: no threads, ever.
    cubby_runtime::container::ensure_single_threaded()?;
    raise_open_files_limit("cubby monitor");
    let mut monitor = Monitor::new(root, state_dir)
        .with_context(|| format!("start the monitor on {}", root.display()))?;
    for e in monitor.recovery_errors() {
        eprintln!("cubby monitor: recovery: {e}");
    }
    monitor
        .serve(&args.socket)
        .with_context(|| format!("serve {}", args.socket.display()))?;
    Ok(())
}

/// Raises the soft limit on open files to the hard one, as dockerd and
/// containerd run: the monitor holds a few descriptors per container (log,
/// stdio, process handles), so a 1024 soft limit failed new containers
/// ("init died before start") past about 300 on one host. Containers do not
/// inherit it: their spec carries its own RLIMIT_NOFILE (1024 by default,
/// `--ulimit nofile=...` to change).
fn raise_open_files_limit(who: &str) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // Root may go past the hard limit, up to the kernel's fs.nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < ceiling => {
            let raised = setrlimit(Resource::RLIMIT_NOFILE, ceiling, ceiling)
                .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
            if let Err(e) = raised {
                eprintln!("{who}: could not raise the open files limit from {soft}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("{who}: could not read the open files limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Deletes the temporary group even when the test fails.
    struct TempGroup(String);

    impl Drop for TempGroup {
        fn drop(&mut self) {
            let _ = Command::new("groupdel").arg(&self.0).status();
        }
    }

    /// The socket is 0660 and root's; it goes to the group when that exists
    /// (a uniquely named temporary group stands in for `cubby`).
    #[test]
    fn socket_mode_and_group() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates a group: run it as root"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let tmp = tempfile::tempdir().unwrap();
        let name = format!("cubbyt{}", std::process::id());

        let path = tmp.path().join("run/a.sock");
        let _a = bind_for_group(&path, &name).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), 0, "no such group yet: stays root's");

        let st = Command::new("groupadd").arg(&name).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "groupadd {name} failed (needs the passwd package)"
        );
        let _group = TempGroup(name.clone());
        let gid = nix::unistd::Group::from_name(&name)
            .unwrap()
            .expect("the group just added")
            .gid;
        let path = tmp.path().join("run/b.sock");
        let _b = bind_for_group(&path, &name).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid.as_raw());
        assert_eq!(meta.uid(), 0);

        // A live socket is not stolen.
        let err = bind_for_group(&path, &name).unwrap_err();
        assert!(format!("{err}").contains("another process"), "{err}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            unix_path("unix:///run/cubby/cubby.sock").unwrap(),
            PathBuf::from("/run/cubby/cubby.sock")
        );
        assert_eq!(
            unix_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(unix_path("tcp://127.0.0.1:2375").is_err());
        assert_eq!(
            parse_addr("tcp://127.0.0.1:2376", true).unwrap(),
            Addr::Tcp("127.0.0.1:2376".parse().unwrap())
        );
        let plain = parse_addr("tcp://127.0.0.1:2375", false).unwrap_err();
        assert!(
            format!("{plain}").contains("plain TCP is refused"),
            "{plain}"
        );
        assert!(parse_addr("tcp://localhost", true).is_err());
        assert!(parse_addr("http://127.0.0.1:80", true).is_err());
        assert!(unix_path("unix://rel.sock").is_err());
    }
}
