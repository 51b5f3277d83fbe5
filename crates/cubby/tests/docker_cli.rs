//! The Docker Engine API for real: `cubby daemon` (and the monitor it
//! starts) driven by the real `docker` CLI (client only) over its socket.
//! Needs root, cgroups, a static busybox and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon as Harness};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

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

    h.import_busybox();
    let id = h.ok(&[
        "run",
        "-d",
        "--name",
        "hello",
        "busybox",
        "sh",
        "-c",
        "echo hello-docker; sleep 30",
    ]);
    let ps = h.ok(&["ps"]);
    assert!(ps.contains("hello") && ps.contains("Up"), "{ps}");
    eventually("docker logs shows the output", || {
        let out = h.docker(&["logs", "hello"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout) == "hello-docker\n")
            .then_some(())
    });
    let inspect: Value = serde_json::from_str(&h.ok(&["inspect", "hello"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.trim());
    assert_eq!(inspect[0]["Name"], "/hello");
    assert_eq!(inspect[0]["State"]["Running"], true, "{inspect}");
    assert!(inspect[0]["State"]["Pid"].as_i64().unwrap() > 0);

    // A running container is not removed without force.
    let out = h.docker(&["rm", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot remove a running container"));

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
    let snapshot = h.root().join("containers").join(id);
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
