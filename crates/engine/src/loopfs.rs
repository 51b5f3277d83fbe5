//! Filesystem images on loop devices: the backing of sized volumes.
//!
//! An image is a sparse file formatted with `mkfs.ext4`; it is attached to
//! a free loop device with `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` (flag
//! `LO_FLAGS_AUTOCLEAR`) and mounted. Autoclear makes the kernel detach
//! the device when its last user goes, so unmounting is the whole teardown
//! and a crash between attach and mount leaks nothing (our descriptor was
//! the only user). The layout (where images and mount points live) belongs
//! to the caller, [`crate::volumes`].

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mkfs.ext4 {image}: {reason}")]
    Mkfs { image: String, reason: String },
    #[error("no free loop device after {0} attempts (other processes took each one first)")]
    NoFreeDevice(usize),
}

fn io(what: impl Into<String>, source: impl Into<std::io::Error>) -> LoopError {
    LoopError::Io {
        what: what.into(),
        source: source.into(),
    }
}

/// Creates `image` as a sparse file of `size` bytes holding an empty ext4
/// filesystem (no blocks reserved for root: the whole size is the user's).
pub fn make_image(image: &Path, size: u64) -> Result<(), LoopError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(|e| io(format!("create {}", image.display()), e))?;
    f.set_len(size)
        .map_err(|e| io(format!("size {}", image.display()), e))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E"])
        .arg("nodiscard,lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0")
        .arg(image)
        .output()
        .map_err(|e| LoopError::Mkfs {
            image: image.display().to_string(),
            reason: format!("cannot run it ({e}); install e2fsprogs"),
        })?;
    if !out.status.success() {
        return Err(LoopError::Mkfs {
            image: image.display().to_string(),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Whether something is mounted on `dir` (its device differs from its
/// parent's). Cheaper than reading the mount table, and enough for a
/// directory we made on the same filesystem as its parent.
pub fn is_mounted(dir: &Path) -> Result<bool, LoopError> {
    let here = fs::metadata(dir).map_err(|e| io(format!("stat {}", dir.display()), e))?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let up = fs::metadata(parent).map_err(|e| io(format!("stat {}", parent.display()), e))?;
    Ok(here.dev() != up.dev())
}

// From <linux/loop.h>.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device and mounts its ext4 on `target`.
pub fn mount_image(image: &Path, target: &Path) -> Result<(), LoopError> {
    let backing = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| io(format!("open {}", image.display()), e))?;
    let ctl = fs::File::open("/dev/loop-control").map_err(|e| io("open /dev/loop-control", e))?;
    const ATTEMPTS: usize = 32;
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io("LOOP_CTL_GET_FREE", std::io::Error::last_os_error()));
        }
        let dev_path = format!("/dev/loop{n}");
        let dev = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev_path)
        {
            Ok(d) => d,
            // devtmpfs may not show a new node yet: ask again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("open {dev_path}"), e)),
        };
        let mut name = [0u8; 64];
        let shown = image.as_os_str().as_encoded_bytes();
        let len = shown.len().min(63);
        name[..len].copy_from_slice(&shown[..len]);
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_AUTOCLEAR,
                file_name: name,
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one struct loop_config, which `cfg`
        // lays out as <linux/loop.h> does and outlives the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            // Another process bound it between GET_FREE and here.
            if e.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(io(format!("LOOP_CONFIGURE {dev_path}"), e));
        }
        // On failure `dev` closes and autoclear detaches the device.
        mount(
            Some(Path::new(&dev_path)),
            target,
            Some("ext4"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            io(
                format!(
                    "mount {} ({}) on {}",
                    image.display(),
                    dev_path,
                    target.display()
                ),
                e,
            )
        })?;
        return Ok(());
    }
    Err(LoopError::NoFreeDevice(ATTEMPTS))
}

/// Unmounts `target` (lazily when busy); autoclear then frees the loop
/// device once nothing holds the filesystem.
pub fn unmount(target: &Path) -> Result<(), LoopError> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH)
            .map_err(|e| io(format!("unmount {}", target.display()), e)),
        Err(e) => Err(io(format!("unmount {}", target.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_matches_the_kernel_layout() {
        // sizeof(struct loop_info64) = 232, sizeof(struct loop_config) = 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
