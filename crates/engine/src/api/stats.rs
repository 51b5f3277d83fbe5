//! `GET /containers/{id}/stats` and `/top` (as documents), container sizes (`size=1` on
//! list and inspect) and the resource limits of `HostConfig` (`-m`,
//! `--cpus`, `--pids-limit`...) turned into the spec's `linux.resources`.
//!
//! Stats are read from the container's cgroup (`/<cgroup_parent>/<id>`)
//! on demand, not by a background collector: a daemon with no `docker
//! stats` client open does no work, and a streamed reply keeps its own
//! previous sample for `precpu_stats`.

use super::error::ApiError;
use super::util::{flag, Query};
use super::{blocking, ApiResult, Shared};
use crate::records::ContainerRecord;
use crate::service::Engine;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard_stubs::models::{
    ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
    ContainerMemoryStats, ContainerPidsStats, ContainerStatsResponse, ContainerTopResponse,
};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// Docker's zero time: `preread` of a first sample.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

use crate::service::stats::StatsSample as Sample;

fn cpu_stats(s: &Sample) -> ContainerCpuStats {
    ContainerCpuStats {
        cpu_usage: Some(ContainerCpuUsage {
            total_usage: Some(s.stats.cpu_usage_ns),
            percpu_usage: None,
            usage_in_kernelmode: Some(s.stats.cpu_system_ns),
            usage_in_usermode: Some(s.stats.cpu_user_ns),
        }),
        system_cpu_usage: Some(s.system_ns),
        online_cpus: Some(s.online_cpus),
        throttling_data: None,
    }
}

/// Docker's stats document for `cur`, with `prev` as `precpu_stats`.
pub fn stats_doc(
    r: &ContainerRecord,
    cur: &Sample,
    prev: Option<&Sample>,
) -> ContainerStatsResponse {
    let st = &cur.stats;
    ContainerStatsResponse {
        name: Some(format!("/{}", r.name)),
        id: Some(r.id.clone()),
        read: Some(cur.read.clone()),
        preread: Some(prev.map_or(ZERO_TIME.to_string(), |p| p.read.clone())),
        pids_stats: Some(ContainerPidsStats {
            current: Some(st.pids),
            limit: st.pids_limit,
        }),
        cpu_stats: Some(cpu_stats(cur)),
        blkio_stats: Some(ContainerBlkioStats {
            io_service_bytes_recursive: Some(
                st.io_bytes
                    .iter()
                    .map(|(major, minor, op, value)| ContainerBlkioStatEntry {
                        major: Some(*major),
                        minor: Some(*minor),
                        op: Some(op.clone()),
                        value: Some(*value),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        num_procs: Some(0),
        precpu_stats: Some(prev.map(cpu_stats).unwrap_or_default()),
        memory_stats: Some(ContainerMemoryStats {
            usage: Some(st.memory_bytes),
            stats: Some(
                st.memory_stat
                    .clone()
                    .into_iter()
                    .collect::<HashMap<_, _>>(),
            ),
            limit: Some(st.memory_limit_bytes.unwrap_or(cur.host_memory)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What Docker sends for a container that is not running.
fn empty_doc(r: &ContainerRecord) -> ContainerStatsResponse {
    ContainerStatsResponse {
        name: Some(format!("/{}", r.name)),
        id: Some(r.id.clone()),
        read: Some(ZERO_TIME.into()),
        preread: Some(ZERO_TIME.into()),
        ..Default::default()
    }
}

fn line(doc: &ContainerStatsResponse) -> Bytes {
    let mut v = serde_json::to_vec(doc).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: one document per
/// second while `stream` (the default) and the container runs; with
/// `stream=0` one document, sampled twice a second apart so the client can
/// compute CPU % (`one-shot=1` skips the second sample, as Docker).
pub async fn stats(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let stream = q.get("stream").is_none_or(|_| flag(&q, "stream"));
    let one_shot = flag(&q, "one-shot");
    if one_shot && stream {
        return Err(ApiError::bad_request(
            "cannot have stream=true and one-shot=true",
        ));
    }
    let json = [(CONTENT_TYPE, "application/json")];
    let (r, first) = d.stats(&id).await?;
    let Some(first) = first else {
        return Ok((json, line(&empty_doc(&r))).into_response());
    };
    if !stream {
        if one_shot {
            return Ok((json, line(&stats_doc(&r, &first, None))).into_response());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cur = d.stats_again(&r.id).await?;
        let doc = match &cur {
            Some(cur) => stats_doc(&r, cur, Some(&first)),
            // Stopped within the second: its last reading.
            None => stats_doc(&r, &first, None),
        };
        return Ok((json, line(&doc)).into_response());
    }
    // Streamed: ends when the container stops or its cgroup goes; hyper
    // drops the stream (and so this loop) when the client goes away.
    let state = (d, r, Some(first), None::<Sample>);
    let body = futures_util::stream::unfold(state, move |(d, r, next, prev)| async move {
        let cur = match next {
            Some(s) => s,
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                d.stats_again(&r.id).await.ok()??
            }
        };
        let bytes = line(&stats_doc(&r, &cur, prev.as_ref()));
        Some((
            Ok::<_, std::convert::Infallible>(bytes),
            (d, r, None, Some(cur)),
        ))
    });
    Ok((json, Body::from_stream(body)).into_response())
}

/// `GET /containers/{id}/top?ps_args=`: [`Engine::top`]'s table as
/// Docker's document.
pub async fn top(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Json<ContainerTopResponse>> {
    let args = q.get("ps_args").map_or("", |s| s.trim()).to_string();
    let top = d.top(&id, &args).await?;
    Ok(Json(ContainerTopResponse {
        titles: Some(top.titles),
        processes: Some(top.processes),
    }))
}

/// Bytes the container wrote to its own layer (its snapshot's upper dir).
pub fn size_rw(d: &Engine, id: &str) -> u64 {
    cubby_image::snapshot::Snapshot::at(d.root.join("containers").join(id)).disk_usage()
}

/// The size of the image a container was made from (its snapshot's
/// `image` file names the config digest); 0 if it is gone.
fn image_size(d: &Engine, id: &str, images: &[cubby_image::store::ImageRecord]) -> u64 {
    let file = d.root.join("containers").join(id).join("image");
    let Ok(digest) = std::fs::read_to_string(file) else {
        return 0;
    };
    images
        .iter()
        .find(|i| i.config_digest.to_string() == digest.trim())
        .map_or(0, |i| i.size)
}

/// Adds Docker's `SizeRw` and `SizeRootFs` to list or inspect documents
/// (each has its `Id`), for `size=1`.
pub async fn add_sizes(d: &Shared, docs: &mut [Value]) -> ApiResult<()> {
    let ids: Vec<String> = docs
        .iter()
        .map(|doc| doc["Id"].as_str().unwrap_or("").to_string())
        .collect();
    let d = d.clone();
    let sizes = blocking(move || {
        let images = d.image_records()?;
        Ok(ids
            .iter()
            .map(|id| {
                let rw = size_rw(&d, id);
                (rw, rw + image_size(&d, id, &images))
            })
            .collect::<Vec<_>>())
    })
    .await?;
    for (doc, (rw, rootfs)) in docs.iter_mut().zip(sizes) {
        if let Some(o) = doc.as_object_mut() {
            o.insert("SizeRw".into(), rw.into());
            o.insert("SizeRootFs".into(), rootfs.into());
        }
    }
    Ok(())
}
