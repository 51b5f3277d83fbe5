//! `cubby build`: the builder on this machine's store, with or without a
//! daemon (the store is safe to share between processes).

use crate::images::Images;
use anyhow::{bail, Context, Result};
use clap::Args;
use cubby_build::{BuildOptions, Builder, Runner};
use cubby_engine::config::NetworkMode;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Name (and tag) of the image; may be given several times.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even when they are in the store.
    #[arg(long)]
    pub pull: bool,
    /// The network of RUN steps: none (default), host, bridge (the default
    /// network of `cubby daemon`) or a network's name.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Networking of this root (as `cubby daemon`'s), for RUN steps on a network.
    #[command(flatten)]
    pub net: crate::network_args::NetArgs,
    /// A label for the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// The build context directory.
    pub context: PathBuf,
}

fn key_values(list: &[String], what: &str, env: bool) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for kv in list {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            None if env && !kv.is_empty() => {
                if let Ok(v) = std::env::var(kv) {
                    m.insert(kv.clone(), v);
                }
            }
            _ => bail!("{what} {kv:?}: give KEY=VALUE"),
        }
    }
    Ok(m)
}

pub fn build(images: &Images, state_dir: &Path, args: BuildArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cubby build needs root to run RUN steps in containers: run it with sudo");
    }
    let network = match NetworkMode::parse(&args.network)
        .map_err(|e| anyhow::anyhow!("--network {}: {e}", args.network))?
    {
        NetworkMode::None | NetworkMode::Default => NetworkMode::None,
        m => m,
    };
    // RUN steps on a network join this root's networks (the daemon's, if
    // one runs: the network store locks across processes).
    let engine = match &network {
        NetworkMode::Named(name) => {
            let store = cubby_image::store::Store::open(&images.root)
                .with_context(|| format!("open the image store at {}", images.root.display()))?;
            let mut e = cubby_engine::service::Engine::with_store(
                cubby_engine::service::EngineOptions {
                    // Never contacted: the builder only uses the networks.
                    monitor_socket: state_dir.join("monitor.sock"),
                    root: images.root.clone(),
                    cgroup_parent: "cubby".into(),
                },
                store,
            );
            let nets = args.net.open(&images.root, state_dir)?;
            if nets.find(name)?.is_none() {
                bail!("--network {name}: no such network (see `docker network ls`)");
            }
            e.networks = Some(nets);
            Some(std::sync::Arc::new(e))
        }
        _ => None,
    };
    let opts = BuildOptions {
        context: args.context.clone(),
        dockerfile: args.file.clone().map(|f| {
            // -f is relative to the current directory, as with docker.
            if f.is_absolute() {
                f
            } else {
                std::env::current_dir().map(|d| d.join(&f)).unwrap_or(f)
            }
        }),
        tags: args.tags.clone(),
        build_args: key_values(&args.build_args, "--build-arg", true)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        network,
        labels: key_values(&args.labels, "--label", false)?,
    };
    let runner = Runner {
        exe: PathBuf::from("/proc/self/exe"),
        state_dir: state_dir.to_path_buf(),
        cgroup_parent: "cubby".into(),
        engine,
    };
    let pull = |name: &str| -> std::result::Result<(), String> {
        images
            .pull(name, None, true)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    };
    let builder = Builder::new(&images.store, runner, Some(&pull));
    let quiet = args.quiet;
    let mut stdout = std::io::stdout();
    let mut out = |s: &str| {
        if !quiet {
            let _ = stdout.write_all(s.as_bytes());
            let _ = stdout.flush();
        }
    };
    let built = builder
        .build(&opts, &mut out)
        .with_context(|| format!("building {}", args.context.display()))?;
    if quiet {
        println!("{}", built.id);
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct CommitArgs {
    /// Commit message (kept in the image's history).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author.
    #[arg(short, long)]
    pub author: Option<String>,
    /// A Dockerfile instruction for the image config (CMD, ENV, LABEL, ...).
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// The container (id, unique id prefix, or standalone name).
    pub container: String,
    /// The image name.
    pub repository: Option<String>,
}

/// `cubby commit`: the container's snapshot under `<root>/containers`.
pub fn commit(images: &Images, args: CommitArgs) -> Result<()> {
    let dir = images.containers_dir();
    let exact = dir.join(&args.container);
    let snap = if exact.join("upper").is_dir() {
        exact
    } else {
        let found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&args.container))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        match found.as_slice() {
            [one] => one.clone(),
            [] => bail!("no such container: {}", args.container),
            _ => bail!(
                "{} names several containers: give more of the id",
                args.container
            ),
        }
    };
    let runner = Runner {
        exe: PathBuf::from("/proc/self/exe"),
        state_dir: PathBuf::new(),
        cgroup_parent: "cubby".into(),
        engine: None,
    };
    let opts = cubby_build::builder::CommitOptions {
        tags: args.repository.into_iter().collect(),
        changes: args.changes,
        comment: args.message,
        author: args.author,
        ..Default::default()
    };
    let built = Builder::new(&images.store, runner, None)
        .commit(&snap, &opts)
        .with_context(|| format!("committing {}", args.container))?;
    println!("{}", built.id);
    Ok(())
}
