//! The OCI spec cubby starts from: Docker's safe defaults (namespaces, mounts,
//! masked and read-only paths, capabilities, devices, seccomp), and config.json
//! loading for bundles.
//!
//! INTERFACE (owned by the spec helper):
//! - [`default_spec`]: Docker's defaults for a rootfs and a command.
//! - [`spec_with`]: the same with an explicit capability set and seccomp
//!   profile (what `default_spec` calls; handy for tests and for callers that
//!   already know they want no seccomp).
//! - [`load`]: read and validate `BUNDLE/config.json`.
//! - [`save`]: write a spec as JSON atomically.

use crate::{Error, Result};
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxNamespace, LinuxNamespaceType, LinuxResources, LinuxSeccomp, Mount, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec, User,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The runtime-spec version cubby writes.
pub const OCI_VERSION: &str = "1.0.2";
/// `PATH` of a container unless the caller overrides it.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Hostname of a container unless the caller overrides it.
pub const DEFAULT_HOSTNAME: &str = "cubby";
/// Soft and hard `RLIMIT_NOFILE` of a container, as Docker's default spec.
pub const DEFAULT_NOFILE: u64 = 1024;

/// Paths hidden from the container (bind-mounted over with /dev/null or an
/// empty read-only tmpfs), as Docker.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths remounted read-only inside the container, as Docker.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A spec with Docker's defaults for a rootfs at `rootfs` running `args`.
///
/// Capabilities come from [`crate::capabilities::default_set`] and the seccomp
/// profile from [`crate::seccomp::default_profile`]; `linux.cgroupsPath` is
/// left unset for the caller.
pub fn default_spec(rootfs: &Path, args: Vec<String>) -> Spec {
    spec_with(
        rootfs,
        args,
        crate::capabilities::default_set(),
        Some(crate::seccomp::default_profile()),
    )
}

/// [`default_spec`] with the capability set (bounding, effective and permitted;
/// inheritable and ambient stay empty) and the seccomp profile given.
pub fn spec_with(
    rootfs: &Path,
    args: Vec<String>,
    caps: Vec<Capability>,
    seccomp: Option<LinuxSeccomp>,
) -> Spec {
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf())
        .set_readonly(Some(false));

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_root(Some(root))
        .set_mounts(Some(default_mounts()))
        .set_process(Some(default_process(args, caps)))
        .set_hostname(Some(DEFAULT_HOSTNAME.to_string()))
        .set_domainname(None)
        .set_annotations(None)
        .set_hooks(None)
        .set_linux(Some(default_linux(seccomp)));
    spec
}

fn default_process(args: Vec<String>, caps: Vec<Capability>) -> Process {
    let set: Capabilities = caps.into_iter().collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities
        .set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));

    let nofile = rlimit(
        PosixRlimitType::RlimitNofile,
        DEFAULT_NOFILE,
        DEFAULT_NOFILE,
    );

    let mut process = Process::default();
    process
        .set_terminal(Some(false))
        .set_console_size(None)
        .set_user(User::default())
        .set_args(Some(args))
        .set_env(Some(vec![DEFAULT_PATH_ENV.to_string()]))
        .set_cwd(PathBuf::from("/"))
        .set_capabilities(Some(capabilities))
        .set_rlimits(Some(vec![nofile]))
        .set_no_new_privileges(Some(true))
        .set_oom_score_adj(None);
    process
}

/// An rlimit entry.
pub fn rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
    // The builder has defaults for every field and no validation: it cannot fail.
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .unwrap_or_default()
}

/// A mount entry; `source` is the filesystem name for virtual filesystems.
pub fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// Docker's default mounts, in mount order.
pub fn default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// A namespace to create (no path: a new one).
pub fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(None);
    ns
}

/// A device-cgroup rule; `None` major/minor means `*`.
pub fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow)
        .set_typ(Some(typ))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    d
}

/// Docker's device-cgroup rules: deny everything, then allow the usual
/// character devices and mknod (only) of any device.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    let rwm = |major, minor| device_rule(true, C, Some(major), minor, "rwm");
    vec![
        device_rule(false, A, None, None, "rwm"),
        // mknod of any device is allowed; using it is not (unless listed below).
        device_rule(true, C, None, None, "m"),
        device_rule(true, B, None, None, "m"),
        rwm(1, Some(3)), // /dev/null
        rwm(1, Some(5)), // /dev/zero
        rwm(1, Some(7)), // /dev/full
        rwm(1, Some(8)), // /dev/random
        rwm(1, Some(9)), // /dev/urandom
        rwm(5, Some(0)), // /dev/tty
        rwm(5, Some(1)), // /dev/console
        rwm(5, Some(2)), // /dev/ptmx
        rwm(136, None),  // /dev/pts/*
    ]
}

fn default_linux(seccomp: Option<LinuxSeccomp>) -> Linux {
    use LinuxNamespaceType::*;
    let namespaces = [Pid, Network, Ipc, Uts, Mount, Cgroup]
        .into_iter()
        .map(namespace)
        .collect();

    let mut resources = LinuxResources::default();
    resources.set_devices(Some(default_device_rules()));

    let mut linux = Linux::default();
    linux
        .set_namespaces(Some(namespaces))
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()))
        .set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()))
        .set_resources(Some(resources))
        .set_cgroups_path(None)
        .set_devices(None)
        .set_sysctl(None)
        .set_seccomp(seccomp);
    linux
}

/// Reads and validates `bundle/config.json`, naming the file and the problem on error.
///
/// Checks that `root.path` and `process.args` (non-empty) are present and
/// nothing else. A relative `root.path` is returned as written: the caller
/// resolves it against `bundle`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let config_err = |reason: String| Error::Config {
        path: path.clone(),
        reason,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(config_err(format!(
                "no config.json in {}: create one with `cubby-oci spec`",
                bundle.display()
            )));
        }
        Err(e) => return Err(config_err(format!("cannot read: {e}"))),
    };
    let spec: Spec =
        serde_json::from_str(&text).map_err(|e| config_err(format!("invalid JSON: {e}")))?;
    validate(&spec).map_err(config_err)?;
    Ok(spec)
}

/// The checks of [`load`], as a reason string.
fn validate(spec: &Spec) -> std::result::Result<(), String> {
    match spec.root() {
        None => return Err("\"root\" is missing: set root.path to the rootfs directory".into()),
        Some(root) if root.path().as_os_str().is_empty() => {
            return Err("root.path is empty: set it to the rootfs directory".into())
        }
        Some(_) => {}
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or("\"process\" is missing: set process.args to the command to run")?;
    match process.args() {
        Some(args) if !args.is_empty() => {}
        _ => return Err("process.args is missing or empty: set it to the command to run".into()),
    }
    if process.args().iter().flatten().any(|a| a.contains('\0')) {
        return Err("process.args contains a NUL byte".into());
    }
    Ok(())
}

/// Writes `spec` as pretty JSON to `path` atomically: a temporary file in the
/// same directory is written, fsynced and renamed over `path`.
pub fn save(spec: &Spec, path: &Path) -> Result<()> {
    let what = || format!("write {}", path.display());
    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| Error::InvalidSpec(format!("cannot serialize spec: {e}")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(what(), std::io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename durable; not every filesystem supports fsync on a directory.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(what(), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn base() -> Spec {
        spec_with(
            Path::new("/r"),
            vec!["sh".into(), "-c".into(), "true".into()],
            crate::capabilities::default_set(),
            None,
        )
    }

    #[test]
    fn defaults_root_process_hostname() {
        let s = base();
        assert_eq!(s.version(), "1.0.2");
        let root = s.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/r"));
        assert_eq!(root.readonly(), Some(false));
        assert_eq!(s.hostname().as_deref(), Some("cubby"));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.terminal(), Some(false));
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert_eq!(p.args().as_ref().unwrap(), &["sh", "-c", "true"]);
        assert_eq!(p.env().as_ref().unwrap(), &[DEFAULT_PATH_ENV]);
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), None);
        let rl = p.rlimits().as_ref().unwrap();
        assert_eq!(rl.len(), 1);
        assert_eq!(rl[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((rl[0].soft(), rl[0].hard()), (1024, 1024));
        assert!(s.linux().as_ref().unwrap().cgroups_path().is_none());
    }

    #[test]
    fn capabilities_sets() {
        let s = base();
        let c = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let want: HashSet<_> = crate::capabilities::default_set().into_iter().collect();
        assert_eq!(c.bounding().as_ref(), Some(&want));
        assert_eq!(c.effective().as_ref(), Some(&want));
        assert_eq!(c.permitted().as_ref(), Some(&want));
        assert!(c.inheritable().as_ref().unwrap().is_empty());
        assert!(c.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn mounts_are_dockers() {
        let s = base();
        let mounts = s.mounts().as_ref().unwrap();
        let got: Vec<(String, String)> = mounts
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.typ().clone().unwrap(),
                )
            })
            .collect();
        let want = [
            ("/proc", "proc"),
            ("/dev", "tmpfs"),
            ("/dev/pts", "devpts"),
            ("/dev/shm", "tmpfs"),
            ("/dev/mqueue", "mqueue"),
            ("/sys", "sysfs"),
            ("/sys/fs/cgroup", "cgroup"),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
        let opts = |dst: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(dst))
                .unwrap()
                .options()
                .clone()
                .unwrap()
        };
        assert!(opts("/sys").contains(&"ro".to_string()));
        assert!(opts("/sys/fs/cgroup").contains(&"ro".to_string()));
        assert!(opts("/dev/pts").contains(&"newinstance".to_string()));
        assert!(opts("/dev/shm").contains(&"mode=1777".to_string()));
    }

    #[test]
    fn linux_section() {
        let s = base();
        let l = s.linux().as_ref().unwrap();
        let ns: Vec<_> = l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        use LinuxNamespaceType::*;
        assert_eq!(ns, vec![Pid, Network, Ipc, Uts, Mount, Cgroup]);
        assert!(l.uid_mappings().is_none());
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), 11);
        assert!(l
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert_eq!(l.readonly_paths().as_ref().unwrap().len(), 5);
        assert!(l.seccomp().is_none());
        let devs = l.resources().as_ref().unwrap().devices().clone().unwrap();
        assert!(!devs[0].allow());
        assert_eq!(devs[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(devs[0].access().as_deref(), Some("rwm"));
        let allowed: Vec<_> = devs
            .iter()
            .filter(|d| d.allow() && d.access().as_deref() == Some("rwm"))
            .map(|d| (d.major(), d.minor()))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Some(1), Some(3)),
                (Some(1), Some(5)),
                (Some(1), Some(7)),
                (Some(1), Some(8)),
                (Some(1), Some(9)),
                (Some(5), Some(0)),
                (Some(5), Some(1)),
                (Some(5), Some(2)),
                (Some(136), None),
            ]
        );
    }

    #[test]
    fn json_roundtrip_and_shape() {
        let s = base();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["ociVersion"], "1.0.2");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(v["linux"]["resources"]["devices"][0]["type"], "a");
        assert_eq!(v["linux"]["namespaces"][1]["type"], "network");
        let back: Spec = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let s = base();
        save(&s, &dir.path().join("config.json")).unwrap();
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
        assert_eq!(load(dir.path()).unwrap(), s);
        // Overwrite works.
        save(&s, &dir.path().join("config.json")).unwrap();
    }

    #[test]
    fn save_into_missing_dir_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope/config.json");
        let e = save(&base(), &p).unwrap_err().to_string();
        assert!(e.contains("nope/config.json"), "{e}");
    }

    fn load_err(json: Option<&str>) -> String {
        let dir = tempfile::tempdir().unwrap();
        if let Some(j) = json {
            std::fs::write(dir.path().join("config.json"), j).unwrap();
        }
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("config.json"),
            "error does not name the file: {e}"
        );
        e
    }

    #[test]
    fn load_errors() {
        let cases: &[(Option<&str>, &str)] = &[
            (None, "create one with `cubby-oci spec`"),
            (Some("{"), "line 1 column 1"),
            (Some("{\"ociVersion\": 3}"), "invalid JSON"),
            (Some("{\"ociVersion\":\"1.0.2\"}"), "\"root\" is missing"),
            (
                Some(
                    r#"{"ociVersion":"1.0.2","root":{"path":""},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"]}}"#,
                ),
                "root.path is empty",
            ),
            (
                Some(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#),
                "\"process\" is missing",
            ),
            (
                Some(
                    r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":[]}}"#,
                ),
                "process.args is missing or empty",
            ),
            (
                Some(
                    r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0}}}"#,
                ),
                "process.args is missing or empty",
            ),
        ];
        for (json, want) in cases {
            let e = load_err(*json);
            assert!(e.contains(want), "for {json:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn load_keeps_relative_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"]}}"#,
        )
        .unwrap();
        let s = load(dir.path()).unwrap();
        assert_eq!(s.root().as_ref().unwrap().path(), Path::new("rootfs"));
    }

    #[test]
    fn default_spec_uses_helpers() {
        let s = default_spec(Path::new("/r"), vec!["true".into()]);
        let c = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let want: HashSet<_> = crate::capabilities::default_set().into_iter().collect();
        assert_eq!(c.bounding().as_ref(), Some(&want));
        assert!(s.linux().as_ref().unwrap().seccomp().is_some());
    }
}
