//! The container's filesystem view, set up inside its new mount namespace:
//! propagation, the spec's mounts, device nodes, pivot_root, then masked and
//! read-only paths. Every destination is resolved inside the rootfs so a
//! symlink in an image can never make us mount over a host path.

use crate::error::{Context, Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What the rootfs setup needs to know besides the spec.
pub struct Options<'a> {
    pub rootfs: &'a Path,
    /// Inside a new user namespace: no mknod, bind host devices instead.
    pub in_userns: bool,
    /// The container has its own mount namespace (new or joined). Without
    /// one (a spec may leave it out, as runc allows) the spec's mounts are
    /// made in the runtime's namespace under the rootfs (`delete` removes
    /// them, see [`unmount_under`]) and the root is entered with chroot.
    pub mount_ns: bool,
}

/// Refuses what cannot be done without a private mount namespace, as runc
/// does: masked and read-only paths, a read-only root and root propagation
/// would all change the runtime's (the host's) own mounts.
pub fn check_without_mount_ns(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let refuse = |what: &str| {
        Err(Error::InvalidSpec(format!(
            "{what} needs a private mount namespace: add {{\"type\": \"mount\"}} to linux.namespaces"
        )))
    };
    if linux.masked_paths().as_ref().is_some_and(|v| !v.is_empty())
        || linux
            .readonly_paths()
            .as_ref()
            .is_some_and(|v| !v.is_empty())
    {
        return refuse("linux.maskedPaths/readonlyPaths");
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        return refuse("root.readonly");
    }
    if linux.rootfs_propagation().is_some() {
        return refuse("linux.rootfsPropagation");
    }
    Ok(())
}

/// Lazily unmounts every mount point under `dir` (not `dir` itself, which
/// may be the caller's own rootfs mount), deepest first: what a container
/// without a mount namespace left in the runtime's namespace.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(Error::sys(format!("unmount {}", p.display()), e)),
        }
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Step 1, still seeing the host's tree: propagation, mounts, devices.
pub fn prepare(spec: &Spec, opts: &Options) -> Result<()> {
    if opts.mount_ns {
        // Nothing we mount may propagate back to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| "make / a slave mount")?;
        // pivot_root needs the new root to be a mount point.
        mount(
            Some(opts.rootfs),
            opts.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| format!("bind rootfs {}", opts.rootfs.display()))?;
    }

    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(m, opts).map_err(|e| match e {
            Error::Sys { what, source } => Error::Sys {
                what: format!("{what} (mount {})", m.destination().display()),
                source,
            },
            other => other,
        })?;
    }

    let dev_is_tmpfs = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs"));
    if dev_is_tmpfs {
        let extra = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        create_devices(opts, &extra)?;
        dev_symlinks(opts.rootfs)?;
    }
    Ok(())
}

/// Without a mount namespace: chroot into the rootfs (pivot_root would move
/// the runtime's own root).
pub fn chroot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    nix::unistd::chroot(".").ctx(|| format!("chroot {}", rootfs.display()))?;
    nix::unistd::chdir("/").ctx(|| "chdir /")
}

/// Step 2: make the rootfs `/` and drop every trace of the host's tree.
pub fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching it
    // afterwards leaves no path back to the host.
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root")?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "make old root a slave")?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach old root")?;
    nix::unistd::chdir("/").ctx(|| "chdir /")?;
    Ok(())
}

/// Step 3, inside the new root: sysctls, masked and read-only paths,
/// read-only root, root propagation.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(sysctls) = linux.sysctl() {
        for (key, value) in sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            fs::write(&path, value.as_bytes()).ctx(|| format!("sysctl {key}={value}"))?;
        }
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        readonly_path(Path::new(&p))?;
    }
    for p in linux.masked_paths().clone().unwrap_or_default() {
        mask_path(Path::new(&p))?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        remount(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    if let Some(prop) = linux.rootfs_propagation() {
        let (flags, _) = parse_options(std::slice::from_ref(prop));
        let prop = flags & propagation_flags();
        if !prop.is_empty() {
            mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
                .ctx(|| "set rootfs propagation")?;
        }
    }
    Ok(())
}

/// Makes /dev/console the container's pty (bind of /dev/pts/N), after pivot.
pub fn bind_console(pty_path: &Path) -> Result<()> {
    let console = Path::new("/dev/console");
    if !console.exists() {
        fs::File::create(console).ctx(|| "create /dev/console")?;
    }
    mount(
        Some(pty_path),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {} to /dev/console", pty_path.display()))
}

fn propagation_flags() -> MsFlags {
    MsFlags::MS_SHARED | MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE | MsFlags::MS_UNBINDABLE
}

/// Splits OCI mount options into mount(2) flags and the data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "private" => (MsFlags::MS_PRIVATE, MsFlags::empty()),
            "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, MsFlags::empty()),
            "shared" => (MsFlags::MS_SHARED, MsFlags::empty()),
            "rshared" => (MsFlags::MS_SHARED | MsFlags::MS_REC, MsFlags::empty()),
            "slave" => (MsFlags::MS_SLAVE, MsFlags::empty()),
            "rslave" => (MsFlags::MS_SLAVE | MsFlags::MS_REC, MsFlags::empty()),
            "unbindable" => (MsFlags::MS_UNBINDABLE, MsFlags::empty()),
            "runbindable" => (MsFlags::MS_UNBINDABLE | MsFlags::MS_REC, MsFlags::empty()),
            // podman's hints that need no kernel flag.
            "tmpcopyup" | "notmpcopyup" | "copy-symlink" | "idmap" | "ridmap" => {
                (MsFlags::empty(), MsFlags::empty())
            }
            other => {
                data.push(other.to_string());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

fn mount_one(m: &Mount, opts: &Options) -> Result<()> {
    let options = m.options().clone().unwrap_or_default();
    let (flags, data) = parse_options(&options);
    let typ = m.typ().clone().unwrap_or_default();
    let is_bind = flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let dest = secure_join(opts.rootfs, m.destination())?;

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(&dest, flags);
    }

    let prop = flags & propagation_flags();
    let flags = flags - prop;
    if is_bind {
        let src = m.source().clone().ok_or_else(|| {
            Error::InvalidSpec(format!(
                "bind mount {} has no source",
                m.destination().display()
            ))
        })?;
        let meta = fs::metadata(&src).ctx(|| format!("bind source {}", src.display()))?;
        make_target(&dest, meta.is_dir())?;
        let bind = flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
        mount(Some(&src), &dest, None::<&str>, bind, None::<&str>)
            .ctx(|| format!("bind {} to {}", src.display(), dest.display()))?;
        let rest = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            remount(&dest, rest)?;
        }
    } else {
        make_target(&dest, true)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let data = (!data.is_empty()).then_some(data.as_str());
        let res = mount(Some(&source), &dest, Some(typ.as_str()), flags, data);
        match res {
            // In a user namespace that does not own the network namespace,
            // sysfs cannot be mounted fresh: bind the host's read-only instead.
            Err(nix::Error::EPERM) if typ == "sysfs" && opts.in_userns => {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .ctx(|| "bind /sys")?;
                remount(
                    &dest,
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                )?;
            }
            // mqueue belongs to the IPC namespace's owner; skip it where denied.
            Err(nix::Error::EPERM) if typ == "mqueue" && opts.in_userns => {}
            other => other.ctx(|| format!("mount {typ} on {}", dest.display()))?,
        }
    }
    if !prop.is_empty() {
        mount(None::<&str>, &dest, None::<&str>, prop, None::<&str>)
            .ctx(|| format!("set propagation of {}", dest.display()))?;
    }
    Ok(())
}

/// Bind-remounts `path` adding `flags`, keeping the flags the kernel locks
/// (nosuid, nodev, noexec, atime) so the remount is allowed in a user namespace.
pub fn remount(path: &Path, flags: MsFlags) -> Result<()> {
    let locked = nix::sys::statvfs::statvfs(path)
        .map(|s| {
            use nix::sys::statvfs::FsFlags as F;
            let f = s.flags();
            let mut m = MsFlags::empty();
            for (a, b) in [
                (F::ST_NOSUID, MsFlags::MS_NOSUID),
                (F::ST_NODEV, MsFlags::MS_NODEV),
                (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (F::ST_NOATIME, MsFlags::MS_NOATIME),
                (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (F::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(a) {
                    m |= b;
                }
            }
            m
        })
        .unwrap_or(MsFlags::empty());
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        None::<&str>,
    )
    .ctx(|| format!("remount {} {flags:?}", path.display()))
}

/// A cgroup v1 hierarchy the host has mounted: the mount point's name
/// (`cpu,cpuacct`) and the options that mount it again (`cpu,cpuacct`,
/// `name=systemd`).
#[derive(Debug, Clone)]
struct V1Hierarchy {
    name: String,
    options: String,
}

/// The host's cgroup v1 hierarchies, read from mountinfo once per process.
/// A container's init is a clone of its caller, so [`warm_v1_hierarchies`]
/// called there before the clone spares every init the read: mountinfo
/// lists every container's rootfs and network namespace, so reading it per
/// container made a burst of N starts O(N²) (a fifth of the monitor's CPU
/// at 300 containers). A hierarchy mounted after the first read is seen by
/// the next process (a monitor restart), which is when hosts change them.
fn v1_hierarchies() -> Result<&'static [V1Hierarchy]> {
    static CACHE: std::sync::OnceLock<Vec<V1Hierarchy>> = std::sync::OnceLock::new();
    if let Some(v) = CACHE.get() {
        return Ok(v);
    }
    let info = fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?;
    Ok(CACHE.get_or_init(|| parse_v1_hierarchies(&info)))
}

/// Reads the host's cgroup v1 hierarchies now (in the caller, before it
/// clones a container init) if the spec mounts cgroups: once per process,
/// on a v2 host too (one read, then nothing), rather than a layout check
/// per container.
pub(crate) fn warm_v1_hierarchies(spec: &Spec) -> Result<()> {
    let mounts_cgroup = spec
        .mounts()
        .as_ref()
        .is_some_and(|ms| ms.iter().any(|m| m.typ().as_deref() == Some("cgroup")));
    if mounts_cgroup {
        v1_hierarchies()?;
    }
    Ok(())
}

fn parse_v1_hierarchies(info: &str) -> Vec<V1Hierarchy> {
    let mut out = Vec::new();
    for line in info.lines() {
        // "... mountpoint opts - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let superopts = r.nth(1).unwrap_or("");
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        let Some(name) = Path::new(mountpoint).file_name() else {
            continue;
        };
        let options: Vec<&str> = superopts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        out.push(V1Hierarchy {
            name: name.to_string_lossy().into_owned(),
            options: options.join(","),
        });
    }
    out
}

/// cgroup mounts: cgroup2 directly; on v1 a tmpfs with one mount per
/// hierarchy the host has (the cgroup namespace makes our cgroup their root).
fn mount_cgroup(dest: &Path, flags: MsFlags) -> Result<()> {
    make_target(dest, true)?;
    let base = flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let ro = flags & MsFlags::MS_RDONLY;
    if matches!(
        crate::cgroups::Hierarchy::detect(),
        Ok(crate::cgroups::Hierarchy::V2 { .. })
    ) {
        return mount(
            Some("cgroup2"),
            dest,
            Some("cgroup2"),
            base | ro,
            None::<&str>,
        )
        .ctx(|| format!("mount cgroup2 on {}", dest.display()));
    }
    mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755"))
        .ctx(|| format!("mount tmpfs on {}", dest.display()))?;
    for h in v1_hierarchies()? {
        let target = dest.join(&h.name);
        make_target(&target, true)?;
        mount(
            Some("cgroup"),
            &target,
            Some("cgroup"),
            base | ro,
            Some(h.options.as_str()),
        )
        .ctx(|| format!("mount cgroup {} on {}", h.options, target.display()))?;
    }
    if !ro.is_empty() {
        remount(dest, ro)?;
    }
    Ok(())
}

/// Creates a directory or an empty file to mount on.
fn make_target(path: &Path, dir: bool) -> Result<()> {
    if dir {
        fs::create_dir_all(path).ctx(|| format!("mkdir {}", path.display()))
    } else {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        if !path.exists() {
            fs::File::create(path).ctx(|| format!("create {}", path.display()))?;
        }
        Ok(())
    }
}

/// Resolves `unsafe_path` inside `root` the way the kernel would after a
/// chroot: symlinks (absolute or relative) and `..` never leave `root`.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = components_rev(unsafe_path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::InvalidSpec(format!(
                        "too many symlinks resolving {}",
                        unsafe_path.display()
                    )));
                }
                let target = fs::read_link(&candidate)
                    .ctx(|| format!("readlink {}", candidate.display()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(components_rev(&target));
            }
            _ => resolved.push(part),
        }
    }
    Ok(root.join(resolved))
}

fn components_rev(p: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsStr::new("..").to_os_string()),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

/// The devices every container gets (Docker's and runc's defaults).
fn default_devices() -> [(&'static str, u64, u64); 6] {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
}

fn create_devices(opts: &Options, extra: &[LinuxDevice]) -> Result<()> {
    let old = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for (name, major, minor) in default_devices() {
            let path = PathBuf::from("/dev").join(name);
            device_node(opts, &path, SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
        }
        for d in extra {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => continue,
            };
            device_node(
                opts,
                d.path(),
                kind,
                d.major() as u64,
                d.minor() as u64,
                d.file_mode().unwrap_or(0o666),
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
            )?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    result
}

#[allow(clippy::too_many_arguments)]
fn device_node(
    opts: &Options,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let dest = secure_join(opts.rootfs, path)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
    }
    let _ = fs::remove_file(&dest);
    if opts.in_userns {
        // mknod is not allowed in a user namespace: bind the host's node.
        make_target(&dest, false)?;
        return mount(
            Some(path),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("bind device {}", path.display()));
    }
    mknod(
        &dest,
        kind,
        Mode::from_bits_truncate(mode & 0o7777),
        makedev(major, minor),
    )
    .ctx(|| format!("mknod {}", path.display()))?;
    nix::unistd::chown(
        &dest,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .ctx(|| format!("chown {}", path.display()))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o7777))
        .ctx(|| format!("chmod {}", path.display()))
}

fn dev_symlinks(rootfs: &Path) -> Result<()> {
    let dev = rootfs.join("dev");
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        let _ = fs::remove_file(&path);
        symlink(target, &path).ctx(|| format!("symlink /dev/{link}"))?;
    }
    if Path::new("/proc/kcore").exists() {
        let _ = symlink("/proc/kcore", dev.join("core"));
    }
    Ok(())
}

fn mask_path(path: &Path) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat masked path {}", path.display()), e)),
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
        .ctx(|| format!("mask {}", path.display()))
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("mask {}", path.display()))
    }
}

fn readonly_path(path: &Path) -> Result<()> {
    match mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Err(nix::Error::ENOENT) => return Ok(()),
        other => other.ctx(|| format!("bind read-only path {}", path.display()))?,
    }
    remount(
        path,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_from_mountinfo() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup ro,xattr,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
            90 22 0:50 / /var/lib/x/merged rw - overlay overlay rw,lowerdir=/a,upperdir=/b\n";
        let h = parse_v1_hierarchies(info);
        let got: Vec<(&str, &str)> = h
            .iter()
            .map(|h| (h.name.as_str(), h.options.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu,cpuacct", "cpu,cpuacct"),
                ("systemd", "xattr,name=systemd")
            ]
        );
    }

    #[test]
    fn options_to_flags() {
        let opts: Vec<String> = [
            "nosuid", "noexec", "rbind", "ro", "mode=755", "size=64k", "rprivate",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (f, data) = parse_options(&opts);
        assert!(f.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert!(f.contains(MsFlags::MS_RDONLY | MsFlags::MS_PRIVATE));
        assert_eq!(data, "mode=755,size=64k");
        let (f, _) = parse_options(&["ro".into(), "rw".into()]);
        assert!(!f.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn secure_join_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("a/abs")).unwrap();
        symlink("../../../../..", root.join("a/b/up")).unwrap();
        symlink("b", root.join("a/rel")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/a/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/b/up/etc")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            secure_join(root, Path::new("../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/rel/c")).unwrap(),
            root.join("a/b/c")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("/loop/x")).is_err());
    }
}
