//! Every hardening and limit option, proven inside a real container, the
//! same way through three doors: the real `docker run` against `cubby
//! daemon`, `cubby run` as the daemon's client, and standalone `cubby run`.
//! All three go through the engine's one builder (`cubby_engine::config`).
//! Needs root, cgroups, a static busybox and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use common::World;
use daemon::Daemon;
use std::process::{Output, Stdio};

/// One option: the flags, a script run by `sh -c`, and what its output
/// must contain (each line).
struct Case {
    what: &'static str,
    flags: Vec<String>,
    script: String,
    want: Vec<String>,
}

fn case(what: &'static str, flags: &[&str], script: &str, want: &[&str]) -> Case {
    Case {
        what,
        flags: flags.iter().map(|s| s.to_string()).collect(),
        script: script.to_string(),
        want: want.iter().map(|s| s.to_string()).collect(),
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn check(door: &str, c: &Case, o: &Output) {
    let (out, err) = text(o);
    assert!(
        o.status.success(),
        "{door}: {} ({:?}) failed: {}\nstdout: {out}\nstderr: {err}",
        c.what,
        c.flags,
        o.status
    );
    for w in &c.want {
        assert!(
            out.lines().any(|l| l.trim() == w.as_str()),
            "{door}: {} ({:?}): want a line {w:?}, got:\n{out}\nstderr: {err}",
            c.what,
            c.flags
        );
    }
}

/// CapEff with every capability: all the kernel has that this (root)
/// test process holds, as --privileged grants.
fn all_caps_hex() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd in /proc/self/status");
    bnd.trim().to_string()
}

/// A character device of the host's /dev that containers do not get by
/// default (--privileged must bring it in).
fn host_only_device() -> String {
    use std::os::unix::fs::FileTypeExt;
    let defaults = [
        "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
    ];
    let mut names: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_char_device()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !defaults.contains(&n.as_str()))
        .collect();
    names.sort();
    let name = names
        .first()
        .expect("the host's /dev has a character device besides the defaults");
    format!("/dev/{name}")
}

fn cases(profile: &str) -> Vec<Case> {
    let seccomp_file = format!("seccomp={profile}");
    let all = format!("CapEff:\t{}", all_caps_hex());
    let mut v = vec![
        case(
            "read-only root",
            &["--read-only"],
            "touch /x 2>/dev/null && echo wrote || echo refused; awk '$5 == \"/\" { split($6, o, \",\"); print \"root-\" o[1] }' /proc/self/mountinfo",
            &["refused", "root-ro"],
        ),
        case(
            "writable root by default",
            &[],
            "touch /x && echo wrote",
            &["wrote"],
        ),
        case(
            "cap-drop ALL",
            &["--cap-drop", "ALL"],
            "grep CapEff /proc/self/status",
            &["CapEff:\t0000000000000000"],
        ),
        case(
            "cap-drop ALL + cap-add NET_ADMIN",
            &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"],
            "grep -e CapEff -e CapBnd /proc/self/status",
            &["CapEff:\t0000000000001000", "CapBnd:\t0000000000001000"],
        ),
        case(
            "default capabilities",
            &[],
            "grep CapEff /proc/self/status",
            &["CapEff:\t00000000a80425fb"],
        ),
        case(
            "no-new-privileges by default",
            &[],
            "grep NoNewPrivs /proc/self/status",
            &["NoNewPrivs:\t1"],
        ),
        case(
            "no-new-privileges (bare, as docker's docs write it)",
            &["--security-opt", "no-new-privileges"],
            "grep NoNewPrivs /proc/self/status",
            &["NoNewPrivs:\t1"],
        ),
        case(
            "no-new-privileges=true",
            &["--security-opt", "no-new-privileges=true"],
            "grep NoNewPrivs /proc/self/status",
            &["NoNewPrivs:\t1"],
        ),
        case(
            "no-new-privileges=false",
            &["--security-opt", "no-new-privileges=false"],
            "grep NoNewPrivs /proc/self/status",
            &["NoNewPrivs:\t0"],
        ),
        case(
            "seccomp by default",
            &[],
            "grep Seccomp: /proc/self/status",
            &["Seccomp:\t2"],
        ),
        case(
            "seccomp=unconfined",
            &["--security-opt", "seccomp=unconfined"],
            "grep Seccomp: /proc/self/status",
            &["Seccomp:\t0"],
        ),
        case(
            "ulimit",
            &["--ulimit", "nofile=512:1024"],
            "ulimit -n; ulimit -Hn",
            &["512", "1024"],
        ),
        case(
            "device",
            &["--device", "/dev/null:/dev/mynull"],
            "test -c /dev/mynull && echo char; echo x > /dev/mynull && echo written",
            &["char", "written"],
        ),
        case(
            "cpuset",
            &["--cpuset-cpus", "0", "--cpuset-mems", "0"],
            "grep -e Cpus_allowed_list -e Mems_allowed_list /proc/self/status",
            &["Cpus_allowed_list:\t0", "Mems_allowed_list:\t0"],
        ),
        case(
            "init as PID 1",
            &["--init"],
            "echo pid=$$",
            &["pid=2"],
        ),
    ];
    v.push(Case {
        what: "seccomp profile file",
        flags: vec!["--security-opt".into(), seccomp_file],
        script:
            "grep Seccomp: /proc/self/status; mkdir /tmp/d 2>/dev/null && echo made || echo denied"
                .into(),
        want: vec!["Seccomp:\t2".into(), "denied".into()],
    });
    v.push(Case {
        what: "privileged",
        flags: vec!["--privileged".into()],
        script: format!(
            "grep -e CapEff -e Seccomp: /proc/self/status; test -c {} && echo host-dev",
            host_only_device()
        ),
        want: vec![all, "Seccomp:\t0".into(), "host-dev".into()],
    });
    v
}

fn profile(dir: &std::path::Path) -> String {
    // Docker's format, as `docker run --security-opt seccomp=FILE` reads it.
    let p = dir.join("no-mkdir.json");
    std::fs::write(
        &p,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","comment":"no new directories"}]}"#,
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn options_through_docker_and_cubby_clients_of_the_daemon() {
    let d = Daemon::start("secopts");
    d.import_busybox();
    let prof = profile(d.tmp.path());
    for c in cases(&prof) {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(c.flags.iter().map(String::as_str));
        args.extend(["busybox", "sh", "-c", c.script.as_str()]);
        check("docker run", &c, &d.docker(&args));
        let out = d
            .cubby()
            .arg("--host")
            .arg(format!("unix://{}", d.socket.display()))
            .args(&args)
            .env_remove("CUBBY_HOST")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        check("cubby run (daemon)", &c, &out);
    }
    // Without --init the command is PID 1 (Docker's default).
    let out = d.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $$"]);
    assert_eq!(out.trim(), "1");
    // The monitor keeps SIGCHLD blocked (its signalfd); a container's
    // process and an exec start with no signal blocked.
    let id = d.ok(&["run", "-d", "busybox", "sleep", "60"]);
    let id = id.trim();
    for status in ["/proc/1/status", "/proc/self/status"] {
        let out = d.ok(&["exec", id, "grep", "SigBlk", status]);
        assert!(out.contains("SigBlk:\t0000000000000000"), "{status}: {out}");
    }
    d.ok(&["rm", "-f", id]);
}

#[test]
fn options_through_standalone_cubby_run() {
    let w = World::new();
    let prof = profile(w.dir.path());
    for c in cases(&prof) {
        let flags: Vec<&str> = c.flags.iter().map(String::as_str).collect();
        let out = w.run(&flags, &["sh", "-c", c.script.as_str()]);
        check("cubby run (standalone)", &c, &out);
    }
    assert_eq!(w.sh(&["--no-init"], "echo $$").trim(), "1");
}

#[test]
fn unsupported_options_are_refused_by_name() {
    let d = Daemon::start("secrefuse");
    d.import_busybox();
    for (flags, want) in [
        (&["--security-opt", "apparmor=unconfined"][..], "apparmor"),
        (&["--security-opt", "label=disable"][..], "label"),
        (&["--dns", "10.0.0.1"][..], "HostConfig.Dns"),
        (&["--pid", "host"][..], "HostConfig.PidMode"),
        (&["--blkio-weight", "300"][..], "HostConfig.BlkioWeight"),
        (&["--health-cmd", "true"][..], "Config.Healthcheck"),
        (&["--oom-score-adj", "100"][..], "HostConfig.OomScoreAdj"),
    ] {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(flags);
        args.extend(["busybox", "true"]);
        let err = d.fails(&args);
        assert!(
            err.contains("cubby does not support") && err.contains(want),
            "{flags:?}: {err}"
        );
    }
    // Nothing was created by a refused run.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    // An exec cannot ask for more than its container has.
    d.ok(&["run", "-d", "--name", "ex", "busybox", "sleep", "300"]);
    let err = d.fails(&["exec", "--privileged", "ex", "true"]);
    assert!(err.contains("ExecConfig.Privileged"), "{err}");
    d.ok(&["rm", "-f", "ex"]);
}

/// CVE-2019-5736 through the daemon: the monitor, which clones every
/// container, exec and restart (a client's or the restart policy's), runs from a sealed memfd copy of cubby, so
/// neither a container's init nor an exec can reach the host's binary.
#[test]
fn daemon_containers_never_see_the_host_binary() {
    let d = Daemon::start("sealed");
    d.import_busybox();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cubby"));
    let before = std::fs::read(bin).unwrap();
    let monitor = d.monitor_pid().expect("the monitor's pid");
    let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:"),
        "the monitor runs from {}",
        exe.display()
    );
    let probe = "readlink /proc/1/exe; echo pwned >> /proc/1/exe 2>/dev/null && echo wrote; \
                 cat /proc/1/exe > /dev/null && echo readable; true";
    let out = d.ok(&[
        "run",
        "--rm",
        "--init",
        "--cap-add",
        "SYS_PTRACE",
        "busybox",
        "sh",
        "-c",
        probe,
    ]);
    assert!(out.starts_with("/memfd:"), "PID 1 runs from {out}");
    assert!(!out.contains("wrote") && out.contains("readable"), "{out}");
    // An exec, and a restarted container, are made the same way.
    d.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "sealed-exec",
        "--cap-add",
        "SYS_PTRACE",
        "busybox",
        "sleep",
        "300",
    ]);
    let out = d.ok(&["exec", "sealed-exec", "sh", "-c", probe]);
    assert!(
        out.starts_with("/memfd:") && !out.contains("wrote"),
        "{out}"
    );
    d.ok(&["restart", "-t", "0", "sealed-exec"]);
    let out = d.ok(&["exec", "sealed-exec", "sh", "-c", probe]);
    assert!(
        out.starts_with("/memfd:") && !out.contains("wrote"),
        "{out}"
    );
    d.ok(&["rm", "-f", "sealed-exec"]);
    // A container its restart policy brings back (it fails once, then
    // stays up): the monitor's own restart, not a client's.
    d.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "sealed-policy",
        "--restart",
        "on-failure:3",
        "--cap-add",
        "SYS_PTRACE",
        "busybox",
        "sh",
        "-c",
        "test -e /failed-once || { touch /failed-once; exit 3; }; sleep 300",
    ]);
    let state = || {
        d.ok(&[
            "inspect",
            "--format",
            "{{.RestartCount}} {{.State.Running}}",
            "sealed-policy",
        ])
        .trim()
        .to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while state() != "1 true" {
        assert!(
            std::time::Instant::now() < deadline,
            "the policy never restarted the container: {}",
            state()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = d.ok(&["exec", "sealed-policy", "sh", "-c", probe]);
    assert!(
        out.starts_with("/memfd:") && !out.contains("wrote"),
        "{out}"
    );
    d.ok(&["rm", "-f", "sealed-policy"]);
    assert_eq!(
        std::fs::read(bin).unwrap(),
        before,
        "the cubby binary changed"
    );
}
