//! docker-py (the Python Docker SDK, `pip install docker`) against `cubby
//! daemon`: containers run/list/get/logs/exec_run/stop/remove, images
//! list, volumes create/list. Needs root, cgroups, a static busybox and
//! python3 with the `docker` package.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::Daemon;

const SCRIPT: &str = r#"
import sys, time, docker

c = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto", timeout=60)
assert c.ping()

# Foreground: create, start, wait, logs, remove.
out = c.containers.run("busybox", ["sh", "-c", "echo hi-py; echo err-py >&2"], remove=True, stderr=True)
assert out == b"hi-py\nerr-py\n", out
try:
    c.containers.run("busybox", ["sh", "-c", "exit 4"], remove=True)
    raise SystemExit("a failing command must raise ContainerError")
except docker.errors.ContainerError as e:
    assert e.exit_status == 4, e.exit_status

ct = c.containers.run("busybox", ["sh", "-c", "echo started; trap 'exit 0' TERM; while true; do sleep 0.1; done"],
                      detach=True, name="py1", labels={"course": "py"}, environment={"A": "b"})
assert [x.id for x in c.containers.list()] == [ct.id]
assert [x.id for x in c.containers.list(filters={"label": "course=py"})] == [ct.id]
assert c.containers.list(filters={"label": "course=other"}) == []
g = c.containers.get("py1")
assert g.status == "running" and g.labels == {"course": "py"}, (g.status, g.labels)
assert "A=b" in g.attrs["Config"]["Env"]
for _ in range(100):
    if ct.logs() == b"started\n":
        break
    time.sleep(0.1)
assert ct.logs() == b"started\n", ct.logs()

r = ct.exec_run(["sh", "-c", "echo $X; exit 3"], environment={"X": "x1"})
assert (r.exit_code, r.output) == (3, b"x1\n"), r
r = ct.exec_run("id -u", user="1000")
assert (r.exit_code, r.output) == (0, b"1000\n"), r
r = ct.exec_run("pwd", workdir="/tmp")
assert r.output == b"/tmp\n", r

ct.stop(timeout=5)
ct.reload()
assert ct.status == "exited" and ct.attrs["State"]["ExitCode"] == 0, ct.attrs["State"]
ct.start()
ct.reload()
assert ct.status == "running"
ct.remove(force=True)
assert c.containers.list(all=True) == []
try:
    c.containers.get("py1")
    raise SystemExit("a removed container must be gone")
except docker.errors.NotFound:
    pass

tags = [t for i in c.images.list() for t in i.tags]
assert "busybox:latest" in tags, tags
v = c.volumes.create("pyvol", labels={"k": "v"})
assert "pyvol" in [x.name for x in c.volumes.list()]
v.remove()
print("docker-py ok")
"#;

#[test]
fn docker_py_drives_containers_images_volumes() {
    let d = Daemon::start("py");
    d.import_busybox();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&d.socket)
        .output()
        .expect("python3 with the docker package (pip install docker) is needed");
    assert!(
        out.status.success(),
        "docker-py script failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-py ok"));
}
