//! cubby-monitor: the process that parents every container and serves the
//! daemon on a Unix socket (see cubby_engine::monitor and docs/engine.md).
//!
//!   cubby-monitor --root DIR --state-dir DIR --socket PATH
//!
//! Runs until SIGTERM or SIGINT, then exits 0 leaving containers running
//! for the next monitor to adopt. Errors are printed as one line.

use anyhow::{bail, Context};
use cubby_engine::monitor::Monitor;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cubby-monitor --root DIR --state-dir DIR --socket PATH";

struct Args {
    root: PathBuf,
    state_dir: PathBuf,
    socket: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut root, mut state_dir, mut socket) = (None, None, None);
    let mut args = std::env::args_os().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.to_str() {
            Some("--root") => &mut root,
            Some("--state-dir") => &mut state_dir,
            Some("--socket") => &mut socket,
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
    match (root, state_dir, socket) {
        (Some(root), Some(state_dir), Some(socket)) => Ok(Args {
            root,
            state_dir,
            socket,
        }),
        _ => bail!("{USAGE}"),
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    // The runtime clones containers from this process: no threads, ever.
    cubby_runtime::container::ensure_single_threaded()?;
    let mut monitor = Monitor::new(&args.root, &args.state_dir)
        .with_context(|| format!("start the monitor on {}", args.root.display()))?;
    for e in monitor.recovery_errors() {
        eprintln!("cubby-monitor: recovery: {e}");
    }
    monitor
        .serve(&args.socket)
        .with_context(|| format!("serve {}", args.socket.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cubby-monitor: {e:#}");
            ExitCode::FAILURE
        }
    }
}
