//! runc's command-line contract, driven the way podman/containerd drive it:
//! spec, create, state, start, exec, kill, delete, list, features.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A busybox bundle whose config.json comes from `cubby-oci spec`.
    fn new(args: &[&str]) -> Bundle {
        assert!(nix::unistd::geteuid().is_root(), "run these tests as root");
        let dir = tempfile::Builder::new()
            .prefix("cubby-oci-")
            .tempdir()
            .unwrap();
        let b = Bundle { dir };
        common::busybox_rootfs(&b.path().join("rootfs"));
        let out = b.oci(&["spec", "--bundle"]).arg(b.path()).output().unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = b.path().join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        cfg["process"]["args"] = serde_json::json!(args);
        std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        b
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state_root(&self) -> PathBuf {
        self.path().join("state")
    }

    fn oci(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cubby-oci"));
        c.arg("--root").arg(self.state_root()).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = common::run_timeout(&mut self.oci(args), Duration::from_secs(30));
        assert!(
            out.status.success(),
            "cubby-oci {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn status(&self, id: &str) -> String {
        let out = self.ok(&["state", id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().unwrap().to_string()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Ok(list) = std::fs::read_dir(self.state_root()) {
            for e in list.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.oci(&["delete", "--force", &id]).output();
            }
        }
    }
}

#[test]
fn create_start_exec_kill_delete() {
    let b = Bundle::new(&["sh", "-c", "echo started > /tmp/mark; sleep 300"]);
    let id = common::unique_name("life");
    let pid_file = b.path().join("pid");
    let bundle = b.path().to_string_lossy().into_owned();
    let pf = pid_file.to_string_lossy().into_owned();
    // The container keeps create's stdio (as with runc): give it files, not
    // pipes this test would wait on.
    let log = std::fs::File::create(b.path().join("container.log")).unwrap();
    let status = b
        .oci(&["create", "--bundle", &bundle, "--pid-file", &pf, &id])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success(), "create failed");
    assert_eq!(b.status(&id), "created");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Nothing of the command ran before start.
    assert!(!b.path().join("rootfs/tmp/mark").exists());

    // A second create with the same id is refused.
    let out = b
        .oci(&["create", "--bundle", &bundle, &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    b.ok(&["start", &id]);
    assert_eq!(b.status(&id), "running");

    // exec joins the container: same hostname, sees the mark, exit code kept.
    let out = b.ok(&["exec", &id, "sh", "-c", "cat /tmp/mark; hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\ncubby\n");
    let out = b
        .oci(&["exec", &id, "sh", "-c", "exit 9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9));
    let out = b.oci(&["exec", &id, "nope-not-here"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));

    let out = b.ok(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], serde_json::json!(id));

    // delete refuses a running container without --force.
    let out = b.oci(&["delete", &id]).output().unwrap();
    assert!(!out.status.success());

    b.ok(&["kill", &id, "KILL"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.status(&id) != "stopped" {
        assert!(
            std::time::Instant::now() < deadline,
            "container did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    b.ok(&["delete", &id]);
    let out = b.oci(&["state", &id]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!Path::new("/sys/fs/cgroup/memory/cubby").join(&id).exists());
}

/// A caller holding more descriptors than the container's RLIMIT_NOFILE
/// (a daemon's monitor with hundreds of containers): the init, a clone of
/// the caller, used to carry them all past its 1024 limit and die on
/// EMFILE opening its exec fifo. Now it keeps only its own, and the
/// command sees only 0-2.
#[test]
fn caller_with_more_fds_than_the_containers_limit() {
    let b = Bundle::new(&["ls", "/proc/self/fd"]);
    let id = common::unique_name("fds");
    // bash: `exec N<` with N over 9 (dash takes one digit only).
    let script = format!(
        "ulimit -n 4096 && for i in $(seq 3 1500); do eval \"exec $i</dev/null\"; done && \
         exec {} --root {} run --bundle {} {id}",
        env!("CARGO_BIN_EXE_cubby-oci"),
        b.state_root().display(),
        b.path().display()
    );
    let out = common::run_timeout(
        Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "run with 1500 inherited fds: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // ls itself holds one more (its directory), numbered 3.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

#[test]
fn run_returns_exit_code_and_cleans_up() {
    let b = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 4"]);
    let id = common::unique_name("run");
    let out = b
        .oci(&["run", "--bundle", &b.path().to_string_lossy(), &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let left = std::fs::read_dir(b.state_root())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "state left after run");
}

#[test]
fn bad_bundles_give_clear_errors() {
    let b = Bundle::new(&["true"]);
    let id = common::unique_name("bad");
    let log = b.path().join("log.json");
    // No config.json.
    let empty = b.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = b
        .oci(&[
            "--log",
            &log.to_string_lossy(),
            "--log-format",
            "json",
            "create",
            "-b",
            &empty.to_string_lossy(),
            &id,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(logged.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    // Broken JSON names the file.
    std::fs::write(empty.join("config.json"), "{ not json").unwrap();
    let out = b
        .oci(&["create", "-b", &empty.to_string_lossy(), &id])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
    // A command missing from the rootfs fails create with 127 and leaves nothing.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    cfg["process"]["args"] = serde_json::json!(["/no/such/binary"]);
    std::fs::write(
        b.path().join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let out = b
        .oci(&["create", "-b", &b.path().to_string_lossy(), &id])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(127),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!b.state_root().join(&id).exists());
    assert!(!Path::new("/sys/fs/cgroup/pids/cubby").join(&id).exists());
}

#[test]
fn features_document() {
    let b = Bundle::new(&["true"]);
    let out = b.ok(&["features"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert!(v["linux"]["namespaces"].as_array().unwrap().len() >= 7);
    assert!(v["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("CAP_SYS_ADMIN")));
}

#[test]
fn a_killed_create_is_repaired_by_delete() {
    // What `cubby-oci create` leaves if killed right after its first state
    // write: a "creating" record, a cgroup, no process.
    let b = Bundle::new(&["true"]);
    let id = common::unique_name("killed");
    let dir = b.state_root().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let cgroup = Path::new("/sys/fs/cgroup/pids/cubby").join(&id);
    std::fs::create_dir_all(&cgroup).unwrap();
    let record = serde_json::json!({
        "ociVersion": "1.0.2", "id": id, "status": "creating", "pid": 0,
        "bundle": b.path(), "rootfs": b.path().join("rootfs"), "created": "2026-01-01T00:00:00Z",
        "owner": "", "pidStartTime": 0, "cgroupPath": format!("/cubby/{id}"),
    });
    std::fs::write(dir.join("state.json"), record.to_string()).unwrap();
    assert_eq!(b.status(&id), "stopped");
    b.ok(&["delete", &id]);
    assert!(
        !dir.exists() && !cgroup.exists(),
        "delete left the half-made container"
    );

    // Killed even earlier: a directory without a record.
    std::fs::create_dir_all(&dir).unwrap();
    b.ok(&["delete", &id]);
    assert!(!dir.exists());
}
