//! Real cgroup tests: they create cgroups on this host, so they need root and
//! a mounted hierarchy, and fail (rather than skip) without them. Every
//! cgroup gets a unique name and is destroyed by a guard even when a test
//! panics; every child is killed by a guard too. Only processes started here
//! are ever moved or limited.

// Wrapped so `cargo test cgroups` selects these tests too.
mod cgroups {
    use cubby_runtime::cgroups::{Cgroup, CgroupError, Hierarchy};
    use oci_spec::runtime::*;
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn host() -> Hierarchy {
        let euid = nix::unistd::geteuid();
        assert!(
            euid.is_root(),
            "cgroup tests must run as root (euid is {euid})"
        );
        Hierarchy::detect().unwrap_or_else(|e| panic!("cgroup tests need a cgroup hierarchy: {e}"))
    }

    /// Destroys the cgroup when the test ends, however it ends.
    struct CgroupGuard(Cgroup);

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            if let Err(e) = self.0.destroy() {
                eprintln!("cleanup of {} failed: {e}", self.0.path.display());
            }
        }
    }

    fn unique_cgroup(suffix: &str) -> CgroupGuard {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = format!("/cubby-test-{}-{n}{suffix}", std::process::id());
        CgroupGuard(Cgroup::new(host(), &path).unwrap())
    }

    /// Kills the child when the test ends.
    struct ChildGuard(Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl ChildGuard {
        fn pid(&self) -> i32 {
            self.0.id() as i32
        }
        /// Lets a child that waits on `read x` go on, once it is in its cgroup.
        fn release(&mut self) {
            let mut stdin = self.0.stdin.take().expect("child spawned with piped stdin");
            stdin.write_all(b"go\n").unwrap();
        }
    }

    /// `sh -c script` that first blocks on stdin, so it can be moved into a
    /// cgroup before doing anything that the cgroup should limit.
    fn gated_shell(script: &str) -> ChildGuard {
        ChildGuard(
            Command::new("sh")
                .arg("-c")
                .arg(format!("read x; {script}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// The directory of `cg` holding `controller` (v1), or the unified one (v2).
    fn cg_dir(cg: &Cgroup, controller: &str) -> PathBuf {
        let rel = cg.path.strip_prefix("/").unwrap();
        match &cg.hierarchy {
            Hierarchy::V1 { root } => root.join(controller).join(rel),
            Hierarchy::V2 { root } => root.join(rel),
        }
    }

    fn read(cg: &Cgroup, controller: &str, file: &str) -> String {
        let p = cg_dir(cg, controller).join(file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }

    fn all_dirs(cg: &Cgroup) -> Vec<PathBuf> {
        match &cg.hierarchy {
            Hierarchy::V1 { .. } => [
                "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
            ]
            .iter()
            .map(|c| cg_dir(cg, c))
            .collect(),
            Hierarchy::V2 { .. } => vec![cg_dir(cg, "")],
        }
    }

    fn memory(limit: i64, swap: Option<i64>) -> LinuxMemory {
        let mut b = LinuxMemoryBuilder::default().limit(limit);
        if let Some(s) = swap {
            b = b.swap(s);
        }
        b.build().unwrap()
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn detects_this_host() {
        match host() {
            Hierarchy::V1 { root } | Hierarchy::V2 { root } => {
                assert_eq!(root, PathBuf::from("/sys/fs/cgroup"))
            }
        }
    }

    #[test]
    fn limits_are_written_and_read_back() {
        let g = unique_cgroup("");
        let cg = &g.0;
        let res = LinuxResourcesBuilder::default()
            .memory(memory(64 << 20, None))
            .pids(LinuxPidsBuilder::default().limit(32i64).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .shares(512u64)
                    .build()
                    .unwrap(),
            )
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap()])
            .build()
            .unwrap();
        cg.create(Some(&res)).unwrap();
        assert_eq!(read(cg, "pids", "pids.max"), "32");
        match &cg.hierarchy {
            Hierarchy::V1 { root } => {
                assert_eq!(
                    read(cg, "memory", "memory.limit_in_bytes"),
                    (64u64 << 20).to_string()
                );
                assert_eq!(read(cg, "cpu", "cpu.cfs_quota_us"), "50000");
                assert_eq!(read(cg, "cpu", "cpu.cfs_period_us"), "100000");
                assert_eq!(read(cg, "cpu", "cpu.shares"), "512");
                // cpuset was seeded from the parent, or tasks could not join.
                let parent = std::fs::read_to_string(root.join("cpuset/cpuset.cpus")).unwrap();
                assert_eq!(read(cg, "cpuset", "cpuset.cpus"), parent.trim());
                assert!(!read(cg, "cpuset", "cpuset.mems").is_empty());
                // Deny-all plus the default devices: /dev/null yes, everything no.
                let list = read(cg, "devices", "devices.list");
                assert!(list.lines().any(|l| l == "c 1:3 rwm"), "{list}");
                assert!(!list.lines().any(|l| l == "a *:* rwm"), "{list}");
            }
            Hierarchy::V2 { .. } => {
                assert_eq!(read(cg, "", "memory.max"), (64u64 << 20).to_string());
                assert_eq!(read(cg, "", "cpu.max"), "50000 100000");
                assert_eq!(read(cg, "", "cpu.weight"), "20");
            }
        }
        let st = cg.stats().unwrap();
        assert_eq!(st.memory_limit_bytes, Some(64 << 20));
        assert_eq!(st.pids, 0);

        // `update`: only what the new spec names changes.
        let update = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
            .build()
            .unwrap();
        cg.apply(&update).unwrap();
        assert_eq!(read(cg, "pids", "pids.max"), "max");
        assert_eq!(cg.stats().unwrap().memory_limit_bytes, Some(64 << 20));

        cg.destroy().unwrap();
        for d in all_dirs(cg) {
            assert!(!d.exists(), "{} survived destroy", d.display());
        }
        cg.destroy().unwrap();
    }

    #[test]
    fn add_process_pids_and_destroy_kills() {
        let g = unique_cgroup("");
        let cg = &g.0;
        cg.create(None).unwrap();
        let mut child = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
        cg.add_process(child.pid()).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
        assert_eq!(cg.stats().unwrap().pids, 1);
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
        let want = cg.path.display().to_string();
        assert!(
            own.lines().any(|l| l.ends_with(&format!(":{want}"))),
            "child not in {want}: {own}"
        );

        cg.freeze().unwrap();
        if let Hierarchy::V1 { .. } = cg.hierarchy {
            assert_eq!(read(cg, "freezer", "freezer.state"), "FROZEN");
        }
        cg.thaw().unwrap();
        if let Hierarchy::V1 { .. } = cg.hierarchy {
            assert_eq!(read(cg, "freezer", "freezer.state"), "THAWED");
        }

        cg.destroy().unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        for d in all_dirs(cg) {
            assert!(!d.exists(), "{} survived destroy", d.display());
        }
    }

    #[test]
    fn memory_hog_is_oom_killed() {
        let g = unique_cgroup("");
        let cg = &g.0;
        // swap == limit: no room to escape into swap.
        let res = LinuxResourcesBuilder::default()
            .memory(memory(32 << 20, Some(32 << 20)))
            .build()
            .unwrap();
        cg.create(Some(&res)).unwrap();
        assert!(!cg.oom_killed().unwrap());
        // dd reads /dev/zero into a 256 MiB buffer, touching every page.
        let mut child = gated_shell("exec dd if=/dev/zero of=/dev/null bs=256M count=1");
        cg.add_process(child.pid()).unwrap();
        child.release();
        let status = child.0.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        wait_until("the OOM kill to be counted", || cg.oom_killed().unwrap());
        assert!(cg.stats().unwrap().oom_kills >= 1);
    }

    #[test]
    fn pids_limit_stops_forks() {
        let g = unique_cgroup("");
        let cg = &g.0;
        let res = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(4i64).build().unwrap())
            .build()
            .unwrap();
        cg.create(Some(&res)).unwrap();
        let mut child =
            gated_shell("for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; echo spawned-all; wait");
        cg.add_process(child.pid()).unwrap();
        child.release();
        wait_until("a fork to be refused", || {
            let events = read(cg, "pids", "pids.events");
            events
                .split_whitespace()
                .nth(1)
                .is_some_and(|n| n.parse::<u64>().unwrap_or(0) > 0)
        });
        assert!(cg.pids().unwrap().len() <= 4);
        assert!(cg.stats().unwrap().pids <= 4);
        // destroy also has to catch the orphaned sleeps.
        cg.destroy().unwrap();
        let out = std::mem::replace(&mut child.0, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("spawned-all"),
            "all 8 forks succeeded under pids.max=4"
        );
        for d in all_dirs(cg) {
            assert!(!d.exists(), "{} survived destroy", d.display());
        }
    }

    #[test]
    fn nested_path_creates_parents_and_removes_only_the_leaf() {
        let parent = unique_cgroup("");
        let leaf = CgroupGuard(
            Cgroup::new(
                parent.0.hierarchy.clone(),
                &format!("{}/sub/leaf", parent.0.path.display()),
            )
            .unwrap(),
        );
        let sub = CgroupGuard(
            Cgroup::new(
                parent.0.hierarchy.clone(),
                &format!("{}/sub", parent.0.path.display()),
            )
            .unwrap(),
        );
        leaf.0.create(None).unwrap();
        let mut child = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
        // Only possible if every intermediate cpuset got cpus/mems.
        leaf.0.add_process(child.pid()).unwrap();
        leaf.0.destroy().unwrap();
        assert_eq!(child.0.wait().unwrap().signal(), Some(libc::SIGKILL));
        for d in all_dirs(&leaf.0) {
            assert!(!d.exists(), "{} survived destroy", d.display());
        }
        for d in all_dirs(&sub.0) {
            assert!(d.is_dir(), "{} should be left alone", d.display());
        }
        // Guards drop in reverse order: sub, then parent.
    }

    #[test]
    fn missing_controller_or_file_is_named() {
        let g = unique_cgroup("");
        let cg = &g.0;
        cg.create(None).unwrap();
        let hugetlb = LinuxResourcesBuilder::default()
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(2i64 << 20)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        let hugetlb_mounted = match &cg.hierarchy {
            Hierarchy::V1 { root } => root.join("hugetlb").is_dir(),
            Hierarchy::V2 { .. } => cg_dir(cg, "").join("hugetlb.2MB.max").exists(),
        };
        match cg.apply(&hugetlb) {
            Err(CgroupError::Invalid(msg)) if !hugetlb_mounted => {
                assert!(msg.contains("hugetlb controller"), "{msg}")
            }
            Ok(()) if hugetlb_mounted => {}
            other => panic!("unexpected {other:?} (hugetlb mounted: {hugetlb_mounted})"),
        }
        // A bad value is refused with the kernel's reason and the file's path.
        let bad = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().cpus("9999").build().unwrap())
            .build()
            .unwrap();
        match cg.apply(&bad) {
            Err(CgroupError::Io { path, .. }) => assert!(path.ends_with("cpuset.cpus"), "{path:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn destroy_of_missing_cgroup_is_ok() {
        let g = unique_cgroup("-never-created");
        g.0.destroy().unwrap();
        assert!(g.0.pids().is_err());
    }
}
