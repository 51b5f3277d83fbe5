//! End-to-end tests of `cubby save` and `cubby load`: archives written and
//! read by the real binary, checked against skopeo (which reads and writes
//! both OCI archives and docker-save archives), as root.

mod common;
#[path = "common/images.rs"]
mod images_common;

use common::{stderr, stdout};
use images_common::{Cubby, Registry};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The tree test/layers:latest ends with (whiteouts and an opaque dir applied).
const TREE: &str = "cd /data && find . | sort && [ $(stat -c %i b.txt) = $(stat -c %i hard) ] && echo hardlinked && readlink sym";
const WANT: &str = ".\n./b.txt\n./dir\n./dir/y\n./hard\n./sym\nhardlinked\nb.txt\n";

fn tar_list(file: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tf").arg(file).output().unwrap();
    assert!(out.status.success(), "tar -tf: {}", stderr(&out));
    stdout(&out).lines().map(String::from).collect()
}

fn tar_json(file: &Path, member: &str) -> serde_json::Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(file)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -xOf {member}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (name, data offset, size) of each member of a plain tar.
fn tar_members(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= bytes.len() && bytes[off] != 0 {
        let h = &bytes[off..off + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size = usize::from_str_radix(size_field.trim_matches(['\0', ' ']), 8).unwrap();
        out.push((name, off + 512, size));
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Runs `cubby load` with `input` on stdin.
fn load_stdin(c: &Cubby, input: &[u8]) -> std::process::Output {
    let mut child = c
        .cmd(&["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A loader that gives up early closes the pipe: not our failure.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn blob_count(c: &Cubby) -> usize {
    std::fs::read_dir(c.root().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn save_rmi_prune_load_run() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox,layers", None);
    let c = Cubby::new();
    let busybox = reg.image("test/busybox:latest");
    let layers = reg.image("test/layers:latest");
    c.ok(&["pull", "-q", &busybox]);
    c.ok(&["pull", "-q", &layers]);
    let archive = c.world.dir.path().join("images.tar");
    c.ok(&["save", "-o", &archive.to_string_lossy(), &busybox, &layers]);

    // Both formats in one tar, sharing the blob files.
    let members = tar_list(&archive);
    for m in ["oci-layout", "index.json", "manifest.json"] {
        assert!(members.iter().any(|x| x == m), "{m} missing: {members:?}");
    }
    let index = tar_json(&archive, "index.json");
    let descs = index["manifests"].as_array().unwrap();
    assert_eq!(descs.len(), 2, "{index}");
    let names: Vec<&str> = descs
        .iter()
        .map(|d| {
            d["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, [busybox.as_str(), layers.as_str()]);
    for d in descs {
        assert_eq!(
            d["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        let blob = format!("blobs/sha256/{}", &d["digest"].as_str().unwrap()[7..]);
        assert!(members.contains(&blob), "{blob} missing");
    }
    let docker = tar_json(&archive, "manifest.json");
    let entries = docker.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{docker}");
    assert_eq!(entries[0]["RepoTags"][0], busybox.as_str());
    assert_eq!(entries[1]["RepoTags"][0], layers.as_str());
    assert_eq!(entries[1]["Layers"].as_array().unwrap().len(), 3);
    for e in entries {
        for path in std::iter::once(&e["Config"]).chain(e["Layers"].as_array().unwrap()) {
            let path = path.as_str().unwrap().to_string();
            assert!(path.starts_with("blobs/sha256/") && members.contains(&path));
        }
    }
    // The same archive on stdout (not a terminal here), byte for byte.
    let out = c.cmd(&["save", &busybox, &layers]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == std::fs::read(&archive).unwrap(),
        "save to stdout differs from save -o"
    );

    // Round trip through an empty store.
    c.ok(&["rmi", &busybox, &layers]);
    c.ok(&["image", "prune"]);
    assert_eq!(blob_count(&c), 0);
    let loaded = c.ok(&["load", "-i", &archive.to_string_lossy()]);
    assert_eq!(
        loaded,
        format!("Loaded image: {busybox}\nLoaded image: {layers}\n")
    );
    let list = c.ok(&["images"]);
    assert!(
        list.contains(&reg.image("test/busybox")) && list.contains(&reg.image("test/layers")),
        "{list}"
    );
    assert_eq!(
        c.ok(&["run", "--rm", "--pull", "never", &layers, "sh", "-c", TREE]),
        WANT
    );
    assert_eq!(
        c.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            &busybox,
            "sh",
            "-c",
            "echo $FOO; pwd"
        ]),
        "bar\n/home\n"
    );
    // Loading again is harmless; a gzip'd archive on stdin works too.
    let gz = Command::new("gzip")
        .arg("-c")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(gz.status.success());
    let out = load_stdin(&c, &gz.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);

    // Only the docker-save half (as an older docker would read it): names
    // from RepoTags, a manifest made for the blobs.
    let docker_only = c.world.dir.path().join("docker-only.tar");
    let py = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, tarfile\n\
             src = tarfile.open(sys.argv[1]); dst = tarfile.open(sys.argv[2], 'w')\n\
             for m in src:\n\
             \x20   if m.name not in ('index.json', 'oci-layout'):\n\
             \x20       dst.addfile(m, src.extractfile(m) if m.isfile() else None)\n\
             dst.close()\n",
        )
        .arg(&archive)
        .arg(&docker_only)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", stderr(&py));
    c.ok(&["rmi", &busybox, &layers]);
    c.ok(&["image", "prune"]);
    let loaded = c.ok(&["load", "-i", &docker_only.to_string_lossy()]);
    assert_eq!(
        loaded,
        format!("Loaded image: {busybox}\nLoaded image: {layers}\n")
    );
    assert_eq!(
        c.ok(&["run", "--rm", "--pull", "never", &layers, "sh", "-c", TREE]),
        WANT
    );

    // Saved by id: no name in the archive; loaded as a dangling image,
    // found by its id.
    let id = c.ok(&["images", "-q"]).lines().next().unwrap().to_string();
    let by_id = c.world.dir.path().join("by-id.tar");
    c.ok(&["save", "-o", &by_id.to_string_lossy(), &id]);
    c.ok(&["rmi", &busybox, &layers]);
    c.ok(&["image", "prune"]);
    let loaded = c.ok(&["load", "-i", &by_id.to_string_lossy()]);
    assert!(loaded.starts_with("Loaded image ID: sha256:"), "{loaded}");
    assert!(c.ok(&["images"]).contains("<none>"));
    assert_eq!(
        c.ok(&["run", "--rm", "--pull", "never", &id, "echo", "ok"]),
        "ok\n"
    );
    c.ok(&["rmi", &id]);
    c.no_mounts_left();
}

#[test]
fn skopeo_reads_our_archives_and_we_read_its() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox,layers", None);
    let c = Cubby::new();
    let layers = reg.image("test/layers:latest");
    c.ok(&["pull", "-q", &layers]);
    let archive = c.world.dir.path().join("layers.tar");
    c.ok(&["save", "-o", &archive.to_string_lossy(), &layers]);

    // skopeo reads it as an OCI archive and pushes it; cubby pulls it back.
    let copied = reg.image("copied/layers:v1");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}:latest", archive.display()))
        .arg(format!("docker://{copied}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo oci-archive: {}", stderr(&out));
    c.ok(&["pull", "-q", &copied]);
    assert_eq!(c.ok(&["run", "--rm", &copied, "sh", "-c", TREE]), WANT);
    // ... and as a docker-save archive (gzip layers as they are).
    let oci_dir = c.world.dir.path().join("from-docker-archive");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:x", oci_dir.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo docker-archive: {}",
        stderr(&out)
    );

    // A docker-archive written by skopeo: uncompressed `<hex>.tar` layers,
    // a `<hex>.json` config, `<id>/layer.tar` symlinks.
    let theirs = c.world.dir.path().join("skopeo.tar");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}", reg.image("test/busybox:latest")))
        .arg(format!(
            "docker-archive:{}:skopeo/busybox:v1",
            theirs.display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo docker-archive: {}",
        stderr(&out)
    );
    assert_eq!(
        c.ok(&["load", "-i", &theirs.to_string_lossy()]),
        "Loaded image: skopeo/busybox:v1\n"
    );
    assert_eq!(
        c.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "skopeo/busybox:v1",
            "sh",
            "-c",
            "echo $FOO"
        ]),
        "bar\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&c.ok(&["image", "inspect", "skopeo/busybox:v1"])).unwrap();
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    c.no_mounts_left();
}

#[test]
fn corrupt_archives_leave_the_store_alone() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox", None);
    let c = Cubby::new();
    let busybox = reg.image("test/busybox:latest");
    c.ok(&["pull", "-q", &busybox]);
    let archive = c.world.dir.path().join("busybox.tar");
    c.ok(&["save", "-o", &archive.to_string_lossy(), &busybox]);
    c.ok(&["rmi", &busybox]);
    c.ok(&["image", "prune"]);
    let images_before = c.ok(&["images"]);
    let records = std::fs::read(c.root().join("images.json")).ok();

    let good = std::fs::read(&archive).unwrap();
    let layer = tar_members(&good)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("blobs/sha256/"))
        .max_by_key(|(_, _, size)| *size)
        .unwrap();
    let mut flipped = good.clone();
    flipped[layer.1 + layer.2 / 2] ^= 0x01;
    let gz = Command::new("gzip")
        .arg("-c")
        .arg(&archive)
        .output()
        .unwrap()
        .stdout;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped byte", flipped, "digest mismatch"),
        (
            "truncated",
            good[..layer.1 + layer.2 / 2].to_vec(),
            "truncated",
        ),
        ("truncated gzip", gz[..gz.len() / 2].to_vec(), "archive"),
        ("not a tar", b"hello, world\n".to_vec(), "archive"),
        ("empty", Vec::new(), "empty"),
    ];
    for (what, bytes, expect) in cases {
        let out = load_stdin(&c, &bytes);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.to_lowercase().contains(expect), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_eq!(stdout(&out), "", "{what}");
        assert_eq!(c.ok(&["images"]), images_before, "{what}");
        assert_eq!(
            std::fs::read(c.root().join("images.json")).ok(),
            records,
            "{what}"
        );
        assert_eq!(blob_count(&c), 0, "{what}: blobs stored");
    }
    // The file variant names the file; save of an unknown image fails cleanly
    // and leaves no file behind.
    let bad = c.world.dir.path().join("bad.tar");
    std::fs::write(&bad, b"nope").unwrap();
    let out = c.run(&["load", "-i", &bad.to_string_lossy()]);
    assert!(!out.status.success() && stderr(&out).contains("bad.tar"));
    let missing = c.world.dir.path().join("missing.tar");
    let out = c.run(&["save", "-o", &missing.to_string_lossy(), "nothing:here"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));
    assert!(!missing.exists());
    // The good archive still loads.
    assert_eq!(
        c.ok(&["load", "-i", &archive.to_string_lossy()]),
        format!("Loaded image: {busybox}\n")
    );
}
