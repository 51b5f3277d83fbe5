//! What teachers and admins watch: each running sandbox's CPU and memory
//! (the roster) and the service's health (admin page).

use axum::extract::{Path, State};
use futures_util::future::join_all;
use serde_json::{json, Value};

use super::authn::Caller;
use super::handlers::ok;
use super::AppState;
use crate::error::{Error, Result};
use crate::store::sessions::{SessionFilter, State as SessionState};
use crate::store::users::Role;

type J = axum::Json<Value>;

/// `GET /api/classes/{id}/usage`: CPU time and memory of every ready
/// sandbox of the class, sampled now (the page derives CPU % from two
/// samples: `cpu_ns` and `at_ms` deltas).
pub async fn class_usage(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    who.require(&[Role::Teacher, Role::Admin])?;
    if who.role == Role::Teacher && !st.store().is_teacher_of(&id, &who.id).await? {
        return Err(Error::NotFound(format!("class {id}")));
    }
    let sessions = st.store().sessions(SessionFilter::Class(&id), true).await?;
    let ready: Vec<_> = sessions
        .into_iter()
        .filter(|s| s.state == SessionState::Ready)
        .collect();
    let samples = join_all(ready.iter().map(|s| st.manager.backend.usage(&s.sandbox))).await;
    let at_ms = crate::store::now_ms();
    let out: Vec<Value> = ready
        .iter()
        .zip(samples)
        .filter_map(|(s, u)| match u {
            Ok(Some(u)) => Some(json!({
                "session_id": s.id, "student_id": s.student_id,
                "cpu_ns": u.cpu_ns, "memory_bytes": u.memory_bytes, "at_ms": at_ms,
            })),
            Ok(None) => None,
            Err(e) => {
                crate::log!("warn", "usage of {}: {e}", s.sandbox);
                None
            }
        })
        .collect();
    ok(out)
}

/// `GET /api/admin/health`: the database, the engine, sandboxes running
/// (the engine's count beside the sessions that should have one).
pub async fn admin_health(State(st): State<AppState>, who: Caller) -> Result<J> {
    who.require(&[Role::Admin])?;
    let database = match st.store().setting("service_id").await {
        Ok(_) => json!({"ok": true, "kind": format!("{:?}", st.store().kind).to_lowercase()}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    let engine = match st.manager.backend.describe().await {
        Ok(d) => json!({"ok": true, "describe": d}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    let sandboxes = match st.manager.backend.list_sandboxes().await {
        Ok(l) => json!({"ok": true, "count": l.len()}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    let mut by_state = serde_json::Map::new();
    for s in st.store().sessions(SessionFilter::All, true).await? {
        let n = by_state
            .entry(s.state.as_str().to_string())
            .or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    ok(json!({
        "database": database,
        "engine": engine,
        "sandboxes": sandboxes,
        "active_sessions": by_state,
    }))
}
