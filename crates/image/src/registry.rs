//! Docker Registry HTTP API v2 / OCI distribution client.
//!
//! One [`Client`] serves every registry and may be shared between threads
//! (parallel layer downloads). Authentication follows the registry's
//! `WWW-Authenticate` challenge: `Bearer` fetches a token from the realm
//! (with basic credentials when `config.json` has some), cached per registry
//! and scope; `Basic` sends the credentials. Plain HTTP is used for local
//! registries (localhost, 127.0.0.0/8, ::1) and those listed as insecure,
//! HTTPS otherwise.

use crate::auth::{AuthFile, Credentials};
use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::reference::{api_host, is_local_registry, is_valid_tag, Reference};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{self, Method, Response};

/// Largest manifest accepted (Docker's limit too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest token or error response read.
const MAX_SMALL_BODY: u64 = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A read or write stalling this long fails the transfer.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const MEDIA_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// How the client is set up.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where credentials are read from.
    pub auth: AuthFile,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            auth: AuthFile::default_location(),
            insecure_registries: Vec::new(),
            user_agent: format!("cubby/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A manifest or index as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Exactly the bytes served (their digest is the manifest's digest).
    pub bytes: Vec<u8>,
    /// `application/vnd.oci.image.manifest.v1+json` ...
    pub media_type: String,
    pub digest: Digest,
}

impl Manifest {
    /// An index or manifest list (rather than a single-platform manifest).
    pub fn is_index(&self) -> bool {
        self.media_type == MEDIA_OCI_INDEX || self.media_type == MEDIA_DOCKER_LIST
    }
}

/// What a request needs the token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Pull,
    Push,
}

impl Access {
    fn actions(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        }
    }
}

/// A request body: bytes can be sent again after an auth challenge, a
/// stream cannot.
enum ReqBody<'a> {
    None,
    Bytes(&'a [u8]),
    Stream(&'a mut dyn Read, u64),
}

/// The registry client. `Send + Sync`.
pub struct Client {
    agent: ureq::Agent,
    opts: ClientOptions,
    /// (registry, scope) -> `Authorization` header value.
    authz: Mutex<HashMap<(String, String), String>>,
    /// Credentials given with a request (the API's `X-Registry-Auth`),
    /// used for their registry instead of the auth file's.
    given: Option<(String, Credentials)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("opts", &self.opts).finish()
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(STALL_TIMEOUT))
            .timeout_per_write(Some(STALL_TIMEOUT))
            .max_redirects(10)
            .user_agent(opts.user_agent.as_str())
            .accept_encoding("identity")
            .build()
            .new_agent();
        Client {
            agent,
            opts,
            authz: Mutex::new(HashMap::new()),
            given: None,
        }
    }

    /// Uses `creds` for `registry` rather than the auth file's.
    pub fn with_credentials(mut self, registry: &str, creds: Credentials) -> Client {
        self.given = Some((crate::auth::normalize_key(registry), creds));
        self
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// `http://host` or `https://host` for the registry's API.
    pub fn base_url(&self, registry: &str) -> String {
        let host = api_host(registry);
        let insecure = is_local_registry(registry)
            || self.opts.insecure_registries.iter().any(|i| {
                let i = i.trim_end_matches('/');
                let i = i
                    .strip_prefix("http://")
                    .or_else(|| i.strip_prefix("https://"))
                    .unwrap_or(i);
                i.eq_ignore_ascii_case(registry) || i.eq_ignore_ascii_case(host)
            });
        format!("{}://{host}", if insecure { "http" } else { "https" })
    }

    /// The manifest (or index) `reference` (a tag or a digest) of `r`'s
    /// repository, verified against the digest when one is asked for.
    pub fn get_manifest(&self, r: &Reference, reference: &str) -> Result<Manifest> {
        let what = manifest_what(r, reference);
        let wanted = wanted_digest(r, reference)?;
        let url = self.repo_url(r, &format!("manifests/{reference}"));
        let resp = self.send(
            r,
            Access::Pull,
            Method::GET,
            &url,
            &manifest_accept(),
            ReqBody::None,
        )?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.status_error(&r.registry, resp, &what, true));
        }
        let header_digest = header(&resp, "docker-content-digest");
        let content_type = header(&resp, "content-type");
        if let Some(len) = resp.body().content_length() {
            if len > MAX_MANIFEST_SIZE {
                return Err(too_big(&what));
            }
        }
        let bytes = read_capped(resp, MAX_MANIFEST_SIZE)
            .map_err(|e| self.read_error(&r.registry, &what, e))?
            .ok_or_else(|| too_big(&what))?;
        let media_type = detect_media_type(&what, content_type.as_deref(), &bytes)?;
        let digest = Digest::of(&bytes);
        if let Some(wanted) = wanted {
            if digest != wanted {
                return Err(ImageError::DigestMismatch {
                    what,
                    expected: wanted.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        if let Some(Ok(served)) = header_digest.as_deref().map(str::parse::<Digest>) {
            if served != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("{what} (Docker-Content-Digest)"),
                    expected: served.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The digest of manifest `reference`, `None` when the registry does not
    /// have it. One HEAD request (plus a GET when the registry does not send
    /// `Docker-Content-Digest`).
    pub fn head_manifest(&self, r: &Reference, reference: &str) -> Result<Option<Digest>> {
        let what = manifest_what(r, reference);
        wanted_digest(r, reference)?;
        let url = self.repo_url(r, &format!("manifests/{reference}"));
        let resp = self.send(
            r,
            Access::Pull,
            Method::HEAD,
            &url,
            &manifest_accept(),
            ReqBody::None,
        )?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.status_error(&r.registry, resp, &what, true)),
        }
        match header(&resp, "docker-content-digest").map(|d| d.parse::<Digest>()) {
            Some(Ok(d)) => Ok(Some(d)),
            _ => match self.get_manifest(r, reference) {
                Ok(m) => Ok(Some(m.digest)),
                Err(ImageError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// The blob as a stream (redirects followed) and its length when the
    /// server says. The caller verifies the digest (see [`HashingReader`]).
    pub fn get_blob(
        &self,
        r: &Reference,
        digest: &Digest,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
        let what = format!("blob {digest} of {}", r.familiar_name());
        let url = self.repo_url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, Access::Pull, Method::GET, &url, &[], ReqBody::None)?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(&r.registry, resp, &what, false));
        }
        let len = resp.body().content_length();
        let reader = resp.into_body().into_reader();
        Ok((Box::new(reader), len))
    }

    /// Whether the repository has the blob (asks with push access: this is
    /// what `push` uses to skip blobs already there).
    pub fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        let what = format!("blob {digest} of {}", r.familiar_name());
        let url = self.repo_url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, Access::Push, Method::HEAD, &url, &[], ReqBody::None)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&r.registry, resp, &what, false)),
        }
    }

    /// Uploads a blob in one piece (POST an upload, then PUT its location
    /// with `?digest=`). `reader` must yield exactly `size` bytes hashing to
    /// `digest`.
    pub fn push_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        reader: impl Read,
    ) -> Result<()> {
        let what = format!("upload of blob {digest} to {}", r.familiar_name());
        let start = self.repo_url(r, "blobs/uploads/");
        let resp = self.send(
            r,
            Access::Push,
            Method::POST,
            &start,
            &[],
            ReqBody::Bytes(&[]),
        )?;
        if resp.status().as_u16() != 202 {
            return Err(self.status_error(&r.registry, resp, &what, false));
        }
        let location = header(&resp, "location").ok_or_else(|| ImageError::Invalid {
            what: format!("registry {} answer to {what}", r.registry),
            reason: "no Location header".into(),
        })?;
        let mut url = resolve_location(&start, &location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&percent_encode(&digest.to_string()));

        let mut hashing = HashingReader::new(Exact {
            inner: reader.take(size),
            remaining: size,
        });
        let headers = [("content-type", "application/octet-stream".to_string())];
        let result = self.send(
            r,
            Access::Push,
            Method::PUT,
            &url,
            &headers,
            ReqBody::Stream(&mut hashing, size),
        );
        let sent = hashing.bytes_read();
        if sent < size {
            return Err(ImageError::SizeMismatch {
                what,
                expected: size,
                actual: sent,
            });
        }
        let resp = result?;
        let (actual, _) = hashing.digest();
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(self.status_error(&r.registry, resp, &what, false)),
        }
    }

    /// Stores a manifest under a tag (or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        r: &Reference,
        tag_or_digest: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let what = manifest_what(r, tag_or_digest);
        let digest = Digest::of(bytes);
        if let Some(wanted) = wanted_digest(r, tag_or_digest)? {
            if wanted != digest {
                return Err(ImageError::DigestMismatch {
                    what,
                    expected: wanted.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let url = self.repo_url(r, &format!("manifests/{tag_or_digest}"));
        let headers = [("content-type", media_type.to_string())];
        let resp = self.send(
            r,
            Access::Push,
            Method::PUT,
            &url,
            &headers,
            ReqBody::Bytes(bytes),
        )?;
        match resp.status().as_u16() {
            200..=204 => {}
            _ => {
                return Err(self.status_error(&r.registry, resp, &format!("push of {what}"), false))
            }
        }
        if let Some(Ok(served)) =
            header(&resp, "docker-content-digest").map(|d| d.parse::<Digest>())
        {
            if served != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("{what} (Docker-Content-Digest)"),
                    expected: digest.to_string(),
                    actual: served.to_string(),
                });
            }
        }
        Ok(digest)
    }

    /// Whether the registry accepts `creds` (for `cubby login`): `GET /v2/`,
    /// then the basic retry or a scope-less token request it asks for.
    pub fn check_credentials(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let url = format!("{}/v2/", self.base_url(registry));
        let what = format!("login to {registry}");
        let resp = self.execute(registry, Method::GET, &url, &[], None, &mut ReqBody::None)?;
        match resp.status().as_u16() {
            200 => return Ok(()),
            401 => {}
            _ => return Err(self.status_error(registry, resp, &what, false)),
        }
        let challenges = challenges_of(&resp);
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.fetch_token(registry, c, None, Some(creds))?;
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let basic = creds.basic_header();
            let resp = self.execute(
                registry,
                Method::GET,
                &url,
                &[],
                Some(&basic),
                &mut ReqBody::None,
            )?;
            return match resp.status().as_u16() {
                200 => Ok(()),
                s @ (401 | 403) => Err(unauthorized(registry, s)),
                _ => Err(self.status_error(registry, resp, &what, false)),
            };
        }
        Err(unsupported_challenge(registry, &challenges))
    }

    fn repo_url(&self, r: &Reference, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base_url(&r.registry), r.repository)
    }

    /// A request to `r`'s registry, authenticated as its challenge asks.
    fn send(
        &self,
        r: &Reference,
        access: Access,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        mut body: ReqBody<'_>,
    ) -> Result<Response<ureq::Body>> {
        let registry = &r.registry;
        let scope = format!("repository:{}:{}", r.repository, access.actions());
        // Credentials go only to the registry's own host (an upload
        // Location elsewhere gets none).
        let own_host = same_host(url, &self.base_url(registry));
        let cached = self
            .cached_authz(registry, &r.repository, access)
            .filter(|_| own_host);
        let resp = self.execute(
            registry,
            method.clone(),
            url,
            headers,
            cached.as_deref(),
            &mut body,
        )?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        if matches!(body, ReqBody::Stream(..)) || !own_host {
            // The stream is spent: nothing to retry with.
            return Err(unauthorized(registry, 401));
        }
        let challenges = challenges_of(&resp);
        drop(resp);
        let (creds, deferred) = self.credentials(registry)?;
        let fail = |status: u16, deferred: Option<ImageError>| match (creds.is_some(), deferred) {
            (false, Some(e)) => e,
            _ => unauthorized(registry, status),
        };
        let authz = if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            match self.fetch_token(registry, c, Some(&scope), creds.as_ref()) {
                Ok(token) => format!("Bearer {token}"),
                Err(ImageError::Unauthorized { status, .. }) => return Err(fail(status, deferred)),
                Err(e) => return Err(e),
            }
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            match &creds {
                Some(c) => c.basic_header(),
                None => return Err(fail(401, deferred)),
            }
        } else {
            return Err(unsupported_challenge(registry, &challenges));
        };
        self.authz
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((registry.clone(), scope), authz.clone());
        let resp = self.execute(registry, method, url, headers, Some(&authz), &mut body)?;
        match resp.status().as_u16() {
            401 => Err(fail(401, deferred)),
            _ => Ok(resp),
        }
    }

    fn cached_authz(&self, registry: &str, repository: &str, access: Access) -> Option<String> {
        let map = self.authz.lock().unwrap_or_else(|p| p.into_inner());
        let key = |a: Access| {
            (
                registry.to_string(),
                format!("repository:{repository}:{}", a.actions()),
            )
        };
        // A push token allows pulling too.
        let mut found = map.get(&key(access)).cloned();
        if found.is_none() && access == Access::Pull {
            found = map.get(&key(Access::Push)).cloned();
        }
        found
    }

    /// Credentials for `registry`, and the helper error to report should
    /// anonymous access be refused.
    fn credentials(&self, registry: &str) -> Result<(Option<Credentials>, Option<ImageError>)> {
        if let Some((r, c)) = &self.given {
            if *r == crate::auth::normalize_key(registry) {
                return Ok((Some(c.clone()), None));
            }
        }
        match self.opts.auth.get(registry) {
            Ok(c) => Ok((c, None)),
            Err(e @ ImageError::Unsupported { .. }) => Ok((None, Some(e))),
            Err(e) => Err(e),
        }
    }

    /// GET realm?service=..&scope=.. (basic auth when there are credentials).
    fn fetch_token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scope: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<String> {
        let realm = challenge.param("realm").unwrap_or("");
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(ImageError::Invalid {
                what: format!("authentication challenge from {registry}"),
                reason: format!("token realm {realm:?} is not an http(s) URL"),
            });
        }
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", percent_encode(service)));
        }
        if let Some(scope) = scope.or(challenge.param("scope")) {
            query.push(format!("scope={}", percent_encode(scope)));
        }
        let mut url = realm.to_string();
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
        let basic = creds.map(Credentials::basic_header);
        let what = format!("token for {registry}");
        let resp = self.execute(
            registry,
            Method::GET,
            &url,
            &[],
            basic.as_deref(),
            &mut ReqBody::None,
        )?;
        match resp.status().as_u16() {
            200 => {}
            s @ (401 | 403) => return Err(unauthorized(registry, s)),
            _ => return Err(self.status_error(registry, resp, &what, false)),
        }
        let invalid = |reason: String| ImageError::Invalid {
            what: format!("token response from {realm}"),
            reason,
        };
        let bytes = read_capped(resp, MAX_SMALL_BODY)
            .map_err(|e| self.read_error(registry, &what, e))?
            .ok_or_else(|| invalid("larger than 1 MiB".into()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        ["token", "access_token"]
            .iter()
            .find_map(|k| v.get(k).and_then(|t| t.as_str()).filter(|t| !t.is_empty()))
            .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .ok_or_else(|| invalid("no usable \"token\" or \"access_token\"".into()))
    }

    /// One HTTP exchange; transport failures become [`ImageError::Network`].
    fn execute(
        &self,
        registry: &str,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        authz: Option<&str>,
        body: &mut ReqBody<'_>,
    ) -> Result<Response<ureq::Body>> {
        let bad_request = |e: http::Error| ImageError::Invalid {
            what: format!("request to {registry}"),
            reason: format!("{url}: {e}"),
        };
        let mut builder = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, v.as_str());
        }
        if let Some(a) = authz {
            builder = builder.header("authorization", a);
        }
        let result = match body {
            ReqBody::None => builder
                .body(ureq::SendBody::none())
                .map_err(bad_request)
                .map(|req| self.agent.run(req)),
            ReqBody::Bytes(b) => builder
                .header("content-length", b.len().to_string())
                .body(*b)
                .map_err(bad_request)
                .map(|req| self.agent.run(req)),
            ReqBody::Stream(reader, len) => builder
                .header("content-length", len.to_string())
                .body(ureq::SendBody::from_reader(*reader))
                .map_err(bad_request)
                .map(|req| self.agent.run(req)),
        }?;
        result.map_err(|e| network_error(registry, &e))
    }

    fn status_error(
        &self,
        registry: &str,
        resp: Response<ureq::Body>,
        what: &str,
        manifest: bool,
    ) -> ImageError {
        let status = resp.status().as_u16();
        let retry_after = header(&resp, "retry-after");
        let detail = error_detail(resp);
        match status {
            401 | 403 => unauthorized(registry, status),
            404 => {
                let hint = if manifest {
                    match detail.as_ref().map(|(code, _)| code.as_str()) {
                        Some("NAME_UNKNOWN") => ": repository does not exist".to_string(),
                        _ => ": unknown image or tag".to_string(),
                    }
                } else {
                    match detail.as_ref().map(|(code, _)| code.as_str()) {
                        Some("NAME_UNKNOWN") => ": repository does not exist".to_string(),
                        _ => String::new(),
                    }
                };
                ImageError::NotFound {
                    what: what.to_string(),
                    hint,
                }
            }
            429 => ImageError::RateLimited {
                registry: registry.to_string(),
                retry: match retry_after {
                    Some(s) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
                        format!(" (retry after {s} seconds)")
                    }
                    Some(s) => format!(" (retry after {})", one_line(&s, 64)),
                    None => String::new(),
                },
            },
            _ => ImageError::Server {
                registry: registry.to_string(),
                status,
                what: match detail {
                    Some((code, msg)) => format!("{what}: {code}: {msg}"),
                    None => what.to_string(),
                },
            },
        }
    }

    fn read_error(&self, registry: &str, what: &str, e: std::io::Error) -> ImageError {
        ImageError::Network {
            registry: registry.to_string(),
            reason: format!("reading {what}: {}", one_line(&e.to_string(), 200)),
        }
    }
}

/// Fails, rather than ending, when the stream stops short of its
/// announced length (the request would otherwise wait for the rest).
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("blob stream ended {} bytes short", self.remaining),
            ));
        }
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

fn unauthorized(registry: &str, status: u16) -> ImageError {
    ImageError::Unauthorized {
        registry: registry.to_string(),
        status,
    }
}

fn unsupported_challenge(registry: &str, challenges: &[Challenge]) -> ImageError {
    ImageError::Unsupported {
        what: format!("authentication scheme of {registry}"),
        value: if challenges.is_empty() {
            "401 without a WWW-Authenticate challenge".into()
        } else {
            challenges
                .iter()
                .map(|c| c.scheme.clone())
                .collect::<Vec<_>>()
                .join(", ")
        },
    }
}

fn too_big(what: &str) -> ImageError {
    ImageError::Invalid {
        what: what.to_string(),
        reason: format!("larger than {} MiB", MAX_MANIFEST_SIZE >> 20),
    }
}

fn manifest_accept() -> [(&'static str, String); 1] {
    [(
        "accept",
        [
            MEDIA_OCI_MANIFEST,
            MEDIA_OCI_INDEX,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_DOCKER_LIST,
        ]
        .join(", "),
    )]
}

fn manifest_what(r: &Reference, reference: &str) -> String {
    let sep = if reference.contains(':') { '@' } else { ':' };
    format!("manifest for {}{sep}{reference}", r.familiar_name())
}

/// The digest `reference` names, if it is one.
/// Also refuses a `reference` that is neither a tag nor a digest (it goes
/// into the URL).
fn wanted_digest(r: &Reference, reference: &str) -> Result<Option<Digest>> {
    if !reference.contains(':') {
        if !is_valid_tag(reference) {
            return Err(ImageError::InvalidReference {
                reference: format!("{}:{reference}", r.name()),
                reason: "invalid tag".into(),
            });
        }
        return Ok(None);
    }
    reference
        .parse()
        .map(Some)
        .map_err(|_| ImageError::InvalidReference {
            reference: format!("{}@{reference}", r.name()),
            reason: "invalid digest".into(),
        })
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn challenges_of(resp: &Response<ureq::Body>) -> Vec<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// The whole body, or `None` when it is longer than `cap`.
fn read_capped(resp: Response<ureq::Body>, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    resp.into_body()
        .into_reader()
        .take(cap + 1)
        .read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= cap).then_some(buf))
}

/// `(code, message)` of a registry's `{"errors":[...]}` body.
fn error_detail(resp: Response<ureq::Body>) -> Option<(String, String)> {
    let bytes = read_capped(resp, 64 << 10).ok().flatten()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let first = v.get("errors")?.as_array()?.first()?;
    let code = first.get("code")?.as_str()?;
    let message = first.get("message").and_then(|m| m.as_str()).unwrap_or("");
    Some((one_line(code, 64), one_line(message, 200)))
}

/// Control characters out, length capped: server text shown to users.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_string()
}

/// The manifest's media type: the Content-Type when it names one, else the
/// JSON's `mediaType`, else guessed from its shape. Schema 1 is refused.
fn detect_media_type(what: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<String> {
    let invalid = |reason: String| ImageError::Invalid {
        what: what.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("not a JSON object".into()));
    }
    let header_type = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let body_type = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    let schema1 = v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1);
    let media_type = match header_type.or(body_type) {
        Some(t) => t,
        None if schema1 => MEDIA_DOCKER_SCHEMA1.to_string(),
        None if v.get("manifests").is_some() => MEDIA_OCI_INDEX.to_string(),
        None if v.get("layers").is_some() => MEDIA_OCI_MANIFEST.to_string(),
        None => {
            return Err(invalid(
                "no media type and not a recognisable manifest".into(),
            ))
        }
    };
    match media_type.as_str() {
        MEDIA_OCI_MANIFEST | MEDIA_OCI_INDEX | MEDIA_DOCKER_MANIFEST | MEDIA_DOCKER_LIST => {
            Ok(media_type)
        }
        MEDIA_DOCKER_SCHEMA1 | MEDIA_DOCKER_SCHEMA1_SIGNED => Err(ImageError::Unsupported {
            what: format!("{what} format"),
            value: format!(
                "Docker image manifest schema 1 ({media_type}) is deprecated and not \
                 supported; push the image again with a current Docker or registry"
            ),
        }),
        other => Err(ImageError::Unsupported {
            what: format!("{what} media type"),
            value: one_line(other, 120),
        }),
    }
}

/// A transport failure in one line naming its cause.
fn network_error(registry: &str, e: &ureq::Error) -> ImageError {
    use std::io::ErrorKind;
    let reason = match e {
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => "connection refused".to_string(),
            ErrorKind::ConnectionReset => "connection reset by peer".to_string(),
            ErrorKind::TimedOut => "timed out".to_string(),
            ErrorKind::UnexpectedEof => "connection closed unexpectedly".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::HostNotFound => "host not found (DNS lookup failed)".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => {
            format!("TLS error: {e} (if it serves plain HTTP, list it as an insecure registry)")
        }
        ureq::Error::TooManyRedirects => "too many redirects".to_string(),
        other => other.to_string(),
    };
    ImageError::Network {
        registry: registry.to_string(),
        reason: one_line(&reason, 300),
    }
}

/// `Location` of an upload: absolute, absolute-path or relative to `base`.
fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= origin_end)
            .unwrap_or(origin_end);
        format!("{}/{location}", &base[..dir_end])
    }
}

/// Scheme and authority of two URLs are the same.
fn same_host(a: &str, b: &str) -> bool {
    let origin = |u: &str| -> String {
        let end = u
            .find("://")
            .and_then(|i| u[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(u.len());
        u[..end].to_ascii_lowercase()
    };
    origin(a) == origin(b)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase: `bearer`, `basic` ...
    pub scheme: String,
    /// Parameter names lowercase, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `WWW-Authenticate` (RFC 7235): one or more challenges, each a
/// scheme then `name=value` or `name="quoted, \"escaped\""` parameters,
/// separated by commas. Malformed input yields what could be read.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let s = header.as_bytes();
    let n = s.len();
    let is_tchar = |b: u8| !b.is_ascii_whitespace() && !matches!(b, b',' | b'=' | b'"');
    let skip_ws = |mut i: usize| {
        while i < n && s[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let skip_ws_commas = |mut i: usize| {
        while i < n && (s[i].is_ascii_whitespace() || s[i] == b',') {
            i += 1;
        }
        i
    };
    let token = |mut i: usize| {
        let start = i;
        while i < n && is_tchar(s[i]) {
            i += 1;
        }
        (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
    };
    let mut out: Vec<Challenge> = Vec::new();
    let mut i = 0;
    loop {
        i = skip_ws_commas(i);
        if i >= n {
            break;
        }
        let (scheme, after) = token(i);
        if scheme.is_empty() {
            // A stray '=' or '"': step over it.
            i += 1;
            continue;
        }
        i = after;
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        // Parameters: `name = value` or `name = "quoted"`, comma separated.
        loop {
            let start = skip_ws_commas(i);
            let (name, after_name) = token(start);
            let eq = skip_ws(after_name);
            if name.is_empty() || eq >= n || s[eq] != b'=' {
                // The next challenge's scheme (or the end).
                i = start;
                break;
            }
            let mut k = skip_ws(eq + 1);
            let value = if k < n && s[k] == b'"' {
                k += 1;
                let mut v = Vec::new();
                while k < n && s[k] != b'"' {
                    if s[k] == b'\\' && k + 1 < n {
                        k += 1;
                    }
                    v.push(s[k]);
                    k += 1;
                }
                k = (k + 1).min(n); // past the closing quote, if any
                String::from_utf8_lossy(&v).into_owned()
            } else {
                let v0 = k;
                while k < n && s[k] != b',' && !s[k].is_ascii_whitespace() {
                    k += 1;
                }
                String::from_utf8_lossy(&s[v0..k]).into_owned()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            i = k;
            if start == k {
                break; // no progress (cannot happen, but never loop forever)
            }
        }
        out.push(challenge);
        if i >= n {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            [
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/alpine:pull,push"),
            ]
        );

        let c = parse_challenges(r#"Basic realm="r""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("REALM"), Some("r"));

        // Several challenges, odd spacing, unquoted values, escapes.
        let c = parse_challenges(
            r#"  basic   realm = "a \"q\", b" ,  BEARER realm=https://x/t , service=svc,error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(params(&c[0]), [("realm", r#"a "q", b"#)]);
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(
            params(&c[1]),
            [
                ("realm", "https://x/t"),
                ("service", "svc"),
                ("error", "insufficient_scope")
            ]
        );

        // A scheme alone, then another.
        let c = parse_challenges("Negotiate, Basic realm=x");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "negotiate");
        assert!(c[0].params.is_empty());
        assert_eq!(c[1].param("realm"), Some("x"));

        assert_eq!(parse_challenges("Negotiate abc==")[0].scheme, "negotiate");
    }

    #[test]
    fn challenges_never_panic() {
        for junk in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            "Bearer realm=\"ends with backslash\\",
            "Bearer realm=",
            "Bearer =x",
            "Bearer realm==x",
            "Bearer ,realm=\"a\",,service=\"b\"",
            "é realm=\"ü\"",
            "Bearer realm=\"x\" extra",
        ] {
            let _ = parse_challenges(junk);
        }
        let c = parse_challenges("Bearer realm=\"unterminated");
        assert_eq!(c[0].param("realm"), Some("unterminated"));
        let c = parse_challenges("Bearer ,realm=\"a\",,service=\"b\"");
        assert_eq!(c[0].param("service"), Some("b"));
    }

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:5000/v2/a/b/blobs/uploads/";
        assert_eq!(
            resolve_location(base, "/v2/a/b/blobs/uploads/u1?_state=x"),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?_state=x"
        );
        assert_eq!(resolve_location(base, "https://other/x"), "https://other/x");
        assert_eq!(
            resolve_location(base, "u2"),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u2"
        );
        assert!(same_host("http://h:1/v2/x", "HTTP://h:1"));
        assert!(!same_host("http://h:1/v2/x", "http://h:2"));
        assert_eq!(percent_encode("sha256:ab/c d"), "sha256%3Aab%2Fc%20d");
    }

    #[test]
    fn media_types() {
        let w = "m";
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        assert_eq!(detect_media_type(w, None, oci).unwrap(), MEDIA_OCI_MANIFEST);
        assert_eq!(
            detect_media_type(w, Some("application/json; charset=utf-8"), oci).unwrap(),
            MEDIA_OCI_MANIFEST
        );
        assert_eq!(
            detect_media_type(w, Some(MEDIA_DOCKER_LIST), br#"{"manifests":[]}"#).unwrap(),
            MEDIA_DOCKER_LIST
        );
        assert_eq!(
            detect_media_type(w, None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            MEDIA_OCI_INDEX
        );
        let e = detect_media_type(w, None, br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(matches!(e, ImageError::Unsupported { .. }));
        assert!(e.to_string().contains("schema 1"), "{e}");
        assert!(matches!(
            detect_media_type(w, Some(MEDIA_DOCKER_SCHEMA1_SIGNED), b"{}"),
            Err(ImageError::Unsupported { .. })
        ));
        assert!(matches!(
            detect_media_type(w, None, b"not json"),
            Err(ImageError::Invalid { .. })
        ));
        assert!(matches!(
            detect_media_type(w, None, b"[]"),
            Err(ImageError::Invalid { .. })
        ));
        assert!(matches!(
            detect_media_type(w, Some("text/html"), b"{}"),
            Err(ImageError::Invalid { .. }) | Err(ImageError::Unsupported { .. })
        ));
    }

    #[test]
    fn bad_references_never_reach_the_network() {
        let c = Client::new(ClientOptions {
            auth: AuthFile::at("/nonexistent"),
            insecure_registries: Vec::new(),
            user_agent: "t".into(),
        });
        let r = Reference::parse("127.0.0.1:1/a").unwrap();
        for bad in ["../x", "a/b", "", "sha256:zz", "a b"] {
            assert!(
                matches!(
                    c.get_manifest(&r, bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad}"
            );
            assert!(
                matches!(
                    c.head_manifest(&r, bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
        let c = Client::new(ClientOptions {
            auth: AuthFile::at("/nonexistent"),
            insecure_registries: vec!["http://my.reg:5000".into(), "other.io".into()],
            user_agent: "t".into(),
        });
        assert_eq!(c.base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(c.base_url("127.0.0.1"), "http://127.0.0.1");
        assert_eq!(c.base_url("my.reg:5000"), "http://my.reg:5000");
        assert_eq!(c.base_url("other.io"), "http://other.io");
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("ghcr.io"), "https://ghcr.io");
    }
}
