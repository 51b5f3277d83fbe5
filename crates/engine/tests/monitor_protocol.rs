//! The monitor protocol for real: a serving monitor (the monitor_serve
//! example, what `cubby monitor` runs), driven over its socket by
//! MonitorClient and by raw (misbehaving) clients. Containers need root,
//! cgroups and a static busybox.

mod common;

use cubby_engine::client::{ClientError, MonitorClient};
use cubby_engine::logs::{read_logs, LogFilter};
use cubby_engine::monitor::CreateRequest;
use cubby_engine::protocol::ErrorKind;
use cubby_engine::records::{ContainerRecord, Records, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn monitor_serve() -> PathBuf {
    // target/debug/deps/monitor_protocol-HASH -> target/debug/examples/
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples/monitor_serve");
    assert!(
        p.exists(),
        "{} missing: cargo test builds examples; run `cargo build -p cubby-engine --examples`",
        p.display()
    );
    p
}

/// One test's monitor, directories and cgroups; Drop kills the monitor and
/// whatever is left in the test's cgroups, and removes them.
struct Harness {
    tmp: tempfile::TempDir,
    root: PathBuf,
    socket: PathBuf,
    /// Relative to each cgroup hierarchy: "cubby-test/proto-PID-NAME".
    cg: String,
    monitor: Option<Child>,
    rootfs: Option<PathBuf>,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        Harness {
            root: tmp.path().join("engine"),
            socket: tmp.path().join("run/monitor.sock"),
            cg: format!("cubby-test/proto-{}-{name}", std::process::id()),
            monitor: None,
            rootfs: None,
            tmp,
        }
    }

    fn spawn_monitor(&self) -> Child {
        std::fs::create_dir_all(self.socket.parent().unwrap()).unwrap();
        std::fs::create_dir_all(&self.root).unwrap();
        Command::new(monitor_serve())
            .arg(&self.root)
            .arg(self.root.join("state"))
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Starts the monitor and waits until it answers a ping.
    fn start(&mut self) {
        assert!(self.monitor.is_none());
        let mut child = self.spawn_monitor();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = MonitorClient::connect(&self.socket) {
                if c.ping().is_ok() {
                    break;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("monitor exited {status}: {}", stderr_of(&mut child));
            }
            assert!(Instant::now() < deadline, "monitor did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.monitor = Some(child);
    }

    /// SIGTERMs the monitor and returns how it exited.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.monitor.take().expect("monitor running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_deadline(&mut child, Duration::from_secs(10));
        assert!(status.success(), "{status}: {}", stderr_of(&mut child));
        status
    }

    fn client(&self) -> MonitorClient {
        MonitorClient::connect(&self.socket).unwrap()
    }

    fn request(&mut self, id: &str, args: &[&str]) -> CreateRequest {
        if self.rootfs.is_none() {
            self.rootfs = Some(common::busybox_rootfs(self.tmp.path()));
        }
        let rootfs = self.rootfs.clone().unwrap();
        let mut spec = cubby_runtime::spec::default_spec(
            &rootfs,
            args.iter().map(|s| s.to_string()).collect(),
        );
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.cg))));
        spec.set_linux(Some(linux));
        CreateRequest {
            image: Some("busybox".into()),
            labels: BTreeMap::from([("test".to_string(), "protocol".to_string())]),
            ..CreateRequest::new(id, &format!("n-{id}"), spec, self.tmp.path().to_path_buf())
        }
    }

    /// This test's cgroup directories, one per hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&self.cg)];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            dirs.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join(&self.cg)),
            );
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.monitor.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Containers the test did not remove: kill what is in their cgroups.
        let dirs = self.cgroup_dirs();
        let leaves: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        for leaf in &leaves {
            if let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for dir in leaves.iter().chain(dirs.iter()) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if child.try_wait().ok().flatten().is_some() {
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
    }
    s
}

fn wait_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `get` until `pred` holds.
fn wait_for(
    c: &mut MonitorClient,
    id: &str,
    what: &str,
    pred: impl Fn(&ContainerRecord) -> bool,
) -> ContainerRecord {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rec = c.get(id).unwrap();
        if pred(&rec) {
            return rec;
        }
        assert!(Instant::now() < deadline, "{id} never {what}: {rec:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn monitor_error(r: Result<impl std::fmt::Debug, ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Monitor { kind, message }) => (kind, message),
        other => panic!("expected a monitor error, got {other:?}"),
    }
}

/// Sends raw bytes and reads one response line as JSON.
fn raw_call(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, bytes: &[u8]) -> Value {
    stream.write_all(bytes).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn raw(h: &Harness) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn alive(pid: i32) -> bool {
    cubby_runtime::state::proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

#[test]
fn create_list_logs_kill_remove() {
    let mut h = Harness::new("life");
    h.start();
    // Clients that stall (mid-line, or not reading their answers) while
    // the container runs and logs.
    let mut stalled = UnixStream::connect(&h.socket).unwrap();
    stalled.write_all(b"{\"type\":\"li").unwrap();
    let mut deaf = UnixStream::connect(&h.socket).unwrap();
    deaf.set_nonblocking(true).unwrap();
    let _ = deaf.write(&b"{\"type\":\"list\"}\n".repeat(50_000));
    let mut c = h.client();
    c.ping().unwrap();
    let id = "p-life";
    let rec = c
        .create(h.request(id, &["sh", "-c", "echo hello; sleep 30"]))
        .unwrap();
    assert_eq!(rec.status, Status::Created);
    let rec = c.start(id).unwrap();
    assert_eq!(rec.status, Status::Running);
    assert_eq!(rec.labels["test"], "protocol");
    let pid = rec.pid.unwrap();

    let list = c.list().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0].id.as_str(), list[0].status), (id, Status::Running));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = read_logs(&rec.log_path, &LogFilter::default()).unwrap_or_default();
        if lines.iter().any(|l| l.text == "hello\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no hello in the log: {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Refusals come back typed, and the connection stays usable.
    let (kind, msg) = monitor_error(c.create(h.request(id, &["true"])));
    assert_eq!(kind, ErrorKind::AlreadyExists, "{msg}");
    assert_eq!(monitor_error(c.kill("nope", 9)).0, ErrorKind::NotFound);
    assert_eq!(monitor_error(c.kill(id, 12345)).0, ErrorKind::Invalid);
    assert_eq!(monitor_error(c.remove(id, false)).0, ErrorKind::Conflict);
    assert_eq!(monitor_error(c.get("../etc")).0, ErrorKind::NotFound);

    drop((stalled, deaf));
    c.kill(id, Signal::SIGKILL as i32).unwrap();
    let rec = wait_for(&mut c, id, "exited", |r| r.status == Status::Exited);
    assert_eq!(rec.exit_code, Some(137), "{rec:?}");
    assert!(!alive(pid));
    c.remove(id, false).unwrap();
    assert_eq!(monitor_error(c.get(id)).0, ErrorKind::NotFound);
    assert!(c.list().unwrap().is_empty());
    h.stop();
    assert!(!h.socket.exists(), "the socket is removed on SIGTERM");
}

#[test]
fn bad_and_concurrent_clients_do_not_stop_the_monitor() {
    let mut h = Harness::new("clients");
    h.start();
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Garbage, one response per line, then a good request on the same line-stream.
    let (mut s, mut r) = raw(&h);
    for garbage in [
        &b"\n"[..],
        b"{\n",
        b"null\n",
        b"\xff\xfe\x00\n",
        b"{\"type\":\"explode\"}\n",
        b"{\"type\":\"kill\",\"data\":{\"id\":[]}}\n",
        b"{\"type\":\"create\",\"data\":{\"id\":\"x\"}}\n",
    ] {
        let v = raw_call(&mut s, &mut r, garbage);
        assert_eq!(v["type"], "error", "{garbage:?}: {v}");
        assert_eq!(v["data"]["kind"], "bad_request", "{v}");
    }
    // A container whose spec the runtime refuses: recorded, but starting
    // it is an error (no panic), and the record says why.
    let v = raw_call(
        &mut s,
        &mut r,
        b"{\"type\":\"create\",\"data\":{\"id\":\"x\",\"name\":\"x\",\"spec\":{\"ociVersion\":\"1.0.2\"},\"bundle\":\"/nonexistent\"}}\n",
    );
    assert_eq!(v["type"], "record", "{v}");
    let v = raw_call(
        &mut s,
        &mut r,
        b"{\"type\":\"start\",\"data\":{\"id\":\"x\"}}\n",
    );
    assert_eq!(v["type"], "error", "{v}");
    let v = raw_call(
        &mut s,
        &mut r,
        b"{\"type\":\"get\",\"data\":{\"id\":\"x\"}}\n",
    );
    assert!(
        v["data"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    let v = raw_call(
        &mut s,
        &mut r,
        b"{\"type\":\"remove\",\"data\":{\"id\":\"x\"}}\n",
    );
    assert_eq!(v["type"], "ok", "{v}");
    let v = raw_call(&mut s, &mut r, b"{\"type\":\"ping\"}\n");
    assert_eq!(v["type"], "ok", "{v}");

    // An over-long line is refused, the connection still works.
    let big = vec![b'a'; 17 << 20];
    let writer = {
        let mut s2 = s.try_clone().unwrap();
        std::thread::spawn(move || {
            s2.write_all(&big).unwrap();
            s2.write_all(b"\n").unwrap();
        })
    };
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    writer.join().unwrap();
    assert!(line.contains("longer than"), "{line}");
    let v = raw_call(
        &mut s,
        &mut r,
        b"{\"type\":\"ping\"}\n{\"type\":\"list\"}\n",
    );
    assert_eq!(v["type"], "ok", "{v}");
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"type\":\"records\""), "{line}");

    // Half a line, then gone: the monitor keeps serving.
    {
        let mut half = UnixStream::connect(&h.socket).unwrap();
        half.write_all(b"{\"type\":\"pi").unwrap();
    }
    h.client().ping().unwrap();

    // Two clients at once: one stalled mid-line does not block the other.
    let mut stalled = UnixStream::connect(&h.socket).unwrap();
    stalled.write_all(b"{\"type\":").unwrap();
    let mut other = h.client();
    other.ping().unwrap();
    assert!(other.list().unwrap().is_empty());
    stalled.write_all(b"\"ping\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(stalled.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "{\"type\":\"ping\"}\n".replace("ping", "ok"));

    // A client that sends many requests and never reads its answers.
    let mut greedy = UnixStream::connect(&h.socket).unwrap();
    greedy.set_nonblocking(true).unwrap();
    let pings = b"{\"type\":\"ping\"}\n".repeat(100_000);
    let _ = greedy.write(&pings);
    other.ping().unwrap();
    drop(greedy);
    other.ping().unwrap();

    // A second monitor on the same socket refuses to start.
    let mut second = h.spawn_monitor();
    let status = wait_deadline(&mut second, Duration::from_secs(10));
    assert!(!status.success());
    let err = stderr_of(&mut second);
    assert!(err.contains("another monitor"), "{err}");
    other.ping().unwrap();

    // A killed monitor leaves a stale socket: the next one replaces it.
    let mut m = h.monitor.take().unwrap();
    m.kill().unwrap();
    m.wait().unwrap();
    assert!(h.socket.exists());
    h.start();
    h.client().ping().unwrap();
    h.stop();
}

#[test]
fn sigterm_leaves_containers_for_the_next_monitor() {
    let mut h = Harness::new("adopt");
    h.start();
    let id = "p-adopt";
    let mut c = h.client();
    c.create(h.request(id, &["sh", "-c", "echo hello; sleep 30"]))
        .unwrap();
    let rec = c.start(id).unwrap();
    let pid = rec.pid.unwrap();
    drop(c);
    h.stop();
    assert!(alive(pid), "the container outlives its monitor");
    let stored = Records::open(&h.root).unwrap().get(id).unwrap();
    assert_eq!(stored.status, Status::Running);

    h.start();
    let mut c = h.client();
    let list = c.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, Status::Running, "{list:?}");
    assert_eq!(list[0].pid, Some(pid));
    c.kill(id, Signal::SIGKILL as i32).unwrap();
    let rec = wait_for(&mut c, id, "exited", |r| r.status == Status::Exited);
    // Adopted: the exit status is no longer ours to wait for.
    assert_eq!(rec.exit_code, Some(255), "{rec:?}");
    assert!(!alive(pid));
    c.remove(id, false).unwrap();
    assert!(c.list().unwrap().is_empty());
    drop(c);
    h.stop();
}
