//! Values whose syntax the CLI and the API share: capability names,
//! `--security-opt`, ulimit names, cpuset lists. One parser each.

use super::{ConfigError, ConfigResult, Seccomp, Security};
use oci_spec::runtime::{Capability, PosixRlimit, PosixRlimitType};

/// Capability names (`NET_ADMIN`, `CAP_NET_ADMIN`, any case) into
/// (`ALL` given, the named ones); `option` names the flag or field in errors.
pub fn capabilities(names: &[String], option: &str) -> ConfigResult<(bool, Vec<Capability>)> {
    let mut all = false;
    let mut out = Vec::new();
    for n in names {
        let t = n.trim();
        if t.eq_ignore_ascii_case("ALL") || t.eq_ignore_ascii_case("CAP_ALL") {
            all = true;
            continue;
        }
        match cubby_runtime::capabilities::parse(t) {
            Some(c) => out.push(c),
            None => {
                return Err(ConfigError::invalid(format!(
                    "invalid {option} {n:?}: unknown capability; use a name like NET_ADMIN or CAP_NET_ADMIN, or ALL"
                )))
            }
        }
    }
    Ok((all, out))
}

/// Sets the capability part of `sec` from add and drop lists.
pub fn apply_capabilities(
    sec: &mut Security,
    add: &[String],
    drop: &[String],
    add_option: &str,
    drop_option: &str,
) -> ConfigResult<()> {
    let (add_all, adds) = capabilities(add, add_option)?;
    let (drop_all, drops) = capabilities(drop, drop_option)?;
    sec.cap_add_all = add_all;
    sec.cap_add = adds;
    sec.cap_drop_all = drop_all;
    sec.cap_drop = drops;
    Ok(())
}

/// A `--security-opt` value into `sec`. `seccomp=` takes `unconfined` or
/// a profile: inline JSON (as the docker CLI sends a file's content), or
/// for the CLI a file that `read` loads. Docker's and the OCI profile
/// formats are both accepted ([`super::seccomp`]). `label`/`apparmor`
/// (SELinux, AppArmor) are refused: cubby has neither.
pub fn security_opt(
    sec: &mut Security,
    s: &str,
    option: &str,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> ConfigResult<()> {
    let (key, value) = match s.split_once(['=', ':']) {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    let shown: String = s.chars().take(60).collect();
    match (key, value) {
        ("seccomp", Some("unconfined")) => sec.seccomp = Seccomp::Unconfined,
        ("seccomp", Some(v)) if !v.trim().is_empty() => {
            let (text, source) = if v.trim_start().starts_with('{') {
                (v.to_string(), "seccomp".to_string())
            } else {
                let text = read(v).map_err(|e| {
                    ConfigError::invalid(format!("{option} seccomp={v}: cannot read: {e}"))
                })?;
                (text, format!("seccomp={v}"))
            };
            let profile = super::seccomp::parse_profile(&text, sec)
                .map_err(|e| ConfigError::invalid(format!("{option} {source}: {e}")))?;
            sec.seccomp = Seccomp::Profile(Box::new(profile));
        }
        ("no-new-privileges", None) => sec.no_new_privileges = true,
        ("no-new-privileges", Some("true")) => sec.no_new_privileges = true,
        ("no-new-privileges", Some("false")) => sec.no_new_privileges = false,
        ("no-new-privileges", Some(_)) => {
            return Err(ConfigError::invalid(format!(
                "invalid {option} {shown:?}: no-new-privileges takes true or false"
            )))
        }
        ("label" | "apparmor", _) => {
            return Err(ConfigError::unsupported_because(
                format!("{option} {shown}"),
                "this host runs containers without SELinux labels or AppArmor profiles",
            ))
        }
        _ => {
            return Err(ConfigError::invalid(format!(
                "unsupported {option} {shown:?}: use seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges[=true|false]"
            )))
        }
    }
    Ok(())
}

const ULIMITS: &[(&str, PosixRlimitType)] = &[
    ("as", PosixRlimitType::RlimitAs),
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// A ulimit by Docker's name (`nofile`); a negative value is unlimited.
pub fn ulimit(name: &str, soft: i64, hard: i64, option: &str) -> ConfigResult<PosixRlimit> {
    let typ = ULIMITS
        .iter()
        .find(|(n, _)| *n == name.trim().to_ascii_lowercase())
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = ULIMITS.iter().map(|(n, _)| *n).collect();
            ConfigError::invalid(format!(
                "invalid {option} {name:?}: unknown limit; known: {}",
                names.join(", ")
            ))
        })?;
    let v = |x: i64| if x < 0 { u64::MAX } else { x as u64 };
    let (soft, hard) = (v(soft), v(hard));
    if soft > hard {
        return Err(ConfigError::invalid(format!(
            "invalid {option} {name}: the soft limit {soft} is above the hard limit {hard}"
        )));
    }
    Ok(cubby_runtime::spec::rlimit(typ, soft, hard))
}

/// Checks a cpuset list (`0-3,6`) for `option` (cpus or memory nodes).
pub fn cpuset(s: &str, option: &str) -> ConfigResult<String> {
    let bad =
        |why: &str| ConfigError::invalid(format!("invalid {option} {s:?}: {why}; e.g. 0-3 or 0,2"));
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty list"));
    }
    let num = |x: &str| -> ConfigResult<u32> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("{x:?} is not a number")));
        }
        x.parse::<u32>()
            .ok()
            .filter(|n| *n < 8192)
            .ok_or_else(|| bad(&format!("{x} is too large")))
    };
    for item in t.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                if num(a)? > num(b)? {
                    return Err(bad(&format!("range {item} is backwards")));
                }
            }
            None => {
                num(item)?;
            }
        }
    }
    Ok(t.to_string())
}

/// Docker's `RAMInBytes`: a number with an optional unit (b, k, m, g, t,
/// p, with or without a trailing `b`/`ib`), powers of 1024; `-1` passes.
pub fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    if s == "-1" {
        return Some(-1);
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num: f64 = num.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let v = num * (1u64 << shift) as f64;
    (v.is_finite() && v < i64::MAX as f64).then_some(v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_read(p: &str) -> Result<String, String> {
        Err(format!("no file {p}"))
    }

    #[test]
    fn caps_and_security_opts() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (all, c) =
            capabilities(&s(&["cap_net_admin", "SYS_TIME", "all"]), "--cap-add").unwrap();
        assert!(all);
        assert_eq!(c, vec![Capability::NetAdmin, Capability::SysTime]);
        assert!(capabilities(&s(&["NOPE"]), "--cap-add")
            .unwrap_err()
            .to_string()
            .contains("--cap-add \"NOPE\""));
        let mut sec = Security::default();
        security_opt(
            &mut sec,
            "no-new-privileges=false",
            "--security-opt",
            &no_read,
        )
        .unwrap();
        assert!(!sec.no_new_privileges);
        security_opt(&mut sec, "no-new-privileges", "--security-opt", &no_read).unwrap();
        assert!(sec.no_new_privileges);
        security_opt(&mut sec, "seccomp=unconfined", "--security-opt", &no_read).unwrap();
        assert_eq!(sec.seccomp, Seccomp::Unconfined);
        security_opt(
            &mut sec,
            r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#,
            "HostConfig.SecurityOpt",
            &no_read,
        )
        .unwrap();
        assert!(matches!(sec.seccomp, Seccomp::Profile(_)));
        let e = security_opt(
            &mut sec,
            "label=disable",
            "HostConfig.SecurityOpt",
            &no_read,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("HostConfig.SecurityOpt label=disable"));
        assert!(security_opt(&mut sec, "apparmor=x", "o", &no_read).is_err());
        assert!(security_opt(&mut sec, "no-new-privileges=maybe", "o", &no_read).is_err());
        assert!(security_opt(&mut sec, "seccomp=/nope.json", "o", &no_read)
            .unwrap_err()
            .to_string()
            .contains("no file /nope.json"));
    }

    #[test]
    fn ulimits_and_cpusets() {
        let r = ulimit("nofile", 1024, 2048, "--ulimit").unwrap();
        assert_eq!(
            (r.typ(), r.soft(), r.hard()),
            (PosixRlimitType::RlimitNofile, 1024, 2048)
        );
        assert_eq!(ulimit("core", -1, -1, "x").unwrap().hard(), u64::MAX);
        assert!(ulimit("bogus", 1, 1, "x").is_err());
        assert!(ulimit("nofile", 10, 5, "x").is_err());
        assert_eq!(cpuset(" 0-1,3 ", "--cpuset-cpus").unwrap(), "0-1,3");
        for bad in ["", "a", "3-1", "1,,2", "99999"] {
            assert!(cpuset(bad, "--cpuset-cpus").is_err(), "{bad}");
        }
    }
}
