//! Admission: at most `limit` sandboxes are being provisioned at once; the
//! others wait in one first-come-first-served queue whose positions the
//! API shows (`queue_position`), so a class pressing "start" in the same
//! minute is served in order and nobody's request fails or times out
//! because of the burst. A teacher's up-class enters the same queue, one
//! entry per student, so it is neither ahead of nor behind students who
//! pressed earlier.
//!
//! A finished provisioning hands its slot straight to the head of the
//! queue (no wake-up race where a newcomer overtakes a waiter). Caps on
//! running sandboxes (per class and in total) are checked when a session
//! is requested, with a message saying which cap and how to get a place.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::store::Store;

/// The provisioning slots and the queue in front of them.
pub struct Admission {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: usize,
    /// Waiting sessions, oldest first; the sender hands over a slot.
    queue: VecDeque<(String, oneshot::Sender<()>)>,
    /// Sum and count of finished waits (for the mean wait).
    waited: Duration,
    admitted: u64,
}

/// A provisioning slot; given to the next in line when dropped.
pub struct Permit {
    adm: Arc<Admission>,
    /// How long this one waited in the queue.
    pub waited: Duration,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.adm.release(&mut self.adm.lock());
    }
}

/// A snapshot for metrics and the admin view.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct AdmissionStats {
    pub limit: usize,
    pub provisioning: usize,
    pub queued: usize,
    pub admitted: u64,
    pub wait_seconds_total: f64,
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit: limit.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the state consistent: usable after a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a slot to the head of the queue, or frees it. A waiter that
    /// gave up (its task ended) is skipped.
    fn release(&self, g: &mut Inner) {
        while let Some((_, tx)) = g.queue.pop_front() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        g.running = g.running.saturating_sub(1);
    }

    /// Waits for a provisioning slot for session `id`, in arrival order.
    pub async fn enter(self: &Arc<Self>, id: &str) -> Permit {
        let began = Instant::now();
        let rx = {
            let mut g = self.lock();
            if g.running < self.limit && g.queue.is_empty() {
                g.running += 1;
                g.admitted += 1;
                return Permit {
                    adm: self.clone(),
                    waited: Duration::ZERO,
                };
            }
            let (tx, rx) = oneshot::channel();
            g.queue.push_back((id.to_string(), tx));
            rx
        };
        // If this task is dropped while waiting, its entry is skipped at
        // hand-over (the closed receiver makes the send fail). The sender
        // lives in the queue, so the wait ends only with a slot.
        let mut guard = Leave {
            adm: self,
            id,
            armed: true,
        };
        let _ = rx.await;
        guard.armed = false;
        let waited = began.elapsed();
        let mut g = self.lock();
        g.admitted += 1;
        g.waited += waited;
        drop(g);
        Permit {
            adm: self.clone(),
            waited,
        }
    }

    /// 1-based place of `id` in the queue; None when not waiting.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.lock()
            .queue
            .iter()
            .position(|(s, _)| s == id)
            .map(|i| i + 1)
    }

    pub fn stats(&self) -> AdmissionStats {
        let g = self.lock();
        AdmissionStats {
            limit: self.limit,
            provisioning: g.running,
            queued: g.queue.len(),
            admitted: g.admitted,
            wait_seconds_total: g.waited.as_secs_f64(),
        }
    }
}

/// Removes a waiter that gave up from the queue (so positions behind it
/// move at once rather than at its turn).
struct Leave<'a> {
    adm: &'a Arc<Admission>,
    id: &'a str,
    armed: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut g = self.adm.lock();
            match g.queue.iter().position(|(s, _)| s == self.id) {
                Some(i) => {
                    g.queue.remove(i);
                }
                // Given a slot just before giving up: pass it on.
                None => self.adm.release(&mut g),
            }
        }
    }
}

/// Caps on sandboxes that run or are about to (requested, starting, ready).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub per_class: Option<usize>,
    pub total: Option<usize>,
}

const RUNNING_SQL: &str = "('requested', 'starting', 'ready')";

impl Caps {
    /// Refuses a new session when a cap is reached, saying which one.
    pub async fn check(&self, store: &Store, class_id: &str, class_code: &str) -> Result<()> {
        if let Some(cap) = self.total {
            let n = count(store, None).await?;
            if n >= cap {
                return Err(Error::RateLimited(format!(
                    "the service runs its maximum of {cap} sandboxes (--max-sandboxes): \
                     try again when a session ends, or ask an admin to raise the cap"
                )));
            }
        }
        if let Some(cap) = self.per_class {
            let n = count(store, Some(class_id)).await?;
            if n >= cap {
                return Err(Error::RateLimited(format!(
                    "class {class_code} runs its maximum of {cap} sandboxes \
                     (--max-sandboxes-per-class): try again when a classmate's session ends, \
                     or ask your teacher"
                )));
            }
        }
        Ok(())
    }
}

async fn count(store: &Store, class_id: Option<&str>) -> Result<usize> {
    use sqlx::Row;
    let row = match class_id {
        Some(c) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM sessions WHERE state IN {RUNNING_SQL} AND class_id = $1"
            )))
            .bind(c)
            .fetch_one(&store.pool)
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM sessions WHERE state IN {RUNNING_SQL}"
            )))
            .fetch_one(&store.pool)
            .await?
        }
    };
    let n: i64 = row.try_get("n")?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The default number of sandboxes provisioned at once: creating one is
/// mostly engine and kernel work (netns, veth, overlay mount, cgroups) with
/// waits in between, so 16 per core keep the engine busy. Measured at N=300
/// on 2 cores (bench/caas-burst.sh, quiet machine): 4 per core 16.1 s to
/// all ready, 16 per core 12.4 s, 32 per core 12.3 s; a warm pool of 300
/// made in 43 s / 11 s / 9 s.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 16)
        .unwrap_or(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_come_first_served_with_positions() {
        let adm = Admission::new(2);
        let a = adm.enter("a").await;
        let b = adm.enter("b").await;
        assert_eq!(adm.stats().provisioning, 2);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in ["c", "d", "e"] {
            let (adm2, order) = (adm.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = adm2.enter(id).await;
                order.lock().unwrap().push(id);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
            }));
            // Arrival order is the order of enter() calls.
            while adm.position(id).is_none() {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(adm.position("c"), Some(1));
        assert_eq!(adm.position("e"), Some(3));
        drop(a);
        // c got a's slot; d and e moved up.
        while adm.position("c").is_some() {
            tokio::task::yield_now().await;
        }
        assert_eq!(adm.position("d"), Some(1));
        assert_eq!(adm.position("e"), Some(2));
        drop(b);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["c", "d", "e"]);
        let s = adm.stats();
        assert_eq!((s.provisioning, s.queued, s.admitted), (0, 0, 5));
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let adm = Admission::new(1);
        let a = adm.enter("a").await;
        let adm2 = adm.clone();
        let t = tokio::spawn(async move {
            let _p = adm2.enter("quitter").await;
        });
        while adm.position("quitter").is_none() {
            tokio::task::yield_now().await;
        }
        let adm3 = adm.clone();
        let next = tokio::spawn(async move { adm3.enter("next").await.waited });
        while adm.position("next").is_none() {
            tokio::task::yield_now().await;
        }
        t.abort();
        let _ = t.await;
        assert_eq!(adm.position("next"), Some(1));
        drop(a);
        next.await.unwrap();
        assert_eq!(adm.stats().provisioning, 0);
    }
}
