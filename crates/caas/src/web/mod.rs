//! The web UI: plain HTML, CSS and ES modules (xterm.js vendored, see
//! assets/vendor/xterm/LICENSE) built into the binary with `include_bytes!`,
//! no build step. The page talks to /api with the login cookie only.

pub mod terminal;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::api::AppState;

/// (name, content type, bytes): the one table of what is served.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
    (
        "vendor/xterm/xterm.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/vendor/xterm/xterm.mjs"),
    ),
    (
        "vendor/xterm/xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/vendor/xterm/xterm.css"),
    ),
];

const INDEX: &str = include_str!("assets/index.html");

/// The UI pages are ours: no framing by other sites, no inline scripts.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

async fn index() -> Response {
    let mut r = INDEX.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    harden(r)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, bytes)) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            harden(r)
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// The UI and the routing proxy (the API router is merged beside it).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*name}", get(asset))
        .route("/r/{*rest}", any(crate::proxy::handle))
        .with_state(state)
}
