//! `GET /system/df` (`docker system df`): images with the number of
//! containers using each, containers with their writable layer's size,
//! volumes with their size and users; no build cache (cubby keeps none).

use super::util::Query;
use super::{blocking, ApiResult, Shared};
use axum::extract::{Query as Q, State};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

pub async fn df(State(d): State<Shared>, Q(_q): Q<Query>) -> ApiResult<Json<Value>> {
    let all: Query = [
        ("all".to_string(), "1".to_string()),
        ("size".to_string(), "1".to_string()),
    ]
    .into_iter()
    .collect();
    let Json(containers) = super::containers::list(State(d.clone()), Q(all)).await?;
    let Json(images) = super::images::list(State(d.clone()), Q(Query::new())).await?;
    let mut users: HashMap<String, i64> = HashMap::new();
    for c in containers.as_array().into_iter().flatten() {
        if let Some(id) = c["ImageID"].as_str() {
            *users.entry(id.to_string()).or_default() += 1;
        }
    }
    let mut layers_size = 0i64;
    let images: Vec<Value> = images
        .into_iter()
        .map(|mut i| {
            i.containers = users.get(&i.id).copied().unwrap_or(0);
            layers_size += i.size;
            serde_json::to_value(i).unwrap_or(Value::Null)
        })
        .collect();
    let Json(vols) = super::volumes::list(State(d.clone()), Q(Query::new())).await?;
    let in_use = d.volume_users().await?;
    let volumes = blocking(move || {
        Ok(vols
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let size = dir_size(std::path::Path::new(&v.mountpoint));
                let refs = in_use.users(&v.name).len();
                let mut doc = serde_json::to_value(&v).unwrap_or(Value::Null);
                doc["UsageData"] = json!({ "Size": size, "RefCount": refs });
                doc
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({
        "LayersSize": layers_size,
        "Images": images,
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": [],
    })))
}
