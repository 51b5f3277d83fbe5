//! Thread-per-core serving of the listener, like nginx's workers: N OS
//! threads, each with a current-thread tokio runtime, its own
//! `SO_REUSEPORT` listener on the service's address (the kernel spreads
//! new connections over them) and its own upstream connection pool. A
//! proxied request (`/r/...`, or a `{session}.{domain}` host) is served
//! start to end on the thread that accepted its connection: the client
//! connection, the upstream connection and their bodies never wake a task
//! on another thread. Every other request (API, web UI, terminal) is
//! handed to the main runtime, where the rest of `cubby serve` runs.
//!
//! The route and login caches are the service's own (shared through
//! `AppState`). A worker's runtime lives until [`Workers`] is dropped, after
//! the service has drained, so anything it opened on the way (a database
//! or engine connection made on a cache miss) stays usable meanwhile.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tower::ServiceExt;

use crate::proxy::{session_host, upstream_client, UpstreamClient};

thread_local! {
    /// This worker thread's upstream pool (none on the main runtime, which
    /// uses the service's shared one).
    static LOCAL: std::cell::OnceCell<Client<HttpConnector, axum::body::Body>> =
        const { std::cell::OnceCell::new() };
}

/// The pool a proxied request on this thread goes through.
pub(crate) fn local_client() -> Option<UpstreamClient> {
    LOCAL.with(|c| c.get().cloned())
}

/// Whether a request is the proxy's, served on the worker that accepted it.
fn proxied(req: &Request, app_domain: Option<&str>) -> bool {
    if req.uri().path().starts_with("/r/") {
        return true;
    }
    let Some(domain) = app_domain else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    host.and_then(|h| session_host(h, domain)).is_some()
}

/// What a worker serves: `service` itself for proxied requests, and for
/// the rest `service` run on `main`.
fn worker_router(
    service: Router,
    app_domain: Option<Arc<str>>,
    main: tokio::runtime::Handle,
) -> Router {
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let service = service.clone();
        let local = proxied(&req, app_domain.as_deref());
        let main = main.clone();
        async move {
            if local {
                return service.oneshot(req).await;
            }
            Ok(match main.spawn(service.oneshot(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(e) => {
                    crate::log!("warn", "request handler ended abnormally: {e}");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            })
        }
    }))
}

/// Failures of [`Workers::start`].
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("{addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("start worker thread: {0}")]
    Thread(std::io::Error),
}

/// The running worker threads; dropping this ends them.
pub struct Workers<T> {
    done: Vec<tokio::sync::oneshot::Receiver<std::io::Result<T>>>,
    _release: tokio::sync::watch::Sender<()>,
}

impl<T: Send + 'static> Workers<T> {
    /// Binds `n` (at least 1) listeners on `addr` with `SO_REUSEPORT`
    /// (bind errors are returned here), then starts one thread each, which
    /// calls `serve(listener, router)`; `serve` owns accepting (plain or
    /// TLS) and shutdown, and says how it ended. Must be called on the
    /// main runtime (API requests are sent there).
    pub fn start<F, Fut>(
        n: usize,
        addr: SocketAddr,
        service: Router,
        app_domain: Option<&str>,
        serve: F,
    ) -> Result<Workers<T>, WorkersError>
    where
        F: Fn(tokio::net::TcpListener, Router) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<T>> + 'static,
    {
        let main = tokio::runtime::Handle::current();
        let app_domain: Option<Arc<str>> = app_domain.map(Arc::from);
        let mut addr = addr;
        let mut sockets = Vec::new();
        for _ in 0..n.max(1) {
            let bind_err = |source| WorkersError::Bind { addr, source };
            let s = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(bind_err)?;
            s.set_reuseaddr(true).map_err(bind_err)?;
            s.set_reuseport(true).map_err(bind_err)?;
            s.set_nodelay(true).map_err(bind_err)?;
            s.bind(addr).map_err(bind_err)?;
            // Port 0: the others join the port the first one got.
            addr = s.local_addr().map_err(bind_err)?;
            sockets.push(s);
        }
        let serve = Arc::new(serve);
        let (release, _) = tokio::sync::watch::channel(());
        let mut done = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            done.push(rx);
            let serve = serve.clone();
            let router = worker_router(service.clone(), app_domain.clone(), main.clone());
            let mut released = release.subscribe();
            std::thread::Builder::new()
                .name(format!("cubby-http-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    LOCAL.with(|c| {
                        c.get_or_init(upstream_client);
                    });
                    rt.block_on(async move {
                        let r = match socket.listen(1024) {
                            Ok(l) => serve(l, router).await,
                            Err(e) => Err(e),
                        };
                        let _ = tx.send(r);
                        // Stay up (connections spliced or pooled here, and
                        // whatever a cache miss opened) until released.
                        let _ = released.changed().await;
                    });
                })
                .map_err(WorkersError::Thread)?;
        }
        Ok(Workers {
            done,
            _release: release,
        })
    }

    /// Waits until every worker's `serve` ended; their results in order.
    pub async fn wait(&mut self) -> Vec<std::io::Result<T>> {
        let mut out = Vec::new();
        for rx in self.done.iter_mut() {
            out.push(
                rx.await
                    .unwrap_or_else(|_| Err(std::io::Error::other("a worker thread ended early"))),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_stay_on_the_worker() {
        let req = |path: &str, host: &str| {
            Request::builder()
                .uri(path)
                .header(header::HOST, host)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let s = "0123456789abcdef0123456789abcdef";
        assert!(proxied(&req(&format!("/r/{s}/x"), "h:1"), None));
        assert!(!proxied(&req("/api/sessions", "h:1"), None));
        assert!(!proxied(&req("/api/sessions", "h:1"), Some("apps.test")));
        assert!(proxied(
            &req("/api/sessions", &format!("{s}.apps.test:8443")),
            Some("apps.test")
        ));
        assert!(!proxied(&req("/", "apps.test"), Some("apps.test")));
    }
}
