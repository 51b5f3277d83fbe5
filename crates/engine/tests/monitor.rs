//! The monitor for real (needs root, cgroups and a static busybox). Each
//! scenario runs in its own single-threaded process, the monitor_probe
//! example, because the runtime will not clone containers from the
//! multi-threaded test harness.

mod common;

use common::busybox_rootfs;
use cubby_engine::records::{ContainerRecord, Records, Status};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn probe_exe() -> PathBuf {
    // target/debug/deps/monitor-HASH -> target/debug/examples/monitor_probe
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples/monitor_probe");
    assert!(
        p.exists(),
        "{} missing: cargo test builds examples; run `cargo build -p cubby-engine --examples`",
        p.display()
    );
    p
}

struct Scenario {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    rootfs: PathBuf,
}

fn scenario() -> Scenario {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    Scenario {
        root: tmp.path().join("engine"),
        rootfs,
        _tmp: tmp,
    }
}

fn run(s: &Scenario, name: &str) -> Value {
    let cg = format!("cubby-test/engine-{}-{name}", std::process::id());
    let out = Command::new(probe_exe())
        .args([
            name,
            s.root.to_str().unwrap(),
            s.rootfs.to_str().unwrap(),
            &format!("/{cg}"),
        ])
        .output()
        .unwrap();
    // The monitor removes each container's cgroup; the parent made for
    // this scenario is ours to remove (on every v1 controller, or v2's root).
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&cg)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join(&cg)));
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let leaf = dir.join(format!("c-{name}"));
        assert!(!leaf.exists(), "{} left behind", leaf.display());
        let _ = std::fs::remove_dir(dir);
    }
    assert!(
        out.status.success(),
        "probe {name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn record<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no record {id} in {v}"))
}

fn log_lines(v: &Value, id: &str) -> Vec<(String, String)> {
    v["logs"][id]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_string(),
                l["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn exit_code_and_both_streams_are_recorded() {
    let s = scenario();
    let v = run(&s, "exit3");
    let r = record(&v, "c-exit3");
    assert_eq!(r["status"], "exited", "{v}");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["oom_killed"], false);
    assert!(r["finished_at"].is_string());
    assert!(r.get("error").is_none(), "{r}");
    let lines = log_lines(&v, "c-exit3");
    assert!(
        lines.contains(&("stdout".into(), "out\n".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "err\n".into())),
        "{lines:?}"
    );
    // A last line without a newline is flushed at the end of the stream.
    // (Order across the two streams is not kept: they are separate pipes.)
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(stdout, ["out\n", "tail"], "{lines:?}");
    assert_eq!(v["state_left"], false, "runtime state is deleted");
    assert_eq!(v["running"].as_array().unwrap().len(), 0);
}

#[test]
fn killed_container_exits_137() {
    let s = scenario();
    let v = run(&s, "kill");
    let r = record(&v, "c-kill");
    assert_eq!(r["status"], "exited", "{v}");
    assert_eq!(r["exit_code"], 137);
    assert_eq!(r["oom_killed"], false);
}

#[test]
fn memory_hog_is_oom_killed() {
    let s = scenario();
    let v = run(&s, "oom");
    let r = record(&v, "c-oom");
    assert_eq!(r["status"], "exited", "{v}");
    assert_eq!(r["exit_code"], 137, "{r}");
    assert_eq!(r["oom_killed"], true, "{r}");
}

#[test]
fn logs_rotate_by_size() {
    let s = scenario();
    let v = run(&s, "rotate");
    let r = record(&v, "c-rotate");
    assert_eq!(r["exit_code"], 0, "{v}");
    let mut files: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["create.json", "log.json", "log.json.1", "record.json"]
    );
    let lines = log_lines(&v, "c-rotate");
    assert!(lines.len() < 300, "old lines rotated away");
    let nums: Vec<u32> = lines
        .iter()
        .map(|(_, t)| t.trim().parse().unwrap())
        .collect();
    assert_eq!(*nums.last().unwrap(), 300);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
}

#[test]
fn remove_needs_force_for_a_running_container() {
    let s = scenario();
    let v = run(&s, "remove");
    assert_eq!(v["refused"], true, "{v}");
    assert_eq!(v["records"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["state_left"], false);
}

#[test]
fn recovery_marks_dead_containers_exited() {
    let s = scenario();
    let records = Records::open(&s.root).unwrap();
    let base = ContainerRecord {
        status: Status::Running,
        // Beyond pid_max on any default system: surely not alive.
        pid: Some(i32::MAX - 1),
        started_at: cubby_runtime::state::rfc3339_now(),
        ..ContainerRecord::new("c-dead", "dead", records.dir("c-dead").join("log.json"))
    };
    records.put(&base).unwrap();
    let done = ContainerRecord {
        id: "c-done".into(),
        status: Status::Exited,
        exit_code: Some(0),
        pid: None,
        ..base.clone()
    };
    records.put(&done).unwrap();
    let v = run(&s, "recover");
    let r = record(&v, "c-dead");
    assert_eq!(r["status"], "exited", "{v}");
    assert_eq!(r["exit_code"], 255);
    assert!(
        r["error"].as_str().unwrap().contains("exit status unknown"),
        "{r}"
    );
    assert_eq!(record(&v, "c-done")["exit_code"], 0);
    assert_eq!(v["running"].as_array().unwrap().len(), 0);
}
