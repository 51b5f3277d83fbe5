//! Runs one monitor scenario in a fresh single-threaded process (the
//! runtime refuses to clone containers from a multi-threaded one, and test
//! harness threads are many) and prints the outcome as JSON. Driven by
//! tests/monitor.rs:
//!
//!   monitor_probe SCENARIO ROOT ROOTFS CGROUP_PREFIX
//!
//! SCENARIO: exit3 | kill | oom | rotate | remove | recover

use cubby_engine::logs::{read_logs, LogFilter, LogOptions};
use cubby_engine::monitor::{CreateRequest, Monitor};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxMemoryBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn request(id: &str, rootfs: &Path, cg: &str, args: &[&str], log: LogOptions) -> R<CreateRequest> {
    let mut spec =
        cubby_runtime::spec::default_spec(rootfs, args.iter().map(|s| s.to_string()).collect());
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!("{cg}/{id}"))));
    spec.set_linux(Some(linux));
    Ok(CreateRequest {
        image: Some("busybox".into()),
        log,
        ..CreateRequest::new(
            id,
            &format!("n-{id}"),
            spec,
            rootfs.parent().ok_or("rootfs has no parent")?.to_path_buf(),
        )
    })
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, scenario, root, rootfs, cg] = args.as_slice() else {
        return Err("usage: monitor_probe SCENARIO ROOT ROOTFS CGROUP_PREFIX".into());
    };
    let (root, rootfs) = (Path::new(root), Path::new(rootfs));
    let mut m = Monitor::new(root, &root.join("state"))?;
    let wait = Duration::from_secs(30);
    let id = format!("c-{scenario}");
    let plain = LogOptions::default();
    match scenario.as_str() {
        "exit3" => {
            m.create(request(
                &id,
                rootfs,
                cg,
                &["sh", "-c", "echo out; echo err >&2; printf tail; exit 3"],
                plain,
            )?)?;
            m.start(&id)?;
            m.wait_all_exited(wait)?;
        }
        "kill" => {
            m.create(request(&id, rootfs, cg, &["sleep", "100"], plain)?)?;
            m.start(&id)?;
            m.run_once(Duration::from_millis(100))?;
            m.kill(&id, Signal::SIGKILL)?;
            m.wait_all_exited(wait)?;
        }
        "oom" => {
            let mut req = request(
                &id,
                rootfs,
                cg,
                &["sh", "-c", "a=xxxxxxxx; while true; do a=$a$a; done"],
                plain,
            )?;
            let mut linux = req.spec.linux().clone().unwrap_or_default();
            let mut res = linux.resources().clone().unwrap_or_default();
            res.set_memory(Some(
                LinuxMemoryBuilder::default().limit(32i64 << 20).build()?,
            ));
            linux.set_resources(Some(res));
            req.spec.set_linux(Some(linux));
            m.create(req)?;
            m.start(&id)?;
            m.wait_all_exited(wait)?;
        }
        "rotate" => {
            let log = LogOptions {
                max_size: Some(1000),
                max_file: 2,
            };
            m.create(request(&id, rootfs, cg, &["seq", "1", "300"], log)?)?;
            m.start(&id)?;
            m.wait_all_exited(wait)?;
        }
        "remove" => {
            m.create(request(&id, rootfs, cg, &["sleep", "100"], plain)?)?;
            m.start(&id)?;
            m.run_once(Duration::from_millis(50))?;
            let refused = m.remove(&id, false).is_err();
            m.remove(&id, true)?;
            println!(
                "{}",
                serde_json::json!({ "refused": refused, "records": m.records().list()?.records, "state_left": root.join("state").join(&id).exists() })
            );
            return Ok(());
        }
        "recover" => {}
        other => return Err(format!("unknown scenario {other}").into()),
    }
    let listing = m.records().list()?;
    let mut logs = BTreeMap::new();
    for rec in &listing.records {
        let lines: Vec<_> = read_logs(&rec.log_path, &LogFilter::default())?
            .into_iter()
            .map(|l| serde_json::json!({ "stream": l.stream, "text": l.text }))
            .collect();
        logs.insert(rec.id.clone(), lines);
    }
    let files: Vec<String> = std::fs::read_dir(root.join("containers").join(&id))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "records": listing.records,
            "errors": listing.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "logs": logs,
            "files": files,
            "running": m.running(),
            "state_left": root.join("state").join(&id).exists(),
        })
    );
    Ok(())
}
