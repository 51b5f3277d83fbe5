//! JupyterHub with DockerSpawner (both from PyPI) starting and stopping a
//! user's server through `cubby daemon`, end to end: a real
//! `jupyterhub-singleuser` (pip, in a Debian rootfs built locally by
//! scripts/mk-jupyter-image.sh and imported with `docker import --change`
//! through cubby), the hub and configurable-http-proxy on the host, the
//! user's server reached through the proxy, checked inside the container,
//! then stopped and removed by the spawner.
//!
//! Needs root, `jupyterhub` + `dockerspawner` (pip), `configurable-http-proxy`
//! (npm) on PATH, debootstrap, and, the first time, the Debian mirror and
//! PyPI to build the image (cached in the target dir afterwards).

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::Daemon;
use std::path::PathBuf;
use std::process::Command;

fn need(cmd: &str, what: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "this test needs {cmd} on PATH ({what})");
}

/// The single-user rootfs tar, built once per target dir and JupyterHub version.
fn singleuser_tar() -> PathBuf {
    let ver = Command::new("python3")
        .args(["-c", "import jupyterhub; print(jupyterhub.__version__)"])
        .output()
        .expect("python3");
    assert!(
        ver.status.success(),
        "pip install jupyterhub dockerspawner is needed"
    );
    let ver = String::from_utf8_lossy(&ver.stdout).trim().to_string();
    let tar =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("jupyter-singleuser-{ver}.tar"));
    if !tar.exists() {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mk-jupyter-image.sh");
        let out = Command::new(script).arg(&tar).arg(&ver).output().unwrap();
        assert!(
            out.status.success(),
            "building the single-user image failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tar
}

const DRIVER: &str = r#"
import json, os, secrets, socket, subprocess, sys, time, urllib.request, urllib.error
import docker

sock, gw, image, work, chp = sys.argv[1:6]
token = secrets.token_hex(16)

def free_port(host):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p

hub_port, pub, api = free_port(gw), free_port("127.0.0.1"), free_port("127.0.0.1")
cfg = f"""
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = {image!r}
c.DockerSpawner.network_name = "jhnet"
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.start_timeout = 180
c.DockerSpawner.http_timeout = 180
c.DockerSpawner.mem_limit = "512M"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {pub}
c.JupyterHub.hub_ip = {gw!r}
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.hub_connect_ip = {gw!r}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.db_url = "sqlite:///{work}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
c.JupyterHub.services = [{{"name": "tester", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "tester", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["tester"]}}]
"""
with open(f"{work}/jupyterhub_config.py", "w") as f:
    f.write(cfg)
env = dict(os.environ, DOCKER_HOST="unix://" + sock)
log = open(f"{work}/hub.log", "w")
hub = subprocess.Popen(["jupyterhub", "-f", f"{work}/jupyterhub_config.py"], cwd=work, env=env,
                       stdout=log, stderr=subprocess.STDOUT)
base = f"http://127.0.0.1:{pub}"

class HttpFail(Exception):
    pass

def call(method, path, body=None, ok=(200, 201, 202, 204)):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return r.status, (json.loads(data) if data else None)
    except urllib.error.HTTPError as e:
        if e.code in ok:
            return e.code, None
        raise HttpFail(f"{method} {path}: {e.code} {e.read()[:500]!r}")

def until(what, f, secs=180):
    end = time.time() + secs
    last = None
    while time.time() < end:
        if hub.poll() is not None:
            raise SystemExit(f"jupyterhub exited {hub.returncode} while waiting for {what}")
        try:
            v = f()
            if v:
                return v
        except (OSError, urllib.error.URLError, HttpFail) as e:
            last = e
        time.sleep(0.5)
    raise SystemExit(f"timed out: {what} (last error: {last})")

dc = docker.DockerClient(base_url="unix://" + sock, timeout=60)
try:
    until("the hub API", lambda: call("GET", "/hub/api/")[0] == 200)
    call("POST", "/hub/api/users/alice")
    call("POST", "/hub/api/users/alice/server")
    until("alice's server ready", lambda: (call("GET", "/hub/api/users/alice")[1]["servers"].get("") or {}).get("ready"))
    status, st = call("GET", "/user/alice/api/status")
    assert status == 200 and "started" in st, (status, st)
    print("through the proxy:", json.dumps(st))
    ct = dc.containers.get("jupyter-alice")
    assert ct.status == "running", ct.status
    # Effects inside the container: the user, the hub's settings, the limit.
    r = ct.exec_run(["sh", "-c", "id -u; echo $JUPYTERHUB_USER; ps -o args= -p 1 2>/dev/null || cat /proc/1/cmdline | tr '\\0' ' '"])
    out = r.output.decode()
    assert r.exit_code == 0 and out.split()[0] == "1000" and "alice" in out and "jupyterhub-singleuser" in out, out
    assert ct.attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024, ct.attrs["HostConfig"]["Memory"]
    assert "8888/tcp" in ct.attrs["Config"]["ExposedPorts"], ct.attrs["Config"]["ExposedPorts"]
    print("inside:", out.replace("\n", " | "))
    call("DELETE", "/hub/api/users/alice/server")
    until("alice's server stopped", lambda: not call("GET", "/hub/api/users/alice")[1]["servers"])
    until("the container removed", lambda: not dc.containers.list(all=True, filters={"name": "jupyter-alice"}))
    print("jupyterhub ok")
finally:
    hub.terminate()
    try:
        hub.wait(20)
    except subprocess.TimeoutExpired:
        hub.kill()
        hub.wait()
    log.close()
    # The hub leaves its proxy running when it is stopped: stop it by its pid file.
    try:
        os.kill(int(open(f"{work}/jupyterhub-proxy.pid").read().strip()), 15)
    except (OSError, ValueError):
        pass
"#;

#[test]
fn jupyterhub_dockerspawner_starts_and_stops_a_users_server() {
    need("jupyterhub", "pip install jupyterhub dockerspawner");
    need(
        "configurable-http-proxy",
        "npm install -g configurable-http-proxy",
    );
    need("debootstrap", "apt-get install debootstrap");
    let ok = Command::new("python3")
        .args(["-c", "import dockerspawner, docker"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pip install dockerspawner (and docker) is needed");
    let tar = singleuser_tar();
    let d = Daemon::start("jhub");
    let image = "cubby-test/jupyter-singleuser:1";
    d.ok(&[
        "import",
        "-c",
        r#"CMD ["jupyterhub-singleuser"]"#,
        "-c",
        "USER 1000",
        "-c",
        "ENV HOME=/home/jovyan",
        "-c",
        "WORKDIR /home/jovyan",
        "-c",
        "EXPOSE 8888",
        tar.to_str().unwrap(),
        image,
    ]);
    let subnet = d.net.subnet(0);
    d.ok(&["network", "create", "--subnet", &subnet, "jhnet"]);
    let gw = format!("{}1", subnet.trim_end_matches("0/24"));
    // The hub listens on the network's gateway (an address cubby assigned):
    // a first container brings the bridge up.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "jh-anchor",
        "--network",
        "jhnet",
        image,
        "sleep",
        "600",
    ]);
    let work = tempfile::Builder::new()
        .prefix("cubby-jhub-")
        .tempdir()
        .unwrap();
    let chp = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v configurable-http-proxy"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .arg(&d.socket)
        .arg(&gw)
        .arg(image)
        .arg(work.path())
        .arg(chp.trim())
        .output()
        .unwrap();
    let hub_log = std::fs::read_to_string(work.path().join("hub.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "JupyterHub scenario failed:\nstdout: {}\nstderr: {}\nhub log (tail):\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        hub_log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("jupyterhub ok"));
    d.ok(&["rm", "-f", "jh-anchor"]);
}
