//! Layer unpacking against real tar streams (needs root: devices, chown,
//! trusted.* xattrs, overlay mounts).

use cubby_image::unpack::unpack;
use cubby_image::ImageError;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// Builds a tar stream entry by entry with raw paths (so hostile ones too).
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

struct E<'a> {
    path: &'a [u8],
    ty: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<&'a [u8]>,
    data: &'a [u8],
    dev: (u32, u32),
    pax: Vec<(&'a str, &'a [u8])>,
}

fn e(path: &str, ty: EntryType) -> E<'_> {
    E {
        path: path.as_bytes(),
        ty,
        mode: if ty == EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        link: None,
        data: b"",
        dev: (0, 0),
        pax: Vec::new(),
    }
}

fn pax_records(pax: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pax {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

impl Tar {
    fn new() -> Tar {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn add(&mut self, e: E<'_>) -> &mut Self {
        if !e.pax.is_empty() {
            let data = pax_records(&e.pax);
            let mut h = Header::new_ustar();
            set_raw(&mut h.as_old_mut().name, b"PaxHeaders/x");
            h.set_entry_type(EntryType::XHeader);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.b.append(&h, &data[..]).unwrap();
        }
        let mut h = Header::new_ustar();
        set_raw(&mut h.as_old_mut().name, e.path);
        if let Some(l) = e.link {
            set_raw(&mut h.as_old_mut().linkname, l);
        }
        h.set_entry_type(e.ty);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.ty, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, e.data).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn set_raw(field: &mut [u8], v: &[u8]) {
    assert!(v.len() < field.len(), "test path too long");
    field.fill(0);
    field[..v.len()].copy_from_slice(v);
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

#[test]
fn every_entry_kind_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();

    let mut t = Tar::new();
    t.add(E {
        uid: 1000,
        gid: 1000,
        mtime: 1_500_000_000,
        ..e("d/", EntryType::Directory)
    });
    t.add(E {
        mode: 0o4755,
        data: b"#!/bin/true\n",
        ..e("d/suid", EntryType::Regular)
    });
    t.add(E {
        mode: 0o6750,
        uid: 1234,
        gid: 5678,
        data: b"sgid",
        ..e("d/sgid", EntryType::Regular)
    });
    t.add(E {
        mode: 0o1777,
        ..e("sticky/", EntryType::Directory)
    });
    t.add(E {
        uid: 1001,
        gid: 1002,
        link: Some(b"/etc/passwd"),
        ..e("d/link", EntryType::Symlink)
    });
    t.add(E {
        link: Some(b"d/suid"),
        ..e("d/hard", EntryType::Link)
    });
    t.add(E {
        mode: 0o666,
        dev: (1, 3),
        ..e("dev/null", EntryType::Char)
    });
    t.add(E {
        mode: 0o660,
        gid: 6,
        dev: (7, 0),
        ..e("dev/loop0", EntryType::Block)
    });
    t.add(E {
        mode: 0o620,
        ..e("dev/fifo", EntryType::Fifo)
    });
    t.add(E {
        data: b"x",
        pax: vec![
            ("SCHILY.xattr.user.test", b"hello"),
            ("SCHILY.xattr.bogusns.attr", b"rejected"),
            ("mtime", b"1600000000.25"),
        ],
        ..e("xattr-file", EntryType::Regular)
    });
    // A later entry replaces an earlier one; a dir over a dir merges.
    t.add(E {
        data: b"old",
        ..e("r", EntryType::Regular)
    });
    t.add(E {
        link: Some(b"target"),
        ..e("r", EntryType::Symlink)
    });
    t.add(e("m/", EntryType::Directory));
    t.add(E {
        data: b"a",
        ..e("m/a", EntryType::Regular)
    });
    t.add(E {
        mode: 0o700,
        ..e("m/", EntryType::Directory)
    });
    t.add(E {
        data: b"z",
        ..e("z", EntryType::Regular)
    });
    t.add(e("z/", EntryType::Directory));
    t.add(E {
        data: b"implicit parents",
        ..e("./deep/er/file", EntryType::Regular)
    });
    let stats = unpack(&t.finish()[..], &dest, "test").unwrap();

    let m = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap();
    let d = m("d");
    assert!(d.is_dir());
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (1000, 1000, 0o755));
    assert_eq!(d.mtime(), 1_500_000_000, "dir mtime set after its children");

    let s = m("d/suid");
    assert_eq!(s.mode() & 0o7777, 0o4755);
    assert_eq!(s.mtime(), 1_600_000_000);
    assert_eq!(fs::read(dest.join("d/suid")).unwrap(), b"#!/bin/true\n");
    let g = m("d/sgid");
    assert_eq!((g.uid(), g.gid(), g.mode() & 0o7777), (1234, 5678, 0o6750));
    assert_eq!(m("sticky").mode() & 0o7777, 0o1777);

    let l = m("d/link");
    assert!(l.file_type().is_symlink());
    assert_eq!((l.uid(), l.gid()), (1001, 1002));
    assert_eq!(
        fs::read_link(dest.join("d/link")).unwrap(),
        PathBuf::from("/etc/passwd")
    );

    let h = m("d/hard");
    assert_eq!(h.ino(), s.ino());
    assert_eq!(h.nlink(), 2);

    let n = m("dev/null");
    assert!(n.file_type().is_char_device());
    assert_eq!((libc::major(n.rdev()), libc::minor(n.rdev())), (1, 3));
    assert_eq!(n.mode() & 0o7777, 0o666);
    let b = m("dev/loop0");
    assert!(b.file_type().is_block_device());
    assert_eq!((libc::major(b.rdev()), libc::minor(b.rdev())), (7, 0));
    assert_eq!((b.gid(), b.mode() & 0o7777), (6, 0o660));
    let f = m("dev/fifo");
    assert!(f.file_type().is_fifo());
    assert_eq!(f.mode() & 0o7777, 0o620);

    assert_eq!(
        lgetxattr(&dest.join("xattr-file"), "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(stats.xattrs_skipped, 1, "{:?}", stats.warnings);
    assert!(stats.warnings[0].contains("bogusns.attr"));
    let x = m("xattr-file");
    assert_eq!((x.mtime(), x.mtime_nsec()), (1_600_000_000, 250_000_000));

    assert!(m("r").file_type().is_symlink());
    assert_eq!(fs::read(dest.join("m/a")).unwrap(), b"a");
    assert_eq!(m("m").mode() & 0o7777, 0o700);
    assert!(m("z").is_dir());
    assert_eq!(
        fs::read(dest.join("deep/er/file")).unwrap(),
        b"implicit parents"
    );
    assert_eq!(m("deep").mode() & 0o7777, 0o755);

    assert_eq!(stats.whiteouts, 0);
    assert_eq!(stats.files, 18);
    assert_eq!(stats.bytes, (12 + 4 + 1 + 3 + 1 + 1 + 16) as u64);
}

#[test]
fn whiteouts_become_overlay_form() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut t = Tar::new();
    t.add(e("a/", EntryType::Directory));
    t.add(e("a/.wh.b", EntryType::Regular));
    t.add(e("o/", EntryType::Directory));
    t.add(e("o/.wh..wh..opq", EntryType::Regular));
    t.add(e(".wh.top", EntryType::Regular));
    t.add(e("p/.wh..wh.plnk", EntryType::Directory));
    let stats = unpack(&t.finish()[..], &dest, "wh").unwrap();
    assert_eq!(stats.whiteouts, 3);

    let wb = fs::symlink_metadata(dest.join("a/b")).unwrap();
    assert!(wb.file_type().is_char_device());
    assert_eq!(wb.rdev(), 0);
    let wt = fs::symlink_metadata(dest.join("top")).unwrap();
    assert!(wt.file_type().is_char_device());
    assert_eq!(
        lgetxattr(&dest.join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    for p in ["a/.wh.b", "o/.wh..wh..opq", ".wh.top", "p/.wh..wh.plnk"] {
        assert!(fs::symlink_metadata(dest.join(p)).is_err(), "{p} created");
    }
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn overlay_honours_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let [l1, l2, upper, work, merged] =
        ["l1", "l2", "upper", "work", "merged"].map(|n| tmp.path().join(n));
    for d in [&l1, &l2, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let mut t = Tar::new();
    t.add(E {
        data: b"keep",
        ..e("keep", EntryType::Regular)
    });
    t.add(E {
        data: b"gone",
        ..e("gone", EntryType::Regular)
    });
    t.add(e("opq/", EntryType::Directory));
    t.add(E {
        data: b"old",
        ..e("opq/old", EntryType::Regular)
    });
    t.add(e("sub/", EntryType::Directory));
    t.add(E {
        data: b"x",
        ..e("sub/hidden", EntryType::Regular)
    });
    unpack(&t.finish()[..], &l1, "l1").unwrap();

    let mut t = Tar::new();
    t.add(e(".wh.gone", EntryType::Regular));
    t.add(e("opq/", EntryType::Directory));
    t.add(e("opq/.wh..wh..opq", EntryType::Regular));
    t.add(E {
        data: b"new",
        ..e("opq/new", EntryType::Regular)
    });
    t.add(e("sub/.wh.hidden", EntryType::Regular));
    unpack(&t.finish()[..], &l2, "l2").unwrap();

    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        l2.display(),
        l1.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .expect("mount overlay");
    let _m = Mount(merged.clone());

    assert_eq!(fs::read(merged.join("keep")).unwrap(), b"keep");
    assert!(!merged.join("gone").exists(), "whiteout hides lower file");
    assert!(!merged.join("sub/hidden").exists());
    assert!(merged.join("sub").is_dir());
    let mut names: Vec<_> = fs::read_dir(merged.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new"], "opaque dir hides lower contents");
}

// ------------------------------------------------------------ hostile archives

/// Everything under `dir` (path -> kind/content), to prove nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let v = if m.is_dir() {
                stack.push(e.path());
                format!("dir {:o}", m.permissions().mode())
            } else if m.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(e.path()).unwrap())
            } else {
                format!(
                    "file {:o} {:?}",
                    m.permissions().mode(),
                    fs::read(e.path()).unwrap()
                )
            };
            out.insert(e.path(), v);
        }
    }
    out
}

/// A base dir with `dest/` (to unpack into) and `outside/` (sentinel with a
/// fake `passwd`). Returns (tempdir, dest, outside).
fn arena() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"root:x:0:0\n").unwrap();
    fs::create_dir(outside.join("etc")).unwrap();
    (tmp, dest, outside)
}

fn assert_unsafe(r: Result<impl std::fmt::Debug, ImageError>, what: &str) {
    match r {
        Err(ImageError::UnsafeArchive { layer, path, .. }) => {
            assert_eq!(layer, "evil");
            assert!(!path.is_empty());
        }
        other => panic!("{what}: expected UnsafeArchive, got {other:?}"),
    }
}

fn run_hostile(
    build: impl FnOnce(&mut Tar, &Path),
    expect_unsafe: bool,
) -> (PathBuf, tempfile::TempDir) {
    let (tmp, dest, outside) = arena();
    let before = snapshot(&outside);
    let parent_before: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut t = Tar::new();
    build(&mut t, &outside);
    let r = unpack(&t.finish()[..], &dest, "evil");
    if expect_unsafe {
        assert_unsafe(r, "hostile archive");
    } else {
        r.unwrap();
    }
    assert_eq!(snapshot(&outside), before, "something written outside dest");
    let parent_after: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(parent_before, parent_after, "entry created next to dest");
    (dest, tmp)
}

#[test]
fn rejects_dotdot_escape() {
    run_hostile(
        |t, _| {
            t.add(E {
                data: b"pwned",
                ..e("../outside/passwd", EntryType::Regular)
            });
        },
        true,
    );
    run_hostile(
        |t, _| {
            t.add(E {
                data: b"pwned",
                ..e("a/../../outside/x", EntryType::Regular)
            });
        },
        true,
    );
    run_hostile(
        |t, _| {
            t.add(e("../x", EntryType::Directory));
        },
        true,
    );
}

#[test]
fn dotdot_inside_is_normalised() {
    let (dest, base) = run_hostile(
        |t, _| {
            t.add(E {
                data: b"ok",
                ..e("a/b/../c", EntryType::Regular)
            });
        },
        false,
    );
    assert_eq!(fs::read(dest.join("a/c")).unwrap(), b"ok");
    drop(base);
}

#[test]
fn absolute_paths_are_stripped() {
    let outside_abs = std::cell::RefCell::new(PathBuf::new());
    let (dest, base) = run_hostile(
        |t, outside| {
            *outside_abs.borrow_mut() = outside.to_path_buf();
            let p = format!("{}/passwd", outside.display());
            t.add(E {
                data: b"pwned",
                ..e(&p, EntryType::Regular)
            });
            t.add(E {
                data: b"inside",
                ..e("/etc/x", EntryType::Regular)
            });
        },
        false,
    );
    assert_eq!(fs::read(dest.join("etc/x")).unwrap(), b"inside");
    let rel = outside_abs
        .borrow()
        .strip_prefix("/")
        .unwrap()
        .join("passwd");
    assert_eq!(fs::read(dest.join(rel)).unwrap(), b"pwned");
    drop(base);
}

#[test]
fn rejects_writing_through_symlinked_parent() {
    // Absolute symlink to outside, then a file beneath it.
    run_hostile(
        |t, outside| {
            let target = outside.display().to_string();
            t.add(E {
                link: Some(target.as_bytes()),
                ..e("link", EntryType::Symlink)
            });
            t.add(E {
                data: b"pwned",
                ..e("link/passwd", EntryType::Regular)
            });
        },
        true,
    );
    // Relative symlink climbing out, then a directory beneath it.
    run_hostile(
        |t, _| {
            t.add(E {
                link: Some(b"../outside"),
                ..e("rel", EntryType::Symlink)
            });
            t.add(e("rel/etc/new/", EntryType::Directory));
        },
        true,
    );
    // Whiteout and opaque marker through a symlinked parent.
    run_hostile(
        |t, _| {
            t.add(E {
                link: Some(b"../outside"),
                ..e("rel", EntryType::Symlink)
            });
            t.add(e("rel/.wh.passwd", EntryType::Regular));
        },
        true,
    );
    run_hostile(
        |t, _| {
            t.add(E {
                link: Some(b"../outside"),
                ..e("rel", EntryType::Symlink)
            });
            t.add(e("rel/etc/.wh..wh..opq", EntryType::Regular));
        },
        true,
    );
}

#[test]
fn entries_replace_symlinks_without_following() {
    let (dest, base) = run_hostile(
        |t, outside| {
            let target = format!("{}/passwd", outside.display());
            t.add(E {
                link: Some(target.as_bytes()),
                ..e("s", EntryType::Symlink)
            });
            t.add(E {
                data: b"pwned",
                mode: 0o777,
                ..e("s", EntryType::Regular)
            });
            let dir = outside.display().to_string();
            t.add(E {
                link: Some(dir.as_bytes()),
                ..e("d", EntryType::Symlink)
            });
            t.add(E {
                mode: 0o700,
                ..e("d/", EntryType::Directory)
            });
        },
        false,
    );
    assert_eq!(fs::read(dest.join("s")).unwrap(), b"pwned");
    assert!(fs::symlink_metadata(dest.join("d")).unwrap().is_dir());
    drop(base);
}

#[test]
fn rejects_hardlink_escape() {
    run_hostile(
        |t, _| {
            t.add(E {
                link: Some(b"../../etc/passwd"),
                ..e("h", EntryType::Link)
            });
        },
        true,
    );
    run_hostile(
        |t, _| {
            t.add(E {
                link: Some(b"../outside/passwd"),
                ..e("h", EntryType::Link)
            });
        },
        true,
    );
    // Target reached through a symlinked directory.
    run_hostile(
        |t, _| {
            t.add(E {
                link: Some(b"../outside"),
                ..e("dir", EntryType::Symlink)
            });
            t.add(E {
                link: Some(b"dir/passwd"),
                ..e("h", EntryType::Link)
            });
        },
        true,
    );
}

#[test]
fn hardlink_to_symlink_links_the_symlink_itself() {
    let (dest, base) = run_hostile(
        |t, outside| {
            let target = format!("{}/passwd", outside.display());
            t.add(E {
                link: Some(target.as_bytes()),
                ..e("s", EntryType::Symlink)
            });
            t.add(E {
                link: Some(b"s"),
                ..e("h", EntryType::Link)
            });
            // Overwriting the link must not write through it either.
            t.add(E {
                link: Some(b"s"),
                ..e("h2", EntryType::Link)
            });
            t.add(E {
                data: b"pwned",
                ..e("h2", EntryType::Regular)
            });
        },
        false,
    );
    let s = fs::symlink_metadata(dest.join("s")).unwrap();
    let h = fs::symlink_metadata(dest.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(s.ino(), h.ino());
    assert_eq!(fs::read(dest.join("h2")).unwrap(), b"pwned");
    drop(base);
}

#[test]
fn rejects_garbage_and_links_to_missing_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    // Not a tar at all.
    let r = unpack(&[0x55u8; 1024][..], &dest, "junk");
    assert!(r.is_err());
    // Truncated mid-file.
    let mut t = Tar::new();
    t.add(E {
        data: &[7u8; 4000],
        ..e("big", EntryType::Regular)
    });
    let bytes = t.finish();
    assert!(unpack(&bytes[..1500], &dest, "trunc").is_err());
    // Hard link to something not (yet) in the layer.
    let d2 = tmp.path().join("d2");
    fs::create_dir(&d2).unwrap();
    let mut t = Tar::new();
    t.add(E {
        link: Some(b"nope"),
        ..e("h", EntryType::Link)
    });
    assert!(matches!(
        unpack(&t.finish()[..], &d2, "x"),
        Err(ImageError::Invalid { .. })
    ));
}
