//! The classroom service end to end: `cubby serve` (the real binary) on a
//! real cubby daemon, real sandboxes from the locally built demo image,
//! SQLite and a private PostgreSQL cluster. A teacher brings up a class of
//! 30 through the API (with a `kill -9` of serve in the middle), students
//! are kept to their own sessions, tokens are revoked, refreshed and
//! expire, and bad input is refused without changing anything.
//! Needs root, cgroups, busybox-static, nftables and PostgreSQL 15.

#[path = "common/caas.rs"]
mod caas;
mod common;
#[path = "common/daemon.rs"]
mod daemon;

use caas::{DbKind, Serve, IMAGE};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn template(s: &Serve, tok: &str, name: &str, spec: Value) -> String {
    s.template(tok, json!({"name": name, "spec": spec}))
}

fn demo_spec() -> Value {
    json!({"image": IMAGE, "port": 8080, "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64})
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// `docker ps` names of this class's sandboxes (all, or running only).
fn sandboxes(s: &Serve, class: &str, all: bool) -> Vec<String> {
    let filter = format!("label=io.cubby.caas.class={class}");
    let mut args = vec!["ps", "-q", "--filter", &filter];
    if all {
        args.push("-a");
    }
    s.d.ok(&args).lines().map(str::to_string).collect()
}

#[test]
fn class_of_30_up_with_kill9_then_down_sqlite() {
    class_of_30_up_with_kill9_then_down(DbKind::Sqlite, "caas-up30-sq");
}

#[test]
fn class_of_30_up_with_kill9_then_down_postgres() {
    class_of_30_up_with_kill9_then_down(DbKind::Postgres, "caas-up30-pg");
}

fn class_of_30_up_with_kill9_then_down(db: DbKind, tag: &str) {
    let mut s = Serve::start(tag, db, &["--start-concurrency", "2"]);
    s.user("root", "admin", "admin-pass-1");
    s.user("teach", "teacher", "teach-pass-1");
    let admin = s.token("root", "admin-pass-1");
    let t = s.token("teach", "teach-pass-1");
    let tpl = template(&s, &t, "demo", demo_spec());
    let cid = s.class(
        &t,
        json!({"name": "Systems", "code": "sys30", "capacity": 30, "template_id": tpl}),
    );
    // Thirty students from CSV, created and enrolled in one call.
    let csv: String = (0..30)
        .map(|i| format!("st{i:02},pass-{i:02}-xyz\n"))
        .collect();
    let (st, _, body) = s
        .raw(
            "POST",
            &format!("/api/classes/{cid}/students/import"),
            &format!("Authorization: Bearer {t}\r\n"),
            "text/csv",
            Some(&csv),
        )
        .unwrap();
    assert_eq!(st, 200, "{body}");
    // The 31st does not fit; nothing changes.
    s.user("late", "student", "late-pass-1");
    let e = s.expect(
        409,
        "POST",
        &format!("/api/classes/{cid}/students"),
        Some(&t),
        Some(json!({"username": "late"})),
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("full"),
        "{e}"
    );
    assert_eq!(
        s.ok(
            "GET",
            &format!("/api/classes/{cid}/students"),
            Some(&t),
            None
        )
        .as_array()
        .unwrap()
        .len(),
        30
    );

    // Up-class, and kill -9 of serve while it is starting them.
    // (serve runs with --start-concurrency 2, so the class takes a while.)
    let up = s.ok("POST", &format!("/api/classes/{cid}/up"), Some(&t), None);
    assert_eq!(up.as_array().unwrap().len(), 30);
    let before = s.until("/api/sessions", &t, 60, |v| {
        v.as_array().unwrap().iter().any(|x| x["state"] == "ready")
    });
    s.kill9_and_restart();
    let ready_at_kill = before
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "ready")
        .count();
    assert!(
        ready_at_kill < 30,
        "the kill came after the whole class was up: nothing to recover"
    );
    eprintln!("kill -9 with {ready_at_kill} of 30 ready");
    let t = s.token("teach", "teach-pass-1");
    let admin2 = s.token("root", "admin-pass-1");
    let sessions = s.until("/api/sessions?active=true", &t, 180, |v| {
        let a = v.as_array().unwrap();
        a.len() == 30 && a.iter().all(|x| x["state"] == "ready")
    });
    // One session per student, the same ones, one sandbox each, no orphan.
    assert_eq!(ids(&sessions), ids(&up));
    let mut students: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["student_id"].as_str().unwrap())
        .collect();
    students.sort();
    students.dedup();
    assert_eq!(students.len(), 30);
    assert_eq!(
        sandboxes(&s, &cid, true).len(),
        30,
        "duplicate or missing sandboxes"
    );
    assert_eq!(s.ok("GET", "/api/orphans", Some(&admin2), None), json!([]));
    // The old admin token survived the restart (the key is in the database).
    s.ok("GET", "/api/users", Some(&admin), None);

    // A spot check inside one sandbox: non-root, no_new_privs, the workspace.
    let name = sessions[0]["sandbox"].as_str().unwrap();
    assert_eq!(s.d.ok(&["exec", name, "id", "-u"]).trim(), "1000");
    let status = s.d.ok(&["exec", name, "cat", "/proc/self/status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{status}"
    );
    s.d.ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "echo work > /workspace/f && cat /workspace/f",
    ]);

    // Up again is idempotent.
    let again = s.ok("POST", &format!("/api/classes/{cid}/up"), Some(&t), None);
    assert_eq!(ids(&again), ids(&up));
    assert_eq!(sandboxes(&s, &cid, true).len(), 30);

    // Down-class: all archived and stopped.
    s.ok("POST", &format!("/api/classes/{cid}/down"), Some(&t), None);
    s.until("/api/sessions", &t, 120, |v| {
        v.as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "stopped")
    });
    assert_eq!(
        sandboxes(&s, &cid, false).len(),
        0,
        "still running after down"
    );
    // Archived (issue 11), then removed: nothing is left behind.
    assert_eq!(
        sandboxes(&s, &cid, true).len(),
        0,
        "sandboxes left after archiving"
    );
    assert_eq!(
        s.ok(
            "GET",
            &format!("/api/archives?class_id={cid}"),
            Some(&t),
            None
        )
        .as_array()
        .unwrap()
        .len(),
        30
    );
}

fn authz_tokens_and_bad_input(db: DbKind, tag: &str) {
    let mut s = Serve::start(tag, db, &[]);
    s.user("root", "admin", "admin-pass-1");
    s.user("t1", "teacher", "t1-pass-123");
    s.user("t2", "teacher", "t2-pass-123");
    s.user("ann", "student", "ann-pass-123");
    s.user("bob", "student", "bob-pass-123");
    let admin = s.token("root", "admin-pass-1");
    let t1 = s.token("t1", "t1-pass-123");
    let t2 = s.token("t2", "t2-pass-123");
    let ann = s.token("ann", "ann-pass-123");
    let bob = s.token("bob", "bob-pass-123");

    // Bad templates: refused with what to fix, nothing saved.
    let e = s.expect(
        400,
        "POST",
        "/api/templates",
        Some(&t1),
        Some(json!({"name": "x", "spec": {"image": "nothere:1"}})),
    );
    assert_eq!(e["error"]["code"], "image_missing", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cubby pull"),
        "{e}"
    );
    let e = s.expect(
        400,
        "POST",
        "/api/templates",
        Some(&t1),
        Some(json!({"name": "x", "spec": {"image": IMAGE, "memory_bytes": 1000}})),
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("minimum"),
        "{e}"
    );
    s.expect(
        400,
        "POST",
        "/api/templates",
        Some(&t1),
        Some(json!({"name": "x", "spec": {"image": IMAGE, "user": "0"}})),
    );
    let (st, _, body) = s
        .raw(
            "POST",
            "/api/templates",
            &format!("Authorization: Bearer {t1}\r\n"),
            "application/json",
            Some("{\"name\": "),
        )
        .unwrap();
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\"invalid\""), "{body}");
    assert_eq!(s.ok("GET", "/api/templates", Some(&t1), None), json!([]));
    // Unknown paths, methods and query values: the same JSON error shape.
    s.expect(404, "GET", "/api/nope", Some(&t1), None);
    s.expect(405, "DELETE", "/api/templates", Some(&t1), None);
    s.expect(400, "GET", "/api/sessions?active=maybe", Some(&t1), None);
    s.expect(401, "GET", "/api/templates", None, None);
    let tpl = template(&s, &t1, "demo", demo_spec());
    // Unknown template: 404, no class made.
    s.expect(
        404,
        "POST",
        "/api/classes",
        Some(&t1),
        Some(json!({"name": "C", "code": "c1", "capacity": 5, "template_id": "nope"})),
    );
    assert_eq!(s.ok("GET", "/api/classes", Some(&t1), None), json!([]));
    let c = s.ok(
        "POST",
        "/api/classes",
        Some(&t1),
        Some(json!({"name": "C", "code": "c1", "capacity": 5, "template_id": tpl})),
    );
    let cid = c["id"].as_str().unwrap().to_string();
    // Join by code; capacity enforced.
    let small = s.ok(
        "POST",
        "/api/classes",
        Some(&t1),
        Some(json!({"name": "Tiny", "code": "tiny", "capacity": 1})),
    );
    s.ok(
        "POST",
        "/api/classes/join",
        Some(&ann),
        Some(json!({"join_code": small["join_code"]})),
    );
    let e = s.expect(
        409,
        "POST",
        "/api/classes/join",
        Some(&bob),
        Some(json!({"join_code": small["join_code"]})),
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("full"),
        "{e}"
    );
    s.expect(
        404,
        "POST",
        "/api/classes/join",
        Some(&bob),
        Some(json!({"join_code": "WRONGCODE1"})),
    );
    for u in ["ann", "bob"] {
        s.enrol(&t1, &cid, u);
    }

    // Students: no teacher actions (403), no one else's session (404).
    s.expect(
        403,
        "POST",
        "/api/classes",
        Some(&ann),
        Some(json!({"name": "X", "code": "x", "capacity": 1})),
    );
    s.expect(
        403,
        "POST",
        &format!("/api/classes/{cid}/up"),
        Some(&ann),
        None,
    );
    s.expect(
        403,
        "POST",
        &format!("/api/classes/{cid}/students"),
        Some(&ann),
        Some(json!({"username": "bob"})),
    );
    s.expect(403, "GET", "/api/users", Some(&ann), None);
    s.expect(403, "GET", "/api/audit", Some(&ann), None);
    s.expect(
        403,
        "POST",
        "/api/sessions",
        Some(&ann),
        Some(json!({"class_id": cid, "student_id": "x"})),
    );
    // Another teacher's class does not exist for t2.
    s.expect(404, "GET", &format!("/api/classes/{cid}"), Some(&t2), None);
    s.expect(
        404,
        "POST",
        &format!("/api/classes/{cid}/up"),
        Some(&t2),
        None,
    );

    // The restore choice for ann's next session: read back by her class's
    // teachers and admins only, with the same checks as setting it.
    let ann_id = s.ok("GET", "/api/auth/me", Some(&ann), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t2_id = s.ok("GET", "/api/auth/me", Some(&t2), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let restore = format!("/api/classes/{cid}/students/{ann_id}/restore");
    let latest =
        json!({"class_id": cid, "student_id": ann_id, "restore": "latest", "archive_id": null});
    assert_eq!(s.ok("GET", &restore, Some(&t1), None), latest);
    for (status, tok) in [(403, &ann), (403, &bob), (404, &t2)] {
        s.expect(status, "GET", &restore, Some(tok), None);
        s.expect(
            status,
            "PUT",
            &restore,
            Some(tok),
            Some(json!({"archive_id": null})),
        );
    }
    s.expect(401, "GET", &restore, None, None);
    s.expect(
        400,
        "GET",
        &format!("/api/classes/{cid}/students/{t2_id}/restore"),
        Some(&t1),
        None,
    );
    s.expect(
        404,
        "PUT",
        &restore,
        Some(&t1),
        Some(json!({"archive_id": "no-such-archive"})),
    );
    let empty =
        json!({"class_id": cid, "student_id": ann_id, "restore": "empty", "archive_id": null});
    assert_eq!(
        s.ok(
            "PUT",
            &restore,
            Some(&t1),
            Some(json!({"archive_id": null}))
        ),
        empty
    );
    assert_eq!(s.ok("GET", &restore, Some(&t1), None), empty);
    assert_eq!(s.ok("GET", &restore, Some(&admin), None), empty);

    let sa = s.ok(
        "POST",
        "/api/sessions?wait=true",
        Some(&ann),
        Some(json!({"class_id": cid})),
    );
    assert_eq!(sa["state"], "ready", "{sa}");
    // Her session took the choice: the next one starts from her latest again.
    assert_eq!(sa["restore_state"], "none", "{sa}");
    assert_eq!(s.ok("GET", &restore, Some(&t1), None), latest);
    // Pressing start again: the same session.
    let sa2 = s.ok(
        "POST",
        "/api/sessions",
        Some(&ann),
        Some(json!({"class_id": cid})),
    );
    assert_eq!(sa2["id"], sa["id"]);
    // Bob's page: start, then one long poll answered when it is ready.
    let sb = s.ok(
        "POST",
        "/api/sessions",
        Some(&bob),
        Some(json!({"class_id": cid})),
    );
    let sbid = sb["id"].as_str().unwrap();
    let sb = s.ok(
        "GET",
        &format!("/api/sessions/{sbid}?wait=true"),
        Some(&bob),
        None,
    );
    assert_eq!(sb["state"], "ready", "{sb}");
    for path in [
        format!("/api/sessions/{sbid}"),
        format!("/api/sessions/{sbid}?wait=true"),
    ] {
        s.expect(404, "GET", &path, Some(&ann), None);
    }
    // Options that do not apply are refused, not ignored.
    s.expect(400, "GET", "/api/sessions?wait=true", Some(&bob), None);
    s.expect(
        400,
        "GET",
        &format!("/api/sessions/{sbid}?active=true"),
        Some(&bob),
        None,
    );
    s.expect(
        404,
        "POST",
        &format!("/api/sessions/{sbid}/stop"),
        Some(&ann),
        None,
    );
    s.expect(
        404,
        "GET",
        &format!("/api/sessions/{sbid}"),
        Some(&t2),
        None,
    );
    assert_eq!(
        ids(&s.ok("GET", "/api/sessions", Some(&ann), None)),
        vec![sa["id"].as_str().unwrap().to_string()]
    );
    assert_eq!(s.ok("GET", "/api/sessions", Some(&t2), None), json!([]));
    s.ok("GET", &format!("/api/sessions/{sbid}"), Some(&t1), None);

    // OOM: a sandbox whose program outgrows its memory fails with the reason;
    // the others keep running.
    let hog = template(
        &s,
        &t1,
        "hog",
        json!({"image": IMAGE, "memory_bytes": 16 << 20, "pids": 64,
        "command": ["sh", "-c", "sleep 1; head -c 200m /dev/zero | tail"]}),
    );
    let ocid = s.class(
        &t1,
        json!({"name": "Hog", "code": "hog", "capacity": 2, "template_id": hog}),
    );
    s.enrol(&t1, &ocid, "ann");
    let so = s.ok(
        "POST",
        "/api/sessions",
        Some(&ann),
        Some(json!({"class_id": ocid})),
    );
    let so = s.until(
        &format!("/api/sessions/{}", so["id"].as_str().unwrap()),
        &ann,
        60,
        |v| v["state"] == "failed",
    );
    assert_eq!(so["reason"], "out of memory", "{so}");
    assert_eq!(
        s.ok("GET", &format!("/api/sessions/{sbid}"), Some(&t1), None)["state"],
        "ready"
    );

    // Cookies: httpOnly + SameSite=Strict, and they authenticate.
    let (st, head, _) = s
        .raw(
            "POST",
            "/api/auth/login",
            "",
            "application/json",
            Some(&json!({"username": "bob", "password": "bob-pass-123"}).to_string()),
        )
        .unwrap();
    assert_eq!(st, 200);
    let cookie = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: cubby_access=")
        })
        .unwrap_or_else(|| panic!("no access cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie["set-cookie: ".len()..].split(';').next().unwrap();
    let (st, _, body) = s
        .raw(
            "GET",
            "/api/auth/me",
            &format!("Cookie: {pair}\r\n"),
            "application/json",
            None,
        )
        .unwrap();
    assert_eq!(st, 200, "{body}");
    // A cookie-authenticated change from another origin is refused; from
    // our own origin it passes (the raw client sends Host: 127.0.0.1).
    let (st, _, body) = s
        .raw(
            "POST",
            "/api/auth/logout",
            &format!("Cookie: {pair}\r\nOrigin: http://evil.example\r\n"),
            "application/json",
            None,
        )
        .unwrap();
    assert_eq!(st, 403, "{body}");
    let (st, _, body) = s
        .raw(
            "POST",
            "/api/auth/logout",
            &format!("Cookie: {pair}\r\nOrigin: http://127.0.0.1\r\n"),
            "application/json",
            None,
        )
        .unwrap();
    assert_eq!(st, 200, "{body}");

    // Refresh tokens rotate: the old one is refused after use.
    let l = s.login("bob", "bob-pass-123");
    let r1 = l["refresh_token"].as_str().unwrap();
    let l2 = s.ok(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": r1})),
    );
    s.expect(
        401,
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": r1})),
    );
    let r2 = l2["refresh_token"].as_str().unwrap();
    s.ok("GET", "/api/auth/me", l2["access_token"].as_str(), None);
    s.ok(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": r2})),
    );

    // Revocation: logout kills that login's token at once; a password
    // change kills every login of the user.
    let ann2 = s.token("ann", "ann-pass-123");
    s.ok("POST", "/api/auth/logout", Some(&ann2), None);
    s.expect(401, "GET", "/api/auth/me", Some(&ann2), None);
    s.ok("GET", "/api/auth/me", Some(&ann), None);
    s.ok(
        "POST",
        "/api/auth/password",
        Some(&ann),
        Some(json!({"old_password": "ann-pass-123", "new_password": "ann-pass-456"})),
    );
    s.expect(401, "GET", "/api/auth/me", Some(&ann), None);
    s.expect(
        401,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "ann", "password": "ann-pass-123"})),
    );
    let ann = s.token("ann", "ann-pass-456");
    // Disabled by an admin: refused at once.
    let bob_id = s.ok("GET", "/api/auth/me", Some(&bob), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(
        "POST",
        &format!("/api/users/{bob_id}/disabled"),
        Some(&admin),
        Some(json!({"disabled": true})),
    );
    s.expect(401, "GET", "/api/auth/me", Some(&bob), None);
    // A forged token (alg none, admin role) is refused.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = ann.split('.').nth(1).unwrap();
    let mut c: Value = serde_json::from_slice(&b64.decode(claims).unwrap()).unwrap();
    c["role"] = json!("admin");
    let forged = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(c.to_string())
    );
    s.expect(401, "GET", "/api/users", Some(&forged), None);

    // Login rate limit per user name.
    let mut last = 0;
    for _ in 0..12 {
        let (st, _) = s
            .try_req(
                "POST",
                "/api/auth/login",
                None,
                Some(&json!({"username": "t2", "password": "wrong-password"}).to_string()),
            )
            .unwrap();
        last = st;
    }
    assert_eq!(last, 429);

    // Audit and OpenAPI.
    let audit = s.ok("GET", "/api/audit?limit=1000", Some(&admin), None);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for a in [
        "login",
        "session.start",
        "class.create",
        "template.create",
        "password.change",
        "user.disable",
        "login.failed",
    ] {
        assert!(actions.contains(&a), "no {a} in {actions:?}");
    }
    let api = s.ok("GET", "/api/openapi.json", None, None);
    assert_eq!(api["openapi"], "3.0.3");
    assert!(
        api["paths"]["/api/sessions"]["post"]["summary"].is_string(),
        "{api}"
    );

    // Expiry: with 1 s access tokens, a token is refused after 2 s.
    s.extra = vec!["--access-token-ttl".into(), "1".into()];
    s.kill9_and_restart();
    let short = s.token("t1", "t1-pass-123");
    std::thread::sleep(Duration::from_millis(2100));
    let e = s.expect(401, "GET", "/api/auth/me", Some(&short), None);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("expired"),
        "{e}"
    );
    // Sessions survived the restart in their state.
    assert_eq!(
        s.ok("GET", &format!("/api/sessions/{sbid}"), Some(&admin), None)["state"],
        "ready"
    );
}

#[test]
fn authz_tokens_and_bad_input_sqlite() {
    authz_tokens_and_bad_input(DbKind::Sqlite, "caas-authz-sq");
}

#[test]
fn authz_tokens_and_bad_input_postgres() {
    authz_tokens_and_bad_input(DbKind::Postgres, "caas-authz-pg");
}

#[test]
fn bad_database_and_admin_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let cubby = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cubby"))
            .arg("--root")
            .arg(tmp.path())
            .args(args)
            .output()
            .unwrap()
    };
    // A file that is not a database: a clear error, the file untouched.
    let junk = tmp.path().join("junk.db");
    let text = b"not a database, just text\n".repeat(100);
    std::fs::write(&junk, &text).unwrap();
    let url = format!("sqlite://{}", junk.display());
    let out = cubby(&[
        "serve",
        "--database",
        &url,
        "--engine",
        "unix:///nonexistent.sock",
        "--listen",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a usable SQLite database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&junk).unwrap(), text);

    // The admin CLI on the default store (ROOT/caas/caas.db).
    let ok = |args: &[&str]| {
        let out = cubby(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let added = ok(&["admin", "user", "add", "tina", "--role", "teacher"]);
    assert!(added.starts_with("tina teacher "), "{added}");
    let csv = tmp.path().join("users.csv");
    std::fs::write(
        &csv,
        "username,role,password\nsam,student,sam-pass-1\nkim,student,kim-pass-1\n",
    )
    .unwrap();
    assert!(
        ok(&["admin", "user", "import", "--csv", csv.to_str().unwrap()]).contains("imported 2")
    );
    // All or none: a duplicate aborts the whole import.
    std::fs::write(&csv, "zed,student,zed-pass-1\nsam,student,sam-pass-1\n").unwrap();
    let out = cubby(&["admin", "user", "import", "--csv", csv.to_str().unwrap()]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists")
    );
    ok(&["admin", "user", "disable", "kim"]);
    ok(&["admin", "user", "passwd", "sam"]);
    let ls = ok(&["admin", "user", "ls"]);
    assert!(
        ls.contains("kim") && ls.contains("disabled") && !ls.contains("zed"),
        "{ls}"
    );
    let bad = cubby(&["admin", "user", "add", "x y"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("username"));
    // The demo: accounts, a class and the locally built image.
    let demo = ok(&["admin", "init", "--demo"]);
    assert!(demo.contains("student1") && demo.contains("curl"), "{demo}");
    assert!(tmp.path().join("caas/caas.db").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("caas"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "ROOT/caas holds password hashes and the signing key"
    );
    let again = cubby(&["admin", "init", "--demo"]);
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("set up already")
    );
}

/// `cubby serve --demo` over TLS with --single-login: what README command 1
/// prints works as printed (login, start a sandbox), through https.
#[test]
fn demo_over_tls_with_single_login() {
    let d = daemon::Daemon::start("caas-demo-tls");
    let dir = d.tmp.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("this test needs openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = d.tmp.path().join("serve.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = d
        .cubby()
        .arg("serve")
        .args([
            "--demo",
            "--single-login",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--engine")
        .arg(format!("unix://{}", d.socket.display()))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        // Accounts go to stdout, log lines (incl. "listening on") to stderr.
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let text = daemon::eventually("serve listening", || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("listening on https://").then_some(t)
    });
    // Run the printed curl commands (cookie jar in our temp dir).
    let jar = d.tmp.path().join("jar");
    let curls: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("curl "))
        .map(|c| c.replace(" jar ", &format!(" {} ", jar.display())))
        .collect();
    assert_eq!(curls.len(), 3, "{text}");
    let curl = |args: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl --fail-with-body --cacert {} {args}",
                cert.display()
            ))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {args}: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let login = curl(&curls[0]);
    assert_eq!(login["user"]["username"], "student1");
    let session = curl(&curls[1]);
    assert_eq!(session["state"], "ready", "{session}");
    assert_eq!(curl(&curls[2]).as_array().unwrap().len(), 1);
    // Browsers get HTTP/2 (ALPN h2); a cookie-authenticated change from the
    // service's own origin still passes the Origin check (HTTP/2 names the
    // host in :authority, not Host).
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -s --http2 --cacert {} -w '\\n%{{http_version}}' -H 'Origin: https://127.0.0.1:{port}' {}",
            cert.display(),
            curls[1]
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or(("", ""));
    assert_eq!(version, "2", "not HTTP/2: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap()["state"],
        "ready",
        "{text}"
    );
    // --single-login: signing in again ends the first login.
    let first = login["access_token"].as_str().unwrap();
    let again = curl(&curls[0]);
    assert_ne!(again["access_token"].as_str().unwrap(), first);
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&cert)
        .args([
            "-H",
            &format!("Authorization: Bearer {first}"),
            &format!("https://127.0.0.1:{port}/api/auth/me"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

/// Two `cubby serve` (two roots) on one PostgreSQL database and one engine:
/// a teacher presses up-class on both at once, and students press start on
/// both; every student still gets exactly one session and one sandbox.
#[test]
fn two_serves_one_database_postgres() {
    let s = Serve::start("caas-two", DbKind::Postgres, &[]);
    s.user("teach", "teacher", "teach-pass-1");
    let t = s.token("teach", "teach-pass-1");
    let tpl = template(&s, &t, "demo", demo_spec());
    let cid = s.class(
        &t,
        json!({"name": "Two", "code": "two", "capacity": 10, "template_id": tpl}),
    );
    let csv: String = (0..10).map(|i| format!("tw{i},pass-tw-{i:02}\n")).collect();
    let (st, _, body) = s
        .raw(
            "POST",
            &format!("/api/classes/{cid}/students/import"),
            &format!("Authorization: Bearer {t}\r\n"),
            "text/csv",
            Some(&csv),
        )
        .unwrap();
    assert_eq!(st, 200, "{body}");

    // The second instance: its own root, the same database and engine.
    let root2 = s.d.tmp.path().join("root2");
    let port2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log2 = s.d.tmp.path().join("serve2.log");
    let child = Command::new(env!("CARGO_BIN_EXE_cubby"))
        .arg("--root")
        .arg(&root2)
        .env("CUBBY_DATABASE", &s.database)
        .args(["serve", "--listen", &format!("127.0.0.1:{port2}")])
        .arg("--engine")
        .arg(format!("unix://{}", s.d.socket.display()))
        .stdout(std::fs::File::create(s.d.tmp.path().join("serve2.out")).unwrap())
        // Log lines (incl. "listening on") go to stderr.
        .stderr(std::fs::File::create(&log2).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    daemon::eventually("the second serve listening", || {
        std::fs::read_to_string(&log2)
            .unwrap_or_default()
            .contains("listening")
            .then_some(())
    });
    let s2 = |method: &str, path: &str, tok: &str, body: Option<Value>| -> Value {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port2)).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        use std::io::{Read, Write};
        write!(c, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        serde_json::from_str(body).unwrap()
    };
    // Tokens from one instance work on the other (the key is in the database).
    let students: Vec<String> = (0..10)
        .map(|i| s.token(&format!("tw{i}"), &format!("pass-tw-{i:02}")))
        .collect();
    std::thread::scope(|sc| {
        sc.spawn(|| s.ok("POST", &format!("/api/classes/{cid}/up"), Some(&t), None));
        sc.spawn(|| s2("POST", &format!("/api/classes/{cid}/up"), &t, None));
        for tok in &students {
            sc.spawn(|| {
                s.ok(
                    "POST",
                    "/api/sessions",
                    Some(tok),
                    Some(json!({"class_id": cid})),
                )
            });
            sc.spawn(|| s2("POST", "/api/sessions", tok, Some(json!({"class_id": cid}))));
        }
    });
    let all = s.until("/api/sessions", &t, 120, |v| {
        let a = v.as_array().unwrap();
        !a.is_empty() && a.iter().all(|x| x["state"] == "ready")
    });
    assert_eq!(all.as_array().unwrap().len(), 10, "{all}");
    assert_eq!(s2("GET", "/api/sessions", &t, None), all);
    assert_eq!(sandboxes(&s, &cid, true).len(), 10, "double-provisioned");
}

fn metric(s: &Serve, line_start: &str) -> Option<f64> {
    let (st, _, body) = s.raw("GET", "/metrics", "", "", None).unwrap();
    assert_eq!(st, 200, "{body}");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Unclaimed warm-pool members of the template, by name (claimed ones are
/// the sandboxes of active sessions).
fn pool_members(s: &Serve, tpl: &str) -> Vec<String> {
    let claimed: Vec<String> = s
        .ok(
            "GET",
            "/api/sessions?active=true",
            Some(&s.token("root", "admin-pass-1")),
            None,
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["sandbox"].as_str().unwrap().to_string())
        .collect();
    let filter = format!("label=io.cubby.caas.pool={tpl}");
    let mut v: Vec<String> =
        s.d.ok(&["ps", "--filter", &filter, "--format", "{{.Names}}"])
            .lines()
            .filter(|n| n.starts_with("caas-pool-") && !claimed.iter().any(|c| c == n))
            .map(str::to_string)
            .collect();
    v.sort();
    v
}

fn wait_pool(s: &Serve, tpl: &str, n: usize) -> Vec<String> {
    let key = format!("cubby_pool_ready{{template=\"{tpl}\"}}");
    daemon::eventually(&format!("a warm pool of {n}"), || {
        let ready = metric(s, &key).unwrap_or(0.0) as usize;
        let members = pool_members(s, tpl);
        (ready == n && members.len() == n).then_some(members)
    })
}

fn inspect(s: &Serve, name: &str) -> Value {
    let out = s.d.ok(&["inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// A class of more than 253 (issue 13: a /24 cannot hold it): its network
/// is sized from the capacity (300 and headroom: a /23 from serve's
/// --class-subnets), and a student's sandbox is on it.
#[test]
fn class_over_253_gets_a_network_that_holds_it() {
    let s = Serve::start("caas-big", DbKind::Sqlite, &[]);
    s.user("teach", "teacher", "teach-pass-1");
    s.user("ann", "student", "ann-pass-1");
    let t = s.token("teach", "teach-pass-1");
    let tpl = template(&s, &t, "big", demo_spec());
    let cid = s.class(
        &t,
        json!({"name": "Big", "code": "big1", "capacity": 300, "template_id": tpl}),
    );
    s.enrol(&t, &cid, "ann");
    let ann = s.token("ann", "ann-pass-1");
    let v = s.ok(
        "POST",
        "/api/sessions?wait=true",
        Some(&ann),
        Some(json!({"class_id": cid})),
    );
    assert_eq!(v["state"], "ready", "{v}");
    let net = format!("caas-class-{cid}");
    let subnet =
        s.d.ok(&[
            "network",
            "inspect",
            &net,
            "--format",
            "{{(index .IPAM.Config 0).Subnet}}",
        ])
        .trim()
        .to_string();
    let range = s.d.net.class_range();
    let (base, _) = range.split_once('/').unwrap();
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    let (addr, prefix) = subnet.split_once('/').unwrap();
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    assert_eq!(prefix, "23", "{subnet}: 300 and headroom need a /23");
    assert!(
        (u32::from(base)..u32::from(base) + 1024).contains(&u32::from(addr)),
        "{subnet} not in {range}"
    );
    let c = inspect(&s, v["sandbox"].as_str().unwrap());
    let ip: std::net::Ipv4Addr = c["NetworkSettings"]["Networks"][&net]["IPAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (u32::from(addr)..u32::from(addr) + 512).contains(&u32::from(ip)),
        "{ip} not in {subnet}"
    );
    s.ok("POST", &format!("/api/classes/{cid}/down"), Some(&t), None);
}

/// A warm pool of 2: a start claims a member (the session's sandbox, on
/// the class network only, the template's env and limits,
/// nothing left from pool life, the student's archive restored), the pool
/// refills, members survive a kill -9 of serve, and a template change
/// replaces them.
#[test]
fn warm_pool_claim_refill_restart_and_template_change() {
    let mut s = Serve::start("caas-pool", DbKind::Sqlite, &[]);
    s.user("root", "admin", "admin-pass-1");
    s.user("teach", "teacher", "teach-pass-1");
    s.user("ann", "student", "ann-pass-1");
    let t = s.token("teach", "teach-pass-1");
    let mut spec = demo_spec();
    spec["warm_pool"] = json!(2);
    spec["env"] = json!(["POOLTEST=one"]);
    let tpl = template(&s, &t, "pooled", spec.clone());
    let cid = s.class(
        &t,
        json!({"name": "Pool", "code": "pool1", "capacity": 5, "template_id": tpl}),
    );
    s.enrol(&t, &cid, "ann");
    let members = wait_pool(&s, &tpl, 2);
    // Pool life writes into every member's workspace.
    for m in &members {
        s.d.ok(&["exec", m, "sh", "-c", "echo pool > /workspace/poollife"]);
    }
    let ann = s.token("ann", "ann-pass-1");
    let start = |s: &Serve| {
        let v = s.ok(
            "POST",
            "/api/sessions?wait=true",
            Some(&ann),
            Some(json!({"class_id": cid})),
        );
        assert_eq!(v["state"], "ready", "{v}");
        v
    };
    let admitted = metric(&s, "cubby_admission_wait_seconds_count");
    let s1 = start(&s);
    assert_eq!(metric(&s, "cubby_pool_claims_total"), Some(1.0));
    // A claim takes no provisioning slot (it never entered the queue).
    assert_eq!(metric(&s, "cubby_admission_wait_seconds_count"), admitted);
    assert_eq!(metric(&s, "cubby_pool_skipped_kept_total"), Some(0.0));
    let sb = s1["sandbox"].as_str().unwrap().to_string();
    assert!(members.contains(&sb), "{sb} not one of {members:?}");
    let c = inspect(&s, &sb);
    let env: Vec<String> = serde_json::from_value(c["Config"]["Env"].clone()).unwrap();
    assert!(env.contains(&"POOLTEST=one".to_string()), "{env:?}");
    assert!(env.contains(&"HOME=/workspace".to_string()), "{env:?}");
    assert_eq!(c["HostConfig"]["Memory"], json!(64 << 20));
    assert_eq!(c["HostConfig"]["NanoCpus"], json!(500_000_000));
    assert_eq!(c["HostConfig"]["PidsLimit"], json!(64));
    assert_eq!(c["Config"]["User"], "1000:1000");
    let nets: Vec<&String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(nets, vec![&format!("caas-class-{cid}")], "{c}");
    let ip = c["NetworkSettings"]["Networks"][format!("caas-class-{cid}")]["IPAddress"].clone();
    assert_eq!(s1["address"], ip);
    assert!(c["Config"]["Labels"]["io.cubby.caas"].is_string(), "{c}");
    // Nothing from pool life; the app answers; the student works.
    let ls = s.d.ok(&["exec", &sb, "ls", "-A", "/workspace"]);
    assert!(!ls.contains("poollife"), "{ls}");
    let page =
        s.d.ok(&["exec", &sb, "wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(!page.is_empty());
    s.d.ok(&["exec", &sb, "sh", "-c", "echo mine > /workspace/mine.txt"]);
    // Not an orphan: the row owns it.
    let orphans = s.ok(
        "GET",
        "/api/orphans",
        Some(&s.token("root", "admin-pass-1")),
        None,
    );
    assert!(!orphans.to_string().contains(&sb), "{orphans}");
    // Stop: archived, sandbox and the member's volume removed.
    let id1 = s1["id"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/api/sessions/{id1}/stop"),
        Some(&ann),
        None,
    );
    s.until(&format!("/api/sessions/{id1}"), &ann, 60, |v| {
        v["state"] == "stopped"
    });
    assert!(s.d.docker(&["inspect", &sb]).status.code() != Some(0));
    // The pool refilled; a second start claims again and restores.
    let members = wait_pool(&s, &tpl, 2);
    for m in &members {
        s.d.ok(&["exec", m, "sh", "-c", "echo pool > /workspace/poollife"]);
    }
    let s2 = start(&s);
    assert_eq!(metric(&s, "cubby_pool_claims_total"), Some(2.0));
    let sb2 = s2["sandbox"].as_str().unwrap().to_string();
    let ls = s.d.ok(&["exec", &sb2, "ls", "-A", "/workspace"]);
    assert!(ls.contains("mine.txt") && !ls.contains("poollife"), "{ls}");
    let mine = s.d.ok(&["exec", &sb2, "cat", "/workspace/mine.txt"]);
    assert_eq!(mine.trim(), "mine");
    // kill -9 of serve: the members are adopted, not remade.
    let members = wait_pool(&s, &tpl, 2);
    s.kill9_and_restart();
    assert_eq!(wait_pool(&s, &tpl, 2), members);
    assert_eq!(metric(&s, "cubby_pool_made_total"), Some(0.0));
    // The session of before the kill is still its own, not an orphan.
    let orphans = s.ok(
        "GET",
        "/api/orphans",
        Some(&s.token("root", "admin-pass-1")),
        None,
    );
    assert!(!orphans.to_string().contains(&sb2), "{orphans}");
    // A template change: the old members go, new ones come.
    let t = s.token("teach", "teach-pass-1");
    spec["env"] = json!(["POOLTEST=two"]);
    s.ok(
        "PUT",
        &format!("/api/templates/{tpl}"),
        Some(&t),
        Some(json!({"spec": spec})),
    );
    let fresh = daemon::eventually("the pool replaced", || {
        let now = wait_pool(&s, &tpl, 2);
        now.iter().all(|m| !members.contains(m)).then_some(now)
    });
    let c = inspect(&s, &fresh[0]);
    let env: Vec<String> = serde_json::from_value(c["Config"]["Env"].clone()).unwrap();
    assert!(env.contains(&"POOLTEST=two".to_string()), "{env:?}");
    for m in &members {
        assert!(
            s.d.docker(&["inspect", m]).status.code() != Some(0),
            "{m} kept"
        );
    }
}

/// Ready members of class `cid`'s own pool (metric and engine agree).
fn wait_class_pool(s: &Serve, cid: &str, n: usize) -> Vec<String> {
    let key = format!("cubby_pool_class_ready{{class=\"{cid}\"}}");
    daemon::eventually(&format!("a class pool of {n}"), || {
        let ready = metric(s, &key).unwrap_or(0.0) as usize;
        let members = class_pool_members(s, cid);
        (ready == n && members.len() == n).then_some(members)
    })
}

/// Unclaimed members of class `cid`'s pool in the engine.
fn class_pool_members(s: &Serve, cid: &str) -> Vec<String> {
    let claimed = s
        .ok(
            "GET",
            "/api/sessions?active=true",
            Some(&s.token("root", "admin-pass-1")),
            None,
        )
        .to_string();
    let filter = format!("label=io.cubby.caas.pool.class={cid}");
    let mut v: Vec<String> =
        s.d.ok(&["ps", "--filter", &filter, "--format", "{{.Names}}"])
            .lines()
            .filter(|n| !claimed.contains(&format!("\"{n}\"")))
            .map(str::to_string)
            .collect();
    v.sort();
    v
}

/// What a sandbox looks like from inside, minus what differs per sandbox
/// (addresses, hostname): interfaces, credentials, capabilities, mounts,
/// limits as the kernel applies them, HOME, the workspace's contents.
fn seen_from_inside(s: &Serve, name: &str) -> String {
    let script = "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort; \
                  grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
                  awk '$2 == \"/\" || $2 == \"/tmp\" || $2 == \"/workspace\" {print $2, $3, substr($4, 1, 2)}' /proc/mounts | sort; \
                  ulimit -n; echo HOME=$HOME; pwd; ls -A /workspace";
    s.d.ok(&["exec", name, "sh", "-c", script])
}

/// Issue 13: a class with a scheduled start (an exam window) on a pooled
/// template gets a pool of its own sized from its roster, made on the
/// class network; a start of that class claims one with no network change
/// and gets a sandbox that looks, from inside and in the engine, like a
/// fresh one; another class never gets one; at the window's end the
/// leftovers go.
#[test]
fn class_pool_warmed_on_the_class_network_for_a_scheduled_start() {
    let s = Serve::start("caas-cpool", DbKind::Sqlite, &[]);
    s.user("root", "admin", "admin-pass-1");
    s.user("teach", "teacher", "teach-pass-1");
    for u in ["ann", "bob", "cat", "dan"] {
        s.user(u, "student", &format!("{u}-pass-1"));
    }
    let t = s.token("teach", "teach-pass-1");
    let mut spec = demo_spec();
    spec["warm_pool"] = json!(1);
    spec["env"] = json!(["POOLTEST=one"]);
    let tpl = template(&s, &t, "cpooled", spec.clone());
    // The same sandbox without a pool: dan's fresh one is the reference.
    spec["warm_pool"] = json!(0);
    let plain = template(&s, &t, "cplain", spec);
    let cid = s.class(
        &t,
        json!({"name": "Exam", "code": "cpool1", "capacity": 5, "template_id": tpl}),
    );
    let other = s.class(
        &t,
        json!({"name": "Other", "code": "cpool2", "capacity": 5, "template_id": tpl}),
    );
    let fresh_class = s.class(
        &t,
        json!({"name": "Fresh", "code": "cpool3", "capacity": 5, "template_id": plain}),
    );
    s.enrol(&t, &cid, "ann");
    s.enrol(&t, &cid, "bob");
    s.enrol(&t, &other, "cat");
    s.enrol(&t, &fresh_class, "dan");
    // No schedule yet: only the template's pool.
    wait_pool(&s, &tpl, 1);
    assert_eq!(
        metric(&s, &format!("cubby_pool_class_ready{{class=\"{cid}\"}}")),
        None
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    s.ok(
        "PUT",
        &format!("/api/classes/{cid}/exam"),
        Some(&t),
        Some(json!({"starts_at": now - 5, "ends_at": now + 3600})),
    );
    // Two enrolled: two members, on the class network only.
    let members = wait_class_pool(&s, &cid, 2);
    let net = format!("caas-class-{cid}");
    for m in &members {
        let c = inspect(&s, m);
        let nets: Vec<&String> = c["NetworkSettings"]["Networks"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(nets, vec![&net], "{m}: {c}");
        s.d.ok(&["exec", m, "sh", "-c", "echo pool > /workspace/poollife"]);
    }
    let start = |who: &str, class: &str| {
        let tok = s.token(who, &format!("{who}-pass-1"));
        let v = s.ok(
            "POST",
            "/api/sessions?wait=true",
            Some(&tok),
            Some(json!({"class_id": class})),
        );
        assert_eq!(v["state"], "ready", "{v}");
        v["sandbox"].as_str().unwrap().to_string()
    };
    // Another class: never a member of this class's pool.
    let cat = start("cat", &other);
    assert!(!members.contains(&cat), "{cat} is class {cid}'s");
    assert_eq!(class_pool_members(&s, &cid), members);
    let connects = r#"cubby_pool_claim_phase_seconds_count{phase="connect"}"#;
    let connected = metric(&s, connects);
    // This class: a member, claimed without a network change.
    let ann = start("ann", &cid);
    assert!(members.contains(&ann), "{ann} not one of {members:?}");
    assert_eq!(metric(&s, connects), connected);
    let dan = start("dan", &fresh_class);
    assert!(!dan.starts_with("caas-pool-"), "{dan}");
    // In the engine: what a fresh sandbox has (labels aside: they are
    // immutable; the session row names the claimed one).
    let (a, d) = (inspect(&s, &ann), inspect(&s, &dan));
    for path in [
        "/Config/User",
        "/Config/Env",
        "/Config/Cmd",
        "/Config/Entrypoint",
        "/Config/WorkingDir",
        "/Config/ExposedPorts",
        "/HostConfig/Memory",
        "/HostConfig/MemorySwap",
        "/HostConfig/NanoCpus",
        "/HostConfig/PidsLimit",
        "/HostConfig/ReadonlyRootfs",
        "/HostConfig/CapDrop",
        "/HostConfig/SecurityOpt",
        "/HostConfig/Tmpfs",
        "/HostConfig/Privileged",
    ] {
        assert_eq!(a.pointer(path), d.pointer(path), "{path}");
    }
    let nets: Vec<&String> = a["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(nets, vec![&net]);
    assert_eq!(a["HostConfig"]["NetworkMode"], json!(net));
    assert_eq!(a["Config"]["Labels"]["io.cubby.caas.class"], json!(cid));
    // From inside: the same, and the hostname is its own by the same rule
    // (the engine's: the container id's first 12 characters).
    let inside = seen_from_inside(&s, &ann);
    for want in [
        "eth0\nlo\n",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "HOME=/workspace",
    ] {
        assert!(inside.contains(want), "{want:?} not in {inside}");
    }
    assert!(!inside.contains("poollife"), "{inside}");
    assert_eq!(inside, seen_from_inside(&s, &dan));
    for (name, c) in [(&ann, &a), (&dan, &d)] {
        let host = s.d.ok(&["exec", name, "hostname"]);
        assert_eq!(host.trim(), &c["Id"].as_str().unwrap()[..12], "{name}");
    }
    let page =
        s.d.ok(&["exec", &ann, "wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(!page.is_empty());
    // The window ends: ann's session is collected, bob's unclaimed member
    // goes.
    s.ok(
        "PUT",
        &format!("/api/classes/{cid}/exam"),
        Some(&t),
        Some(json!({"starts_at": now - 5, "ends_at": now + 1})),
    );
    let root = s.token("root", "admin-pass-1");
    s.until("/api/sessions?active=true", &root, 60, |v| {
        !v.to_string().contains(&ann)
    });
    daemon::eventually("the class's pool removed", || {
        class_pool_members(&s, &cid).is_empty().then_some(())
    });
    for m in &members {
        assert!(
            s.d.docker(&["inspect", m]).status.code() != Some(0),
            "{m} kept"
        );
    }
    assert_eq!(
        metric(&s, &format!("cubby_pool_class_ready{{class=\"{cid}\"}}")),
        None
    );
}

/// The pool network too small for a grown pool (issue 13): its ready
/// members are removed so that it is made anew with room, and the pool
/// refills on the new one. The small network is made here (a /28, as the
/// service would make it: managed, internal, host-isolated) so that a
/// pool of a few outgrows it.
#[test]
fn warm_pool_regrows_its_network() {
    let s = Serve::start("caas-regrow", DbKind::Sqlite, &[]);
    s.user("root", "admin", "admin-pass-1");
    s.user("teach", "teacher", "teach-pass-1");
    let small = s.d.net.subnet(0).replace(".0/24", ".0/28");
    s.d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &small,
        "--label",
        "io.cubby.caas=1",
        "-o",
        "cubby.isolate_host=true",
        "caas-pool",
    ]);
    let t = s.token("teach", "teach-pass-1");
    let mut spec = demo_spec();
    spec["warm_pool"] = json!(1);
    let tpl = template(&s, &t, "regrow", spec.clone());
    // 1 and headroom fit a /28 (13 addresses): made on it.
    let first = wait_pool(&s, &tpl, 1);
    let subnet = || {
        s.d.ok(&[
            "network",
            "inspect",
            "caas-pool",
            "--format",
            "{{(index .IPAM.Config 0).Subnet}}",
        ])
        .trim()
        .to_string()
    };
    assert_eq!(subnet(), small);
    // 5 and headroom do not: the member goes, the network is made anew.
    spec["warm_pool"] = json!(5);
    s.ok(
        "PUT",
        &format!("/api/templates/{tpl}"),
        Some(&t),
        Some(json!({"spec": spec})),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let grown = loop {
        let members = pool_members(&s, &tpl);
        let ready = metric(&s, &format!("cubby_pool_ready{{template=\"{tpl}\"}}"));
        if members.len() == 5 && ready == Some(5.0) {
            break members;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never reached 5 on a new network: {members:?}\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!grown.contains(&first[0]), "{grown:?}");
    assert!(s.d.docker(&["inspect", &first[0]]).status.code() != Some(0));
    let now = subnet();
    assert!(now != small && now.ends_with("/24"), "{now}");
    assert!(
        s.log_text().contains("is too small for the pools' sizes"),
        "{}",
        s.log_text()
    );
    for m in &grown {
        let c = inspect(&s, m);
        let ip = c["NetworkSettings"]["Networks"]["caas-pool"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!ip.is_empty(), "{m}: {c}");
    }
}
