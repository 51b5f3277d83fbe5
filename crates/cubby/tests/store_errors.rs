//! The image store under bad conditions: a full disk and corrupted files
//! give one clear error and leave a store that still works.

mod common;

use common::{stderr, stdout, World};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    world: World,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let world = World::new();
        let root = world.dir.path().join("store");
        Env { world, root }
    }

    fn cubby(&self, args: &[&str]) -> Output {
        self.world
            .cubby()
            .env("CUBBY_ROOT", &self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn tarball(&self) -> PathBuf {
        let t = self.world.dir.path().join("rootfs.tar.gz");
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(&t)
            .arg("-C")
            .arg(self.world.rootfs())
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar failed");
        t
    }
}

/// Unmounts the small tmpfs even when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn files_under(p: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn disk_full_is_one_line_and_the_store_stays_usable() {
    let env = Env::new();
    let tarball = env.tarball();
    std::fs::create_dir_all(&env.root).unwrap();
    // 1 MiB cannot hold busybox (~2 MiB) unpacked.
    nix::mount::mount(
        Some("tmpfs"),
        &env.root,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _m = Mounted(env.root.clone());
    let out = env.cubby(&["import", &tarball.to_string_lossy(), "class/full:1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"));
    // Nothing half-made is visible, nothing is left in tmp/, listing works.
    let out = env.cubby(&["images", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(files_under(&env.root.join("tmp")), 0, "temp files left");
    assert_eq!(
        files_under(&env.root.join("blobs")),
        0,
        "partial blob stored"
    );
}

#[test]
fn corrupt_store_files_give_clear_errors() {
    let env = Env::new();
    let tarball = env.tarball();
    let out = env.cubby(&["import", &tarball.to_string_lossy(), "class/ok:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A flipped byte in the image config is caught by its digest.
    let blobs = env.root.join("blobs/sha256");
    let config = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read(p)
                .map(|b| b.starts_with(b"{") && String::from_utf8_lossy(&b).contains("diff_ids"))
                .unwrap_or(false)
        })
        .expect("config blob");
    let mut bytes = std::fs::read(&config).unwrap();
    // Same length, different bytes: "linux" -> "linuy".
    let at = String::from_utf8_lossy(&bytes).find("linux").unwrap() + 4;
    bytes[at] = b'y';
    std::fs::write(&config, bytes).unwrap();
    let out = env.cubby(&["run", "--rm", "--pull", "never", "class/ok:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("digest") && err.contains("prune"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The list still works; a corrupt images.json names itself and the fix.
    assert!(env.cubby(&["images"]).status.success());
    std::fs::write(env.root.join("images.json"), "{not json").unwrap();
    let out = env.cubby(&["images"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("images.json"), "{}", stderr(&out));
}
