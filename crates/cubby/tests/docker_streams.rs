//! Streams lose nothing through `cubby daemon`: stdin piped into `docker
//! run -i` / `docker exec -i` arrives whole however large, even when the
//! client closes its side at once and the process reads slowly.
//! Needs root, cgroups, a static busybox and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::Daemon;
use std::process::Stdio;

/// 3 MiB of varied bytes (more than the pipe, the monitor's input buffer
/// and the socket buffers together) and its length/md5 as busybox prints them.
fn payload(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.join("payload.bin");
    std::fs::write(&path, &data).unwrap();
    let md5 = std::process::Command::new("md5sum")
        .arg(&path)
        .output()
        .expect("md5sum (coreutils)");
    let sum = String::from_utf8_lossy(&md5.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (path, format!("{} {sum}", data.len()))
}

fn piped(d: &Daemon, args: &[&str], input: &std::path::Path) -> String {
    let out = d
        .docker_cmd(args)
        .stdin(Stdio::from(std::fs::File::open(input).unwrap()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn large_stdin_arrives_whole() {
    let d = Daemon::start("stdin");
    d.import_busybox();
    let (input, want) = payload(d.tmp.path());
    // Reads at once, and reads only after the client has sent everything and closed.
    let count = "f=/tmp/in; cat > $f; echo \"$(wc -c < $f) $(md5sum < $f | cut -d' ' -f1)\"";
    let slow =
        "sleep 1; f=/tmp/in; cat > $f; echo \"$(wc -c < $f) $(md5sum < $f | cut -d' ' -f1)\"";
    for script in [count, slow] {
        let got = piped(
            &d,
            &["run", "-i", "--rm", "busybox", "sh", "-c", script],
            &input,
        );
        assert_eq!(got, want, "docker run -i: {script}");
    }
    d.ok(&["run", "-d", "--name", "sink", "busybox", "sleep", "300"]);
    for script in [count, slow] {
        let got = piped(&d, &["exec", "-i", "sink", "sh", "-c", script], &input);
        assert_eq!(got, want, "docker exec -i: {script}");
    }
    d.ok(&["rm", "-f", "sink"]);
}

/// `docker cp` out of a stopped, and of a created, container includes its
/// volumes and bind mounts (what was in them when it ran).
#[test]
fn cp_out_of_stopped_and_created_containers_includes_mounts() {
    let d = Daemon::start("cpmounts");
    d.import_busybox();
    let bind = d.tmp.path().join("bind-src");
    std::fs::create_dir(&bind).unwrap();
    std::fs::write(bind.join("b"), "in-bind\n").unwrap();
    let bind_spec = format!("{}:/work/bind", bind.display());
    d.ok(&[
        "run",
        "--name",
        "cpstop",
        "-v",
        "cpvol:/work/vol",
        "-v",
        &bind_spec,
        "busybox",
        "sh",
        "-c",
        "echo in-volume > /work/vol/f; echo in-root > /work/r",
    ]);
    let out = d.tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = out.to_str().unwrap();
    // One file in a volume, one in a bind, and the whole tree above both.
    d.ok(&["cp", "cpstop:/work/vol/f", &format!("{o}/f")]);
    assert_eq!(
        std::fs::read_to_string(out.join("f")).unwrap(),
        "in-volume\n"
    );
    d.ok(&["cp", "cpstop:/work/bind/b", &format!("{o}/b")]);
    assert_eq!(std::fs::read_to_string(out.join("b")).unwrap(), "in-bind\n");
    d.ok(&["cp", "cpstop:/work", &format!("{o}/work")]);
    for (file, text) in [
        ("vol/f", "in-volume\n"),
        ("bind/b", "in-bind\n"),
        ("r", "in-root\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(out.join("work").join(file)).unwrap(),
            text,
            "{file}"
        );
    }
    // Created, never started: the volume (filled by the first container)
    // and the bind are there too.
    d.ok(&[
        "create",
        "--name",
        "cpnew",
        "-v",
        "cpvol:/data",
        "-v",
        &bind_spec,
        "busybox",
        "true",
    ]);
    d.ok(&["cp", "cpnew:/data/f", &format!("{o}/f2")]);
    assert_eq!(
        std::fs::read_to_string(out.join("f2")).unwrap(),
        "in-volume\n"
    );
    d.ok(&["cp", "cpnew:/work/bind/b", &format!("{o}/b2")]);
    assert_eq!(
        std::fs::read_to_string(out.join("b2")).unwrap(),
        "in-bind\n"
    );
    // Nothing leaked into the host's mount table.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(bind.to_str().unwrap()),
        "a copy-out mount is left on the host"
    );
    d.ok(&["rm", "cpstop", "cpnew"]);
}

/// An exec inspected right after its start (attached: the monitor gets it
/// only once the client has the 101; or detached) is running, or has ended
/// with an exit code: never `Running: false` without one (class-api polls so).
#[test]
fn exec_inspected_right_after_start_is_running_or_has_a_code() {
    use std::io::{Read, Write};
    let d = Daemon::start("execpoll");
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "poll", "busybox", "sleep", "300"]);
    let exec = |cmd: &str| -> String {
        let body =
            format!(r#"{{"Cmd":["sh","-c","{cmd}"],"AttachStdout":true,"AttachStderr":true}}"#);
        let (status, resp) = d.http_body("POST", "/containers/poll/exec", Some(&body));
        assert!(status.contains("201"), "{status} {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        v["Id"].as_str().unwrap().to_string()
    };
    let check = |id: &str, when: &str| {
        let (_, resp) = d.http("GET", &format!("/exec/{id}/json"));
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert!(
            v["Running"] == true || v["ExitCode"].is_i64(),
            "{when}: exec inspect shows neither running nor an exit code: {v}"
        );
    };
    for i in 0..10 {
        let cmd = if i % 2 == 0 { "true" } else { "sleep 0.2" };
        // Attached: inspect as soon as the 101 is read.
        let id = exec(cmd);
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let body = r#"{"Detach":false,"Tty":false}"#;
        write!(
            s,
            "POST /exec/{id}/start HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).unwrap(),
                1,
                "connection closed before the 101"
            );
            head.push(byte[0]);
        }
        assert!(
            String::from_utf8_lossy(&head).contains("101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        check(&id, "attached");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        check(&id, "attached, after the stream");
        // Detached.
        let id = exec(cmd);
        let (status, _) = d.http_body(
            "POST",
            &format!("/exec/{id}/start"),
            Some(r#"{"Detach":true}"#),
        );
        assert!(status.contains("200"), "{status}");
        check(&id, "detached");
    }
    d.ok(&["rm", "-f", "poll"]);
}
