//! The Docker Engine API for real: cubby-monitor and cubby-daemon
//! binaries, a busybox container created through the monitor, driven by
//! the real `docker` CLI (client only) over the daemon's socket. Needs
//! root, cgroups, a static busybox and /usr/local/bin/docker.

mod common;

use common::busybox_rootfs;
use cubby_engine::client::MonitorClient;
use cubby_engine::logs::LogOptions;
use cubby_engine::monitor::CreateRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/local/bin/docker";

/// The monitor, the daemon, their directories and the test's cgroups; Drop
/// kills both processes and whatever is left in the cgroups, and unmounts
/// the snapshots of containers not removed.
struct Harness {
    tmp: tempfile::TempDir,
    monitor_socket: PathBuf,
    socket: PathBuf,
    /// Relative to the cgroup root: "cubby-test/docker-PID-NAME".
    cg: String,
    children: Vec<Child>,
}

fn wait_until(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited {status}: {err}");
        }
        assert!(Instant::now() < deadline, "{what} did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Harness {
    fn start(name: &str) -> Harness {
        assert!(
            Path::new(DOCKER).exists(),
            "these tests need the docker CLI at {DOCKER} (client only)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut h = Harness {
            monitor_socket: tmp.path().join("run/monitor.sock"),
            socket: tmp.path().join("run/docker.sock"),
            cg: format!("cubby-test/docker-{}-{name}", std::process::id()),
            children: Vec::new(),
            tmp,
        };
        let engine = h.tmp.path().join("engine");
        let mut monitor = Command::new(env!("CARGO_BIN_EXE_cubby-monitor"))
            .arg("--root")
            .arg(&engine)
            .arg("--state-dir")
            .arg(engine.join("state"))
            .arg("--socket")
            .arg(&h.monitor_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let sock = h.monitor_socket.clone();
        wait_until("cubby-monitor", &mut monitor, || {
            MonitorClient::connect(&sock).is_ok_and(|mut c| c.ping().is_ok())
        });
        h.children.push(monitor);
        let mut daemon = Command::new(env!("CARGO_BIN_EXE_cubby-daemon"))
            .arg("--socket")
            .arg(&h.socket)
            .arg("--monitor-socket")
            .arg(&h.monitor_socket)
            .arg("--root")
            .arg(h.data_root())
            .arg("--cgroup-parent")
            .arg(&h.cg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let sock = h.socket.clone();
        wait_until("cubby-daemon", &mut daemon, || {
            UnixStream::connect(&sock).is_ok()
        });
        h.children.push(daemon);
        h
    }

    fn create(&self, id: &str, name: &str, args: &[&str]) {
        let rootfs = busybox_rootfs(self.tmp.path());
        let mut spec = cubby_runtime::spec::default_spec(
            &rootfs,
            args.iter().map(|s| s.to_string()).collect(),
        );
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.cg))));
        spec.set_linux(Some(linux));
        MonitorClient::connect(&self.monitor_socket)
            .unwrap()
            .create(CreateRequest {
                id: id.into(),
                name: name.into(),
                spec,
                bundle: self.tmp.path().to_path_buf(),
                image: Some("busybox".into()),
                labels: BTreeMap::new(),
                log: LogOptions::default(),
            })
            .unwrap();
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs docker; asserts it succeeded; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A raw HTTP/1.1 request; returns the status line and the body.
    fn http(&self, method: &str, path: &str) -> (String, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }

    fn data_root(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// Imports a busybox root filesystem as `busybox:latest` into the
    /// daemon's image store.
    fn import_busybox(&self) {
        let dir = self.tmp.path().join("image");
        let rootfs = busybox_rootfs(&dir);
        let tarball = dir.join("busybox.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let store = cubby_image::store::Store::open(self.data_root()).unwrap();
        store.set_sync_layers(false);
        cubby_image::archive::import(&store, &tarball, "docker.io/library/busybox:latest").unwrap();
    }

    /// This test's cgroup directories, one per hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&self.cg)];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            dirs.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join(&self.cg)),
            );
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The daemon first, then the monitor.
        for mut child in self.children.drain(..).rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Kill what is left in the test's cgroups (one per hierarchy on v1).
        let dirs = self.cgroup_dirs();
        let leaves: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        for leaf in &leaves {
            if let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for d in leaves.iter().chain(dirs.iter()) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Snapshots the daemon mounted for containers not removed.
        let snapshots = self.data_root().join("containers");
        for e in std::fs::read_dir(snapshots).into_iter().flatten().flatten() {
            let _ = cubby_image::snapshot::Snapshot::at(e.path()).remove();
        }
    }
}

/// Runs `f` until it returns Some, for at most 15 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn docker_cli_drives_the_daemon() {
    let h = Harness::start("cli");
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    let v = h.ok(&["version"]);
    assert!(v.contains("Server:"), "{v}");
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    assert!(v.contains("1.43"), "{v}");
    let info = h.ok(&["info"]);
    assert!(info.contains("Storage Driver: overlay"), "{info}");
    assert!(h.ok(&["images"]).contains("REPOSITORY"));

    // Raw API: versioned and unversioned paths, ping, unknown routes.
    let (status, body) = h.http("GET", "/_ping");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "OK");
    let (status, _) = h.http("HEAD", "/v1.43/_ping");
    assert!(status.contains("200"), "{status}");
    let (status, body) = h.http("GET", "/v1.24/version");
    assert!(status.contains("200"), "{status}");
    let version: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version["ApiVersion"], "1.43");
    assert_eq!(version["MinAPIVersion"], "1.24");
    let (status, body) = h.http("GET", "/v1.43/nothing/here");
    assert!(status.contains("404"), "{status}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["message"].is_string());
    let (status, body) = h.http("GET", "/containers/abc/logs");
    assert!(status.contains("400"), "{status}: {body}");

    h.create("dk1", "hello", &["sh", "-c", "echo hello-docker; sleep 30"]);
    let ps = h.ok(&["ps"]);
    assert!(ps.contains("hello") && ps.contains("Up"), "{ps}");
    eventually("docker logs shows the output", || {
        let out = h.docker(&["logs", "hello"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout) == "hello-docker\n")
            .then_some(())
    });
    let inspect: Value = serde_json::from_str(&h.ok(&["inspect", "hello"])).unwrap();
    assert_eq!(inspect[0]["Id"], "dk1");
    assert_eq!(inspect[0]["Name"], "/hello");
    assert_eq!(inspect[0]["State"]["Running"], true, "{inspect}");
    assert!(inspect[0]["State"]["Pid"].as_i64().unwrap() > 0);

    // A running container is not removed without force.
    let out = h.docker(&["rm", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container is running"));

    assert_eq!(h.ok(&["kill", "hello"]).trim(), "hello");
    let ps = eventually("docker ps -a shows it exited", || {
        let ps = h.ok(&["ps", "-a"]);
        ps.contains("Exited (137)").then_some(ps)
    });
    assert!(ps.contains("hello"), "{ps}");
    assert!(!h.ok(&["ps"]).contains("hello"));
    let inspect: Value = serde_json::from_str(&h.ok(&["inspect", "hello"])).unwrap();
    assert_eq!(inspect[0]["State"]["Running"], false);
    assert_eq!(inspect[0]["State"]["ExitCode"], 137);
    // Killing an exited container is a conflict.
    let out = h.docker(&["kill", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));

    assert_eq!(h.ok(&["rm", "hello"]).trim(), "hello");
    assert!(!h.ok(&["ps", "-a"]).contains("hello"));

    // Errors in Docker's shape.
    let out = h.docker(&["logs", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error response from daemon: No such container: nope"),
        "{err}"
    );
    let (status, body) = h.http("GET", "/v1.43/containers/nope/json");
    assert!(status.contains("404"), "{status}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "No such container: nope");
    let (status, _) = h.http("POST", "/v1.43/containers/nope/kill?signal=NOPE");
    assert!(status.contains("400"), "{status}");
}

#[test]
fn docker_run_detached_from_a_stored_image() {
    let h = Harness::start("run");
    h.import_busybox();
    let images = h.ok(&["images"]);
    assert!(
        images.contains("busybox") && images.contains("latest"),
        "{images}"
    );

    let id = h.ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo $FOO in $(pwd) as $(id -u); sleep 30",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let snapshot = h.data_root().join("containers").join(id);
    assert!(snapshot.join("rootfs/bin/busybox").exists());
    eventually("docker logs shows the output", || {
        let out = h.docker(&["logs", "r1"]);
        (String::from_utf8_lossy(&out.stdout) == "bar in /tmp as 0\n").then_some(())
    });
    let inspect: Value = serde_json::from_str(&h.ok(&["inspect", "r1"])).unwrap();
    assert_eq!(inspect[0]["State"]["Running"], true);
    assert_eq!(inspect[0]["Config"]["Image"], "busybox");
    // Started at create: start is a no-op.
    assert_eq!(h.ok(&["start", "r1"]).trim(), "r1");

    // The name is taken.
    let out = h.docker(&["run", "-d", "--name", "r1", "busybox", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is already in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No such image (and no pull).
    let out = h.docker(&["create", "--pull", "never", "nope:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image"));

    // sh as pid 1 ignores SIGTERM without a handler.
    h.ok(&["kill", "--signal", "SIGKILL", "r1"]);
    assert_eq!(h.ok(&["wait", "r1"]).trim(), "137");
    // A short-lived one: wait returns its exit code.
    h.ok(&["run", "-d", "--name", "r2", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(h.ok(&["wait", "r2"]).trim(), "3");
    let ps = h.ok(&["ps", "-a"]);
    assert!(
        ps.contains("Exited (3)") && ps.contains("Exited (137)"),
        "{ps}"
    );

    assert_eq!(h.ok(&["rm", "r1", "r2"]).trim(), "r1\nr2");
    assert!(!snapshot.exists());
    assert!(h.ok(&["ps", "-aq"]).trim().is_empty());
}
