//! Helpers shared by cubby-oci's integration tests.
//!
//! Each test binary compiles this module separately and uses only part of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The scripts/ directory of the workspace.
pub fn scripts_dir() -> PathBuf {
    repo_root().join("scripts")
}

/// Path of `name` on PATH (or `name` itself if it is a path to an
/// executable), or a test failure telling how to install `package`.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let found = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| is_executable(p))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
                .map(|d| d.join(name))
                .find(|p| is_executable(p))
        })
    };
    found.unwrap_or_else(|| {
        panic!("`{name}` not found: this test needs it; install it with `apt-get install -y {package}`")
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The OCI runtime under test: `CUBBY_TEST_RUNTIME` if set (e.g.
/// /usr/sbin/runc to validate a test), else the cubby-oci binary cargo
/// built for this test run.
pub fn runtime_under_test() -> PathBuf {
    match std::env::var_os("CUBBY_TEST_RUNTIME") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            let p = if p.components().count() == 1 {
                require_tool(p.to_str().expect("utf-8 runtime name"), "runc")
            } else {
                p
            };
            assert!(
                is_executable(&p),
                "CUBBY_TEST_RUNTIME={} is not an executable",
                p.display()
            );
            p
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_cubby-oci")),
    }
}

/// Build a busybox root filesystem in `dir` with scripts/mk-busybox-rootfs.sh.
pub fn busybox_rootfs(dir: &Path) {
    let script = scripts_dir().join("mk-busybox-rootfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}{}",
        script.display(),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build a busybox rootfs under `work` and pack it as `work/rootfs.tar`.
pub fn busybox_rootfs_tarball(work: &Path) -> PathBuf {
    let rootfs = work.join("rootfs");
    busybox_rootfs(&rootfs);
    let tarball = work.join("rootfs.tar");
    let out = run_timeout(
        Command::new(require_tool("tar", "tar"))
            .arg("-C")
            .arg(&rootfs)
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tarball
}

/// Run `cmd` with stdin from /dev/null, capturing stdout and stderr; kill it
/// and fail the test if it is still running after `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("timed out after {timeout:?}: {desc}")
    });
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Wait for `child` up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("waitpid") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A name unique to this process and call, usable in image and container names.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        t & 0xffff_ffff
    )
}
