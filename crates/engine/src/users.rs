//! `user[:group]` as Docker takes it (`-u`, exec's `User`): numbers, or
//! names looked up in the container's /etc/passwd and /etc/group.

use crate::error::{Error, Result};
use std::path::Path;

/// (uid, gid) for `spec` in the root filesystem at `rootfs`; its
/// /etc/passwd and /etc/group are read inside that root (a symlink there
/// cannot point at the host's).
pub fn resolve(rootfs: &Path, spec: &str) -> Result<(u32, u32)> {
    let root = crate::container_fs::ContainerRoot::at(rootfs)
        .map_err(|e| Error::Invalid(format!("open {}: {e}", rootfs.display())))?;
    let passwd = root.read_small("/etc/passwd").unwrap_or_default();
    let group = root.read_small("/etc/group").unwrap_or_default();
    lookup(&passwd, &group, spec).map_err(Error::Invalid)
}

/// (uid, gid) for `spec` given the text of passwd and group. A user
/// without a group gets its primary group from passwd (0 if not listed).
pub fn lookup(passwd: &str, group: &str, spec: &str) -> Result<(u32, u32), String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(format!("user {spec:?}: empty user name"));
    }
    // name:x:uid:gid:...
    let entries: Vec<(&str, u32, u32)> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                *f.first()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, entries.iter().find(|e| e.1 == uid).map_or(0, |e| e.2)),
        Err(_) => entries
            .iter()
            .find(|e| e.0 == user)
            .map(|e| (e.1, e.2))
            .ok_or_else(|| {
                format!("unable to find user {user}: no matching entries in passwd file")
            })?,
    };
    let gid = match grp {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((*f.first()?, f.get(2)?.parse::<u32>().ok()?))
                })
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::fs::write(
            tmp.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nstudent:x:1000:1001::/home:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |s| resolve(tmp.path(), s);
        assert_eq!(r("student").unwrap(), (1000, 1001));
        assert_eq!(r("1000").unwrap(), (1000, 1001));
        assert_eq!(r("42").unwrap(), (42, 0));
        assert_eq!(r("student:staff").unwrap(), (1000, 50));
        assert_eq!(r("0:7").unwrap(), (0, 7));
        assert!(r("nobody").is_err());
        assert!(r("root:nogroup").is_err());
        assert!(r("").is_err());
    }
}
