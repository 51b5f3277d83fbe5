//! cubby: the command-line front of the platform. Without a daemon, `cubby
//! run` drives the runtime library directly.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cubby::images::Images;
use cubby::run_args::{build_spec, RunArgs};
use cubby::table::{self, Table};
use cubby_image::snapshot::Snapshot;
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
    /// Where images, layers and container filesystems live.
    #[arg(
        long,
        global = true,
        env = "CUBBY_ROOT",
        default_value = "/var/lib/cubby"
    )]
    root: PathBuf,
    /// Registries to reach over plain HTTP (localhost and 127.0.0.1 always are).
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "CUBBY_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registry: Vec<String>,
    /// Where the state of running containers lives.
    #[arg(
        long,
        global = true,
        env = "CUBBY_STATE_DIR",
        default_value = "/run/cubby/containers"
    )]
    state_dir: PathBuf,
    /// The daemon for container commands: unix:///PATH or tcp://HOST:PORT
    /// (default: /run/cubby/cubby.sock when a daemon answers there).
    #[arg(short = 'H', long, env = "CUBBY_HOST", value_name = "ADDR")]
    host: Option<String>,
    /// Our client certificate for a tcp:// host (PEM).
    #[arg(long, env = "CUBBY_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "CUBBY_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// The CA that signed the daemon's certificate (PEM).
    #[arg(long, env = "CUBBY_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
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
        /// KEY=VALUE, e.g. label=course=os101 (daemon only).
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
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
    /// Fetch a container's logs (daemon only).
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<String>,
        #[arg(short, long)]
        timestamps: bool,
        id: String,
    },
    /// Stop containers: SIGTERM, then SIGKILL after -t seconds (daemon only).
    Stop {
        #[arg(short = 't', long = "time", value_name = "SECONDS")]
        time: Option<i64>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Start stopped containers (daemon only).
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Restart containers (daemon only).
    Restart {
        #[arg(short = 't', long = "time", value_name = "SECONDS")]
        time: Option<i64>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a command in a running container (daemon only).
    Exec {
        #[arg(short, long)]
        interactive: bool,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long, value_name = "UID[:GID]")]
        user: Option<String>,
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
        env: Vec<String>,
        container: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show containers as JSON (daemon only).
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Pull an image from a registry.
    Pull {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_name = "OS/ARCH")]
        platform: Option<String>,
        image: String,
    },
    /// Push an image to a registry.
    Push { image: String },
    /// List images.
    Images {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove images (refuses while a container uses one, unless -f).
    Rmi {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import a root filesystem tarball (.tar, .tar.gz, .tar.zst) as an image.
    Import {
        file: PathBuf,
        image: String,
        /// A Dockerfile instruction for the image's config (CMD, ENTRYPOINT,
        /// ENV, USER, WORKDIR, EXPOSE, LABEL, STOPSIGNAL, VOLUME); repeatable.
        #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
        changes: Vec<String>,
    },
    /// Build an image from a Dockerfile (runs here, with or without a daemon).
    Build(cubby::build::BuildArgs),
    /// Make an image of a container's changes (on this machine's store).
    Commit(cubby::build::CommitArgs),
    /// Runs one RUN step of a build (internal: started by the builder).
    #[command(hide = true)]
    BuildStep {
        #[arg(long)]
        id: String,
        bundle: PathBuf,
    },
    /// Save images to a tar archive (OCI image layout and docker-save
    /// manifest.json in one), to -o FILE or stdout.
    Save {
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a tar archive (docker save or OCI layout; .tar.gz
    /// too), from -i FILE or stdin.
    Load {
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Store credentials for a registry (checked against it first).
    Login {
        #[arg(short, long)]
        username: Option<String>,
        #[arg(short, long)]
        password: Option<String>,
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        registry: String,
    },
    /// Forget the credentials of a registry.
    Logout { registry: String },
    /// Manage networks (daemon only).
    #[command(subcommand)]
    Network(cubby::remote::network::NetworkCmd),
    /// List a container's published ports (daemon only).
    Port {
        container: String,
        /// PORT[/tcp|udp]: only this one.
        port: Option<String>,
    },
    /// Serve the Docker Engine API (starts the container monitor if needed).
    Daemon(cubby::daemon::DaemonArgs),
    /// The classroom service: REST API, accounts, classes, sandboxes.
    Serve(Box<cubby::serve::ServeArgs>),
    /// Operate the classroom service's store (users, demo data).
    Admin(cubby::serve::AdminArgs),
    /// The process that parents every container (started by the daemon).
    #[command(hide = true)]
    Monitor(cubby::daemon::MonitorArgs),
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Show an image's config, manifest and layers as JSON.
    Inspect { image: String },
    /// List images.
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Delete blobs and layers no image or container uses.
    Prune,
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
    if let Some(code) = remote(&cli)? {
        return Ok(code);
    }
    let root = StateRoot::new(&cli.state_dir);
    let images = || {
        Images::open(&cli.root).map(|mut i| {
            i.insecure = cli.insecure_registry.clone();
            i
        })
    };
    match cli.cmd {
        Cmd::Run(args) => run(&root, images()?, *args),
        Cmd::Pull {
            quiet,
            platform,
            image,
        } => {
            images()?.pull(&image, platform.as_deref(), quiet)?;
            Ok(0)
        }
        Cmd::Push { image } => {
            images()?.push(&image)?;
            Ok(0)
        }
        Cmd::Images { quiet } | Cmd::Image(ImageCmd::Ls { quiet }) => {
            images()?.list(quiet)?;
            Ok(0)
        }
        Cmd::Image(ImageCmd::Inspect { image }) => {
            images()?.inspect(&image)?;
            Ok(0)
        }
        Cmd::Rmi {
            force,
            images: names,
        }
        | Cmd::Image(ImageCmd::Rm {
            force,
            images: names,
        }) => Ok(if images()?.remove(&names, force)? {
            0
        } else {
            1
        }),
        Cmd::Image(ImageCmd::Prune) => {
            images()?.prune()?;
            Ok(0)
        }
        Cmd::Tag { source, target } => {
            images()?.tag(&source, &target)?;
            Ok(0)
        }
        Cmd::Build(args) => {
            if cli.host.is_some() {
                bail!("cubby build runs on this machine's store (--root); it does not use --host / CUBBY_HOST: unset it");
            }
            cubby::build::build(&images()?, &cli.state_dir, args)?;
            Ok(0)
        }
        Cmd::Commit(args) => {
            if cli.host.is_some() {
                bail!("cubby commit works on this machine's store (--root); with a remote daemon use `docker commit`");
            }
            cubby::build::commit(&images()?, args)?;
            Ok(0)
        }
        Cmd::BuildStep { id, bundle } => {
            cloned_exe::ensure_sealed()?;
            Ok(cubby_build::run::step_main(&cli.state_dir, &id, &bundle)?)
        }
        Cmd::Import {
            file,
            image,
            changes,
        } => {
            images()?.import(&file, &image, &changes)?;
            Ok(0)
        }
        Cmd::Save {
            output,
            images: names,
        } => {
            images()?.save(&names, output.as_deref())?;
            Ok(0)
        }
        Cmd::Load { input, quiet } => {
            images()?.load(input.as_deref(), quiet)?;
            Ok(0)
        }
        Cmd::Login {
            username,
            password,
            password_stdin,
            registry,
        } => {
            cubby::images::login(
                &cli.insecure_registry,
                &registry,
                username,
                password_stdin,
                password,
            )?;
            Ok(0)
        }
        Cmd::Logout { registry } => {
            cubby::images::logout(&registry)?;
            Ok(0)
        }
        Cmd::Daemon(args) => {
            cubby::daemon::run_daemon(args, &cli.root, &cli.state_dir, &cli.insecure_registry)?;
            Ok(0)
        }
        Cmd::Serve(args) => {
            cubby::serve::run_serve(*args, &cli.root, &cli.state_dir)?;
            Ok(0)
        }
        Cmd::Admin(args) => {
            cubby::serve::run_admin(args, &cli.root)?;
            Ok(0)
        }
        Cmd::Monitor(args) => {
            cubby::daemon::run_monitor(args, &cli.root, &cli.state_dir)?;
            Ok(0)
        }
        Cmd::Logs { .. }
        | Cmd::Stop { .. }
        | Cmd::Start { .. }
        | Cmd::Restart { .. }
        | Cmd::Exec { .. }
        | Cmd::Network(_)
        | Cmd::Port { .. }
        | Cmd::Inspect { .. } => bail!(
            "this command needs the cubby daemon: start `cubby daemon` (or point --host / CUBBY_HOST at one)"
        ),
        Cmd::Ps { filter, .. } if !filter.is_empty() => {
            bail!("--filter needs the cubby daemon: start `cubby daemon` (or point --host / CUBBY_HOST at one)")
        }
        Cmd::Ps { all, quiet, .. } => {
            let list = root.list()?;
            let mut out = Table::new(&["CONTAINER ID", "PID", "STATUS", "IMAGE", "CREATED"]);
            for st in list.iter().filter(|s| all || s.status != Status::Stopped) {
                if quiet {
                    println!("{}", st.id);
                    continue;
                }
                let pid = if st.status == Status::Stopped {
                    0
                } else {
                    st.pid
                };
                // Standalone containers start as soon as they are created
                // (`start` needs the daemon), so uptime is the age; the exit
                // code and time are not recorded here.
                let up = match table::parse_rfc3339(&st.created) {
                    Some(t) => format!("Up {}", table::human_duration(table::now_secs() - t)),
                    None => "Up".to_string(),
                };
                let status = match st.status {
                    Status::Running => up,
                    Status::Paused => format!("{up} (Paused)"),
                    Status::Creating | Status::Created => "Created".to_string(),
                    Status::Stopped => "Exited".to_string(),
                };
                // The image name for containers made from one, else the rootfs.
                let image = std::fs::read_to_string(
                    cli.root.join("containers").join(&st.id).join("image-name"),
                )
                .unwrap_or_else(|_| st.rootfs.display().to_string());
                out.row(&[
                    st.id.clone(),
                    pid.to_string(),
                    status,
                    image.trim().to_string(),
                    table::ago_rfc3339(&st.created),
                ]);
            }
            if !quiet {
                out.print();
            }
            Ok(0)
        }
        Cmd::Rm { force, ids } => {
            let mut failed = false;
            let snapshots = cli.root.join("containers");
            for id in ids {
                let removed = container::delete(&root, &id, force).and_then(|()| {
                    Snapshot::at(snapshots.join(&id))
                        .remove()
                        .map_err(|e| cubby_runtime::Error::Child(e.to_string()))
                });
                match removed {
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

/// Container commands go to the daemon when one answers (see
/// [`cubby::remote`]); `None` means run them here, standalone.
fn remote(cli: &Cli) -> Result<Option<i32>> {
    use cubby::remote::commands as rc;
    let container_cmd = matches!(
        cli.cmd,
        Cmd::Run(_)
            | Cmd::Ps { .. }
            | Cmd::Rm { .. }
            | Cmd::Kill { .. }
            | Cmd::Logs { .. }
            | Cmd::Stop { .. }
            | Cmd::Start { .. }
            | Cmd::Restart { .. }
            | Cmd::Exec { .. }
            | Cmd::Inspect { .. }
            | Cmd::Network(_)
            | Cmd::Port { .. }
    );
    if !container_cmd {
        return Ok(None);
    }
    // A run of a directory (--rootfs) can only be standalone: a daemon that
    // merely answers on the default socket does not take it (with an
    // explicit --host it is refused by name, see remote::commands).
    let explicit_host = cli.host.as_deref().is_some_and(|h| !h.is_empty());
    if matches!(&cli.cmd, Cmd::Run(a) if a.rootfs.is_some()) && !explicit_host {
        return Ok(None);
    }
    let tls = cubby::tls::TlsFiles::from_parts(
        cli.tls_cert.clone(),
        cli.tls_key.clone(),
        cli.tls_ca.clone(),
        "cubby",
    )?;
    let Some(r) = cubby::remote::Remote::find(cli.host.as_deref(), tls.as_ref(), &cli.root)? else {
        return Ok(None);
    };
    let c = &r.client;
    let code = match &cli.cmd {
        Cmd::Run(args) => r.block_on(rc::run(c, args))?,
        Cmd::Ps { all, quiet, filter } => r.block_on(rc::ps(c, *all, *quiet, filter))?,
        Cmd::Rm { force, ids } => r.block_on(rc::rm(c, *force, ids))?,
        Cmd::Kill { signal, id } => r.block_on(rc::kill(c, signal, std::slice::from_ref(id)))?,
        Cmd::Logs {
            follow,
            tail,
            timestamps,
            id,
        } => r.block_on(rc::logs(c, id, *follow, tail.as_deref(), *timestamps))?,
        Cmd::Stop { time, ids } => r.block_on(rc::stop(c, *time, ids))?,
        Cmd::Start { ids } => r.block_on(rc::start(c, ids))?,
        Cmd::Restart { time, ids } => r.block_on(rc::restart(c, *time, ids))?,
        Cmd::Inspect { ids } => r.block_on(rc::inspect(c, ids))?,
        Cmd::Network(cmd) => r.block_on(cubby::remote::network::network(c, cmd))?,
        Cmd::Port { container, port } => {
            r.block_on(cubby::remote::network::port(c, container, port.as_deref()))?
        }
        Cmd::Exec {
            interactive,
            tty,
            detach,
            user,
            workdir,
            env,
            container,
            command,
        } => r.block_on(rc::exec(
            c,
            rc::ExecArgs {
                interactive: *interactive,
                tty: *tty,
                detach: *detach,
                user: user.as_deref(),
                workdir: workdir.as_deref(),
                env,
                container,
                command,
            },
        ))?,
        _ => return Ok(None),
    };
    Ok(Some(code))
}

/// Removes a container's overlay snapshot when `run` fails or ends with --rm.
struct SnapshotGuard {
    snapshot: Option<Snapshot>,
}

impl SnapshotGuard {
    fn keep(&mut self) {
        if let Some(s) = self.snapshot.take() {
            // The container's changes stay for `cubby rm`; the mount does not.
            let _ = s.unmount();
        }
    }
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if let Some(s) = &self.snapshot {
            let _ = s.remove();
        }
    }
}

/// `cubby run IMAGE [CMD...]`: pulls per --pull, mounts an overlay over the
/// image's layers for this container, and applies the image's config.
fn resolve_image(
    images: &Images,
    args: &mut RunArgs,
    id: &str,
    guard: &mut SnapshotGuard,
) -> Result<()> {
    let Some((image, user_args)) = args.command.split_first() else {
        bail!(
            "give an image (or --rootfs DIR) and optionally a command: `cubby run IMAGE [CMD...]`"
        );
    };
    let (image, user_args) = (image.clone(), user_args.to_vec());
    let rec = images.for_run(&image, args.pull, args.platform.as_deref())?;
    let config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&images.store.read_blob(&rec.config_digest)?)
            .with_context(|| format!("image config of {image}"))?;
    let entrypoint = args.entrypoint.clone().map(|e| vec![e]);
    let defaults =
        cubby_image::config::run_defaults(&image, &config, entrypoint.as_deref(), &user_args)?;

    let dir = images.containers_dir().join(id);
    if dir.exists() {
        bail!("a container named {id} already exists: remove it with `cubby rm {id}`");
    }
    let rootfs = cubby_engine::snapshots::mount_for_image(
        &images.store,
        &rec,
        &defaults.exposed_ports,
        &dir,
    )?;
    guard.snapshot = Some(Snapshot::at(&dir));

    args.rootfs = Some(rootfs);
    args.command = defaults.command;
    args.image_env = defaults.env;
    if args.workdir.is_none() {
        args.workdir = defaults.workdir;
    }
    if args.user.is_none() {
        args.user = defaults.user;
    }
    Ok(())
}

fn run(root: &StateRoot, images: Images, mut args: RunArgs) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cubby run needs root to create namespaces and cgroups: run it with sudo");
    }
    args.reject_daemon_only()?;
    // Before anything else: the container must never see our on-disk binary.
    cloned_exe::ensure_sealed()?;
    let id = args.container_id()?;
    let mut guard = SnapshotGuard { snapshot: None };
    if args.rootfs.is_none() {
        resolve_image(&images, &mut args, &id, &mut guard)?;
    }
    let args = &args;
    let spec = build_spec(args, &id)?;
    if !args.interactive && !args.tty {
        // Like docker: without -i the container's stdin is empty.
        let null = std::fs::File::open("/dev/null").context("open /dev/null")?;
        nix::unistd::dup2_stdin(null.as_fd()).context("redirect stdin")?;
    }
    let rootfs = args.rootfs.clone().unwrap_or_default();
    let bundle = rootfs
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
        guard.keep();
    }
    Ok(code)
}
