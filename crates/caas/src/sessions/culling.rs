//! Idle culling. A ready session whose template sets `idle_timeout_secs` is
//! ended with the reason "idle" after that long without activity, through the
//! same stop path as every other end (so it is archived before anything is
//! removed). Activity is what the student does — proxied requests and
//! terminal input (`activity.rs`) — and what the sandbox does on its own:
//! CPU time from the backend's stats, sampled every culling round, counts
//! when it grew by at least [`ACTIVE_CPU_SHARE`] of one CPU since the last
//! sample (a running build or notebook kernel is not idle).
//!
//! Before the cull the student is warned: the session's JSON carries
//! `idle_warning_at`, `cull_at` and `idle_warning` (true inside the warning
//! window), and the web UI shows a banner. Everything is in memory and only
//! ever errs towards keeping a session: a restarted serve counts from its
//! own start, and a sandbox whose CPU use cannot be read counts as busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::Manager;
use crate::error::Result;
use crate::store::sessions::{Session, SessionFilter, State};

/// CPU use at or above this share of one CPU between two samples is
/// activity. An idle shell or a web server waiting for requests stays far
/// below (≈0.1 %); a compiler, a test run or a kernel computing is far above.
pub const ACTIVE_CPU_SHARE: f64 = 0.05;

/// The warning comes this long before the cull: half the timeout, at most
/// two minutes.
pub fn warning_secs(timeout: i64) -> i64 {
    (timeout / 2).clamp(1, 120)
}

/// What the student sees of the idle timer (flattened into the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdleInfo {
    /// Unix seconds from which the warning shows.
    pub idle_warning_at: i64,
    /// Unix seconds after which the session is ended as idle (the culling
    /// round that sees it, every few seconds).
    pub cull_at: i64,
    /// Whether the warning is showing now.
    pub idle_warning: bool,
}

struct Track {
    /// The last CPU sample: total ns and when it was taken.
    cpu: Option<(u64, Instant)>,
    /// Unix seconds of the last round that saw the sandbox busy.
    busy_at: i64,
}

/// Per-session idle state of this process.
pub struct Culler {
    /// When this process started counting (a restart never culls early).
    since: i64,
    map: Mutex<HashMap<String, Track>>,
    /// Idle timeout per template (templates never change once saved).
    timeouts: Mutex<HashMap<String, Option<i64>>>,
}

impl Default for Culler {
    fn default() -> Self {
        Culler {
            since: crate::store::now(),
            map: Mutex::new(HashMap::new()),
            timeouts: Mutex::new(HashMap::new()),
        }
    }
}

impl Culler {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Track>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Manager {
    /// The template's idle timeout in seconds, if it has one.
    async fn idle_timeout(&self, template_id: &str) -> Result<Option<i64>> {
        if let Some(t) = self
            .culler
            .timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(template_id)
        {
            return Ok(*t);
        }
        let t = self
            .store
            .template(template_id)
            .await?
            .spec
            .idle_timeout_secs
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX / 4));
        self.culler
            .timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(template_id.to_string(), t);
        Ok(t)
    }

    /// The idle timer of a ready session, seen now.
    fn idle_info(&self, s: &Session, timeout: i64) -> IdleInfo {
        let busy_at = self.culler.lock().get(&s.id).map_or(0, |t| t.busy_at);
        let last = [
            busy_at,
            self.culler.since,
            s.updated_at,
            self.activity.get(&s.id).last_active,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let cull_at = last + timeout;
        let idle_warning_at = cull_at - warning_secs(timeout);
        IdleInfo {
            idle_warning_at,
            cull_at,
            idle_warning: crate::store::now() >= idle_warning_at,
        }
    }

    /// Adds what is not stored to a session about to be shown: its queue
    /// position while waiting, and the idle timer (ready sessions whose
    /// template has an idle timeout).
    pub async fn annotate(&self, s: Session) -> Result<Session> {
        let mut s = self.with_position(s);
        if s.state == State::Ready {
            if let Some(timeout) = self.idle_timeout(&s.template_id).await? {
                s.idle = Some(self.idle_info(&s, timeout));
            }
        }
        Ok(s)
    }

    /// One culling round: samples CPU use of ready sessions with an idle
    /// timeout and ends those idle past it (reason "idle").
    pub async fn cull_idle(self: &Arc<Self>) -> Result<()> {
        let now = crate::store::now();
        let ready: Vec<Session> = self
            .store
            .sessions(SessionFilter::All, true)
            .await?
            .into_iter()
            .filter(|s| s.state == State::Ready)
            .collect();
        let mut keep = std::collections::HashSet::new();
        for s in &ready {
            let Some(timeout) = self.idle_timeout(&s.template_id).await? else {
                continue;
            };
            keep.insert(s.id.clone());
            let sample = match self.backend.cpu_usage_ns(&s.sandbox).await {
                Ok(v) => v,
                Err(e) => {
                    crate::log!(
                        "warn",
                        "idle culling: CPU use of {} unreadable, counted as busy: {e}",
                        s.sandbox
                    );
                    None
                }
            };
            {
                let mut map = self.culler.lock();
                let t = map.entry(s.id.clone()).or_insert(Track {
                    cpu: None,
                    busy_at: 0,
                });
                let at = Instant::now();
                match (sample, t.cpu) {
                    (None, _) => t.busy_at = now,
                    (Some(ns), Some((prev, when))) => {
                        let wall = at.duration_since(when).as_nanos().max(1) as f64;
                        if ns.saturating_sub(prev) as f64 / wall >= ACTIVE_CPU_SHARE {
                            t.busy_at = now;
                        }
                    }
                    (Some(_), None) => {}
                }
                if let Some(ns) = sample {
                    t.cpu = Some((ns, at));
                }
            }
            let info = self.idle_info(s, timeout);
            if now >= info.cull_at
                && self
                    .store
                    .transition(&s.id, &[State::Ready], State::Stopping, Some("idle"), None)
                    .await?
            {
                crate::log!("warn", "session {}: idle for {timeout} s, ending it", s.id);
                self.spawn_drive(&s.id);
            }
        }
        self.culler.lock().retain(|id, _| keep.contains(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_window() {
        assert_eq!(warning_secs(10), 5);
        assert_eq!(warning_secs(1), 1);
        assert_eq!(warning_secs(3600), 120);
    }
}
