//! Who is calling: the access token from `Authorization: Bearer` or the
//! httpOnly cookie, verified, and its login checked live in the database
//! (so logout, password changes and disabling take effect at once).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::AppState;
use crate::error::{Error, Result};
use crate::store::users::Role;

pub const ACCESS_COOKIE: &str = "cubby_access";
pub const REFRESH_COOKIE: &str = "cubby_refresh";

#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub role: Role,
    pub login: String,
}

impl Caller {
    pub fn require(&self, roles: &[Role]) -> Result<()> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Error::Forbidden(format!(
                "this needs the role {}",
                names.join(" or ")
            )))
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = match bearer {
            Some(t) => t,
            None => {
                let t = cookie(&parts.headers, ACCESS_COOKIE).ok_or_else(|| {
                    Error::Unauthenticated("sign in first: POST /api/auth/login".into())
                })?;
                check_origin(parts)?;
                t
            }
        };
        let claims = st.signer.verify(token, crate::store::now())?;
        if !login_live(st, &claims.sid, &claims.sub).await? {
            return Err(Error::Unauthenticated("this login was revoked (logout, password change or account disabled): sign in again".into()));
        }
        Ok(Caller {
            id: claims.sub,
            role: Role::parse(&claims.role)?,
            login: claims.sid,
        })
    }
}

/// How long a "this login is live" answer is reused. A revocation by this
/// process (logout, password change, disabling) drops every cached answer at
/// once ([`crate::store::Epochs`]); one made by another instance on the same
/// database takes effect within this bound.
pub const LIVE_LOGIN_TTL: Duration = Duration::from_secs(1);

/// Cached positive answers of [`crate::store::Store::login_active`]: one
/// database read per login per second instead of one per request (the
/// proxy serves thousands of requests a second per login).
#[derive(Default)]
pub struct LiveLogins {
    /// login id -> (user id, checked at, logins epoch when read)
    seen: Mutex<HashMap<String, (String, Instant, u64)>>,
}

impl LiveLogins {
    fn hit(&self, login: &str, user: &str, epoch: u64) -> bool {
        let m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        matches!(m.get(login), Some((u, at, e)) if u == user && *e == epoch && at.elapsed() < LIVE_LOGIN_TTL)
    }

    fn put(&self, login: &str, user: &str, epoch: u64) {
        let mut m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= 10_000 {
            m.retain(|_, (_, at, e)| *e == epoch && at.elapsed() < LIVE_LOGIN_TTL);
        }
        m.insert(login.to_string(), (user.to_string(), Instant::now(), epoch));
    }
}

/// Is this login live and its user enabled (see [`LiveLogins`])?
pub async fn login_live(st: &AppState, login: &str, user: &str) -> Result<bool> {
    // Read before the query: a revocation that lands meanwhile moves the
    // epoch, so what we store is never used.
    let epoch = st.store().epochs.logins.load(Ordering::SeqCst);
    if st.live_logins.hit(login, user, epoch) {
        return Ok(true);
    }
    // Boxed: the query's future is large, and every proxied request's
    // future would otherwise carry its size (see proxy::target).
    let live = Box::pin(st.store().login_active(login, user)).await?;
    if live {
        st.live_logins.put(login, user, epoch);
    }
    Ok(live)
}

/// Cookies ride along on cross-site requests: besides SameSite=Strict, a
/// cookie-authenticated change must not come from another origin (when the
/// browser says where it comes from).
fn check_origin(parts: &Parts) -> Result<()> {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    if origin_host.is_empty() || origin_host != host {
        return Err(Error::Forbidden(format!(
            "cross-site request from {origin} refused: use the service's own pages or a bearer token"
        )));
    }
    Ok(())
}
