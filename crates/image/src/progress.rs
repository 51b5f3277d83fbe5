//! Pull progress as events, for whoever shows it: indicatif bars on a
//! terminal ([`Bars`]), Docker's JSON progress stream in the engine, or
//! nothing ([`Silent`]).
//!
//! Events per layer follow Docker's order: `PullingFsLayer` (or
//! `AlreadyExists`), `Downloading` (repeated), `VerifyingChecksum`,
//! `DownloadComplete`, `Extracting`, `PullComplete`. cubby downloads and
//! unpacks in one pass, so `Extracting` is reported once the download ends.
//! `Downloading` is throttled by the puller (see [`THROTTLE`]): a sink may
//! do a little work per event.

use crate::digest::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// At most one `Downloading` event per layer per this interval (plus the
/// first and the last).
pub const THROTTLE: Duration = Duration::from_millis(100);

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// The layer will be fetched; `total` is its compressed size.
    PullingFsLayer {
        total: u64,
    },
    /// Already in the store: nothing to fetch.
    AlreadyExists,
    Downloading {
        current: u64,
        total: u64,
    },
    VerifyingChecksum,
    DownloadComplete,
    Extracting {
        current: u64,
        total: u64,
    },
    PullComplete,
    /// The layer failed (the pull's error says why).
    Failed,
}

impl LayerStatus {
    /// Docker's status text.
    pub fn text(&self) -> &'static str {
        match self {
            LayerStatus::PullingFsLayer { .. } => "Pulling fs layer",
            LayerStatus::AlreadyExists => "Already exists",
            LayerStatus::Downloading { .. } => "Downloading",
            LayerStatus::VerifyingChecksum => "Verifying Checksum",
            LayerStatus::DownloadComplete => "Download complete",
            LayerStatus::Extracting { .. } => "Extracting",
            LayerStatus::PullComplete => "Pull complete",
            LayerStatus::Failed => "Failed",
        }
    }

    /// (current, total) for the statuses that carry a byte count.
    pub fn bytes(&self) -> Option<(u64, u64)> {
        match *self {
            LayerStatus::Downloading { current, total }
            | LayerStatus::Extracting { current, total } => Some((current, total)),
            _ => None,
        }
    }
}

/// One pull event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The manifest was fetched (`digest`: what the registry served for the
    /// reference, an index for multi-platform images); layers follow.
    Resolved { digest: &'a Digest, layers: usize },
    Layer {
        /// The compressed blob's digest (Docker shows its first 12 hex digits).
        digest: &'a Digest,
        status: LayerStatus,
    },
}

/// Receives pull events, from several threads (layers go in parallel).
pub trait Progress: Sync {
    fn event(&self, event: Event<'_>);
}

/// Ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// One indicatif bar per fetched layer, on stderr (drawn only on a terminal).
pub struct Bars {
    bars: MultiProgress,
    layers: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    pub fn stderr() -> Bars {
        Bars {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        self.layers.lock().ok()?.get(digest).cloned()
    }
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        let Event::Layer { digest, status } = event else {
            return;
        };
        match status {
            LayerStatus::PullingFsLayer { total } => {
                let bar = self.bars.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(digest.short().to_string());
                if let Ok(mut m) = self.layers.lock() {
                    m.insert(digest.clone(), bar);
                }
            }
            LayerStatus::Downloading { current, .. } => {
                if let Some(b) = self.bar(digest) {
                    b.set_position(current);
                }
            }
            LayerStatus::PullComplete => {
                if let Some(b) = self.bar(digest) {
                    b.finish_with_message("done");
                }
            }
            LayerStatus::Failed => {
                if let Some(b) = self.bar(digest) {
                    b.abandon_with_message("failed");
                }
            }
            _ => {}
        }
    }
}

/// Docker's progress-bar sizes (`units.HumanSizeWithPrecision(n, 4)`):
/// decimal units, 4 significant digits (`512B`, `1.234kB`, `12.5MB`).
pub fn human_size(bytes: u64) -> String {
    human_size_digits(bytes, 4)
}

/// Decimal units with `digits` significant digits and no trailing zeros
/// (Go's `%.Ng`); the CLI's tables use 3, as `units.HumanSize` does.
pub fn human_size_digits(bytes: u64, digits: usize) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", significant(v, digits), UNITS[u])
}

/// `v` (0 <= v < 1000) to `digits` significant digits, trailing zeros cut.
fn significant(v: f64, digits: usize) -> String {
    let int_digits = if v < 1.0 {
        1
    } else {
        v.log10().floor() as usize + 1
    };
    let decimals = digits.saturating_sub(int_digits);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Docker's progress text for a byte count, as the daemon renders it
/// (`[=====>      ]  1.234MB/5.678MB`, a 50-character bar).
pub fn progress_bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let pct = ((current as f64 / total as f64 * 100.0) as usize / 2).min(50);
    let bar = format!("[{}>{}] ", "=".repeat(pct), " ".repeat(50 - pct));
    if current > total {
        format!("{bar}{:>8}", human_size(current))
    } else {
        format!("{bar}{:>8}/{}", human_size(current), human_size(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_shows_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(12_500_000), "12.5MB");
        assert_eq!(human_size(999_999), "1000kB");
        assert_eq!(human_size(2_147_483_648), "2.147GB");
    }

    #[test]
    fn bars_as_docker_draws_them() {
        let half = progress_bar(500, 1000);
        assert_eq!(
            half,
            format!("[{}>{}]     500B/1kB", "=".repeat(25), " ".repeat(25))
        );
        let done = progress_bar(1000, 1000);
        assert!(
            done.starts_with(&format!("[{}>]", "=".repeat(50))),
            "{done}"
        );
        assert!(progress_bar(0, 1000).starts_with("[>"));
        assert_eq!(progress_bar(2000, 0), "     2kB");
        // A wonky current beyond total: no total shown, bar stays full.
        assert!(progress_bar(3000, 1000).ends_with(">]      3kB"));
    }

    #[test]
    fn statuses() {
        assert_eq!(
            LayerStatus::PullingFsLayer { total: 1 }.text(),
            "Pulling fs layer"
        );
        assert_eq!(LayerStatus::VerifyingChecksum.text(), "Verifying Checksum");
        assert_eq!(
            LayerStatus::Downloading {
                current: 1,
                total: 2
            }
            .bytes(),
            Some((1, 2))
        );
        assert_eq!(LayerStatus::PullComplete.bytes(), None);
    }
}
