//! Docker's storage syntax into [`MountRequest`]s: `-v`
//! (`HostConfig.Binds`), `--mount` (`HostConfig.Mounts`), `--tmpfs`
//! (`HostConfig.Tmpfs`) and the anonymous volumes of `Config.Volumes`,
//! validated with Docker's messages. The types, and the image's own
//! volumes ([`add_anonymous`]), are the engine's (`config/storage.rs`).

use crate::config::storage::{
    add_anonymous, bad, clean, config_err, destination, Kind, MountRequest,
};
use crate::config::{ConfigError, ConfigResult};
use bollard_stubs::models::{HostConfig, Mount, MountTypeEnum};

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `-v [SRC:]DST[:MODE]` as Docker's Linux parser reads it.
pub fn parse_bind(raw: &str) -> ConfigResult<MountRequest> {
    let invalid = || bad(format!("invalid volume specification: '{raw}'"));
    let arr: Vec<&str> = raw.splitn(4, ':').collect();
    if arr[0].is_empty() {
        return Err(invalid());
    }
    let valid_mode = |m: &str| parse_mode(m).is_some();
    let (source, target, mode) = match arr.as_slice() {
        [dst] => ("", *dst, ""),
        // `/dst:ro` is not a volume: anonymous volumes take no mode.
        [_, m] if valid_mode(m) && !m.is_empty() => return Err(invalid()),
        [src, dst] => (*src, *dst, ""),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => return Err(invalid()),
    };
    let m = parse_mode(mode).ok_or_else(|| bad(format!("invalid mode: {mode}")))?;
    let kind = if source.starts_with('/') {
        Kind::Bind
    } else {
        Kind::Volume
    };
    let dest = destination(kind.name(), target)?;
    let mut p = MountRequest::new(kind, dest);
    p.read_only = m.read_only;
    p.mode = mode.to_string();
    p.create_source = true;
    match kind {
        Kind::Bind => {
            if m.nocopy {
                return Err(config_err(
                    "bind",
                    "field VolumeOptions must not be specified",
                ));
            }
            p.source = clean(source);
            p.propagation = m.propagation;
        }
        _ => {
            if !m.propagation.is_empty() {
                return Err(config_err(
                    "volume",
                    "field BindOptions must not be specified",
                ));
            }
            p.source = source.to_string();
            p.nocopy = m.nocopy;
            if p.mode.is_empty() {
                p.mode = "z".into();
            }
        }
    }
    Ok(p)
}

struct Mode {
    read_only: bool,
    propagation: String,
    nocopy: bool,
}

/// Docker's mode rule: comma-separated, at most one each of rw|ro, z|Z,
/// a propagation, nocopy, and a (macOS) consistency.
fn parse_mode(mode: &str) -> Option<Mode> {
    let mut out = Mode {
        read_only: false,
        propagation: String::new(),
        nocopy: false,
    };
    if mode.is_empty() {
        return Some(out);
    }
    let mut counts = [0u8; 5];
    for o in mode.split(',') {
        let slot = match o {
            "rw" | "ro" => {
                out.read_only = o == "ro";
                0
            }
            "z" | "Z" => 1,
            p if PROPAGATIONS.contains(&p) => {
                out.propagation = p.to_string();
                2
            }
            "nocopy" => {
                out.nocopy = true;
                3
            }
            "consistent" | "cached" | "delegated" => 4,
            _ => return None,
        };
        counts[slot] += 1;
    }
    counts.iter().all(|&c| c <= 1).then_some(out)
}

/// One `--mount` (`HostConfig.Mounts` entry).
pub fn parse_mount(m: &Mount) -> ConfigResult<MountRequest> {
    let kind = match m.typ {
        Some(MountTypeEnum::BIND) => Kind::Bind,
        Some(MountTypeEnum::VOLUME) => Kind::Volume,
        Some(MountTypeEnum::TMPFS) => Kind::Tmpfs,
        Some(MountTypeEnum::IMAGE) => {
            return Err(ConfigError::Refused(
                "mounts of type \"image\" are not supported by cubby yet".into(),
            ))
        }
        other => {
            let t = other.map(|t| t.to_string()).unwrap_or_default();
            return Err(config_err(&t, "mount type unknown"));
        }
    };
    let k = kind.name();
    let dest = destination(k, m.target.as_deref().unwrap_or(""))?;
    let extra = |field: &str| config_err(k, format!("field {field} must not be specified"));
    let source = m.source.clone().unwrap_or_default();
    let mut p = MountRequest::new(kind, dest);
    p.read_only = m.read_only.unwrap_or(false);
    match kind {
        Kind::Bind => {
            if m.volume_options.is_some() {
                return Err(extra("VolumeOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra("TmpfsOptions"));
            }
            if source.is_empty() {
                return Err(config_err(k, "field Source must not be empty"));
            }
            if !source.starts_with('/') {
                return Err(config_err(
                    k,
                    format!("invalid mount path: '{source}' mount path must be absolute"),
                ));
            }
            p.source = clean(&source);
            if let Some(b) = &m.bind_options {
                p.propagation = b.propagation.map(|x| x.to_string()).unwrap_or_default();
                p.recursive = !b.non_recursive.unwrap_or(false);
                p.create_source = b.create_mountpoint.unwrap_or(false);
                if b.read_only_force_recursive.unwrap_or(false) {
                    return Err(ConfigError::Refused(
                        "recursive read-only bind mounts are not supported by cubby yet".into(),
                    ));
                }
            }
        }
        Kind::Volume => {
            if m.bind_options.is_some() {
                return Err(extra("BindOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra("TmpfsOptions"));
            }
            if source.is_empty() && p.read_only {
                return Err(config_err(
                    k,
                    "must not set ReadOnly mode when using anonymous volumes",
                ));
            }
            p.source = source;
            if let Some(v) = &m.volume_options {
                p.nocopy = v.no_copy.unwrap_or(false);
                p.labels = v.labels.clone().unwrap_or_default().into_iter().collect();
                p.subpath = v.subpath.clone().unwrap_or_default();
                if let Some(dc) = &v.driver_config {
                    match dc.name.as_deref() {
                        None | Some("" | "local") => {}
                        Some(other) => {
                            return Err(ConfigError::NotFound(format!(
                            "error looking up volume plugin {other}: plugin \"{other}\" not found"
                        )))
                        }
                    }
                    if dc.options.as_ref().is_some_and(|o| !o.is_empty()) {
                        return Err(ConfigError::Refused(
                            "volume driver options are not supported by cubby yet".into(),
                        ));
                    }
                }
                if !p.subpath.is_empty()
                    && (p.subpath.starts_with('/') || p.subpath.split('/').any(|c| c == ".."))
                {
                    return Err(config_err(
                        k,
                        format!(
                            "subpath {:?} must be relative and stay inside the volume",
                            p.subpath
                        ),
                    ));
                }
            }
        }
        Kind::Tmpfs => {
            if !source.is_empty() {
                return Err(extra("Source"));
            }
            if m.bind_options.is_some() {
                return Err(extra("BindOptions"));
            }
            if m.volume_options.is_some() {
                return Err(extra("VolumeOptions"));
            }
            let mut opts = Vec::new();
            if let Some(t) = &m.tmpfs_options {
                if let Some(size) = t.size_bytes.filter(|s| *s != 0) {
                    if size < 0 {
                        return Err(config_err(k, format!("invalid tmpfs size {size}")));
                    }
                    opts.push(format!("size={}", size_with_suffix(size)));
                }
                if let Some(mode) = t.mode.filter(|m| *m != 0) {
                    opts.push(format!("mode={mode:o}"));
                }
                for o in t.options.iter().flatten() {
                    match o.as_slice() {
                        [flag] => opts.push(flag.clone()),
                        [key, value] => opts.push(format!("{key}={value}")),
                        _ => return Err(config_err(k, format!("invalid tmpfs option {o:?}"))),
                    }
                }
            }
            if p.read_only {
                opts.push("ro".into());
            }
            check_tmpfs_options(&opts)?;
            p.tmpfs = opts;
        }
    }
    Ok(p)
}

/// Docker writes a tmpfs size with the largest unit that divides it.
fn size_with_suffix(size: i64) -> String {
    for (suffix, div) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if size % div == 0 {
            return format!("{}{suffix}", size / div);
        }
    }
    size.to_string()
}

fn check_tmpfs_options(opts: &[String]) -> ConfigResult<()> {
    const FLAGS: [&str; 20] = [
        "ro",
        "rw",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "sync",
        "async",
        "dirsync",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "tmpcopyup",
    ];
    const KEYS: [&str; 8] = [
        "size",
        "mode",
        "uid",
        "gid",
        "nr_inodes",
        "nr_blocks",
        "mpol",
        "huge",
    ];
    for o in opts {
        let ok = match o.split_once('=') {
            Some((k, v)) => KEYS.contains(&k) && !v.is_empty(),
            None => FLAGS.contains(&o.as_str()),
        };
        if !ok {
            return Err(bad(format!("invalid tmpfs option {o:?}")));
        }
    }
    Ok(())
}

/// One `--tmpfs DST[:OPTIONS]` (`HostConfig.Tmpfs` entry).
pub fn parse_tmpfs(dest: &str, data: &str) -> ConfigResult<MountRequest> {
    let dest = destination("tmpfs", dest)?;
    let opts: Vec<String> = data
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    check_tmpfs_options(&opts)?;
    let mut p = MountRequest::new(Kind::Tmpfs, dest);
    p.read_only = opts
        .iter()
        .rev()
        .find(|o| *o == "ro" || *o == "rw")
        .is_some_and(|o| o == "ro");
    p.tmpfs = opts;
    p.listed = false;
    Ok(p)
}

/// Every mount of a container, in Docker's precedence: binds and mounts
/// (a destination twice is an error), tmpfs (likewise), then anonymous
/// volumes for `Config.Volumes` not covered yet.
pub fn plan(host: &HostConfig, config_volumes: &[String]) -> ConfigResult<Vec<MountRequest>> {
    if host.volumes_from.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ConfigError::Refused(
            "--volumes-from is not supported by cubby yet".into(),
        ));
    }
    match host.volume_driver.as_deref() {
        None | Some("" | "local") => {}
        Some(other) => {
            return Err(ConfigError::NotFound(format!(
                "error looking up volume plugin {other}: plugin \"{other}\" not found"
            )))
        }
    }
    let mut out: Vec<MountRequest> = Vec::new();
    let push = |p: MountRequest, out: &mut Vec<MountRequest>| {
        if out.iter().any(|o| o.dest == p.dest) {
            return Err(bad(format!("Duplicate mount point: {}", p.dest)));
        }
        out.push(p);
        Ok(())
    };
    for raw in host.binds.iter().flatten() {
        push(parse_bind(raw)?, &mut out)?;
    }
    for m in host.mounts.iter().flatten() {
        push(parse_mount(m)?, &mut out)?;
    }
    let mut tmpfs: Vec<(&String, &String)> = host.tmpfs.iter().flatten().collect();
    tmpfs.sort();
    for (dest, data) in tmpfs {
        push(parse_tmpfs(dest, data)?, &mut out)?;
    }
    // The docker CLI leaves some `-v SRC:DST` in Config.Volumes (seen when
    // two -v share a destination): those are read as -v.
    for raw in config_volumes.iter().filter(|v| v.contains(':')) {
        push(parse_bind(raw)?, &mut out)?;
    }
    let anonymous: Vec<String> = config_volumes
        .iter()
        .filter(|v| !v.contains(':'))
        .cloned()
        .collect();
    add_anonymous(&mut out, &anonymous)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::{MountBindOptions, MountTmpfsOptions, MountVolumeOptions};

    fn msg(r: ConfigResult<MountRequest>) -> String {
        match r.unwrap_err() {
            ConfigError::Invalid(m) => m,
            e => panic!("not an invalid argument: {e:?}"),
        }
    }

    #[test]
    fn binds() {
        let p = parse_bind("/host/dir/:/mnt/").unwrap();
        assert_eq!(
            (p.kind, p.source.as_str(), p.dest.as_str()),
            (Kind::Bind, "/host/dir", "/mnt")
        );
        assert!(!p.read_only && p.create_source);
        let p = parse_bind("/h:/m:ro,rslave").unwrap();
        assert!(p.read_only);
        assert_eq!(
            (p.propagation.as_str(), p.mode.as_str()),
            ("rslave", "ro,rslave")
        );
        let p = parse_bind("data:/data:nocopy").unwrap();
        assert_eq!((p.kind, p.source.as_str()), (Kind::Volume, "data"));
        assert!(p.nocopy && !p.read_only);
        let p = parse_bind("/only/dest").unwrap();
        assert_eq!((p.kind, p.source.as_str()), (Kind::Volume, ""));
        assert_eq!(parse_bind("v:/x").unwrap().mode, "z");

        assert_eq!(
            msg(parse_bind("/x:ro")),
            "invalid volume specification: '/x:ro'"
        );
        assert_eq!(
            msg(parse_bind(":/x")),
            "invalid volume specification: ':/x'"
        );
        assert_eq!(
            msg(parse_bind("a:b:c:d")),
            "invalid volume specification: 'a:b:c:d'"
        );
        assert_eq!(msg(parse_bind("/h:/m:rw,ro")), "invalid mode: rw,ro");
        assert_eq!(msg(parse_bind("/h:/m:bogus")), "invalid mode: bogus");
        assert_eq!(
            msg(parse_bind("/h:rel")),
            "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"
        );
        assert_eq!(
            msg(parse_bind("/h:/")),
            "invalid specification: destination can't be '/'"
        );
        assert!(msg(parse_bind("/h:/m:nocopy")).contains("VolumeOptions"));
        assert!(msg(parse_bind("v:/m:rshared")).contains("BindOptions"));
    }

    #[test]
    fn mounts() {
        let m = |t: MountTypeEnum, src: &str, dst: &str| Mount {
            typ: Some(t),
            source: Some(src.into()),
            target: Some(dst.into()),
            ..Default::default()
        };
        let mut b = m(MountTypeEnum::BIND, "/h", "/m");
        b.read_only = Some(true);
        b.bind_options = Some(MountBindOptions {
            propagation: Some(bollard_stubs::models::MountBindOptionsPropagationEnum::RSLAVE),
            ..Default::default()
        });
        let p = parse_mount(&b).unwrap();
        assert!(p.read_only && !p.create_source);
        assert_eq!(p.propagation, "rslave");
        assert!(msg(parse_mount(&m(MountTypeEnum::BIND, "", "/m")))
            .contains("field Source must not be empty"));
        assert!(msg(parse_mount(&m(MountTypeEnum::BIND, "rel", "/m"))).contains("must be absolute"));

        let mut v = m(MountTypeEnum::VOLUME, "data", "/d");
        v.volume_options = Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some([("a".to_string(), "1".to_string())].into()),
            ..Default::default()
        });
        let p = parse_mount(&v).unwrap();
        assert!(p.nocopy && p.labels["a"] == "1");
        let mut anon_ro = m(MountTypeEnum::VOLUME, "", "/d");
        anon_ro.read_only = Some(true);
        assert!(msg(parse_mount(&anon_ro)).contains("anonymous volumes"));

        let mut t = m(MountTypeEnum::TMPFS, "", "/t");
        t.tmpfs_options = Some(MountTmpfsOptions {
            size_bytes: Some(64 << 20),
            mode: Some(0o1777),
            ..Default::default()
        });
        let p = parse_mount(&t).unwrap();
        assert_eq!(p.tmpfs, ["size=64m", "mode=1777"]);
        assert!(p.listed);
        assert!(msg(parse_mount(&m(MountTypeEnum::TMPFS, "x", "/t")))
            .contains("field Source must not be specified"));
        assert_eq!(
            msg(parse_mount(&m(MountTypeEnum::EMPTY, "", "/t"))),
            "invalid mount config for type \"\": mount type unknown"
        );
        assert_eq!(size_with_suffix(1000), "1000");
        assert_eq!(size_with_suffix(3 << 30), "3g");
    }

    #[test]
    fn tmpfs_and_plans() {
        let p = parse_tmpfs("/run", "size=64m,mode=1777").unwrap();
        assert_eq!(p.tmpfs, ["size=64m", "mode=1777"]);
        assert!(!p.listed && !p.read_only);
        assert!(parse_tmpfs("/run", "ro").unwrap().read_only);
        assert_eq!(
            msg(parse_tmpfs("/run", "bogus")),
            "invalid tmpfs option \"bogus\""
        );
        assert!(msg(parse_tmpfs("run", "")).contains("must be absolute"));

        let host = HostConfig {
            binds: Some(vec!["/h:/data".into(), "v:/v".into()]),
            tmpfs: Some([("/t".to_string(), String::new())].into()),
            ..Default::default()
        };
        let mut planned = plan(&host, &["/data/".into()]).unwrap();
        add_anonymous(&mut planned, &["/img".into(), "/v".into()]).unwrap();
        let dests: Vec<&str> = planned.iter().map(|p| p.dest.as_str()).collect();
        // Image and config volumes already covered by a mount are skipped.
        assert_eq!(dests, ["/data", "/v", "/t", "/img"]);
        assert_eq!(planned[3].source, "");

        // `-v SRC:DST` strings the CLI left in Config.Volumes are -v.
        let dup = HostConfig {
            binds: Some(vec!["/h:/d".into()]),
            ..Default::default()
        };
        assert_eq!(
            plan(&dup, &["v:/d".into()]).unwrap_err().to_string(),
            "Duplicate mount point: /d"
        );
        let planned = plan(&HostConfig::default(), &["v:/d".into()]).unwrap();
        assert_eq!(
            (planned[0].source.as_str(), planned[0].dest.as_str()),
            ("v", "/d")
        );

        let dup = HostConfig {
            binds: Some(vec!["/h:/data".into()]),
            tmpfs: Some([("/data".to_string(), String::new())].into()),
            ..Default::default()
        };
        assert_eq!(
            msg(plan(&dup, &[]).map(|_| MountRequest::new(Kind::Bind, String::new()))),
            "Duplicate mount point: /data"
        );
        let nfs = HostConfig {
            volume_driver: Some("nfs".into()),
            ..Default::default()
        };
        assert!(matches!(
            plan(&nfs, &[]).unwrap_err(),
            ConfigError::NotFound(_)
        ));
        assert_eq!(clean("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(clean("/.."), "/");
    }
}
