//! Request handlers: parse, authorize (role AND ownership), call the store
//! or the session manager, audit, answer. No domain logic lives here.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::authn::{cookie, Caller, ACCESS_COOKIE, REFRESH_COOKIE};
use super::error::{Json, Query};
use super::AppState;
use crate::auth::{self, jwt::Claims};
use crate::error::{Error, Result};
use crate::store::classes::Class;
use crate::store::sessions::{Session, SessionFilter};
use crate::store::users::{Role, User};
use crate::store::{new_id, now};
use crate::template::TemplateSpec;

type J = axum::Json<Value>;

pub(super) fn ok(v: impl serde::Serialize) -> Result<J> {
    serde_json::to_value(v)
        .map(axum::Json)
        .map_err(|e| Error::Internal(e.to_string()))
}

pub(super) async fn audit(
    st: &AppState,
    who: &Caller,
    action: &str,
    target: &str,
    detail: Option<&str>,
) {
    if let Err(e) = st
        .store()
        .audit(Some(&who.id), action, Some(target), detail)
        .await
    {
        crate::log!("warn", "audit {action} {target}: {e}");
    }
}

pub async fn health(State(st): State<AppState>) -> Result<J> {
    st.store().setting("service_id").await?;
    ok(json!({"status": "ok"}))
}

// ---------------------------------------------------------------- auth

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginReq {
    username: String,
    password: String,
}

/// Argon2 is CPU and memory: bounded, off the async workers.
async fn verify_blocking(pw: String, hash: String) -> bool {
    auth::verify_password_async(pw, hash).await
}

async fn hash_blocking(pw: String) -> Result<String> {
    auth::hash_password_async(pw).await
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// New access token + the given refresh token, as JSON and as cookies.
fn tokens_response(st: &AppState, user: &User, login_id: &str, refresh: &str) -> Response {
    let iat = now();
    let ttl = st.auth.access_ttl.as_secs() as i64;
    let access = st.signer.sign(&Claims {
        sub: user.id.clone(),
        sid: login_id.to_string(),
        role: user.role.as_str().to_string(),
        iat,
        exp: iat + ttl,
    });
    let secure = st.auth.secure_cookies;
    let mut resp = axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh,
        "user": user,
    }))
    .into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(ACCESS_COOKIE, &access, "/", ttl, secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(
            REFRESH_COOKIE,
            refresh,
            "/api/auth",
            st.auth.refresh_ttl.as_secs() as i64,
            secure,
        ),
    );
    resp
}

pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(req): Json<LoginReq>,
) -> Result<Response> {
    let limited = |secs: u64| Error::RateLimited(format!("too many login attempts: wait {secs} s"));
    st.rl_addr.hit(&addr.ip().to_string()).map_err(limited)?;
    st.rl_user.hit(&req.username).map_err(limited)?;
    let found = st.store().user_with_hash(&req.username).await?;
    let hash = found
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| auth::dummy_hash().to_string());
    let good = verify_blocking(req.password, hash).await;
    let user = match found {
        Some((u, _)) if good => u,
        _ => {
            let _ = st
                .store()
                .audit(
                    None,
                    "login.failed",
                    Some(&req.username),
                    Some(&addr.ip().to_string()),
                )
                .await;
            return Err(Error::Unauthenticated("wrong user name or password".into()));
        }
    };
    if user.disabled {
        return Err(Error::Unauthenticated(
            "this account is disabled: ask an administrator".into(),
        ));
    }
    st.rl_user.clear(&req.username);
    let login_id = new_id();
    let secret = auth::new_refresh_secret();
    st.store()
        .create_login(
            &login_id,
            &user.id,
            &auth::sha256_hex(&secret),
            now() + st.auth.refresh_ttl.as_secs() as i64,
            st.auth.single_login,
        )
        .await?;
    let _ = st
        .store()
        .audit(
            Some(&user.id),
            "login",
            Some(&user.username),
            Some(&addr.ip().to_string()),
        )
        .await;
    Ok(tokens_response(
        &st,
        &user,
        &login_id,
        &format!("{login_id}.{secret}"),
    ))
}

pub async fn refresh(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct R {
            refresh_token: String,
        }
        let r: R = serde_json::from_slice(&body).map_err(|e| {
            Error::Invalid(format!(
                "request body: {e}; send {{\"refresh_token\": \"...\"}}"
            ))
        })?;
        Some(r.refresh_token)
    };
    let token = from_body
        .or_else(|| cookie(&headers, REFRESH_COOKIE).map(str::to_string))
        .ok_or_else(|| Error::Unauthenticated("no refresh token: sign in again".into()))?;
    let bad = || Error::Unauthenticated("invalid or used refresh token: sign in again".into());
    let (login_id, secret) = token.split_once('.').ok_or_else(bad)?;
    let login = st.store().login(login_id).await.map_err(|_| bad())?;
    let hash = auth::sha256_hex(secret);
    if login.revoked || login.expires_at <= now() || !auth::ct_eq(&hash, &login.refresh_hash) {
        return Err(bad());
    }
    let user = st.store().user(&login.user_id).await?;
    if user.disabled {
        return Err(bad());
    }
    let new_secret = auth::new_refresh_secret();
    let expires = now() + st.auth.refresh_ttl.as_secs() as i64;
    // Compare-and-set: of two concurrent uses of one refresh token, one wins.
    if !st
        .store()
        .rotate_refresh(login_id, &hash, &auth::sha256_hex(&new_secret), expires)
        .await?
    {
        return Err(bad());
    }
    Ok(tokens_response(
        &st,
        &user,
        login_id,
        &format!("{login_id}.{new_secret}"),
    ))
}

pub async fn logout(State(st): State<AppState>, who: Caller) -> Result<Response> {
    st.store().revoke_login(&who.login).await?;
    audit(&st, &who, "logout", &who.id, None).await;
    let mut resp = axum::Json(json!({"status": "signed out"})).into_response();
    let secure = st.auth.secure_cookies;
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(ACCESS_COOKIE, "", "/", 0, secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(REFRESH_COOKIE, "", "/api/auth", 0, secure),
    );
    Ok(resp)
}

pub async fn me(State(st): State<AppState>, who: Caller) -> Result<J> {
    ok(st.store().user(&who.id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    old_password: String,
    new_password: String,
}

pub async fn change_password(
    State(st): State<AppState>,
    who: Caller,
    Json(req): Json<PasswordChange>,
) -> Result<J> {
    let me = st.store().user(&who.id).await?;
    let (_, hash) = st
        .store()
        .user_with_hash(&me.username)
        .await?
        .ok_or_else(|| Error::NotFound("your account".into()))?;
    if !verify_blocking(req.old_password, hash).await {
        return Err(Error::Forbidden("the old password is wrong".into()));
    }
    let new = hash_blocking(req.new_password).await?;
    st.store().set_password(&who.id, &new).await?;
    audit(&st, &who, "password.change", &who.id, None).await;
    ok(json!({"status": "password changed; every login was revoked: sign in again"}))
}

// ---------------------------------------------------------------- users

pub async fn list_users(State(st): State<AppState>, who: Caller) -> Result<J> {
    who.require(&[Role::Admin])?;
    ok(st.store().users().await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    role: Role,
    password: String,
}

pub async fn create_user(
    State(st): State<AppState>,
    who: Caller,
    Json(req): Json<NewUser>,
) -> Result<J> {
    who.require(&[Role::Admin])?;
    crate::store::users::check_username(&req.username)?;
    let hash = hash_blocking(req.password).await?;
    let u = st
        .store()
        .create_user(&req.username, req.role, &hash)
        .await?;
    audit(
        &st,
        &who,
        "user.create",
        &u.username,
        Some(req.role.as_str()),
    )
    .await;
    ok(u)
}

/// Hashes the CSV's passwords (in parallel, bounded by the hashing permits).
async fn hash_all(rows: Vec<(String, Role, String)>) -> Result<Vec<(String, Role, String)>> {
    let mut tasks = Vec::new();
    for (name, role, pw) in rows {
        tasks.push(tokio::spawn(async move {
            auth::hash_password_async(pw).await.map(|h| (name, role, h))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    Ok(out)
}

pub async fn import_users(State(st): State<AppState>, who: Caller, body: String) -> Result<J> {
    who.require(&[Role::Admin])?;
    let rows = crate::csv::parse_users(&body, true)?;
    let mut todo = Vec::new();
    for r in rows {
        let pw = r.password.ok_or_else(|| {
            Error::Invalid(format!(
                "CSV line {}: {} has no password (username,role,password)",
                r.line, r.username
            ))
        })?;
        todo.push((r.username, r.role.unwrap_or(Role::Student), pw));
    }
    let users = st.store().create_users(&hash_all(todo).await?).await?;
    audit(
        &st,
        &who,
        "user.import",
        &format!("{} users", users.len()),
        None,
    )
    .await;
    ok(users)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    password: String,
}

pub async fn set_user_password(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(req): Json<SetPassword>,
) -> Result<J> {
    who.require(&[Role::Admin])?;
    let hash = hash_blocking(req.password).await?;
    st.store().set_password(&id, &hash).await?;
    audit(&st, &who, "user.passwd", &id, None).await;
    ok(st.store().user(&id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDisabled {
    disabled: bool,
}

pub async fn set_user_disabled(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(req): Json<SetDisabled>,
) -> Result<J> {
    who.require(&[Role::Admin])?;
    st.store().set_disabled(&id, req.disabled).await?;
    audit(
        &st,
        &who,
        if req.disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        &id,
        None,
    )
    .await;
    ok(st.store().user(&id).await?)
}

// ---------------------------------------------------------------- classes

/// The class if the caller may manage it (its teachers, admins); others
/// get 404 (students: 403), never a hint that it exists.
pub(super) async fn managed_class(st: &AppState, who: &Caller, id: &str) -> Result<Class> {
    who.require(&[Role::Admin, Role::Teacher])?;
    let c = st.store().class(id).await?;
    if who.role == Role::Admin || st.store().is_teacher_of(id, &who.id).await? {
        Ok(c)
    } else {
        Err(Error::NotFound(format!("class {id}")))
    }
}

fn class_view(c: &Class, show_join_code: bool) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if !show_join_code {
        if let Some(o) = v.as_object_mut() {
            o.remove("join_code");
        }
    }
    v
}

pub async fn list_classes(State(st): State<AppState>, who: Caller) -> Result<J> {
    let (classes, show) = match who.role {
        Role::Admin => (st.store().classes(None).await?, true),
        Role::Teacher => (st.store().classes(Some(&who.id)).await?, true),
        Role::Student => (st.store().classes_of_student(&who.id).await?, false),
    };
    ok(classes
        .iter()
        .map(|c| class_view(c, show))
        .collect::<Vec<_>>())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClass {
    name: String,
    code: String,
    capacity: i64,
    #[serde(default)]
    template_id: Option<String>,
}

pub async fn create_class(
    State(st): State<AppState>,
    who: Caller,
    Json(req): Json<NewClass>,
) -> Result<J> {
    who.require(&[Role::Admin, Role::Teacher])?;
    if let Some(t) = &req.template_id {
        st.store().template(t).await?;
    }
    let c = st
        .store()
        .create_class(
            &req.name,
            &req.code,
            req.capacity,
            req.template_id.as_deref(),
            &who.id,
        )
        .await?;
    audit(&st, &who, "class.create", &c.id, Some(&c.code)).await;
    ok(class_view(&c, true))
}

pub async fn get_class(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    if who.role == Role::Student {
        if !st.store().is_enrolled(&id, &who.id).await? {
            return Err(Error::NotFound(format!("class {id}")));
        }
        return ok(class_view(&st.store().class(&id).await?, false));
    }
    ok(class_view(&managed_class(&st, &who, &id).await?, true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTemplate {
    template_id: String,
}

pub async fn set_class_template(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(req): Json<SetTemplate>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    st.store().template(&req.template_id).await?;
    st.store().set_class_template(&id, &req.template_id).await?;
    audit(&st, &who, "class.template", &id, Some(&req.template_id)).await;
    ok(class_view(&st.store().class(&id).await?, true))
}

pub async fn list_students(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    let list: Vec<Value> = st
        .store()
        .students(&id)
        .await?
        .into_iter()
        .map(|(id, username)| json!({"id": id, "username": username}))
        .collect();
    ok(list)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddStudent {
    username: String,
}

async fn student_named(st: &AppState, name: &str) -> Result<User> {
    let u = st
        .store()
        .user_by_name(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {name}")))?;
    if u.role != Role::Student {
        return Err(Error::Invalid(format!(
            "{name} is a {}, not a student",
            u.role.as_str()
        )));
    }
    Ok(u)
}

pub async fn add_student(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(req): Json<AddStudent>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    let u = student_named(&st, &req.username).await?;
    let added = st.store().enrol(&id, &u.id).await?;
    audit(&st, &who, "class.enrol", &id, Some(&u.username)).await;
    ok(json!({"id": u.id, "username": u.username, "added": added}))
}

pub async fn import_students(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: String,
) -> Result<J> {
    let class = managed_class(&st, &who, &id).await?;
    let rows = crate::csv::parse_users(&body, false)?;
    // Check everything before changing anything.
    let mut create = Vec::new();
    let mut existing = Vec::new();
    for r in &rows {
        match st.store().user_by_name(&r.username).await? {
            Some(u) if u.role != Role::Student => {
                return Err(Error::Invalid(format!(
                    "CSV line {}: {} is a {}, not a student",
                    r.line,
                    r.username,
                    u.role.as_str()
                )))
            }
            Some(u) => existing.push(u),
            None => match &r.password {
                Some(pw) => create.push((r.username.clone(), Role::Student, pw.clone())),
                None => {
                    return Err(Error::Invalid(format!(
                    "CSV line {}: no user {}; give a password to create them (username,password)",
                    r.line, r.username
                )))
                }
            },
        }
    }
    let mut new_enrolments = create.len() as i64;
    for u in &existing {
        if !st.store().is_enrolled(&id, &u.id).await? {
            new_enrolments += 1;
        }
    }
    if class.enrolled + new_enrolments > class.capacity {
        return Err(Error::Conflict(format!(
            "class {} has {} of {} seats taken; {} more do not fit: raise the capacity",
            class.code, class.enrolled, class.capacity, new_enrolments
        )));
    }
    let created = st.store().create_users(&hash_all(create).await?).await?;
    let mut added = 0;
    for u in existing.iter().chain(created.iter()) {
        if st.store().enrol(&id, &u.id).await? {
            added += 1;
        }
    }
    audit(
        &st,
        &who,
        "class.import",
        &id,
        Some(&format!("{added} enrolled, {} created", created.len())),
    )
    .await;
    ok(json!({"enrolled": added, "created": created.len()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    join_code: String,
}

pub async fn join_class(
    State(st): State<AppState>,
    who: Caller,
    Json(req): Json<Join>,
) -> Result<J> {
    who.require(&[Role::Student])?;
    let c = st.store().class_by_join_code(req.join_code.trim()).await?;
    let added = st.store().enrol(&c.id, &who.id).await?;
    audit(&st, &who, "class.join", &c.id, None).await;
    ok(json!({"class": class_view(&st.store().class(&c.id).await?, false), "added": added}))
}

// ---------------------------------------------------------------- templates

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    name: String,
    spec: TemplateSpec,
}

pub async fn list_templates(State(st): State<AppState>, who: Caller) -> Result<J> {
    who.require(&[Role::Admin, Role::Teacher])?;
    ok(st.store().templates().await?)
}

pub async fn create_template(
    State(st): State<AppState>,
    who: Caller,
    Json(req): Json<NewTemplate>,
) -> Result<J> {
    who.require(&[Role::Admin, Role::Teacher])?;
    req.spec.validate_with(st.manager.backend.as_ref()).await?;
    let t = st
        .store()
        .create_template(&req.name, &who.id, &req.spec)
        .await?;
    audit(&st, &who, "template.create", &t.id, Some(&t.name)).await;
    ok(t)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateUpdate {
    spec: TemplateSpec,
}

/// Replaces a template's spec (its owner or an admin). Warm-pool sandboxes
/// of the old spec are removed, never claimed.
pub async fn update_template(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(req): Json<TemplateUpdate>,
) -> Result<J> {
    who.require(&[Role::Admin, Role::Teacher])?;
    let old = st.store().template(&id).await?;
    if who.role != Role::Admin && old.owner_id != who.id {
        return Err(crate::error::Error::Forbidden(format!(
            "template {} is not yours: only its owner or an admin changes it",
            old.name
        )));
    }
    req.spec.validate_with(st.manager.backend.as_ref()).await?;
    let t = st.store().update_template(&id, &req.spec).await?;
    audit(&st, &who, "template.update", &t.id, Some(&t.name)).await;
    ok(t)
}

pub async fn get_template(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    who.require(&[Role::Admin, Role::Teacher])?;
    ok(st.store().template(&id).await?)
}

// ---------------------------------------------------------------- sessions

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    active: bool,
}

const WAIT: Duration = Duration::from_secs(60);

/// The session if the caller may see it; 404 otherwise (no existence leak).
pub(crate) async fn visible_session(st: &AppState, who: &Caller, id: &str) -> Result<Session> {
    let s = st.store().session(id).await?;
    let allowed = match who.role {
        Role::Admin => true,
        Role::Teacher => st.store().is_teacher_of(&s.class_id, &who.id).await?,
        Role::Student => s.student_id == who.id,
    };
    if allowed {
        Ok(s)
    } else {
        Err(Error::NotFound(format!("session {id}")))
    }
}

pub async fn list_sessions(
    State(st): State<AppState>,
    who: Caller,
    Query(q): Query<SessionQuery>,
) -> Result<J> {
    if q.wait {
        return Err(Error::Invalid(
            "wait applies to one session (GET /api/sessions/{id}?wait=true), not to the list"
                .into(),
        ));
    }
    let filter = match who.role {
        Role::Admin => SessionFilter::All,
        Role::Teacher => SessionFilter::Teacher(&who.id),
        Role::Student => SessionFilter::Student(&who.id),
    };
    let mut out = Vec::new();
    for s in st.store().sessions(filter, q.active).await? {
        out.push(st.manager.annotate(s).await?);
    }
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartReq {
    class_id: String,
    /// Teachers and admins start a session for a student.
    #[serde(default)]
    student_id: Option<String>,
}

pub async fn start_session(
    State(st): State<AppState>,
    who: Caller,
    Query(q): Query<SessionQuery>,
    Json(req): Json<StartReq>,
) -> Result<J> {
    let student = match (&who.role, &req.student_id) {
        (Role::Student, None) => {
            if !st.store().is_enrolled(&req.class_id, &who.id).await? {
                return Err(Error::NotFound(format!(
                    "class {} (you are not enrolled)",
                    req.class_id
                )));
            }
            who.id.clone()
        }
        (Role::Student, Some(_)) => {
            return Err(Error::Forbidden(
                "students start only their own session".into(),
            ))
        }
        (_, Some(sid)) => {
            managed_class(&st, &who, &req.class_id).await?;
            if !st.store().is_enrolled(&req.class_id, sid).await? {
                return Err(Error::Invalid(format!(
                    "student {sid} is not enrolled in this class"
                )));
            }
            sid.clone()
        }
        (_, None) => {
            return Err(Error::Invalid(
                "give student_id: the student whose session to start".into(),
            ))
        }
    };
    if q.active {
        return Err(Error::Invalid(
            "active applies to the session list, not to starting one".into(),
        ));
    }
    let s = if q.wait {
        st.manager
            .start_and_wait(&req.class_id, &student, &who.id, WAIT)
            .await?
    } else {
        st.manager.start(&req.class_id, &student, &who.id).await?
    };
    audit(&st, &who, "session.start", &s.id, None).await;
    ok(s)
}

/// `?wait=true`: answers once the session is no longer requested or
/// starting (at most 60 s), so a page learns "ready" the moment it is
/// without polling.
pub async fn get_session(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<J> {
    if q.active {
        return Err(Error::Invalid(
            "active applies to the session list, not to one session".into(),
        ));
    }
    let mut s = visible_session(&st, &who, &id).await?;
    if q.wait {
        s = st.manager.wait_settled(&id, WAIT).await?;
    }
    ok(st.manager.annotate(s).await?)
}

pub async fn stop_session(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    visible_session(&st, &who, &id).await?;
    let s = st.manager.stop(&id).await?;
    audit(&st, &who, "session.stop", &id, None).await;
    ok(s)
}

pub async fn up_class(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    let sessions = st.manager.up_class(&id, &who.id).await?;
    audit(
        &st,
        &who,
        "class.up",
        &id,
        Some(&format!("{} sessions", sessions.len())),
    )
    .await;
    if q.wait {
        let mut out = Vec::new();
        for s in &sessions {
            out.push(st.manager.wait_settled(&s.id, WAIT).await?);
        }
        return ok(out);
    }
    ok(sessions)
}

pub async fn down_class(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    let sessions = st.manager.down_class(&id).await?;
    audit(
        &st,
        &who,
        "class.down",
        &id,
        Some(&format!("{} sessions", sessions.len())),
    )
    .await;
    ok(sessions)
}

// ---------------------------------------------------------------- admin

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<i64>,
}

pub async fn audit_log(
    State(st): State<AppState>,
    who: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<J> {
    who.require(&[Role::Admin])?;
    ok(st
        .store()
        .audit_log(q.limit.unwrap_or(200).clamp(1, 10_000))
        .await?)
}

pub async fn orphans(State(st): State<AppState>, who: Caller) -> Result<J> {
    who.require(&[Role::Admin])?;
    ok(st.manager.orphans().await?)
}
