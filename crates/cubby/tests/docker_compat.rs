//! Issue 15's endpoints through the real docker CLI against `cubby daemon`:
//! import with --change, save | load, diff, container prune, system df,
//! network ls (host, none), update refused by name, and a DockerSpawner
//! create body with nulls. Needs root, cgroups, a static busybox and the
//! docker CLI.

mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/images.rs"]
mod images_common;

use daemon::Daemon;
use images_common::Registry;

/// `cubby run IMAGE` through the daemon pulls a missing image, as `docker
/// run` does; `--pull never` refuses instead.
#[test]
fn cubby_run_through_the_daemon_pulls_a_missing_image() {
    let d = Daemon::start("runpull");
    let reg = Registry::start(None);
    reg.push_test_images("busybox", None);
    let image = reg.image("test/busybox:latest");
    let cubby = |args: &[&str]| {
        d.cubby()
            .arg("--host")
            .arg(format!("unix://{}", d.socket.display()))
            .args(args)
            .env_remove("CUBBY_HOST")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = cubby(&["run", "--rm", "--pull", "never", &image, "echo", "hi"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image"));
    let out = cubby(&["run", "--rm", &image, "echo", "pulled-and-ran"]);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{o}{e}");
    assert_eq!(o.trim(), "pulled-and-ran");
    assert!(e.contains("Unable to find image"), "{e}");
}

#[test]
fn import_change_save_load_diff_prune_df() {
    let d = Daemon::start("compat");
    d.import_busybox();
    let tar = d.tmp.path().join("image/busybox.tar");
    let tar = tar.to_str().unwrap();

    // import --change: the rootfs becomes a runnable image.
    d.ok(&[
        "import",
        "-c",
        r#"CMD ["sh","-c","echo $GREETING from $(pwd) as $(id -u)"]"#,
        "-c",
        "ENV GREETING=hello",
        "-c",
        "WORKDIR /srv/app",
        "-c",
        "USER 1234",
        "-c",
        "EXPOSE 8080/tcp",
        tar,
        "imported:1",
    ]);
    assert_eq!(
        d.ok(&["run", "--rm", "imported:1"]).trim(),
        "hello from /srv/app as 1234"
    );
    let ports = d.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.ExposedPorts}}",
        "imported:1",
    ]);
    assert_eq!(ports.trim(), r#"{"8080/tcp":{}}"#);
    let err = d.fails(&["import", "-c", "RUN make", tar, "bad:1"]);
    assert!(err.contains("RUN"), "{err}");

    // save | load round trip.
    let saved = d.tmp.path().join("saved.tar");
    d.ok(&["save", "-o", saved.to_str().unwrap(), "imported:1"]);
    d.ok(&["rmi", "imported:1"]);
    let loaded = d.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: imported:1"), "{loaded}");
    assert!(d.ok(&["run", "--rm", "imported:1"]).contains("hello"));
    let err = d.fails(&["save", "no-such-image:1"]);
    assert!(err.contains("No such image"), "{err}");
    // Image routes answer through the engine's one error mapping: a
    // refused --change is the caller's 400, push is refused by name.
    let (status, body) = d.http(
        "POST",
        "/images/create?fromSrc=-&repo=bad&changes=RUN%20make",
    );
    assert!(
        status.contains(" 400 ") && body.contains("RUN"),
        "{status} {body}"
    );
    let (status, body) = d.http("POST", "/images/imported:1/push");
    assert!(
        status.contains(" 501 ") && body.contains("cubby push"),
        "{status} {body}"
    );
    let (status, body) = d.http("GET", "/images/imported:1/nope");
    assert!(
        status.contains(" 404 ") && body.contains("page not found"),
        "{status} {body}"
    );

    // diff: added, changed, deleted; cubby's own mount targets not listed.
    d.ok(&[
        "run",
        "--name",
        "changed",
        "busybox",
        "sh",
        "-c",
        "echo x > /home/new; rm /bin/true; mkdir /tmp/d",
    ]);
    let diff = d.ok(&["diff", "changed"]);
    for want in [
        "A /home/new",
        "C /home",
        "D /bin/true",
        "A /tmp/d",
        "C /bin",
    ] {
        assert!(diff.lines().any(|l| l == want), "{want} in {diff}");
    }
    assert!(
        !diff.contains("/etc/hosts") && !diff.contains("/proc"),
        "{diff}"
    );

    // container prune: stopped ones only.
    d.ok(&["run", "-d", "--name", "running", "busybox", "sleep", "30"]);
    let pruned = d.ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    let names = d.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(names.trim(), "running");

    // system df counts what is there.
    let df = d.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert!(df.contains("Containers 1 1"), "{df}");
    assert!(df.contains("Images 2 1"), "{df}");

    // update is refused naming it.
    let err = d.fails(&["update", "--memory", "64m", "running"]);
    assert!(err.contains("docker update"), "{err}");
    refusal_waits_for_the_body(&d);

    // network ls lists host and none as dockerd does.
    let nets = d.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        nets.contains("host host") && nets.contains("none null"),
        "{nets}"
    );
    d.ok(&["rm", "-f", "running"]);
}

#[test]
fn dockerspawner_body_with_nulls_is_accepted() {
    let d = Daemon::start("nulls");
    d.import_busybox();
    // What DockerSpawner sends (ExposedPorts values null) and more nulls.
    let body = r#"{"Image":"busybox","Cmd":["sleep","30"],"ExposedPorts":{"8888/tcp":null},
        "Env":null,"Labels":{"a":null},"Volumes":null,"Entrypoint":null,
        "HostConfig":{"Binds":null,"PortBindings":null,"Links":null,"Memory":null,
        "RestartPolicy":null,"Mounts":null,"LogConfig":null},"NetworkingConfig":null}"#;
    let (status, resp) = d.http_body("POST", "/v1.43/containers/create?name=spawned", Some(body));
    assert!(status.contains("201"), "{status} {resp}");
    d.ok(&["start", "spawned"]);
    let ports = d.ok(&[
        "inspect",
        "--format",
        "{{json .Config.ExposedPorts}} {{json .Config.Labels}}",
        "spawned",
    ]);
    assert!(ports.contains(r#""8888/tcp":{}"#), "{ports}");
    assert!(ports.contains(r#""a":"""#), "{ports}");
    d.ok(&["rm", "-f", "spawned"]);
}

/// The docker CLI writes a request's head and body separately; a refusal
/// sent (and the connection closed) before the body arrived made its body
/// write fail with "broken pipe" instead of showing the refusal. The daemon
/// reads a small body first, so the refusal comes after it and the
/// connection stays usable for the next request.
fn refusal_waits_for_the_body(d: &Daemon) {
    use std::io::{Read, Write};
    let body = r#"{"Memory":67108864}"#;
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "POST /v1.43/containers/running/update HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    write!(s, "{body}").unwrap();
    write!(
        s,
        "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.contains("docker update"), "{resp}");
    let second = resp.split("HTTP/1.1 ").nth(2).unwrap_or_default();
    assert!(
        second.starts_with("200"),
        "the connection served no second request: {resp}"
    );
}
