//! `/volumes`: list (filters `name`, `label`, `dangling`, `driver`),
//! create, inspect, remove (`force`), prune (API ≥ 1.42: anonymous volumes
//! only unless the filter `all=true`), over the local store in
//! [`crate::volumes`]. Which volumes are in use comes from the monitor's
//! container records.

use super::error::ApiError;
use super::util::{flag, Query};
use super::{blocking, ApiResult, Shared};
use crate::volumes::{CreateOptions, VolumeRecord, VolumeStore};
use axum::body::Bytes;
use axum::extract::{Path, Query as Q, State};
use axum::http::StatusCode;
use axum::Json;
use bollard_stubs::models::{Volume, VolumeCreateOptions, VolumeListResponse, VolumePruneResponse};
use std::collections::BTreeMap;

pub(crate) fn store(d: &Shared) -> ApiResult<VolumeStore> {
    Ok(VolumeStore::open(&d.root)?)
}

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

fn check_keys(filters: &BTreeMap<String, Vec<String>>, allowed: &[&str]) -> ApiResult<()> {
    match filters.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
        None => Ok(()),
    }
}

fn bool_filter(filters: &BTreeMap<String, Vec<String>>, key: &str) -> ApiResult<Option<bool>> {
    let Some(vals) = filters.get(key) else {
        return Ok(None);
    };
    let mut out = None;
    for v in vals {
        out = Some(match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(ApiError::bad_request(format!("invalid filter '{key}={v}'"))),
        });
    }
    Ok(out)
}

/// `label=k` or `label=k=v` against a volume's labels.
fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(want),
    }
}

/// Whether `v` passes the list filters (`in_use`: some container mounts it).
pub fn list_matches(
    filters: &BTreeMap<String, Vec<String>>,
    v: &VolumeRecord,
    in_use: bool,
) -> ApiResult<bool> {
    if let Some(names) = filters.get("name") {
        if !names.iter().any(|n| v.name.contains(n.as_str())) {
            return Ok(false);
        }
    }
    if let Some(drivers) = filters.get("driver") {
        if !drivers.contains(&v.driver) {
            return Ok(false);
        }
    }
    if let Some(labels) = filters.get("label") {
        if !labels.iter().all(|l| label_matches(&v.labels, l)) {
            return Ok(false);
        }
    }
    if let Some(dangling) = bool_filter(filters, "dangling")? {
        if dangling == in_use {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether unused volume `v` is pruned by `filters` (`all`, `label`, `label!`).
pub fn prune_matches(filters: &BTreeMap<String, Vec<String>>, v: &VolumeRecord) -> ApiResult<bool> {
    let all = bool_filter(filters, "all")?.unwrap_or(false);
    if !all && !v.anonymous() {
        return Ok(false);
    }
    if let Some(labels) = filters.get("label") {
        if !labels.iter().all(|l| label_matches(&v.labels, l)) {
            return Ok(false);
        }
    }
    if let Some(labels) = filters.get("label!") {
        if labels.iter().any(|l| label_matches(&v.labels, l)) {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn records(d: &Shared) -> ApiResult<crate::volumes::InUse> {
    Ok(d.volume_users().await?)
}

pub async fn list(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<VolumeListResponse>> {
    let filters = parse_filters(&q)?;
    check_keys(&filters, &["name", "label", "dangling", "driver"])?;
    let records = records(&d).await?;
    let store = store(&d)?;
    blocking(move || {
        let (vols, warnings) = store.list()?;
        let mut out = Vec::new();
        for v in vols {
            let in_use = !records.users(&v.name).is_empty();
            if list_matches(&filters, &v, in_use)? {
                out.push(v.to_api());
            }
        }
        Ok(Json(VolumeListResponse {
            volumes: Some(out),
            warnings: Some(warnings),
        }))
    })
    .await
}

pub async fn create(State(d): State<Shared>, body: Bytes) -> ApiResult<(StatusCode, Json<Volume>)> {
    let body: VolumeCreateOptions = super::json::decode(&body, "volume create body")?;
    if body.cluster_volume_spec.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "cluster volumes need swarm, which cubby does not have",
        ));
    }
    let opts = CreateOptions {
        name: body.name,
        driver: body.driver,
        driver_opts: body.driver_opts.unwrap_or_default().into_iter().collect(),
        labels: body.labels.unwrap_or_default().into_iter().collect(),
    };
    let store = store(&d)?;
    let (v, _) = blocking(move || Ok(store.create(&opts)?)).await?;
    Ok((StatusCode::CREATED, Json(v.to_api())))
}

pub async fn inspect(State(d): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Volume>> {
    let store = store(&d)?;
    let v = blocking(move || Ok(store.get(&name)?)).await?;
    Ok(Json(v.to_api()))
}

pub async fn remove(
    State(d): State<Shared>,
    Path(name): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let force = flag(&q, "force");
    let records = records(&d).await?;
    let store = store(&d)?;
    blocking(move || Ok(store.remove(&name, &records, force)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn prune(
    State(d): State<Shared>,
    Q(q): Q<Query>,
) -> ApiResult<Json<VolumePruneResponse>> {
    let filters = parse_filters(&q)?;
    check_keys(&filters, &["all", "label", "label!"])?;
    bool_filter(&filters, "all")?;
    let records = records(&d).await?;
    let store = store(&d)?;
    blocking(move || {
        let (vols, _) = store.list()?;
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for v in vols {
            if !records.users(&v.name).is_empty() || !prune_matches(&filters, &v)? {
                continue;
            }
            let size = store.size(&v.name);
            // A volume that got a user or vanished meanwhile is skipped.
            if let Ok(true) = store.remove(&v.name, &records, false) {
                reclaimed += size;
                deleted.push(v.name);
            }
        }
        Ok(Json(VolumePruneResponse {
            volumes_deleted: Some(deleted),
            space_reclaimed: Some(reclaimed as i64),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(filters: &str) -> Query {
        [("filters".to_string(), filters.to_string())].into()
    }

    fn vol(name: &str, labels: &[(&str, &str)]) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            mountpoint: "/x".into(),
            created_at: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options: Default::default(),
            scope: "local".into(),
        }
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
        let e = check_keys(&f, &["name"]).unwrap_err();
        assert_eq!(e.message, "invalid filter 'label'");
    }

    #[test]
    fn list_and_prune_filters() {
        let db = vol("db-data", &[("tier", "db")]);
        let f = |s: &str| parse_filters(&q(s)).unwrap();
        assert!(list_matches(&f(r#"{"name":["db"]}"#), &db, false).unwrap());
        assert!(!list_matches(&f(r#"{"name":["web"]}"#), &db, false).unwrap());
        assert!(list_matches(&f(r#"{"label":["tier"]}"#), &db, false).unwrap());
        assert!(list_matches(&f(r#"{"label":["tier=db"]}"#), &db, false).unwrap());
        assert!(!list_matches(&f(r#"{"label":["tier=web"]}"#), &db, false).unwrap());
        assert!(list_matches(&f(r#"{"dangling":["true"]}"#), &db, false).unwrap());
        assert!(!list_matches(&f(r#"{"dangling":["1"]}"#), &db, true).unwrap());
        assert!(list_matches(&f(r#"{"dangling":["false"]}"#), &db, true).unwrap());
        let e = list_matches(&f(r#"{"dangling":["maybe"]}"#), &db, true).unwrap_err();
        assert_eq!(e.message, "invalid filter 'dangling=maybe'");

        let anon = vol("ab12", &[(crate::volumes::ANONYMOUS_LABEL, "")]);
        assert!(prune_matches(&f("{}"), &anon).unwrap());
        assert!(!prune_matches(&f("{}"), &db).unwrap());
        assert!(prune_matches(&f(r#"{"all":["true"]}"#), &db).unwrap());
        assert!(!prune_matches(&f(r#"{"all":["1"],"label!":["tier"]}"#), &db).unwrap());
        assert!(prune_matches(&f(r#"{"all":["1"],"label":["tier=db"]}"#), &db).unwrap());
    }
}
