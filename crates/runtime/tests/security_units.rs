//! Tests of the security modules: seccomp, capabilities and the sealed
//! executable copy. Checks that change process state run in a forked child;
//! the child only makes syscalls and `_exit`s (the test harness is
//! multithreaded), and reports through its exit status.

use cubby_runtime::seccomp::{self, Program};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::LinuxSeccomp;

/// Runs `f` in a forked child and returns how it ended.
fn in_child(f: impl FnOnce() -> i32) -> WaitStatus {
    // SAFETY: the child runs only `f`, which makes raw syscalls, then _exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = f();
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// Exit code for "syscall succeeded".
const OK: i32 = 0;
/// Exit code for "loading the filter failed".
const LOAD_FAILED: i32 = 200;

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// In a child: loads `prog`, runs `call` and exits with 0 if it returned
/// >= 0, or with the errno it failed with.
fn filtered(prog: &Program, call: impl FnOnce() -> libc::c_long) -> i32 {
    match in_child(|| {
        if prog.load().is_err() {
            return LOAD_FAILED;
        }
        if call() >= 0 {
            OK
        } else {
            errno()
        }
    }) {
        WaitStatus::Exited(_, code) => code,
        other => panic!("child did not exit normally: {other:?}"),
    }
}

fn default_program() -> Program {
    Program::compile(&seccomp::default_profile()).expect("compile default profile")
}

#[test]
fn default_profile_compiles_within_kernel_limits() {
    let prog = default_program();
    assert!(prog.instructions() > 10);
    assert!(prog.instructions() <= 4096, "{prog:?}");
    eprintln!("default profile: {prog:?}");
}

#[test]
fn default_profile_blocks_keyctl() {
    let prog = default_program();
    // KEYCTL_GET_KEYRING_ID of the session keyring.
    let rc = filtered(&prog, || unsafe {
        libc::syscall(libc::SYS_keyctl, 0, -3i64, 0, 0, 0)
    });
    assert_eq!(rc, libc::EPERM);
}

#[test]
fn default_profile_blocks_unshare_and_setns() {
    let prog = default_program();
    let rc = filtered(&prog, || unsafe { libc::unshare(libc::CLONE_NEWUSER) as _ });
    assert_eq!(rc, libc::EPERM);
    let rc = filtered(&prog, || unsafe { libc::unshare(libc::CLONE_NEWNS) as _ });
    assert_eq!(rc, libc::EPERM);
    let rc = filtered(&prog, || unsafe { libc::setns(0, 0) as _ });
    assert_eq!(rc, libc::EPERM);
}

#[test]
fn default_profile_blocks_mount() {
    let prog = default_program();
    let rc = filtered(&prog, || unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/nonexistent-cubby".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) as _
    });
    assert_eq!(rc, libc::EPERM);
}

/// Raw clone(flags) that behaves like fork; the grandchild exits at once.
fn raw_clone(flags: libc::c_long) -> libc::c_long {
    // SAFETY: with a null stack, clone behaves like fork; the new process
    // only calls _exit.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if rc == 0 {
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(0) }
    }
    if rc > 0 {
        let mut status = 0;
        // SAFETY: waits for the process just created.
        unsafe { libc::waitpid(rc as libc::pid_t, &mut status, 0) };
    }
    rc
}

#[test]
fn default_profile_blocks_clone_with_namespace_flags() {
    let prog = default_program();
    let sigchld = libc::SIGCHLD as libc::c_long;
    for ns in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWCGROUP,
    ] {
        let rc = filtered(&prog, || raw_clone(sigchld | ns as libc::c_long));
        assert_eq!(rc, libc::EPERM, "clone flag {ns:#x}");
    }
    // A plain fork-like clone, and a thread-like flag set, still work.
    assert_eq!(filtered(&prog, || raw_clone(sigchld)), OK);
    assert_eq!(
        filtered(&prog, || raw_clone(
            sigchld | (libc::CLONE_FILES | libc::CLONE_FS) as libc::c_long
        )),
        OK
    );
}

#[test]
fn default_profile_makes_clone3_enosys() {
    let prog = default_program();
    let rc = filtered(&prog, || unsafe {
        libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0)
    });
    assert_eq!(rc, libc::ENOSYS);
}

#[test]
fn default_profile_filters_personality() {
    let prog = default_program();
    for bad in [
        0x1234u64,
        0x1,
        0x9,
        0x0040_0000,
        0x20009,
        0xffff_fffe,
        0x1_0000_0008,
    ] {
        let rc = filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_personality, bad)
        });
        assert_eq!(rc, libc::EPERM, "personality({bad:#x})");
    }
    for good in seccomp::SAFE_PERSONALITIES {
        let rc = filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_personality, good)
        });
        assert_eq!(rc, OK, "personality({good:#x})");
    }
}

#[test]
fn default_profile_allows_ordinary_syscalls() {
    let prog = default_program();
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_getpid) }),
        OK
    );
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let rc = filtered(&prog, || unsafe {
        libc::write(fds[1], b"x".as_ptr().cast(), 1) as _
    });
    assert_eq!(rc, OK);
    let mut buf = [0u8; 1];
    // SAFETY: reads one byte into buf.
    assert_eq!(unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 1) }, 1);
    assert_eq!(&buf, b"x");
    // SAFETY: closing our own pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

#[test]
fn default_profile_loads_with_no_new_privs() {
    let prog = default_program();
    let rc = filtered(&prog, || 0);
    assert_eq!(rc, OK);
    // And the unprivileged path: no_new_privs set, then load.
    let status = in_child(|| {
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return 1;
        }
        if prog.load().is_err() {
            return LOAD_FAILED;
        }
        0
    });
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

fn podman_like(extra: &str) -> LinuxSeccomp {
    let json = format!(
        r#"{{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {{"names": ["exit", "exit_group", "getpid", "write", "read", "rt_sigreturn",
                        "no_such_syscall_in_libseccomp", "brk", "mmap", "munmap"],
              "action": "SCMP_ACT_ALLOW"}},
            {{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}},
            {{"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}},
            {{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}}]}},
            {{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
              "args": [{{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}},
                       {{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}}]}},
            {{"names": ["dup3"], "action": "SCMP_ACT_ALLOW",
              "args": [{{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}},
                       {{"index": 2, "value": 524288, "valueTwo": 524288,
                         "op": "SCMP_CMP_MASKED_EQ"}}]}},
            {{"names": ["getgid"], "action": "SCMP_ACT_KILL_PROCESS"}}
            {extra}
        ]
    }}"#
    );
    serde_json::from_str(&json).expect("profile JSON")
}

#[test]
fn podman_like_allowlist_profile() {
    let prog = Program::compile(&podman_like("")).expect("compile");
    // Allowed.
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_getpid) }),
        OK
    );
    // Default action: ENOSYS.
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_gettid) }),
        libc::ENOSYS
    );
    // Explicit errno.
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_getppid) }),
        libc::EPERM
    );
    // Rule equal to the default action is skipped, still ENOSYS.
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_getuid) }),
        libc::ENOSYS
    );
    // Argument filters.
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_personality, 0xffff_ffffu64)
        }),
        OK
    );
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_personality, 8) }),
        libc::ENOSYS
    );
    // Two conditions on the same index are ORed.
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0)
        }),
        OK
    );
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0)
        }),
        OK
    );
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_NETLINK, libc::SOCK_RAW, 0)
        }),
        libc::ENOSYS
    );
    // Conditions on different indexes are ANDed (dup3(0, 100, flags)).
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_dup3, 0, 100, libc::O_CLOEXEC)
        }),
        OK
    );
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_dup3, 0, 100, 0)
        }),
        libc::ENOSYS
    );
    assert_eq!(
        filtered(&prog, || unsafe {
            libc::syscall(libc::SYS_dup3, 1, 100, libc::O_CLOEXEC)
        }),
        libc::ENOSYS
    );
    // KILL_PROCESS ends the child with SIGSYS.
    let status = in_child(|| {
        if prog.load().is_err() {
            return LOAD_FAILED;
        }
        // SAFETY: plain syscall.
        unsafe { libc::syscall(libc::SYS_getgid) };
        0
    });
    assert!(
        matches!(
            status,
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ),
        "{status:?}"
    );
}

#[test]
fn notify_is_rejected_with_a_clear_error() {
    let profile = podman_like(r#", {"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}"#);
    let err = Program::compile(&profile).unwrap_err().to_string();
    assert!(err.contains("NOTIFY"), "{err}");
}

#[test]
fn bad_argument_index_is_an_error_not_a_panic() {
    let profile = podman_like(
        r#", {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}"#,
    );
    let err = Program::compile(&profile).unwrap_err().to_string();
    assert!(err.contains("index 9"), "{err}");
}

/// Optional: compile a real podman/Docker profile converted to OCI form, if
/// one is given in CUBBY_TEST_SECCOMP_JSON.
#[test]
fn external_profile_compiles() {
    let Ok(path) = std::env::var("CUBBY_TEST_SECCOMP_JSON") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("read profile");
    let profile: LinuxSeccomp = serde_json::from_str(&text).expect("parse profile");
    let prog = Program::compile(&profile).expect("compile");
    eprintln!("{path}: {} instructions", prog.instructions());
    assert_eq!(
        filtered(&prog, || unsafe { libc::syscall(libc::SYS_getpid) }),
        OK
    );
    // Not in the allowlist: the default action (an errno) applies.
    let rc = filtered(&prog, || unsafe {
        libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0)
    });
    assert!(rc == libc::ENOSYS || rc == libc::EPERM, "kexec_load: {rc}");
}

// ---------------------------------------------------------------- capabilities

use cubby_runtime::capabilities;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};
use std::os::fd::{AsRawFd, RawFd};

/// Like `in_child`, but the child gets the write end of a pipe; returns what
/// it wrote along with how it ended.
fn in_child_with_output(f: impl FnOnce(RawFd) -> i32) -> (WaitStatus, Vec<u8>) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let status = in_child(|| f(w.as_raw_fd()));
    drop(w);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out).expect("read pipe");
    (status, out)
}

/// Copies /proc/self/status to `fd` without allocating.
fn send_status(fd: RawFd) -> bool {
    let mut buf = [0u8; 8192];
    // SAFETY: open/read/write/close on a stack buffer.
    unsafe {
        let src = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
        if src < 0 {
            return false;
        }
        loop {
            let n = libc::read(src, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            libc::write(fd, buf.as_ptr().cast(), n as usize);
        }
        libc::close(src);
    }
    true
}

fn status_field(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} missing in {status}"));
    u64::from_str_radix(line[key.len()..].trim(), 16).expect("hex")
}

fn set_of(caps: &[Capability]) -> Capabilities {
    caps.iter().copied().collect()
}

fn bits(caps: &[Capability]) -> u64 {
    caps.iter()
        .fold(0, |m, c| m | 1u64 << capabilities::number(*c))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn drop_bounding_and_apply_leave_exactly_the_set() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let small = [
        Capability::Chown,
        Capability::Kill,
        Capability::NetBindService,
    ];
    let caps: LinuxCapabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set_of(&small))
        .effective(set_of(&small))
        .permitted(set_of(&small))
        .inheritable(set_of(&small[1..]))
        .ambient(set_of(&[Capability::NetBindService]))
        .build()
        .unwrap();
    let (status, out) = in_child_with_output(|fd| {
        // A private UTS namespace first, so the host hostname can never change.
        // SAFETY: plain syscall in the single-threaded child.
        if unsafe { libc::unshare(libc::CLONE_NEWUTS) } != 0 {
            return 10;
        }
        if capabilities::drop_bounding(&caps).is_err() {
            return 11;
        }
        if capabilities::apply(&caps).is_err() {
            return 12;
        }
        if !send_status(fd) {
            return 13;
        }
        // SAFETY: sets the hostname of the child's private UTS namespace.
        let rc = unsafe { libc::sethostname(c"cubby-test".as_ptr(), 10) };
        if rc == 0 {
            return 14; // should have failed without CAP_SYS_ADMIN
        }
        errno()
    });
    assert!(
        matches!(status, WaitStatus::Exited(_, libc::EPERM)),
        "{status:?}"
    );
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_field(&text, "CapBnd:"), bits(&small), "{text}");
    assert_eq!(status_field(&text, "CapEff:"), bits(&small), "{text}");
    assert_eq!(status_field(&text, "CapPrm:"), bits(&small), "{text}");
    assert_eq!(status_field(&text, "CapInh:"), bits(&small[1..]), "{text}");
    assert_eq!(
        status_field(&text, "CapAmb:"),
        bits(&[Capability::NetBindService]),
        "{text}"
    );
}

#[test]
fn apply_names_the_capability_it_cannot_grant() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let small = set_of(&[Capability::Chown]);
    let first: LinuxCapabilities = LinuxCapabilitiesBuilder::default()
        .bounding(small.clone())
        .effective(small.clone())
        .permitted(small.clone())
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .unwrap();
    let wants_admin: LinuxCapabilities = LinuxCapabilitiesBuilder::default()
        .bounding(small.clone())
        .effective(small.clone())
        .permitted(set_of(&[Capability::Chown, Capability::SysAdmin]))
        .inheritable(Capabilities::new())
        .ambient(set_of(&[Capability::SysAdmin]))
        .build()
        .unwrap();
    let (status, out) = in_child_with_output(|fd| {
        if capabilities::drop_bounding(&first).is_err() || capabilities::apply(&first).is_err() {
            return 10;
        }
        match capabilities::apply(&wants_admin) {
            Ok(()) => 11,
            Err(e) => {
                // The child is single-threaded; formatting is fine here.
                let msg = e.to_string();
                // SAFETY: writes the message to the pipe.
                unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
                0
            }
        }
    });
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let msg = String::from_utf8_lossy(&out);
    eprintln!("{msg}");
    assert!(msg.contains("CAP_SYS_ADMIN"), "{msg}");
}

#[test]
fn unknown_capabilities_are_skipped() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Every capability oci-spec knows, some possibly beyond cap_last_cap on
    // older kernels: must not fail.
    let all = set_of(&capabilities::ALL);
    let caps: LinuxCapabilities = LinuxCapabilitiesBuilder::default()
        .bounding(all.clone())
        .build()
        .unwrap();
    let status = in_child(|| match capabilities::drop_bounding(&caps) {
        Ok(()) => 0,
        Err(_) => 1,
    });
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

// ------------------------------------------------------------------ cloned_exe

use cubby_runtime::cloned_exe;
use std::time::Instant;

fn two_mib_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 3) as u8)
        .collect();
    std::io::Write::write_all(&mut f, &data).unwrap();
    f
}

#[test]
fn seal_copy_is_sealed_and_read_only() {
    let src = two_mib_file();
    let fd = cloned_exe::seal_copy_of(src.path()).expect("seal copy");
    let seals = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GET_SEALS).expect("seals");
    for s in [
        libc::F_SEAL_SEAL,
        libc::F_SEAL_SHRINK,
        libc::F_SEAL_GROW,
        libc::F_SEAL_WRITE,
    ] {
        assert_ne!(seals & s, 0, "seal {s:#x} missing from {seals:#x}");
    }
    // Same content.
    let copy = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!(copy, std::fs::read(src.path()).unwrap());

    // write() on the memfd itself fails.
    assert_eq!(nix::unistd::write(&fd, b"x"), Err(nix::errno::Errno::EPERM));
    // Reopening it for writing through /proc either fails, or gives an fd
    // whose writes fail.
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        Ok(mut f) => {
            let e = std::io::Write::write(&mut f, b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        }
    }
    // Nor can it be truncated or resized, or its seals removed.
    assert_eq!(
        nix::unistd::ftruncate(&fd, 0),
        Err(nix::errno::Errno::EPERM)
    );
    assert_eq!(
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_FUTURE_WRITE)
        ),
        Err(nix::errno::Errno::EPERM)
    );
}

#[test]
fn seal_copy_of_missing_file_is_an_error() {
    let err = cloned_exe::seal_copy_of(std::path::Path::new("/nonexistent/cubby")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cubby"), "{err}");
}

#[test]
fn seal_copy_timing() {
    let src = two_mib_file();
    let _warm = cloned_exe::seal_copy_of(src.path()).unwrap();
    let runs = 20;
    let start = Instant::now();
    for _ in 0..runs {
        drop(cloned_exe::seal_copy_of(src.path()).unwrap());
    }
    let per = start.elapsed() / runs;
    let exe = std::fs::metadata("/proc/self/exe").unwrap().len();
    let start = Instant::now();
    drop(cloned_exe::seal_copy_of(std::path::Path::new("/proc/self/exe")).unwrap());
    let exe_time = start.elapsed();
    eprintln!(
        "seal_copy_of: 2 MiB in {per:?} (mean of {runs}); this test binary ({} MiB) in {exe_time:?}",
        exe / (1024 * 1024)
    );
}

#[test]
fn not_sealed_when_run_from_a_file() {
    if std::env::var_os(cloned_exe::SEALED_ENV).is_none() {
        assert!(!cloned_exe::is_sealed());
    }
}

const REEXEC_HELPER: &str = "CUBBY_TEST_REEXEC_HELPER";

/// Not a test by itself: runs only when `ensure_sealed_reexecutes` starts
/// this binary with REEXEC_HELPER set.
#[test]
fn reexec_helper() {
    if std::env::var_os(REEXEC_HELPER).is_none() {
        return;
    }
    let was_marked = std::env::var_os(cloned_exe::SEALED_ENV).is_some();
    cloned_exe::ensure_sealed().expect("ensure_sealed");
    // Only reached from the sealed copy.
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let write_open = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/exe")
        .map(|mut f| std::io::Write::write(&mut f, b"x"));
    println!(
        "HELPER sealed={} marked={} env_after={} exe={} write={:?}",
        cloned_exe::is_sealed(),
        was_marked,
        std::env::var_os(cloned_exe::SEALED_ENV).is_some(),
        exe.display(),
        write_open
            .map_err(|e| e.raw_os_error())
            .map(|r| r.map_err(|e| e.raw_os_error())),
    );
}

#[test]
fn ensure_sealed_reexecutes_from_a_memfd() {
    let out = std::process::Command::new("/proc/self/exe")
        .args([
            "--exact",
            "reexec_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(REEXEC_HELPER, "1")
        .env_remove(cloned_exe::SEALED_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("HELPER ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no helper output: {stdout}"));
    eprintln!("{line}");
    assert!(line.contains("sealed=true"), "{line}");
    assert!(line.contains("marked=true"), "{line}");
    assert!(line.contains("env_after=false"), "{line}");
    assert!(line.contains("exe=/memfd:cubby"), "{line}");
    assert!(!line.contains("write=Ok(Ok"), "{line}");
}

#[test]
fn marked_but_not_sealed_is_an_error_not_a_loop() {
    let out = std::process::Command::new("/proc/self/exe")
        .args([
            "--exact",
            "reexec_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(REEXEC_HELPER, "1")
        .env(cloned_exe::SEALED_ENV, "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("refusing to re-execute"), "{all}");
}
