//! Namespaces: which ones the container creates (clone flags) and which it
//! joins (spec namespaces with a path, or a running container's for exec).

use crate::error::{Context, Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The namespaces of a spec, split into new ones and ones to join.
pub struct Plan {
    /// Flags for clone(2).
    pub create: CloneFlags,
    /// Opened before clone so the paths resolve in the host's mount namespace.
    pub join: Vec<(CloneFlags, OwnedFd)>,
}

pub fn flag(kind: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_retain(kind as i32)
}

impl Plan {
    pub fn from_spec(spec: &Spec) -> Result<Plan> {
        let mut plan = Plan {
            create: CloneFlags::empty(),
            join: Vec::new(),
        };
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in namespaces {
            let f = flag(ns.typ());
            match ns.path() {
                Some(path) => {
                    let file = File::open(path)
                        .ctx(|| format!("open {} namespace {}", ns.typ(), path.display()))?;
                    plan.join.push((f, OwnedFd::from(file)));
                }
                None => plan.create |= f,
            }
        }
        // Joining a user namespace must come first so the others are owned by it.
        plan.join
            .sort_by_key(|(f, _)| !f.contains(CloneFlags::CLONE_NEWUSER));
        Ok(plan)
    }

    pub fn creates(&self, f: CloneFlags) -> bool {
        self.create.contains(f)
    }

    pub fn has(&self, f: CloneFlags) -> bool {
        self.creates(f) || self.join.iter().any(|(j, _)| *j == f)
    }

    /// setns into every namespace to join except PID (which takes effect for
    /// children only and is joined by the parent before clone).
    pub fn join_all(&self) -> Result<()> {
        for (f, fd) in &self.join {
            if *f == CloneFlags::CLONE_NEWPID {
                continue;
            }
            nix::sched::setns(fd.as_fd(), *f).ctx(|| format!("join namespace {f:?}"))?;
        }
        Ok(())
    }

    pub fn pid_to_join(&self) -> Option<&OwnedFd> {
        self.join
            .iter()
            .find(|(f, _)| *f == CloneFlags::CLONE_NEWPID)
            .map(|(_, fd)| fd)
    }
}

/// The namespaces of a running process, for exec: every one whose inode
/// differs from the runtime's own (joining our own is pointless and, for the
/// user namespace, refused by the kernel).
pub fn of_process(pid: i32) -> Result<Vec<(CloneFlags, OwnedFd)>> {
    const KINDS: [(&str, CloneFlags); 7] = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut out = Vec::new();
    for (name, f) in KINDS {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            continue;
        };
        if std::os::unix::fs::MetadataExt::ino(&a) == std::os::unix::fs::MetadataExt::ino(&b) {
            continue;
        }
        let file = File::open(&theirs).ctx(|| format!("open {theirs}"))?;
        out.push((f, OwnedFd::from(file)));
    }
    Ok(out)
}

/// Brings `lo` up in a new network namespace, so `--network none` still has
/// a working loopback (as Docker's does).
pub fn loopback_up() -> Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx(|| "socket for lo")?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(Error::io(
                "get flags of lo",
                std::io::Error::last_os_error(),
            ));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(Error::io("bring lo up", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Writes uid_map and gid_map of a child in a new user namespace. The runtime
/// is root outside, so it may map any range and setgroups stays allowed.
pub fn write_id_maps(pid: i32, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    if uids.is_empty() || gids.is_empty() {
        return Err(Error::InvalidSpec(
            "a user namespace needs uidMappings and gidMappings".into(),
        ));
    }
    write_map(&format!("/proc/{pid}/uid_map"), uids)?;
    write_map(&format!("/proc/{pid}/gid_map"), gids)
}

fn write_map(path: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    // The kernel wants the whole map in one write.
    std::fs::write(Path::new(path), text.as_bytes()).ctx(|| format!("write {path} ({text:?})"))
}

/// Maps a container id to the host through `maps` (for chown of devices etc).
pub fn to_host(id: u32, maps: &[LinuxIdMapping]) -> Option<u32> {
    maps.iter().find_map(|m| {
        let start = m.container_id();
        (id >= start && id - start < m.size()).then(|| m.host_id() + (id - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    #[test]
    fn id_mapping() {
        let maps = vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(100_000u32)
            .size(65_536u32)
            .build()
            .unwrap()];
        assert_eq!(to_host(0, &maps), Some(100_000));
        assert_eq!(to_host(65_535, &maps), Some(165_535));
        assert_eq!(to_host(65_536, &maps), None);
    }

    #[test]
    fn plan_from_default_namespaces() {
        let spec = Spec::default();
        let plan = Plan::from_spec(&spec).unwrap();
        assert!(plan.creates(CloneFlags::CLONE_NEWPID));
        assert!(plan.creates(CloneFlags::CLONE_NEWNS));
        assert!(plan.join.is_empty());
    }
}
