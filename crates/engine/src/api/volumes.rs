//! `/volumes`: list, create, inspect, remove, prune: the HTTP side of
//! [`crate::service::volumes`].

use super::error::ApiError;
use super::util::{flag, Query};
use super::{ApiResult, Shared};
use crate::volumes::CreateOptions;
use axum::body::Bytes;
use axum::extract::{Path, Query as Q, State};
use axum::http::StatusCode;
use axum::Json;
use bollard_stubs::models::{Volume, VolumeCreateOptions, VolumeListResponse, VolumePruneResponse};
use std::collections::BTreeMap;

/// Docker's `filters` query parameter: `{"key": {"value": true}}` or the
/// older `{"key": ["value"]}`.
pub fn parse_filters(q: &Query) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let Some(raw) = q.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let bad = |e: String| ApiError::bad_request(format!("invalid filters {raw:?}: {e}"));
    let v: serde_json::Value = super::json::decode(raw.as_bytes(), &format!("filters {raw:?}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut out = BTreeMap::new();
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, on)| on.as_bool() != Some(false))
                .map(|(s, _)| s.clone())
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("values of {k:?} are not strings")))?,
            _ => return Err(bad(format!("values of {k:?} are not a list"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

pub async fn list(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<VolumeListResponse>> {
    let (vols, warnings) = d.volume_list(parse_filters(&q)?).await?;
    Ok(Json(VolumeListResponse {
        volumes: Some(vols.iter().map(|v| v.to_api()).collect()),
        warnings: Some(warnings),
    }))
}

pub async fn create(State(d): State<Shared>, body: Bytes) -> ApiResult<(StatusCode, Json<Volume>)> {
    let body: VolumeCreateOptions = super::json::decode(&body, "volume create body")?;
    if body.cluster_volume_spec.is_some() {
        return Err(crate::service::EngineError::Unsupported(
            "cluster volumes need swarm, which cubby does not have".into(),
        )
        .into());
    }
    let v = d
        .volume_create(CreateOptions {
            name: body.name,
            driver: body.driver,
            driver_opts: body.driver_opts.unwrap_or_default().into_iter().collect(),
            labels: body.labels.unwrap_or_default().into_iter().collect(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(v.to_api())))
}

pub async fn inspect(State(d): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Volume>> {
    Ok(Json(d.volume_inspect(&name).await?.to_api()))
}

pub async fn remove(
    State(d): State<Shared>,
    Path(name): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    d.volume_remove(&name, flag(&q, "force")).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn prune(
    State(d): State<Shared>,
    Q(q): Q<Query>,
) -> ApiResult<Json<VolumePruneResponse>> {
    let (deleted, reclaimed) = d.volume_prune(parse_filters(&q)?).await?;
    Ok(Json(VolumePruneResponse {
        volumes_deleted: Some(deleted),
        space_reclaimed: Some(reclaimed as i64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(filters: &str) -> Query {
        [("filters".to_string(), filters.to_string())].into()
    }

    #[test]
    fn filters_both_syntaxes() {
        let f = parse_filters(&q(r#"{"name":{"db":true},"label":["a=1"]}"#)).unwrap();
        assert_eq!(f["name"], ["db"]);
        assert_eq!(f["label"], ["a=1"]);
        assert!(parse_filters(&Query::new()).unwrap().is_empty());
        assert_eq!(
            parse_filters(&q("{bad")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let e = crate::service::volumes::check_keys(&f, &["name"]).unwrap_err();
        assert_eq!(e.to_string(), "invalid filter 'label'");
    }
}
