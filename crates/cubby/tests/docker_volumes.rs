//! Volumes, bind mounts and tmpfs mounts through the real `docker` CLI
//! (and docker-py) against `cubby daemon`. Needs root, cgroups, a static
//! busybox, /usr/local/bin/docker and python3 with the `docker` package.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::Daemon as Harness;
use serde_json::Value;
use std::path::Path;

/// `docker run -d --name NAME ARGS...`, `docker wait`, then the exit code
/// and the logs (stdout then stderr).
fn run(h: &Harness, name: &str, args: &[&str]) -> (i32, String) {
    let mut full = vec!["run", "-d", "--name", name];
    full.extend_from_slice(args);
    h.ok(&full);
    let code = h.ok(&["wait", name]);
    let code: i32 = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("docker wait {name}: {code:?}"));
    let out = h.docker(&["logs", name]);
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, logs)
}

fn inspect(h: &Harness, what: &[&str]) -> Value {
    let out = h.ok(what);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what:?}: {e}: {out}"))
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

#[test]
fn volume_commands_create_ls_inspect_rm_prune() {
    let h = Harness::start("vol-cli");
    assert_eq!(h.ok(&["volume", "create", "v1"]).trim(), "v1");
    // Creating it again returns the same volume.
    assert_eq!(h.ok(&["volume", "create", "v1"]).trim(), "v1");
    h.ok(&["volume", "create", "--label", "tier=db", "dbvol"]);
    let anon = h.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(anon.len(), 64, "{anon}");

    let ls = h.ok(&["volume", "ls"]);
    assert!(ls.contains("DRIVER") && ls.contains("VOLUME NAME"), "{ls}");
    for v in ["v1", "dbvol", anon.as_str()] {
        assert!(ls.contains(v), "{v} missing: {ls}");
    }
    assert!(ls.contains("local"), "{ls}");
    let q = |filter: &str| h.ok(&["volume", "ls", "-q", "--filter", filter]);
    assert_eq!(lines(&q("label=tier=db")), ["dbvol"]);
    assert_eq!(lines(&q("label=tier")), ["dbvol"]);
    assert_eq!(lines(&q("name=v1")), ["v1"]);
    assert_eq!(lines(&q("dangling=true")).len(), 3);
    assert!(lines(&q("dangling=false")).is_empty());
    let err = h.fails(&["volume", "ls", "--filter", "color=red"]);
    assert!(err.contains("invalid filter 'color'"), "{err}");

    let doc = inspect(&h, &["volume", "inspect", "v1"]);
    assert_eq!(doc[0]["Name"], "v1");
    assert_eq!(doc[0]["Driver"], "local");
    assert_eq!(doc[0]["Scope"], "local");
    let mountpoint = h.root().join("volumes/v1/_data");
    assert_eq!(doc[0]["Mountpoint"], mountpoint.to_str().unwrap());
    assert!(mountpoint.is_dir());
    assert!(doc[0]["CreatedAt"].as_str().is_some_and(|t| t.len() > 18));
    let doc = inspect(&h, &["volume", "inspect", &anon]);
    assert_eq!(doc[0]["Labels"]["com.docker.volume.anonymous"], "");
    let doc = inspect(&h, &["volume", "inspect", "dbvol"]);
    assert_eq!(doc[0]["Labels"]["tier"], "db");

    // Errors as Docker words them.
    let err = h.fails(&["volume", "inspect", "nosuch"]);
    assert!(err.contains("no such volume"), "{err}");
    let err = h.fails(&["volume", "create", "bad/name"]);
    assert!(err.contains("includes invalid characters"), "{err}");
    let err = h.fails(&["volume", "create", "-d", "nfs", "n1"]);
    assert!(err.contains("plugin \"nfs\" not found"), "{err}");
    let err = h.fails(&["volume", "create", "-o", "type=nfs", "o1"]);
    assert!(err.contains("not supported"), "{err}");
    let err = h.fails(&["volume", "rm", "nosuch"]);
    assert!(err.contains("no such volume"), "{err}");
    h.ok(&["volume", "rm", "-f", "nosuch"]);
    let (status, body) = h.http("GET", "/v1.43/volumes/nosuch");
    assert!(status.contains("404"), "{status}: {body}");

    // A volume mounted by a container (running or exited) is not removed.
    h.import_busybox();
    let id = h.ok(&[
        "run", "-d", "--name", "user", "-v", "v1:/data", "busybox", "sleep", "30",
    ]);
    let id = id.trim();
    let err = h.fails(&["volume", "rm", "v1"]);
    assert!(
        err.contains("volume is in use") && err.contains(id),
        "{err}"
    );
    let err = h.fails(&["volume", "rm", "-f", "v1"]);
    assert!(err.contains("volume is in use"), "{err}");
    assert_eq!(lines(&q("dangling=false")), ["v1"]);
    h.ok(&["kill", "user"]);
    h.ok(&["wait", "user"]);
    let err = h.fails(&["volume", "rm", "v1"]);
    assert!(err.contains(id), "{err}");
    h.ok(&["rm", "user"]);
    assert_eq!(h.ok(&["volume", "rm", "v1"]).trim(), "v1");
    assert!(!h.root().join("volumes/v1").exists());

    // Prune: anonymous volumes only, unless --all.
    let out = h.ok(&["volume", "prune", "-f"]);
    assert!(out.contains(&anon) && !out.contains("dbvol"), "{out}");
    assert_eq!(lines(&h.ok(&["volume", "ls", "-q"])), ["dbvol"]);
    let out = h.ok(&[
        "volume",
        "prune",
        "-f",
        "--all",
        "--filter",
        "label=tier=web",
    ]);
    assert!(!out.contains("dbvol"), "{out}");
    let out = h.ok(&["volume", "prune", "-f", "--all"]);
    assert!(out.contains("dbvol"), "{out}");
    assert!(h.ok(&["volume", "ls", "-q"]).trim().is_empty());

    // docker-py.
    let script = format!(
        r#"
import docker
c = docker.DockerClient(base_url="unix://{}")
v = c.volumes.create(name="py1", labels={{"made": "py"}})
assert v.name == "py1", v.attrs
assert v.attrs["Labels"] == {{"made": "py"}}, v.attrs
names = [x.name for x in c.volumes.list()]
assert names == ["py1"], names
c.volumes.get("py1").remove()
assert c.volumes.list() == []
print("ok")
"#,
        h.socket.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 (with the docker package) must be installed");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "docker-py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn volumes_carry_data_and_image_content() {
    let mut h = Harness::start("vol-data");
    h.import_busybox();
    let (code, _) = run(
        &h,
        "writer",
        &[
            "-v",
            "shared:/data",
            "busybox",
            "sh",
            "-c",
            "echo x > /data/f",
        ],
    );
    assert_eq!(code, 0);
    let (code, logs) = run(
        &h,
        "reader",
        &["-v", "shared:/data", "busybox", "cat", "/data/f"],
    );
    assert_eq!((code, logs.as_str()), (0, "x\n"));
    let doc = inspect(&h, &["inspect", "writer"]);
    let m = &doc[0]["Mounts"][0];
    assert_eq!(m["Type"], "volume", "{doc}");
    assert_eq!(m["Name"], "shared");
    assert_eq!(m["Destination"], "/data");
    assert_eq!(m["Driver"], "local");
    assert_eq!(m["RW"], true);
    assert_eq!(
        m["Source"],
        h.root().join("volumes/shared/_data").to_str().unwrap()
    );

    // A new volume gets the image's content (and the directory's mode);
    // nocopy leaves it empty; an existing non-empty volume is not refilled.
    let (code, logs) = run(
        &h,
        "etc",
        &["-v", "etcvol:/etc", "busybox", "cat", "/etc/passwd"],
    );
    assert_eq!(code, 0);
    assert!(logs.contains("student:x:1000"), "{logs}");
    assert!(h.root().join("volumes/etcvol/_data/group").exists());
    let (_, logs) = run(
        &h,
        "tmp",
        &["-v", "tmpvol:/tmp", "busybox", "stat", "-c", "%a", "/tmp"],
    );
    assert_eq!(logs.trim(), "1777");
    let (_, logs) = run(
        &h,
        "nc",
        &["-v", "nc:/etc:nocopy", "busybox", "ls", "-A", "/etc"],
    );
    assert_eq!(logs, "");
    let (_, logs) = run(
        &h,
        "again",
        &["-v", "shared:/etc", "busybox", "ls", "-A", "/etc"],
    );
    assert_eq!(logs.trim(), "f");

    // volume-subpath mounts a directory of the volume; a symlink in the
    // volume resolves inside it, never to the host.
    let (code, _) = run(
        &h,
        "sub",
        &[
            "-v",
            "shared:/data",
            "busybox",
            "sh",
            "-c",
            "mkdir /data/sub && echo s > /data/sub/g && ln -s / /data/escape",
        ],
    );
    assert_eq!(code, 0);
    let (code, logs) = run(
        &h,
        "sp1",
        &[
            "--mount",
            "type=volume,src=shared,dst=/s,volume-subpath=sub",
            "busybox",
            "cat",
            "/s/g",
        ],
    );
    assert_eq!((code, logs.as_str()), (0, "s\n"));
    let (code, logs) = run(
        &h,
        "sp2",
        &[
            "--mount",
            "type=volume,src=shared,dst=/s,volume-subpath=escape",
            "busybox",
            "ls",
            "/s",
        ],
    );
    assert_eq!((code, logs.as_str()), (0, "escape\nf\nsub\n"));
    let err = h.fails(&[
        "run",
        "-d",
        "--mount",
        "type=volume,src=shared,dst=/s,volume-subpath=../x",
        "busybox",
        "true",
    ]);
    assert!(err.contains("stay inside the volume"), "{err}");

    // --mount type=volume, with labels for the volume it creates.
    let (code, logs) = run(
        &h,
        "mnt",
        &[
            "--mount",
            "type=volume,src=mv,dst=/m,volume-label=made=mount",
            "busybox",
            "sh",
            "-c",
            "echo y > /m/g && cat /m/g",
        ],
    );
    assert_eq!((code, logs.as_str()), (0, "y\n"));
    let doc = inspect(&h, &["volume", "inspect", "mv"]);
    assert_eq!(doc[0]["Labels"]["made"], "mount");

    // Anonymous volumes (-v /path): removed with `rm -v`; named ones stay.
    let (code, _) = run(
        &h,
        "anon",
        &["-v", "/anon", "busybox", "sh", "-c", "echo a > /anon/f"],
    );
    assert_eq!(code, 0);
    let doc = inspect(&h, &["inspect", "anon"]);
    let name = doc[0]["Mounts"][0]["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64, "{doc}");
    assert!(h
        .root()
        .join("volumes")
        .join(&name)
        .join("_data/f")
        .exists());
    h.ok(&["rm", "-v", "anon", "writer"]);
    assert!(!h.root().join("volumes").join(&name).exists());
    // --rm takes its anonymous volumes along, never a named one.
    let before = h.ok(&["volume", "ls", "-q"]);
    let out = h.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "-v",
        "shared:/s",
        "busybox",
        "sh",
        "-c",
        "echo s > /scratch/f && cat /s/f",
    ]);
    assert_eq!(out, "x\n");
    assert_eq!(lines(&h.ok(&["volume", "ls", "-q"])), lines(&before));
    assert!(h.root().join("volumes/shared/_data/f").exists());
    // Still used by "reader" and "again", also for a restarted daemon
    // (in use is read from the records).
    let err = h.fails(&["volume", "rm", "shared"]);
    assert!(err.contains("volume is in use"), "{err}");
    h.kill9_and_restart();
    let err = h.fails(&["volume", "rm", "shared"]);
    assert!(err.contains("volume is in use"), "{err}");
    assert_eq!(
        lines(&h.ok(&["volume", "ls", "-q", "--filter", "name=shared"])),
        ["shared"]
    );
}

#[test]
fn bind_and_tmpfs_mounts() {
    let h = Harness::start("vol-bind");
    h.import_busybox();
    let host = h.tmp.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hello"), "hi\n").unwrap();
    let dir = host.to_str().unwrap();

    let (code, logs) = run(
        &h,
        "b1",
        &[
            "-v",
            &format!("{dir}:/mnt"),
            "busybox",
            "sh",
            "-c",
            "cat /mnt/hello; echo y > /mnt/out",
        ],
    );
    assert_eq!((code, logs.as_str()), (0, "hi\n"));
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "y\n");
    let doc = inspect(&h, &["inspect", "b1"]);
    let m = &doc[0]["Mounts"][0];
    assert_eq!(m["Type"], "bind", "{doc}");
    assert_eq!(m["Source"], dir);
    assert_eq!(m["Destination"], "/mnt");
    assert_eq!(m["Propagation"], "rprivate");
    assert_eq!(m["RW"], true);

    // Read-only, with -v and with --mount.
    let (code, logs) = run(
        &h,
        "ro1",
        &[
            "-v",
            &format!("{dir}:/mnt:ro"),
            "busybox",
            "sh",
            "-c",
            "cat /mnt/hello && touch /mnt/x",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        logs.contains("hi") && logs.contains("Read-only file system"),
        "{logs}"
    );
    let (code, logs) = run(
        &h,
        "ro2",
        &[
            "--mount",
            &format!("type=bind,src={dir},dst=/mnt,readonly"),
            "busybox",
            "touch",
            "/mnt/x",
        ],
    );
    assert_ne!(code, 0);
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(!host.join("x").exists());
    let doc = inspect(&h, &["inspect", "ro2"]);
    assert_eq!(doc[0]["Mounts"][0]["RW"], false, "{doc}");

    // -v creates a missing host directory; --mount refuses it, as Docker.
    let missing = host.join("made/by/v");
    let (code, _) = run(
        &h,
        "mk",
        &[
            "-v",
            &format!("{}:/m", missing.display()),
            "busybox",
            "true",
        ],
    );
    assert_eq!(code, 0);
    assert!(missing.is_dir());
    let err = h.fails(&[
        "run",
        "-d",
        "--mount",
        &format!("type=bind,src={dir}/nope,dst=/m"),
        "busybox",
        "true",
    ]);
    assert!(err.contains("bind source path does not exist"), "{err}");

    // tmpfs with --mount and --tmpfs.
    let (code, logs) = run(
        &h,
        "t1",
        &[
            "--mount",
            "type=tmpfs,dst=/t,tmpfs-size=16m",
            "busybox",
            "df",
            "-k",
            "/t",
        ],
    );
    assert_eq!(code, 0, "{logs}");
    let row = logs.lines().last().unwrap_or("");
    assert!(row.starts_with("tmpfs") && row.contains("16384"), "{logs}");
    let doc = inspect(&h, &["inspect", "t1"]);
    assert_eq!(doc[0]["Mounts"][0]["Type"], "tmpfs", "{doc}");
    let (code, logs) = run(
        &h,
        "t2",
        &[
            "--tmpfs",
            "/run:size=8m,mode=1777",
            "busybox",
            "sh",
            "-c",
            "df -k /run | tail -n 1; stat -c %a /run",
        ],
    );
    assert_eq!(code, 0, "{logs}");
    assert!(logs.starts_with("tmpfs") && logs.contains("8192"), "{logs}");
    assert!(logs.ends_with("1777\n"), "{logs}");

    // Bad specs, in Docker's words.
    for (args, want) in [
        (vec!["-v", "/h:/m:bogus"], "invalid mode: bogus"),
        (vec!["-v", "vol%:/m"], "includes invalid characters"),
        (
            vec!["-v", "/h:/d", "--tmpfs", "/d"],
            "Duplicate mount point: /d",
        ),
        (
            vec!["-v", "/h:/d", "-v", "v:/d"],
            "Duplicate mount point: /d",
        ),
        (vec!["--tmpfs", "/t:bogus"], "invalid tmpfs option"),
        (
            vec!["--mount", "type=tmpfs,src=x,dst=/t"],
            "must not be specified",
        ),
    ] {
        let mut full = vec!["run", "-d"];
        full.extend(args.iter().copied());
        full.extend(["busybox", "true"]);
        let err = h.fails(&full);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing was created by the failed runs.
    assert!(!Path::new("/h").exists());
    assert!(h.ok(&["volume", "ls", "-q"]).trim().is_empty());
}

/// Loads `volimg:1`: busybox plus `/data/seed` (owned 1000:1000), with
/// `Volumes: {"/data": {}}` in its config, as a `docker save` archive.
fn load_image_with_a_volume(h: &Harness) {
    use std::process::Command;
    let dir = h.tmp.path().join("volimg");
    let rootfs = dir.join("rootfs");
    common::make_busybox_rootfs(&rootfs);
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    std::fs::write(rootfs.join("data/seed"), "from the image\n").unwrap();
    std::os::unix::fs::chown(rootfs.join("data/seed"), Some(1000), Some(1000)).unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    sh("tar -C rootfs -cf layer.tar .");
    let diff_id = sh("sha256sum layer.tar | cut -d' ' -f1");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["sh"], "Volumes": { "/data": {} } },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", diff_id.trim())] },
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["volimg:1"],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    sh("tar -cf image.tar manifest.json config.json layer.tar");
    let out = h
        .cubby()
        .arg("load")
        .arg("-i")
        .arg(dir.join("image.tar"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cubby load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_volumes_become_anonymous_volumes() {
    let h = Harness::start("vol-image");
    load_image_with_a_volume(&h);
    let (code, logs) = run(
        &h,
        "iv",
        &[
            "volimg:1",
            "sh",
            "-c",
            "cat /data/seed; stat -c %u:%g /data/seed",
        ],
    );
    assert_eq!((code, logs.as_str()), (0, "from the image\n1000:1000\n"));
    let doc = inspect(&h, &["inspect", "iv"]);
    let mounts = doc[0]["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{doc}");
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Destination"], "/data");
    let anon = mounts[0]["Name"].as_str().unwrap().to_string();
    assert_eq!(anon.len(), 64);
    let vol = inspect(&h, &["volume", "inspect", &anon]);
    assert_eq!(vol[0]["Labels"]["com.docker.volume.anonymous"], "");

    // A mount at the image's volume replaces it: no anonymous volume.
    let (code, logs) = run(
        &h,
        "named",
        &["-v", "mine:/data", "volimg:1", "cat", "/data/seed"],
    );
    assert_eq!((code, logs.as_str()), (0, "from the image\n"));
    let doc = inspect(&h, &["inspect", "named"]);
    assert_eq!(doc[0]["Mounts"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc[0]["Mounts"][0]["Name"], "mine");
    let (code, logs) = run(
        &h,
        "tmp",
        &["--tmpfs", "/data", "volimg:1", "ls", "-A", "/data"],
    );
    assert_eq!((code, logs.as_str()), (0, ""));
    assert_eq!(lines(&h.ok(&["volume", "ls", "-q"])).len(), 2);

    // The anonymous volume goes with `rm -v`; prune then finds nothing.
    h.ok(&["rm", "-v", "iv", "named", "tmp"]);
    assert_eq!(lines(&h.ok(&["volume", "ls", "-q"])), ["mine"]);
    let out = h.ok(&["volume", "prune", "-f"]);
    assert!(!out.contains("mine"), "{out}");
}

#[test]
fn create_start_restart_keep_their_mounts() {
    let h = Harness::start("vol-life");
    h.import_busybox();
    let host = h.tmp.path().join("life");
    std::fs::create_dir_all(&host).unwrap();
    let bind = format!("{}:/host", host.display());
    h.ok(&[
        "create",
        "--name",
        "c1",
        "-v",
        "count:/data",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo run >> /data/log; cat /data/log | wc -l > /host/runs",
    ]);
    // Created, not started: the volume exists and is in use already.
    let err = h.fails(&["volume", "rm", "count"]);
    assert!(err.contains("volume is in use"), "{err}");
    h.ok(&["start", "c1"]);
    assert_eq!(h.ok(&["wait", "c1"]).trim(), "0");
    h.ok(&["start", "c1"]);
    assert_eq!(h.ok(&["wait", "c1"]).trim(), "0");
    assert_eq!(
        std::fs::read_to_string(host.join("runs")).unwrap().trim(),
        "2"
    );
    h.ok(&["restart", "c1"]);
    assert_eq!(h.ok(&["wait", "c1"]).trim(), "0");
    assert_eq!(
        std::fs::read_to_string(host.join("runs")).unwrap().trim(),
        "3"
    );
    // The foreground `docker run` sees the same data.
    let out = h.ok(&[
        "run",
        "--rm",
        "-v",
        "count:/data",
        "busybox",
        "cat",
        "/data/log",
    ]);
    assert_eq!(out, "run\nrun\nrun\n");
    h.ok(&["rm", "c1"]);
    assert_eq!(h.ok(&["volume", "rm", "count"]).trim(), "count");
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            backing
                .starts_with(&prefix)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), backing.trim()))
        })
        .collect()
}

/// What the docker CLI printed, both streams.
fn both(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sized_volumes_are_filesystems_of_their_own() {
    let mut h = Harness::start("vol-sized");
    h.import_busybox();
    assert_eq!(
        h.ok(&["volume", "create", "--opt", "size=32M", "small"])
            .trim(),
        "small"
    );
    h.ok(&["volume", "create", "-o", "size=16MiB", "other"]);
    let doc = inspect(&h, &["volume", "inspect", "small"]);
    assert_eq!(doc[0]["Options"]["size"], "32M", "{doc}");
    assert_eq!(doc[0]["Driver"], "local");
    let err = h.fails(&["volume", "create", "-o", "size=tiny", "bad1"]);
    assert!(err.contains("size=\"tiny\""), "{err}");
    let err = h.fails(&["volume", "create", "-o", "device=/dev/sda", "bad2"]);
    assert!(err.contains("\"device\""), "{err}");
    let err = h.fails(&["volume", "create", "-o", "colour=red", "bad3"]);
    assert!(err.contains("colour"), "{err}");

    // Filling one volume: ENOSPC inside, the other one untouched.
    let out = h.docker(&[
        "run",
        "--rm",
        "-v",
        "small:/data",
        "-v",
        "other:/other",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/marker; dd if=/dev/zero of=/data/fill bs=1M count=64; \
         echo dd=$?; ls /other | wc -l; dd if=/dev/zero of=/other/f bs=1M count=4 && echo other-ok",
    ]);
    let text = both(&out);
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("dd=1"), "{text}");
    assert!(text.contains("other-ok"), "{text}");
    assert!(lines(&text).contains(&"0"), "other was not empty: {text}");
    // The host's disk holds at most the image's size, and the data is not
    // in the volume's directory on the host's filesystem.
    let vol = h.root().join("volumes/small");
    let img = std::fs::metadata(vol.join("disk.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        img.blocks() * 512 <= 32 << 20,
        "{} bytes",
        img.blocks() * 512
    );
    let data = std::fs::metadata(vol.join("_data")).unwrap();
    assert_ne!(data.dev(), std::fs::metadata(&vol).unwrap().dev());

    // A daemon restart keeps the data.
    h.kill9_and_restart();
    let out = h.ok(&[
        "run",
        "--rm",
        "-v",
        "small:/data",
        "busybox",
        "cat",
        "/data/marker",
    ]);
    assert_eq!(out.trim(), "kept");

    // Unmounted (as after a reboot): a start, a run and a copy mount it again.
    h.ok(&[
        "create",
        "--name",
        "c1",
        "-v",
        "small:/data",
        "busybox",
        "cat",
        "/data/marker",
    ]);
    let unmount = || {
        nix::mount::umount2(&vol.join("_data"), nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(!vol.join("_data/marker").exists());
    };
    unmount();
    assert_eq!(h.ok(&["start", "-a", "c1"]).trim(), "kept");
    unmount();
    let copied = h.tmp.path().join("marker-copy");
    h.ok(&["cp", "c1:/data/marker", copied.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&copied).unwrap().trim(), "kept");
    unmount();
    let out = h.ok(&[
        "run",
        "--rm",
        "-v",
        "small:/data",
        "busybox",
        "cat",
        "/data/marker",
    ]);
    assert_eq!(out.trim(), "kept");

    // rm unmounts, frees the loop device and deletes the image.
    let err = h.fails(&["volume", "rm", "small"]);
    assert!(err.contains("volume is in use"), "{err}");
    h.ok(&["rm", "c1"]);
    h.ok(&["volume", "rm", "small", "other"]);
    assert!(!vol.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let volumes = h.root().join("volumes");
    assert!(!mounts.contains(&*volumes.to_string_lossy()), "{mounts}");
    daemon::eventually("loop devices freed", || {
        loops_under(&volumes).is_empty().then_some(())
    });
}
