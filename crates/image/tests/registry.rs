//! The registry client against a real registry (`docker-registry` on
//! 127.0.0.1) and, for misbehaviour, a scripted server.

#[path = "common/registry.rs"]
mod registry_helper;

use cubby_image::auth::{AuthFile, Credentials};
use cubby_image::digest::{Digest, HashingReader};
use cubby_image::reference::Reference;
use cubby_image::registry::{Client, ClientOptions, MEDIA_OCI_MANIFEST};
use cubby_image::ImageError;
use registry_helper::{free_port, MockRequest, MockResponse, MockServer, TestRegistry};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn client_with(auth: AuthFile) -> Client {
    Client::new(ClientOptions {
        auth,
        insecure_registries: Vec::new(),
        user_agent: "cubby-test".into(),
    })
}

/// A client with no credentials at all.
fn anonymous() -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        client_with(AuthFile::at(dir.path().join("config.json"))),
        dir,
    )
}

/// A tiny OCI image: config blob, one layer blob, manifest.
struct TinyImage {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn tiny_image(seed: &str) -> TinyImage {
    let layer = format!("pretend this is a tar layer {seed}")
        .repeat(100)
        .into_bytes();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": Digest::of(&layer).to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    TinyImage {
        config,
        layer,
        manifest,
    }
}

fn push_image(client: &Client, r: &Reference, img: &TinyImage) -> Digest {
    for blob in [&img.config, &img.layer] {
        let d = Digest::of(blob);
        if !client.blob_exists(r, &d).unwrap() {
            client
                .push_blob(r, &d, blob.len() as u64, &blob[..])
                .unwrap();
        }
        assert!(client.blob_exists(r, &d).unwrap());
    }
    client
        .put_manifest(r, r.reference(), &img.manifest, MEDIA_OCI_MANIFEST)
        .unwrap()
}

fn read_blob(client: &Client, r: &Reference, d: &Digest) -> Vec<u8> {
    let (reader, len) = client.get_blob(r, d).unwrap();
    let mut hashing = HashingReader::new(reader);
    let mut out = Vec::new();
    hashing.read_to_end(&mut out).unwrap();
    assert_eq!(len, Some(out.len() as u64));
    hashing.finish("blob", d, len).unwrap();
    out
}

#[test]
fn push_then_pull_round_trip() {
    let reg = TestRegistry::start();
    let (client, _dir) = anonymous();
    let r = Reference::parse(&reg.reference("cubby/tiny:v1")).unwrap();
    assert!(r.is_local());
    let img = tiny_image("a");

    assert_eq!(client.head_manifest(&r, "v1").unwrap(), None);
    let digest = push_image(&client, &r, &img);
    assert_eq!(digest, Digest::of(&img.manifest));

    let m = client.get_manifest(&r, "v1").unwrap();
    assert_eq!(m.bytes, img.manifest);
    assert_eq!(m.digest, digest);
    assert_eq!(m.media_type, MEDIA_OCI_MANIFEST);
    assert!(!m.is_index());
    let by_digest = client.get_manifest(&r, &digest.to_string()).unwrap();
    assert_eq!(by_digest, m);
    let pinned = r.with_digest(&digest);
    assert_eq!(client.get_manifest(&pinned, pinned.reference()).unwrap(), m);

    assert_eq!(
        client.head_manifest(&r, "v1").unwrap(),
        Some(digest.clone())
    );
    assert_eq!(
        client.head_manifest(&r, &digest.to_string()).unwrap(),
        Some(digest.clone())
    );

    // Parallel blob downloads through one client.
    let client = Arc::new(client);
    std::thread::scope(|s| {
        let handles: Vec<_> = [&img.config, &img.layer, &img.layer, &img.config]
            .into_iter()
            .map(|blob| {
                let client = client.clone();
                let r = r.clone();
                s.spawn(move || assert_eq!(&read_blob(&client, &r, &Digest::of(blob)), blob))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });

    // A second tag on the same manifest, pushed by digest then by tag.
    let r2 = r.with_tag("v2");
    assert_eq!(
        client
            .put_manifest(&r2, &digest.to_string(), &img.manifest, MEDIA_OCI_MANIFEST)
            .unwrap(),
        digest
    );
    assert_eq!(
        client
            .put_manifest(&r2, "v2", &img.manifest, MEDIA_OCI_MANIFEST)
            .unwrap(),
        digest
    );
    assert_eq!(client.head_manifest(&r2, "v2").unwrap(), Some(digest));
}

#[test]
fn push_blob_checks_what_it_sends() {
    let reg = TestRegistry::start();
    let (client, _dir) = anonymous();
    let r = Reference::parse(&reg.reference("cubby/check:v1")).unwrap();
    let data = b"some blob bytes".to_vec();
    let d = Digest::of(&data);

    // Short stream.
    let e = client
        .push_blob(&r, &d, data.len() as u64 + 10, &data[..])
        .unwrap_err();
    assert!(matches!(e, ImageError::SizeMismatch { .. }), "{e}");
    // Wrong digest.
    let other = Digest::of(b"other");
    let e = client
        .push_blob(&r, &other, data.len() as u64, &data[..])
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(!client.blob_exists(&r, &other).unwrap());
    // Manifest pushed under a digest it does not have.
    let e = client
        .put_manifest(&r, &other.to_string(), b"{}", MEDIA_OCI_MANIFEST)
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    // Manifest naming blobs the registry lacks: the registry refuses.
    let img = tiny_image("missing");
    let e = client
        .put_manifest(&r, "v1", &img.manifest, MEDIA_OCI_MANIFEST)
        .unwrap_err();
    assert!(matches!(e, ImageError::Server { status: 400, .. }), "{e}");
    assert!(e.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{e}");
}

#[test]
fn unknown_tags_repositories_and_blobs_are_not_found() {
    let reg = TestRegistry::start();
    let (client, _dir) = anonymous();
    let r = Reference::parse(&reg.reference("cubby/present:v1")).unwrap();
    push_image(&client, &r, &tiny_image("b"));

    let e = client.get_manifest(&r, "nope").unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("manifest for")
            && msg.contains("cubby/present:nope")
            && msg.contains("unknown image or tag"),
        "{msg}"
    );

    let absent = Reference::parse(&reg.reference("cubby/absent:v1")).unwrap();
    let e = client.get_manifest(&absent, "v1").unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("cubby/absent:v1"), "{e}");
    assert_eq!(client.head_manifest(&absent, "v1").unwrap(), None);
    assert_eq!(client.head_manifest(&r, "nope").unwrap(), None);

    let missing = Digest::of(b"never pushed");
    let e = client.get_blob(&r, &missing).err().unwrap();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(&missing.to_string()), "{e}");
    assert!(!client.blob_exists(&r, &missing).unwrap());
}

#[test]
fn basic_auth_registry() {
    let reg = TestRegistry::start_with_htpasswd("cubby", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthFile::at(dir.path().join("config.json"));
    let r = Reference::parse(&reg.reference("private/app:v1")).unwrap();
    let good = Credentials {
        username: "cubby".into(),
        password: "s3cret".into(),
    };
    let bad = Credentials {
        username: "cubby".into(),
        password: "wrong".into(),
    };

    // No credentials.
    let client = client_with(auth.clone());
    let e = client.get_manifest(&r, "v1").unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains(&reg.addr), "{e}");
    assert!(e.to_string().contains("cubby login"), "{e}");
    let e = client.head_manifest(&r, "v1").unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");

    // `login`: credentials checked, then stored.
    let e = client.check_credentials(&r.registry, &bad).unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");
    client.check_credentials(&r.registry, &good).unwrap();
    auth.store(&r.registry, &good).unwrap();

    let client = client_with(auth.clone());
    let img = tiny_image("c");
    let digest = push_image(&client, &r, &img);
    let m = client.get_manifest(&r, "v1").unwrap();
    assert_eq!(m.digest, digest);
    assert_eq!(read_blob(&client, &r, &Digest::of(&img.layer)), img.layer);

    // Wrong password.
    auth.store(&r.registry, &bad).unwrap();
    let client = client_with(auth.clone());
    let e = client.get_manifest(&r, "v1").unwrap_err();
    assert!(
        matches!(e, ImageError::Unauthorized { status: 401, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&reg.addr), "{e}");

    // `logout`.
    assert!(auth.erase(&r.registry).unwrap());
    assert!(matches!(
        client_with(auth).get_manifest(&r, "v1"),
        Err(ImageError::Unauthorized { .. })
    ));
}

#[test]
fn unreachable_registry_is_a_network_error_in_one_line() {
    let (client, _dir) = anonymous();
    let port = free_port();
    let r = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).unwrap();
    let e = client.get_manifest(&r, "z").unwrap_err();
    assert!(matches!(e, ImageError::Network { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    let e = client
        .check_credentials(
            &r.registry,
            &Credentials {
                username: "u".into(),
                password: "p".into(),
            },
        )
        .unwrap_err();
    assert!(matches!(e, ImageError::Network { .. }), "{e:?}");
}

// ---- scripted server: what a real local registry will not do ----

const REPO: &str = "/v2/ns/app/";

fn mock_ref(server: &MockServer, tag: &str) -> Reference {
    Reference::parse(&format!("{}/ns/app:{tag}", server.addr)).unwrap()
}

#[test]
fn bearer_token_flow_with_cache() {
    let manifest = tiny_image("d").manifest;
    let token_calls = Arc::new(AtomicUsize::new(0));
    let addr = Arc::new(std::sync::OnceLock::<String>::new());
    let (calls, body, addr2) = (token_calls.clone(), manifest.clone(), addr.clone());
    let server = MockServer::start(move |req: &MockRequest| {
        let realm = format!("http://{}/token", addr2.get().unwrap());
        if req.target.starts_with("/token") {
            calls.fetch_add(1, Ordering::SeqCst);
            assert!(
                req.target.contains("service=test%20registry"),
                "{}",
                req.target
            );
            assert!(
                req.target.contains("scope=repository%3Ans%2Fapp%3Apull"),
                "{}",
                req.target
            );
            return match req.header("authorization") {
                Some("Basic dTpw") => {
                    MockResponse::new(200).body(r#"{"access_token":"tok123","expires_in":300}"#)
                }
                Some(_) => MockResponse::new(401),
                None => MockResponse::new(200).body(r#"{"token":"anon"}"#),
            };
        }
        if req.target.starts_with("/v2/") && req.header("authorization") == Some("Bearer tok123") {
            return MockResponse::new(200)
                .header("Content-Type", MEDIA_OCI_MANIFEST)
                .body(body.clone());
        }
        MockResponse::new(401)
            .header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="test registry",scope="repository:ns/app:pull""#),
            )
            .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
    });
    addr.set(server.addr.clone()).unwrap();
    let r = mock_ref(&server, "v1");
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthFile::at(dir.path().join("config.json"));

    // Anonymous token is not enough here.
    let e = client_with(auth.clone())
        .get_manifest(&r, "v1")
        .unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");

    auth.store(
        &r.registry,
        &Credentials {
            username: "u".into(),
            password: "p".into(),
        },
    )
    .unwrap();
    let client = client_with(auth.clone());
    token_calls.store(0, Ordering::SeqCst);
    for _ in 0..3 {
        let m = client.get_manifest(&r, "v1").unwrap();
        assert_eq!(m.bytes, manifest);
    }
    assert_eq!(token_calls.load(Ordering::SeqCst), 1, "token cached");
    client
        .check_credentials(
            &r.registry,
            &Credentials {
                username: "u".into(),
                password: "p".into(),
            },
        )
        .unwrap();
    let e = client
        .check_credentials(
            &r.registry,
            &Credentials {
                username: "u".into(),
                password: "bad".into(),
            },
        )
        .unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");
}

#[test]
fn credential_helper_is_reported_when_anonymous_access_fails() {
    let server = MockServer::start(|_req: &MockRequest| {
        MockResponse::new(401).header("WWW-Authenticate", r#"Basic realm="x""#)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"credsStore":"desktop"}"#).unwrap();
    let e = client_with(AuthFile::at(path))
        .get_manifest(&mock_ref(&server, "v1"), "v1")
        .unwrap_err();
    assert!(matches!(e, ImageError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("docker-credential-desktop"), "{e}");
}

#[test]
fn misbehaving_servers() {
    let good = tiny_image("e").manifest;
    let good2 = good.clone();
    let server = MockServer::start(move |req: &MockRequest| {
        let path = req.target.strip_prefix(REPO).unwrap_or("");
        let manifest = |body: Vec<u8>| {
            MockResponse::new(200)
                .header("Content-Type", MEDIA_OCI_MANIFEST)
                .body(body)
        };
        match path {
            "manifests/ratelimited" => MockResponse::new(429).header("Retry-After", "30"),
            "manifests/broken" => MockResponse::new(503)
                .body(r#"{"errors":[{"code":"UNAVAILABLE","message":"down for\nmaintenance"}]}"#),
            "manifests/huge" => manifest(vec![b' '; 5 << 20]),
            "manifests/notjson" => manifest(b"<html>oops</html>".to_vec()),
            "manifests/schema1" => MockResponse::new(200)
                .header(
                    "Content-Type",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws",
                )
                .body(r#"{"schemaVersion":1,"fsLayers":[]}"#),
            "manifests/lying" => manifest(good2.clone()).header(
                "Docker-Content-Digest",
                &Digest::of(b"something else").to_string(),
            ),
            "manifests/noheader" => manifest(good2.clone()),
            p if p.starts_with("manifests/sha256:") => manifest(good2.clone()),
            p if p.starts_with("blobs/sha256:") => {
                MockResponse::new(307).header("Location", &format!("/elsewhere/{}", &p[6..]))
            }
            p if p.starts_with("blobs/uploads/") && req.method == "POST" => {
                MockResponse::new(202).header("Location", "/v2/ns/app/blobs/uploads/abc?_state=s")
            }
            p if p.starts_with("blobs/uploads/abc?_state=s&digest=sha256%3A") => {
                assert_eq!(req.body, b"hello");
                assert_eq!(req.header("content-length"), Some("5"));
                MockResponse::new(201)
            }
            _ if req.target.starts_with("/elsewhere/") => {
                assert_eq!(req.header("authorization"), None);
                MockResponse::new(200).body("hello")
            }
            _ => MockResponse::new(404),
        }
    });
    let (client, _dir) = anonymous();
    let r = mock_ref(&server, "v1");

    let e = client.get_manifest(&r, "ratelimited").unwrap_err();
    assert!(matches!(e, ImageError::RateLimited { .. }), "{e}");
    assert!(e.to_string().contains("30 seconds"), "{e}");

    let e = client.get_manifest(&r, "broken").unwrap_err();
    assert!(matches!(e, ImageError::Server { status: 503, .. }), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    assert!(e.to_string().contains("UNAVAILABLE"), "{e}");

    let e = client.get_manifest(&r, "huge").unwrap_err();
    assert!(matches!(e, ImageError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("4 MiB"), "{e}");

    let e = client.get_manifest(&r, "notjson").unwrap_err();
    assert!(matches!(e, ImageError::Invalid { .. }), "{e}");

    let e = client.get_manifest(&r, "schema1").unwrap_err();
    assert!(matches!(e, ImageError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("schema 1"), "{e}");

    let e = client.get_manifest(&r, "lying").unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");

    // Asked by digest: the bytes must hash to it.
    let wrong = Digest::of(b"not the manifest");
    let e = client.get_manifest(&r, &wrong.to_string()).unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    let right = Digest::of(&good);
    assert_eq!(
        client.get_manifest(&r, &right.to_string()).unwrap().digest,
        right
    );
    // HEAD without Docker-Content-Digest falls back to GET.
    assert_eq!(client.head_manifest(&r, "noheader").unwrap(), Some(right));

    // Redirected blob, no credentials sent along.
    let hello = Digest::of(b"hello");
    assert_eq!(read_blob(&client, &r, &hello), b"hello");

    // Relative upload Location.
    client.push_blob(&r, &hello, 5, &b"hello"[..]).unwrap();
}
