//! `cubby serve` for the API tests: a real cubby daemon (common/daemon.rs)
//! with the demo image, a database (SQLite file or a private PostgreSQL
//! cluster), and the `cubby serve` binary on a free 127.0.0.1 port; a small
//! HTTP/1.1 client. Drop kills serve, then the daemon cleans up every
//! container, network and cgroup.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::Daemon;

#[path = "../../../caas/tests/common/pg.rs"]
pub mod pg;

pub const IMAGE: &str = "cubby-demo:latest";

pub enum DbKind {
    Sqlite,
    Postgres,
}

pub struct Serve {
    pub port: u16,
    pub database: String,
    pub extra: Vec<String>,
    /// Extra environment for serve (e.g. S3 credentials).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: PathBuf,
    // Dropped after serve (field order): the cluster, then the daemon.
    pub pg: Option<pg::Postgres>,
    pub d: Daemon,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Serve {
    pub fn start(name: &str, db: DbKind, extra: &[&str]) -> Serve {
        Serve::start_env(name, db, extra, &[])
    }

    pub fn start_env(name: &str, db: DbKind, extra: &[&str], env: &[(&str, &str)]) -> Serve {
        let d = Daemon::start(name);
        cubby::demo_image::import_demo_image(&d.root(), IMAGE).expect("import the demo image");
        let (pg, database) = match db {
            DbKind::Sqlite => (
                None,
                format!("sqlite://{}", d.tmp.path().join("caas.db").display()),
            ),
            DbKind::Postgres => {
                let pg = pg::Postgres::start();
                let url = pg.database("caas");
                (Some(pg), url)
            }
        };
        let mut s = Serve {
            port: free_port(),
            database,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: d.tmp.path().join("serve.log"),
            pg,
            d,
        };
        s.spawn();
        s
    }

    pub fn cmd(&self) -> Command {
        let mut c = self.d.cubby();
        c.env("CUBBY_DATABASE", &self.database);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .cmd()
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--engine")
            .arg(format!("unix://{}", self.d.socket.display()))
            .args(["--stop-grace", "1"])
            // Big class networks from this daemon's own range (parallel
            // tests never share a subnet on the host).
            .args(["--class-subnets", &self.d.net.class_range()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.try_req("GET", "/api/health", None, None) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cubby serve exited {st}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "cubby serve did not answer: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then start again on the same root and database.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn();
    }

    pub fn try_req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        let (status, _, body) = self.raw(
            method,
            path,
            token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .as_deref()
                .unwrap_or(""),
            "application/json",
            body,
        )?;
        let v = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        Ok((status, v))
    }

    /// One request with extra header lines; returns status, head, body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, head.to_string(), body.to_string()))
    }

    /// A request that must answer `want`; returns the JSON body.
    pub fn expect(
        &self,
        want: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let b = body.map(|b| b.to_string());
        let (status, v) = self.try_req(method, path, token, b.as_deref()).unwrap();
        assert_eq!(status, want, "{method} {path}: {v}");
        if status >= 400 {
            // One error shape everywhere.
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{v}"
            );
        }
        v
    }

    pub fn ok(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        self.expect(200, method, path, token, body)
    }

    pub fn login(&self, user: &str, pw: &str) -> Value {
        self.ok(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": user, "password": pw})),
        )
    }

    pub fn token(&self, user: &str, pw: &str) -> String {
        self.login(user, pw)["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a class (`body` as `POST /api/classes` takes it) as the
    /// teacher or admin with `token`; returns its id.
    #[allow(dead_code)]
    pub fn class(&self, token: &str, body: Value) -> String {
        self.ok("POST", "/api/classes", Some(token), Some(body))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a template (`body` as `POST /api/templates` takes it: name
    /// and spec); returns its id.
    #[allow(dead_code)]
    pub fn template(&self, token: &str, body: Value) -> String {
        self.ok("POST", "/api/templates", Some(token), Some(body))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Enrols the user `username` in class `class_id`.
    #[allow(dead_code)]
    pub fn enrol(&self, token: &str, class_id: &str, username: &str) {
        self.ok(
            "POST",
            &format!("/api/classes/{class_id}/students"),
            Some(token),
            Some(json!({"username": username})),
        );
    }

    /// `cubby admin ARGS...` against this store; asserts success, returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.cmd().arg("admin").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cubby admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a user through the CLI with a known password.
    pub fn user(&self, name: &str, role: &str, pw: &str) {
        let mut c = self.cmd();
        c.args([
            "admin",
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        writeln!(child.stdin.take().unwrap(), "{pw}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "admin user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls GET `path` until `done(body)`, for at most `secs`.
    pub fn until(
        &self,
        path: &str,
        token: &str,
        secs: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.ok("GET", path, Some(token), None);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "never settled: GET {path}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- cubby serve log ---\n{}", self.log_text());
        }
    }
}
