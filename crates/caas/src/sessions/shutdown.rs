//! Graceful shutdown of the session manager: no new work starts, work in
//! progress (a sandbox being provisioned, a session being archived) is
//! finished, and sandboxes are left running for the next start of the
//! service. Sessions still waiting in the admission queue stay `requested`
//! in the database; the next start's reconcile drives them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Manager;

impl Manager {
    /// Whether a shutdown has begun (no new session work starts).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Begins the shutdown and waits (at most `grace`) until only queued
    /// sessions are left in flight. Returns how many drivers were still
    /// busy when the grace ran out (0: everything finished).
    pub async fn drain(&self, grace: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy = self.busy();
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                return busy;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drivers doing work, not waiting in the queue.
    fn busy(&self) -> usize {
        let inflight = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        inflight.saturating_sub(self.admission.stats().queued)
    }
}
