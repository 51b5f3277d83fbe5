//! Images through the Docker Engine API: a real docker-registry on
//! 127.0.0.1 (scripts/registry.sh, images by scripts/mk-test-images.sh)
//! and a real `cubby daemon` driven by the real `docker` CLI and raw HTTP.
//! Needs root, cgroups, docker-registry, skopeo, umoci and
//! /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/images.rs"]
mod images_common;

use base64::Engine as _;
use daemon::Daemon as Harness;
use images_common::Registry;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A raw HTTP/1.1 request with extra headers; returns the status line and
/// the de-chunked body.
fn request(h: &Harness, method: &str, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (head.lines().next().unwrap_or("").to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Every line of a pull stream, parsed; panics on one that is not JSON.
fn json_lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn statuses(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l["status"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn pull_list_inspect_tag_run_and_remove_with_the_docker_cli() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox,layers", None);
    let h = Harness::start("images");
    let img = reg.image("test/busybox:latest");

    let out = h.ok(&["pull", &img]);
    for want in [
        "latest: Pulling from test/busybox",
        ": Pulling fs layer",
        ": Download complete",
        ": Pull complete",
        "Digest: sha256:",
        &format!("Status: Downloaded newer image for {img}"),
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    assert_eq!(out.lines().last(), Some(img.as_str()), "{out}");
    let again = h.ok(&["pull", &img]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {img}")),
        "{again}"
    );

    let images = h.ok(&["images"]);
    let repo = reg.image("test/busybox");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(&repo) && l.contains("latest")),
        "{images}"
    );
    let filtered = h.ok(&["images", "-q", "--filter", &format!("reference={repo}")]);
    assert_eq!(filtered.lines().count(), 1, "{filtered}");
    let none = h.ok(&["images", "-q", "--filter", "reference=nothing*"]);
    assert!(none.trim().is_empty(), "{none}");
    let dangling = h.ok(&["images", "-q", "--filter", "dangling=true"]);
    assert!(dangling.trim().is_empty(), "{dangling}");

    let inspect: Value = serde_json::from_str(&h.ok(&["image", "inspect", &img])).unwrap();
    let i = &inspect[0];
    let id = i["Id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{i}");
    assert_eq!(i["RepoTags"], serde_json::json!([img]));
    assert!(
        i["RepoDigests"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{repo}@sha256:")),
        "{i}"
    );
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(i["Config"]["WorkingDir"], "/home");
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(i["Created"], "2000-01-01T00:00:00Z");
    // By id and id prefix too.
    let by_id: Value = serde_json::from_str(&h.ok(&["image", "inspect", &id[7..19]])).unwrap();
    assert_eq!(by_id[0]["Id"], id.as_str());
    let err = h.fails(&["image", "inspect", "no-such-image:1"]);
    assert!(err.contains("No such image: no-such-image:1"), "{err}");

    // A second name, then a container from it.
    h.ok(&["tag", &img, "cubby-test-box:v1"]);
    let images = h.ok(&["images"]);
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("cubby-test-box") && l.contains("v1")),
        "{images}"
    );
    h.ok(&[
        "run",
        "-d",
        "--name",
        "from-tag",
        "cubby-test-box:v1",
        "sh",
        "-c",
        "cat /etc/passwd >/dev/null; exit 3",
    ]);
    assert_eq!(h.ok(&["wait", "from-tag"]).trim(), "3");

    // One name of two: untagged only. The last one is in use: refused.
    let out = h.ok(&["rmi", &img]);
    assert_eq!(out.trim(), format!("Untagged: {img}"));
    let err = h.fails(&["rmi", "cubby-test-box:v1"]);
    assert!(
        err.contains("unable to remove repository reference \"cubby-test-box:v1\"")
            && err.contains("is using its referenced image"),
        "{err}"
    );
    h.ok(&["rm", "-f", "from-tag"]);
    let out = h.ok(&["rmi", "cubby-test-box:v1"]);
    assert!(out.contains("Untagged: cubby-test-box:v1"), "{out}");
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(!h.ok(&["images"]).contains("cubby-test-box"));
    let err = h.fails(&["rmi", "cubby-test-box:v1"]);
    assert!(err.contains("No such image"), "{err}");

    // Missing repository, missing tag: errors that name them.
    let missing = reg.image("test/nope:latest");
    let err = h.fails(&["pull", &missing]);
    assert!(err.contains("test/nope"), "{err}");
    let err = h.fails(&["pull", &reg.image("test/busybox:no-such-tag")]);
    assert!(err.contains("no-such-tag"), "{err}");

    // Three layers; runs; the whiteouts of layer 3 are applied.
    let layers = reg.image("test/layers:latest");
    let out = h.ok(&["pull", &layers]);
    assert_eq!(out.matches(": Pull complete").count(), 3, "{out}");
    let inspect: Value = serde_json::from_str(&h.ok(&["image", "inspect", &layers])).unwrap();
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    let (status, body) = request(&h, "GET", &format!("/images/{layers}/history"), &[]);
    assert!(status.contains(" 200 "), "{status}: {body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let history = history.as_array().unwrap();
    assert_eq!(history[0]["Id"], inspect[0]["Id"], "{body}");
    assert_eq!(history.last().unwrap()["CreatedBy"], "busybox rootfs");
    assert!(
        history.last().unwrap()["Size"].as_i64().unwrap() > 100_000,
        "{body}"
    );
    h.ok(&[
        "run",
        "-d",
        "--name",
        "layers",
        &layers,
        "sh",
        "-c",
        "test ! -e /data/a.txt && ls /data/dir",
    ]);
    assert_eq!(h.ok(&["wait", "layers"]).trim(), "0");
    daemon::eventually("docker logs shows /data/dir", || {
        (h.ok(&["logs", "layers"]) == "y\n").then_some(())
    });
    h.ok(&["rm", "-f", "layers"]);

    // By digest (the record and its layers were just removed).
    let digest = inspect[0]["RepoDigests"][0].as_str().unwrap().to_string();
    h.ok(&["rmi", &layers]);
    let out = h.ok(&["pull", &digest]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let listed = h.ok(&["images", "--digests"]);
    assert!(
        listed.contains(digest.split('@').nth(1).unwrap()),
        "{listed}"
    );

    // docker-py: images.pull and images.list.
    let script = format!(
        "import docker\n\
         c = docker.from_env()\n\
         im = c.images.pull('{repo}', tag='latest')\n\
         print(im.id)\n\
         print(sorted(t for i in c.images.list(filters={{'reference': '*/test/bus*'}}) for t in i.tags))\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("DOCKER_HOST", format!("unix://{}", h.socket.display()))
        .output()
        .expect("python3 (with the docker package, docker-py) is needed");
    assert!(
        out.status.success(),
        "docker-py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&id), "{text}");
    assert!(text.contains(&format!("['{img}']")), "{text}");
}

#[test]
fn pull_stream_is_json_lines_and_honours_x_registry_auth() {
    let reg = Registry::start(Some("cubby:s3cret"));
    reg.push_test_images("busybox", Some("cubby:s3cret"));
    let h = Harness::start("images-auth");
    let path = format!(
        "/v1.43/images/create?fromImage={}&tag=latest",
        reg.image("test/busybox")
    );

    // Without credentials (and none in the daemon's auth file): refused
    // before any progress, as an HTTP error.
    let (status, body) = request(&h, "POST", &path, &[]);
    assert!(status.contains(" 401 "), "{status}: {body}");
    let msg: Value = serde_json::from_str(&body).unwrap();
    assert!(
        msg["message"].as_str().unwrap().contains(&reg.addr),
        "{body}"
    );

    let auth = base64::engine::general_purpose::URL_SAFE.encode(format!(
        r#"{{"username":"cubby","password":"s3cret","serveraddress":"{}"}}"#,
        reg.addr
    ));
    let (status, body) = request(&h, "POST", &path, &[("X-Registry-Auth", &auth)]);
    assert!(status.contains(" 200 "), "{status}: {body}");
    let lines = json_lines(&body);
    let st = statuses(&lines);
    assert_eq!(st[0], "Pulling from test/busybox", "{body}");
    assert_eq!(lines[0]["id"], "latest");
    assert!(st.iter().any(|s| s == "Pulling fs layer"), "{body}");
    let downloading: Vec<&Value> = lines
        .iter()
        .filter(|l| l["status"] == "Downloading")
        .collect();
    assert!(!downloading.is_empty(), "{body}");
    let last = downloading.last().unwrap();
    assert_eq!(
        last["progressDetail"]["current"],
        last["progressDetail"]["total"]
    );
    assert!(
        last["progress"].as_str().unwrap().starts_with("[===="),
        "{last}"
    );
    assert_eq!(last["id"].as_str().unwrap().len(), 12);
    let order: Vec<usize> = [
        "Pulling fs layer",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Extracting",
        "Pull complete",
    ]
    .iter()
    .map(|s| {
        st.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s}: {body}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {body}");
    assert!(st[st.len() - 2].starts_with("Digest: sha256:"), "{body}");
    assert_eq!(
        st[st.len() - 1],
        format!(
            "Status: Downloaded newer image for {}",
            reg.image("test/busybox:latest")
        )
    );
    assert!(lines.iter().all(|l| l.get("error").is_none()), "{body}");

    // Errors the API rejects up front.
    let (status, _) = request(&h, "POST", "/images/create?fromImage=Bad%20Name", &[]);
    assert!(status.contains(" 400 "), "{status}");
    let (status, _) = request(&h, "POST", "/images/create", &[]);
    assert!(status.contains(" 400 "), "{status}");
    let (status, body) = request(
        &h,
        "GET",
        "/images/json?filters=%7B%22bogus%22%3A%7B%22x%22%3Atrue%7D%7D",
        &[],
    );
    assert!(
        status.contains(" 400 ") && body.contains("bogus"),
        "{status}: {body}"
    );
}

/// A layer the registry lost after the manifest was resolved: the error
/// comes in the stream (`errorDetail`), the docker CLI prints it and fails,
/// and nothing is recorded.
#[test]
fn an_error_mid_pull_is_an_error_line() {
    let reg = Registry::start(None);
    reg.push_test_images("busybox", None);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail"])
            .args(args)
            .output()
            .expect("curl is needed to delete a blob from the test registry");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let manifest: Value = serde_json::from_str(&curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{}/v2/test/busybox/manifests/latest", reg.addr),
    ]))
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    curl(&[
        "-X",
        "DELETE",
        &format!("http://{}/v2/test/busybox/blobs/{layer}", reg.addr),
    ]);

    let h = Harness::start("images-broken");
    let img = reg.image("test/busybox:latest");
    let (status, body) = request(&h, "POST", &format!("/images/create?fromImage={img}"), &[]);
    assert!(status.contains(" 200 "), "{status}: {body}");
    let lines = json_lines(&body);
    assert_eq!(lines[0]["status"], "Pulling from test/busybox", "{body}");
    let last = lines.last().unwrap();
    let msg = last["errorDetail"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&layer[7..19]) || msg.contains(&layer),
        "{body}"
    );
    assert_eq!(last["error"].as_str(), Some(msg));

    let out = h.docker(&["pull", &img]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    assert!(h.ok(&["images", "-q"]).trim().is_empty());
}
