//! `cubby` as a client of `cubby daemon`: when the daemon answers (on
//! `--host`/`CUBBY_HOST`, else on its default socket), container commands
//! go through its Docker Engine API, so containers made by `cubby` and by
//! `docker` are the same containers. Without a daemon, `cubby` runs them
//! itself (main.rs), exactly as before.

pub mod commands;
pub mod http;
pub mod network;
pub mod stream;

use crate::tls::TlsFiles;
use anyhow::{Context, Result};
use http::{Client, Host};
use std::path::Path;

/// Where `cubby daemon` listens by default.
pub const DEFAULT_HOST: &str = "unix:///run/cubby/cubby.sock";

/// A daemon that answered, and the runtime to talk to it on.
pub struct Remote {
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl Remote {
    /// The daemon to use: `host` (from `--host`/`CUBBY_HOST`) must answer,
    /// with no fallback; without it, the default socket is used if a daemon
    /// answers there and serves our `root` (its `DockerRootDir`), else
    /// `None` (standalone).
    pub fn find(host: Option<&str>, tls: Option<&TlsFiles>, root: &Path) -> Result<Option<Remote>> {
        Self::find_with(host, DEFAULT_HOST, tls, root)
    }

    /// [`Remote::find`] with another default socket (`unix://PATH`), for tests.
    pub fn find_with(
        host: Option<&str>,
        default: &str,
        tls: Option<&TlsFiles>,
        root: &Path,
    ) -> Result<Option<Remote>> {
        let explicit = host.filter(|h| !h.is_empty());
        if explicit.is_none() {
            let path = default.trim_start_matches("unix://");
            // No socket file: no daemon, and no runtime to build.
            if !Path::new(path).exists() {
                return Ok(None);
            }
        }
        let addr = explicit.unwrap_or(default);
        let client = Client {
            host: Host::parse(addr, tls)?,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        match rt.block_on(client.ping()) {
            Ok(()) if explicit.is_some() => Ok(Some(Remote { client, rt })),
            Ok(()) => {
                let serves_root = rt.block_on(serves(&client, root));
                Ok(serves_root.then_some(Remote { client, rt }))
            }
            Err(e) if explicit.is_some() => {
                Err(e).with_context(|| format!("--host {addr} (CUBBY_HOST) does not answer"))
            }
            // A stale socket of a stopped daemon: standalone, as before.
            Err(_) => Ok(None),
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// Does the daemon keep its data in `root`? A `cubby --root X` for another
/// root than the machine's daemon stays standalone rather than silently
/// acting on the daemon's containers.
async fn serves(client: &Client, root: &Path) -> bool {
    let Ok(info) = client
        .json::<serde_json::Value>(hyper::Method::GET, "/info", None)
        .await
    else {
        return false;
    };
    let Some(theirs) = info["DockerRootDir"].as_str() else {
        return false;
    };
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(theirs)) == canon(root)
}
