//! `/containers/...`: list, inspect, kill, remove (logs: [`super::logs`]).

use super::util::{flag, human_duration, now_secs, parse_signal, unix_secs, Query};
use super::{ApiResult, Shared};
use crate::records::{ContainerRecord, Status};
use axum::extract::{Path, Query as Q, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// Docker's zero time, for times that have not happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `docker ps`'s STATUS column.
pub fn status_text(r: &ContainerRecord, now: i64) -> String {
    let exited = || {
        let code = r.exit_code.unwrap_or(0);
        match r.finished_at.as_deref() {
            Some(t) if !t.is_empty() => {
                format!("({code}) {} ago", human_duration(now - unix_secs(t)))
            }
            _ => format!("({code})"),
        }
    };
    let up = || format!("Up {}", human_duration(now - unix_secs(&r.started_at)));
    match r.status {
        Status::Created => "Created".into(),
        Status::Running => up(),
        Status::Paused => format!("{} (Paused)", up()),
        Status::Restarting => format!("Restarting {}", exited()),
        Status::Exited => format!("Exited {}", exited()),
    }
}

/// The command line as `docker ps` shows it.
fn command_line(r: &ContainerRecord) -> String {
    let mut parts = vec![r.config["Path"].as_str().unwrap_or("").to_string()];
    if let Some(args) = r.config["Args"].as_array() {
        parts.extend(args.iter().filter_map(|a| a.as_str().map(str::to_string)));
    }
    parts.join(" ").trim().to_string()
}

fn summary(r: &ContainerRecord, now: i64) -> Value {
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image.clone().unwrap_or_default(),
        "ImageID": r.config["ImageID"].as_str().unwrap_or(""),
        "Command": command_line(r),
        "Created": unix_secs(&r.created),
        "Ports": [],
        "Labels": r.labels,
        "State": r.status.to_string(),
        "Status": status_text(r, now),
        "HostConfig": { "NetworkMode": "default" },
        "NetworkSettings": { "Networks": {} },
        "Mounts": r.config["Mounts"].as_array().cloned().unwrap_or_default(),
    })
}

/// Docker's `ps` filters: id, name, label, status, ancestor (image name).
fn keep(r: &ContainerRecord, filters: &std::collections::BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, values)| {
        let any = |f: &dyn Fn(&str) -> bool| values.is_empty() || values.iter().any(|v| f(v));
        match key.as_str() {
            "id" => any(&|v| r.id.starts_with(v)),
            "name" => any(&|v| r.name.contains(v.trim_start_matches('/'))),
            "label" => super::events::labels_match(values, &r.labels),
            "status" => any(&|v| v == r.status.to_string()),
            "ancestor" => any(&|v| r.image.as_deref() == Some(v)),
            _ => true,
        }
    })
}

pub async fn list(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Json<Value>> {
    let all = flag(&q, "all");
    let filters = super::events::parse_filters(&q)?;
    let mut records = d.list().await?;
    if !all && !filters.contains_key("status") {
        records.retain(|r| r.status.is_live() || r.status == Status::Restarting);
    }
    records.retain(|r| keep(r, &filters));
    // Newest first, as Docker lists them.
    records.sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
    if let Some(limit) = q.get("limit").and_then(|l| l.parse::<usize>().ok()) {
        if limit > 0 {
            records.truncate(limit);
        }
    }
    let now = now_secs();
    let mut docs: Vec<Value> = records.iter().map(|r| summary(r, now)).collect();
    if flag(&q, "size") {
        super::stats::add_sizes(&d, &mut docs).await?;
    }
    crate::service::networks::decorate_list(&d, &mut docs).await;
    Ok(Json(Value::Array(docs)))
}

/// Docker's container inspect document: the state from the record, the
/// rest from the daemon's config kept in it.
pub fn inspect_doc(r: &ContainerRecord) -> Value {
    let live = r.status.is_live();
    let or_zero = |t: &str| {
        if t.is_empty() {
            ZERO_TIME.to_string()
        } else {
            t.to_string()
        }
    };
    let mut config = match &r.config["Config"] {
        Value::Object(_) => r.config["Config"].clone(),
        _ => json!({}),
    };
    config["Image"] = json!(r.image.clone().unwrap_or_default());
    config["Labels"] = json!(r.labels);
    config["Tty"] = json!(r.tty);
    config["OpenStdin"] = json!(r.open_stdin);
    config["StdinOnce"] = json!(r.stdin_once);
    let mut host = match &r.config["HostConfig"] {
        Value::Object(_) => r.config["HostConfig"].clone(),
        _ => json!({}),
    };
    // The CLI sends the options with an empty driver (the default one).
    if host["LogConfig"]["Type"].as_str().unwrap_or("").is_empty() {
        let opts = match &host["LogConfig"]["Config"] {
            Value::Object(o) => Value::Object(o.clone()),
            _ => json!({}),
        };
        host["LogConfig"] = json!({ "Type": "json-file", "Config": opts });
    }
    if host["NetworkMode"].is_null() {
        host["NetworkMode"] = json!("default");
    }
    host["AutoRemove"] = json!(r.auto_remove);
    json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.config["Path"].as_str().unwrap_or(""),
        "Args": r.config["Args"].as_array().cloned().unwrap_or_default(),
        "State": {
            "Status": r.status.to_string(),
            "Running": live,
            "Paused": r.status == Status::Paused,
            "Restarting": r.status == Status::Restarting,
            "OOMKilled": r.oom_killed,
            "Dead": false,
            "Pid": if live { r.pid.unwrap_or(0) } else { 0 },
            "ExitCode": r.exit_code.unwrap_or(0),
            "Error": r.error.clone().unwrap_or_default(),
            "StartedAt": or_zero(&r.started_at),
            "FinishedAt": or_zero(r.finished_at.as_deref().unwrap_or("")),
        },
        "Image": r.config["ImageID"].as_str().unwrap_or(""),
        "LogPath": r.log_path,
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "HostConfig": host,
        "Mounts": r.config["Mounts"].as_array().cloned().unwrap_or_default(),
        "Config": config,
        "NetworkSettings": { "Networks": {} },
    })
}

pub async fn inspect(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Json<Value>> {
    let r = d.find(&id).await?;
    let mut doc = inspect_doc(&r);
    crate::service::networks::decorate_inspect(&d, &r.id, &mut doc).await;
    if flag(&q, "size") {
        super::stats::add_sizes(&d, std::slice::from_mut(&mut doc)).await?;
    }
    Ok(Json(doc))
}

pub async fn kill(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    let signal = parse_signal(q.get("signal").map_or("", String::as_str))?;
    d.kill(&id, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<StatusCode> {
    d.remove(&id, flag(&q, "force"), flag(&q, "v")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn rec(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            image: Some("busybox".into()),
            created: "2024-01-01T00:00:00Z".into(),
            status: Status::Exited,
            exit_code: Some(137),
            started_at: "2024-01-01T00:00:01Z".into(),
            finished_at: Some("2024-01-01T00:00:02Z".into()),
            ..ContainerRecord::new(id, name, PathBuf::from("/x"))
        }
    }

    #[test]
    fn status_and_inspect() {
        let r = rec("abc", "web");
        let now = unix_secs("2024-01-01T00:00:12Z");
        assert_eq!(status_text(&r, now), "Exited (137) 10 seconds ago");
        let doc = inspect_doc(&r);
        assert_eq!(doc["State"]["Running"], false);
        assert_eq!(doc["State"]["ExitCode"], 137);
        assert_eq!(doc["Name"], "/web");
        assert_eq!(doc["Config"]["Tty"], false);
        let mut r = rec("abc", "web");
        r.status = Status::Created;
        r.started_at.clear();
        r.finished_at = None;
        assert_eq!(inspect_doc(&r)["State"]["StartedAt"], ZERO_TIME);
        assert_eq!(status_text(&r, now), "Created");
    }
}
