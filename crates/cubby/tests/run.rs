//! End-to-end tests of `cubby run`: real containers, real limits, as root.

mod common;

use common::{stderr, stdout, World};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

#[test]
fn runs_a_command_and_cleans_up() {
    let w = World::new();
    let out = w.run(&[], &["echo", "hello from cubby"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from cubby\n");
    w.assert_no_state();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(&w.rootfs().to_string_lossy().into_owned()),
        "a mount of the container is left on the host"
    );
}

#[test]
fn exit_status_is_the_containers() {
    let w = World::new();
    assert_eq!(w.run(&[], &["sh", "-c", "exit 42"]).status.code(), Some(42));
    // Killed by a signal: 128+N like a shell, with and without our init.
    let o = w.run(&[], &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status.code(), Some(137), "{} {}", stdout(&o), stderr(&o));
    // Without init the command is PID 1, which the kernel shields from
    // signals it has no handler for, even SIGKILL from inside: like docker.
    assert_eq!(
        w.run(&["--no-init"], &["sh", "-c", "kill -KILL $$; exit 3"])
            .status
            .code(),
        Some(3)
    );
    w.assert_no_state();
}

#[test]
fn pid_namespace_and_init() {
    let w = World::new();
    // Without init the command is PID 1.
    assert_eq!(w.sh(&["--no-init"], "echo $$"), "1\n");
    // With init (default) PID 1 is cubby's init and the command is its child;
    // /proc shows only the container's processes.
    let out = w.sh(&[], "echo $$; ls /proc | grep -c '^[0-9]'");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "command is PID 2 under init");
    let count: u32 = lines[1].parse().unwrap();
    assert!(
        count <= 4,
        "container sees {count} processes: host processes leak"
    );
    // Orphans are reaped: a grandchild that exits leaves no zombie.
    let zombies = w.sh(
        &[],
        "(sleep 0.1 &) ; sleep 0.5; ps -o stat | grep -c Z || true",
    );
    assert_eq!(zombies.trim(), "0");
}

#[test]
fn signals_reach_the_command_through_init() {
    let w = World::new();
    let mut child = w
        .cubby()
        .args(["run", "--rm", "--rootfs"])
        .arg(w.rootfs())
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn own_hostname_ipc_mounts_and_network() {
    let w = World::new();
    let out = w.sh(
        &["--hostname", "exam-box"],
        "hostname; ls /sys/class/net; ip -o link show lo | grep -c UP; grep -c ' /work' /proc/self/mountinfo || true",
    );
    assert_eq!(
        out, "exam-box\nlo\n1\n0\n",
        "hostname, only lo (up), no host mounts"
    );
    let host = nix::unistd::gethostname().unwrap();
    assert_ne!(host.to_string_lossy(), "exam-box");
    // --network host shares the host's interfaces.
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let n: usize = w
        .sh(&["--network", "host"], "ls /sys/class/net | wc -l")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, host_ifaces);
}

#[test]
fn dev_proc_sys_layout() {
    let w = World::new();
    let out = w.sh(
        &[],
        "for d in null zero full random urandom tty ptmx pts shm mqueue fd stdin stdout stderr; do \
           [ -e /dev/$d ] || echo missing $d; done; \
         head -c 4 /dev/zero | wc -c; \
         [ -s /proc/kcore ] && echo kcore-visible; \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo procsys-writable; \
         echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; \
         touch /sys/x 2>/dev/null && echo sys-writable; \
         ls /sys/firmware | wc -l; \
         mount | grep -c 'devpts on /dev/pts'",
    );
    assert_eq!(out, "4\n0\n1\n");
}

#[test]
fn bind_mounts_read_only_root_env_workdir_user() {
    let w = World::new();
    let rw = w.dir.path().join("rw");
    let ro = w.dir.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("given.txt"), "data").unwrap();
    let vrw = format!("{}:/work", rw.display());
    let vro = format!("{}:/input:ro", ro.display());
    let out = w.sh(
        &["-v", &vrw, "-v", &vro, "--read-only", "-e", "COURSE=os101", "-w", "/work"],
        "pwd; echo $COURSE; echo saved > /work/out.txt; cat /input/given.txt; echo; \
         touch /input/x 2>/dev/null && echo ro-writable; touch /etc/x 2>/dev/null && echo root-writable; \
         touch /tmp/x 2>/dev/null && echo tmp-writable; true",
    );
    assert_eq!(out, "/work\nos101\ndata\n");
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "saved\n"
    );
    assert!(!ro.join("x").exists());
    // -u changes identity; the user gets no capabilities.
    let out = w.sh(
        &["-u", "1000:1000"],
        "id -u; id -g; grep CapEff /proc/self/status",
    );
    assert_eq!(out, "1000\n1000\nCapEff:\t0000000000000000\n");
    let out = w.sh(&["-u", "student"], "id -un");
    assert_eq!(out, "student\n");
}

#[test]
fn the_command_starts_with_default_signals() {
    // Nothing ignored or blocked is inherited from cubby (Rust ignores
    // SIGPIPE): `yes | head` ends because yes dies of SIGPIPE.
    let w = World::new();
    let out = w.sh(
        &[],
        "grep -E 'SigBlk|SigIgn' /proc/self/status; yes | head -1",
    );
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\ny\n"
    );
}

#[test]
fn stdin_pipe_without_tty() {
    let w = World::new();
    let mut child = w
        .cubby()
        .args(["run", "--rm", "-i", "--rootfs"])
        .arg(w.rootfs())
        .args(["--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hi\nthere\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hi\nthere\n");
    // Without -i stdin is empty, like docker.
    let out = w.run(&[], &["cat"]);
    assert_eq!(stdout(&out), "");
}

fn cgroup_dir(controller: &str, id: &str) -> std::path::PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("cubby")
        .join(id)
}

#[test]
fn memory_limit_oom_kills_and_reports() {
    let w = World::new();
    let out = w.run(
        &[
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
            "--name",
            "oomtest-unique",
        ],
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=200M count=1 && echo survived",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "stderr: {}", stderr(&out));
    assert!(
        !stdout(&out).contains("survived"),
        "dd got 200M under a 32M limit"
    );
    assert!(stderr(&out).contains("out of memory"), "{}", stderr(&out));
    assert!(
        !cgroup_dir("memory", "oomtest-unique").exists(),
        "cgroup left behind"
    );
    w.assert_no_state();
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    let w = World::new();
    let name = format!("bomb-{}", std::process::id());
    // A classic bomb; the main shell only uses builtins afterwards, then exits,
    // which tears the whole PID namespace down.
    let out = w.run(
        &["--pids-limit", "24", "--name", &name],
        &[
            "sh",
            "-c",
            "b() { b | b & }; b; read -t 2 x < /dev/zero; echo bomb-done",
        ],
    );
    // The main shell usually prints bomb-done, but under CI load ash has
    // been seen to end its script early once forks fail (not reproduced
    // here); what is asserted is that the bomb hit the limit, the run
    // ended, and nothing was left behind.
    assert!(
        stderr(&out).contains("can't fork"),
        "the pids limit was never hit: {}",
        stderr(&out)
    );
    assert!(!cgroup_dir("pids", &name).exists(), "cgroup left behind");
    w.assert_no_state();
}

#[test]
fn cpu_and_cpuset_limits_are_written() {
    let w = World::new();
    let out = w.sh(
        &["--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0"],
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpuset/cpuset.cpus",
    );
    assert_eq!(out, "50000\n100000\n512\n0\n");
}

#[test]
fn clear_errors_and_nothing_left() {
    let w = World::new();
    // Command not found: Docker's 127, one line.
    let out = w.run(&[], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    let err = stderr(&out);
    assert!(
        err.contains("no-such-command") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Missing rootfs.
    let out = w
        .cubby()
        .args([
            "run",
            "--rm",
            "--rootfs",
            "/nonexistent/rootfs",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("/nonexistent/rootfs"),
        "{}",
        stderr(&out)
    );
    // Bad limit syntax.
    let out = w.run(&["--memory", "lots"], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--memory"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    w.assert_no_state();
}

#[test]
fn security_defaults() {
    let w = World::new();
    // Docker's default capability set, and no_new_privs.
    let out = w.sh(
        &[],
        "grep -E 'CapEff|CapBnd|NoNewPrivs|Seccomp:' /proc/self/status",
    );
    assert_eq!(
        out,
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    // No mount, no new namespaces, no module loading, no raw /proc/sys writes.
    let out = w.sh(
        &[],
        "mount -t tmpfs t /mnt 2>/dev/null && echo mounted; \
         unshare -U true 2>/dev/null && echo userns; \
         unshare -m true 2>/dev/null && echo mntns; \
         nsenter -t 1 -m true 2>/dev/null && echo setns; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo procsys; \
         insmod /nonexistent.ko 2>/dev/null; echo done",
    );
    assert_eq!(out, "done\n");
}

#[test]
fn setuid_binaries_do_not_regain_privileges() {
    let w = World::new();
    // A setuid-root copy of busybox: with no_new_privs and a reduced bounding
    // set, running it as a user gains neither uid 0 nor capabilities.
    std::fs::create_dir_all(w.rootfs().join("suid")).unwrap();
    let suid = w.rootfs().join("suid/busybox");
    std::fs::copy(w.rootfs().join("bin/busybox"), &suid).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = w.sh(
        &["-u", "1000"],
        "/suid/busybox id -u; /suid/busybox grep CapEff /proc/self/status",
    );
    assert_eq!(out, "1000\nCapEff:\t0000000000000000\n");
}

#[test]
fn runtime_binary_cannot_be_overwritten_from_a_container() {
    // CVE-2019-5736: PID 1 (cubby's init) and the runtime run from a sealed
    // memfd copy, so /proc/1/exe leads to nothing writable on the host.
    let w = World::new();
    let bin = Path::new(env!("CARGO_BIN_EXE_cubby"));
    let before = std::fs::read(bin).unwrap();
    let out = w.sh(
        &["--cap-add", "SYS_PTRACE"],
        "readlink /proc/1/exe; echo pwned >> /proc/1/exe 2>/dev/null && echo wrote; \
         cat /proc/1/exe > /dev/null && echo readable; true",
    );
    assert!(out.starts_with("/memfd:"), "PID 1 runs from {out}");
    assert!(!out.contains("wrote"), "{out}");
    assert_eq!(
        std::fs::read(bin).unwrap(),
        before,
        "runtime binary changed"
    );
}

#[test]
fn user_namespace_root_inside_unprivileged_outside() {
    let w = World::new();
    let out = w.sh(
        &["--userns", "auto"],
        "id -u; cat /proc/self/uid_map | tr -s ' '",
    );
    assert_eq!(out, "0\n 0 100000 65536\n");
}

#[test]
fn interactive_terminal() {
    use nix::pty::openpty;
    let w = World::new();
    let pty = openpty(
        Some(&nix::pty::Winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }),
        None,
    )
    .unwrap();
    let slave = pty.slave;
    let mut cmd = w.cubby();
    cmd.args(["run", "--rm", "-it", "--rootfs"])
        .arg(w.rootfs())
        .args(["--", "sh"]);
    let s = slave.try_clone().unwrap();
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(s));
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let mut writer = master;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut seen = String::new();
    let mut expect = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("timed out waiting for {what:?}; terminal shows: {seen:?}"),
            }
        }
        seen.clear();
    };
    writer.write_all(b"echo $((6*7))x\r").unwrap();
    expect("42x");
    // The caller's window size reached the container's pty.
    writer.write_all(b"stty size\r").unwrap();
    expect("33 111");
    // It is a real tty, and Ctrl-C interrupts the foreground job only.
    writer.write_all(b"tty; sleep 100\r").unwrap();
    expect("/dev/pts/0");
    std::thread::sleep(std::time::Duration::from_millis(300));
    writer.write_all(b"\x03").unwrap();
    writer.write_all(b"echo after-$((1+1))\r").unwrap();
    expect("after-2");
    writer.write_all(b"exit 5\r").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5));
}
