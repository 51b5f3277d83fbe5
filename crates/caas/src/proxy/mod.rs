//! The routing proxy: `/r/{session}/...` to the sandbox's app port.
//!
//! Every request and every websocket upgrade is checked like the API: the
//! login cookie (or a bearer token) of the session's student, a teacher of
//! its class or an admin. What the sandbox receives never carries cubby's
//! credentials (its cookies and `Authorization` are removed), and what it
//! answers cannot set cubby's cookies. The path is taken raw, before any
//! decoding: dot segments, encoded slashes, backslashes and encoded dots are
//! refused rather than normalised, so `/r/A/../B` can never reach B.
//!
//! Plain requests go to the app on an HTTP/1.1 connection of the serving
//! thread's ([`upstream`]) with both bodies streamed; upgrades (websockets)
//! get their own connection whose two upgraded halves are spliced with
//! `copy_bidirectional`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::api::authn::{Caller, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::api::AppState;
use crate::error::Error;
use crate::sessions::activity::{Activity, Event};
use crate::store::sessions::State as SessionState;

pub mod upstream;
pub mod workers;

/// What the proxy needs of each template (templates never change once
/// saved: one lookup per process), and recent routing decisions.
#[derive(Default)]
pub struct Upstream {
    templates: std::sync::Mutex<HashMap<String, (Option<u16>, bool)>>,
    routes: Routes,
}

/// How long a routing decision (caller may open session S, whose app is at
/// A) is reused. Any session state change made by this process drops them
/// all at once ([`crate::store::Epochs`]); one made by another instance on
/// the same database (or a teacher removed from a class) is seen within
/// this bound.
pub const ROUTE_TTL: Duration = Duration::from_secs(1);

/// A cached route: the app's address, keep the prefix, when it was
/// decided, the sessions epoch it was decided at.
type Cached = (SocketAddr, bool, std::time::Instant, u64);

/// Cached positive decisions of [`target`]; refusals are never cached.
/// Two levels (caller, then session) so a lookup borrows both keys
/// instead of allocating them (taken from branch proxy12c-wip).
#[derive(Default)]
struct Routes {
    /// caller id -> session id -> decision
    seen: std::sync::Mutex<HashMap<String, HashMap<String, Cached>>>,
}

impl Routes {
    fn get(&self, who: &str, session: &str, epoch: u64) -> Option<(SocketAddr, bool)> {
        let m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (addr, keep, at, e) = m.get(who)?.get(session)?;
        (*e == epoch && at.elapsed() < ROUTE_TTL).then_some((*addr, *keep))
    }

    fn put(&self, who: &str, session: &str, epoch: u64, t: (SocketAddr, bool)) {
        let mut m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if m.values().map(HashMap::len).sum::<usize>() >= 10_000 {
            for v in m.values_mut() {
                v.retain(|_, (_, _, at, e)| *e == epoch && at.elapsed() < ROUTE_TTL);
            }
            m.retain(|_, v| !v.is_empty());
        }
        m.entry(who.to_string()).or_default().insert(
            session.to_string(),
            (t.0, t.1, std::time::Instant::now(), epoch),
        );
    }
}

/// A `/r/...` path split into its session and the rest, or why not.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub session: &'a str,
    /// The path after `/r/{session}`, always starting with `/`.
    pub rest: &'a str,
}

/// Splits and checks a raw (still percent-encoded) request path.
pub fn parse_path(path: &str) -> Result<Route<'_>, &'static str> {
    let tail = path.strip_prefix("/r/").ok_or("not a /r/ path")?;
    let (session, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    if session.len() != 32 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("this is not a session address: /r/ is followed by a session id");
    }
    // Checked on the raw bytes, without copies: this runs on every request.
    let encoded_slash = path
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c')));
    if encoded_slash || path.contains('\\') {
        return Err("encoded slashes and backslashes are not allowed in sandbox addresses");
    }
    if rest.split('/').any(dot_segment) {
        return Err("'.' and '..' path segments are not allowed in sandbox addresses");
    }
    Ok(Route { session, rest })
}

/// `.` or `..`, each dot possibly written `%2e` / `%2E`.
fn dot_segment(seg: &str) -> bool {
    let mut s = seg.as_bytes();
    let mut dots = 0;
    while let Some(&c) = s.first() {
        if c == b'.' {
            s = &s[1..];
        } else if s.len() >= 3 && c == b'%' && s[1] == b'2' && (s[2] | 0x20) == b'e' {
            s = &s[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// A plain page for people (the proxy answers browsers, not API clients).
pub fn page(status: StatusCode, title: &str, text: &str, refresh: Option<u32>) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let meta = refresh
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">{meta}\
         <title>{t}</title><link rel=stylesheet href=\"/assets/style.css\"></head>\
         <body><main class=notice><h1>{t}</h1><p>{x}</p>\
         <p><a href=\"/\">Back to my classes</a></p></main></body></html>",
        t = esc(title),
        x = esc(text),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = refresh {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

fn error_page(e: Error) -> Response {
    match e {
        Error::Unauthenticated(_) => page(
            StatusCode::UNAUTHORIZED,
            "Please sign in",
            "Your sign-in is missing or has expired. Sign in again, then reopen this page.",
            None,
        ),
        Error::Forbidden(m) => page(StatusCode::FORBIDDEN, "Not allowed", &m, None),
        Error::NotFound(_) => page(
            StatusCode::NOT_FOUND,
            "No such sandbox",
            "This sandbox does not exist or is not yours to open.",
            None,
        ),
        other => {
            crate::log!("warn", "proxy: {other}");
            page(
                StatusCode::BAD_GATEWAY,
                "The sandbox cannot be reached",
                "Something went wrong between the service and your sandbox. Try again in a moment.",
                Some(5),
            )
        }
    }
}

/// The session host's login cookie (see [`open`]).
pub const APP_COOKIE: &str = "cubby_app";
/// cubby's cookies: never forwarded to a sandbox, never set by one.
const OURS: [&str; 3] = [ACCESS_COOKIE, REFRESH_COOKIE, APP_COOKIE];

/// Header lines that belong to one hop, never forwarded (RFC 9110 7.6.1).
const HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Turns the request's headers into what the sandbox may see, in place
/// (no second map: the proxy does this for every request): hop-by-hop
/// lines, cubby's credentials and any `X-Forwarded-*` the client sent go;
/// ours are set (`client_ip`, the Host the client named, `prefix`).
fn upstream_headers(
    h: &mut HeaderMap,
    client_ip: Option<HeaderValue>,
    prefix: Option<HeaderValue>,
) {
    // Names listed in Connection are hop-by-hop too.
    let listed: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().cloned().collect();
    for v in &listed {
        for name in v.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if !name.is_empty() {
                h.remove(name);
            }
        }
    }
    for name in HOP.iter() {
        h.remove(name);
    }
    h.remove(header::AUTHORIZATION);
    let forwarded: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in forwarded {
        h.remove(name);
    }
    // The app's own cookies pass; cubby's never do.
    if h.contains_key(header::COOKIE) {
        let kept: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|kv| {
                let name = kv.split('=').next().unwrap_or("");
                !kv.is_empty() && !OURS.contains(&name)
            })
            .collect();
        let joined = (!kept.is_empty()).then(|| kept.join("; "));
        h.remove(header::COOKIE);
        if let Some(v) = joined.and_then(|j| HeaderValue::from_str(&j).ok()) {
            h.insert(header::COOKIE, v);
        }
    }
    if let Some(v) = client_ip {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(v) = prefix {
        h.insert(HeaderName::from_static("x-forwarded-prefix"), v);
    }
}

/// A client's address as an `X-Forwarded-For` value (made once per
/// connection by the worker that accepted it).
pub(crate) fn forwarded_for(peer: SocketAddr) -> Option<HeaderValue> {
    use std::io::Write;
    // Formatted on the stack: the value's own copy is the only allocation.
    let mut buf = [0u8; 64];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    write!(w, "{}", peer.ip()).ok()?;
    let n = usize::try_from(w.position()).ok()?;
    HeaderValue::from_bytes(&buf[..n]).ok()
}

/// The sandbox's answer as the browser may see it: no hop-by-hop headers,
/// no attempt to set (or clear) cubby's own cookies.
fn clean_response_headers(h: &mut HeaderMap) {
    for name in HOP.iter() {
        if name != header::CONNECTION && name != header::UPGRADE {
            h.remove(name);
        }
    }
    let cookies: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .to_str()
                .ok()
                .and_then(|s| s.split('=').next())
                .unwrap_or("")
                .trim()
                .to_string();
            !OURS.contains(&name.as_str())
        })
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && h.contains_key(header::UPGRADE)
}

/// Websockets are GETs, so the API's cross-site check on changes does not
/// cover them: an upgrade whose Origin is another origin is refused (also
/// used for changes on session hosts).
pub fn check_same_origin(h: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    if origin_host.is_empty() || origin_host != host {
        return Err(Error::Forbidden(format!(
            "a connection opened by another site ({origin}) is refused"
        )));
    }
    Ok(())
}

/// Where a session's app answers, if it may be opened now (cached, see
/// [`ROUTE_TTL`]).
async fn target(st: &AppState, who: &Caller, id: &str) -> Result<(SocketAddr, bool), Response> {
    // Read before the lookups: a state change meanwhile moves the epoch and
    // what we store is never used.
    let epoch = st
        .store()
        .epochs
        .sessions
        .load(std::sync::atomic::Ordering::SeqCst);
    if let Some(t) = st.upstream.routes.get(&who.id, id, epoch) {
        return Ok(t);
    }
    // Boxed: the lookups' futures are large, and every proxied request's
    // future (moved into hyper's per-connection box) would carry their size.
    let t = Box::pin(target_uncached(st, who, id)).await?;
    st.upstream.routes.put(&who.id, id, epoch, t);
    Ok(t)
}

async fn target_uncached(
    st: &AppState,
    who: &Caller,
    id: &str,
) -> Result<(SocketAddr, bool), Response> {
    let s = crate::api::handlers::visible_session(st, who, id)
        .await
        .map_err(error_page)?;
    match s.state {
        SessionState::Stopped
        | SessionState::Failed
        | SessionState::Stopping
        | SessionState::ArchivePending => {
            let why = s.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            return Err(page(
                StatusCode::GONE,
                "This session has ended",
                &format!("This sandbox is not running any more{why}. Start it again from your classes page."),
                None,
            ));
        }
        SessionState::Requested | SessionState::Starting | SessionState::Ready => {}
    }
    let cached = st
        .upstream
        .templates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&s.template_id)
        .copied();
    let (port, keep_prefix) = match cached {
        Some(c) => c,
        None => {
            let t = st
                .store()
                .template(&s.template_id)
                .await
                .map_err(error_page)?;
            let c = (t.spec.port, t.spec.keep_prefix);
            st.upstream
                .templates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(s.template_id.clone(), c);
            c
        }
    };
    let Some(port) = port else {
        return Err(page(
            StatusCode::NOT_FOUND,
            "No app in this sandbox",
            "This sandbox's template serves no app; use its terminal instead.",
            None,
        ));
    };
    let mut addr: Option<IpAddr> = s.address.as_deref().and_then(|a| a.parse().ok());
    // A claimed warm-pool member serves its app before the claim is done
    // (workspace not yet reset, student's work not yet restored): routed
    // only once ready (the row's address).
    let claiming = s.sandbox.starts_with("caas-pool-");
    if addr.is_none() && s.state != SessionState::Requested && !claiming {
        // Routes exist from "starting": ask the backend for the address.
        if let Ok(Some(info)) = st.manager.backend.inspect_sandbox(&s.sandbox).await {
            addr = info.address;
        }
    }
    match addr {
        Some(ip) => Ok((SocketAddr::new(ip, port), keep_prefix)),
        None => Err(page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Your sandbox is starting",
            "This page reloads by itself when it is ready.",
            Some(2),
        )),
    }
}

/// `/r/{session}/...`: checks, then forwards.
pub async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let client_ip = recorded_forwarded_for(&req);
    handle_path(st, req, client_ip).await
}

/// The `X-Forwarded-For` value of the client address a listener recorded
/// in the request (`ConnectInfo`), if any.
pub(crate) fn recorded_forwarded_for(req: &Request) -> Option<HeaderValue> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .and_then(|c| forwarded_for(c.0))
}

/// [`handle`], with the client's `X-Forwarded-For` value known.
async fn handle_path(st: AppState, req: Request, client_ip: Option<HeaderValue>) -> Response {
    if !st.auth.path_routing {
        // Refused before any lookup: the same answer for every session.
        return page(
            StatusCode::FORBIDDEN,
            "Apps are not opened by path here",
            "This service opens every app on an address of its own (so an app can never act on the service with your sign-in). Use \"Open app\" on your classes page.",
            None,
        );
    }
    // A clone shares the request's bytes: the route borrows from it while
    // the parts are handed on.
    let uri = req.uri().clone();
    let route = match parse_path(uri.path()) {
        Ok(r) => r,
        Err(why) => return page(StatusCode::BAD_REQUEST, "Bad sandbox address", why, None),
    };
    if route.rest.is_empty() {
        // Relative links in the app resolve against a directory.
        let q = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let to = format!("{}/{q}", uri.path());
        return match HeaderValue::from_str(&to) {
            Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
            Err(_) => page(
                StatusCode::BAD_REQUEST,
                "Bad sandbox address",
                "unparseable path",
                None,
            ),
        };
    }
    let (mut parts, body) = req.into_parts();
    // Browsers prove who they are with the login cookie; an Authorization
    // header then belongs to the app (and is removed all the same). A bearer
    // token is used only without the cookie (API clients, benchmarks).
    if crate::api::authn::cookie(&parts.headers, ACCESS_COOKIE).is_some() {
        parts.headers.remove(header::AUTHORIZATION);
    }
    let who = match Caller::from_request_parts(&mut parts, &st).await {
        Ok(c) => c,
        Err(e) => return error_page(e),
    };
    let to = Forward {
        session: route.session,
        rest: Some(route.rest),
        client_ip,
    };
    forward(st, who, to, parts, body).await
}

/// Where [`forward`] sends a request.
struct Forward<'a> {
    session: &'a str,
    /// The path after `/r/{session}` (path routing), or `None` on the
    /// session's own host (the whole path goes to the app).
    rest: Option<&'a str>,
    /// The client's address as `X-Forwarded-For` says it.
    client_ip: Option<HeaderValue>,
}

/// Forwards a request whose caller is known to the session's app.
async fn forward(
    st: AppState,
    who: Caller,
    to: Forward<'_>,
    mut parts: axum::http::request::Parts,
    body: Body,
) -> Response {
    let upgrade = is_upgrade(&parts.headers);
    if upgrade {
        if let Err(e) = check_same_origin(&parts.headers) {
            return error_page(e);
        }
    }
    let (addr, keep_prefix) = match target(&st, &who, to.session).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let session = to.session.to_string();
    st.manager.activity.record(&session, Event::Request);
    let raw_path = parts.uri.path();
    let path = match to.rest {
        Some(_) if keep_prefix => raw_path,
        Some("") => "/",
        Some(r) => r,
        None => raw_path,
    };
    let query = parts.uri.query();
    let mut pq = String::with_capacity(path.len() + 1 + query.map_or(0, str::len));
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    let prefix = to.rest.and_then(|_| {
        let mut p = String::with_capacity(3 + session.len());
        p.push_str("/r/");
        p.push_str(&session);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(p)).ok()
    });
    let upgrade_to = upgrade
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    let mut headers = std::mem::take(&mut parts.headers);
    upstream_headers(&mut headers, to.client_ip, prefix);
    if upgrade {
        // Boxed like the route lookup: rare, and its future is large.
        return Box::pin(forward_upgrade(
            st.manager.clone(),
            session,
            addr,
            parts,
            pq,
            headers,
            upgrade_to,
        ))
        .await;
    }
    let uri = match Uri::from_maybe_shared(bytes::Bytes::from(pq)) {
        Ok(u) => u,
        Err(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad sandbox address",
                "unparseable path",
                None,
            )
        }
    };
    if !headers.contains_key(header::HOST) {
        if let Ok(h) = HeaderValue::from_str(&addr.to_string()) {
            headers.insert(header::HOST, h);
        }
    }
    // A bodiless request (most of them) needs no counting wrapper.
    let body = if axum::body::HttpBody::is_end_stream(&body) {
        Body::empty()
    } else {
        let activity = st.manager.clone();
        let s2 = session.clone();
        Body::new(body.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                activity
                    .activity
                    .record(&s2, Event::ToSandbox(d.len() as u64));
            }
            f
        }))
    };
    let mut out = axum::http::Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    let sent = upstream::send(addr, out).await;
    match sent {
        Ok(resp) => {
            let (mut rp, rb) = resp.into_parts();
            clean_response_headers(&mut rp.headers);
            rp.headers.remove(header::CONNECTION);
            rp.headers.remove(header::UPGRADE);
            let m = st.manager.clone();
            let body = Body::new(rb.map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    m.activity
                        .record(&session, Event::FromSandbox(d.len() as u64));
                }
                f
            }));
            Response::from_parts(rp, body)
        }
        Err(e) => {
            crate::log!("warn", "proxy to {addr}: {e}");
            page(
                StatusCode::BAD_GATEWAY,
                "The app in your sandbox does not answer",
                "The sandbox runs, but nothing answers on its app port (yet). If it just started, this page reloads by itself.",
                Some(3),
            )
        }
    }
}

// ------------------------------------------------- {session}.{domain} hosts
//
// A session's own host is another origin, so the service's cookie (host-only)
// never reaches it and its pages cannot call /api with the visitor's login.
// A login is carried there by a one-time code (30 s, one use) made by
// `/api/sessions/{id}/open` on the service's host; the session host trades it
// for a cookie of its own, signed with a key of its own (never an API token).

const HANDOFF_SECS: i64 = 30;
const APP_COOKIE_SECS: i64 = 12 * 3600;

#[derive(Default)]
pub struct Handoffs {
    codes: std::sync::Mutex<std::collections::HashMap<String, (Caller, String, i64)>>,
}

impl Handoffs {
    fn issue(&self, who: &Caller, session: &str) -> String {
        let code = crate::store::hex(&crate::auth::random_bytes::<24>());
        let now = crate::store::now();
        let mut m = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, _, exp)| *exp > now);
        m.insert(
            code.clone(),
            (who.clone(), session.to_string(), now + HANDOFF_SECS),
        );
        code
    }

    /// The code's caller if it is live and for this session; used up either way.
    fn redeem(&self, code: &str, session: &str) -> Option<Caller> {
        let mut m = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let (who, s, exp) = m.remove(code)?;
        (s == session && exp > crate::store::now()).then_some(who)
    }
}

/// `GET /api/sessions/{id}/open`: where the app is, for a browser.
pub async fn open(
    State(st): State<AppState>,
    who: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    crate::api::handlers::visible_session(&st, &who, &id).await?;
    let to = match &st.auth.app_domain {
        None if st.auth.path_routing => format!("/r/{id}/"),
        None => {
            return Err(Error::Conflict(
                "apps cannot be opened on this service yet: the operator runs `cubby serve` with --domain DOMAIN (each app on its own address), or --path-routing for trusted templates only".into(),
            ))
        }
        Some(domain) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let port = host
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map(|(_, p)| format!(":{p}"))
                .unwrap_or_default();
            let scheme = if st.auth.secure_cookies {
                "https"
            } else {
                "http"
            };
            let code = st.handoffs.issue(&who, &id);
            format!("{scheme}://{id}.{domain}{port}/.cubby/enter?code={code}")
        }
    };
    let loc = HeaderValue::from_str(&to).map_err(|e| Error::Internal(e.to_string()))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, loc)]).into_response())
}

/// The session a `Host` names under the configured domain, if any.
pub(crate) fn session_host<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let name = match host.rsplit_once(':') {
        Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let sub = name.strip_suffix(domain)?.strip_suffix('.')?;
    Some(sub)
}

/// Middleware: requests for `{session}.{domain}` go to that session's app
/// (all paths: that origin is the app's); everything else passes on.
pub async fn host_dispatch(
    State(st): State<AppState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    match session_of_host(&st, &mut req) {
        Some(s) => {
            let client_ip = recorded_forwarded_for(&req);
            handle_host(st, s, req, client_ip).await
        }
        None => next.run(req).await,
    }
}

/// A request the proxy serves ([`workers`] decides), answered without the
/// router: what [`host_dispatch`] and the `/r/` route would do with it.
/// `client_ip`: the client's address as `X-Forwarded-For` says it.
pub(crate) async fn serve_proxied(
    st: AppState,
    mut req: Request,
    client_ip: Option<HeaderValue>,
) -> Response {
    match session_of_host(&st, &mut req) {
        Some(s) => handle_host(st, s, req, client_ip).await,
        None => handle_path(st, req, client_ip).await,
    }
}

/// The session whose own host a request is for, if any.
fn session_of_host(st: &AppState, req: &mut Request) -> Option<String> {
    // HTTP/2 names the host in `:authority`, not `Host`: give every layer
    // below (session hosts, Origin checks, what apps receive) one place to
    // read it.
    if !req.headers().contains_key(header::HOST) {
        let authority = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        if let Some(a) = authority {
            req.headers_mut().insert(header::HOST, a);
        }
    }
    st.auth.app_domain.as_deref().and_then(|d| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| session_host(h, d))
            .map(str::to_ascii_lowercase)
    })
}

async fn handle_host(
    st: AppState,
    session: String,
    req: Request,
    client_ip: Option<HeaderValue>,
) -> Response {
    if session.len() != 32 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error_page(Error::NotFound("session".into()));
    }
    let (mut parts, body) = req.into_parts();
    if parts.uri.path() == "/.cubby/enter" {
        let code = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("code="))
            .unwrap_or("");
        let Some(who) = st.handoffs.redeem(code, &session) else {
            return page(
                StatusCode::UNAUTHORIZED,
                "This link has expired",
                "Open the sandbox again from your classes page.",
                None,
            );
        };
        let now = crate::store::now();
        let token = st.app_signer.sign(&crate::auth::jwt::Claims {
            sub: who.id,
            sid: who.login,
            role: who.role.as_str().to_string(),
            iat: now,
            exp: now + APP_COOKIE_SECS,
        });
        let secure = if st.auth.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{APP_COOKIE}={token}; Path=/; Max-Age={APP_COOKIE_SECS}; HttpOnly; SameSite=Lax{secure}"
        );
        return match HeaderValue::from_str(&cookie) {
            Ok(c) => (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, c),
                    (header::LOCATION, HeaderValue::from_static("/")),
                ],
            )
                .into_response(),
            Err(e) => error_page(Error::Internal(e.to_string())),
        };
    }
    let who = match app_caller(&st, &parts.headers).await {
        Ok(c) => c,
        Err(e) => return error_page(e),
    };
    // Sibling session hosts are the same site: a change must come from
    // this host's own pages.
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe {
        if let Err(e) = check_same_origin(&parts.headers) {
            return error_page(e);
        }
    }
    parts.headers.remove(header::AUTHORIZATION);
    let to = Forward {
        session: &session,
        rest: None,
        client_ip,
    };
    forward(st, who, to, parts, body).await
}

/// The caller on a session host: its own cookie, and the login still live.
async fn app_caller(st: &AppState, h: &HeaderMap) -> Result<Caller, Error> {
    let token = crate::api::authn::cookie(h, APP_COOKIE)
        .ok_or_else(|| Error::Unauthenticated("open the sandbox from your classes page".into()))?;
    let claims = st.app_signer.verify(token, crate::store::now())?;
    if !crate::api::authn::login_live(st, &claims.sid, &claims.sub).await? {
        return Err(Error::Unauthenticated("this login was revoked".into()));
    }
    Ok(Caller {
        id: claims.sub,
        role: crate::store::users::Role::parse(&claims.role)?,
        login: claims.sid,
    })
}

/// A websocket (or any Upgrade): its own connection to the app; once both
/// sides switched protocols, bytes are copied both ways until either closes.
async fn forward_upgrade(
    manager: Arc<crate::sessions::Manager>,
    session: String,
    addr: SocketAddr,
    mut parts: axum::http::request::Parts,
    pq: String,
    mut headers: HeaderMap,
    upgrade_to: Option<HeaderValue>,
) -> Response {
    let unreachable = || {
        page(
            StatusCode::BAD_GATEWAY,
            "The app in your sandbox does not answer",
            "Nothing answers on the sandbox's app port.",
            None,
        )
    };
    let Some(client_up) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Upgrade not possible",
            "this connection cannot switch protocols",
            None,
        );
    };
    let Ok(io) = upstream::connect(addr, true).await else {
        return unreachable();
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(x) => x,
        Err(_) => return unreachable(),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade_to {
        headers.insert(header::UPGRADE, u);
    }
    let mut req = axum::http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = match pq.parse() {
        Ok(u) => u,
        Err(_) => return unreachable(),
    };
    *req.headers_mut() = headers;
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => return unreachable(),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The app refused the upgrade: pass its answer on.
        let (mut rp, rb) = resp.into_parts();
        clean_response_headers(&mut rp.headers);
        rp.headers.remove(header::CONNECTION);
        rp.headers.remove(header::UPGRADE);
        return Response::from_parts(rp, Body::new(rb));
    }
    let server_up = hyper::upgrade::on(&mut resp);
    let (mut rp, _) = resp.into_parts();
    clean_response_headers(&mut rp.headers);
    tokio::spawn(async move {
        let (Ok(c), Ok(s)) = (client_up.await, server_up.await) else {
            return;
        };
        let mut c = Counted {
            inner: TokioIo::new(c),
            activity: manager,
            session,
        };
        let mut s = TokioIo::new(s);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
    });
    Response::from_parts(rp, Body::empty())
}

/// The browser's side of a spliced upgrade, counting bytes both ways.
struct Counted<T> {
    inner: T,
    activity: Arc<crate::sessions::Manager>,
    session: String,
}

impl<T> Counted<T> {
    fn log(&self) -> &Activity {
        &self.activity.activity
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.log().record(&self.session, Event::ToSandbox(n as u64));
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.log()
                .record(&self.session, Event::FromSandbox(n as u64));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn paths() {
        assert_eq!(
            parse_path(&format!("/r/{S}/a/b?x")),
            Ok(Route {
                session: S,
                rest: "/a/b?x"
            })
        );
        assert_eq!(parse_path(&format!("/r/{S}")).unwrap().rest, "");
        // Dots and percent signs inside names are fine.
        for good in [
            format!("/r/{S}/.well-known/x"),
            format!("/r/{S}/a.b/..c/...%2e"),
            format!("/r/{S}/a%20b/%2"),
            format!("/r/{S}/x%2"),
        ] {
            assert!(parse_path(&good).is_ok(), "{good}");
        }
        for bad in [
            format!("/r/{S}/../{S}"),
            format!("/r/{S}/a/%2e%2E/b"),
            format!("/r/{S}/a%2Fb"),
            format!("/r/{S}/a%5cb"),
            format!("/r/{S}/a\\b"),
            format!("/r/{S}/./x"),
            format!("/r/{S}/a/%2E."),
            format!("/r/{S}/a/.%2e/"),
            format!("/r/{S}/%2e"),
            format!("/r/{S}/a%2fb"),
            format!("/r/{S}/a%5Cb"),
            "/r/nothex/x".to_string(),
            "/r/../x".to_string(),
        ] {
            assert!(parse_path(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cached_routes_die_with_the_epoch_and_the_ttl() {
        let r = Routes::default();
        let a: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        r.put("u", S, 7, (a, false));
        assert_eq!(r.get("u", S, 7), Some((a, false)));
        // Another caller, or any session state change since: not used.
        assert_eq!(r.get("v", S, 7), None);
        assert_eq!(r.get("u", S, 8), None);
        std::thread::sleep(ROUTE_TTL + Duration::from_millis(20));
        assert_eq!(r.get("u", S, 7), None);
    }

    #[test]
    fn credentials_never_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("cubby_access=t; app=1; cubby_refresh=r"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        // HTTP/2 sends each cookie on a line of its own.
        h.append(header::COOKIE, HeaderValue::from_static("b=2; cubby_app=s"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        let mut out = h.clone();
        upstream_headers(&mut out, None, HeaderValue::from_str("/r/x").ok());
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert_eq!(out.get(header::COOKIE).unwrap(), "app=1; b=2");
        assert_eq!(out.get_all(header::COOKIE).iter().count(), 1);
        assert!(out.get("x-secret").is_none() && out.get(header::CONNECTION).is_none());
        assert!(out.get(header::TE).is_none());
        assert!(out.get("x-forwarded-host").is_none() && out.get("x-forwarded-user").is_none());
        assert_eq!(out.get("x-forwarded-prefix").unwrap(), "/r/x");
        // Only cubby's cookies: no Cookie line at all.
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("cubby_access=t"));
        only_ours.insert(header::HOST, HeaderValue::from_static("h:1"));
        upstream_headers(
            &mut only_ours,
            forwarded_for("10.1.2.3:9".parse().unwrap()),
            None,
        );
        assert!(only_ours.get(header::COOKIE).is_none());
        assert_eq!(only_ours.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(only_ours.get("x-forwarded-host").unwrap(), "h:1");
        let v6 = forwarded_for("[fd00::1:2]:9".parse().unwrap()).unwrap();
        assert_eq!(v6, "fd00::1:2");
        let mut r = HeaderMap::new();
        r.append(
            header::SET_COOKIE,
            HeaderValue::from_static("cubby_access=x; Path=/"),
        );
        r.append(header::SET_COOKIE, HeaderValue::from_static("app=2"));
        clean_response_headers(&mut r);
        let left: Vec<_> = r.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, vec!["app=2"]);
    }
}
