//! Linux capabilities: Docker's default set, and applying an OCI
//! `LinuxCapabilities` to the calling process.
//!
//! INTERFACE (owned by the security helper):
//!
//! Everything here works on raw capability numbers with `prctl(2)` and
//! `capset(2)`, so [`drop_bounding`] and [`apply`] do not allocate unless they
//! fail (they run in the container's child after `fork`). Capabilities the
//! running kernel does not know (above `/proc/sys/kernel/cap_last_cap`) are
//! skipped.

use crate::{Error, Result};
use nix::errno::Errno;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Every capability oci-spec knows, indexed by its kernel number.
pub const ALL: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel's number for `cap` (`CAP_CHOWN` = 0, ...).
pub fn number(cap: Capability) -> u8 {
    match cap {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// The capability with kernel number `n`, if oci-spec knows it.
pub fn from_number(n: u8) -> Option<Capability> {
    ALL.get(usize::from(n)).copied()
}

/// `"CAP_SYS_ADMIN"` style name of a capability number (`"CAP_?"` if unknown).
pub fn name_of(n: u8) -> &'static str {
    NAMES.get(usize::from(n)).copied().unwrap_or("CAP_?")
}

/// `"CAP_SYS_ADMIN"` style name of a capability.
pub fn name(cap: Capability) -> &'static str {
    name_of(number(cap))
}

/// Parses `CAP_SYS_ADMIN`, `SYS_ADMIN` or `sys_admin` (for `--cap-add` and
/// `--cap-drop`).
pub fn parse(s: &str) -> Option<Capability> {
    let s = s.trim();
    let bare = match (s.get(..4), s.get(4..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("CAP_") => rest,
        _ => s,
    };
    NAMES
        .iter()
        .position(|n| n[4..].eq_ignore_ascii_case(bare))
        .and_then(|i| ALL.get(i).copied())
}

/// Docker's default capability set.
pub fn default_set() -> Vec<Capability> {
    vec![
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
}

/// Highest capability number the running kernel knows.
///
/// Reads `/proc/sys/kernel/cap_last_cap` (no allocation); if that is not
/// readable (no /proc yet, or masked), probes with `PR_CAPBSET_READ`.
pub fn last_cap() -> u8 {
    read_cap_last_cap().unwrap_or_else(probe_last_cap)
}

fn read_cap_last_cap() -> Option<u8> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let fd = open(
        c"/proc/sys/kernel/cap_last_cap",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 16];
    let n = nix::unistd::read(&fd, &mut buf).ok()?;
    let mut value: u32 = 0;
    let mut digits = 0;
    for &b in buf.get(..n)? {
        match b {
            b'0'..=b'9' => {
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
                if digits > 3 {
                    return None;
                }
            }
            b'\n' | b' ' => break,
            _ => return None,
        }
    }
    if digits == 0 || value > 63 {
        return None;
    }
    Some(value as u8)
}

fn bounding_has(n: u8) -> std::result::Result<bool, Errno> {
    // SAFETY: PR_CAPBSET_READ only reads the calling thread's bounding set.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(n), 0, 0, 0) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc == 1)
    }
}

fn probe_last_cap() -> u8 {
    let mut last = 0;
    for n in 0..64u8 {
        match bounding_has(n) {
            Ok(_) => last = n,
            Err(_) => break,
        }
    }
    last
}

/// Bit mask of the capabilities in `set` that the kernel knows (`last`).
fn mask(set: Option<&Capabilities>, last: u8) -> u64 {
    let mut m = 0u64;
    for cap in set.into_iter().flatten() {
        let n = number(*cap);
        if n <= last {
            m |= 1u64 << n;
        }
    }
    m
}

/// Names of the capability numbers set in `bits`, for error messages.
fn names_in(bits: u64) -> String {
    (0..64u8)
        .filter(|n| bits & (1u64 << n) != 0)
        .map(name_of)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drops every capability not in `caps.bounding` from the bounding set.
/// Call while still privileged (before changing uid).
pub fn drop_bounding(caps: &LinuxCapabilities) -> Result<()> {
    let last = last_cap();
    let keep = mask(caps.bounding().as_ref(), last);
    for n in 0..=last {
        if keep & (1u64 << n) != 0 {
            continue;
        }
        match bounding_has(n) {
            Ok(false) => continue,          // already gone
            Err(Errno::EINVAL) => continue, // unknown to this kernel
            Ok(true) | Err(_) => {}
        }
        // SAFETY: PR_CAPBSET_DROP only changes the calling thread's bounding set.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) };
        if rc != 0 {
            let err = Errno::last();
            if err == Errno::EINVAL {
                continue;
            }
            return Err(Error::Capabilities(format!(
                "dropping {} from the bounding set: {err} (needs CAP_SETPCAP)",
                name_of(n)
            )));
        }
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted, inheritable) sets.
fn capget() -> std::result::Result<(u64, u64, u64), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capget(2) requires for
    // version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(Errno::last());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> std::result::Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and a two-element data array, as capset(2) requires for
    // version 3; the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Explains a failed capset: which requested capabilities are not allowed.
fn explain_capset(err: Errno, eff: u64, prm: u64, inh: u64, last: u8) -> Error {
    let mut reasons = Vec::new();
    if let Ok((_, cur_prm, cur_inh)) = capget() {
        let extra = prm & !cur_prm;
        if extra != 0 {
            reasons.push(format!(
                "permitted {} not in the current permitted set",
                names_in(extra)
            ));
        }
        let not_bounded = (0..=last)
            .filter(|n| inh & (1u64 << n) != 0 && !matches!(bounding_has(*n), Ok(true)))
            .fold(0u64, |m, n| m | (1u64 << n));
        let not_bounded = not_bounded & !cur_inh;
        if not_bounded != 0 {
            reasons.push(format!(
                "inheritable {} not in the bounding set",
                names_in(not_bounded)
            ));
        }
    }
    let eff_extra = eff & !prm;
    if eff_extra != 0 {
        reasons.push(format!(
            "effective {} not in the permitted set",
            names_in(eff_extra)
        ));
    }
    let why = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    };
    Error::Capabilities(format!("capset: {err}{why}"))
}

fn ambient(op: libc::c_ulong, n: u8) -> std::result::Result<(), Errno> {
    // SAFETY: PR_CAP_AMBIENT only changes the calling thread's ambient set.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, op, libc::c_ulong::from(n), 0, 0) };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient sets. Call after setuid
/// (with PR_SET_KEEPCAPS set before it).
///
/// The effective, permitted and inheritable sets are set together with one
/// `capset`; the ambient set last (each ambient capability must be in both
/// permitted and inheritable). A missing set in `caps` means empty.
pub fn apply(caps: &LinuxCapabilities) -> Result<()> {
    apply_keeping(caps, 0)
}

/// CAP_SYS_ADMIN as a mask bit: a seccomp filter loaded without
/// no_new_privs needs it at the moment of loading.
pub const SYS_ADMIN_BIT: u64 = 1 << 21;

/// Like [`apply`], but also keeps `extra` in the effective and permitted
/// sets (not in the ambient set), for a last privileged step before exec;
/// [`release`] then drops them with a single `capset`.
pub fn apply_keeping(caps: &LinuxCapabilities, extra: u64) -> Result<()> {
    let last = last_cap();
    let (eff, prm, inh) = sets(caps, last);
    let amb = mask(caps.ambient().as_ref(), last);
    let (eff_k, prm_k) = (eff | extra, prm | extra);
    capset(eff_k, prm_k, inh).map_err(|e| explain_capset(e, eff_k, prm_k, inh, last))?;

    match ambient(libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0) {
        Ok(()) => {}
        // Kernel without ambient capabilities (< 4.3): fine if none asked.
        Err(Errno::EINVAL) if amb == 0 => return Ok(()),
        Err(e) => {
            return Err(Error::Capabilities(format!(
                "clearing the ambient set: {e}"
            )))
        }
    }
    // The kernel only allows ambient capabilities that are also permitted and
    // inheritable. Specs from `runc spec` list ambient ones without
    // inheritable; like runc, those are skipped rather than failing the start.
    let amb = amb & prm & inh;
    for n in 0..=last {
        if amb & (1u64 << n) == 0 {
            continue;
        }
        ambient(libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, n).map_err(|e| {
            let hint = if prm & inh & (1u64 << n) == 0 {
                " (an ambient capability must also be permitted and inheritable)"
            } else {
                ""
            };
            Error::Capabilities(format!("raising ambient {}: {e}{hint}", name_of(n)))
        })?;
    }
    Ok(())
}

fn sets(caps: &LinuxCapabilities, last: u8) -> (u64, u64, u64) {
    (
        mask(caps.effective().as_ref(), last),
        mask(caps.permitted().as_ref(), last),
        mask(caps.inheritable().as_ref(), last),
    )
}

/// Sets exactly the spec's effective, permitted and inheritable sets with one
/// `capset` (after [`apply_keeping`]): no allocation, one syscall.
pub fn release(caps: &LinuxCapabilities) -> Result<()> {
    let last = last_cap();
    let (eff, prm, inh) = sets(caps, last);
    capset(eff, prm, inh).map_err(|e| {
        Error::Capabilities(format!(
            "capset to drop the capabilities kept for loading the seccomp filter: {e} \
             (a seccomp profile that denies capset needs noNewPrivileges: true)"
        ))
    })
}

/// True if the spec leaves CAP_SYS_ADMIN in the effective set.
pub fn keeps_admin(caps: &LinuxCapabilities) -> bool {
    mask(caps.effective().as_ref(), last_cap()) & SYS_ADMIN_BIT != 0
}

/// Names of every capability this kernel knows, as `features` reports them.
pub fn known_names() -> Vec<&'static str> {
    let last = last_cap();
    ALL.iter()
        .copied()
        .filter(|c| number(*c) <= last)
        .map(name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_table_agree() {
        for (i, cap) in ALL.iter().enumerate() {
            assert_eq!(usize::from(number(*cap)), i);
            assert_eq!(from_number(i as u8), Some(*cap));
            assert_eq!(name(*cap), format!("CAP_{cap}"));
        }
        assert_eq!(from_number(41), None);
        assert_eq!(name_of(200), "CAP_?");
    }

    #[test]
    fn parse_accepts_common_spellings() {
        assert_eq!(parse("CAP_SYS_ADMIN"), Some(Capability::SysAdmin));
        assert_eq!(parse("sys_admin"), Some(Capability::SysAdmin));
        assert_eq!(parse("cap_net_raw"), Some(Capability::NetRaw));
        assert_eq!(parse("CAP_"), None);
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("é"), None);
        assert_eq!(parse("abcéé"), None);
    }

    #[test]
    fn last_cap_matches_proc() {
        let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap();
        assert_eq!(last_cap().to_string(), text.trim());
        assert_eq!(probe_last_cap().to_string(), text.trim());
    }

    #[test]
    fn default_set_is_dockers() {
        let set = default_set();
        assert_eq!(set.len(), 14);
        assert!(set.contains(&Capability::AuditWrite));
        assert!(!set.contains(&Capability::SysAdmin));
    }
}
