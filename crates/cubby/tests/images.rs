//! End-to-end tests of images: a real docker-registry on 127.0.0.1, images
//! pushed by skopeo (scripts/mk-test-images.sh) and by `cubby push`, pulled
//! and run by the real `cubby` binary.

mod common;
#[path = "common/images.rs"]
mod images_common;

use common::stderr;
use images_common::{Cubby, Registry};
use std::process::{Command, Stdio};

#[test]
fn pull_run_and_image_config() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox", None);
    let c = Cubby::new();
    let img = reg.image("test/busybox:latest");
    c.ok(&["pull", "-q", &img]);
    let list = c.ok(&["images"]);
    assert!(
        list.contains(&reg.image("test/busybox")) && list.contains("latest"),
        "{list}"
    );
    // Env and WorkingDir come from the image config; -e overrides.
    let out = c.ok(&["run", "--rm", &img, "sh", "-c", "echo $FOO $PATH; pwd"]);
    assert_eq!(
        out,
        "bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/home\n"
    );
    let out = c.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=mine",
        &img,
        "sh",
        "-c",
        "echo $FOO",
    ]);
    assert_eq!(out, "mine\n");
    // The seed example: the current directory mounted and used as workdir.
    let here = c.world.dir.path().join("project");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::write(here.join("main.py"), "print(1)").unwrap();
    let v = format!("{}:/app", here.display());
    assert_eq!(
        c.ok(&[
            "run",
            "--rm",
            "-v",
            &v,
            "--workdir=/app",
            &img,
            "ls",
            "/app"
        ]),
        "main.py\n"
    );
    // A container's writes stay in its own upper dir.
    c.ok(&["run", "--rm", &img, "sh", "-c", "echo x > /etc/changed"]);
    assert_eq!(
        c.ok(&[
            "run",
            "--rm",
            &img,
            "sh",
            "-c",
            "ls /etc/changed 2>/dev/null || echo clean"
        ]),
        "clean\n"
    );
    // Pull again: already up to date.
    let out = c.run(&["pull", &img]);
    assert!(
        out.status.success() && stderr(&out).contains("up to date"),
        "{}",
        stderr(&out)
    );
    c.no_mounts_left();
    assert!(
        std::fs::read_dir(c.root().join("containers"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

#[test]
fn layers_whiteouts_formats_and_platforms() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox,layers,multiarch,zstd", None);
    let c = Cubby::new();
    let tree = "cd /data && find . | sort && [ $(stat -c %i b.txt) = $(stat -c %i hard) ] && echo hardlinked && readlink sym";
    let want = ".\n./b.txt\n./dir\n./dir/y\n./hard\n./sym\nhardlinked\nb.txt\n";
    for tag in ["test/layers:latest", "test/layers:umoci"] {
        assert_eq!(
            c.ok(&["run", "--rm", &reg.image(tag), "sh", "-c", tree]),
            want,
            "{tag}"
        );
    }
    // Docker schema2 and zstd layers.
    for tag in ["test/busybox:docker", "test/zstd:latest"] {
        assert_eq!(
            c.ok(&["run", "--rm", &reg.image(tag), "echo", "ok"]),
            "ok\n",
            "{tag}"
        );
    }
    // An index: the host's platform by default, another with --platform.
    let multi = reg.image("test/multiarch:latest");
    assert_eq!(c.ok(&["run", "--rm", &multi, "cat", "/arch"]), "amd64\n");
    let other = format!("{}/test/multiarch:arm", reg.addr);
    c.ok(&["pull", "-q", "--platform", "linux/arm64", &multi]);
    c.ok(&["tag", &multi, &other]);
    assert_eq!(
        c.ok(&["run", "--rm", "--pull", "never", &other, "cat", "/arch"]),
        "arm64\n"
    );
    let out = c.run(&["pull", "--platform", "linux/s390x", &multi]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("linux/s390x"), "{}", stderr(&out));
    c.no_mounts_left();
}

#[test]
fn registry_errors_are_one_clear_line() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox", None);
    let c = Cubby::new();
    for (image, expect) in [
        (reg.image("test/busybox:nope"), "not found"),
        (reg.image("test/nothing:latest"), "not found"),
        ("127.0.0.1:1/x/y:z".to_string(), "127.0.0.1:1"),
        ("Bad_Reference".to_string(), "invalid reference"),
    ] {
        let out = c.run(&["pull", &image]);
        assert!(!out.status.success(), "{image}");
        let err = stderr(&out);
        assert!(err.to_lowercase().contains(expect), "{image}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{image}: {err}");
        assert!(!err.contains("panicked"));
    }
    // `run` of a missing image with --pull=never, and the store still works.
    let out = c.run(&[
        "run",
        "--rm",
        "--pull",
        "never",
        &reg.image("test/busybox:latest"),
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    c.ok(&["images"]);
}

#[test]
fn auth_login_logout() {
    let reg = Registry::start(Some("student:s3cret"));
    reg.push_test_images("busybox", Some("student:s3cret"));
    let c = Cubby::new();
    let img = reg.image("test/busybox:latest");
    let out = c.run(&["pull", &img]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cubby login"), "{}", stderr(&out));
    let out = c.run(&["login", "-u", "student", "-p", "wrong", &reg.addr]);
    assert!(!out.status.success(), "wrong password accepted");
    assert!(
        !c.world.dir.path().join("auth.json").exists()
            || !std::fs::read_to_string(c.world.dir.path().join("auth.json"))
                .unwrap()
                .contains(&reg.addr)
    );
    let mut login = c.cmd(&["login", "-u", "student", "--password-stdin", &reg.addr]);
    login
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "login: {}", stderr(&out));
    c.ok(&["pull", "-q", &img]);
    c.ok(&["logout", &reg.addr]);
    c.ok(&["rmi", &img]);
    assert!(
        !c.run(&["pull", &img]).status.success(),
        "pull worked after logout"
    );
}

#[test]
fn import_push_tag_rmi_prune() {
    let reg = Registry::start(None);
    let c = Cubby::new();
    // A rootfs tarball, gzip-compressed, imported as an image.
    let tarball = c.world.dir.path().join("rootfs.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(c.world.rootfs())
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let mine = reg.image("class/python:1");
    c.ok(&["import", &tarball.to_string_lossy(), &mine]);
    assert_eq!(
        c.ok(&["run", "--rm", &mine, "echo", "imported"]),
        "imported\n"
    );
    c.ok(&["push", &mine]);
    // Pushing again skips every blob and still succeeds.
    c.ok(&["push", &mine]);
    let alias = reg.image("class/python:latest");
    c.ok(&["tag", &mine, &alias]);
    // The engine's tag rule, as the daemon applies it.
    let digest = format!("{alias}@sha256:{}", "0".repeat(64));
    let out = c.run(&["tag", &mine, &digest]);
    assert!(
        !out.status.success() && stderr(&out).contains("digest"),
        "{}",
        stderr(&out)
    );
    let out = c.run(&["tag", "no-such-image:1", &alias]);
    assert!(
        !out.status.success() && stderr(&out).contains("No such image: no-such-image:1"),
        "{}",
        stderr(&out)
    );
    c.ok(&["push", &alias]);
    // rmi refuses while a container uses the image, unless -f.
    c.ok(&["run", "--name", "keeper", &mine, "true"]);
    let out = c.run(&["rmi", &mine]);
    assert!(
        !out.status.success() && stderr(&out).contains("keeper"),
        "{}",
        stderr(&out)
    );
    c.ok(&["rm", "keeper"]);
    c.ok(&["rmi", &mine, &alias]);
    assert!(!c.ok(&["images"]).contains("class/python"));
    let pruned = c.ok(&["image", "prune"]);
    assert!(pruned.contains("Deleted"), "{pruned}");
    let blobs = std::fs::read_dir(c.root().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "prune left blobs of removed images");
    // Pull back what we pushed, from a cold store.
    c.ok(&["pull", "-q", &alias]);
    assert_eq!(
        c.ok(&["run", "--rm", &alias, "cat", "/etc/group"])
            .lines()
            .next(),
        Some("root:x:0:")
    );
    // inspect shows the config.
    let inspect: serde_json::Value =
        serde_json::from_str(&c.ok(&["image", "inspect", &alias])).unwrap();
    assert_eq!(inspect[0]["Os"], "linux");
    c.no_mounts_left();
}

#[test]
fn concurrent_pulls_share_the_work() {
    let reg = Registry::start(None);
    reg.push_test_images("layers", None);
    let c = Cubby::new();
    let img = reg.image("test/layers:latest");
    let children: Vec<_> = (0..3)
        .map(|_| {
            c.cmd(&["pull", "-q", &img])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let layers = std::fs::read_dir(c.root().join("layers")).unwrap().count();
    assert_eq!(layers, 3, "each layer unpacked once");
    c.ok(&["run", "--rm", &img, "cat", "/data/b.txt"]);
}

#[test]
fn a_killed_pull_restarts_cleanly() {
    let reg = Registry::start(None);
    reg.push_test_images("big", None);
    let c = Cubby::new();
    let img = reg.image("test/big:latest");
    let mut child = c
        .cmd(&["pull", "-q", &img])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let it get into the layers, then kill it hard.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(c.root().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();
    // Nothing recorded by the killed pull; the next one completes.
    assert!(!c.ok(&["images"]).contains("test/big"));
    c.ok(&["pull", "-q", &img]);
    assert_eq!(
        c.ok(&["run", "--rm", &img, "sh", "-c", "ls /big | wc -l"])
            .trim(),
        "4"
    );
    let leftovers: Vec<_> = std::fs::read_dir(c.root().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "tmp/ not cleaned: {leftovers:?}");
}
