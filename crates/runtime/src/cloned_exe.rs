//! CVE-2019-5736: a container must never be able to reach the runtime's own
//! binary through /proc/PID/exe and write to it. Before any container work the
//! runtime re-executes itself from a sealed, read-only memfd copy.
//!
//! INTERFACE (owned by the security helper):
//!
//! Call [`ensure_sealed`] first thing in `main`, before any thread is
//! started: it either returns `Ok(())` (already running from the sealed copy)
//! or replaces the process. The copy is made with `sendfile(2)` in the kernel
//! (about a millisecond for a few MB, see the test `seal_copy_timing`).

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Context;
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag, SealFlag};
use nix::sys::stat::{fstat, Mode};

/// Set (to "1") in the environment of the re-executed copy, so that a copy
/// that somehow is not sealed fails instead of re-executing forever.
pub const SEALED_ENV: &str = "CUBBY_SEALED";

/// Seals put on the copy: no writes, no resizing, no further seal changes.
fn required_seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

fn seals_of(fd: impl AsFd) -> Option<SealFlag> {
    let raw = fcntl(fd, FcntlArg::F_GET_SEALS).ok()?;
    Some(SealFlag::from_bits_truncate(raw))
}

/// True if /proc/self/exe is a sealed memfd.
pub fn is_sealed() -> bool {
    let Ok(fd) = open(
        c"/proc/self/exe",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    // Regular files do not support F_GET_SEALS (EINVAL): not sealed.
    seals_of(&fd).is_some_and(|s| s.contains(SealFlag::F_SEAL_WRITE))
}

fn memfd() -> Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+) keeps the copy executable even where
    // vm.memfd_noexec asks for non-executable memfds by default; older
    // kernels reject the flag with EINVAL, then go without it.
    for flags in [base | libc::MFD_EXEC, base] {
        // SAFETY: memfd_create with a NUL-terminated name; on success it
        // returns a new descriptor that we own.
        let fd = unsafe { libc::memfd_create(c"cubby".as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: fd is a fresh descriptor owned by nobody else.
            return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        let err = Errno::last();
        if err != Errno::EINVAL || flags == base {
            return Err(Error::sys("memfd_create for the sealed executable", err));
        }
    }
    Err(Error::sys(
        "memfd_create for the sealed executable",
        Errno::EINVAL,
    ))
}

/// Copies `len` bytes from `src` into `dst` with sendfile, falling back to
/// read/write if the kernel refuses sendfile for these files.
fn copy_all(src: &OwnedFd, dst: &OwnedFd, len: u64, what: &str) -> Result<()> {
    let mut done: u64 = 0;
    while done < len {
        let chunk = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        // SAFETY: both descriptors are open for the duration of the call; a
        // null offset uses and advances the file position of `src`.
        let n = unsafe {
            libc::sendfile(
                dst.as_raw_fd(),
                src.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            break; // file shrank under us
        }
        let err = Errno::last();
        match err {
            Errno::EINTR | Errno::EAGAIN => continue,
            Errno::EINVAL | Errno::ENOSYS if done == 0 => {
                return copy_with_read_write(src, dst, what);
            }
            _ => return Err(Error::sys(format!("copying {what} into a memfd"), err)),
        }
    }
    if done != len {
        return Err(Error::Io {
            what: format!("copying {what} into a memfd: short copy ({done} of {len} bytes)"),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    Ok(())
}

fn copy_with_read_write(src: &OwnedFd, dst: &OwnedFd, what: &str) -> Result<()> {
    let mut from = std::fs::File::from(src.try_clone().ctx(|| format!("dup {what}"))?);
    let mut to = std::fs::File::from(dst.try_clone().ctx(|| "dup memfd")?);
    std::io::copy(&mut from, &mut to).ctx(|| format!("copying {what} into a memfd"))?;
    Ok(())
}

/// Copies the file at `path` into a new memfd and seals it against writes,
/// resizing and further seal changes. The fd has `FD_CLOEXEC` set.
pub fn seal_copy_of(path: &Path) -> Result<OwnedFd> {
    let what = path.display().to_string();
    let src = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| format!("opening {what}"))?;
    let st = fstat(&src).ctx(|| format!("stat {what}"))?;
    let len = u64::try_from(st.st_size).unwrap_or(0);
    let dst = memfd()?;
    copy_all(&src, &dst, len, &what)?;
    fcntl(&dst, FcntlArg::F_ADD_SEALS(required_seals()))
        .ctx(|| format!("sealing the copy of {what}"))?;
    Ok(dst)
}

fn cstring(s: &std::ffi::OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::InvalidSpec(format!("{s:?} contains a NUL byte")))
}

/// If the current executable is not already a sealed memfd, copies it into one,
/// seals it and re-executes it with the same argv and environment (does not
/// return on success). Returns Ok(()) when already running from the sealed copy.
///
/// Call it at the very start of `main`, while the process is single-threaded:
/// when already sealed it removes [`SEALED_ENV`] from the environment, so that
/// processes the runtime starts do not inherit it.
pub fn ensure_sealed() -> Result<()> {
    let marked = std::env::var_os(SEALED_ENV).is_some();
    if is_sealed() {
        if marked {
            std::env::remove_var(SEALED_ENV);
        }
        return Ok(());
    }
    if marked {
        return Err(Error::io(
            format!("{SEALED_ENV} is set but /proc/self/exe is not a sealed memfd; refusing to re-execute again"),
            std::io::ErrorKind::Other.into(),
        ));
    }

    let fd = seal_copy_of(Path::new("/proc/self/exe"))?;

    let argv = std::env::args_os()
        .map(|a| cstring(&a))
        .collect::<Result<Vec<_>>>()?;
    let mut envp = std::env::vars_os()
        .filter(|(k, _)| k != SEALED_ENV)
        .map(|(k, v)| {
            let mut kv = OsString::with_capacity(k.len() + v.len() + 1);
            kv.push(&k);
            kv.push("=");
            kv.push(&v);
            cstring(&kv)
        })
        .collect::<Result<Vec<_>>>()?;
    envp.push(cstring(format!("{SEALED_ENV}=1").as_ref())?);

    let err = match nix::unistd::fexecve(&fd, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(Error::sys("re-executing from the sealed memfd", err))
}
