//! HTTP/1.1 connections to apps: a connection per request on
//! `hyper::client::conn::http1`, and the idle ones of apps that keep them
//! alive reused, per thread (each worker thread has its own, like its
//! accepted connections; on the main runtime each tokio thread has one).
//!
//! An app that closes every connection (busybox httpd, the bench's app)
//! costs a connect and a handshake per request and nothing more: no pool
//! checkout racing a connect, no background pool task, and for a short
//! answer not even a task of the connection's own ([`Link`]). A connection goes
//! back to its thread's idle list only once its response body has ended
//! and only if neither side said `Connection: close`; it is dropped there
//! after [`IDLE`] unused (checked whenever the thread uses the list) or
//! as soon as the app closes it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, Response, Version};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// How long an idle connection is kept: below the shortest keep-alive
/// servers commonly use (Node's 5 s), so we drop it first rather than the
/// app closing it under a request.
pub const IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per app and thread.
const MAX_IDLE: usize = 64;
/// How long a connect may take (the app's address is on cubby's bridge).
const CONNECT: Duration = Duration::from_secs(5);
/// The most read from an app at once (see [`fresh`]); also the longest
/// response body a new connection's [`Link`] is driven from.
const MAX_READ: usize = 64 * 1024;
/// How long a finished connection waits for the app to close first.
const LINGER: Duration = Duration::from_secs(1);

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: timed out after {CONNECT:?}")]
    ConnectTimeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

thread_local! {
    static IDLE_CONNS: RefCell<Idle> = RefCell::new(Idle::default());
}

/// A connection to an app and whether it sends small writes at once
/// (`TCP_NODELAY`, set only for requests that carry a body: a bodiless
/// request is one write, and Nagle never holds a first write back).
struct Conn {
    sender: SendRequest<Body>,
    nodelay: bool,
}

#[derive(Default)]
struct Idle {
    by_app: HashMap<SocketAddr, Vec<(Conn, Instant)>>,
    swept: Option<Instant>,
}

impl Idle {
    /// The most recently idled live connection to `addr` (one without
    /// delay if `nodelay`).
    fn take(&mut self, addr: SocketAddr, nodelay: bool) -> Option<Conn> {
        self.sweep();
        let list = self.by_app.get_mut(&addr)?;
        let at = list
            .iter()
            .rposition(|(c, _)| !c.sender.is_closed() && (c.nodelay || !nodelay))?;
        Some(list.remove(at).0)
    }

    fn put(&mut self, addr: SocketAddr, c: Conn) {
        self.sweep();
        let list = self.by_app.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push((c, Instant::now()));
        }
    }

    /// Drops closed and expired connections (at most once a second).
    fn sweep(&mut self) {
        let now = Instant::now();
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.swept = Some(now);
        for list in self.by_app.values_mut() {
            list.retain(|(c, at)| !c.sender.is_closed() && now.duration_since(*at) < IDLE);
        }
        self.by_app.retain(|_, l| !l.is_empty());
    }
}

/// A new TCP connection to an app, with `TCP_NODELAY` if `nodelay`.
pub(crate) async fn connect(
    addr: SocketAddr,
    nodelay: bool,
) -> Result<TokioIo<tokio::net::TcpStream>, UpstreamError> {
    let tcp = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    if nodelay {
        let _ = tcp.set_nodelay(true);
    }
    Ok(TokioIo::new(tcp))
}

/// Whether a message's connection ends with it (HTTP/1.0 without
/// keep-alive, or `Connection: close`).
fn closes(version: Version, h: &HeaderMap) -> bool {
    let token = |t: &str| {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(t))
    };
    match version {
        Version::HTTP_10 => !token("keep-alive"),
        _ => token("close"),
    }
}

/// Sends `req` (origin-form URI, `Host` set) to the app at `addr`, on an
/// idle connection of this thread's if there is one, else a new one. A
/// bodiless GET/HEAD that fails on a reused connection (the app closed it
/// just as we sent) is sent once more on a new one.
pub(crate) async fn send(
    addr: SocketAddr,
    req: Request<Body>,
) -> Result<Response<AppBody>, UpstreamError> {
    let keep = !closes(req.version(), req.headers());
    let bodiless = axum::body::HttpBody::is_end_stream(req.body());
    let reused = IDLE_CONNS.with(|i| i.borrow_mut().take(addr, !bodiless));
    // What a retry needs, copied only when there may be one.
    let retry = (reused.is_some()
        && matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        )
        && bodiless)
        .then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
    let (conn, link, resp) = match reused {
        Some(mut c) => match c.sender.ready().await {
            Ok(()) => match c.sender.send_request(req).await {
                Ok(r) => (c, None, r),
                Err(e) => match retry {
                    Some((m, u, h)) => {
                        let mut again = Request::new(Body::empty());
                        *again.method_mut() = m;
                        *again.uri_mut() = u;
                        *again.headers_mut() = h;
                        fresh(addr, again, false).await?
                    }
                    None => return Err(e.into()),
                },
            },
            // Closed meanwhile: nothing was sent.
            Err(_) => fresh(addr, req, !bodiless).await?,
        },
        None => fresh(addr, req, !bodiless).await?,
    };
    let keep = keep && !closes(resp.version(), resp.headers());
    let (parts, body) = resp.into_parts();
    // A body longer than one read of the app's socket streams better with
    // its connection on a task of its own, read while the browser's side
    // writes (1 MiB responses: 15-25 % fewer per second when driven from
    // the body; see docs/caas-web.md).
    let link = match link {
        Some(l) if body.size_hint().exact().is_none_or(|n| n > MAX_READ as u64) => {
            l.release();
            None
        }
        l => l,
    };
    Ok(Response::from_parts(
        parts,
        AppBody {
            body,
            link,
            back: Some((addr, conn)).filter(|_| keep),
        },
    ))
}

type Io = TokioIo<tokio::net::TcpStream>;

/// A new connection (`TCP_NODELAY` if `nodelay`: `req` has a body) and
/// `req` sent on it; its [`Link`] is driven here until the response head
/// has come.
async fn fresh(
    addr: SocketAddr,
    req: Request<Body>,
    nodelay: bool,
) -> Result<(Conn, Option<Link>, Response<Incoming>), UpstreamError> {
    let io = connect(addr, nodelay).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        // Body chunks of at most 64 KiB (hyper's default grows to ~400
        // KiB): they stay in cache between the read from the app and the
        // write to the browser (1 MiB responses: 13-16 % less CPU, see
        // docs/caas-web.md). Also the limit of the app's response head.
        .max_buf_size(MAX_READ)
        .handshake(io)
        .await?;
    let mut link = Link {
        conn: Some(conn),
        done: false,
    };
    let mut resp = std::pin::pin!(sender.send_request(req));
    let resp = std::future::poll_fn(|cx| {
        link.poll(cx);
        resp.as_mut().poll(cx)
    })
    .await?;
    Ok((Conn { sender, nodelay }, Some(link), resp))
}

/// A new connection's HTTP/1 state machine (what sends the request, reads
/// the response and feeds its body). The request's own task drives it
/// until the response has ended if its body is short, so an app that
/// closes every connection (busybox httpd, the bench's app) costs no task
/// of its own and no hand-over between tasks; a connection with a long
/// body, or kept for reuse, gets a task then.
struct Link {
    /// `None` once it failed: dropped at once, so whatever waits on it (the
    /// response, its body) learns so.
    conn: Option<hyper::client::conn::http1::Connection<Io, Body>>,
    /// The exchange is over (the connection would be closed now).
    done: bool,
}

impl Link {
    fn poll(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        if let Some(c) = self.conn.as_mut() {
            match c.poll_without_shutdown(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.done = true,
                Poll::Ready(Err(_)) => self.conn = None,
            }
        }
    }

    /// Lets the connection go on without the request: idle for reuse (a
    /// task drives it), or closing (see [`linger`]; no task when the app
    /// has closed its side already, the usual case).
    fn release(mut self) {
        self.poll(&mut Context::from_waker(std::task::Waker::noop()));
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.done {
            let tcp = conn.into_parts().io.into_inner();
            if !closed_by_app(&tcp) {
                tokio::spawn(linger(tcp));
            }
        } else {
            tokio::spawn(async move {
                if let Ok(parts) = conn.without_shutdown().await {
                    linger(parts.io.into_inner()).await;
                }
            });
        }
    }
}

/// Whether the app has closed its side already (its FIN usually comes
/// right behind its last bytes): then the connection is closed now, with
/// no task to wait for that.
fn closed_by_app(tcp: &tokio::net::TcpStream) -> bool {
    let ready = std::pin::pin!(tcp.ready(tokio::io::Interest::READABLE));
    if let Poll::Ready(Ok(r)) = ready.poll(&mut Context::from_waker(std::task::Waker::noop())) {
        if r.is_read_closed() {
            return true;
        }
    }
    // Not seen by the runtime yet: ask the socket. Bytes after the end of
    // the response are dropped with the connection, like a failed read.
    !matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Once a connection is done (the app said close, or we dropped it), lets
/// the app close first: the TIME_WAIT then stays on its side, not among
/// our source ports toward it (tens of thousands of those made every
/// connect() search longer; see docs/caas-web.md).
async fn linger(mut tcp: tokio::net::TcpStream) {
    let eof = async {
        if let Ok(r) = tcp.ready(tokio::io::Interest::READABLE).await {
            if r.is_read_closed() {
                return;
            }
        }
        let mut buf = [0u8; 256];
        while let Ok(1..) = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {}
    };
    let _ = tokio::time::timeout(LINGER, eof).await;
}

/// An app's response body. A new connection's [`Link`] is driven from
/// here while the body is read; once it has been read to the end, a kept
/// connection goes back on this thread's idle list (a body dropped before
/// its end takes its connection with it). Not boxed here: the caller wraps
/// it once, with whatever it adds.
pub(crate) struct AppBody {
    body: Incoming,
    link: Option<Link>,
    back: Option<(SocketAddr, Conn)>,
}

impl AppBody {
    /// The response has ended: the connection goes on without it.
    fn finish(&mut self) {
        if let Some(link) = self.link.take() {
            link.release();
        }
        if let Some((addr, c)) = self.back.take() {
            // Not at all while the thread ends (its list is gone).
            let _ = IDLE_CONNS.try_with(|i| i.borrow_mut().put(addr, c));
        }
    }
}

impl Drop for AppBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) is never polled.
        if self.body.is_end_stream() {
            self.finish();
        }
    }
}

impl hyper::body::Body for AppBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(link) = self.link.as_mut() {
            link.poll(cx);
        }
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.finish();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// An app on 127.0.0.1 that answers "hi", keeping connections alive
    /// or closing each; counts the connections it accepted.
    async fn app(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        app_serving(close, bytes::Bytes::from("hi")).await
    }

    /// Like [`app`], answering `body`.
    async fn app_serving(close: bool, body: bytes::Bytes) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let n = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = Response::new(http_body_util::Full::new(body));
                        if close {
                            r.headers_mut()
                                .insert(header::CONNECTION, "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc),
                );
            }
        });
        (addr, conns)
    }

    /// A request for `path` on the app at `addr`, as the proxy makes it.
    fn request(addr: SocketAddr, path: &str, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(header::HOST, addr.to_string().parse().unwrap());
        req
    }

    async fn get(addr: SocketAddr) -> String {
        let resp = send(addr, request(addr, "/x", Body::empty()))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// A worker thread's kind of runtime.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reuses_kept_connections_only() {
        runtime().block_on(async {
            let (kept, kept_conns) = app(false).await;
            let (closed, closed_conns) = app(true).await;
            for _ in 0..3 {
                assert_eq!(get(kept).await, "hi");
                assert_eq!(get(closed).await, "hi");
            }
            assert_eq!(kept_conns.load(Ordering::SeqCst), 1);
            assert_eq!(closed_conns.load(Ordering::SeqCst), 3);
        });
    }

    #[test]
    fn long_bodies_stream_through_new_and_reused_connections() {
        runtime().block_on(async {
            // Many reads of the app's socket: the new connection's link is
            // driven from the body until the last byte.
            let big = bytes::Bytes::from(
                (0..3 * 1024 * 1024u32)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            );
            let fetch = |addr: SocketAddr| async move {
                let req = request(addr, "/big", Body::empty());
                send(addr, req).await.unwrap().into_body()
            };
            for close in [true, false] {
                let (addr, conns) = app_serving(close, big.clone()).await;
                for _ in 0..2 {
                    let got = fetch(addr).await.collect().await.unwrap().to_bytes();
                    assert!(got == big, "close={close}: {} bytes", got.len());
                }
                assert_eq!(conns.load(Ordering::SeqCst), if close { 2 } else { 1 });
            }
            // A body dropped half-read takes its connection with it.
            let (addr, conns) = app_serving(false, big.clone()).await;
            let mut body = fetch(addr).await;
            body.frame().await.unwrap().unwrap();
            drop(body);
            let got = fetch(addr).await.collect().await.unwrap().to_bytes();
            assert!(got == big, "after a dropped body: {} bytes", got.len());
            assert_eq!(conns.load(Ordering::SeqCst), 2);
        });
    }

    /// An app that reads the request, writes `answer` and closes.
    async fn raw_app(answer: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, answer).await;
            }
        });
        addr
    }

    #[test]
    fn an_app_that_fails_is_an_error_not_a_hang_or_a_short_answer() {
        runtime().block_on(async {
            let send_get = |addr: SocketAddr| async move {
                let req = request(addr, "/x", Body::empty());
                tokio::time::timeout(Duration::from_secs(10), async move {
                    let resp = send(addr, req).await?;
                    Ok::<_, UpstreamError>(resp.into_body().collect().await?.to_bytes())
                })
                .await
                .expect("the proxy hung on a failed app")
            };
            // Closed without an answer.
            let silent = raw_app(b"").await;
            assert!(send_get(silent).await.is_err());
            // An answer cut short of its Content-Length.
            let short = raw_app(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b").await;
            assert!(send_get(short).await.is_err());
            // Not HTTP.
            let garbage = raw_app(b"SSH-2.0-OpenSSH\r\n\r\n").await;
            assert!(send_get(garbage).await.is_err());
            // A whole answer still works after those.
            let fine = raw_app(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            assert_eq!(&send_get(fine).await.unwrap()[..], b"ok");
        });
    }

    #[test]
    fn requests_with_a_body_get_a_connection_without_delay() {
        runtime().block_on(async {
            let (kept, conns) = app(false).await;
            let post = || async move {
                let mut req = request(kept, "/x", Body::from("payload"));
                *req.method_mut() = axum::http::Method::POST;
                let resp = send(kept, req).await.unwrap();
                resp.into_body().collect().await.unwrap();
            };
            assert_eq!(get(kept).await, "hi");
            assert_eq!(conns.load(Ordering::SeqCst), 1);
            // The idle connection was made for a bodiless request (Nagle
            // on): a body needs a new one.
            post().await;
            assert_eq!(conns.load(Ordering::SeqCst), 2);
            // Both idle now: a body takes the one without delay, a
            // bodiless request either.
            post().await;
            assert_eq!(get(kept).await, "hi");
            post().await;
            assert_eq!(conns.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn which_messages_end_their_connection() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONNECTION, v.parse().unwrap());
            m
        };
        assert!(!closes(Version::HTTP_11, &HeaderMap::new()));
        assert!(closes(Version::HTTP_11, &h("Close")));
        assert!(closes(Version::HTTP_11, &h("x, close")));
        assert!(closes(Version::HTTP_10, &HeaderMap::new()));
        assert!(!closes(Version::HTTP_10, &h("keep-alive")));
    }
}
