//! OpenAPI 3 from the route table (no derive macros: one table, no extra
//! compile time). Bodies are documented by example.

use axum::Json;
use serde_json::{json, Map, Value};

use super::routes;

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in routes() {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let op_id = format!(
            "{}{}",
            r.method.as_str().to_lowercase(),
            r.path
                .trim_start_matches("/api")
                .replace(['/', '{', '}', '.'], "_")
        );
        let mut op = json!({
            "operationId": op_id,
            "summary": r.summary,
            "description": format!("Access: {}.", r.access),
            "tags": [r.tag],
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if r.access == "public" {
            op["security"] = json!([]);
        }
        if let Some(body) = r.body {
            let (ct, example) = match serde_json::from_str::<Value>(body) {
                Ok(v) => ("application/json", v),
                Err(_) => ("text/csv", Value::String(body.to_string())),
            };
            op["requestBody"] = json!({"required": true, "content": {ct: {"example": example}}});
        }
        paths
            .entry(r.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item is an object")
            .insert(r.method.as_str().to_lowercase(), op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "cubby classroom service", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": super::authn::ACCESS_COOKIE}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "enum": ["invalid", "unauthenticated", "forbidden", "not_found", "conflict", "rate_limited", "method_not_allowed", "image_missing", "backend", "database", "internal"]},
                        "message": {"type": "string"}
                    }}}
                }
            }
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
