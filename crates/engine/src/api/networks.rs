//! `/networks/...`: Docker's network documents and handlers over
//! [`crate::service::networks`] (which does a container's networking).

use super::util::Query;
use super::{ApiResult, Shared};
use crate::service::networks::ISOLATE_HOST_OPTION;
use axum::body::Bytes;
use axum::extract::{Path, Query as Q, State};
use axum::http::StatusCode;
use axum::Json;
use bollard_stubs::models::{
    Ipam, IpamConfig, Network as DockerNetwork, NetworkConnectRequest, NetworkContainer,
    NetworkCreateRequest, NetworkDisconnectRequest,
};
use cubby_network::{Endpoint, Network};
use serde_json::{json, Value};
use std::collections::HashMap;

fn docker_network(n: &Network, endpoints: &[Endpoint]) -> DockerNetwork {
    let containers: HashMap<String, NetworkContainer> = endpoints
        .iter()
        .map(|ep| {
            let c = NetworkContainer {
                name: Some(ep.container_name.clone()),
                endpoint_id: Some(ep.id.clone()),
                mac_address: Some(ep.mac.clone()),
                ipv4_address: Some(format!("{}/{}", ep.ip, n.subnet.prefix)),
                ipv6_address: Some(String::new()),
            };
            (ep.container_id.clone(), c)
        })
        .collect();
    let mut options = HashMap::from([(
        "com.docker.network.bridge.name".to_string(),
        n.bridge.clone(),
    )]);
    if n.isolate_host {
        options.insert(ISOLATE_HOST_OPTION.into(), "true".into());
    }
    DockerNetwork {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(n.created.clone()),
        scope: Some("local".into()),
        driver: Some("bridge".into()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(n.subnet.to_string()),
                gateway: Some(n.gateway.to_string()),
                ..Default::default()
            }]),
            options: Some(HashMap::new()),
        }),
        internal: Some(n.internal),
        attachable: Some(false),
        ingress: Some(false),
        config_only: Some(false),
        containers: Some(containers),
        options: Some(options),
        labels: Some(n.labels.clone().into_iter().collect()),
        ..Default::default()
    }
}

/// The network modes `host` and `none`, listed as networks as dockerd
/// lists them (drivers `host` and `null`; no store record, nothing to
/// remove). Their ids are fixed: they are the same on every cubby host.
const BUILTIN: [(&str, &str, &str); 2] = [
    (
        "host",
        "host",
        "686f737400000000000000000000000000000000000000000000000000000000",
    ),
    (
        "none",
        "null",
        "6e6f6e6500000000000000000000000000000000000000000000000000000000",
    ),
];

fn builtin(name: &str, driver: &str, id: &str) -> DockerNetwork {
    DockerNetwork {
        name: Some(name.into()),
        id: Some(id.into()),
        created: Some("0001-01-01T00:00:00Z".into()),
        scope: Some("local".into()),
        driver: Some(driver.into()),
        enable_ipv4: Some(false),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(Vec::new()),
            options: Some(HashMap::new()),
        }),
        internal: Some(false),
        attachable: Some(false),
        ingress: Some(false),
        config_only: Some(false),
        containers: Some(HashMap::new()),
        options: Some(HashMap::new()),
        labels: Some(HashMap::new()),
        ..Default::default()
    }
}

fn keep_builtin(
    name: &str,
    driver: &str,
    id: &str,
    filters: &crate::service::filters::Filters,
) -> bool {
    filters.iter().all(|(key, values)| {
        let any = |f: &dyn Fn(&str) -> bool| values.is_empty() || values.iter().any(|v| f(v));
        match key.as_str() {
            "name" => any(&|v| name.contains(v)),
            "id" => any(&|v| id.starts_with(v)),
            "driver" => any(&|v| v == driver),
            "label" => false,
            "type" => any(&|v| v == "builtin"),
            _ => true,
        }
    })
}

/// `GET /networks`.
pub async fn list(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<Value>> {
    let filters = super::events::parse_filters(&q)?;
    let nets = d.network_list(filters.clone()).await?;
    let mut out: Vec<DockerNetwork> = nets.iter().map(|(n, eps)| docker_network(n, eps)).collect();
    for (name, driver, id) in BUILTIN {
        if keep_builtin(name, driver, id, &filters) {
            out.push(builtin(name, driver, id));
        }
    }
    Ok(Json(json!(out)))
}

/// `GET /networks/{id}`.
pub async fn inspect(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if let Some((name, driver, bid)) = BUILTIN
        .iter()
        .find(|(n, _, i)| *n == id || (id.len() >= 12 && i.starts_with(&id)))
    {
        return Ok(Json(json!(builtin(name, driver, bid))));
    }
    let (n, eps) = d.network_inspect(&id).await?;
    Ok(Json(json!(docker_network(&n, &eps))))
}

/// `POST /networks/create`.
pub async fn create(State(d): State<Shared>, body: Bytes) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: NetworkCreateRequest = super::json::decode(&body, "network create body")?;
    let n = d.create_network(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": n.id, "Warning": "" })),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn remove(State(d): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    d.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /networks/prune`: user-defined networks without containers.
pub async fn prune(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<Value>> {
    let deleted = d.network_prune(super::events::parse_filters(&q)?).await?;
    Ok(Json(json!({ "NetworksDeleted": deleted })))
}

/// `POST /networks/{id}/connect`.
pub async fn connect(
    State(d): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: NetworkConnectRequest = super::json::decode(&body, "connect body")?;
    let what = req.container.clone().unwrap_or_default();
    let ep = super::create_body::endpoints::endpoint(&req.endpoint_config.unwrap_or_default())
        .map_err(crate::service::EngineError::from)?;
    d.connect_network(&id, &what, ep).await?;
    Ok(StatusCode::OK)
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    State(d): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: NetworkDisconnectRequest = super::json::decode(&body, "disconnect body")?;
    let what = req.container.clone().unwrap_or_default();
    d.disconnect_network(&id, &what).await?;
    Ok(StatusCode::OK)
}
