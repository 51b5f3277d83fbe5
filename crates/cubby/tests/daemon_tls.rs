//! `cubby daemon` over TCP: only with TLS and a client certificate signed
//! by `--tls-ca`, driven by the real `docker` CLI. Certificates are made
//! with the `openssl` CLI in a temp dir. Needs root and
//! /usr/local/bin/docker; touches only 127.0.0.1.

mod common;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/local/bin/docker";

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

/// A `cubby daemon` on a unix socket and a TLS port; drop kills it and its
/// monitor (no containers are made here).
struct TlsDaemon {
    tmp: tempfile::TempDir,
    port: u16,
    socket: PathBuf,
    child: Option<Child>,
}

impl TlsDaemon {
    fn certs(&self) -> PathBuf {
        self.tmp.path().join("certs")
    }

    /// Relative to each cgroup hierarchy.
    fn cgroup() -> String {
        format!("cubby-test/tls-{}", std::process::id())
    }

    /// Imports a busybox rootfs as busybox:latest into the daemon's store.
    fn import_busybox(&self) {
        let dir = self.tmp.path().join("image");
        common::make_busybox_rootfs(&dir.join("rootfs"));
        let tarball = dir.join("busybox.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let out = Self::cubby(self.tmp.path())
            .arg("import")
            .arg(&tarball)
            .arg("busybox:latest")
            .output()
            .unwrap();
        assert!(out.status.success(), "cubby import: {}", text(&out.stderr));
    }

    fn cubby(tmp: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cubby"));
        c.arg("--root")
            .arg(tmp.join("data"))
            .arg("--state-dir")
            .arg(tmp.join("state"));
        c
    }

    fn start() -> TlsDaemon {
        assert!(
            nix::unistd::geteuid().is_root(),
            "cubby daemon needs root: run these tests as root"
        );
        assert!(
            Path::new(DOCKER).exists(),
            "these tests need the docker CLI at {DOCKER} (client only)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("cubby-tls-test-")
            .tempdir()
            .unwrap();
        let certs = tmp.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        make_ca(&certs, "good");
        make_ca(&certs, "other");
        make_cert(
            &certs,
            "good",
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        make_cert(&certs, "good", "client", "extendedKeyUsage=clientAuth\n");
        make_cert(&certs, "other", "stranger", "extendedKeyUsage=clientAuth\n");

        let port = free_port();
        let socket = tmp.path().join("run/cubby.sock");
        let mut child = Self::cubby(tmp.path())
            .arg("daemon")
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--listen")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(certs.join("server-cert.pem"))
            .arg("--tls-key")
            .arg(certs.join("server-key.pem"))
            .arg("--tls-ca")
            .arg(certs.join("good-ca.pem"))
            .arg("--cgroup-parent")
            .arg(Self::cgroup())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::os::unix::net::UnixStream::connect(&socket).is_err()
        {
            if let Some(status) = child.try_wait().unwrap() {
                let err = std::fs::read_to_string(tmp.path().join("daemon.log"));
                panic!("cubby daemon exited {status}: {err:?}");
            }
            assert!(Instant::now() < deadline, "cubby daemon did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsDaemon {
            tmp,
            port,
            socket,
            child: Some(child),
        }
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
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env("DOCKER_CERT_PATH", self.tmp.path().join("no-certs"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let lock = self.tmp.path().join("run/monitor.sock.lock");
        if let Some(pid) = std::fs::read_to_string(lock)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Containers left by a failed test: kill them, drop their cgroups
        // (one per v1 hierarchy) and unmount their snapshots.
        let cg = Self::cgroup();
        let dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(&cg))
            .chain([Path::new("/sys/fs/cgroup").join(&cg)])
            .filter(|d| d.is_dir())
            .collect();
        let leaves: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        for leaf in &leaves {
            let _ = std::fs::write(leaf.join("freezer.state"), "THAWED");
            if let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for d in leaves.iter().chain(dirs.iter()) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let tmp = self.tmp.path().to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&tmp))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tls_with_client_certificates_only() {
    let d = TlsDaemon::start();

    // The unix socket beside it: 0660, and group cubby when that exists.
    let meta = std::fs::metadata(&d.socket).unwrap();
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
    let log = std::fs::read_to_string(d.tmp.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("TLS handshake") && log.contains("UnknownIssuer"),
        "the daemon did not log the refused certificate: {log}"
    );
    // The same curl with the CA's client certificate is served.
    let out = d.curl("client");
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "OK");

    // The cubby CLI as a client over the same mutual TLS.
    let certs = d.certs();
    let cubby_tls = |name: &str, args: &[&str]| {
        TlsDaemon::cubby(d.tmp.path())
            .arg("--host")
            .arg(format!("tcp://127.0.0.1:{}", d.port))
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
    };
    let out = cubby_tls("client", &["ps", "-a"]);
    assert!(
        out.status.success(),
        "cubby ps over TLS: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("CONTAINER ID"));
    let out = cubby_tls("stranger", &["ps", "-a"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("does not answer"),
        "{}",
        text(&out.stderr)
    );

    // Hijacked connections (attach, exec) over TLS: docker's and cubby's.
    d.import_busybox();
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
    let cubby_tls_run = |args: &[&str]| cubby_tls("client", args);
    let out = cubby_tls_run(&[
        "run",
        "--name",
        "t1",
        "busybox",
        "sh",
        "-c",
        "echo cubby-over-tls; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cubby-over-tls\n");
    let out = cubby_tls_run(&["run", "-d", "--name", "t2", "busybox", "sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cubby_tls_run(&["exec", "t2", "sh", "-c", "echo exec-over-tls"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "exec-over-tls\n");
    let out = cubby_tls_run(&["rm", "-f", "t1", "t2"]);
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
    let out = TlsDaemon::cubby(tmp.path())
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
    let out = TlsDaemon::cubby(tmp.path())
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
