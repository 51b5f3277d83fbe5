//! The volume store on real filesystems: a sized volume is a loop-mounted
//! filesystem of its own (needs root and /dev/loop-control).

use cubby_engine::volumes::{CreateOptions, InUse, VolumeStore};
use std::path::PathBuf;

fn named(n: &str) -> CreateOptions {
    CreateOptions {
        name: Some(n.into()),
        ..Default::default()
    }
}

/// Loop-mounts real filesystems: needs root and /dev/loop-control.
#[test]
fn sized_volume_is_a_filesystem_of_its_own() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loop-mounts a filesystem: run it as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let s = VolumeStore::open(tmp.path()).unwrap();
    let mut o = named("small");
    o.driver_opts.insert("size".into(), "16M".into());
    let (v, made) = s.create(&o).unwrap();
    assert!(made && v.sized());
    assert_eq!(v.options["size"], "16M");
    let data = s.data_dir("small");
    // Unmounts even when an assertion fails.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(data.clone());
    assert!(cubby_engine::loopfs::is_mounted(&data).unwrap());
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "no lost+found"
    );
    // Writing past the size fails with ENOSPC inside the volume.
    let mut f = std::fs::File::create(data.join("big")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let err = (0..64)
        .find_map(|_| std::io::Write::write_all(&mut f, &chunk).err())
        .expect("wrote 64 MiB into a 16 MiB volume");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    // The image stays within its size on the host's disk.
    assert!(s.size("small") <= 16 << 20, "{}", s.size("small"));
    // Unmounted (a reboot): mounted again on use, data kept.
    cubby_engine::loopfs::unmount(&data).unwrap();
    assert!(!data.join("big").exists());
    s.ensure_all_mounted(&["small".into(), "gone".into()])
        .unwrap();
    assert!(data.join("big").exists());
    // Remove unmounts and deletes it.
    assert!(s.remove("small", &InUse::default(), false).unwrap());
    assert!(!tmp.path().join("volumes/small").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*data.to_string_lossy()));
}
