//! Shared by the engine's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `dir/rootfs`: static busybox and a link for each of its applets.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("these tests need a static busybox (apt-get install -y busybox-static)");
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(&bb, rootfs.join("bin/busybox")).unwrap();
    let list = Command::new(&bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    rootfs
}
