//! A real `cubby daemon` (which starts its `cubby monitor`) in a temp
//! root, for tests that drive the Docker Engine API with the real `docker`
//! CLI, docker-py or raw HTTP. Drop kills the daemon, the monitor and
//! whatever is left in the test's cgroups, and unmounts snapshots.
#![allow(dead_code)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "net.rs"]
pub mod net;

pub const DOCKER: &str = "/usr/local/bin/docker";

pub struct Daemon {
    pub tmp: tempfile::TempDir,
    /// The API socket.
    pub socket: PathBuf,
    pub monitor_socket: PathBuf,
    /// Relative to each cgroup hierarchy: "cubby-test/docker-PID-NAME".
    pub cg: String,
    daemon: Option<Child>,
    /// More `cubby daemon` arguments (e.g. a TLS `--listen tcp://...`).
    extra: Vec<String>,
    /// This daemon's own bridges, subnets and nft table (cleaned on drop).
    pub net: net::NetTag,
}

/// Runs `f` until it returns Some, for at most 20 s.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daemon {
    /// Starts a daemon on a fresh root; `name` makes its cgroup unique.
    pub fn start(name: &str) -> Daemon {
        Daemon::start_with(name, &[])
    }

    /// [`Daemon::start`] with more `cubby daemon` arguments.
    pub fn start_with(name: &str, extra: &[String]) -> Daemon {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create containers: run them as root"
        );
        assert!(
            Path::new(DOCKER).exists(),
            "these tests need the docker CLI at {DOCKER} (client only)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("cubby-daemon-test-")
            .tempdir()
            .unwrap();
        let net = net::NetTag::claim();
        let mut extra = extra.to_vec();
        extra.extend(net.daemon_args());
        let mut d = Daemon {
            socket: tmp.path().join("run/cubby.sock"),
            monitor_socket: tmp.path().join("run/monitor.sock"),
            cg: format!("cubby-test/docker-{}-{name}", std::process::id()),
            daemon: None,
            extra,
            net,
            tmp,
        };
        d.spawn_daemon();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// `cubby --root R --state-dir S ARGS...`.
    pub fn cubby(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cubby"));
        c.arg("--root")
            .arg(self.root())
            .arg("--state-dir")
            .arg(self.state_dir());
        c
    }

    fn spawn_daemon(&mut self) {
        let mut child = self
            .cubby()
            .arg("daemon")
            .arg("--listen")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--cgroup-parent")
            .arg(&self.cg)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let log = std::fs::read_to_string(self.root().join("monitor.log"));
                panic!("cubby daemon exited {status}: {err}\nmonitor log: {log:?}");
            }
            assert!(Instant::now() < deadline, "cubby daemon did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(child);
    }

    /// SIGKILLs the daemon (not the monitor) and starts a new one.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn_daemon();
    }

    /// The monitor's pid, from the lock file it holds.
    pub fn monitor_pid(&self) -> Option<i32> {
        let lock = PathBuf::from(format!("{}.lock", self.monitor_socket.display()));
        std::fs::read_to_string(lock).ok()?.trim().parse().ok()
    }

    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .stdin(Stdio::null());
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd(args).output().unwrap()
    }

    /// Runs docker; asserts it succeeded; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
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

    /// Runs docker; asserts it failed; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A raw HTTP/1.1 request; returns the status line and the body.
    pub fn http(&self, method: &str, path: &str) -> (String, String) {
        self.http_body(method, path, None)
    }

    /// A raw HTTP/1.1 request with an optional JSON body.
    pub fn http_body(&self, method: &str, path: &str, body: Option<&str>) -> (String, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }

    /// Imports a busybox root filesystem as `busybox:latest` into the
    /// daemon's image store.
    pub fn import_busybox(&self) {
        let dir = self.tmp.path().join("image");
        let rootfs = dir.join("rootfs");
        crate::common::make_busybox_rootfs(&rootfs);
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
        let out = self
            .cubby()
            .arg("import")
            .arg(&tarball)
            .arg("busybox:latest")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cubby import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// This test's cgroup directories, one per hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
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

impl Drop for Daemon {
    fn drop(&mut self) {
        // The daemon first, then the monitor.
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.monitor_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while kill(Pid::from_raw(pid), None).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
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
            // Thaw paused ones, or SIGKILL waits forever.
            let _ = std::fs::write(leaf.join("freezer.state"), "THAWED");
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
        // Snapshots (and anything mounted below them) of containers not removed.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let tmp = self.tmp.path().to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&tmp))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
