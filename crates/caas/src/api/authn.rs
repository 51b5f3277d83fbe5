//! Who is calling: the access token from `Authorization: Bearer` or the
//! httpOnly cookie, verified, and its login checked live in the database
//! (so logout, password changes and disabling take effect at once).

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
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
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
        let claims = st.signer.verify(&token, crate::store::now())?;
        if !st.store().login_active(&claims.sid, &claims.sub).await? {
            return Err(Error::Unauthenticated("this login was revoked (logout, password change or account disabled): sign in again".into()));
        }
        Ok(Caller {
            id: claims.sub,
            role: Role::parse(&claims.role)?,
            login: claims.sid,
        })
    }
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
