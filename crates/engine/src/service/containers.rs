//! Containers: create (an image already in the store, an overlay snapshot
//! of it at `<root>/containers/<id>`, the spec from [`crate::config`], the
//! body's mounts and network), and the lifecycle calls the monitor does.

use super::error::{EngineError, EngineResult};
use super::{blocking, Engine};
use crate::client::MonitorClient;
use crate::config::ContainerConfig;
use crate::monitor::CreateRequest;
use crate::protocol::{Request, Response, WaitCondition};
use crate::records::ContainerRecord;
use cubby_image::snapshot::Snapshot;
use cubby_image::store::ImageRecord;
use nix::sys::signal::Signal;
use serde_json::json;
use std::path::PathBuf;

/// Docker's create body (Config plus HostConfig): what inspect shows of a
/// container made through the API ([`NewContainer::shown`]).
pub type CreateBody = bollard_stubs::models::ContainerCreateBody;

/// What [`Engine::create`] makes: typed, free of HTTP. The API makes one
/// from Docker's create body (`api/create_body`); in-process callers fill
/// it directly.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    /// The image (name, `name:tag`, id or id prefix) in the store.
    pub image: String,
    /// None or empty: `cubby-<short id>`.
    pub name: Option<String>,
    /// The entrypoint asked for (None: the image's) and the arguments
    /// (empty: the image's Cmd, when the entrypoint is the image's),
    /// combined with the image's by Docker's rules.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// Everything else. The engine fills `command` and `image_env` from
    /// the image, and `workdir` and `user` where they are None; it sets
    /// `cgroup_path` and, when None, `hostname`.
    pub config: ContainerConfig,
    /// Keep stdin open for `attach` (Docker's OpenStdin), and close it
    /// after the first attach ends (StdinOnce).
    pub open_stdin: bool,
    pub stdin_once: bool,
    /// What inspect shows as `Config` and `HostConfig` (Docker's shape, as
    /// the client sent it; completed from the image). The engine reads no
    /// option from it. None: made from the fields above.
    pub shown: Option<CreateBody>,
}

impl NewContainer {
    /// The Docker-shaped view inspect shows when the caller gave none.
    fn shown_from_config(&self) -> CreateBody {
        let c = &self.config;
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        CreateBody {
            image: Some(self.image.clone()),
            entrypoint: self.entrypoint.clone(),
            cmd: some(&self.cmd),
            env: some(&c.env),
            working_dir: c.workdir.as_ref().map(|w| w.display().to_string()),
            user: c.user.clone(),
            hostname: c.hostname.clone(),
            tty: Some(c.tty),
            open_stdin: Some(self.open_stdin),
            stdin_once: Some(self.stdin_once),
            labels: (!c.labels.is_empty()).then(|| {
                c.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            host_config: Some(bollard_stubs::models::HostConfig {
                init: Some(c.init),
                readonly_rootfs: Some(c.read_only),
                privileged: Some(c.security.privileged),
                auto_remove: Some(c.auto_remove),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Docker's container name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_name(name: &str) -> EngineResult<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(EngineError::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// What inspect shows as `Config`: the body completed with the image's
/// config, as Docker records it (environment: the body's, then the
/// image's variables the body does not set; exposed ports: both).
fn merge_image_config(
    body: &mut CreateBody,
    image: &oci_spec::image::ImageConfiguration,
    exposed_ports: &[String],
) {
    let Some(ic) = image.config() else {
        return;
    };
    let mut env = body.env.clone().unwrap_or_default();
    let key = |e: &str| e.split('=').next().unwrap_or("").to_string();
    let set: std::collections::HashSet<String> = env.iter().map(|e| key(e)).collect();
    for e in ic.env().iter().flatten() {
        if !set.contains(&key(e)) {
            env.push(e.clone());
        }
    }
    if !env.is_empty() {
        body.env = Some(env);
    }
    if !exposed_ports.is_empty() {
        let ports = body.exposed_ports.get_or_insert_with(Default::default);
        for p in exposed_ports {
            ports.entry(p.clone()).or_default();
        }
    }
    if body.working_dir.as_deref().unwrap_or("").is_empty() {
        body.working_dir = ic.working_dir().clone();
    }
    if body.user.as_deref().unwrap_or("").is_empty() {
        body.user = ic.user().clone();
    }
    let no_entrypoint = body.entrypoint.as_ref().is_none_or(|e| e.is_empty());
    if no_entrypoint {
        body.entrypoint = ic.entrypoint().clone();
        if body.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            body.cmd = ic.cmd().clone();
        }
    }
}

impl Engine {
    /// Makes a container (state Created) from `body`; returns its id.
    /// Every option in the body is checked before anything exists; a
    /// failure leaves nothing behind.
    pub async fn create(self: &super::Shared, new: NewContainer) -> EngineResult<String> {
        if new.image.is_empty() {
            return Err(EngineError::invalid(
                "config cannot be empty: Image is required",
            ));
        }
        let id = super::new_id()?;
        let name = match new
            .name
            .as_deref()
            .map(|n| n.strip_prefix('/').unwrap_or(n))
        {
            None | Some("") => format!("cubby-{}", &id[..12]),
            Some(n) => {
                check_name(n)?;
                n.to_string()
            }
        };
        let (d2, id2, name2) = (self.clone(), id.clone(), name.clone());
        // Two phases on one monitor connection: the name (then the
        // volumes) are reserved before anything is made, so no other
        // client takes them and no reconcile sees a stray; the monitor
        // frees them if this connection dies.
        let made = blocking(move || {
            let mut c = MonitorClient::connect(&d2.monitor_socket)?;
            c.reserve(&id2, &name2)?;
            let req = d2.prepare(&mut c, &id2, &name2, new)?;
            let snapshot = Snapshot::at(req.bundle.clone());
            Ok(c.create(req).map(drop).map_err(|e| {
                let _ = snapshot.remove();
                EngineError::from(e)
            }))
        })
        .await;
        let failed = match made {
            Ok(Ok(())) => return Ok(id),
            // Prepared (network included), refused by the monitor.
            Ok(Err(e)) => {
                super::networks::release(self, &id).await;
                e
            }
            Err(e) => e,
        };
        match failed {
            EngineError::Conflict(m) if m.contains("is already in use") => {
                Err(EngineError::Conflict(format!(
                    "Conflict. {}. You have to remove (or rename) that container to be able to reuse that name.",
                    m.replacen("the container", "The container", 1)
                )))
            }
            e => Err(e),
        }
    }

    fn find_image(&self, name: &str) -> EngineResult<ImageRecord> {
        crate::snapshots::find_image(&self.images, name)?.ok_or_else(|| {
            // Docker names the image as it looked for it (`x:latest`).
            let shown = cubby_image::reference::Reference::parse(name)
                .map(|r| r.familiar())
                .unwrap_or_else(|_| name.to_string());
            EngineError::not_found(format!("No such image: {shown}"))
        })
    }

    /// Mounts the snapshot and builds the monitor's request (blocking);
    /// volumes are claimed on `monitor`, which holds the reservation.
    fn prepare(
        &self,
        monitor: &mut MonitorClient,
        id: &str,
        name: &str,
        new: NewContainer,
    ) -> EngineResult<CreateRequest> {
        let image_name = new.image.clone();
        let image = self.find_image(&image_name)?;
        let config: oci_spec::image::ImageConfiguration = self
            .images
            .read_blob(&image.config_digest)
            .map_err(EngineError::from)
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    EngineError::internal(format!("image config of {}: {e}", image.name))
                })
            })?;
        let defaults = cubby_image::config::run_defaults(
            &image_name,
            &config,
            new.entrypoint.as_deref().filter(|e| !e.is_empty()),
            &new.cmd,
        )
        .map_err(|e| EngineError::invalid(e.to_string()))?;
        let command = defaults.command.clone();
        let exposed_ports = defaults.exposed_ports.clone();
        let mut body = new.shown.clone().unwrap_or_else(|| new.shown_from_config());
        let mut cfg = new.config;
        cfg.complete_from_image(crate::config::ImageDefaults {
            command: defaults.command,
            env: defaults.env,
            workdir: defaults.workdir,
            user: defaults.user,
        })?;
        if let Some(wd) = cfg.workdir.as_ref() {
            crate::config::check_workdir(&wd.to_string_lossy())?;
        }
        if cfg.hostname.is_none() && cfg.network == crate::config::NetworkMode::Host {
            // Docker: a container on the host's network has its hostname.
            cfg.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty());
        }
        cfg.hostname.get_or_insert_with(|| id[..12].to_string());
        cfg.cgroup_path = Some(PathBuf::from(format!(
            "/{}/{id}",
            self.cgroup_parent.trim_matches('/')
        )));
        let dir = self.root.join("containers").join(id);
        let snapshot = Snapshot::at(&dir);
        let rootfs = crate::snapshots::mount_for_image(&self.images, &image, &exposed_ports, &dir)
            .map_err(|e| EngineError::internal(format!("snapshot of {}: {e}", image.name)))?;
        let undo = |e: EngineError| {
            let _ = snapshot.remove();
            e
        };
        // Docker creates a missing working directory (resolved inside the
        // rootfs: a symlink in the image cannot lead it out).
        if let Some(wd) = cfg.workdir.as_ref().and_then(|w| w.to_str()) {
            crate::container_fs::ContainerRoot::at(&rootfs)
                .and_then(|root| root.make_mountpoint(wd, true))
                .map_err(|e| undo(EngineError::from_fs(e, wd, "the working directory")))?;
        }
        let mut spec = crate::config::build(&cfg, &rootfs).map_err(|e| undo(e.into()))?;
        let mounts = super::mounts::apply(self, monitor, id, &mut spec, &rootfs, &cfg, &config)
            .map_err(undo)?;
        super::networks::setup(self, id, name, &cfg, &mut spec).map_err(undo)?;
        merge_image_config(&mut body, &config, &exposed_ports);
        let host_config = body.host_config.take().unwrap_or_default();
        let (open_stdin, stdin_once) = (new.open_stdin, new.stdin_once);
        let config = json!({
            "Config": body,
            "HostConfig": host_config,
            "Mounts": mounts,
            "Path": command.first().cloned().unwrap_or_default(),
            "Args": command.get(1..).unwrap_or(&[]),
            "ImageID": image.config_digest.to_string(),
        });
        Ok(CreateRequest {
            init: cfg.init,
            image: Some(image_name),
            labels: cfg.labels,
            log: cfg.log,
            restart: cfg.restart,
            auto_remove: cfg.auto_remove,
            config,
            open_stdin,
            stdin_once,
            ..CreateRequest::new(id, name, spec, dir)
        })
    }

    /// Mounts the container's overlay again if it is not (a daemon or host
    /// restart since it was created): `start` needs its rootfs.
    pub(crate) async fn ensure_rootfs(self: &super::Shared, id: &str) -> EngineResult<()> {
        let dir = self.root.join("containers").join(id);
        let snapshot = Snapshot::at(&dir);
        let d = self.clone();
        let id = id.to_string();
        blocking(move || {
            let Ok(list) = std::fs::read_to_string(dir.join("layers")) else {
                return Ok(()); // not made from an image
            };
            if snapshot.is_mounted() {
                return Ok(());
            }
            let layers = list
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.parse::<cubby_image::digest::Digest>()
                        .map(|dg| d.images.layer_dir(&dg))
                        .map_err(|e| EngineError::internal(format!("layer list of {id}: {e}")))
                })
                .collect::<EngineResult<Vec<_>>>()?;
            snapshot
                .mount(&layers)
                .map_err(|e| EngineError::internal(format!("mount the rootfs of {id}: {e}")))?;
            Ok(())
        })
        .await
    }

    /// The record of the container a client named (id, id prefix or name);
    /// the monitor resolves it (one record on the wire, not the whole list).
    pub async fn find(&self, what: &str) -> EngineResult<ContainerRecord> {
        match self.call(Request::Find { what: what.into() }).await {
            Ok(Response::Record(r)) => Ok(*r),
            Ok(_) => Err(EngineError::internal(
                "container monitor: unexpected answer to find",
            )),
            Err(EngineError::NotFound(_)) => Err(EngineError::no_such_container(what)),
            Err(EngineError::InvalidArgument(_)) => Err(EngineError::invalid(format!(
                "multiple IDs found with provided prefix: {what}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Every container the monitor knows.
    pub async fn list(&self) -> EngineResult<Vec<ContainerRecord>> {
        self.monitor(|c| c.list()).await
    }

    /// The creates in flight, from every client of the monitor.
    pub async fn reservations(&self) -> EngineResult<Vec<crate::protocol::Reservation>> {
        self.monitor(|c| c.reservations()).await
    }

    /// Containers made and being made, and what they mount.
    pub async fn volume_users(&self) -> EngineResult<crate::volumes::InUse> {
        self.monitor(|c| {
            // Reservations first: a create that completes in between is
            // then in the records.
            let reserved = c.reservations()?;
            Ok(crate::volumes::InUse {
                records: c.list()?,
                reserved,
            })
        })
        .await
    }

    /// The ids of containers made and being made: what a reconcile of
    /// per-container state (network endpoints) must keep.
    pub async fn live_ids(&self) -> EngineResult<std::collections::HashSet<String>> {
        self.monitor(live_ids).await
    }

    /// Starts a created or stopped container (NotModified if running).
    pub async fn start(self: &super::Shared, what: &str) -> EngineResult<()> {
        let r = self.find(what).await?;
        self.ensure_rootfs(&r.id).await?;
        self.call(Request::Start { id: r.id }).await.map(drop)
    }

    /// Stops with `signal` (else the container's StopSignal, else SIGTERM),
    /// then SIGKILL after `timeout` seconds (else its StopTimeout; -1 waits
    /// for ever). NotModified if it is not running.
    pub async fn stop(
        &self,
        what: &str,
        timeout: Option<i64>,
        signal: Option<Signal>,
    ) -> EngineResult<()> {
        let r = self.find(what).await?;
        let signal = signal
            .or_else(|| {
                r.config["Config"]["StopSignal"]
                    .as_str()
                    .and_then(|s| cubby_runtime::signals::parse(s).ok())
            })
            .map(|s| s as i32);
        let timeout = timeout.or_else(|| r.config["Config"]["StopTimeout"].as_i64());
        self.call(Request::Stop {
            id: r.id,
            timeout,
            signal,
        })
        .await
        .map(drop)
    }

    pub async fn restart(
        self: &super::Shared,
        what: &str,
        timeout: Option<i64>,
    ) -> EngineResult<()> {
        let r = self.find(what).await?;
        self.ensure_rootfs(&r.id).await?;
        self.call(Request::Restart { id: r.id, timeout })
            .await
            .map(drop)
    }

    /// Sends `signal`; Conflict if the container is not running.
    pub async fn kill(&self, what: &str, signal: Signal) -> EngineResult<()> {
        let r = self.find(what).await?;
        if !r.status.is_live() {
            // Docker's wording (clients match on it).
            return Err(EngineError::conflict(format!(
                "Cannot kill container: {what}: Container {} is not running",
                r.id
            )));
        }
        self.monitor(move |c| c.kill(&r.id, signal as i32)).await
    }

    pub async fn pause(&self, what: &str) -> EngineResult<()> {
        let r = self.find(what).await?;
        self.call(Request::Pause { id: r.id }).await.map(drop)
    }

    pub async fn unpause(&self, what: &str) -> EngineResult<()> {
        let r = self.find(what).await?;
        self.call(Request::Unpause { id: r.id }).await.map(drop)
    }

    /// Resizes the container's tty (a container made with one).
    pub async fn resize(&self, what: &str, height: u16, width: u16) -> EngineResult<()> {
        let r = self.find(what).await?;
        self.call(Request::Resize {
            id: r.id,
            exec_id: None,
            height,
            width,
        })
        .await
        .map(drop)
    }

    pub async fn rename(&self, what: &str, name: &str) -> EngineResult<()> {
        let name = name.trim_start_matches('/');
        check_name(name)?;
        let r = self.find(what).await?;
        self.call(Request::Rename {
            id: r.id,
            name: name.into(),
        })
        .await
        .map(drop)
    }

    /// Attaches to a container's output (and, with `stdin` and a container
    /// made with OpenStdin, its input): the monitor stream of frames, and
    /// the container's record (for its tty setting).
    pub async fn attach(
        &self,
        what: &str,
        stdin: bool,
    ) -> EngineResult<(super::conn::MonitorStream, ContainerRecord)> {
        let r = self.find(what).await?;
        let stream = super::conn::open_stream(
            &self.monitor_socket,
            &Request::Attach {
                id: r.id.clone(),
                stdin: stdin && r.open_stdin,
            },
        )
        .await?;
        self.publish(
            crate::monitor::events::Event::new("container", "attach", &r.id)
                .attr("name", r.name.clone()),
        )
        .await;
        Ok((stream, r))
    }

    /// The event log from `since` (nanoseconds; None: now) until `until`
    /// (None: for ever), as a stream of JSON lines from the monitor.
    pub async fn events(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> EngineResult<super::conn::MonitorStream> {
        super::conn::open_stream(
            &self.monitor_socket,
            &Request::Events {
                since: since.or_else(|| Some(crate::monitor::events::now_nanos())),
                until,
            },
        )
        .await
    }

    /// Waits for `condition`; returns the exit code.
    pub async fn wait(&self, id: &str, condition: WaitCondition) -> EngineResult<i64> {
        match self
            .call(Request::Wait {
                id: id.into(),
                condition,
            })
            .await?
        {
            Response::Exit { code } => Ok(code.into()),
            _ => Err(EngineError::internal(
                "container monitor: unexpected answer to wait",
            )),
        }
    }

    /// Removes a container, its network endpoint and snapshot, and with
    /// `volumes` its anonymous volumes no other container uses. Conflict if
    /// it runs and `force` is not set (with `force` it is killed first).
    pub async fn remove(
        self: &super::Shared,
        what: &str,
        force: bool,
        volumes: bool,
    ) -> EngineResult<()> {
        let r = self.find(what).await?;
        if r.status.is_live() && !force {
            return Err(EngineError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                r.id
            )));
        }
        let id = r.id.clone();
        self.monitor(move |c| c.remove(&id, force)).await?;
        super::networks::release(self, &r.id).await;
        // The overlay snapshot of a container made by `create`.
        let snapshot = Snapshot::at(self.root.join("containers").join(&r.id));
        blocking(move || {
            if snapshot.dir.exists() {
                snapshot
                    .remove()
                    .map_err(|e| EngineError::internal(format!("remove the snapshot: {e}")))?;
            }
            Ok::<_, EngineError>(())
        })
        .await?;
        if volumes {
            self.remove_anonymous_volumes(&r).await;
        }
        Ok(())
    }

    /// After container `removed` is gone: removes its anonymous volumes
    /// that no other container uses (named volumes are kept, as Docker).
    /// Failures are only logged, as Docker does.
    pub async fn remove_anonymous_volumes(&self, removed: &ContainerRecord) {
        let names = crate::volumes::mounted_by(removed);
        if names.is_empty() {
            return;
        }
        let in_use = match self.volume_users().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cubby daemon: volumes of {}: {e}", removed.id);
                return;
            }
        };
        let Ok(store) = self.volume_store() else {
            return;
        };
        let id = removed.id.clone();
        let _ = blocking(move || {
            for name in names {
                match store.get(&name) {
                    Ok(v) if v.anonymous() => {
                        if let Err(e) = store.remove(&name, &in_use, true) {
                            eprintln!("cubby daemon: remove volume {name} of {id}: {e}");
                        }
                    }
                    _ => {}
                }
            }
            Ok::<_, EngineError>(())
        })
        .await;
    }
}

/// The ids of containers made and being made, from one monitor connection.
pub(crate) fn live_ids(
    c: &mut crate::client::MonitorClient,
) -> crate::client::Result<std::collections::HashSet<String>> {
    // Reservations first: a create that completes in between is then in
    // the records.
    let reserved = c.reservations()?;
    Ok(c.list()?
        .into_iter()
        .map(|r| r.id)
        .chain(reserved.into_iter().map(|r| r.id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bodies() {
        assert!(valid_name("web-1") && valid_name("a.b_c"));
        assert!(!valid_name("-x") && !valid_name("a") && !valid_name("a/b") && !valid_name(""));
        assert!(matches!(
            check_name("a/b"),
            Err(EngineError::InvalidArgument(_))
        ));
        let b: CreateBody =
            serde_json::from_str(r#"{"Image":"busybox","Cmd":["sh"],"Env":null,"Junk":1}"#)
                .unwrap();
        assert_eq!(b.image.as_deref(), Some("busybox"));
        assert_eq!(b.cmd, Some(vec!["sh".to_string()]));
    }
}
