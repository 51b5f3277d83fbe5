//! `_ping`, `version` and `info`.

use super::{blocking, ApiResult, Shared, API_VERSION, MIN_API_VERSION};
use crate::records::Status;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Docker's names for the architecture.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

pub async fn ping() -> impl IntoResponse {
    (
        [
            (HeaderName::from_static("api-version"), API_VERSION),
            (HeaderName::from_static("ostype"), "linux"),
            (CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "OK",
    )
}

pub async fn version() -> Json<Value> {
    let details = json!({
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
    });
    Json(json!({
        "Platform": { "Name": "cubby" },
        "Components": [{ "Name": "Engine", "Version": VERSION, "Details": details }],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
}

pub async fn info(State(d): State<Shared>) -> ApiResult<Json<Value>> {
    let records = d.list().await?;
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let store = d.clone();
    let images = blocking(move || Ok(store.image_records()?)).await?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut doc = json!({
        "ID": "",
        "Containers": records.len(),
        "ContainersRunning": count(Status::Running),
        "ContainersPaused": 0,
        "ContainersStopped": count(Status::Exited) + count(Status::Created),
        "Images": images.len(),
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": { "Volume": [], "Network": [], "Authorization": null, "Log": ["json-file"] },
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "OomKillDisable": false,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": cubby_runtime::state::rfc3339_now(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" },
    });
    let more = json!({
        "KernelVersion": kernel_version(),
        "OperatingSystem": "cubby",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": cpus,
        "MemTotal": mem_total(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": { "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": [] },
        "DockerRootDir": d.root,
        "Name": hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": { "cubby": { "path": "cubby monitor" } },
        "DefaultRuntime": "cubby",
        "Swarm": { "LocalNodeState": "inactive" },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": [],
    });
    if let (Value::Object(doc), Value::Object(more)) = (&mut doc, more) {
        doc.extend(more);
    }
    Ok(Json(doc))
}

/// The host's memory in bytes (`MemTotal` of /proc/meminfo); 0 if unknown.
fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
