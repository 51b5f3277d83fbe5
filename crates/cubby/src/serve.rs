//! `cubby serve` and `cubby admin`: the classroom service's command line.
//! The service itself is crates/caas; this file parses options, opens the
//! store, finds (or starts) the engine, and listens (TCP or TLS).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cubby_caas::api::AuthConfig;
use cubby_caas::sessions::ManagerConfig;
use cubby_caas::store::users::Role;
use cubby_caas::store::Store;

/// The demo template's image, built locally (no internet needed).
pub const DEMO_IMAGE: &str = "cubby-demo:latest";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to serve the API, the web UI and the routing proxy.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// sqlite://PATH (default ROOT/caas/caas.db) or postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "CUBBY_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// The Docker Engine API that runs sandboxes (dockerd, podman's API
    /// service, another cubby engine). Default: cubby's own engine on
    /// /run/cubby/cubby.sock, started here when none answers.
    #[arg(long, value_name = "unix://PATH|tcp://HOST:PORT")]
    pub engine: Option<String>,
    /// For an engine other than cubby's: firewall rules installed by the
    /// operator keep sandboxes from the host's addresses (docs/caas-backend.md).
    #[arg(long)]
    pub operator_firewall: bool,
    /// The IPv4 range class networks bigger than a /24 (classes of more
    /// than about 200, big warm pools) take an explicit subnet from; it
    /// must not overlap the engine's own address pool or the host's.
    #[arg(long, value_name = "CIDR", default_value = cubby_caas::backend::docker::SubnetRange::DEFAULT)]
    pub class_subnets: cubby_caas::backend::docker::SubnetRange,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long = "tls-cert", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long = "tls-key", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// First run: create an admin, a teacher, students and a class with a
    /// locally built image, and print how to sign in.
    #[arg(long)]
    pub demo: bool,
    /// A new login signs the user out everywhere else.
    #[arg(long)]
    pub single_login: bool,
    /// Serve each session's app at SESSION.DOMAIN (its own origin; a
    /// wildcard DNS name pointing here is the operator's job). "Open app"
    /// goes there.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Also serve apps at /r/SESSION/ on the service's own origin. An app
    /// there can act on the service with its visitor's login (a teacher
    /// opening a student's app): trusted templates only. Without --domain
    /// and without this, apps cannot be opened (except with --demo: there
    /// they open at SESSION.localhost).
    #[arg(long)]
    pub path_routing: bool,
    /// Lifetime of access tokens.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub access_token_ttl: u64,
    /// Sandboxes provisioned at once (default: 16 per core); further
    /// starts, up-class included, wait in one first-come queue and see
    /// their position (queue_position).
    #[arg(long, value_name = "N")]
    pub start_concurrency: Option<usize>,
    /// On SIGTERM/SIGINT: how long open requests, provisioning and
    /// archiving in progress may take before the process exits anyway
    /// (sandboxes are never stopped by a shutdown).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub shutdown_grace: u64,
    /// Log lines as human text (`cubby serve: ...`) or one JSON object per
    /// line (time, level, message, and session/sandbox/template ids).
    #[arg(long, env = "CUBBY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// At most this many sandboxes running or starting in total; a start
    /// beyond it is refused (429) with a message naming the cap.
    #[arg(long, value_name = "N")]
    pub max_sandboxes: Option<usize>,
    /// At most this many sandboxes running or starting per class.
    #[arg(long, value_name = "N")]
    pub max_sandboxes_per_class: Option<usize>,
    /// Seconds a stopping sandbox gets before it is killed.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub stop_grace: u64,
    /// Where ended sessions' workspaces are archived (default
    /// ROOT/caas/objects). Not with --s3-bucket.
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Archive to this S3 bucket instead (credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "CUBBY_S3_BUCKET", value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// An S3-compatible endpoint (MinIO, SeaweedFS); default: AWS.
    #[arg(long, env = "CUBBY_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "CUBBY_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Archive running workspaces this often (a host crash loses at most
    /// this much work); 0: no checkpoints.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub checkpoint_every: u64,
    /// Pull the template image of a class's exam this many minutes before
    /// the exam starts, when the engine does not have it; 0: no pre-pull.
    #[arg(long, default_value_t = 15, value_name = "MINUTES")]
    pub prepull_minutes: u64,
    /// Checkpoints kept per session (older ones are deleted).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub checkpoint_keep: usize,
    /// Threads that accept connections on --listen, each with its own
    /// listener (SO_REUSEPORT) and upstream pool, serving proxied requests
    /// start to end (API requests go on to the main runtime); default:
    /// half the cores, at least one (the sandboxes it serves run on the
    /// same cores). 0: everything on the main runtime.
    #[arg(long, value_name = "N")]
    pub proxy_threads: Option<usize>,
}

/// Proxy threads when --proxy-threads is not given: half the cores, at
/// least one. The proxy shares the host with the sandboxes behind it; a
/// thread per core wakes up for fewer events each time and takes CPU from
/// them (on 2 cores, one thread served the same requests with 15-20% less
/// CPU than two, and more of them: docs/caas-web.md).
fn default_proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The archive store the flags name: S3 if a bucket is given, else a
/// local directory.
fn archive_store(args: &ServeArgs, caas: &Path) -> Result<cubby_caas::archive::Objects> {
    use cubby_caas::archive::{Objects, S3Config};
    match &args.s3_bucket {
        Some(bucket) => {
            if args.archive_dir.is_some() {
                bail!("--archive-dir and --s3-bucket: give one archive store, not both");
            }
            let var = |n: &str| {
                std::env::var(n).with_context(|| {
                    format!("--s3-bucket {bucket}: set {n} (the S3 credentials come from the environment)")
                })
            };
            Ok(Objects::s3(&S3Config {
                endpoint: args.s3_endpoint.clone(),
                bucket: bucket.clone(),
                region: args.s3_region.clone(),
                access_key: var("AWS_ACCESS_KEY_ID")?,
                secret_key: var("AWS_SECRET_ACCESS_KEY")?,
            })?)
        }
        None => {
            if args.s3_endpoint.is_some() {
                bail!("--s3-endpoint needs --s3-bucket");
            }
            let dir = args
                .archive_dir
                .clone()
                .unwrap_or_else(|| caas.join("objects"));
            Ok(Objects::local(dir)?)
        }
    }
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// sqlite://PATH (default ROOT/caas/caas.db) or postgres://...
    #[arg(long, env = "CUBBY_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Set up the store; --demo adds demo accounts and a class.
    Init {
        #[arg(long)]
        demo: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user (a random password is printed unless given).
    Add {
        name: String,
        #[arg(long, default_value = "student")]
        role: String,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Add users from a CSV file: username,role,password per line (all or none).
    Import {
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
    },
    /// Set a user's password (revokes their logins); random unless --password-stdin.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (revokes their logins); --enable undoes it.
    Disable {
        name: String,
        #[arg(long)]
        enable: bool,
    },
    /// List users.
    Ls,
}

/// ROOT/caas, readable by root only: the database holds password hashes
/// and the token signing key.
fn caas_dir(root: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("caas");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))?;
    Ok(dir)
}

fn database_url(root: &Path, given: &Option<String>) -> Result<String> {
    Ok(match given {
        Some(u) => u.clone(),
        None => cubby_caas::store::default_url(&caas_dir(root)?),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// This root's instance id (a lease owner), kept across restarts: after a
/// crash the new process knows the old leases were its own. The lock file
/// guarantees the previous holder is gone.
fn instance(caas: &Path) -> Result<(String, std::fs::File)> {
    let lock_path = caas.join("serve.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another `cubby serve` uses {} already: stop it, or give this one another --root",
            caas.display()
        );
    }
    let id_path = caas.join("instance-id");
    let id = match std::fs::read_to_string(&id_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let id = cubby_caas::store::new_id();
            write_atomic(&id_path, id.as_bytes())?;
            id
        }
    };
    Ok((id, lock))
}

/// write-temp + fsync + rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "--tls-cert {}: read a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!("--tls-cert {}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: read a PEM private key", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("--tls-cert/--tls-key: the key does not match the certificate")?;
    let mut config = config;
    // Browsers get HTTP/2 when they offer it (the listener speaks both).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn print_demo(d: &cubby_caas::demo::DemoAccounts, base: &str) {
    println!(
        "demo accounts (passwords are shown once; `cubby admin user passwd NAME` resets one):"
    );
    let mut accounts = crate::table::Table::new(&["USER", "ROLE", "PASSWORD"]);
    for (name, role, pw) in &d.users {
        accounts.row(&[name.as_str(), role.as_str(), pw.as_str()]);
    }
    for line in accounts.render().lines() {
        println!("  {line}");
    }
    let (_, _, spw) = &d.users[2];
    println!(
        "class demo101: id {}, join code {}",
        d.class_id, d.join_code
    );
    println!("web UI: {base}/ (sign in as student1 to start a sandbox, open its app and terminal)");
    println!("or with curl:");
    println!("  curl -s -c jar -H 'Content-Type: application/json' -d '{{\"username\":\"student1\",\"password\":\"{spw}\"}}' {base}/api/auth/login");
    println!("  curl -s -b jar -H 'Content-Type: application/json' -d '{{\"class_id\":\"{}\"}}' '{base}/api/sessions?wait=true'", d.class_id);
    println!("  curl -s -b jar {base}/api/sessions");
    println!("  API description: {base}/api/openapi.json");
}

/// Argon2id allocates 19 MiB per hash. glibc raises its mmap threshold after
/// such a block is freed, after which they come from per-thread arenas and
/// stay resident (hundreds of MiB after a class signs in). A fixed threshold
/// keeps big blocks on mmap, returned to the system when freed.
fn big_allocations_on_mmap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // thread of ours exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run_serve(args: ServeArgs, root: &Path, state_dir: &Path) -> Result<()> {
    cubby_caas::log::set_json(args.log_format == LogFormat::Json);
    big_allocations_on_mmap();
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        bail!("--tls-cert and --tls-key go together");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        _ => None,
    };
    let caas = caas_dir(root)?;
    let (instance_id, _lock) = instance(&caas)?;
    let objects = archive_store(&args, &caas)?;
    if args.checkpoint_keep == 0 {
        bail!("--checkpoint-keep 0: keep at least 1, or turn checkpoints off with --checkpoint-every 0");
    }
    let url = database_url(root, &args.database)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let store = Store::open(&url).await?;
        let (engine, backend) = crate::serve_backend::connect(
            args.engine.as_deref(),
            args.operator_firewall,
            args.class_subnets,
            root,
            state_dir,
        )
        .await?;
        cubby_caas::log!("info", "engine {engine} ({}), database {}, archives in {}",
            backend.describe().await?,
            cubby_caas::store::redact(&url),
            objects.describe()
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", args.listen);
        if args.demo {
            crate::serve_backend::demo_image(root, DEMO_IMAGE).await?;
            match cubby_caas::demo::init(&store, Some(backend.as_ref()), DEMO_IMAGE).await {
                Ok(d) => print_demo(&d, &base),
                Err(cubby_caas::Error::Conflict(m)) => println!("{m}"),
                Err(e) => return Err(e.into()),
            }
        }
        let mcfg = ManagerConfig {
            instance: instance_id,
            start_concurrency: match args.start_concurrency {
                Some(0) => anyhow::bail!("--start-concurrency 0: give at least 1"),
                Some(n) => n,
                None => cubby_caas::sessions::admission::default_concurrency(),
            },
            caps: cubby_caas::sessions::admission::Caps {
                per_class: args.max_sandboxes_per_class,
                total: args.max_sandboxes,
            },
            stop_grace: Duration::from_secs(args.stop_grace),
            objects,
            prepull_ahead: (args.prepull_minutes > 0)
                .then(|| Duration::from_secs(args.prepull_minutes.saturating_mul(60))),
            checkpoint_every: (args.checkpoint_every > 0)
                .then(|| Duration::from_secs(args.checkpoint_every)),
            checkpoint_keep: args.checkpoint_keep,
            ..ManagerConfig::default()
        };
        if let Some(d) = &args.domain {
            let d = d.trim_matches('.');
            if d.is_empty() || !d.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
                anyhow::bail!("--domain {d:?}: give a DNS name such as apps.example.org (sessions are served at SESSION.apps.example.org)");
            }
        }
        let auth = AuthConfig {
            access_ttl: Duration::from_secs(args.access_token_ttl.max(1)),
            single_login: args.single_login,
            secure_cookies: tls.is_some(),
            path_routing: args.path_routing,
            app_domain: args
                .domain
                .as_ref()
                .map(|d| d.trim_matches('.').to_ascii_lowercase())
                .or_else(|| demo_domain(&args)),
            ..AuthConfig::default()
        };
        if args.domain.is_none() && auth.app_domain.is_some() {
            cubby_caas::log!("info", "demo apps open at SESSION.localhost:{} (browsers resolve *.localhost to this machine; give --domain to serve other machines)", args.listen.port());
        }
        if auth.app_domain.is_none() && !auth.path_routing {
            cubby_caas::log!("warn", "apps cannot be opened: give --domain DOMAIN (each app on its own origin) or, for trusted templates only, --path-routing");
        }
        let service = cubby_caas::serve::start(store, backend, mcfg, auth).await?;
        // SIGTERM/SIGINT: stop accepting, let open requests finish (at
        // most the grace: a websocket may never end), finish provisioning
        // and archiving in progress, leave every sandbox running.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let grace = Duration::from_secs(args.shutdown_grace);
        let threads = args
            .proxy_threads
            .unwrap_or_else(default_proxy_threads);
        let tcp = if threads == 0 {
            Some(
                tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("--listen {}", args.listen))?,
            )
        } else {
            None
        };
        // Kept until the service has drained (see Workers).
        let mut workers = if threads > 0 {
            let (tls, stop_rx) = (tls.clone(), stop_rx.clone());
            Some(
                cubby_caas::proxy::workers::Workers::start(
                    threads,
                    args.listen,
                    service.router.clone(),
                    service.state.clone(),
                    move |tcp, dispatch| {
                        let (tls, stop_rx) = (tls.clone(), stop_rx.clone());
                        async move {
                            match tls {
                                Some(_) => listen(tcp, dispatch.router(), tls, stop_rx, grace).await,
                                None => {
                                    cubby_caas::proxy::workers::serve_http1(
                                        tcp, dispatch, stop_rx, grace,
                                    )
                                    .await
                                }
                            }
                        }
                    },
                )
                .with_context(|| format!("--listen {}", args.listen))?,
            )
        } else {
            None
        };
        let how = match threads {
            0 => "all on the main runtime".to_string(),
            1 => "1 proxy thread".to_string(),
            n => format!("{n} proxy threads"),
        };
        cubby_caas::log!("info", "listening on {base} ({how})");
        tokio::spawn(async move {
            shutdown_signal().await;
            cubby_caas::log!("info", "shutting down (no new connections)");
            let _ = stop_tx.send(true);
        });
        let mut served = true;
        if let Some(tcp) = tcp {
            served = listen(tcp, service.router.clone(), tls, stop_rx, grace).await?;
        }
        if let Some(w) = workers.as_mut() {
            for r in w.wait().await {
                served &= r?;
            }
        }
        if !served {
            cubby_caas::log!("info", "connections still open after {grace:?}: closed");
        }
        let busy = service.manager.drain(grace).await;
        if busy > 0 {
            cubby_caas::log!("info", "{busy} session(s) still provisioning or archiving after {grace:?}: the next start resumes them");
        }
        drop(workers);
        cubby_caas::log!("info", "stopped (sandboxes keep running)");
        anyhow::Ok(())
    })
}

/// Serves `app` on `tcp` (TLS when configured) until `stop`, then lets
/// open connections finish for at most `grace`: false if some were cut.
async fn listen(
    tcp: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<bool> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut rx = stop.clone();
    let graceful = async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut rx = stop;
    let give_up = async move {
        let _ = rx.wait_for(|v| *v).await;
        tokio::time::sleep(grace).await;
    };
    match tls {
        Some(cfg) => {
            // tap_io: gives the TLS listener the peer address (ConnectInfo).
            use axum::serve::ListenerExt;
            let l = crate::tls::TlsListener::new(tcp, cfg)
                .map_err(std::io::Error::other)?
                .tap_io(|_| {});
            tokio::select! {
                r = axum::serve(l, app).with_graceful_shutdown(graceful) => r.map(|_| true),
                _ = give_up => Ok(false),
            }
        }
        None => tokio::select! {
            r = axum::serve(tcp, app).with_graceful_shutdown(graceful) => r.map(|_| true),
            _ = give_up => Ok(false),
        },
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            cubby_caas::log!(
                "warn",
                "cannot watch SIGTERM ({e}); Ctrl-C still stops gracefully"
            );
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn read_password(from_stdin: bool) -> Result<(String, bool)> {
    if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_line(&mut s)
            .context("read the password from stdin")?;
        Ok((s.trim_end_matches(['\r', '\n']).to_string(), false))
    } else {
        Ok((
            cubby_caas::store::hex(&cubby_caas::auth::random_bytes::<8>()),
            true,
        ))
    }
}

pub fn run_admin(args: AdminArgs, root: &Path) -> Result<()> {
    let url = database_url(root, &args.database)?;
    runtime()?.block_on(async move {
        let store = Store::open(&url).await?;
        let by_name = |name: String| {
            let store = store.clone();
            async move {
                store
                    .user_by_name(&name)
                    .await?
                    .with_context(|| format!("no user {name}: `cubby admin user ls` lists them"))
            }
        };
        match args.cmd {
            AdminCmd::Init { demo } => {
                if demo {
                    crate::serve_backend::demo_image(root, DEMO_IMAGE).await?;
                    let d = cubby_caas::demo::init(&store, None, DEMO_IMAGE).await?;
                    print_demo(&d, "http://127.0.0.1:8080");
                } else {
                    println!("store ready: {}", cubby_caas::store::redact(&url));
                }
            }
            AdminCmd::User(UserCmd::Add {
                name,
                role,
                password_stdin,
            }) => {
                let role = Role::parse(&role)?;
                let (pw, generated) = read_password(password_stdin)?;
                let u = store
                    .create_user(&name, role, &cubby_caas::auth::hash_password(&pw)?)
                    .await?;
                store
                    .audit(None, "user.create", Some(&u.username), Some("cli"))
                    .await?;
                println!(
                    "{} {} {}",
                    u.username,
                    role.as_str(),
                    if generated { pw.as_str() } else { "" }
                );
            }
            AdminCmd::User(UserCmd::Import { csv }) => {
                let text = std::fs::read_to_string(&csv)
                    .with_context(|| format!("read {}", csv.display()))?;
                let mut todo = Vec::new();
                for r in cubby_caas::csv::parse_users(&text, true)? {
                    let pw = r.password.with_context(|| {
                        format!(
                            "{} line {}: {} has no password (username,role,password)",
                            csv.display(),
                            r.line,
                            r.username
                        )
                    })?;
                    todo.push((
                        r.username,
                        r.role.unwrap_or(Role::Student),
                        cubby_caas::auth::hash_password(&pw)?,
                    ));
                }
                let users = store.create_users(&todo).await?;
                store
                    .audit(
                        None,
                        "user.import",
                        Some(&format!("{} users", users.len())),
                        Some("cli"),
                    )
                    .await?;
                println!("imported {} users", users.len());
            }
            AdminCmd::User(UserCmd::Passwd {
                name,
                password_stdin,
            }) => {
                let u = by_name(name).await?;
                let (pw, generated) = read_password(password_stdin)?;
                store
                    .set_password(&u.id, &cubby_caas::auth::hash_password(&pw)?)
                    .await?;
                store
                    .audit(None, "user.passwd", Some(&u.username), Some("cli"))
                    .await?;
                println!(
                    "{} {}",
                    u.username,
                    if generated {
                        pw.as_str()
                    } else {
                        "password set"
                    }
                );
            }
            AdminCmd::User(UserCmd::Disable { name, enable }) => {
                let u = by_name(name).await?;
                store.set_disabled(&u.id, !enable).await?;
                store
                    .audit(
                        None,
                        if enable {
                            "user.enable"
                        } else {
                            "user.disable"
                        },
                        Some(&u.username),
                        Some("cli"),
                    )
                    .await?;
                println!(
                    "{} {}",
                    u.username,
                    if enable { "enabled" } else { "disabled" }
                );
            }
            AdminCmd::User(UserCmd::Ls) => {
                let mut table = crate::table::Table::new(&["USERNAME", "ROLE", "STATUS", "ID"]);
                for u in store.users().await? {
                    let status = if u.disabled { "disabled" } else { "active" };
                    table.row(&[
                        u.username.clone(),
                        u.role.as_str().to_string(),
                        status.to_string(),
                        u.id.to_string(),
                    ]);
                }
                table.print();
            }
        }
        anyhow::Ok(())
    })
}

/// `--demo` with neither --domain nor --path-routing: apps on their own
/// origin at SESSION.localhost, which browsers resolve to the loopback
/// address without any DNS set-up, so "Open app" works out of the box.
fn demo_domain(args: &ServeArgs) -> Option<String> {
    (args.demo && !args.path_routing).then(|| "localhost".to_string())
}
