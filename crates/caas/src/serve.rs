//! Wiring of the service: store + backend -> session manager -> API router,
//! with the background tasks (crash recovery, backend events, lease
//! take-over). Listening (TCP, TLS) is the binary's job.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::api::{self, AppState, AuthConfig};
use crate::backend::Backend;
use crate::error::Result;
use crate::sessions::{Manager, ManagerConfig, Orphan};
use crate::store::Store;

pub struct Service {
    pub manager: Arc<Manager>,
    pub router: Router,
    /// The router's state (the proxy's worker threads serve proxied
    /// requests with it directly, see proxy::workers).
    pub state: AppState,
    /// Orphans found at start (also logged).
    pub orphans: Vec<Orphan>,
}

/// Builds the service and starts its background tasks on the current
/// tokio runtime.
pub async fn start(
    store: Store,
    backend: Arc<dyn Backend>,
    mcfg: ManagerConfig,
    auth: AuthConfig,
) -> Result<Service> {
    let manager = Manager::new(store, backend, mcfg).await?;
    let state = AppState::new(manager.clone(), auth).await?;
    let orphans = manager.reconcile().await?;
    tokio::spawn(manager.clone().follow_events());
    tokio::spawn(manager.clone().reconcile_loop(Duration::from_secs(5)));
    tokio::spawn(manager.clone().pool_loop());
    tokio::spawn(manager.clone().prepull_loop());
    Ok(Service {
        router: api::router(state.clone())
            .merge(crate::web::router(state.clone()))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::proxy::host_dispatch,
            )),
        state,
        manager,
        orphans,
    })
}
