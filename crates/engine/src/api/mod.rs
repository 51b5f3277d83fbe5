//! The Docker Engine API (served by `cubby daemon` over a Unix socket or
//! TLS): containers, images, networks, volumes, exec, attach, events,
//! archive copy, prune and system endpoints (docs/engine-api.md).
//!
//! Handlers only translate HTTP to [`crate::service::Engine`] calls and
//! back; every [`crate::service::EngineError`] becomes a status and
//! Docker's `{"message"}` in one place ([`error`]).
//!
//! Paths are routed with and without a version prefix (`/v1.43/...`); any
//! `/vX.Y` prefix is accepted and stripped before routing, and a small
//! body is read before any handler runs (`prepare`).

mod archive;
mod body_reader;
mod body_writer;
mod changes;
mod containers;
mod create;
pub mod create_body;
pub mod error;
mod events;
mod exec;
mod hijack;
mod image_archive;
pub mod images;
pub mod json;
mod lifecycle;
pub mod logs;
pub mod networks;
mod prune;
pub mod stats;
mod system;
mod system_df;
pub mod util;
mod volumes;

pub use error::{ApiError, ApiResult};

use axum::extract::{Request, State};
use axum::http::Uri;
use axum::routing::{delete, get, post};
use axum::Router;
use tower::Layer;

/// The API version this daemon speaks (Docker 24).
pub const API_VERSION: &str = "1.43";
/// The oldest version clients may ask for.
pub const MIN_API_VERSION: &str = "1.24";

/// What the handlers share: the engine they translate HTTP to.
pub type Shared = crate::service::Shared;

/// Runs blocking work of a handler on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ApiResult<T> + Send + 'static,
{
    crate::service::blocking(f).await
}

/// The routes, without version prefixes.
pub fn router(daemon: Shared) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route("/images/prune", post(images::prune))
        .route("/images/get", get(save_images))
        .route(
            "/images/load",
            post(|State(d): State<Shared>, body: axum::body::Body| image_archive::load(d, body)),
        )
        .route(
            "/images/{*name}",
            get(images::get).post(images::post).delete(images::delete),
        )
        .route("/containers/json", get(containers::list))
        .route("/containers/prune", post(prune::containers))
        .route("/containers/{id}/changes", get(changes::changes))
        .route("/containers/{id}/update", post(update_refused))
        .route("/build/prune", post(prune::build))
        .route("/system/df", get(system_df::df))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/logs", get(logs::logs))
        .route("/containers/{id}/stats", get(stats::stats))
        .route("/containers/{id}/top", get(stats::top))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}", delete(containers::remove))
        .route("/containers/create", post(create::create))
        .route("/containers/{id}/start", post(lifecycle::start))
        .route("/containers/{id}/stop", post(lifecycle::stop))
        .route("/containers/{id}/restart", post(lifecycle::restart))
        .route("/containers/{id}/pause", post(lifecycle::pause))
        .route("/containers/{id}/unpause", post(lifecycle::unpause))
        .route("/containers/{id}/rename", post(lifecycle::rename))
        .route("/containers/{id}/wait", post(lifecycle::wait))
        .route("/containers/{id}/resize", post(lifecycle::resize))
        .route("/containers/{id}/attach", post(lifecycle::attach))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/events", get(events::events))
        .route(
            "/containers/{id}/archive",
            get(archive::get).head(archive::head).put(archive::put),
        )
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .fallback(|| async { ApiError::page_not_found() })
        .with_state(daemon)
}

/// `docker update`: refused by name (limits and restart policy are fixed
/// at create in cubby; the monitor applies them when it starts the process).
async fn update_refused() -> ApiError {
    crate::service::EngineError::Unsupported(
        "docker update: cubby does not change a created container's resources or restart policy; recreate the container with the new options".into(),
    )
    .into()
}

/// `GET /images/get?names=A&names=B` (names repeat: not a map).
async fn save_images(
    State(d): State<Shared>,
    axum::extract::Query(pairs): axum::extract::Query<Vec<(String, String)>>,
) -> ApiResult<axum::response::Response> {
    let names = pairs
        .into_iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v)
        .collect();
    image_archive::save(d, names).await
}

/// `/v1.43/containers/json?all=1` → `/containers/json?all=1`; other paths
/// are returned as they are.
pub fn strip_version(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/')?;
    let (major, minor) = rest[..end].split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    let mut new = rest[end..].to_string();
    if let Some(q) = uri.query() {
        new.push('?');
        new.push_str(q);
    }
    new.parse().ok()
}

/// Request bodies up to this size are read before routing (Go's net/http
/// reads up to 256 KiB of what a handler left unread).
const SMALL_BODY: u64 = 256 * 1024;

/// Strips the version prefix and reads a small body with a declared length
/// before any handler runs. A handler that refuses without reading the body
/// (`docker update`, a bad option) would otherwise answer and close while
/// the client is still writing: the docker CLI then reports "broken pipe"
/// instead of the refusal. Large and chunked bodies (contexts, image
/// archives) still stream; their handlers read before refusing.
async fn prepare(mut req: Request) -> Result<Request, ApiError> {
    if let Some(uri) = strip_version(req.uri()) {
        *req.uri_mut() = uri;
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len @ 1..=SMALL_BODY) = declared {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, len as usize)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "reading the request body ({len} bytes declared): {e}"
                ))
            })?;
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    Ok(req)
}

/// Serves the API on `listener` (a Unix socket, or the daemon's TLS
/// listener) until `shutdown` completes; upgrades (attach) work on both.
pub async fn serve<L>(
    listener: L,
    daemon: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    serve_with(listener, daemon, Router::new(), shutdown).await
}

/// [`serve`] with more routes from crates above the engine (the image
/// builder's `/build`), under the same version prefixes.
pub async fn serve_with<L>(
    listener: L,
    daemon: Shared,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let app = axum::middleware::map_request(prepare).layer(extra.merge(router(daemon)));
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        let s = |p: &str| strip_version(&p.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            s("/v1.43/containers/json?all=1").as_deref(),
            Some("/containers/json?all=1")
        );
        assert_eq!(s("/v1.24/_ping").as_deref(), Some("/_ping"));
        assert_eq!(s("/containers/json"), None);
        assert_eq!(s("/v1.43"), None);
        assert_eq!(s("/vx.y/_ping"), None);
        assert_eq!(s("/v1/_ping"), None);
        assert_eq!(s("/version"), None);
    }
}
