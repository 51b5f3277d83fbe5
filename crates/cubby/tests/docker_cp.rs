//! `docker cp` for real: the docker CLI (client only) copying in and out of
//! running and stopped containers of a `cubby daemon`, and attempts to
//! escape the container through symlinks and crafted archives. Needs root,
//! cgroups, a static busybox and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon as Harness};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The entries of a tar: (name, type, content or link target).
fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            if kind == tar::EntryType::Symlink {
                data = e.link_name_bytes().unwrap().into_owned();
            } else {
                e.read_to_end(&mut data).unwrap();
            }
            (name, kind, data)
        })
        .collect()
}

fn docker_bytes(h: &Harness, args: &[&str]) -> Vec<u8> {
    let out = h.docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A raw HTTP request with a binary body; returns the status line, the
/// headers and the body.
fn http_raw(h: &Harness, method: &str, path: &str, body: &[u8]) -> (String, String, Vec<u8>) {
    let mut s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let body = resp.get(split + 4..).unwrap_or_default().to_vec();
    let status = head.lines().next().unwrap_or("").to_string();
    (status, head, body)
}

/// One raw tar entry with any name (the `tar` crate's builder refuses
/// `..`, which is what these archives are about).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let b = h.as_old_mut();
        b.name[..name.len()].copy_from_slice(name.as_bytes());
        b.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0; 1024]);
    t
}

#[test]
fn cp_in_and_out_of_a_running_container() {
    let h = Harness::start("cp-run");
    h.import_busybox();
    let script = "mkdir -p /work/tree/sub /incoming && echo hello > /work/tree/a && \
        chmod 750 /work/tree/a && ln -s a /work/tree/link && echo inner > /work/tree/sub/b && \
        echo ready > /work/ready && \
        until [ -f /incoming/note.txt ]; do sleep 0.1; done; echo got:$(cat /incoming/note.txt); \
        sleep 1000";
    h.ok(&["run", "-d", "--name", "c1", "busybox", "sh", "-c", script]);
    eventually("the container made its files", || {
        h.docker(&["cp", "c1:/work/ready", "-"])
            .status
            .success()
            .then_some(())
    });

    // `docker cp c:/file -`: a tar with one entry named after the file.
    let tar = docker_bytes(&h, &["cp", "c1:/work/tree/a", "-"]);
    let e = entries(&tar);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "a");
    assert_eq!(e[0].2, b"hello\n");

    // A directory tree to the host: contents, modes, symlinks.
    let host = h.tmp.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let out_dir = host.join("tree-out");
    h.ok(&["cp", "c1:/work/tree", out_dir.to_str().unwrap()]);
    assert_eq!(std::fs::read(out_dir.join("a")).unwrap(), b"hello\n");
    assert_eq!(std::fs::read(out_dir.join("sub/b")).unwrap(), b"inner\n");
    let mode = std::fs::metadata(out_dir.join("a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    assert_eq!(
        std::fs::read_link(out_dir.join("link")).unwrap(),
        Path::new("a")
    );

    // `dir/.`: the contents, into a directory that exists.
    let dot_out = host.join("dot-out");
    std::fs::create_dir_all(&dot_out).unwrap();
    h.ok(&["cp", "c1:/work/tree/.", dot_out.to_str().unwrap()]);
    assert_eq!(std::fs::read(dot_out.join("sub/b")).unwrap(), b"inner\n");

    // ... and back into the container, then out again to compare.
    h.ok(&["cp", out_dir.to_str().unwrap(), "c1:/work/copy"]);
    let tar = docker_bytes(&h, &["cp", "c1:/work/copy", "-"]);
    let mut names: Vec<(String, tar::EntryType, Vec<u8>)> = entries(&tar);
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let summary: Vec<(&str, &[u8])> = names.iter().map(|(n, _, d)| (n.as_str(), &d[..])).collect();
    assert_eq!(
        summary,
        [
            ("copy/", &b""[..]),
            ("copy/a", b"hello\n"),
            ("copy/link", b"a"),
            ("copy/sub/", b""),
            ("copy/sub/b", b"inner\n"),
        ]
    );
    let a = names.iter().find(|(n, _, _)| n == "copy/a").unwrap();
    assert_eq!(a.1, tar::EntryType::Regular);

    // Into the running container: it sees the file (through its own root).
    let note = host.join("note.txt");
    std::fs::write(&note, "from the host\n").unwrap();
    h.ok(&["cp", note.to_str().unwrap(), "c1:/incoming/"]);
    eventually("the container read the copied file", || {
        let out = h.ok(&["logs", "c1"]);
        out.contains("got:from the host").then_some(())
    });

    // -a: ownership of the container's user (root here) and stdin tars.
    std::fs::write(host.join("owned"), "x").unwrap();
    std::os::unix::fs::chown(host.join("owned"), Some(4242), Some(4343)).unwrap();
    h.ok(&["cp", host.join("owned").to_str().unwrap(), "c1:/work/"]);
    h.ok(&[
        "cp",
        "-a",
        host.join("owned").to_str().unwrap(),
        "c1:/work/owned-a",
    ]);
    let tar = docker_bytes(&h, &["cp", "c1:/work", "-"]);
    let mut ar = tar::Archive::new(&tar[..]);
    let mut owners = std::collections::HashMap::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let n = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        owners.insert(n, (e.header().uid().unwrap(), e.header().gid().unwrap()));
    }
    assert_eq!(
        owners["work/owned"],
        (4242, 4343),
        "the archive's owner is kept"
    );
    assert_eq!(owners["work/owned-a"], (0, 0), "-a: the container's user");

    // The whole root of a running container: files, but not the kernel's
    // views mounted in it (/proc, /sys), and it ends.
    let tar = docker_bytes(&h, &["cp", "c1:/", "-"]);
    let all: Vec<String> = entries(&tar).into_iter().map(|(n, _, _)| n).collect();
    assert!(
        all.iter().any(|n| n == "bin/busybox"),
        "{:?}",
        &all[..all.len().min(20)]
    );
    assert!(all.iter().any(|n| n == "work/tree/sub/b"));
    assert!(all.iter().any(|n| n == "proc/"));
    assert!(
        !all.iter().any(|n| n.starts_with("proc/1/")),
        "/proc was walked"
    );

    // Missing paths: Docker's messages.
    let err = h.fails(&["cp", "c1:/nope", "-"]);
    assert!(
        err.contains("Could not find the file /nope in container c1"),
        "{err}"
    );
    let err = h.fails(&["cp", note.to_str().unwrap(), "c1:/nope/deeper/"]);
    assert!(
        err.contains("Could not find the file") || err.contains("no such"),
        "{err}"
    );
    let err = h.fails(&["cp", "nothere:/x", "-"]);
    assert!(err.contains("No such container"), "{err}");
    // A file where a directory is needed.
    let (status, _, body) = http_raw(
        &h,
        "PUT",
        "/v1.43/containers/c1/archive?path=/work/tree/a",
        &end(Vec::new()),
    );
    assert!(
        status.contains("400"),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    // A directory replaced by a file is refused, as the CLI asks.
    let mut t = Vec::new();
    raw_entry(&mut t, "tree", tar::EntryType::Regular, "", b"x");
    let (status, _, body) = http_raw(
        &h,
        "PUT",
        "/v1.43/containers/c1/archive?path=/work&noOverwriteDirNonDir=1",
        &end(t),
    );
    assert!(
        status.contains("409"),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );

    // HEAD: the stat header as the CLI decodes it.
    let (status, head, _) = http_raw(
        &h,
        "HEAD",
        "/containers/c1/archive?path=/work/tree/link",
        b"",
    );
    assert!(status.contains("200"), "{status}");
    let line = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-docker-container-path-stat:")
        })
        .unwrap_or_else(|| panic!("no stat header: {head}"));
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(line.split_once(':').unwrap().1.trim())
        .unwrap();
    let stat: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(stat["name"], "link");
    assert_eq!(stat["linkTarget"], "/work/tree/a");
    assert_eq!(
        stat["mode"].as_u64().unwrap() & (1 << 27),
        1 << 27,
        "{stat}"
    );

    // Bytes after the archive's end (Go's tar writer pads; clients stream
    // in big writes) are read, so the client gets the answer, not EPIPE.
    let mut t = Vec::new();
    raw_entry(&mut t, "padded.txt", tar::EntryType::Regular, "", b"pad\n");
    let mut t = end(t);
    t.resize(t.len() + (8 << 20), 0);
    let (status, _, body) = http_raw(&h, "PUT", "/v1.43/containers/c1/archive?path=/work", &t);
    assert!(
        status.contains("200"),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );

    // A paused container: its frozen process still shows its root.
    h.ok(&["pause", "c1"]);
    let tar = docker_bytes(&h, &["cp", "c1:/work/tree/a", "-"]);
    assert_eq!(entries(&tar)[0].2, b"hello\n");
    h.ok(&["cp", note.to_str().unwrap(), "c1:/work/"]);
    let tar = docker_bytes(&h, &["cp", "c1:/work/note.txt", "-"]);
    assert_eq!(entries(&tar)[0].2, b"from the host\n");
    h.ok(&["unpause", "c1"]);

    h.ok(&["rm", "-f", "c1"]);
}

#[test]
fn cp_out_of_and_into_a_stopped_container() {
    let h = Harness::start("cp-stopped");
    h.import_busybox();
    let id = h.ok(&[
        "run",
        "-d",
        "--name",
        "exam",
        "busybox",
        "sh",
        "-c",
        "echo essay > /home/student/answer.txt && mkdir /home/student/src && echo 'print(1)' > /home/student/src/main.py",
    ]);
    let id = id.trim().to_string();
    assert_eq!(h.ok(&["wait", "exam"]).trim(), "0");

    // The snapshot is mounted again when nothing has it mounted.
    let rootfs = h.root().join("containers").join(&id).join("rootfs");
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    assert!(!rootfs.join("bin").exists(), "the rootfs is unmounted");

    let saved = h.tmp.path().join("saved");
    h.ok(&["cp", "exam:/home/student", saved.to_str().unwrap()]);
    assert_eq!(std::fs::read(saved.join("answer.txt")).unwrap(), b"essay\n");
    assert_eq!(
        std::fs::read(saved.join("src/main.py")).unwrap(),
        b"print(1)\n"
    );

    // Into the stopped container, then out again.
    let fix = h.tmp.path().join("feedback.txt");
    std::fs::write(&fix, "well done\n").unwrap();
    h.ok(&["cp", fix.to_str().unwrap(), "exam:/home/student/"]);
    let tar = docker_bytes(&h, &["cp", "exam:/home/student/feedback.txt", "-"]);
    assert_eq!(entries(&tar)[0].2, b"well done\n");
    // Starter files into a created, never started container (how a
    // sandbox is seeded), which then sees them.
    h.ok(&[
        "create",
        "--name",
        "seeded",
        "busybox",
        "cat",
        "/home/student/feedback.txt",
    ]);
    h.ok(&["cp", fix.to_str().unwrap(), "seeded:/home/student/"]);
    h.ok(&["start", "seeded"]);
    assert_eq!(h.ok(&["wait", "seeded"]).trim(), "0");
    assert_eq!(h.ok(&["logs", "seeded"]), "well done\n");
    h.ok(&["rm", "seeded"]);

    // docker-py's get_archive/put_archive on the stopped container.
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import docker, io, sys, tarfile\n\
             c = docker.DockerClient(base_url='unix://' + sys.argv[1]).containers.get('exam')\n\
             stream, stat = c.get_archive('/home/student/answer.txt')\n\
             t = tarfile.open(fileobj=io.BytesIO(b''.join(stream)))\n\
             assert t.getnames() == ['answer.txt'], t.getnames()\n\
             assert t.extractfile('answer.txt').read() == b'essay\\n'\n\
             assert stat['name'] == 'answer.txt' and stat['size'] == 6, stat\n\
             buf = io.BytesIO(); tw = tarfile.open(fileobj=buf, mode='w')\n\
             info = tarfile.TarInfo('grade.txt'); info.size = 3\n\
             tw.addfile(info, io.BytesIO(b'A+\\n')); tw.close()\n\
             assert c.put_archive('/home/student', buf.getvalue())\n\
             print('docker-py ok')\n",
        )
        .arg(&h.socket)
        .output()
        .unwrap();
    assert!(
        py.status.success() && String::from_utf8_lossy(&py.stdout).contains("docker-py ok"),
        "docker-py (pip install docker): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let tar = docker_bytes(&h, &["cp", "exam:/home/student/grade.txt", "-"]);
    assert_eq!(entries(&tar)[0].2, b"A+\n");
    h.ok(&["rm", "exam"]);
}

#[test]
fn cp_never_leaves_the_container() {
    let h = Harness::start("cp-escape");
    h.import_busybox();
    // A host file the container must neither read nor overwrite; the
    // stopped container's rootfs is <tmp>/data/containers/<id>/rootfs, so
    // `../../../../..` from its /work would be <tmp> if followed on the host.
    let tmp = h.tmp.path().to_path_buf();
    let marker = tmp.join("marker");
    std::fs::write(&marker, "HOST-SECRET").unwrap();
    let script = format!(
        "mkdir /work && ln -s / /work/root-link && ln -s ../../../../.. /work/up && \
         ln -s {} /work/abs-marker && echo inside > /marker",
        marker.display()
    );
    h.ok(&[
        "run", "-d", "--name", "evil", "busybox", "sh", "-c", &script,
    ]);
    assert_eq!(h.ok(&["wait", "evil"]).trim(), "0");
    // Running ones too: the same links, resolved in /proc/<pid>/root.
    h.ok(&[
        "run",
        "-d",
        "--name",
        "evil-run",
        "busybox",
        "sh",
        "-c",
        &format!("{script} && sleep 1000"),
    ]);
    eventually("the running container made its links", || {
        h.docker(&["cp", "evil-run:/work/up", "-"])
            .status
            .success()
            .then_some(())
    });

    for c in ["evil", "evil-run"] {
        // Sources through the links: the container's own files, never the host's.
        for src in [
            "/work/up/marker",
            "/work/root-link/marker",
            "/work/up/../../../marker",
        ] {
            let tar = docker_bytes(&h, &["cp", &format!("{c}:{src}"), "-"]);
            assert_eq!(entries(&tar)[0].2, b"inside\n", "{c}:{src}");
        }
        // The absolute link names the host path, which does not exist inside.
        let err = h.fails(&["cp", "-L", &format!("{c}:/work/abs-marker"), "-"]);
        assert!(err.contains("Could not find the file"), "{c}: {err}");
        let err = h.fails(&["cp", &format!("{c}:/work/up{}", marker.display()), "-"]);
        assert!(err.contains("Could not find the file"), "{c}: {err}");
        // The link itself comes out as a link.
        let tar = docker_bytes(&h, &["cp", &format!("{c}:/work/up"), "-"]);
        assert_eq!(entries(&tar)[0].1, tar::EntryType::Symlink);

        // Destinations through the links land inside the container.
        std::fs::create_dir_all(tmp.join("src")).unwrap();
        let f = tmp.join("src/payload");
        std::fs::write(&f, "PAYLOAD").unwrap();
        h.ok(&["cp", f.to_str().unwrap(), &format!("{c}:/work/up/")]);
        h.ok(&[
            "cp",
            f.to_str().unwrap(),
            &format!("{c}:/work/root-link/tmp/"),
        ]);
        for p in ["/payload", "/tmp/payload"] {
            let tar = docker_bytes(&h, &["cp", &format!("{c}:{p}"), "-"]);
            assert_eq!(entries(&tar)[0].2, b"PAYLOAD", "{c}:{p}");
        }
        let err = h.fails(&[
            "cp",
            f.to_str().unwrap(),
            &format!("{c}:/work/up{}/", tmp.display()),
        ]);
        assert!(!err.is_empty());

        // Crafted archives through the raw API.
        let put = |name: &str, t: Vec<u8>| {
            let (status, _, body) = http_raw(
                &h,
                "PUT",
                &format!("/v1.43/containers/{c}/archive?path=/work"),
                &end(t),
            );
            (
                status,
                String::from_utf8_lossy(&body).into_owned(),
                name.to_string(),
            )
        };
        let reg = tar::EntryType::Regular;
        let mut t = Vec::new();
        raw_entry(&mut t, "../../../../../../pwned-dotdot", reg, "", b"PWNED");
        let (status, body, _) = put("dotdot", t);
        assert!(status.contains("400"), "{status}: {body}");
        assert!(body.contains("refused"), "{body}");

        let abs = format!("{}/pwned-abs", tmp.display());
        let mut t = Vec::new();
        raw_entry(&mut t, &abs, reg, "", b"CONTAINED");
        let (status, body, _) = put("abs", t);
        assert!(status.contains("200"), "{status}: {body}");
        let tar = docker_bytes(&h, &["cp", &format!("{c}:/work{abs}"), "-"]);
        assert_eq!(entries(&tar)[0].2, b"CONTAINED");

        for (i, target) in ["/", "../../../../..", tmp.to_str().unwrap()]
            .iter()
            .enumerate()
        {
            let mut t = Vec::new();
            let link = format!("trick{i}");
            raw_entry(&mut t, &link, tar::EntryType::Symlink, target, b"");
            raw_entry(&mut t, &format!("{link}/pwned-link"), reg, "", b"PWNED");
            let (status, body, _) = put("symlink-then-file", t);
            assert!(status.contains("400"), "{c} {target}: {status}: {body}");
        }
        // The container's own escaping link as an entry's parent.
        let mut t = Vec::new();
        raw_entry(&mut t, "up/pwned-up", reg, "", b"PWNED");
        let (status, body, _) = put("existing link", t);
        assert!(status.contains("400"), "{status}: {body}");
        // A hard link to a host file.
        let mut t = Vec::new();
        raw_entry(
            &mut t,
            "hard",
            tar::EntryType::Link,
            "../../../../../marker",
            b"",
        );
        let (status, body, _) = put("hard link", t);
        assert!(status.contains("400"), "{status}: {body}");
    }

    // Nothing on the host was read or written.
    assert_eq!(std::fs::read(&marker).unwrap(), b"HOST-SECRET");
    for stray in [
        "pwned-dotdot",
        "pwned-abs",
        "pwned-link",
        "pwned-up",
        "hard",
    ] {
        let mut found = Vec::new();
        find_named(&tmp, stray, &h.root().join("containers"), &mut found);
        assert!(found.is_empty(), "{stray} written on the host: {found:?}");
    }
    assert!(!tmp.join("payload").exists(), "payload written on the host");
    h.ok(&["rm", "-f", "evil", "evil-run"]);
}

/// Files named `name` under `dir`, not looking inside `skip` (containers'
/// own files, where contained copies are expected).
fn find_named(dir: &Path, name: &str, skip: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        if e.file_name() == name {
            out.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_named(&p, name, skip, out);
        }
    }
}
