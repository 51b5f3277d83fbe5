//! The Engine library API driven in-process (no HTTP, no cubby binary):
//! a monitor (the monitor_serve example, single-threaded as the runtime
//! needs) on a temp root, an image made here from a static busybox, and
//! real containers created, started, waited for, inspected and removed.

mod common;

use cubby_engine::config::{ContainerConfig, NetworkMode};
use cubby_engine::protocol::WaitCondition;
use cubby_engine::records::Status;
use cubby_engine::service::{Engine, EngineError, EngineOptions, NewContainer};
use cubby_image::digest::Digest;
use cubby_image::store::{ImageRecord, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/engine-api-test:1";

fn example(name: &str) -> PathBuf {
    // target/debug/deps/engine_api-HASH -> target/debug/examples/NAME
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: cargo test builds examples; run `cargo build -p cubby-engine --examples`",
        p.display()
    );
    p
}

/// A temp root with a monitor serving it and an image in its store;
/// everything (containers, mounts, cgroups, the monitor) goes on drop.
struct World {
    tmp: tempfile::TempDir,
    monitor: Child,
    socket: PathBuf,
    cgroup_parent: String,
}

impl World {
    fn new(tag: &str) -> World {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create containers: run them as root"
        );
        let tmp = tempfile::Builder::new()
            .prefix("cubby-engine-api-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("root");
        let socket = tmp.path().join("monitor.sock");
        std::fs::create_dir_all(&root).unwrap();
        put_busybox_image(&Store::open(&root).unwrap(), tmp.path());
        let monitor = Command::new(example("monitor_serve"))
            .arg(&root)
            .arg(tmp.path().join("state"))
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start monitor_serve");
        let mut w = World {
            tmp,
            monitor,
            socket,
            cgroup_parent: format!("cubby-test/engine-api-{}-{tag}", std::process::id()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while cubby_engine::client::MonitorClient::connect(&w.socket).is_err() {
            if let Some(st) = w.monitor.try_wait().unwrap() {
                panic!("monitor_serve exited {st} before serving");
            }
            assert!(Instant::now() < deadline, "monitor_serve never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn engine(&self) -> Arc<Engine> {
        Arc::new(
            Engine::open(EngineOptions {
                monitor_socket: self.socket.clone(),
                root: self.root(),
                cgroup_parent: self.cgroup_parent.clone(),
            })
            .expect("open the engine"),
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Containers left by a failed test: their processes, then their
        // snapshots (overlay mounts), then the monitor and the cgroups.
        let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&self.cgroup_parent)];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            dirs.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join(&self.cgroup_parent)),
            );
        }
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for leaf in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let procs = std::fs::read_to_string(leaf.path().join("cgroup.procs"));
                for pid in procs.unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
        if let Ok(entries) = std::fs::read_dir(self.root().join("containers")) {
            for e in entries.flatten() {
                let _ = cubby_image::snapshot::Snapshot::at(e.path()).remove();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for leaf in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(leaf.path());
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Stores [`IMAGE`]: one uncompressed layer (a busybox rootfs) and a
/// config whose command is `sh`.
/// `tar -C dir -cf tar what`, failing the test if tar does.
fn tar_into(dir: &Path, what: &str, tar: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(tar)
        .arg(what)
        .status()
        .expect("run tar");
    assert!(st.success(), "tar of {} failed", dir.display());
}

fn put_busybox_image(store: &Store, dir: &Path) {
    let rootfs = common::busybox_rootfs(dir);
    let tar = dir.join("layer.tar");
    tar_into(&rootfs, ".", &tar);
    let bytes = std::fs::read(&tar).unwrap();
    let diff_id = Digest::of(&bytes);
    let chain = Store::chain_ids(std::slice::from_ref(&diff_id))[0].clone();
    store
        .unpack_layer(
            &chain,
            &diff_id,
            &bytes[..],
            "application/vnd.oci.image.layer.v1.tar",
        )
        .unwrap();
    let blob = store.put_blob(&bytes).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    });
    let config_digest = store.put_blob(config.to_string().as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(), "size": config.to_string().len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": blob.to_string(), "size": bytes.len() }],
    });
    let manifest_digest = store.put_blob(manifest.to_string().as_bytes()).unwrap();
    store
        .put_image(ImageRecord {
            name: IMAGE.into(),
            manifest_digest,
            config_digest,
            layers: vec![chain],
            blobs: vec![blob],
            size: bytes.len() as u64,
            created: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
}

/// A container of the test image running `cmd`, typed (no Docker body).
fn body(cmd: &[&str]) -> NewContainer {
    NewContainer {
        image: IMAGE.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        config: ContainerConfig {
            network: NetworkMode::None,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn named(mut new: NewContainer, name: &str) -> NewContainer {
    new.name = Some(name.into());
    new
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_start_wait_inspect_remove() {
    let w = World::new("life");
    let e = w.engine();
    let script = "echo hello-from-engine; hostname; exit 7";
    let id = e
        .create(named(body(&["sh", "-c", script]), "engine-life"))
        .await
        .unwrap();
    let r = e.find("engine-life").await.unwrap();
    assert_eq!((r.id.as_str(), r.status), (id.as_str(), Status::Created));
    assert_eq!(e.find(&id[..12]).await.unwrap().name, "engine-life");
    // The snapshot of the image is the container's root.
    assert!(w
        .root()
        .join("containers")
        .join(&id)
        .join("layers")
        .exists());

    e.start(&id).await.unwrap();
    assert_eq!(e.wait(&id, WaitCondition::NotRunning).await.unwrap(), 7);
    let r = e.find(&id).await.unwrap();
    assert_eq!((r.status, r.exit_code), (Status::Exited, Some(7)));
    // What the container printed (its hostname is its short id) is in its log.
    let log = log_text(&r.log_path);
    assert!(log.contains("hello-from-engine"), "log: {log}");
    assert!(log.contains(&id[..12]), "hostname missing from log: {log}");

    // Stopping what is not running does nothing.
    assert!(matches!(
        e.stop(&id, None, None).await,
        Err(EngineError::NotModified(_))
    ));
    e.remove(&id, false, true).await.unwrap();
    assert!(matches!(
        e.find(&id).await,
        Err(EngineError::NotFound(m)) if m == format!("No such container: {id}")
    ));
    assert!(!w.root().join("containers").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_for_what_the_caller_got_wrong() {
    let w = World::new("errors");
    let e = w.engine();
    let mut b = body(&["true"]);
    b.image = "localhost/no-such-image:1".into();
    match e.create(b).await {
        Err(EngineError::NotFound(m)) => assert!(m.contains("No such image"), "{m}"),
        other => panic!("create of a missing image: {other:?}"),
    }
    assert!(matches!(
        e.create(named(body(&["true"]), "-bad")).await,
        Err(EngineError::InvalidArgument(_))
    ));
    let mut b = body(&["true"]);
    b.config.workdir = Some("relative/dir".into());
    assert!(matches!(
        e.create(b).await,
        Err(EngineError::InvalidArgument(m)) if m.contains("not absolute")
    ));

    // A running container: remove needs force, kill works, a second name
    // is refused while the first holds it.
    let id = e
        .create(named(body(&["sleep", "300"]), "engine-busy"))
        .await
        .unwrap();
    e.start(&id).await.unwrap();
    assert!(matches!(
        e.start(&id).await,
        Err(EngineError::NotModified(_))
    ));
    assert!(matches!(
        e.remove(&id, false, false).await,
        Err(EngineError::Conflict(_))
    ));
    match e.create(named(body(&["true"]), "engine-busy")).await {
        Err(EngineError::Conflict(m)) => assert!(m.contains("already in use"), "{m}"),
        other => panic!("second create of one name: {other:?}"),
    }
    // Stats of a running container: its cgroup, read through the engine.
    let (rec, sample) = e.stats("engine-busy").await.unwrap();
    assert_eq!(rec.id, id);
    let sample = sample.expect("a running container has a stats sample");
    assert!(sample.stats.pids >= 1, "{:?}", sample.stats);
    assert!(sample.system_ns > 0 && sample.online_cpus >= 1);
    assert!(e.stats_again(&id).await.unwrap().is_some());
    // Its processes, as ps -ef lists them.
    let top = e.top("engine-busy", "").await.unwrap();
    assert_eq!(top.titles.get(1).map(String::as_str), Some("PID"));
    assert!(
        top.processes
            .iter()
            .any(|row| row.last().is_some_and(|cmd| cmd.contains("sleep 300"))),
        "{top:?}"
    );
    assert!(matches!(
        e.stats("engine-no-such").await,
        Err(EngineError::NotFound(_))
    ));
    let exec = |cmd: &[&str]| bollard_stubs::models::ExecConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    assert!(matches!(
        e.exec_create(&id, exec(&[])).await,
        Err(EngineError::InvalidArgument(_))
    ));
    let exec_id = e.exec_create(&id, exec(&["true"])).await.unwrap();
    assert_eq!(e.exec_entry(&exec_id).unwrap().container, id);
    assert!(matches!(
        e.exec_entry("nope"),
        Err(EngineError::NotFound(_))
    ));
    e.kill(&id, nix::sys::signal::Signal::SIGKILL)
        .await
        .unwrap();
    assert_eq!(e.wait(&id, WaitCondition::NotRunning).await.unwrap(), 137);
    assert!(
        e.stats(&id).await.unwrap().1.is_none(),
        "stats of a stopped container"
    );
    assert!(matches!(
        e.top(&id, "").await,
        Err(EngineError::Conflict(m)) if m.contains("is not running")
    ));
    assert!(matches!(
        e.kill(&id, nix::sys::signal::Signal::SIGKILL).await,
        Err(EngineError::Conflict(_))
    ));
    assert!(matches!(
        e.exec_create(&id, exec(&["true"])).await,
        Err(EngineError::Conflict(m)) if m.contains("is not running")
    ));
    e.remove(&id, false, false).await.unwrap();
    // Nothing is left of the refused creates either.
    let left: Vec<_> = std::fs::read_dir(w.root().join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Two engines (two daemons, or a daemon and `cubby build`) on one
/// monitor race creates of one name: one wins, the other gets Conflict,
/// and the loser leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_racing_one_name_one_wins() {
    let w = World::new("race");
    let (a, b) = (w.engine(), w.engine());
    for round in 0..4 {
        let name = format!("engine-race-{round}");
        let (ra, rb) = tokio::join!(
            a.create(named(body(&["true"]), &name)),
            b.create(named(body(&["true"]), &name)),
        );
        let (won, lost) = match (ra, rb) {
            (Ok(id), Err(e)) | (Err(e), Ok(id)) => (id, e),
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        assert!(
            matches!(&lost, EngineError::Conflict(m) if m.contains("already in use")),
            "round {round}: {lost:?}"
        );
        assert_eq!(a.find(&name).await.unwrap().id, won);
        let dirs: Vec<_> = std::fs::read_dir(w.root().join("containers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(dirs, std::slice::from_ref(&won), "round {round}: snapshots");
        b.remove(&won, false, false).await.unwrap();
    }
}

/// A create in flight is reserved in the monitor, so every client sees it:
/// its name is taken, its volumes are in use, and it is live for a
/// reconcile (which keeps the network endpoints of [`Engine::live_ids`]);
/// when its client goes away mid-create, all of that is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_in_flight_is_seen_by_every_client() {
    let w = World::new("inflight");
    let e = w.engine();
    let volumes = cubby_engine::volumes::VolumeStore::open(&w.root()).unwrap();
    volumes
        .create(&cubby_engine::volumes::CreateOptions {
            name: Some("engine-held".into()),
            ..Default::default()
        })
        .unwrap();
    let id = "f".repeat(64);
    // Another client, stopped between the two phases of its create.
    let mut other = cubby_engine::client::MonitorClient::connect(&w.socket).unwrap();
    other.reserve(&id, "engine-inflight").unwrap();
    other.claim(&id, &["engine-held".to_string()]).unwrap();

    assert!(e.live_ids().await.unwrap().contains(&id));
    match e.create(named(body(&["true"]), "engine-inflight")).await {
        Err(EngineError::Conflict(m)) => assert!(m.contains(&id), "{m}"),
        r => panic!("create of a reserved name: {r:?}"),
    }
    let in_use = e.volume_users().await.unwrap();
    match volumes.remove("engine-held", &in_use, false) {
        Err(cubby_engine::volumes::VolumeError::InUse { users, .. }) => {
            assert_eq!(users, std::slice::from_ref(&id))
        }
        r => panic!("remove of a claimed volume: {r:?}"),
    }

    // The client dies mid-create: the monitor frees what it held.
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.live_ids().await.unwrap().contains(&id) {
        assert!(Instant::now() < deadline, "reservation outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_use = e.volume_users().await.unwrap();
    assert!(volumes.remove("engine-held", &in_use, false).unwrap());
    let won = e
        .create(named(body(&["true"]), "engine-inflight"))
        .await
        .unwrap();
    e.remove(&won, false, false).await.unwrap();
}

/// Images as engine calls (what `api/images.rs` and `api/image_archive.rs`
/// only shape into Docker's documents): typed errors, an import of a
/// rootfs tar named and dangling, its config, and a save's name lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_calls_return_typed_errors() {
    let w = World::new("images");
    let e = w.engine();
    let (img, _) = e.image_resolve(IMAGE).unwrap();
    let config = e.image_config(&img.id).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    let chain = &img.records[0].layers[0];
    assert!(e.layer_size(chain) > 0);
    let missing = Digest::of(b"no such blob");
    assert!(
        matches!(e.image_config(&missing), Err(EngineError::NotFound(_))),
        "{:?}",
        e.image_config(&missing)
    );
    match e.image_save_items(&[IMAGE.to_string(), "localhost/nope:1".to_string()]) {
        Err(EngineError::NotFound(m)) => assert_eq!(m, "No such image: localhost/nope:1"),
        other => panic!("save of a missing image: {other:?}"),
    }
    let items = e.image_save_items(&[IMAGE.to_string()]).unwrap();
    assert_eq!(
        items[0].name.as_ref().map(|r| r.to_string()).as_deref(),
        Some(IMAGE)
    );

    // Import: a plain tar, named with a change, then the same unnamed.
    let dir = w.tmp.path().join("imp");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hello"), "hi\n").unwrap();
    let tar = w.tmp.path().join("imp.tar");
    tar_into(&dir, ".", &tar);
    let open = || std::fs::File::open(&tar).unwrap();
    let rec = e
        .image_import(open(), Some("localhost/imported:1"), &["ENV A=1".into()])
        .unwrap();
    let config = e.image_config(&rec.config_digest).unwrap();
    assert!(
        config["config"]["Env"].to_string().contains("A=1"),
        "{config}"
    );
    let dangling = e.image_import(open(), None, &[]).unwrap();
    assert!(e
        .image_groups()
        .unwrap()
        .iter()
        .any(|g| g.id == dangling.config_digest && g.tags().is_empty()));
    let bad = e.image_import(open(), Some("localhost/x:1"), &["NOPE x".into()]);
    assert!(
        matches!(bad, Err(EngineError::InvalidArgument(_))),
        "{bad:?}"
    );
    let bad = e.image_load(std::io::Cursor::new(b"not a tar".to_vec()));
    assert!(
        matches!(bad, Err(EngineError::InvalidArgument(_))),
        "{bad:?}"
    );
    // Nothing of the import's temp files is left in the store.
    let tmp = Store::open(w.root()).unwrap().tmp_dir().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

/// `docker cp` as engine calls: into a created container, its stat, and
/// out again (a stopped view with a bind mount: the bind's files too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_stat_and_out() {
    let w = World::new("copy");
    let e = w.engine();
    let src = w.tmp.path().join("cp-src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), "copied in\n").unwrap();
    let tar = w.tmp.path().join("in.tar");
    tar_into(&src, "d", &tar);
    let bind = w.tmp.path().join("bind");
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::write(bind.join("b"), "in the bind\n").unwrap();
    let mut b = body(&["true"]);
    b.config.storage.push(
        cubby_engine::api::create_body::storage::parse_bind(&format!(
            "{}:/mnt/bind",
            bind.display()
        ))
        .unwrap(),
    );
    let id = e.create(named(b, "engine-cp")).await.unwrap();

    let target = e.copy_in(&id, "/tmp").await.unwrap();
    let input = std::fs::File::open(&tar).unwrap();
    tokio::task::spawn_blocking(move || target.extract(input, Default::default(), false))
        .await
        .unwrap()
        .unwrap();
    let stat = e.copy_stat(&id, "/tmp/d/f").await.unwrap();
    assert_eq!(stat.size, 10);
    match e.copy_stat(&id, "/tmp/none").await {
        Err(EngineError::NotFound(m)) => assert!(m.contains("Could not find the file"), "{m}"),
        other => panic!("stat of a missing path: {other:?}"),
    }
    assert!(matches!(
        e.copy_in("engine-no-such", "/tmp").await,
        Err(EngineError::NotFound(_))
    ));
    // Out: the copied file, and the bind's (a created container's view).
    for (path, member, want) in [
        ("/tmp/d/f", "f", "copied in\n"),
        ("/mnt/bind/b", "b", "in the bind\n"),
    ] {
        let out = e.copy_out(&id, path).await.unwrap();
        let file = w.tmp.path().join("out.tar");
        let sink = std::fs::File::create(&file).unwrap();
        tokio::task::spawn_blocking(move || out.write_to(Box::new(sink)))
            .await
            .unwrap()
            .unwrap();
        let got = Command::new("tar")
            .arg("-xOf")
            .arg(&file)
            .arg(member)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout), want, "{path}");
    }
    assert!(matches!(
        e.copy_out(&id, "/mnt/bind/none").await,
        Err(EngineError::NotFound(_))
    ));
    e.remove(&id, false, false).await.unwrap();
}
