//! Serving the listener on worker threads, like nginx's workers: N OS
//! threads (`--proxy-threads`), each with a current-thread tokio runtime, its own
//! `SO_REUSEPORT` listener on the service's address (the kernel spreads
//! new connections over them) and its own idle upstream connections
//! (upstream.rs). A proxied request (`/r/...`, or a `{session}.{domain}` host) is served
//! start to end on the thread that accepted its connection: the client
//! connection, the upstream connection and their bodies never wake a task
//! on another thread. Every other request (API, web UI, terminal) is
//! handed to the main runtime, where the rest of `cubby serve` runs.
//!
//! The route and login caches are the service's own (shared through
//! `AppState`). A worker's runtime lives until [`Workers`] is dropped, after
//! the service has drained, so anything it opened on the way (a database
//! or engine connection made on a cache miss) stays usable meanwhile.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use crate::api::AppState;
use crate::proxy::session_host;

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

/// What a worker thread does with a request: a proxied one is served on
/// this thread, straight by the proxy (no router: it would only route it
/// there); every other one is sent to the service's router on the main
/// runtime.
#[derive(Clone)]
pub struct Dispatch(Arc<DispatchInner>);

struct DispatchInner {
    service: Router,
    state: AppState,
    main: tokio::runtime::Handle,
}

/// A client connection's address, and the same as an `X-Forwarded-For`
/// value (made once per connection, not per request).
#[derive(Clone)]
pub struct Peer {
    addr: SocketAddr,
    forwarded_for: Option<HeaderValue>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            forwarded_for: crate::proxy::forwarded_for(addr),
        }
    }
}

impl Dispatch {
    /// Answers one request (see [`Dispatch`]) from `peer` (if not already
    /// in the request as `ConnectInfo`).
    pub fn call(
        &self,
        mut req: Request,
        peer: Option<&Peer>,
    ) -> impl Future<Output = Response> + Send + 'static {
        let local = proxied(&req, self.0.state.auth.app_domain.as_deref());
        let this = self.0.clone();
        // The proxy takes the address as a value; the router's handlers
        // read it from the request.
        let client_ip = match peer {
            Some(p) if local => p.forwarded_for.clone(),
            Some(p) => {
                req.extensions_mut().insert(ConnectInfo(p.addr));
                None
            }
            None if local => crate::proxy::recorded_forwarded_for(&req),
            None => None,
        };
        async move {
            if local {
                return crate::proxy::serve_proxied(this.state.clone(), req, client_ip).await;
            }
            match this.main.spawn(this.service.clone().oneshot(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(e) => {
                    crate::log!("warn", "request handler ended abnormally: {e}");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
    }

    /// The same as a router, for `axum::serve` (the TLS listener: HTTP/2
    /// through ALPN).
    pub fn router(&self) -> Router {
        let d = self.clone();
        Router::new().fallback_service(tower::service_fn(move |req: Request| {
            d.call(req, None).map(Ok::<_, Infallible>)
        }))
    }
}

/// Serves plain HTTP/1.1 on `tcp` until `stop` turns true, then lets open
/// connections finish for at most `grace`: false if some were cut.
///
/// Plain HTTP is HTTP/1.1 only: browsers speak HTTP/2 only over TLS
/// (ALPN), which stays on `axum::serve`. So no protocol sniffing (one read
/// less per connection) and one HTTP/1 connection task per client, whose
/// requests go to [`Dispatch`] with their [`Peer`].
pub async fn serve_http1(
    tcp: tokio::net::TcpListener,
    dispatch: Dispatch,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<bool> {
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    // The connections wait on a stop signal of this thread's own: waiting
    // on `stop` itself would make every connection lock a list that every
    // worker thread shares.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let http = hyper::server::conn::http1::Builder::new();
    let mut stopped = std::pin::pin!({
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|v| *v).await;
        }
    });
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut stopped => break,
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of descriptors and the like: wait for some to close.
                    crate::log!("warn", "accept: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let d = dispatch.clone();
        let peer = Peer::new(peer);
        // `map`, not an async block around `call`'s future: that would hold
        // it twice over (hyper boxes this future per connection and moves
        // it in per request).
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                d.call(req.map(axum::body::Body::new), Some(&peer))
                    .map(Ok::<_, Infallible>)
            });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = drain_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn.with_upgrades());
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { drop(stop.wait_for(|v| *v).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(tcp);
    let _ = drain_tx.send(true);
    drop(open_rx);
    tokio::select! {
        _ = open_tx.closed() => Ok(true),
        _ = tokio::time::sleep(grace) => Ok(false),
    }
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
    /// calls `serve(listener, dispatch)`; `serve` owns accepting (plain:
    /// [`serve_http1`], or TLS) and shutdown, and says how it ended. Must be called on the
    /// main runtime (API requests are sent there).
    pub fn start<F, Fut>(
        n: usize,
        addr: SocketAddr,
        service: Router,
        state: AppState,
        serve: F,
    ) -> Result<Workers<T>, WorkersError>
    where
        F: Fn(tokio::net::TcpListener, Dispatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<T>> + 'static,
    {
        let dispatch = Dispatch(Arc::new(DispatchInner {
            service,
            state,
            main: tokio::runtime::Handle::current(),
        }));
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
            let dispatch = dispatch.clone();
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
                    rt.block_on(async move {
                        let r = match socket.listen(1024) {
                            Ok(l) => serve(l, dispatch).await,
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
