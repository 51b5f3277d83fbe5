//! The classroom service in the browser, from the outside: `cubby serve`
//! (the real binary) on a real cubby daemon, sandboxes from the locally
//! built demo image. The routing proxy is attacked (another student, no
//! login, forged and expired tokens, dot segments, encoded slashes, a Host
//! naming another session, cross-site websockets) and checked from the
//! sandbox's side (what it receives: no cubby credentials, the prefix
//! stripped); the web terminal runs a shell as the sandbox's user; the UI
//! is driven in Debian's chromium by playwright-core (web-tests/).
//! Needs root, cgroups, busybox-static, nftables; the browser test needs
//! node, chromium and `npm ci` in crates/caas/web-tests.

#[path = "common/caas.rs"]
mod caas;
mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use caas::{DbKind, Serve, IMAGE};
use serde_json::{json, Value};

/// A sandbox app that answers every request with the request head it
/// received (so the test sees what the sandbox sees), `/big` with 1 MiB,
/// and an Upgrade with 101 and then echoes bytes. busybox only (run by
/// `sh`: the sandbox's /tmp is noexec).
const ECHO_APP: &str = r#"#!/bin/sh
cr=$(printf '\r')
: > /tmp/req.$$
while IFS= read -r line; do
  line=${line%"$cr"}
  echo "$line" >> /tmp/req.$$
  [ -z "$line" ] && break
done
if grep -qi '^upgrade:' /tmp/req.$$; then
  key=$(grep -i '^sec-websocket-key:' /tmp/req.$$ | cut -d ':' -f 2 | tr -d ' \r')
  accept=$(printf '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' "$key" | sha1sum | cut -d ' ' -f 1 | xxd -r -p | base64)
  printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
  exec cat
fi
path=$(head -n 1 /tmp/req.$$ | cut -d ' ' -f 2)
if [ "$path" = /big ]; then
  printf 'HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n'
  exec head -c 1048576 /dev/zero
fi
body=$(cat /tmp/req.$$)
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: cubby_access=planted; Path=/\r\nSet-Cookie: app=1\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
"#;

fn echo_template(s: &Serve, tok: &str) -> String {
    use base64::Engine;
    let spec = json!({
        "image": IMAGE, "port": 8080, "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64,
        "env": [format!("APP={}", base64::engine::general_purpose::STANDARD.encode(ECHO_APP))],
        "command": ["sh", "-c", "echo \"$APP\" | base64 -d > /tmp/app.sh && exec nc -ll -p 8080 -e /bin/sh /tmp/app.sh"],
    });
    s.template(tok, json!({"name": "echo", "spec": spec}))
}

/// A request with the login cookie (or none) and extra header lines.
fn get(s: &Serve, path: &str, token: Option<&str>, extra: &str) -> (u16, String, String) {
    let cookie = token
        .map(|t| format!("Cookie: cubby_access={t}; app=mine\r\n"))
        .unwrap_or_default();
    s.raw("GET", path, &format!("{cookie}{extra}"), "text/plain", None)
        .unwrap()
}

/// A request with a given Host (and extra header lines, e.g. cookies).
fn host_req(s: &Serve, host: &str, method: &str, path: &str, extra: &str) -> (u16, String, String) {
    let mut t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        t,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    t.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A response header's value (first of that name).
fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Sets up teacher + two students in a class on `template`; returns
/// (teacher, ann, bob, admin) tokens and the class id.
fn class_of_two(s: &Serve, tag: &str) -> (String, String, String, String, String) {
    s.user("admin", "admin", "admin-pass-123");
    s.user("teach", "teacher", "teach-pass-123");
    s.user("ann", "student", "ann-pass-123");
    s.user("bob", "student", "bob-pass-123");
    let admin = s.token("admin", "admin-pass-123");
    let teach = s.token("teach", "teach-pass-123");
    let tpl = echo_template(s, &teach);
    let class = s.class(
        &teach,
        json!({"name": "Web", "code": tag, "capacity": 5, "template_id": tpl}),
    );
    for u in ["ann", "bob"] {
        s.enrol(&teach, &class, u);
    }
    let ann = s.token("ann", "ann-pass-123");
    let bob = s.token("bob", "bob-pass-123");
    (teach, ann, bob, admin, class)
}

fn start(s: &Serve, tok: &str, class: &str) -> String {
    let v = s.ok(
        "POST",
        "/api/sessions?wait=true",
        Some(tok),
        Some(json!({"class_id": class})),
    );
    assert_eq!(v["state"], "ready", "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Reads a tungstenite stream until `want` shows up (or 20 s).
fn read_until(ws: &mut tungstenite::WebSocket<TcpStream>, want: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(tungstenite::Message::Text(t)) => seen.push_str(t.as_str()),
            Ok(tungstenite::Message::Close(_)) => return Err(format!("closed; saw {seen:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("{e}; saw {seen:?}")),
        }
        if seen.contains(want) {
            return Ok(seen);
        }
    }
    Err(format!("no {want:?} within 20 s; saw {seen:?}"))
}

/// Opens a websocket on serve with the login cookie and an Origin.
fn ws_open(
    s: &Serve,
    path: &str,
    token: &str,
    origin: Option<&str>,
) -> Result<tungstenite::WebSocket<TcpStream>, (u16, String)> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{}{path}", s.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", format!("cubby_access={token}").parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    match tungstenite::client(req, tcp) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err((
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => Err((0, e.to_string())),
    }
}

/// Proxy: who gets through, what the sandbox sees, path tricks, streaming,
/// upgrades, ended and unknown sessions, activity.
#[test]
fn proxy_access_control_and_forwarding() {
    let mut s = Serve::start(
        "caas-web-proxy",
        DbKind::Sqlite,
        &["--domain", "apps.test", "--path-routing"],
    );
    let (teach, ann, bob, admin, class) = class_of_two(&s, "webp");
    let a = start(&s, &ann, &class);
    let b = start(&s, &bob, &class);

    // /r/A (no slash) sends the browser to /r/A/.
    let (st, head, _) = get(&s, &format!("/r/{a}?x=1"), Some(&ann), "");
    assert_eq!(st, 308, "{head}");
    assert!(head.contains(&format!("location: /r/{a}/?x=1")), "{head}");

    // The student gets through; the sandbox sees the stripped path, the
    // app's own cookie but no cubby cookie, no Authorization.
    let (st, head, body) = get(
        &s,
        &format!("/r/{a}/hello/world?q=1"),
        Some(&ann),
        "Authorization: Bearer some-token\r\nX-Forwarded-Host: evil\r\n",
    );
    assert_eq!(st, 200, "{head}\n{body}");
    assert!(body.starts_with("GET /hello/world?q=1 HTTP/1.1"), "{body}");
    let lower = body.to_ascii_lowercase();
    assert!(lower.contains("cookie: app=mine"), "{body}");
    assert!(
        !lower.contains("cubby_access") && !lower.contains("authorization"),
        "{body}"
    );
    assert!(!lower.contains("evil"), "{body}");
    assert!(
        lower.contains(&format!("x-forwarded-prefix: /r/{a}")),
        "{body}"
    );
    assert!(lower.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    // The sandbox cannot plant cubby's cookie; its own passes.
    let hl = head.to_ascii_lowercase();
    assert!(!hl.contains("cubby_access=planted"), "{head}");
    assert!(hl.contains("set-cookie: app=1"), "{head}");

    // The class's teacher and an admin get through.
    for t in [&teach, &admin] {
        let (st, _, body) = get(&s, &format!("/r/{a}/t"), Some(t), "");
        assert_eq!(st, 200, "{body}");
    }
    // Logins are cached for speed, revocation still cuts at once: a login
    // used through the proxy, then logged out, is refused on its next use.
    let short_lived = s.token("ann", "ann-pass-123");
    assert_eq!(get(&s, &format!("/r/{a}/t"), Some(&short_lived), "").0, 200);
    s.ok("POST", "/api/auth/logout", Some(&short_lived), None);
    assert_eq!(get(&s, &format!("/r/{a}/t"), Some(&short_lived), "").0, 401);
    // Another student, no login, a forged token: refused with a page.
    let (st, _, body) = get(&s, &format!("/r/{a}/"), Some(&bob), "");
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("No such sandbox"), "{body}");
    let (st, _, body) = get(&s, &format!("/r/{a}/"), None, "");
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("sign in"), "{body}");
    let mut forged = ann.clone();
    forged.pop();
    forged.push(if ann.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(get(&s, &format!("/r/{a}/"), Some(&forged), "").0, 401);
    // Path tricks: ann may not reach bob's sandbox through her own prefix.
    for trick in [
        format!("/r/{a}/../{b}/"),
        format!("/r/{a}/%2e%2e/{b}/"),
        format!("/r/{a}%2F..%2F{b}/"),
        format!("/r/{a}/..%2f{b}/"),
        format!("/r/{a}/..%5c{b}/"),
        format!("/r/{a}/./x"),
    ] {
        let (st, _, body) = get(&s, &trick, Some(&ann), "");
        assert_eq!(st, 400, "{trick}: {body}");
        assert!(
            !body.contains("HTTP/1.1"),
            "{trick} reached a sandbox: {body}"
        );
    }
    // A Host naming bob's session changes nothing: routing is by path.
    let mut t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        t,
        "GET /r/{b}/ HTTP/1.1\r\nHost: {b}.localhost\r\nCookie: cubby_access={ann}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    t.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    // Unknown session: a page, at once.
    let (st, _, body) = get(&s, &format!("/r/{}/", "0".repeat(32)), Some(&admin), "");
    assert_eq!(st, 404, "{body}");

    // 1 MiB streamed back whole.
    let (st, _, body) = get(&s, &format!("/r/{a}/big"), Some(&ann), "");
    assert_eq!(st, 200);
    assert_eq!(body.len(), 1 << 20);

    // An upgrade through the proxy: bytes both ways after 101. Another
    // student's and a cross-site upgrade are refused.
    let mut ws = ws_open(&s, &format!("/r/{a}/ws"), &ann, None).expect("upgrade");
    ws.send(tungstenite::Message::Text("ping-through-proxy".into()))
        .unwrap();
    // The app is `cat`: our own masked frame comes back as bytes; the
    // text is in it unmasked only if we read the raw frame. Read it raw.
    let raw = ws.get_mut();
    let mut buf = [0u8; 256];
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert!(n >= 18 + 6, "echoed frame too short: {n}");
    assert_eq!(buf[0], 0x81, "a text frame came back");
    assert_eq!(
        ws_open(&s, &format!("/r/{a}/ws"), &bob, None)
            .unwrap_err()
            .0,
        404
    );
    assert_eq!(
        ws_open(&s, &format!("/r/{a}/ws"), &ann, Some("http://evil.example"))
            .unwrap_err()
            .0,
        403
    );

    // Activity was recorded for ann's session.
    let act = s.ok(
        "GET",
        &format!("/api/sessions/{a}/activity"),
        Some(&ann),
        None,
    );
    assert!(act["proxied_requests"].as_u64().unwrap() >= 5, "{act}");
    assert!(
        act["bytes_from_sandbox"].as_u64().unwrap() > 1 << 20,
        "{act}"
    );
    assert!(act["last_active"].as_i64().unwrap() > 0, "{act}");
    s.expect(
        404,
        "GET",
        &format!("/api/sessions/{a}/activity"),
        Some(&bob),
        None,
    );

    // {session}.{domain}: the login is carried by a one-time code to the
    // session's own host, which sets a cookie of its own.
    let port = s.port;
    let (ah, bh) = (
        format!("{a}.apps.test:{port}"),
        format!("{b}.apps.test:{port}"),
    );
    let (st, head, _) = host_req(
        &s,
        &format!("127.0.0.1:{port}"),
        "GET",
        &format!("/api/sessions/{a}/open"),
        &format!("Cookie: cubby_access={ann}\r\n"),
    );
    assert_eq!(st, 303, "{head}");
    let loc = header(&head, "location");
    let prefix = format!("http://{ah}/.cubby/enter?code=");
    assert!(loc.starts_with(&prefix), "{loc}");
    let enter = &loc["http://".len() + ah.len()..];
    assert_eq!(
        get(&s, &format!("/api/sessions/{a}/open"), Some(&bob), "").0,
        404
    );
    let (st, head, _) = host_req(&s, &ah, "GET", enter, "");
    assert_eq!(st, 303, "{head}");
    let set = header(&head, "set-cookie");
    assert!(
        set.starts_with("cubby_app=") && set.contains("HttpOnly"),
        "{set}"
    );
    let app_cookie = set.split(';').next().unwrap().to_string();
    // One use only, and only for its own host.
    assert_eq!(host_req(&s, &ah, "GET", enter, "").0, 401);
    let (st, _, body) = host_req(
        &s,
        &ah,
        "GET",
        "/x?y=1",
        &format!("Cookie: {app_cookie}; app=2\r\n"),
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.starts_with("GET /x?y=1 HTTP/1.1"), "{body}");
    assert!(
        !body.contains("cubby_app") && body.contains("app=2"),
        "{body}"
    );
    assert_eq!(
        host_req(&s, &bh, "GET", "/", &format!("Cookie: {app_cookie}\r\n")).0,
        404
    );
    assert_eq!(host_req(&s, &ah, "GET", "/", "").0, 401);
    let cross = format!("Cookie: {app_cookie}\r\nOrigin: http://{bh}\r\n");
    assert_eq!(host_req(&s, &ah, "POST", "/x", &cross).0, 403);
    // The session host's cookie is not an API token.
    let app_token = app_cookie.trim_start_matches("cubby_app=");
    s.expect(401, "GET", "/api/auth/me", Some(app_token), None);
    // Without --domain, open is the /r/ path.

    // Ended session: a clear page, never a hang.
    s.ok("POST", &format!("/api/sessions/{a}/stop"), Some(&ann), None);
    let (st, _, body) = get(&s, &format!("/r/{a}/"), Some(&ann), "");
    assert_eq!(st, 410, "{body}");
    assert!(body.contains("ended"), "{body}");

    // Expired tokens are refused by the proxy too; this serve runs without
    // listener threads (--proxy-threads 0: all on the main runtime), so
    // that mode proxies too.
    s.extra = vec![
        "--path-routing".into(),
        "--access-token-ttl".into(),
        "3".into(),
        "--proxy-threads".into(),
        "0".into(),
    ];
    s.kill9_and_restart();
    let short = s.token("bob", "bob-pass-123");
    assert_eq!(get(&s, &format!("/r/{b}/"), Some(&short), "").0, 200);
    std::thread::sleep(Duration::from_millis(4100));
    assert_eq!(get(&s, &format!("/r/{b}/"), Some(&short), "").0, 401);
}

/// The web terminal: a shell as the sandbox user, input, output, resize;
/// only for those who may see the session; not from another site.
#[test]
fn terminal_shell_in_the_sandbox() {
    let s = Serve::start("caas-web-term", DbKind::Sqlite, &[]);
    let (teach, ann, bob, _admin, class) = class_of_two(&s, "webt");
    let a = start(&s, &ann, &class);
    // Without --path-routing (the default) apps are never served on the
    // service's origin; without --domain either, "open" explains why.
    let (st, _, body) = get(&s, &format!("/r/{a}/"), Some(&ann), "");
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("Open app"), "{body}");
    let (st, _, body) = get(&s, &format!("/api/sessions/{a}/open"), Some(&ann), "");
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("--domain"), "{body}");
    let path = format!("/api/sessions/{a}/terminal");
    let origin = format!("http://127.0.0.1:{}", s.port);
    let mut ws = ws_open(&s, &path, &ann, Some(&origin)).expect("terminal");
    // The shell's prompt first: input before it races the shell's start.
    read_until(&mut ws, "$ ").unwrap();
    ws.send(tungstenite::Message::Text(r#"{"resize":[101,31]}"#.into()))
        .unwrap();
    ws.send(tungstenite::Message::Binary(
        "echo uid=$(id -u) sum=$((6*7)); stty size; pwd\n".into(),
    ))
    .unwrap();
    // `stty size` prints "rows cols"; the typed line never contains it.
    let mut out = read_until(&mut ws, "31 101").unwrap();
    assert!(out.contains("uid=1000 sum=42"), "{out}");
    // `pwd` answers after `stty size`: read on until its line is out.
    let after_size = out.split("31 101").last().unwrap_or_default();
    if !after_size.contains("\n/workspace") {
        out.push_str(&read_until(&mut ws, "\n/workspace").unwrap());
    }
    assert!(out.contains("\n/workspace"), "{out}");
    // Ctrl-C interrupts a running command; the shell lives on.
    // "sleeping-9" is printed by the foreground job itself, which then
    // becomes the sleep: once it is out, ^C meets the sleep (printed by the
    // shell before it forked the sleep, a ^C could reach the shell first
    // and the sleep would run its 30 s).
    ws.send(tungstenite::Message::Binary(
        "sh -c 'echo sleeping-$((3*3)); exec sleep 30'\n".into(),
    ))
    .unwrap();
    read_until(&mut ws, "sleeping-9").unwrap();
    ws.send(tungstenite::Message::Binary(vec![3u8].into()))
        .unwrap();
    ws.send(tungstenite::Message::Binary("echo after-$((1+1))\n".into()))
        .unwrap();
    read_until(&mut ws, "after-2").unwrap();
    // The teacher opens the same student's terminal.
    let mut t = ws_open(&s, &path, &teach, None).expect("teacher terminal");
    read_until(&mut t, "$ ").unwrap();
    t.send(tungstenite::Message::Binary(
        "echo teacher-$((2*3))\n".into(),
    ))
    .unwrap();
    read_until(&mut t, "teacher-6").unwrap();
    // A dropped websocket keeps the shell: a reconnect with the token from
    // the first frame (same user) gets it back, variables and all; one
    // while the old socket still looks alive takes it over; someone else's
    // token gets a fresh shell.
    let hello = |ws: &mut tungstenite::WebSocket<TcpStream>| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(tungstenite::Message::Text(t)) = ws.read() {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
        panic!("no hello frame");
    };
    let mut k = ws_open(&s, &path, &ann, None).expect("terminal");
    let first = hello(&mut k);
    assert_eq!(first["fresh"], true, "{first}");
    let token = first["resume"].as_str().unwrap().to_string();
    read_until(&mut k, "$ ").unwrap();
    k.send(tungstenite::Message::Binary(
        "V=kept-$((5*3)); echo set-$V\n".into(),
    ))
    .unwrap();
    read_until(&mut k, "set-kept-15").unwrap();
    drop(k); // the TCP connection just goes away
    let resumed = format!("{path}?resume={token}");
    let mut k = ws_open(&s, &resumed, &ann, None).expect("resume");
    assert_eq!(hello(&mut k)["fresh"], false);
    k.send(tungstenite::Message::Binary("echo again-$V\n".into()))
        .unwrap();
    read_until(&mut k, "again-kept-15").unwrap();
    // Half-open: the old socket is still up; the new one takes over.
    let mut k2 = ws_open(&s, &resumed, &ann, None).expect("take over");
    assert_eq!(hello(&mut k2)["fresh"], false);
    k2.send(tungstenite::Message::Binary("echo over-$V\n".into()))
        .unwrap();
    read_until(&mut k2, "over-kept-15").unwrap();
    assert!(read_until(&mut k, "never-printed")
        .unwrap_err()
        .contains("closed"));
    let mut other = ws_open(&s, &resumed, &teach, None).expect("teacher");
    assert_eq!(hello(&mut other)["fresh"], true);
    drop(other);
    k2.send(tungstenite::Message::Binary("exit\n".into()))
        .unwrap();
    assert!(read_until(&mut k2, "never-printed")
        .unwrap_err()
        .contains("closed"));
    // Typing counts as activity.
    let act = s.ok(
        "GET",
        &format!("/api/sessions/{a}/activity"),
        Some(&ann),
        None,
    );
    assert!(act["terminal_input_bytes"].as_u64().unwrap() > 40, "{act}");
    // Another student, another site, plain HTTP: refused.
    assert_eq!(ws_open(&s, &path, &bob, None).unwrap_err().0, 404);
    assert_eq!(
        ws_open(&s, &path, &ann, Some("http://evil.example"))
            .unwrap_err()
            .0,
        403
    );
    let (st, _, body) = get(&s, &path, Some(&ann), "");
    assert_eq!(st, 400, "{body}");
    // `exit` ends the shell and closes the websocket.
    ws.send(tungstenite::Message::Binary("exit\n".into()))
        .unwrap();
    assert!(read_until(&mut ws, "never-printed")
        .unwrap_err()
        .contains("closed"));
    // A stopped session has no terminal.
    s.ok("POST", &format!("/api/sessions/{a}/stop"), Some(&ann), None);
    s.until(&format!("/api/sessions/{a}"), &ann, 30, |v| {
        v["state"] == "stopped"
    });
    assert_eq!(ws_open(&s, &path, &ann, None).unwrap_err().0, 409);
}

/// The UI in Debian's chromium through playwright-core: a student signs
/// in, starts a sandbox, types in the terminal, opens the app, stops; the
/// teacher sees the roster change and opens the student's terminal;
/// another student is refused the first one's URLs. Screenshots go to
/// $CAAS_WEB_SHOTS when set (docs/ keeps them).
#[test]
fn browser_student_teacher_and_intruder() {
    let dir = web_tests_dir();
    // Chromium resolves *.localhost to the loopback: apps get their own
    // origin, SESSION.localhost:PORT.
    let s = Serve::start("caas-web-ui", DbKind::Sqlite, &["--domain", "localhost"]);
    s.user("teach", "teacher", "teach-pass-123");
    s.user("ann", "student", "ann-pass-123");
    s.user("bob", "student", "bob-pass-123");
    s.user("root", "admin", "root-pass-123");
    let teach = s.token("teach", "teach-pass-123");
    let tpl = s.template(&teach, json!({"name": "demo", "spec": {"image": IMAGE, "port": 8080, "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64}}));
    let class = s.class(
        &teach,
        json!({"name": "Browser 101", "code": "web101", "capacity": 5, "template_id": tpl}),
    );
    for u in ["ann", "bob"] {
        s.enrol(&teach, &class, u);
    }
    run_script(&dir, "ui.mjs", &s, &class);
}

/// The account, admin and teacher flows in the browser: CSV import and
/// templates made in the UI, a class's template and roster changed there,
/// the whole class started and stopped from the roster, the terminal's
/// paste, Ctrl-C and resize, a password change and a sign-out whose
/// cookies the server refuses afterwards.
#[test]
fn browser_accounts_templates_and_whole_class() {
    let dir = web_tests_dir();
    let s = Serve::start("caas-web-accounts", DbKind::Sqlite, &[]);
    s.user("teach", "teacher", "teach-pass-123");
    s.user("ann", "student", "ann-pass-123");
    s.user("root", "admin", "root-pass-123");
    let teach = s.token("teach", "teach-pass-123");
    let class = s.class(
        &teach,
        json!({"name": "Accounts 101", "code": "acc101", "capacity": 5}),
    );
    s.enrol(&teach, &class, "ann");
    run_script(&dir, "accounts.mjs", &s, &class);
}

/// crates/caas/web-tests, after checking what its scripts need.
fn web_tests_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../caas/web-tests");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "this test needs node (apt-get install nodejs npm)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "this test needs Debian's chromium (apt-get install chromium)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "this test needs playwright-core: run `npm ci` in {}",
        dir.display()
    );
    dir
}

/// Runs a playwright script against `s`; it must end with "... passed".
fn run_script(dir: &Path, script: &str, s: &Serve, class: &str) {
    let out = Command::new("node")
        .arg(dir.join(script))
        .env("CUBBY_URL", format!("http://127.0.0.1:{}", s.port))
        .env("CUBBY_CLASS", class)
        .env("CUBBY_IMAGE", IMAGE)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test {script} failed:\n{text}"
    );
    assert!(text.contains("browser test passed"), "{text}");
}
