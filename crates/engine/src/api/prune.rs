//! `POST /containers/prune` and `POST /build/prune` (what `docker
//! container prune` and `docker system prune` call).

use super::error::ApiError;
use super::util::{unix_secs, Query};
use super::{ApiResult, Shared};
use axum::extract::{Query as Q, State};
use axum::Json;
use serde_json::{json, Value};

/// Docker's `until` filter: a Unix time, or an RFC 3339 time.
fn until_secs(v: &str) -> ApiResult<i64> {
    if let Ok(n) = v.parse::<f64>() {
        return Ok(n as i64);
    }
    match unix_secs(v) {
        0 => Err(ApiError::bad_request(format!(
            "invalid filter 'until={v}': cubby takes a Unix time or an RFC 3339 time"
        ))),
        s => Ok(s),
    }
}

pub async fn containers(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<Value>> {
    let filters = super::events::parse_filters(&q)?;
    let mut until = None;
    for (k, values) in &filters {
        match k.as_str() {
            "label" | "label!" => {}
            "until" => {
                for v in values {
                    until = Some(until_secs(v)?);
                }
            }
            other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
        }
    }
    let labels = filters.get("label").cloned().unwrap_or_default();
    let not_labels = filters.get("label!").cloned().unwrap_or_default();
    let (deleted, reclaimed) = d
        .prune_containers(move |r| {
            (labels.is_empty() || super::events::labels_match(&labels, &r.labels))
                && (not_labels.is_empty() || !super::events::labels_match(&not_labels, &r.labels))
                && until.is_none_or(|u| unix_secs(&r.created) < u)
        })
        .await?;
    Ok(Json(
        json!({ "ContainersDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

/// cubby keeps no build cache of its own (a build's layers are images),
/// so there is never anything to prune here.
pub async fn build(Q(q): Q<Query>) -> ApiResult<Json<Value>> {
    super::events::parse_filters(&q)?;
    Ok(Json(json!({ "CachesDeleted": [], "SpaceReclaimed": 0 })))
}
