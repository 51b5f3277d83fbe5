//! `POST /containers/create`: the body is checked for options cubby does
//! not handle (refused by name, never dropped), translated into a typed
//! [`crate::service::NewContainer`] (`create_body`, the one place that reads
//! Docker's body), then [`crate::service::Engine::create`] makes it.

use super::util::Query;
use super::{ApiResult, Shared};
use crate::service::CreateBody;
use axum::body::Bytes;
use axum::extract::{Query as Q, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn create(
    State(d): State<Shared>,
    Q(q): Q<Query>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let raw: Value = super::json::decode(&body, "create body")?;
    // Nothing asked for is dropped: unknown or unhandled fields are refused.
    super::create_body::check_supported(&raw)?;
    let body: CreateBody = super::json::from_value(raw, "create body")?;
    let new = super::create_body::new_container(body, q.get("name").cloned())?;
    let id = d.create(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": id, "Warnings": [] })),
    ))
}
