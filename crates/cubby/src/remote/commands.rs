//! `cubby` container commands through the daemon's Docker Engine API,
//! behaving like the `docker` CLI's (output, exit codes).

use super::http::{enc, Client, ClientError};
use super::stream;
use crate::run_args::{self, RunArgs};
use crate::table::Table;
use anyhow::{bail, Context, Result};
use bollard_stubs::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerWaitResponse, DeviceMapping, ExecConfig,
    ExecInspectResponse, HostConfig, Mount, MountTypeEnum, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};
use hyper::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The create body for `cubby run` flags (the same [`RunArgs`] as
/// standalone); flags that only make sense without a daemon are errors.
pub fn create_body(args: &RunArgs) -> Result<ContainerCreateBody> {
    let lookup = |k: &str| std::env::var(k).ok();
    create_body_with(args, &lookup, run_args::host_cpus())
}

fn create_body_with(
    args: &RunArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
    ncpus: usize,
) -> Result<ContainerCreateBody> {
    for (set, flag) in [
        (args.rootfs.is_some(), "--rootfs"),
        (args.platform.is_some(), "--platform"),
        (args.userns.is_some(), "--userns"),
    ] {
        if set {
            bail!("{flag} is for standalone `cubby run` only; the daemon runs images from its store (drop {flag}, or stop the daemon / unset CUBBY_HOST)");
        }
    }
    let Some((image, cmd)) = args.command.split_first() else {
        bail!("give an image and optionally a command: `cubby run IMAGE [CMD...]`");
    };
    if let Some(name) = &args.name {
        run_args::validate_name(name)?;
    }
    // Env files and `-e KEY` are read here, as docker does on the client.
    let mut env = Vec::new();
    for f in &args.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--env-file {}: cannot read", f.display()))?;
        for (k, v) in run_args::parse_env_file(&text, lookup)
            .with_context(|| format!("--env-file {}", f.display()))?
        {
            env.push(format!("{k}={v}"));
        }
    }
    for e in &args.env {
        if let Some((k, v)) = run_args::parse_env(e, lookup)? {
            env.push(format!("{k}={v}"));
        }
    }
    let mut labels = HashMap::new();
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if k.is_empty() {
            bail!("invalid --label {l:?}: use KEY=VALUE, e.g. -l course=os101");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    for v in &args.volume {
        run_args::parse_volume(v)?;
    }
    let mut tmpfs = HashMap::new();
    for t in &args.tmpfs {
        let parsed = run_args::parse_tmpfs(t)?;
        let opts = t.split_once(':').map(|(_, o)| o).unwrap_or("");
        tmpfs.insert(parsed.container.display().to_string(), opts.to_string());
    }
    let memory = args
        .memory
        .as_deref()
        .map(|m| run_args::parse_memory("--memory", m))
        .transpose()?;
    let memory_swap = args
        .memory_swap
        .as_deref()
        .map(|s| run_args::parse_memory_swap(s, memory))
        .transpose()?;
    let nano_cpus = args
        .cpus
        .as_deref()
        .map(|c| {
            run_args::parse_cpus(c, ncpus)
                .map(|(quota, period)| quota * 1_000_000_000 / period as i64)
        })
        .transpose()?;
    let cpuset = args
        .cpuset_cpus
        .as_deref()
        .map(run_args::parse_cpuset)
        .transpose()?;
    let cpuset_mems = args
        .cpuset_mems
        .as_deref()
        .map(|m| cubby_engine::config::parse::cpuset(m, "--cpuset-mems"))
        .transpose()?;
    let mut ulimits = Vec::new();
    for u in &args.ulimit {
        let r = run_args::parse_ulimit(u)?;
        let v = |x: u64| i64::try_from(x).unwrap_or(-1);
        let name = u.split_once('=').map_or(u.as_str(), |(n, _)| n).trim();
        ulimits.push(ResourcesUlimits {
            name: Some(name.to_ascii_lowercase()),
            soft: Some(v(r.soft())),
            hard: Some(v(r.hard())),
        });
    }
    let mut devices = Vec::new();
    for d in &args.device {
        let m = run_args::parse_device(d)?;
        devices.push(DeviceMapping {
            path_on_host: Some(m.host.display().to_string()),
            path_in_container: Some(m.container.display().to_string()),
            cgroup_permissions: Some(m.permissions),
        });
    }
    // As the docker CLI: a seccomp profile file is sent as its content.
    let mut security_opt = Vec::new();
    for o in &args.security_opt {
        match o.split_once(['=', ':']) {
            Some(("seccomp", v)) if v != "unconfined" && !v.trim_start().starts_with('{') => {
                let text = std::fs::read_to_string(v)
                    .with_context(|| format!("--security-opt seccomp={v}: cannot read"))?;
                security_opt.push(format!("seccomp={text}"));
            }
            _ => security_opt.push(o.clone()),
        }
    }
    let interactive = args.interactive;
    let (port_bindings, exposed_ports) = super::network::port_bindings(&args.publish)?;
    let host_config = HostConfig {
        binds: (!args.volume.is_empty()).then(|| args.volume.clone()),
        mounts: (!args.mount.is_empty())
            .then(|| args.mount.iter().map(|m| parse_mount(m)).collect())
            .transpose()?,
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        memory,
        memory_swap,
        nano_cpus,
        cpu_shares: args.cpu_shares.map(|c| c as i64),
        cpuset_cpus: cpuset,
        cpuset_mems,
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        devices: (!devices.is_empty()).then_some(devices),
        privileged: Some(args.privileged),
        pids_limit: args.pids_limit,
        restart_policy: args.restart.as_deref().map(parse_restart).transpose()?,
        auto_remove: Some(args.rm),
        readonly_rootfs: Some(args.read_only),
        cap_add: (!args.cap_add.is_empty()).then(|| args.cap_add.clone()),
        cap_drop: (!args.cap_drop.is_empty()).then(|| args.cap_drop.clone()),
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        network_mode: args.network.clone(),
        port_bindings,
        init: Some(args.init),
        ..Default::default()
    };
    if args.rm && args.restart.as_deref().is_some_and(|r| r != "no") {
        bail!(
            "--rm and --restart {} conflict: a container removed at exit cannot restart",
            args.restart.as_deref().unwrap_or("")
        );
    }
    Ok(ContainerCreateBody {
        image: Some(image.clone()),
        cmd: (!cmd.is_empty()).then(|| cmd.to_vec()),
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        env: (!env.is_empty()).then_some(env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        labels: (!labels.is_empty()).then_some(labels),
        tty: Some(args.tty),
        open_stdin: Some(interactive),
        stdin_once: Some(interactive),
        attach_stdin: Some(interactive && !args.detach),
        attach_stdout: Some(!args.detach),
        attach_stderr: Some(!args.detach),
        host_config: Some(host_config),
        exposed_ports,
        networking_config: super::network::networking_config(
            args.network.as_deref(),
            &args.network_alias,
        ),
        ..Default::default()
    })
}

/// `--restart no|always|unless-stopped|on-failure[:N]`.
pub fn parse_restart(s: &str) -> Result<RestartPolicy> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let name = match name {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => bail!(
            "invalid --restart {s:?}: use no, always, unless-stopped or on-failure[:MAX-RETRIES]"
        ),
    };
    let maximum_retry_count = match count {
        None => None,
        Some(c) if name == RestartPolicyNameEnum::ON_FAILURE => {
            Some(c.parse::<i64>().ok().filter(|n| *n >= 0).with_context(|| {
                format!("invalid --restart {s:?}: the retry count must be a number >= 0")
            })?)
        }
        Some(_) => bail!("invalid --restart {s:?}: only on-failure takes a retry count"),
    };
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    })
}

/// `--mount type=bind,source=/a,target=/b,readonly` (docker's syntax).
pub fn parse_mount(s: &str) -> Result<Mount> {
    let mut m = Mount::default();
    for part in s.split(',') {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (part.trim(), None),
        };
        let bool_value = |v: Option<&str>| match v {
            None | Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            Some(x) => bail!("invalid --mount {s:?}: {k}={x} is not true or false"),
        };
        match (k, v) {
            ("type", Some(t)) => {
                m.typ = Some(match t {
                    "bind" => MountTypeEnum::BIND,
                    "volume" => MountTypeEnum::VOLUME,
                    "tmpfs" => MountTypeEnum::TMPFS,
                    _ => bail!("invalid --mount {s:?}: type must be bind, volume or tmpfs"),
                })
            }
            ("source" | "src", Some(v)) => m.source = Some(v.to_string()),
            ("target" | "dst" | "destination", Some(v)) => m.target = Some(v.to_string()),
            ("readonly" | "ro", v) => m.read_only = Some(bool_value(v)?),
            _ => bail!("invalid --mount {s:?}: unknown option {part:?} (use type=, source=, target=, readonly)"),
        }
    }
    if m.target.is_none() {
        bail!("invalid --mount {s:?}: give target=/PATH/IN/CONTAINER");
    }
    if m.typ.is_none() {
        m.typ = Some(MountTypeEnum::VOLUME);
    }
    Ok(m)
}

fn path_id(id: &str) -> String {
    enc(id)
}

/// Docker's 12-digit short id.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Pulls `image` through the daemon (`POST /images/create`), printing the
/// summary lines as docker does; an error line of the stream fails it.
async fn pull_through(c: &Client, image: &str) -> Result<()> {
    let bytes = c
        .call(
            Method::POST,
            &format!("/images/create?fromImage={}", enc(image)),
            None,
        )
        .await?;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).context("the daemon's pull progress")?;
        if let Some(e) = v["error"].as_str() {
            bail!("pull {image}: {e}");
        }
        if v["id"].is_null() {
            if let Some(status) = v["status"].as_str() {
                eprintln!("{status}");
            }
        }
    }
    Ok(())
}

pub async fn run(c: &Client, args: &RunArgs) -> Result<i32> {
    use crate::images::PullPolicy;
    let body = create_body(args)?;
    let image = body.image.clone().unwrap_or_default();
    let mut path = "/containers/create".to_string();
    if let Some(name) = &args.name {
        path.push_str(&format!("?name={}", enc(name)));
    }
    if args.pull == PullPolicy::Always {
        pull_through(c, &image).await?;
    }
    let body = serde_json::to_value(&body)?;
    // As `docker run`: a missing image is pulled (unless --pull never),
    // then the create is tried once more.
    let created: ContainerCreateResponse = match c.json(Method::POST, &path, Some(&body)).await {
        Err(ClientError::Daemon { status, message })
            if status == hyper::StatusCode::NOT_FOUND
                && message.starts_with("No such image")
                && args.pull == PullPolicy::Missing =>
        {
            eprintln!("Unable to find image '{image}' locally");
            pull_through(c, &image).await?;
            c.json(Method::POST, &path, Some(&body)).await?
        }
        other => other?,
    };
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    let id = created.id;
    if args.detach {
        c.call(Method::POST, &format!("/containers/{id}/start"), None)
            .await?;
        println!("{id}");
        return Ok(0);
    }
    // As docker: attach first (nothing is lost), then wait, then start.
    let attach = c
        .hijack(
            &format!(
                "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
                u8::from(args.interactive)
            ),
            None,
        )
        .await?;
    // As docker's --sig-proxy: without a TTY (where ^C is a byte to the
    // container) our signals go to the container, whose exit ends the run.
    let proxy = (!args.tty).then(|| proxy_signals(c, &id));
    let condition = if args.rm { "removed" } else { "next-exit" };
    let wait_path = format!("/containers/{id}/wait?condition={condition}");
    // The daemon answers the headers at once and the status at the exit.
    let wait = c.send(Method::POST, &wait_path, None, false).await?;
    c.call(Method::POST, &format!("/containers/{id}/start"), None)
        .await?;
    let session = stream::Session {
        tty: args.tty,
        stdin: args.interactive,
    };
    let resize = args.tty.then(|| format!("/containers/{id}/resize"));
    let relayed = stream::relay(c, attach, session, resize.as_deref()).await;
    if let Some(p) = proxy {
        p.abort();
    }
    relayed?;
    let bytes = super::http::collect(wait, &c.host).await?;
    let status: ContainerWaitResponse =
        serde_json::from_slice(&bytes).context("the daemon's wait answer")?;
    if let Some(msg) = status.error.and_then(|e| e.message) {
        if !msg.is_empty() {
            bail!("waiting for {}: {msg}", short(&id));
        }
    }
    Ok(status.status_code as i32)
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to container `id`.
fn proxy_signals(c: &Client, id: &str) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let client = Client {
        host: c.host.clone(),
    };
    let id = id.to_string();
    // Handlers are installed now, before the container starts, so no
    // signal in between takes the default action (killing only us).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
    ] {
        let Ok(mut sig) = signal(kind) else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if tx.send(name).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(name) = rx.recv().await {
            let path = format!("/containers/{id}/kill?signal={name}");
            if let Err(e) = client.call(Method::POST, &path, None).await {
                eprintln!("cubby: forward {name} to {}: {e}", short(&id));
            }
        }
    })
}

pub async fn ps(c: &Client, all: bool, quiet: bool, filters: &[String]) -> Result<i32> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            bail!("invalid --filter {f:?}: use KEY=VALUE, e.g. label=course=os101");
        };
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    let mut path = format!("/containers/json?all={}", u8::from(all));
    if !map.is_empty() {
        path.push_str(&format!("&filters={}", enc(&serde_json::to_string(&map)?)));
    }
    let mut list: Vec<Value> = c.json(Method::GET, &path, None).await?;
    // Label filters again here: a daemon without filter support (cubby's
    // first API slice) would otherwise list everything.
    if let Some(labels) = map.get("label") {
        list.retain(|ct| labels.iter().all(|l| has_label(&ct["Labels"], l)));
    }
    if quiet {
        for ct in &list {
            println!("{}", short(ct["Id"].as_str().unwrap_or("")));
        }
        return Ok(0);
    }
    let mut table = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for ct in &list {
        let s = |k: &str| ct[k].as_str().unwrap_or("").to_string();
        let mut command = format!("\"{}\"", s("Command"));
        if command.chars().count() > 20 {
            command = format!("{}…\"", command.chars().take(19).collect::<String>());
        }
        let created = ct["Created"]
            .as_i64()
            .map_or_else(String::new, crate::table::ago);
        let names: Vec<&str> = ct["Names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str())
                    .map(|n| n.trim_start_matches('/'))
                    .collect()
            })
            .unwrap_or_default();
        table.row(&[
            short(&s("Id")).to_string(),
            s("Image"),
            command,
            created,
            s("Status"),
            crate::table::ports(&ct["Ports"]),
            names.join(","),
        ]);
    }
    table.print();
    Ok(0)
}

/// `KEY` or `KEY=VALUE` against a container's Labels object.
fn has_label(labels: &Value, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => labels.get(filter).is_some(),
    }
}

/// Runs `f` for each container, printing its name on success like docker;
/// errors go to stderr and make the exit code 1.
async fn each<F, Fut>(ids: &[String], f: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut code = 0;
    for id in ids {
        match f(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(e @ ClientError::Daemon { .. }) => {
                eprintln!("{e}");
                code = 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}

pub async fn rm(c: &Client, force: bool, ids: &[String]) -> Result<i32> {
    each(ids, |id| async move {
        let path = format!("/containers/{}?force={}", path_id(&id), u8::from(force));
        c.call(Method::DELETE, &path, None).await.map(|_| ())
    })
    .await
}

pub async fn kill(c: &Client, signal: &str, ids: &[String]) -> Result<i32> {
    each(ids, |id| async move {
        let path = format!("/containers/{}/kill?signal={}", path_id(&id), enc(signal));
        c.call(Method::POST, &path, None).await.map(|_| ())
    })
    .await
}

pub async fn stop(c: &Client, time: Option<i64>, ids: &[String]) -> Result<i32> {
    each(ids, |id| async move {
        let mut path = format!("/containers/{}/stop", path_id(&id));
        if let Some(t) = time {
            path.push_str(&format!("?t={t}"));
        }
        c.call(Method::POST, &path, None).await.map(|_| ())
    })
    .await
}

pub async fn restart(c: &Client, time: Option<i64>, ids: &[String]) -> Result<i32> {
    each(ids, |id| async move {
        let mut path = format!("/containers/{}/restart", path_id(&id));
        if let Some(t) = time {
            path.push_str(&format!("?t={t}"));
        }
        c.call(Method::POST, &path, None).await.map(|_| ())
    })
    .await
}

pub async fn start(c: &Client, ids: &[String]) -> Result<i32> {
    each(ids, |id| async move {
        let path = format!("/containers/{}/start", path_id(&id));
        c.call(Method::POST, &path, None).await.map(|_| ())
    })
    .await
}

pub async fn inspect(c: &Client, ids: &[String]) -> Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for id in ids {
        match c
            .json::<Value>(
                Method::GET,
                &format!("/containers/{}/json", path_id(id)),
                None,
            )
            .await
        {
            Ok(v) => out.push(v),
            Err(e @ ClientError::Daemon { .. }) => {
                eprintln!("{e}");
                code = 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
    Ok(code)
}

pub async fn logs(
    c: &Client,
    id: &str,
    follow: bool,
    tail: Option<&str>,
    timestamps: bool,
) -> Result<i32> {
    let info: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/json", path_id(id)),
            None,
        )
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        path_id(id),
        u8::from(follow),
        u8::from(timestamps),
        enc(tail.unwrap_or("all"))
    );
    let resp = c.send(Method::GET, &path, None, false).await?;
    stream::copy_body(resp, tty).await?;
    Ok(0)
}

pub struct ExecArgs<'a> {
    pub interactive: bool,
    pub tty: bool,
    pub detach: bool,
    pub user: Option<&'a str>,
    pub workdir: Option<&'a str>,
    pub env: &'a [String],
    pub container: &'a str,
    pub command: &'a [String],
}

pub async fn exec(c: &Client, a: ExecArgs<'_>) -> Result<i32> {
    if a.command.is_empty() {
        bail!("give a command: `cubby exec CONTAINER CMD [ARGS...]`");
    }
    let lookup = |k: &str| std::env::var(k).ok();
    let mut env = Vec::new();
    for e in a.env {
        if let Some((k, v)) = run_args::parse_env(e, &lookup)? {
            env.push(format!("{k}={v}"));
        }
    }
    let config = ExecConfig {
        attach_stdin: Some(a.interactive && !a.detach),
        attach_stdout: Some(!a.detach),
        attach_stderr: Some(!a.detach),
        tty: Some(a.tty),
        env: (!env.is_empty()).then_some(env),
        cmd: Some(a.command.to_vec()),
        user: a.user.map(str::to_string),
        working_dir: a.workdir.map(str::to_string),
        ..Default::default()
    };
    let created: Value = c
        .json(
            Method::POST,
            &format!("/containers/{}/exec", path_id(a.container)),
            Some(&serde_json::to_value(&config)?),
        )
        .await?;
    let Some(exec_id) = created["Id"].as_str().map(str::to_string) else {
        bail!("the daemon's exec answer has no Id: {created}");
    };
    let start = json!({"Detach": a.detach, "Tty": a.tty});
    let start_path = format!("/exec/{exec_id}/start");
    if a.detach {
        c.call(Method::POST, &start_path, Some(&start)).await?;
        return Ok(0);
    }
    let conn = c.hijack(&start_path, Some(&start)).await?;
    let session = stream::Session {
        tty: a.tty,
        stdin: a.interactive,
    };
    let resize = a.tty.then(|| format!("/exec/{exec_id}/resize"));
    stream::relay(c, conn, session, resize.as_deref()).await?;
    let info: ExecInspectResponse = c
        .json(Method::GET, &format!("/exec/{exec_id}/json"), None)
        .await?;
    Ok(info.exit_code.unwrap_or(0) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn body(argv: &[&str]) -> Result<ContainerCreateBody> {
        let mut full = vec!["run"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).unwrap();
        let lookup = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        create_body_with(&cli.run, &lookup, 4)
    }

    #[test]
    fn run_flags_become_a_create_body() {
        let b = body(&[
            "-d",
            "--name",
            "web",
            "-e",
            "A=1",
            "-e",
            "FROM_HOST",
            "-e",
            "UNSET",
            "-w",
            "/srv",
            "-u",
            "1000:1000",
            "-l",
            "course=os101",
            "-v",
            "/tmp:/data:ro",
            "--mount",
            "type=tmpfs,target=/scratch",
            "-m",
            "64m",
            "--cpus",
            "1.5",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:3",
            "busybox",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        assert_eq!(b.image.as_deref(), Some("busybox"));
        assert_eq!(
            b.cmd,
            Some(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(b.env, Some(vec!["A=1".into(), "FROM_HOST=h".into()]));
        assert_eq!(b.working_dir.as_deref(), Some("/srv"));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.labels.unwrap()["course"], "os101");
        assert_eq!(b.attach_stdout, Some(false));
        let h = b.host_config.unwrap();
        assert_eq!(h.binds, Some(vec!["/tmp:/data:ro".into()]));
        let m = &h.mounts.unwrap()[0];
        assert_eq!(m.typ, Some(MountTypeEnum::TMPFS));
        assert_eq!(m.target.as_deref(), Some("/scratch"));
        assert_eq!(h.memory, Some(64 * 1024 * 1024));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.pids_limit, Some(50));
        let r = h.restart_policy.unwrap();
        assert_eq!(r.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(r.maximum_retry_count, Some(3));
        assert_eq!(h.auto_remove, Some(false));
    }

    /// The security and limit flags: flags → body → ContainerConfig, the
    /// same as standalone `cubby run` makes from them.
    #[test]
    fn security_flags_reach_the_config() {
        use cubby_engine::api::create_body as docker;
        use cubby_engine::config::Seccomp;
        let dir = tempfile::tempdir().unwrap();
        let prof = dir.path().join("p.json");
        std::fs::write(&prof, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let seccomp = format!("seccomp={}", prof.display());
        let b = body(&[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--privileged",
            "--security-opt",
            "no-new-privileges=false",
            "--security-opt",
            &seccomp,
            "--ulimit",
            "nofile=100:200",
            "--device",
            "/dev/null:/dev/n2:rw",
            "--cpuset-cpus",
            "0",
            "--cpuset-mems",
            "0",
            "--init",
            "busybox",
        ])
        .unwrap();
        let raw = serde_json::to_value(&b).unwrap();
        docker::check_supported(&raw).unwrap();
        let cfg = docker::from_body(
            &b,
            docker::ImageDefaults {
                command: vec!["sh".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(cfg.read_only && cfg.init && cfg.security.privileged);
        assert!(cfg.security.cap_drop_all && !cfg.security.no_new_privileges);
        assert!(matches!(cfg.security.seccomp, Seccomp::Profile(_)));
        assert_eq!((cfg.ulimits[0].soft(), cfg.ulimits[0].hard()), (100, 200));
        assert_eq!(cfg.devices[0].container, std::path::Path::new("/dev/n2"));
        assert_eq!(cfg.devices[0].permissions, "rw");
        assert_eq!(cfg.resources.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(cfg.resources.cpuset_mems.as_deref(), Some("0"));
        let b = body(&[
            "--no-init",
            "--security-opt",
            "seccomp=unconfined",
            "busybox",
        ])
        .unwrap();
        let cfg = docker::from_body(&b, docker::ImageDefaults::default()).unwrap();
        assert!(!cfg.init && cfg.security.seccomp == Seccomp::Unconfined);
    }

    /// Every flag of `cubby run` reaches the create body (the whole body is
    /// compared), or is one the client itself uses (--pull) or refuses
    /// through the daemon (--rootfs, --platform, --userns: tested below).
    /// A flag added to RunArgs fails here until it is covered.
    #[test]
    fn every_run_flag_reaches_the_body() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("env");
        std::fs::write(&env_file, "FROM_FILE=f\n").unwrap();
        let env_file = env_file.display().to_string();
        let argv = [
            "--rm",
            "-d",
            "-i",
            "-t",
            "--name",
            "web",
            "--hostname",
            "box",
            "-l",
            "course=os",
            "--mount",
            "type=volume,source=v1,target=/v",
            "--restart",
            "no",
            "-e",
            "A=1",
            "--env-file",
            &env_file,
            "-w",
            "/srv",
            "-u",
            "app",
            "-v",
            "/tmp:/data:ro",
            "--tmpfs",
            "/run:size=1m",
            "--read-only",
            "-m",
            "64m",
            "--memory-swap",
            "128m",
            "--cpus",
            "1.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--cpuset-mems",
            "0",
            "--pids-limit",
            "50",
            "--network",
            "lab",
            "-p",
            "127.0.0.1:8080:80",
            "--network-alias",
            "www",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--privileged",
            "--device",
            "/dev/null:/dev/n2:rw",
            "--security-opt",
            "no-new-privileges=false",
            "--no-init",
            "--init",
            "--ulimit",
            "nofile=100:200",
            "--pull",
            "never",
            "--entrypoint",
            "/bin/sh",
            "busybox",
            "-c",
            "echo hi",
        ];
        // Every long flag of the command is in argv, or handled elsewhere.
        let elsewhere = ["rootfs", "platform", "userns", "help"];
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(
                elsewhere.contains(&long)
                    || argv.contains(&format!("--{long}").as_str())
                    || arg
                        .get_short()
                        .is_some_and(|c| argv.contains(&format!("-{c}").as_str())),
                "--{long} is not covered by this test"
            );
        }
        // --name goes in the create's query (`?name=`), --pull is the
        // client's own pull policy: neither is part of the body.
        let got = serde_json::to_value(body(&argv).unwrap()).unwrap();
        let mut want = json!({
            "Image": "busybox", "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo hi"],
            "Hostname": "box", "User": "app", "WorkingDir": "/srv",
            "Env": ["FROM_FILE=f", "A=1"], "Labels": {"course": "os"},
            "Tty": true, "OpenStdin": true, "StdinOnce": true,
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "ExposedPorts": {"80/tcp": {}},
            "NetworkingConfig": {"EndpointsConfig": {"lab": {"Aliases": ["www"]}}}
        });
        let host_config = json!({
            "AutoRemove": true, "RestartPolicy": {"Name": "no"},
            "Binds": ["/tmp:/data:ro"],
            "Mounts": [{"Type": "volume", "Source": "v1", "Target": "/v"}],
            "Tmpfs": {"/run": "size=1m"}, "ReadonlyRootfs": true,
            "Memory": 67108864, "MemorySwap": 134217728, "NanoCpus": 1500000000,
            "CpuShares": 512, "CpusetCpus": "0", "CpusetMems": "0", "PidsLimit": 50,
            "NetworkMode": "lab",
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "CapAdd": ["NET_ADMIN"], "CapDrop": ["ALL"], "Privileged": true,
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n2",
                         "CgroupPermissions": "rw"}],
            "SecurityOpt": ["no-new-privileges=false"], "Init": true,
            "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}]
        });
        want["HostConfig"] = host_config;
        assert_eq!(got, want);
    }

    #[test]
    fn standalone_only_flags_are_errors() {
        let e = body(&["--rootfs", "/x", "sh"]).unwrap_err();
        assert!(format!("{e}").contains("--rootfs"), "{e}");
        assert!(body(&[]).is_err());
        let e = body(&["--rm", "--restart", "always", "busybox"]).unwrap_err();
        assert!(format!("{e}").contains("conflict"), "{e}");
    }

    #[test]
    fn label_filters() {
        let labels = json!({"course": "os101", "team": ""});
        assert!(has_label(&labels, "course"));
        assert!(has_label(&labels, "course=os101"));
        assert!(has_label(&labels, "team="));
        assert!(!has_label(&labels, "course=os102"));
        assert!(!has_label(&labels, "room"));
        assert!(!has_label(&Value::Null, "course"));
    }

    #[test]
    fn restart_and_mount_syntax() {
        assert_eq!(
            parse_restart("always").unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
        assert!(parse_restart("always:3").is_err());
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("sometimes").is_err());
        let m = parse_mount("type=bind,src=/a,dst=/b,readonly").unwrap();
        assert_eq!(m.source.as_deref(), Some("/a"));
        assert_eq!(m.read_only, Some(true));
        assert!(parse_mount("type=bind,source=/a").is_err());
        assert!(parse_mount("type=nfs,target=/b").is_err());
        assert!(parse_mount("target=/b,color=red").is_err());
    }
}
