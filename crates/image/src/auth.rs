//! Registry credentials in Docker's `config.json`.
//!
//! The file is `$CUBBY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`. Credentials live in `auths[KEY].auth` (base64 of
//! `user:password`) or `auths[KEY].username`/`.password`; `KEY` is
//! `https://index.docker.io/v1/` for Docker Hub and `host[:port]` (possibly
//! with a scheme and path) for other registries. Every other key of the file
//! is preserved when cubby writes it. Credential helpers (`credsStore`,
//! `credHelpers`) are not supported.

use crate::error::{ImageError, Result};
use crate::reference::DOCKER_HUB;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The key Docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` header value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A Docker-format `config.json` holding registry credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFile {
    path: PathBuf,
}

impl AuthFile {
    /// `$CUBBY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json` (home from the password database when
    /// `HOME` is unset).
    pub fn default_location() -> AuthFile {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(p) = env("CUBBY_AUTH_FILE") {
            return AuthFile::at(p);
        }
        if let Some(dir) = env("DOCKER_CONFIG") {
            return AuthFile::at(PathBuf::from(dir).join("config.json"));
        }
        let home = env("HOME").map(PathBuf::from).or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        });
        let home = home.unwrap_or_else(|| PathBuf::from("/root"));
        AuthFile::at(home.join(".docker").join("config.json"))
    }

    pub fn at(path: impl Into<PathBuf>) -> AuthFile {
        AuthFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials stored for `registry` (`docker.io`, `host:port` ...),
    /// `None` when there are none (or no file). A credential helper configured
    /// for the registry, with no inline credentials, is an
    /// [`ImageError::Unsupported`] naming it.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let Some(root) = self.load()? else {
            return Ok(None);
        };
        let registry = normalize_key(registry);
        if let Some(helper) = cred_helper(&root, &registry) {
            return Err(self.helper_error(&registry, &helper));
        }
        if let Some(auths) = root.get("auths").and_then(Value::as_object) {
            for (key, entry) in auths {
                if normalize_key(key) != registry {
                    continue;
                }
                if let Some(creds) = self.entry_credentials(key, entry)? {
                    return Ok(Some(creds));
                }
            }
        }
        if let Some(store) = creds_store(&root) {
            return Err(self.helper_error(&registry, &store));
        }
        Ok(None)
    }

    /// Records credentials for `registry` (as `docker login` does), replacing
    /// any entry for it and keeping everything else in the file.
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let mut root = self.load()?.unwrap_or_default();
        let registry = normalize_key(registry);
        if let Some(helper) = cred_helper(&root, &registry).or_else(|| creds_store(&root)) {
            return Err(self.helper_error(&registry, &helper));
        }
        let auths = auths_mut(&mut root, &self.path)?;
        auths.retain(|k, _| normalize_key(k) != registry);
        let raw = format!("{}:{}", creds.username, creds.password);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        );
        auths.insert(storage_key(&registry), Value::Object(entry));
        self.save(&root)
    }

    /// Removes the credentials for `registry`; `false` when there were none.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let Some(mut root) = self.load()? else {
            return Ok(false);
        };
        let registry = normalize_key(registry);
        let helper = cred_helper(&root, &registry).or_else(|| creds_store(&root));
        let removed = match root.get_mut("auths").and_then(Value::as_object_mut) {
            Some(auths) => {
                let before = auths.len();
                auths.retain(|k, _| normalize_key(k) != registry);
                before != auths.len()
            }
            None => false,
        };
        if !removed {
            if let Some(helper) = helper {
                return Err(self.helper_error(&registry, &helper));
            }
            return Ok(false);
        }
        self.save(&root)?;
        Ok(true)
    }

    fn helper_error(&self, registry: &str, helper: &str) -> ImageError {
        ImageError::Unsupported {
            what: format!("credential helper in {}", self.path.display()),
            value: format!(
                "docker-credential-{helper} (for {registry}); cubby reads only credentials \
                 stored in the file: point CUBBY_AUTH_FILE at another file and run `cubby login`"
            ),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Invalid {
            what: format!("credentials file {}", self.path.display()),
            reason: reason.into(),
        }
    }

    fn entry_credentials(&self, key: &str, entry: &Value) -> Result<Option<Credentials>> {
        let Some(entry) = entry.as_object() else {
            return Err(self.invalid(format!("auths[{key:?}] is not an object")));
        };
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(auth) = field("auth") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| self.invalid(format!("auths[{key:?}].auth is not base64")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| self.invalid(format!("auths[{key:?}].auth is not UTF-8")))?;
            let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                self.invalid(format!(
                    "auths[{key:?}].auth does not decode to user:password"
                ))
            })?;
            return Ok(Some(Credentials {
                username: user.to_string(),
                password: pass.to_string(),
            }));
        }
        match (field("username"), field("password")) {
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })),
            _ => Ok(None),
        }
    }

    /// The parsed file; `None` when it does not exist (or is empty).
    fn load(&self) -> Result<Option<Map<String, Value>>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io(&self.path, e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(self.invalid("not a JSON object")),
            Err(e) => Err(self.invalid(e.to_string())),
        }
    }

    /// Writes the file atomically, mode 0600 from the start (it holds
    /// passwords), its directory created 0700. A symlinked file is written
    /// through the link.
    fn save(&self, root: &Map<String, Value>) -> Result<()> {
        let mut data = serde_json::to_vec_pretty(root).map_err(|e| self.invalid(e.to_string()))?;
        data.push(b'\n');
        let target = match fs::canonicalize(&self.path) {
            Ok(p) => p,
            Err(_) => self.path.clone(),
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ImageError::io(&dir, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.json".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::io(&target, e)
        })
    }
}

fn auths_mut<'a>(
    root: &'a mut Map<String, Value>,
    path: &Path,
) -> Result<&'a mut Map<String, Value>> {
    let entry = root
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().ok_or_else(|| ImageError::Invalid {
        what: format!("credentials file {}", path.display()),
        reason: "\"auths\" is not an object".into(),
    })
}

fn cred_helper(root: &Map<String, Value>, registry: &str) -> Option<String> {
    let helpers = root.get("credHelpers")?.as_object()?;
    helpers.iter().find_map(|(k, v)| {
        (normalize_key(k) == registry)
            .then(|| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
            .flatten()
    })
}

fn creds_store(root: &Map<String, Value>) -> Option<String> {
    root.get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `https://index.docker.io/v1/`, `http://host:5000/v2/`, `HOST` ... to the
/// registry name a [`crate::reference::Reference`] carries (`docker.io`, `host:5000`).
pub fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | DOCKER_HUB => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// The key Docker writes for a registry.
fn storage_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn keys_normalise() {
        for (key, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("localhost:5000", "localhost:5000"),
            ("https://localhost:5000", "localhost:5000"),
            ("http://Ghcr.IO/v2/", "ghcr.io"),
        ] {
            assert_eq!(normalize_key(key), want, "{key}");
        }
    }

    #[test]
    fn reads_docker_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{
              "auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "https://ghcr.io": {"username": "gh", "password": "tok"},
                "quay.io": {},
                "bad.io": {"auth": "!!!"}
              },
              "credHelpers": {"gcr.io": "gcloud"},
              "psFormat": "table"
            }"#,
        )
        .unwrap();
        let f = AuthFile::at(&path);
        assert_eq!(f.get("docker.io").unwrap(), Some(creds("user", "pa:ss")));
        assert_eq!(f.get("ghcr.io").unwrap(), Some(creds("gh", "tok")));
        assert_eq!(f.get("quay.io").unwrap(), None);
        assert_eq!(f.get("localhost:5000").unwrap(), None);
        assert!(matches!(f.get("bad.io"), Err(ImageError::Invalid { .. })));
        let e = f.get("gcr.io").unwrap_err();
        assert!(matches!(e, ImageError::Unsupported { .. }));
        assert!(e.to_string().contains("docker-credential-gcloud"), "{e}");

        assert_eq!(
            AuthFile::at(dir.path().join("none.json"))
                .get("x.io")
                .unwrap(),
            None
        );
        fs::write(&path, "[1]").unwrap();
        assert!(matches!(f.get("x.io"), Err(ImageError::Invalid { .. })));
        fs::write(&path, "{broken").unwrap();
        assert!(matches!(f.get("x.io"), Err(ImageError::Invalid { .. })));
    }

    #[test]
    fn creds_store_applies_without_inline_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"auths": {"a.io": {"auth": "YTpi"}, "docker.io": {}}, "credsStore": "desktop"}"#,
        )
        .unwrap();
        let f = AuthFile::at(&path);
        assert_eq!(f.get("a.io").unwrap(), Some(creds("a", "b")));
        let e = f.get("docker.io").unwrap_err();
        assert!(e.to_string().contains("docker-credential-desktop"), "{e}");
        assert!(matches!(
            f.store("b.io", &creds("u", "p")),
            Err(ImageError::Unsupported { .. })
        ));
        assert!(f.erase("a.io").unwrap());
        assert!(matches!(
            f.erase("a.io"),
            Err(ImageError::Unsupported { .. })
        ));
    }

    #[test]
    fn store_and_erase_preserve_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/config.json");
        let f = AuthFile::at(&path);
        assert!(!f.erase("localhost:5000").unwrap());

        f.store("localhost:5000", &creds("u", "p")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(f.get("localhost:5000").unwrap(), Some(creds("u", "p")));

        // Other keys survive, and an existing entry under another spelling is replaced.
        let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["psFormat"] = Value::String("table".into());
        v["auths"]["https://index.docker.io/v1/"] =
            serde_json::json!({"auth": "b2xkOm9sZA==", "email": "x"});
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        f.store("docker.io", &creds("new", "pw")).unwrap();
        assert_eq!(f.get("docker.io").unwrap(), Some(creds("new", "pw")));
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert!(v["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
        assert_eq!(v["auths"].as_object().unwrap().len(), 2);

        assert!(f.erase("https://index.docker.io/v1/").unwrap());
        assert_eq!(f.get("docker.io").unwrap(), None);
        assert_eq!(f.get("localhost:5000").unwrap(), Some(creds("u", "p")));
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table");
        // No temporary file left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn debug_hides_password() {
        let s = format!("{:?}", creds("u", "secret"));
        assert!(!s.contains("secret"));
        assert_eq!(creds("user", "pass").basic_header(), "Basic dXNlcjpwYXNz");
    }
}
