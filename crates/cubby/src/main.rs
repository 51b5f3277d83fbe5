//! cubby: the command-line front of the platform. Without a daemon, `cubby
//! run` drives the runtime library directly.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cubby::run_args::{build_spec, RunArgs};
use cubby_runtime::cgroups::{Cgroup, Hierarchy};
use cubby_runtime::container::{self, CreateOptions};
use cubby_runtime::state::{StateRoot, Status};
use cubby_runtime::{cloned_exe, signals, tty, Error};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// Docker's exit code for an error of the runtime itself (not the command's).
const EXIT_CUBBY_ERROR: i32 = 125;

#[derive(Parser)]
#[command(
    name = "cubby",
    version,
    about = "Containers for classrooms: run, isolate, limit"
)]
struct Cli {
    /// Where the state of running containers lives.
    #[arg(
        long,
        global = true,
        env = "CUBBY_STATE_DIR",
        default_value = "/run/cubby/containers"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// List containers (running ones; -a for all).
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove containers (-f kills running ones first).
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send a signal (default SIGKILL, as docker kill) to a container.
    Kill {
        #[arg(short, long, default_value = "SIGKILL")]
        signal: String,
        id: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cubby: {e:#}");
            match e.downcast_ref::<Error>() {
                Some(Error::CannotExec { code, .. }) => *code as i32,
                _ => EXIT_CUBBY_ERROR,
            }
        }
    };
    std::process::exit(code);
}

fn dispatch(cli: Cli) -> Result<i32> {
    let root = StateRoot::new(&cli.state_dir);
    match cli.cmd {
        Cmd::Run(args) => run(&root, &args),
        Cmd::Ps { all, quiet } => {
            let list = root.list()?;
            if !quiet {
                println!(
                    "{:<24} {:<8} {:<10} {:<32} CREATED",
                    "CONTAINER ID", "PID", "STATUS", "ROOTFS"
                );
            }
            for st in list.iter().filter(|s| all || s.status != Status::Stopped) {
                if quiet {
                    println!("{}", st.id);
                } else {
                    let pid = if st.status == Status::Stopped {
                        0
                    } else {
                        st.pid
                    };
                    println!(
                        "{:<24} {:<8} {:<10} {:<32} {}",
                        st.id,
                        pid,
                        st.status,
                        st.rootfs.display(),
                        st.created
                    );
                }
            }
            Ok(0)
        }
        Cmd::Rm { force, ids } => {
            let mut failed = false;
            for id in ids {
                match container::delete(&root, &id, force) {
                    Ok(()) => println!("{id}"),
                    Err(e) => {
                        eprintln!("cubby: rm {id}: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        Cmd::Kill { signal, id } => {
            container::kill_container(&root, &id, signals::parse(&signal)?, false)?;
            Ok(0)
        }
    }
}

fn run(root: &StateRoot, args: &RunArgs) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cubby run needs root to create namespaces and cgroups: run it with sudo");
    }
    // Before anything else: the container must never see our on-disk binary.
    cloned_exe::ensure_sealed()?;
    let id = args.container_id()?;
    let spec = build_spec(args, &id)?;
    if !args.interactive && !args.tty {
        // Like docker: without -i the container's stdin is empty.
        let null = std::fs::File::open("/dev/null").context("open /dev/null")?;
        nix::unistd::dup2_stdin(null.as_fd()).context("redirect stdin")?;
    }
    let bundle = args
        .rootfs
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let created = container::create(CreateOptions {
        id: &id,
        bundle: &bundle,
        spec,
        root,
        console_socket: None,
        pid_file: None,
        init: args.init,
        preserve_fds: 0,
    })?;
    let pid = nix::unistd::Pid::from_raw(created.state.pid);
    let forwarder = signals::Forwarder::install(pid)?;
    if let Err(e) = container::start(root, &id) {
        let _ = container::delete(root, &id, true);
        return Err(e.into());
    }
    if let Some(master) = &created.pty_master {
        let stop = tty::pidfd(pid)?;
        tty::attach(master, Some(stop.as_fd()))?;
    }
    let mut code = container::wait_exit_code(pid)?;
    drop(forwarder);

    let cgroup = Cgroup::new(Hierarchy::detect()?, &created.state.cgroup_path)?;
    if cgroup.oom_killed().unwrap_or(false) {
        eprintln!("cubby: container {id} was killed: out of memory (raise --memory)");
        code = 137;
    }
    if args.rm {
        container::delete(root, &id, true)?;
    } else {
        // Keep the record for `cubby ps -a` / `cubby rm`; free the cgroup now.
        cgroup.destroy()?;
    }
    Ok(code)
}
