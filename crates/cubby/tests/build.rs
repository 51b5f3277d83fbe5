//! Image builds (issue 14): `cubby build` alone, and the real `docker` CLI
//! (classic builder) and docker-py against `cubby daemon`, on multi-stage
//! Dockerfiles over a busybox image made here (never Docker Hub). Needs
//! root, cgroups, busybox-static, the docker CLI, python3 with `docker`,
//! docker-registry and skopeo.

mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/images.rs"]
mod images_common;

use common::{stderr, stdout};
use daemon::Daemon;
use images_common::{Cubby, Registry};
use std::path::Path;
use std::process::Command;

const MULTI: &str = r#"# a three-stage build
ARG BASE=busybox
FROM $BASE AS build
ARG MSG=hi
WORKDIR /src
COPY . /ctx/
COPY hello.txt sub/ ./
RUN test ! -e /ctx/x.log && test -e /ctx/keep.txt \
    && echo "$MSG from build" > out.txt \
    && rm -f /bin/vi && cat hello.txt
FROM busybox AS other
RUN echo other > /o
FROM scratch
COPY --from=build /bin/busybox /bin/busybox
COPY --from=build /src/out.txt /src/a.txt /data/
COPY --from=other --chown=1000:1000 /o /o
ENV A=1 B="two words"
LABEL org.example=yes
USER 1000
CMD ["/bin/busybox", "cat", "/data/out.txt"]
"#;

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn context(dir: &Path) {
    write(
        dir,
        &[
            ("Dockerfile", MULTI),
            ("hello.txt", "hello\n"),
            ("sub/a.txt", "a\n"),
            ("x.log", "secret\n"),
            ("keep.txt", "k\n"),
            (".dockerignore", "*.log\n"),
        ],
    );
}

/// A cubby with its own store holding `busybox:latest` (imported).
fn cubby_with_busybox() -> Cubby {
    let c = Cubby::new();
    let tarball = c.world.dir.path().join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(c.world.rootfs())
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    c.ok(&["import", tarball.to_str().unwrap(), "busybox:latest"]);
    c
}

fn scratch_left(c: &Cubby) -> Vec<String> {
    std::fs::read_dir(c.root().join("build/tmp"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cubby_build_multistage_cache_and_run() {
    let c = cubby_with_busybox();
    let ctx = c.world.dir.path().join("ctx");
    context(&ctx);
    let ctx_s = ctx.to_str().unwrap();
    let out = c.ok(&["build", "-t", "app:1", "--build-arg", "MSG=hey", ctx_s]);
    assert!(
        out.contains("Running in") && out.contains("hello\n"),
        "{out}"
    );
    assert!(out.contains("Successfully tagged app:1"), "{out}");

    // The image runs, with its config (user, env, owner of a --chown copy).
    assert_eq!(c.ok(&["run", "--rm", "app:1"]), "hey from build\n");
    let env = c.ok(&["run", "--rm", "app:1", "/bin/busybox", "env"]);
    assert!(env.contains("B=two words") && env.contains("A=1"), "{env}");
    assert_eq!(
        c.ok(&["run", "--rm", "app:1", "/bin/busybox", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        c.ok(&[
            "run",
            "--rm",
            "app:1",
            "/bin/busybox",
            "stat",
            "-c",
            "%u",
            "/o"
        ]),
        "1000\n"
    );
    // --target: the first stage, whose RUN deleted /bin/vi (a whiteout).
    c.ok(&["build", "-q", "--target", "build", "-t", "app:build", ctx_s]);
    let check = c.ok(&[
        "run",
        "--rm",
        "app:build",
        "sh",
        "-c",
        "test ! -e /bin/vi && cat /src/out.txt && pwd",
    ]);
    assert_eq!(check, "hi from build\n/src\n");

    // Unchanged: everything from the cache, the same image id.
    let id1 = c.ok(&[
        "build",
        "-q",
        "-t",
        "app:1",
        "--build-arg",
        "MSG=hey",
        ctx_s,
    ]);
    let t = std::time::Instant::now();
    let again = c.ok(&["build", "-t", "app:1", "--build-arg", "MSG=hey", ctx_s]);
    eprintln!("fully cached rebuild: {:?}", t.elapsed());
    assert!(!again.contains("Running in"), "{again}");
    assert_eq!(again.matches("Using cache").count(), 8, "{again}");
    let id2 = c.ok(&[
        "build",
        "-q",
        "-t",
        "app:1",
        "--build-arg",
        "MSG=hey",
        ctx_s,
    ]);
    assert_eq!(id1, id2);

    // One changed file: the steps before its COPY are cached, then rebuilt.
    write(&ctx, &[("hello.txt", "changed\n")]);
    let changed = c.ok(&["build", "-t", "app:1", "--build-arg", "MSG=hey", ctx_s]);
    let (before, after) = changed.split_once("COPY hello.txt").unwrap();
    assert!(before.contains("Using cache"), "{changed}");
    assert!(
        after.contains("Running in") && after.contains("changed\n"),
        "{changed}"
    );
    // The other stage did not change.
    assert!(
        after.contains("RUN echo other > /o\n ---> Using cache"),
        "{changed}"
    );

    // cubby commit of a standalone container.
    c.ok(&[
        "run",
        "--name",
        "b14c",
        "busybox",
        "sh",
        "-c",
        "echo kept > /kept",
    ]);
    c.ok(&["commit", "-c", "CMD cat /kept", "b14c", "kept:1"]);
    assert_eq!(c.ok(&["run", "--rm", "kept:1"]), "kept\n");
    c.ok(&["rm", "b14c"]);

    // An image config with history for each step.
    let inspect = c.ok(&["image", "inspect", "app:1"]);
    assert!(inspect.contains("org.example"), "{inspect}");
    c.no_mounts_left();
    assert!(scratch_left(&c).is_empty(), "{:?}", scratch_left(&c));
}

#[test]
fn cubby_build_bad_input() {
    let c = cubby_with_busybox();
    let ctx = c.world.dir.path().join("bad");
    write(&ctx, &[("ok.txt", "x")]);
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("link")).unwrap();
    let ctx_s = ctx.to_str().unwrap();
    let fails = |df: &str| -> (String, String) {
        write(&ctx, &[("Dockerfile", df)]);
        let out = c.run(&["build", "-t", "bad:1", ctx_s]);
        assert!(!out.status.success(), "{df} built: {}", stdout(&out));
        (stdout(&out), stderr(&out))
    };
    let images_before = c.ok(&["images", "-q"]);

    let (_, e) = fails("FROM busybox\nRUN true\n\nBOGUS x\n");
    assert!(e.contains("line 4") && e.contains("BOGUS"), "{e}");
    let (_, e) = fails("FROM busybox\nRUN <<EOF\necho\nEOF\n");
    assert!(e.contains("line 2") && e.contains("heredoc"), "{e}");
    let (o, e) = fails("FROM busybox\nRUN echo out-before-failure; exit 7\n");
    assert!(o.contains("out-before-failure"), "{o}");
    assert!(e.contains("non-zero code: 7"), "{e}");
    let (_, e) = fails("FROM busybox\nCOPY missing-file.txt /\n");
    assert!(e.contains("missing-file.txt"), "{e}");
    let (_, e) = fails("FROM busybox\nCOPY ../etc/passwd /\n");
    assert!(e.contains("outside the build context"), "{e}");
    let (_, e) = fails("FROM busybox\nCOPY link /x\n");
    assert!(e.contains("outside the build context"), "{e}");
    let (_, e) = fails("FROM busybox\nADD http://127.0.0.1:1/x /x\n");
    assert!(e.contains("URL"), "{e}");
    let (_, e) = fails("FROM busybox\nRUN --mount=type=cache,target=/c true\n");
    assert!(e.contains("RUN --mount"), "{e}");

    // A symlink copied by one source is not a way out for the next one.
    let outside = c.world.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir_all(ctx.join("d1")).unwrap();
    std::os::unix::fs::symlink(&outside, ctx.join("d1/x")).unwrap();
    write(
        &ctx,
        &[
            ("d2/x/pwned", "p"),
            ("Dockerfile", "FROM busybox\nCOPY d1 d2 /dst/\n"),
        ],
    );
    c.ok(&["build", "-q", "-t", "links:1", ctx_s]);
    assert!(
        !outside.join("pwned").exists(),
        "COPY wrote through a symlink"
    );
    assert_eq!(
        c.ok(&["run", "--rm", "links:1", "cat", "/dst/x/pwned"]),
        "p"
    );
    c.ok(&["rmi", "links:1"]);

    // Nothing half-made: no image, no mount, no container, no scratch.
    assert_eq!(c.ok(&["images", "-q"]), images_before);
    c.no_mounts_left();
    assert!(scratch_left(&c).is_empty(), "{:?}", scratch_left(&c));
    let ps = c.ok(&["ps", "-a", "-q"]);
    assert!(ps.trim().is_empty(), "containers left: {ps}");
}

#[test]
fn built_image_pushes_and_skopeo_reads_it() {
    assert!(
        Path::new("/usr/bin/skopeo").exists(),
        "skopeo missing: apt-get install -y skopeo"
    );
    let reg = Registry::start(None);
    let c = cubby_with_busybox();
    let ctx = c.world.dir.path().join("ctx");
    context(&ctx);
    let name = reg.image("built/app:1");
    c.ok(&["build", "-q", "-t", &name, ctx.to_str().unwrap()]);
    c.ok(&["push", &name]);
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{name}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().map(|l| l.len()), Some(3), "{v}");
    assert_eq!(v["Labels"]["org.example"], "yes", "{v}");

    // --pull: the base comes from the registry even when the store holds
    // an image of that name (here an impostor: plain busybox).
    c.ok(&["tag", "busybox:latest", &name]);
    let ctx2 = c.world.dir.path().join("pullctx");
    write(
        &ctx2,
        &[("Dockerfile", &format!("FROM {name}\nLABEL pulled=yes\n"))],
    );
    let ctx2_s = ctx2.to_str().unwrap();
    c.ok(&["build", "-q", "-t", "local-base", ctx2_s]);
    let out = c.run(&[
        "run",
        "--rm",
        "local-base",
        "/bin/busybox",
        "test",
        "-e",
        "/data/out.txt",
    ]);
    assert!(!out.status.success(), "the store's base was not used");
    c.ok(&["build", "-q", "--pull", "-t", "pulled-base", ctx2_s]);
    assert_eq!(c.ok(&["run", "--rm", "pulled-base"]), "hi from build\n");
}

const PY: &str = r#"
import sys, docker
c = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto", timeout=120)
img, logs = c.images.build(path=sys.argv[2], tag="pyapp:2", buildargs={"MSG": "py"}, rm=True)
assert "pyapp:2" in img.tags, img.tags
out = c.containers.run("pyapp:2", remove=True)
assert out == b"py from build\n", out
hist = [h["CreatedBy"] for h in img.history()]
assert any(h.startswith("COPY --from=build") for h in hist), hist
try:
    c.images.build(path=sys.argv[3])
    raise SystemExit("a failing RUN must raise BuildError")
except docker.errors.BuildError as e:
    assert "non-zero code: 5" in str(e), e
# A hand-made context tar whose entries climb out with `..` and through a
# symlink: the daemon must write nothing outside the context.
import io, os, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    def add(name, data=b"x", **kw):
        i = tarfile.TarInfo(name); i.size = len(data)
        for k, v in kw.items(): setattr(i, k, v)
        t.addfile(i, io.BytesIO(data) if i.isreg() else None)
    add("Dockerfile", b"FROM busybox\nCOPY . /ctx/\n")
    add("../" * 12 + sys.argv[4].lstrip("/"), b"escaped")
    add("out", type=tarfile.SYMTYPE, linkname=os.path.dirname(sys.argv[4]), size=0)
    add("out/" + os.path.basename(sys.argv[4]) + "2", b"escaped")
buf.seek(0)
try:
    list(c.api.build(fileobj=buf, custom_context=True, tag="escape:1", decode=True))
except docker.errors.APIError:
    pass
for p in (sys.argv[4], sys.argv[4] + "2"):
    assert not os.path.exists(p), "context escaped to " + p
print("py-ok")
"#;

#[test]
fn docker_cli_and_docker_py_build_against_the_daemon() {
    let d = Daemon::start("build");
    d.import_busybox();
    let ctx = d.tmp.path().join("ctx");
    context(&ctx);
    let bad = d.tmp.path().join("bad");
    write(
        &bad,
        &[("Dockerfile", "FROM busybox\nRUN echo failing; exit 5\n")],
    );

    let build = |args: &[&str]| {
        d.docker_cmd(args)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap()
    };
    let out = build(&[
        "build",
        "-t",
        "dapp",
        "--build-arg",
        "MSG=yo",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "docker build: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("Successfully built"),
        "{}",
        stdout(&out)
    );
    assert_eq!(d.ok(&["run", "--rm", "dapp"]), "yo from build\n");
    let hist = d.ok(&["history", "--no-trunc", "dapp"]);
    for step in [
        "COPY --from=other --chown=1000:1000 /o /o",
        "ENV A=1",
        "USER 1000",
        "CMD",
    ] {
        assert!(hist.contains(step), "{step} missing from\n{hist}");
    }
    let out = build(&["build", "-t", "dbad", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("failing"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("non-zero code: 5"),
        "{}",
        stderr(&out)
    );
    d.fails(&["image", "inspect", "dbad"]);
    // No stray RUN container: no runtime state, cgroup or netns of a build.
    let builds_in = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("build-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left = builds_in(&d.root().join("build/state"));
    left.extend(builds_in(&d.tmp.path().join("netns")));
    for cg in d.cgroup_dirs() {
        left.extend(builds_in(&cg));
    }
    assert!(left.is_empty(), "left by the failing build: {left:?}");

    // docker commit (paused while running, --change) and docker export.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "-e",
        "FROMRUN=kept",
        "busybox",
        "sh",
        "-c",
        "echo data > /f; rm /bin/vi; sleep 30",
    ]);
    daemon::eventually("c1 wrote /f", || {
        let o = d.docker(&["exec", "c1", "cat", "/f"]);
        o.status.success().then_some(())
    });
    d.ok(&[
        "commit",
        "--change",
        "CMD [\"cat\", \"/f\"]",
        "-m",
        "snap",
        "c1",
        "committed:1",
    ]);
    assert_eq!(d.ok(&["run", "--rm", "committed:1"]), "data\n");
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "committed:1",
            "sh",
            "-c",
            "test ! -e /bin/vi && echo gone"
        ]),
        "gone\n"
    );
    // The container's own config (its -e) is kept, as dockerd keeps it.
    assert_eq!(
        d.ok(&["run", "--rm", "committed:1", "sh", "-c", "echo $FROMRUN"]),
        "kept\n"
    );
    let hist = d.ok(&["history", "--no-trunc", "committed:1"]);
    assert!(hist.contains("snap"), "{hist}");
    let tar = d.tmp.path().join("c1.tar");
    d.ok(&["export", "-o", tar.to_str().unwrap(), "c1"]);
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let list = stdout(&list);
    assert!(
        list.lines().any(|l| l == "f") && list.lines().any(|l| l == "bin/sh"),
        "{list}"
    );
    assert!(!list.lines().any(|l| l == "bin/vi"), "{list}");
    d.ok(&["rm", "-f", "c1"]);

    let py = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .arg(&d.socket)
        .arg(&ctx)
        .arg(&bad)
        .arg(d.tmp.path().join("escaped"))
        .output()
        .unwrap();
    assert!(
        py.status.success() && stdout(&py).contains("py-ok"),
        "docker-py: {}\n{}",
        stdout(&py),
        stderr(&py)
    );
}

/// The network of RUN steps: the daemon's default bridge by default (as
/// dockerd), none and host really applied (the interfaces a RUN sees),
/// through `docker build` (networkmode) and standalone `cubby build`
/// beside the daemon. The HTTP server is a container on the bridge (an
/// address cubby assigned).
#[test]
fn run_steps_join_the_bridge_or_none_or_host() {
    let d = Daemon::start("buildnet");
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo served > /www/hello.txt && exec httpd -f -p 8080 -h /www",
    ]);
    let ip = d
        .ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ])
        .trim()
        .to_string();
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "web's address: {ip:?}"
    );
    daemon::eventually("httpd answers", || {
        let o = d.docker(&[
            "exec",
            "web",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/hello.txt",
        ]);
        o.status.success().then_some(())
    });
    let ctx = d.tmp.path().join("netctx");
    write(
        &ctx,
        &[(
            "Dockerfile",
            "FROM busybox\nARG WEB\n\
             RUN grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ' > /ifs \
             && if [ -n \"$WEB\" ]; then wget -q -O /got.txt http://$WEB:8080/hello.txt; fi\n",
        )],
    );
    let ctx_s = ctx.to_str().unwrap();
    let web_arg = format!("WEB={ip}");
    let build = |args: &[&str]| {
        let out = d
            .docker_cmd(args)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}\n{}", stdout(&out), stderr(&out)),
        )
    };
    let ifs = |image: &str| d.ok(&["run", "--rm", "--network", "none", image, "cat", "/ifs"]);

    // docker build's default (networkmode=default): the bridge.
    let (ok, log) = build(&["build", "-t", "net-default", "--build-arg", &web_arg, ctx_s]);
    assert!(ok, "{log}");
    assert_eq!(ifs("net-default"), "eth0 lo ");
    assert_eq!(
        d.ok(&["run", "--rm", "net-default", "cat", "/got.txt"]),
        "served\n"
    );
    let (ok, log) = build(&[
        "build",
        "--no-cache",
        "--network",
        "bridge",
        "-t",
        "net-bridge",
        "--build-arg",
        &web_arg,
        ctx_s,
    ]);
    assert!(ok, "{log}");
    assert_eq!(ifs("net-bridge"), "eth0 lo ");
    // none: only loopback, and the server is out of reach.
    let (ok, log) = build(&["build", "--network", "none", "-t", "net-none", ctx_s]);
    assert!(ok, "{log}");
    assert_eq!(ifs("net-none"), "lo ");
    let (ok, log) = build(&[
        "build",
        "--network",
        "none",
        "-t",
        "net-none2",
        "--build-arg",
        &web_arg,
        ctx_s,
    ]);
    assert!(!ok, "a RUN without network reached {ip}: {log}");
    // host: the host's interfaces, among them this daemon's bridge.
    let (ok, log) = build(&["build", "--network", "host", "-t", "net-host", ctx_s]);
    assert!(ok, "{log}");
    let host = ifs("net-host");
    assert!(
        host.split(' ').any(|i| i == d.net.bridge()) && host.contains("lo "),
        "host network RUN saw {host:?}"
    );
    let (ok, log) = build(&["build", "--network", "container:web", "-t", "x", ctx_s]);
    assert!(!ok && log.contains("container:"), "{log}");

    // Standalone `cubby build` beside the daemon, on the daemon's bridge.
    let mut args: Vec<String> = [
        "build",
        "--network",
        "bridge",
        "-t",
        "net-cli",
        "--build-arg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(web_arg.clone());
    args.extend(d.net.daemon_args());
    args.push(ctx_s.to_string());
    let out = d.cubby().args(&args).output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(ifs("net-cli"), "eth0 lo ");
    assert_eq!(
        d.ok(&["run", "--rm", "net-cli", "cat", "/got.txt"]),
        "served\n"
    );
    let out = d
        .cubby()
        .args(["build", "--network", "nosuchnet", "-t", "y", ctx_s])
        .args(d.net.daemon_args())
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("nosuchnet"),
        "{}",
        stderr(&out)
    );

    // Every RUN released its endpoint (the `run --rm`s above release
    // theirs after they are destroyed, asynchronously).
    let on_bridge = d.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}",
        "bridge",
    ]);
    assert!(
        on_bridge.contains("web") && !on_bridge.contains("build-"),
        "endpoints on the bridge: {on_bridge}"
    );
    let netns_left: Vec<String> = std::fs::read_dir(d.tmp.path().join("netns"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("build-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(netns_left.is_empty(), "build netns left: {netns_left:?}");
    d.ok(&["rm", "-f", "web"]);
}

/// ADD of a local tar.gz (unpacked), COPY globs, -f, --label, the escape
/// directive and line continuations, exec-form RUN, SHELL, and the
/// metadata instructions stored in the image config (HEALTHCHECK too).
#[test]
fn cubby_build_add_tar_globs_and_metadata() {
    let c = cubby_with_busybox();
    let ctx = c.world.dir.path().join("meta");
    write(
        &ctx,
        &[
            ("tree/a/one.txt", "one\n"),
            ("tree/two.txt", "two\n"),
            ("g1.txt", "g1\n"),
            ("g2.txt", "g2\n"),
            ("other.md", "no\n"),
            (
                "Build.docker",
                "# escape=`\n\
                 FROM busybox\n\
                 ADD tree.tar.gz /unpacked/\n\
                 COPY g*.txt /globbed/\n\
                 SHELL [\"/bin/sh\", \"-c\"]\n\
                 RUN [\"/bin/sh\", \"-c\", \"cat /unpacked/a/one.txt /unpacked/two.txt > /both\"]\n\
                 RUN echo one `\n    two > /joined\n\
                 ENV GREETING=hi\n\
                 EXPOSE 8080/tcp\n\
                 VOLUME /data\n\
                 STOPSIGNAL SIGTERM\n\
                 HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD wget -q -O - http://127.0.0.1:8080/ || exit 1\n\
                 ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
                 CMD [\"cat /both\"]\n",
            ),
        ],
    );
    let st = Command::new("tar")
        .arg("-C")
        .arg(ctx.join("tree"))
        .arg("-czf")
        .arg(ctx.join("tree.tar.gz"))
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let df = ctx.join("Build.docker");
    c.ok(&[
        "build",
        "-q",
        "-f",
        df.to_str().unwrap(),
        "--label",
        "team=lab",
        "-t",
        "meta:1",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(c.ok(&["run", "--rm", "meta:1"]), "one\ntwo\n");
    assert_eq!(
        c.ok(&["run", "--rm", "meta:1", "ls /globbed; cat /joined"]),
        "g1.txt\ng2.txt\none two\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&c.ok(&["image", "inspect", "meta:1"])).unwrap();
    let cfg = &inspect[0]["Config"];
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q -O - http://127.0.0.1:8080/ || exit 1"]),
        "{cfg}"
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 5_000_000_000u64, "{cfg}");
    assert_eq!(cfg["Healthcheck"]["Timeout"], 2_000_000_000u64, "{cfg}");
    assert_eq!(cfg["Healthcheck"]["Retries"], 4, "{cfg}");
    assert_eq!(cfg["Labels"]["team"], "lab", "{cfg}");
    assert_eq!(cfg["StopSignal"], "SIGTERM", "{cfg}");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object(), "{cfg}");
    assert!(cfg["Volumes"]["/data"].is_object(), "{cfg}");
    assert!(
        cfg["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "GREETING=hi")),
        "{cfg}"
    );
    c.no_mounts_left();
    assert!(scratch_left(&c).is_empty(), "{:?}", scratch_left(&c));
}
