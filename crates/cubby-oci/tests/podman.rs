//! podman compatibility: podman must be able to use cubby-oci as its OCI
//! runtime (`podman --runtime PATH`).
//!
//! The runtime is the cubby-oci binary cargo built, or `CUBBY_TEST_RUNTIME`
//! (e.g. `CUBBY_TEST_RUNTIME=/usr/sbin/runc cargo test -p cubby-oci --test
//! podman` checks the test itself against runc).
//!
//! Every test gets its own podman storage (`--root`, `--runroot`, `--tmpdir`
//! in a temp dir, vfs driver) with a busybox image imported from a tarball,
//! so nothing touches the host's podman state or the network (`--network
//! none`, `--pull never`, `localhost/` image names). Flags this needs on a
//! host without systemd and without CAP_SYS_RESOURCE:
//! `--cgroup-manager cgroupfs --events-backend file` and
//! `--ulimit nofile=1024:1024 --ulimit nproc=4096:4096` (podman's default
//! nofile limit of 1048576 cannot be set there).
//!
//! Needs root and podman (`apt-get install -y podman`); a missing podman is
//! a failure, never a skip.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{require_tool, run_timeout, unique_name, wait_timeout};

const TIMEOUT: Duration = Duration::from_secs(120);
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// A private podman storage with one imported busybox image. Dropping it
/// removes all containers and the image, then the storage directory.
struct Podman {
    podman: PathBuf,
    runtime: PathBuf,
    image: String,
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let podman = require_tool("podman", "podman");
        let runtime = common::runtime_under_test();
        assert!(
            runtime.exists(),
            "runtime {} does not exist",
            runtime.display()
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "the podman tests need root (rootful podman with a custom --root)"
        );
        let dir = tempfile::Builder::new()
            .prefix("cubby-pm")
            .tempdir()
            .expect("tempdir");
        let image = format!("localhost/{}:latest", unique_name("cubby-busybox"));
        let p = Podman {
            podman,
            runtime,
            image,
            dir,
        };
        // From here on, Drop cleans up even if the import fails.
        let tarball = common::busybox_rootfs_tarball(&p.dir.path().join("img"));
        let out = p.run(
            p.cmd()
                .arg("import")
                .arg("--quiet")
                .arg(&tarball)
                .arg(&p.image),
        );
        assert!(out.status.success(), "podman import failed: {}", show(&out));
        p
    }

    /// `podman` with the global flags pointing at our private storage and
    /// the runtime under test.
    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(&self.podman);
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(["--log-level", "error"])
            .arg("--runtime")
            .arg(&self.runtime);
        c
    }

    /// `podman run --rm --network none --pull never ULIMITS EXTRA IMAGE ARGS...`
    fn run_cmd(&self, extra: &[&str], args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--rm", "--network", "none", "--pull", "never"])
            .args(ULIMITS)
            .args(extra)
            .arg(&self.image)
            .args(args);
        c
    }

    fn run(&self, cmd: &mut Command) -> Output {
        run_timeout(cmd, TIMEOUT)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let quiet = |mut c: Command| {
            let _ = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        let mut c = self.cmd();
        c.args(["rm", "--all", "--force", "--time", "0"]);
        quiet(c);
        let mut c = self.cmd();
        c.args(["rmi", "--force"]).arg(&self.image);
        quiet(c);
        // Tear down whatever podman still holds in the private storage.
        let mut c = self.cmd();
        c.args(["system", "reset", "--force"]);
        quiet(c);
    }
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn podman_run_echo() {
    let p = Podman::new();
    let out = p.run(&mut p.run_cmd(&[], &["echo", "hi"]));
    assert!(
        out.status.success(),
        "podman run echo hi failed: {}",
        show(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "unexpected output: {}",
        show(&out)
    );
}

#[test]
fn podman_run_exit_code_propagates() {
    let p = Podman::new();
    let out = p.run(&mut p.run_cmd(&[], &["sh", "-c", "exit 3"]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "podman run sh -c 'exit 3': {}",
        show(&out)
    );
    let out = p.run(&mut p.run_cmd(&[], &["sh", "-c", "echo out; echo err >&2; exit 0"]));
    assert!(
        out.status.success(),
        "podman run sh -c 'exit 0': {}",
        show(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\n",
        "{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{}",
        show(&out)
    );
}

/// `podman run -it IMAGE sh` under a real pty: type a command, see its
/// output, exit.
#[test]
fn podman_run_interactive_tty() {
    let p = Podman::new();
    let pty = nix::pty::openpty(
        &nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
        None,
    )
    .expect("openpty");
    let mut cmd = p.run_cmd(&["-it"], &["sh"]);
    let slave = File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .env("TERM", "xterm");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // stdin is the pty slave: make it our controlling terminal.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn podman run -it");
    drop(cmd); // closes the parent's copies of the slave...
    drop(slave); // ...so reading the master ends (EIO) once podman exits

    let mut master = File::from(pty.master);
    let mut seen = Vec::<u8>::new();
    let deadline = Instant::now() + TIMEOUT;

    let mut stage = 0; // 0: wait for prompt, 1: wait for 42, 2: wait for exit
    let mut last_poke = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        match stage {
            0 if text.contains("# ") => {
                master.write_all(b"echo $((6*7))\r").unwrap();
                stage = 1;
            }
            0 if last_poke.elapsed() > Duration::from_secs(5) => {
                // No prompt yet (or it was missed): a bare CR makes sh print one.
                master.write_all(b"\r").unwrap();
                last_poke = Instant::now();
            }
            1 if text.lines().any(|l| l.trim_end_matches('\r') == "42") => {
                master.write_all(b"exit\r").unwrap();
                stage = 2;
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("podman run -it: timed out at stage {stage}; terminal output so far:\n{text:?}");
        }
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, 200u16) {
            Ok(0) => {
                if stage == 2 && child.try_wait().unwrap().is_some() {
                    break;
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let mut buf = [0u8; 4096];
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            // EIO: every slave fd is closed, i.e. podman has exited.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading pty master: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("podman run -it did not exit after `exit`; terminal output:\n{text:?}")
    });
    assert!(
        stage == 2,
        "podman run -it exited ({status}) before the shell answered; terminal output:\n{text:?}"
    );
    assert!(
        status.success(),
        "podman run -it sh exited with {status}; terminal output:\n{text:?}"
    );
}
