//! cubby-oci under containerd, as containerd uses it (issue 9 item 6): a
//! private containerd (own config, root, state and socket in a temp dir,
//! never the host's), a busybox image built here and imported with
//! `ctr image import`, and `ctr run --runc-binary <cubby-oci>` through
//! containerd-shim-runc-v2 for the everyday container operations.
//!
//! Needs Debian's `containerd` (containerd, ctr, the runc v2 shim) and
//! `umoci`; fails with the package to install if they are missing.

mod common;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);
const IMAGE: &str = "cubby.test/busybox:latest";

struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    ns: String,
    ctr: PathBuf,
    runtime: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        assert!(nix::unistd::geteuid().is_root(), "run these tests as root");
        let containerd = common::require_tool("containerd", "containerd");
        let ctr = common::require_tool("ctr", "containerd");
        common::require_tool("containerd-shim-runc-v2", "containerd");
        let dir = tempfile::Builder::new()
            .prefix("cubby-ctrd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        // Only what these tests use: no CRI, no exotic snapshotters, no
        // metrics listener; every path under the temp dir.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[metrics]
  address = ""
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new(containerd)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            dir,
            daemon,
            ns: common::unique_name("cubbytest"),
            ctr,
            runtime: common::runtime_under_test(),
        };
        let deadline = Instant::now() + T;
        while !c.ctr(&["version"]).output().unwrap().status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .arg("--namespace")
            .arg(&self.ns)
            .args(args);
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        common::run_timeout(&mut self.ctr(args), T)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.out(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run --rm --runc-binary cubby-oci [flags] IMAGE ID cmd...`.
    fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), "--runc-binary".into()];
        a.push(self.runtime.display().to_string());
        a.extend(flags.iter().map(|s| s.to_string()));
        a.push(IMAGE.into());
        a.push(id.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
        let a = self.run_args(flags, id, cmd);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.out(&a)
    }

    /// Builds a one-layer busybox image with umoci and imports it.
    fn import_busybox(&self) {
        let umoci = common::require_tool("umoci", "umoci");
        let work = self.dir.path().join("image");
        std::fs::create_dir_all(&work).unwrap();
        let rootfs = work.join("rootfs");
        common::busybox_rootfs(&rootfs);
        let layout = work.join("layout");
        let image = format!("{}:latest", layout.display());
        for args in [
            vec![
                "init".to_string(),
                "--layout".into(),
                layout.display().to_string(),
            ],
            vec!["new".into(), "--image".into(), image.clone()],
            vec![
                "insert".into(),
                "--image".into(),
                image.clone(),
                rootfs.display().to_string(),
                "/".into(),
            ],
        ] {
            let out = common::run_timeout(Command::new(&umoci).args(&args), T);
            assert!(
                out.status.success(),
                "umoci {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tar = work.join("busybox.tar");
        let out = common::run_timeout(
            Command::new(common::require_tool("tar", "tar"))
                .arg("-C")
                .arg(&layout)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
            T,
        );
        assert!(out.status.success(), "tar the image layout");
        let tar = tar.display().to_string();
        self.ok(&["image", "import", "--base-name", "cubby.test/busybox", &tar]);
        assert!(self.ok(&["image", "ls", "-q"]).contains(IMAGE));
    }

    /// The state root containerd's shim gives the runtime (runc's default
    /// layout: /run/containerd/runc/NAMESPACE).
    fn runtime_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.ns)
    }

    fn task_status(&self, id: &str) -> String {
        let ls = self.ok(&["task", "ls"]);
        ls.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("missing")
            .to_string()
    }

    fn remove(&self, id: &str) {
        let _ = self.out(&["task", "kill", "-s", "KILL", id]);
        let deadline = Instant::now() + T;
        while self.task_status(id) == "RUNNING" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.out(&["task", "rm", id]);
        let _ = self.out(&["container", "rm", id]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks left by a failed assertion, then the daemon.
        if let Ok(out) = self.ctr(&["task", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                self.remove(id.trim());
            }
        }
        if let Ok(out) = self.ctr(&["container", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["container", "rm", id.trim()]).output();
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(self.runtime_root());
        // ctr's cgroupsPath is /NAMESPACE/ID: the runtime removes the ID
        // level (checked in the test), the namespace level is ours to remove.
        if let Ok(hiers) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hiers.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.ns));
            }
        }
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Spawns `cmd` on a new pty (rows x cols) as stdin/stdout/stderr, writes
/// `input` once `ready` shows, and returns (exit status, everything shown).
fn on_pty(mut cmd: Command, rows: u16, cols: u16, ready: &str, input: &str) -> (i32, String) {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut child = cmd
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .unwrap();
    // The Command holds copies of the slave: without dropping it the master
    // would never see EIO once the process is gone.
    let desc = format!("{cmd:?}");
    drop(cmd);
    drop(pty.slave);
    let master = pty.master;
    let mut shown = Vec::new();
    let mut sent = false;
    let deadline = Instant::now() + T;
    let mut buf = [0u8; 4096];
    let readable = |ms: u16| {
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) > 0
    };
    loop {
        if !sent && String::from_utf8_lossy(&shown).contains(ready) {
            nix::unistd::write(&master, input.as_bytes()).unwrap();
            sent = true;
        }
        if let Some(st) = child.try_wait().unwrap() {
            // Drain what is left.
            while readable(200) {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(n) if n > 0 => shown.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            return (
                st.code().unwrap_or(-1),
                String::from_utf8_lossy(&shown).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{desc} on a pty did not finish; it showed {:?}",
                String::from_utf8_lossy(&shown)
            );
        }
        if readable(100) {
            match nix::unistd::read(&master, &mut buf) {
                Ok(n) if n > 0 => shown.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn mounts_mentioning(s: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(s))
        .map(String::from)
        .collect()
}

fn processes_mentioning(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(s) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

#[test]
fn ctr_run_with_cubby_oci() {
    let c = Containerd::start();
    c.import_busybox();

    // echo and exit code
    let o = c.run(&["--rm"], "echo", &["echo", "hello from cubby"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out, "hello from cubby\n");
    let o = c.run(&["--rm"], "exit", &["sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));

    // stdin (ctr never closes a task's stdin: the command reads one line)
    let a = c.run_args(&["--rm"], "stdin", &["sh", "-c", "read l; echo got-$l"]);
    let mut child = c
        .ctr(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let st = common::wait_timeout(&mut child, T).expect("ctr run with stdin did not exit");
    let o = child.wait_with_output().unwrap();
    assert!(st.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0, "got-typed\n");

    // env, cwd, a read-only bind mount, read-only root
    let host = c.dir.path().join("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file"), "from-host\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.display()
    );
    let o = c.run(
        &[
            "--rm",
            "--env",
            "FOO=bar",
            "--cwd",
            "/data",
            "--mount",
            &mount,
            "--read-only",
        ],
        "opts",
        &[
            "sh",
            "-c",
            "echo $FOO; pwd; cat file; touch /x 2>/dev/null || echo ro-root; \
             touch /data/y 2>/dev/null || echo ro-bind",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out, "bar\n/data\nfrom-host\nro-root\nro-bind\n");

    // -t through a pty: a terminal of the caller's size, exit code kept
    let a = c.run_args(&["--rm", "-t"], "tty", &["sh"]);
    let mut cmd = c.ctr(&a.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.stdin(Stdio::null());
    let (code, shown) = on_pty(
        cmd,
        33,
        111,
        "#",
        // ctr resizes the container's terminal just after starting it: wait.
        "until [ \"$(stty size)\" = '33 111' ]; do sleep 0.1; done; echo size-$((1+1))ok; tty; \
         echo tty-$((6*7)); exit 5\r",
    );
    assert_eq!(code, 5, "{shown}");
    assert!(
        shown.contains("size-2ok"),
        "terminal size not passed: {shown}"
    );
    assert!(
        shown.contains("/dev/pts/") && shown.contains("tty-42"),
        "{shown}"
    );

    // a detached task: exec with and without -t, pause/resume, kill
    c.ok(&c
        .run_args(&["-d"], "svc", &["sleep", "300"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(c.task_status("svc"), "RUNNING");
    let out = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "svc",
        "sh",
        "-c",
        "echo exec-$((1+1)); id -u",
    ]);
    assert_eq!(out, "exec-2\n0\n");
    let mut cmd = c.ctr(&["task", "exec", "-t", "--exec-id", "e2", "svc", "sh"]);
    cmd.stdin(Stdio::null());
    let (code, shown) = on_pty(
        cmd,
        20,
        70,
        "#",
        "until [ \"$(stty size)\" = '20 70' ]; do sleep 0.1; done; echo size-$((1+1))ok; tty; exit 4\r",
    );
    assert_eq!(code, 4, "{shown}");
    assert!(
        shown.contains("size-2ok") && shown.contains("/dev/pts/"),
        "{shown}"
    );
    c.ok(&["task", "pause", "svc"]);
    assert_eq!(c.task_status("svc"), "PAUSED");
    c.ok(&["task", "resume", "svc"]);
    assert_eq!(c.task_status("svc"), "RUNNING");
    c.ok(&["task", "kill", "-s", "KILL", "svc"]);
    let deadline = Instant::now() + T;
    while c.task_status("svc") != "STOPPED" {
        assert!(Instant::now() < deadline, "svc did not stop after SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.ok(&["task", "rm", "svc"]);
    c.ok(&["container", "rm", "svc"]);

    // SIGTERM reaches a command that handles it
    c.ok(&c
        .run_args(
            &["-d"],
            "term",
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while :; do sleep 0.1; done",
            ],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    c.ok(&["task", "kill", "-s", "TERM", "term"]);
    let deadline = Instant::now() + T;
    while c.task_status("term") != "STOPPED" {
        assert!(Instant::now() < deadline, "SIGTERM did not stop the task");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.remove("term");

    // memory limit: a 100 MiB buffer in a 32 MiB container is OOM-killed
    let o = c.run(
        &["--rm", "--memory-limit", "33554432"],
        "oom",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"],
    );
    assert_eq!(o.status.code(), Some(137), "not OOM-killed: {:?}", text(&o));

    // pids limit: ctr has no flag for it, so a whole spec (`ctr oci spec`,
    // as a CRI client would send it) with linux.resources.pids, run with
    // --config on the image's unpacked rootfs
    let spec: serde_json::Value = serde_json::from_str(&c.ok(&["oci", "spec"])).unwrap();
    let mut spec = spec;
    spec["root"]["path"] = c
        .dir
        .path()
        .join("image/rootfs")
        .display()
        .to_string()
        .into();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; echo all-forked"
    ]);
    spec["linux"]["resources"]["pids"] = serde_json::json!({"limit": 8});
    let spec_path = c.dir.path().join("pids-spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let runtime = c.runtime.display().to_string();
    let o = c.out(&[
        "run",
        "--rm",
        "--runc-binary",
        &runtime,
        "--config",
        spec_path.to_str().unwrap(),
        "pids",
    ]);
    let (out, err) = text(&o);
    assert!(
        !out.contains("all-forked") && err.contains("can't fork"),
        "pids limit not applied: {out}\n{err}"
    );

    // no leftovers: runtime state, cgroups, mounts, shims and containers
    let deadline = Instant::now() + T;
    loop {
        let procs = processes_mentioning(&c.ns);
        if procs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {procs:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let root = c.runtime_root();
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "runtime state left in {}: {left:?}",
        root.display()
    );
    for hier in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let cg = hier.path().join(&c.ns);
        let kids: Vec<_> = std::fs::read_dir(&cg)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            kids.is_empty(),
            "cgroups left in {}: {kids:?}",
            cg.display()
        );
    }
    let mounts = mounts_mentioning(&c.ns);
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    assert_eq!(c.ok(&["container", "ls", "-q"]), "");
}
