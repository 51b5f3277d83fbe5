//! Pre-pull: the image of a class's template is pulled into the engine's
//! store ahead of the class's scheduled start, so that nobody's first start
//! waits for a pull. The only start times the service schedules are
//! exams' (`starts_at`); an exam starting within `prepull_ahead` has its
//! template's image checked and, when missing, pulled by a background
//! task. Each pull is logged and counted (cubby_prepull_total,
//! cubby_prepull_failures_total).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Manager;
use crate::backend::BackendError;
use crate::error::Result;

/// How often upcoming starts are looked at.
pub const ROUND: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Prepull {
    /// Images pulled ahead of a scheduled start.
    pub pulled: AtomicU64,
    pub failures: AtomicU64,
}

impl Manager {
    /// Exams whose window is open or opens within `ahead`, not collected:
    /// the scheduled starts the pool warms classes for (pool.rs).
    pub(super) async fn scheduled_exams(
        &self,
        ahead: Duration,
    ) -> Result<Vec<crate::store::exams::Exam>> {
        let now = crate::store::now();
        let until = now.saturating_add(i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX));
        Ok(self
            .store
            .exams_starting(i64::MIN, until)
            .await?
            .into_iter()
            .filter(|e| e.ends_at > now && e.collected_at.is_none())
            .collect())
    }

    /// Pre-pulls for ever (when `prepull_ahead` is set).
    pub async fn prepull_loop(self: Arc<Self>) {
        let Some(ahead) = self.cfg.prepull_ahead else {
            return;
        };
        loop {
            if !self.draining() {
                if let Err(e) = self.prepull_round(ahead).await {
                    crate::log!("warn", "pre-pull: {e}");
                }
            }
            tokio::time::sleep(ROUND).await;
        }
    }

    /// One round: every image of a template whose class has an exam
    /// starting within `ahead` is made present.
    pub async fn prepull_round(&self, ahead: Duration) -> Result<()> {
        let now = crate::store::now();
        let until = now.saturating_add(i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX));
        for exam in self.store.exams_starting(now, until).await? {
            let class = self.store.class(&exam.class_id).await?;
            let Some(tid) = class.template_id else {
                continue;
            };
            let t = self.store.template(&tid).await?;
            let image = &t.spec.image;
            match self.backend.check_image(image).await {
                Ok(()) => continue,
                Err(BackendError::ImageMissing { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let began = std::time::Instant::now();
            match self.backend.pull_image(image).await {
                Ok(()) => {
                    self.prepull.pulled.fetch_add(1, Ordering::Relaxed);
                    crate::log!(
                        "info",
                        "pre-pull: image {image} of template {tid} pulled in {:.1} s for the exam of class {} starting in {} s",
                        began.elapsed().as_secs_f64(),
                        class.code,
                        exam.starts_at - now
                    );
                }
                Err(e) => {
                    self.prepull.failures.fetch_add(1, Ordering::Relaxed);
                    crate::log!(
                        "warn",
                        "pre-pull: image {image} of template {tid} for the exam of class {}: {e}",
                        class.code
                    );
                }
            }
        }
        Ok(())
    }
}
