//! The Docker API's `POST /build` (the classic builder's endpoint: the
//! context as a tar body, JSON progress lines back) for `cubby daemon`.
//! Merged into the engine's router by the daemon (this crate sits above
//! the engine, so the engine cannot name it).

use crate::builder::{BuildOptions, Builder};
use crate::error::BuildError;
use crate::run::Runner;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cubby_engine::config::NetworkMode;
use cubby_engine::service::Shared;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `POST /build`, without the version prefix (the engine's middleware strips it).
pub fn router(engine: Shared) -> Router {
    Router::new()
        .route("/build", post(build))
        .route("/commit", post(commit))
        .route("/containers/{id}/export", axum::routing::get(export))
        .with_state(engine)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({"message": msg.into()}))).into_response()
}

/// Parameters the handler applies; the others must be unset.
const HANDLED: &[&str] = &[
    "t",
    "dockerfile",
    "buildargs",
    "labels",
    "target",
    "nocache",
    "pull",
    "networkmode",
    "q",
    // Intermediate containers are always removed: rm/forcerm hold by design.
    "rm",
    "forcerm",
    // 1 is the classic builder, which this is; 2 (BuildKit) is refused below.
    "version",
];

/// A query value that says "not set", as the docker CLI sends defaults.
fn unset(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "null" | "none" | "[]" | "{}"
    )
}

fn truthy(v: &str) -> bool {
    !unset(v)
}

fn parse(q: &[(String, String)], context: PathBuf) -> Result<(BuildOptions, bool), String> {
    let mut o = BuildOptions {
        context,
        // dockerd's default when networkmode is not sent (docker-py).
        network: NetworkMode::Named("bridge".into()),
        ..Default::default()
    };
    let mut quiet = false;
    for (k, v) in q {
        match k.as_str() {
            "t" if !v.is_empty() => o.tags.push(v.clone()),
            "dockerfile" if !v.is_empty() => {
                let p = crate::context::clean(v)
                    .ok_or_else(|| format!("dockerfile {v:?} is outside the build context"))?;
                o.dockerfile = Some(PathBuf::from(p));
            }
            "buildargs" | "labels" if !unset(v) => {
                let m: BTreeMap<String, Value> = serde_json::from_str(v)
                    .map_err(|e| format!("{k}: not a JSON object of strings: {e}"))?;
                for (name, val) in m {
                    let Some(s) = val.as_str() else { continue };
                    if k == "buildargs" {
                        o.build_args.insert(name, s.to_string());
                    } else {
                        o.labels.insert(name, s.to_string());
                    }
                }
            }
            "target" if !v.is_empty() => o.target = Some(v.clone()),
            "nocache" => o.no_cache = truthy(v),
            "pull" => o.pull = truthy(v),
            "q" => quiet = truthy(v),
            "networkmode" => {
                // As dockerd: RUN steps join the default bridge unless told.
                o.network = match NetworkMode::parse(v).map_err(|e| format!("networkmode: {e}"))? {
                    NetworkMode::Default => NetworkMode::Named("bridge".into()),
                    m => m,
                }
            }
            "version" if v != "1" && !v.is_empty() => {
                return Err(format!(
                    "cubby does not support builder version {v} (BuildKit): set DOCKER_BUILDKIT=0"
                ))
            }
            k if HANDLED.contains(&k) => {}
            _ if unset(v) => {}
            k => return Err(format!("cubby does not support the build option {k}={v}")),
        }
    }
    Ok((o, quiet))
}

async fn build(
    State(engine): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
    body: Body,
) -> Response {
    let work = engine.root.join("build").join("tmp");
    let id = format!("ctx-{}-{}", std::process::id(), nanos());
    let ctx_dir = work.join(&id);
    let tar_path = work.join(format!("{id}.tar"));
    let (opts, quiet) = match parse(&q, ctx_dir.join("context")) {
        Ok(o) => o,
        Err(m) => {
            // Take the context first: answering while the client still
            // sends it breaks its pipe, and it shows "broken pipe", not `m`.
            let mut s = body.into_data_stream();
            while let Some(Ok(_)) = s.next().await {}
            return error(StatusCode::BAD_REQUEST, m);
        }
    };
    // The context tar to a file first: the body may be larger than memory.
    if let Err(e) = save_body(body, &tar_path).await {
        let _ = std::fs::remove_file(&tar_path);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the build context: {e}"),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::task::spawn_blocking(move || {
        let line = |v: Value| {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            b.push(b'\n');
            let _ = tx.blocking_send(b);
        };
        let result = (|| -> Result<crate::Built, BuildError> {
            unpack_context(&tar_path, &opts.context)?;
            let _ = std::fs::remove_file(&tar_path);
            let runner = Runner {
                exe: PathBuf::from("/proc/self/exe"),
                state_dir: engine.root.join("build").join("state"),
                cgroup_parent: engine.cgroup_parent.clone(),
                engine: Some(engine.clone()),
            };
            let insecure = engine.insecure_registries.clone();
            let store = &engine.images;
            let pull =
                move |name: &str| -> Result<(), String> { pull_image(store, &insecure, name) };
            let builder = Builder::new(&engine.images, runner, Some(&pull));
            let mut out = |s: &str| {
                if !quiet {
                    line(json!({ "stream": s }));
                }
            };
            builder.build(&opts, &mut out)
        })();
        let _ = std::fs::remove_file(&tar_path);
        let _ = std::fs::remove_dir_all(&ctx_dir);
        match result {
            Ok(b) => {
                line(json!({"aux": {"ID": b.id.to_string()}}));
                if quiet {
                    line(json!({ "stream": format!("{}\n", b.id) }));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut detail = json!({ "message": msg });
                if let BuildError::RunFailed { code, .. } = &e {
                    detail["code"] = json!(code);
                }
                line(json!({"errorDetail": detail, "error": msg}));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn save_body(body: Body, path: &Path) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(std::io::Error::other)?;
        f.write_all(&chunk)?;
    }
    f.flush()
}

/// The context tar (plain, gzip or zstd) into `dest`; the tar crate keeps every
/// path inside `dest`.
fn unpack_context(tar: &Path, dest: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(dest).map_err(|e| BuildError::io_path(dest, e))?;
    let input = cubby_image::archive::decompressed(tar)?;
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.unpack(dest)
        .map_err(|e| BuildError::invalid(format!("the build context is not a valid tar: {e}")))
}

fn pull_image(
    store: &cubby_image::store::Store,
    insecure: &[String],
    name: &str,
) -> Result<(), String> {
    use cubby_image::registry::{Client, ClientOptions};
    let r = cubby_image::reference::Reference::parse(name).map_err(|e| e.to_string())?;
    let client = Client::new(ClientOptions {
        auth: cubby_image::auth::AuthFile::default_location(),
        insecure_registries: insecure.to_vec(),
        user_agent: format!("cubby/{}", env!("CARGO_PKG_VERSION")),
    });
    let opts = cubby_image::pull::PullOptions {
        platform: cubby_image::pull::Platform::host(),
        progress: false,
    };
    cubby_image::pull::pull(&client, store, &r, &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Engine errors get the engine API's statuses (one mapping, the engine's).
fn engine_error(e: cubby_engine::EngineError) -> Response {
    cubby_engine::api::ApiError::from(e).into_response()
}

fn build_error(e: BuildError) -> Response {
    let status = if e.is_user_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    error(status, e.to_string())
}

fn builder(engine: &Shared) -> Builder<'_> {
    Builder::new(
        &engine.images,
        Runner {
            exe: PathBuf::from("/proc/self/exe"),
            state_dir: engine.root.join("build").join("state"),
            cgroup_parent: engine.cgroup_parent.clone(),
            engine: None,
        },
        None,
    )
}

/// `POST /commit?container=X&repo=R&tag=T&comment=&author=&pause=&changes=`
/// with a container config body (`docker commit`). A running container
/// is paused while its changes are read, unless `pause=0`.
async fn commit(
    State(engine): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Response {
    let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(container) = get("container").filter(|c| !c.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "container is required");
    };
    let mut opts = crate::builder::CommitOptions {
        comment: get("comment").filter(|c| !c.is_empty()),
        author: get("author").filter(|c| !c.is_empty()),
        ..Default::default()
    };
    for (k, v) in &q {
        if k == "changes" && !v.is_empty() {
            opts.changes.extend(v.lines().map(String::from));
        }
    }
    if let Some(repo) = get("repo").filter(|r| !r.is_empty()) {
        let tag = get("tag").filter(|t| !t.is_empty());
        opts.tags.push(match tag {
            Some(t) => format!("{repo}:{t}"),
            None => repo,
        });
    }
    if !body.is_empty() {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => opts.config = m,
            Ok(Value::Null) => {}
            Ok(_) | Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the body must be a container config object",
                )
            }
        }
    }
    let pause = get("pause").map(|p| truthy(&p)).unwrap_or(true);
    let rec = match engine.find(&container).await {
        Ok(r) => r,
        Err(e) => return engine_error(e),
    };
    opts.config = with_container_config(&rec.config["Config"], opts.config);
    let running = rec.status == cubby_engine::records::Status::Running;
    if pause && running {
        if let Err(e) = engine.pause(&rec.id).await {
            return engine_error(e);
        }
    }
    let dir = engine.root.join("containers").join(&rec.id);
    let e2 = engine.clone();
    let result = tokio::task::spawn_blocking(move || builder(&e2).commit(&dir, &opts)).await;
    if pause && running {
        let _ = engine.unpause(&rec.id).await;
    }
    match result {
        Ok(Ok(b)) => (
            StatusCode::CREATED,
            axum::Json(json!({"Id": b.id.to_string()})),
        )
            .into_response(),
        Ok(Err(e)) => build_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A writer into the response body.
struct ChannelWriter(tokio::sync::mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar.
async fn export(
    State(engine): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let rec = match engine.find(&id).await {
        Ok(r) => r,
        Err(e) => return engine_error(e),
    };
    let dir = engine.root.join("containers").join(&rec.id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::task::spawn_blocking(move || {
        let w = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx));
        // A failure mid-stream can only cut the tar short: the client sees
        // a truncated archive, as with Docker.
        let _ = builder(&engine).export(&dir, w);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// `docker commit` keeps what the container was made with (its Cmd, Env,
/// User, labels, ...) in the new image, as dockerd does; the request's own
/// config, where it sets a field, wins.
fn with_container_config(
    container: &Value,
    request: serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    const KEPT: &[&str] = &[
        "Cmd",
        "Entrypoint",
        "Env",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "Labels",
        "StopSignal",
        "Healthcheck",
    ];
    let empty = |v: &Value| v.is_null() || *v == json!([]) || *v == json!({}) || *v == json!("");
    let mut merged: serde_json::Map<String, Value> = KEPT
        .iter()
        .filter_map(|k| Some((k.to_string(), container.get(*k)?.clone())))
        .filter(|(_, v)| !empty(v))
        .collect();
    for (k, v) in request {
        if !empty(&v) {
            merged.insert(k, v);
        }
    }
    merged
}
