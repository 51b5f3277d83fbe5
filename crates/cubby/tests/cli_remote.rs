//! The `cubby` CLI as a client of `cubby daemon` (`--host unix://...`):
//! containers made by `cubby` and by `docker` are the same containers.
//! Needs root, cgroups, a static busybox and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon as Harness};
use serde_json::Value;
use std::process::{Output, Stdio};

/// `cubby --root R --state-dir S --host unix://SOCK ARGS` with no input.
fn cubby(h: &Harness, args: &[&str]) -> Output {
    cubby_input(h, args, b"")
}

/// The same with `input` on stdin (then EOF).
fn cubby_input(h: &Harness, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = h
        .cubby()
        .arg("--host")
        .arg(format!("unix://{}", h.socket.display()))
        .args(args)
        .env_remove("CUBBY_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn cubby_ok(h: &Harness, args: &[&str]) -> String {
    let out = cubby(h, args);
    assert!(
        out.status.success(),
        "cubby {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cubby_and_docker_share_containers() {
    let h = Harness::start("remote");
    h.import_busybox();

    // Made by cubby through the daemon: docker sees it.
    let id = cubby_ok(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "from-cubby",
            "-l",
            "course=os101",
            "-e",
            "GREETING=hi",
            "busybox",
            "sh",
            "-c",
            "echo $GREETING-from-cubby; sleep 60",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    let ps = h.ok(&["ps"]);
    assert!(ps.contains("from-cubby") && ps.contains(&id[..12]), "{ps}");

    // Made by docker: cubby sees both.
    h.ok(&[
        "run",
        "-d",
        "--name",
        "from-docker",
        "busybox",
        "sleep",
        "60",
    ]);
    let ps = cubby_ok(&h, &["ps"]);
    assert!(
        ps.contains("from-cubby") && ps.contains("from-docker"),
        "{ps}"
    );
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    let quiet = cubby_ok(&h, &["ps", "-q"]);
    assert_eq!(quiet.lines().count(), 2, "{quiet}");
    assert!(quiet.lines().any(|l| l == &id[..12]), "{quiet}");
    let labelled = cubby_ok(&h, &["ps", "-q", "--filter", "label=course=os101"]);
    assert_eq!(labelled.trim(), &id[..12], "{labelled}");

    // Logs and inspect of the cubby-made one.
    eventually("cubby logs shows the output", || {
        let out = cubby(&h, &["logs", "from-cubby"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout) == "hi-from-cubby\n")
            .then_some(())
    });
    let inspect: Value = serde_json::from_str(&cubby_ok(&h, &["inspect", "from-cubby"])).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    assert_eq!(inspect[0]["Name"], "/from-cubby");
    assert_eq!(inspect[0]["Config"]["Labels"]["course"], "os101");
    let docker_view: Value = serde_json::from_str(&h.ok(&["inspect", "from-cubby"])).unwrap();
    assert_eq!(docker_view[0]["Id"], id);

    // Kill the docker-made one with cubby: docker sees it exit.
    assert_eq!(cubby_ok(&h, &["kill", "from-docker"]).trim(), "from-docker");
    eventually("docker ps -a shows it killed", || {
        h.ok(&["ps", "-a"]).contains("Exited (137)").then_some(())
    });
    assert!(!cubby_ok(&h, &["ps"]).contains("from-docker"));
    assert!(cubby_ok(&h, &["ps", "-a"]).contains("from-docker"));

    // rm without -f refuses a running one (exit 1, docker's message); -f removes.
    let out = cubby(&h, &["rm", "from-cubby"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error response from daemon") && err.contains("running"),
        "{err}"
    );
    assert_eq!(
        cubby_ok(&h, &["rm", "-f", "from-cubby"]).trim(),
        "from-cubby"
    );
    assert_eq!(cubby_ok(&h, &["rm", "from-docker"]).trim(), "from-docker");
    assert!(!h.ok(&["ps", "-a"]).contains("from-"), "both removed");

    // Errors of the daemon are exit 125 with its message.
    let out = cubby(&h, &["inspect", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing-here"));
    let out = cubby(&h, &["logs", "nothing-here"]);
    assert_eq!(out.status.code(), Some(125));
    // (--pull never: a missing image is otherwise pulled, from Docker Hub
    // for this name; pulling is tested with a local registry in
    // docker_compat.rs.)
    let out = cubby(&h, &["run", "-d", "--pull", "never", "no-such-image:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image"));
    // A standalone-only flag is refused, not ignored.
    let out = cubby(&h, &["run", "-d", "--rootfs", "/", "sh"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rootfs"));
}

#[test]
fn dead_host_is_an_error_not_a_fallback() {
    assert!(nix::unistd::geteuid().is_root(), "run these tests as root");
    let tmp = tempfile::tempdir().unwrap();
    let dead = tmp.path().join("dead.sock");
    // A socket file nobody listens on (a killed daemon's leftover).
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    for args in [&["ps"][..], &["run", "--rootfs", "/", "true"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cubby"))
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .arg("--root")
            .arg(tmp.path().join("data"))
            .arg("--host")
            .arg(format!("unix://{}", dead.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not answer") && err.contains(&*dead.to_string_lossy()),
            "{err}"
        );
        // Nothing ran standalone.
        assert!(!tmp.path().join("state").exists());
    }
    // CUBBY_HOST works the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cubby"))
        .arg("ps")
        .env("CUBBY_HOST", format!("unix://{}", dead.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUBBY_HOST"));
}

/// A stand-in daemon on a Unix socket that speaks just enough of the
/// Docker API (create, hijacked attach and exec start with multiplexed
/// frames, wait, exec inspect) to check the client side of `cubby run` in
/// the foreground and `cubby exec`, which cubby's own daemon does not
/// serve yet. Records the requests it saw, in order.
mod fake {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    pub type Seen = Arc<Mutex<Vec<String>>>;

    pub fn start(path: &Path) -> Seen {
        let listener = UnixListener::bind(path).unwrap();
        let seen: Seen = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &log);
                });
            }
        });
        seen
    }

    fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    fn serve(conn: UnixStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
        let mut w = conn.try_clone()?;
        let mut r = BufReader::new(conn);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let mut len = 0usize;
        let mut upgrade = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            upgrade |= h == "upgrade: tcp";
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.strip_prefix("/v1.43").unwrap_or(path).to_string();
        log.lock().unwrap().push(format!(
            "{method} {path} {}",
            String::from_utf8_lossy(&body)
        ));
        let json = |w: &mut UnixStream, status: &str, body: &str| {
            write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let hijacked = path.contains("/attach") || path.starts_with("/exec/e1/start");
        if hijacked {
            assert!(upgrade, "{path} without Upgrade: tcp");
            write!(
                w,
                "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            )?;
            w.write_all(&frame(1, b"out\n"))?;
            w.write_all(&frame(2, b"err\n"))?;
            let held = |l: &Vec<String>| l.iter().any(|r| r.contains("create?name=hold"));
            if path.contains("/attach") && held(&log.lock().unwrap()) {
                // Runs until the client forwards a signal (20 s at most).
                for _ in 0..1000 {
                    let kill = log
                        .lock()
                        .unwrap()
                        .iter()
                        .find_map(|r| r.split("kill?signal=").nth(1).map(str::to_string));
                    if let Some(sig) = kill {
                        w.write_all(&frame(1, format!("killed:{}", sig.trim()).as_bytes()))?;
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            if path.contains("stdin=1") || path.starts_with("/exec") {
                // Echo what the client sends until it half-closes.
                let mut input = Vec::new();
                r.read_to_end(&mut input)?;
                w.write_all(&frame(1, &[b"got:", &input[..]].concat()))?;
            }
            return w.shutdown(std::net::Shutdown::Both);
        }
        match (method, path.as_str()) {
            ("GET", "/_ping") => write!(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"),
            ("POST", p) if p.starts_with("/containers/create") => json(
                &mut w,
                "201 Created",
                &format!(r#"{{"Id":"{}","Warnings":[]}}"#, "c".repeat(64)),
            ),
            ("POST", p) if p.contains("/wait") => {
                json(&mut w, "200 OK", r#"{"StatusCode":3,"Error":null}"#)
            }
            ("POST", p) if p.ends_with("/start") => {
                write!(w, "HTTP/1.1 204 No Content\r\n\r\n")
            }
            ("POST", p) if p.ends_with("/exec") => json(&mut w, "201 Created", r#"{"Id":"e1"}"#),
            ("GET", "/exec/e1/json") => json(&mut w, "200 OK", r#"{"ExitCode":5,"Running":false}"#),
            _ => json(&mut w, "404 Not Found", r#"{"message":"page not found"}"#),
        }
    }
}

#[test]
fn foreground_run_and_exec_over_a_hijacked_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("fake.sock");
    let seen = fake::start(&sock);
    let cubby = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cubby"))
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };

    // Foreground without -i: output split by stream, exit code from wait.
    let out = cubby(&["run", "--name", "fg", "busybox", "sh"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(stderr, "err\n");
    let log = seen.lock().unwrap().clone();
    let order: Vec<&str> = log
        .iter()
        .filter(|l| !l.starts_with("GET /_ping"))
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    let c = "c".repeat(64);
    assert_eq!(
        order,
        vec![
            "/containers/create?name=fg".to_string(),
            format!("/containers/{c}/attach?stream=1&stdout=1&stderr=1&stdin=0"),
            format!("/containers/{c}/wait?condition=next-exit"),
            format!("/containers/{c}/start"),
        ]
    );
    let create: Value = serde_json::from_str(log[1].splitn(3, ' ').nth(2).unwrap()).unwrap();
    assert_eq!(create["Image"], "busybox");
    assert_eq!(create["Cmd"][0], "sh");
    assert_eq!(create["AttachStdout"], true);

    // -i: our stdin reaches the container and its EOF too.
    let out = cubby(&["run", "-i", "--rm", "busybox"], b"typed");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\ngot:typed");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("/wait?condition=removed")));

    // Without a TTY, our SIGTERM is forwarded to the container (sig-proxy).
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cubby"))
        .arg("--host")
        .arg(format!("unix://{}", sock.display()))
        .args(["run", "--name", "hold", "busybox"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = format!("/containers/{c}/start");
    eventually("the held container is started", || {
        let log = seen.lock().unwrap();
        let n = log.iter().filter(|l| l.contains(&started)).count();
        // The first run above started the same id once already.
        (n >= 3).then_some(())
    });
    // The client may not have installed its handlers yet: signal until the
    // kill arrives (the fake ends the session on the first).
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    eventually("the signal is forwarded", || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let log = seen.lock().unwrap();
        log.iter()
            .any(|l| l.contains("kill?signal=SIGTERM"))
            .then_some(())
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nkilled:SIGTERM");
    assert_eq!(out.status.code(), Some(3));

    // exec -i: create, hijacked start, exit code from exec inspect.
    let out = cubby(
        &["exec", "-i", "-u", "1000", "-e", "A=1", "fg", "cat"],
        b"in",
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\ngot:in");
    let log = seen.lock().unwrap().clone();
    let exec = log
        .iter()
        .find(|l| l.starts_with("POST /containers/fg/exec"))
        .unwrap();
    let body: Value = serde_json::from_str(exec.splitn(3, ' ').nth(2).unwrap()).unwrap();
    assert_eq!(body["Cmd"][0], "cat");
    assert_eq!(body["User"], "1000");
    assert_eq!(body["Env"][0], "A=1");
    assert_eq!(body["AttachStdin"], true);
}

/// Without --host, a daemon on the default socket is used only when it
/// answers and keeps its data in our --root.
#[test]
fn default_socket_is_used_only_for_its_own_root() {
    use cubby::remote::Remote;
    let h = Harness::start("default");
    let sock = format!("unix://{}", h.socket.display());
    let found = Remote::find_with(None, &sock, None, &h.root()).unwrap();
    assert!(found.is_some(), "the daemon serving our root is used");
    let other = h.tmp.path().join("other-root");
    let found = Remote::find_with(None, &sock, None, &other).unwrap();
    assert!(found.is_none(), "another --root stays standalone");
    let dead = format!("unix://{}", h.tmp.path().join("none.sock").display());
    assert!(Remote::find_with(None, &dead, None, &h.root())
        .unwrap()
        .is_none());
    // An explicit host is used whatever its root.
    let found = Remote::find_with(Some(&sock), &dead, None, &other).unwrap();
    assert!(found.is_some());
}

#[test]
fn foreground_exec_and_lifecycle_through_the_daemon() {
    let h = Harness::start("remote-fg");
    h.import_busybox();

    // Foreground: stdout and stderr apart, the container's exit code.
    let out = cubby(
        &h,
        &[
            "run",
            "--name",
            "fg",
            "busybox",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 3",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    assert!(h.ok(&["ps", "-a"]).contains("Exited (3)"));

    // -i --rm: our stdin reaches it (with EOF), and it is gone afterwards.
    let out = cubby_input(
        &h,
        &["run", "-i", "--rm", "--name", "cat", "busybox", "cat"],
        b"typed\n",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed\n");
    eventually("--rm removed it", || {
        (!h.ok(&["ps", "-a"]).contains(" cat")).then_some(())
    });

    // -t: one raw stream through the container's terminal.
    let out = cubby(
        &h,
        &[
            "run",
            "-t",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo in-tty >&2",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-tty\r\n");

    // A detached one with cubby, exec into it, the exit code of the exec.
    cubby_ok(
        &h,
        &["run", "-d", "--name", "svc", "busybox", "sleep", "300"],
    );
    let out = cubby(
        &h,
        &[
            "exec",
            "-e",
            "X=42",
            "-w",
            "/tmp",
            "svc",
            "sh",
            "-c",
            "echo $X $(pwd); exit 7",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42 /tmp\n");
    let out = cubby_input(&h, &["exec", "-i", "svc", "cat"], b"via-exec");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-exec");

    let out = cubby(
        &h,
        &[
            "exec",
            "-t",
            "svc",
            "sh",
            "-c",
            "tty >/dev/null && echo exec-tty",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-tty\r\n");

    // stop / start / restart, seen by docker.
    assert_eq!(cubby_ok(&h, &["stop", "-t", "1", "svc"]).trim(), "svc");
    let state = |h: &Harness| -> Value {
        serde_json::from_str::<Value>(&h.ok(&["inspect", "svc"])).unwrap()[0]["State"].clone()
    };
    assert_eq!(state(&h)["Running"], false);
    assert_eq!(cubby_ok(&h, &["start", "svc"]).trim(), "svc");
    assert_eq!(state(&h)["Running"], true);
    let pid = state(&h)["Pid"].as_i64().unwrap();
    assert_eq!(cubby_ok(&h, &["restart", "-t", "1", "svc"]).trim(), "svc");
    let after = state(&h);
    assert_eq!(after["Running"], true);
    assert_ne!(
        after["Pid"].as_i64().unwrap(),
        pid,
        "restart made a new process"
    );

    // Exec into a stopped container: the daemon's error, exit 125.
    cubby_ok(&h, &["stop", "-t", "1", "svc"]);
    let out = cubby(&h, &["exec", "svc", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Error response from daemon"));
    cubby_ok(&h, &["rm", "-f", "svc", "fg"]);
}

/// `cubby run -it` from a real terminal (util-linux `script` gives us a
/// pty): the terminal's size reaches the container, typed input too.
#[test]
fn run_it_from_a_terminal_passes_the_window_size() {
    let h = Harness::start("remote-it");
    h.import_busybox();
    let cmd = format!(
        "stty rows 33 cols 101; {} --root {} --state-dir {} --host unix://{} run -it --rm busybox \
         sh -c 'n=0; until stty -a | grep -q \"rows [1-9]\" || [ $n -ge 400 ]; do n=$((n+1)); sleep 0.05; done; \
         stty -a | head -1; read l; echo got-$l; exit 6'",
        env!("CARGO_BIN_EXE_cubby"),
        h.root().display(),
        h.state_dir().display(),
        h.socket.display()
    );
    // stdin stays open (an EOF would end script's session at once).
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("CUBBY_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("this test needs util-linux's script");
    let mut stdin = child.stdin.take().unwrap();
    // Typed at the terminal: reaches the container's `read`.
    std::io::Write::write_all(&mut stdin, b"typed-line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rows 33; columns 101"),
        "{text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("got-typed-line"), "{text:?}");
    assert_eq!(out.status.code(), Some(6), "{text:?}");
}
