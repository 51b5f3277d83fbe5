//! `user[:group]` as Docker takes it (`-u`, exec's `User`): numbers, or
//! names looked up in the container's /etc/passwd and /etc/group. The one
//! passwd/group lookup of cubby: `cubby run`, create, exec and cp use it.

use crate::error::{Error, Result};
use std::path::Path;

/// A user or group, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

/// A parsed `user[:group]` (no lookup yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: IdOrName,
    pub group: Option<IdOrName>,
}

/// The user a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
}

fn id_or_name(s: &str, what: &str) -> Result<IdOrName, String> {
    if s.is_empty() {
        return Err(format!(
            "empty {what}: use UID[:GID] or NAME[:GROUP], e.g. 1000:1000 or nobody"
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u32>()
            .map(IdOrName::Id)
            .map_err(|_| format!("{what} {s} is too large (maximum {})", u32::MAX));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c == ':' || c == '/' || c == '\0' || c == ',')
    {
        return Err(format!("invalid {what} name {s:?}"));
    }
    Ok(IdOrName::Name(s.to_string()))
}

/// Parses `UID[:GID]` / `NAME[:GROUP]` (no lookup).
pub fn parse_user(s: &str) -> Result<UserSpec, String> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    Ok(UserSpec {
        user: id_or_name(user, "user")?,
        group: group.map(|g| id_or_name(g, "group")).transpose()?,
    })
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let uid = f.next()?.trim().parse().ok()?;
        let gid = f.next()?.trim().parse().ok()?;
        let _gecos = f.next();
        let home = f.next().unwrap_or("");
        (!name.is_empty() && !name.starts_with('#')).then_some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let gid = f.next()?.trim().parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        (!name.is_empty() && !name.starts_with('#')).then_some(GroupEntry { name, gid, members })
    })
}

/// Resolves a parsed user with the rootfs's `/etc/passwd` and `/etc/group`
/// contents (`None`: the file is missing). Like Docker: a user without a
/// group gets its primary group from passwd (0 if not listed) and its
/// supplementary groups from /etc/group.
pub fn resolve_user(
    spec: &UserSpec,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, String> {
    let entry = match &spec.user {
        IdOrName::Id(uid) => passwd.and_then(|p| passwd_entries(p).find(|e| e.uid == *uid)),
        IdOrName::Name(name) => {
            let p = passwd.ok_or_else(|| {
                format!("unknown user {name:?}: the rootfs has no /etc/passwd; use a numeric UID")
            })?;
            Some(passwd_entries(p).find(|e| e.name == name).ok_or_else(|| {
                format!("unknown user {name:?}: no such entry in the rootfs's /etc/passwd")
            })?)
        }
    };
    let uid = match (&spec.user, &entry) {
        (IdOrName::Id(uid), _) => *uid,
        (IdOrName::Name(_), Some(e)) => e.uid,
        (IdOrName::Name(name), None) => return Err(format!("unknown user {name:?}")),
    };
    let home = entry
        .as_ref()
        .map(|e| e.home.to_string())
        .filter(|h| !h.is_empty());
    let (gid, additional_gids) = match &spec.group {
        Some(IdOrName::Id(gid)) => (*gid, Vec::new()),
        Some(IdOrName::Name(name)) => {
            let g = group.ok_or_else(|| {
                format!("unknown group {name:?}: the rootfs has no /etc/group; use a numeric GID")
            })?;
            let gid = group_entries(g)
                .find(|e| e.name == name)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    format!("unknown group {name:?}: no such entry in the rootfs's /etc/group")
                })?;
            (gid, Vec::new())
        }
        None => {
            let gid = entry.as_ref().map(|e| e.gid).unwrap_or(0);
            let mut extra = Vec::new();
            if let (Some(e), Some(g)) = (&entry, group) {
                for ge in group_entries(g) {
                    if ge.gid != gid && ge.members.contains(&e.name) && !extra.contains(&ge.gid) {
                        extra.push(ge.gid);
                    }
                }
            }
            (gid, extra)
        }
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// The rootfs's /etc/passwd and /etc/group, read inside that root (a
/// symlink there cannot point at the host's); `None` where missing.
pub fn read_db(rootfs: &Path) -> Result<(Option<String>, Option<String>)> {
    let root = crate::container_fs::ContainerRoot::at(rootfs)
        .map_err(|e| Error::Invalid(format!("open {}: {e}", rootfs.display())))?;
    Ok((
        root.read_small("/etc/passwd").ok(),
        root.read_small("/etc/group").ok(),
    ))
}

/// The user `spec` in the root filesystem at `rootfs`.
pub fn resolve_in(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let (passwd, group) = read_db(rootfs)?;
    let parsed = parse_user(spec).map_err(|e| Error::Invalid(format!("user {spec:?}: {e}")))?;
    resolve_user(&parsed, passwd.as_deref(), group.as_deref())
        .map_err(|e| Error::Invalid(format!("user {spec:?}: {e}")))
}

/// (uid, gid) for `spec` in the root filesystem at `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<(u32, u32)> {
    resolve_in(rootfs, spec).map(|u| (u.uid, u.gid))
}

/// (uid, gid) for `spec` given the text of passwd and group.
pub fn lookup(passwd: &str, group: &str, spec: &str) -> Result<(u32, u32), String> {
    let parsed = parse_user(spec)?;
    resolve_user(&parsed, Some(passwd), Some(group)).map(|u| (u.uid, u.gid))
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
        std::fs::write(
            tmp.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:\nclass:x:60:student\n",
        )
        .unwrap();
        let r = |s| resolve(tmp.path(), s);
        assert_eq!(r("student").unwrap(), (1000, 1001));
        assert_eq!(r("1000").unwrap(), (1000, 1001));
        assert_eq!(r("42").unwrap(), (42, 0));
        assert_eq!(r("student:staff").unwrap(), (1000, 50));
        assert_eq!(r("0:7").unwrap(), (0, 7));
        assert!(r("nobody").is_err());
        assert!(r("root:nogroup").is_err());
        assert!(r("").is_err());
        let u = resolve_in(tmp.path(), "student").unwrap();
        assert_eq!(u.additional_gids, vec![60]);
        assert_eq!(u.home.as_deref(), Some("/home"));
    }
}
