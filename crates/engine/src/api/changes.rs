//! `GET /containers/{id}/changes` (`docker diff`).

use super::{ApiResult, Shared};
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

pub async fn changes(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let list = d.changes(&id).await?;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|(kind, path)| json!({ "Path": path, "Kind": kind as u8 }))
            .collect(),
    )))
}
