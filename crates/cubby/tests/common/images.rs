//! A local registry and a `cubby` with a private store, shared by the image
//! test binaries (`#[path = "common/images.rs"] mod images_common;` beside
//! `mod common;`).
#![allow(dead_code)]

use crate::common::{self, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A registry of our own, stopped on drop (even when the test fails).
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Registry {
    pub fn start(htpasswd: Option<&str>) -> Registry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry missing: apt-get install -y docker-registry skopeo umoci"
        );
        let dir = tempfile::Builder::new()
            .prefix("cubby-reg-")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new(scripts().join("registry.sh"));
        cmd.arg("start").arg(dir.path());
        if let Some(creds) = htpasswd {
            cmd.args(["--htpasswd", creds]);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "registry.sh: {}", stderr(&out));
        let addr = stdout(&out).trim().lines().last().unwrap().to_string();
        Registry { dir, addr }
    }

    pub fn push_test_images(&self, only: &str, creds: Option<&str>) {
        let mut cmd = Command::new(scripts().join("mk-test-images.sh"));
        cmd.args(["--only", only, &self.addr]).stdin(Stdio::null());
        if let Some(c) = creds {
            cmd.env("REGISTRY_CREDS", c);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "mk-test-images.sh: {}", stderr(&out));
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("registry.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// cubby with a private image store, state dir and auth file.
pub struct Cubby {
    pub world: common::World,
}

impl Cubby {
    pub fn new() -> Cubby {
        Cubby {
            world: common::World::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.world.dir.path().join("store")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.world.cubby();
        c.env("CUBBY_ROOT", self.root())
            .env("CUBBY_AUTH_FILE", self.world.dir.path().join("auth.json"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cubby {args:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    pub fn no_mounts_left(&self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.root().to_string_lossy().into_owned();
        assert!(!info.contains(&root), "mounts left under {root}");
    }
}
