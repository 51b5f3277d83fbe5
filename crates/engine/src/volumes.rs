//! Local named volumes, as Docker's `local` driver keeps them: one
//! directory per volume at `<root>/volumes/<name>/` holding the data in
//! `_data/` and the volume's description in a crash-safe `volume.json`.
//!
//! Create, remove and prune take an exclusive `flock` on
//! `<root>/volumes/.lock`, so concurrent requests (threads or processes)
//! for one name see either no volume or a whole one. A volume directory
//! without `volume.json` (a crash during create) is ignored by list and
//! completed by the next create of that name; remove first renames the
//! directory to a hidden name, so a crash mid-delete leaves nothing that
//! lists as a volume (the leftovers are deleted by the next `open`).
//!
//! A volume created with the driver option `size` (`docker volume create
//! --opt size=1G`) is a filesystem of its own: `<name>/disk.img`, a sparse
//! ext4 image loop-mounted on `_data` (see [`crate::loopfs`]), so a
//! container filling it gets ENOSPC and the host's disk is untouched. The
//! mount is made at create and again on use ([`VolumeStore::ensure_mounted`],
//! called before a container is made or started and before a copy), so
//! the volume survives a reboot or a daemon restart; remove unmounts it.
//!
//! "In use" means: some container record's `config["Mounts"]` has a
//! `{"Type": "volume", "Name": <name>}` entry (running or not, as Docker).

use crate::records::ContainerRecord;
use nix::fcntl::{openat, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, Gid, Uid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const VOLUMES_DIR: &str = "volumes";
/// The label Docker puts on volumes created without a name.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
const META_FILE: &str = "volume.json";
const DATA_DIR: &str = "_data";
const LOCK_FILE: &str = ".lock";
const IMAGE_FILE: &str = "disk.img";
/// The driver option that makes a sized volume.
pub const SIZE_OPT: &str = "size";
/// Smallest sized volume: ext4 with a journal needs a few MiB.
const MIN_SIZE: u64 = 8 << 20;
const REMOVING: &str = ".removing-";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("remove {name}: volume is in use - [{}]", .users.join(", "))]
    InUse { name: String, users: Vec<String> },
    #[error("error looking up volume plugin {0}: plugin \"{0}\" not found")]
    NoSuchDriver(String),
    #[error("driver '{driver}' already has volume '{name}': volume name must be unique")]
    DriverConflict { name: String, driver: String },
    #[error("invalid option: {0:?}")]
    InvalidOption(String),
    #[error("volume {name}: local driver option {option:?} is not supported by cubby (its only driver option is size, e.g. --opt size=1G)")]
    Unsupported { name: String, option: String },
    #[error("volume {name}: invalid driver option size={value:?}: {reason}")]
    InvalidSize {
        name: String,
        value: String,
        reason: String,
    },
    #[error("volume {name}: {source}")]
    Loop {
        name: String,
        #[source]
        source: crate::loopfs::LoopError,
    },
    #[error("corrupt volume record {path}: {reason} (remove the directory {dir} to drop the volume)", dir = .path.parent().unwrap_or(Path::new("")).display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        VolumeError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// What `volume.json` holds (Docker's field names; `Mountpoint` is
/// recomputed from the store's location when read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Options", default)]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "Scope", default = "local")]
    pub scope: String,
}

fn local() -> String {
    "local".into()
}

impl VolumeRecord {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// Whether this volume is a filesystem image of its own.
    pub fn sized(&self) -> bool {
        self.options.contains_key(SIZE_OPT)
    }

    /// The Docker API document.
    pub fn to_api(&self) -> bollard_stubs::models::Volume {
        bollard_stubs::models::Volume {
            name: self.name.clone(),
            driver: self.driver.clone(),
            mountpoint: self.mountpoint.to_string_lossy().into_owned(),
            created_at: Some(self.created_at.clone()),
            labels: self.labels.clone().into_iter().collect(),
            scope: Some(bollard_stubs::models::VolumeScopeEnum::LOCAL),
            options: self.options.clone().into_iter().collect(),
            ..Default::default()
        }
    }
}

/// Docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The bytes of a `size` option: a number of bytes, or with a unit
/// (`512M`, `1G`, `1GiB`, `1gb`: powers of 1024, as Docker's sizes).
pub fn parse_size(name: &str, value: &str) -> Result<u64> {
    let bad = |reason: &str| VolumeError::InvalidSize {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let bytes = crate::config::parse::parse_size(value)
        .filter(|b| *b >= 0)
        .ok_or_else(|| {
            bad("not a size (bytes, or a number with k, m, g or t, e.g. 512M, 1G, 1GiB)")
        })? as u64;
    if bytes < MIN_SIZE {
        return Err(bad("smaller than the minimum of 8 MiB"));
    }
    Ok(bytes)
}

/// A fresh 64-hex-digit name, as Docker gives anonymous volumes.
pub fn anonymous_name() -> Result<String> {
    let mut buf = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| VolumeError::io("read /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The names of the volumes a container's record mounts.
pub fn mounted_by(record: &ContainerRecord) -> Vec<String> {
    record.config["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Type"] == "volume")
        .filter_map(|m| m["Name"].as_str().map(str::to_string))
        .collect()
}

/// The ids of the containers whose records mount volume `name`.
pub fn users(records: &[ContainerRecord], name: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| {
            r.config["Mounts"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["Type"] == "volume" && m["Name"].as_str() == Some(name))
            })
        })
        .map(|r| r.id.clone())
        .collect()
}

/// Who uses volumes: the monitor's records and its creates in flight
/// (reserved by two-phase create, see [`crate::protocol::Request::Reserve`]),
/// so `rm` and `prune` never take a volume from under a `create`.
#[derive(Debug, Clone, Default)]
pub struct InUse {
    pub records: Vec<ContainerRecord>,
    pub reserved: Vec<crate::protocol::Reservation>,
}

impl InUse {
    /// The ids of the containers (made or being made) that mount `name`.
    pub fn users(&self, name: &str) -> Vec<String> {
        let mut ids = users(&self.records, name);
        for r in &self.reserved {
            if r.volumes.iter().any(|v| v == name) && !ids.contains(&r.id) {
                ids.push(r.id.clone());
            }
        }
        ids
    }
}

/// Options for [`VolumeStore::create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// None or empty: an anonymous volume (random name, anonymous label).
    pub name: Option<String>,
    /// None, empty or "local".
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// The volumes under one cubby root.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    /// Opens (creating if needed) `<root>/volumes`, and deletes what a
    /// crash in the middle of a remove left behind.
    pub fn open(root: &Path) -> Result<VolumeStore> {
        let dir = root.join(VOLUMES_DIR);
        fs::create_dir_all(&dir)
            .map_err(|e| VolumeError::io(format!("create {}", dir.display()), e))?;
        // Docker's 0701: containers' users may traverse, not list.
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o701));
        let store = VolumeStore { dir };
        if let Ok(entries) = fs::read_dir(&store.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(REMOVING) {
                    let _ = store.unmount_data("", &e.path());
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(store)
    }

    fn vol_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn image(&self, name: &str) -> PathBuf {
        self.vol_dir(name).join(IMAGE_FILE)
    }

    fn loop_err(name: &str) -> impl FnOnce(crate::loopfs::LoopError) -> VolumeError + '_ {
        move |source| VolumeError::Loop {
            name: name.into(),
            source,
        }
    }

    /// Mounts a sized volume's filesystem on its data directory unless it
    /// is mounted (after a reboot, or a crash between create and mount);
    /// nothing for a plain volume. Call it before the data is used.
    pub fn ensure_mounted(&self, name: &str) -> Result<()> {
        let rec = self.get(name)?;
        if !rec.sized() {
            return Ok(());
        }
        let _lock = self.lock_volume(name)?;
        self.mount_locked(name)
    }

    /// [`Self::ensure_mounted`] for every volume in `names` that exists
    /// (a missing one is the caller's error to report).
    pub fn ensure_all_mounted(&self, names: &[String]) -> Result<()> {
        for n in names {
            match self.ensure_mounted(n) {
                Err(VolumeError::NotFound(_)) => {}
                r => r?,
            }
        }
        Ok(())
    }

    fn mount_locked(&self, name: &str) -> Result<()> {
        let data = self.data_dir(name);
        if crate::loopfs::is_mounted(&data).map_err(Self::loop_err(name))? {
            return Ok(());
        }
        crate::loopfs::mount_image(&self.image(name), &data).map_err(Self::loop_err(name))
    }

    /// The per-volume lock (a flock on its directory) that serialises
    /// mounting and populating one volume.
    fn lock_volume(&self, name: &str) -> Result<Flock<fs::File>> {
        let dir = self.vol_dir(name);
        let handle = fs::File::open(&dir)
            .map_err(|e| VolumeError::io(format!("open {}", dir.display()), e))?;
        Flock::lock(handle, FlockArg::LockExclusive)
            .map_err(|(_, errno)| VolumeError::io(format!("lock {}", dir.display()), errno.into()))
    }

    /// Unmounts the data directory of `name` if something is mounted there.
    fn unmount_data(&self, name: &str, dir: &Path) -> Result<()> {
        let data = dir.join(DATA_DIR);
        if data.is_dir() && crate::loopfs::is_mounted(&data).map_err(Self::loop_err(name))? {
            crate::loopfs::unmount(&data).map_err(Self::loop_err(name))?;
        }
        Ok(())
    }

    /// Where the volume's data lives (what containers mount).
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.vol_dir(name).join(DATA_DIR)
    }

    fn lock(&self) -> Result<Flock<fs::File>> {
        let path = self.dir.join(LOCK_FILE);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| VolumeError::io(format!("open {}", path.display()), e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, errno)| VolumeError::io(format!("lock {}", path.display()), errno.into()))
    }

    fn read(&self, name: &str) -> Result<Option<VolumeRecord>> {
        let path = self.vol_dir(name).join(META_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io(format!("read {}", path.display()), e)),
        };
        let mut rec: VolumeRecord =
            serde_json::from_slice(&data).map_err(|e| VolumeError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if rec.name != name {
            return Err(VolumeError::Corrupt {
                path,
                reason: format!("it names volume {:?}", rec.name),
            });
        }
        rec.mountpoint = self.data_dir(name);
        Ok(Some(rec))
    }

    /// Volume `name`, or [`VolumeError::NotFound`].
    pub fn get(&self, name: &str) -> Result<VolumeRecord> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.into()));
        }
        self.read(name)?
            .ok_or_else(|| VolumeError::NotFound(name.into()))
    }

    /// Every volume, sorted by name, and one message per volume that could
    /// not be read (Docker's list `Warnings`).
    pub fn list(&self) -> Result<(Vec<VolumeRecord>, Vec<String>)> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| VolumeError::io(format!("read {}", self.dir.display()), e))?;
        let mut vols = Vec::new();
        let mut warnings = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) {
                continue;
            }
            match self.read(&name) {
                Ok(Some(v)) => vols.push(v),
                Ok(None) => {}
                Err(e) => warnings.push(e.to_string()),
            }
        }
        vols.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((vols, warnings))
    }

    /// Creates a volume, or returns the existing one of that name (as
    /// Docker: labels and options of a second create are ignored). The
    /// bool is true when this call made it.
    pub fn create(&self, opts: &CreateOptions) -> Result<(VolumeRecord, bool)> {
        let mut labels = opts.labels.clone();
        let name = match opts.name.as_deref() {
            None | Some("") => {
                labels.insert(ANONYMOUS_LABEL.into(), String::new());
                anonymous_name()?
            }
            Some(n) if valid_name(n) => n.to_string(),
            Some(n) => return Err(VolumeError::InvalidName(n.into())),
        };
        let driver = match opts.driver.as_deref() {
            None | Some("" | "local") => "local".to_string(),
            Some(other) => return Err(VolumeError::NoSuchDriver(other.into())),
        };
        let mut size = None;
        for (key, value) in &opts.driver_opts {
            match key.as_str() {
                SIZE_OPT => size = Some(parse_size(&name, value)?),
                // The local driver's mount(8) options (bind, tmpfs, nfs).
                "type" | "device" | "o" => {
                    return Err(VolumeError::Unsupported {
                        name,
                        option: key.clone(),
                    })
                }
                _ => return Err(VolumeError::InvalidOption(key.clone())),
            }
        }
        let _lock = self.lock()?;
        if let Some(existing) = self.read(&name)? {
            if existing.driver != driver {
                return Err(VolumeError::DriverConflict {
                    name,
                    driver: existing.driver,
                });
            }
            return Ok((existing, false));
        }
        let dir = self.vol_dir(&name);
        let data = self.data_dir(&name);
        // A create that crashed may have left a mounted image.
        self.unmount_data(&name, &dir)?;
        fs::create_dir_all(&data)
            .map_err(|e| VolumeError::io(format!("create {}", data.display()), e))?;
        if let Some(size) = size {
            self.make_sized(&name, size)?;
        }
        let rec = VolumeRecord {
            name: name.clone(),
            driver,
            mountpoint: data,
            created_at: cubby_runtime::state::rfc3339_now(),
            labels,
            options: opts.driver_opts.clone(),
            scope: local(),
        };
        let json = serde_json::to_vec_pretty(&rec).map_err(|e| VolumeError::Corrupt {
            path: dir.join(META_FILE),
            reason: e.to_string(),
        })?;
        cubby_runtime::state::write_atomic(&dir.join(META_FILE), &json).map_err(|e| {
            VolumeError::io(
                format!("write {}", dir.join(META_FILE).display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok((rec, true))
    }

    /// Formats and mounts the image of new sized volume `name`, leaving
    /// its root empty (no lost+found: an empty volume is filled from the
    /// image's directory at first use, as a plain one).
    fn make_sized(&self, name: &str, size: u64) -> Result<()> {
        let image = self.image(name);
        crate::loopfs::make_image(&image, size).map_err(Self::loop_err(name))?;
        let _lock = self.lock_volume(name)?;
        self.mount_locked(name)?;
        let lost = self.data_dir(name).join("lost+found");
        fs::remove_dir(&lost)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| VolumeError::io(format!("remove {}", lost.display()), e))
    }

    /// Removes volume `name` unless a container in `in_use` uses it.
    /// `force` (Docker's `purge on error`) only makes a missing volume a
    /// success; it never removes a volume in use. True if it was removed.
    pub fn remove(&self, name: &str, in_use: &InUse, force: bool) -> Result<bool> {
        let _lock = self.lock()?;
        match self.get(name) {
            Ok(_) => {}
            Err(VolumeError::NotFound(_)) if force => return Ok(false),
            Err(VolumeError::Corrupt { .. }) if force => {}
            Err(e) => return Err(e),
        }
        let users = in_use.users(name);
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.into(),
                users,
            });
        }
        let dir = self.vol_dir(name);
        self.unmount_data(name, &dir)?;
        let doomed = self
            .dir
            .join(format!("{REMOVING}{name}-{}", anonymous_name()?));
        fs::rename(&dir, &doomed)
            .map_err(|e| VolumeError::io(format!("rename {}", dir.display()), e))?;
        drop(_lock);
        fs::remove_dir_all(&doomed)
            .map_err(|e| VolumeError::io(format!("remove {}", doomed.display()), e))?;
        Ok(true)
    }

    /// Bytes used by the volume's data (files counted once per inode); for
    /// a sized volume the disk its image takes.
    pub fn size(&self, name: &str) -> u64 {
        if let Ok(m) = fs::metadata(self.image(name)) {
            return m.blocks() * 512;
        }
        let mut seen = std::collections::HashSet::new();
        disk_usage(&self.data_dir(name), &mut seen)
    }

    /// Copies `src` (a directory of the container's image) into the data
    /// of volume `name` when that is empty, keeping ownership, modes,
    /// times and symlinks, as Docker populates a new volume. True if it
    /// copied. Holds a lock on the volume's directory, so two containers
    /// created at once with one new volume do not copy into each other.
    pub fn populate(&self, name: &str, src: &Path) -> Result<bool> {
        let sized = self.get(name)?.sized();
        let _lock = self.lock_volume(name)?;
        if sized {
            self.mount_locked(name)?;
        }
        let data = self.data_dir(name);
        let empty = fs::read_dir(&data)
            .map_err(|e| VolumeError::io(format!("read {}", data.display()), e))?
            .next()
            .is_none();
        let src_meta = match fs::symlink_metadata(src) {
            Ok(m) if m.is_dir() => m,
            _ => return Ok(false),
        };
        if !empty {
            return Ok(false);
        }
        let fd = open_dir(nix::fcntl::AT_FDCWD, data.as_os_str())
            .map_err(|e| VolumeError::io(format!("open {}", data.display()), e.into()))?;
        copy_into(src, &fd, &data)?;
        set_attrs(&fd, &src_meta).map_err(|e| {
            VolumeError::io(
                format!("set owner, mode and times of {}", data.display()),
                e.into(),
            )
        })?;
        Ok(true)
    }
}

fn disk_usage(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = 0;
    if seen.insert((meta.dev(), meta.ino())) && !meta.is_dir() {
        total += meta.len();
    }
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path(), seen);
            }
        }
    }
    total
}

/// Copies the contents of directory `src` into the existing directory
/// `dst`: directories, regular files, symlinks, fifos and device nodes,
/// each with its owner, mode and times (hard links become copies, xattrs
/// are not copied). The destination side works on directory fds with
/// `O_NOFOLLOW`/`O_EXCL`: a volume can be mounted in a running container
/// while it is filled, and a symlink that container plants must not send
/// a write to the host.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let fd = open_dir(nix::fcntl::AT_FDCWD, dst.as_os_str())
        .map_err(|e| VolumeError::io(format!("open {}", dst.display()), e.into()))?;
    copy_into(src, &fd, dst)
}

fn open_dir<Fd: AsFd>(dir: Fd, name: &std::ffi::OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `src`'s entries into the directory `dir` (shown as `shown` in errors).
fn copy_into(src: &Path, dir: &OwnedFd, shown: &Path) -> Result<()> {
    let entries =
        fs::read_dir(src).map_err(|e| VolumeError::io(format!("read {}", src.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| VolumeError::io(format!("read {}", src.display()), e))?;
        let name = e.file_name();
        let from = e.path();
        let to = shown.join(&name);
        let meta = fs::symlink_metadata(&from)
            .map_err(|e| VolumeError::io(format!("stat {}", from.display()), e))?;
        let sys = |what: &str| {
            let what = format!("{what} {}", to.display());
            move |e: nix::Error| VolumeError::io(what, e.into())
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700))
                .map_err(sys("mkdir"))?;
            let child = open_dir(dir, &name).map_err(sys("open"))?;
            copy_into(&from, &child, &to)?;
            set_attrs(&child, &meta).map_err(sys("set owner, mode and times of"))?;
        } else if ft.is_file() {
            let mut input = fs::File::open(&from)
                .map_err(|e| VolumeError::io(format!("open {}", from.display()), e))?;
            let out = openat(
                dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(sys("create"))?;
            let mut out = fs::File::from(out);
            std::io::copy(&mut input, &mut out)
                .map_err(|e| VolumeError::io(format!("copy to {}", to.display()), e))?;
            set_attrs(&out, &meta).map_err(sys("set owner, mode and times of"))?;
        } else {
            if ft.is_symlink() {
                let target = fs::read_link(&from)
                    .map_err(|e| VolumeError::io(format!("readlink {}", from.display()), e))?;
                symlinkat(&target, dir, name.as_os_str()).map_err(sys("symlink"))?;
            } else {
                let kind = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
                let perm = Mode::from_bits_truncate(meta.mode() & 0o777);
                mknodat(dir, name.as_os_str(), kind, perm, meta.rdev()).map_err(sys("mknod"))?;
            }
            // Neither follows a symlink; a node's mode came with mknod.
            fchownat(
                dir,
                name.as_os_str(),
                Some(Uid::from_raw(meta.uid())),
                Some(Gid::from_raw(meta.gid())),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(sys("chown"))?;
            utimensat(
                dir,
                name.as_os_str(),
                &TimeSpec::new(meta.atime(), meta.atime_nsec()),
                &TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(sys("set times of"))?;
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears setuid bits), then times of `meta` onto
/// an open file or directory.
fn set_attrs<Fd: AsFd>(fd: Fd, meta: &fs::Metadata) -> nix::Result<()> {
    fchown(
        &fd,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
    )?;
    fchmod(&fd, Mode::from_bits_truncate(meta.mode() & 0o7777))?;
    futimens(
        &fd,
        &TimeSpec::new(meta.atime(), meta.atime_nsec()),
        &TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str, mounts: serde_json::Value) -> ContainerRecord {
        let mut r = ContainerRecord::new(id, id, PathBuf::new());
        r.config = json!({ "Mounts": mounts });
        r
    }

    fn named(n: &str) -> CreateOptions {
        CreateOptions {
            name: Some(n.into()),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("db-data") && valid_name("a.b_c") && valid_name("0x"));
        for bad in ["", "a", "-x", ".x", "a/b", "a b", "/abs", "a:b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let n = anonymous_name().unwrap();
        assert!(n.len() == 64 && valid_name(&n));
    }

    #[test]
    fn create_get_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(tmp.path()).unwrap();
        let mut o = named("data");
        o.labels.insert("k".into(), "v".into());
        let (v, made) = s.create(&o).unwrap();
        assert!(made && !v.anonymous());
        assert_eq!(v.mountpoint, tmp.path().join("volumes/data/_data"));
        assert!(v.mountpoint.is_dir());
        // A second create returns the first, labels unchanged.
        let (again, made) = s.create(&named("data")).unwrap();
        assert!(!made);
        assert_eq!(again, v);
        assert_eq!(s.get("data").unwrap(), v);
        let api = serde_json::to_value(v.to_api()).unwrap();
        assert_eq!(api["Scope"], "local");
        assert_eq!(api["Driver"], "local");
        assert_eq!(api["Labels"]["k"], "v");

        let (anon, _) = s.create(&CreateOptions::default()).unwrap();
        assert!(anon.anonymous() && anon.name.len() == 64);
        let (all, warnings) = s.list().unwrap();
        assert_eq!(all.len(), 2);
        assert!(warnings.is_empty());

        // A half-created volume (no volume.json) is not listed.
        fs::create_dir_all(tmp.path().join("volumes/half/_data")).unwrap();
        assert_eq!(s.list().unwrap().0.len(), 2);
        assert!(matches!(s.get("half"), Err(VolumeError::NotFound(_))));
        assert!(s.create(&named("half")).unwrap().1);

        let records = vec![rec("c1", json!([{"Type": "volume", "Name": "data"}]))];
        assert_eq!(mounted_by(&records[0]), ["data"]);
        let in_use = InUse {
            records,
            reserved: Vec::new(),
        };
        let none = InUse::default();
        let e = s.remove("data", &in_use, true).unwrap_err();
        assert_eq!(e.to_string(), "remove data: volume is in use - [c1]");
        assert!(s.remove("data", &none, false).unwrap());
        assert!(!tmp.path().join("volumes/data").exists());
        let e = s.remove("data", &none, false).unwrap_err();
        assert_eq!(e.to_string(), "get data: no such volume");
        assert!(!s.remove("data", &none, true).unwrap());

        // A container in flight (reserved in the monitor, no record yet)
        // holds the volumes it claimed.
        s.create(&named("busy")).unwrap();
        let in_flight = InUse {
            records: Vec::new(),
            reserved: vec![crate::protocol::Reservation {
                id: "c9".into(),
                name: "n9".into(),
                volumes: vec!["busy".into()],
            }],
        };
        let e = s.remove("busy", &in_flight, false).unwrap_err();
        assert_eq!(e.to_string(), "remove busy: volume is in use - [c9]");
        assert!(s.remove("busy", &none, false).unwrap());
    }

    #[test]
    fn bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(tmp.path()).unwrap();
        assert!(matches!(
            s.create(&named("a/b")),
            Err(VolumeError::InvalidName(_))
        ));
        let mut o = named("x1");
        o.driver = Some("nfs".into());
        assert_eq!(
            s.create(&o).unwrap_err().to_string(),
            "error looking up volume plugin nfs: plugin \"nfs\" not found"
        );
        let mut o = named("x1");
        o.driver_opts.insert("type".into(), "nfs".into());
        assert!(matches!(s.create(&o), Err(VolumeError::Unsupported { .. })));
        let mut o = named("x1");
        o.driver_opts.insert("bogus".into(), "1".into());
        assert!(matches!(s.create(&o), Err(VolumeError::InvalidOption(_))));
        for key in ["device", "o"] {
            let mut o = named("x1");
            o.driver_opts.insert(key.into(), "x".into());
            let e = s.create(&o).unwrap_err().to_string();
            assert!(e.contains(&format!("driver option \"{key}\"")), "{e}");
        }
        let mut o = named("x1");
        o.driver_opts.insert("size".into(), "huge".into());
        let e = s.create(&o).unwrap_err().to_string();
        assert!(e.contains("size=\"huge\""), "{e}");
        assert!(matches!(s.get("x1"), Err(VolumeError::NotFound(_))));
        fs::create_dir_all(tmp.path().join("volumes/broken")).unwrap();
        fs::write(tmp.path().join("volumes/broken/volume.json"), "{").unwrap();
        let (vols, warnings) = s.list().unwrap();
        assert!(vols.is_empty());
        assert!(
            warnings[0].contains("corrupt volume record"),
            "{warnings:?}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("v", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("v", "1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("v", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("v", "1gb").unwrap(), 1 << 30);
        assert_eq!(parse_size("v", "16777216").unwrap(), 16 << 20);
        for bad in ["", "-1", "1X", "lots", "1M"] {
            let e = parse_size("v", bad).unwrap_err().to_string();
            assert!(e.contains("invalid driver option size="), "{bad}: {e}");
        }
    }

    #[test]
    fn concurrent_creates_of_one_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let made: usize = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let root = root.clone();
                    sc.spawn(move || {
                        let s = VolumeStore::open(&root).unwrap();
                        s.create(&named("shared")).unwrap().1 as usize
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(made, 1);
        let s = VolumeStore::open(&root).unwrap();
        assert_eq!(s.list().unwrap().0.len(), 1);
    }

    #[test]
    fn populate_copies_once_keeping_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(tmp.path()).unwrap();
        let src = tmp.path().join("img");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "hello").unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::lchown(src.join("sub/f"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("link")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o1777)).unwrap();
        s.create(&named("v1")).unwrap();
        assert!(s.populate("v1", &src).unwrap());
        let data = s.data_dir("v1");
        assert_eq!(fs::read_to_string(data.join("sub/f")).unwrap(), "hello");
        let m = fs::metadata(data.join("sub/f")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1234, 5678));
        assert_eq!(
            fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/f")
        );
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o1777);
        assert_eq!(s.size("v1"), 5 + 5);
        // Not empty any more: a second populate copies nothing.
        fs::write(src.join("new"), "x").unwrap();
        assert!(!s.populate("v1", &src).unwrap());
        assert!(!data.join("new").exists());
        // A symlink planted in the destination is never followed.
        let planted = tmp.path().join("planted");
        fs::create_dir_all(&planted).unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, "host file").unwrap();
        std::os::unix::fs::symlink(&outside, planted.join("new")).unwrap();
        assert!(copy_tree(&src, &planted).is_err());
        assert_eq!(fs::read_to_string(&outside).unwrap(), "host file");
        // A source that is not a directory: nothing to copy.
        s.create(&named("v2")).unwrap();
        assert!(!s.populate("v2", &src.join("nope")).unwrap());
    }
}
