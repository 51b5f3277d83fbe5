//! Image references, normalised as Docker does.
//!
//! `alpine` is `docker.io/library/alpine:latest`, `user/app:1` is
//! `docker.io/user/app:1`, and the first path component names a registry
//! when it contains a `.` or a `:` or is `localhost`
//! (`localhost:5000/ns/app@sha256:...`).

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The registry Docker Hub images live in, as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API answers on.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// "docker.io", "localhost:5000", "ghcr.io" ...
    pub registry: String,
    /// "library/alpine", "ns/name" ...
    pub repository: String,
    pub tag: Option<String>,
    /// "sha256:..." when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// `name`, `name:tag`, `name@sha256:...`, `host:port/ns/name:tag`;
    /// `docker.io` and `library/` implied, tag `latest` when neither tag nor digest.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |reason: String| ImageError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty reference".into()));
        }
        if s.trim() != s || s.chars().any(char::is_whitespace) {
            return Err(bad("contains whitespace".into()));
        }
        if is_64_hex(s) {
            return Err(bad(
                "a 64-digit hexadecimal string is an image id, not a repository name".into(),
            ));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                let parsed: Digest = digest.parse().map_err(|e| match e {
                    ImageError::Unsupported { value, .. } => bad(format!(
                        "unsupported digest algorithm {value:?} (only sha256)"
                    )),
                    _ => bad(format!(
                        "invalid digest {digest:?}: expected sha256: and 64 lowercase hex digits"
                    )),
                })?;
                (rest, Some(parsed.to_string()))
            }
            None => (s, None),
        };

        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|sl| colon > sl) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        if name.is_empty() {
            return Err(bad("empty repository name".into()));
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_registry(first).map_err(bad)?;
                (first.to_string(), path)
            }
            _ => (DOCKER_HUB.to_string(), name),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        check_repository(path).map_err(bad)?;
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad(format!(
                "repository name longer than {MAX_NAME_LEN} characters"
            )));
        }

        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The repository as `docker` shows it: `alpine`, `user/app`,
    /// `localhost:5000/x` (no tag or digest).
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix(OFFICIAL_PREFIX) {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short form `docker` prints: `alpine:3.18`, `user/app:1`,
    /// `localhost:5000/x:y`, with `@digest` when pinned.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        push_tag_digest(&mut s, self);
        s
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository with this tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to this digest (the tag is kept).
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The host (and port) serving the registry API: `registry-1.docker.io`
    /// for Docker Hub, the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// Whether the registry is on this machine (localhost, 127.0.0.0/8, ::1),
    /// where plain HTTP is allowed by default, as Docker does.
    pub fn is_local(&self) -> bool {
        is_local_registry(&self.registry)
    }
}

/// `registry-1.docker.io` for `docker.io` (and its aliases), the registry otherwise.
pub fn api_host(registry: &str) -> &str {
    match registry {
        DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB_API,
        other => other,
    }
}

/// Whether `registry` (`host`, `host:port`, `[v6]:port`) is a loopback host.
pub fn is_local_registry(registry: &str) -> bool {
    let host = host_of(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => v6 == Ipv6Addr::LOCALHOST,
        Err(_) => false,
    }
}

/// The host part of `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(end) => &registry[..=end],
            None => registry,
        }
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

fn push_tag_digest(s: &mut String, r: &Reference) {
    if let Some(tag) = &r.tag {
        s.push(':');
        s.push_str(tag);
    }
    if let Some(digest) = &r.digest {
        s.push('@');
        s.push_str(digest);
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_tag_digest(&mut s, self);
        f.write_str(&s)
    }
}

impl std::str::FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

/// Whether `tag` is a valid tag (`[\w][\w.-]{0,127}`).
pub fn is_valid_tag(tag: &str) -> bool {
    check_tag(tag).is_ok()
}

fn is_64_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `[\w][\w.-]{0,127}`
fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        None => Err("empty tag".into()),
        Some(_) if bytes.len() > MAX_TAG_LEN => {
            Err(format!("tag longer than {MAX_TAG_LEN} characters"))
        }
        Some(&first) if !word(first) => Err(format!(
            "invalid tag {tag:?}: must start with a letter, digit or '_'"
        )),
        Some(_) if !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') => Err(format!(
            "invalid tag {tag:?}: only letters, digits, '_', '.' and '-' allowed"
        )),
        Some(_) => Ok(()),
    }
}

/// Path components `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` separated by '/'.
fn check_repository(path: &str) -> std::result::Result<(), String> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    for component in path.split('/') {
        if !valid_component(component) {
            return Err(if component.is_empty() {
                "empty path component in repository name".into()
            } else {
                format!(
                    "invalid repository name component {component:?}: lowercase letters and \
                     digits, separated by '.', '_', '__' or dashes"
                )
            });
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run between alphanumerics: '.', '_', '__' or any dashes.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]` with host DNS labels or an IPv4 address, or `[v6][:port]`.
fn check_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = || format!("invalid registry host {registry:?}");
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        addr.parse::<Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port in registry {registry:?}"));
        }
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_and_normalises() {
        // input, registry, repository, tag, digest, familiar
        let d = D;
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            (
                "alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            (
                "alpine:3.18",
                "docker.io",
                "library/alpine",
                Some("3.18"),
                None,
                "alpine:3.18",
            ),
            (
                "user/app:1",
                "docker.io",
                "user/app",
                Some("1"),
                None,
                "user/app:1",
            ),
            (
                "docker.io/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            (
                "index.docker.io/library/alpine:edge",
                "docker.io",
                "library/alpine",
                Some("edge"),
                None,
                "alpine:edge",
            ),
            (
                "docker.io/library/a/b",
                "docker.io",
                "library/a/b",
                Some("latest"),
                None,
                "library/a/b:latest",
            ),
            (
                "localhost/app",
                "localhost",
                "app",
                Some("latest"),
                None,
                "localhost/app:latest",
            ),
            (
                "localhost:5000/x:y",
                "localhost:5000",
                "x",
                Some("y"),
                None,
                "localhost:5000/x:y",
            ),
            (
                "ghcr.io/o/r/deep:v1.2-rc_3",
                "ghcr.io",
                "o/r/deep",
                Some("v1.2-rc_3"),
                None,
                "ghcr.io/o/r/deep:v1.2-rc_3",
            ),
            (
                "127.0.0.1:5000/a__b/c--d/e.f",
                "127.0.0.1:5000",
                "a__b/c--d/e.f",
                Some("latest"),
                None,
                "127.0.0.1:5000/a__b/c--d/e.f:latest",
            ),
            (
                "[::1]:5000/app:t",
                "[::1]:5000",
                "app",
                Some("t"),
                None,
                "[::1]:5000/app:t",
            ),
            (
                "Registry.Example.com/app",
                "Registry.Example.com",
                "app",
                Some("latest"),
                None,
                "Registry.Example.com/app:latest",
            ),
        ];
        for &(input, registry, repository, tag, digest, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, registry, "{input}");
            assert_eq!(r.repository, repository, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            assert_eq!(
                Reference::parse(&r.to_string()).unwrap(),
                r,
                "{input} round trip"
            );
        }

        let r = Reference::parse(&format!("localhost:5000/ns/app@{d}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "ns/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d));
        assert_eq!(r.reference(), d);
        assert_eq!(r.to_string(), format!("localhost:5000/ns/app@{d}"));

        let r = Reference::parse(&format!("alpine:3.18@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("3.18"));
        assert_eq!(r.digest.as_deref(), Some(d));
        assert_eq!(r.reference(), d);
        assert_eq!(r.to_string(), format!("docker.io/library/alpine:3.18@{d}"));
        assert_eq!(r.familiar(), format!("alpine:3.18@{d}"));
    }

    #[test]
    fn display_and_helpers() {
        let r = Reference::parse("alpine:3.18").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3.18");
        assert_eq!(r.reference(), "3.18");
        assert_eq!(r.name(), "docker.io/library/alpine");
        assert_eq!(r.familiar_name(), "alpine");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_local());
        let t = r.with_tag("edge");
        assert_eq!(t.to_string(), "docker.io/library/alpine:edge");
        let d: Digest = D.parse().unwrap();
        let p = t.with_digest(&d);
        assert_eq!(p.reference(), D);
        assert_eq!(p.with_tag("x").digest, None);
        assert_eq!(
            Reference::parse("ghcr.io/a/b").unwrap().api_host(),
            "ghcr.io"
        );
    }

    #[test]
    fn locality() {
        for (registry, local) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("[::1]", true),
            ("128.0.0.1:5000", false),
            ("docker.io", false),
            ("localhost.example.com", false),
            ("[::2]:5000", false),
        ] {
            assert_eq!(is_local_registry(registry), local, "{registry}");
        }
    }

    #[test]
    fn rejects() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let long_name = format!("a/{}", "b".repeat(260));
        let hex64 = "a".repeat(64);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Alpine", "lowercase"),
            ("user/App:1", "lowercase"),
            ("alpine:", "empty tag"),
            ("alpine:.x", "must start"),
            ("alpine:a+b", "only letters"),
            (&long_tag, "tag longer"),
            (&long_name, "longer than 255"),
            ("alpine@sha256:abc", "invalid digest"),
            ("alpine@md5:abc", "unsupported digest"),
            ("alpine@", "invalid digest"),
            ("alpine@sha256:ZZ", "invalid digest"),
            ("a//b", "empty path"),
            ("/alpine", "empty path"),
            ("alpine/", "empty path"),
            ("-a", "component"),
            ("a-", "component"),
            ("a..b", "component"),
            ("a___b", "component"),
            ("a._b", "component"),
            ("localhost:port/x", "port"),
            ("bad_host.com/x", "registry host"),
            ("[::1/x", "registry host"),
            ("my image", "whitespace"),
            (" alpine", "whitespace"),
            (&hex64, "image id"),
            (":tag", "empty repository"),
            ("a@b@c", "invalid digest"),
        ];
        for &(input, want) in cases {
            match Reference::parse(input) {
                Err(e @ ImageError::InvalidReference { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(want), "{input:?}: {msg:?} lacks {want:?}");
                }
                other => panic!("{input:?}: expected InvalidReference, got {other:?}"),
            }
        }
    }
}
