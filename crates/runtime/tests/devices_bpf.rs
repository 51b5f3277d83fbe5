//! Real eBPF device-filter tests on cgroup v2. They need root and a cgroup2
//! mount at /sys/fs/cgroup/unified (hybrid host) or /sys/fs/cgroup (pure
//! v2), and fail rather than skip without them. Every cgroup gets a unique
//! name and is removed by a guard even when a test panics; only children
//! started here are ever moved into it.

mod devices_bpf {
    use cubby_runtime::cgroups::devices_bpf::{self, DeviceRule};
    use cubby_runtime::cgroups::{Cgroup, Hierarchy};
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResourcesBuilder};
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// The cgroup2 mount: the unified one on hybrid hosts, else the root.
    fn v2_root() -> PathBuf {
        let euid = nix::unistd::geteuid();
        assert!(
            euid.is_root(),
            "device filter tests need root (euid {euid})"
        );
        for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            if devices_bpf::on_cgroup2(Path::new(root)).unwrap_or(false) {
                return root.into();
            }
        }
        panic!("device filter tests need a cgroup2 mount");
    }

    fn unique_name() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("cubby-bpftest-{}-{n}", std::process::id())
    }

    /// A bare cgroup2 directory, removed on drop. Its processes (children of
    /// this test, already waited for) have exited by then.
    struct DirGuard(PathBuf);

    impl DirGuard {
        fn new() -> DirGuard {
            let dir = v2_root().join(unique_name());
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            DirGuard(dir)
        }
    }

    impl Drop for DirGuard {
        fn drop(&mut self) {
            // The kernel may still be releasing exited tasks: retry EBUSY.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(&self.0) {
                    Ok(()) => return,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => {
                        eprintln!("cleanup of {} failed: {e}", self.0.display());
                        return;
                    }
                }
            }
        }
    }

    /// Destroys a `Cgroup` on drop.
    struct CgroupGuard(Cgroup);

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            if let Err(e) = self.0.destroy() {
                eprintln!("cleanup of {} failed: {e}", self.0.path.display());
            }
        }
    }

    /// Shell snippet: runs each probe and prints `name=ok` or
    /// `name=fail:<stderr>`, one per line.
    const PROBE: &str = r#"
        try() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name=ok"; else echo "$name=fail:$out" | tr '\n' ' '; echo; fi; }
        d=$1
        try null_rw sh -c 'cat /dev/null && echo x > /dev/null'
        try zero_read dd if=/dev/zero of=/dev/null bs=1 count=4 status=none
        try zero_write sh -c 'echo x > /dev/zero'
        try full_read dd if=/dev/full of=/dev/null bs=1 count=1 status=none
        try full_write dd if=/dev/null of=/dev/full status=none
        try kmsg_read dd if=/dev/kmsg of=/dev/null count=0 status=none
        try kmsg_write dd if=/dev/null of=/dev/kmsg status=none
        try mknod_full mknod "$d/full" c 1 7
        try mknod_null mknod "$d/null" c 1 3
        try mknod_block mknod "$d/blk" b 7 0
        try loop_read dd if=/dev/loop0 of=/dev/null count=0 status=none
    "#;

    /// Runs [`PROBE`], inside the cgroup `procs` (its cgroup.procs) if given.
    fn probe(procs: Option<&Path>) -> HashMap<String, String> {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(PROBE)
            .arg("probe")
            .arg(tmp.path())
            .stdin(Stdio::null());
        if let Some(procs) = procs {
            let path = CString::new(procs.as_os_str().as_bytes()).unwrap();
            let join = move || -> std::io::Result<()> {
                // Only async-signal-safe calls between fork and exec: open,
                // write, close. "0" means the writing process itself.
                // SAFETY: `path` is a valid NUL-terminated string that lives
                // in this closure; the flags are plain constants.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: `fd` is the descriptor opened above; the buffer is a
                // 1-byte static string.
                let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
                let err = (n != 1).then(std::io::Error::last_os_error);
                // SAFETY: `fd` is ours and closed exactly once.
                unsafe { libc::close(fd) };
                err.map_or(Ok(()), Err)
            };
            // SAFETY: the closure only makes async-signal-safe calls and
            // allocates nothing (io::Error from an errno does not allocate).
            unsafe { cmd.pre_exec(join) };
        }
        let out = cmd.output().expect("running sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "probe failed: {:?}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    fn expect(results: &HashMap<String, String>, allowed: &[&str], denied: &[&str]) {
        for name in allowed {
            assert_eq!(
                results.get(*name).map(String::as_str),
                Some("ok"),
                "{name} should be allowed: {results:#?}"
            );
        }
        for name in denied {
            let r = results.get(*name).map(String::as_str).unwrap_or("missing");
            assert!(
                r.starts_with("fail:") && r.contains("Operation not permitted"),
                "{name} should fail with EPERM, got {r:?}: {results:#?}"
            );
        }
    }

    const ALL_PROBES: &[&str] = &[
        "null_rw",
        "zero_read",
        "zero_write",
        "full_read",
        "full_write",
        "kmsg_read",
        "kmsg_write",
        "mknod_full",
        "mknod_null",
        "mknod_block",
        "loop_read",
    ];

    #[test]
    fn outside_any_filter_every_probe_works() {
        v2_root();
        // The control for the tests below: the denials come from the filter.
        expect(&probe(None), ALL_PROBES, &[]);
    }

    #[test]
    fn filter_applies_to_processes_in_the_cgroup() {
        let cg = DirGuard::new();
        let rule = |allow, line| DeviceRule::from_line(allow, line).unwrap();
        let rules = [
            rule(false, "a *:* rwm"),
            rule(true, "c 1:3 rwm"), // /dev/null
            rule(true, "c 1:5 r"),   // /dev/zero, read-only
        ];
        devices_bpf::apply(&cg.0, &rules).unwrap();
        assert_eq!(devices_bpf::attached(&cg.0).unwrap().len(), 1);
        let results = probe(Some(&cg.0.join("cgroup.procs")));
        expect(
            &results,
            &["null_rw", "zero_read", "mknod_null"],
            &[
                "zero_write",
                "full_read",
                "full_write",
                "kmsg_read",
                "kmsg_write",
                "mknod_full",
                "mknod_block",
                "loop_read",
            ],
        );

        // Replacing the rules leaves one program, the new one.
        devices_bpf::apply(&cg.0, &[rule(true, "a *:* rwm"), rule(false, "c 1:7 r")]).unwrap();
        assert_eq!(devices_bpf::attached(&cg.0).unwrap().len(), 1);
        let results = probe(Some(&cg.0.join("cgroup.procs")));
        let allowed: Vec<&str> = ALL_PROBES
            .iter()
            .copied()
            .filter(|p| *p != "full_read")
            .collect();
        expect(&results, &allowed, &["full_read"]);
    }

    #[test]
    fn v2_cgroup_enforces_the_same_list_as_v1() {
        let root = v2_root();
        let cg =
            CgroupGuard(Cgroup::new(Hierarchy::V2 { root: root.clone() }, &unique_name()).unwrap());
        let dir = root.join(cg.0.path.strip_prefix("/").unwrap());
        let kmsg_read = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(11)
            .access("r")
            .build()
            .unwrap();
        let with_devices = |rules| {
            LinuxResourcesBuilder::default()
                .devices(rules)
                .build()
                .unwrap()
        };
        cg.0.create(Some(&with_devices(vec![kmsg_read]))).unwrap();
        assert_eq!(devices_bpf::attached(&dir).unwrap().len(), 1);
        // Deny-all, then the spec's kmsg read, then v1's default devices:
        // null/zero/full usable, mknod of anything, no other device opened.
        let procs = dir.join("cgroup.procs");
        expect(
            &probe(Some(&procs)),
            &[
                "null_rw",
                "zero_read",
                "zero_write",
                "full_read",
                "full_write",
                "kmsg_read",
                "mknod_full",
                "mknod_null",
                "mknod_block",
            ],
            &["kmsg_write", "loop_read"],
        );

        // `update` without devices keeps the filter; with an empty list it
        // drops the kmsg rule, and the old program is detached.
        cg.0.apply(&LinuxResourcesBuilder::default().build().unwrap())
            .unwrap();
        assert_eq!(devices_bpf::attached(&dir).unwrap().len(), 1);
        cg.0.apply(&with_devices(vec![])).unwrap();
        assert_eq!(devices_bpf::attached(&dir).unwrap().len(), 1);
        expect(
            &probe(Some(&procs)),
            &["null_rw", "zero_write", "full_read", "mknod_block"],
            &["kmsg_read", "kmsg_write", "loop_read"],
        );

        // An invalid rule is refused before anything changes.
        let bad = LinuxDeviceCgroupBuilder::default()
            .access("rwx")
            .build()
            .unwrap();
        assert!(cg.0.apply(&with_devices(vec![bad])).is_err());
        assert_eq!(devices_bpf::attached(&dir).unwrap().len(), 1);
    }
}
