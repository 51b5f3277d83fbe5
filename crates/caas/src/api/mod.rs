//! The REST API under /api/. Routes are declared once, in [`routes`], with
//! their documentation; the router and the OpenAPI document are both built
//! from that table, so they cannot drift apart.

mod archives;
pub mod authn;
pub mod error;
pub(crate) mod handlers;
mod monitor;
mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;

use crate::auth::jwt::Signer;
use crate::auth::ratelimit::RateLimiter;
use crate::sessions::Manager;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// A new login revokes the user's other logins.
    pub single_login: bool,
    /// Mark cookies `Secure` (when serving TLS).
    pub secure_cookies: bool,
    /// Login attempts per user name and per client address, per minute.
    pub per_user_per_min: u32,
    pub per_addr_per_min: u32,
    /// Serve each session's app also at `{session}.{app_domain}` (its own
    /// origin), entered through a one-time code (see proxy).
    pub app_domain: Option<String>,
    /// Also serve apps at `/r/{session}/` on the service's own origin. Off
    /// by default: an app there shares the origin of the UI and the API, so
    /// its JavaScript acts with the visitor's login (trusted templates only).
    pub path_routing: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            single_login: false,
            secure_cookies: false,
            per_user_per_min: 10,
            per_addr_per_min: 60,
            app_domain: None,
            path_routing: false,
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub manager: Arc<Manager>,
    pub signer: Signer,
    pub auth: AuthConfig,
    pub rl_user: RateLimiter,
    pub rl_addr: RateLimiter,
    /// The routing proxy's pooled client.
    pub upstream: crate::proxy::Upstream,
    /// Signs the cookies of `{session}.{domain}` hosts: a key of their own,
    /// so such a cookie is never an API token.
    pub app_signer: Signer,
    /// One-time codes that carry a login to a `{session}.{domain}` host.
    pub handoffs: crate::proxy::Handoffs,
    /// Recently verified logins (see authn::LiveLogins).
    pub live_logins: authn::LiveLogins,
    /// Web terminal shells, parked between websockets (web::terminal).
    pub shells: crate::web::terminal::Shells,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The signing key lives in the database (shared by every instance on
    /// it), created on first start, never logged.
    pub async fn new(manager: Arc<Manager>, auth: AuthConfig) -> crate::error::Result<AppState> {
        let key = manager
            .store
            .setting_or_init("jwt_hs256_key", || {
                crate::store::hex(&crate::auth::random_bytes::<32>())
            })
            .await?;
        let minute = Duration::from_secs(60);
        Ok(AppState(Arc::new(Inner {
            signer: Signer::new(key.as_bytes()),
            app_signer: Signer::new(format!("{key}/app-hosts").as_bytes()),
            handoffs: crate::proxy::Handoffs::default(),
            live_logins: authn::LiveLogins::default(),
            shells: crate::web::terminal::Shells::default(),
            rl_user: RateLimiter::new(auth.per_user_per_min, minute),
            rl_addr: RateLimiter::new(auth.per_addr_per_min, minute),
            auth,
            manager,
            upstream: crate::proxy::Upstream::default(),
        })))
    }

    pub fn store(&self) -> &Store {
        &self.manager.store
    }
}

/// One API route: what the router serves and what OpenAPI documents.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    /// Who may call it ("public", "any", "admin", "teacher", "student" ...).
    pub access: &'static str,
    /// An example request body (JSON, or CSV for imports).
    pub body: Option<&'static str>,
    pub tag: &'static str,
    handler: MethodRouter<AppState>,
}

macro_rules! route {
    ($m:ident, $path:literal, $tag:literal, $access:literal, $summary:literal, $body:expr, $h:expr) => {
        Route {
            method: Method::$m,
            path: $path,
            summary: $summary,
            access: $access,
            body: $body,
            tag: $tag,
            handler: route!(@r $m, $h),
        }
    };
    (@r GET, $h:expr) => { get($h) };
    (@r POST, $h:expr) => { post($h) };
    (@r PUT, $h:expr) => { put($h) };
}

/// Operations endpoints (text, not the API's JSON error shape).
mod ops {
    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::AppState;

    pub async fn metrics(State(st): State<AppState>) -> Response {
        match crate::metrics::render(&st.manager).await {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
                .into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("metrics: {e}\n")).into_response(),
        }
    }

    pub async fn healthz() -> &'static str {
        "ok\n"
    }

    pub async fn readyz(State(st): State<AppState>) -> Response {
        match crate::metrics::ready(&st.manager).await {
            Ok(()) => "ready\n".into_response(),
            Err(p) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", p.join("\n")),
            )
                .into_response(),
        }
    }
}

pub fn routes() -> Vec<Route> {
    use handlers as h;
    vec![
        route!(GET, "/api/health", "meta", "public", "Liveness: the service and its database answer", None, h::health),
        route!(GET, "/metrics", "meta", "public", "Prometheus metrics: sessions by state, admission queue and wait, provisioning and archive latency, failures, engine errors, proxied requests and bytes (no per-user data)", None, ops::metrics),
        route!(GET, "/healthz", "meta", "public", "Liveness: the process answers", None, ops::healthz),
        route!(GET, "/readyz", "meta", "public", "Readiness: the database and the backend answer (503 with the reasons otherwise)", None, ops::readyz),
        route!(GET, "/api/openapi.json", "meta", "public", "This API as OpenAPI 3", None, openapi::serve),
        route!(POST, "/api/auth/login", "auth", "public", "Sign in: access token (also an httpOnly cookie) and refresh token; rate-limited per user and address", Some(r#"{"username":"ann","password":"..."}"#), h::login),
        route!(POST, "/api/auth/refresh", "auth", "public", "Trade a refresh token (body or cookie) for new tokens; the old refresh token stops working", Some(r#"{"refresh_token":"..."}"#), h::refresh),
        route!(POST, "/api/auth/logout", "auth", "any", "Revoke this login (its access and refresh tokens)", None, h::logout),
        route!(GET, "/api/auth/me", "auth", "any", "Who am I", None, h::me),
        route!(POST, "/api/auth/password", "auth", "any", "Change my password; revokes all my logins", Some(r#"{"old_password":"...","new_password":"..."}"#), h::change_password),
        route!(GET, "/api/users", "users", "admin", "List users", None, h::list_users),
        route!(POST, "/api/users", "users", "admin", "Create a user", Some(r#"{"username":"ann","role":"student","password":"..."}"#), h::create_user),
        route!(POST, "/api/users/import", "users", "admin", "Create users from CSV (username,role,password per line): all or none", Some("username,role,password\nann,student,secret123\n"), h::import_users),
        route!(POST, "/api/users/{id}/password", "users", "admin", "Set a user's password; revokes their logins", Some(r#"{"password":"..."}"#), h::set_user_password),
        route!(POST, "/api/users/{id}/disabled", "users", "admin", "Disable (revoking their logins) or enable a user", Some(r#"{"disabled":true}"#), h::set_user_disabled),
        route!(GET, "/api/classes", "classes", "any", "Classes: all (admin), taught (teacher), enrolled (student)", None, h::list_classes),
        route!(POST, "/api/classes", "classes", "teacher, admin", "Create a class", Some(r#"{"name":"Systems 101","code":"sys101","capacity":30,"template_id":null}"#), h::create_class),
        route!(POST, "/api/classes/join", "classes", "student", "Join a class by its join code (capacity enforced atomically)", Some(r#"{"join_code":"ABCDE23456"}"#), h::join_class),
        route!(GET, "/api/classes/{id}", "classes", "teacher of the class, admin, enrolled student", "A class (the join code only for its teachers and admins)", None, h::get_class),
        route!(PUT, "/api/classes/{id}/template", "classes", "teacher of the class, admin", "Assign the class's template", Some(r#"{"template_id":"..."}"#), h::set_class_template),
        route!(GET, "/api/classes/{id}/students", "classes", "teacher of the class, admin", "The class's students", None, h::list_students),
        route!(POST, "/api/classes/{id}/students", "classes", "teacher of the class, admin", "Enrol a student by user name", Some(r#"{"username":"ann"}"#), h::add_student),
        route!(POST, "/api/classes/{id}/students/import", "classes", "teacher of the class, admin", "Enrol students from CSV (username[,password]; a password creates the student): checked first, then all enrolled", Some("ann\nbob,secret123\n"), h::import_students),
        route!(POST, "/api/classes/{id}/up", "sessions", "teacher of the class, admin", "Start every student's session (bounded concurrency); ?wait=true waits until they settle", None, h::up_class),
        route!(POST, "/api/classes/{id}/down", "sessions", "teacher of the class, admin", "Stop every active session of the class: each workspace is archived and verified, then its sandbox and volume removed", None, h::down_class),
        route!(GET, "/api/templates", "templates", "teacher, admin", "List templates", None, h::list_templates),
        route!(POST, "/api/templates", "templates", "teacher, admin", "Create a template; validated (image present, memory, port, non-root user ...)", Some(r#"{"name":"demo","spec":{"image":"cubby-demo:latest","port":8080,"memory_bytes":67108864}}"#), h::create_template),
        route!(GET, "/api/templates/{id}", "templates", "teacher, admin", "A template", None, h::get_template),
        route!(PUT, "/api/templates/{id}", "templates", "owner, admin", "Replace a template's spec (warm-pool sandboxes of the old spec are removed)", Some(r#"{"spec":{"image":"cubby-demo:latest","port":8080,"warm_pool":10}}"#), h::update_template),
        route!(GET, "/api/sessions", "sessions", "any", "Sessions: mine (student), my classes' (teacher), all (admin); ?active=true", None, h::list_sessions),
        route!(POST, "/api/sessions", "sessions", "student; teacher of the class, admin with student_id", "Start my sandbox in a class (idempotent: an active session is returned as is); ?wait=true waits until it is ready or failed", Some(r#"{"class_id":"...","student_id":null}"#), h::start_session),
        route!(GET, "/api/sessions/{id}", "sessions", "its student, teacher of its class, admin", "A session and its state; ?wait=true answers once it is no longer requested or starting (at most 60 s)", None, h::get_session),
        route!(POST, "/api/sessions/{id}/stop", "sessions", "its student, teacher of its class, admin", "Stop a session: its workspace is archived and verified, then its sandbox and volume removed (archive_pending, nothing deleted, if that fails)", None, h::stop_session),
        route!(GET, "/api/sessions/{id}/terminal", "sessions", "its student, teacher of its class, admin", "Websocket: a shell with a pty in the sandbox as its user (binary frames: bytes both ways; text frames: {\"resize\":[cols,rows]})", None, crate::web::terminal::terminal),
        route!(GET, "/api/sessions/{id}/open", "sessions", "its student, teacher of its class, admin", "Open the session's app: 303 to /r/{id}/, or with --domain to {id}.DOMAIN through a one-time code (30 s)", None, crate::proxy::open),
        route!(GET, "/api/sessions/{id}/activity", "sessions", "its student, teacher of its class, admin", "Proxied requests and bytes, terminal input and the last activity time (for idle culling)", None, crate::web::terminal::activity),
        route!(GET, "/api/classes/{id}/usage", "classes", "teacher of the class, admin", "CPU time (ns, cumulative) and memory (bytes) of each ready sandbox of the class, sampled now", None, monitor::class_usage),
        route!(GET, "/api/admin/health", "admin", "admin", "Health: database, engine, sandboxes the engine runs, active sessions by state", None, monitor::admin_health),
        route!(GET, "/api/audit", "admin", "admin", "The audit log, newest first (?limit=N)", None, h::audit_log),
        route!(GET, "/api/orphans", "admin", "admin", "Sandboxes with this service's labels and no session (found at start: archived and verified, then removed; a stopped one is kept)", None, h::orphans),
        route!(GET, "/api/archives", "archives", "any", "Archived workspaces: mine (student), my classes' (teacher), all (admin); ?class_id=&student_id=", None, archives::list_archives),
        route!(GET, "/api/archives/{id}", "archives", "its student, teacher of its class, admin", "One archive: key, size, sha256", None, archives::get_archive),
        route!(GET, "/api/archives/{id}/download", "archives", "its student, teacher of its class, admin", "The archive as stored (zstd-compressed tar), streamed", None, archives::download_archive),
        route!(GET, "/api/archives/{id}/files", "archives", "its student, teacher of its class, admin", "The archive's file tree: path, kind, mode, size, mtime of every entry", None, archives::archive_files),
        route!(GET, "/api/archives/{id}/file", "archives", "its student, teacher of its class, admin", "One regular file of the archive (?path= as listed), streamed as an attachment", None, archives::archive_file),
        route!(GET, "/api/classes/{id}/archives.zip", "archives", "teacher of the class, admin", "The newest archive of each student of the class as one zip (USERNAME/workspace/...), streamed", None, archives::class_zip),
        route!(GET, "/api/classes/{id}/students/{student_id}/restore", "archives", "teacher of the class, admin", "What the student's next session starts from: restore is latest (no choice made: their newest archive, if any), archive (archive_id) or empty", None, archives::get_restore),
        route!(PUT, "/api/classes/{id}/students/{student_id}/restore", "archives", "teacher of the class, admin", "What the student's next session starts from: an archive of this class, or null for an empty workspace (default: their latest archive)", Some(r#"{"archive_id":null}"#), archives::set_restore),
        route!(PUT, "/api/classes/{id}/exam", "archives", "teacher of the class, admin", "Set the class's exam window (unix seconds): sessions start only inside it; at its end every sandbox is archived and removed", Some(r#"{"starts_at":1800000000,"ends_at":1800007200}"#), archives::set_exam),
        route!(GET, "/api/classes/{id}/exam", "archives", "teacher of the class, admin", "The exam window and, per student, collected / pending / failed and why", None, archives::get_exam),
        route!(GET, "/api/archive-pending", "archives", "admin", "Sessions whose workspace is not archived yet (nothing deleted; retried with back-off)", None, archives::archive_pending),
        route!(POST, "/api/sessions/{id}/archive/retry", "archives", "admin", "Retry a pending archive now", None, archives::retry_archive),
    ]
}

pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    for route in routes() {
        r = r.route(route.path, route.handler);
    }
    r.fallback(|| async {
        crate::error::Error::NotFound("this API path (see /api/openapi.json)".into())
    })
    .method_not_allowed_fallback(|| async {
        crate::error::Error::MethodNotAllowed(
            "this method is not served on this path (see /api/openapi.json)".into(),
        )
    })
    .with_state(state)
}
