//! Seccomp profiles as users write them: Docker's JSON format (what
//! `docker run --security-opt seccomp=FILE` sends) or the OCI
//! `linux.seccomp` object. Docker's extras are applied, not ignored:
//! `name` (one syscall), `archMap` (the host's architecture and its
//! sub-architectures) and rule conditions on the architecture; rules
//! conditional on capabilities or a kernel version are refused, since
//! dropping or keeping them silently would change the filter.

use super::Security;
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Map, Value};

/// Docker's name of this machine's seccomp architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        "x86" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        "powerpc64" => "SCMP_ARCH_PPC64LE",
        other => other,
    }
}

/// Docker's short architecture names in conditions (`amd64`, `arm64`).
fn host_go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether the condition object (`includes`/`excludes`) matches here;
/// `Err` for conditions cubby cannot evaluate.
fn condition(c: &Value, what: &str) -> Result<bool, String> {
    let Some(obj) = c.as_object() else {
        return Ok(false);
    };
    let mut any = false;
    for (k, v) in obj {
        match k.as_str() {
            "arches" => {
                let list: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                if list.is_empty() {
                    continue;
                }
                any = true;
                if !list.contains(&host_go_arch()) {
                    return Ok(false);
                }
            }
            "caps" | "minKernel" if v.is_null() || v.as_array().is_some_and(|a| a.is_empty()) => {
            }
            _ => {
                return Err(format!(
                    "a rule's {what}.{k} condition is not supported by cubby; expand the profile for this host (remove the condition)"
                ))
            }
        }
    }
    Ok(any || obj.is_empty())
}

/// Parses a profile in Docker's or the OCI format.
pub fn parse_profile(text: &str, _sec: &Security) -> Result<LinuxSeccomp, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not a JSON profile: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("the profile is not a JSON object".into());
    };
    if !obj.contains_key("defaultAction") {
        return Err("the profile has no defaultAction".into());
    }
    if let Some(map) = obj.remove("archMap") {
        if !obj.contains_key("architectures") {
            let mut arches = Vec::new();
            for entry in map.as_array().into_iter().flatten() {
                if entry["architecture"].as_str() == Some(host_arch()) {
                    arches.push(entry["architecture"].clone());
                    arches.extend(
                        entry["subArchitectures"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
            obj.insert("architectures".into(), Value::Array(arches));
        }
    }
    if let Some(rules) = obj.remove("syscalls") {
        let mut out = Vec::new();
        for rule in rules.as_array().cloned().unwrap_or_default() {
            let Value::Object(mut r) = rule else {
                return Err("a syscalls entry is not an object".into());
            };
            r.remove("comment");
            let include = match r.remove("includes") {
                Some(c) if !c.is_null() && c.as_object().is_some_and(|o| !o.is_empty()) => {
                    condition(&c, "includes")?
                }
                _ => true,
            };
            let exclude = match r.remove("excludes") {
                Some(c) if !c.is_null() && c.as_object().is_some_and(|o| !o.is_empty()) => {
                    condition(&c, "excludes")?
                }
                _ => false,
            };
            if !include || exclude {
                continue;
            }
            if let Some(name) = r.remove("name") {
                let mut names = r
                    .remove("names")
                    .and_then(|n| n.as_array().cloned())
                    .unwrap_or_default();
                names.push(name);
                r.insert("names".into(), Value::Array(names));
            }
            out.push(Value::Object(r));
        }
        obj.insert("syscalls".into(), Value::Array(out));
    }
    let known = [
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
        "syscalls",
    ];
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    if let Some(k) = unknown.first() {
        return Err(format!("unknown profile field {k:?}"));
    }
    serde_json::from_value(Value::Object(Map::from_iter(obj)))
        .map_err(|e| format!("invalid profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_format() {
        let sec = Security::default();
        let p = parse_profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
                "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]},
                           {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","comment":"x"},
                            {"name":"getpid","action":"SCMP_ACT_ALLOW"},
                            {"names":["open"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}}]}"#,
            &sec,
        )
        .unwrap();
        let calls = p.syscalls().clone().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].names(), &vec!["getpid".to_string()]);
        assert!(
            p.architectures().as_ref().is_some_and(|a| a.len() == 2)
                || host_arch() != "SCMP_ARCH_X86_64"
        );
        assert!(parse_profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_PTRACE"]}}]}"#,
            &sec
        )
        .unwrap_err()
        .contains("includes.caps"));
        assert!(parse_profile("[]", &sec).is_err());
        assert!(parse_profile(r#"{"syscalls":[]}"#, &sec).is_err());
        assert!(parse_profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","bogus":1}"#, &sec).is_err());
    }
}
