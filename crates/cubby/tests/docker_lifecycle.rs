//! Container lifecycle through `cubby daemon`, driven by the real `docker`
//! CLI: foreground and interactive runs (attach/hijack, a real pty),
//! exec, stop/start/restart, pause, rename, restart policies, events, and a
//! daemon killed with SIGKILL. Needs root, cgroups, a static busybox and
//! /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn inspect(d: &Daemon, name: &str) -> Value {
    let v: Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

fn code_of(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn foreground_runs_stdin_and_exit_codes() {
    let d = Daemon::start("fg");
    d.import_busybox();
    // Attach before start, output through the hijacked connection, --rm.
    let out = d.docker(&[
        "run",
        "--rm",
        "--name",
        "fg1",
        "busybox",
        "sh",
        "-c",
        "echo hi; echo err >&2",
    ]);
    assert_eq!(code_of(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    eventually("--rm removed it", || {
        (!d.ok(&["ps", "-a"]).contains("fg1")).then_some(())
    });

    // docker attach to a running container: its output from now on, its exit code.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "att",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo late; exit 2",
    ]);
    let out = d.docker(&["attach", "att"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
    assert_eq!(code_of(&out), 2);
    d.ok(&["rm", "att"]);

    let out = d.docker(&["run", "--name", "fg2", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(code_of(&out), 7);
    assert_eq!(inspect(&d, "fg2")["State"]["ExitCode"], 7);
    // A command that does not exist: Docker's 127.
    let out = d.docker(&[
        "run",
        "--rm",
        "--name",
        "nocmd",
        "busybox",
        "no-such-command",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code_of(&out), 127, "{err}");
    assert!(err.contains("no-such-command"), "{err}");
    eventually("--rm removed the container that could not start", || {
        (!d.ok(&["ps", "-a"]).contains("nocmd")).then_some(())
    });

    // -i: stdin reaches the container; its end closes the container's.
    let mut child = d
        .docker_cmd(&[
            "run",
            "-i",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code_of(&out), 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO STDIN\ndone\n");
}

/// Runs docker with a pty as its terminal, types `input`, returns what it
/// printed and its exit code.
fn docker_in_pty(d: &Daemon, args: &[&str], input: &[u8]) -> (String, i32) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || std::fs::File::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut child = d
        .docker_cmd(args)
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    // Let docker put the terminal in raw mode before we type.
    std::thread::sleep(Duration::from_millis(1500));
    master.write_all(input).unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once docker exits and the slave is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("docker {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    (
        String::from_utf8_lossy(&out).into_owned(),
        status.code().unwrap_or(-1),
    )
}

#[test]
fn interactive_tty_run_and_exec() {
    let d = Daemon::start("tty");
    d.import_busybox();
    let (out, code) = docker_in_pty(
        &d,
        &["run", "-it", "--rm", "busybox", "sh"],
        b"tty && echo cols=$(stty size)\rexit 3\r",
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    // docker sent our terminal's size (openpty's default 0 0 is fine too).
    assert!(out.contains("cols="), "{out}");

    d.ok(&["run", "-d", "--name", "t1", "busybox", "sleep", "300"]);
    let (out, code) = docker_in_pty(
        &d,
        &["exec", "-it", "t1", "sh"],
        b"echo in-$((6*7))\rexit 4\r",
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("in-42"), "{out}");
    d.ok(&["rm", "-f", "t1"]);
}

#[test]
fn exec_stop_restart_pause_rename() {
    let d = Daemon::start("life");
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "course=os101",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    assert_eq!(d.ok(&["exec", "web", "echo", "in-exec"]), "in-exec\n");
    assert_eq!(d.ok(&["exec", "-u", "1000", "web", "id", "-u"]), "1000\n");
    assert_eq!(
        d.ok(&["exec", "-u", "student", "web", "id", "-un"]),
        "student\n"
    );
    assert_eq!(d.ok(&["exec", "-w", "/tmp", "web", "pwd"]), "/tmp\n");
    assert_eq!(
        d.ok(&["exec", "-e", "A=1", "web", "sh", "-c", "echo $A"]),
        "1\n"
    );
    let out = d.docker(&["exec", "web", "sh", "-c", "exit 5"]);
    assert_eq!(code_of(&out), 5);
    // Same pid namespace and cgroup as the container.
    let pids = d.ok(&["exec", "web", "ps", "-o", "pid,args"]);
    assert!(
        pids.contains("while true") || pids.contains("sh -c"),
        "{pids}"
    );
    let mut child = d
        .docker_cmd(&["exec", "-i", "web", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");

    // ps filters by label.
    assert!(d
        .ok(&["ps", "--filter", "label=course=os101"])
        .contains("web"));
    assert!(!d
        .ok(&["ps", "--filter", "label=course=other"])
        .contains("web"));

    // stop: SIGTERM, the trap exits 0 at once.
    let t = Instant::now();
    assert_eq!(d.ok(&["stop", "web"]).trim(), "web");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop waited for SIGKILL"
    );
    let st = inspect(&d, "web");
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["ExitCode"], 0);
    assert!(d.ok(&["logs", "web"]).contains("bye"));
    // Stopping a stopped container is fine (304).
    d.ok(&["stop", "web"]);

    // start again, restart, pause, unpause, rename.
    d.ok(&["start", "web"]);
    assert_eq!(inspect(&d, "web")["State"]["Running"], true);
    d.ok(&["restart", "-t", "5", "web"]);
    assert_eq!(inspect(&d, "web")["State"]["Running"], true);
    d.ok(&["pause", "web"]);
    assert_eq!(inspect(&d, "web")["State"]["Paused"], true);
    assert!(d.ok(&["ps"]).contains("(Paused)"));
    let err = d.fails(&["exec", "web", "true"]);
    assert!(err.contains("paused"), "{err}");
    d.ok(&["unpause", "web"]);
    assert_eq!(inspect(&d, "web")["State"]["Status"], "running");
    d.ok(&["rename", "web", "web2"]);
    assert_eq!(inspect(&d, "web2")["Name"], "/web2");
    let err = d.fails(&["inspect", "web"]);
    assert!(err.contains("No such"), "{err}");

    // A process that ignores SIGTERM is killed after -t.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; sleep 300",
    ]);
    let t = Instant::now();
    d.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(inspect(&d, "stubborn")["State"]["ExitCode"], 137);
    d.ok(&["rm", "-f", "web2", "stubborn"]);
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn restart_policies_and_events() {
    let d = Daemon::start("restart");
    d.import_busybox();
    let since = d.ok(&["version", "--format", "{{.Server.Version}}"]);
    assert!(!since.is_empty());
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;

    d.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    let st = eventually("on-failure:2 gives up after two restarts", || {
        let st = inspect(&d, "flaky");
        (st["State"]["Status"] == "exited" && st["RestartCount"] == 2).then_some(st)
    });
    assert_eq!(st["State"]["ExitCode"], 1);
    assert_eq!(d.ok(&["logs", "flaky"]), "try\ntry\ntry\n");

    d.ok(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2",
    ]);
    eventually("always restarts", || {
        (inspect(&d, "always")["RestartCount"].as_i64() >= Some(2)).then_some(())
    });
    // A stopped container stays stopped.
    d.ok(&["stop", "-t", "1", "always"]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(inspect(&d, "always")["State"]["Status"], "exited");

    d.ok(&[
        "run",
        "-d",
        "--name",
        "ok",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    assert_eq!(d.ok(&["wait", "ok"]).trim(), "0");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect(&d, "ok")["RestartCount"], 0);

    // Events of all that, with --since/--until (ends by itself).
    let t1 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let events = d.ok(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &t1.to_string(),
        "--filter",
        "container=flaky",
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = events.lines().collect();
    assert_eq!(actions.first(), Some(&"create"), "{events}");
    assert_eq!(
        actions.iter().filter(|a| **a == "die").count(),
        3,
        "{events}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "restart").count(),
        2,
        "{events}"
    );
    let all = d.ok(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &t1.to_string(),
    ]);
    assert!(all.contains("container stop"), "{all}");

    // --rm and a restart policy do not go together.
    let err = d.fails(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert!(
        err.contains("AutoRemove") || err.contains("conflicting"),
        "{err}"
    );
    d.ok(&["rm", "-f", "flaky", "always", "ok"]);
}

#[test]
fn daemon_killed_with_sigkill_loses_nothing() {
    let mut d = Daemon::start("kill9");
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "runner",
        "busybox",
        "sh",
        "-c",
        "echo before; sleep 300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "done3",
        "busybox",
        "sh",
        "-c",
        "echo three; exit 3",
    ]);
    assert_eq!(d.ok(&["wait", "done3"]).trim(), "3");
    let pid = inspect(&d, "runner")["State"]["Pid"].as_i64().unwrap();
    let monitor = d.monitor_pid().expect("monitor pid");

    d.kill9_and_restart();
    assert_eq!(
        d.monitor_pid(),
        Some(monitor),
        "the same monitor serves the new daemon"
    );
    let st = inspect(&d, "runner");
    assert_eq!(st["State"]["Running"], true);
    assert_eq!(st["State"]["Pid"].as_i64(), Some(pid));
    assert_eq!(inspect(&d, "done3")["State"]["ExitCode"], 3);
    assert_eq!(d.ok(&["logs", "done3"]), "three\n");
    assert_eq!(d.ok(&["logs", "runner"]), "before\n");
    let names = d.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["done3", "runner"], "no duplicates");
    // It is still fully usable.
    assert_eq!(d.ok(&["exec", "runner", "echo", "alive"]), "alive\n");
    d.ok(&["rm", "-f", "runner", "done3"]);
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn live_events_follow_new_containers() {
    let d = Daemon::start("live-events");
    d.import_busybox();
    // `docker events` without --until must stay open and report what
    // happens after it started.
    let mut follower = d
        .docker_cmd(&[
            "events",
            "--filter",
            "container=live",
            "--format",
            "{{.Action}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "docker events exited before anything happened"
    );
    d.ok(&["run", "--name", "live", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|a: &String| a == "die") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(a) => seen.push(a),
            Err(_) => break,
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    d.ok(&["rm", "-f", "live"]);
    assert!(seen.iter().any(|a| a == "start"), "{seen:?}");
    assert!(seen.iter().any(|a| a == "die"), "{seen:?}");
}
