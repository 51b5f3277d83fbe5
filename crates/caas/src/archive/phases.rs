//! Where the time of a session's end goes, phase by phase: one log line
//! per session and a histogram per phase in `/metrics`
//! (`cubby_archive_phase_seconds{phase=…}`), so that a slow archive can be
//! placed (engine, compression, store, verify, removal) without a profiler.

use std::fmt;
use std::time::{Duration, Instant};

use super::PutStats;

/// The sequential phases of a session's end, in order. `stream` (export,
/// zstd, sha256 and the writes, overlapped) and `close` come from
/// [`PutStats`]; the overlapped parts of `stream` are in [`DETAIL`].
pub const PHASES: [&str; 8] = [
    "start",
    "export_open",
    "stream",
    "close",
    "verify",
    "record",
    "remove_sandbox",
    "remove_volume",
];

/// Parts of `stream` (they overlap each other).
pub const DETAIL: [&str; 5] = [
    "engine_wait",
    "compress_wait",
    "zstd",
    "sha256",
    "upload_wait",
];

/// A stopwatch over one session's end.
pub struct Phases {
    began: Instant,
    last: Instant,
    took: Vec<(&'static str, Duration)>,
    detail: Vec<(&'static str, Duration)>,
    tar_bytes: u64,
    stored_bytes: u64,
}

impl Default for Phases {
    fn default() -> Self {
        Phases::new()
    }
}

impl Phases {
    pub fn new() -> Phases {
        let now = Instant::now();
        Phases {
            began: now,
            last: now,
            took: Vec::new(),
            detail: Vec::new(),
            tar_bytes: 0,
            stored_bytes: 0,
        }
    }

    /// Ends phase `name` now (it began where the previous one ended).
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.took.push((name, now - self.last));
        self.last = now;
    }

    /// The store's part: `stream` and `close` from its own clock.
    pub fn put(&mut self, p: &PutStats) {
        self.took.push(("stream", p.stream));
        self.took.push(("close", p.close));
        self.detail = vec![
            ("engine_wait", p.engine_wait),
            ("compress_wait", p.compress_wait),
            ("zstd", p.zstd),
            ("sha256", p.sha256),
            ("upload_wait", p.upload_wait),
        ];
        self.last = Instant::now();
    }

    pub fn sizes(&mut self, tar_bytes: u64, stored_bytes: u64) {
        self.tar_bytes = tar_bytes;
        self.stored_bytes = stored_bytes;
    }

    /// Every measured phase and detail, for the histograms.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, Duration)> + '_ {
        self.took.iter().chain(self.detail.iter()).copied()
    }
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.last - self.began;
        if self.tar_bytes > 0 {
            write!(
                f,
                "{:.1} MB tar -> {:.1} MB stored, ",
                self.tar_bytes as f64 / 1e6,
                self.stored_bytes as f64 / 1e6
            )?;
        }
        write!(f, "{:.3} s:", total.as_secs_f64())?;
        for (name, d) in &self.took {
            write!(f, " {name} {:.3}", d.as_secs_f64())?;
        }
        if !self.detail.is_empty() {
            f.write_str(" (stream:")?;
            for (name, d) in &self.detail {
                write!(f, " {name} {:.3}", d.as_secs_f64())?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}
