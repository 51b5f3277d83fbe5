//! `docker stats`, `top`, `ps -s`, `inspect --size` and `logs` with
//! follow/since/until/tail/timestamps and json-file rotation, driven by the
//! real `docker` CLI (client only) and raw HTTP against `cubby daemon`.
//! Needs root, cgroups, a static busybox and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon as Harness};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Reads `n` JSON documents of a streamed (chunked) reply.
fn stream_docs(h: &Harness, path: &str, n: usize) -> Vec<Value> {
    let mut s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf);
        let docs: Vec<Value> = text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with('{') && l.ends_with('}'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if docs.len() >= n {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            return docs;
        }
        let got = s.read(&mut chunk).unwrap();
        assert!(
            got > 0,
            "the stream ended after {} documents: {text}",
            docs.len()
        );
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// "1.5MiB" → bytes.
fn size_of(s: &str) -> f64 {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..end].parse().unwrap_or_else(|_| panic!("size {s:?}"));
    let mult = match &s[end..] {
        "B" => 1.0,
        "KiB" | "kB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        u => panic!("unit {u:?} in {s:?}"),
    };
    n * mult
}

#[test]
fn stats_top_and_sizes() {
    let h = Harness::start("stats");
    h.import_busybox();
    h.ok(&[
        "run",
        "-d",
        "--name",
        "st",
        "-m",
        "64m",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1024 count=1024 2>/dev/null; echo written; sleep 60 & wait",
    ]);
    eventually("the container wrote its file", || {
        (h.ok(&["logs", "st"]) == "written\n").then_some(())
    });

    // docker stats --no-stream: the name, memory in use, the -m limit, pids.
    let out = h.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.MemUsage}}|{{.CPUPerc}}|{{.PIDs}}",
        "st",
    ]);
    let fields: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(fields.len(), 4, "{out}");
    assert_eq!(fields[0], "st");
    let (used, limit) = fields[1].split_once(" / ").expect(fields[1]);
    assert!(size_of(used) > 0.0, "{out}");
    assert_eq!(size_of(limit), 64.0 * 1024.0 * 1024.0, "{out}");
    assert!(fields[2].ends_with('%'), "{out}");
    assert_eq!(fields[3], "2", "sh and sleep: {out}");

    // Raw API, streamed: two documents, the second with the first as precpu.
    let docs = stream_docs(&h, "/v1.43/containers/st/stats?stream=1", 2);
    let (a, b) = (&docs[0], &docs[1]);
    assert_eq!(a["name"], "/st");
    assert_eq!(a["preread"], "0001-01-01T00:00:00Z");
    assert_eq!(b["preread"], a["read"]);
    assert_eq!(
        b["precpu_stats"]["cpu_usage"]["total_usage"],
        a["cpu_stats"]["cpu_usage"]["total_usage"]
    );
    assert_eq!(
        b["precpu_stats"]["system_cpu_usage"],
        a["cpu_stats"]["system_cpu_usage"]
    );
    let sys = |d: &Value| d["cpu_stats"]["system_cpu_usage"].as_u64().unwrap();
    assert!(sys(b) > sys(a), "the host's CPU time advances: {a} {b}");
    assert!(b["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1);
    assert!(b["cpu_stats"]["cpu_usage"]["usage_in_usermode"].is_u64());
    assert_eq!(b["memory_stats"]["limit"], 64u64 << 20);
    assert!(b["memory_stats"]["usage"].as_u64().unwrap() > 0);
    assert!(b["memory_stats"]["stats"]
        .as_object()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(b["pids_stats"]["current"], 2);
    assert_eq!(b["pids_stats"]["limit"], 50);
    // One-shot: one sample, no precpu.
    let (status, body) = h.http("GET", "/containers/st/stats?stream=0&one-shot=1");
    assert!(status.contains("200"), "{status}: {body}");
    let one: Value = serde_json::from_str(body.trim()).unwrap();
    assert!(
        one["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(one["preread"], "0001-01-01T00:00:00Z");

    // The CLI's streamed stats redraws with each document.
    let mut child = h
        .docker_cmd(&["stats", "--format", "{{.Name}}={{.MemPerc}}", "st"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while seen.matches("st=").count() < 2 {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.matches("st=").count() >= 2, "{seen:?}");
    assert!(seen.contains('%'), "{seen:?}");

    // --cpus 0.5 is a quota of half of each 100 ms period.
    let cpu_max = h
        .cgroup_dirs()
        .into_iter()
        .filter_map(|d| {
            let id = h.ok(&["inspect", "-f", "{{.Id}}", "st"]).trim().to_string();
            std::fs::read_to_string(d.join(&id).join("cpu.cfs_quota_us"))
                .or_else(|_| std::fs::read_to_string(d.join(&id).join("cpu.max")))
                .ok()
        })
        .next()
        .expect("the container's cgroup has a CPU quota file");
    assert!(cpu_max.starts_with("50000"), "{cpu_max}");

    // docker top: ps -ef columns, the container's processes only.
    let top = h.ok(&["top", "st"]);
    let mut lines = top.lines();
    let titles: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{top}");
    assert!(rows.iter().any(|r| r.ends_with("sleep 60")), "{top}");
    assert!(rows.iter().all(|r| r.starts_with("root")), "{top}");
    // Other ps arguments go to the host's ps, filtered by PID.
    let top = h.ok(&["top", "st", "-o", "pid,args"]);
    assert!(top.starts_with("PID"), "{top}");
    assert!(
        top.contains("sleep 60") && top.lines().count() == 3,
        "{top}"
    );

    // Sizes: the 1 MiB file is in the container's layer.
    let ps = h.ok(&["ps", "-s", "--format", "{{.Names}}|{{.Size}}"]);
    let line = ps.lines().find(|l| l.starts_with("st|")).expect(&ps);
    assert!(line.contains("virtual"), "{line}");
    let rw = line["st|".len()..].split_whitespace().next().unwrap();
    assert!(size_of(rw) >= 1024.0 * 1024.0, "{line}");
    let inspect: Value = serde_json::from_str(&h.ok(&["inspect", "--size", "st"])).unwrap();
    let size_rw = inspect[0]["SizeRw"].as_u64().unwrap();
    assert!(size_rw >= 1 << 20, "{inspect}");
    assert!(inspect[0]["SizeRootFs"].as_u64().unwrap() > size_rw);
    let plain: Value = serde_json::from_str(&h.ok(&["inspect", "st"])).unwrap();
    assert!(plain[0].get("SizeRw").is_none());

    // Paused still has processes and stats, as in Docker.
    h.ok(&["pause", "st"]);
    assert!(h.ok(&["top", "st"]).contains("sleep 60"));
    let (status, body) = h.http("GET", "/containers/st/stats?stream=0&one-shot=1");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"pids_stats\":{\"current\":2"), "{body}");
    h.ok(&["unpause", "st"]);

    // Not running: top is a conflict, stats an empty document.
    h.ok(&["kill", "st"]);
    h.ok(&["wait", "st"]);
    let err = h.fails(&["top", "st"]);
    assert!(err.contains("is not running"), "{err}");
    let (status, body) = h.http("GET", "/containers/st/stats?stream=0");
    assert!(status.contains("200"), "{status}");
    let doc: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(doc["read"], "0001-01-01T00:00:00Z");
    let (status, _) = h.http("GET", "/containers/nope/stats?stream=0");
    assert!(status.contains("404"), "{status}");

    // Limits Docker refuses are refused at create.
    let err = h.fails(&["run", "-d", "-m", "1m", "busybox", "true"]);
    assert!(err.contains("Minimum memory limit"), "{err}");
    h.ok(&["rm", "-f", "st"]);
}

#[test]
fn logs_follow_since_until_tail_and_rotation() {
    let h = Harness::start("logs");
    h.import_busybox();

    // -f on a container that prints over ~2 s returns every line in order,
    // on the right stream, and ends when the container exits.
    h.ok(&[
        "run",
        "-d",
        "--name",
        "fl",
        "busybox",
        "sh",
        "-c",
        "i=1; while [ $i -le 10 ]; do echo out$i; echo err$i >&2; i=$((i+1)); sleep 0.2; done",
    ]);
    let out = h.docker(&["logs", "-f", "fl"]);
    assert!(out.status.success(), "{out:?}");
    let want = |p: &str| (1..=10).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want("out"));
    assert_eq!(String::from_utf8_lossy(&out.stderr), want("err"));
    assert_eq!(h.ok(&["wait", "fl"]).trim(), "0");
    // Following an exited container returns at once.
    assert_eq!(h.ok(&["logs", "-f", "--tail", "2", "fl"]), "out10\n");

    // Lines a second apart: since/until/tail/-t select by their times.
    h.ok(&[
        "run",
        "-d",
        "--name",
        "tm",
        "busybox",
        "sh",
        "-c",
        "echo a; sleep 1; echo b; sleep 1; echo c",
    ]);
    assert_eq!(h.ok(&["wait", "tm"]).trim(), "0");
    let stamped = h.ok(&["logs", "-t", "tm"]);
    let times: Vec<&str> = stamped
        .lines()
        .map(|l| {
            let (t, text) = l.split_once(' ').expect(l);
            assert!(t.ends_with('Z') && t.contains('T'), "{l}");
            assert!(["a", "b", "c"].contains(&text), "{l}");
            t
        })
        .collect();
    assert_eq!(times.len(), 3, "{stamped}");
    assert_eq!(h.ok(&["logs", "--since", times[1], "tm"]), "b\nc\n");
    assert_eq!(h.ok(&["logs", "--until", times[1], "tm"]), "a\nb\n");
    assert_eq!(
        h.ok(&["logs", "--since", times[1], "--until", times[1], "tm"]),
        "b\n"
    );
    assert_eq!(h.ok(&["logs", "--tail", "2", "tm"]), "b\nc\n");
    assert_eq!(h.ok(&["logs", "--since", "1h", "tm"]), "a\nb\nc\n");
    assert_eq!(h.ok(&["logs", "--until", "1h", "tm"]), "");
    let (status, _) = h.http("GET", "/containers/tm/logs?stdout=1&since=soon");
    assert!(status.contains("400"), "{status}");

    // --log-opt max-size/max-file rotates; logs reads across the files.
    h.ok(&[
        "run",
        "-d",
        "--name",
        "rot",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    assert_eq!(h.ok(&["wait", "rot"]).trim(), "0");
    let log_path = h.ok(&["inspect", "-f", "{{.LogPath}}", "rot"]);
    let log_path = log_path.trim();
    assert!(std::path::Path::new(&format!("{log_path}.1")).exists());
    assert!(!std::path::Path::new(&format!("{log_path}.2")).exists());
    for f in [log_path.to_string(), format!("{log_path}.1")] {
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= 1024, "{f}: {len} bytes");
    }
    let logs = h.ok(&["logs", "rot"]);
    let nums: Vec<u32> = logs
        .lines()
        .map(|l| l.strip_prefix("line-").expect(l).parse().unwrap())
        .collect();
    assert_eq!(nums.last(), Some(&99), "{logs}");
    assert!(nums.len() > 10 && nums.len() < 100, "{logs}");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{logs}");
    // Following while the log rotates under the reader: the container
    // prints "ready", waits until the follower has shown it, then writes
    // 60 lines through several rotations; all arrive, in order.
    let id = h.ok(&[
        "run",
        "-d",
        "--name",
        "rf",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "echo ready; while [ ! -e /go ]; do sleep 0.05; done; \
         i=0; while [ $i -lt 60 ]; do echo line-$i; i=$((i+1)); sleep 0.01; done",
    ]);
    let mut child = h
        .docker_cmd(&["logs", "-f", "rf"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.starts_with(b"ready\n") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "logs -f ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // The container's rootfs is the overlay mounted in the host's namespace.
    let go = h
        .root()
        .join("containers")
        .join(id.trim())
        .join("rootfs/go");
    std::fs::write(&go, "").unwrap();
    stdout.read_to_end(&mut seen).unwrap();
    assert!(child.wait().unwrap().success());
    let want: String = std::iter::once("ready\n".to_string())
        .chain((0..60).map(|i| format!("line-{i}\n")))
        .collect();
    assert_eq!(String::from_utf8_lossy(&seen), want);
    let log_path = h.ok(&["inspect", "-f", "{{.LogPath}}", "rf"]);
    assert!(std::path::Path::new(&format!("{}.2", log_path.trim())).exists());

    // A container with a TTY has one raw stream, also in its logs.
    h.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "tt",
        "busybox",
        "sh",
        "-c",
        "echo hi; echo there",
    ]);
    assert_eq!(h.ok(&["wait", "tt"]).trim(), "0");
    assert_eq!(h.ok(&["logs", "tt"]), "hi\r\nthere\r\n");
    assert_eq!(h.ok(&["logs", "-f", "--tail", "1", "tt"]), "there\r\n");

    // Other drivers are refused.
    let err = h.fails(&["run", "-d", "--log-driver", "syslog", "busybox", "true"]);
    assert!(err.contains("json-file"), "{err}");
    for c in ["fl", "tm", "rot", "rf", "tt"] {
        h.ok(&["rm", "-f", c]);
    }
}
