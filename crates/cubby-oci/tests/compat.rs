//! cubby-oci as a drop-in runc (issue 9): specs written by other tools
//! (`runc spec`, `crun spec`), seccomp profiles that deny what the runtime
//! itself uses, terminals through --console-socket, namespaces joined by
//! path or absent, session keyrings and OCI hooks.

mod common;

use serde_json::{json, Value};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A busybox bundle whose config.json is written by `tool spec`
    /// (`cubby-oci`, `runc` or `crun`), then edited by `edit`.
    fn new(tool: &str, edit: impl FnOnce(&mut Value)) -> Bundle {
        assert!(nix::unistd::geteuid().is_root(), "run these tests as root");
        let dir = tempfile::Builder::new()
            .prefix("cubby-compat-")
            .tempdir()
            .unwrap();
        let b = Bundle { dir };
        common::busybox_rootfs(&b.path().join("rootfs"));
        let mut cmd = match tool {
            "cubby-oci" => {
                let mut c = b.oci(&["spec", "--bundle"]);
                c.arg(b.path());
                c
            }
            other => {
                let mut c = Command::new(common::require_tool(other, other));
                c.arg("spec").current_dir(b.path());
                c
            }
        };
        let out = common::run_timeout(&mut cmd, T);
        assert!(
            out.status.success(),
            "{tool} spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cfg = b.config();
        edit(&mut cfg);
        b.set_config(&cfg);
        b
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path().join("config.json")).unwrap()).unwrap()
    }

    fn set_config(&self, cfg: &Value) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(cfg).unwrap(),
        )
        .unwrap();
    }

    fn state_root(&self) -> PathBuf {
        self.path().join("state")
    }

    fn oci(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::runtime_under_test());
        c.arg("--root").arg(self.state_root()).args(args);
        c.current_dir(self.path());
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run_timeout(&mut self.oci(args), T)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cubby-oci {args:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `create` of a non-terminal container: its init inherits create's
    /// stdout/stderr (as with runc), so they go to files, not pipes that
    /// would only reach EOF when the container exits. (success, stderr)
    fn create(&self, id: &str) -> (bool, String) {
        let err_path = self.path().join(format!("create-{id}.err"));
        let mut child = self
            .oci(&["create", "--bundle"])
            .arg(self.path())
            .arg(id)
            .stdout(std::fs::File::create(self.path().join(format!("create-{id}.out"))).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let status = common::wait_timeout(&mut child, T).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("create {id} did not return within {T:?}")
        });
        (
            status.success(),
            std::fs::read_to_string(&err_path).unwrap_or_default(),
        )
    }

    fn create_ok(&self, id: &str) {
        let (ok, err) = self.create(id);
        assert!(ok, "create {id}: {err}");
    }

    /// `run` of a non-terminal container: (exit code, stdout, stderr).
    fn run_container(&self, id: &str, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["run", "--bundle"];
        let bundle = self.path().to_str().unwrap().to_string();
        args.push(&bundle);
        args.extend_from_slice(extra);
        args.push(id);
        let out = self.run(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Ok(list) = std::fs::read_dir(self.state_root()) {
            for e in list.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.oci(&["delete", "--force", &id]).output();
            }
        }
    }
}

fn set_args(cfg: &mut Value, script: &str) {
    cfg["process"]["args"] = json!(["sh", "-c", script]);
    cfg["process"]["terminal"] = json!(false);
}

/// Syscalls busybox's sh, echo, id, cat and grep need, and nothing the
/// runtime uses for its own setup (no close_range, keyctl, setresuid,
/// setgroups, prctl, setsid, socket, mount...). capset stays: without
/// no_new_privs the runtime keeps CAP_SYS_ADMIN to load the filter and
/// drops it with one capset afterwards (as runc and crun need it too).
const ALLOWED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "open",
    "openat",
    "close",
    "fstat",
    "newfstatat",
    "stat",
    "lstat",
    "statx",
    "lseek",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigsuspend",
    "ioctl",
    "access",
    "faccessat",
    "faccessat2",
    "pipe",
    "pipe2",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "kill",
    "tgkill",
    "uname",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "prlimit64",
    "getrlimit",
    "getcwd",
    "chdir",
    "getdents64",
    "readlink",
    "readlinkat",
    "futex",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "gettimeofday",
    "time",
    "getrandom",
    "rseq",
    "sysinfo",
    "setpgid",
    "getpgid",
    "getpgrp",
    "umask",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "madvise",
    "capget",
    "capset",
];

/// What the runtime itself uses and a container command like ours does not.
const DENIED: &[&str] = &[
    "close_range",
    "keyctl",
    "setgroups",
    "setresuid",
    "setresgid",
    "setuid",
    "setgid",
    "setsid",
    "prctl",
    "memfd_create",
    "pidfd_open",
    "socket",
    "sendmsg",
    "recvmsg",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "sethostname",
    "setns",
    "unshare",
];

fn profile(allow_list: bool) -> Value {
    if allow_list {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}]
        })
    } else {
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        })
    }
}

/// Priority 1 of the issue: a filter that denies what the runtime uses for
/// its own setup, with no_new_privileges off and on, as root and as a user
/// without CAP_SYS_ADMIN: the command runs, and CAP_SYS_ADMIN (kept only
/// to load the filter) is gone from every set.
#[test]
fn seccomp_profiles_that_deny_the_runtimes_own_syscalls() {
    for allow_list in [true, false] {
        for nnp in [false, true] {
            for uid in [0, 1000] {
                let b = Bundle::new("cubby-oci", |c| {
                    set_args(
                        c,
                        "echo ran; id -u; grep -E '^Cap(Prm|Eff)' /proc/self/status",
                    );
                    c["process"]["noNewPrivileges"] = json!(nnp);
                    c["process"]["user"] = json!({"uid": uid, "gid": uid});
                    c["linux"]["seccomp"] = profile(allow_list);
                });
                let id = common::unique_name("seccomp");
                let (code, out, err) = b.run_container(&id, &[]);
                let what = format!("allow_list={allow_list} nnp={nnp} uid={uid}");
                assert_eq!(code, 0, "{what}: exit {code}\nstdout: {out}\nstderr: {err}");
                let lines: Vec<&str> = out.lines().collect();
                assert_eq!(lines.first(), Some(&"ran"), "{what}: {out}");
                assert_eq!(
                    lines.get(1),
                    Some(&uid.to_string().as_str()),
                    "{what}: {out}"
                );
                for l in &lines[2..] {
                    let hex = l.split_whitespace().nth(1).unwrap();
                    let mask = u64::from_str_radix(hex, 16).unwrap();
                    assert_eq!(mask & (1 << 21), 0, "{what}: CAP_SYS_ADMIN left in {l}");
                }
                assert_eq!(lines.len(), 4, "{what}: {out}");
            }
        }
    }
}

/// Reads `r` to EOF on a thread; the receiver gets the bytes.
fn read_to_eof(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    rx
}

/// A console socket: accepts one connection and returns the fd it carries.
fn console_socket(dir: &Path) -> (PathBuf, mpsc::Receiver<OwnedFd>) {
    let path = dir.join("console.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            if let Ok(fd) = cubby_runtime::console::recv_fd(conn.as_fd()) {
                let _ = tx.send(fd);
            }
        }
    });
    (path, rx)
}

/// Reads the pty master until `want` appears (or EOF/EIO, or the deadline).
fn read_pty_until(master: &OwnedFd, want: &str) -> String {
    let deadline = std::time::Instant::now() + T;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(500u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&got).contains(want) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Creates `id` with a console socket, checks that create's stdout and
/// stderr reach EOF (the init holds neither), starts it, types `input` and
/// waits for `want` on the terminal.
/// Returns the pty master: dropping it hangs the terminal up (the shell
/// exits on SIGHUP), so a caller that still signals the container keeps it.
fn terminal_round_trip(b: &Bundle, id: &str, input: &str, want: &str) -> OwnedFd {
    let (sock, fd_rx) = console_socket(b.path());
    let mut child = b
        .oci(&["create", "--bundle"])
        .arg(b.path())
        .arg("--console-socket")
        .arg(&sock)
        .arg(id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out_rx = read_to_eof(child.stdout.take().unwrap());
    let err_rx = read_to_eof(child.stderr.take().unwrap());
    let status = common::wait_timeout(&mut child, T).expect("create did not exit");
    let stderr = err_rx
        .recv_timeout(T)
        .expect("create's stderr never reached EOF: the container's init keeps it open");
    out_rx
        .recv_timeout(T)
        .expect("create's stdout never reached EOF: the container's init keeps it open");
    assert!(
        status.success(),
        "create: {status}: {}",
        String::from_utf8_lossy(&stderr)
    );
    let master = fd_rx
        .recv_timeout(T)
        .expect("no pty master on the console socket");
    b.ok(&["start", id]);
    nix::unistd::write(&master, input.as_bytes()).unwrap();
    let seen = read_pty_until(&master, want);
    assert!(
        seen.contains(want),
        "terminal showed {seen:?}, wanted {want:?}"
    );
    master
}

/// Priority 2: with --console-socket, create returns holding no caller fd.
#[test]
fn console_socket_create_returns_and_the_terminal_works() {
    let b = Bundle::new("cubby-oci", |c| {
        c["process"]["args"] = json!(["sh"]);
        c["process"]["terminal"] = json!(true);
    });
    let id = common::unique_name("tty");
    let master = terminal_round_trip(&b, &id, "tty; echo term-$((6*7))\n", "term-42");
    b.ok(&["kill", &id, "KILL"]);
    drop(master);
    b.ok(&["delete", "--force", &id]);
}

/// Priority 3: `runc spec` and `crun spec` configs, with and without a
/// terminal, run under cubby-oci unchanged apart from the command.
#[test]
fn specs_written_by_runc_and_crun() {
    for tool in ["runc", "crun"] {
        let b = Bundle::new(tool, |c| {
            set_args(c, "echo from-$0; cat /proc/self/status | grep NoNewPrivs");
            c["process"]["args"]
                .as_array_mut()
                .unwrap()
                .push(json!(tool));
        });
        let id = common::unique_name(tool);
        let (code, out, err) = b.run_container(&id, &[]);
        assert_eq!(code, 0, "{tool} spec: {out}\n{err}");
        assert!(out.contains(&format!("from-{tool}")), "{tool}: {out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{tool}: {out}");

        // As written: terminal true and `sh`.
        let b = Bundle::new(tool, |_| {});
        let id = common::unique_name(tool);
        drop(terminal_round_trip(
            &b,
            &id,
            "echo tty-$((40+2)); exit 0\n",
            "tty-42",
        ));
        b.ok(&["delete", "--force", &id]);
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(String::from)
        .collect()
}

/// Priority 3: no mount namespace (accepted, as runc does): the command
/// runs chrooted in the rootfs, exec works, and delete leaves no mount of
/// the container behind in the runtime's namespace.
#[test]
fn spec_without_a_mount_namespace() {
    let b = Bundle::new("runc", |c| {
        set_args(
            c,
            "ls /proc/self/ns >/dev/null && echo chrooted && sleep 30",
        );
        c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}, {"type": "ipc"}]);
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
        c["root"]["readonly"] = json!(false);
    });
    let id = common::unique_name("nomnt");
    b.create_ok(&id);
    b.ok(&["start", &id]);
    let out = b.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "test -x /bin/busybox && echo in-rootfs",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "in-rootfs",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !mounts_under(&b.path().join("rootfs")).is_empty(),
        "expected the container's /proc etc. under the rootfs"
    );
    b.ok(&["delete", "--force", &id]);
    assert_eq!(
        mounts_under(&b.path().join("rootfs")),
        Vec::<String>::new(),
        "delete left mounts behind"
    );

    // What needs a private mount namespace is refused with the reason.
    let b2 = Bundle::new("runc", |c| {
        set_args(c, "true");
        c["linux"]["namespaces"] = json!([{"type": "pid"}]);
    });
    let (code, _, err) = b2.run_container(&common::unique_name("nomnt"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("needs a private mount namespace"), "{err}");
}

/// Priority 3: namespaces joined by path share the other container's.
#[test]
fn namespaces_joined_by_path() {
    let a = Bundle::new("cubby-oci", |c| set_args(c, "sleep 60"));
    let a_id = common::unique_name("ns-a");
    a.create_ok(&a_id);
    let st: Value = serde_json::from_slice(&a.ok(&["state", &a_id]).stdout).unwrap();
    let pid = st["pid"].as_i64().unwrap();
    let want_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let want_ipc = std::fs::read_link(format!("/proc/{pid}/ns/ipc")).unwrap();

    let b = Bundle::new("cubby-oci", |c| {
        set_args(c, "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc");
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            match n["type"].as_str().unwrap() {
                "network" => n["path"] = json!(format!("/proc/{pid}/ns/net")),
                "ipc" => n["path"] = json!(format!("/proc/{pid}/ns/ipc")),
                _ => {}
            }
        }
    });
    let (code, out, err) = b.run_container(&common::unique_name("ns-b"), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![want_net.to_str().unwrap(), want_ipc.to_str().unwrap()]
    );
    a.ok(&["delete", "--force", &a_id]);
}

/// Priority 4: a new session keyring per container unless --no-new-keyring.
#[test]
fn session_keyring_per_container() {
    let b = Bundle::new("cubby-oci", |c| {
        set_args(c, "grep -o '_ses[^ ]*' /proc/keys || echo none");
        // /proc/keys is masked by default: unmask it to look.
        c["linux"]["maskedPaths"] = json!([]);
    });
    let id = common::unique_name("keys");
    let (code, out, err) = b.run_container(&id, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines().any(|l| l == format!("_ses.{id}:")),
        "no keyring _ses.{id} in the container: {out}"
    );
    let id2 = common::unique_name("keys");
    let (code, out, err) = b.run_container(&id2, &["--no-new-keyring"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains(&format!("_ses.{id2}")),
        "--no-new-keyring still joined a new keyring: {out}"
    );
}

fn hook(log: &Path, name: &str, extra: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c",
            format!("read -r s; echo \"{name} $HOOK_NAME $0 $s\" >> {}; {extra}", log.display()),
            "arg-one"],
        "env": [format!("HOOK_NAME={name}")],
        "timeout": 20
    })
}

/// Priority 5: every hook kind runs in order with the state on stdin,
/// its env and args; startContainer in the container's namespaces.
#[test]
fn hooks_run_in_order_with_state_env_and_args() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("hooks.log");
    let b = Bundle::new("cubby-oci", |c| {
        set_args(c, "cat /hook-saw");
        let rootfs_log = Path::new("/hook-saw");
        c["hooks"] = json!({
            "prestart": [hook(&log, "prestart", "")],
            "createRuntime": [hook(&log, "createRuntime", "")],
            "createContainer": [hook(&log, "createContainer", "")],
            // Resolved and run inside the container (after pivot_root).
            "startContainer": [hook(rootfs_log, "startContainer", "")],
            "poststart": [hook(&log, "poststart", "")],
            "poststop": [hook(&log, "poststop", "")],
        });
    });
    let id = common::unique_name("hooks");
    let (code, out, err) = b.run_container(&id, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    for l in text.lines() {
        let mut f = l.splitn(4, ' ');
        let (name, env, arg, state) = (
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
        );
        assert_eq!(env, name, "env of {l}");
        assert_eq!(arg, "arg-one", "args of {l}");
        let v: Value = serde_json::from_str(state).unwrap();
        assert_eq!(v["id"], json!(id), "{l}");
        if name != "poststop" {
            assert!(v["pid"].as_i64().unwrap() > 0, "{l}");
        } else {
            assert_eq!(v["status"], "stopped", "{l}");
        }
    }
    assert!(
        out.starts_with("startContainer startContainer arg-one {"),
        "startContainer ran inside the container: {out}"
    );
}

/// Priority 5: a failing createRuntime hook fails create and leaves
/// nothing; a failing startContainer hook fails start; failing poststart
/// and poststop hooks only warn; a hook past its timeout is killed.
#[test]
fn failing_hooks() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("hooks.log");
    let fail = |kind: &str, extra: &str| {
        let log = log.clone();
        let kind = kind.to_string();
        let extra = extra.to_string();
        Bundle::new("cubby-oci", move |c| {
            set_args(c, "echo ran");
            let mut h = hook(&log, &kind, &extra);
            if kind == "startContainer" {
                h = hook(Path::new("/tmp/log"), &kind, &extra);
            }
            if extra.contains("sleep") {
                h["timeout"] = json!(1);
            }
            c["hooks"] = json!({ kind.as_str(): [h] });
            if kind != "poststop" {
                c["hooks"]["poststop"] = json!([hook(&log, "poststop", "")]);
            }
        })
    };
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let b = fail(kind, "echo hook-said-no >&2; exit 7");
        let id = common::unique_name("hookfail");
        let (ok, err) = b.create(&id);
        assert!(!ok, "{kind}: create succeeded");
        assert!(
            err.contains(&format!("{kind} hook #0")) && err.contains("hook-said-no"),
            "{kind}: {err}"
        );
        assert!(
            !b.state_root().join(&id).exists(),
            "{kind}: state left behind"
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("poststop ") && last.contains("\"stopped\""),
            "{kind}: poststop did not run after the failed create: {text}"
        );
        for parent in ["/sys/fs/cgroup/pids/cubby", "/sys/fs/cgroup/cubby"] {
            let cg = Path::new(parent).join(&id);
            assert!(!cg.exists(), "{kind}: cgroup {} left behind", cg.display());
        }
    }

    let b = fail("createRuntime", "sleep 30");
    let (ok, err) = b.create("slow");
    assert!(!ok && err.contains("timeout of 1 s"), "{err}");

    let b = fail("startContainer", "exit 9");
    let id = common::unique_name("hookfail");
    b.create_ok(&id);
    let out = b.run(&["start", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start succeeded despite its hook");
    assert!(err.contains("startContainer hook #0"), "{err}");
    b.ok(&["delete", "--force", &id]);

    for kind in ["poststart", "poststop"] {
        let b = fail(kind, "echo only-a-warning >&2; exit 1");
        let (code, out, err) = b.run_container(&common::unique_name("hookwarn"), &[]);
        assert_eq!(code, 0, "{kind}: {err}");
        assert_eq!(out, "ran\n");
        assert!(
            err.contains("warning") && err.contains("only-a-warning"),
            "{kind}: {err}"
        );
    }
}

/// Priority 6: state is written atomically without fsync unless
/// --fsync-state asks (strace counts the sync syscalls of a whole `run`).
#[test]
fn lifecycle_fsyncs_only_when_asked() {
    let strace = common::require_tool("strace", "strace");
    let b = Bundle::new("cubby-oci", |c| set_args(c, "true"));
    let count = |flag: Option<&str>| {
        let trace = b.path().join("strace.out");
        let id = common::unique_name("fsync");
        let mut cmd = Command::new(&strace);
        cmd.args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync,sync_file_range",
            "-o",
        ])
        .arg(&trace)
        .arg(common::runtime_under_test())
        .arg("--root")
        .arg(b.state_root());
        if let Some(f) = flag {
            cmd.arg(f);
        }
        cmd.args(["run", "--bundle"]).arg(b.path()).arg(&id);
        let out = common::run_timeout(&mut cmd, T);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&trace).unwrap();
        text.lines()
            .filter(|l| l.contains("sync") && !l.contains("exited"))
            .count()
    };
    assert_eq!(count(None), 0, "a lifecycle without --fsync-state fsynced");
    assert!(
        count(Some("--fsync-state")) > 0,
        "--fsync-state did not fsync"
    );
}

/// Priority 3/item 1: a spec using many process, user, rlimit, capability,
/// mount, device, sysctl, masked/read-only path and annotation fields gives
/// the same observable result under cubby-oci as under runc.
#[test]
fn rich_spec_matches_runc() {
    let runc = common::require_tool("runc", "runc");
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("f"), "host-file\n").unwrap();
    let probe = "id; umask; ulimit -Sn; ulimit -Hn; ulimit -Sc; \
        grep -E '^(Cap|NoNewPrivs)' /proc/self/status; \
        cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced; \
        ls -ln /dev/cubbyzero | cut -c1-10; head -c 2 /dev/cubbyzero | od -An -tx1; \
        grep ' /scratch ' /proc/mounts | cut -d' ' -f1-4; \
        cat /ro/f; touch /ro/x 2>/dev/null || echo ro-bind; \
        wc -c < /proc/kcore; hostname; pwd; echo $GREETING; \
        touch /scratch/ok && echo scratch-writable";
    let edit = |c: &mut Value| {
        set_args(c, probe);
        c["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 23});
        c["process"]["cwd"] = json!("/tmp");
        c["process"]["env"] = json!(["PATH=/bin:/usr/bin", "GREETING=hi there"]);
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
        ]);
        let caps = json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        c["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": caps, "ambient": ["CAP_NET_BIND_SERVICE"]
        });
        c["process"]["noNewPrivileges"] = json!(true);
        c["hostname"] = json!("rich-spec");
        c["annotations"] = json!({"org.example/key": "value"});
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"});
        c["linux"]["devices"] = json!([{"path": "/dev/cubbyzero", "type": "c", "major": 1,
            "minor": 5, "fileMode": 416, "uid": 1000, "gid": 1000}]);
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}));
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=1m", "mode=1777"]}),
        );
        mounts.push(json!({"destination": "/ro", "type": "bind",
            "source": host_dir.path(), "options": ["rbind", "ro"]}));
        c["root"]["readonly"] = json!(false);
    };
    let mut outputs = Vec::new();
    for runtime in [runc.clone(), common::runtime_under_test()] {
        let b = Bundle::new("runc", edit);
        let id = common::unique_name("rich");
        let root = b.state_root();
        let mut cmd = Command::new(&runtime);
        cmd.arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg(&id);
        let out = common::run_timeout(&mut cmd, T);
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            runtime.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let (theirs, ours) = (&outputs[0], &outputs[1]);
    for (a, b) in theirs.lines().zip(ours.lines()) {
        assert_eq!(
            b, a,
            "cubby-oci differs from runc\nrunc:\n{theirs}\ncubby-oci:\n{ours}"
        );
    }
    assert_eq!(
        ours.lines().count(),
        theirs.lines().count(),
        "runc:\n{theirs}\ncubby-oci:\n{ours}"
    );
    eprintln!("both runtimes showed:\n{ours}");
    assert!(
        ours.contains("hi there") && ours.contains("ro-bind"),
        "{ours}"
    );
}
