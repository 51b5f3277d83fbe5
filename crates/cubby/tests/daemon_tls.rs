//! `cubby daemon` over TCP: only with TLS and a client certificate signed
//! by `--tls-ca`, driven by the real `docker` CLI. Certificates are made
//! with the `openssl` CLI in a temp dir. Needs root and
//! /usr/local/bin/docker; touches only 127.0.0.1.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon as Harness, DOCKER};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("these tests need the openssl CLI (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `NAME-ca.pem` (+ key) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-ca-key.pem"),
            "-out",
            &format!("{name}-ca.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
        ],
    );
}

/// `NAME-cert.pem` and `NAME-key.pem` signed by `ca`, with extensions `ext`.
fn make_cert(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca-key.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}-cert.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The harness daemon with a mutual-TLS port besides its unix socket
/// (the harness cleans up containers, cgroups and mounts).
struct TlsDaemon {
    h: Harness,
    certs: tempfile::TempDir,
    port: u16,
}

impl TlsDaemon {
    fn certs(&self) -> PathBuf {
        self.certs.path().to_path_buf()
    }

    fn start() -> TlsDaemon {
        let certs = tempfile::Builder::new()
            .prefix("cubby-tls-certs-")
            .tempdir()
            .unwrap();
        let dir = certs.path();
        make_ca(dir, "good");
        make_ca(dir, "other");
        make_cert(
            dir,
            "good",
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        make_cert(dir, "good", "client", "extendedKeyUsage=clientAuth\n");
        make_cert(dir, "other", "stranger", "extendedKeyUsage=clientAuth\n");
        let port = free_port();
        let arg = |p: &str| dir.join(p).display().to_string();
        let h = Harness::start_with(
            "tls",
            &[
                "--listen".into(),
                format!("tcp://127.0.0.1:{port}"),
                "--tls-cert".into(),
                arg("server-cert.pem"),
                "--tls-key".into(),
                arg("server-key.pem"),
                "--tls-ca".into(),
                arg("good-ca.pem"),
            ],
        );
        // The harness waited for the unix socket; the TCP port comes with it.
        eventually("the TLS port accepts", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        TlsDaemon { h, certs, port }
    }

    /// `curl https://127.0.0.1:PORT/_ping` with client cert `name`.
    fn curl(&self, name: &str) -> Output {
        let certs = self.certs();
        Command::new("curl")
            .arg("-sS")
            .arg("--fail")
            .arg("--max-time")
            .arg("30")
            .arg("--cacert")
            .arg(certs.join("good-ca.pem"))
            .arg("--cert")
            .arg(certs.join(format!("{name}-cert.pem")))
            .arg("--key")
            .arg(certs.join(format!("{name}-key.pem")))
            .arg(format!("https://127.0.0.1:{}/_ping", self.port))
            .stdin(Stdio::null())
            .output()
            .expect("these tests need curl (apt-get install curl)")
    }

    /// `docker -H tcp://127.0.0.1:PORT --tlsverify --tlscacert CA [--tlscert
    /// C --tlskey K] ARGS`; `client` names the client cert, if any.
    fn docker(&self, client: Option<&str>, args: &[&str]) -> Output {
        let certs = self.certs();
        let mut c = Command::new(DOCKER);
        c.arg("-H")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(certs.join("good-ca.pem"));
        if let Some(name) = client {
            c.arg("--tlscert")
                .arg(certs.join(format!("{name}-cert.pem")))
                .arg("--tlskey")
                .arg(certs.join(format!("{name}-key.pem")));
        }
        c.args(args)
            // An empty config dir: no default cert.pem/key.pem to fall back on.
            .env("DOCKER_CONFIG", self.h.tmp.path().join("docker-config"))
            .env("DOCKER_CERT_PATH", self.h.tmp.path().join("no-certs"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `cubby --host tcp://127.0.0.1:PORT` with client cert `name`.
    fn cubby(&self, name: &str, args: &[&str]) -> Output {
        let certs = self.certs();
        self.h
            .cubby()
            .arg("--host")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--tls-cert")
            .arg(certs.join(format!("{name}-cert.pem")))
            .arg("--tls-key")
            .arg(certs.join(format!("{name}-key.pem")))
            .arg("--tls-ca")
            .arg(certs.join("good-ca.pem"))
            .args(args)
            .env_remove("CUBBY_HOST")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// `cubby --root TMP/data --state-dir TMP/state`.
fn cubby(tmp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cubby"));
    c.arg("--root")
        .arg(tmp.join("data"))
        .arg("--state-dir")
        .arg(tmp.join("state"));
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tls_with_client_certificates_only() {
    let d = TlsDaemon::start();

    // The unix socket beside it: 0660, and group cubby when that exists.
    let meta = std::fs::metadata(&d.h.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    if let Ok(Some(g)) = nix::unistd::Group::from_name("cubby") {
        assert_eq!(meta.gid(), g.gid.as_raw());
    }

    // A client certificate from the CA: served.
    let out = d.docker(Some("client"), &["version"]);
    assert!(
        out.status.success(),
        "docker version over TLS: {}",
        text(&out.stderr)
    );
    let v = text(&out.stdout);
    assert!(v.contains("Server:") && v.contains("1.43"), "{v}");
    let out = d.docker(Some("client"), &["ps", "-a"]);
    assert!(out.status.success(), "docker ps: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("CONTAINER ID"));

    // No client certificate: the handshake fails.
    let out = d.docker(None, &["version", "--format", "{{.Server.Version}}"]);
    assert!(
        !out.status.success(),
        "served without a client certificate: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(err.contains("certificate") || err.contains("tls"), "{err}");
    assert!(!text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    // A certificate from another CA: docker does not even offer it (the
    // server names its CA), so it is refused as above...
    let out = d.docker(
        Some("stranger"),
        &["version", "--format", "{{.Server.Version}}"],
    );
    assert!(
        !out.status.success(),
        "served a certificate of another CA: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(err.contains("certificate") || err.contains("tls"), "{err}");
    // ...and curl, which presents it anyway, is refused by verification.
    let out = d.curl("stranger");
    assert!(
        !out.status.success(),
        "curl with another CA's certificate was served: {}",
        text(&out.stdout)
    );
    assert_ne!(text(&out.stdout), "OK");
    let err = text(&out.stderr);
    assert!(err.contains("unknown ca"), "curl: {err}");
    // The same curl with the CA's client certificate is served.
    let out = d.curl("client");
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "OK");

    // The cubby CLI as a client over the same mutual TLS.
    let out = d.cubby("client", &["ps", "-a"]);
    assert!(
        out.status.success(),
        "cubby ps over TLS: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("CONTAINER ID"));
    let out = d.cubby("stranger", &["ps", "-a"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("does not answer"),
        "{}",
        text(&out.stderr)
    );

    // Hijacked connections (attach, exec) over TLS: docker's and cubby's.
    d.h.import_busybox();
    let out = d.docker(
        Some("client"),
        &["run", "--rm", "busybox", "sh", "-c", "echo docker-over-tls"],
    );
    assert!(
        out.status.success(),
        "docker run over TLS: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "docker-over-tls\n");
    let out = d.cubby(
        "client",
        &[
            "run",
            "--name",
            "t1",
            "busybox",
            "sh",
            "-c",
            "echo cubby-over-tls; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cubby-over-tls\n");
    let out = d.cubby(
        "client",
        &["run", "-d", "--name", "t2", "busybox", "sleep", "60"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cubby("client", &["exec", "t2", "sh", "-c", "echo exec-over-tls"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "exec-over-tls\n");
    let out = d.cubby("client", &["rm", "-f", "t1", "t2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Plain HTTP on the TLS port gets no API answer.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert!(
        !text(&resp).contains("OK"),
        "plain HTTP was answered: {:?}",
        text(&resp)
    );
}

#[test]
fn plain_tcp_is_refused_at_start() {
    assert!(nix::unistd::geteuid().is_root(), "run these tests as root");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = cubby(tmp.path())
        .arg("daemon")
        .arg("--listen")
        .arg(format!(
            "unix://{}",
            tmp.path().join("cubby.sock").display()
        ))
        .arg("--listen")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("plain TCP is refused") && err.contains("--tls-ca"),
        "{err}"
    );
    // Nothing was started: no socket, no monitor.
    assert!(!tmp.path().join("cubby.sock").exists());
    assert!(!tmp.path().join("monitor.sock").exists());

    // Two of three TLS flags: refused as well.
    let out = cubby(tmp.path())
        .arg("daemon")
        .arg("--listen")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg("/nonexistent/cert.pem")
        .arg("--tls-key")
        .arg("/nonexistent/key.pem")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("all three"), "{err}");
}
