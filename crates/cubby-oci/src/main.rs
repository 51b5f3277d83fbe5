//! cubby-oci: an OCI runtime with runc's command-line contract, so podman
//! (`--runtime`), containerd and the OCI validation tools can drive cubby.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cubby_runtime::container::{self, CreateExtras, CreateOptions, ExecOptions};
use cubby_runtime::state::{StateRoot, Status};
use cubby_runtime::{cgroups, cloned_exe, signals as signal, spec, tty, Error};
use oci_spec::runtime::{Process, ProcessBuilder, UserBuilder};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "cubby-oci",
    version,
    about = "OCI container runtime (runc-compatible command line)"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/cubby-oci")]
    root: PathBuf,
    /// fsync every state write (for a --root on a disk whose state must
    /// survive power loss; the default root is a tmpfs).
    #[arg(long = "fsync-state", global = true)]
    fsync_state: bool,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Accepted for compatibility: cubby manages cgroupfs directly and maps
    /// "slice:prefix:name" cgroup paths itself.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[arg(long, global = true, hide = true)]
    debug: bool,
    #[arg(long, global = true, hide = true)]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Pass fds 3..3+N to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    #[arg(long = "no-pivot", hide = true)]
    no_pivot: bool,
    /// Keep the caller's session keyring (default: a new one per container).
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (it waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a stopped container (--force kills it first).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a process in a running container.
    Exec(Box<ExecArgs>),
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the pids of a container.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
    },
    /// Print what this runtime supports (OCI features document).
    Features,
    /// Write a default config.json (Docker-like safe defaults) to a bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

#[derive(Args)]
struct ExecArgs {
    /// Process JSON (OCI process object); COMMAND and the flags below are ignored.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    #[arg(long = "process-label", hide = true)]
    process_label: Option<String>,
    #[arg(long, hide = true)]
    apparmor: Option<String>,
    #[arg(short = 'c', long = "cap", hide = true)]
    cap: Vec<String>,
    #[arg(long, hide = true)]
    cgroup: Option<String>,
    #[arg(long = "ignore-paused", hide = true)]
    ignore_paused: bool,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let log = (cli.log.clone(), cli.log_format.clone());
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            write_log(&log.0, &log.1, &msg);
            eprintln!("cubby-oci: {msg}");
            let code = match e.downcast_ref::<Error>() {
                Some(Error::CannotExec { code, .. }) => *code as i32,
                _ => 1,
            };
            std::process::exit(code);
        }
    }
}

/// podman reads the runtime's last error from --log (one JSON object per line).
fn write_log(path: &Option<PathBuf>, format: &str, msg: &str) {
    let Some(path) = path else { return };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let time = cubby_runtime::state::rfc3339_now();
    let line = if format == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level=error msg={msg:?}")
    };
    let _ = writeln!(f, "{line}");
}

fn run(cli: Cli) -> Result<i32> {
    let root = StateRoot::new(&cli.root).with_fsync(cli.fsync_state);
    match cli.cmd {
        Cmd::Create(args) => {
            cloned_exe::ensure_sealed()?;
            create(&root, &args, false)?;
            Ok(0)
        }
        Cmd::Start { id } => {
            container::start(&root, &id)?;
            Ok(0)
        }
        Cmd::State { id } => {
            let st = container::state(&root, &id)?;
            println!("{}", serde_json::to_string_pretty(&st.to_oci_json())?);
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            let sig = signal::parse(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill_container(&root, &id, sig, all)?;
            Ok(0)
        }
        Cmd::Delete { force, id } => {
            match container::delete(&root, &id, force) {
                // runc treats deleting a missing container with --force as done.
                Err(Error::NotFound(_)) if force => {}
                other => other?,
            }
            Ok(0)
        }
        Cmd::Run {
            create: args,
            detach,
            keep,
        } => {
            cloned_exe::ensure_sealed()?;
            run_container(&root, &args, detach, keep)
        }
        Cmd::Exec(args) => {
            cloned_exe::ensure_sealed()?;
            exec(&root, *args)
        }
        Cmd::List { format, quiet } => {
            let all = root.list()?;
            if quiet {
                for st in &all {
                    println!("{}", st.id);
                }
            } else if format == "json" {
                let v: Vec<_> = all.iter().map(|s| s.to_oci_json()).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} CREATED",
                    "ID", "PID", "STATUS", "BUNDLE"
                );
                for st in &all {
                    let pid = if st.status == Status::Stopped {
                        0
                    } else {
                        st.pid
                    };
                    println!(
                        "{:<24} {:<8} {:<10} {:<40} {}",
                        st.id,
                        pid,
                        st.status,
                        st.bundle.display(),
                        st.created
                    );
                }
            }
            Ok(0)
        }
        Cmd::Pause { id } => {
            pause(&root, &id, true)?;
            Ok(0)
        }
        Cmd::Resume { id } => {
            pause(&root, &id, false)?;
            Ok(0)
        }
        Cmd::Ps { format, id } => {
            let st = container::state(&root, &id)?;
            let cg = cgroups::Cgroup::new(cgroups::Hierarchy::detect()?, &st.cgroup_path)?;
            let pids = cg.pids()?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID");
                for p in pids {
                    println!("{p}");
                }
            }
            Ok(0)
        }
        Cmd::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists: remove it first", path.display());
            }
            let s = spec::default_spec(Path::new("rootfs"), vec!["sh".into()]);
            spec::save(&s, &path)?;
            Ok(0)
        }
    }
}

fn create(root: &StateRoot, args: &CreateArgs, init: bool) -> Result<container::Created> {
    if args.no_pivot {
        bail!("--no-pivot is not supported: cubby-oci always enters the rootfs with pivot_root (or chroot when the spec has no mount namespace)");
    }
    let spec = spec::load(&args.bundle)?;
    let created = container::create_with(
        CreateOptions {
            id: &args.id,
            bundle: &args.bundle,
            spec,
            root,
            console_socket: args.console_socket.as_deref(),
            pid_file: args.pid_file.as_deref(),
            init,
            preserve_fds: args.preserve_fds,
        },
        &CreateExtras {
            no_new_keyring: args.no_new_keyring,
        },
    )
    .with_context(|| format!("create container {:?}", args.id))?;
    Ok(created)
}

fn run_container(root: &StateRoot, args: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    let created = create(root, args, false)?;
    if detach && created.pty_master.is_some() {
        let _ = container::delete(root, &args.id, true);
        bail!("a detached container with a terminal needs --console-socket");
    }
    let pid = nix::unistd::Pid::from_raw(created.state.pid);
    // Forward the signals a user sends to `run` to the container, as runc does.
    let forwarder = signal::Forwarder::install(pid)?;
    if let Err(e) = container::start(root, &args.id) {
        let _ = container::delete(root, &args.id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    if let Some(master) = &created.pty_master {
        let stop = tty::pidfd(pid)?;
        tty::attach(master, Some(stop.as_fd()))?;
    }
    let code = container::wait_exit_code(pid)?;
    drop(forwarder);
    if !keep {
        container::delete(root, &args.id, true)?;
    }
    Ok(code)
}

fn exec(root: &StateRoot, args: ExecArgs) -> Result<i32> {
    let process = match &args.process {
        Some(path) => {
            let data = std::fs::read(path)
                .with_context(|| format!("read process file {}", path.display()))?;
            serde_json::from_slice::<Process>(&data)
                .with_context(|| format!("parse process file {}", path.display()))?
        }
        None => process_from_flags(root, &args)?,
    };
    let execed = container::exec(
        root,
        &args.id,
        &process,
        ExecOptions {
            console_socket: args.console_socket.as_deref(),
            pid_file: args.pid_file.as_deref(),
            preserve_fds: args.preserve_fds,
        },
    )?;
    if args.detach {
        return Ok(0);
    }
    let forwarder = signal::Forwarder::install(execed.pid)?;
    if let Some(master) = &execed.pty_master {
        let stop = tty::pidfd(execed.pid)?;
        tty::attach(master, Some(stop.as_fd()))?;
    }
    let code = container::wait_exit_code(execed.pid)?;
    drop(forwarder);
    Ok(code)
}

/// runc's exec flags on top of the container's own process settings.
fn process_from_flags(root: &StateRoot, args: &ExecArgs) -> Result<Process> {
    if args.command.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    let base = container::spec_of(root, &args.id)?
        .process()
        .clone()
        .unwrap_or_default();
    let mut env = base.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    let mut user = base.user().clone();
    if let Some(u) = &args.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a.parse::<u32>()?, b.parse::<u32>()?),
            None => (
                u.parse::<u32>()
                    .with_context(|| format!("--user {u:?}: use UID[:GID]"))?,
                0,
            ),
        };
        user = UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .additional_gids(args.additional_gids.clone())
            .build()?;
    }
    let mut p = ProcessBuilder::default()
        .args(args.command.clone())
        .env(env)
        .cwd(args.cwd.clone().unwrap_or_else(|| base.cwd().clone()))
        .terminal(args.tty)
        .user(user)
        .no_new_privileges(args.no_new_privs || base.no_new_privileges().unwrap_or(false))
        .build()?;
    p.set_capabilities(base.capabilities().clone());
    p.set_rlimits(base.rlimits().clone());
    Ok(p)
}

fn pause(root: &StateRoot, id: &str, freeze: bool) -> Result<()> {
    let mut st = container::state(root, id)?;
    let wanted = if freeze {
        Status::Running
    } else {
        Status::Paused
    };
    if st.status != wanted {
        bail!("container {id:?} is {}, not {wanted}", st.status);
    }
    let cg = cgroups::Cgroup::new(cgroups::Hierarchy::detect()?, &st.cgroup_path)?;
    if freeze {
        cg.freeze()?;
        st.status = Status::Paused;
    } else {
        cg.thaw()?;
        st.status = Status::Running;
    }
    root.save(&st)?;
    Ok(())
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": cubby_runtime::hooks::Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "mountOptions": ["ro","rw","nosuid","suid","nodev","dev","noexec","exec","sync","async",
            "dirsync","remount","mand","nomand","atime","noatime","diratime","nodiratime","bind",
            "rbind","relatime","norelatime","strictatime","nostrictatime","private","rprivate",
            "shared","rshared","slave","rslave","unbindable","runbindable"],
        "linux": {
            "namespaces": ["cgroup","ipc","mount","network","pid","user","uts"],
            "capabilities": cubby_runtime::capabilities::known_names(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW","SCMP_ACT_ERRNO","SCMP_ACT_KILL","SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD","SCMP_ACT_LOG","SCMP_ACT_TRAP","SCMP_ACT_TRACE"],
                "operators": ["SCMP_CMP_EQ","SCMP_CMP_NE","SCMP_CMP_LT","SCMP_CMP_LE",
                    "SCMP_CMP_GT","SCMP_CMP_GE","SCMP_CMP_MASKED_EQ"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.cubby.runtime": "cubby-oci"}
    })
}
