//! The real backend for `cubby serve`: any Docker Engine API through
//! caas's DockerBackend; with no --engine, cubby's own engine on its default
//! socket, started here when none answers.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use cubby_caas::backend::docker::{DockerBackend, HostIsolation, SubnetRange, DEFAULT_ENDPOINT};
use cubby_caas::backend::local_engine::{ensure_local_engine_with, LocalEngine};
use cubby_caas::backend::Backend;

/// `engine`: an explicit endpoint (used as is), or None for cubby's own.
pub async fn connect(
    engine: Option<&str>,
    operator_firewall: bool,
    class_subnets: SubnetRange,
    root: &Path,
    state_dir: &Path,
) -> Result<(String, Arc<dyn Backend>)> {
    let endpoint = match engine {
        Some(e) => e.to_string(),
        None => {
            let socket = DEFAULT_ENDPOINT.trim_start_matches("unix://");
            let exe = std::env::current_exe().context("find the cubby executable")?;
            let started = ensure_local_engine_with(
                &exe,
                root,
                Path::new(socket),
                &["--state-dir".into(), state_dir.as_os_str().to_owned()],
                &[],
            )
            .await?;
            if let LocalEngine::Started { pid, log } = started {
                eprintln!(
                    "cubby serve: started cubby daemon (pid {pid}, log {})",
                    log.display()
                );
            }
            DEFAULT_ENDPOINT.to_string()
        }
    };
    let isolation = operator_firewall.then_some(HostIsolation::Operator);
    let backend = DockerBackend::connect(&endpoint, isolation)
        .await?
        .with_class_subnets(class_subnets);
    Ok((endpoint, Arc::new(backend)))
}

/// Builds the demo image into the engine's image store under `root`.
pub async fn demo_image(root: &Path, reference: &str) -> Result<()> {
    let (root, reference) = (root.to_path_buf(), reference.to_string());
    tokio::task::spawn_blocking(move || crate::demo_image::import_demo_image(&root, &reference))
        .await
        .context("build the demo image")?
        .context("build the demo image (needs busybox-static: apt-get install busybox-static)")
}
