//! cubby-daemon: the Docker Engine API over a Unix socket (see
//! cubby_engine::api and docs/engine.md).
//!
//!   cubby-daemon --socket PATH --monitor-socket PATH --root DIR [--cgroup-parent NAME]
//!
//! `--root` is cubby's data root (its image store and the snapshots of
//! containers it creates); containers go in cgroup `/<cgroup-parent>/<id>`
//! (default `cubby`). The monitor must
//! already serve `--monitor-socket` (starting it is not done yet). Runs
//! until SIGTERM or SIGINT, then removes its socket and exits 0.

use anyhow::{bail, Context};
use cubby_engine::api::{self, Daemon};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str =
    "usage: cubby-daemon --socket PATH --monitor-socket PATH --root DIR [--cgroup-parent NAME]";

struct Args {
    socket: PathBuf,
    monitor_socket: PathBuf,
    root: PathBuf,
    cgroup_parent: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut socket, mut monitor_socket, mut root, mut cgroup) = (None, None, None, None);
    let mut args = std::env::args_os().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.to_str() {
            Some("--socket") => &mut socket,
            Some("--monitor-socket") => &mut monitor_socket,
            Some("--root") => &mut root,
            Some("--cgroup-parent") => &mut cgroup,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {flag:?}; {USAGE}"),
        };
        let value = args
            .next()
            .with_context(|| format!("{flag:?} needs a value; {USAGE}"))?;
        *slot = Some(PathBuf::from(value));
    }
    match (socket, monitor_socket, root) {
        (Some(socket), Some(monitor_socket), Some(root)) => Ok(Args {
            socket,
            monitor_socket,
            root,
            cgroup_parent: cgroup
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_else(|| "cubby".into()),
        }),
        _ => bail!("{USAGE}"),
    }
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

async fn run(args: Args) -> anyhow::Result<()> {
    let images = cubby_image::store::Store::open(&args.root)
        .with_context(|| format!("open the image store at {}", args.root.display()))?;
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // A socket left by a killed daemon; refuse to steal a live one.
    if std::os::unix::net::UnixStream::connect(&args.socket).is_ok() {
        bail!("{} is served by another process", args.socket.display());
    }
    match std::fs::remove_file(&args.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", args.socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(&args.socket)
        .with_context(|| format!("listen on {}", args.socket.display()))?;
    std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", args.socket.display()))?;
    let daemon = Arc::new(Daemon {
        monitor_socket: args.monitor_socket,
        images,
        root: args.root,
        cgroup_parent: args.cgroup_parent,
        unstarted: Default::default(),
    });
    let served = api::serve(listener, daemon, shutdown_signal()).await;
    let _ = std::fs::remove_file(&args.socket);
    served.context("serve")?;
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the runtime")?
            .block_on(run(args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cubby-daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}
