//! Shared helpers for cubby's end-to-end tests: a busybox rootfs in a temp
//! dir, a private state dir, and a runner for the real `cubby` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A throwaway container world: rootfs + state dir, removed on drop (even
/// when the test fails), along with anything a container left behind.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create namespaces and cgroups: run them as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("cubby-test-")
            .tempdir()
            .unwrap();
        // The root of a user namespace (an unprivileged host uid) must be able
        // to reach the rootfs, as with any image store.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        make_busybox_rootfs(&dir.path().join("rootfs"));
        World { dir }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `cubby run --rootfs ROOTFS ARGS...` style command with our state dir.
    pub fn cubby(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cubby"));
        c.env("CUBBY_STATE_DIR", self.state_dir());
        c
    }

    /// Runs `cubby run --rm --rootfs R <flags> -- <cmd>` and returns output.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Output {
        let mut c = self.cubby();
        c.arg("run").arg("--rm").arg("--rootfs").arg(self.rootfs());
        c.args(flags).arg("--").args(cmd);
        c.stdin(Stdio::null());
        c.output().expect("spawn cubby")
    }

    /// Like `run`, asserting success, returning stdout.
    pub fn sh(&self, flags: &[&str], script: &str) -> String {
        let out = self.run(flags, &["sh", "-c", script]);
        assert!(
            out.status.success(),
            "cubby run {flags:?} sh -c {script:?} failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// No container record is left in our state dir.
    pub fn assert_no_state(&self) {
        let left: Vec<_> = std::fs::read_dir(self.state_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "state left behind: {left:?}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Detach anything a failed test may have left mounted under our dir.
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let base = self.dir.path().to_string_lossy().into_owned();
            let mut points: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&base))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// A minimal rootfs: static busybox and a link for each applet.
pub fn make_busybox_rootfs(root: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox missing: apt-get install busybox-static"
    );
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/student",
        "usr/bin",
        "sbin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nstudent:x:1000:1000:student:/home/student:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nstudent:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
