//! Operations: Prometheus metrics (text exposition 0.0.4, written by hand:
//! a few counters and two histograms do not earn a crate and its compile
//! time), liveness and readiness.
//!
//! Counters live in memory and restart from zero with the process, as
//! Prometheus expects of counters; gauges (sessions by state, the queue)
//! are read at scrape time from the database and the admission queue.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Result;
use crate::sessions::Manager;
use crate::store::sessions::State;

/// Buckets (seconds) for provisioning and archiving.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.samples(out, name, "");
    }

    /// The series of one histogram; `labels` (`k="v",`) go before `le`.
    fn samples(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let l = match labels.trim_end_matches(',') {
            "" => String::new(),
            l => format!("{{{l}}}"),
        };
        let _ = writeln!(out, "{name}_sum{l} {sum}\n{name}_count{l} {count}");
    }
}

/// What the session manager records as it works.
#[derive(Default)]
pub struct Metrics {
    /// From leaving the queue to ready (or failed).
    pub provision: Histogram,
    /// The same, phase by phase (`crate::sessions::PROVISION_PHASES`), for
    /// sandboxes made anew (not pool claims).
    pub provision_phase: [Histogram; crate::sessions::PROVISION_PHASES.len()],
    /// A session's end: export, store, verify, record, remove.
    pub archive: Histogram,
    /// The same, phase by phase (`crate::archive::phases`): the sequential
    /// phases, then the overlapped parts of `stream`.
    pub archive_phase: [Histogram; PHASE_COUNT],
    pub archive_failures: AtomicU64,
    pub provision_failures: AtomicU64,
    /// Engine (backend) errors seen while starting or ending sessions.
    pub engine_errors: AtomicU64,
}

const PHASE_COUNT: usize =
    crate::archive::phases::PHASES.len() + crate::archive::phases::DETAIL.len();

fn phase_names() -> impl Iterator<Item = &'static str> {
    use crate::archive::phases::{DETAIL, PHASES};
    PHASES.iter().chain(DETAIL.iter()).copied()
}

impl Metrics {
    /// Records one session end's phases.
    pub fn archive_phases(&self, p: &crate::archive::Phases) {
        for (name, d) in p.all() {
            if let Some(i) = phase_names().position(|n| n == name) {
                self.archive_phase[i].observe(d);
            }
        }
    }

    pub fn engine_error(&self, e: &crate::error::Error) {
        if matches!(e, crate::error::Error::Backend(_)) {
            self.engine_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// The whole exposition.
pub async fn render(m: &Manager) -> Result<String> {
    use sqlx::Row;
    let mut out = String::new();
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
        .fetch_all(&m.store.pool)
        .await?;
    let mut by_state = std::collections::BTreeMap::new();
    // Every state appears, zero included, so a rate or alert never sees a
    // series vanish.
    for s in [
        State::Requested,
        State::Starting,
        State::Ready,
        State::Stopping,
        State::Stopped,
        State::Failed,
        State::ArchivePending,
    ] {
        by_state.insert(s.as_str().to_string(), 0i64);
    }
    for r in rows {
        let state: String = r.try_get("state")?;
        let n: i64 = r.try_get("n")?;
        by_state.insert(state, n);
    }
    let _ = writeln!(
        out,
        "# HELP cubby_sessions Sessions by state.\n# TYPE cubby_sessions gauge"
    );
    for (s, n) in &by_state {
        let _ = writeln!(out, "cubby_sessions{{state=\"{s}\"}} {n}");
    }
    let a = m.admission.stats();
    gauge(
        &mut out,
        "cubby_admission_queue_length",
        "Sessions waiting for a provisioning slot.",
        a.queued as f64,
    );
    gauge(
        &mut out,
        "cubby_admission_provisioning",
        "Sessions being provisioned now.",
        a.provisioning as f64,
    );
    gauge(
        &mut out,
        "cubby_admission_slots",
        "Sessions provisioned at once at most (--start-concurrency).",
        a.limit as f64,
    );
    let _ = writeln!(
        out,
        "# HELP cubby_admission_wait_seconds Time sessions waited in the admission queue.\n\
         # TYPE cubby_admission_wait_seconds summary\n\
         cubby_admission_wait_seconds_sum {}\ncubby_admission_wait_seconds_count {}",
        a.wait_seconds_total, a.admitted
    );
    let x = &m.metrics;
    x.provision.render(
        &mut out,
        "cubby_provision_seconds",
        "From leaving the queue to ready or failed.",
    );
    let name = "cubby_provision_phase_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Provisioning a sandbox anew, by phase.\n# TYPE {name} histogram"
    );
    for (h, phase) in x
        .provision_phase
        .iter()
        .zip(crate::sessions::PROVISION_PHASES)
    {
        h.samples(&mut out, name, &format!("phase=\"{phase}\","));
    }
    x.archive.render(
        &mut out,
        "cubby_archive_seconds",
        "Ending a session: archive, verify, record, remove.",
    );
    let name = "cubby_archive_phase_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Ending a session, by phase (stream's parts overlap).\n\
         # TYPE {name} histogram"
    );
    for (h, phase) in x.archive_phase.iter().zip(phase_names()) {
        h.samples(&mut out, name, &format!("phase=\"{phase}\","));
    }
    counter(
        &mut out,
        "cubby_provision_failures_total",
        "Sessions that failed to start.",
        x.provision_failures.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_archive_failures_total",
        "Archive attempts that failed (nothing deleted; retried).",
        x.archive_failures.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_engine_errors_total",
        "Errors from the engine (backend) while starting or ending sessions.",
        x.engine_errors.load(Ordering::Relaxed),
    );
    let p = &m.pool;
    let _ = writeln!(
        out,
        "# HELP cubby_pool_ready Ready warm-pool sandboxes, by template.\n# TYPE cubby_pool_ready gauge"
    );
    for (tid, n) in p.sizes() {
        let _ = writeln!(out, "cubby_pool_ready{{template=\"{tid}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP cubby_pool_class_ready Ready sandboxes of classes' own pools (warmed on the class network ahead of a scheduled start), by class.\n# TYPE cubby_pool_class_ready gauge"
    );
    for (cid, n) in p.class_sizes() {
        let _ = writeln!(out, "cubby_pool_class_ready{{class=\"{cid}\"}} {n}");
    }
    counter(
        &mut out,
        "cubby_pool_claims_total",
        "Sessions started by claiming a warm-pool sandbox.",
        p.claims.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_pool_misses_total",
        "Starts of a pooled template that found no warm sandbox ready.",
        p.misses.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_pool_failed_claims_total",
        "Claims given up (the member discarded, the session provisioned anew).",
        p.failed_claims.load(Ordering::Relaxed),
    );
    let name = "cubby_pool_claim_phase_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Warm-pool claims, by phase (reset only when the workspace changed).\n\
         # TYPE {name} histogram"
    );
    for (h, phase) in p
        .claim_phase
        .iter()
        .zip(crate::sessions::pool::CLAIM_PHASES)
    {
        h.samples(&mut out, name, &format!("phase=\"{phase}\","));
    }
    counter(
        &mut out,
        "cubby_pool_skipped_kept_total",
        "Starts of a pooled template provisioned on the student's kept volume instead.",
        p.skipped_kept.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_prepull_total",
        "Template images pulled ahead of a scheduled (exam) start.",
        m.prepull.pulled.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_prepull_failures_total",
        "Pre-pulls that failed (logged; tried again next round).",
        m.prepull.failures.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "cubby_pool_made_total",
        "Warm-pool sandboxes made.",
        p.made.load(Ordering::Relaxed),
    );
    let t = m.activity.totals();
    counter(
        &mut out,
        "cubby_proxy_requests_total",
        "HTTP requests and websocket upgrades proxied to sandboxes.",
        t.proxied_requests,
    );
    let _ = writeln!(
        out,
        "# HELP cubby_proxy_bytes_total Bytes proxied, by direction.\n\
         # TYPE cubby_proxy_bytes_total counter\n\
         cubby_proxy_bytes_total{{direction=\"to_sandbox\"}} {}\n\
         cubby_proxy_bytes_total{{direction=\"from_sandbox\"}} {}",
        t.bytes_to_sandbox, t.bytes_from_sandbox
    );
    Ok(out)
}

/// Readiness: the database answers and so does the backend (bounded, so
/// a hung engine makes us unready rather than the probe hang).
pub async fn ready(m: &Manager) -> std::result::Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let t = Duration::from_secs(2);
    match tokio::time::timeout(t, sqlx::query("SELECT 1").execute(&m.store.pool)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("database: {e}")),
        Err(_) => problems.push("database: no answer in 2 s".into()),
    }
    match tokio::time::timeout(t, m.backend.describe()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("backend: {e}")),
        Err(_) => problems.push("backend: no answer in 2 s".into()),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn phase_histograms_are_labelled_and_unlabelled_ones_unchanged() {
        let m = Metrics::default();
        let mut p = crate::archive::Phases::new();
        p.lap("start");
        p.lap("remove_volume");
        m.archive_phases(&p);
        let mut out = String::new();
        m.archive_phase[0].samples(&mut out, "x", "phase=\"start\",");
        assert!(
            out.contains("x_bucket{phase=\"start\",le=\"0.05\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_sum{phase=\"start\"} "), "{out}");
        assert!(out.contains("x_count{phase=\"start\"} 1\n"), "{out}");
        let mut out = String::new();
        m.archive.render(&mut out, "y", "help");
        assert!(
            out.contains("y_bucket{le=\"+Inf\"} 0\ny_sum 0\ny_count 0\n"),
            "{out}"
        );
        let last = phase_names().position(|n| n == "remove_volume").unwrap();
        assert_eq!(m.archive_phase[last].count.load(Ordering::Relaxed), 1);
    }
}
